//! API keys of unattended clients: made, listed and revoked by an administrator or the account
//! itself, each change audited without the secret; checked on every request like a token
//! (expiry on the hub's clock, the account's standing now), with the key's scopes on the
//! identity; a disable refuses the keys while it lasts but, like a new password, revokes none;
//! when a key was last used is written at most once a minute. Every refusal is checked for its
//! error and for changing nothing, the keys included.

use std::future::Future;
use std::time::Duration as StdDuration;

use mailroom_core::{
    AccountChange, ApiKeyInfo, BanSubject, ErrorKind, EventKind, KeyScope, KeyScopes,
    MAX_API_KEYS_PER_ACCOUNT, Outcome, Protocol, Result, Secret, TokenCheck, TokenIdentity,
    is_api_key,
};
use time::Duration;

use crate::bed::{Bed, NEW_PASSWORD, T0, account, admin, secret};

/// Where every request of these tests comes from.
const PEER: &str = "192.0.2.10:40000";

/// Checks a key as the HTTPS front end does.
async fn check(bed: &Bed, key: &str) -> TokenCheck {
    bed.hub
        .check_api_key(key, Some(PEER.to_owned()), Protocol::Https)
        .await
        .unwrap()
}

/// The identity of a valid key; panics with the reason of a refused one.
async fn valid(bed: &Bed, key: &Secret<String>) -> TokenIdentity {
    match check(bed, key.expose()).await {
        TokenCheck::Valid(identity) => identity,
        TokenCheck::Refused(reason) => panic!("API key refused: {reason}"),
    }
}

/// The reason a key is refused; panics if it is valid.
async fn refused(bed: &Bed, key: &str) -> String {
    match check(bed, key).await {
        TokenCheck::Valid(identity) => panic!("API key still valid for {}", identity.account),
        TokenCheck::Refused(reason) => reason,
    }
}

/// A key of `who` made by the administrator.
async fn key(
    bed: &Bed,
    who: &str,
    label: &str,
    scopes: KeyScopes,
    expires: Option<time::OffsetDateTime>,
) -> (ApiKeyInfo, Secret<String>) {
    bed.hub
        .create_api_key(&admin(), &account(who), label, scopes, expires)
        .await
        .unwrap()
}

/// The keys of `who`.
async fn keys(bed: &Bed, who: &str) -> Vec<ApiKeyInfo> {
    bed.hub.api_keys(&account(who)).await.unwrap()
}

/// [`Bed::refused`] that also checks that the keys of alice and bob are as before (when each
/// was last used included).
async fn refused_keeping_keys<T>(
    bed: &Bed,
    kind: ErrorKind,
    op: impl Future<Output = Result<T>>,
) -> String {
    let before = (keys(bed, "alice").await, keys(bed, "bob").await);
    let err = bed.refused(kind, None, op).await;
    assert_eq!(
        (keys(bed, "alice").await, keys(bed, "bob").await),
        before,
        "the refusal {err} changed the keys"
    );
    err.message().to_owned()
}

/// Checks `key`, which must be refused for `reason`, and that the check changed nothing.
async fn refused_changing_nothing(bed: &Bed, key: &str, reason: &str) {
    let before = (bed.snapshot().await, keys(bed, "alice").await);
    assert_eq!(refused(bed, key).await, reason);
    assert_eq!(
        (bed.snapshot().await, keys(bed, "alice").await),
        before,
        "refusing a key for {reason} changed something"
    );
}

async fn alice_and_bob() -> Bed {
    let bed = Bed::new();
    bed.clients_with_password(&["alice", "bob"]).await;
    bed
}

#[tokio::test]
async fn keys_are_made_listed_checked_and_revoked_with_audited_changes() {
    let bed = alice_and_bob().await;
    let expires = T0 + Duration::days(90);
    let (info, secret_key) = key(
        &bed,
        "alice",
        "backup on srv-1",
        KeyScopes::ALL,
        Some(expires),
    )
    .await;
    assert!(is_api_key(secret_key.expose()));
    assert!(
        secret_key
            .expose()
            .starts_with(&format!("mrk_{}_", info.id)),
        "the secret carries the id"
    );
    assert_eq!(info.id.len(), 32);
    assert_eq!(info.account, account("alice"));
    assert_eq!(info.label, "backup on srv-1");
    assert_eq!(info.scopes, KeyScopes::ALL);
    assert_eq!(
        (info.created, info.expires, info.last_used),
        (T0, Some(expires), None)
    );
    assert_eq!(keys(&bed, "alice").await, vec![info.clone()]);
    assert_eq!(keys(&bed, "bob").await, vec![]);

    // The key acts for alice, as a client, with its scopes.
    let identity = valid(&bed, &secret_key).await;
    assert_eq!(identity.account, account("alice"));
    assert_eq!(identity.scope, mailroom_core::Scope::Client);
    assert_eq!(identity.key_scopes, Some(KeyScopes::ALL));
    assert_eq!(identity.session, info.id);
    assert_eq!(identity.expires, expires);
    assert_eq!(identity.source.as_deref(), Some(PEER));
    assert!(identity.is_api_key());
    assert_eq!(identity.client_session().unwrap().account, account("alice"));

    // The account itself makes a second key (as the API's own endpoint does), no expiry, a
    // moment later (keys are listed by when they were made).
    bed.clock.advance(time::Duration::seconds(1));
    let own = identity.actor();
    let (second, second_key) = bed
        .hub
        .create_api_key(
            &own,
            &account("alice"),
            "script",
            KeyScopes::parse("receive").unwrap(),
            None,
        )
        .await
        .unwrap();
    let listed = keys(&bed, "alice").await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, info.id, "oldest first");
    assert_eq!(listed[1].id, second.id);
    assert_ne!(second.id, info.id);
    assert_eq!(
        valid(&bed, &second_key).await.key_scopes,
        Some(second.scopes)
    );

    // Revoked, the key stops working at once; the other goes on.
    bed.hub
        .revoke_api_key(&admin(), &account("alice"), &info.id)
        .await
        .unwrap();
    refused_changing_nothing(&bed, secret_key.expose(), "unknown or revoked API key").await;
    valid(&bed, &second_key).await;
    assert_eq!(keys(&bed, "alice").await.len(), 1);

    // Every change is an admin event of the account, with the key's id and label.
    let changes: Vec<(String, String, String)> = bed
        .events_of(EventKind::Admin, Outcome::Ok)
        .await
        .into_iter()
        .filter(|e| e.detail.contains("api key"))
        .map(|e| (e.actor, e.object, e.detail))
        .collect();
    assert_eq!(
        changes,
        vec![
            (
                "cli:test".to_owned(),
                "account alice".to_owned(),
                format!("add api key {} backup on srv-1", info.id)
            ),
            (
                "alice".to_owned(),
                "account alice".to_owned(),
                format!("add api key {} script", second.id)
            ),
            (
                "cli:test".to_owned(),
                "account alice".to_owned(),
                format!("revoke api key {}", info.id)
            ),
        ]
    );
    // The secret is in no event, whole or in part.
    for secret_key in [&secret_key, &second_key] {
        let random = secret_key.expose().rsplit('_').next().unwrap().to_owned();
        for event in bed.events().await {
            let text = format!("{event:?}");
            assert!(!text.contains(&random), "the secret leaked into {text}");
        }
    }
}

#[tokio::test]
async fn refused_changes_change_nothing() {
    let bed = alice_and_bob().await;
    bed.admins(&["root"]).await;
    let (alices, _) = key(&bed, "alice", "first", KeyScopes::ALL, None).await;
    let in_a_year = Some(T0 + Duration::days(365));
    let all = KeyScopes::ALL;
    let make = |who: &'static str, label: &'static str, scopes, expires| {
        let hub = bed.hub.clone();
        async move {
            hub.create_api_key(&admin(), &account(who), label, scopes, expires)
                .await
        }
    };
    for (kind, label, scopes, expires, who, says) in [
        (
            ErrorKind::InvalidName,
            "",
            all,
            in_a_year,
            "alice",
            "1 to 64",
        ),
        (ErrorKind::InvalidName, "   ", all, None, "alice", "1 to 64"),
        (
            ErrorKind::InvalidName,
            "line\nbreak",
            all,
            None,
            "alice",
            "printable",
        ),
        (
            ErrorKind::InvalidName,
            "ok",
            KeyScopes::default(),
            None,
            "alice",
            "at least one scope",
        ),
        (
            ErrorKind::InvalidName,
            "ok",
            all,
            Some(T0),
            "alice",
            "in the future",
        ),
        (
            ErrorKind::NotFound,
            "ok",
            all,
            None,
            "ghost",
            "no account named ghost",
        ),
        (
            ErrorKind::PermissionDenied,
            "ok",
            all,
            None,
            "root",
            "admin account",
        ),
    ] {
        let message = refused_keeping_keys(&bed, kind, make(who, label, scopes, expires)).await;
        assert!(message.contains(says), "{message}");
    }
    let long = "x".repeat(65);
    refused_keeping_keys(
        &bed,
        ErrorKind::InvalidName,
        bed.hub
            .create_api_key(&admin(), &account("alice"), &long, all, None),
    )
    .await;

    // Revoking: an unknown id, another account's key, an unknown account.
    for (who, id, kind) in [
        ("alice", "0".repeat(32), ErrorKind::NotFound),
        ("bob", alices.id.clone(), ErrorKind::NotFound),
        ("ghost", alices.id.clone(), ErrorKind::NotFound),
    ] {
        refused_keeping_keys(
            &bed,
            kind,
            bed.hub.revoke_api_key(&admin(), &account(who), &id),
        )
        .await;
    }
    assert_eq!(keys(&bed, "alice").await, vec![alices]);
    refused_keeping_keys(
        &bed,
        ErrorKind::NotFound,
        bed.hub.api_keys(&account("ghost")),
    )
    .await;

    // At most 20 keys per account; the 21st is refused, and revoking one makes room.
    for n in 1..MAX_API_KEYS_PER_ACCOUNT {
        key(&bed, "alice", &format!("key {n}"), all, None).await;
    }
    assert_eq!(keys(&bed, "alice").await.len(), MAX_API_KEYS_PER_ACCOUNT);
    let message = refused_keeping_keys(
        &bed,
        ErrorKind::QuotaExceeded,
        make("alice", "one too many", all, None),
    )
    .await;
    assert!(message.contains("revoke one first"), "{message}");
    // Bob's count is his own.
    key(&bed, "bob", "bob's", all, None).await;
    let oldest = keys(&bed, "alice").await[0].id.clone();
    bed.hub
        .revoke_api_key(&admin(), &account("alice"), &oldest)
        .await
        .unwrap();
    key(&bed, "alice", "room again", all, None).await;
}

#[tokio::test]
async fn a_key_expires_on_the_hub_clock() {
    let bed = alice_and_bob().await;
    let (_, soon) = key(
        &bed,
        "alice",
        "soon",
        KeyScopes::ALL,
        Some(T0 + Duration::days(1)),
    )
    .await;
    let (_, never) = key(&bed, "alice", "never", KeyScopes::ALL, None).await;
    valid(&bed, &soon).await;
    bed.clock.advance(Duration::days(1));
    refused_changing_nothing(&bed, soon.expose(), "API key expired").await;
    // A key without expiry goes on.
    bed.clock.advance(Duration::days(3650));
    valid(&bed, &never).await;
}

#[tokio::test]
async fn malformed_unknown_and_wrong_secrets_are_refused() {
    let bed = alice_and_bob().await;
    let (info, good) = key(&bed, "alice", "k", KeyScopes::ALL, None).await;
    let wrong = format!("mrk_{}_{}", info.id, "0".repeat(64));
    let unknown = format!("mrk_{}_{}", "f".repeat(32), &good.expose()[37..]);
    for (key, reason) in [
        ("", "malformed API key"),
        ("mrk_", "malformed API key"),
        (&*good.expose().to_uppercase(), "malformed API key"),
        (&*format!("{}0", good.expose()), "malformed API key"),
        (&*"x".repeat(300), "malformed API key"),
        (&unknown, "unknown or revoked API key"),
        (&wrong, "wrong API key secret"),
    ] {
        refused_changing_nothing(&bed, key, reason).await;
    }
    valid(&bed, &good).await;
}

#[tokio::test]
async fn scopes_bound_what_a_key_may_do_and_tokens_may_do_all() {
    let bed = alice_and_bob().await;
    let (_, receiving) = key(
        &bed,
        "alice",
        "r",
        KeyScopes::parse("receive").unwrap(),
        None,
    )
    .await;
    let (_, sending) = key(&bed, "alice", "s", KeyScopes::parse("send").unwrap(), None).await;
    let receiver = valid(&bed, &receiving).await;
    let sender = valid(&bed, &sending).await;
    assert!(receiver.require_key_scope(KeyScope::Receive).is_ok());
    assert!(sender.require_key_scope(KeyScope::Send).is_ok());
    for (identity, missing) in [(&receiver, KeyScope::Send), (&sender, KeyScope::Receive)] {
        let identity = identity.clone();
        let message = refused_keeping_keys(&bed, ErrorKind::PermissionDenied, async move {
            identity.require_key_scope(missing)
        })
        .await;
        assert!(
            message.contains(&format!("lacks the {missing} scope")),
            "{message}"
        );
    }
    // The tokens of a login carry no key scopes and may do all.
    let tokens = bed.tokens("alice").await;
    let TokenCheck::Valid(login) = bed
        .hub
        .check_token(
            tokens.access.expose(),
            Some(PEER.to_owned()),
            Protocol::Https,
        )
        .await
        .unwrap()
    else {
        panic!("the token was refused");
    };
    assert_eq!(login.key_scopes, None);
    assert!(!login.is_api_key());
    for scope in KeyScope::ALL {
        assert!(login.require_key_scope(scope).is_ok());
    }
    // A key is no login: it cannot log out.
    refused_keeping_keys(&bed, ErrorKind::PermissionDenied, bed.hub.logout(&receiver)).await;
    valid(&bed, &receiving).await;
}

#[tokio::test]
async fn the_account_standing_is_checked_at_every_use() {
    let bed = alice_and_bob().await;
    let (_, alices) = key(&bed, "alice", "k", KeyScopes::ALL, None).await;
    let (_, bobs) = key(&bed, "bob", "k", KeyScopes::ALL, None).await;

    // A new password revokes tokens, not keys.
    bed.hub
        .set_password(&admin(), &account("alice"), secret(NEW_PASSWORD))
        .await
        .unwrap();
    valid(&bed, &alices).await;

    // Disabled: refused while it lasts, working again once enabled (a disable revokes no key).
    bed.hub
        .set_disabled(&admin(), &account("alice"), true)
        .await
        .unwrap();
    refused_changing_nothing(&bed, alices.expose(), "account disabled").await;
    valid(&bed, &bobs).await;
    bed.hub
        .set_disabled(&admin(), &account("alice"), false)
        .await
        .unwrap();
    valid(&bed, &alices).await;

    // Outside the account's networks.
    bed.change(
        "alice",
        AccountChange {
            networks: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            ..AccountChange::default()
        },
    )
    .await;
    refused_changing_nothing(
        &bed,
        alices.expose(),
        "source address not in the account's networks",
    )
    .await;
    bed.change(
        "alice",
        AccountChange {
            networks: Some(Vec::new()),
            ..AccountChange::default()
        },
    )
    .await;
    valid(&bed, &alices).await;

    // A banned address and a locked account.
    let ban = |subject: &str| {
        let (hub, subject) = (bed.hub.clone(), BanSubject::parse(subject).unwrap());
        async move {
            hub.ban(&admin(), subject, StdDuration::from_secs(600), "test")
                .await
                .unwrap();
        }
    };
    ban("account:alice").await;
    refused_changing_nothing(&bed, alices.expose(), "account locked by the defender").await;
    valid(&bed, &bobs).await;
    ban("192.0.2.10").await;
    assert_eq!(refused(&bed, bobs.expose()).await, "address banned");

    // Deleted, the account's keys are gone with it; a new account of the name has none.
    bed.hub
        .delete_account(&admin(), &account("bob"))
        .await
        .unwrap();
    bed.clients(&["bob"]).await;
    assert_eq!(keys(&bed, "bob").await, vec![]);
    assert_eq!(
        refused(&bed, bobs.expose()).await,
        "unknown or revoked API key"
    );
}

#[tokio::test]
async fn the_last_use_is_written_at_most_once_a_minute() {
    let bed = alice_and_bob().await;
    let (_, secret_key) = key(&bed, "alice", "k", KeyScopes::ALL, None).await;
    let last_used = async || keys(&bed, "alice").await[0].last_used;
    assert_eq!(last_used().await, None);

    valid(&bed, &secret_key).await;
    assert_eq!(last_used().await, Some(T0));
    // Within the minute: no write at all.
    bed.clock.advance(Duration::seconds(59));
    let writes = bed.hub.store_stats().writes;
    valid(&bed, &secret_key).await;
    assert_eq!(
        bed.hub.store_stats().writes,
        writes,
        "a use within the minute wrote"
    );
    assert_eq!(last_used().await, Some(T0));
    // A minute on: written again, relaxed, with no event.
    bed.clock.advance(Duration::seconds(1));
    let (events, flushes) = (bed.events().await.len(), bed.hub.store_stats().flushes);
    valid(&bed, &secret_key).await;
    assert_eq!(last_used().await, Some(T0 + Duration::minutes(1)));
    assert_eq!(bed.hub.store_stats().writes, writes + 1);
    assert_eq!(bed.hub.store_stats().flushes, flushes, "the use is relaxed");
    assert_eq!(bed.events().await.len(), events, "a use records no event");
    // A refused use writes nothing.
    bed.clock.advance(Duration::minutes(5));
    bed.hub
        .set_disabled(&admin(), &account("alice"), true)
        .await
        .unwrap();
    refused_changing_nothing(&bed, secret_key.expose(), "account disabled").await;
    assert_eq!(last_used().await, Some(T0 + Duration::minutes(1)));
}
