//! [`PgStore`]: the metadata store on PostgreSQL, for hubs that run as several nodes on one
//! database. It takes the same units of work as [`crate::SqliteStore`] and answers them the
//! same way (SQLite is the reference; the conformance suite runs both).
//!
//! **Threads.** The store runs [`PgOptions::connections`] threads, each owning one connection
//! (the synchronous `postgres` client) and that connection's prepared statements. Units wait in
//! one queue; whichever thread is free takes the next and runs it whole, inside one
//! transaction, and answers on the unit's own channel: one hop per unit, as on SQLite. A lost
//! connection is replaced before the thread's next unit (a unit whose `BEGIN` finds the
//! connection gone is retried on the new one, since nothing of it ran); an unreachable server
//! is [`ErrorKind::Transient`](mailroom_core::ErrorKind::Transient). A panicking unit is
//! Internal and rolled back.
//!
//! **Read units** run in `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`: one snapshot for the
//! whole unit. A write inside one is refused by [`tx::PgTx`] before any SQL is sent.
//!
//! **Write units** run in a transaction that first takes one transaction-level advisory lock,
//! the same for every node (`BEGIN; SELECT pg_advisory_xact_lock(…)` in one round trip, with
//! `SET LOCAL synchronous_commit = off` in the same batch for a
//! [`Durability::Relaxed`] unit: it survives a crash of the hub, and of the database server
//! once the server's WAL writer has flushed, within a fraction of a second). So write units
//! run one at a time across the cluster, exactly as SQLite's one writer runs them. Why:
//! - the audit trail is one hash chain with one head: each `record` reads the head and appends
//!   after it, which is only a chain if no other writer appends in between;
//! - units are read-modify-write (a free name, quotas, a group's members, field-level account
//!   updates): serialised, every check a unit makes still holds when it writes, with no
//!   serialization failures to retry and no deadlocks;
//! - a call refused inside a unit that goes on must change nothing, and its checks
//!   (`ON CONFLICT DO NOTHING`, clashes checked in the statement) are exact only while no
//!   other writer runs.
//!
//! The cost: write throughput is that of one writer for the whole cluster. Each unit holds
//! the lock from its `BEGIN` to the end of its `COMMIT` (its own statements and its commit's
//! WAL flush), never while the hub does other work: units hold no blob I/O and no password
//! hashing. Read units take no lock and never wait for writers.
//!
//! **Round trips.** A read unit is `BEGIN`, its statements and `COMMIT`; a write unit is the
//! `BEGIN` batch, its statements and `COMMIT`. Each statement is one round trip (a statement's
//! first use on a connection adds one to prepare it). Rows of one call go in one statement, so
//! recording events costs two round trips however many there are. [`PgStore::round_trips`]
//! counts them all, for the bench.
//!
//! **Changes from other nodes.** [`MetaStore::changes`] starts one more thread, with a
//! connection of its own, that `LISTEN`s for what the triggers of migration 0002 send on
//! commit (a live session asked to close, a change of policy or bans) and wakes the node's
//! housekeeping (`listen.rs`).

mod conn;
mod convert;
mod listen;
mod migrate;
mod tx;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use mailroom_core::{
    AuditRecord, BlobId, CoreError, Durability, MetaStore, Result, StoreStats, Unit, UnitOutput,
};
use tokio::sync::oneshot;

use self::conn::{Conn, Connector};
use self::tx::PgTx;
use crate::error::{MetaError, classify_pg, is_pg_connection_lost, pg_storage};
use crate::runner::{closing, lock, run_unit, send};
use crate::tap::EventTap;

/// The key of the write lock: "mailroom" in ASCII, as one bigint. Every node takes the same.
macro_rules! write_lock_key {
    () => {
        "7881696737372368749"
    };
}

/// Begins a read unit: one snapshot, no writes.
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
/// Begins a flushed write unit: the cluster-wide write lock, in the same round trip.
const BEGIN_WRITE: &str = concat!(
    "BEGIN; SELECT pg_advisory_xact_lock(",
    write_lock_key!(),
    ")"
);
/// Begins a relaxed write unit: as [`BEGIN_WRITE`], committing without waiting for the WAL
/// flush.
const BEGIN_RELAXED: &str = concat!(
    "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_advisory_xact_lock(",
    write_lock_key!(),
    ")"
);

/// How to reach the PostgreSQL database.
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq-style URL or key=value string: `postgres://user:password@host:5432/mailroom`.
    /// `sslmode=require`, `verify-ca` or `verify-full` turn TLS on, which always verifies the
    /// server's certificate and name; without them the connection is plain.
    pub url: String,
    /// PEM file of the certificates that may sign the server's (a private CA); without it, the
    /// web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// Connections, each with a thread of its own: how many units run at once (at least one).
    pub connections: usize,
}

impl PgOptions {
    /// Connections of a store unless configured otherwise.
    pub const DEFAULT_CONNECTIONS: usize = 8;

    /// Options for `url`, trusting the web PKI roots, with
    /// [`PgOptions::DEFAULT_CONNECTIONS`].
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            ca_file: None,
            connections: PgOptions::DEFAULT_CONNECTIONS,
        }
    }
}

impl std::fmt::Debug for PgOptions {
    /// Shows host, port and database, never the user or password of the URL.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &conn::describe(&self.url))
            .field("ca_file", &self.ca_file)
            .field("connections", &self.connections)
            .finish()
    }
}

/// The metadata store on PostgreSQL.
///
/// Cloning is cheap and shares the threads.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.inner.shared.connector.location())
            .finish()
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// The threads' queue; `None` once closed.
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Woken by the listener thread, started by the first [`MetaStore::changes`].
    changes: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
}

/// What the store's threads share.
struct Shared {
    connector: Connector,
    counters: Counters,
    tap: EventTap,
    /// Set by [`PgStore::close`]: units still queued are answered Transient.
    closing: AtomicBool,
}

#[derive(Default)]
struct Counters {
    /// Units, commits and flushes, as [`MetaStore::stats`] reports them.
    units: crate::runner::Counters,
    /// Requests sent to the server, shared with every connection.
    round_trips: Arc<AtomicU64>,
}

/// Which transaction a unit runs in.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Read,
    Write(Durability),
}

impl Kind {
    fn begin(self) -> &'static str {
        match self {
            Kind::Read => BEGIN_READ,
            Kind::Write(Durability::Flush) => BEGIN_WRITE,
            Kind::Write(Durability::Relaxed) => BEGIN_RELAXED,
        }
    }
}

/// Work the store runs on a thread's connection outside any unit.
type RawWork = Box<dyn FnOnce(&Shared, &mut Option<Conn>) + Send>;

/// Work for a store thread.
enum Job {
    /// A unit of work and where its answer goes.
    Unit {
        kind: Kind,
        unit: Unit,
        reply: oneshot::Sender<Result<UnitOutput>>,
    },
    /// Something the store itself runs on a thread's connection, outside any unit (it answers
    /// on a channel of its own; dropped unrun when the store closes).
    Raw(RawWork),
}

impl PgStore {
    /// Connects to the database, brings its schema up to date (under an advisory lock, so
    /// nodes starting together migrate once) and starts the store's threads, each with its
    /// own connection.
    pub async fn connect(options: PgOptions) -> Result<PgStore, MetaError> {
        tokio::task::spawn_blocking(move || PgStore::connect_blocking(&options))
            .await
            .map_err(|error| MetaError::Thread(std::io::Error::other(error)))?
    }

    fn connect_blocking(options: &PgOptions) -> Result<PgStore, MetaError> {
        let (connector, counters, first) = connect_migrated(options)?;
        let connect = || {
            connector
                .connect(counters.round_trips.clone())
                .map_err(|source| MetaError::Connect {
                    location: connector.location().to_owned(),
                    source,
                })
        };
        let mut connections = vec![first];
        for _ in 1..options.connections.max(1) {
            connections.push(connect()?);
        }
        let shared = Arc::new(Shared {
            connector,
            counters,
            tap: EventTap::default(),
            closing: AtomicBool::new(false),
        });
        PgStore::start(shared, connections)
    }

    fn start(shared: Arc<Shared>, connections: Vec<Conn>) -> Result<PgStore, MetaError> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        let store = PgStore {
            inner: Arc::new(Inner {
                shared: shared.clone(),
                queue: Mutex::new(Some(queue)),
                threads: Mutex::new(Vec::new()),
                changes: std::sync::OnceLock::new(),
            }),
        };
        for (i, conn) in connections.into_iter().enumerate() {
            let (jobs, shared) = (jobs.clone(), shared.clone());
            let thread = std::thread::Builder::new()
                .name(format!("meta-pg-{i}"))
                .spawn(move || run_thread(Some(conn), &jobs, &shared))
                .map_err(MetaError::Thread)?;
            lock(&store.inner.threads).push(thread);
        }
        Ok(store)
    }

    /// Requests sent to the server so far (statements, preparations, transaction control and
    /// connection start-ups): the round trips the bench divides by file operations.
    pub fn round_trips(&self) -> u64 {
        self.inner
            .shared
            .counters
            .round_trips
            .load(Ordering::Relaxed)
    }

    /// The ids of every blob kept inline, for diagnostics and tests.
    pub async fn inline_blob_ids(&self) -> Result<Vec<BlobId>> {
        self.raw(|shared, slot| {
            let rows = shared
                .connection(slot)?
                .query("SELECT blob_id FROM inline_blobs ORDER BY blob_id", &[])
                .map_err(pg_storage("inline_blob_ids"))?;
            rows.iter()
                .map(|row| crate::convert::parsed(row, "blob_id", BlobId::parse))
                .collect()
        })
        .await
    }

    /// The value of a run-time setting (`synchronous_commit`, say) inside a write transaction
    /// begun exactly as a write unit of `durability` begins; nothing is written and the
    /// transaction is rolled back. For diagnostics and tests.
    pub async fn setting_in_write(&self, durability: Durability, name: &str) -> Result<String> {
        let name = name.to_owned();
        self.raw(move |shared, slot| {
            shared.begin(slot, Kind::Write(durability))?;
            let conn = in_transaction(slot)?;
            let value = conn
                .query("SELECT current_setting($1) AS value", &[&name])
                .map_err(pg_storage("setting_in_write"));
            rollback(conn);
            let rows = value?;
            let row = rows
                .first()
                .ok_or_else(|| CoreError::internal("metadata store error"))?;
            convert::column(row, "value")
        })
        .await
    }

    /// Stops the store's threads: a unit under way finishes, units still queued are answered
    /// Transient, and the connections close. Later calls fail as Transient.
    pub async fn close(&self) {
        self.inner.shared.closing.store(true, Ordering::Release);
        lock(&self.inner.queue).take();
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        crate::runner::join(threads).await;
    }

    /// Sends every audit record to `sender` once the transaction holding it has committed, in
    /// commit order. Handing over never waits: when the channel is full the record is dropped
    /// and counted ([`PgStore::dropped_events`]), so a slow observer never stalls a commit.
    /// Returns `false`, changing nothing, if an observer was set already.
    pub fn set_event_tap(&self, sender: tokio::sync::mpsc::Sender<AuditRecord>) -> bool {
        self.inner.shared.tap.set(sender)
    }

    /// Audit records the event tap dropped because its channel was full or closed.
    pub fn dropped_events(&self) -> u64 {
        self.inner.shared.tap.dropped()
    }

    /// Runs `work` on a store thread, outside any unit, and returns its answer.
    async fn raw<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared, &mut Option<Conn>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Raw(Box::new(move |shared, slot| {
            let _ = reply.send(work(shared, slot));
        })))?;
        answer.await.map_err(|_| closing())?
    }

    /// Queues a unit and waits for its answer.
    async fn submit(&self, kind: Kind, unit: Unit) -> Result<UnitOutput> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Unit { kind, unit, reply })?;
        answer.await.map_err(|_| closing())?
    }

    fn send(&self, job: Job) -> Result<()> {
        send(&self.inner.queue, job)
    }
}

#[async_trait]
impl MetaStore for PgStore {
    async fn read(&self, unit: Unit) -> Result<UnitOutput> {
        self.inner.shared.counters.units.read();
        self.submit(Kind::Read, unit).await
    }

    async fn write(&self, durability: Durability, unit: Unit) -> Result<UnitOutput> {
        self.inner.shared.counters.units.write();
        self.submit(Kind::Write(durability), unit).await
    }

    fn stats(&self) -> StoreStats {
        self.inner.shared.counters.units.stats()
    }

    /// Woken by a thread that listens on a connection of its own (`LISTEN mailroom_sessions`),
    /// started at the first call: see `listen.rs`.
    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        let inner = &self.inner;
        let changes = inner.changes.get_or_init(|| {
            let changes = Arc::new(tokio::sync::Notify::new());
            if !inner.shared.closing.load(Ordering::Acquire) {
                match listen::start(inner, changes.clone()) {
                    Ok(thread) => lock(&inner.threads).push(thread),
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot start the listener thread; polling instead");
                    }
                }
            }
            changes
        });
        Some(changes.clone())
    }
}

/// One connection to the database of `options`, with the schema brought up to date (under
/// the migration lock), and the connector and counters for more.
fn connect_migrated(options: &PgOptions) -> Result<(Connector, Counters, Conn), MetaError> {
    let connector = Connector::new(&options.url, options.ca_file.as_deref())?;
    let counters = Counters::default();
    let mut conn = connector
        .connect(counters.round_trips.clone())
        .map_err(|source| MetaError::Connect {
            location: connector.location().to_owned(),
            source,
        })?;
    migrate::migrate(&mut conn).map_err(|reason| MetaError::Migrate {
        location: connector.location().to_owned(),
        reason,
    })?;
    Ok((connector, counters, conn))
}

/// A connection to the database of `options` outside any store, its schema up to date: what
/// copying a database in works on.
pub(crate) fn connect_for_copy(options: &PgOptions) -> Result<Conn, MetaError> {
    connect_migrated(options).map(|(_, _, conn)| conn)
}

/// A store thread: runs jobs until the queue closes, replacing its connection when lost.
fn run_thread(mut slot: Option<Conn>, jobs: &Mutex<mpsc::Receiver<Job>>, shared: &Shared) {
    loop {
        let job = match lock(jobs).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let stopping = shared.closing.load(Ordering::Acquire);
        match job {
            Job::Unit { reply, .. } if stopping => {
                let _ = reply.send(Err(closing()));
            }
            Job::Unit { kind, unit, reply } => {
                let _ = reply.send(shared.run_unit(&mut slot, kind, unit));
            }
            Job::Raw(_) if stopping => {}
            Job::Raw(work) => work(shared, &mut slot),
        }
        if slot.as_ref().is_some_and(Conn::is_closed) {
            // Replaced before the next job.
            slot = None;
        }
    }
}

impl Shared {
    /// The thread's connection, opened anew if there is none or it was lost.
    fn connection<'s>(&self, slot: &'s mut Option<Conn>) -> Result<&'s mut Conn> {
        if slot.as_ref().is_none_or(Conn::is_closed) {
            *slot = None;
            let conn = self
                .connector
                .connect(self.counters.round_trips.clone())
                .map_err(|error| {
                    tracing::warn!(
                        location = self.connector.location(),
                        error = %error,
                        "cannot connect to the metadata database"
                    );
                    CoreError::transient("the metadata store is unavailable; try again later")
                })?;
            *slot = Some(conn);
        }
        slot.as_mut()
            .ok_or_else(|| CoreError::internal("metadata store error"))
    }

    /// Opens the transaction of a unit of `kind`. A connection found lost by the `BEGIN` is
    /// replaced and the `BEGIN` sent once more: nothing of the unit has run yet.
    fn begin(&self, slot: &mut Option<Conn>, kind: Kind) -> Result<()> {
        let mut retried = false;
        loop {
            let Err(error) = self.connection(slot)?.batch(kind.begin()) else {
                return Ok(());
            };
            let lost = is_pg_connection_lost(&error);
            if lost {
                *slot = None;
            }
            if !lost || retried {
                return Err(classify_pg("begin", &error));
            }
            tracing::info!("the metadata store's connection was lost; connecting again");
            retried = true;
        }
    }

    /// Runs one unit in its own transaction and answers it.
    fn run_unit(&self, slot: &mut Option<Conn>, kind: Kind, unit: Unit) -> Result<UnitOutput> {
        self.begin(slot, kind)?;
        let conn = in_transaction(slot)?;
        match kind {
            Kind::Read => read_unit(conn, unit),
            Kind::Write(durability) => self.write_unit(conn, durability, unit),
        }
    }

    /// A write unit: committed if it succeeded (its records then go to the tap), else rolled
    /// back.
    fn write_unit(
        &self,
        conn: &mut Conn,
        durability: Durability,
        unit: Unit,
    ) -> Result<UnitOutput> {
        let mut tx = PgTx::new(conn, true);
        let result = run_unit(unit, &mut tx);
        let records = std::mem::take(&mut tx.recorded);
        let result = settle(result, tx.failed.take());
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                rollback(conn);
                return Err(error);
            }
        };
        if let Err(error) = conn.batch("COMMIT") {
            // If the connection went during the commit, whether it committed is unknown.
            rollback(conn);
            return Err(classify_pg("commit", &error));
        }
        self.counters
            .units
            .committed(durability == Durability::Flush);
        self.tap.committed(records);
        Ok(output)
    }
}

/// The connection [`Shared::begin`] opened a transaction on. Never a new one: a unit must run
/// inside its transaction (and, writing, under the lock) or not at all.
fn in_transaction(slot: &mut Option<Conn>) -> Result<&mut Conn> {
    slot.as_mut().ok_or_else(|| {
        tracing::error!("no connection after BEGIN");
        CoreError::internal("metadata store error")
    })
}

/// A read unit, inside the read transaction begun for it.
fn read_unit(conn: &mut Conn, unit: Unit) -> Result<UnitOutput> {
    let mut tx = PgTx::new(conn, false);
    let result = run_unit(unit, &mut tx);
    let result = settle(result, tx.failed.take());
    // Nothing was written: ending the read transaction either way only releases its snapshot.
    rollback(conn);
    result
}

/// A unit that succeeded although one of its statements failed (it went on after the error)
/// fails with that error: PostgreSQL aborted its transaction, so nothing of it can commit.
fn settle(result: Result<UnitOutput>, failed: Option<CoreError>) -> Result<UnitOutput> {
    match (result, failed) {
        (Ok(_), Some(error)) => Err(error),
        (result, _) => result,
    }
}

/// Ends the transaction without keeping anything. A connection that cannot even do that is
/// discarded, to be replaced before the next unit.
fn rollback(conn: &mut Conn) {
    if let Err(error) = conn.batch("ROLLBACK") {
        tracing::warn!(error = %error, "rollback failed; the connection is replaced");
        conn.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_show_no_password() {
        let options = PgOptions::new("postgres://mailroom:s3cret@db.example:5432/hub");
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.example:5432/hub"), "{shown}");
        assert_eq!(options.connections, PgOptions::DEFAULT_CONNECTIONS);
    }

    #[test]
    fn writes_take_the_lock_in_their_begin() {
        for begin in [BEGIN_WRITE, BEGIN_RELAXED] {
            assert!(begin.starts_with("BEGIN;"));
            assert!(begin.ends_with(concat!("pg_advisory_xact_lock(", write_lock_key!(), ")")));
        }
        assert!(BEGIN_RELAXED.contains("SET LOCAL synchronous_commit = off"));
        assert!(!BEGIN_READ.contains("advisory"));
    }
}
