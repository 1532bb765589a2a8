//! What the API's test files share: a hub serving the API over TLS, a client that trusts it,
//! logins and plain requests with a bearer token.

// Each test file uses its own part of this.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mailroom_core::AuthConfig;
use mailroom_test_support::{TestClient, TestHub};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A hub serving the API with the default settings.
pub async fn start() -> TestHub {
    TestHub::start_https(mailroom_https::Config::default(), AuthConfig::default()).await
}

/// An HTTP client that trusts only the hub's CA.
pub fn client(hub: &TestHub) -> Client {
    let pem = std::fs::read(&hub.https().ca).unwrap();
    Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The hub's address of `path`.
pub fn url(hub: &TestHub, path: &str) -> String {
    format!("{}{path}", hub.https().base)
}

/// SHA-256 in lower-case hex.
pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The access token of a password login of `who` in `scope`.
pub async fn token(hub: &TestHub, who: &TestClient, scope: &str) -> String {
    let response = client(hub)
        .post(url(hub, "/api/v1/token"))
        .json(&json!({"username": who.name, "password": who.password, "scope": scope}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

pub async fn get(hub: &TestHub, bearer: &str, path: &str) -> Response {
    client(hub)
        .get(url(hub, path))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
}

pub async fn post(hub: &TestHub, bearer: &str, path: &str, body: Value) -> Response {
    client(hub)
        .post(url(hub, path))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub async fn delete(hub: &TestHub, bearer: &str, path: &str) -> Response {
    client(hub)
        .delete(url(hub, path))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
}
