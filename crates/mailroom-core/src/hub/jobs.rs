//! The job queue's life cycle: configuring the rules, claiming due jobs under a lease,
//! recording success or failure (backoff, dead letter), and the operators' view (list, show,
//! retry, drop).
//!
//! Jobs are queued by [`super::Stamp::record`], in the transaction of the events that make
//! them. A claimed job is leased, not locked: its due time moves to the lease's end and its
//! attempt is counted in one commit, so a job whose worker died runs again once the lease
//! ends, with the same id, which receivers use to drop the second copy.

use std::sync::Arc;

use time::Duration;
use uuid::Uuid;

use super::{Actor, CheckVerdict, Hub, Stamp};
use crate::error::{CoreError, Result};
use crate::jobs::{Handler, Job, JobCounts, JobQuery, JobState, RetryPolicy, Rules};
use crate::model::{Event, EventKind};
use crate::ports::Durability;

impl Hub {
    /// Sets the rules that turn events into jobs and the retry policy of failed jobs. Call it
    /// before the Hub is shared.
    pub fn with_jobs(mut self, rules: Rules, retry: RetryPolicy) -> Hub {
        self.stamp = Stamp {
            rules: Arc::new(rules),
            ..self.stamp
        };
        self.retry = retry;
        self
    }

    /// Waits until a unit queues a job (or returns at once if one did since the last wait).
    pub async fn job_queued(&self) {
        self.stamp.queued.notified().await;
    }

    /// Wakes the worker waiting in [`Hub::job_queued`] (a slot freed, a job may be due).
    pub fn wake_jobs(&self) {
        self.stamp.queued.notify_one();
    }

    /// Claims up to `limit` due jobs for `lease`: each one's attempt is counted and its due
    /// time moved to the lease's end, in one commit. Returns each job with its event; a job
    /// whose event is gone is given up at once.
    pub async fn claim_jobs(&self, limit: u32, lease: Duration) -> Result<Vec<(Job, Event)>> {
        let stamp = self.stamp.clone();
        self.write(Durability::Relaxed, move |tx| {
            let now = stamp.now();
            let mut claimed = Vec::new();
            for mut job in tx.due_jobs(now, limit)? {
                job.attempts = job.attempts.saturating_add(1);
                job.due = now + lease;
                job.updated = now;
                let event = tx.event(&job.event)?;
                if event.is_none() {
                    job.state = JobState::Dead;
                    job.last_error = Some("its event is not in the audit trail".to_owned());
                }
                if !tx.update_job(&job, &[JobState::Queued])? {
                    continue;
                }
                match event {
                    Some(event) => claimed.push((job, event)),
                    None => stamp.record(tx, &[stamp.job_dead(&job)])?,
                }
            }
            Ok(claimed)
        })
        .await
    }

    /// Records that `job` (as claimed) succeeded. A job an operator dropped meanwhile stays
    /// dropped.
    pub async fn job_done(&self, job: &Job) -> Result<()> {
        self.settle_jobs(vec![JobOutcome {
            job: job.clone(),
            event_kind: None,
            error: None,
            jitter: 0.0,
        }])
        .await
    }

    /// Records that `job` (as claimed) failed with `error`: it runs again after the retry
    /// policy's backoff (scaled by `jitter`, drawn in `[0, 1)` by the caller), or, after its
    /// last attempt, is dead, with a `job.dead` event that rules may turn into an alert (but
    /// not for a job that was itself about a dead job, so a broken handler cannot feed
    /// itself).
    pub async fn job_failed(
        &self,
        job: &Job,
        event: &Event,
        error: &str,
        jitter: f64,
    ) -> Result<()> {
        self.settle_jobs(vec![JobOutcome {
            job: job.clone(),
            event_kind: Some(event.kind),
            error: Some(error.to_owned()),
            jitter,
        }])
        .await
    }

    /// Records the outcomes of several claimed jobs in one unit (what [`Hub::job_done`] and
    /// [`Hub::job_failed`] do for one): a worker reports the jobs that ended while its last
    /// report was being committed together, so the queue's bookkeeping costs the store one
    /// commit per batch, not per job. Flushed when a job dies (its `job.dead` event is an
    /// alarm), relaxed otherwise.
    pub async fn settle_jobs(&self, outcomes: Vec<JobOutcome>) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let (stamp, retry) = (self.stamp.clone(), self.retry);
        let gives_up = move |o: &JobOutcome| o.error.is_some() && !retry.may_retry(o.job.attempts);
        let durability = if outcomes.iter().any(gives_up) {
            Durability::Flush
        } else {
            Durability::Relaxed
        };
        let settled = self
            .write(durability, move |tx| {
                let now = stamp.now();
                for outcome in outcomes {
                    let dies = gives_up(&outcome);
                    let JobOutcome {
                        mut job,
                        event_kind,
                        error,
                        jitter,
                    } = outcome;
                    job.updated = now;
                    match error {
                        None => {
                            job.state = JobState::Done;
                            job.last_error = None;
                        }
                        Some(error) => {
                            job.last_error = Some(printable_error(&error));
                            if dies {
                                job.state = JobState::Dead;
                            } else {
                                job.due = now + retry.backoff(job.attempts, jitter);
                            }
                        }
                    }
                    if !tx.update_job(&job, &[JobState::Queued])? || !dies {
                        continue;
                    }
                    if let Handler::Check(batch) = &job.handler {
                        // Fail closed: what could not be checked is not delivered.
                        let reason = format!(
                            "no verdict after {} attempt(s): {}",
                            job.attempts,
                            job.last_error.as_deref().unwrap_or("no error recorded")
                        );
                        super::check::settle_check(
                            tx,
                            &stamp,
                            batch,
                            &CheckVerdict::Unchecked { reason },
                        )?;
                    }
                    let dead = [stamp.job_dead(&job)];
                    if event_kind == Some(EventKind::JobDead) {
                        tx.record(&dead)?;
                    } else {
                        stamp.record(tx, &dead)?;
                    }
                }
                Ok(())
            })
            .await;
        if settled.is_ok() {
            self.settled
                .send_modify(|batches| *batches = batches.wrapping_add(1));
        }
        settled
    }

    /// A receiver that changes each time job outcomes are committed: what waits for a job to
    /// be done or to fail (an operator's view, a test) awaits it instead of asking the store
    /// over and over.
    pub fn watch_settled(&self) -> tokio::sync::watch::Receiver<u64> {
        self.settled.subscribe()
    }

    /// Jobs matching the query, newest first.
    pub async fn jobs(&self, query: JobQuery) -> Result<Vec<Job>> {
        self.read(move |tx| tx.jobs(&query)).await
    }

    /// One job and its event.
    pub async fn job(&self, id: Uuid) -> Result<(Job, Option<Event>)> {
        self.read(move |tx| {
            let job = tx
                .job(&id)?
                .ok_or_else(|| CoreError::not_found(format!("no job {id}")))?;
            let event = tx.event(&job.event)?;
            Ok((job, event))
        })
        .await
    }

    /// How many jobs are queued (one row read, however long the queue).
    pub async fn queue_depth(&self) -> Result<u64> {
        self.read_short(|tx| tx.queued_jobs()).await
    }

    /// How many jobs are in each state.
    pub async fn job_counts(&self) -> Result<JobCounts> {
        self.read(|tx| tx.job_counts()).await
    }

    /// An operator runs a job again now, from its first attempt: a dead or dropped job, or a
    /// queued one waiting for its backoff. A job that is done is refused (Conflict).
    pub async fn retry_job(&self, actor: &Actor, id: Uuid) -> Result<Job> {
        self.operate_job(actor, id, "retried", |job, now| {
            if job.state == JobState::Done {
                return Err(CoreError::conflict(format!("job {} is done", job.id)));
            }
            job.state = JobState::Queued;
            job.attempts = 0;
            job.due = now;
            Ok(())
        })
        .await
    }

    /// An operator drops a queued or dead job. A job that is done or dropped is refused
    /// (Conflict).
    pub async fn drop_job(&self, actor: &Actor, id: Uuid) -> Result<Job> {
        self.operate_job(actor, id, "dropped", |job, _| {
            if matches!(job.state, JobState::Done | JobState::Dropped) {
                return Err(CoreError::conflict(format!(
                    "job {} is {} already",
                    job.id, job.state
                )));
            }
            job.state = JobState::Dropped;
            Ok(())
        })
        .await
    }

    /// An operator's change of one job, with its admin event, in one unit.
    async fn operate_job(
        &self,
        actor: &Actor,
        id: Uuid,
        verb: &'static str,
        change: impl FnOnce(&mut Job, time::OffsetDateTime) -> Result<()> + Send + 'static,
    ) -> Result<Job> {
        let (stamp, actor) = (self.stamp.clone(), actor.clone());
        let job = self
            .write(Durability::Flush, move |tx| {
                let mut job = tx
                    .job(&id)?
                    .ok_or_else(|| CoreError::not_found(format!("no job {id}")))?;
                let was = job.state;
                let now = stamp.now();
                change(&mut job, now)?;
                job.updated = now;
                if !tx.update_job(&job, &[was])? {
                    return Err(CoreError::conflict(format!(
                        "job {id} changed meanwhile; try again"
                    )));
                }
                let event = stamp.admin(
                    &actor,
                    format!("job:{id}"),
                    format!("{verb} ({} of rule {}, was {was})", job.handler, job.rule),
                );
                stamp.record(tx, &[event])?;
                Ok(job)
            })
            .await?;
        if job.state == JobState::Queued {
            self.stamp.queued.notify_one();
        }
        Ok(job)
    }
}

/// How one claimed job ended, for [`Hub::settle_jobs`].
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// The job as claimed.
    pub job: Job,
    /// The kind of the event it acted on (a failed job about a `job.dead` event raises no
    /// alert of its own when it dies).
    pub event_kind: Option<EventKind>,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
    /// In `[0, 1)`: where in its backoff step a failed job runs again.
    pub jitter: f64,
}

/// A handler's error as stored: one line, control characters replaced, at most 500
/// characters (a receiver's answer is not ours to trust).
fn printable_error(error: &str) -> String {
    error
        .chars()
        .take(500)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
