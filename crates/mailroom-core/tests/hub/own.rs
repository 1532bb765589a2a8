//! Self-service from a client's own session: its password (given the current one), its SSH
//! keys, its TOTP re-enrolment (confirmed with a current code or a recovery code), its quota
//! use, and its sessions (sign out the others). Each change is checked for its `admin`
//! event, and each refusal for its error, its refusal event and that nothing else changed.

use mailroom_core::{
    AccountChange, AuthorizedKey, Clock, ErrorKind, EventKind, Outcome, Protocol, Scope,
    TokenCheck, TokenIdentity, TokenLifetimes, totp_code,
};

use crate::bed::{Bed, NEW_PASSWORD, PASSWORD, account, admin, client, secret};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";

/// The identity of an access token, which must be valid.
async fn identity(bed: &Bed, access: &str) -> TokenIdentity {
    match bed
        .hub
        .check_token(access, None, Protocol::Https)
        .await
        .unwrap()
    {
        TokenCheck::Valid(identity) => identity,
        TokenCheck::Refused(why) => panic!("token refused: {why}"),
    }
}

async fn token_works(bed: &Bed, access: &str) -> bool {
    matches!(
        bed.hub
            .check_token(access, None, Protocol::Https)
            .await
            .unwrap(),
        TokenCheck::Valid(_)
    )
}

/// The details of the `admin` events about `name`, oldest first.
async fn admin_details(bed: &Bed, name: &str) -> Vec<String> {
    bed.events_of(EventKind::Admin, Outcome::Ok)
        .await
        .into_iter()
        .filter(|e| e.object == format!("account {name}"))
        .map(|e| e.detail)
        .collect()
}

#[tokio::test]
async fn a_password_changes_only_with_the_current_one_and_revokes_the_tokens() {
    let bed = Bed::new();
    bed.clients_with_password(&["alice"]).await;
    let tokens = bed.tokens("alice").await;
    let alice = client("alice");

    let err = bed
        .refused(
            ErrorKind::PermissionDenied,
            Some(EventKind::Admin),
            bed.hub
                .change_own_password(&alice, secret("not-the-password-1"), secret(NEW_PASSWORD)),
        )
        .await;
    assert!(err.message().contains("current password"), "{err}");
    bed.refused(
        ErrorKind::InvalidName,
        None,
        bed.hub
            .change_own_password(&alice, secret(PASSWORD), secret("short")),
    )
    .await;
    assert!(token_works(&bed, tokens.access.expose()).await);

    bed.hub
        .change_own_password(&alice, secret(PASSWORD), secret(NEW_PASSWORD))
        .await
        .unwrap();
    assert!(
        !token_works(&bed, tokens.access.expose()).await,
        "a new password revokes the tokens"
    );
    assert!(matches!(
        bed.login("alice", NEW_PASSWORD, Scope::Client).await,
        mailroom_core::LoginStep::Accepted(..)
    ));
    assert!(matches!(
        bed.login("alice", PASSWORD, Scope::Client).await,
        mailroom_core::LoginStep::Refused
    ));
    assert_eq!(
        admin_details(&bed, "alice").await.last().unwrap(),
        "change own password"
    );
}

#[tokio::test]
async fn own_keys_are_added_and_removed_and_never_another_accounts() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    let key = AuthorizedKey::parse(KEY).unwrap();
    bed.hub
        .add_key(&admin(), &account("bob"), key.clone())
        .await
        .unwrap();

    // Bob's key is not alice's to remove, even by its exact fingerprint.
    bed.refused(
        ErrorKind::NotFound,
        None,
        bed.hub.remove_own_key(&client("alice"), &key.fingerprint()),
    )
    .await;
    assert_eq!(bed.account("bob").await.keys, vec![key.clone()]);

    bed.hub
        .add_own_key(&client("alice"), key.clone())
        .await
        .unwrap();
    assert_eq!(
        bed.hub.own_keys(&client("alice")).await.unwrap(),
        vec![key.clone()]
    );
    bed.refused(
        ErrorKind::Conflict,
        None,
        bed.hub.add_own_key(&client("alice"), key.clone()),
    )
    .await;
    assert!(AuthorizedKey::parse("ssh-ed25519 not-base64!").is_err());

    let removed = bed
        .hub
        .remove_own_key(&client("alice"), &key.fingerprint())
        .await
        .unwrap();
    assert_eq!(removed, key);
    assert!(bed.account("alice").await.keys.is_empty());
    assert_eq!(bed.account("bob").await.keys, vec![key.clone()]);
    let details = admin_details(&bed, "alice").await;
    assert!(details.contains(&format!("add own key {}", key.fingerprint())));
    assert!(details.contains(&format!("remove own key {}", key.fingerprint())));
}

#[tokio::test]
async fn a_totp_reenrolment_needs_a_current_code_or_a_recovery_code() {
    let bed = Bed::new();
    bed.clients(&["alice"]).await;
    let alice = client("alice");
    // The first enrolment needs no code: there is none yet.
    let first = bed.hub.enroll_own_totp(&alice, None).await.unwrap();

    let err = bed
        .refused(
            ErrorKind::PermissionDenied,
            Some(EventKind::Admin),
            bed.hub.enroll_own_totp(&alice, None),
        )
        .await;
    assert!(err.message().contains("recovery code"), "{err}");
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::Admin),
        bed.hub
            .enroll_own_totp(&alice, Some(secret("aaaa-bbbb-cccc-dddd"))),
    )
    .await;

    let now = u64::try_from(bed.clock.now().unix_timestamp()).unwrap();
    let code = totp_code(first.secret.expose(), now).unwrap();
    let second = bed
        .hub
        .enroll_own_totp(&alice, Some(secret(&code)))
        .await
        .unwrap();
    assert_ne!(second.secret.expose(), first.secret.expose());
    // The first enrolment's recovery codes went with it.
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::Admin),
        bed.hub
            .enroll_own_totp(&alice, Some(first.recovery_codes[0].clone())),
    )
    .await;
    let recovery = second.recovery_codes[0].clone();
    let third = bed
        .hub
        .enroll_own_totp(&alice, Some(recovery))
        .await
        .unwrap();
    let stored = bed.account("alice").await.totp.unwrap();
    assert_eq!(stored.secret.expose(), third.secret.expose());
    assert_eq!(
        admin_details(&bed, "alice")
            .await
            .iter()
            .filter(|d| d.starts_with("enroll own totp"))
            .count(),
        3
    );
}

#[tokio::test]
async fn quota_use_is_read_against_the_limits() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    bed.change(
        "bob",
        AccountChange {
            quota_bytes: Some(Some(1000)),
            quota_files: Some(Some(5)),
            ..AccountChange::default()
        },
    )
    .await;
    bed.send("alice", "/outbox/bob/a.txt", b"hello").await;
    bed.send("alice", "/outbox/bob/b.txt", b"world!").await;
    let usage = bed.hub.own_usage(&client("bob")).await.unwrap();
    assert_eq!((usage.inbox.bytes, usage.inbox.files), (11, 2));
    assert_eq!(usage.limits.quota_bytes, Some(1000));
    assert_eq!(usage.limits.quota_files, Some(5));
    let sender = bed.hub.own_usage(&client("alice")).await.unwrap();
    assert_eq!((sender.inbox.bytes, sender.inbox.files), (0, 0));
}

#[tokio::test]
async fn signing_out_the_other_sessions_keeps_this_one_with_fresh_tokens() {
    let bed = Bed::new();
    bed.clients_with_password(&["alice", "bob"]).await;
    let mine = bed.tokens("alice").await;
    let other = bed.tokens("alice").await;
    let bobs = bed.tokens("bob").await;
    let me = identity(&bed, mine.access.expose()).await;

    let sessions = bed.hub.own_sessions(&me).await.unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions.iter().filter(|s| s.current).count(), 1);
    assert!(sessions.iter().all(|s| s.info.account == account("alice")));

    let fresh = bed
        .hub
        .sign_out_other_sessions(&me, &TokenLifetimes::default())
        .await
        .unwrap();
    assert_eq!(fresh.session, mine.session, "the same login goes on");
    assert!(!token_works(&bed, other.access.expose()).await);
    assert!(!token_works(&bed, mine.access.expose()).await, "replaced");
    assert!(token_works(&bed, fresh.access.expose()).await);
    assert!(token_works(&bed, bobs.access.expose()).await, "bob's stay");
    let fresh_identity = identity(&bed, fresh.access.expose()).await;
    let left = bed.hub.own_sessions(&fresh_identity).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].current);
    assert!(
        admin_details(&bed, "alice")
            .await
            .contains(&"sign out other sessions (1 closed)".to_owned())
    );
}
