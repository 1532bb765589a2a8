//! [`SqliteStore`]: the metadata store in one SQLite file, in WAL mode, run by threads of its
//! own.
//!
//! Every unit of work is one hop: the caller's task hands the unit to a store thread over a
//! channel and awaits its answer; the thread runs the whole unit inside one transaction with
//! cached prepared statements. Write units go to the one writer thread, which commits every
//! unit waiting at once in one `BEGIN IMMEDIATE` transaction, each unit in a savepoint of its
//! own (group commit: one WAL `fsync` for all of them; a unit that fails is rolled back alone).
//! Nobody is answered before the commit holding their change has returned, so group commit
//! shortens no durability promise: it only shares the `fsync`. A batch of relaxed units only
//! (logins, downloads, refusals) commits with `synchronous = NORMAL`: it survives a crash of
//! the process, and a crash of the machine once the next flushed commit is done, as WAL frames
//! are written in order. Read units go to a few reader threads with connections of their own
//! (`query_only`), each unit in one read transaction: one snapshot, never waiting for a
//! commit's `fsync`.
//!
//! Checkpoints (copying the WAL back into the database file, with its own `fsync`) run on a
//! checkpointer thread of their own, not in the commit that happens to fill the log: the
//! writer's WAL hook wakes it once the log holds [`CHECKPOINT_PAGES`] pages, and it runs a
//! passive checkpoint beside the writer. Only a log past [`CHECKPOINT_HARD_PAGES`] (the
//! checkpointer cannot keep up) is checkpointed in the commit itself.
//!
//! Why rusqlite and threads of our own rather than an async driver: SQLite is a library, not a
//! server. An async driver runs each statement as a hop to a worker thread, and a Hub
//! operation of five statements paid five hops (measured: 66–105 context switches and over a
//! millisecond of CPU per small file). Here SQLite's own work is the cost.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use mailroom_core::{
    AuditRecord, BlobId, CoreError, Durability, MetaStore, Result, StoreStats, Unit, UnitOutput,
};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::error::{MetaError, storage};
use crate::migrate::migrate;
use crate::runner::{Counters, closing, lock, run_unit, send};
use crate::tap::EventTap;
use crate::tx::SqliteTx;

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Reader threads of a file store (each with its own connection).
const READERS: usize = 3;
/// Most units in one write transaction; more wait for the next commit.
const MAX_BATCH: usize = 512;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;
/// Idle short-read connections kept for reuse.
const SHORT_READERS: usize = 4;
/// WAL pages after which the checkpointer thread is woken (SQLite's own default threshold).
const CHECKPOINT_PAGES: i32 = 1000;
/// WAL pages after which the writer checkpoints in the commit itself: the checkpointer has
/// fallen far behind, and the log must not grow without bound.
const CHECKPOINT_HARD_PAGES: i32 = 32_000;
/// The size a WAL file is cut back to after a checkpoint, in bytes.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The metadata store on SQLite.
///
/// Cloning is cheap and shares the threads.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.inner.location)
            .finish()
    }
}

struct Inner {
    location: String,
    /// The writer thread's queue; `None` once closed.
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    /// The reader threads' queue; `None` for a store in memory, whose one connection (the
    /// writer's) runs the reads too, and once closed.
    readers: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    counters: Counters,
    tap: Arc<EventTap>,
    /// Connections for short reads on the caller's thread; empty (and never filled) for a
    /// store in memory.
    short_reads: Mutex<Vec<Connection>>,
    /// The database file, to open more short-read connections; `None` in memory.
    path: Option<std::path::PathBuf>,
}

/// The connection settings SQLite reports, for diagnostics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `PRAGMA journal_mode`: `wal` for a file, `memory` in memory.
    pub journal_mode: String,
    /// `PRAGMA synchronous` between commits: 2 is FULL.
    pub synchronous: i64,
    /// `PRAGMA foreign_keys`.
    pub foreign_keys: bool,
    /// `PRAGMA busy_timeout`, in milliseconds.
    pub busy_timeout_ms: i64,
}

/// Work for a store thread.
enum Job {
    /// A unit of work and where its answer goes.
    Unit {
        durability: Option<Durability>,
        unit: Unit,
        reply: oneshot::Sender<Result<UnitOutput>>,
    },
    /// Something the store itself runs on the writer's connection, outside any unit.
    Raw(Box<dyn FnOnce(&Connection) + Send>),
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (readable by its owner only) if missing, and
    /// brings its schema up to date.
    ///
    /// The file runs in WAL mode with `synchronous = FULL`: once a flushed write has returned,
    /// its change survives a power cut. Another process may open the same file meanwhile;
    /// writers wait up to 10 s for each other.
    pub async fn open(path: &Path) -> Result<SqliteStore, MetaError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || SqliteStore::open_blocking(&path))
            .await
            .map_err(|error| MetaError::Thread(std::io::Error::other(error)))?
    }

    fn open_blocking(path: &Path) -> Result<SqliteStore, MetaError> {
        let location = path.display().to_string();
        create_private_file(path).map_err(|source| MetaError::Create {
            location: location.clone(),
            source,
        })?;
        let open = |source| MetaError::Open {
            location: location.clone(),
            source,
        };
        let writer = connect(path).map_err(open)?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        migrate(&writer).map_err(|reason| MetaError::Migrate {
            location: location.clone(),
            reason,
        })?;
        check_durability(&writer, &location)?;
        writer
            .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(open)?;
        let checkpointer = connect(path).map_err(open)?;
        let (wake, wakes) = mpsc::sync_channel::<()>(1);
        let mut writer = writer;
        // Replaces SQLite's automatic checkpoint, which would run inside the commit.
        writer
            .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
                if pages >= CHECKPOINT_HARD_PAGES {
                    tracing::warn!(
                        pages,
                        "the WAL outgrew the checkpointer; checkpointing in the commit"
                    );
                    wal.checkpoint()?;
                } else if pages >= CHECKPOINT_PAGES {
                    // Full means a wake-up is already pending.
                    let _ = wake.try_send(());
                }
                Ok(())
            }))
            .map_err(open)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = connect(path).map_err(open)?;
            reader
                .pragma_update(None, "query_only", true)
                .map_err(open)?;
            readers.push(reader);
        }
        let store = SqliteStore::start(location, writer, readers, Some(path.to_owned()))?;
        let thread = std::thread::Builder::new()
            .name("meta-checkpoint".to_owned())
            .spawn(move || run_checkpointer(checkpointer, wakes))
            .map_err(MetaError::Thread)?;
        lock(&store.inner.threads).push(thread);
        Ok(store)
    }

    /// Opens a fresh database in memory, for tests. It lives as long as the store: one
    /// connection, on the writer thread, which runs the reads too.
    pub async fn open_in_memory() -> Result<SqliteStore, MetaError> {
        let location = ":memory:".to_owned();
        let open = |source| MetaError::Open {
            location: location.clone(),
            source,
        };
        let conn = Connection::open_in_memory().map_err(open)?;
        configure(&conn).map_err(open)?;
        migrate(&conn).map_err(|reason| MetaError::Migrate {
            location: location.clone(),
            reason,
        })?;
        SqliteStore::start(location, conn, Vec::new(), None)
    }

    fn start(
        location: String,
        writer: Connection,
        readers: Vec<Connection>,
        path: Option<std::path::PathBuf>,
    ) -> Result<SqliteStore, MetaError> {
        let tap = Arc::new(EventTap::default());
        let (write_queue, write_jobs) = mpsc::channel::<Job>();
        let mut threads = Vec::new();
        let store = SqliteStore {
            inner: Arc::new(Inner {
                location,
                writer: Mutex::new(Some(write_queue)),
                readers: Mutex::new(None),
                threads: Mutex::new(Vec::new()),
                counters: Counters::default(),
                tap: tap.clone(),
                short_reads: Mutex::new(Vec::new()),
                path,
            }),
        };
        let weak = Arc::downgrade(&store.inner);
        threads.push(
            std::thread::Builder::new()
                .name("meta-writer".to_owned())
                .spawn(move || run_writer(writer, write_jobs, tap, weak))
                .map_err(MetaError::Thread)?,
        );
        if !readers.is_empty() {
            let (read_queue, read_jobs) = mpsc::channel::<Job>();
            let read_jobs = Arc::new(Mutex::new(read_jobs));
            for (i, conn) in readers.into_iter().enumerate() {
                let jobs = read_jobs.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("meta-reader-{i}"))
                        .spawn(move || run_reader(conn, jobs))
                        .map_err(MetaError::Thread)?,
                );
            }
            *lock(&store.inner.readers) = Some(read_queue);
        }
        *lock(&store.inner.threads) = threads;
        Ok(store)
    }

    /// The ids of every blob kept inline, for diagnostics and tests.
    pub async fn inline_blob_ids(&self) -> Result<Vec<BlobId>> {
        self.raw(|conn| {
            let mut statement = conn
                .prepare("SELECT blob_id FROM inline_blobs ORDER BY blob_id")
                .map_err(storage("inline_blob_ids"))?;
            let ids: Vec<String> = statement
                .query_map([], |row| row.get(0))
                .and_then(|rows| rows.collect())
                .map_err(storage("inline_blob_ids"))?;
            ids.iter()
                .map(|id| {
                    BlobId::parse(id).map_err(|_| CoreError::internal("metadata store error"))
                })
                .collect()
        })
        .await
    }

    /// The settings in force on the writer's connection.
    pub async fn settings(&self) -> Result<StoreSettings> {
        self.raw(|conn| read_settings(conn).map_err(storage("settings")))
            .await
    }

    /// Stops the store's threads once the work queued has been done; their connections close
    /// (the last one checkpoints the WAL). Later calls fail as Transient.
    pub async fn close(&self) {
        lock(&self.inner.writer).take();
        lock(&self.inner.readers).take();
        lock(&self.inner.short_reads).clear();
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        crate::runner::join(threads).await;
    }

    /// Sends every audit record to `sender` once the transaction holding it has committed, in
    /// commit order. Handing over never waits: when the channel is full the record is dropped
    /// and counted ([`SqliteStore::dropped_events`]), so a slow observer never stalls a
    /// commit. Returns `false`, changing nothing, if an observer was set already.
    pub fn set_event_tap(&self, sender: tokio::sync::mpsc::Sender<AuditRecord>) -> bool {
        self.inner.tap.set(sender)
    }

    /// Audit records the event tap dropped because its channel was full or closed.
    pub fn dropped_events(&self) -> u64 {
        self.inner.tap.dropped()
    }

    /// Runs `work` on the writer's connection, outside any unit, and returns its answer.
    async fn raw<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        send(
            &self.inner.writer,
            Job::Raw(Box::new(move |conn| {
                let _ = reply.send(work(conn));
            })),
        )?;
        answer.await.map_err(|_| closing())?
    }

    /// Queues a unit and waits for its answer.
    async fn submit(&self, durability: Option<Durability>, unit: Unit) -> Result<UnitOutput> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Unit {
            durability,
            unit,
            reply,
        };
        let queue = match durability {
            None if lock(&self.inner.readers).is_some() => &self.inner.readers,
            _ => &self.inner.writer,
        };
        send(queue, job)?;
        answer.await.map_err(|_| closing())?
    }
}

impl SqliteStore {
    /// A connection for a short read: an idle one from the pool, or a new one.
    fn short_reader(&self) -> Option<Connection> {
        if let Some(conn) = lock(&self.inner.short_reads).pop() {
            return Some(conn);
        }
        let path = self.inner.path.as_ref()?;
        let conn = connect(path)
            .and_then(|conn| {
                conn.pragma_update(None, "query_only", true)?;
                Ok(conn)
            })
            .map_err(|error| tracing::warn!(error = %error, "no connection for a short read"))
            .ok()?;
        Some(conn)
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn read(&self, unit: Unit) -> Result<UnitOutput> {
        self.inner.counters.read();
        self.submit(None, unit).await
    }

    async fn read_short(&self, unit: Unit) -> Result<UnitOutput> {
        if lock(&self.inner.writer).is_none() {
            return Err(closing());
        }
        let Some(conn) = self.short_reader() else {
            // In memory, or no connection to be had: the reader threads.
            return self.read(unit).await;
        };
        self.inner.counters.read();
        let result = read_unit(&conn, unit);
        let mut pool = lock(&self.inner.short_reads);
        if pool.len() < SHORT_READERS {
            pool.push(conn);
        }
        result
    }

    async fn write(&self, durability: Durability, unit: Unit) -> Result<UnitOutput> {
        self.inner.counters.write();
        self.submit(Some(durability), unit).await
    }

    fn stats(&self) -> StoreStats {
        self.inner.counters.stats()
    }
}

/// Opens one connection to the database file with the settings every connection needs.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    Ok(conn)
}

/// The settings of every connection: durable commits, foreign keys, waiting for locks, a
/// statement cache large enough for every statement the units use, and plans that do not
/// depend on bound values.
///
/// The last is SQLite's query planner stability guarantee. Without it, a statement whose plan
/// looked at a bound value (to see whether a partial index of live deliveries applies, or
/// whether an ORDER BY is already satisfied) is prepared again each time a value is bound:
/// every lookup of a file parsed and planned its SQL anew, a quarter of the CPU of a stat.
/// Our queries name the partial indexes' condition literally, so they need no bound value to
/// choose a plan.
pub(crate) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Refuses to run when SQLite did not take the durability settings, rather than lose
/// committed changes later.
fn check_durability(conn: &Connection, location: &str) -> Result<(), MetaError> {
    let settings = read_settings(conn).map_err(|source| MetaError::Open {
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

/// The PRAGMA values of one connection.
fn read_settings(conn: &Connection) -> rusqlite::Result<StoreSettings> {
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    let foreign_keys: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    let busy_timeout_ms: i64 = conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
    Ok(StoreSettings {
        journal_mode: journal_mode.to_ascii_lowercase(),
        synchronous,
        foreign_keys: foreign_keys == 1,
        busy_timeout_ms,
    })
}

/// Creates the database file with owner-only permissions if it does not exist, so that the
/// password hashes in it (and in the `-wal` and `-shm` files SQLite derives from it) are not
/// readable by other local users.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// Runs one transaction-control statement (`BEGIN`, `COMMIT`, a savepoint) from the
/// connection's statement cache: parsed once per connection, not once per transaction.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// A read unit in one read transaction.
fn read_unit(conn: &Connection, unit: Unit) -> Result<UnitOutput> {
    run(conn, "BEGIN").map_err(storage("read"))?;
    let mut tx = SqliteTx::new(conn, false);
    let result = run_unit(unit, &mut tx);
    // Nothing was written: ending the read transaction either way only releases its snapshot.
    let _ = run(conn, "COMMIT");
    result
}

/// A reader thread: runs read units until the queue closes.
fn run_reader(conn: Connection, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let job = match lock(&jobs).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        match job {
            Job::Unit { unit, reply, .. } => {
                let _ = reply.send(read_unit(&conn, unit));
            }
            Job::Raw(work) => work(&conn),
        }
    }
}

/// The checkpointer thread: a passive checkpoint each time the writer's WAL hook wakes it,
/// beside the writer, until the writer's connection (and with it the hook) is gone.
fn run_checkpointer(conn: Connection, wakes: mpsc::Receiver<()>) {
    while wakes.recv().is_ok() {
        match conn.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE) {
            Ok((log, done)) => tracing::debug!(log, done, "checkpoint"),
            Err(error) => tracing::warn!(error = %error, "checkpoint failed; the next one retries"),
        }
    }
}

/// A write unit waiting in a batch.
struct Pending {
    durability: Durability,
    unit: Unit,
    reply: oneshot::Sender<Result<UnitOutput>>,
}

/// The writer thread: takes the first job, then every job already waiting (while a commit's
/// `fsync` runs, the next batch gathers by itself), and commits the write units together.
/// Read units (a store in memory) and raw work run in order between batches.
fn run_writer(
    conn: Connection,
    jobs: mpsc::Receiver<Job>,
    tap: Arc<EventTap>,
    store: std::sync::Weak<Inner>,
) {
    let count_commit = |flushed: bool| {
        if let Some(inner) = store.upgrade() {
            inner.counters.committed(flushed);
        }
    };
    while let Ok(first) = jobs.recv() {
        let mut waiting = vec![first];
        while waiting.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => waiting.push(job),
                Err(_) => break,
            }
        }
        let mut batch: Vec<Pending> = Vec::new();
        for job in waiting {
            match job {
                Job::Unit {
                    durability: Some(durability),
                    unit,
                    reply,
                } => batch.push(Pending {
                    durability,
                    unit,
                    reply,
                }),
                Job::Unit {
                    durability: None,
                    unit,
                    reply,
                } => {
                    commit_batch(&conn, std::mem::take(&mut batch), &tap, &count_commit);
                    let _ = reply.send(read_unit(&conn, unit));
                }
                Job::Raw(work) => {
                    commit_batch(&conn, std::mem::take(&mut batch), &tap, &count_commit);
                    work(&conn);
                }
            }
        }
        commit_batch(&conn, batch, &tap, &count_commit);
    }
}

/// Runs a batch of write units in one transaction, each in a savepoint, commits, hands the
/// audit records of the units that succeeded to the tap, and answers every unit. A failed
/// commit fails every unit of the batch.
fn commit_batch(
    conn: &Connection,
    batch: Vec<Pending>,
    tap: &EventTap,
    count_commit: &impl Fn(bool),
) {
    if batch.is_empty() {
        return;
    }
    let flush = batch.iter().any(|p| p.durability == Durability::Flush);
    let fail_all = |batch: Vec<Pending>, err: CoreError| {
        for pending in batch {
            let _ = pending.reply.send(Err(err.clone()));
        }
    };
    if !flush && let Err(error) = conn.pragma_update(None, "synchronous", "NORMAL") {
        return fail_all(batch, storage("group commit")(error));
    }
    if let Err(error) = run(conn, "BEGIN IMMEDIATE") {
        restore_sync(conn, flush);
        return fail_all(batch, storage("group commit")(error));
    }
    let alone = batch.len() == 1;
    let mut answers = Vec::with_capacity(batch.len());
    let mut recorded = Vec::new();
    for pending in batch {
        // Alone in its batch, a unit needs no savepoint: if it fails, nothing is committed.
        if !alone && let Err(error) = run(conn, "SAVEPOINT unit") {
            answers.push((pending.reply, Err(storage("group commit")(error))));
            continue;
        }
        let mut tx = SqliteTx::new(conn, true);
        let result = run_unit(pending.unit, &mut tx);
        let records = std::mem::take(&mut tx.recorded);
        let ended = match (&result, alone) {
            (Ok(_), true) => Ok(()),
            (Ok(_), false) => run(conn, "RELEASE unit"),
            (Err(_), true) => Ok(()),
            (Err(_), false) => {
                run(conn, "ROLLBACK TO unit").and_then(|()| run(conn, "RELEASE unit"))
            }
        };
        match ended {
            Ok(()) => {
                if result.is_ok() {
                    recorded.extend(records);
                }
                answers.push((pending.reply, result));
            }
            Err(error) => answers.push((pending.reply, Err(storage("group commit")(error)))),
        }
    }
    let all_failed = answers.iter().all(|(_, r)| r.is_err());
    let committed = if alone && all_failed {
        run(conn, "ROLLBACK").map_err(storage("group commit"))
    } else {
        run(conn, "COMMIT").map_err(|error| {
            let _ = run(conn, "ROLLBACK");
            storage("group commit")(error)
        })
    };
    restore_sync(conn, flush);
    match committed {
        Ok(()) if !(alone && all_failed) => {
            // A batch whose units all failed committed nothing worth counting.
            if !all_failed {
                count_commit(flush);
            }
            tap.committed(recorded);
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
        Ok(()) => {
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            for (reply, result) in answers {
                let _ = reply.send(result.and(Err(err.clone())));
            }
        }
    }
}

/// Puts `synchronous = FULL` back after a relaxed batch, so every other commit is flushed.
fn restore_sync(conn: &Connection, flushed: bool) {
    if !flushed && let Err(error) = conn.pragma_update(None, "synchronous", "FULL") {
        tracing::error!(error = %error, "could not restore synchronous = FULL");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use super::*;
    use crate::error::classify;
    use mailroom_core::ErrorKind;

    #[test]
    fn database_errors_map_to_kinds() {
        let conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        migrate(&conn).unwrap();
        let insert = "INSERT INTO principals (name, kind) VALUES ('a', 'group')";
        conn.execute(insert, []).unwrap();
        let duplicate = conn.execute(insert, []).unwrap_err();
        assert_eq!(classify("test", duplicate).kind(), ErrorKind::Conflict);

        let broken = conn.execute("SELEC 1", []).unwrap_err();
        let error = classify("test", broken);
        assert_eq!(error.kind(), ErrorKind::Internal);
        assert_eq!(error.message(), "metadata store error");
    }

    #[test]
    fn a_locked_database_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let holder = connect(&path).unwrap();
        holder.pragma_update(None, "journal_mode", "WAL").unwrap();
        migrate(&holder).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        // Another process that will not wait.
        let other = connect(&path).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        let busy = other.execute_batch("BEGIN IMMEDIATE").unwrap_err();
        assert_eq!(classify("test", busy).kind(), ErrorKind::Transient);
    }
}
