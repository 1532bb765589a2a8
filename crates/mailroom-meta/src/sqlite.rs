//! [`SqliteStore`]: the metadata store in one SQLite file, in WAL mode with `synchronous = FULL`.
//!
//! Every change and its audit events commit in one `BEGIN IMMEDIATE` transaction: the write
//! lock is taken up front, so the checks a method makes (is the name free, does the member
//! exist) still hold when it writes, and a second process (the admin CLI) waits on the busy
//! timeout instead of failing half-way. Reads of more than one statement run in a read
//! transaction, so they see one snapshot.
//!
//! Deliveries, transitions and events of flush durability go through the group-commit
//! writer of [`crate::batch`]; relaxed accounting (logins, downloads, pick-up marks) commits
//! on a connection with `synchronous = NORMAL`, which survives a crash of the process and is
//! made durable by the next flushed commit, as WAL frames are written in order.
//!
//! Policy is not decided here: which transitions are allowed, who may rename, and which events
//! to write all come from the caller.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mailroom_core::{
    Account, AccountName, AuditRecord, AuthorizedKey, Ban, BanSubject, BlobId, ChainHead,
    ChainReport, ChainVerifier, Checkpoint, CoreError, Delivery, DeliveryId, DeliveryQuery,
    DeliveryState, Durability, Event, EventQuery, FileName, Group, InboxUsage, MetaStore, Result,
    Route, RouteEffect, TokenRecord,
};
use mailroom_core::{GENESIS_HASH, chain_hash};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};
use time::OffsetDateTime;

use crate::batch::{Batcher, Done, Op};
use crate::convert::{
    self, account_columns, account_name, audit_columns, column, delivery_columns, event_columns,
    nanos, size_to_db, token_columns,
};
use crate::error::{MetaError, corrupt, is_unique_violation, storage, violates};
use crate::tap::EventTap;

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a free connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections to a database file. SQLite has one writer at a time; a few readers suffice.
const MAX_CONNECTIONS: u32 = 4;

/// The states of `DeliveryState::LIVE` as an SQL list, for `concat!`. It must be the list of
/// the core and of the partial index `deliveries_live_name` in the migration, or "live" would
/// mean one thing for names and another for blobs; a unit test checks all three agree.
macro_rules! live_states {
    () => {
        "('stored', 'checking', 'delivered', 'picked-up')"
    };
}

/// The metadata store on SQLite.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection with `synchronous = NORMAL`, for relaxed writes.
    relaxed: SqlitePool,
    /// The group-commit writer for flushed writes.
    batcher: Batcher,
    /// Where committed audit records go after commit, when an observer is set.
    tap: Arc<EventTap>,
}

/// The connection settings SQLite reports, for diagnostics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `PRAGMA journal_mode`: `wal` for a file, `memory` in memory.
    pub journal_mode: String,
    /// `PRAGMA synchronous`: 2 is FULL.
    pub synchronous: i64,
    /// `PRAGMA foreign_keys`.
    pub foreign_keys: bool,
    /// `PRAGMA busy_timeout`, in milliseconds.
    pub busy_timeout_ms: i64,
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (readable by its owner only) if missing, and
    /// brings its schema up to date.
    ///
    /// The file runs in WAL mode with `synchronous = FULL`: once a method has returned, its
    /// change survives a power cut. Another process may open the same file meanwhile; writers
    /// wait up to 10 s for each other.
    pub async fn open(path: &Path) -> Result<SqliteStore, MetaError> {
        let location = path.display().to_string();
        create_private_file(path)
            .await
            .map_err(|source| MetaError::Create {
                location: location.clone(),
                source,
            })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|source| MetaError::Open {
                location: location.clone(),
                source,
            })?;
        let relaxed = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(|source| MetaError::Open {
                location: location.clone(),
                source,
            })?;
        let tap = Arc::new(EventTap::default());
        let store = SqliteStore {
            batcher: Batcher::start(pool.clone(), tap.clone()),
            pool,
            relaxed,
            tap,
        };
        store.migrate(&location).await?;
        store.check_durability(&location).await?;
        Ok(store)
    }

    /// Opens a fresh database in memory, for tests. It lives as long as the store: one
    /// connection that is never closed, so every query sees the same database.
    pub async fn open_in_memory() -> Result<SqliteStore, MetaError> {
        let location = ":memory:".to_owned();
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| MetaError::Open {
                location: location.clone(),
                source,
            })?;
        // One connection holds the whole database: relaxed writes share it.
        let tap = Arc::new(EventTap::default());
        let store = SqliteStore {
            batcher: Batcher::start(pool.clone(), tap.clone()),
            relaxed: pool.clone(),
            pool,
            tap,
        };
        store.migrate(&location).await?;
        Ok(store)
    }

    /// The ids of every blob kept inline, for diagnostics and tests.
    pub async fn inline_blob_ids(&self) -> Result<Vec<BlobId>> {
        sqlx::query_scalar::<_, String>("SELECT blob_id FROM inline_blobs ORDER BY blob_id")
            .fetch_all(&self.pool)
            .await
            .map_err(storage("inline_blob_ids"))?
            .iter()
            .map(|id| BlobId::parse(id).map_err(|_| CoreError::internal("metadata store error")))
            .collect()
    }

    /// The settings in force on a connection of the pool.
    pub async fn settings(&self) -> Result<StoreSettings> {
        self.read_settings().await.map_err(storage("settings"))
    }

    /// Closes every connection, waiting for those in use. WAL files are checkpointed as the
    /// last connection closes. Later calls fail as Transient.
    pub async fn close(&self) {
        self.relaxed.close().await;
        self.pool.close().await;
    }

    /// Sends every audit record to `sender` once the transaction holding it has committed, in
    /// commit order. Handing over never waits: when the channel is full the record is dropped
    /// and counted ([`SqliteStore::dropped_events`]), so a slow observer never stalls a
    /// commit. Returns `false`, changing nothing, if an observer was set already.
    pub fn set_event_tap(&self, sender: tokio::sync::mpsc::Sender<AuditRecord>) -> bool {
        self.tap.set(sender)
    }

    /// Audit records the event tap dropped because its channel was full or closed.
    pub fn dropped_events(&self) -> u64 {
        self.tap.dropped()
    }

    /// Commits a write transaction, then hands its audit records to the event tap.
    async fn commit(
        &self,
        tx: Transaction<'static, Sqlite>,
        recorded: Vec<AuditRecord>,
        operation: &'static str,
    ) -> Result<()> {
        tx.commit().await.map_err(storage(operation))?;
        self.tap.committed(recorded);
        Ok(())
    }

    /// Applies the migrations this build embeds.
    async fn migrate(&self, location: &str) -> Result<(), MetaError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|source| MetaError::Migrate {
                location: location.to_owned(),
                source,
            })
    }

    /// Refuses to run when SQLite did not take the durability settings, rather than lose
    /// committed changes later.
    async fn check_durability(&self, location: &str) -> Result<(), MetaError> {
        let settings = self
            .read_settings()
            .await
            .map_err(|source| MetaError::Open {
                location: location.to_owned(),
                source,
            })?;
        let checks: [(&'static str, &'static str, bool, String); 3] = [
            (
                "journal_mode",
                "wal",
                settings.journal_mode == "wal",
                settings.journal_mode.clone(),
            ),
            (
                "synchronous",
                "2 (FULL)",
                settings.synchronous == 2,
                settings.synchronous.to_string(),
            ),
            (
                "foreign_keys",
                "1",
                settings.foreign_keys,
                u8::from(settings.foreign_keys).to_string(),
            ),
        ];
        for (setting, expected, ok, actual) in checks {
            if !ok {
                return Err(MetaError::Setting {
                    location: location.to_owned(),
                    setting,
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Asks one connection of the pool for its PRAGMA values.
    async fn read_settings(&self) -> Result<StoreSettings, sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *connection)
            .await?;
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *connection)
            .await?;
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *connection)
            .await?;
        let busy_timeout_ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *connection)
            .await?;
        Ok(StoreSettings {
            journal_mode: journal_mode.to_ascii_lowercase(),
            synchronous,
            foreign_keys: foreign_keys == 1,
            busy_timeout_ms,
        })
    }

    /// Starts a write transaction holding SQLite's write lock from the first statement.
    async fn write(&self, operation: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(storage(operation))
    }

    /// Starts a read transaction: one snapshot for several statements.
    async fn read(&self, operation: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin().await.map_err(storage(operation))
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn account(&self, name: &AccountName) -> Result<Option<Account>> {
        const OP: &str = "account";
        let mut tx = self.read(OP).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE name = ?"
        ))
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage(OP))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let keys = sqlx::query(
            "SELECT algorithm, blob, comment FROM account_keys WHERE account = ? ORDER BY position",
        )
        .bind(name.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(storage(OP))?
        .iter()
        .map(convert::key)
        .collect::<Result<Vec<_>>>()?;
        convert::account(&row, keys).map(Some)
    }

    async fn accounts(&self) -> Result<Vec<Account>> {
        const OP: &str = "accounts";
        let mut tx = self.read(OP).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts ORDER BY name"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(storage(OP))?;
        let key_rows = sqlx::query(
            "SELECT account, algorithm, blob, comment FROM account_keys ORDER BY account, position",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(storage(OP))?;
        let mut keys: BTreeMap<String, Vec<AuthorizedKey>> = BTreeMap::new();
        for row in &key_rows {
            let account: String = column(row, "account")?;
            keys.entry(account).or_default().push(convert::key(row)?);
        }
        rows.iter()
            .map(|row| {
                let name: String = column(row, "name")?;
                convert::account(row, keys.remove(&name).unwrap_or_default())
            })
            .collect()
    }

    async fn insert_account(&self, account: &Account, event: &Event) -> Result<()> {
        const OP: &str = "insert_account";
        let mut tx = self.write(OP).await?;
        claim_name(&mut tx, &account.name, Principal::Account, OP).await?;
        sqlx::query(
            "INSERT INTO accounts (name, kind, disabled, password_hash, created, access, \
             totp_secret, totp_last_step, totp_recovery, token_epoch) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(account.name.as_str())
        .bind(account.kind.as_str())
        .bind(account.disabled)
        .bind(account.password_hash.as_deref())
        .bind(nanos(account.created)?)
        .bind(convert::access_to_json(&account.access))
        .bind(totp_secret(account))
        .bind(totp_last_step(account))
        .bind(totp_recovery(account))
        .bind(epoch_to_db(account.token_epoch)?)
        .execute(&mut *tx)
        .await
        .map_err(storage(OP))?;
        insert_keys(&mut tx, &account.name, &account.keys, OP).await?;
        let recorded = insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        self.commit(tx, recorded, OP).await
    }

    async fn update_account(&self, account: &Account, event: &Event) -> Result<()> {
        const OP: &str = "update_account";
        let mut tx = self.write(OP).await?;
        // The TOTP step is not written here: `use_totp_step` owns it, and a stale copy of the
        // account must not move it back. A changed secret (a new enrolment) resets it.
        let updated = sqlx::query(
            "UPDATE accounts SET disabled = ?1, password_hash = ?2, access = ?3, \
             totp_last_step = CASE WHEN totp_secret IS ?4 THEN totp_last_step ELSE NULL END, \
             totp_secret = ?4, totp_recovery = ?5, token_epoch = MAX(token_epoch, ?7) \
             WHERE name = ?6",
        )
        .bind(account.disabled)
        .bind(account.password_hash.as_deref())
        .bind(convert::access_to_json(&account.access))
        .bind(totp_secret(account))
        .bind(totp_recovery(account))
        .bind(account.name.as_str())
        .bind(epoch_to_db(account.token_epoch)?)
        .execute(&mut *tx)
        .await
        .map_err(storage(OP))?;
        if updated.rows_affected() == 0 {
            return Err(no_account(&account.name));
        }
        sqlx::query("DELETE FROM account_keys WHERE account = ?")
            .bind(account.name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage(OP))?;
        insert_keys(&mut tx, &account.name, &account.keys, OP).await?;
        let recorded = insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        self.commit(tx, recorded, OP).await
    }

    async fn delete_account(&self, name: &AccountName, event: &Event) -> Result<()> {
        const OP: &str = "delete_account";
        let mut tx = self.write(OP).await?;
        // Checked inside the write transaction, so no upload can land between the check and
        // the delete. Deliveries outlive accounts; a live one would otherwise pass to a new
        // account that takes the name.
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE (recipient = ?1 OR sender = ?1) \
             AND state IN ('stored', 'checking', 'delivered', 'picked-up')",
        )
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(storage(OP))?;
        if live > 0 {
            return Err(CoreError::conflict(format!(
                "{name} still has {live} deliveries waiting to or from it; disable the account instead"
            )));
        }
        let deleted = delete_principal(
            &mut tx,
            name,
            &[
                "DELETE FROM routes WHERE from_name = ?1 OR to_name = ?1",
                "DELETE FROM group_members WHERE member = ?",
                "DELETE FROM account_keys WHERE account = ?",
                // A later account of the same name must not inherit a token.
                "DELETE FROM tokens WHERE account = ?",
                "DELETE FROM accounts WHERE name = ?",
            ],
            Principal::Account,
            OP,
        )
        .await?;
        if !deleted {
            // Dropping the transaction rolls back the deletes (which found nothing).
            return Err(no_account(name));
        }
        let recorded = insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        self.commit(tx, recorded, OP).await
    }

    async fn group(&self, name: &AccountName) -> Result<Option<Group>> {
        const OP: &str = "group";
        let mut tx = self.read(OP).await?;
        let exists = sqlx::query("SELECT 1 FROM groups WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage(OP))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let members =
            sqlx::query("SELECT member FROM group_members WHERE group_name = ? ORDER BY member")
                .bind(name.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(storage(OP))?
                .iter()
                .map(|row| account_name(row, "member"))
                .collect::<Result<Vec<_>>>()?;
        Ok(Some(Group {
            name: name.clone(),
            members,
        }))
    }

    async fn groups(&self) -> Result<Vec<Group>> {
        const OP: &str = "groups";
        let mut tx = self.read(OP).await?;
        let names = sqlx::query("SELECT name FROM groups ORDER BY name")
            .fetch_all(&mut *tx)
            .await
            .map_err(storage(OP))?;
        let member_rows =
            sqlx::query("SELECT group_name, member FROM group_members ORDER BY group_name, member")
                .fetch_all(&mut *tx)
                .await
                .map_err(storage(OP))?;
        let mut members: BTreeMap<String, Vec<AccountName>> = BTreeMap::new();
        for row in &member_rows {
            let group: String = column(row, "group_name")?;
            members
                .entry(group)
                .or_default()
                .push(account_name(row, "member")?);
        }
        names
            .iter()
            .map(|row| {
                let name = account_name(row, "name")?;
                let members = members.remove(name.as_str()).unwrap_or_default();
                Ok(Group { name, members })
            })
            .collect()
    }

    async fn insert_group(&self, group: &Group, event: &Event) -> Result<()> {
        const OP: &str = "insert_group";
        let mut tx = self.write(OP).await?;
        claim_name(&mut tx, &group.name, Principal::Group, OP).await?;
        sqlx::query("INSERT INTO groups (name) VALUES (?)")
            .bind(group.name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage(OP))?;
        insert_members(&mut tx, group, OP).await?;
        let recorded = insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        self.commit(tx, recorded, OP).await
    }

    async fn update_group(&self, group: &Group, event: &Event) -> Result<()> {
        const OP: &str = "update_group";
        let mut tx = self.write(OP).await?;
        let exists = sqlx::query("SELECT 1 FROM groups WHERE name = ?")
            .bind(group.name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage(OP))?;
        if exists.is_none() {
            return Err(no_group(&group.name));
        }
        sqlx::query("DELETE FROM group_members WHERE group_name = ?")
            .bind(group.name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage(OP))?;
        insert_members(&mut tx, group, OP).await?;
        let recorded = insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        self.commit(tx, recorded, OP).await
    }

    async fn delete_group(&self, name: &AccountName, event: &Event) -> Result<()> {
        const OP: &str = "delete_group";
        let mut tx = self.write(OP).await?;
        let deleted = delete_principal(
            &mut tx,
            name,
            &[
                "DELETE FROM routes WHERE from_name = ?1 OR to_name = ?1",
                "DELETE FROM group_members WHERE group_name = ?",
                "DELETE FROM groups WHERE name = ?",
            ],
            Principal::Group,
            OP,
        )
        .await?;
        if !deleted {
            return Err(no_group(name));
        }
        let recorded = insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        self.commit(tx, recorded, OP).await
    }

    async fn routes(&self) -> Result<Vec<Route>> {
        const OP: &str = "routes";
        sqlx::query("SELECT from_name, to_name, effect FROM routes ORDER BY from_name, to_name")
            .fetch_all(&self.pool)
            .await
            .map_err(storage(OP))?
            .iter()
            .map(|row| {
                Ok(Route {
                    from: account_name(row, "from_name")?,
                    to: account_name(row, "to_name")?,
                    effect: convert::parsed(row, "effect", RouteEffect::parse)?,
                })
            })
            .collect()
    }

    async fn put_route(&self, route: &Route, event: &Event) -> Result<()> {
        const OP: &str = "put_route";
        let mut tx = self.write(OP).await?;
        for name in [&route.from, &route.to] {
            if name_kind(&mut tx, name, OP).await?.is_none() {
                return Err(CoreError::not_found(format!(
                    "no account or group is named {name}"
                )));
            }
        }
        sqlx::query(
            "INSERT INTO routes (from_name, to_name, effect) VALUES (?, ?, ?) \
             ON CONFLICT (from_name, to_name) DO UPDATE SET effect = excluded.effect",
        )
        .bind(route.from.as_str())
        .bind(route.to.as_str())
        .bind(route.effect.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage(OP))?;
        let recorded = insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        self.commit(tx, recorded, OP).await
    }

    async fn delete_route(
        &self,
        from: &AccountName,
        to: &AccountName,
        event: &Event,
    ) -> Result<()> {
        const OP: &str = "delete_route";
        let mut tx = self.write(OP).await?;
        let deleted = sqlx::query("DELETE FROM routes WHERE from_name = ? AND to_name = ?")
            .bind(from.as_str())
            .bind(to.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage(OP))?;
        if deleted.rows_affected() == 0 {
            return Err(CoreError::not_found(format!(
                "there is no route rule from {from} to {to}"
            )));
        }
        let recorded = insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        self.commit(tx, recorded, OP).await
    }

    async fn insert_deliveries(
        &self,
        deliveries: &[Delivery],
        events: &[Event],
        inline: Option<(&BlobId, &[u8])>,
    ) -> Result<()> {
        if deliveries.is_empty() && events.is_empty() {
            return Ok(());
        }
        self.batcher
            .submit(Op::InsertDeliveries {
                deliveries: deliveries.to_vec(),
                events: events.to_vec(),
                inline: inline.map(|(id, content)| (id.clone(), content.to_vec())),
            })
            .await
            .map(|_| ())
    }

    async fn inline_blob(&self, blob_id: &BlobId) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT content FROM inline_blobs WHERE blob_id = ?")
            .bind(blob_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(storage("inline_blob"))
    }

    async fn delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>> {
        const OP: &str = "delivery";
        let row = sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(storage(OP))?;
        row.as_ref().map(convert::delivery).transpose()
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>> {
        const OP: &str = "deliveries";
        delivery_select(
            concat!("SELECT ", delivery_columns!(), " FROM deliveries"),
            query,
        )?
        .build()
        .fetch_all(&self.pool)
        .await
        .map_err(storage(OP))?
        .iter()
        .map(convert::delivery)
        .collect()
    }

    async fn first_delivery_with_content(
        &self,
        query: &DeliveryQuery,
    ) -> Result<Option<(Delivery, Option<Vec<u8>>)>> {
        const OP: &str = "first_delivery_with_content";
        // One statement, so opening a small file is one hop to SQLite's worker, not two.
        let mut sql = delivery_select(
            concat!(
                "SELECT ",
                delivery_columns!(),
                ", (SELECT content FROM inline_blobs WHERE inline_blobs.blob_id = deliveries.blob_id) \
                 AS inline_content FROM deliveries"
            ),
            query,
        )?;
        sql.push(" LIMIT 1");
        let Some(row) = sql
            .build()
            .fetch_optional(&self.pool)
            .await
            .map_err(storage(OP))?
        else {
            return Ok(None);
        };
        let delivery = convert::delivery(&row)?;
        let content: Option<Vec<u8>> = column(&row, "inline_content")?;
        Ok(Some((delivery, content)))
    }

    async fn transition(
        &self,
        id: &DeliveryId,
        from: &[DeliveryState],
        to: DeliveryState,
        events: &[Event],
        durability: Durability,
    ) -> Result<bool> {
        if from.is_empty() {
            return Ok(false);
        }
        match durability {
            Durability::Flush => {
                let done = self
                    .batcher
                    .submit(Op::Transition {
                        id: *id,
                        from: from.to_vec(),
                        to,
                        events: events.to_vec(),
                    })
                    .await?;
                Ok(matches!(done, Done::Moved(true)))
            }
            Durability::Relaxed => {
                const OP: &str = "transition";
                let mut tx = self
                    .relaxed
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(storage(OP))?;
                let mut recorded = Vec::new();
                let moved = apply_transition(&mut tx, id, from, to, events, &mut recorded).await?;
                self.commit(tx, recorded, OP).await?;
                Ok(moved)
            }
        }
    }

    async fn rename_delivery(&self, id: &DeliveryId, name: &FileName, event: &Event) -> Result<()> {
        const OP: &str = "rename_delivery";
        let mut tx = self.write(OP).await?;
        let renamed = sqlx::query(concat!(
            "UPDATE deliveries SET name = ? WHERE id = ? AND state IN ",
            live_states!()
        ))
        .bind(name.as_str())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await;
        match renamed {
            Ok(result) if result.rows_affected() == 0 => {
                return Err(CoreError::not_found(format!(
                    "no pending delivery has the id {id}"
                )));
            }
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => {
                return Err(CoreError::conflict(format!(
                    "the name {:?} is taken by another live delivery between the same sender and recipient",
                    name.as_str()
                )));
            }
            Err(error) => return Err(storage(OP)(error)),
        }
        let recorded = insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        self.commit(tx, recorded, OP).await
    }

    async fn live_blobs(&self) -> Result<HashSet<BlobId>> {
        const OP: &str = "live_blobs";
        sqlx::query(concat!(
            "SELECT DISTINCT blob_id FROM deliveries WHERE state IN ",
            live_states!()
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(storage(OP))?
        .iter()
        .map(|row| convert::parsed(row, "blob_id", BlobId::parse))
        .collect()
    }

    async fn blob_in_use(&self, blob_id: &BlobId) -> Result<bool> {
        const OP: &str = "blob_in_use";
        let row = sqlx::query(concat!(
            "SELECT 1 FROM deliveries WHERE blob_id = ? AND state IN ",
            live_states!(),
            " LIMIT 1"
        ))
        .bind(blob_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(storage(OP))?;
        Ok(row.is_some())
    }

    async fn inbox_usage(&self, recipient: &AccountName) -> Result<InboxUsage> {
        const OP: &str = "inbox_usage";
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT COALESCE(SUM(size), 0) AS bytes, COUNT(*) AS files FROM deliveries \
             WHERE recipient = ",
        );
        sql.push_bind(recipient.as_str());
        push_states(&mut sql, &DeliveryState::LIVE);
        let row = sql
            .build()
            .fetch_one(&self.pool)
            .await
            .map_err(storage(OP))?;
        let bytes: i64 = column(&row, "bytes")?;
        let files: i64 = column(&row, "files")?;
        Ok(InboxUsage {
            bytes: u64::try_from(bytes).unwrap_or(0),
            files: u64::try_from(files).unwrap_or(0),
        })
    }

    async fn use_totp_step(&self, name: &AccountName, step: u64) -> Result<bool> {
        const OP: &str = "use_totp_step";
        let step = i64::try_from(step).map_err(|_| CoreError::invalid("TOTP step out of range"))?;
        // One statement: two logins racing with the same code cannot both pass.
        let updated = sqlx::query(
            "UPDATE accounts SET totp_last_step = ?1 WHERE name = ?2 \
             AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < ?1)",
        )
        .bind(step)
        .bind(name.as_str())
        .execute(&self.pool)
        .await
        .map_err(storage(OP))?;
        Ok(updated.rows_affected() == 1)
    }

    async fn use_recovery_code(&self, name: &AccountName, code_hash: &str) -> Result<bool> {
        const OP: &str = "use_recovery_code";
        let mut tx = self.write(OP).await?;
        let row = sqlx::query(
            "SELECT totp_recovery FROM accounts WHERE name = ? AND totp_secret IS NOT NULL",
        )
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage(OP))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let text: String = column(&row, "totp_recovery")?;
        let mut codes: Vec<String> = serde_json::from_str(&text)
            .map_err(|_| corrupt("totp_recovery", &CoreError::invalid("not a JSON list")))?;
        let before = codes.len();
        codes.retain(|c| c != code_hash);
        if codes.len() == before {
            return Ok(false);
        }
        sqlx::query("UPDATE accounts SET totp_recovery = ? WHERE name = ?")
            .bind(serde_json::to_string(&codes).unwrap_or_else(|_| "[]".to_owned()))
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage(OP))?;
        tx.commit().await.map_err(storage(OP))?;
        Ok(true)
    }

    async fn bans(&self) -> Result<Vec<Ban>> {
        const OP: &str = "bans";
        sqlx::query("SELECT subject, until, level, reason, created FROM bans ORDER BY subject")
            .fetch_all(&self.pool)
            .await
            .map_err(storage(OP))?
            .iter()
            .map(convert::ban)
            .collect()
    }

    async fn ban(&self, subject: &BanSubject) -> Result<Option<Ban>> {
        const OP: &str = "ban";
        sqlx::query("SELECT subject, until, level, reason, created FROM bans WHERE subject = ?")
            .bind(subject.key())
            .fetch_optional(&self.pool)
            .await
            .map_err(storage(OP))?
            .as_ref()
            .map(convert::ban)
            .transpose()
    }

    async fn put_ban(&self, ban: &Ban, event: &Event) -> Result<()> {
        const OP: &str = "put_ban";
        let mut tx = self.write(OP).await?;
        sqlx::query(
            "INSERT INTO bans (subject, until, level, reason, created) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (subject) DO UPDATE SET until = excluded.until, level = excluded.level, \
             reason = excluded.reason, created = excluded.created",
        )
        .bind(ban.subject.key())
        .bind(nanos(ban.until)?)
        .bind(i64::from(ban.level.max(1)))
        .bind(ban.reason.as_str())
        .bind(nanos(ban.created)?)
        .execute(&mut *tx)
        .await
        .map_err(storage(OP))?;
        insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        tx.commit().await.map_err(storage(OP))
    }

    async fn delete_ban(&self, subject: &BanSubject, event: &Event) -> Result<()> {
        const OP: &str = "delete_ban";
        let mut tx = self.write(OP).await?;
        let deleted = sqlx::query("DELETE FROM bans WHERE subject = ?")
            .bind(subject.key())
            .execute(&mut *tx)
            .await
            .map_err(storage(OP))?;
        if deleted.rows_affected() == 0 {
            return Err(CoreError::not_found(format!("{subject} is not banned")));
        }
        insert_events(&mut tx, std::slice::from_ref(event), OP).await?;
        tx.commit().await.map_err(storage(OP))
    }

    async fn record(&self, events: &[Event], durability: Durability) -> Result<()> {
        const OP: &str = "record";
        if events.is_empty() {
            return Ok(());
        }
        match durability {
            Durability::Flush => self
                .batcher
                .submit(Op::Record {
                    events: events.to_vec(),
                })
                .await
                .map(|_| ()),
            Durability::Relaxed => {
                let mut tx = self
                    .relaxed
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(storage(OP))?;
                let recorded = insert_events(&mut tx, events, OP).await?;
                self.commit(tx, recorded, OP).await
            }
        }
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        const OP: &str = "events";
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut sql = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE 1 = 1"
        ));
        push_event_filters(&mut sql, query);
        match query.limit {
            // The newest `limit`, read backwards from the end and turned round below.
            Some(limit) => {
                sql.push(" ORDER BY seq DESC LIMIT ")
                    .push_bind(i64::from(limit));
            }
            None => {
                sql.push(" ORDER BY seq");
            }
        }
        let mut events = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(storage(OP))?
            .iter()
            .map(convert::event)
            .collect::<Result<Vec<_>>>()?;
        if query.limit.is_some() {
            events.reverse();
        }
        Ok(events)
    }

    async fn audit_records(
        &self,
        query: &EventQuery,
        after_seq: u64,
        page: u32,
    ) -> Result<Vec<AuditRecord>> {
        const OP: &str = "audit_records";
        let mut sql = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM events WHERE seq > "
        ));
        // A `seq` beyond i64 matches nothing; clamp rather than fail.
        sql.push_bind(i64::try_from(after_seq).unwrap_or(i64::MAX));
        push_event_filters(&mut sql, query);
        sql.push(" ORDER BY seq LIMIT ").push_bind(i64::from(page));
        sql.build()
            .fetch_all(&self.pool)
            .await
            .map_err(storage(OP))?
            .iter()
            .map(convert::audit_record)
            .collect()
    }

    async fn verify_audit(&self, expect: Option<Checkpoint>) -> Result<ChainReport> {
        const OP: &str = "verify_audit";
        let legacy_through: Option<i64> =
            sqlx::query_scalar("SELECT legacy_through FROM audit_chain WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(storage(OP))?;
        // Without the row (deleted by hand), every event must be chained.
        let legacy_through = convert::seq_from_db(legacy_through.unwrap_or(0))?;
        let mut verifier = ChainVerifier::new(legacy_through, expect);
        let everything = EventQuery::default();
        let mut after = 0;
        'pages: loop {
            let page = self.audit_records(&everything, after, VERIFY_PAGE).await?;
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

    async fn audit_head(&self) -> Result<Option<ChainHead>> {
        const OP: &str = "audit_head";
        let row = sqlx::query(
            "SELECT seq, hash, time, (SELECT COUNT(*) FROM events) AS events FROM events \
             WHERE hash IS NOT NULL ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(storage(OP))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let events: i64 = column(&row, "events")?;
        Ok(Some(ChainHead {
            seq: convert::seq_from_db(column(&row, "seq")?)?,
            hash: column(&row, "hash")?,
            time: convert::time_from_nanos("time", column(&row, "time")?)?,
            events: u64::try_from(events).unwrap_or(0),
        }))
    }

    async fn insert_tokens(&self, tokens: &[TokenRecord]) -> Result<()> {
        const OP: &str = "insert_tokens";
        let mut tx = self.write(OP).await?;
        for token in tokens {
            sqlx::query(concat!(
                "INSERT INTO tokens (",
                token_columns!(),
                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(token.hash.as_str())
            .bind(token.kind.as_str())
            .bind(token.session.as_str())
            .bind(token.account.as_str())
            .bind(token.scope.as_str())
            .bind(epoch_to_db(token.epoch)?)
            .bind(token.source.as_deref())
            .bind(token.protocol.as_str())
            .bind(nanos(token.created)?)
            .bind(nanos(token.expires)?)
            .execute(&mut *tx)
            .await
            .map_err(|err| {
                if is_unique_violation(&err) {
                    CoreError::conflict("token already stored")
                } else {
                    storage(OP)(err)
                }
            })?;
        }
        tx.commit().await.map_err(storage(OP))
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        const OP: &str = "token";
        sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(storage(OP))?
        .as_ref()
        .map(convert::token)
        .transpose()
    }

    async fn take_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        const OP: &str = "take_token";
        let mut tx = self.write(OP).await?;
        let row = sqlx::query(concat!(
            "DELETE FROM tokens WHERE hash = ? RETURNING ",
            token_columns!()
        ))
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage(OP))?;
        let token = row.as_ref().map(convert::token).transpose()?;
        tx.commit().await.map_err(storage(OP))?;
        Ok(token)
    }

    async fn delete_token_session(&self, session: &str, event: Option<&Event>) -> Result<u64> {
        const OP: &str = "delete_token_session";
        let mut tx = self.write(OP).await?;
        let deleted = sqlx::query("DELETE FROM tokens WHERE session = ?")
            .bind(session)
            .execute(&mut *tx)
            .await
            .map_err(storage(OP))?
            .rows_affected();
        let recorded = match event {
            Some(event) => insert_events(&mut tx, std::slice::from_ref(event), OP).await?,
            None => Vec::new(),
        };
        self.commit(tx, recorded, OP).await?;
        Ok(deleted)
    }

    async fn delete_expired_tokens(&self, now: OffsetDateTime) -> Result<(u64, Vec<String>)> {
        const OP: &str = "delete_expired_tokens";
        let mut tx = self.write(OP).await?;
        let sessions: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT session FROM tokens WHERE expires <= ?")
                .bind(nanos(now)?)
                .fetch_all(&mut *tx)
                .await
                .map_err(storage(OP))?;
        let deleted = sqlx::query("DELETE FROM tokens WHERE expires <= ?")
            .bind(nanos(now)?)
            .execute(&mut *tx)
            .await
            .map_err(storage(OP))?
            .rows_affected();
        let mut ended = Vec::new();
        for session in sessions {
            let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE session = ?")
                .bind(session.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(storage(OP))?;
            if left == 0 {
                ended.push(session);
            }
        }
        tx.commit().await.map_err(storage(OP))?;
        Ok((deleted, ended))
    }
}

/// An account's token generation as stored.
fn epoch_to_db(epoch: u64) -> Result<i64> {
    i64::try_from(epoch).map_err(|_| CoreError::invalid("token generation out of range"))
}

/// Events read per page when verifying the chain: bounded memory whatever the trail's size.
const VERIFY_PAGE: u32 = 10_000;

/// Appends the filters of an event query (all but `limit`) as bound parameters.
fn push_event_filters(sql: &mut QueryBuilder<Sqlite>, query: &EventQuery) {
    if let Some(actor) = &query.actor {
        sql.push(" AND actor = ").push_bind(actor.clone());
    }
    if let Some(kind) = query.kind {
        sql.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(outcome) = query.outcome {
        sql.push(" AND outcome = ").push_bind(outcome.as_str());
    }
    if let Some(source) = &query.source {
        // Sources are recorded with their port; an IP address alone matches any port.
        let any_port = match source.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => Some(format!("{ip}:")),
            Ok(std::net::IpAddr::V6(ip)) => Some(format!("[{ip}]:")),
            Err(_) => None,
        };
        sql.push(" AND (source = ").push_bind(source.clone());
        if let Some(prefix) = any_port {
            // A prefix match without LIKE's wildcards: the address text has none, but `_`
            // could appear in a zone id.
            sql.push(" OR substr(source, 1, ")
                .push_bind(i64::try_from(prefix.len()).unwrap_or(i64::MAX))
                .push(") = ")
                .push_bind(prefix);
        }
        sql.push(")");
    }
    if let Some(since) = query.since {
        sql.push(" AND time >= ")
            .push_bind(convert::nanos_saturating(since));
    }
    if let Some(until) = query.until {
        sql.push(" AND time < ")
            .push_bind(convert::nanos_saturating(until));
    }
}

/// Creates the database file with owner-only permissions if it does not exist, so that the
/// password hashes in it (and in the `-wal` and `-shm` files SQLite derives from it) are not
/// readable by other local users.
async fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// Takes `name` in the shared namespace of accounts and groups, or fails with Conflict naming
/// what holds it. Runs inside the caller's write transaction, so the check and the insert are
/// one step; the primary key of `principals` backs it up.
async fn claim_name(
    tx: &mut SqliteConnection,
    name: &AccountName,
    kind: Principal,
    operation: &'static str,
) -> Result<()> {
    if let Some(holder) = name_kind(tx, name, operation).await? {
        let holder = match holder {
            Principal::Account => "an account",
            Principal::Group => "a group",
        };
        return Err(CoreError::conflict(format!(
            "the name {name} is already taken by {holder}"
        )));
    }
    sqlx::query("INSERT INTO principals (name, kind) VALUES (?, ?)")
        .bind(name.as_str())
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|error| {
            if is_unique_violation(&error) {
                CoreError::conflict(format!("the name {name} is already taken"))
            } else {
                storage(operation)(error)
            }
        })?;
    Ok(())
}

/// Frees `name` in the shared namespace.
async fn release_name(
    tx: &mut SqliteConnection,
    name: &AccountName,
    kind: Principal,
    operation: &'static str,
) -> Result<()> {
    sqlx::query("DELETE FROM principals WHERE name = ? AND kind = ?")
        .bind(name.as_str())
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage(operation))?;
    Ok(())
}

/// What holds `name` in the shared namespace, if anything.
async fn name_kind(
    tx: &mut SqliteConnection,
    name: &AccountName,
    operation: &'static str,
) -> Result<Option<Principal>> {
    let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM principals WHERE name = ?")
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage(operation))?;
    kind.map(|kind| Principal::parse(&kind)).transpose()
}

/// What a name in the shared namespace belongs to: `principals.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Principal {
    /// An account.
    Account,
    /// A group.
    Group,
}

impl Principal {
    /// The label stored in `principals.kind`.
    fn as_str(self) -> &'static str {
        match self {
            Principal::Account => "account",
            Principal::Group => "group",
        }
    }

    /// Parses a stored label.
    fn parse(label: &str) -> Result<Self> {
        match label {
            "account" => Ok(Principal::Account),
            "group" => Ok(Principal::Group),
            other => Err(corrupt(
                "principals.kind",
                &CoreError::invalid(format!("unknown principal kind {other:?}")),
            )),
        }
    }
}

/// The TOTP secret column of an account.
fn totp_secret(account: &Account) -> Option<String> {
    account.totp.as_ref().map(|t| t.secret.expose().clone())
}

/// The last-used TOTP step column of an account.
fn totp_last_step(account: &Account) -> Option<i64> {
    account
        .totp
        .as_ref()
        .and_then(|t| t.last_step)
        .and_then(|s| i64::try_from(s).ok())
}

/// The recovery-code hashes of an account, as a JSON list.
fn totp_recovery(account: &Account) -> String {
    let empty = Vec::new();
    let codes = account.totp.as_ref().map_or(&empty, |t| &t.recovery);
    serde_json::to_string(codes).unwrap_or_else(|_| "[]".to_owned())
}

/// Writes an account's keys in their order.
async fn insert_keys(
    tx: &mut SqliteConnection,
    account: &AccountName,
    keys: &[AuthorizedKey],
    operation: &'static str,
) -> Result<()> {
    for (position, key) in (0_i64..).zip(keys) {
        sqlx::query(
            "INSERT INTO account_keys (account, position, algorithm, blob, comment) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(account.as_str())
        .bind(position)
        .bind(key.algorithm.as_str())
        .bind(key.blob.as_slice())
        .bind(key.comment.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage(operation))?;
    }
    Ok(())
}

/// Writes a group's members. Each must be an account (groups do not nest); a member listed
/// twice is stored once.
async fn insert_members(
    tx: &mut SqliteConnection,
    group: &Group,
    operation: &'static str,
) -> Result<()> {
    for member in &group.members {
        if name_kind(tx, member, operation).await? != Some(Principal::Account) {
            return Err(CoreError::not_found(format!(
                "cannot add {member} to group {}: there is no account by that name",
                group.name
            )));
        }
        sqlx::query(
            "INSERT INTO group_members (group_name, member) VALUES (?, ?) \
             ON CONFLICT (group_name, member) DO NOTHING",
        )
        .bind(group.name.as_str())
        .bind(member.as_str())
        .execute(&mut *tx)
        .await
        .map_err(storage(operation))?;
    }
    Ok(())
}

/// Appends events to the audit trail in their order, chaining each to the one before it, and
/// returns them as records (with `seq` and hashes) for the event tap once the caller commits.
/// A repeated event id is a Conflict: an event is recorded once.
///
/// Runs inside the caller's write transaction, which holds SQLite's write lock: the head read
/// here is still the head when the rows go in, even with a second process writing.
pub(crate) async fn insert_events(
    tx: &mut SqliteConnection,
    events: &[Event],
    operation: &'static str,
) -> Result<Vec<AuditRecord>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // One statement for the head. `sqlite_sequence` holds the highest seq ever used (the
    // newest row may have gone), and seqs are set here so the hash can include them.
    let head = sqlx::query(
        "SELECT (SELECT seq FROM events ORDER BY seq DESC LIMIT 1) AS last_seq, \
                (SELECT hash FROM events ORDER BY seq DESC LIMIT 1) AS last_hash, \
                (SELECT seq FROM sqlite_sequence WHERE name = 'events') AS used_seq",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(storage(operation))?;
    let last_seq: Option<i64> = column(&head, "last_seq")?;
    let used_seq: Option<i64> = column(&head, "used_seq")?;
    let mut prev_hash: String =
        column::<Option<String>>(&head, "last_hash")?.unwrap_or_else(|| GENESIS_HASH.to_owned());
    let mut seq = convert::seq_from_db(last_seq.unwrap_or(0).max(used_seq.unwrap_or(0)))?;
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let hash = chain_hash(&prev_hash, seq, event);
        records.push(AuditRecord {
            seq,
            event: event.clone(),
            prev_hash: Some(std::mem::replace(&mut prev_hash, hash.clone())),
            hash: Some(hash),
        });
    }
    // One statement per chunk: each statement is a hop to SQLite's worker thread.
    for chunk in records.chunks(EVENTS_PER_STATEMENT) {
        let mut rows = Vec::with_capacity(chunk.len());
        for record in chunk {
            rows.push((
                record,
                convert::seq_to_db(record.seq)?,
                nanos(record.event.time)?,
            ));
        }
        let mut sql =
            QueryBuilder::<Sqlite>::new(concat!("INSERT INTO events (", audit_columns!(), ") "));
        sql.push_values(rows, |mut row, (record, seq, time)| {
            let event = &record.event;
            row.push_bind(seq)
                .push_bind(event.id.hyphenated().to_string())
                .push_bind(time)
                .push_bind(event.kind.as_str())
                .push_bind(event.actor.as_str())
                .push_bind(event.source.as_deref())
                .push_bind(event.protocol.as_str())
                .push_bind(event.object.as_str())
                .push_bind(event.outcome.as_str())
                .push_bind(event.detail.as_str())
                .push_bind(record.prev_hash.as_deref())
                .push_bind(record.hash.as_deref());
        });
        sql.build().execute(&mut *tx).await.map_err(|error| {
            if is_unique_violation(&error) {
                CoreError::conflict("an event of this change is already recorded")
            } else {
                storage(operation)(error)
            }
        })?;
    }
    Ok(records)
}

/// Events per INSERT: 12 parameters each, within SQLite's default limit of 32,766.
const EVENTS_PER_STATEMENT: usize = 256;

/// Deletes an account or a group: runs `deletes` in order, each bound to `name` (the rows
/// that name it, then the principal's own row, last), and frees the name when that last
/// delete found the row. Returns whether it did. The foreign keys would cascade most of this;
/// the explicit deletes say what goes and keep the result right even on a connection opened
/// with foreign keys off.
async fn delete_principal(
    tx: &mut SqliteConnection,
    name: &AccountName,
    deletes: &[&'static str],
    kind: Principal,
    operation: &'static str,
) -> Result<bool> {
    let mut last = 0;
    for &sql in deletes {
        last = sqlx::query(sql)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(storage(operation))?
            .rows_affected();
    }
    if last == 0 {
        return Ok(false);
    }
    release_name(tx, name, kind, operation).await?;
    Ok(true)
}

/// Appends ` AND state IN (?, ...)` for a non-empty list of states.
/// `select` (which must read `FROM deliveries`) with the query's conditions, oldest first.
/// Only fixed fragments are pushed as SQL; every value is a bound parameter.
fn delivery_select(select: &'static str, query: &DeliveryQuery) -> Result<QueryBuilder<Sqlite>> {
    let mut sql = QueryBuilder::<Sqlite>::new(select);
    sql.push(" WHERE 1 = 1");
    if let Some(sender) = &query.sender {
        sql.push(" AND sender = ").push_bind(sender.as_str());
    }
    if let Some(recipient) = &query.recipient {
        sql.push(" AND recipient = ").push_bind(recipient.as_str());
    }
    if let Some(target) = &query.target {
        sql.push(" AND target = ").push_bind(target.as_str());
    }
    if let Some(name) = &query.name {
        sql.push(" AND name = ").push_bind(name.as_str());
    }
    push_states(&mut sql, &query.states);
    if let Some(before) = query.created_before {
        sql.push(" AND created < ").push_bind(nanos(before)?);
    }
    sql.push(" ORDER BY created, id");
    Ok(sql)
}

fn push_states(sql: &mut QueryBuilder<Sqlite>, states: &[DeliveryState]) {
    if states.is_empty() {
        return;
    }
    sql.push(" AND state IN (");
    let mut list = sql.separated(", ");
    for state in states {
        list.push_bind(state.as_str());
    }
    list.push_unseparated(")");
}

/// The Conflict for a delivery whose name is live already between its sender and recipient.
fn name_taken(delivery: &Delivery) -> CoreError {
    CoreError::conflict(format!(
        "{} already has a live delivery named {:?} from {}",
        delivery.recipient,
        delivery.name.as_str(),
        delivery.sender
    ))
}

/// NotFound for an account.
fn no_account(name: &AccountName) -> CoreError {
    CoreError::not_found(format!("there is no account named {name}"))
}

/// NotFound for a group.
fn no_group(name: &AccountName) -> CoreError {
    CoreError::not_found(format!("there is no group named {name}"))
}

/// The body of `insert_deliveries`, inside the caller's transaction.
pub(crate) async fn apply_insert_deliveries(
    conn: &mut SqliteConnection,
    deliveries: &[Delivery],
    events: &[Event],
    inline: Option<(&BlobId, &[u8])>,
    recorded: &mut Vec<AuditRecord>,
) -> Result<()> {
    const OP: &str = "insert_deliveries";
    for delivery in deliveries {
        let inserted = sqlx::query(concat!(
            "INSERT INTO deliveries (",
            delivery_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(delivery.id.to_string())
        .bind(delivery.batch_id.to_string())
        .bind(delivery.sender.as_str())
        .bind(delivery.recipient.as_str())
        .bind(delivery.target.as_str())
        .bind(delivery.name.as_str())
        .bind(size_to_db(delivery.size)?)
        .bind(delivery.sha256.as_str())
        .bind(delivery.blob_id.as_str())
        .bind(delivery.state.as_str())
        .bind(nanos(delivery.created)?)
        .bind(nanos(delivery.updated)?)
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) && violates(&error, "deliveries.id") => {
                return Err(CoreError::conflict(format!(
                    "a delivery with id {} exists already",
                    delivery.id
                )));
            }
            Err(error) if is_unique_violation(&error) => {
                return Err(name_taken(delivery));
            }
            Err(error) => return Err(storage(OP)(error)),
        }
    }
    recorded.extend(insert_events(conn, events, OP).await?);
    if let Some((blob_id, content)) = inline {
        sqlx::query("INSERT INTO inline_blobs (blob_id, content) VALUES (?, ?)")
            .bind(blob_id.as_str())
            .bind(content)
            .execute(&mut *conn)
            .await
            .map_err(storage(OP))?;
    }
    Ok(())
}

/// The body of `transition`, inside the caller's transaction.
pub(crate) async fn apply_transition(
    conn: &mut SqliteConnection,
    id: &DeliveryId,
    from: &[DeliveryState],
    to: DeliveryState,
    events: &[Event],
    recorded: &mut Vec<AuditRecord>,
) -> Result<bool> {
    const OP: &str = "transition";
    // The change is dated by the last event describing it.
    let at = events
        .last()
        .map_or_else(time::OffsetDateTime::now_utc, |event| event.time);
    let mut sql = QueryBuilder::<Sqlite>::new("UPDATE deliveries SET state = ");
    sql.push_bind(to.as_str())
        .push(", updated = ")
        .push_bind(nanos(at)?)
        .push(" WHERE id = ")
        .push_bind(id.to_string());
    push_states(&mut sql, from);
    let moved = match sql.build().execute(&mut *conn).await {
        Ok(result) => result.rows_affected() > 0,
        // Moving a terminal delivery back to a live state can collide with a newer live
        // delivery of the same name.
        Err(error) if is_unique_violation(&error) => {
            return Err(CoreError::conflict(
                "another live delivery between the same sender and recipient has this name",
            ));
        }
        Err(error) => return Err(storage(OP)(error)),
    };
    if !moved {
        return Ok(false);
    }
    recorded.extend(insert_events(conn, events, OP).await?);
    if !to.is_live() {
        // The last live delivery of an inline blob takes its content with it.
        sqlx::query(concat!(
            "DELETE FROM inline_blobs WHERE blob_id = ",
            "(SELECT blob_id FROM deliveries WHERE id = ?1) ",
            "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.blob_id = inline_blobs.blob_id ",
            "AND d.state IN ",
            live_states!(),
            ")"
        ))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(storage(OP))?;
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (STYLE.md).
mod tests {
    use super::*;
    use crate::error::classify;
    use mailroom_core::ErrorKind;
    use sqlx::ConnectOptions;

    #[test]
    fn live_states_match_the_core() {
        let core: Vec<String> = DeliveryState::LIVE
            .iter()
            .map(|state| format!("'{}'", state.as_str()))
            .collect();
        assert_eq!(live_states!(), format!("({})", core.join(", ")));
        let migration = include_str!("../migrations/sqlite/0001_initial.sql");
        assert!(migration.contains(concat!("WHERE state IN ", live_states!())));
    }

    #[tokio::test]
    async fn database_errors_map_to_kinds() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let insert = "INSERT INTO principals (name, kind) VALUES ('a', 'group')";
        sqlx::query(insert).execute(&store.pool).await.unwrap();
        let duplicate = sqlx::query(insert).execute(&store.pool).await.unwrap_err();
        assert_eq!(classify("test", duplicate).kind(), ErrorKind::Conflict);

        let broken = sqlx::query("SELEC 1")
            .execute(&store.pool)
            .await
            .unwrap_err();
        let error = classify("test", broken);
        assert_eq!(error.kind(), ErrorKind::Internal);
        assert_eq!(error.message(), "metadata store error");

        assert_eq!(
            classify("test", sqlx::Error::PoolTimedOut).kind(),
            ErrorKind::Transient
        );
    }

    #[tokio::test]
    async fn a_locked_database_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let holder = store.write("test").await.unwrap();
        // Another process that will not wait.
        let mut other = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(Duration::ZERO)
            .connect()
            .await
            .unwrap();
        let busy = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert_eq!(classify("test", busy).kind(), ErrorKind::Transient);
        drop(holder);
    }

    #[tokio::test]
    async fn rows_that_do_not_parse_are_internal() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let id = DeliveryId::new();
        sqlx::query(concat!(
            "INSERT INTO deliveries (",
            delivery_columns!(),
            ") VALUES (?, ?, 'Not A Name', 'bob', 'bob', 'f', 1, '', ?, 'stored', 0, 0)"
        ))
        .bind(id.to_string())
        .bind(id.to_string())
        .bind(BlobId::new().as_str().to_owned())
        .execute(&store.pool)
        .await
        .unwrap();
        let error = store.delivery(&id).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Internal);
        let error = store
            .deliveries(&DeliveryQuery::default())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Internal);
    }
}
