//! Negotiated methods on the API, against a real server over TLS: what `GET /api/v1/ace`
//! publishes, an agent's login agreeing on methods (or refused with both lists, having changed
//! nothing), and compressed bodies both ways as agreed, with curl for the plain HTTPS link.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;

use common::{client, sha256, start, url};
use mailroom_core::{EventKind, Outcome};
use mailroom_test_support::{TestClient, TestHub, have, run, text};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// Logs `who` in with `ace` (or no negotiation); the raw answer.
async fn token(hub: &TestHub, who: &TestClient, ace: Option<Value>) -> Response {
    let mut body = json!({"username": who.name, "password": who.password});
    if let Some(ace) = ace {
        body["ace"] = ace;
    }
    client(hub)
        .post(url(hub, "/api/v1/token"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn detail(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    body["detail"].as_str().unwrap().to_owned()
}

/// Lines of CSV: compresses well.
fn csv(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "INV-{line:08};ACME Corp;2026-12-02;EUR;{:>10}.00\n",
                line * 7 % 99_991
            )
            .as_bytes(),
        );
        line += 1;
    }
    out.truncate(len);
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

async fn begin(hub: &TestHub, token: &str, name: &str, size: u64) -> String {
    let response = client(hub)
        .post(url(hub, "/api/v1/uploads"))
        .bearer_auth(token)
        .json(&json!({"recipients": ["bob"], "name": name, "size": size}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn patch(
    hub: &TestHub,
    token: &str,
    id: &str,
    coding: Option<&str>,
    body: Vec<u8>,
) -> Response {
    let mut request = client(hub)
        .patch(url(hub, &format!("/api/v1/uploads/{id}")))
        .bearer_auth(token)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream");
    if let Some(coding) = coding {
        request = request.header("Content-Encoding", coding);
    }
    request.body(body).send().await.unwrap()
}

async fn offset(hub: &TestHub, token: &str, id: &str) -> u64 {
    let response = client(hub)
        .head(url(hub, &format!("/api/v1/uploads/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn finish(hub: &TestHub, token: &str, id: &str, sha: &str) -> StatusCode {
    client(hub)
        .post(url(hub, &format!("/api/v1/uploads/{id}/finish")))
        .bearer_auth(token)
        .json(&json!({"sha256": sha}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_hub_publishes_its_methods_per_link() {
    let hub = start().await;
    // Before any login: what an agent reads first.
    let response = client(&hub)
        .get(url(&hub, "/api/v1/ace"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ace: Value = response.json().await.unwrap();
    assert_eq!(
        ace["agent"]["compression"]["supported"],
        json!(["none", "zstd", "gzip"])
    );
    assert_eq!(ace["agent"]["compression"]["default"], json!(["none"]));
    assert_eq!(
        ace["agent"]["encryption"]["supported"],
        json!(["tls", "tls+e2e"])
    );
    assert_eq!(
        ace["agent"]["encryption"]["needs_authentication"],
        json!(["tls+e2e"])
    );
    assert_eq!(
        ace["ssh"]["compression"]["supported"],
        json!(["none", "ssh:zlib@openssh.com"])
    );
    assert_eq!(ace["ftps"]["encryption"]["supported"][0], "tls:1.3");
    assert_eq!(
        ace["ssh"]["authentication"]["supported"],
        json!(["password", "publickey", "totp"])
    );
    let openapi: Value = client(&hub)
        .get(url(&hub, "/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/api/v1/ace"]["get"].is_object());
    hub.stop().await;
}

#[tokio::test]
async fn an_agent_login_agrees_on_methods_binds_them_to_its_tokens_and_events() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let response = token(
        &hub,
        &alice,
        Some(json!({"compression": ["brotli", "zstd"], "encryption": ["tls"]})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(
        tokens["ace"],
        json!({"authentication": "password", "compression": "zstd", "encryption": "tls"})
    );
    let login = hub.events(EventKind::Login, Outcome::Ok).await;
    assert!(
        login.iter().any(|e| e.detail
            == "password; methods: authentication=password compression=zstd encryption=tls"),
        "{login:?}"
    );
    // A refresh keeps the login's methods.
    let refreshed: Value = client(&hub)
        .post(url(&hub, "/api/v1/token/refresh"))
        .json(&json!({"refresh_token": tokens["refresh_token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["ace"], tokens["ace"]);
    // No negotiation: no methods.
    let plain: Value = token(&hub, &alice, None).await.json().await.unwrap();
    assert_eq!(plain["ace"], Value::Null);
    hub.stop().await;
}

#[tokio::test]
async fn no_agreement_is_refused_with_both_lists_and_changes_nothing() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let events_before = hub.events(EventKind::Login, Outcome::Ok).await.len()
        + hub.events(EventKind::Login, Outcome::Refused).await.len();
    let before = hub.snapshot().await;
    for (ace, expected) in [
        (
            json!({"compression": ["brotli", "lz4"]}),
            "no common compression method on agent: the client offered [brotli, lz4], the hub supports [none, zstd, gzip]",
        ),
        (
            json!({"encryption": ["ssh-cipher:aes256-ctr"]}),
            "no common encryption method on agent: the client offered [ssh-cipher:aes256-ctr], the hub supports [tls, tls+e2e]",
        ),
        (
            json!({"authentication": ["publickey"]}),
            "no common authentication method on agent: the client offered [publickey], the hub supports [password, totp, certificate, token]",
        ),
        (
            json!({"authentication": ["certificate"]}),
            "this login agreed on authentication by certificate but presented no client certificate",
        ),
    ] {
        let got = detail(
            token(&hub, &alice, Some(ace.clone())).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(got, expected, "{ace}");
    }
    // A malformed keyword is refused before anything else.
    let response = token(&hub, &alice, Some(json!({"compression": ["Zstd!"]}))).await;
    assert!(response.status().is_client_error());
    assert_eq!(hub.snapshot().await, before);
    let events_after = hub.events(EventKind::Login, Outcome::Ok).await.len()
        + hub.events(EventKind::Login, Outcome::Refused).await.len();
    assert_eq!(events_after, events_before, "no login was attempted");
    hub.stop().await;
}

#[tokio::test]
async fn bodies_are_compressed_both_ways_as_agreed() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let agent = json!({"compression": ["zstd"]});
    let tokens: Value = token(&hub, &alice, Some(agent.clone()))
        .await
        .json()
        .await
        .unwrap();
    let alice_token = tokens["access_token"].as_str().unwrap().to_owned();
    let content = csv(2 << 20);
    let sha = sha256(&content);

    // Not what this session agreed: 415, and nothing arrived.
    let id = begin(&hub, &alice_token, "ledger.csv", content.len() as u64).await;
    let response = patch(&hub, &alice_token, &id, Some("gzip"), gzip(&content)).await;
    let got = detail(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(
        got,
        "this session agreed on compression zstd; send the body that way"
    );
    let response = patch(&hub, &alice_token, &id, Some("br"), content.clone()).await;
    let got = detail(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert!(got.starts_with("Content-Encoding br is not taken"), "{got}");
    // Garbage under zstd: refused, nothing written.
    let response = patch(
        &hub,
        &alice_token,
        &id,
        Some("zstd"),
        b"not zstd at all".to_vec(),
    )
    .await;
    let got = detail(response, StatusCode::BAD_REQUEST).await;
    assert!(got.contains("does not decode"), "{got}");
    assert_eq!(offset(&hub, &alice_token, &id).await, 0);

    // As agreed: the compressed body is a fraction of the file, the hub has the file.
    let packed = zstd(&content);
    assert!(
        packed.len() * 4 < content.len(),
        "{} vs {}",
        packed.len(),
        content.len()
    );
    let response = patch(&hub, &alice_token, &id, Some("zstd"), packed).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset(&hub, &alice_token, &id).await, content.len() as u64);
    assert_eq!(
        finish(&hub, &alice_token, &id, &sha).await,
        StatusCode::CREATED
    );

    // Bob's agent agreed on zstd too: the download comes compressed when accepted.
    let tokens: Value = token(&hub, &bob, Some(agent)).await.json().await.unwrap();
    let bob_token = tokens["access_token"].as_str().unwrap().to_owned();
    let inbox: Value = client(&hub)
        .get(url(&hub, "/api/v1/inbox"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivery = inbox[0]["id"].as_str().unwrap().to_owned();
    let content_url = url(&hub, &format!("/api/v1/inbox/{delivery}/content"));
    let response = client(&hub)
        .get(&content_url)
        .bearer_auth(&bob_token)
        .header("Accept-Encoding", "gzip;q=0.5, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "zstd");
    let wire = response.bytes().await.unwrap();
    assert!(wire.len() * 4 < content.len(), "{} on the wire", wire.len());
    assert_eq!(zstd::decode_all(&wire[..]).unwrap(), content);
    // A range counts file bytes: never compressed.
    let response = client(&hub)
        .get(&content_url)
        .bearer_auth(&bob_token)
        .header("Accept-Encoding", "zstd")
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert!(response.headers().get("content-encoding").is_none());
    assert_eq!(response.bytes().await.unwrap(), content[..100]);
    // Not accepted: plain.
    let response = client(&hub)
        .get(&content_url)
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    assert_eq!(response.bytes().await.unwrap(), content);
    hub.stop().await;
}

#[tokio::test]
async fn a_compressed_body_cannot_expand_past_the_upload() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let tokens: Value = token(&hub, &alice, Some(json!({"compression": ["zstd"]})))
        .await
        .json()
        .await
        .unwrap();
    let alice_token = tokens["access_token"].as_str().unwrap().to_owned();
    // 64 MiB of zeros packs into a few KiB; the upload is 1 MiB.
    let bomb = zstd(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 64 << 10);
    let id = begin(&hub, &alice_token, "zeros.bin", 1 << 20).await;
    let response = patch(&hub, &alice_token, &id, Some("zstd"), bomb).await;
    assert!(response.status().is_client_error(), "{}", response.status());
    assert!(offset(&hub, &alice_token, &id).await <= 1 << 20);
    assert!(hub.deliveries().await.is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn curl_sends_a_gzip_body_on_a_plain_https_token() {
    if !have("curl") {
        return;
    }
    let hub = start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let tokens: Value = token(&hub, &alice, None).await.json().await.unwrap();
    let alice_token = tokens["access_token"].as_str().unwrap().to_owned();
    let content = csv(1 << 20);
    let file = hub.local_dir("curl").join("ledger.csv.gz");
    std::fs::write(&file, gzip(&content)).unwrap();
    let id = begin(&hub, &alice_token, "ledger.csv", content.len() as u64).await;
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--fail-with-body", "-X", "PATCH", "--cacert"])
        .arg(&hub.https().ca)
        .args(["-H", &format!("Authorization: Bearer {alice_token}")])
        .args(["-H", "Upload-Offset: 0", "-H", "Content-Encoding: gzip"])
        .args(["-H", "Content-Type: application/offset+octet-stream"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(url(&hub, &format!("/api/v1/uploads/{id}")));
    let out = run(command).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(offset(&hub, &alice_token, &id).await, content.len() as u64);
    assert_eq!(
        finish(&hub, &alice_token, &id, &sha256(&content)).await,
        StatusCode::CREATED
    );
    assert_eq!(hub.deliveries().await[0].sha256, sha256(&content));
    hub.stop().await;
}
