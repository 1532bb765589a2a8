//! The worker: claims due jobs from the Hub, runs each handler beside the transfers (at most
//! `concurrency` at once), and reports each outcome back, until shutdown.
//!
//! It wakes when a unit queues a job and otherwise looks once a second (for jobs whose
//! backoff or lease ran out). Transfers come first: while the hub serves a burst of file
//! operations the worker waits before it claims more (`[jobs] busy_operations_per_second`,
//! at most `max_yield_ms`, never while the queue is deep), and the binary runs it on threads
//! of lower priority (`[jobs] nice`). A handler's failure is the job's, never the worker's: it is
//! recorded with the error and retried by the Hub's policy.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailroom_core::{CheckVerdict, DeliveryId, Event, Handler, Hub, Job, JobOutcome, ReadHandle};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::JobsConfig;
use crate::email::{Mailer, Notice};
use crate::scan::{Content, Scanner, Verdict};
use crate::webhook::Webhooks;

/// What runs the jobs of each handler kind.
#[derive(Clone)]
pub struct Handlers {
    /// Webhooks, when a rule uses them.
    pub webhooks: Option<Webhooks>,
    /// E-mail, when `[smtp]` names a server.
    pub mailer: Option<Mailer>,
    /// The check of uploads before delivery, when `[check]` names a scanner.
    pub scanner: Option<Scanner>,
}

impl Handlers {
    /// Runs one job; the error is what the job's record will say.
    async fn run(&self, hub: &Hub, job: &Job, event: &Event) -> Result<(), String> {
        match &job.handler {
            Handler::Webhook(url) => match &self.webhooks {
                Some(webhooks) => webhooks
                    .send(url, job, event)
                    .await
                    .map_err(|err| err.to_string()),
                None => Err("webhooks are not configured".to_owned()),
            },
            Handler::Email(address) => match &self.mailer {
                Some(mailer) => match Notice::of(hub, job, event).await? {
                    Some(Some(notice)) => mailer.send_notice(address, job, &notice).await,
                    // A notice with nothing left to say (the file is gone, the inbox empty).
                    Some(None) => Ok(()),
                    None => mailer.send(address, job, event).await,
                },
                None => Err("e-mail is not configured ([smtp] server)".to_owned()),
            },
            Handler::Export(folder) => crate::export::export(hub, Path::new(folder), event).await,
            Handler::Check(batch) => match &self.scanner {
                Some(scanner) => check(hub, scanner, *batch).await,
                None => Err("no scanner is configured ([check])".to_owned()),
            },
        }
    }
}

/// Checks upload `batch` and records the verdict; nothing to do when it waits no more.
async fn check(hub: &Hub, scanner: &Scanner, batch: DeliveryId) -> Result<(), String> {
    let Some(handle) = hub
        .check_content(batch)
        .await
        .map_err(|err| err.to_string())?
    else {
        return Ok(());
    };
    let by = scanner.to_string();
    let verdict = match scanner.scan(&Held(handle)).await? {
        Verdict::Clean => CheckVerdict::Clean { by },
        Verdict::Found(signature) => {
            tracing::warn!(batch = %batch, signature = %signature, "check found malware; quarantined");
            CheckVerdict::Found { by, signature }
        }
    };
    hub.finish_check(batch, verdict)
        .await
        .map(|_| ())
        .map_err(|err| err.to_string())
}

/// An upload's content, as the scanner reads it.
struct Held(ReadHandle);

#[async_trait::async_trait]
impl Content for Held {
    fn size(&self) -> u64 {
        self.0.size()
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        self.0
            .read_at(offset, len)
            .await
            .map_err(|err| err.to_string())
    }
}

/// Runs the job queue until `shutdown`; running jobs get to finish (each within its
/// handler's timeout) and their outcomes are recorded before it returns.
///
/// A job holds its slot until its outcome is committed. Outcomes go to one reporter, which
/// records all those that arrived while its last report was being committed in one unit
/// (group commit, as the store does for transfers), and then frees their slots together, so
/// the next claim takes several jobs in one unit too: the queue's bookkeeping costs the store
/// a few commits per batch of jobs, not two per job.
pub async fn run(
    hub: Arc<Hub>,
    handlers: Handlers,
    config: JobsConfig,
    shutdown: CancellationToken,
) {
    let concurrency = usize::try_from(config.concurrency.max(1)).unwrap_or(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let tasks = TaskTracker::new();
    let lease = time::Duration::seconds(i64::try_from(config.lease_seconds.max(1)).unwrap_or(120));
    let (outcomes, reports) = mpsc::unbounded_channel();
    let reporter = tokio::spawn(report(hub.clone(), reports));
    let mut pace = Pace::new(&hub, &config);
    loop {
        if slots.available_permits() > 0 {
            pace.yield_to_transfers(&hub, &shutdown).await;
        }
        let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
        let claimed = if free == 0 {
            Vec::new()
        } else {
            match hub.claim_jobs(free, lease).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "could not claim jobs");
                    Vec::new()
                }
            }
        };
        let full = free > 0 && claimed.len() >= usize::try_from(free).unwrap_or(usize::MAX);
        for (job, event) in claimed {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (handlers, outcomes, hub) = (handlers.clone(), outcomes.clone(), hub.clone());
            tasks.spawn(async move {
                let result = handlers.run(&hub, &job, &event).await;
                match &result {
                    Ok(()) => {
                        tracing::debug!(job = %job.id, rule = %job.rule, handler = job.handler.kind(), attempt = job.attempts, "job done");
                    }
                    Err(error) => {
                        tracing::warn!(job = %job.id, rule = %job.rule, handler = job.handler.kind(), attempt = job.attempts, error = %error, "job failed");
                    }
                }
                let outcome = JobOutcome {
                    job,
                    event_kind: Some(event.kind),
                    error: result.err(),
                    jitter: rand::random::<f64>(),
                };
                // The reporter outlives every job task (it ends when they all have).
                let _ = outcomes.send((outcome, permit));
            });
        }
        if full || free == 0 {
            // More may be due: look again as soon as a slot is free.
            tokio::select! {
                () = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = hub.job_queued() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    tasks.close();
    tasks.wait().await;
    drop(outcomes);
    let _ = reporter.await;
}

/// Transfers first: how the worker keeps its claims and their commits out of a burst of
/// transfers. It measures the hub's file operations per second between two looks; while they
/// exceed the busy mark it waits, up to a bound, and never while the queue is deep.
struct Pace {
    busy_per_second: f64,
    max_wait: Duration,
    deep_queue: u64,
    last_operations: u64,
    last_look: tokio::time::Instant,
}

/// The shortest span a rate is measured over.
const PACE_WINDOW: Duration = Duration::from_millis(20);
/// How long the worker waits before it looks again while the hub is busy.
const PACE_STEP: Duration = Duration::from_millis(50);

impl Pace {
    fn new(hub: &Hub, config: &JobsConfig) -> Pace {
        Pace {
            busy_per_second: config.busy_operations_per_second as f64,
            max_wait: Duration::from_millis(config.max_yield_ms),
            deep_queue: (config.max_queued / 10).max(1),
            last_operations: hub.file_operations(),
            last_look: tokio::time::Instant::now(),
        }
    }

    /// Returns once the hub is not busy with transfers, or the bound is reached, or the
    /// queue is deep, or at shutdown.
    async fn yield_to_transfers(&mut self, hub: &Hub, shutdown: &CancellationToken) {
        if self.busy_per_second <= 0.0 || self.max_wait.is_zero() {
            return;
        }
        let started = tokio::time::Instant::now();
        loop {
            let since = self.last_look.elapsed();
            if since < PACE_WINDOW {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(PACE_WINDOW - since) => {}
                }
            }
            let (now, operations) = (tokio::time::Instant::now(), hub.file_operations());
            let rate = operations.saturating_sub(self.last_operations) as f64
                / (now - self.last_look).as_secs_f64().max(1e-3);
            self.last_operations = operations;
            self.last_look = now;
            let waited = started.elapsed();
            if !busy(rate, self.busy_per_second, waited, self.max_wait) {
                return;
            }
            match hub.queue_depth().await {
                Ok(depth) if depth < self.deep_queue => {}
                _ => return,
            }
            if waited.is_zero() {
                tracing::debug!(rate, "transfers are busy: jobs wait");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PACE_STEP) => {}
            }
        }
    }
}

/// Whether the worker should go on waiting: the hub serves file operations at `rate` per
/// second, above the busy mark, and it has waited less than `max_wait` so far.
fn busy(rate: f64, busy_per_second: f64, waited: Duration, max_wait: Duration) -> bool {
    rate > busy_per_second && waited < max_wait
}

/// Records job outcomes in batches: everything that arrived while the last batch was being
/// committed goes in the next unit; the batch's slots are freed once it is committed.
async fn report(
    hub: Arc<Hub>,
    mut reports: mpsc::UnboundedReceiver<(JobOutcome, OwnedSemaphorePermit)>,
) {
    const MAX_BATCH: usize = 256;
    while let Some(first) = reports.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match reports.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (outcomes, permits): (Vec<JobOutcome>, Vec<OwnedSemaphorePermit>) =
            batch.into_iter().unzip();
        let count = outcomes.len();
        if let Err(err) = hub.settle_jobs(outcomes).await {
            // The leases run out and the jobs run again: a receiver sees their ids twice.
            tracing::warn!(error = %err, "could not record the outcomes of jobs");
        } else {
            tracing::debug!(jobs = count, "job outcomes recorded");
        }
        drop(permits);
        hub.wake_jobs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_waits_only_while_transfers_are_busy_and_never_past_its_bound() {
        let max = Duration::from_millis(3000);
        // A burst of uploads (hundreds of files per second, two or three operations each).
        assert!(busy(1600.0, 300.0, Duration::ZERO, max));
        assert!(busy(1600.0, 300.0, Duration::from_millis(2950), max));
        assert!(!busy(1600.0, 300.0, max, max));
        // A steady trickle of 50 files per second, and an idle hub.
        assert!(!busy(150.0, 300.0, Duration::ZERO, max));
        assert!(!busy(0.0, 300.0, Duration::ZERO, max));
    }
}
