//! A client's own account over the HTTPS API (`/api/v1/me/…`), against a real server over
//! TLS: password change given the current one, SSH keys, TOTP re-enrolment confirmed with a
//! code, quota use, live sessions and signing out the others. Every refusal checks its status,
//! its problem document, and that nothing changed (both accounts as stored, deliveries and
//! blobs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, delete, get, post, sha256, start, token, url};
use mailroom_core::{AccountName, EventKind, KeyScope, KeyScopes, Outcome, totp_code};
use mailroom_test_support::TestHub;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

const NEW_PASSWORD: &str = "Another-long-passphrase-77";
const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl laptop";

fn name(text: &str) -> AccountName {
    AccountName::parse(text).unwrap()
}

/// Everything a refusal must leave alone: alice's and bob's accounts as stored (password
/// hash, keys, TOTP, token generation), deliveries and blobs.
async fn state(hub: &TestHub) -> (String, mailroom_test_support::Snapshot) {
    let accounts = format!(
        "{:?} {:?}",
        hub.hub.account(&name("alice")).await.unwrap(),
        hub.hub.account(&name("bob")).await.unwrap()
    );
    (accounts, hub.snapshot().await)
}

/// Runs a request that must be refused with `status` as a problem document, and checks that
/// nothing changed; returns the detail.
async fn refused(
    hub: &TestHub,
    status: StatusCode,
    request: impl Future<Output = Response>,
) -> String {
    let before = state(hub).await;
    let response = request.await;
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap().to_owned();
    assert_eq!(
        state(hub).await,
        before,
        "{status} {detail} changed something"
    );
    detail
}

/// A fingerprint as one path segment.
fn segment(fingerprint: &str) -> String {
    fingerprint
        .replace('%', "%25")
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

/// The details of the `admin` events about `who`'s account.
async fn admin_details(hub: &TestHub, who: &str) -> Vec<String> {
    hub.events(EventKind::Admin, Outcome::Ok)
        .await
        .into_iter()
        .filter(|e| e.object == format!("account {who}"))
        .map(|e| e.detail)
        .collect()
}

#[tokio::test]
async fn a_password_changes_only_given_the_current_one() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    let bearer = token(&hub, &alice, "client").await;

    let detail = refused(
        &hub,
        StatusCode::FORBIDDEN,
        post(
            &hub,
            &bearer,
            "/api/v1/me/password",
            json!({"current_password": "Wrong-password-12345", "new_password": NEW_PASSWORD}),
        ),
    )
    .await;
    assert!(detail.contains("current password"), "{detail}");
    refused(
        &hub,
        StatusCode::UNPROCESSABLE_ENTITY,
        post(
            &hub,
            &bearer,
            "/api/v1/me/password",
            json!({"current_password": alice.password, "new_password": "short"}),
        ),
    )
    .await;
    // An API key changes nothing of its account.
    let (_, secret) = hub
        .hub
        .create_api_key(
            &TestHub::admin(),
            &name("alice"),
            "robot",
            KeyScopes::of([KeyScope::Send, KeyScope::Receive]),
            None,
        )
        .await
        .unwrap();
    refused(
        &hub,
        StatusCode::FORBIDDEN,
        post(
            &hub,
            secret.expose(),
            "/api/v1/me/password",
            json!({"current_password": alice.password, "new_password": NEW_PASSWORD}),
        ),
    )
    .await;
    assert_eq!(
        hub.events(EventKind::Admin, Outcome::Refused).await.len(),
        1,
        "the wrong password is recorded"
    );

    let response = post(
        &hub,
        &bearer,
        "/api/v1/me/password",
        json!({"current_password": alice.password, "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // As any new password: every token of the account is revoked, this one too.
    assert_eq!(
        get(&hub, &bearer, "/api/v1/me/usage").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let login = client(&hub)
        .post(url(&hub, "/api/v1/token"))
        .json(&json!({"username": "alice", "password": NEW_PASSWORD, "scope": "client"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    assert!(
        admin_details(&hub, "alice")
            .await
            .contains(&"change own password".to_owned())
    );
}

#[tokio::test]
async fn ssh_keys_are_ones_own_and_malformed_ones_are_refused() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    let bearer = token(&hub, &alice, "client").await;

    let listed: Value = get(&hub, &bearer, "/api/v1/me/ssh-keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    refused(
        &hub,
        StatusCode::UNPROCESSABLE_ENTITY,
        post(
            &hub,
            &bearer,
            "/api/v1/me/ssh-keys",
            json!({"key": "ssh-ed25519 AAAA!!not-base64"}),
        ),
    )
    .await;
    refused(
        &hub,
        StatusCode::UNPROCESSABLE_ENTITY,
        post(
            &hub,
            &bearer,
            "/api/v1/me/ssh-keys",
            json!({"key": "ecdsa-sha2-nistp256 AAAA"}),
        ),
    )
    .await;
    let bobs = hub.hub.account(&name("bob")).await.unwrap().keys[0].fingerprint();
    refused(
        &hub,
        StatusCode::NOT_FOUND,
        delete(
            &hub,
            &bearer,
            &format!("/api/v1/me/ssh-keys/{}", segment(&bobs)),
        ),
    )
    .await;

    let added = post(
        &hub,
        &bearer,
        "/api/v1/me/ssh-keys",
        json!({"key": OTHER_KEY}),
    )
    .await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.unwrap();
    let fingerprint = added["fingerprint"].as_str().unwrap().to_owned();
    assert!(fingerprint.starts_with("SHA256:"), "{added}");
    refused(
        &hub,
        StatusCode::CONFLICT,
        post(
            &hub,
            &bearer,
            "/api/v1/me/ssh-keys",
            json!({"key": OTHER_KEY}),
        ),
    )
    .await;
    assert_eq!(hub.account("alice").await.keys.len(), 2);

    let removed = delete(
        &hub,
        &bearer,
        &format!("/api/v1/me/ssh-keys/{}", segment(&fingerprint)),
    )
    .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(hub.account("alice").await.keys.len(), 1);
    assert_eq!(hub.account("bob").await.keys.len(), 1);
    let details = admin_details(&hub, "alice").await;
    assert!(
        details.contains(&format!("add own key {fingerprint}")),
        "{details:?}"
    );
    assert!(
        details.contains(&format!("remove own key {fingerprint}")),
        "{details:?}"
    );
}

#[tokio::test]
async fn a_totp_reenrolment_is_confirmed_with_a_code() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    let bearer = token(&hub, &alice, "client").await;

    let first = post(&hub, &bearer, "/api/v1/me/totp", json!({})).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.headers()["cache-control"], "no-store");
    let first: Value = first.json().await.unwrap();
    let secret = first["secret"].as_str().unwrap().to_owned();
    assert_eq!(first["recovery_codes"].as_array().unwrap().len(), 10);

    refused(
        &hub,
        StatusCode::FORBIDDEN,
        post(&hub, &bearer, "/api/v1/me/totp", json!({})),
    )
    .await;
    refused(
        &hub,
        StatusCode::FORBIDDEN,
        post(
            &hub,
            &bearer,
            "/api/v1/me/totp",
            json!({"code": "zzzz-zzzz-zzzz-zzzz"}),
        ),
    )
    .await;

    let now = u64::try_from(hub.hub.now().unix_timestamp()).unwrap();
    let code = totp_code(&secret, now).unwrap();
    let second = post(&hub, &bearer, "/api/v1/me/totp", json!({"code": code})).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["secret"], first["secret"]);
    let recovery = second["recovery_codes"][0].as_str().unwrap();
    let third = post(&hub, &bearer, "/api/v1/me/totp", json!({"code": recovery})).await;
    assert_eq!(third.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn quota_use_is_shown_against_the_limits() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("bob", "alice").await;
    hub.set_access("alice", |access| {
        access.limits.quota_bytes = Some(1_000_000);
        access.limits.quota_files = Some(10);
    })
    .await;
    let bobs = token(&hub, &bob, "client").await;
    let content = b"twelve bytes";
    let sent = client(&hub)
        .put(url(
            &hub,
            &format!("/api/v1/outbox/alice/note.txt?sha256={}", sha256(content)),
        ))
        .bearer_auth(&bobs)
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::CREATED);

    let bearer = token(&hub, &alice, "client").await;
    let usage: Value = get(&hub, &bearer, "/api/v1/me/usage")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(usage["inbox_bytes"], 12, "{usage}");
    assert_eq!(usage["inbox_files"], 1, "{usage}");
    assert_eq!(usage["limits"]["quota_bytes"], 1_000_000, "{usage}");
    assert_eq!(usage["limits"]["quota_files"], 10, "{usage}");
    assert_eq!(usage["limits"]["max_file_size"], Value::Null, "{usage}");
}

#[tokio::test]
async fn signing_out_the_others_keeps_this_session() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    let mine = token(&hub, &alice, "client").await;
    let other = token(&hub, &alice, "client").await;
    let bobs = token(&hub, &bob, "client").await;

    let sessions: Value = get(&hub, &mine, "/api/v1/me/sessions")
        .await
        .json()
        .await
        .unwrap();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(
        sessions.iter().filter(|s| s["current"] == true).count(),
        1,
        "{sessions:?}"
    );
    assert!(sessions.iter().all(|s| s["account"] == "alice"));
    assert!(sessions.iter().all(|s| s["protocol"] == "https"));

    let response = post(
        &hub,
        &mine,
        "/api/v1/me/sessions/sign-out-others",
        json!({}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let fresh: Value = response.json().await.unwrap();
    let fresh = fresh["access_token"].as_str().unwrap();
    for (bearer, status) in [
        (other.as_str(), StatusCode::UNAUTHORIZED),
        (mine.as_str(), StatusCode::UNAUTHORIZED),
        (fresh, StatusCode::OK),
        (bobs.as_str(), StatusCode::OK),
    ] {
        assert_eq!(get(&hub, bearer, "/api/v1/me/usage").await.status(), status);
    }
    let left: Value = get(&hub, fresh, "/api/v1/me/sessions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["current"], true);
}
