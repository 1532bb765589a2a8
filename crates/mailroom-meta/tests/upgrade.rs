//! A database written by an earlier Mailroom opens with its data intact: the sqlx-era schema
//! (migrations 1 to 7, recorded in `_sqlx_migrations`) with an account, a group, a route, a
//! live delivery and its inline blob is brought to the current schema by `SqliteStore::open`,
//! and every row reads back through the units of work. A database from a newer build, or with
//! an applied migration that differs from ours, is refused and left as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailroom_core::{AccountName, DeliveryQuery, DeliveryState, Durability, MetaStoreExt};
use mailroom_meta::{MetaError, SqliteStore};

/// The migrations of the sqlx era, as they shipped.
const SQLX_ERA: [(i64, &str); 7] = [
    (1, include_str!("../migrations/sqlite/0001_initial.sql")),
    (
        2,
        include_str!("../migrations/sqlite/0002_inline_blobs.sql"),
    ),
    (
        3,
        include_str!("../migrations/sqlite/0003_delivery_name_indexes.sql"),
    ),
    (
        4,
        include_str!("../migrations/sqlite/0004_delivery_state_indexes.sql"),
    ),
    (5, include_str!("../migrations/sqlite/0005_audit_chain.sql")),
    (6, include_str!("../migrations/sqlite/0006_access.sql")),
    (7, include_str!("../migrations/sqlite/0007_tokens.sql")),
];

/// Writes an sqlx-era database with some data at `path`.
fn old_database(path: &std::path::Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = WAL; \
         CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);",
    )
    .unwrap();
    for (version, sql) in SQLX_ERA {
        db.execute_batch(sql).unwrap();
        db.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, 'old', 1, x'00', 0)",
            [version],
        )
        .unwrap();
    }
    db.execute_batch(
        "INSERT INTO principals (name, kind) VALUES ('alice', 'account'), ('bob', 'account'), ('team', 'group');
         INSERT INTO accounts (name, kind, disabled, password_hash, created) VALUES
             ('alice', 'client', 0, NULL, 0), ('bob', 'client', 0, NULL, 0);
         INSERT INTO groups (name) VALUES ('team');
         INSERT INTO group_members (group_name, member) VALUES ('team', 'bob');
         INSERT INTO routes (from_name, to_name, effect) VALUES ('alice', 'team', 'allow');
         INSERT INTO deliveries (id, batch_id, sender, recipient, target, name, size, sha256, blob_id, state, created, updated)
             VALUES ('0190a0a0-0000-7000-8000-000000000001', '0190a0a0-0000-7000-8000-000000000001',
                     'alice', 'bob', 'team', 'a.txt', 5, 'x', '0123456789abcdef0123456789abcdef',
                     'delivered', 1, 1);
         INSERT INTO inline_blobs (blob_id, content) VALUES ('0123456789abcdef0123456789abcdef', x'68656c6c6f');",
    )
    .unwrap();
}

#[tokio::test]
async fn an_sqlx_era_database_opens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    old_database(&path);
    let store = SqliteStore::open(&path).await.unwrap();
    let name = |s: &str| AccountName::parse(s).unwrap();
    let (accounts, groups, routes, deliveries, version) = store
        .read_with(move |tx| {
            let deliveries = tx.deliveries(&DeliveryQuery {
                recipient: Some(name("bob")),
                states: DeliveryState::VISIBLE.to_vec(),
                ..DeliveryQuery::default()
            })?;
            let content = tx.first_delivery_with_content(&DeliveryQuery {
                recipient: Some(name("bob")),
                sender: Some(name("alice")),
                states: DeliveryState::LIVE.to_vec(),
                ..DeliveryQuery::default()
            })?;
            Ok((
                tx.accounts()?.len(),
                tx.groups()?,
                tx.routes()?.len(),
                (deliveries.len(), content.and_then(|(_, c)| c)),
                tx.policy_version()?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(accounts, 2);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].members, vec![AccountName::parse("bob").unwrap()]);
    assert_eq!(routes, 1);
    assert_eq!(deliveries.0, 1);
    assert_eq!(deliveries.1.as_deref(), Some(&b"hello"[..]));
    // The version table starts at 0; a change moves it.
    let moved = store
        .write_with(Durability::Flush, |tx| {
            tx.delete_route(
                &AccountName::parse("alice").unwrap(),
                &AccountName::parse("team").unwrap(),
            )?;
            tx.policy_version()
        })
        .await
        .unwrap();
    assert!(moved > version);
    store.close().await;
    // Opening again applies nothing more and changes nothing.
    let store = SqliteStore::open(&path).await.unwrap();
    let routes = store.read_with(|tx| tx.routes()).await.unwrap();
    assert!(routes.is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_database_of_a_newer_build_or_an_edited_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    SqliteStore::open(&path).await.unwrap().close().await;
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute(
        "INSERT INTO schema_migrations (version, description, sha256, applied) \
         VALUES (9999, 'from the future', 'x', 0)",
        [],
    )
    .unwrap();
    drop(db);
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(err, MetaError::Migrate { .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute("DELETE FROM schema_migrations WHERE version = 9999", [])
        .unwrap();
    db.execute(
        "UPDATE schema_migrations SET sha256 = 'edited' WHERE version = 1",
        [],
    )
    .unwrap();
    drop(db);
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(err.to_string().contains("differs"), "{err}");
}
