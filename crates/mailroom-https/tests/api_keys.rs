//! API keys on the HTTPS API, against a real server over TLS: an account makes, lists and
//! revokes its own keys with the tokens of a login (a key cannot), an administrator those of
//! any client; `Authorization: Bearer mrk_…` works where a client token does, within the key's
//! scopes (403 naming the missing scope, with nothing changed), until it is revoked, expires
//! or its account is disabled; curl uploads and lists with a key. Every refusal checks its
//! status and that nothing changed (deliveries, blobs and the keys).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::pin::Pin;
use std::time::Duration;

use common::{client, delete, get, post, sha256, start, token as login, url};
use mailroom_core::{AccountName, Clock, EventKind, KeyScopes, Outcome};
use mailroom_test_support::{TestHub, have, run, text};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

fn name(text: &str) -> AccountName {
    AccountName::parse(text).unwrap()
}

/// Checks an answer is a problem document with `status`; returns its detail.
async fn problem(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    body["detail"].as_str().unwrap().to_owned()
}

/// A key made through the API: (its id, its secret).
async fn make_key(hub: &TestHub, bearer: &str, path: &str, body: Value) -> (String, String) {
    let response = post(hub, bearer, path, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let made: Value = response.json().await.unwrap();
    let secret = made["secret"].as_str().unwrap().to_owned();
    let id = made["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&format!("mrk_{id}_")), "{made}");
    (id, secret)
}

/// What a refusal must not change: deliveries, blobs, and the keys of alice and bob.
async fn state(hub: &TestHub) -> (mailroom_test_support::Snapshot, Vec<String>) {
    let mut keys = Vec::new();
    for who in ["alice", "bob"] {
        if let Ok(listed) = hub.hub.api_keys(&name(who)).await {
            keys.extend(listed.iter().map(|k| format!("{k:?}")));
        }
    }
    (hub.snapshot().await, keys)
}

/// A request not yet sent, of whichever helper made it.
type Request<'a> = Pin<Box<dyn Future<Output = Response> + 'a>>;

fn boxed<'a>(request: impl Future<Output = Response> + 'a) -> Request<'a> {
    Box::pin(request)
}

/// Runs a request that must be refused with `status`, and checks that nothing changed;
/// returns the problem's detail.
async fn refused(
    hub: &TestHub,
    status: StatusCode,
    request: impl Future<Output = Response>,
) -> String {
    let before = state(hub).await;
    let detail = problem(request.await, status).await;
    assert_eq!(
        state(hub).await,
        before,
        "{status} {detail} changed something"
    );
    detail
}

/// Sends `content` to `to` with `bearer` (a token or a key) through the resumable upload.
async fn send(hub: &TestHub, bearer: &str, to: &str, file: &str, content: &[u8]) -> Response {
    let begun = post(
        hub,
        bearer,
        "/api/v1/uploads",
        json!({"recipients": [to], "name": file, "size": content.len()}),
    )
    .await;
    if begun.status() != StatusCode::CREATED {
        return begun;
    }
    let id = begun.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patched = client(hub)
        .patch(url(hub, &format!("/api/v1/uploads/{id}")))
        .bearer_auth(bearer)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::NO_CONTENT);
    post(
        hub,
        bearer,
        &format!("/api/v1/uploads/{id}/finish"),
        json!({"sha256": sha256(content)}),
    )
    .await
}

#[tokio::test]
async fn an_account_makes_lists_and_revokes_its_keys_and_a_key_cannot() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let root = hub.admin_account("root").await;
    let token = login(&hub, &alice, "client").await;

    let (id, secret) = make_key(
        &hub,
        &token,
        "/api/v1/api-keys",
        json!({"label": "backup agent", "scopes": ["receive", "send"], "expires_in_days": 30}),
    )
    .await;
    let listed = get(&hub, &token, "/api/v1/api-keys").await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let key = &listed[0];
    assert_eq!(key["id"], id.as_str());
    assert_eq!(key["account"], "alice");
    assert_eq!(key["label"], "backup agent");
    assert_eq!(key["scopes"], json!(["send", "receive"]));
    assert!(key["expires"].is_string() && key["created"].is_string());
    assert!(
        !listed.to_string().contains(&secret[37..]),
        "a listing shows the secret"
    );
    assert!(listed[0].get("secret").is_none() && listed[0].get("hash").is_none());

    // The key works like a token; using it is written.
    let inbox = get(&hub, &secret, "/api/v1/inbox").await;
    assert_eq!(inbox.status(), StatusCode::OK);
    let used = hub.hub.api_keys(&name("alice")).await.unwrap();
    assert!(used[0].last_used.is_some());

    // A key cannot manage keys, nor log out.
    for request in [
        boxed(get(&hub, &secret, "/api/v1/api-keys")),
        boxed(post(
            &hub,
            &secret,
            "/api/v1/api-keys",
            json!({"label": "minted", "scopes": ["send"]}),
        )),
        boxed(delete(&hub, &secret, &format!("/api/v1/api-keys/{id}"))),
    ] {
        let detail = refused(&hub, StatusCode::FORBIDDEN, request).await;
        assert!(detail.contains("cannot manage API keys"), "{detail}");
    }
    refused(
        &hub,
        StatusCode::FORBIDDEN,
        post(&hub, &secret, "/api/v1/logout", json!({})),
    )
    .await;

    // Bad bodies: 422, nothing made.
    for (body, says) in [
        (json!({"label": "x", "scopes": []}), "at least one scope"),
        (
            json!({"label": "x", "scopes": ["delete"]}),
            "unknown API key scope",
        ),
        (json!({"label": "", "scopes": ["send"]}), "1 to 64"),
        (json!({"label": "a\u{7}b", "scopes": ["send"]}), "printable"),
        (
            json!({"label": "x", "scopes": ["send"], "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"label": "x", "scopes": ["send"], "expires_in_days": 3651}),
            "expires_in_days",
        ),
    ] {
        let detail = refused(
            &hub,
            StatusCode::UNPROCESSABLE_ENTITY,
            post(&hub, &token, "/api/v1/api-keys", body),
        )
        .await;
        assert!(detail.contains(says), "{detail}");
    }
    // No scopes at all, or a field the endpoint does not know: the body does not fit.
    for body in [
        json!({"label": "x"}),
        json!({"label": "x", "scopes": ["send"], "secret": "mine"}),
    ] {
        let detail = refused(
            &hub,
            StatusCode::UNPROCESSABLE_ENTITY,
            post(&hub, &token, "/api/v1/api-keys", body),
        )
        .await;
        assert!(detail.contains("does not fit"), "{detail}");
    }

    // An admin token owns no mailbox, and so no keys of its own.
    let admin = login(&hub, &root, "admin").await;
    refused(
        &hub,
        StatusCode::FORBIDDEN,
        get(&hub, &admin, "/api/v1/api-keys"),
    )
    .await;

    // Revoked, the key stops working at once; a second revocation finds nothing.
    let revoked = delete(&hub, &token, &format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    refused(
        &hub,
        StatusCode::UNAUTHORIZED,
        get(&hub, &secret, "/api/v1/inbox"),
    )
    .await;
    refused(
        &hub,
        StatusCode::NOT_FOUND,
        delete(&hub, &token, &format!("/api/v1/api-keys/{id}")),
    )
    .await;

    // Both changes are alice's own, audited, and no event holds the secret.
    let events = hub.events(EventKind::Admin, Outcome::Ok).await;
    let mine: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.detail.contains("api key"))
        .map(|e| (e.actor.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        mine,
        [
            ("alice", format!("add api key {id} backup agent").as_str()),
            ("alice", format!("revoke api key {id}").as_str()),
        ]
    );
    let all = hub
        .hub
        .events(&mailroom_core::EventQuery::default())
        .await
        .unwrap();
    assert!(
        all.iter()
            .all(|e| !format!("{e:?}").contains(&secret[37..]))
    );
    hub.stop().await;
}

#[tokio::test]
async fn scopes_bound_what_a_key_reaches() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("bob", "alice").await;
    hub.allow("alice", "bob").await;
    let bob_token = login(&hub, &bob, "client").await;
    let sent = send(&hub, &bob_token, "alice", "report.csv", b"a,b\n1,2\n").await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let delivery = hub.deliveries().await[0].id.to_string();

    let token = login(&hub, &alice, "client").await;
    let (_, receiving) = make_key(
        &hub,
        &token,
        "/api/v1/api-keys",
        json!({"label": "fetcher", "scopes": ["receive"]}),
    )
    .await;
    let (_, sending) = make_key(
        &hub,
        &token,
        "/api/v1/api-keys",
        json!({"label": "sender", "scopes": ["send"]}),
    )
    .await;

    // Receive only: the inbox and its content, but nothing that sends.
    let inbox: Value = get(&hub, &receiving, "/api/v1/inbox")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(inbox[0]["id"], delivery.as_str());
    let content = get(
        &hub,
        &receiving,
        &format!("/api/v1/inbox/{delivery}/content"),
    )
    .await;
    assert_eq!(content.status(), StatusCode::OK);
    assert_eq!(&content.bytes().await.unwrap()[..], b"a,b\n1,2\n");
    for request in [
        boxed(post(
            &hub,
            &receiving,
            "/api/v1/uploads",
            json!({"recipients": ["bob"], "name": "x.txt", "size": 1}),
        )),
        boxed(get(&hub, &receiving, "/api/v1/sent")),
        boxed(post(
            &hub,
            &receiving,
            &format!("/api/v1/sent/{delivery}/recall"),
            json!({}),
        )),
    ] {
        let detail = refused(&hub, StatusCode::FORBIDDEN, request).await;
        assert!(detail.contains("lacks the send scope"), "{detail}");
    }

    // Send only: uploads and the sent list, but not the inbox. (Its first use is written as
    // its last; within the minute no use writes again, so the refusals below change nothing
    // at all.)
    let nothing_sent: Value = get(&hub, &sending, "/api/v1/sent")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(nothing_sent, json!([]));
    for request in [
        boxed(get(&hub, &sending, "/api/v1/inbox")),
        boxed(get(&hub, &sending, &format!("/api/v1/inbox/{delivery}"))),
        boxed(get(
            &hub,
            &sending,
            &format!("/api/v1/inbox/{delivery}/content"),
        )),
        boxed(post(
            &hub,
            &sending,
            &format!("/api/v1/inbox/{delivery}/ack"),
            json!({}),
        )),
    ] {
        let detail = refused(&hub, StatusCode::FORBIDDEN, request).await;
        assert!(detail.contains("lacks the receive scope"), "{detail}");
    }
    assert_eq!(
        hub.deliveries().await.len(),
        1,
        "the delivery is still there"
    );
    let sent = send(&hub, &sending, "bob", "reply.txt", b"thanks").await;
    assert_eq!(sent.status(), StatusCode::CREATED);
    let receipts: Value = get(&hub, &sending, "/api/v1/sent")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(receipts[0]["name"], "reply.txt");

    // With both scopes, or a token, everything; the receiving key acknowledges.
    let ack = post(
        &hub,
        &receiving,
        &format!("/api/v1/inbox/{delivery}/ack"),
        json!({}),
    )
    .await;
    assert_eq!(ack.status(), StatusCode::NO_CONTENT);
    hub.stop().await;
}

#[tokio::test]
async fn an_administrator_manages_the_keys_of_client_accounts() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    let root = hub.admin_account("root").await;
    let admin = login(&hub, &root, "admin").await;

    let (id, secret) = make_key(
        &hub,
        &admin,
        "/api/v1/admin/accounts/alice/api-keys",
        json!({"label": "agent on srv-1", "scopes": ["send", "receive"]}),
    )
    .await;
    let listed: Value = get(&hub, &admin, "/api/v1/admin/accounts/alice/api-keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["expires"], Value::Null);
    assert_eq!(
        get(&hub, &secret, "/api/v1/inbox").await.status(),
        StatusCode::OK
    );

    // Refused, changing nothing: an admin account, no account, a name that is none, another
    // account's key, a client's token.
    let body = json!({"label": "x", "scopes": ["send"]});
    for (status, request) in [
        (
            StatusCode::FORBIDDEN,
            boxed(post(
                &hub,
                &admin,
                "/api/v1/admin/accounts/root/api-keys",
                body.clone(),
            )),
        ),
        (
            StatusCode::NOT_FOUND,
            boxed(post(
                &hub,
                &admin,
                "/api/v1/admin/accounts/ghost/api-keys",
                body.clone(),
            )),
        ),
        (
            StatusCode::NOT_FOUND,
            boxed(get(
                &hub,
                &admin,
                "/api/v1/admin/accounts/NOT%20A%20NAME/api-keys",
            )),
        ),
        (
            StatusCode::NOT_FOUND,
            boxed(delete(
                &hub,
                &admin,
                &format!("/api/v1/admin/accounts/bob/api-keys/{id}"),
            )),
        ),
    ] {
        refused(&hub, status, request).await;
    }
    let token = login(&hub, &alice, "client").await;
    refused(
        &hub,
        StatusCode::FORBIDDEN,
        get(&hub, &token, "/api/v1/admin/accounts/alice/api-keys"),
    )
    .await;
    assert_eq!(
        get(&hub, &secret, "/api/v1/inbox").await.status(),
        StatusCode::OK
    );

    let revoked = delete(
        &hub,
        &admin,
        &format!("/api/v1/admin/accounts/alice/api-keys/{id}"),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    refused(
        &hub,
        StatusCode::UNAUTHORIZED,
        get(&hub, &secret, "/api/v1/inbox"),
    )
    .await;
    let details: Vec<String> = hub
        .events(EventKind::Admin, Outcome::Ok)
        .await
        .into_iter()
        .filter(|e| e.detail.contains("api key") && e.actor == "root")
        .map(|e| e.detail)
        .collect();
    assert_eq!(
        details,
        [
            format!("add api key {id} agent on srv-1"),
            format!("revoke api key {id}")
        ]
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_key_stops_working_while_disabled_and_once_expired() {
    let hub = start().await;
    hub.client("alice").await;
    let (_, secret) = hub
        .hub
        .create_api_key(
            &TestHub::admin(),
            &name("alice"),
            "k",
            KeyScopes::ALL,
            Some(hub.clock.now() + time::Duration::days(1)),
        )
        .await
        .unwrap();
    let secret = secret.expose().clone();
    assert_eq!(
        get(&hub, &secret, "/api/v1/inbox").await.status(),
        StatusCode::OK
    );
    hub.hub
        .set_disabled(&TestHub::admin(), &name("alice"), true)
        .await
        .unwrap();
    refused(
        &hub,
        StatusCode::UNAUTHORIZED,
        get(&hub, &secret, "/api/v1/inbox"),
    )
    .await;
    hub.hub
        .set_disabled(&TestHub::admin(), &name("alice"), false)
        .await
        .unwrap();
    assert_eq!(
        get(&hub, &secret, "/api/v1/inbox").await.status(),
        StatusCode::OK
    );
    hub.clock.advance(Duration::from_secs(24 * 3600));
    refused(
        &hub,
        StatusCode::UNAUTHORIZED,
        get(&hub, &secret, "/api/v1/inbox"),
    )
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn the_api_document_describes_the_key_endpoints() {
    let hub = start().await;
    let document: Value = client(&hub)
        .get(url(&hub, "/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = &document["paths"];
    for (path, methods) in [
        ("/api/v1/api-keys", &["get", "post"][..]),
        ("/api/v1/api-keys/{id}", &["delete"][..]),
        (
            "/api/v1/admin/accounts/{name}/api-keys",
            &["get", "post"][..],
        ),
        (
            "/api/v1/admin/accounts/{name}/api-keys/{id}",
            &["delete"][..],
        ),
    ] {
        for method in methods {
            assert!(paths[path][method].is_object(), "{path} {method}");
        }
    }
    let schemas = &document["components"]["schemas"];
    for schema in ["ApiKeyView", "NewApiKeyView", "NewApiKey"] {
        assert!(schemas[schema].is_object(), "{schema}");
    }
    hub.stop().await;
}

/// curl with `args`, trusting the test CA and presenting `key`; its standard output.
async fn curl(hub: &TestHub, key: &str, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&hub.https().ca)
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(args);
    let out = run(command).await;
    assert!(out.status.success(), "curl {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn curl_uploads_and_lists_with_a_key() {
    if !have("curl") {
        return;
    }
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let scopes = json!({"label": "curl", "scopes": ["send", "receive"]});
    let (_, alices) = make_key(
        &hub,
        &login(&hub, &alice, "client").await,
        "/api/v1/api-keys",
        scopes.clone(),
    )
    .await;
    let (_, bobs) = make_key(
        &hub,
        &login(&hub, &bob, "client").await,
        "/api/v1/api-keys",
        scopes,
    )
    .await;

    let content = b"invoice 4711\n".repeat(1000);
    let file = hub.local_dir("curl").join("invoice.txt");
    std::fs::write(&file, &content).unwrap();
    let begun: Value = serde_json::from_str(
        &curl(
            &hub,
            &alices,
            &[
                "-H",
                "Content-Type: application/json",
                "--data",
                &json!({"recipients": ["bob"], "name": "invoice.txt", "size": content.len()})
                    .to_string(),
                &url(&hub, "/api/v1/uploads"),
            ],
        )
        .await,
    )
    .unwrap();
    let id = begun["id"].as_str().unwrap();
    curl(
        &hub,
        &alices,
        &[
            "-X",
            "PATCH",
            "-H",
            "Upload-Offset: 0",
            "-H",
            "Content-Type: application/offset+octet-stream",
            "--data-binary",
            &format!("@{}", file.display()),
            &url(&hub, &format!("/api/v1/uploads/{id}")),
        ],
    )
    .await;
    curl(
        &hub,
        &alices,
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            &json!({"sha256": sha256(&content)}).to_string(),
            &url(&hub, &format!("/api/v1/uploads/{id}/finish")),
        ],
    )
    .await;
    let sent: Value =
        serde_json::from_str(&curl(&hub, &alices, &[&url(&hub, "/api/v1/sent")]).await).unwrap();
    assert_eq!(sent[0]["name"], "invoice.txt");
    let inbox: Value =
        serde_json::from_str(&curl(&hub, &bobs, &[&url(&hub, "/api/v1/inbox")]).await).unwrap();
    assert_eq!(inbox[0]["name"], "invoice.txt");
    assert_eq!(inbox[0]["sender"], "alice");
    let delivery = inbox[0]["id"].as_str().unwrap();
    let fetched = curl(
        &hub,
        &bobs,
        &[&url(&hub, &format!("/api/v1/inbox/{delivery}/content"))],
    )
    .await;
    assert_eq!(fetched.as_bytes(), &content[..]);
    hub.stop().await;
}
