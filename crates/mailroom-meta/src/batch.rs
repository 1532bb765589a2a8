//! Group commit: the durable writes that come in concurrently (deliveries, transitions,
//! events) are committed together, one transaction and so one WAL `fsync` for all of them.
//!
//! One writer task owns the queue. It takes the first job, then every job already waiting
//! (while a commit's `fsync` runs, the next batch gathers by itself), and applies each inside a
//! savepoint: a job that fails (a name taken) is rolled back alone and told so; the others
//! commit. Nobody is answered before the commit that holds their change has returned, so
//! group commit shortens no durability promise: it only shares the `fsync`.

use std::fmt;
use std::sync::Arc;

use mailroom_core::{
    AuditRecord, BlobId, CoreError, Delivery, DeliveryId, DeliveryState, Event, Result,
};
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::error::storage;
use crate::sqlite::{apply_insert_deliveries, apply_transition, insert_events};
use crate::tap::EventTap;

/// Most jobs in one transaction; more wait for the next commit.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer before submitters wait for room.
const QUEUE: usize = 4096;

/// A write the writer task applies.
pub(crate) enum Op {
    /// `MetaStore::insert_deliveries`.
    InsertDeliveries {
        deliveries: Vec<Delivery>,
        events: Vec<Event>,
        inline: Option<(BlobId, Vec<u8>)>,
    },
    /// `MetaStore::transition` with flush durability.
    Transition {
        id: DeliveryId,
        from: Vec<DeliveryState>,
        to: DeliveryState,
        events: Vec<Event>,
    },
    /// `MetaStore::record` with flush durability.
    Record { events: Vec<Event> },
}

/// What a job's caller gets back.
pub(crate) enum Done {
    /// The job needs no answer beyond success.
    Unit,
    /// Whether a transition moved its delivery.
    Moved(bool),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done>>,
}

/// The handle through which writes reach the writer task.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Job>,
}

impl fmt::Debug for Batcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Batcher")
    }
}

impl Batcher {
    /// Starts the writer task on `pool`, handing committed audit records to `tap`. It ends
    /// when the last handle is dropped.
    pub(crate) fn start(pool: SqlitePool, tap: Arc<EventTap>) -> Batcher {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, tap, receiver));
        Batcher { queue }
    }

    /// Submits a write and waits until the transaction holding it has committed.
    pub(crate) async fn submit(&self, op: Op) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { op, reply })
            .await
            .map_err(|_| CoreError::transient("the metadata store is closing"))?;
        answer
            .await
            .map_err(|_| CoreError::transient("the metadata store is closing"))?
    }
}

async fn run(pool: SqlitePool, tap: Arc<EventTap>, mut receiver: mpsc::Receiver<Job>) {
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = jobs.into_iter().map(|j| (j.op, j.reply)).unzip();
        let results = commit(&pool, &tap, &ops).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that went away no longer needs its answer.
            let _ = reply.send(result);
        }
    }
}

/// Applies every op in one transaction, each in a savepoint, and commits; then hands the audit
/// records of the ops that succeeded to the tap. A failed commit fails every op of the batch.
async fn commit(pool: &SqlitePool, tap: &EventTap, ops: &[Op]) -> Vec<Result<Done>> {
    const OP: &str = "group commit";
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(error) => {
            let err = storage(OP)(error);
            return ops.iter().map(|_| Err(err.clone())).collect();
        }
    };
    let mut results = Vec::with_capacity(ops.len());
    let mut recorded = Vec::new();
    if let [op] = ops {
        // Alone in its batch, a job needs no savepoint: if it fails, nothing is committed.
        let result = apply(&mut tx, op, &mut recorded).await;
        if result.is_err() {
            let _ = tx.rollback().await;
            return vec![result];
        }
        results.push(result);
    } else {
        for op in ops {
            results.push(apply_in_savepoint(&mut tx, op, &mut recorded).await);
        }
    }
    if let Err(error) = tx.commit().await {
        let err = storage(OP)(error);
        return ops.iter().map(|_| Err(err.clone())).collect();
    }
    tap.committed(recorded);
    results
}

/// Applies one op in a savepoint; its audit records join `recorded` only if it succeeded.
async fn apply_in_savepoint(
    conn: &mut SqliteConnection,
    op: &Op,
    recorded: &mut Vec<AuditRecord>,
) -> Result<Done> {
    const OP: &str = "group commit";
    sqlx::query("SAVEPOINT job")
        .execute(&mut *conn)
        .await
        .map_err(storage(OP))?;
    let mut own = Vec::new();
    let result = apply(conn, op, &mut own).await;
    let end = if result.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job"
    };
    sqlx::query(end)
        .execute(&mut *conn)
        .await
        .map_err(storage(OP))?;
    if result.is_err() {
        sqlx::query("RELEASE job")
            .execute(&mut *conn)
            .await
            .map_err(storage(OP))?;
    } else {
        recorded.append(&mut own);
    }
    result
}

async fn apply(
    conn: &mut SqliteConnection,
    op: &Op,
    recorded: &mut Vec<AuditRecord>,
) -> Result<Done> {
    match op {
        Op::InsertDeliveries {
            deliveries,
            events,
            inline,
        } => {
            let inline = inline
                .as_ref()
                .map(|(id, content)| (id, content.as_slice()));
            apply_insert_deliveries(conn, deliveries, events, inline, recorded).await?;
            Ok(Done::Unit)
        }
        Op::Transition {
            id,
            from,
            to,
            events,
        } => Ok(Done::Moved(
            apply_transition(conn, id, from, *to, events, recorded).await?,
        )),
        Op::Record { events } => {
            recorded.extend(insert_events(conn, events, "record").await?);
            Ok(Done::Unit)
        }
    }
}
