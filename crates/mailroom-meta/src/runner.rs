//! What the two stores' threads share ([`crate::SqliteStore`] in `store.rs`,
//! [`crate::PgStore`] in `pg/mod.rs`): the queue into the threads, a unit run with its panic
//! caught, the counters behind [`mailroom_core::MetaStore::stats`], and waiting for the
//! threads at close.
//!
//! How each store runs its units (group commit on SQLite's one writer, a transaction per unit
//! under the advisory lock on PostgreSQL) stays with the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;

use mailroom_core::{CoreError, Result, StoreStats, Tx, Unit, UnitOutput};

/// Locks `mutex`, taking over one a panicking thread left poisoned: the store's queues and
/// lists stay usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The answer to work sent to a store that is closing.
pub(crate) fn closing() -> CoreError {
    CoreError::transient("the metadata store is closing")
}

/// Queues `job` for a store's threads; Transient once the queue is closed (`None`).
pub(crate) fn send<J>(queue: &Mutex<Option<mpsc::Sender<J>>>, job: J) -> Result<()> {
    let queue = lock(queue);
    let Some(sender) = queue.as_ref() else {
        return Err(closing());
    };
    sender.send(job).map_err(|_| closing())
}

/// A unit's answer: its own result, or Internal if it panicked (the panic is logged).
pub(crate) fn run_unit(unit: Unit, tx: &mut dyn Tx) -> Result<UnitOutput> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unit(tx))) {
        Ok(result) => result,
        Err(_) => {
            tracing::error!("a unit of work panicked; its transaction is rolled back");
            Err(CoreError::internal("metadata store error"))
        }
    }
}

/// Waits, off the async threads, until every one of `threads` has ended.
pub(crate) async fn join(threads: Vec<JoinHandle<()>>) {
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

/// What a store has done since it opened, as [`StoreStats`] reports it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    commits: AtomicU64,
    flushes: AtomicU64,
}

impl Counters {
    /// Counts a read unit.
    pub(crate) fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write unit (committed or not).
    pub(crate) fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write transaction committed, and its WAL flush if `flushed`.
    pub(crate) fn committed(&self, flushed: bool) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if flushed {
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far.
    pub(crate) fn stats(&self) -> StoreStats {
        StoreStats {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}
