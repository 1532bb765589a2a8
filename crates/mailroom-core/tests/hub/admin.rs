//! Administrators' changes are atomic: a change of several fields commits all of them in one
//! unit or, when one field is refused, none (the account, its tokens and the audit trail as
//! they were); a group with an unknown or admin member is not created at all; and a password
//! change, whose Argon2 hash is computed before its unit, writes only the hash, so a disable or
//! a spent recovery code committed while it was hashing is kept.
//!
//! The last two are made deterministic by [`Gate`], a store port that holds the password
//! change's unit at the store's door (after hashing, before its transaction) until the test has
//! committed the concurrent change: no sleeps, no reliance on scheduling.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mailroom_core::testing::{MemoryBlobs, MemoryMeta};
use mailroom_core::{
    AccountChange, AuthorizedKey, Credential, Durability, ErrorKind, EventKind, Factor, FactorSet,
    LoginProgress, LoginStep, MetaStore, Outcome, Protocol, Result, Rights, RouteEffect, Scope,
    StoreStats, TokenCheck, Unit, UnitOutput, recovery_code_hash,
};
use tokio::sync::oneshot;

use crate::bed::{Bed, NEW_PASSWORD, PASSWORD, account, admin, secret};

// ----- refused changes change nothing ------------------------------------------------------

#[tokio::test]
async fn a_change_with_one_refused_field_changes_nothing() {
    let bed = Bed::new();
    bed.clients_with_password(&["alice"]).await;
    let tokens = bed.tokens("alice").await;
    let totp = FactorSet::new([Factor::Password, Factor::Totp]);
    let cases: Vec<(&str, &str, AccountChange, ErrorKind)> = vec![
        (
            "a weak password with a change of rights",
            "alice",
            AccountChange {
                password: Some(secret("short")),
                rights: Some(Rights::parse("none").unwrap()),
                ..AccountChange::default()
            },
            ErrorKind::InvalidName,
        ),
        (
            "a password of repeats with a disable",
            "alice",
            AccountChange {
                password: Some(secret("aaaaaaaaaaaaaaaa")),
                disabled: Some(true),
                ..AccountChange::default()
            },
            ErrorKind::InvalidName,
        ),
        (
            "a password naming the account with a quota",
            "alice",
            AccountChange {
                password: Some(secret("alice-alice-alice")),
                quota_bytes: Some(Some(1 << 20)),
                ..AccountChange::default()
            },
            ErrorKind::InvalidName,
        ),
        (
            "totp required without an enrolment, with a disable",
            "alice",
            AccountChange {
                factors: Some(totp.clone()),
                disabled: Some(true),
                ..AccountChange::default()
            },
            ErrorKind::Conflict,
        ),
        (
            "totp required without an enrolment, with a strong new password",
            "alice",
            AccountChange {
                factors: Some(totp.clone()),
                password: Some(secret(NEW_PASSWORD)),
                ..AccountChange::default()
            },
            ErrorKind::Conflict,
        ),
        (
            "an account that does not exist",
            "ghost",
            AccountChange {
                disabled: Some(true),
                ..AccountChange::default()
            },
            ErrorKind::NotFound,
        ),
    ];
    for (what, name, change, kind) in cases {
        let err = bed
            .refused(
                kind,
                None,
                bed.hub.change_account(&admin(), &account(name), change),
            )
            .await;
        // The refused change revoked nothing either.
        assert!(
            matches!(
                bed.hub
                    .check_token(tokens.access.expose(), None, Protocol::Https)
                    .await
                    .unwrap(),
                TokenCheck::Valid(_)
            ),
            "{what}: {err}"
        );
    }
    // The password stored is still the first one.
    assert!(matches!(
        bed.login("alice", PASSWORD, Scope::Client).await,
        LoginStep::Accepted(..)
    ));
}

#[tokio::test]
async fn a_change_of_several_fields_is_one_commit_with_an_event_per_aspect() {
    let bed = Bed::new();
    bed.clients_with_password(&["alice"]).await;
    let old = bed.account("alice").await;
    let events = bed.events().await.len();
    let before = bed.hub.store_stats();
    let changed = bed
        .hub
        .change_account(
            &admin(),
            &account("alice"),
            AccountChange {
                password: Some(secret(NEW_PASSWORD)),
                disabled: Some(true),
                rights: Some(Rights::parse("send,receive").unwrap()),
                quota_bytes: Some(Some(1 << 30)),
                ..AccountChange::default()
            },
        )
        .await
        .unwrap();
    let after = bed.hub.store_stats();
    assert_eq!(
        (after.hops() - before.hops(), after.commits - before.commits),
        (1, 1)
    );
    assert!(changed.disabled);
    assert_ne!(changed.password_hash, old.password_hash);
    assert_eq!(
        changed.access.rights,
        Rights::parse("send,receive").unwrap()
    );
    assert_eq!(changed.access.limits.quota_bytes, Some(1 << 30));
    assert_eq!(changed.token_epoch, old.token_epoch + 1);
    assert_eq!(bed.account("alice").await, changed);
    let details: Vec<String> = bed.events().await[events..]
        .iter()
        .map(|e| e.detail.clone())
        .collect();
    assert_eq!(
        details,
        [
            "set rights send,receive; quota 1.0 GiB",
            "set password",
            "disable"
        ]
    );
}

#[tokio::test]
async fn groups_routes_members_and_keys_are_refused_whole() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol"]).await;
    bed.admins(&["root"]).await;
    bed.group("team", &["bob"]).await;
    bed.allow("alice", "bob").await;
    bed.send("alice", "/outbox/bob/live.txt", b"pending").await;
    let key = AuthorizedKey {
        algorithm: "ssh-ed25519".to_owned(),
        blob: [&[0, 0, 0, 11][..], b"ssh-ed25519", &[0, 0, 0, 32], &[7; 32]].concat(),
        comment: "test".to_owned(),
    };
    bed.hub
        .add_key(&admin(), &account("carol"), key.clone())
        .await
        .unwrap();
    let hub = &bed.hub;
    let members = |names: &[&str]| names.iter().map(|n| account(n)).collect::<Vec<_>>();

    let err = bed
        .refused(
            ErrorKind::NotFound,
            None,
            hub.add_group(&admin(), account("new"), members(&["bob", "ghost"])),
        )
        .await;
    assert!(err.message().contains("ghost"), "{err}");
    let err = bed
        .refused(
            ErrorKind::PermissionDenied,
            None,
            hub.add_group(&admin(), account("new"), members(&["bob", "root"])),
        )
        .await;
    assert!(err.message().contains("root is an admin account"), "{err}");
    for taken in ["carol", "team"] {
        bed.refused(
            ErrorKind::Conflict,
            None,
            hub.add_group(&admin(), account(taken), members(&["bob"])),
        )
        .await;
    }
    let team = account("team");
    for (member, kind) in [
        ("root", ErrorKind::PermissionDenied),
        ("ghost", ErrorKind::NotFound),
        ("bob", ErrorKind::Conflict),
    ] {
        bed.refused(
            kind,
            None,
            hub.add_member(&admin(), &team, &account(member)),
        )
        .await;
    }
    bed.refused(
        ErrorKind::NotFound,
        None,
        hub.remove_member(&admin(), &team, &account("carol")),
    )
    .await;
    for (from, to, kind) in [
        ("root", "bob", ErrorKind::PermissionDenied),
        ("alice", "root", ErrorKind::PermissionDenied),
        ("alice", "ghost", ErrorKind::NotFound),
    ] {
        bed.refused(
            kind,
            None,
            hub.set_route(&admin(), account(from), account(to), RouteEffect::Allow),
        )
        .await;
    }
    bed.refused(
        ErrorKind::NotFound,
        None,
        hub.remove_route(&admin(), &account("bob"), &account("alice")),
    )
    .await;
    // Live deliveries to or from an account keep it.
    for name in ["alice", "bob"] {
        bed.refused(
            ErrorKind::Conflict,
            None,
            hub.delete_account(&admin(), &account(name)),
        )
        .await;
    }
    bed.refused(
        ErrorKind::Conflict,
        None,
        hub.add_key(&admin(), &account("carol"), key.clone()),
    )
    .await;
    bed.refused(
        ErrorKind::NotFound,
        None,
        hub.remove_key(&admin(), &account("bob"), &key),
    )
    .await;
    bed.refused(
        ErrorKind::PermissionDenied,
        None,
        hub.enroll_totp(&admin(), &account("root")),
    )
    .await;
    bed.refused(
        ErrorKind::NotFound,
        None,
        hub.remove_totp(&admin(), &account("bob")),
    )
    .await;
}

// ----- a password change keeps what committed while it was hashing ------------------------

/// A store port in front of a [`MemoryMeta`] that can hold the next write unit at the door:
/// the unit's caller has done everything it does before its transaction (a password change
/// has hashed), and its transaction has not begun.
struct Gate {
    inner: Arc<MemoryMeta>,
    next: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

/// The test's side of a held unit.
struct Held {
    /// Fires when the unit has arrived and waits.
    arrived: oneshot::Receiver<()>,
    /// Lets it in.
    release: oneshot::Sender<()>,
}

impl Gate {
    fn bed() -> (Bed, Arc<Gate>) {
        let meta = Arc::new(MemoryMeta::new());
        let gate = Arc::new(Gate {
            inner: meta.clone(),
            next: Mutex::new(None),
        });
        let bed = Bed::on(gate.clone(), meta, Arc::new(MemoryBlobs::new()));
        (bed, gate)
    }

    /// Holds the next write unit that arrives.
    fn hold_next_write(&self) -> Held {
        let (arrived_tx, arrived) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        *self.next.lock().unwrap() = Some((arrived_tx, release_rx));
        Held { arrived, release }
    }
}

#[async_trait]
impl MetaStore for Gate {
    async fn read(&self, unit: Unit) -> Result<UnitOutput> {
        self.inner.read(unit).await
    }

    async fn write(&self, durability: Durability, unit: Unit) -> Result<UnitOutput> {
        let held = self.next.lock().unwrap().take();
        if let Some((arrived, release)) = held {
            arrived.send(()).unwrap();
            release.await.unwrap();
        }
        self.inner.write(durability, unit).await
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

/// Proves that the unit of a password change writes the hash and the token revocation only:
/// a disable committed after the hash was computed and before that unit ran is still there
/// when it has run, and the new password is stored too.
#[tokio::test]
async fn a_disable_committed_while_a_password_is_hashed_is_kept() {
    let (bed, gate) = Gate::bed();
    bed.clients_with_password(&["alice"]).await;
    let old = bed.account("alice").await;
    let held = gate.hold_next_write();
    let hub = bed.hub.clone();
    let change = tokio::spawn(async move {
        let change = AccountChange {
            password: Some(secret(NEW_PASSWORD)),
            ..AccountChange::default()
        };
        hub.change_account(&admin(), &account("alice"), change)
            .await
    });
    // The new password is hashed; its unit waits at the store's door.
    held.arrived.await.unwrap();
    bed.hub
        .set_disabled(&admin(), &account("alice"), true)
        .await
        .unwrap();
    assert!(bed.account("alice").await.disabled);
    held.release.send(()).unwrap();
    let changed = change.await.unwrap().unwrap();

    let now = bed.account("alice").await;
    assert_eq!(now, changed);
    assert!(now.disabled, "the password change undid the disable");
    assert_ne!(
        now.password_hash, old.password_hash,
        "the new password is stored"
    );
    assert_eq!(
        now.token_epoch,
        old.token_epoch + 2,
        "each change revoked tokens"
    );
    // Enabled again, alice logs in with the new password only.
    bed.hub
        .set_disabled(&admin(), &account("alice"), false)
        .await
        .unwrap();
    assert!(matches!(
        bed.login("alice", PASSWORD, Scope::Client).await,
        LoginStep::Refused
    ));
    assert!(matches!(
        bed.login("alice", NEW_PASSWORD, Scope::Client).await,
        LoginStep::Accepted(..)
    ));
}

/// Proves the same for the TOTP enrolment: a recovery code spent by a login while the
/// password change was hashing stays spent.
#[tokio::test]
async fn a_recovery_code_used_during_a_password_change_stays_used() {
    let (bed, gate) = Gate::bed();
    bed.clients_with_password(&["bob"]).await;
    let setup = bed
        .hub
        .enroll_totp(&admin(), &account("bob"))
        .await
        .unwrap();
    bed.change(
        "bob",
        AccountChange {
            factors: Some(FactorSet::new([Factor::Password, Factor::Totp])),
            ..AccountChange::default()
        },
    )
    .await;
    let code = setup.recovery_codes[0].expose().clone();
    let login_with_code = || {
        let mut progress = LoginProgress::default();
        let hub = bed.hub.clone();
        let code = secret(&code);
        async move {
            hub.login(
                &mut progress,
                "bob",
                Credential::Code(code),
                None,
                Protocol::Sftp,
            )
            .await
            .unwrap()
        }
    };

    let held = gate.hold_next_write();
    let hub = bed.hub.clone();
    let change = tokio::spawn(async move {
        hub.set_password(&admin(), &account("bob"), secret(NEW_PASSWORD))
            .await
    });
    held.arrived.await.unwrap();
    // Meanwhile bob proves his second factor with a recovery code, which is spent at once.
    let step = login_with_code().await;
    assert!(
        matches!(&step, LoginStep::Continue(remaining) if remaining == &[Factor::Password]),
        "{step:?}"
    );
    held.release.send(()).unwrap();
    change.await.unwrap().unwrap();

    let bob = bed.account("bob").await;
    let recovery = &bob.totp.as_ref().unwrap().recovery;
    assert_eq!(recovery.len(), 9);
    assert!(
        !recovery.contains(&recovery_code_hash(&code)),
        "the code came back"
    );
    assert!(matches!(login_with_code().await, LoginStep::Refused));
    let refused = bed.events_of(EventKind::Login, Outcome::Refused).await;
    assert!(
        refused[0].detail.contains("wrong or reused code"),
        "{refused:?}"
    );
    // And the password is the new one: the code of another login, then the new password.
    let mut progress = LoginProgress::default();
    let code = setup.recovery_codes[1].expose().clone();
    for (credential, accepted) in [
        (Credential::Code(secret(&code)), false),
        (Credential::Password(secret(NEW_PASSWORD)), true),
    ] {
        let step = bed
            .hub
            .login(&mut progress, "bob", credential, None, Protocol::Sftp)
            .await
            .unwrap();
        assert_eq!(
            matches!(step, LoginStep::Accepted(..)),
            accepted,
            "{step:?}"
        );
    }
}
