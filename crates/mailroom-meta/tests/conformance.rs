//! The `MetaStore` conformance suite: one set of scenarios written against `&dyn MetaStore` and
//! its units of work, run on every backend: the in-memory test bed the Hub's own tests use
//! (`mailroom_core::testing::MemoryMeta`), SQLite in memory, SQLite in a file, and PostgreSQL
//! (`PgStore`, on a database of its own created on the server `MAILROOM_TEST_PG_URL` names, and
//! dropped afterwards; without the variable the PostgreSQL store is skipped, except in CI, where
//! its absence fails the suite). SQLite is the reference: where another backend differs, that
//! backend is wrong.
//!
//! The scenarios drive the store the way the Hub does: one unit of work per operation, the
//! change and the audit events that describe it in the same unit. After each change they check
//! that exactly the change's events were recorded and that the trail is still one intact hash
//! chain (walked in small pages with `ChainVerifier`, as the Hub does); after each refusal, the
//! error kind and that nothing at all changed (a snapshot of everything the store can list,
//! the policy version included), although the refused unit had recorded an event before its
//! change failed.
//!
//! Besides the tables (accounts and their field-level updates, groups and members, routes,
//! deliveries, inline blobs, one-time codes, bans, tokens, events and the chain), the port's
//! own promises are scenarios too: a failed or panicking unit changes nothing; a write in a
//! read unit is refused as Internal and changes nothing; a refused call inside a unit that goes
//! on leaves nothing of itself; updates write only the fields they set, so a change made
//! meanwhile survives; the policy version moves in the same transaction as every change of
//! accounts, groups, members and routes, and for nothing else; `DeliveryQuery::limit` keeps
//! the oldest; `stats()` counts every unit. Times carry microseconds, the finest precision
//! every backend keeps.
//!
//! The last tests are SQLite-only: tampering found by the chain walk, the event tap, group
//! commit under many concurrent units, durability settings, file permissions, reopening a
//! file, and two stores (two processes) on one file; then PostgreSQL-only: two nodes writing at
//! once keep one chain, relaxed units commit without waiting for the log, a killed connection
//! is replaced, a changed or newer migration is refused, the event tap, and the round trips of
//! a unit.

// Tests may unwrap (CONTRIBUTING.md): a failed unwrap is a failed check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use mailroom_core::testing::MemoryMeta;
use mailroom_core::{
    AccessPolicy, Account, AccountKind, AccountName, AccountUpdate, AuthorizedKey, Ban, BanSubject,
    BlobId, CoreError, Delivery, DeliveryId, DeliveryOrder, DeliveryQuery, DeliverySort,
    DeliveryState, Durability, E2eKey, ErrorKind, Event, EventKind, EventQuery, Factor, FactorSet,
    FileName, Group, Handler, InboxUsage, Job, JobCounts, JobQuery, JobState, Limits, MetaStore,
    MetaStoreExt, Notices, NotifyMode, Outcome, Protocol, Result, Rights, Route, RouteEffect,
    Scope, Secret, SortDirection, TokenKind, TokenRecord, TotpEnrolment, Tx,
};
use mailroom_core::{ApiKeyRecord, DataKeyRecord, HUB_KEY_OWNER, KeyScopes, ResumableRecord};
use mailroom_core::{
    AuditRecord, ChainHead, ChainProblem, ChainReport, ChainVerifier, Checkpoint, CheckpointStatus,
    GENESIS_HASH, chain_hash,
};
use mailroom_core::{LiveSessionRecord, NodeId, NodeInfo, NodeRecord};
use mailroom_meta::{MetaError, PgOptions, PgStore, SqliteStore};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A store under test; `_dir` keeps a file store's folder alive, `_database` a PostgreSQL
/// store's database (dropped after the store, being declared after it).
struct Backend {
    name: &'static str,
    store: Box<dyn MetaStore>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<PgDatabase>,
}

/// A fresh, empty store of every kind.
async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let file = SqliteStore::open(&dir.path().join("meta.db"))
        .await
        .unwrap();
    let mut backends = vec![
        Backend {
            name: "memory",
            store: Box::new(MemoryMeta::new()),
            _dir: None,
            _database: None,
        },
        Backend {
            name: "sqlite-memory",
            store: Box::new(SqliteStore::open_in_memory().await.unwrap()),
            _dir: None,
            _database: None,
        },
        Backend {
            name: "sqlite-file",
            store: Box::new(file),
            _dir: Some(dir),
            _database: None,
        },
    ];
    if let Some(server) = pg_server() {
        let database = PgDatabase::create(&server).await;
        backends.push(Backend {
            name: "postgres",
            // More than one connection, so reads after a write may run on another.
            store: Box::new(database.store(3).await),
            _dir: None,
            _database: Some(database),
        });
    }
    backends
}

/// The variable naming the PostgreSQL server to test on: a URL of a role that may create
/// databases, such as `postgres://mailroom@127.0.0.1:55432/postgres`.
const PG_SERVER: &str = "MAILROOM_TEST_PG_URL";

/// The PostgreSQL server to test on, if any. In CI (`CI` set) its absence fails the test, so
/// the PostgreSQL store cannot go untested by accident; elsewhere it is skipped.
fn pg_server() -> Option<String> {
    match std::env::var(PG_SERVER) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "CI must test the PostgreSQL store: set {PG_SERVER} to the URL of a role that may CREATE DATABASE"
        ),
        _ => {
            eprintln!("{PG_SERVER} is not set: the PostgreSQL store is not tested");
            None
        }
    }
}

/// An empty database of its own on the test server, `mr_<uuid>`, dropped (best effort, its
/// connections terminated) when this goes.
struct PgDatabase {
    server: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(server: &str) -> PgDatabase {
        let name = format!("mr_{}", Uuid::new_v4().simple());
        let (on, created) = (server.to_owned(), name.clone());
        // The synchronous driver blocks on a runtime of its own: never on the test's.
        tokio::task::spawn_blocking(move || {
            let mut admin = postgres::Client::connect(&on, postgres::NoTls).unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {created}"))
                .unwrap();
        })
        .await
        .unwrap();
        PgDatabase {
            url: with_database(server, &name),
            server: server.to_owned(),
            name,
        }
    }

    /// A store (a node) on this database.
    async fn store(&self, connections: usize) -> PgStore {
        PgStore::connect(self.options(connections)).await.unwrap()
    }

    fn options(&self, connections: usize) -> PgOptions {
        PgOptions {
            url: self.url.clone(),
            ca_file: None,
            connections,
        }
    }

    /// Runs `sql` on this database from a client of its own (another process, as it were), and
    /// returns the first column of each row as text.
    async fn admin(&self, sql: &'static str) -> Vec<String> {
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            admin
                .simple_query(sql)
                .unwrap()
                .into_iter()
                .filter_map(|message| match message {
                    postgres::SimpleQueryMessage::Row(row) => {
                        Some(row.get(0).unwrap_or_default().to_owned())
                    }
                    _ => None,
                })
                .collect()
        })
        .await
        .unwrap()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // On a thread of its own: the driver must not block the test's runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(mut admin) = postgres::Client::connect(&server, postgres::NoTls) {
                let dropped =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                if let Err(error) = dropped {
                    eprintln!("could not drop the test database {name}: {error}");
                }
            }
        })
        .join();
    }
}

/// `server` with its database replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[start..].find('/') {
        Some(slash) => &base[..start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
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
    short_reads_see_commits_and_refuse_writes,
    accounts_round_trip_with_keys,
    e2e_keys_round_trip_and_update_alone,
    accounts_and_groups_share_one_namespace,
    update_account_writes_only_the_fields_it_sets,
    field_level_updates_keep_changes_made_meanwhile,
    token_epoch_moves_on_by_one_per_revocation,
    delete_account_cascades,
    delete_account_refused_while_deliveries_are_live,
    groups_and_members,
    delete_group_cascades,
    routes_put_replace_delete,
    routes_keep_whether_they_require_e2e,
    insert_deliveries_is_all_or_nothing,
    deliveries_keep_their_e2e_mark,
    live_names_are_unique_until_terminal,
    transition_is_conditional,
    rename_delivery,
    live_blobs_and_blob_in_use,
    inline_blobs_live_with_their_deliveries,
    delivery_queries,
    delivery_query_limit_keeps_the_oldest,
    delivery_listings_sort_filter_and_page,
    event_queries,
    record_is_all_or_nothing,
    access_policy_and_totp_round_trip,
    totp_steps_and_recovery_codes_work_once,
    bans_put_replace_delete,
    offences_add_score_forget_and_prune,
    inbox_usage_counts_live_deliveries,
    audit_records_form_a_chain,
    tokens_store_take_and_expire,
    api_keys_store_list_touch_and_delete,
    data_keys_insert_once_per_owner_and_rewrap,
    resumable_uploads_are_recorded_read_and_forgotten,
    a_failed_unit_changes_nothing,
    a_panicking_unit_is_internal_and_changes_nothing,
    writes_in_a_read_unit_are_refused,
    refused_calls_leave_nothing_in_a_unit_that_goes_on,
    policy_version_moves_with_policy_changes_only,
    stats_count_every_unit,
    jobs_queue_lease_and_finish,
    nodes_register_beat_and_leave,
    live_sessions_count_close_and_end,
);

// ---------------------------------------------------------------------------------------------
// Accounts

async fn accounts_round_trip_with_keys(h: &mut Harness<'_>) {
    let bob = h.admin("bob");
    let mut alice = h.client("alice");
    alice.keys = vec![ed25519_key(), odd_key(1)];
    alice.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned());

    h.insert_account(&bob).await;
    h.insert_account(&alice).await;

    assert_eq!(h.account("alice").await, Some(alice.clone()));
    assert_eq!(h.account("bob").await, Some(bob.clone()));
    assert_eq!(h.account("carol").await, None);
    // By name, whatever the insertion order.
    assert_eq!(h.accounts().await, vec![alice, bob]);

    // A unit reads its own writes before they commit.
    let carol = h.client("carol");
    let event = h.admin_event("carol");
    let inserted = carol.clone();
    let seen = h
        .change(vec![event], move |tx| {
            tx.insert_account(&inserted)?;
            Ok((tx.account(&name("carol"))?, tx.accounts()?.len()))
        })
        .await;
    assert_eq!(seen, (Some(carol), 3));
}

async fn e2e_keys_round_trip_and_update_alone(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.keys = vec![ed25519_key()];
    alice.e2e_keys = vec![e2e_key("laptop", h.tick())];
    alice.totp = Some(enrolment("JBSWY3DPEHPK3PXP", &["aa"]));
    h.insert_account(&alice).await;
    let bob = h.client("bob");
    h.insert_account(&bob).await;
    assert_eq!(h.account("alice").await, Some(alice.clone()));
    assert_eq!(h.accounts().await, vec![alice.clone(), bob.clone()]);
    assert!(h.account("bob").await.unwrap().e2e_keys.is_empty());

    // The update writes the list, in its order, and nothing else: not the SSH keys, not the
    // enrolment, not another account.
    let keys = vec![
        e2e_key("", h.tick()),
        e2e_key("desk \"2\" ü ✓", h.tick()),
        alice.e2e_keys[0].clone(),
    ];
    h.update_account(
        "alice",
        AccountUpdate {
            e2e_keys: Some(keys.clone()),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.e2e_keys = keys;
    assert_eq!(h.account("alice").await, Some(alice.clone()));
    assert_eq!(h.account("bob").await, Some(bob.clone()));

    // Updates of other fields leave the list as it is, and the SSH keys are their own.
    h.update_account(
        "alice",
        AccountUpdate {
            keys: Some(Vec::new()),
            disabled: Some(true),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.keys = Vec::new();
    alice.disabled = true;
    assert_eq!(h.account("alice").await, Some(alice.clone()));

    // Emptied.
    h.update_account(
        "alice",
        AccountUpdate {
            e2e_keys: Some(Vec::new()),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.e2e_keys = Vec::new();
    assert_eq!(h.account("alice").await, Some(alice));

    // Only accounts have them.
    h.refused(ErrorKind::NotFound, |tx| {
        tx.update_account(
            &name("ghost"),
            &AccountUpdate {
                e2e_keys: Some(Vec::new()),
                ..AccountUpdate::default()
            },
        )
    })
    .await;
}

async fn accounts_and_groups_share_one_namespace(h: &mut Harness<'_>) {
    let alice = h.client("alice");
    h.insert_account(&alice).await;
    let team = group("team", &[]);
    h.insert_group(&team).await;

    let taken_by_group = h.client("team");
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.insert_account(&taken_by_group)
    })
    .await;
    h.refused(ErrorKind::Conflict, |tx| {
        tx.insert_group(&group("alice", &[]))
    })
    .await;
    let again = alice.clone();
    h.refused(ErrorKind::Conflict, move |tx| tx.insert_account(&again))
        .await;
    let again = team.clone();
    h.refused(ErrorKind::Conflict, move |tx| tx.insert_group(&again))
        .await;
    // A name taken earlier in the same unit is taken too.
    let dave = h.client("dave");
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.insert_account(&dave)?;
        tx.insert_group(&group("dave", &[]))
    })
    .await;

    // Deleting frees the name for either kind.
    h.delete_account("alice").await;
    h.insert_group(&group("alice", &[])).await;
    h.delete_group("team").await;
    let team_account = h.client("team");
    h.insert_account(&team_account).await;
    assert_eq!(h.accounts().await, vec![team_account]);
    assert_eq!(h.groups().await, vec![group("alice", &[])]);
}

async fn update_account_writes_only_the_fields_it_sets(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.keys = vec![odd_key(1), odd_key(2), odd_key(3)];
    alice.password_hash = Some("$argon2id$old".to_owned());
    alice.access = restricted_access();
    alice.totp = Some(enrolment("JBSWY3DPEHPK3PXP", &["aa", "bb"]));
    h.insert_account(&alice).await;
    // The copy an earlier unit read; the update of `disabled` below must not write it back.
    let stale = alice.clone();

    // One field at a time: the stored account is the one before with that field changed.
    let keys = vec![odd_key(3), ed25519_key()];
    h.update_account(
        "alice",
        AccountUpdate {
            keys: Some(keys.clone()),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.keys = keys;
    assert_eq!(h.account("alice").await, Some(alice.clone()));

    h.update_account(
        "alice",
        AccountUpdate {
            password_hash: Some(None),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.password_hash = None;
    assert_eq!(h.account("alice").await, Some(alice.clone()));

    h.update_account(
        "alice",
        AccountUpdate {
            password_hash: Some(Some("$argon2id$new".to_owned())),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.password_hash = Some("$argon2id$new".to_owned());
    assert_eq!(h.account("alice").await, Some(alice.clone()));

    h.update_account(
        "alice",
        AccountUpdate {
            access: Some(AccessPolicy::default()),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.access = AccessPolicy::default();
    assert_eq!(h.account("alice").await, Some(alice.clone()));

    // A new enrolment starts with no used step, whatever the update carried.
    let mut fresh = enrolment("KRSXG5CTMVRXEZLU", &["cc"]);
    fresh.last_step = Some(77);
    h.update_account(
        "alice",
        AccountUpdate {
            totp: Some(Some(fresh.clone())),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.totp = Some(TotpEnrolment {
        last_step: None,
        ..fresh
    });
    assert_eq!(h.account("alice").await, Some(alice.clone()));

    h.update_account(
        "alice",
        AccountUpdate {
            totp: Some(None),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.totp = None;
    assert_eq!(h.account("alice").await, Some(alice.clone()));

    // Disabling after all of that rewrites none of it: not the stale copy's hash, access,
    // keys or enrolment.
    h.update_account(
        "alice",
        AccountUpdate {
            disabled: Some(true),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.disabled = true;
    let stored = h.account("alice").await.unwrap();
    assert_eq!(stored, alice);
    assert_ne!(stored.password_hash, stale.password_hash);
    assert_ne!(stored.access, stale.access);
    assert_ne!(stored.keys, stale.keys);
    assert_ne!(stored.totp, stale.totp);

    // An empty update changes nothing (its unit still records its event).
    h.update_account("alice", AccountUpdate::default()).await;
    assert_eq!(h.account("alice").await, Some(alice.clone()));

    // Several fields at once.
    h.update_account(
        "alice",
        AccountUpdate {
            disabled: Some(false),
            keys: Some(Vec::new()),
            revoke_tokens: true,
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.disabled = false;
    alice.keys = Vec::new();
    alice.token_epoch += 1;
    assert_eq!(h.account("alice").await, Some(alice));

    // Only accounts are updated: not a missing name, not a group.
    h.insert_group(&group("team", &[])).await;
    for who in ["ghost", "team"] {
        h.refused(ErrorKind::NotFound, move |tx| {
            tx.update_account(
                &name(who),
                &AccountUpdate {
                    disabled: Some(true),
                    ..AccountUpdate::default()
                },
            )
        })
        .await;
    }
}

async fn field_level_updates_keep_changes_made_meanwhile(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.password_hash = Some("$argon2id$old".to_owned());
    alice.keys = vec![ed25519_key()];
    alice.totp = Some(enrolment("JBSWY3DPEHPK3PXP", &["aa", "bb"]));
    h.insert_account(&alice).await;

    // Unit A reads the account (a password change prepares its update from it)...
    let read_by_a = h.account("alice").await.unwrap();
    assert!(!read_by_a.disabled);
    // ...unit B disables it meanwhile, revoking its tokens...
    h.update_account(
        "alice",
        AccountUpdate {
            disabled: Some(true),
            revoke_tokens: true,
            ..AccountUpdate::default()
        },
    )
    .await;
    // ...then A's update lands; it sets only the password hash, so B's change stays.
    h.update_account(
        "alice",
        AccountUpdate {
            password_hash: Some(Some("$argon2id$new".to_owned())),
            ..AccountUpdate::default()
        },
    )
    .await;
    let stored = h.account("alice").await.unwrap();
    assert!(stored.disabled, "a concurrent disable was undone");
    assert_eq!(
        stored,
        Account {
            disabled: true,
            password_hash: Some("$argon2id$new".to_owned()),
            token_epoch: 1,
            ..read_by_a.clone()
        }
    );

    // A recovery code and a TOTP step spent after A read the account stay spent.
    assert!(h.use_recovery_code("alice", &code("aa")).await);
    assert!(h.use_totp_step("alice", 500).await);
    h.update_account(
        "alice",
        AccountUpdate {
            password_hash: Some(Some("$argon2id$newer".to_owned())),
            ..AccountUpdate::default()
        },
    )
    .await;
    let totp = h.account("alice").await.unwrap().totp.unwrap();
    assert_eq!(totp.recovery, vec![code("bb")]);
    assert_eq!(totp.last_step, Some(500));
    assert!(!h.use_recovery_code("alice", &code("aa")).await);
    assert!(!h.use_totp_step("alice", 500).await);
    // Neither did any of this touch the keys or the access policy A read.
    let stored = h.account("alice").await.unwrap();
    assert_eq!(
        (stored.keys, stored.access),
        (read_by_a.keys, read_by_a.access)
    );
}

async fn token_epoch_moves_on_by_one_per_revocation(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.token_epoch = 5;
    h.insert_account(&alice).await;
    assert_eq!(h.account("alice").await.unwrap().token_epoch, 5);

    let revoke = || AccountUpdate {
        revoke_tokens: true,
        ..AccountUpdate::default()
    };
    h.update_account("alice", revoke()).await;
    assert_eq!(h.account("alice").await.unwrap().token_epoch, 6);
    h.update_account("alice", revoke()).await;
    assert_eq!(h.account("alice").await.unwrap().token_epoch, 7);

    // Other changes leave the generation alone.
    h.update_account(
        "alice",
        AccountUpdate {
            disabled: Some(true),
            password_hash: Some(None),
            access: Some(restricted_access()),
            ..AccountUpdate::default()
        },
    )
    .await;
    assert_eq!(h.account("alice").await.unwrap().token_epoch, 7);

    // Two revocations in one unit are two generations; it only ever moves forward.
    let event = h.admin_event("alice");
    h.change(vec![event], move |tx| {
        tx.update_account(&name("alice"), &revoke())?;
        tx.update_account(&name("alice"), &revoke())
    })
    .await;
    assert_eq!(h.account("alice").await.unwrap().token_epoch, 9);
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

    assert_eq!(h.account("alice").await, None);
    assert_eq!(h.accounts().await, vec![bob]);
    assert_eq!(h.group("team").await, Some(group("team", &["bob"])));
    assert_eq!(
        h.routes().await,
        vec![
            route("bob", "team", RouteEffect::Allow),
            route("team", "bob", RouteEffect::Allow),
        ]
    );
    // A new account of the same name starts clean: no keys, no memberships, no routes.
    let new_alice = h.client("alice");
    h.insert_account(&new_alice).await;
    assert_eq!(h.account("alice").await, Some(new_alice));
    assert_eq!(h.group("team").await, Some(group("team", &["bob"])));
    assert_eq!(h.routes().await.len(), 2);

    h.refused(ErrorKind::NotFound, |tx| tx.delete_account(&name("ghost")))
        .await;
    // A group is not an account.
    h.refused(ErrorKind::NotFound, |tx| tx.delete_account(&name("team")))
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
        h.refused(ErrorKind::Conflict, move |tx| {
            tx.delete_account(&name(account))
        })
        .await;
    }
    // Deliveries outlive accounts: live ones to a name no account holds are checked first,
    // so that name is refused as a conflict too (SQLite's order).
    let to_nobody = h.delivery("bob", "nobody", "c.txt", &blob, DeliveryState::Delivered);
    h.insert_deliveries(std::slice::from_ref(&to_nobody)).await;
    h.refused(ErrorKind::Conflict, |tx| tx.delete_account(&name("nobody")))
        .await;
    // Once terminal, the account can go.
    h.transition(
        &to_bob,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    h.transition(
        &to_nobody,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    h.delete_account("bob").await;
    assert_eq!(h.account("bob").await, None);
}

// ---------------------------------------------------------------------------------------------
// Groups and routes

async fn groups_and_members(h: &mut Harness<'_>) {
    for account in ["alice", "bob", "carol"] {
        let account = h.client(account);
        h.insert_account(&account).await;
    }
    h.insert_group(&group("zeta", &[])).await;
    // Members come back sorted, whatever order they were given in, and once each.
    h.insert_group(&Group {
        name: name("team"),
        members: vec![name("carol"), name("alice"), name("carol")],
    })
    .await;
    assert_eq!(
        h.group("team").await,
        Some(group("team", &["alice", "carol"]))
    );
    assert_eq!(h.group("nobody").await, None);
    // An account is not a group.
    assert_eq!(h.group("alice").await, None);

    h.set_members("team", &["bob"]).await;
    assert_eq!(
        h.groups().await,
        vec![group("team", &["bob"]), group("zeta", &[])]
    );
    h.set_members("team", &[]).await;
    assert_eq!(h.group("team").await, Some(group("team", &[])));
    h.set_members("team", &["carol", "alice", "carol"]).await;
    assert_eq!(
        h.group("team").await,
        Some(group("team", &["alice", "carol"]))
    );
    // The same members again: no change, and no error.
    h.set_members("team", &["alice", "carol"]).await;
    assert_eq!(
        h.group("team").await,
        Some(group("team", &["alice", "carol"]))
    );

    h.refused(ErrorKind::NotFound, |tx| {
        tx.set_members(&name("ghost"), &[])
    })
    .await;
    // An account is not a group to set members of.
    h.refused(ErrorKind::NotFound, |tx| {
        tx.set_members(&name("alice"), &[name("bob")])
    })
    .await;
    // Members must be existing accounts: not unknown names, not groups.
    h.refused(ErrorKind::NotFound, |tx| {
        tx.set_members(&name("team"), &[name("alice"), name("dave")])
    })
    .await;
    h.refused(ErrorKind::NotFound, |tx| {
        tx.set_members(&name("team"), &[name("zeta")])
    })
    .await;
    h.refused(ErrorKind::NotFound, |tx| {
        tx.insert_group(&group("new", &["dave"]))
    })
    .await;
    h.refused(ErrorKind::NotFound, |tx| {
        tx.insert_group(&group("new", &["alice", "zeta"]))
    })
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

    assert_eq!(h.groups().await, Vec::new());
    assert_eq!(
        h.routes().await,
        vec![route("alice", "bob", RouteEffect::Allow)]
    );
    // The members are accounts and stay.
    assert_eq!(h.accounts().await.len(), 2);
    // A new group of the same name starts without members.
    h.insert_group(&group("team", &[])).await;
    assert_eq!(h.group("team").await, Some(group("team", &[])));

    h.refused(ErrorKind::NotFound, |tx| tx.delete_group(&name("ghost")))
        .await;
    // An account is not a group.
    h.refused(ErrorKind::NotFound, |tx| tx.delete_group(&name("alice")))
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
    // The same pair again replaces the rule; the same rule again changes nothing.
    h.put_route(route("alice", "bob", RouteEffect::Deny)).await;
    h.put_route(route("alice", "bob", RouteEffect::Deny)).await;
    assert_eq!(
        h.routes().await,
        vec![
            route("alice", "bob", RouteEffect::Deny),
            route("alice", "team", RouteEffect::Deny),
            route("bob", "team", RouteEffect::Allow),
        ]
    );

    h.refused(ErrorKind::NotFound, |tx| {
        tx.delete_route(&name("bob"), &name("alice"))
    })
    .await;
    h.delete_route("alice", "team").await;
    h.refused(ErrorKind::NotFound, |tx| {
        tx.delete_route(&name("alice"), &name("team"))
    })
    .await;
    assert_eq!(
        h.routes().await,
        vec![
            route("alice", "bob", RouteEffect::Deny),
            route("bob", "team", RouteEffect::Allow),
        ]
    );

    // A rule can only name accounts and groups that exist.
    h.refused(ErrorKind::NotFound, |tx| {
        tx.put_route(&route("alice", "ghost", RouteEffect::Allow))
    })
    .await;
    h.refused(ErrorKind::NotFound, |tx| {
        tx.put_route(&route("ghost", "alice", RouteEffect::Allow))
    })
    .await;
}

async fn routes_keep_whether_they_require_e2e(h: &mut Harness<'_>) {
    for account in ["alice", "bob"] {
        let account = h.client(account);
        h.insert_account(&account).await;
    }
    let strict = Route {
        require_e2e: true,
        ..route("alice", "bob", RouteEffect::Allow)
    };
    h.put_route(strict.clone()).await;
    assert_eq!(h.routes().await, vec![strict.clone()]);
    // The flag alone changing is a change of policy, and is kept.
    let version = h.policy_version().await;
    h.put_route(route("alice", "bob", RouteEffect::Allow)).await;
    assert_eq!(
        h.routes().await,
        vec![route("alice", "bob", RouteEffect::Allow)]
    );
    assert!(h.policy_version().await > version);
    let version = h.policy_version().await;
    h.put_route(strict.clone()).await;
    assert_eq!(h.routes().await, vec![strict.clone()]);
    assert!(h.policy_version().await > version);
    // The same rule again changes nothing.
    let version = h.policy_version().await;
    h.put_route(strict).await;
    assert_eq!(h.policy_version().await, version);
}

// ---------------------------------------------------------------------------------------------
// Deliveries

async fn deliveries_keep_their_e2e_mark(h: &mut Harness<'_>) {
    let blob = BlobId::new();
    let plain = h.delivery("alice", "bob", "plain.txt", &blob, DeliveryState::Delivered);
    let sealed = Delivery {
        e2e: true,
        ..h.delivery(
            "alice",
            "bob",
            "sealed.age",
            &blob,
            DeliveryState::Delivered,
        )
    };
    h.insert_deliveries(&[plain.clone(), sealed.clone()]).await;
    for delivery in [plain, sealed] {
        let id = delivery.id;
        let read = h.read(move |tx| tx.delivery(&id)).await;
        assert_eq!(read, Some(delivery));
    }
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

    // A fan-out whose second delivery collides with the live one: nothing of it is stored,
    // nor the events its unit recorded first.
    let to_carol = h.delivery("alice", "carol", "report.pdf", &blob, DeliveryState::Stored);
    let to_bob = h.delivery("alice", "bob", "report.pdf", &blob, DeliveryState::Stored);
    let events = vec![
        h.event(EventKind::Upload, "/outbox/team/report.pdf"),
        h.event(EventKind::DeliveryStored, &to_carol.id.to_string()),
        h.event(EventKind::DeliveryStored, &to_bob.id.to_string()),
    ];
    let batch = vec![to_carol.clone(), to_bob];
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.record(&events)?;
        tx.insert_deliveries(&batch, None)
    })
    .await;
    assert_eq!(h.delivery_by_id(to_carol.id).await, None);

    // Two deliveries of one batch may not share a live name either.
    let twin_a = h.delivery("alice", "dave", "twin.txt", &blob, DeliveryState::Stored);
    let twin_b = h.delivery("alice", "dave", "twin.txt", &blob, DeliveryState::Stored);
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.insert_deliveries(&[twin_a, twin_b], None)
    })
    .await;

    // The same id twice is a conflict, not a second row.
    let mut again = first.clone();
    again.name = file("other.pdf");
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.insert_deliveries(&[again], None)
    })
    .await;

    // The whole fan-out without the collision goes in at once, with all its events.
    let to_carol = h.delivery("alice", "carol", "report.pdf", &blob, DeliveryState::Stored);
    let to_dave = h.delivery("alice", "dave", "report.pdf", &blob, DeliveryState::Stored);
    h.insert_deliveries(&[to_carol.clone(), to_dave.clone()])
        .await;
    assert_eq!(h.delivery_by_id(to_carol.id).await, Some(to_carol));
    assert_eq!(h.delivery_by_id(to_dave.id).await, Some(to_dave));
    assert_eq!(h.delivery_by_id(first.id).await, Some(first));
    assert_eq!(h.delivery_by_id(DeliveryId::new()).await, None);
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
        h.refused(ErrorKind::Conflict, move |tx| {
            tx.insert_deliveries(&[clash], None)
        })
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
        .deliveries(DeliveryQuery {
            sender: Some(name("alice")),
            recipient: Some(name("bob")),
            name: Some(file("report.pdf")),
            ..DeliveryQuery::default()
        })
        .await;
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

    // Not in a `from` state, no `from` state at all, or no such delivery: nothing moves, and
    // a unit that only tried changes nothing.
    let before = h.snapshot().await;
    let at = h.tick();
    let id = delivery.id;
    let moved = h
        .write(move |tx| {
            Ok([
                tx.transition(
                    &id,
                    &[DeliveryState::Delivered],
                    DeliveryState::PickedUp,
                    at,
                )?,
                tx.transition(&id, &[], DeliveryState::PickedUp, at)?,
                tx.transition(
                    &DeliveryId::new(),
                    &DeliveryState::LIVE,
                    DeliveryState::Expired,
                    at,
                )?,
            ])
        })
        .await;
    assert_eq!(moved, [false; 3]);
    assert_eq!(h.snapshot().await, before);

    // In a `from` state: moved, `updated` set to the unit's time, nothing else touched.
    let at = h
        .transition(
            &delivery,
            &[DeliveryState::Stored, DeliveryState::Checking],
            DeliveryState::Delivered,
        )
        .await;
    let stored = h.delivery_by_id(delivery.id).await.unwrap();
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
    // The unit sees its own move.
    let at = h.tick();
    let seen = h
        .write(move |tx| {
            tx.transition(
                &id,
                &[DeliveryState::Delivered],
                DeliveryState::PickedUp,
                at,
            )?;
            Ok(tx.delivery(&id)?.map(|d| (d.state, d.updated)))
        })
        .await;
    assert_eq!(seen, Some((DeliveryState::PickedUp, at)));

    // Bringing a terminal delivery back to life cannot take a live name twice.
    h.transition(
        &delivery,
        &[DeliveryState::PickedUp],
        DeliveryState::Quarantined,
    )
    .await;
    let successor = h.delivery("alice", "bob", "a.txt", &blob, DeliveryState::Delivered);
    h.insert_deliveries(std::slice::from_ref(&successor)).await;
    let at = h.tick();
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.transition(
            &id,
            &[DeliveryState::Quarantined],
            DeliveryState::Delivered,
            at,
        )
    })
    .await;
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

    let b_id = b.id;
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.rename_delivery(&b_id, &file("a.txt"))
    })
    .await;

    h.rename(&b, "c.txt").await;
    // A name held only by a terminal delivery is free.
    h.rename(&a, "old.txt").await;
    // Renaming to its own name is no conflict.
    h.rename(&a, "old.txt").await;
    let stored = h.delivery_by_id(a.id).await.unwrap();
    assert_eq!(stored.name, file("old.txt"));
    assert_eq!(stored.updated, a.updated);
    assert_eq!(h.delivery_by_id(b.id).await.unwrap().name, file("c.txt"));

    // Only live deliveries can be renamed.
    let old_id = old.id;
    h.refused(ErrorKind::NotFound, move |tx| {
        tx.rename_delivery(&old_id, &file("new.txt"))
    })
    .await;
    h.refused(ErrorKind::NotFound, |tx| {
        tx.rename_delivery(&DeliveryId::new(), &file("new.txt"))
    })
    .await;
}

async fn live_blobs_and_blob_in_use(h: &mut Harness<'_>) {
    assert_eq!(h.live_blobs().await, HashSet::new());
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
        h.live_blobs().await,
        HashSet::from([shared.clone(), single.clone()])
    );
    assert!(h.blob_in_use(&shared).await);
    assert!(h.blob_in_use(&single).await);
    assert!(!h.blob_in_use(&gone).await);
    assert!(!h.blob_in_use(&BlobId::new()).await);

    // Quarantine keeps the content (an operator may release it); deleting it from there
    // does not.
    h.transition(
        &checked,
        &[DeliveryState::Checking],
        DeliveryState::Quarantined,
    )
    .await;
    assert!(h.blob_in_use(&single).await);
    assert_eq!(
        h.live_blobs().await,
        HashSet::from([shared.clone(), single.clone()])
    );
    h.transition(
        &checked,
        &[DeliveryState::Quarantined],
        DeliveryState::Deleted,
    )
    .await;
    assert!(!h.blob_in_use(&single).await);
    assert_eq!(h.live_blobs().await, HashSet::from([shared.clone()]));

    // A fan-out's blob stays in use while any of its deliveries is live.
    h.transition(
        &to_bob,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    assert!(h.blob_in_use(&shared).await);
    h.transition(
        &to_carol,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    assert!(!h.blob_in_use(&shared).await);
    assert_eq!(h.live_blobs().await, HashSet::new());
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
    let (stored, id) = (vec![to_bob.clone(), to_carol.clone()], blob.clone());
    h.change(events, move |tx| {
        tx.insert_deliveries(&stored, Some((&id, &b"hello inline"[..])))
    })
    .await;
    assert_eq!(
        h.inline_blob(&blob).await.as_deref(),
        Some(&b"hello inline"[..])
    );
    assert_eq!(h.inline_blob(&BlobId::new()).await, None);
    // Opening for reading finds the delivery and its content in one lookup.
    let to_bob_query = DeliveryQuery {
        recipient: Some(name("bob")),
        sender: Some(name("alice")),
        name: Some(file("small.txt")),
        states: DeliveryState::VISIBLE.to_vec(),
        ..DeliveryQuery::default()
    };
    assert_eq!(
        h.read(move |tx| tx.first_delivery_with_content(&to_bob_query))
            .await,
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
    let id = other.clone();
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.insert_deliveries(&[clash], Some((&id, &b"x"[..])))
    })
    .await;
    assert_eq!(h.inline_blob(&other).await, None);
    // Content kept for a blob id is never replaced.
    let reuse = h.delivery(
        "alice",
        "dave",
        "small.txt",
        &blob,
        DeliveryState::Delivered,
    );
    let id = blob.clone();
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.insert_deliveries(&[reuse], Some((&id, &b"other"[..])))
    })
    .await;
    // A relaxed pick-up keeps it; the content goes with the last live delivery.
    let event = h.event(EventKind::DeliveryPickedUp, &to_bob.id.to_string());
    let (id, at) = (to_bob.id, event.time);
    let moved = h
        .change_with(Durability::Relaxed, vec![event], move |tx| {
            tx.transition(
                &id,
                &[DeliveryState::Delivered],
                DeliveryState::PickedUp,
                at,
            )
        })
        .await;
    assert!(moved);
    h.transition(
        &to_bob,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    assert!(h.inline_blob(&blob).await.is_some());
    h.transition(
        &to_carol,
        &DeliveryState::VISIBLE,
        DeliveryState::Acknowledged,
    )
    .await;
    assert_eq!(h.inline_blob(&blob).await, None);

    // A quarantined delivery keeps its inline content; deleted from quarantine, it does not.
    let held = BlobId::new();
    let checked = h.delivery("alice", "bob", "held.txt", &held, DeliveryState::Checking);
    let (stored, id) = (vec![checked.clone()], held.clone());
    h.change(Vec::new(), move |tx| {
        tx.insert_deliveries(&stored, Some((&id, &b"held inline"[..])))
    })
    .await;
    h.transition(
        &checked,
        &[DeliveryState::Checking],
        DeliveryState::Quarantined,
    )
    .await;
    assert_eq!(
        h.inline_blob(&held).await.as_deref(),
        Some(&b"held inline"[..])
    );
    h.transition(
        &checked,
        &[DeliveryState::Quarantined],
        DeliveryState::Deleted,
    )
    .await;
    assert_eq!(h.inline_blob(&held).await, None);
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
        let found = h.deliveries(query.clone()).await;
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
        h.read(move |tx| tx.first_delivery_with_content(&bobs))
            .await,
        Some((early.clone(), None))
    );
    let nobody = DeliveryQuery {
        recipient: Some(name("nobody")),
        ..DeliveryQuery::default()
    };
    assert_eq!(
        h.read(move |tx| tx.first_delivery_with_content(&nobody))
            .await,
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
            created_before: Some(late.created),
            ..DeliveryQuery::default()
        },
        vec![&early],
    )
    .await;
    check(
        DeliveryQuery {
            sender: Some(name("alice")),
            recipient: Some(name("bob")),
            target: Some(name("bob")),
            batch: Some(early.batch_id),
            name: Some(file("early")),
            states: vec![DeliveryState::PickedUp],
            created_before: Some(late.created),
            name_contains: Some("ARL".to_owned()),
            order: DeliveryOrder::default(),
            offset: 0,
            limit: Some(1),
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

async fn delivery_query_limit_keeps_the_oldest(h: &mut Harness<'_>) {
    let blob = BlobId::new();
    let made: Vec<Delivery> = (0..5)
        .map(|i| {
            let state = if i % 2 == 0 {
                DeliveryState::Delivered
            } else {
                DeliveryState::Acknowledged
            };
            h.delivery("alice", "bob", &format!("f{i}"), &blob, state)
        })
        .collect();
    // Inserted newest first: the limit keeps the oldest, not the first inserted.
    let mut newest_first = made.clone();
    newest_first.reverse();
    h.insert_deliveries(&newest_first).await;

    let query = |limit: Option<u32>, states: &[DeliveryState]| DeliveryQuery {
        limit,
        states: states.to_vec(),
        ..DeliveryQuery::default()
    };
    let pick =
        |indices: &[usize]| -> Vec<Delivery> { indices.iter().map(|&i| made[i].clone()).collect() };
    assert_eq!(h.deliveries(query(Some(2), &[])).await, pick(&[0, 1]));
    assert_eq!(h.deliveries(query(Some(1), &[])).await, pick(&[0]));
    // The limit applies after the filters.
    assert_eq!(
        h.deliveries(query(Some(2), &[DeliveryState::Delivered]))
            .await,
        pick(&[0, 2])
    );
    assert_eq!(
        h.deliveries(query(Some(1), &[DeliveryState::Acknowledged]))
            .await,
        pick(&[1])
    );
    assert_eq!(
        h.deliveries(DeliveryQuery {
            created_before: Some(made[4].created),
            limit: Some(3),
            states: vec![DeliveryState::Delivered],
            ..DeliveryQuery::default()
        })
        .await,
        pick(&[0, 2])
    );
    // Exactly as many, more than there are, none.
    assert_eq!(h.deliveries(query(Some(5), &[])).await, made);
    assert_eq!(h.deliveries(query(Some(100), &[])).await, made);
    assert_eq!(h.deliveries(query(None, &[])).await, made);
    assert_eq!(h.deliveries(query(Some(0), &[])).await, Vec::new());
    // The first match is the oldest whatever limit the query carries (SQLite's reading).
    for limit in [None, Some(0), Some(1), Some(3)] {
        let first = query(limit, &[DeliveryState::Acknowledged]);
        assert_eq!(
            h.read(move |tx| tx.first_delivery_with_content(&first))
                .await,
            Some((made[1].clone(), None)),
            "limit {limit:?}"
        );
    }
}

/// The listings of an inbox and of the sent items: every order in both directions, pages by
/// offset and limit that add up to the whole, and the name filter (ASCII case folded,
/// wildcards taken literally), done by the store and the same on every backend.
async fn delivery_listings_sort_filter_and_page(h: &mut Harness<'_>) {
    let blob = BlobId::new();
    let made = |h: &mut Harness<'_>, sender: &str, file_name: &str, size: u64, state| Delivery {
        size,
        ..h.delivery(sender, "bob", file_name, &blob, state)
    };
    let (delivered, picked_up) = (DeliveryState::Delivered, DeliveryState::PickedUp);
    let inbox = vec![
        made(h, "carol", "Report-1.PDF", 300, delivered),
        made(h, "alice", "notes.txt", 10, picked_up),
        made(h, "dave", "report_2.pdf", 300, delivered),
        made(h, "alice", "50%off.txt", 7, delivered),
        made(h, "carol", "a_b", 1 << 41, picked_up),
        made(h, "alice", "REPORT3", 0, delivered),
        made(h, "bob", "Écrit.txt", 20, delivered),
    ];
    // Not in bob's inbox: acknowledged, or someone else's.
    let gone = made(h, "alice", "report-old", 1, DeliveryState::Acknowledged);
    let elsewhere = Delivery {
        recipient: name("carol"),
        target: name("carol"),
        ..made(h, "alice", "report-x", 5, delivered)
    };
    let mut all = inbox.clone();
    all.extend([gone.clone(), elsewhere.clone()]);
    // Inserted newest first, so that no backend answers in insertion order by chance.
    all.reverse();
    h.insert_deliveries(&all).await;

    let inbox_query = |order, offset, limit| DeliveryQuery {
        recipient: Some(name("bob")),
        states: DeliveryState::VISIBLE.to_vec(),
        order,
        offset,
        limit,
        ..DeliveryQuery::default()
    };
    let sorts = [
        DeliverySort::Created,
        DeliverySort::Name,
        DeliverySort::Size,
        DeliverySort::Sender,
        DeliverySort::Recipient,
    ];
    for sort in sorts {
        for direction in [SortDirection::Ascending, SortDirection::Descending] {
            let order = DeliveryOrder { sort, direction };
            let mut expected = inbox.clone();
            expected.sort_by(|a, b| {
                let column = match sort {
                    DeliverySort::Created => a.created.cmp(&b.created),
                    DeliverySort::Name => a.name.as_str().cmp(b.name.as_str()),
                    DeliverySort::Size => a.size.cmp(&b.size),
                    DeliverySort::Sender => a.sender.as_str().cmp(b.sender.as_str()),
                    DeliverySort::Recipient => a.recipient.as_str().cmp(b.recipient.as_str()),
                };
                column.then(a.id.cmp(&b.id))
            });
            if direction == SortDirection::Descending {
                expected.reverse();
            }
            let whole = h.deliveries(inbox_query(order, 0, None)).await;
            assert_eq!(whole, expected, "{order:?}");
            // Pages of three, then past the end.
            let mut paged = Vec::new();
            for page in 0..3 {
                let rows = h.deliveries(inbox_query(order, page * 3, Some(3))).await;
                assert!(rows.len() <= 3, "{order:?} page {page}");
                paged.extend(rows);
            }
            assert_eq!(paged, expected, "{order:?} in pages");
            assert_eq!(
                h.deliveries(inbox_query(order, 7, Some(3))).await,
                Vec::new(),
                "{order:?} past the end"
            );
            // An offset without a limit skips and takes the rest.
            assert_eq!(
                h.deliveries(inbox_query(order, 5, None)).await,
                expected[5..].to_vec(),
                "{order:?} from the sixth"
            );
        }
    }

    let names = |rows: Vec<Delivery>| -> Vec<String> {
        rows.iter().map(|d| d.name.as_str().to_owned()).collect()
    };
    let filtered = |needle: &str| DeliveryQuery {
        name_contains: Some(needle.to_owned()),
        order: DeliveryOrder {
            sort: DeliverySort::Name,
            direction: SortDirection::Ascending,
        },
        ..inbox_query(DeliveryOrder::default(), 0, None)
    };
    // ASCII letters in any case; acknowledged and other inboxes stay out.
    assert_eq!(
        names(h.deliveries(filtered("rEpOrT")).await),
        ["REPORT3", "Report-1.PDF", "report_2.pdf"]
    );
    // `%` and `_` are text, not wildcards.
    assert_eq!(names(h.deliveries(filtered("%")).await), ["50%off.txt"]);
    assert_eq!(
        names(h.deliveries(filtered("_")).await),
        ["a_b", "report_2.pdf"]
    );
    // Letters beyond ASCII match exactly.
    assert_eq!(names(h.deliveries(filtered("Écrit")).await), ["Écrit.txt"]);
    assert_eq!(
        names(h.deliveries(filtered("écrit")).await),
        Vec::<String>::new()
    );
    assert_eq!(
        names(h.deliveries(filtered("zzz")).await),
        Vec::<String>::new()
    );
    // The filter, then the page.
    assert_eq!(
        names(
            h.deliveries(DeliveryQuery {
                offset: 1,
                limit: Some(1),
                ..filtered("report")
            })
            .await
        ),
        ["Report-1.PDF"]
    );

    // What alice sent, in every state, by recipient then id, newest id first.
    let sent = h
        .deliveries(DeliveryQuery {
            sender: Some(name("alice")),
            order: DeliveryOrder {
                sort: DeliverySort::Recipient,
                direction: SortDirection::Descending,
            },
            ..DeliveryQuery::default()
        })
        .await;
    let mut expected: Vec<Delivery> = all
        .iter()
        .filter(|d| d.sender.as_str() == "alice")
        .cloned()
        .collect();
    expected.sort_by(|a, b| {
        (a.recipient.as_str(), a.id)
            .cmp(&(b.recipient.as_str(), b.id))
            .reverse()
    });
    assert_eq!(sent, expected);
    assert_eq!(sent.first(), Some(&elsewhere));
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
        h.read(|tx| tx.inbox_usage(&name("bob"))).await,
        InboxUsage {
            bytes: 150,
            files: 2
        }
    );
    assert_eq!(
        h.read(|tx| tx.inbox_usage(&name("carol"))).await,
        InboxUsage::default()
    );
    let old = h
        .deliveries(DeliveryQuery {
            created_before: Some(one.created + Duration::microseconds(1)),
            ..DeliveryQuery::default()
        })
        .await;
    assert_eq!(old, vec![one]);
}

// ---------------------------------------------------------------------------------------------
// Events and the chain

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
        let found = h.events(query.clone()).await;
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
    // `offset` leaves out that many of the newest first: pages counted from the end.
    check(
        EventQuery {
            limit: Some(2),
            offset: 1,
            ..EventQuery::default()
        },
        vec![&alice_upload, &alice_download],
    )
    .await;
    check(
        EventQuery {
            limit: Some(2),
            offset: 4,
            ..EventQuery::default()
        },
        vec![&alice_login],
    )
    .await;
    check(
        EventQuery {
            actor: Some("alice".to_owned()),
            limit: Some(2),
            offset: 1,
            ..EventQuery::default()
        },
        vec![&alice_login, &alice_upload],
    )
    .await;
    check(
        EventQuery {
            offset: 2,
            ..EventQuery::default()
        },
        vec![&alice_login, &mallory_login, &alice_upload],
    )
    .await;
    check(
        EventQuery {
            limit: Some(2),
            offset: 5,
            ..EventQuery::default()
        },
        vec![],
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
    let repeated = first.clone();
    h.refused(ErrorKind::Conflict, move |tx| tx.record(&[fresh, repeated]))
        .await;
    // Not twice within one batch either.
    let twice = h.event(EventKind::Login, "erin");
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.record(&[twice.clone(), twice])
    })
    .await;
    // Nor across two calls of one unit.
    let once = h.event(EventKind::Login, "frank");
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.record(std::slice::from_ref(&once))?;
        tx.record(std::slice::from_ref(&once))
    })
    .await;
    // Events of a refused change are not recorded either, even when the unit recorded them
    // before the change was refused.
    h.refused(ErrorKind::NotFound, |tx| tx.delete_account(&name("ghost")))
        .await;
    // Several calls of one unit chain in order.
    let (one, two) = (
        h.event(EventKind::Login, "one"),
        h.event(EventKind::Login, "two"),
    );
    let (a, b) = (one.clone(), two.clone());
    let expect = vec![one, two];
    h.write(move |tx| {
        tx.record(&[a])?;
        tx.record(&[b])
    })
    .await;
    h.expect_events(&expect).await;
}

async fn jobs_queue_lease_and_finish(h: &mut Harness<'_>) {
    let event = h.event(EventKind::DeliveryDelivered, "d1");
    let event_id = event.id;
    h.record(std::slice::from_ref(&event)).await;
    let at = h.tick();
    let job = |handler: &str, due: OffsetDateTime| Job {
        id: Uuid::now_v7(),
        rule: "pdf-alert".to_owned(),
        handler: Handler::parse(handler).unwrap(),
        event: event_id,
        state: JobState::Queued,
        attempts: 0,
        due,
        created: at,
        updated: at,
        last_error: None,
    };
    let first = job("webhook:https://hooks.example.test/a", at);
    let second = job("email:ops@example.test", at + Duration::seconds(30));
    let jobs = vec![first.clone(), second.clone()];
    h.write(move |tx| tx.insert_jobs(&jobs)).await;
    // Read back as written; the event is found by id.
    let first_id = first.id;
    let (one, found) = h
        .read(move |tx| Ok((tx.job(&first_id)?, tx.event(&event_id)?)))
        .await;
    assert_eq!(one.as_ref(), Some(&first), "a job reads back as written");
    assert_eq!(found, Some(event));
    assert_eq!(
        h.read(|tx| tx.job(&Uuid::now_v7())).await,
        None,
        "an unknown job"
    );
    // Only the due one is due, soonest first; the queue's depth counts both.
    let due = h.read(move |tx| tx.due_jobs(at, 10)).await;
    assert_eq!(
        due.iter().map(|j| j.id).collect::<Vec<_>>(),
        [one.as_ref().unwrap().id]
    );
    let later = h
        .read(move |tx| tx.due_jobs(at + Duration::seconds(60), 1))
        .await;
    assert_eq!(later.len(), 1, "the limit holds");
    assert_eq!(h.read(|tx| tx.queued_jobs()).await, 2);
    // A lease: the attempt counted and the due time moved, only from the expected state.
    let mut leased = one.unwrap();
    leased.attempts = 1;
    leased.due = at + Duration::seconds(120);
    leased.updated = h.tick();
    let unit_job = leased.clone();
    assert!(
        h.write(move |tx| tx.update_job(&unit_job, &[JobState::Queued]))
            .await
    );
    let unit_job = leased.clone();
    assert!(
        !h.write(move |tx| tx.update_job(&unit_job, &[JobState::Dead, JobState::Done]))
            .await,
        "a job not in one of `from` is not updated"
    );
    assert_eq!(
        h.read(move |tx| tx.due_jobs(at, 10)).await,
        Vec::<Job>::new()
    );
    let stored = h.read(move |tx| tx.job(&leased.id)).await.unwrap();
    assert_eq!(
        (stored.attempts, stored.due),
        (1, at + Duration::seconds(120))
    );
    // Done and dead jobs leave the queue; listings are newest first, by state.
    let mut done = stored.clone();
    done.state = JobState::Done;
    let mut dead = second.clone();
    dead.state = JobState::Dead;
    dead.last_error = Some("the receiver answered 500".to_owned());
    h.write(move |tx| {
        assert!(tx.update_job(&done, &[JobState::Queued])?);
        assert!(tx.update_job(&dead, &[JobState::Queued])?);
        Ok(())
    })
    .await;
    assert_eq!(h.read(|tx| tx.queued_jobs()).await, 0);
    assert_eq!(
        h.read(|tx| tx.job_counts()).await,
        JobCounts {
            queued: 0,
            done: 1,
            dead: 1,
            dropped: 0
        }
    );
    // A dead job queued again counts again, and leaving the queue again uncounts it.
    let mut again = h.read(move |tx| tx.job(&second.id)).await.unwrap();
    again.state = JobState::Queued;
    let requeued = again.clone();
    h.write(move |tx| tx.update_job(&requeued, &[JobState::Dead]))
        .await;
    assert_eq!(h.read(|tx| tx.queued_jobs()).await, 1);
    again.state = JobState::Dead;
    h.write(move |tx| tx.update_job(&again, &[JobState::Queued]))
        .await;
    assert_eq!(h.read(|tx| tx.queued_jobs()).await, 0);
    let listed = h
        .read(|tx| {
            tx.jobs(&JobQuery {
                state: Some(JobState::Dead),
                limit: 10,
            })
        })
        .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].last_error.as_deref(),
        Some("the receiver answered 500")
    );
    let all = h.read(|tx| tx.jobs(&JobQuery::default())).await;
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        [second.id, stored.id]
    );
    // A job id is taken once, and a refused insert leaves nothing.
    let again = vec![job("webhook:https://hooks.example.test/b", at), stored];
    h.refused(ErrorKind::Conflict, move |tx| tx.insert_jobs(&again))
        .await;
}

async fn audit_records_form_a_chain(h: &mut Harness<'_>) {
    assert_eq!(h.read(|tx| tx.audit_head()).await, None);
    assert_eq!(h.read(|tx| tx.audit_legacy_through()).await, 0);
    let empty = h.verify(None).await;
    assert!(empty.is_intact());
    assert_eq!((empty.checked, empty.head), (0, None));

    let alice = h.client("alice");
    h.insert_account(&alice).await;
    let batch: Vec<Event> = (0..5)
        .map(|i| h.event(EventKind::Login, &format!("try {i}")))
        .collect();
    h.record(&batch).await;
    let sweep = h.event(EventKind::Sweep, "blobs");
    h.change(vec![sweep], |_| Ok(())).await;

    // Pages: seqs 1..=7 in order, each linked to the one before, the first to genesis.
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut after = 0;
    loop {
        let page = h
            .read(move |tx| tx.audit_records(&EventQuery::default(), after, 3))
            .await;
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
    // A page of none is empty; filters apply to pages too.
    assert_eq!(
        h.read(|tx| tx.audit_records(&EventQuery::default(), 0, 0))
            .await,
        Vec::new()
    );
    let logins = h
        .read(|tx| {
            tx.audit_records(
                &EventQuery {
                    kind: Some(EventKind::Login),
                    ..EventQuery::default()
                },
                2,
                100,
            )
        })
        .await;
    assert_eq!(
        logins.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );

    let head = h.read(|tx| tx.audit_head()).await.unwrap();
    assert_eq!((head.seq, head.events), (7, 7));
    assert_eq!(Some(&head.hash), records[6].hash.as_ref());

    // A checkpoint on the chain is found; a wrong hash or a seq past the head is not.
    let at = |seq: usize| Checkpoint {
        seq: seq as u64,
        hash: records[seq - 1].hash.clone().unwrap(),
    };
    let expect = |checkpoint: Checkpoint| async {
        let report = h.verify(Some(checkpoint)).await;
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

    // A refused change adds nothing to the chain (the harness checks the head is unchanged),
    // and the next change links to the head before it.
    let repeated = batch[0].clone();
    h.refused(ErrorKind::Conflict, move |tx| tx.record(&[repeated]))
        .await;
    let after_refusal = h.verify(None).await;
    assert!(after_refusal.is_intact());
    assert_eq!(after_refusal.checked, 7);
    let next = h.event(EventKind::Login, "after");
    h.record(std::slice::from_ref(&next)).await;
    let last = h
        .read(|tx| tx.audit_records(&EventQuery::default(), 7, 10))
        .await;
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].seq, 8);
    assert_eq!(last[0].prev_hash, records[6].hash);
}

// ---------------------------------------------------------------------------------------------
// Access, one-time codes, bans, tokens

async fn access_policy_and_totp_round_trip(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.access = restricted_access();
    alice.totp = Some(enrolment("JBSWY3DPEHPK3PXP", &["aa", "bb"]));
    h.insert_account(&alice).await;
    assert_eq!(h.account("alice").await, Some(alice.clone()));
    assert_eq!(h.accounts().await, vec![alice.clone()]);

    // Back to the defaults, and TOTP removed.
    h.update_account(
        "alice",
        AccountUpdate {
            access: Some(AccessPolicy::default()),
            totp: Some(None),
            ..AccountUpdate::default()
        },
    )
    .await;
    alice.access = AccessPolicy::default();
    alice.totp = None;
    assert_eq!(h.account("alice").await, Some(alice));
}

async fn totp_steps_and_recovery_codes_work_once(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    let bob = h.client("bob");
    alice.totp = Some(enrolment("JBSWY3DPEHPK3PXP", &["aa", "bb"]));
    h.insert_account(&alice).await;
    h.insert_account(&bob).await;

    assert!(h.use_totp_step("alice", 1000).await);
    assert!(!h.use_totp_step("alice", 1000).await, "replayed step");
    assert!(!h.use_totp_step("alice", 999).await, "older step");
    assert!(h.use_totp_step("alice", 1001).await);
    assert!(!h.use_totp_step("bob", 5).await, "not enrolled");
    assert!(!h.use_totp_step("ghost", 5).await, "no account");
    let stored = h.account("alice").await.unwrap();
    assert_eq!(stored.totp.as_ref().unwrap().last_step, Some(1001));

    // An update that leaves the enrolment alone keeps the step spent.
    h.update_account(
        "alice",
        AccountUpdate {
            password_hash: Some(Some("$argon2id$x".to_owned())),
            keys: Some(vec![ed25519_key()]),
            ..AccountUpdate::default()
        },
    )
    .await;
    assert!(!h.use_totp_step("alice", 1001).await);

    assert!(h.use_recovery_code("alice", &code("aa")).await);
    assert!(!h.use_recovery_code("alice", &code("aa")).await);
    assert!(!h.use_recovery_code("bob", &code("bb")).await);
    assert!(!h.use_recovery_code("ghost", &code("bb")).await);
    let stored = h.account("alice").await.unwrap();
    assert_eq!(stored.totp.unwrap().recovery, vec![code("bb")]);
    // Spending codes is bookkeeping of the login step: its own units record no events.
    h.expect_events(&[]).await;

    // A new enrolment (new secret) starts with no used step.
    h.update_account(
        "alice",
        AccountUpdate {
            totp: Some(Some(enrolment("KRSXG5CTMVRXEZLU", &[]))),
            ..AccountUpdate::default()
        },
    )
    .await;
    assert!(h.use_totp_step("alice", 10).await);
    assert!(!h.use_recovery_code("alice", &code("bb")).await);
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
    h.put_ban(&first).await;
    let locked = Ban {
        subject: account.clone(),
        level: 1,
        ..first.clone()
    };
    h.put_ban(&locked).await;
    assert_eq!(h.ban(&address).await, Some(first.clone()));
    assert_eq!(
        h.read(|tx| tx.bans()).await,
        vec![first.clone(), locked.clone()]
    );

    first.level = 2;
    first.until += Duration::minutes(45);
    h.put_ban(&first).await;
    assert_eq!(h.ban(&address).await, Some(first));

    h.delete_ban(&address).await;
    assert_eq!(h.ban(&address).await, None);
    let subject = address.clone();
    h.refused(ErrorKind::NotFound, move |tx| tx.delete_ban(&subject))
        .await;
    assert_eq!(h.read(|tx| tx.bans()).await, vec![locked]);

    // Level 0 is stored as level 1: a ban is at least the first level.
    let zero = Ban {
        subject: address.clone(),
        level: 0,
        until: h.tick() + Duration::minutes(5),
        reason: "manual".to_owned(),
        created: h.tick(),
    };
    h.put_ban(&zero).await;
    assert_eq!(h.ban(&address).await, Some(Ban { level: 1, ..zero }));
}

/// The points of `subject`'s offences at or after `since`, as committed.
async fn score(h: &Harness<'_>, subject: &BanSubject, since: OffsetDateTime) -> u64 {
    let subject = subject.clone();
    h.read(move |tx| tx.offence_score(&subject, since)).await
}

async fn offences_add_score_forget_and_prune(h: &mut Harness<'_>) {
    let address = BanSubject::parse("192.0.2.9").unwrap();
    let other = BanSubject::parse("2001:db8::7").unwrap();
    let account = BanSubject::Account(name("alice"));
    let start = h.tick();
    let at = move |seconds: i64| start + Duration::seconds(seconds);
    assert_eq!(score(h, &address, at(0)).await, 0, "no offence yet");
    let policy = h.policy_version().await;

    // Added in the unit that records the refusal, as the Hub does; the unit sees its own.
    let (a, b, c) = (address.clone(), other.clone(), account.clone());
    let event = h.event(EventKind::Login, "alice");
    let seen = h
        .change_with(Durability::Relaxed, vec![event], move |tx| {
            tx.add_offence(&a, at(0), 1)?;
            tx.add_offence(&a, at(10), 2)?;
            tx.add_offence(&a, at(20), 1)?;
            // Worth nothing: not kept.
            tx.add_offence(&a, at(20), 0)?;
            tx.add_offence(&c, at(10), 1)?;
            tx.add_offence(&b, at(5), 3)?;
            tx.offence_score(&a, at(0))
        })
        .await;
    assert_eq!(seen, 4);
    // The window starts at `since`, inclusive; subjects are apart (an account is not an
    // address of the same text).
    assert_eq!(score(h, &address, at(0)).await, 4);
    assert_eq!(score(h, &address, at(10)).await, 3);
    assert_eq!(score(h, &address, at(11)).await, 1);
    assert_eq!(score(h, &address, at(21)).await, 0);
    assert_eq!(score(h, &account, at(0)).await, 1);
    assert_eq!(score(h, &other, at(0)).await, 3);
    assert_eq!(score(h, &BanSubject::Account(name("bob")), at(0)).await, 0);
    assert_eq!(h.policy_version().await, policy, "offences are no policy");

    // A refused unit leaves no offence, and neither does a read unit.
    let a = address.clone();
    h.refused(ErrorKind::Conflict, move |tx| -> Result<()> {
        tx.add_offence(&a, at(30), 5)?;
        tx.forget_offences(&BanSubject::Account(name("alice")))?;
        tx.prune_offences(at(100), 0, 100)?;
        Err(CoreError::conflict("a later check failed"))
    })
    .await;
    let a = address.clone();
    let refused = h
        .store
        .read_with(move |tx| tx.add_offence(&a, at(30), 5))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Internal);
    assert_eq!(score(h, &address, at(0)).await, 4);
    assert_eq!(score(h, &account, at(0)).await, 1);
    assert_eq!(score(h, &other, at(0)).await, 3);

    // Large weights add up past 32 bits.
    let b = other.clone();
    h.write(move |tx| {
        tx.add_offence(&b, at(6), u32::MAX)?;
        tx.add_offence(&b, at(7), u32::MAX)
    })
    .await;
    assert_eq!(score(h, &other, at(0)).await, 3 + 2 * u64::from(u32::MAX));

    // Forgotten: the subject's offences only, counted.
    let a = address.clone();
    assert_eq!(h.write(move |tx| tx.forget_offences(&a)).await, 3);
    assert_eq!(score(h, &address, at(0)).await, 0);
    assert_eq!(score(h, &account, at(0)).await, 1);
    let a = address.clone();
    assert_eq!(h.write(move |tx| tx.forget_offences(&a)).await, 0);
    let b = other.clone();
    assert_eq!(h.write(move |tx| tx.forget_offences(&b)).await, 3);

    // Pruned by date: the oldest first, at most `limit`.
    let a = address.clone();
    h.write(move |tx| {
        for seconds in [2, 0, 3, 1] {
            tx.add_offence(&a, at(seconds), 1)?;
        }
        Ok(())
    })
    .await;
    assert_eq!(
        h.write(move |tx| tx.prune_offences(at(3), u64::MAX, 2))
            .await,
        2
    );
    assert_eq!(score(h, &address, at(0)).await, 2, "@0 and @1 went");
    assert_eq!(score(h, &address, at(2)).await, 2);
    assert_eq!(
        h.write(move |tx| tx.prune_offences(at(3), u64::MAX, 10))
            .await,
        1
    );
    assert_eq!(score(h, &address, at(0)).await, 1, "@2 went, @3 stays");
    assert_eq!(
        h.write(move |tx| tx.prune_offences(at(0), u64::MAX, 10))
            .await,
        0
    );
    assert_eq!(score(h, &account, at(0)).await, 1, "@10 is not old");

    // Pruned by number: of those added before the last `keep` additions, the first added.
    // Left now, in the order added: alice's @10, then the address's @3 (the newest).
    assert_eq!(h.write(move |tx| tx.prune_offences(at(0), 1, 1)).await, 1);
    assert_eq!(
        score(h, &account, at(0)).await,
        0,
        "added first, went first"
    );
    assert_eq!(score(h, &address, at(0)).await, 1);
    assert_eq!(
        h.write(move |tx| tx.prune_offences(at(0), 1, 10)).await,
        0,
        "the newest is kept"
    );
    // Five more: keeping two leaves the two added last.
    let a = address.clone();
    h.write(move |tx| {
        for seconds in 40..45 {
            tx.add_offence(&a, at(seconds), 1)?;
        }
        Ok(())
    })
    .await;
    assert_eq!(h.write(move |tx| tx.prune_offences(at(0), 2, 100)).await, 4);
    assert_eq!(score(h, &address, at(0)).await, 2);
    assert_eq!(score(h, &address, at(43)).await, 2);
    // Offences are bookkeeping of the defender: their own units record no events.
    h.expect_events(&[]).await;
}

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
        methods: None,
    }
}

/// The negotiated methods of a login, as the API writes them.
const METHODS: &str = "authentication=password compression=zstd encryption=tls";

/// `token` carrying `methods`.
fn with_methods(token: TokenRecord, methods: Option<&str>) -> TokenRecord {
    TokenRecord {
        methods: methods.map(str::to_owned),
        ..token
    }
}

async fn tokens_store_take_and_expire(h: &mut Harness<'_>) {
    let alice = h.client("alice");
    h.insert_account(&alice).await;
    let soon = datetime!(2030-01-01 00:15 UTC);
    let later = datetime!(2030-01-01 12:00 UTC);
    // Login s1 negotiated methods; s2 did not.
    let access = with_methods(
        token_record("aa", TokenKind::Access, "s1", "alice", soon),
        Some(METHODS),
    );
    let refresh = with_methods(
        token_record("bb", TokenKind::Refresh, "s1", "alice", later),
        Some(METHODS),
    );
    let other = token_record("cc", TokenKind::Access, "s2", "alice", soon);
    let tokens = vec![access.clone(), refresh.clone(), other.clone()];
    h.write(move |tx| tx.insert_tokens(&tokens)).await;
    assert_eq!(h.token("aa").await, Some(access.clone()));
    assert_eq!(h.token("cc").await, Some(other.clone()));
    assert_eq!(
        h.token("aa").await.and_then(|t| t.methods).as_deref(),
        Some(METHODS)
    );
    assert_eq!(h.token("cc").await.and_then(|t| t.methods), None);
    assert_eq!(h.token("zz").await, None);
    // A hash is stored once; a batch with a taken hash stores nothing.
    let clash = vec![
        token_record("dd", TokenKind::Access, "s3", "alice", soon),
        access.clone(),
    ];
    h.refused(ErrorKind::Conflict, move |tx| tx.insert_tokens(&clash))
        .await;
    assert_eq!(h.token("dd").await, None);
    // Taking works once.
    assert_eq!(h.write(|tx| tx.take_token("bb")).await, Some(refresh));
    assert_eq!(h.write(|tx| tx.take_token("bb")).await, None);
    // Expiry: s2's only token expires; s1 keeps nothing either once "aa" expires.
    let (deleted, mut ended) = h.write(move |tx| tx.delete_expired_tokens(soon)).await;
    ended.sort();
    assert_eq!(deleted, 2);
    assert_eq!(ended, ["s1", "s2"]);
    assert_eq!(h.token("aa").await, None);
    // A refresh, as the Hub makes it: the refresh token taken in one unit, the login's next
    // pair stored in another with the methods the taken token carried, or none.
    for (session, hashes, methods) in [
        ("s6", ["ga", "gb", "gc"], Some(METHODS)),
        ("s7", ["ha", "hb", "hc"], None),
    ] {
        let [first, next_access, next_refresh] = hashes;
        let stored = with_methods(
            token_record(first, TokenKind::Refresh, session, "alice", later),
            methods,
        );
        h.write(move |tx| tx.insert_tokens(&[stored])).await;
        let taken = h.write(move |tx| tx.take_token(first)).await.unwrap();
        assert_eq!(taken.methods.as_deref(), methods, "{session}");
        let pair = [
            (next_access, TokenKind::Access),
            (next_refresh, TokenKind::Refresh),
        ]
        .map(|(hash, kind)| TokenRecord {
            methods: taken.methods.clone(),
            ..token_record(hash, kind, session, "alice", later)
        });
        h.write(move |tx| {
            tx.delete_token_session(session)?;
            tx.insert_tokens(&pair)
        })
        .await;
        for hash in [next_access, next_refresh] {
            let token = h.token(hash).await.unwrap();
            assert_eq!(token.methods.as_deref(), methods, "{session} {hash}");
        }
    }
    // Token bookkeeping records no events of its own.
    h.expect_events(&[]).await;
    // Logout of a session deletes its tokens and records its event in the same unit.
    let ee = token_record("ee", TokenKind::Access, "s4", "alice", later);
    h.write(move |tx| tx.insert_tokens(&[ee])).await;
    let logout = h.event(EventKind::SessionClosed, "alice");
    let deleted = h
        .change(vec![logout], |tx| tx.delete_token_session("s4"))
        .await;
    assert_eq!(deleted, 1);
    assert_eq!(h.token("ee").await, None);
    assert_eq!(h.write(|tx| tx.delete_token_session("s4")).await, 0);
    // Deleting the account deletes its tokens, so a later account of the name has none.
    let ff = token_record("ff", TokenKind::Access, "s5", "alice", later);
    h.write(move |tx| tx.insert_tokens(&[ff])).await;
    h.delete_account("alice").await;
    assert_eq!(h.token("ff").await, None);
}

// ---------------------------------------------------------------------------------------------
// API keys

fn api_key_record(id: &str, account: &str, created: OffsetDateTime) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        account: name(account),
        label: "backup agent on srv-1 é".to_owned(),
        hash: format!("{id:0>64}"),
        scopes: KeyScopes::ALL,
        created,
        expires: None,
        last_used: None,
    }
}

async fn resumable_uploads_are_recorded_read_and_forgotten(h: &mut Harness<'_>) {
    let created = h.tick();
    let first = ResumableRecord {
        id: "b".repeat(32),
        owner: name("alice"),
        targets: vec![name("bob"), name("team")],
        name: file("ledger.csv"),
        size: 5 << 30,
        sha256: Some("ab".repeat(32)),
        e2e: false,
        staging: BlobId::new(),
        created,
        expires: created + Duration::days(1),
    };
    let second = ResumableRecord {
        id: "a".repeat(32),
        targets: vec![name("carol")],
        sha256: None,
        e2e: true,
        staging: BlobId::new(),
        ..first.clone()
    };
    for record in [&first, &second] {
        let record = record.clone();
        h.write(move |tx| tx.insert_resumable(&record)).await;
    }
    let id = first.id.clone();
    assert_eq!(
        h.read(move |tx| tx.resumable(&id)).await,
        Some(first.clone())
    );
    assert_eq!(h.read(|tx| tx.resumable("none")).await, None);
    assert_eq!(
        h.read(|tx| tx.resumables()).await,
        vec![second.clone(), first.clone()]
    );
    // An id recorded already: refused, the record as it was.
    let clash = ResumableRecord {
        size: 1,
        ..first.clone()
    };
    h.refused(ErrorKind::Conflict, move |tx| tx.insert_resumable(&clash))
        .await;
    let id = first.id.clone();
    assert_eq!(
        h.read(move |tx| tx.resumable(&id)).await,
        Some(first.clone())
    );
    // Forgotten once.
    let id = first.id.clone();
    assert!(h.write(move |tx| tx.delete_resumable(&id)).await);
    let id = first.id.clone();
    assert!(!h.write(move |tx| tx.delete_resumable(&id)).await);
    assert_eq!(h.read(|tx| tx.resumables()).await, vec![second]);
}

async fn data_keys_insert_once_per_owner_and_rewrap(h: &mut Harness<'_>) {
    let at = h.tick();
    let key = |id: &str, owner: &str, wrapped: u8| DataKeyRecord {
        id: id.into(),
        owner: owner.into(),
        wrapped: vec![wrapped; 60],
        master: "m1".into(),
        created: at,
    };
    let (hub, alice) = (key("01", HUB_KEY_OWNER, 1), key("02", "alice", 2));
    for record in [&hub, &alice] {
        let record = record.clone();
        assert!(
            h.policy_stays("add a data key", move |tx| tx.insert_data_key(&record))
                .await
        );
    }
    assert_eq!(
        h.read(|tx| tx.data_keys()).await,
        vec![hub.clone(), alice.clone()]
    );
    // A second key for an owner, or a taken id, is not inserted, and nothing changes: the first
    // writer's key stays the owner's.
    for record in [key("03", "alice", 3), key("01", "bob", 3)] {
        assert!(!h.write(move |tx| tx.insert_data_key(&record)).await);
        assert_eq!(
            h.read(|tx| tx.data_keys()).await,
            vec![hub.clone(), alice.clone()]
        );
    }
    // A rotation rewraps in place; an unknown id changes nothing.
    assert!(h.write(|tx| tx.rewrap_data_key("02", &[9; 60], "m2")).await);
    assert!(!h.write(|tx| tx.rewrap_data_key("77", &[9; 60], "m2")).await);
    let rewrapped = DataKeyRecord {
        wrapped: vec![9; 60],
        master: "m2".into(),
        ..alice.clone()
    };
    assert_eq!(h.read(|tx| tx.data_keys()).await, vec![hub, rewrapped]);
}

async fn api_keys_store_list_touch_and_delete(h: &mut Harness<'_>) {
    for who in ["alice", "bob"] {
        let account = h.client(who);
        h.insert_account(&account).await;
    }
    h.insert_group(&group("team", &["alice"])).await;
    let (first, second) = (h.tick(), h.tick());
    // k2 is older than k1: listings go by creation, then id.
    let k1 = ApiKeyRecord {
        scopes: KeyScopes::parse("receive").unwrap(),
        expires: Some(second + Duration::days(30)),
        ..api_key_record("k1", "alice", second)
    };
    let k2 = ApiKeyRecord {
        scopes: KeyScopes::parse("send").unwrap(),
        last_used: Some(second),
        ..api_key_record("k2", "alice", first)
    };
    let k3 = api_key_record("k3", "bob", first);
    // Adding a key is no policy change; its event commits with it.
    for key in [&k1, &k2, &k3] {
        let key = key.clone();
        h.policy_stays("add an api key", move |tx| tx.insert_api_key(&key))
            .await;
    }
    assert_eq!(h.api_key("k1").await, Some(k1.clone()));
    assert_eq!(h.api_key("k2").await, Some(k2.clone()));
    assert_eq!(h.api_key("zz").await, None);
    assert_eq!(h.api_keys("alice").await, vec![k2.clone(), k1.clone()]);
    assert_eq!(h.api_keys("bob").await, vec![k3.clone()]);
    assert_eq!(h.api_keys("carol").await, vec![]);

    // Refused, changing nothing: a taken id (even for another account), an account that does
    // not exist, a group.
    for (kind, key) in [
        (ErrorKind::Conflict, api_key_record("k1", "bob", second)),
        (ErrorKind::NotFound, api_key_record("k9", "ghost", second)),
        (ErrorKind::NotFound, api_key_record("k9", "team", second)),
    ] {
        h.refused(kind, move |tx| tx.insert_api_key(&key)).await;
        assert_eq!(h.api_keys("alice").await, vec![k2.clone(), k1.clone()]);
        assert_eq!(h.api_keys("bob").await, vec![k3.clone()]);
        assert_eq!(h.api_key("k9").await, None);
    }
    // A unit that goes on after a refused insert commits the rest, and nothing of the refused
    // key.
    let (taken, k4) = (
        api_key_record("k3", "alice", second),
        api_key_record("k4", "bob", second),
    );
    let stored = k4.clone();
    let refused = h
        .write(move |tx| {
            let refused = tx.insert_api_key(&taken).map_err(|e| e.kind());
            tx.insert_api_key(&stored)?;
            Ok(refused)
        })
        .await;
    assert_eq!(refused, Err(ErrorKind::Conflict));
    assert_eq!(h.api_keys("bob").await, vec![k3.clone(), k4.clone()]);
    assert_eq!(h.api_keys("alice").await, vec![k2.clone(), k1.clone()]);

    // A use writes when, and nothing else; of an unknown key, nothing.
    let version = h.policy_version().await;
    let used = h.tick();
    assert!(h.write(move |tx| tx.touch_api_key("k1", used)).await);
    assert!(!h.write(move |tx| tx.touch_api_key("zz", used)).await);
    assert_eq!(
        h.api_key("k1").await,
        Some(ApiKeyRecord {
            last_used: Some(used),
            ..k1.clone()
        })
    );
    assert_eq!(
        h.policy_version().await,
        version,
        "a use is no policy change"
    );
    // Key bookkeeping records no events of its own.
    h.expect_events(&[]).await;

    // A key is deleted by its account only; its event commits with it.
    assert!(
        !h.write(|tx| tx.delete_api_key(&name("bob"), "k1")).await,
        "bob deleted alice's key"
    );
    assert!(h.api_key("k1").await.is_some());
    let revoke = h.admin_event("account alice");
    let deleted = h
        .change(vec![revoke], |tx| tx.delete_api_key(&name("alice"), "k1"))
        .await;
    assert!(deleted);
    assert_eq!(h.api_key("k1").await, None);
    assert!(!h.write(|tx| tx.delete_api_key(&name("alice"), "k1")).await);
    assert_eq!(h.api_keys("alice").await, vec![k2]);

    // Deleting the account deletes its keys, so a later account of the name has none.
    h.delete_account("alice").await;
    assert_eq!(h.api_key("k2").await, None);
    let new_alice = h.client("alice");
    h.insert_account(&new_alice).await;
    assert_eq!(h.api_keys("alice").await, vec![]);
    assert_eq!(h.api_keys("bob").await, vec![k3, k4]);
}

// ---------------------------------------------------------------------------------------------
// Nodes and their live sessions

fn node_info(h: &mut Harness<'_>, host: &str) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(),
        host: host.to_owned(),
        pid: 4242,
        started: h.tick(),
    }
}

fn live_session(
    node: &NodeInfo,
    id: u64,
    account: &str,
    started: OffsetDateTime,
) -> LiveSessionRecord {
    LiveSessionRecord {
        node: node.id,
        id,
        account: name(account),
        protocol: Protocol::Sftp,
        source: Some("192.0.2.10:50022".to_owned()),
        started,
        closing: None,
    }
}

impl Harness<'_> {
    async fn nodes(&self) -> Vec<NodeRecord> {
        self.read(|tx| tx.nodes()).await
    }

    async fn live_sessions(&self) -> Vec<LiveSessionRecord> {
        self.read(|tx| tx.live_session_list()).await
    }

    /// Inserts a live session in a unit of its own, as a login does; whether it went in.
    async fn insert_live_session(
        &self,
        session: &LiveSessionRecord,
        max: Option<u32>,
        alive_since: OffsetDateTime,
    ) -> bool {
        let session = session.clone();
        self.write(move |tx| tx.insert_live_session(&session, max, alive_since))
            .await
    }
}

async fn nodes_register_beat_and_leave(h: &mut Harness<'_>) {
    assert!(h.nodes().await.is_empty());
    let policy = h.policy_version().await;
    let (a, b) = (node_info(h, "a.example"), node_info(h, "b.example"));
    let (first, second) = (h.tick(), h.tick());
    let (x, y) = (a.clone(), b.clone());
    h.write(move |tx| {
        tx.put_node(&x, first)?;
        tx.put_node(&y, second)?;
        // A unit sees its own writes.
        assert_eq!(tx.nodes()?.len(), 2);
        Ok(())
    })
    .await;
    let by_id = |mut nodes: Vec<NodeRecord>| {
        nodes.sort_by_key(|n| n.node.id.to_string());
        nodes
    };
    let beat = |node: &NodeInfo, heartbeat| NodeRecord {
        node: node.clone(),
        heartbeat,
    };
    assert_eq!(
        h.nodes().await,
        by_id(vec![beat(&a, first), beat(&b, second)]),
        "every node, by id"
    );
    // A heartbeat is the same call: the row is written again, nothing else moves.
    let a = NodeInfo {
        pid: 4343,
        host: "a2.example".to_owned(),
        ..a
    };
    let later = h.tick();
    let x = a.clone();
    h.write(move |tx| tx.put_node(&x, later)).await;
    assert_eq!(
        h.nodes().await,
        by_id(vec![beat(&a, later), beat(&b, second)])
    );

    // A node leaves with its sessions, and only its own.
    let started = h.tick();
    for session in [
        live_session(&a, 1, "alice", started),
        live_session(&a, 2, "bob", started),
        live_session(&b, 1, "alice", started),
    ] {
        assert!(h.insert_live_session(&session, None, started).await);
    }
    let gone = a.id;
    assert!(h.write(move |tx| tx.delete_node(&gone)).await);
    assert_eq!(h.nodes().await, vec![beat(&b, second)]);
    assert_eq!(
        h.live_sessions().await,
        vec![live_session(&b, 1, "alice", started)]
    );
    assert!(
        !h.write(move |tx| tx.delete_node(&gone)).await,
        "gone already"
    );
    // Bookkeeping of nodes records no event and is no policy.
    h.expect_events(&[]).await;
    assert_eq!(h.policy_version().await, policy);
}

async fn live_sessions_count_close_and_end(h: &mut Harness<'_>) {
    let now = h.tick();
    let alive_since = now - Duration::seconds(15);
    let (a, b, dead) = (
        node_info(h, "a.example"),
        node_info(h, "b.example"),
        node_info(h, "dead.example"),
    );
    let unknown = node_info(h, "unknown.example");
    let (x, y, z) = (a.clone(), b.clone(), dead.clone());
    h.write(move |tx| {
        tx.put_node(&x, now)?;
        // At the limit: a heartbeat exactly at `alive_since` is alive.
        tx.put_node(&y, alive_since)?;
        tx.put_node(&z, now - Duration::seconds(20))
    })
    .await;
    let policy = h.policy_version().await;
    let started = h.tick();
    let session = |node: &NodeInfo, id, account| live_session(node, id, account, started);
    // Without a limit every session goes in, whatever its node.
    for s in [
        session(&a, 1, "alice"),
        session(&b, 1, "alice"),
        session(&dead, 1, "alice"),
        session(&unknown, 1, "alice"),
        session(&a, 2, "bob"),
    ] {
        assert!(h.insert_live_session(&s, None, alive_since).await);
    }
    // alice has two on live nodes (a, b): the dead and the unknown node's do not count.
    assert!(
        h.insert_live_session(&session(&a, 3, "alice"), Some(3), alive_since)
            .await
    );
    let before = h.live_sessions().await;
    assert_eq!(before.len(), 6);
    // Three now: refused, and nothing inserted.
    assert!(
        !h.insert_live_session(&session(&b, 2, "alice"), Some(3), alive_since)
            .await
    );
    assert_eq!(
        h.live_sessions().await,
        before,
        "a refused session left a row"
    );
    // A node's own sessions count even when its heartbeat is old: the dead node sees four.
    assert!(
        !h.insert_live_session(&session(&dead, 2, "alice"), Some(4), alive_since)
            .await
    );
    assert_eq!(h.live_sessions().await, before);
    assert!(
        h.insert_live_session(&session(&dead, 2, "alice"), Some(5), alive_since)
            .await
    );
    // Other accounts count apart; a limit of 0 refuses all.
    assert!(
        !h.insert_live_session(&session(&b, 3, "bob"), Some(1), alive_since)
            .await
    );
    assert!(
        !h.insert_live_session(&session(&b, 3, "carol"), Some(0), alive_since)
            .await
    );
    assert!(
        h.insert_live_session(&session(&b, 3, "carol"), Some(1), alive_since)
            .await
    );
    // A node has one session of an id: Conflict, changing nothing.
    let taken = session(&a, 1, "carol");
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.insert_live_session(&taken, None, alive_since)
    })
    .await;
    let taken = session(&a, 1, "carol");
    h.refused(ErrorKind::Conflict, move |tx| {
        tx.insert_live_session(&taken, Some(100), alive_since)
    })
    .await;
    // Listed by node, then id; a unit reads its own inserts.
    let mut expect = vec![
        session(&a, 1, "alice"),
        session(&a, 2, "bob"),
        session(&a, 3, "alice"),
        session(&b, 1, "alice"),
        session(&b, 3, "carol"),
        session(&dead, 1, "alice"),
        session(&dead, 2, "alice"),
        session(&unknown, 1, "alice"),
    ];
    expect.sort_by_key(|s| (s.node.to_string(), s.id));
    assert_eq!(h.live_sessions().await, expect);

    // Asked to close: the first reason stays; a session that is not there is not found.
    let (node_a, node_b) = (a.id, b.id);
    assert!(
        h.write(move |tx| tx.close_live_session(&node_a, 1, "closed by an administrator"))
            .await
    );
    assert!(
        h.write(move |tx| tx.close_live_session(&node_a, 1, "account disabled"))
            .await
    );
    assert!(
        !h.write(move |tx| tx.close_live_session(&node_a, 9, "x"))
            .await
    );
    assert_eq!(
        h.read(move |tx| tx.closing_sessions(&node_a)).await,
        vec![(1, "closed by an administrator".to_owned())]
    );
    assert!(
        h.read(move |tx| tx.closing_sessions(&node_b))
            .await
            .is_empty()
    );
    let listed = h.live_sessions().await;
    let closing: Vec<_> = listed.iter().filter(|s| s.closing.is_some()).collect();
    assert_eq!(closing.len(), 1);
    assert_eq!((closing[0].node, closing[0].id), (a.id, 1));
    // A closing session still counts until its node ends it (a:1, a:3 and b:1 are live).
    assert!(
        !h.insert_live_session(&session(&b, 4, "alice"), Some(3), alive_since)
            .await
    );

    // Ended: deleted once.
    assert!(h.write(move |tx| tx.delete_live_session(&node_a, 1)).await);
    assert!(!h.write(move |tx| tx.delete_live_session(&node_a, 1)).await);
    assert!(
        h.read(move |tx| tx.closing_sessions(&node_a))
            .await
            .is_empty()
    );
    assert!(
        h.insert_live_session(&session(&b, 4, "alice"), Some(3), alive_since)
            .await
    );
    // Sessions record no events of their own and are no policy.
    h.expect_events(&[]).await;
    assert_eq!(h.policy_version().await, policy);
}

// ---------------------------------------------------------------------------------------------
// Units of work

async fn a_failed_unit_changes_nothing(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.totp = Some(enrolment("JBSWY3DPEHPK3PXP", &["aa"]));
    h.insert_account(&alice).await;
    h.insert_group(&group("team", &["alice"])).await;
    let before = h.snapshot().await;

    // A unit that inserts an account and records its event, then fails: the unit's own error
    // comes back unchanged, and no account, no event and no new policy version remain.
    let bob = h.client("bob");
    let event = h.admin_event("bob");
    let error = h
        .store
        .write_with(Durability::Flush, move |tx| -> Result<()> {
            tx.insert_account(&bob)?;
            tx.record(&[event])?;
            // Until it fails, the unit sees its own writes.
            if tx.account(&name("bob"))?.is_none() {
                return Err(CoreError::internal("the unit's own insert is not visible"));
            }
            // A kind no store produces, to see it come back as it was.
            Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                "the unit changed its mind",
            ))
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::QuotaExceeded);
    assert_eq!(error.message(), "the unit changed its mind");
    assert_eq!(
        h.snapshot().await,
        before,
        "a failed unit changed the store"
    );
    assert_eq!(h.account("bob").await, None);

    // So does a relaxed unit that wrote to every kind of table before failing.
    let blob = BlobId::new();
    let delivery = h.delivery("alice", "carol", "x.txt", &blob, DeliveryState::Delivered);
    let ban = Ban {
        subject: BanSubject::parse("192.0.2.1").unwrap(),
        until: h.tick() + Duration::minutes(5),
        level: 1,
        reason: "r".to_owned(),
        created: h.tick(),
    };
    let token = token_record("t1", TokenKind::Access, "s1", "alice", h.tick());
    let carol = h.client("carol");
    let events = vec![h.admin_event("many"), h.admin_event("many")];
    let id = blob.clone();
    let error = h
        .store
        .write_with(Durability::Relaxed, move |tx| -> Result<()> {
            tx.insert_account(&carol)?;
            tx.update_account(
                &name("alice"),
                &AccountUpdate {
                    disabled: Some(true),
                    password_hash: Some(Some("$argon2id$x".to_owned())),
                    revoke_tokens: true,
                    ..AccountUpdate::default()
                },
            )?;
            tx.set_members(&name("team"), &[name("carol")])?;
            tx.put_route(&route("alice", "team", RouteEffect::Allow))?;
            tx.insert_deliveries(&[delivery], Some((&id, &b"x"[..])))?;
            tx.put_ban(&ban)?;
            tx.insert_tokens(&[token])?;
            assert!(tx.use_totp_step(&name("alice"), 42)?);
            assert!(tx.use_recovery_code(&name("alice"), &code("aa"))?);
            tx.record(&events)?;
            Err(CoreError::conflict("a later check failed"))
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(
        h.snapshot().await,
        before,
        "a failed unit changed the store"
    );
    assert_eq!(h.token("t1").await, None);
    assert_eq!(h.inline_blob(&blob).await, None);
    // The step and the code it spent are still unspent.
    assert!(h.use_recovery_code("alice", &code("aa")).await);
    assert!(h.use_totp_step("alice", 42).await);

    // A later unit works, and its event links to the head before the failures.
    let bob = h.client("bob");
    h.insert_account(&bob).await;
    assert_eq!(h.account("bob").await, Some(bob));
}

async fn a_panicking_unit_is_internal_and_changes_nothing(h: &mut Harness<'_>) {
    let alice = h.client("alice");
    h.insert_account(&alice).await;
    let before = h.snapshot().await;

    let bob = h.client("bob");
    let event = h.admin_event("bob");
    let error = h
        .store
        .write_with(Durability::Flush, move |tx| -> Result<()> {
            tx.insert_account(&bob)?;
            tx.record(&[event])?;
            panic!("this unit panics on purpose (conformance test)");
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    assert_eq!(
        h.snapshot().await,
        before,
        "a panicking unit changed the store"
    );

    let error = h
        .store
        .read_with(|tx| -> Result<()> {
            tx.accounts()?;
            panic!("this read unit panics on purpose (conformance test)");
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");

    // The store goes on.
    let bob = h.client("bob");
    h.insert_account(&bob).await;
}

/// A short read (`MetaStore::read_short`, which the store may run on the caller's thread) is
/// a read unit like any other: it sees every committed change, it is not writable, and a write
/// inside it is refused as Internal and changes nothing.
async fn short_reads_see_commits_and_refuse_writes(h: &mut Harness<'_>) {
    let alice = h.client("alice");
    h.insert_account(&alice).await;
    for _ in 0..3 {
        let (found, writable) = h
            .store
            .read_short_with(|tx| Ok((tx.account(&name("alice"))?, tx.writable())))
            .await
            .unwrap();
        assert_eq!(found.map(|a| a.name), Some(name("alice")));
        assert!(!writable);
    }
    let before = h.snapshot().await;
    let carol = h.client("carol");
    let error = h
        .store
        .read_short_with(move |tx| tx.insert_account(&carol))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    assert_eq!(h.snapshot().await, before);
    // A change committed after the first short reads is seen by the next one.
    let bob = h.client("bob");
    h.insert_account(&bob).await;
    let accounts = h.store.read_short_with(|tx| tx.accounts()).await.unwrap();
    assert_eq!(accounts.len(), 2);
}

async fn writes_in_a_read_unit_are_refused(h: &mut Harness<'_>) {
    let mut alice = h.client("alice");
    alice.totp = Some(enrolment("JBSWY3DPEHPK3PXP", &["aa"]));
    h.insert_account(&alice).await;
    let bob = h.client("bob");
    h.insert_account(&bob).await;
    h.insert_group(&group("team", &["alice"])).await;
    h.put_route(route("alice", "bob", RouteEffect::Allow)).await;
    let blob = BlobId::new();
    let delivery = h.delivery("alice", "bob", "a.txt", &blob, DeliveryState::Delivered);
    h.insert_deliveries(std::slice::from_ref(&delivery)).await;
    let ban = Ban {
        subject: BanSubject::parse("192.0.2.9").unwrap(),
        until: h.tick() + Duration::minutes(5),
        level: 1,
        reason: "r".to_owned(),
        created: h.tick(),
    };
    h.put_ban(&ban).await;
    let token = token_record("aa", TokenKind::Access, "s1", "alice", h.tick());
    let stored = token.clone();
    h.write(move |tx| tx.insert_tokens(&[stored])).await;
    let key = api_key_record("ka", "alice", h.tick());
    let stored = key.clone();
    h.write(move |tx| tx.insert_api_key(&stored)).await;

    assert!(h.write(|tx| Ok(tx.writable())).await);
    assert!(!h.read(|tx| Ok(tx.writable())).await);

    let id = delivery.id;
    let carol = h.client("carol");
    let event = h.admin_event("read");
    let later = h.tick() + Duration::days(1);
    let node = node_info(h, "a.example");
    let session = live_session(&node, 1, "alice", h.tick());
    let (stored_node, stored_session) = (node.clone(), session.clone());
    let (node_id, beating) = (node.id, node.clone());
    h.write(move |tx| {
        tx.put_node(&stored_node, later)?;
        tx.insert_live_session(&stored_session, None, later)
            .map(drop)
    })
    .await;
    let ops: Vec<(&str, Op)> = vec![
        ("insert_account", op(move |tx| tx.insert_account(&carol))),
        (
            "update_account",
            op(|tx| {
                tx.update_account(
                    &name("alice"),
                    &AccountUpdate {
                        password_hash: Some(None),
                        ..AccountUpdate::default()
                    },
                )
            }),
        ),
        ("delete_account", op(|tx| tx.delete_account(&name("bob")))),
        ("insert_group", op(|tx| tx.insert_group(&group("new", &[])))),
        (
            "set_members",
            op(|tx| tx.set_members(&name("team"), &[name("bob")])),
        ),
        ("delete_group", op(|tx| tx.delete_group(&name("team")))),
        (
            "put_route",
            op(|tx| tx.put_route(&route("bob", "alice", RouteEffect::Deny))),
        ),
        (
            "delete_route",
            op(|tx| tx.delete_route(&name("alice"), &name("bob"))),
        ),
        (
            "insert_deliveries",
            op(move |tx| {
                let mut new = delivery.clone();
                new.id = DeliveryId::new();
                new.name = file("b.txt");
                tx.insert_deliveries(&[new], None)
            }),
        ),
        (
            "transition",
            op(move |tx| {
                tx.transition(
                    &id,
                    &DeliveryState::LIVE,
                    DeliveryState::Acknowledged,
                    later,
                )
                .map(drop)
            }),
        ),
        (
            "rename_delivery",
            op(move |tx| tx.rename_delivery(&id, &file("c.txt"))),
        ),
        (
            "use_totp_step",
            op(|tx| tx.use_totp_step(&name("alice"), 7).map(drop)),
        ),
        (
            "use_recovery_code",
            op(|tx| tx.use_recovery_code(&name("alice"), &code("aa")).map(drop)),
        ),
        (
            "put_ban",
            op(move |tx| {
                tx.put_ban(&Ban {
                    level: 3,
                    ..ban.clone()
                })
            }),
        ),
        (
            "delete_ban",
            op(|tx| tx.delete_ban(&BanSubject::parse("192.0.2.9").unwrap())),
        ),
        (
            "add_offence",
            op(move |tx| tx.add_offence(&BanSubject::parse("192.0.2.9").unwrap(), later, 1)),
        ),
        (
            "forget_offences",
            op(|tx| {
                tx.forget_offences(&BanSubject::parse("192.0.2.9").unwrap())
                    .map(drop)
            }),
        ),
        (
            "prune_offences",
            op(move |tx| tx.prune_offences(later, 0, 10).map(drop)),
        ),
        ("record", op(move |tx| tx.record(&[event]))),
        (
            "insert_tokens",
            op(move |tx| {
                tx.insert_tokens(&[TokenRecord {
                    hash: "bb".to_owned(),
                    ..token.clone()
                }])
            }),
        ),
        ("take_token", op(|tx| tx.take_token("aa").map(drop))),
        (
            "delete_token_session",
            op(|tx| tx.delete_token_session("s1").map(drop)),
        ),
        (
            "delete_expired_tokens",
            op(move |tx| tx.delete_expired_tokens(later).map(drop)),
        ),
        (
            "insert_api_key",
            op(move |tx| tx.insert_api_key(&api_key_record("kb", "alice", later))),
        ),
        (
            "delete_api_key",
            op(|tx| tx.delete_api_key(&name("alice"), "ka").map(drop)),
        ),
        (
            "touch_api_key",
            op(move |tx| tx.touch_api_key("ka", later).map(drop)),
        ),
        ("put_node", op(move |tx| tx.put_node(&beating, later))),
        (
            "delete_node",
            op(move |tx| tx.delete_node(&node_id).map(drop)),
        ),
        (
            "insert_live_session",
            op(move |tx| tx.insert_live_session(&session, None, later).map(drop)),
        ),
        (
            "delete_live_session",
            op(move |tx| tx.delete_live_session(&node_id, 1).map(drop)),
        ),
        (
            "close_live_session",
            op(move |tx| tx.close_live_session(&node_id, 1, "kicked").map(drop)),
        ),
    ];
    let before = h.snapshot().await;
    for (what, write) in ops {
        let Err(error) = h.store.read_with(write).await else {
            panic!("{what} in a read unit should have been refused");
        };
        assert_eq!(error.kind(), ErrorKind::Internal, "{what}: {error}");
        assert_eq!(
            h.snapshot().await,
            before,
            "{what} in a read unit changed the store"
        );
    }
    // A read unit that carries on after its refused write and succeeds changes nothing
    // either.
    let answer = h
        .read(|tx| {
            let refused = tx.insert_account(&Account {
                name: name("dave"),
                kind: AccountKind::Client,
                disabled: false,
                password_hash: None,
                keys: Vec::new(),
                e2e_keys: Vec::new(),
                created: datetime!(2026-03-01 00:00 UTC),
                access: AccessPolicy::default(),
                totp: None,
                token_epoch: 0,
            });
            Ok((refused.map_err(|e| e.kind()), tx.account(&name("dave"))?))
        })
        .await;
    assert_eq!(answer, (Err(ErrorKind::Internal), None));
    assert_eq!(h.snapshot().await, before);
    assert_eq!(h.token("aa").await.map(|t| t.hash), Some("aa".to_owned()));
    assert_eq!(h.token("bb").await, None);
    assert_eq!(h.api_key("ka").await, Some(key));
    assert_eq!(h.api_key("kb").await, None);
    assert!(
        h.use_totp_step("alice", 7).await,
        "the step was spent by a read"
    );
}

async fn refused_calls_leave_nothing_in_a_unit_that_goes_on(h: &mut Harness<'_>) {
    // A unit may look at an error and carry on (and then commit). Whatever a refused call of a
    // single object had done before it found the problem must not commit with it.
    for who in ["alice", "bob"] {
        let account = h.client(who);
        h.insert_account(&account).await;
    }
    h.insert_group(&group("team", &["alice"])).await;
    h.put_route(route("alice", "team", RouteEffect::Allow))
        .await;
    h.put_route(route("team", "bob", RouteEffect::Allow)).await;
    h.put_route(route("bob", "alice", RouteEffect::Deny)).await;
    let blob = BlobId::new();
    let first = h.delivery("alice", "bob", "a.txt", &blob, DeliveryState::Delivered);
    let second = h.delivery("alice", "bob", "b.txt", &blob, DeliveryState::Delivered);
    let ended = h.delivery("alice", "bob", "b.txt", &blob, DeliveryState::Expired);
    h.insert_deliveries(&[first.clone(), second, ended.clone()])
        .await;
    let before = h.snapshot().await;

    let (first_id, ended_id) = (first.id, ended.id);
    let taken = h.client("team");
    let at = h.tick();
    let event = h.admin_event("went on");
    let expect = vec![event.clone()];
    let kinds = h
        .write(move |tx| {
            let calls: Vec<Result<()>> = vec![
                // Names of the other kind: no route, member or row of either may go.
                tx.delete_group(&name("alice")),
                tx.delete_account(&name("team")),
                tx.delete_account(&name("ghost")),
                tx.delete_group(&name("ghost")),
                // Live deliveries to and from it.
                tx.delete_account(&name("bob")),
                tx.insert_account(&taken),
                tx.insert_group(&group("alice", &[])),
                // Members checked before anything is written.
                tx.insert_group(&group("new", &["alice", "ghost"])),
                tx.set_members(&name("team"), &[name("bob"), name("ghost")]),
                tx.set_members(&name("ghost"), &[name("bob")]),
                tx.update_account(
                    &name("ghost"),
                    &AccountUpdate {
                        disabled: Some(true),
                        ..AccountUpdate::default()
                    },
                ),
                tx.put_route(&route("bob", "ghost", RouteEffect::Allow)),
                tx.delete_route(&name("bob"), &name("team")),
                tx.rename_delivery(&first_id, &file("b.txt")),
                tx.transition(
                    &ended_id,
                    &[DeliveryState::Expired],
                    DeliveryState::Delivered,
                    at,
                )
                .map(drop),
                tx.delete_ban(&BanSubject::parse("192.0.2.1").unwrap()),
            ];
            tx.record(&[event])?;
            Ok(calls
                .into_iter()
                .map(|call| call.map_err(|e| e.kind()))
                .collect::<Vec<_>>())
        })
        .await;
    use ErrorKind::{Conflict, NotFound};
    assert_eq!(
        kinds,
        vec![
            Err(NotFound),
            Err(NotFound),
            Err(NotFound),
            Err(NotFound),
            Err(Conflict),
            Err(Conflict),
            Err(Conflict),
            Err(NotFound),
            Err(NotFound),
            Err(NotFound),
            Err(NotFound),
            Err(NotFound),
            Err(NotFound),
            Err(Conflict),
            Err(Conflict),
            Err(NotFound),
        ]
    );
    h.expect_events(&expect).await;
    let after = h.snapshot().await;
    assert_eq!(
        Snapshot {
            records: before.records.clone(),
            head: before.head.clone(),
            ..after
        },
        before,
        "a refused call left something behind"
    );
}

async fn policy_version_moves_with_policy_changes_only(h: &mut Harness<'_>) {
    let start = h.policy_version().await;
    // Accounts: added (either kind), disabled and enabled, access changed, tokens revoked.
    let mut alice = h.client("alice");
    alice.totp = Some(enrolment("JBSWY3DPEHPK3PXP", &["aa"]));
    h.policy_moves("insert a client", move |tx| tx.insert_account(&alice))
        .await;
    let bob = h.admin("bob");
    h.policy_moves("insert an admin", move |tx| tx.insert_account(&bob))
        .await;
    let update =
        |update: AccountUpdate| move |tx: &mut dyn Tx| tx.update_account(&name("alice"), &update);
    h.policy_moves(
        "disable",
        update(AccountUpdate {
            disabled: Some(true),
            ..AccountUpdate::default()
        }),
    )
    .await;
    h.policy_moves(
        "enable",
        update(AccountUpdate {
            disabled: Some(false),
            ..AccountUpdate::default()
        }),
    )
    .await;
    h.policy_moves(
        "change access",
        update(AccountUpdate {
            access: Some(restricted_access()),
            ..AccountUpdate::default()
        }),
    )
    .await;
    h.policy_moves(
        "revoke tokens",
        update(AccountUpdate {
            revoke_tokens: true,
            ..AccountUpdate::default()
        }),
    )
    .await;
    // Groups and members.
    h.policy_moves("insert an empty group", |tx| {
        tx.insert_group(&group("team", &[]))
    })
    .await;
    h.policy_moves("insert a group with a member", |tx| {
        tx.insert_group(&group("pair", &["alice"]))
    })
    .await;
    h.policy_moves("add a member", |tx| {
        tx.set_members(&name("team"), &[name("alice")])
    })
    .await;
    h.policy_moves("swap a member", |tx| {
        tx.set_members(&name("team"), &[name("bob")])
    })
    .await;
    h.policy_moves("remove a member", |tx| tx.set_members(&name("team"), &[]))
        .await;
    // Routes.
    h.policy_moves("add a route", |tx| {
        tx.put_route(&route("alice", "team", RouteEffect::Allow))
    })
    .await;
    h.policy_moves("replace a route", |tx| {
        tx.put_route(&route("alice", "team", RouteEffect::Deny))
    })
    .await;
    h.policy_moves("delete a route", |tx| {
        tx.delete_route(&name("alice"), &name("team"))
    })
    .await;
    h.policy_moves("add a route to a group", |tx| {
        tx.put_route(&route("bob", "pair", RouteEffect::Allow))
    })
    .await;
    h.policy_moves("delete a group", |tx| tx.delete_group(&name("pair")))
        .await;
    let carol = h.client("carol");
    h.policy_moves("insert carol", move |tx| tx.insert_account(&carol))
        .await;
    h.policy_moves("delete an account", |tx| tx.delete_account(&name("carol")))
        .await;

    // Login bookkeeping, credentials and keys are no policy.
    h.policy_stays("spend a TOTP step", |tx| {
        assert!(tx.use_totp_step(&name("alice"), 10)?);
        Ok(())
    })
    .await;
    h.policy_stays("spend a recovery code", |tx| {
        assert!(tx.use_recovery_code(&name("alice"), &code("aa"))?);
        Ok(())
    })
    .await;
    h.policy_stays(
        "change the password",
        update(AccountUpdate {
            password_hash: Some(Some("$argon2id$x".to_owned())),
            ..AccountUpdate::default()
        }),
    )
    .await;
    h.policy_stays(
        "change the keys",
        update(AccountUpdate {
            keys: Some(vec![ed25519_key()]),
            ..AccountUpdate::default()
        }),
    )
    .await;
    let e2e = e2e_key("laptop", h.tick());
    h.policy_stays(
        "change the e2e keys",
        update(AccountUpdate {
            e2e_keys: Some(vec![e2e]),
            ..AccountUpdate::default()
        }),
    )
    .await;
    h.policy_stays(
        "enrol TOTP anew",
        update(AccountUpdate {
            totp: Some(Some(enrolment("KRSXG5CTMVRXEZLU", &[]))),
            ..AccountUpdate::default()
        }),
    )
    .await;
    // A write that changes nothing is no change.
    h.policy_stays("an empty update", update(AccountUpdate::default()))
        .await;
    h.policy_stays(
        "enable an enabled account",
        update(AccountUpdate {
            disabled: Some(false),
            ..AccountUpdate::default()
        }),
    )
    .await;
    h.policy_stays(
        "set the same access",
        update(AccountUpdate {
            access: Some(restricted_access()),
            ..AccountUpdate::default()
        }),
    )
    .await;
    h.policy_moves("add a route", |tx| {
        tx.put_route(&route("bob", "alice", RouteEffect::Allow))
    })
    .await;
    h.policy_stays("put the same route again", |tx| {
        tx.put_route(&route("bob", "alice", RouteEffect::Allow))
    })
    .await;
    h.policy_stays("set the same members", |tx| {
        tx.set_members(&name("team"), &[])
    })
    .await;
    // Tokens, bans, deliveries and events are no policy either.
    let later = h.tick() + Duration::days(1);
    let (a, b) = (
        token_record("aa", TokenKind::Access, "s1", "alice", later),
        token_record("bb", TokenKind::Refresh, "s2", "alice", later),
    );
    h.policy_stays("insert tokens", move |tx| tx.insert_tokens(&[a, b]))
        .await;
    h.policy_stays("take a token", |tx| tx.take_token("aa").map(drop))
        .await;
    h.policy_stays("delete a session's tokens", |tx| {
        tx.delete_token_session("s2").map(drop)
    })
    .await;
    h.policy_stays("delete expired tokens", move |tx| {
        tx.delete_expired_tokens(later).map(drop)
    })
    .await;
    let ban = Ban {
        subject: BanSubject::parse("192.0.2.9").unwrap(),
        until: later,
        level: 1,
        reason: "r".to_owned(),
        created: h.tick(),
    };
    let subject = ban.subject.clone();
    h.policy_stays("put a ban", move |tx| tx.put_ban(&ban))
        .await;
    h.policy_stays("delete a ban", move |tx| tx.delete_ban(&subject))
        .await;
    let delivery = h.delivery(
        "alice",
        "bob",
        "a.txt",
        &BlobId::new(),
        DeliveryState::Delivered,
    );
    let id = delivery.id;
    h.policy_stays("insert a delivery", move |tx| {
        tx.insert_deliveries(&[delivery], None)
    })
    .await;
    h.policy_stays("rename a delivery", move |tx| {
        tx.rename_delivery(&id, &file("b.txt"))
    })
    .await;
    h.policy_stays("move a delivery", move |tx| {
        tx.transition(
            &id,
            &DeliveryState::LIVE,
            DeliveryState::Acknowledged,
            later,
        )
        .map(drop)
    })
    .await;
    h.policy_stays("record events only", |_| Ok(())).await;
    assert!(h.policy_version().await > start);
}

async fn stats_count_every_unit(h: &mut Harness<'_>) {
    // Nothing but the units counted here runs between two readings of the counters.
    let start = h.store.stats();
    assert_eq!(h.read(|tx| tx.accounts()).await, Vec::new());
    let one_read = h.store.stats();
    assert_eq!(one_read.reads, start.reads + 1);
    assert_eq!(
        (one_read.writes, one_read.commits, one_read.flushes),
        (start.writes, start.commits, start.flushes)
    );
    assert_eq!(one_read.hops(), start.hops() + 1);
    // A read unit that fails is a unit too.
    h.store
        .read_with(|_| -> Result<()> { Err(CoreError::not_found("nothing")) })
        .await
        .unwrap_err();
    let failed_read = h.store.stats();
    assert_eq!(failed_read.reads, one_read.reads + 1);
    assert_eq!(failed_read.writes, one_read.writes);

    // A flushed write: one unit, one commit, one flush.
    let alice = h.client("alice");
    let first = h.admin_event("alice");
    let (event, account) = (first.clone(), alice.clone());
    h.store
        .write_with(Durability::Flush, move |tx| {
            tx.insert_account(&account)?;
            tx.record(&[event])
        })
        .await
        .unwrap();
    let flushed = h.store.stats();
    assert_eq!(flushed.reads, failed_read.reads);
    assert_eq!(flushed.writes, failed_read.writes + 1);
    assert_eq!(flushed.commits, failed_read.commits + 1);
    assert_eq!(flushed.flushes, failed_read.flushes + 1);

    // A relaxed write: committed without a flush of its own.
    let second = h.event(EventKind::Login, "alice");
    let event = second.clone();
    h.store
        .write_with(Durability::Relaxed, move |tx| tx.record(&[event]))
        .await
        .unwrap();
    let relaxed = h.store.stats();
    assert_eq!(relaxed.writes, flushed.writes + 1);
    assert_eq!(relaxed.commits, flushed.commits + 1);
    assert_eq!(relaxed.flushes, flushed.flushes);

    // A failed write is a unit, but commits nothing.
    let again = alice.clone();
    h.store
        .write_with(Durability::Flush, move |tx| tx.insert_account(&again))
        .await
        .unwrap_err();
    let failed = h.store.stats();
    assert_eq!(failed.writes, relaxed.writes + 1);
    assert_eq!(
        (failed.reads, failed.commits, failed.flushes),
        (relaxed.reads, relaxed.commits, relaxed.flushes)
    );
    assert_eq!(failed.hops(), start.hops() + 5);
    h.expect_events(&[first, second]).await;
}

// ---------------------------------------------------------------------------------------------
// SQLite only

#[tokio::test]
async fn chain_walk_names_the_first_tampered_event() {
    // The end-to-end tests tamper through the binary; this checks, straight on the file, that
    // the store hands a tampered trail to the verifier as it is, for the simplest cases.
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
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(tamper).unwrap();
        drop(conn);
        let report = h.verify(None).await;
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
    event_tap_scenario(
        &store,
        |store, sender| store.set_event_tap(sender),
        |store| store.dropped_events(),
    )
    .await;
}

/// The event tap's promises, on either store: one tap only; committed records only, in order
/// with their chain fields, whatever the durability; a full channel drops and counts, never
/// stalling a commit.
async fn event_tap_scenario<S: MetaStore>(
    store: &S,
    set_tap: impl Fn(&S, tokio::sync::mpsc::Sender<AuditRecord>) -> bool,
    dropped: impl Fn(&S) -> u64,
) {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(3);
    assert!(set_tap(store, sender.clone()));
    assert!(!set_tap(store, sender), "a second tap is refused");
    let mut h = Harness::new(store);
    let first = h.event(EventKind::Login, "a");
    let second = h.event(EventKind::Login, "b");
    let event = first.clone();
    store
        .write_with(Durability::Flush, move |tx| tx.record(&[event]))
        .await
        .unwrap();
    let event = second.clone();
    store
        .write_with(Durability::Relaxed, move |tx| tx.record(&[event]))
        .await
        .unwrap();
    // A refused change hands nothing over, nor does a unit that recorded and then failed.
    let (fresh, repeated) = (h.event(EventKind::Login, "c"), first.clone());
    store
        .write_with(Durability::Flush, move |tx| tx.record(&[fresh, repeated]))
        .await
        .unwrap_err();
    let failed = h.event(EventKind::Login, "d");
    store
        .write_with(Durability::Flush, move |tx| -> Result<()> {
            tx.record(&[failed])?;
            Err(CoreError::invalid("changed its mind"))
        })
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
    store
        .write_with(Durability::Flush, move |tx| tx.record(&flood))
        .await
        .unwrap();
    assert_eq!(dropped(store), 2);
    assert_eq!(h.events(EventQuery::default()).await.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_answers_every_unit_and_fails_one_alone() {
    // Many write units at once, one of them failing on a name conflict after it recorded its
    // event. The writer thread commits the units waiting together (a savepoint each), so this
    // checks that each unit gets its own answer (the delivery it wrote, read back inside its
    // own savepoint), that the failed one left nothing, not even a gap in the chain, and that
    // the units cost at most one commit each. How many share a commit depends on scheduling,
    // so the count is printed, not asserted; fewer commits than units is group commit at work.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("meta.db"))
            .await
            .unwrap(),
    );
    let mut h = Harness::new(&*store);
    let blob = BlobId::new();
    let taken = h.delivery("alice", "bob", "taken.txt", &blob, DeliveryState::Delivered);
    h.insert_deliveries(std::slice::from_ref(&taken)).await;
    let before_stats = store.stats();
    let before = h.snapshot().await;

    const UNITS: usize = 50;
    const FAILING: usize = 17;
    let start = Arc::new(tokio::sync::Barrier::new(UNITS));
    let mut tasks = Vec::new();
    let mut expected_events = Vec::new();
    for i in 0..UNITS {
        let file_name = if i == FAILING {
            "taken.txt".to_owned()
        } else {
            format!("f{i}.txt")
        };
        let delivery = h.delivery("alice", "bob", &file_name, &blob, DeliveryState::Delivered);
        let event = h.event(EventKind::DeliveryStored, &delivery.id.to_string());
        if i != FAILING {
            expected_events.push(event.clone());
        }
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let written = delivery.clone();
            let answer = store
                .write_with(Durability::Flush, move |tx| {
                    tx.record(&[event])?;
                    tx.insert_deliveries(std::slice::from_ref(&written), None)?;
                    tx.delivery(&written.id)
                })
                .await;
            (i, delivery, answer)
        }));
    }
    let mut failed = None;
    for task in tasks {
        let (i, delivery, answer) = task.await.unwrap();
        if i == FAILING {
            let error = answer.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Conflict, "{error}");
            failed = Some(delivery);
        } else {
            assert_eq!(answer.unwrap(), Some(delivery), "unit {i}");
        }
    }
    let failed = failed.unwrap();

    let after_stats = store.stats();
    let (writes, commits, flushes) = (
        after_stats.writes - before_stats.writes,
        after_stats.commits - before_stats.commits,
        after_stats.flushes - before_stats.flushes,
    );
    eprintln!("{writes} write units, {commits} commits");
    assert_eq!(writes, UNITS as u64);
    assert!(commits >= 1);
    assert!(
        commits <= UNITS as u64,
        "{commits} commits for {UNITS} units"
    );
    assert_eq!(flushes, commits, "every unit asked for a flush");

    // The failed unit left nothing: its delivery, its event.
    assert_eq!(h.delivery_by_id(failed.id).await, None);
    assert_eq!(h.delivery_by_id(taken.id).await, Some(taken));
    let after = h.snapshot().await;
    assert_eq!(after.deliveries.len(), before.deliveries.len() + UNITS - 1);
    // The others' events are all there, once each, in commit order (which is any order), and
    // the chain is intact without a gap where the failed unit's event was.
    let all = h.events(EventQuery::default()).await;
    let new: HashSet<Uuid> = all[h.events_seen..].iter().map(|e| e.id).collect();
    let expected: HashSet<Uuid> = expected_events.iter().map(|e| e.id).collect();
    assert_eq!(all.len() - h.events_seen, UNITS - 1);
    assert_eq!(new, expected);
    let report = h.verify(None).await;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, all.len() as u64);
    let seqs: Vec<u64> = h
        .read(|tx| tx.audit_records(&EventQuery::default(), 0, 1000))
        .await
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
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
    // Asked again (and several times at once), the settings hold.
    let (a, b, c) = tokio::join!(store.settings(), store.settings(), store.settings());
    for other in [a, b, c] {
        assert_eq!(other.unwrap(), settings);
    }
    // A relaxed commit lowers `synchronous` for itself only.
    let mut h = Harness::new(&store);
    let event = h.event(EventKind::Login, "relaxed");
    h.record(&[event]).await;
    assert_eq!(store.settings().await.unwrap(), settings);

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
    // A closed store refuses units as Transient.
    let error = store.read_with(|tx| tx.accounts()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    drop(store);

    let reopened = SqliteStore::open(&path).await.unwrap();
    let h = Harness::new(&reopened);
    assert_eq!(h.snapshot().await, before);
    // Two accounts, a group, a route, an upload and its delivery; the policy version too.
    assert_eq!(before.records.len(), 6);
    assert!(before.policy_version > 0);
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
            store
                .write_with(Durability::Flush, move |tx| {
                    tx.insert_account(&account)?;
                    tx.record(&[event])
                })
                .await
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
    let (on_cli, on_server) = (Harness::new(&cli), Harness::new(&server));
    assert_eq!(on_cli.accounts().await.len(), 10);
    assert_eq!(on_server.events(EventQuery::default()).await.len(), 10);
    // Both see one policy version, moved by each side's inserts.
    let version = on_cli.policy_version().await;
    assert!(version >= 10);
    assert_eq!(on_server.policy_version().await, version);
    // Each writer read the head under the write lock: one chain, whichever side wrote.
    let report = on_cli.verify(None).await;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, 10);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only (each skipped without MAILROOM_TEST_PG_URL, as the backend is)

/// The CA that signed the test server's TLS certificate (scripts/services makes one); in CI
/// its absence fails the test, elsewhere it is skipped.
fn pg_ca() -> Option<PathBuf> {
    match std::env::var_os("MAILROOM_TEST_PG_CA") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI must test the PostgreSQL store over TLS: set MAILROOM_TEST_PG_CA")
        }
        _ => {
            eprintln!("MAILROOM_TEST_PG_CA is not set: PostgreSQL over TLS is not tested");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_tls_is_used_and_verified_against_the_ca_file() {
    // A URL asking for TLS gets it, with the server's certificate checked against `ca_file`;
    // without that CA (Mozilla's roots only) the same server is refused at connect.
    let Some(server) = pg_server() else { return };
    let Some(ca) = pg_ca() else { return };
    let database = PgDatabase::create(&server).await;
    let url = format!("{}?sslmode=verify-full", database.url);
    let store = PgStore::connect(PgOptions {
        url: url.clone(),
        ca_file: Some(ca),
        connections: 1,
    })
    .await
    .unwrap();
    let mut h = Harness::new(&store);
    let carol = h.client("carol");
    h.insert_account(&carol).await;
    assert_eq!(h.account("carol").await, Some(carol));
    let encrypted = database
        .admin(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND datname = current_database() AND application_name = 'mailroom'",
        )
        .await;
    assert_eq!(encrypted, ["1"], "the store's connection is not encrypted");
    store.close().await;

    let refused = PgStore::connect(PgOptions {
        url,
        ca_file: None,
        connections: 1,
    })
    .await
    .unwrap_err();
    let mut chain = refused.to_string();
    let mut source = std::error::Error::source(&refused);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(chain.contains("certificate"), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_nodes_writing_at_once_keep_one_chain() {
    // Two stores on one database are two nodes of one hub. Both start at once (one migrates,
    // the other waits for the migration lock), then many units of both record events at the
    // same time: every unit is answered, and the trail is one intact chain without a gap,
    // because each unit read the head under the cluster-wide write lock.
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    let (a, b) = tokio::join!(database.store(4), database.store(4));
    let nodes = [Arc::new(a), Arc::new(b)];
    let mut h = Harness::new(&*nodes[0]);

    const TASKS: usize = 8;
    const UNITS: usize = 50;
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    let mut expected = HashSet::new();
    for task in 0..TASKS {
        let events: Vec<Event> = (0..UNITS)
            .map(|unit| h.event(EventKind::Login, &format!("task {task} unit {unit}")))
            .collect();
        expected.extend(events.iter().map(|e| e.id));
        let (node, start) = (nodes[task % 2].clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for (unit, event) in events.into_iter().enumerate() {
                // Both durabilities take the same lock.
                let durability = if unit % 2 == 0 {
                    Durability::Flush
                } else {
                    Durability::Relaxed
                };
                node.write_with(durability, move |tx| tx.record(&[event]))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let on_b = Harness::new(&*nodes[1]);
    let all = on_b.events(EventQuery::default()).await;
    assert_eq!(all.len(), TASKS * UNITS);
    assert_eq!(all.iter().map(|e| e.id).collect::<HashSet<_>>(), expected);
    let report = on_b.verify(None).await;
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checked, (TASKS * UNITS) as u64);
    let seqs: Vec<u64> = on_b
        .read(|tx| tx.audit_records(&EventQuery::default(), 0, u32::MAX))
        .await
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=(TASKS * UNITS) as u64).collect::<Vec<_>>());
    for node in &nodes {
        node.close().await;
    }
}

/// Queued jobs on `event`, all due at `due`.
fn queued_jobs(event: Uuid, due: OffsetDateTime, n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| Job {
            id: Uuid::now_v7(),
            rule: "pdf-alert".to_owned(),
            handler: Handler::parse(&format!("webhook:https://hooks.example.test/{i}")).unwrap(),
            event,
            state: JobState::Queued,
            attempts: 0,
            due,
            created: due,
            updated: due,
            last_error: None,
        })
        .collect()
}

/// The worker's claim as the Hub makes it (`Hub::claim_jobs`): the due jobs, each leased
/// until `now + lease` with its attempt counted, in one write unit.
async fn claim(node: &PgStore, now: OffsetDateTime, limit: u32, lease: Duration) -> Vec<Job> {
    node.write_with(Durability::Relaxed, move |tx| {
        let mut claimed = Vec::new();
        for mut job in tx.due_jobs(now, limit)? {
            job.attempts += 1;
            job.due = now + lease;
            job.updated = now;
            if tx.update_job(&job, &[JobState::Queued])? {
                claimed.push(job);
            }
        }
        Ok(claimed)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_nodes_claim_each_job_once_and_take_over_a_lapsed_lease() {
    // Two nodes' workers claim from one queue at once: every job is claimed exactly once.
    // Nobody takes a leased job until its lease runs out; then another node takes it over,
    // the same job with its attempt counted again.
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    let (a, b) = tokio::join!(database.store(3), database.store(3));
    let nodes = [Arc::new(a), Arc::new(b)];
    let mut h = Harness::new(&*nodes[0]);
    let event = h.event(EventKind::DeliveryDelivered, "d1");
    let event_id = event.id;
    h.record(std::slice::from_ref(&event)).await;
    let at = h.tick();
    const JOBS: usize = 40;
    let jobs = queued_jobs(event_id, at, JOBS);
    let ids: HashSet<Uuid> = jobs.iter().map(|j| j.id).collect();
    h.write(move |tx| tx.insert_jobs(&jobs)).await;

    let lease = Duration::seconds(60);
    let mut workers = Vec::new();
    for worker in 0..6 {
        let node = nodes[worker % 2].clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = claim(&node, at, 3, lease).await;
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|j| (j.id, j.attempts)));
            }
        }));
    }
    let mut claimed = Vec::new();
    for worker in workers {
        claimed.extend(worker.await.unwrap());
    }
    assert_eq!(claimed.len(), JOBS, "each job claimed once: {claimed:?}");
    assert_eq!(
        claimed.iter().map(|(id, _)| *id).collect::<HashSet<_>>(),
        ids
    );
    assert!(claimed.iter().all(|(_, attempts)| *attempts == 1));

    // Within the lease, neither node takes any; after it, node B takes them all over.
    assert!(
        claim(&nodes[1], at + Duration::seconds(59), 100, lease)
            .await
            .is_empty()
    );
    assert!(
        claim(&nodes[0], at + Duration::seconds(59), 100, lease)
            .await
            .is_empty()
    );
    let again = claim(&nodes[1], at + lease, 100, lease).await;
    assert_eq!(again.iter().map(|j| j.id).collect::<HashSet<_>>(), ids);
    assert!(
        again
            .iter()
            .all(|j| j.attempts == 2 && j.due == at + lease + lease)
    );
    assert!(claim(&nodes[0], at + lease, 100, lease).await.is_empty());
    for node in &nodes {
        node.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_claim_skips_the_jobs_another_transaction_holds() {
    // The claim's select locks what it returns (`FOR UPDATE SKIP LOCKED`) and passes over
    // rows another transaction holds, so two claims never take one job even without the
    // write lock; a read unit locks nothing and sees every due job.
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    let store = database.store(2).await;
    let mut h = Harness::new(&store);
    let event = h.event(EventKind::DeliveryDelivered, "d1");
    let event_id = event.id;
    h.record(std::slice::from_ref(&event)).await;
    let at = h.tick();
    let jobs = queued_jobs(event_id, at, 2);
    let (held, free) = (jobs[0].id, jobs[1].id);
    h.write(move |tx| tx.insert_jobs(&jobs)).await;

    // Another client (another node's transaction, outside the write lock) holds one row.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let url = database.url.clone();
    let holder = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = client.transaction().unwrap();
        let rows = tx
            .query(
                "SELECT id FROM jobs WHERE id = $1 FOR UPDATE",
                &[&held.to_string()],
            )
            .unwrap();
        assert_eq!(rows.len(), 1);
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        tx.rollback().unwrap();
    });
    locked_rx.recv().unwrap();

    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let claimed = store
        .write_with(Durability::Relaxed, move |tx| tx.due_jobs(at, 10))
        .await
        .unwrap();
    assert_eq!(
        ids(claimed),
        [free],
        "the held job is skipped, not waited for"
    );
    let listed = store
        .read_with(move |tx| tx.due_jobs(at, 10))
        .await
        .unwrap();
    assert_eq!(
        ids(listed).len(),
        2,
        "a read unit sees both and waits for nothing"
    );

    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let claimed = store
        .write_with(Durability::Relaxed, move |tx| tx.due_jobs(at, 10))
        .await
        .unwrap();
    assert_eq!(ids(claimed).len(), 2, "released, it is claimed again");
    store.close().await;
}

#[tokio::test]
async fn pg_relaxed_units_commit_without_waiting_for_the_log() {
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    let store = database.store(2).await;
    // Asked several times, so both connections answer.
    for _ in 0..3 {
        let relaxed = store
            .setting_in_write(Durability::Relaxed, "synchronous_commit")
            .await
            .unwrap();
        assert_eq!(relaxed, "off");
        let flushed = store
            .setting_in_write(Durability::Flush, "synchronous_commit")
            .await
            .unwrap();
        assert_eq!(flushed, "on", "a flushed unit waits for the log");
    }
    // The relaxed setting lasts for its own transaction only.
    let read = store.read_with(|_| Ok(())).await.map(|()| "read unit ran");
    assert_eq!(read, Ok("read unit ran"));
    assert_eq!(
        store
            .setting_in_write(Durability::Flush, "synchronous_commit")
            .await
            .unwrap(),
        "on"
    );
    // A setting the server does not know is an error, not an answer.
    let error = store
        .setting_in_write(Durability::Flush, "no_such_setting")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal);
    store.close().await;
}

#[tokio::test]
async fn pg_a_killed_connection_is_replaced() {
    // The server terminates the store's connection between units (a restart, a failover, an
    // operator): the next unit is retried on a new connection or answered Transient, never
    // anything else, and the one after it works.
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    let store = database.store(1).await;
    let mut h = Harness::new(&store);
    let alice = h.client("alice");
    h.insert_account(&alice).await;
    const KILL: &str = "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
                        WHERE datname = current_database() AND pid <> pg_backend_pid()";

    assert_eq!(database.admin(KILL).await, ["t"], "one connection killed");
    match store.read_with(|tx| tx.accounts()).await {
        Ok(accounts) => assert_eq!(accounts.len(), 1),
        Err(error) => assert_eq!(error.kind(), ErrorKind::Transient, "{error}"),
    }
    assert_eq!(h.accounts().await.len(), 1);

    assert_eq!(database.admin(KILL).await, ["t"]);
    let bob = h.client("bob");
    let event = h.admin_event("bob");
    let recorded = event.clone();
    let written = store
        .write_with(Durability::Flush, move |tx| {
            tx.insert_account(&bob)?;
            tx.record(&[recorded])
        })
        .await;
    match &written {
        Ok(()) => h.expect_events(&[event]).await,
        Err(error) => assert_eq!(error.kind(), ErrorKind::Transient, "{error}"),
    }
    let carol = h.client("carol");
    h.insert_account(&carol).await;
    let names: Vec<String> = h
        .accounts()
        .await
        .into_iter()
        .map(|a| a.name.as_str().to_owned())
        .collect();
    let expected: &[&str] = if written.is_ok() {
        &["alice", "bob", "carol"]
    } else {
        &["alice", "carol"]
    };
    assert_eq!(names, expected);
    let report = h.verify(None).await;
    assert!(report.is_intact(), "{report:?}");
    store.close().await;
}

#[tokio::test]
async fn pg_a_changed_or_newer_migration_is_refused() {
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    let store = database.store(1).await;
    store.close().await;
    drop(store);
    // Connecting again finds everything applied and changes nothing.
    database.store(1).await.close().await;

    let original = database
        .admin("SELECT sha256 FROM schema_migrations WHERE version = 1")
        .await;
    assert_eq!(original.len(), 1);
    database
        .admin("UPDATE schema_migrations SET sha256 = 'stale' WHERE version = 1")
        .await;
    let refused = PgStore::connect(database.options(1)).await.unwrap_err();
    let MetaError::Migrate { reason, .. } = &refused else {
        panic!("{refused:?}");
    };
    assert!(reason.contains("differs"), "{refused}");

    database
        .admin("DELETE FROM schema_migrations WHERE version = 1")
        .await;
    database
        .admin(
            "INSERT INTO schema_migrations (version, description, sha256, applied) \
             VALUES (999, 'future', 'x', 0)",
        )
        .await;
    let refused = PgStore::connect(database.options(1)).await.unwrap_err();
    assert!(refused.to_string().contains("newer Mailroom"), "{refused}");
}

#[tokio::test]
async fn pg_a_unit_that_goes_on_after_a_failed_statement_keeps_nothing() {
    // The store's own calls never rely on a statement failing, but a statement may fail all
    // the same (here a trigger from outside refuses one ban). PostgreSQL has then aborted the
    // transaction, and its COMMIT would quietly roll back: a unit that looks at the error and
    // goes on must get that error back, and nothing of it may be kept.
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    let store = database.store(1).await;
    let mut h = Harness::new(&store);
    let alice = h.client("alice");
    h.insert_account(&alice).await;
    database
        .admin(
            "CREATE FUNCTION refuse_ban() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$; \
             CREATE TRIGGER refuse_ban BEFORE INSERT ON bans FOR EACH ROW \
             WHEN (NEW.subject = '192.0.2.66') EXECUTE FUNCTION refuse_ban()",
        )
        .await;
    let before = h.snapshot().await;
    let ban = Ban {
        subject: BanSubject::parse("192.0.2.66").unwrap(),
        until: h.tick() + Duration::minutes(5),
        level: 1,
        reason: "r".to_owned(),
        created: h.tick(),
    };
    let bob = h.client("bob");
    let event = h.admin_event("bob");
    let error = store
        .write_with(Durability::Flush, move |tx| {
            let refused = tx.put_ban(&ban).map_err(|e| e.kind());
            // Later calls answer the same error without reaching the database.
            let later = tx.insert_account(&bob).map_err(|e| e.kind());
            let _ = tx.record(&[event]);
            Ok((refused, later))
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    assert_eq!(error.message(), "metadata store error");
    assert_eq!(h.snapshot().await, before);
    // The connection is fine for the next unit.
    let bob = h.client("bob");
    h.insert_account(&bob).await;
    store.close().await;
}

#[tokio::test]
async fn pg_unreachable_server_is_refused_without_its_password() {
    // No server needed: nothing listens on port 1.
    let options = PgOptions {
        url: "postgres://mailroom:s3cret@127.0.0.1:1/hub?connect_timeout=2".to_owned(),
        ca_file: None,
        connections: 1,
    };
    let error = PgStore::connect(options).await.unwrap_err();
    assert!(matches!(error, MetaError::Connect { .. }), "{error:?}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("127.0.0.1:1/hub"), "{shown}");
}

#[tokio::test]
async fn pg_the_event_tap_gets_committed_events_only() {
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    let store = database.store(2).await;
    event_tap_scenario(
        &store,
        |store, sender| store.set_event_tap(sender),
        |store| store.dropped_events(),
    )
    .await;
    // Inline blobs, as the diagnostics list them.
    assert_eq!(store.inline_blob_ids().await.unwrap(), Vec::<BlobId>::new());
    store.close().await;
    let error = store.read_with(|tx| tx.accounts()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
}

#[tokio::test]
async fn pg_units_cost_few_round_trips() {
    // What the bench prints per file operation, pinned for the two kinds of unit a transfer
    // makes, once every statement is prepared on the (one) connection: a read unit of one
    // lookup is BEGIN, the lookup and COMMIT; an upload's write unit (a delivery with its
    // inline blob and two events) is the BEGIN batch with the lock, the chain head, the
    // events, the delivery with its blob, and COMMIT.
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    let store = database.store(1).await;
    let mut h = Harness::new(&store);
    let alice = h.client("alice");
    h.insert_account(&alice).await;
    let upload = |h: &mut Harness<'_>, name: &str| {
        let blob = BlobId::new();
        let delivery = h.delivery("alice", "bob", name, &blob, DeliveryState::Delivered);
        let events = vec![
            h.event(EventKind::Upload, name),
            h.event(EventKind::DeliveryStored, name),
        ];
        move |tx: &mut dyn Tx| {
            tx.record(&events)?;
            tx.insert_deliveries(&[delivery], Some((&blob, &b"small"[..])))
        }
    };
    let lookup = |tx: &mut dyn Tx| tx.account(&name("alice"));

    // Prepared by the first use.
    store
        .write_with(Durability::Flush, upload(&mut h, "a.txt"))
        .await
        .unwrap();
    store.read_with(lookup).await.unwrap();

    let before = store.round_trips();
    store.read_with(lookup).await.unwrap();
    assert_eq!(store.round_trips() - before, 3, "a read unit of one lookup");

    let unit = upload(&mut h, "b.txt");
    let before = store.round_trips();
    store.write_with(Durability::Flush, unit).await.unwrap();
    assert_eq!(store.round_trips() - before, 5, "an upload's write unit");
    assert_eq!(store.inline_blob_ids().await.unwrap().len(), 2);
    store.close().await;
}

#[tokio::test]
async fn pg_a_session_asked_to_close_wakes_the_listening_nodes() {
    // Only PostgreSQL tells other processes of changes; the others are polled.
    assert!(MemoryMeta::new().changes().is_none());
    assert!(
        SqliteStore::open_in_memory()
            .await
            .unwrap()
            .changes()
            .is_none()
    );
    let Some(server) = pg_server() else { return };
    let database = PgDatabase::create(&server).await;
    // Two nodes: one asks, the other listens.
    let (asking, listening) = (database.store(1).await, database.store(1).await);
    let changes = listening.changes().unwrap();
    let same = listening.changes().unwrap();
    assert!(Arc::ptr_eq(&changes, &same), "one listener per store");
    // The listener wakes once when it starts listening (it may have missed something).
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.notified())
        .await
        .expect("the listener never started");
    let quiet = std::time::Duration::from_millis(500);
    let woken = std::time::Duration::from_secs(2);

    let mut h = Harness::new(&asking);
    let node = node_info(&mut h, "a.example");
    let session = live_session(&node, 1, "alice", h.tick());
    let (x, y, since) = (node.clone(), session.clone(), h.tick());
    h.write(move |tx| {
        tx.put_node(&x, since)?;
        tx.insert_live_session(&y, None, since).map(drop)
    })
    .await;
    // Inserting sessions and heartbeats tells nobody.
    assert!(
        tokio::time::timeout(quiet, changes.notified())
            .await
            .is_err()
    );
    // A unit that asked and then failed tells nobody either: nothing of it committed.
    let id = node.id;
    let error = asking
        .write_with(Durability::Flush, move |tx| -> Result<()> {
            tx.close_live_session(&id, 1, "closed by an administrator")?;
            Err(CoreError::conflict("a later check failed"))
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert!(
        tokio::time::timeout(quiet, changes.notified())
            .await
            .is_err(),
        "a rolled-back unit woke the listener"
    );
    // Committed, it wakes the listener.
    assert!(
        h.write(move |tx| tx.close_live_session(&id, 1, "closed by an administrator"))
            .await
    );
    tokio::time::timeout(woken, changes.notified())
        .await
        .expect("a session asked to close did not wake the listener");
    // So do changes of accounts (a disable, say) and of bans.
    let alice = h.client("alice");
    h.insert_account(&alice).await;
    tokio::time::timeout(woken, changes.notified())
        .await
        .expect("an account change did not wake the listener");
    let ban = Ban {
        subject: BanSubject::parse("192.0.2.9").unwrap(),
        until: h.tick() + Duration::minutes(5),
        level: 1,
        reason: "r".to_owned(),
        created: h.tick(),
    };
    h.put_ban(&ban).await;
    tokio::time::timeout(woken, changes.notified())
        .await
        .expect("a ban did not wake the listener");

    // A killed listening connection is opened again, and wakes the node once it is back.
    const KILL: &str = "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
                        WHERE datname = current_database() AND pid <> pg_backend_pid() \
                        AND query = 'LISTEN mailroom_sessions'";
    assert_eq!(database.admin(KILL).await, ["1"]);
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.notified())
        .await
        .expect("the listener did not come back");
    let bob = h.client("bob");
    h.insert_account(&bob).await;
    tokio::time::timeout(woken, changes.notified())
        .await
        .expect("the listener that came back hears changes");
    asking.close().await;
    listening.close().await;
}

// ---------------------------------------------------------------------------------------------
// The harness

/// Records per page when the harness walks the chain: small, so every walk pages.
const CHAIN_PAGE: u32 = 4;

/// A write for the read-unit check.
type Op = Box<dyn FnOnce(&mut dyn Tx) -> Result<()> + Send>;

fn op(write: impl FnOnce(&mut dyn Tx) -> Result<()> + Send + 'static) -> Op {
    Box::new(write)
}

/// Everything a store can list, for "nothing changed" checks; read in one read unit.
#[derive(Debug, PartialEq)]
struct Snapshot {
    policy_version: u64,
    accounts: Vec<Account>,
    groups: Vec<Group>,
    routes: Vec<Route>,
    deliveries: Vec<Delivery>,
    live_blobs: HashSet<BlobId>,
    bans: Vec<Ban>,
    jobs: Vec<Job>,
    nodes: Vec<NodeRecord>,
    live_sessions: Vec<LiveSessionRecord>,
    records: Vec<AuditRecord>,
    head: Option<ChainHead>,
}

/// Walks the whole chain in pages inside one unit, as the Hub's `verify_audit` does.
fn walk_chain(tx: &mut dyn Tx, expect: Option<Checkpoint>) -> Result<ChainReport> {
    let mut verifier = ChainVerifier::new(tx.audit_legacy_through()?, expect);
    let mut after = 0;
    'pages: loop {
        let page = tx.audit_records(&EventQuery::default(), after, CHAIN_PAGE)?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        for record in &page {
            if !verifier.push(record) {
                break 'pages;
            }
        }
    }
    Ok(verifier.finish())
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

    // ----- test data -------------------------------------------------------------------------

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
            e2e_keys: Vec::new(),
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
            e2e: false,
        }
    }

    // ----- units -----------------------------------------------------------------------------

    /// Runs a read unit that must succeed.
    async fn read<T: Send + 'static>(
        &self,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> T {
        self.store.read_with(unit).await.unwrap()
    }

    /// Runs a flushed write unit that must succeed, recording nothing on its own: for
    /// bookkeeping without events, and for units that record their own.
    async fn write<T: Send + 'static>(
        &self,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> T {
        self.store
            .write_with(Durability::Flush, unit)
            .await
            .unwrap()
    }

    /// Runs `change` and records `events` in one flushed unit that must succeed, then checks
    /// that exactly those events were recorded.
    async fn change<T: Send + 'static>(
        &mut self,
        events: Vec<Event>,
        change: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> T {
        self.change_with(Durability::Flush, events, change).await
    }

    /// [`Harness::change`] with the given durability.
    async fn change_with<T: Send + 'static>(
        &mut self,
        durability: Durability,
        events: Vec<Event>,
        change: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> T {
        let recorded = events.clone();
        let output = self
            .store
            .write_with(durability, move |tx| {
                let output = change(tx)?;
                tx.record(&recorded)?;
                Ok(output)
            })
            .await
            .unwrap();
        self.expect_events(&events).await;
        output
    }

    /// Runs a unit that records an event and then makes `change`, which must be refused with
    /// `kind`; checks that nothing changed, the event included.
    async fn refused<T: std::fmt::Debug + Send + 'static>(
        &mut self,
        kind: ErrorKind,
        change: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> CoreError {
        let before = self.snapshot().await;
        let event = self.admin_event("refused");
        let error = self
            .store
            .write_with(Durability::Flush, move |tx| {
                tx.record(&[event])?;
                change(tx)
            })
            .await
            .expect_err("the change should have been refused");
        assert_eq!(error.kind(), kind, "{error}");
        assert!(!error.message().is_empty());
        assert!(!error.message().contains("SELECT"), "{error}");
        assert_eq!(
            self.snapshot().await,
            before,
            "a refused change changed the store"
        );
        error
    }

    /// Runs a change that must move the policy version on inside its own unit.
    async fn policy_moves<T: Send + 'static>(
        &mut self,
        what: &'static str,
        change: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> T {
        self.policy_change(what, true, change).await
    }

    /// Runs a change that must leave the policy version where it was.
    async fn policy_stays<T: Send + 'static>(
        &mut self,
        what: &'static str,
        change: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> T {
        self.policy_change(what, false, change).await
    }

    async fn policy_change<T: Send + 'static>(
        &mut self,
        what: &'static str,
        moves: bool,
        change: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> T {
        let committed = self.policy_version().await;
        let event = self.admin_event(what);
        let (before, after, output) = self
            .change(vec![event], move |tx| {
                let before = tx.policy_version()?;
                let output = change(tx)?;
                let after = tx.policy_version()?;
                Ok((before, after, output))
            })
            .await;
        assert_eq!(
            before, committed,
            "{what}: a unit starts at the committed version"
        );
        if moves {
            assert!(
                after > before,
                "{what}: must move the policy version in its own transaction ({before} -> {after})"
            );
        } else {
            assert_eq!(after, before, "{what}: is no policy change");
        }
        assert_eq!(
            self.policy_version().await,
            after,
            "{what}: the committed version"
        );
        output
    }

    // ----- checks ----------------------------------------------------------------------------

    async fn snapshot(&self) -> Snapshot {
        self.read(|tx| {
            Ok(Snapshot {
                policy_version: tx.policy_version()?,
                accounts: tx.accounts()?,
                groups: tx.groups()?,
                routes: tx.routes()?,
                deliveries: tx.deliveries(&DeliveryQuery::default())?,
                live_blobs: tx.live_blobs()?,
                bans: tx.bans()?,
                jobs: tx.jobs(&JobQuery {
                    state: None,
                    limit: u32::MAX,
                })?,
                nodes: tx.nodes()?,
                live_sessions: tx.live_session_list()?,
                records: tx.audit_records(&EventQuery::default(), 0, u32::MAX)?,
                head: tx.audit_head()?,
            })
        })
        .await
    }

    /// Checks that the events recorded since the last check are exactly `expect`, in order,
    /// and that the whole trail is one intact chain ending at the head.
    async fn expect_events(&mut self, expect: &[Event]) {
        let (all, report, head) = self
            .read(|tx| {
                Ok((
                    tx.events(&EventQuery::default())?,
                    walk_chain(tx, None)?,
                    tx.audit_head()?,
                ))
            })
            .await;
        assert!(all.len() >= self.events_seen, "events disappeared");
        assert_eq!(
            &all[self.events_seen..],
            expect,
            "events recorded by the last change"
        );
        self.events_seen = all.len();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.checked, all.len() as u64);
        assert_eq!(report.head, head);
        assert_eq!(head.map_or(0, |head| head.events), all.len() as u64);
    }

    /// The chain walked in pages, as the Hub's `verify_audit` does.
    async fn verify(&self, expect: Option<Checkpoint>) -> ChainReport {
        self.read(move |tx| walk_chain(tx, expect)).await
    }

    // ----- reads -----------------------------------------------------------------------------

    async fn policy_version(&self) -> u64 {
        self.read(|tx| tx.policy_version()).await
    }

    async fn account(&self, who: &str) -> Option<Account> {
        let who = name(who);
        self.read(move |tx| tx.account(&who)).await
    }

    async fn accounts(&self) -> Vec<Account> {
        self.read(|tx| tx.accounts()).await
    }

    async fn group(&self, which: &str) -> Option<Group> {
        let which = name(which);
        self.read(move |tx| tx.group(&which)).await
    }

    async fn groups(&self) -> Vec<Group> {
        self.read(|tx| tx.groups()).await
    }

    async fn routes(&self) -> Vec<Route> {
        self.read(|tx| tx.routes()).await
    }

    async fn delivery_by_id(&self, id: DeliveryId) -> Option<Delivery> {
        self.read(move |tx| tx.delivery(&id)).await
    }

    async fn deliveries(&self, query: DeliveryQuery) -> Vec<Delivery> {
        self.read(move |tx| tx.deliveries(&query)).await
    }

    async fn live_blobs(&self) -> HashSet<BlobId> {
        self.read(|tx| tx.live_blobs()).await
    }

    async fn blob_in_use(&self, blob: &BlobId) -> bool {
        let blob = blob.clone();
        self.read(move |tx| tx.blob_in_use(&blob)).await
    }

    async fn inline_blob(&self, blob: &BlobId) -> Option<Vec<u8>> {
        let blob = blob.clone();
        self.read(move |tx| tx.inline_blob(&blob)).await
    }

    async fn events(&self, query: EventQuery) -> Vec<Event> {
        self.read(move |tx| tx.events(&query)).await
    }

    async fn ban(&self, subject: &BanSubject) -> Option<Ban> {
        let subject = subject.clone();
        self.read(move |tx| tx.ban(&subject)).await
    }

    async fn token(&self, hash: &'static str) -> Option<TokenRecord> {
        self.read(move |tx| tx.token(hash)).await
    }

    async fn api_key(&self, id: &'static str) -> Option<ApiKeyRecord> {
        self.read(move |tx| tx.api_key(id)).await
    }

    async fn api_keys(&self, who: &str) -> Vec<ApiKeyRecord> {
        let who = name(who);
        self.read(move |tx| tx.api_keys(&who)).await
    }

    // ----- one-operation changes -------------------------------------------------------------

    async fn insert_account(&mut self, account: &Account) {
        let event = self.admin_event(account.name.as_str());
        let account = account.clone();
        self.change(vec![event], move |tx| tx.insert_account(&account))
            .await;
    }

    async fn update_account(&mut self, who: &str, update: AccountUpdate) {
        let event = self.admin_event(who);
        let who = name(who);
        self.change(vec![event], move |tx| tx.update_account(&who, &update))
            .await;
    }

    async fn delete_account(&mut self, who: &str) {
        let event = self.admin_event(who);
        let who = name(who);
        self.change(vec![event], move |tx| tx.delete_account(&who))
            .await;
    }

    async fn insert_group(&mut self, group: &Group) {
        let event = self.admin_event(group.name.as_str());
        let group = group.clone();
        self.change(vec![event], move |tx| tx.insert_group(&group))
            .await;
    }

    async fn set_members(&mut self, group: &str, members: &[&str]) {
        let event = self.admin_event(group);
        let group = name(group);
        let members: Vec<AccountName> = members.iter().map(|member| name(member)).collect();
        self.change(vec![event], move |tx| tx.set_members(&group, &members))
            .await;
    }

    async fn delete_group(&mut self, group: &str) {
        let event = self.admin_event(group);
        let group = name(group);
        self.change(vec![event], move |tx| tx.delete_group(&group))
            .await;
    }

    async fn put_route(&mut self, route: Route) {
        let event = self.admin_event(&format!("{} -> {}", route.from, route.to));
        self.change(vec![event], move |tx| tx.put_route(&route))
            .await;
    }

    async fn delete_route(&mut self, from: &str, to: &str) {
        let event = self.admin_event(&format!("{from} -> {to}"));
        let (from, to) = (name(from), name(to));
        self.change(vec![event], move |tx| tx.delete_route(&from, &to))
            .await;
    }

    /// Inserts deliveries with an upload event and one stored event each.
    async fn insert_deliveries(&mut self, deliveries: &[Delivery]) {
        let mut events = vec![self.event(EventKind::Upload, "/outbox")];
        for delivery in deliveries {
            events.push(self.event(EventKind::DeliveryStored, &delivery.id.to_string()));
        }
        let deliveries = deliveries.to_vec();
        self.change(events, move |tx| tx.insert_deliveries(&deliveries, None))
            .await;
    }

    /// Moves a delivery that must move, returning the time of the move.
    async fn transition(
        &mut self,
        delivery: &Delivery,
        from: &[DeliveryState],
        to: DeliveryState,
    ) -> OffsetDateTime {
        let event = self.event(EventKind::DeliveryDelivered, &delivery.id.to_string());
        let (id, at, from) = (delivery.id, event.time, from.to_vec());
        let moved = self
            .change(vec![event], move |tx| tx.transition(&id, &from, to, at))
            .await;
        assert!(moved, "{id} should have moved to {to:?}");
        at
    }

    async fn rename(&mut self, delivery: &Delivery, new_name: &str) {
        let event = self.event(EventKind::DeliveryRenamed, &delivery.id.to_string());
        let (id, new_name) = (delivery.id, file(new_name));
        self.change(vec![event], move |tx| tx.rename_delivery(&id, &new_name))
            .await;
    }

    async fn put_ban(&mut self, ban: &Ban) {
        let event = self.event(EventKind::Ban, &ban.subject.key());
        let ban = ban.clone();
        self.change(vec![event], move |tx| tx.put_ban(&ban)).await;
    }

    async fn delete_ban(&mut self, subject: &BanSubject) {
        let event = self.event(EventKind::Ban, &subject.key());
        let subject = subject.clone();
        self.change(vec![event], move |tx| tx.delete_ban(&subject))
            .await;
    }

    /// Records events alone, relaxed (as logins and refusals are).
    async fn record(&mut self, events: &[Event]) {
        self.change_with(Durability::Relaxed, events.to_vec(), |_| Ok(()))
            .await;
    }

    /// Spends a TOTP step in a unit of its own, as a login step does; no event.
    async fn use_totp_step(&self, who: &str, step: u64) -> bool {
        let who = name(who);
        self.write(move |tx| tx.use_totp_step(&who, step)).await
    }

    /// Spends a recovery code in a unit of its own, as a login step does; no event.
    async fn use_recovery_code(&self, who: &str, code_hash: &str) -> bool {
        let (who, code_hash) = (name(who), code_hash.to_owned());
        self.write(move |tx| tx.use_recovery_code(&who, &code_hash))
            .await
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
        require_e2e: false,
    }
}

/// A recovery code's hash as stored: 64 hex digits.
fn code(pair: &str) -> String {
    pair.repeat(32)
}

/// A TOTP enrolment with recovery codes `code(pair)` for each pair given.
fn enrolment(secret: &str, codes: &[&str]) -> TotpEnrolment {
    TotpEnrolment {
        secret: Secret::new(secret.to_owned()),
        last_step: None,
        recovery: codes.iter().map(|pair| code(pair)).collect(),
    }
}

/// An access policy with every field away from its default.
fn restricted_access() -> AccessPolicy {
    AccessPolicy {
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
        notices: Notices {
            email: Some("alice@example.test".to_owned()),
            mode: NotifyMode::Digest,
            receipts: true,
        },
    }
}

fn ed25519_key() -> AuthorizedKey {
    AuthorizedKey::parse(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop",
    )
    .unwrap()
}

/// A key whose blob holds every awkward byte (NUL, 0xFF) so BLOB storage is exercised.
/// An end-to-end key of a fresh age X25519 recipient.
fn e2e_key(comment: &str, added: OffsetDateTime) -> E2eKey {
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    E2eKey::new(&recipient, comment, added).unwrap()
}

fn odd_key(seed: u8) -> AuthorizedKey {
    AuthorizedKey {
        algorithm: "ssh-rsa".to_owned(),
        blob: vec![0, 0xff, seed, 0, 0x80, 0x7f, seed.wrapping_mul(31)],
        comment: format!("key {seed} with spaces and ü"),
    }
}
