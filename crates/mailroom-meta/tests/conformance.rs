//! The `MetaStore` conformance suite: one set of scenarios written against `&dyn MetaStore`,
//! run on every backend. Today that is SQLite in memory and SQLite in a file; a PostgreSQL
//! store joins by adding itself to [`backends`].
//!
//! Every scenario checks, after each change, that exactly the change's events were recorded,
//! and after each refusal, the error kind and that nothing at all changed. Times carry
//! microseconds, the finest precision every backend keeps. The last tests are SQLite-only:
//! durability settings, reopening a file, and two processes on one file.

// Tests may unwrap (STYLE.md): a failed unwrap is a failed check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use mailroom_core::{
    AccessPolicy, Account, AccountKind, AccountName, AuthorizedKey, Ban, BanSubject, BlobId,
    CoreError, Delivery, DeliveryId, DeliveryQuery, DeliveryState, Durability, ErrorKind, Event,
    EventKind, EventQuery, Factor, FactorSet, FileName, Group, InboxUsage, Limits, MetaStore,
    Outcome, Protocol, Result, Rights, Route, RouteEffect, Scope, Secret, TokenKind, TokenRecord,
    TotpEnrolment,
};
use mailroom_core::{AuditRecord, ChainHead, ChainProblem, Checkpoint, CheckpointStatus};
use mailroom_core::{GENESIS_HASH, chain_hash};
use mailroom_meta::SqliteStore;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A store under test; `_dir` keeps a file store's folder alive.
struct Backend {
    name: &'static str,
    store: Box<dyn MetaStore>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh, empty store of every kind.
async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let file = SqliteStore::open(&dir.path().join("meta.db"))
        .await
        .unwrap();
    vec![
        Backend {
            name: "sqlite-memory",
            store: Box::new(SqliteStore::open_in_memory().await.unwrap()),
            _dir: None,
        },
        Backend {
            name: "sqlite-file",
            store: Box::new(file),
            _dir: Some(dir),
        },
    ]
}

/// One `#[tokio::test]` per scenario, running it on every backend.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod on_every_backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    for backend in super::backends().await {
                        eprintln!("backend: {}", backend.name);
                        let mut harness = super::Harness::new(&*backend.store);
                        super::$scenario(&mut harness).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    accounts_round_trip_with_keys,
    accounts_and_groups_share_one_namespace,
    update_account_replaces_mutable_fields,
    delete_account_cascades,
    delete_account_refused_while_deliveries_are_live,
    groups_and_members,
    delete_group_cascades,
    routes_put_replace_delete,
    insert_deliveries_is_all_or_nothing,
    live_names_are_unique_until_terminal,
    transition_is_conditional,
    rename_delivery,
    live_blobs_and_blob_in_use,
    inline_blobs_live_with_their_deliveries,
    delivery_queries,
    event_queries,
    record_is_all_or_nothing,
    access_policy_and_totp_round_trip,
    totp_steps_and_recovery_codes_work_once,
    bans_put_replace_delete,
    inbox_usage_counts_live_deliveries,
    audit_records_form_a_chain,
    tokens_store_take_and_expire,
    token_epoch_only_moves_forward,
);

fn token_record(
    hash: &str,
    kind: TokenKind,
    session: &str,
    account: &str,
    expires: OffsetDateTime,
) -> TokenRecord {
    TokenRecord {
        hash: hash.to_owned(),
        kind,
        session: session.to_owned(),
        account: name(account),
        scope: Scope::Client,
        epoch: 3,
        source: Some("127.0.0.1:5000".to_owned()),
        protocol: Protocol::Https,
        created: datetime!(2030-01-01 00:00 UTC),
        expires,
    }
}

async fn tokens_store_take_and_expire(h: &mut Harness<'_>) {
    let alice = h.client("alice");
    h.store
        .insert_account(&alice, &h.admin_event("a"))
        .await
        .unwrap();
    let soon = datetime!(2030-01-01 00:15 UTC);
    let later = datetime!(2030-01-01 12:00 UTC);
    let access = token_record("aa", TokenKind::Access, "s1", "alice", soon);
    let refresh = token_record("bb", TokenKind::Refresh, "s1", "alice", later);
    let other = token_record("cc", TokenKind::Access, "s2", "alice", soon);
    h.store
        .insert_tokens(&[access.clone(), refresh.clone(), other.clone()])
        .await
        .unwrap();
    assert_eq!(h.store.token("aa").await.unwrap(), Some(access.clone()));
    assert_eq!(h.store.token("zz").await.unwrap(), None);
    // A hash is stored once; a batch with a taken hash stores nothing.
    let err = h
        .store
        .insert_tokens(&[
            token_record("dd", TokenKind::Access, "s3", "alice", soon),
            access.clone(),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(h.store.token("dd").await.unwrap(), None);
    // Taking works once.
    assert_eq!(h.store.take_token("bb").await.unwrap(), Some(refresh));
    assert_eq!(h.store.take_token("bb").await.unwrap(), None);
    // Expiry: s2's only token expires; s1 keeps nothing either once "aa" expires.
    let (deleted, mut ended) = h.store.delete_expired_tokens(soon).await.unwrap();
    ended.sort();
    assert_eq!(deleted, 2);
    assert_eq!(ended, ["s1", "s2"]);
    // Logout of a session deletes its tokens and records its event.
    h.store
        .insert_tokens(&[token_record("ee", TokenKind::Access, "s4", "alice", later)])
        .await
        .unwrap();
    let before = h.store.events(&EventQuery::default()).await.unwrap().len();
    let logout = h.event(EventKind::SessionClosed, "alice");
    assert_eq!(
        h.store
            .delete_token_session("s4", Some(&logout))
            .await
            .unwrap(),
        1
    );
    assert_eq!(h.store.token("ee").await.unwrap(), None);
    assert_eq!(
        h.store.events(&EventQuery::default()).await.unwrap().len(),
        before + 1
    );
    // Deleting the account deletes its tokens, so a later account of the name has none.
    h.store
        .insert_tokens(&[token_record("ff", TokenKind::Access, "s5", "alice", later)])
        .await
        .unwrap();
    h.store
        .delete_account(&name("alice"), &h.admin_event("d"))
        .await
        .unwrap();
    assert_eq!(h.store.token("ff").await.unwrap(), None);
}

async fn token_epoch_only_moves_forward(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    h.store
        .insert_account(&alice, &h.admin_event("a"))
        .await
        .unwrap();
    alice.token_epoch = 2;
    h.store
        .update_account(&alice, &h.admin_event("u"))
        .await
        .unwrap();
    assert_eq!(
        h.store
            .account(&name("alice"))
            .await
            .unwrap()
            .unwrap()
            .token_epoch,
        2
    );
    // A stale copy of the account cannot move the generation back (revive tokens).
    alice.token_epoch = 1;
    h.store
        .update_account(&alice, &h.admin_event("u"))
        .await
        .unwrap();
    assert_eq!(
        h.store
            .account(&name("alice"))
            .await
            .unwrap()
            .unwrap()
            .token_epoch,
        2
    );
}

async fn access_policy_and_totp_round_trip(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.access = AccessPolicy {
        factors: FactorSet::new([Factor::PublicKey, Factor::Password, Factor::Totp]),
        networks: vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        certificate_subject: Some("Alice Example".to_owned()),
        rights: Rights {
            send: true,
            receive: false,
            delete: true,
            recall: false,
        },
        limits: Limits {
            name_allow: vec!["*.csv".to_owned()],
            name_deny: vec!["*.exe".to_owned(), "*.bat".to_owned()],
            max_file_size: Some(1 << 20),
            quota_bytes: Some(10 << 20),
            quota_files: Some(100),
            retention_days: Some(30),
            max_sessions: Some(2),
        },
    };
    alice.totp = Some(TotpEnrolment {
        secret: Secret::new("JBSWY3DPEHPK3PXP".to_owned()),
        last_step: None,
        recovery: vec!["aa".repeat(32), "bb".repeat(32)],
    });
    h.insert_account(&alice).await;
    assert_eq!(
        h.store.account(&name("alice")).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(h.store.accounts().await.unwrap(), vec![alice.clone()]);

    // Back to the defaults, and TOTP removed.
    alice.access = AccessPolicy::default();
    alice.totp = None;
    h.update_account(&alice).await;
    assert_eq!(h.store.account(&name("alice")).await.unwrap(), Some(alice));
}

async fn totp_steps_and_recovery_codes_work_once(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    let bob = h.client("bob");
    alice.totp = Some(TotpEnrolment {
        secret: Secret::new("JBSWY3DPEHPK3PXP".to_owned()),
        last_step: None,
        recovery: vec!["aa".repeat(32), "bb".repeat(32)],
    });
    h.insert_account(&alice).await;
    h.insert_account(&bob).await;
    let (a, b) = (name("alice"), name("bob"));

    assert!(h.store.use_totp_step(&a, 1000).await.unwrap());
    assert!(
        !h.store.use_totp_step(&a, 1000).await.unwrap(),
        "replayed step"
    );
    assert!(!h.store.use_totp_step(&a, 999).await.unwrap(), "older step");
    assert!(h.store.use_totp_step(&a, 1001).await.unwrap());
    assert!(!h.store.use_totp_step(&b, 5).await.unwrap(), "not enrolled");
    let stored = h.store.account(&a).await.unwrap().unwrap();
    assert_eq!(stored.totp.as_ref().unwrap().last_step, Some(1001));

    // A stale copy of the account written back does not rewind the step.
    h.update_account(&alice).await;
    assert!(!h.store.use_totp_step(&a, 1001).await.unwrap());

    assert!(
        h.store
            .use_recovery_code(&a, &"aa".repeat(32))
            .await
            .unwrap()
    );
    assert!(
        !h.store
            .use_recovery_code(&a, &"aa".repeat(32))
            .await
            .unwrap()
    );
    assert!(
        !h.store
            .use_recovery_code(&b, &"bb".repeat(32))
            .await
            .unwrap()
    );
    let stored = h.store.account(&a).await.unwrap().unwrap();
    assert_eq!(stored.totp.unwrap().recovery, vec!["bb".repeat(32)]);

    // A new enrolment (new secret) starts with no used step.
    alice.totp = Some(TotpEnrolment {
        secret: Secret::new("KRSXG5CTMVRXEZLU".to_owned()),
        last_step: None,
        recovery: Vec::new(),
    });
    h.update_account(&alice).await;
    assert!(h.store.use_totp_step(&a, 10).await.unwrap());
}

async fn bans_put_replace_delete(h: &mut Harness<'_>) {
    let address = BanSubject::parse("192.0.2.9").unwrap();
    let account = BanSubject::Account(name("alice"));
    let mut first = Ban {
        subject: address.clone(),
        until: h.tick() + Duration::minutes(30),
        level: 1,
        reason: "15 points in 30 minutes".to_owned(),
        created: h.tick(),
    };
    let event = h.event(EventKind::Ban, "192.0.2.9");
    h.store.put_ban(&first, &event).await.unwrap();
    h.expect_events(&[event]).await;
    let locked = Ban {
        subject: account.clone(),
        level: 1,
        ..first.clone()
    };
    let event = h.event(EventKind::Ban, "account:alice");
    h.store.put_ban(&locked, &event).await.unwrap();
    h.expect_events(&[event]).await;
    assert_eq!(h.store.ban(&address).await.unwrap(), Some(first.clone()));
    assert_eq!(
        h.store.bans().await.unwrap(),
        vec![first.clone(), locked.clone()]
    );

    first.level = 2;
    first.until += Duration::minutes(45);
    let event = h.event(EventKind::Ban, "192.0.2.9");
    h.store.put_ban(&first, &event).await.unwrap();
    h.expect_events(&[event]).await;
    assert_eq!(h.store.ban(&address).await.unwrap(), Some(first));

    let event = h.event(EventKind::Ban, "192.0.2.9");
    h.store.delete_ban(&address, &event).await.unwrap();
    h.expect_events(&[event]).await;
    assert_eq!(h.store.ban(&address).await.unwrap(), None);
    let event = h.event(EventKind::Ban, "192.0.2.9");
    h.refused(ErrorKind::NotFound, h.store.delete_ban(&address, &event))
        .await;
    assert_eq!(h.store.bans().await.unwrap(), vec![locked]);
}

async fn inbox_usage_counts_live_deliveries(h: &mut Harness<'_>) {
    for who in ["alice", "bob"] {
        let account = h.client(who);
        h.insert_account(&account).await;
    }
    let blob = BlobId::new();
    let mut one = h.delivery("alice", "bob", "one.txt", &blob, DeliveryState::Delivered);
    one.size = 100;
    let mut two = h.delivery("alice", "bob", "two.txt", &blob, DeliveryState::PickedUp);
    two.size = 50;
    let mut gone = h.delivery(
        "alice",
        "bob",
        "gone.txt",
        &blob,
        DeliveryState::Acknowledged,
    );
    gone.size = 1000;
    let mut back = h.delivery("bob", "alice", "back.txt", &blob, DeliveryState::Delivered);
    back.size = 7;
    h.insert_deliveries(&[one.clone(), two, gone, back]).await;
    assert_eq!(
        h.store.inbox_usage(&name("bob")).await.unwrap(),
        InboxUsage {
            bytes: 150,
            files: 2
        }
    );
    assert_eq!(
        h.store.inbox_usage(&name("carol")).await.unwrap(),
        InboxUsage::default()
    );
    let old = h
        .store
        .deliveries(&DeliveryQuery {
            created_before: Some(one.created + Duration::microseconds(1)),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(old, vec![one]);
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async fn accounts_round_trip_with_keys(h: &mut Harness<'_>) {
    let bob = h.admin("bob");
    let mut alice = h.client("alice");
    alice.keys = vec![ed25519_key(), odd_key(1)];
    alice.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned());

    h.insert_account(&bob).await;
    h.insert_account(&alice).await;

    assert_eq!(
        h.store.account(&name("alice")).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        h.store.account(&name("bob")).await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(h.store.account(&name("carol")).await.unwrap(), None);
    // By name, whatever the insertion order.
    assert_eq!(h.store.accounts().await.unwrap(), vec![alice, bob]);
}

async fn accounts_and_groups_share_one_namespace(h: &mut Harness<'_>) {
    let alice = h.client("alice");
    h.insert_account(&alice).await;
    let team = group("team", &[]);
    h.insert_group(&team).await;

    let taken_by_group = h.client("team");
    let event = h.admin_event("team");
    h.refused(
        ErrorKind::Conflict,
        h.store.insert_account(&taken_by_group, &event),
    )
    .await;
    let event = h.admin_event("alice");
    h.refused(
        ErrorKind::Conflict,
        h.store.insert_group(&group("alice", &[]), &event),
    )
    .await;
    let event = h.admin_event("alice");
    h.refused(ErrorKind::Conflict, h.store.insert_account(&alice, &event))
        .await;
    let event = h.admin_event("team");
    h.refused(ErrorKind::Conflict, h.store.insert_group(&team, &event))
        .await;

    // Deleting frees the name for either kind.
    h.delete_account("alice").await;
    h.insert_group(&group("alice", &[])).await;
    h.delete_group("team").await;
    let team_account = h.client("team");
    h.insert_account(&team_account).await;
    assert_eq!(h.store.accounts().await.unwrap(), vec![team_account]);
    assert_eq!(h.store.groups().await.unwrap(), vec![group("alice", &[])]);
}

async fn update_account_replaces_mutable_fields(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.keys = vec![odd_key(1), odd_key(2), odd_key(3)];
    alice.password_hash = Some("$argon2id$old".to_owned());
    h.insert_account(&alice).await;

    alice.disabled = true;
    alice.password_hash = None;
    alice.keys = vec![odd_key(3), ed25519_key()];
    h.update_account(&alice).await;
    assert_eq!(
        h.store.account(&name("alice")).await.unwrap(),
        Some(alice.clone())
    );

    alice.disabled = false;
    alice.password_hash = Some("$argon2id$new".to_owned());
    alice.keys = Vec::new();
    h.update_account(&alice).await;
    assert_eq!(h.store.account(&name("alice")).await.unwrap(), Some(alice));

    let ghost = h.client("ghost");
    let event = h.admin_event("ghost");
    h.refused(ErrorKind::NotFound, h.store.update_account(&ghost, &event))
        .await;
}

async fn delete_account_cascades(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.keys = vec![ed25519_key(), odd_key(7)];
    h.insert_account(&alice).await;
    let bob = h.client("bob");
    h.insert_account(&bob).await;
    h.insert_group(&group("team", &["alice", "bob"])).await;
    h.put_route(route("alice", "bob", RouteEffect::Allow)).await;
    h.put_route(route("bob", "alice", RouteEffect::Deny)).await;
    h.put_route(route("team", "bob", RouteEffect::Allow)).await;
    h.put_route(route("bob", "team", RouteEffect::Allow)).await;

    h.delete_account("alice").await;

    assert_eq!(h.store.account(&name("alice")).await.unwrap(), None);
    assert_eq!(h.store.accounts().await.unwrap(), vec![bob]);
    assert_eq!(
        h.store.group(&name("team")).await.unwrap(),
        Some(group("team", &["bob"]))
    );
    assert_eq!(
        h.store.routes().await.unwrap(),
        vec![
            route("bob", "team", RouteEffect::Allow),
            route("team", "bob", RouteEffect::Allow),
        ]
    );
    // A new account of the same name starts clean: no keys, no memberships, no routes.
    let new_alice = h.client("alice");
    h.insert_account(&new_alice).await;
    assert_eq!(
        h.store.account(&name("alice")).await.unwrap(),
        Some(new_alice)
    );
    assert_eq!(
        h.store.group(&name("team")).await.unwrap(),
        Some(group("team", &["bob"]))
    );
    assert_eq!(h.store.routes().await.unwrap().len(), 2);

    let event = h.admin_event("ghost");
    h.refused(
        ErrorKind::NotFound,
        h.store.delete_account(&name("ghost"), &event),
    )
    .await;
    // A group is not an account.
    let event = h.admin_event("team");
    h.refused(
        ErrorKind::NotFound,
        h.store.delete_account(&name("team"), &event),
    )
    .await;
}

async fn delete_account_refused_while_deliveries_are_live(h: &mut Harness<'_>) {
    for account in ["alice", "bob", "carol"] {
        let client = h.client(account);
        h.insert_account(&client).await;
    }
    let blob = BlobId::new();
    let to_bob = h.delivery("alice", "bob", "a.txt", &blob, DeliveryState::Delivered);
    let from_carol = h.delivery("carol", "alice", "b.txt", &blob, DeliveryState::PickedUp);
    h.insert_deliveries(&[to_bob.clone(), from_carol.clone()])
        .await;
    // Live deliveries to it (bob) or from it (alice, carol): refused, nothing changed.
    for account in ["bob", "alice", "carol"] {
        let event = h.admin_event(account);
        h.refused(
            ErrorKind::Conflict,
            h.store.delete_account(&name(account), &event),
        )
        .await;
    }
    // Once terminal, the account can go.
    h.transition(
        &to_bob,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    h.delete_account("bob").await;
    assert_eq!(h.store.account(&name("bob")).await.unwrap(), None);
}

async fn groups_and_members(h: &mut Harness<'_>) {
    for account in ["alice", "bob", "carol"] {
        let account = h.client(account);
        h.insert_account(&account).await;
    }
    h.insert_group(&group("zeta", &[])).await;
    // Members come back sorted, whatever order they were given in.
    h.insert_group(&Group {
        name: name("team"),
        members: vec![name("carol"), name("alice")],
    })
    .await;
    assert_eq!(
        h.store.group(&name("team")).await.unwrap(),
        Some(group("team", &["alice", "carol"]))
    );
    assert_eq!(h.store.group(&name("nobody")).await.unwrap(), None);
    // An account is not a group.
    assert_eq!(h.store.group(&name("alice")).await.unwrap(), None);

    h.update_group(&group("team", &["bob"])).await;
    assert_eq!(
        h.store.groups().await.unwrap(),
        vec![group("team", &["bob"]), group("zeta", &[])]
    );
    h.update_group(&group("team", &[])).await;
    assert_eq!(
        h.store.group(&name("team")).await.unwrap(),
        Some(group("team", &[]))
    );

    let event = h.admin_event("ghost");
    h.refused(
        ErrorKind::NotFound,
        h.store.update_group(&group("ghost", &[]), &event),
    )
    .await;
    // Members must be existing accounts: not unknown names, not groups.
    let event = h.admin_event("team");
    h.refused(
        ErrorKind::NotFound,
        h.store
            .update_group(&group("team", &["alice", "dave"]), &event),
    )
    .await;
    let event = h.admin_event("team");
    h.refused(
        ErrorKind::NotFound,
        h.store.update_group(&group("team", &["zeta"]), &event),
    )
    .await;
    let event = h.admin_event("new");
    h.refused(
        ErrorKind::NotFound,
        h.store.insert_group(&group("new", &["dave"]), &event),
    )
    .await;
}

async fn delete_group_cascades(h: &mut Harness<'_>) {
    for account in ["alice", "bob"] {
        let account = h.client(account);
        h.insert_account(&account).await;
    }
    h.insert_group(&group("team", &["alice", "bob"])).await;
    h.put_route(route("alice", "team", RouteEffect::Allow))
        .await;
    h.put_route(route("team", "alice", RouteEffect::Deny)).await;
    h.put_route(route("alice", "bob", RouteEffect::Allow)).await;

    h.delete_group("team").await;

    assert_eq!(h.store.groups().await.unwrap(), Vec::new());
    assert_eq!(
        h.store.routes().await.unwrap(),
        vec![route("alice", "bob", RouteEffect::Allow)]
    );
    // The members are accounts and stay.
    assert_eq!(h.store.accounts().await.unwrap().len(), 2);
    // A new group of the same name starts without members.
    h.insert_group(&group("team", &[])).await;
    assert_eq!(
        h.store.group(&name("team")).await.unwrap(),
        Some(group("team", &[]))
    );

    let event = h.admin_event("ghost");
    h.refused(
        ErrorKind::NotFound,
        h.store.delete_group(&name("ghost"), &event),
    )
    .await;
    let event = h.admin_event("alice");
    h.refused(
        ErrorKind::NotFound,
        h.store.delete_group(&name("alice"), &event),
    )
    .await;
}

async fn routes_put_replace_delete(h: &mut Harness<'_>) {
    for account in ["alice", "bob"] {
        let account = h.client(account);
        h.insert_account(&account).await;
    }
    h.insert_group(&group("team", &["bob"])).await;

    h.put_route(route("bob", "team", RouteEffect::Allow)).await;
    h.put_route(route("alice", "bob", RouteEffect::Allow)).await;
    h.put_route(route("alice", "team", RouteEffect::Deny)).await;
    // The same pair again replaces the rule.
    h.put_route(route("alice", "bob", RouteEffect::Deny)).await;
    assert_eq!(
        h.store.routes().await.unwrap(),
        vec![
            route("alice", "bob", RouteEffect::Deny),
            route("alice", "team", RouteEffect::Deny),
            route("bob", "team", RouteEffect::Allow),
        ]
    );

    let event = h.admin_event("route");
    h.refused(
        ErrorKind::NotFound,
        h.store.delete_route(&name("bob"), &name("alice"), &event),
    )
    .await;
    h.delete_route("alice", "team").await;
    let event = h.admin_event("route");
    h.refused(
        ErrorKind::NotFound,
        h.store.delete_route(&name("alice"), &name("team"), &event),
    )
    .await;
    assert_eq!(
        h.store.routes().await.unwrap(),
        vec![
            route("alice", "bob", RouteEffect::Deny),
            route("bob", "team", RouteEffect::Allow),
        ]
    );

    // A rule can only name accounts and groups that exist.
    let event = h.admin_event("route");
    h.refused(
        ErrorKind::NotFound,
        h.store
            .put_route(&route("alice", "ghost", RouteEffect::Allow), &event),
    )
    .await;
    let event = h.admin_event("route");
    h.refused(
        ErrorKind::NotFound,
        h.store
            .put_route(&route("ghost", "alice", RouteEffect::Allow), &event),
    )
    .await;
}

async fn insert_deliveries_is_all_or_nothing(h: &mut Harness<'_>) {
    let blob = BlobId::new();
    let first = h.delivery(
        "alice",
        "bob",
        "report.pdf",
        &blob,
        DeliveryState::Delivered,
    );
    h.insert_deliveries(std::slice::from_ref(&first)).await;

    // A fan-out whose second delivery collides with the live one: nothing of it is stored.
    let to_carol = h.delivery("alice", "carol", "report.pdf", &blob, DeliveryState::Stored);
    let to_bob = h.delivery("alice", "bob", "report.pdf", &blob, DeliveryState::Stored);
    let events = vec![
        h.event(EventKind::Upload, "/outbox/team/report.pdf"),
        h.event(EventKind::DeliveryStored, &to_carol.id.to_string()),
        h.event(EventKind::DeliveryStored, &to_bob.id.to_string()),
    ];
    let batch = [to_carol.clone(), to_bob];
    h.refused(
        ErrorKind::Conflict,
        h.store.insert_deliveries(&batch, &events, None),
    )
    .await;
    assert_eq!(h.store.delivery(&to_carol.id).await.unwrap(), None);

    // Two deliveries of one batch may not share a live name either.
    let twin_a = h.delivery("alice", "dave", "twin.txt", &blob, DeliveryState::Stored);
    let twin_b = h.delivery("alice", "dave", "twin.txt", &blob, DeliveryState::Stored);
    let event = h.event(EventKind::Upload, "/outbox/dave/twin.txt");
    h.refused(
        ErrorKind::Conflict,
        h.store
            .insert_deliveries(&[twin_a, twin_b], std::slice::from_ref(&event), None),
    )
    .await;

    // The same id twice is a conflict, not a second row.
    let event = h.event(EventKind::Upload, "again");
    let mut again = first.clone();
    again.name = FileName::parse("other.pdf").unwrap();
    h.refused(
        ErrorKind::Conflict,
        h.store
            .insert_deliveries(&[again], std::slice::from_ref(&event), None),
    )
    .await;

    // The whole fan-out without the collision goes in at once, with all its events.
    let to_carol = h.delivery("alice", "carol", "report.pdf", &blob, DeliveryState::Stored);
    let to_dave = h.delivery("alice", "dave", "report.pdf", &blob, DeliveryState::Stored);
    h.insert_deliveries(&[to_carol.clone(), to_dave.clone()])
        .await;
    assert_eq!(
        h.store.delivery(&to_carol.id).await.unwrap(),
        Some(to_carol)
    );
    assert_eq!(h.store.delivery(&to_dave.id).await.unwrap(), Some(to_dave));
    assert_eq!(h.store.delivery(&first.id).await.unwrap(), Some(first));
    assert_eq!(h.store.delivery(&DeliveryId::new()).await.unwrap(), None);
}

async fn live_names_are_unique_until_terminal(h: &mut Harness<'_>) {
    let blob = BlobId::new();
    let first = h.delivery(
        "alice",
        "bob",
        "report.pdf",
        &blob,
        DeliveryState::Delivered,
    );
    h.insert_deliveries(std::slice::from_ref(&first)).await;

    for state in DeliveryState::LIVE {
        let clash = h.delivery("alice", "bob", "report.pdf", &blob, state);
        let event = h.event(EventKind::DeliveryStored, &clash.id.to_string());
        h.refused(
            ErrorKind::Conflict,
            h.store
                .insert_deliveries(&[clash], std::slice::from_ref(&event), None),
        )
        .await;
    }
    // The same name is free towards another recipient and from another sender.
    let to_carol = h.delivery("alice", "carol", "report.pdf", &blob, DeliveryState::Stored);
    let from_carol = h.delivery("carol", "bob", "report.pdf", &blob, DeliveryState::Stored);
    h.insert_deliveries(&[to_carol, from_carol]).await;
    // Names compare exactly: another spelling is another name.
    let other_case = h.delivery("alice", "bob", "Report.pdf", &blob, DeliveryState::Stored);
    h.insert_deliveries(&[other_case]).await;

    // Once the first delivery is acknowledged, its name is free again; both rows remain.
    h.transition(&first, &DeliveryState::VISIBLE, DeliveryState::Acknowledged)
        .await;
    let second = h.delivery("alice", "bob", "report.pdf", &blob, DeliveryState::Stored);
    h.insert_deliveries(std::slice::from_ref(&second)).await;
    let same_name = h
        .store
        .deliveries(&DeliveryQuery {
            sender: Some(name("alice")),
            recipient: Some(name("bob")),
            name: Some(FileName::parse("report.pdf").unwrap()),
            ..DeliveryQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<DeliveryId> = same_name.iter().map(|delivery| delivery.id).collect();
    assert_eq!(ids, vec![first.id, second.id]);

    // A terminal delivery may share its name with any number of terminal ones.
    let recalled = h.delivery("alice", "bob", "report.pdf", &blob, DeliveryState::Recalled);
    let expired = h.delivery("alice", "bob", "report.pdf", &blob, DeliveryState::Expired);
    h.insert_deliveries(&[recalled, expired]).await;
}

async fn transition_is_conditional(h: &mut Harness<'_>) {
    let blob = BlobId::new();
    let delivery = h.delivery("alice", "bob", "a.txt", &blob, DeliveryState::Stored);
    h.insert_deliveries(std::slice::from_ref(&delivery)).await;

    // Not in a `from` state: no change, no event.
    let before = h.snapshot().await;
    let event = h.event(EventKind::DeliveryPickedUp, &delivery.id.to_string());
    let moved = h
        .store
        .transition(
            &delivery.id,
            &[DeliveryState::Delivered],
            DeliveryState::PickedUp,
            std::slice::from_ref(&event),
            Durability::Flush,
        )
        .await
        .unwrap();
    assert!(!moved);
    let moved = h
        .store
        .transition(
            &delivery.id,
            &[],
            DeliveryState::PickedUp,
            std::slice::from_ref(&event),
            Durability::Flush,
        )
        .await
        .unwrap();
    assert!(!moved);
    let moved = h
        .store
        .transition(
            &DeliveryId::new(),
            &DeliveryState::LIVE,
            DeliveryState::Expired,
            std::slice::from_ref(&event),
            Durability::Flush,
        )
        .await
        .unwrap();
    assert!(!moved);
    assert_eq!(h.snapshot().await, before);

    // In a `from` state: moved, `updated` set, the event recorded.
    let at = h
        .transition(
            &delivery,
            &[DeliveryState::Stored, DeliveryState::Checking],
            DeliveryState::Delivered,
        )
        .await;
    let stored = h.store.delivery(&delivery.id).await.unwrap().unwrap();
    assert_eq!(stored.state, DeliveryState::Delivered);
    assert_eq!(stored.updated, at);
    assert_eq!(stored.created, delivery.created);
    assert_eq!(
        Delivery {
            state: delivery.state,
            updated: delivery.updated,
            ..stored
        },
        delivery
    );

    // Bringing a terminal delivery back to life cannot take a live name twice.
    h.transition(
        &delivery,
        &[DeliveryState::Delivered],
        DeliveryState::Quarantined,
    )
    .await;
    let successor = h.delivery("alice", "bob", "a.txt", &blob, DeliveryState::Delivered);
    h.insert_deliveries(std::slice::from_ref(&successor)).await;
    let event = h.event(EventKind::DeliveryDelivered, &delivery.id.to_string());
    h.refused(
        ErrorKind::Conflict,
        h.store.transition(
            &delivery.id,
            &[DeliveryState::Quarantined],
            DeliveryState::Delivered,
            std::slice::from_ref(&event),
            Durability::Flush,
        ),
    )
    .await;
}

async fn inline_blobs_live_with_their_deliveries(h: &mut Harness<'_>) {
    let blob = BlobId::new();
    let to_bob = h.delivery("alice", "bob", "small.txt", &blob, DeliveryState::Delivered);
    let to_carol = h.delivery(
        "alice",
        "carol",
        "small.txt",
        &blob,
        DeliveryState::Delivered,
    );
    let events = vec![h.event(EventKind::Upload, "/outbox/team/small.txt")];
    h.store
        .insert_deliveries(
            &[to_bob.clone(), to_carol.clone()],
            &events,
            Some((&blob, b"hello inline")),
        )
        .await
        .unwrap();
    h.expect_events(&events).await;
    assert_eq!(
        h.store.inline_blob(&blob).await.unwrap().as_deref(),
        Some(&b"hello inline"[..])
    );
    assert_eq!(h.store.inline_blob(&BlobId::new()).await.unwrap(), None);
    // Opening for reading finds the delivery and its content in one lookup.
    let to_bob_query = DeliveryQuery {
        recipient: Some(name("bob")),
        sender: Some(name("alice")),
        name: Some(FileName::parse("small.txt").unwrap()),
        states: DeliveryState::VISIBLE.to_vec(),
        ..DeliveryQuery::default()
    };
    assert_eq!(
        h.store
            .first_delivery_with_content(&to_bob_query)
            .await
            .unwrap(),
        Some((to_bob.clone(), Some(b"hello inline".to_vec())))
    );
    // A refused insert stores no content either.
    let other = BlobId::new();
    let clash = h.delivery(
        "alice",
        "bob",
        "small.txt",
        &other,
        DeliveryState::Delivered,
    );
    let event = h.event(EventKind::DeliveryStored, &clash.id.to_string());
    h.refused(
        ErrorKind::Conflict,
        h.store
            .insert_deliveries(&[clash], std::slice::from_ref(&event), Some((&other, b"x"))),
    )
    .await;
    assert_eq!(h.store.inline_blob(&other).await.unwrap(), None);
    // A relaxed pick-up keeps it; the content goes with the last live delivery.
    let event = h.event(EventKind::DeliveryPickedUp, &to_bob.id.to_string());
    let moved = h
        .store
        .transition(
            &to_bob.id,
            &[DeliveryState::Delivered],
            DeliveryState::PickedUp,
            std::slice::from_ref(&event),
            Durability::Relaxed,
        )
        .await
        .unwrap();
    assert!(moved);
    h.expect_events(&[event]).await;
    h.transition(
        &to_bob,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    assert!(h.store.inline_blob(&blob).await.unwrap().is_some());
    h.transition(
        &to_carol,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    assert_eq!(h.store.inline_blob(&blob).await.unwrap(), None);
}

async fn rename_delivery(h: &mut Harness<'_>) {
    let blob = BlobId::new();
    let a = h.delivery("alice", "bob", "a.txt", &blob, DeliveryState::Stored);
    let b = h.delivery("alice", "bob", "b.txt", &blob, DeliveryState::Delivered);
    let old = h.delivery(
        "alice",
        "bob",
        "old.txt",
        &blob,
        DeliveryState::Acknowledged,
    );
    let to_carol = h.delivery("alice", "carol", "c.txt", &blob, DeliveryState::Stored);
    h.insert_deliveries(&[a.clone(), b.clone(), old.clone(), to_carol])
        .await;

    let event = h.event(EventKind::DeliveryRenamed, &b.id.to_string());
    h.refused(
        ErrorKind::Conflict,
        h.store.rename_delivery(&b.id, &file("a.txt"), &event),
    )
    .await;

    h.rename(&b, "c.txt").await;
    // A name held only by a terminal delivery is free.
    h.rename(&a, "old.txt").await;
    // Renaming to its own name is no conflict.
    h.rename(&a, "old.txt").await;
    let stored = h.store.delivery(&a.id).await.unwrap().unwrap();
    assert_eq!(stored.name, file("old.txt"));
    assert_eq!(stored.updated, a.updated);
    assert_eq!(
        h.store.delivery(&b.id).await.unwrap().unwrap().name,
        file("c.txt")
    );

    // Only live deliveries can be renamed.
    let event = h.event(EventKind::DeliveryRenamed, &old.id.to_string());
    h.refused(
        ErrorKind::NotFound,
        h.store.rename_delivery(&old.id, &file("new.txt"), &event),
    )
    .await;
    let event = h.event(EventKind::DeliveryRenamed, "unknown");
    h.refused(
        ErrorKind::NotFound,
        h.store
            .rename_delivery(&DeliveryId::new(), &file("new.txt"), &event),
    )
    .await;
}

async fn live_blobs_and_blob_in_use(h: &mut Harness<'_>) {
    assert_eq!(h.store.live_blobs().await.unwrap(), HashSet::new());
    let shared = BlobId::new();
    let single = BlobId::new();
    let gone = BlobId::new();
    let to_bob = h.delivery("alice", "bob", "f", &shared, DeliveryState::Delivered);
    let to_carol = h.delivery("alice", "carol", "f", &shared, DeliveryState::PickedUp);
    let checked = h.delivery("alice", "bob", "g", &single, DeliveryState::Checking);
    let expired = h.delivery("alice", "bob", "h", &gone, DeliveryState::Expired);
    h.insert_deliveries(&[to_bob.clone(), to_carol.clone(), checked.clone(), expired])
        .await;

    assert_eq!(
        h.store.live_blobs().await.unwrap(),
        HashSet::from([shared.clone(), single.clone()])
    );
    assert!(h.store.blob_in_use(&shared).await.unwrap());
    assert!(h.store.blob_in_use(&single).await.unwrap());
    assert!(!h.store.blob_in_use(&gone).await.unwrap());
    assert!(!h.store.blob_in_use(&BlobId::new()).await.unwrap());

    h.transition(
        &checked,
        &[DeliveryState::Checking],
        DeliveryState::Quarantined,
    )
    .await;
    assert!(!h.store.blob_in_use(&single).await.unwrap());
    assert_eq!(
        h.store.live_blobs().await.unwrap(),
        HashSet::from([shared.clone()])
    );

    // A fan-out's blob stays in use while any of its deliveries is live.
    h.transition(
        &to_bob,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    assert!(h.store.blob_in_use(&shared).await.unwrap());
    h.transition(
        &to_carol,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    assert!(!h.store.blob_in_use(&shared).await.unwrap());
    assert_eq!(h.store.live_blobs().await.unwrap(), HashSet::new());
}

async fn delivery_queries(h: &mut Harness<'_>) {
    let blob = BlobId::new();
    // Created out of order: the query sorts by creation time.
    let late = h.delivery("alice", "bob", "late", &blob, DeliveryState::Delivered);
    let early = Delivery {
        created: late.created - Duration::hours(1),
        updated: late.created - Duration::hours(1),
        ..h.delivery("alice", "bob", "early", &blob, DeliveryState::PickedUp)
    };
    let via_team = Delivery {
        target: name("team"),
        ..h.delivery("alice", "bob", "via-team", &blob, DeliveryState::Stored)
    };
    let from_carol = h.delivery("carol", "bob", "late", &blob, DeliveryState::Delivered);
    let to_carol = h.delivery("alice", "carol", "x", &blob, DeliveryState::Recalled);
    // Same creation time as `to_carol`: the id breaks the tie.
    let tie = Delivery {
        created: to_carol.created,
        updated: to_carol.created,
        ..h.delivery("dave", "carol", "x", &blob, DeliveryState::Delivered)
    };
    let all_in_order = {
        let mut all = vec![
            early.clone(),
            late.clone(),
            via_team.clone(),
            from_carol.clone(),
            to_carol.clone(),
            tie.clone(),
        ];
        all.sort_by_key(|delivery| (delivery.created, delivery.id));
        all
    };
    h.insert_deliveries(&[
        late.clone(),
        to_carol.clone(),
        tie.clone(),
        from_carol.clone(),
        via_team.clone(),
        early.clone(),
    ])
    .await;

    let check = async |query: DeliveryQuery, expect: Vec<&Delivery>| {
        let found = h.store.deliveries(&query).await.unwrap();
        let expect: Vec<Delivery> = expect.into_iter().cloned().collect();
        assert_eq!(found, expect, "{query:?}");
    };
    check(DeliveryQuery::default(), all_in_order.iter().collect()).await;
    // The first of a query is its oldest match; a blob kept in files has no inline content;
    // no match is None.
    let bobs = DeliveryQuery {
        recipient: Some(name("bob")),
        states: DeliveryState::VISIBLE.to_vec(),
        ..DeliveryQuery::default()
    };
    assert_eq!(
        h.store.first_delivery_with_content(&bobs).await.unwrap(),
        Some((early.clone(), None))
    );
    let nobody = DeliveryQuery {
        recipient: Some(name("nobody")),
        ..DeliveryQuery::default()
    };
    assert_eq!(
        h.store.first_delivery_with_content(&nobody).await.unwrap(),
        None
    );
    check(
        DeliveryQuery {
            recipient: Some(name("bob")),
            states: DeliveryState::VISIBLE.to_vec(),
            ..DeliveryQuery::default()
        },
        vec![&early, &late, &from_carol],
    )
    .await;
    check(
        DeliveryQuery {
            sender: Some(name("alice")),
            target: Some(name("bob")),
            ..DeliveryQuery::default()
        },
        vec![&early, &late],
    )
    .await;
    check(
        DeliveryQuery {
            sender: Some(name("alice")),
            target: Some(name("team")),
            ..DeliveryQuery::default()
        },
        vec![&via_team],
    )
    .await;
    check(
        DeliveryQuery {
            name: Some(file("late")),
            ..DeliveryQuery::default()
        },
        vec![&late, &from_carol],
    )
    .await;
    check(
        DeliveryQuery {
            recipient: Some(name("carol")),
            ..DeliveryQuery::default()
        },
        if to_carol.id < tie.id {
            vec![&to_carol, &tie]
        } else {
            vec![&tie, &to_carol]
        },
    )
    .await;
    check(
        DeliveryQuery {
            states: vec![DeliveryState::Recalled, DeliveryState::Stored],
            ..DeliveryQuery::default()
        },
        vec![&via_team, &to_carol],
    )
    .await;
    check(
        DeliveryQuery {
            sender: Some(name("alice")),
            recipient: Some(name("bob")),
            target: Some(name("bob")),
            name: Some(file("early")),
            states: vec![DeliveryState::PickedUp],
            created_before: None,
        },
        vec![&early],
    )
    .await;
    check(
        DeliveryQuery {
            recipient: Some(name("nobody")),
            ..DeliveryQuery::default()
        },
        vec![],
    )
    .await;
}

async fn event_queries(h: &mut Harness<'_>) {
    let mut recorded = Vec::new();
    for (actor, kind, outcome, source) in [
        (
            "alice",
            EventKind::Login,
            Outcome::Ok,
            Some("192.0.2.7:50022"),
        ),
        (
            "mallory",
            EventKind::Login,
            Outcome::Refused,
            Some("[2001:db8::1]:4711"),
        ),
        ("alice", EventKind::Upload, Outcome::Ok, None),
        (
            "alice",
            EventKind::Download,
            Outcome::Failed,
            Some("192.0.2.7:50023"),
        ),
        ("system", EventKind::Sweep, Outcome::Ok, None),
    ] {
        let event = Event {
            actor: actor.to_owned(),
            kind,
            outcome,
            source: source.map(str::to_owned),
            protocol: Protocol::Sftp,
            detail: format!("{kind:?} by {actor}: ünïcödé detail"),
            ..h.event(kind, "/inbox/x")
        };
        h.record(std::slice::from_ref(&event)).await;
        recorded.push(event);
    }
    let [
        alice_login,
        mallory_login,
        alice_upload,
        alice_download,
        sweep,
    ] = <[Event; 5]>::try_from(recorded.clone()).unwrap();

    let check = async |query: EventQuery, expect: Vec<&Event>| {
        let found = h.store.events(&query).await.unwrap();
        let expect: Vec<Event> = expect.into_iter().cloned().collect();
        assert_eq!(found, expect, "{query:?}");
    };
    check(EventQuery::default(), recorded.iter().collect()).await;
    check(
        EventQuery {
            actor: Some("alice".to_owned()),
            ..EventQuery::default()
        },
        vec![&alice_login, &alice_upload, &alice_download],
    )
    .await;
    check(
        EventQuery {
            kind: Some(EventKind::Login),
            ..EventQuery::default()
        },
        vec![&alice_login, &mallory_login],
    )
    .await;
    check(
        EventQuery {
            outcome: Some(Outcome::Ok),
            ..EventQuery::default()
        },
        vec![&alice_login, &alice_upload, &sweep],
    )
    .await;
    // `since` is inclusive.
    check(
        EventQuery {
            since: Some(alice_upload.time),
            ..EventQuery::default()
        },
        vec![&alice_upload, &alice_download, &sweep],
    )
    .await;
    check(
        EventQuery {
            since: Some(alice_upload.time + Duration::microseconds(1)),
            ..EventQuery::default()
        },
        vec![&alice_download, &sweep],
    )
    .await;
    check(
        EventQuery {
            source: Some("192.0.2.7:50022".to_owned()),
            ..EventQuery::default()
        },
        vec![&alice_login],
    )
    .await;
    // An address alone matches every port of it, and only it.
    check(
        EventQuery {
            source: Some("192.0.2.7".to_owned()),
            ..EventQuery::default()
        },
        vec![&alice_login, &alice_download],
    )
    .await;
    check(
        EventQuery {
            source: Some("2001:db8::1".to_owned()),
            ..EventQuery::default()
        },
        vec![&mallory_login],
    )
    .await;
    check(
        EventQuery {
            source: Some("192.0.2.70".to_owned()),
            ..EventQuery::default()
        },
        vec![],
    )
    .await;
    // `until` is exclusive.
    check(
        EventQuery {
            until: Some(alice_upload.time),
            ..EventQuery::default()
        },
        vec![&alice_login, &mallory_login],
    )
    .await;
    check(
        EventQuery {
            since: Some(mallory_login.time),
            until: Some(alice_download.time + Duration::microseconds(1)),
            ..EventQuery::default()
        },
        vec![&mallory_login, &alice_upload, &alice_download],
    )
    .await;
    // `limit` keeps the newest, still oldest first.
    check(
        EventQuery {
            limit: Some(2),
            ..EventQuery::default()
        },
        vec![&alice_download, &sweep],
    )
    .await;
    check(
        EventQuery {
            actor: Some("alice".to_owned()),
            limit: Some(2),
            ..EventQuery::default()
        },
        vec![&alice_upload, &alice_download],
    )
    .await;
    check(
        EventQuery {
            limit: Some(100),
            ..EventQuery::default()
        },
        recorded.iter().collect(),
    )
    .await;
    check(
        EventQuery {
            limit: Some(0),
            ..EventQuery::default()
        },
        vec![],
    )
    .await;
    check(
        EventQuery {
            actor: Some("alice".to_owned()),
            kind: Some(EventKind::Login),
            outcome: Some(Outcome::Refused),
            ..EventQuery::default()
        },
        vec![],
    )
    .await;
}

async fn record_is_all_or_nothing(h: &mut Harness<'_>) {
    // Nothing to record is no change.
    h.record(&[]).await;
    let first = h.event(EventKind::Login, "alice");
    h.record(std::slice::from_ref(&first)).await;
    let batch = [
        h.event(EventKind::Login, "bob"),
        h.event(EventKind::Login, "carol"),
    ];
    h.record(&batch).await;
    // An event id is recorded once; a batch repeating one records none of its events.
    let fresh = h.event(EventKind::Login, "dave");
    h.refused(
        ErrorKind::Conflict,
        h.store.record(&[fresh, first.clone()], Durability::Flush),
    )
    .await;
    // Events of a refused change are not recorded either, even when the change is refused
    // after its events were checked.
    let event = h.admin_event("ghost");
    h.refused(
        ErrorKind::NotFound,
        h.store.delete_account(&name("ghost"), &event),
    )
    .await;
}

async fn audit_records_form_a_chain(h: &mut Harness<'_>) {
    assert_eq!(h.store.audit_head().await.unwrap(), None);
    let empty = h.store.verify_audit(None).await.unwrap();
    assert!(empty.is_intact());
    assert_eq!((empty.checked, empty.head), (0, None));

    let alice = h.client("alice");
    h.insert_account(&alice).await;
    let batch: Vec<Event> = (0..5)
        .map(|i| h.event(EventKind::Login, &format!("try {i}")))
        .collect();
    h.record(&batch).await;
    let sweep = h.event(EventKind::Sweep, "blobs");
    h.store
        .record(std::slice::from_ref(&sweep), Durability::Flush)
        .await
        .unwrap();
    h.expect_events(&[sweep]).await;

    // Pages: seqs 1..=7 in order, each linked to the one before, the first to genesis.
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut after = 0;
    loop {
        let page = h
            .store
            .audit_records(&EventQuery::default(), after, 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = last.seq;
        records.extend(page);
    }
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<u64>>()
    );
    let mut prev = GENESIS_HASH.to_owned();
    for record in &records {
        assert_eq!(record.prev_hash.as_deref(), Some(prev.as_str()));
        let hash = chain_hash(&prev, record.seq, &record.event);
        assert_eq!(record.hash.as_deref(), Some(hash.as_str()));
        prev = hash;
    }
    // Filters apply to pages too.
    let logins = h
        .store
        .audit_records(
            &EventQuery {
                kind: Some(EventKind::Login),
                ..EventQuery::default()
            },
            2,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        logins.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );

    let head = h.store.audit_head().await.unwrap().unwrap();
    assert_eq!((head.seq, head.events), (7, 7));
    assert_eq!(Some(&head.hash), records[6].hash.as_ref());

    // A checkpoint on the chain is found; a wrong hash or a seq past the head is not.
    let at = |seq: usize| Checkpoint {
        seq: seq as u64,
        hash: records[seq - 1].hash.clone().unwrap(),
    };
    let expect = |checkpoint: Checkpoint| async {
        let report = h.store.verify_audit(Some(checkpoint)).await.unwrap();
        assert!(report.broken.is_none());
        report.checkpoint.unwrap().1
    };
    assert_eq!(expect(at(4)).await, CheckpointStatus::Found);
    assert_eq!(expect(at(7)).await, CheckpointStatus::Found);
    let rewritten = Checkpoint {
        hash: records[2].hash.clone().unwrap(),
        ..at(4)
    };
    assert_eq!(expect(rewritten).await, CheckpointStatus::Mismatch);
    let future = Checkpoint { seq: 8, ..at(7) };
    assert_eq!(expect(future).await, CheckpointStatus::Missing);

    // A refused change adds nothing to the chain (the harness checks the head is unchanged).
    h.refused(
        ErrorKind::Conflict,
        h.store.record(&[batch[0].clone()], Durability::Flush),
    )
    .await;
    let after_refusal = h.store.verify_audit(None).await.unwrap();
    assert!(after_refusal.is_intact());
    assert_eq!(after_refusal.checked, 7);
}

// ---------------------------------------------------------------------------------------------
// SQLite only

#[tokio::test]
async fn verify_names_the_first_tampered_event() {
    // The end-to-end tests tamper through the binary; this checks the store's own report on
    // the two simplest cases, straight on the file.
    for (tamper, seq, problem) in [
        (
            "UPDATE events SET detail = 'nothing to see' WHERE seq = 3",
            3,
            ChainProblem::ContentChanged,
        ),
        (
            "DELETE FROM events WHERE seq = 2",
            3,
            ChainProblem::PredecessorMissing,
        ),
        (
            "UPDATE events SET hash = NULL, prev_hash = NULL WHERE seq = 4",
            4,
            ChainProblem::Unhashed,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let mut h = Harness::new(&store);
        let events: Vec<Event> = (0..5)
            .map(|i| h.event(EventKind::Login, &format!("try {i}")))
            .collect();
        h.record(&events).await;
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query(tamper).execute(&pool).await.unwrap();
        pool.close().await;
        let report = store.verify_audit(None).await.unwrap();
        assert!(!report.is_intact(), "{tamper}");
        let broken = report.broken.unwrap();
        assert_eq!((broken.seq, broken.problem), (seq, problem), "{tamper}");
        let intact_before = if tamper.starts_with("DELETE") {
            1
        } else {
            seq - 1
        };
        assert_eq!(report.checked, intact_before, "{tamper}");
        store.close().await;
    }
}

#[tokio::test]
async fn the_event_tap_gets_committed_events_only() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (sender, mut receiver) = tokio::sync::mpsc::channel(3);
    assert!(store.set_event_tap(sender.clone()));
    assert!(!store.set_event_tap(sender), "a second tap is refused");
    let mut h = Harness::new(&store);
    let first = h.event(EventKind::Login, "a");
    let second = h.event(EventKind::Login, "b");
    store
        .record(std::slice::from_ref(&first), Durability::Flush)
        .await
        .unwrap();
    store
        .record(std::slice::from_ref(&second), Durability::Relaxed)
        .await
        .unwrap();
    // A refused change hands nothing over.
    let fresh = h.event(EventKind::Login, "c");
    store
        .record(&[fresh, first.clone()], Durability::Flush)
        .await
        .unwrap_err();
    let got = [receiver.try_recv().unwrap(), receiver.try_recv().unwrap()];
    assert!(receiver.try_recv().is_err(), "only committed events");
    assert_eq!((got[0].seq, &got[0].event), (1, &first));
    assert_eq!((got[1].seq, &got[1].event), (2, &second));
    assert_eq!(got[1].prev_hash, got[0].hash);
    // A full channel never stalls a commit: the overflow is dropped and counted.
    let flood: Vec<Event> = (0..5)
        .map(|i| h.event(EventKind::Login, &i.to_string()))
        .collect();
    store.record(&flood, Durability::Flush).await.unwrap();
    assert_eq!(store.dropped_events(), 2);
    assert_eq!(store.events(&EventQuery::default()).await.unwrap().len(), 7);
}

#[tokio::test]
async fn file_store_is_durable_by_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("meta.db"))
        .await
        .unwrap();
    let settings = store.settings().await.unwrap();
    assert_eq!(settings.journal_mode, "wal");
    assert_eq!(settings.synchronous, 2, "synchronous must be FULL");
    assert!(settings.foreign_keys);
    assert_eq!(settings.busy_timeout_ms, 10_000);
    // Every connection of the pool has the same settings, not only the first.
    let (a, b, c) = tokio::join!(store.settings(), store.settings(), store.settings());
    for other in [a, b, c] {
        assert_eq!(other.unwrap(), settings);
    }

    let memory = SqliteStore::open_in_memory().await.unwrap();
    let settings = memory.settings().await.unwrap();
    assert_eq!(settings.synchronous, 2);
    assert!(settings.foreign_keys);
}

#[cfg(unix)]
#[tokio::test]
async fn file_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let _store = SqliteStore::open(&path).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");
}

#[tokio::test]
async fn reopening_a_file_store_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let before = {
        let mut h = Harness::new(&store);
        let mut alice = h.client("alice");
        alice.keys = vec![ed25519_key()];
        h.insert_account(&alice).await;
        let bob = h.client("bob");
        h.insert_account(&bob).await;
        h.insert_group(&group("team", &["alice", "bob"])).await;
        h.put_route(route("alice", "team", RouteEffect::Allow))
            .await;
        let delivery = h.delivery(
            "alice",
            "bob",
            "kept.txt",
            &BlobId::new(),
            DeliveryState::Delivered,
        );
        h.insert_deliveries(&[delivery]).await;
        h.snapshot().await
    };
    store.close().await;
    drop(store);

    let reopened = SqliteStore::open(&path).await.unwrap();
    let h = Harness::new(&reopened);
    assert_eq!(h.snapshot().await, before);
    // Two accounts, a group, a route, an upload and its delivery.
    assert_eq!(before.events.len(), 6);
}

#[tokio::test]
async fn concurrent_writes_share_commits_and_fail_alone() {
    // Group commit: many writers at once, some colliding on a name. Each gets its own answer;
    // a collision fails only its own delivery; every success is there with its events.
    let temp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        mailroom_meta::SqliteStore::open(&temp.path().join("meta.db"))
            .await
            .unwrap(),
    );
    let blob = BlobId::new();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = store.clone();
        let blob = blob.clone();
        tasks.push(tokio::spawn(async move {
            // Every third writer reuses the name of the writer before it.
            let n = if i % 3 == 2 { i - 1 } else { i };
            let now = OffsetDateTime::now_utc();
            let delivery = Delivery {
                id: DeliveryId::new(),
                batch_id: DeliveryId::new(),
                sender: name("alice"),
                recipient: name("bob"),
                target: name("bob"),
                name: file(&format!("f{n}.txt")),
                size: 1,
                sha256: "00".repeat(32),
                blob_id: blob,
                state: DeliveryState::Delivered,
                created: now,
                updated: now,
            };
            let event = Event {
                id: uuid::Uuid::now_v7(),
                time: now,
                kind: EventKind::DeliveryStored,
                actor: "alice".into(),
                source: None,
                protocol: Protocol::Sftp,
                object: delivery.id.to_string(),
                outcome: Outcome::Ok,
                detail: String::new(),
            };
            let result = store
                .insert_deliveries(
                    std::slice::from_ref(&delivery),
                    std::slice::from_ref(&event),
                    None,
                )
                .await;
            (i, n, result.map_err(|e| e.kind()))
        }));
    }
    let mut ok = 0;
    let mut names = std::collections::HashSet::new();
    for task in tasks {
        let (i, n, result) = task.await.unwrap();
        match result {
            Ok(()) => {
                ok += 1;
                assert!(names.insert(n), "f{n} stored twice");
            }
            Err(kind) => {
                assert_eq!(kind, ErrorKind::Conflict, "writer {i}");
                assert!(i % 3 == 2, "writer {i} had a free name");
            }
        }
    }
    assert_eq!(ok, 40);
    let stored = store.deliveries(&DeliveryQuery::default()).await.unwrap();
    assert_eq!(stored.len(), 40);
    let events = store.events(&EventQuery::default()).await.unwrap();
    assert_eq!(
        events.len(),
        40,
        "events of failed writers must not be recorded"
    );
    // Savepoints rolled back between successes leave no gap in the chain.
    let report = store.verify_audit(None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, 40);
}

#[tokio::test]
async fn two_processes_share_one_file() {
    // The server and the admin CLI open the same file; writes from both serialise, and the
    // shared namespace holds across them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let server = SqliteStore::open(&path).await.unwrap();
    let cli = SqliteStore::open(&path).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 {
            server.clone()
        } else {
            cli.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut h = Harness::new(&store);
            // Every name is wanted twice, once by each side.
            let account = h.client(&format!("user{}", i / 2));
            let event = h.admin_event(account.name.as_str());
            store.insert_account(&account, &event).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(error) => assert_eq!(error.kind(), ErrorKind::Conflict, "{error}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(cli.accounts().await.unwrap().len(), 10);
    assert_eq!(
        server.events(&EventQuery::default()).await.unwrap().len(),
        10
    );
    // Each writer read the head under the write lock: one chain, whichever side wrote.
    let report = cli.verify_audit(None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, 10);
}

// ---------------------------------------------------------------------------------------------
// The harness

/// Everything a store holds, for "nothing changed" checks.
#[derive(Debug, PartialEq)]
struct Snapshot {
    accounts: Vec<Account>,
    groups: Vec<Group>,
    routes: Vec<Route>,
    deliveries: Vec<Delivery>,
    live_blobs: HashSet<BlobId>,
    bans: Vec<Ban>,
    events: Vec<Event>,
    head: Option<ChainHead>,
}

/// A store, a clock that moves a little at every reading, and the count of events seen so far.
struct Harness<'a> {
    store: &'a dyn MetaStore,
    now: OffsetDateTime,
    events_seen: usize,
}

impl<'a> Harness<'a> {
    fn new(store: &'a dyn MetaStore) -> Self {
        Harness {
            store,
            // Microseconds: the finest precision every backend keeps.
            now: datetime!(2026-03-01 12:00:00.123456 UTC),
            events_seen: 0,
        }
    }

    fn tick(&mut self) -> OffsetDateTime {
        self.now += Duration::microseconds(1_001);
        self.now
    }

    fn event(&mut self, kind: EventKind, object: &str) -> Event {
        Event {
            id: Uuid::now_v7(),
            time: self.tick(),
            kind,
            actor: "cli:root".to_owned(),
            source: None,
            protocol: Protocol::Cli,
            object: object.to_owned(),
            outcome: Outcome::Ok,
            detail: String::new(),
        }
    }

    fn admin_event(&mut self, object: &str) -> Event {
        self.event(EventKind::Admin, object)
    }

    fn client(&mut self, account: &str) -> Account {
        Account {
            name: name(account),
            kind: AccountKind::Client,
            disabled: false,
            password_hash: None,
            keys: Vec::new(),
            created: self.tick(),
            access: AccessPolicy::default(),
            totp: None,
            token_epoch: 0,
        }
    }

    fn admin(&mut self, account: &str) -> Account {
        Account {
            kind: AccountKind::Admin,
            disabled: true,
            ..self.client(account)
        }
    }

    fn delivery(
        &mut self,
        sender: &str,
        recipient: &str,
        file_name: &str,
        blob: &BlobId,
        state: DeliveryState,
    ) -> Delivery {
        let created = self.tick();
        Delivery {
            id: DeliveryId::new(),
            batch_id: DeliveryId::new(),
            sender: name(sender),
            recipient: name(recipient),
            target: name(recipient),
            name: file(file_name),
            size: 1 << 40,
            sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
            blob_id: blob.clone(),
            state,
            created,
            updated: created,
        }
    }

    async fn snapshot(&self) -> Snapshot {
        Snapshot {
            accounts: self.store.accounts().await.unwrap(),
            groups: self.store.groups().await.unwrap(),
            routes: self.store.routes().await.unwrap(),
            deliveries: self
                .store
                .deliveries(&DeliveryQuery::default())
                .await
                .unwrap(),
            live_blobs: self.store.live_blobs().await.unwrap(),
            bans: self.store.bans().await.unwrap(),
            events: self.store.events(&EventQuery::default()).await.unwrap(),
            head: self.store.audit_head().await.unwrap(),
        }
    }

    /// Checks that the events recorded since the last check are exactly `expect`, in order.
    async fn expect_events(&mut self, expect: &[Event]) {
        let all = self.store.events(&EventQuery::default()).await.unwrap();
        assert!(all.len() >= self.events_seen, "events disappeared");
        assert_eq!(
            &all[self.events_seen..],
            expect,
            "events recorded by the last change"
        );
        self.events_seen = all.len();
        // Whatever path wrote them, the events form one intact chain ending at the head.
        let report = self.store.verify_audit(None).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.checked, all.len() as u64);
        assert_eq!(report.head, self.store.audit_head().await.unwrap());
    }

    /// Runs a call that must fail with `kind`, and checks that nothing changed.
    async fn refused<T: std::fmt::Debug>(
        &mut self,
        kind: ErrorKind,
        call: impl Future<Output = Result<T>>,
    ) -> CoreError {
        let before = self.snapshot().await;
        let error = call.await.expect_err("the call should have been refused");
        assert_eq!(error.kind(), kind, "{error}");
        assert!(!error.message().is_empty());
        assert!(!error.message().contains("SELECT"), "{error}");
        assert_eq!(
            self.snapshot().await,
            before,
            "a refused call changed the store"
        );
        error
    }

    async fn insert_account(&mut self, account: &Account) {
        let event = self.admin_event(account.name.as_str());
        self.store.insert_account(account, &event).await.unwrap();
        self.expect_events(&[event]).await;
    }

    async fn update_account(&mut self, account: &Account) {
        let event = self.admin_event(account.name.as_str());
        self.store.update_account(account, &event).await.unwrap();
        self.expect_events(&[event]).await;
    }

    async fn delete_account(&mut self, account: &str) {
        let event = self.admin_event(account);
        self.store
            .delete_account(&name(account), &event)
            .await
            .unwrap();
        self.expect_events(&[event]).await;
    }

    async fn insert_group(&mut self, group: &Group) {
        let event = self.admin_event(group.name.as_str());
        self.store.insert_group(group, &event).await.unwrap();
        self.expect_events(&[event]).await;
    }

    async fn update_group(&mut self, group: &Group) {
        let event = self.admin_event(group.name.as_str());
        self.store.update_group(group, &event).await.unwrap();
        self.expect_events(&[event]).await;
    }

    async fn delete_group(&mut self, group: &str) {
        let event = self.admin_event(group);
        self.store.delete_group(&name(group), &event).await.unwrap();
        self.expect_events(&[event]).await;
    }

    async fn put_route(&mut self, route: Route) {
        let event = self.admin_event(&format!("{} -> {}", route.from, route.to));
        self.store.put_route(&route, &event).await.unwrap();
        self.expect_events(&[event]).await;
    }

    async fn delete_route(&mut self, from: &str, to: &str) {
        let event = self.admin_event(&format!("{from} -> {to}"));
        self.store
            .delete_route(&name(from), &name(to), &event)
            .await
            .unwrap();
        self.expect_events(&[event]).await;
    }

    /// Inserts deliveries with an upload event and one stored event each.
    async fn insert_deliveries(&mut self, deliveries: &[Delivery]) {
        let mut events = vec![self.event(EventKind::Upload, "/outbox")];
        for delivery in deliveries {
            events.push(self.event(EventKind::DeliveryStored, &delivery.id.to_string()));
        }
        self.store
            .insert_deliveries(deliveries, &events, None)
            .await
            .unwrap();
        self.expect_events(&events).await;
    }

    /// Moves a delivery that must move, returning the time of the move.
    async fn transition(
        &mut self,
        delivery: &Delivery,
        from: &[DeliveryState],
        to: DeliveryState,
    ) -> OffsetDateTime {
        let event = self.event(EventKind::DeliveryDelivered, &delivery.id.to_string());
        let at = event.time;
        let moved = self
            .store
            .transition(
                &delivery.id,
                from,
                to,
                std::slice::from_ref(&event),
                Durability::Flush,
            )
            .await
            .unwrap();
        assert!(moved, "{} should have moved to {to:?}", delivery.id);
        self.expect_events(&[event]).await;
        at
    }

    async fn rename(&mut self, delivery: &Delivery, new_name: &str) {
        let event = self.event(EventKind::DeliveryRenamed, &delivery.id.to_string());
        self.store
            .rename_delivery(&delivery.id, &file(new_name), &event)
            .await
            .unwrap();
        self.expect_events(&[event]).await;
    }

    async fn record(&mut self, events: &[Event]) {
        // Relaxed here; the refusals of the suite go through the flushed path.
        self.store
            .record(events, Durability::Relaxed)
            .await
            .unwrap();
        self.expect_events(events).await;
    }
}

fn name(text: &str) -> AccountName {
    AccountName::parse(text).unwrap()
}

fn file(text: &str) -> FileName {
    FileName::parse(text).unwrap()
}

fn group(group: &str, members: &[&str]) -> Group {
    Group {
        name: name(group),
        members: members.iter().map(|member| name(member)).collect(),
    }
}

fn route(from: &str, to: &str, effect: RouteEffect) -> Route {
    Route {
        from: name(from),
        to: name(to),
        effect,
    }
}

fn ed25519_key() -> AuthorizedKey {
    AuthorizedKey::parse(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop",
    )
    .unwrap()
}

/// A key whose blob holds every awkward byte (NUL, 0xFF) so BLOB storage is exercised.
fn odd_key(seed: u8) -> AuthorizedKey {
    AuthorizedKey {
        algorithm: "ssh-rsa".to_owned(),
        blob: vec![0, 0xff, seed, 0, 0x80, 0x7f, seed.wrapping_mul(31)],
        comment: format!("key {seed} with spaces and ü"),
    }
}
