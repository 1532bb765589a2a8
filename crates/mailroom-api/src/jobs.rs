//! The job queue on the wire: one job, with the event it acts on when asked for one job.

use mailroom_core::{Event, Job};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{EventView, rfc3339};

/// One job of the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct JobView {
    /// Its id (a UUID): the idempotency key its receiver sees (webhook-id, Message-ID).
    pub id: String,
    /// The rule that made it.
    pub rule: String,
    /// `webhook`, `email`, `export` (a copy into a local folder), or `check` (the hub's own
    /// check of an upload before delivery).
    pub handler: String,
    /// The URL, the address, the folder, or the checked upload's batch id.
    pub target: String,
    /// The id of the event it acts on.
    pub event: String,
    /// queued, done, dead or dropped.
    pub state: String,
    /// Attempts begun so far.
    pub attempts: u32,
    /// When it may run next (RFC 3339, UTC); while it runs, when its lease ends.
    #[schema(format = DateTime)]
    pub due: String,
    /// When it was queued (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created: String,
    /// When it last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub updated: String,
    /// Why the last attempt failed; null if none did.
    #[schema(required = true)]
    pub last_error: Option<String>,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> JobView {
        let target = match &job.handler {
            mailroom_core::Handler::Webhook(url) => url.clone(),
            mailroom_core::Handler::Email(address) => address.clone(),
            mailroom_core::Handler::Check(batch) => batch.to_string(),
            mailroom_core::Handler::Export(folder) => folder.clone(),
        };
        JobView {
            id: job.id.to_string(),
            rule: job.rule.clone(),
            handler: job.handler.kind().to_owned(),
            target,
            event: job.event.to_string(),
            state: job.state.as_str().to_owned(),
            attempts: job.attempts,
            due: rfc3339(job.due),
            created: rfc3339(job.created),
            updated: rfc3339(job.updated),
            last_error: job.last_error.clone(),
        }
    }
}

/// One job with its event (null if the event is gone from the trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct JobDetailView {
    /// The job.
    pub job: JobView,
    /// The event it acts on.
    #[schema(required = true)]
    pub event: Option<EventView>,
}

impl JobDetailView {
    /// The view of `job` and its `event`.
    pub fn new(job: &Job, event: Option<&Event>) -> JobDetailView {
        JobDetailView {
            job: JobView::from(job),
            event: event.map(EventView::from),
        }
    }
}
