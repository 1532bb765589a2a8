//! The worker: claims due jobs from the Hub, runs each handler beside the transfers (at most
//! `concurrency` at once), and reports each outcome back, until shutdown.
//!
//! It wakes when a unit queues a job and otherwise looks once a second (for jobs whose
//! backoff or lease ran out). A handler's failure is the job's, never the worker's: it is
//! recorded with the error and retried by the Hub's policy.

use std::sync::Arc;
use std::time::Duration;

use mailroom_core::{Event, Handler, Hub, Job};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::JobsConfig;
use crate::email::Mailer;
use crate::webhook::Webhooks;

/// What runs the jobs of each handler kind.
#[derive(Clone)]
pub struct Handlers {
    /// Webhooks, when a rule uses them.
    pub webhooks: Option<Webhooks>,
    /// E-mail, when `[smtp]` names a server.
    pub mailer: Option<Mailer>,
}

impl Handlers {
    /// Runs one job; the error is what the job's record will say.
    async fn run(&self, job: &Job, event: &Event) -> Result<(), String> {
        match &job.handler {
            Handler::Webhook(url) => match &self.webhooks {
                Some(webhooks) => webhooks
                    .send(url, job, event)
                    .await
                    .map_err(|err| err.to_string()),
                None => Err("webhooks are not configured".to_owned()),
            },
            Handler::Email(address) => match &self.mailer {
                Some(mailer) => mailer.send(address, job, event).await,
                None => Err("e-mail is not configured ([smtp] server)".to_owned()),
            },
        }
    }
}

/// Runs the job queue until `shutdown`; running jobs get to finish (each within its
/// handler's timeout) before it returns.
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
    loop {
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
        let full = claimed.len() >= usize::try_from(free).unwrap_or(usize::MAX) && free > 0;
        for (job, event) in claimed {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (hub, handlers) = (hub.clone(), handlers.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let outcome = handlers.run(&job, &event).await;
                let recorded = match &outcome {
                    Ok(()) => {
                        tracing::info!(job = %job.id, rule = %job.rule, handler = job.handler.kind(), attempt = job.attempts, "job done");
                        hub.job_done(&job).await
                    }
                    Err(error) => {
                        tracing::warn!(job = %job.id, rule = %job.rule, handler = job.handler.kind(), attempt = job.attempts, error = %error, "job failed");
                        hub.job_failed(&job, &event, error, rand::random::<f64>())
                            .await
                    }
                };
                if let Err(err) = recorded {
                    // The lease runs out and the job runs again: a receiver sees its id twice.
                    tracing::warn!(job = %job.id, error = %err, "could not record a job's outcome");
                }
                hub.wake_jobs();
            });
        }
        if full {
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
}
