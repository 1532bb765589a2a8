//! The HTTPS API against a real server on port 0, over real TLS (the data folder's own PKI),
//! driven by reqwest (HTTP/2 and HTTP/1.1) and curl. Every refusal checks the problem
//! document and that nothing changed (deliveries and stored blobs, and the event trail where
//! the refusal itself is not accounted).

// Tests may unwrap (CONTRIBUTING.md): a failed unwrap is a failed check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use mailroom_core::{AuthConfig, EventKind, Outcome, Protocol};
use mailroom_test_support::{TestClient, TestHub, eventually, have, run, text};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn start() -> TestHub {
    start_with(mailroom_https::Config::default(), AuthConfig::default()).await
}

async fn start_with(config: mailroom_https::Config, auth: AuthConfig) -> TestHub {
    TestHub::start_https(config, auth).await
}

/// A reqwest client trusting only the test server CA.
fn client(hub: &TestHub) -> Client {
    let pem = std::fs::read(&hub.https().ca).unwrap();
    Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn url(hub: &TestHub, path: &str) -> String {
    format!("{}{path}", hub.https().base)
}

async fn login(hub: &TestHub, who: &TestClient) -> Value {
    login_scope(hub, who, "client").await
}

async fn login_scope(hub: &TestHub, who: &TestClient, scope: &str) -> Value {
    let response = client(hub)
        .post(url(hub, "/api/v1/token"))
        .json(&json!({"username": who.name, "password": who.password, "scope": scope}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn access(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_owned()
}

async fn get(hub: &TestHub, token: &str, path: &str) -> Response {
    client(hub)
        .get(url(hub, path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Checks an answer is an RFC 9457 problem with `status`; returns its detail.
async fn problem(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_security_headers(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].is_string() && body["title"].is_string());
    let detail = body["detail"].as_str().unwrap().to_owned();
    assert!(!detail.is_empty());
    detail
}

fn assert_security_headers(response: &Response) {
    let h = response.headers();
    assert_eq!(
        h["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; frame-ancestors 'none'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Sends `content` from `token`'s account to `recipients` in one upload; the answer of finish.
async fn send(
    hub: &TestHub,
    token: &str,
    recipients: &[&str],
    name: &str,
    content: &[u8],
) -> Value {
    let upload = begin(hub, token, recipients, name, content.len() as u64).await;
    let id = upload["id"].as_str().unwrap();
    let response = patch(hub, token, id, 0, content.to_vec()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = client(hub)
        .post(url(hub, &format!("/api/v1/uploads/{id}/finish")))
        .bearer_auth(token)
        .json(&json!({"sha256": sha256(content)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn begin(hub: &TestHub, token: &str, recipients: &[&str], name: &str, size: u64) -> Value {
    let response = client(hub)
        .post(url(hub, "/api/v1/uploads"))
        .bearer_auth(token)
        .json(&json!({"recipients": recipients, "name": name, "size": size}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.text().await
    );
    response.json().await.unwrap()
}

async fn patch(hub: &TestHub, token: &str, id: &str, offset: u64, body: Vec<u8>) -> Response {
    client(hub)
        .patch(url(hub, &format!("/api/v1/uploads/{id}")))
        .bearer_auth(token)
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn pair(hub: &TestHub) -> (TestClient, TestClient) {
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    (alice, bob)
}

#[tokio::test]
async fn login_ok_and_wrong_password() {
    let hub = start().await;
    let (alice, _) = pair(&hub).await;
    let tokens = login(&hub, &alice).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["scope"], "client");
    assert_eq!(access(&tokens).len(), 64);
    let ok = hub.events(EventKind::Login, Outcome::Ok).await;
    assert!(
        ok.iter()
            .any(|e| e.actor == "alice" && e.protocol == Protocol::Https)
    );

    // A wrong password and an unknown account get the same 401 problem.
    let before = hub.snapshot().await;
    let mut details = Vec::new();
    for user in ["alice", "nobody"] {
        let response = client(&hub)
            .post(url(&hub, "/api/v1/token"))
            .json(&json!({"username": user, "password": "Wrong-horse-battery-9"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"mailroom\""
        );
        details.push(problem(response, StatusCode::UNAUTHORIZED).await);
    }
    assert_eq!(
        details[0], details[1],
        "the same words whether the account exists or not"
    );
    assert_eq!(hub.snapshot().await, before);
    let refused = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(refused.iter().any(|e| e.actor == "alice"
        && e.protocol == Protocol::Https
        && e.detail == "password: wrong password"));
    assert!(
        refused
            .iter()
            .any(|e| e.actor == "nobody" && e.detail.contains("unknown account"))
    );
}

#[tokio::test]
async fn refused_logins_feed_the_defender_and_a_banned_address_gets_403() {
    let mut auth = AuthConfig::default();
    auth.defender.threshold = 3;
    let hub = start_with(mailroom_https::Config::default(), auth).await;
    let (alice, _) = pair(&hub).await;
    let tokens = login(&hub, &alice).await;
    // Wrong password: 1 point to the address and the account; unknown account: 2 to the address.
    for user in ["alice", "nobody"] {
        let response = client(&hub)
            .post(url(&hub, "/api/v1/token"))
            .json(&json!({"username": user, "password": "Wrong-horse-battery-9"}))
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    let bans = hub.events(EventKind::Ban, Outcome::Ok).await;
    assert!(bans.iter().any(|e| e.object == "127.0.0.1"), "{bans:?}");
    // The banned address is refused at its next request, even with a good token.
    let detail = problem(
        get(&hub, &access(&tokens), "/api/v1/inbox").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(detail.contains("refused"), "{detail}");
    let refused = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(
        refused
            .iter()
            .any(|e| e.detail.contains("connection refused: address banned")
                && e.protocol == Protocol::Https)
    );
}

#[tokio::test]
async fn totp_is_required_when_the_account_requires_it() {
    let hub = start().await;
    let (alice, _) = pair(&hub).await;
    let setup = hub
        .hub
        .enroll_totp(
            &TestHub::admin(),
            &mailroom_core::AccountName::parse("alice").unwrap(),
        )
        .await
        .unwrap();
    hub.set_access("alice", |a| {
        a.factors = mailroom_core::FactorSet::parse("password,totp").unwrap();
    })
    .await;
    let response = client(&hub)
        .post(url(&hub, "/api/v1/token"))
        .json(&json!({"username": "alice", "password": alice.password}))
        .send()
        .await
        .unwrap();
    let detail = problem(response, StatusCode::UNAUTHORIZED).await;
    assert!(detail.contains("totp"), "{detail}");
    let now = u64::try_from(hub.hub.now().unix_timestamp()).unwrap();
    let code = mailroom_core::totp_code(setup.secret.expose(), now).unwrap();
    let response = client(&hub)
        .post(url(&hub, "/api/v1/token"))
        .json(&json!({"username": "alice", "password": alice.password, "totp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ok = hub.events(EventKind::Login, Outcome::Ok).await;
    assert!(
        ok.iter()
            .any(|e| e.actor == "alice" && e.detail == "password+totp")
    );
}

#[tokio::test]
async fn wrong_expired_and_revoked_tokens_are_refused() {
    let hub = start().await;
    let (alice, bob) = pair(&hub).await;
    let before = hub.snapshot().await;
    // No token, a wrong token, a refresh token used as an access token.
    let response = client(&hub)
        .get(url(&hub, "/api/v1/inbox"))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
    problem(
        get(&hub, &"0".repeat(64), "/api/v1/inbox").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let tokens = login(&hub, &alice).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    problem(
        get(&hub, refresh, "/api/v1/inbox").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        get(&hub, &access(&tokens), "/api/v1/inbox").await.status(),
        StatusCode::OK
    );

    // Expired: the hub's clock moves past the 15 minutes.
    hub.clock.advance(Duration::from_secs(16 * 60));
    problem(
        get(&hub, &access(&tokens), "/api/v1/inbox").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // The refresh token still works, once; the new access token works.
    let response = client(&hub)
        .post(url(&hub, "/api/v1/token/refresh"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let renewed: Value = response.json().await.unwrap();
    assert_eq!(renewed["session"], tokens["session"]);
    assert_eq!(
        get(&hub, &access(&renewed), "/api/v1/inbox").await.status(),
        StatusCode::OK
    );
    let again = client(&hub)
        .post(url(&hub, "/api/v1/token/refresh"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    problem(again, StatusCode::UNAUTHORIZED).await;

    // Logout revokes both tokens of the login.
    let response = client(&hub)
        .post(url(&hub, "/api/v1/logout"))
        .bearer_auth(access(&renewed))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    problem(
        get(&hub, &access(&renewed), "/api/v1/inbox").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let response = client(&hub)
        .post(url(&hub, "/api/v1/token/refresh"))
        .json(&json!({"refresh_token": renewed["refresh_token"]}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
    let closed = hub.events(EventKind::SessionClosed, Outcome::Ok).await;
    assert!(closed.iter().any(|e| e.detail.starts_with("logout")));

    // A password change revokes every token of the account.
    let tokens = login(&hub, &alice).await;
    hub.hub
        .set_password(
            &TestHub::admin(),
            &mailroom_core::AccountName::parse("alice").unwrap(),
            mailroom_core::Secret::new("Another-long-passphrase-77".to_owned()),
        )
        .await
        .unwrap();
    problem(
        get(&hub, &access(&tokens), "/api/v1/inbox").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Disabling revokes for good: enabling again does not revive the token.
    let tokens = login(&hub, &bob).await;
    let name = mailroom_core::AccountName::parse("bob").unwrap();
    hub.hub
        .set_disabled(&TestHub::admin(), &name, true)
        .await
        .unwrap();
    problem(
        get(&hub, &access(&tokens), "/api/v1/inbox").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    hub.hub
        .set_disabled(&TestHub::admin(), &name, false)
        .await
        .unwrap();
    problem(
        get(&hub, &access(&tokens), "/api/v1/inbox").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(hub.snapshot().await, before);
}

#[tokio::test]
async fn scopes_keep_clients_and_admins_apart() {
    let hub = start().await;
    let (alice, _) = pair(&hub).await;
    let root = hub.admin_account("root").await;
    let client_token = access(&login(&hub, &alice).await);
    let detail = problem(
        get(&hub, &client_token, "/api/v1/admin/accounts").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(detail.contains("admin token"));
    // An admin account cannot log in as a client, nor a client as an admin.
    for (who, scope) in [(&root, "client"), (&alice, "admin")] {
        let response = client(&hub)
            .post(url(&hub, "/api/v1/token"))
            .json(&json!({"username": who.name, "password": who.password, "scope": scope}))
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    let admin_token = access(&login_scope(&hub, &root, "admin").await);
    problem(
        get(&hub, &admin_token, "/api/v1/inbox").await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // The admin manages accounts; its changes are audited under its name.
    let accounts: Value = get(&hub, &admin_token, "/api/v1/admin/accounts")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        accounts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "alice")
    );
    let response = client(&hub)
        .post(url(&hub, "/api/v1/admin/accounts"))
        .bearer_auth(&admin_token)
        .json(&json!({"name": "carol", "password": "Velvet-orbit-trumpet-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = client(&hub)
        .patch(url(&hub, "/api/v1/admin/accounts/carol"))
        .bearer_auth(&admin_token)
        .json(&json!({
            "rights": {"send": false, "receive": true, "delete": false, "recall": false},
            "limits": {"max_file_size": 1000}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let carol: Value = response.json().await.unwrap();
    // The answer is mailroom-api's account: rights as an object, limits as the object sent.
    assert_eq!(
        carol["rights"],
        json!({"send": false, "receive": true, "delete": false, "recall": false})
    );
    assert_eq!(carol["limits"]["max_file_size"], 1000);
    assert_eq!(carol["limits"]["quota_bytes"], Value::Null);
    assert_eq!(carol["has_password"], true);
    assert_eq!(carol["require"], json!([]));
    let admin_events = hub.events(EventKind::Admin, Outcome::Ok).await;
    assert!(
        admin_events
            .iter()
            .any(|e| e.actor == "root" && e.object == "account carol")
    );

    // Live sessions: alice's token login is one; kicking it revokes the token.
    let sessions: Value = get(&hub, &admin_token, "/api/v1/admin/sessions")
        .await
        .json()
        .await
        .unwrap();
    let alice_session = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["account"] == "alice" && s["protocol"] == "https")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = client(&hub)
        .delete(url(
            &hub,
            &format!("/api/v1/admin/sessions/{alice_session}"),
        ))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    problem(
        get(&hub, &client_token, "/api/v1/inbox").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Audit query and verification.
    let events: Value = get(
        &hub,
        &admin_token,
        "/api/v1/admin/audit?kind=login&outcome=ok&limit=5",
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] == "login")
    );
    let verify: Value = get(&hub, &admin_token, "/api/v1/admin/audit/verify")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verify["intact"], true);
    assert_eq!(verify["broken"], Value::Null);
    assert_eq!(verify["checkpoints"], json!([]));
    let checkpoint = verify["head"]["checkpoint"].as_str().unwrap().to_owned();
    let expected: Value = get(
        &hub,
        &admin_token,
        &format!("/api/v1/admin/audit/verify?expect={checkpoint}"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        expected["checkpoints"],
        json!([{"checkpoint": checkpoint, "status": "found"}])
    );
    problem(
        get(&hub, &admin_token, "/api/v1/admin/audit?kind=nonsense").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

/// An admin change is one commit: a PATCH whose password is too weak changes none of its
/// other fields either, and a group with an unknown member is not created at all.
#[tokio::test]
async fn refused_admin_changes_change_nothing() {
    let hub = start().await;
    let root = hub.admin_account("root").await;
    let (alice, _bob) = pair(&hub).await;
    let admin_token = access(&login_scope(&hub, &root, "admin").await);
    let before = hub.account(&alice.name).await;
    let events_before = hub.events(EventKind::Admin, Outcome::Ok).await.len();
    let response = client(&hub)
        .patch(url(&hub, &format!("/api/v1/admin/accounts/{}", alice.name)))
        .bearer_auth(&admin_token)
        .json(&json!({
            "rights": {"send": false, "receive": true, "delete": false, "recall": false},
            "disabled": true,
            "password": "short"
        }))
        .send()
        .await
        .unwrap();
    let detail = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(detail.contains("password"), "{detail}");
    assert_eq!(hub.account(&alice.name).await, before, "nothing changed");
    assert_eq!(
        hub.events(EventKind::Admin, Outcome::Ok).await.len(),
        events_before
    );
    // An unknown factor in `require` is refused the same way.
    let response = client(&hub)
        .patch(url(&hub, &format!("/api/v1/admin/accounts/{}", alice.name)))
        .bearer_auth(&admin_token)
        .json(&json!({"require": ["password", "sms"], "disabled": true}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(hub.account(&alice.name).await, before, "nothing changed");

    // A group with an unknown member: 404, and no group.
    let response = client(&hub)
        .post(url(&hub, "/api/v1/admin/groups"))
        .bearer_auth(&admin_token)
        .json(&json!({"name": "team", "members": [alice.name, "nobody"]}))
        .send()
        .await
        .unwrap();
    let detail = problem(response, StatusCode::NOT_FOUND).await;
    assert!(detail.contains("nobody"), "{detail}");
    let groups: Value = get(&hub, &admin_token, "/api/v1/admin/groups")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(groups, json!([]), "no group was created");
    assert_eq!(
        hub.events(EventKind::Admin, Outcome::Ok).await.len(),
        events_before
    );
    hub.stop().await;
}

#[tokio::test]
async fn send_download_with_ranges_acknowledge_and_receipts() {
    let hub = start().await;
    let (alice, bob) = pair(&hub).await;
    hub.client("carol").await;
    hub.group("team", &["bob", "carol"]).await;
    hub.allow("alice", "team").await;
    let a = access(&login(&hub, &alice).await);
    let b = access(&login(&hub, &bob).await);
    let content = data(300_000, 7);
    // To bob directly and to his group: bob gets one delivery, carol one.
    let finished = send(&hub, &a, &["bob", "team"], "report.pdf", &content).await;
    let deliveries = finished["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    let inbox: Value = get(&hub, &b, "/api/v1/inbox").await.json().await.unwrap();
    let item = &inbox.as_array().unwrap()[0];
    assert_eq!(item["sender"], "alice");
    assert_eq!(item["name"], "report.pdf");
    assert_eq!(item["size"], 300_000);
    assert_eq!(item["sha256"], sha256(&content));
    assert_eq!(item["state"], "delivered");
    let id = item["id"].as_str().unwrap();
    let path = format!("/api/v1/inbox/{id}/content");

    // A range: 206 with exactly those bytes; a range past the end: 416.
    let response = client(&hub)
        .get(url(&hub, &path))
        .bearer_auth(&b)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["content-range"],
        "bytes 1000-1999/300000"
    );
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        &content[1000..2000]
    );
    let response = client(&hub)
        .get(url(&hub, &path))
        .bearer_auth(&b)
        .header("Range", "bytes=300000-")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-range"], "bytes */300000");
    problem(response, StatusCode::RANGE_NOT_SATISFIABLE).await;
    let sent: Value = get(&hub, &a, "/api/v1/sent").await.json().await.unwrap();
    assert!(
        sent.as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "delivered")
    );

    // The whole file: picked up, which the sender's receipt shows.
    let response = get(&hub, &b, &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().as_ref(), content.as_slice());
    let receipts = || async {
        let sent: Value = get(&hub, &a, "/api/v1/sent").await.json().await.unwrap();
        sent.as_array()
            .unwrap()
            .iter()
            .find(|d| d["recipient"] == "bob")
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The pick-up is accounted when the body stream ends, just after the client has it.
    assert!(
        eventually(Duration::from_secs(10), async || receipts().await
            == "picked-up")
        .await
    );
    // A picked-up delivery can no longer be recalled.
    let response = client(&hub)
        .post(url(&hub, &format!("/api/v1/sent/{id}/recall")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::CONFLICT).await;
    // Acknowledge: gone from the inbox, "acknowledged" in the receipt.
    let response = client(&hub)
        .post(url(&hub, &format!("/api/v1/inbox/{id}/ack")))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let inbox: Value = get(&hub, &b, "/api/v1/inbox").await.json().await.unwrap();
    assert!(inbox.as_array().unwrap().is_empty());
    assert_eq!(receipts().await, "acknowledged");
    // Carol's copy is still pending: alice recalls it.
    let carol_id = deliveries
        .iter()
        .find(|d| d["recipient"] == "carol")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = client(&hub)
        .post(url(&hub, &format!("/api/v1/sent/{carol_id}/recall")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let downloads = hub.events(EventKind::Download, Outcome::Ok).await;
    assert!(
        downloads
            .iter()
            .any(|e| e.actor == "bob" && e.protocol == Protocol::Https)
    );
    let uploads = hub.events(EventKind::Upload, Outcome::Ok).await;
    assert!(
        uploads
            .iter()
            .any(|e| e.object == "/outbox/{bob,team}/report.pdf")
    );
}

#[tokio::test]
async fn another_accounts_delivery_id_is_not_found_and_nothing_changes() {
    let hub = start().await;
    let (alice, bob) = pair(&hub).await;
    let eve = hub.client("eve").await;
    let a = access(&login(&hub, &alice).await);
    let e = access(&login(&hub, &eve).await);
    let finished = send(&hub, &a, &["bob"], "secret.txt", b"for bob only").await;
    let id = finished["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let before = hub.snapshot().await;
    for (method, path) in [
        ("GET", format!("/api/v1/inbox/{id}")),
        ("GET", format!("/api/v1/inbox/{id}/content")),
        ("POST", format!("/api/v1/inbox/{id}/ack")),
        ("POST", format!("/api/v1/sent/{id}/recall")),
        ("GET", "/api/v1/inbox/not-an-id/content".to_owned()),
    ] {
        let request = match method {
            "GET" => client(&hub).get(url(&hub, &path)),
            _ => client(&hub).post(url(&hub, &path)),
        };
        let response = request.bearer_auth(&e).send().await.unwrap();
        problem(response, StatusCode::NOT_FOUND).await;
    }
    // The sender cannot read or acknowledge it as if it were in her inbox either.
    problem(
        get(&hub, &a, &format!("/api/v1/inbox/{id}/content")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(hub.snapshot().await, before);
    let b = access(&login(&hub, &bob).await);
    assert_eq!(
        get(&hub, &b, &format!("/api/v1/inbox/{id}")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn oversize_uploads_are_refused_and_nothing_changes() {
    let hub = start().await;
    let (alice, _) = pair(&hub).await;
    hub.set_access("alice", |a| a.limits.max_file_size = Some(1000))
        .await;
    let a = access(&login(&hub, &alice).await);
    let before = hub.snapshot().await;
    let response = client(&hub)
        .post(url(&hub, "/api/v1/uploads"))
        .bearer_auth(&a)
        .json(&json!({"recipients": ["bob"], "name": "big.bin", "size": 5000}))
        .send()
        .await
        .unwrap();
    let detail = problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(
        detail.contains("1000") || detail.contains("1000 B") || detail.contains("larg"),
        "{detail}"
    );
    // Announcing a small size and sending more is refused at the write, nothing written.
    let upload = begin(&hub, &a, &["bob"], "small.bin", 10).await;
    let id = upload["id"].as_str().unwrap();
    let mid = hub.snapshot().await;
    problem(
        patch(&hub, &a, id, 0, data(20, 1)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let head = client(&hub)
        .head(url(&hub, &format!("/api/v1/uploads/{id}")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["upload-offset"], "0");
    assert_eq!(hub.snapshot().await, mid);
    // Unknown recipients, bad names: refused before a byte.
    let response = client(&hub)
        .post(url(&hub, "/api/v1/uploads"))
        .bearer_auth(&a)
        .json(&json!({"recipients": ["bob"], "name": "../etc/passwd", "size": 1}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let response = client(&hub)
        .post(url(&hub, "/api/v1/uploads"))
        .bearer_auth(&a)
        .json(&json!({"recipients": ["nobody"], "name": "x.txt", "size": 1}))
        .send()
        .await
        .unwrap();
    let detail = problem(response, StatusCode::NOT_FOUND).await;
    assert!(detail.contains("no recipient named nobody"), "{detail}");
    let response = client(&hub)
        .delete(url(&hub, &format!("/api/v1/uploads/{id}")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(hub.snapshot().await.deliveries, before.deliveries);
}

#[tokio::test]
async fn wrong_offset_conflicts_and_wrong_checksum_delivers_nothing() {
    let hub = start().await;
    let (alice, bob) = pair(&hub).await;
    let a = access(&login(&hub, &alice).await);
    let content = data(100_000, 3);
    let upload = begin(&hub, &a, &["bob"], "data.bin", content.len() as u64).await;
    let id = upload["id"].as_str().unwrap();
    assert_eq!(
        patch(&hub, &a, id, 0, content[..40_000].to_vec())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let before = hub.snapshot().await;
    let response = patch(&hub, &a, id, 50_000, content[50_000..].to_vec()).await;
    let detail = problem(response, StatusCode::CONFLICT).await;
    assert!(detail.contains("40000"), "{detail}");
    let response = patch(&hub, &a, id, 0, content.clone()).await;
    problem(response, StatusCode::CONFLICT).await;
    assert_eq!(hub.snapshot().await, before);
    let status: Value = get(&hub, &a, &format!("/api/v1/uploads/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["offset"], 40_000);
    // Finishing early is refused and keeps the upload.
    let response = client(&hub)
        .post(url(&hub, &format!("/api/v1/uploads/{id}/finish")))
        .bearer_auth(&a)
        .json(&json!({"sha256": sha256(&content)}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::CONFLICT).await;
    assert_eq!(
        patch(&hub, &a, id, 40_000, content[40_000..].to_vec())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // The wrong SHA-256: refused, nothing delivered, the upload is gone.
    let deliveries_before = hub.snapshot().await.deliveries;
    let response = client(&hub)
        .post(url(&hub, &format!("/api/v1/uploads/{id}/finish")))
        .bearer_auth(&a)
        .json(&json!({"sha256": sha256(b"something else")}))
        .send()
        .await
        .unwrap();
    let detail = problem(response, StatusCode::CONFLICT).await;
    assert!(detail.contains("nothing was delivered"), "{detail}");
    assert_eq!(hub.snapshot().await.deliveries, deliveries_before);
    let b = access(&login(&hub, &bob).await);
    let inbox: Value = get(&hub, &b, "/api/v1/inbox").await.json().await.unwrap();
    assert!(inbox.as_array().unwrap().is_empty());
    problem(
        get(&hub, &a, &format!("/api/v1/uploads/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let refused = hub.events(EventKind::Upload, Outcome::Refused).await;
    assert!(refused.iter().any(|e| e.detail.contains("SHA-256")));
    // Nothing was left in the blob store: no staging file, no orphan blob.
    assert!(
        hub.snapshot()
            .await
            .blobs
            .iter()
            .all(|b| !b.to_string_lossy().contains("objects"))
    );
}

#[tokio::test]
async fn a_dropped_connection_mid_patch_resumes_from_the_offset() {
    let hub = start().await;
    let (alice, bob) = pair(&hub).await;
    let a = access(&login(&hub, &alice).await);
    let content = data(3 << 20, 9);
    let upload = begin(&hub, &a, &["bob"], "big.bin", content.len() as u64).await;
    let id = upload["id"].as_str().unwrap().to_owned();
    // A body that sends 1 MiB and then fails: the client drops the request mid-body.
    let first = content[..1 << 20].to_vec();
    let stream = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(first)),
        Err(std::io::Error::other("connection lost")),
    ]);
    let result = client(&hub)
        .patch(url(&hub, &format!("/api/v1/uploads/{id}")))
        .bearer_auth(&a)
        .header("Upload-Offset", "0")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert!(result.is_err() || !result.unwrap().status().is_success());
    // HEAD says how much arrived (once the server has let go of the upload).
    let mut offset = 0u64;
    assert!(
        eventually(Duration::from_secs(20), async || {
            let head = client(&hub)
                .head(url(&hub, &format!("/api/v1/uploads/{id}")))
                .bearer_auth(&a)
                .send()
                .await
                .unwrap();
            if head.status() != StatusCode::OK {
                return false;
            }
            offset = head.headers()["upload-offset"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            true
        })
        .await
    );
    assert!(offset <= 1 << 20);
    let response = patch(&hub, &a, &id, offset, content[offset as usize..].to_vec()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        response.headers()["upload-offset"],
        content.len().to_string()
    );
    let response = client(&hub)
        .post(url(&hub, &format!("/api/v1/uploads/{id}/finish")))
        .bearer_auth(&a)
        .json(&json!({"sha256": sha256(&content)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let b = access(&login(&hub, &bob).await);
    let inbox: Value = get(&hub, &b, "/api/v1/inbox").await.json().await.unwrap();
    let did = inbox[0]["id"].as_str().unwrap();
    let body = get(&hub, &b, &format!("/api/v1/inbox/{did}/content"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&body), sha256(&content), "delivered intact");
}

#[tokio::test]
async fn unfinished_uploads_expire_and_deliver_nothing() {
    let hub = start().await;
    let (alice, _) = pair(&hub).await;
    let a = access(&login(&hub, &alice).await);
    let before = hub.snapshot().await;
    let upload = begin(&hub, &a, &["bob"], "late.bin", 100).await;
    let id = upload["id"].as_str().unwrap();
    assert_eq!(
        patch(&hub, &a, id, 0, data(50, 1)).await.status(),
        StatusCode::NO_CONTENT
    );
    hub.clock.advance(Duration::from_secs(25 * 3600));
    assert_eq!(hub.hub.expire_resumable().await, 1);
    // A fresh login (the old token expired with the clock).
    let a = access(&login(&hub, &alice).await);
    problem(
        get(&hub, &a, &format!("/api/v1/uploads/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(hub.snapshot().await, before);
    let failed = hub.events(EventKind::Upload, Outcome::Failed).await;
    assert!(failed.iter().any(|e| e.detail.contains("expired")));
}

#[tokio::test]
async fn unknown_paths_methods_and_bodies_are_problems() {
    let hub = start().await;
    let (alice, _) = pair(&hub).await;
    let a = access(&login(&hub, &alice).await);
    problem(get(&hub, &a, "/nothing/here").await, StatusCode::NOT_FOUND).await;
    let response = client(&hub)
        .put(url(&hub, "/api/v1/inbox"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    let response = client(&hub)
        .post(url(&hub, "/api/v1/token"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::BAD_REQUEST).await;
    let response = client(&hub)
        .post(url(&hub, "/api/v1/token"))
        .header("content-type", "application/json")
        .body(format!("{{\"username\": \"{}\"}}", "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    // The OpenAPI document is served and describes the API.
    let response = client(&hub)
        .get(url(&hub, "/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_security_headers(&response);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/v1/uploads/{id}"]["patch"].is_object());
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let config = mailroom_https::Config {
        login_attempts_per_minute: 3,
        ..mailroom_https::Config::default()
    };
    let hub = start_with(config, AuthConfig::default()).await;
    let (alice, _) = pair(&hub).await;
    for _ in 0..3 {
        login(&hub, &alice).await;
    }
    let response = client(&hub)
        .post(url(&hub, "/api/v1/token"))
        .json(&json!({"username": "alice", "password": alice.password}))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    problem(response, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn curl_downloads_a_range_and_resumes_an_upload() {
    if !have("curl") {
        return;
    }
    let hub = start().await;
    let (alice, bob) = pair(&hub).await;
    let a = access(&login(&hub, &alice).await);
    let b = access(&login(&hub, &bob).await);
    let dir = hub.local_dir("curl");
    let content = data(200_000, 5);
    let upload = begin(&hub, &a, &["bob"], "curl.bin", content.len() as u64).await;
    let id = upload["id"].as_str().unwrap();
    // First part with curl, then (as after a drop) the rest from the offset HEAD gives.
    let part1 = dir.join("part1");
    let part2 = dir.join("part2");
    std::fs::write(&part1, &content[..120_000]).unwrap();
    std::fs::write(&part2, &content[120_000..]).unwrap();
    let curl = |args: Vec<String>| {
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["-sS", "--fail-with-body", "--max-time", "60", "--cacert"])
            .arg(&hub.https().ca)
            .args(args);
        run(command)
    };
    let upload_url = url(&hub, &format!("/api/v1/uploads/{id}"));
    let out = curl(vec![
        "-X".into(),
        "PATCH".into(),
        "-H".into(),
        format!("Authorization: Bearer {a}"),
        "-H".into(),
        "Upload-Offset: 0".into(),
        "-H".into(),
        "Content-Type: application/offset+octet-stream".into(),
        "--data-binary".into(),
        format!("@{}", part1.display()),
        upload_url.clone(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = curl(vec![
        "-I".into(),
        "-H".into(),
        format!("Authorization: Bearer {a}"),
        upload_url.clone(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(headers.contains("upload-offset: 120000"), "{headers}");
    let out = curl(vec![
        "-X".into(),
        "PATCH".into(),
        "-H".into(),
        format!("Authorization: Bearer {a}"),
        "-H".into(),
        "Upload-Offset: 120000".into(),
        "-H".into(),
        "Content-Type: application/offset+octet-stream".into(),
        "--data-binary".into(),
        format!("@{}", part2.display()),
        upload_url.clone(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = curl(vec![
        "-X".into(),
        "POST".into(),
        "-H".into(),
        format!("Authorization: Bearer {a}"),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data".into(),
        json!({"sha256": sha256(&content)}).to_string(),
        format!("{upload_url}/finish"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    // Bob downloads a range with curl -r.
    let inbox: Value = get(&hub, &b, "/api/v1/inbox").await.json().await.unwrap();
    let did = inbox[0]["id"].as_str().unwrap();
    let out_file = dir.join("range");
    let out = curl(vec![
        "-r".into(),
        "100-4195".into(),
        "-H".into(),
        format!("Authorization: Bearer {b}"),
        "-o".into(),
        out_file.display().to_string(),
        "-w".into(),
        "%{http_code} %{http_version}".into(),
        url(&hub, &format!("/api/v1/inbox/{did}/content")),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "206 2",
        "HTTP/2 via ALPN, 206"
    );
    assert_eq!(std::fs::read(&out_file).unwrap(), &content[100..4196]);
}

/// A hub whose HTTPS API trusts a proxy at `networks`, and the proxy's signer.
async fn with_proxy(
    networks: &[&str],
) -> (
    TestHub,
    mailroom_https::proxy::TrustedProxy,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("proxy.key");
    std::fs::write(&key_file, "test-key-0123456789abcdef-0123456789abcdef\n").unwrap();
    let networks: Vec<String> = networks.iter().map(|n| (*n).to_owned()).collect();
    let config = mailroom_https::Config {
        trusted_proxy_key_file: key_file.clone(),
        trusted_proxy_networks: networks.clone(),
        ..mailroom_https::Config::default()
    };
    let hub = start_with(config, AuthConfig::default()).await;
    let signer = mailroom_https::proxy::TrustedProxy::from_settings(&key_file, &networks)
        .unwrap()
        .unwrap();
    (hub, signer, dir)
}

/// `POST /api/v1/token/proxy` with the proxy headers for `user`, signed at `time` for
/// `signed_path`.
async fn vouch(
    hub: &TestHub,
    signer: &mailroom_https::proxy::TrustedProxy,
    user: &str,
    time: i64,
    signed_path: &str,
) -> Response {
    let time = time.to_string();
    client(hub)
        .post(url(hub, "/api/v1/token/proxy"))
        .header("Mailroom-Proxy-User", user)
        .header("Mailroom-Proxy-Time", &time)
        .header(
            "Mailroom-Proxy-Signature",
            signer.sign(user, &time, "POST", signed_path),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trusted_proxy_vouches_for_client_accounts_it_signed_for() {
    let (hub, signer, _dir) = with_proxy(&["127.0.0.1/32"]).await;
    hub.client("alice").await;
    hub.client("bob").await;
    hub.admin_account("root").await;
    let path = "/api/v1/token/proxy";
    let now = hub.hub.now().unix_timestamp();

    let tokens: Value = {
        let response = vouch(&hub, &signer, "alice", now, path).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    };
    assert_eq!(
        get(&hub, &access(&tokens), "/api/v1/inbox").await.status(),
        StatusCode::OK
    );
    let logins = hub.events(EventKind::Login, Outcome::Ok).await;
    let vouched = logins.last().unwrap();
    assert_eq!(vouched.actor, "alice");
    assert!(
        vouched.detail.contains("vouched by the trusted proxy"),
        "{vouched:?}"
    );

    let before_ok = logins.len();
    let before = hub.snapshot().await;
    // A signature for another user, another endpoint, an old time, or none at all: one 401
    // each, no login.
    let time = now.to_string();
    let forged = client(&hub)
        .post(url(&hub, path))
        .header("Mailroom-Proxy-User", "bob")
        .header("Mailroom-Proxy-Time", &time)
        .header(
            "Mailroom-Proxy-Signature",
            signer.sign("alice", &time, "POST", path),
        )
        .send()
        .await
        .unwrap();
    problem(forged, StatusCode::UNAUTHORIZED).await;
    problem(
        vouch(&hub, &signer, "alice", now, "/api/v1/token").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        vouch(&hub, &signer, "alice", now - 120, path).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let bare = client(&hub).post(url(&hub, path)).send().await.unwrap();
    problem(bare, StatusCode::UNAUTHORIZED).await;
    // Good signatures, but the hub says no: an admin (never vouched for), a disabled account.
    problem(
        vouch(&hub, &signer, "root", now, path).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    hub.hub
        .set_disabled(
            &TestHub::admin(),
            &mailroom_core::AccountName::parse("bob").unwrap(),
            true,
        )
        .await
        .unwrap();
    problem(
        vouch(&hub, &signer, "bob", now, path).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    assert_eq!(
        hub.events(EventKind::Login, Outcome::Ok).await.len(),
        before_ok
    );
    assert_eq!(hub.snapshot().await, before);
    let refused = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(
        refused.iter().any(|e| e.detail.contains("bad signature")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|e| e
            .detail
            .contains("vouched by the trusted proxy: account disabled")),
        "{refused:?}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_headers_from_elsewhere_are_not_believed() {
    let (hub, signer, _dir) = with_proxy(&["10.0.0.0/8"]).await;
    hub.client("alice").await;
    let now = hub.hub.now().unix_timestamp();
    let response = vouch(&hub, &signer, "alice", now, "/api/v1/token/proxy").await;
    problem(response, StatusCode::UNAUTHORIZED).await;
    let refused = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(
        refused
            .iter()
            .any(|e| e.detail.contains("not in [https] trusted_proxy_networks")),
        "{refused:?}"
    );
    assert!(hub.events(EventKind::Login, Outcome::Ok).await.is_empty());
    hub.stop().await;
}

/// A reqwest client presenting `identity` (certificate and key PEM), trusting the test CA.
fn client_with_certificate(hub: &TestHub, cert: &std::path::Path, key: &std::path::Path) -> Client {
    let ca = std::fs::read(&hub.https().ca).unwrap();
    let mut pem = std::fs::read(cert).unwrap();
    pem.extend(std::fs::read(key).unwrap());
    Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_certificates_prove_the_certificate_factor() {
    let config = mailroom_https::Config {
        client_certificates: mailroom_tls::ClientAuth::Optional,
        ..mailroom_https::Config::default()
    };
    let hub = start_with(config, AuthConfig::default()).await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.set_access("alice", |access| {
        access.factors = mailroom_core::FactorSet::parse("password,certificate").unwrap();
    })
    .await;
    hub.set_access("bob", |access| {
        access.factors = mailroom_core::FactorSet::parse("certificate").unwrap();
    })
    .await;
    let pki = mailroom_tls::load_pki(&hub.dir.path().join("tls")).unwrap();
    let issue = |cn: &str| {
        let out = hub.local_dir(&format!("cert-{cn}"));
        let issued = mailroom_tls::issue_client(&pki, cn, 30, &out).unwrap();
        (issued.cert_path, issued.key_path)
    };
    let (alice_cert, alice_key) = issue("alice");
    let (bob_cert, bob_key) = issue("bob");
    let token = |client: Client, body: Value| {
        let url = url(&hub, "/api/v1/token");
        async move { client.post(url).json(&body).send().await.unwrap() }
    };
    let alice_login = json!({"username": "alice", "password": alice.password});

    // Password and the matching certificate: logged in.
    let with_cert = client_with_certificate(&hub, &alice_cert, &alice_key);
    let response = token(with_cert, alice_login.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let logins = hub.events(EventKind::Login, Outcome::Ok).await;
    assert!(
        logins.last().unwrap().detail.contains("certificate"),
        "{logins:?}"
    );
    // The password alone: the missing factor is named, no login.
    let before = logins.len();
    let detail = problem(
        token(client(&hub), alice_login.clone()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(detail.contains("certificate"), "{detail}");
    // The password with bob's certificate: its subject is not alice's.
    let wrong = client_with_certificate(&hub, &bob_cert, &bob_key);
    problem(token(wrong, alice_login).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        hub.events(EventKind::Login, Outcome::Ok).await.len(),
        before
    );

    // A certificate-only account logs in with its certificate and its name.
    let bob_client = client_with_certificate(&hub, &bob_cert, &bob_key);
    let response = token(bob_client, json!({"username": "bob"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    hub.stop().await;
}

#[tokio::test]
async fn admins_list_show_retry_and_drop_jobs_and_refusals_change_nothing() {
    use mailroom_core::{JobQuery, MetaStoreExt};
    let hub = start().await;
    let root = hub.admin_account("root").await;
    let (alice, _bob) = pair(&hub).await;
    let admin_token = access(&login_scope(&hub, &root, "admin").await);
    let dead = hub
        .dead_job(
            "https://hooks.example.test/x",
            "the receiver answered 500 Internal Server Error",
        )
        .await;
    let id = dead.id.to_string();

    let listed: Value = get(&hub, &admin_token, "/api/v1/admin/jobs?state=dead")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["state"], "dead");
    assert_eq!(listed[0]["target"], "https://hooks.example.test/x");
    let shown: Value = get(&hub, &admin_token, &format!("/api/v1/admin/jobs/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["event"]["id"], dead.event.to_string().as_str());

    // Refusals: a client's token, an unknown or malformed id, a bad state; nothing changes.
    let jobs_now = async || {
        hub.meta
            .read_with(|tx| {
                tx.jobs(&JobQuery {
                    state: None,
                    limit: 100,
                })
            })
            .await
            .unwrap()
    };
    let before = (
        jobs_now().await,
        hub.events(EventKind::Admin, Outcome::Ok).await,
    );
    let client_token = access(&login(&hub, &alice).await);
    let post = async |token: &str, path: &str| {
        client(&hub)
            .post(url(&hub, path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    };
    problem(
        post(&client_token, &format!("/api/v1/admin/jobs/{id}/retry")).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    for path in [
        "/api/v1/admin/jobs/0190f000-0000-7000-8000-000000000000/retry".to_owned(),
        "/api/v1/admin/jobs/not-a-job/drop".to_owned(),
    ] {
        problem(post(&admin_token, &path).await, StatusCode::NOT_FOUND).await;
    }
    problem(
        get(&hub, &admin_token, "/api/v1/admin/jobs?state=lost").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        (
            jobs_now().await,
            hub.events(EventKind::Admin, Outcome::Ok).await
        ),
        before
    );

    // Retry, then drop; dropping twice conflicts.
    let retried: Value = post(&admin_token, &format!("/api/v1/admin/jobs/{id}/retry"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (retried["state"].clone(), retried["attempts"].clone()),
        (json!("queued"), json!(0))
    );
    let dropped = post(&admin_token, &format!("/api/v1/admin/jobs/{id}/drop")).await;
    assert_eq!(dropped.status(), StatusCode::OK);
    problem(
        post(&admin_token, &format!("/api/v1/admin/jobs/{id}/drop")).await,
        StatusCode::CONFLICT,
    )
    .await;
    let admin_events = hub.events(EventKind::Admin, Outcome::Ok).await;
    assert!(
        admin_events
            .iter()
            .any(|e| e.actor == root.name && e.object == format!("job:{id}")),
        "the retry and drop are audited under the admin's name"
    );
    hub.stop().await;
}

/// `PUT /api/v1/outbox/{target}/{name}?sha256=…`: the whole file in one request.
async fn put_file(hub: &TestHub, token: &str, path: &str, body: Vec<u8>) -> Response {
    client(hub)
        .put(url(hub, path))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_file_sent_in_one_request_is_delivered_only_whole_and_checked() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.client("carol").await;
    hub.allow("alice", "bob").await;
    let a = access(&login(&hub, &alice).await);
    let b = access(&login(&hub, &bob).await);
    let data = b"INV-0001;ACME;12.00\n".repeat(300);
    let sha = sha256(&data);

    // Refused before a byte is kept: a malformed SHA-256, a route that does not exist, a
    // name that is not one, end-to-end content that is not an age file.
    let before = hub.snapshot().await;
    let refusals = [
        (
            "/api/v1/outbox/bob/a.csv?sha256=abc".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/outbox/bob/a.csv".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/v1/outbox/carol/a.csv?sha256={sha}"),
            StatusCode::FORBIDDEN,
        ),
        (
            format!("/api/v1/outbox/bob/a%2Fb.csv?sha256={sha}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/api/v1/outbox/bob/a.csv?sha256={sha}&e2e=true"),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (path, status) in refusals {
        let detail = problem(put_file(&hub, &a, &path, data.clone()).await, status).await;
        eprintln!("{path}: {detail}");
    }
    // Another SHA-256 than the content's: nothing delivered, nothing left behind.
    let other = sha256(b"something else");
    let detail = problem(
        put_file(
            &hub,
            &a,
            &format!("/api/v1/outbox/bob/a.csv?sha256={other}"),
            data.clone(),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(detail.contains("nothing was delivered"), "{detail}");
    assert_eq!(hub.snapshot().await, before);

    // The right one: delivered, and the name travels percent-encoded.
    let response = put_file(
        &hub,
        &a,
        &format!(
            "/api/v1/outbox/bob/Q1%20report%20%231.csv?sha256={}",
            sha.to_uppercase()
        ),
        data.clone(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let delivered: Value = response.json().await.unwrap();
    assert_eq!(delivered["deliveries"][0]["name"], "Q1 report #1.csv");
    assert_eq!(delivered["deliveries"][0]["sha256"], sha);
    let id = delivered["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = get(&hub, &b, &format!("/api/v1/inbox/{id}/content"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], &data[..]);
    hub.stop().await;
}
