//! End-to-end encryption keys on the API, against a real server over TLS: a client lists, adds
//! and removes its own age recipients (`/api/v1/e2e-keys`), each refusal a problem document
//! that changed nothing; a sender gets the keys of every account its file to a recipient would
//! reach (`/api/v1/recipients/{name}/e2e-keys`), or the refusal an upload there would get; an
//! administrator sees an account's keys in its account view; the OpenAPI document lists the
//! paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, get, start, token, url};
use mailroom_core::{EventKind, Outcome, Protocol};
use mailroom_test_support::TestHub;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

async fn add(hub: &TestHub, token: &str, body: Value) -> Response {
    client(hub)
        .post(url(hub, "/api/v1/e2e-keys"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn remove(hub: &TestHub, token: &str, wanted: &str) -> Response {
    client(hub)
        .delete(url(hub, &format!("/api/v1/e2e-keys/{wanted}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Checks an answer is a problem document with `status`; returns the document.
async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

/// A fresh age X25519 recipient, `age1…`.
fn recipient() -> String {
    age::x25519::Identity::generate().to_public().to_string()
}

/// What a refusal must leave alone: the account's keys, the admin events, the deliveries.
async fn state(hub: &TestHub, who: &str) -> (Vec<mailroom_core::E2eKey>, usize, Vec<String>) {
    (
        hub.account(who).await.e2e_keys,
        hub.events(EventKind::Admin, Outcome::Ok).await.len(),
        hub.snapshot().await.deliveries,
    )
}

#[tokio::test]
async fn a_client_lists_adds_and_removes_its_own_keys() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let token = token(&hub, &alice, "client").await;

    let listed: Value = get(&hub, &token, "/api/v1/e2e-keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]));

    let laptop = recipient();
    let response = add(
        &hub,
        &token,
        json!({"recipient": laptop, "comment": "laptop"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let added: Value = response.json().await.unwrap();
    let stored = hub.account("alice").await.e2e_keys;
    assert_eq!(stored.len(), 1);
    let fingerprint = stored[0].fingerprint();
    assert_eq!(
        added,
        json!({
            "recipient": laptop,
            "fingerprint": fingerprint,
            "comment": "laptop",
            "added": mailroom_api::rfc3339(stored[0].added),
        })
    );
    // The comment may be left out.
    let desk = recipient();
    let response = add(&hub, &token, json!({"recipient": desk})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let listed: Value = get(&hub, &token, "/api/v1/e2e-keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0], added);
    assert_eq!(listed[1]["recipient"], desk);
    assert_eq!(listed[1]["comment"], "");
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // The change is audited as the account itself, over HTTPS.
    let event = hub
        .events(EventKind::Admin, Outcome::Ok)
        .await
        .pop()
        .unwrap();
    assert_eq!(
        (event.actor.as_str(), event.protocol, event.object.as_str()),
        ("alice", Protocol::Https, "account alice")
    );

    // Refusals: a problem document each, and nothing changed.
    let before = state(&hub, "alice").await;
    let refusals: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "a duplicate",
            json!({"recipient": laptop, "comment": "again"}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "not a recipient",
            json!({"recipient": "age1notarecipient"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-name",
        ),
        (
            "a comment with a line break",
            json!({"recipient": recipient(), "comment": "a\nb"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-name",
        ),
        (
            "a comment too long",
            json!({"recipient": recipient(), "comment": "x".repeat(201)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-name",
        ),
    ];
    for (what, body, status, kind) in refusals {
        let document = problem(add(&hub, &token, body).await, status).await;
        assert!(
            document["type"].as_str().unwrap().ends_with(kind),
            "{what}: {document}"
        );
        assert_eq!(
            state(&hub, "alice").await,
            before,
            "{what} changed something"
        );
    }
    let document = problem(
        add(&hub, &token, json!({"recipient": recipient(), "extra": 1})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(document["detail"].as_str().unwrap().contains("extra"));
    problem(
        remove(&hub, &token, "0123456789abcdef").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(state(&hub, "alice").await, before);

    // Removed by fingerprint.
    let response = remove(&hub, &token, &fingerprint).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let listed: Value = get(&hub, &token, "/api/v1/e2e-keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["recipient"], desk);
    let event = hub
        .events(EventKind::Admin, Outcome::Ok)
        .await
        .pop()
        .unwrap();
    assert_eq!(event.detail, format!("remove e2e key {fingerprint}"));
}

#[tokio::test]
async fn an_account_holds_at_most_sixteen_keys() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let token = token(&hub, &alice, "client").await;
    for _ in 0..16 {
        let response = add(&hub, &token, json!({"recipient": recipient()})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let before = state(&hub, "alice").await;
    problem(
        add(&hub, &token, json!({"recipient": recipient()})).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(state(&hub, "alice").await, before);
}

#[tokio::test]
async fn an_admin_token_has_no_keys_of_its_own_but_sees_an_accounts() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let root = hub.admin_account("root").await;
    let admin = token(&hub, &root, "admin").await;
    for response in [
        get(&hub, &admin, "/api/v1/e2e-keys").await,
        add(&hub, &admin, json!({"recipient": recipient()})).await,
        get(&hub, &admin, "/api/v1/recipients/alice/e2e-keys").await,
    ] {
        problem(response, StatusCode::FORBIDDEN).await;
    }

    let client_token = token(&hub, &alice, "client").await;
    let response = add(
        &hub,
        &client_token,
        json!({"recipient": recipient(), "comment": "c"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let own: Value = get(&hub, &client_token, "/api/v1/e2e-keys")
        .await
        .json()
        .await
        .unwrap();
    let account: Value = get(&hub, &admin, "/api/v1/admin/accounts/alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(account["e2e_keys"], own);
    let accounts: Value = get(&hub, &admin, "/api/v1/admin/accounts")
        .await
        .json()
        .await
        .unwrap();
    let listed = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "alice")
        .unwrap();
    assert_eq!(listed["e2e_keys"], own);
}

#[tokio::test]
async fn a_sender_gets_the_keys_its_file_would_need_or_the_uploads_refusal() {
    let hub = start().await;
    let sender = hub.client("sender").await;
    let mut tokens = Vec::new();
    for who in ["bob", "carol", "dave", "erin"] {
        let account = hub.client(who).await;
        tokens.push((who, token(&hub, &account, "client").await));
    }
    let mut keys = std::collections::BTreeMap::new();
    for (who, token) in &tokens {
        if *who == "dave" {
            continue; // registers none
        }
        let response = add(
            &hub,
            token,
            json!({"recipient": recipient(), "comment": who}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        keys.insert(*who, response.json::<Value>().await.unwrap());
    }
    hub.group("team", &["bob", "carol", "dave"]).await;
    hub.allow("sender", "team").await;
    let token = token(&hub, &sender, "client").await;

    let to_group: Value = get(&hub, &token, "/api/v1/recipients/team/e2e-keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        to_group,
        json!([
            {"account": "bob", "keys": [keys["bob"]]},
            {"account": "carol", "keys": [keys["carol"]]},
            {"account": "dave", "keys": []},
        ])
    );
    // Allowed to the group, so to each member.
    let to_account: Value = get(&hub, &token, "/api/v1/recipients/carol/e2e-keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        to_account,
        json!([{"account": "carol", "keys": [keys["carol"]]}])
    );

    // Out of reach: the answer an upload there gets, and no key.
    for (to, status) in [
        ("erin", StatusCode::FORBIDDEN),
        ("nobody", StatusCode::NOT_FOUND),
    ] {
        let before = hub.snapshot().await.deliveries;
        let refused = problem(
            get(&hub, &token, &format!("/api/v1/recipients/{to}/e2e-keys")).await,
            status,
        )
        .await;
        let upload = problem(
            client(&hub)
                .post(url(&hub, "/api/v1/uploads"))
                .bearer_auth(&token)
                .json(&json!({"recipients": [to], "name": "f.bin", "size": 1}))
                .send()
                .await
                .unwrap(),
            status,
        )
        .await;
        assert_eq!(refused, upload, "{to}");
        assert!(!refused.to_string().contains("age1"), "{refused}");
        assert_eq!(hub.snapshot().await.deliveries, before);
    }
    // A name that is no name reaches nobody either.
    problem(
        get(&hub, &token, "/api/v1/recipients/No%20Such!/e2e-keys").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn the_openapi_document_lists_the_paths() {
    let hub = start().await;
    let doc: Value = client(&hub)
        .get(url(&hub, "/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = &doc["paths"];
    assert!(paths["/api/v1/e2e-keys"]["get"].is_object());
    assert!(paths["/api/v1/e2e-keys"]["post"].is_object());
    assert!(paths["/api/v1/e2e-keys/{fingerprint}"]["delete"].is_object());
    assert!(paths["/api/v1/recipients/{name}/e2e-keys"]["get"].is_object());
    let schemas = &doc["components"]["schemas"];
    for schema in ["E2eKeyView", "RecipientKeysView", "E2eKeyRequest"] {
        assert!(schemas[schema].is_object(), "{schema}");
    }
    assert!(schemas["AccountView"]["properties"]["e2e_keys"].is_object());
}
