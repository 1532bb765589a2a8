//! The job queue's data and the rules that fill it: what a job is ([`Job`], [`Handler`],
//! [`JobState`]), which events make jobs ([`Rule`], [`Rules`]) and when a failed job is tried
//! again ([`RetryPolicy`]).
//!
//! Everything here is plain data and pure decisions. The Hub queues the jobs of an event in
//! the transaction that records the event; the binary runs them (`mailroom-events`).

use std::fmt;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::access::glob_matches;
use crate::error::{CoreError, Result};
use crate::model::{Delivery, DeliveryId, Event, EventKind, Outcome};
use crate::names::AccountName;

/// What a job does with its event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Handler {
    /// POST the event as JSON to this `https://` URL, signed.
    Webhook(String),
    /// Mail the event to this address.
    Email(String),
    /// Check the content of this upload (its batch) before it is delivered: a job the Hub
    /// queues itself while a scanner is configured, never a rule.
    Check(DeliveryId),
    /// Write the delivered file into this local folder (an absolute path), under
    /// `<recipient>/<name>`: dispatch to a system on the hub's host.
    Export(String),
}

/// The rule name of the jobs the Hub queues itself to check uploads. Rules written in the
/// configuration cannot take it (their names never start with `@`).
pub const CHECK_RULE: &str = "@check";

impl Handler {
    /// The stored and printed form: `webhook:<url>` or `email:<address>`.
    pub fn target(&self) -> String {
        match self {
            Handler::Webhook(url) => format!("webhook:{url}"),
            Handler::Email(address) => format!("email:{address}"),
            Handler::Check(batch) => format!("check:{batch}"),
            Handler::Export(folder) => format!("export:{folder}"),
        }
    }

    /// Parses the form written by [`Handler::target`].
    pub fn parse(input: &str) -> Result<Handler> {
        match input.split_once(':') {
            Some(("webhook", url)) => Ok(Handler::Webhook(url.to_owned())),
            Some(("email", address)) => Ok(Handler::Email(address.to_owned())),
            Some(("check", batch)) => Ok(Handler::Check(DeliveryId::parse(batch)?)),
            Some(("export", folder)) => Ok(Handler::Export(folder.to_owned())),
            _ => Err(CoreError::invalid(format!("unknown job handler {input:?}"))),
        }
    }

    /// `webhook` or `email`.
    pub fn kind(&self) -> &'static str {
        match self {
            Handler::Webhook(_) => "webhook",
            Handler::Email(_) => "email",
            Handler::Check(_) => "check",
            Handler::Export(_) => "export",
        }
    }
}

impl fmt::Display for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its due time, or running under a lease (its due time is the lease's end).
    Queued,
    /// Its handler succeeded.
    Done,
    /// It failed as many times as the retry policy allows, or the queue was full when its
    /// event happened; an operator may retry it.
    Dead,
    /// An operator dropped it.
    Dropped,
}

impl JobState {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Dropped => "dropped",
        }
    }

    /// Parses the label written by [`JobState::as_str`].
    pub fn parse(input: &str) -> Result<JobState> {
        Ok(match input {
            "queued" => JobState::Queued,
            "done" => JobState::Done,
            "dead" => JobState::Dead,
            "dropped" => JobState::Dropped,
            other => {
                return Err(CoreError::invalid(format!(
                    "unknown job state {other:?} (queued, done, dead, dropped)"
                )));
            }
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One piece of work an event caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Unique id, and the idempotency key a receiver sees (the webhook id, the mail's
    /// `Message-ID`): a job run twice after a crash carries the same key both times.
    pub id: Uuid,
    /// The rule that made it.
    pub rule: String,
    /// What to do.
    pub handler: Handler,
    /// The event it acts on.
    pub event: Uuid,
    /// Where it is.
    pub state: JobState,
    /// Attempts begun so far.
    pub attempts: u32,
    /// When it may run next (while it runs: when its lease ends).
    pub due: OffsetDateTime,
    /// When it was queued.
    pub created: OffsetDateTime,
    /// When its state or attempts last changed.
    pub updated: OffsetDateTime,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

impl Job {
    /// A new job of `rule` doing `handler` with `event`, queued at `now` and due at `due`.
    pub fn queued(
        id: Uuid,
        rule: &str,
        handler: Handler,
        event: Uuid,
        due: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Job {
        Job {
            id,
            rule: rule.to_owned(),
            handler,
            event,
            state: JobState::Queued,
            attempts: 0,
            due,
            created: now,
            updated: now,
            last_error: None,
        }
    }
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// At most this many.
    pub limit: u32,
}

impl Default for JobQuery {
    fn default() -> Self {
        JobQuery {
            state: None,
            limit: 100,
        }
    }
}

/// How many jobs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Waiting or running.
    pub queued: u64,
    /// Succeeded.
    pub done: u64,
    /// Given up.
    pub dead: u64,
    /// Dropped by an operator.
    pub dropped: u64,
}

/// A rule: which events make jobs, and which handlers those jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name, unique among the rules; jobs carry it.
    pub name: String,
    /// The event types it selects (at least one).
    pub on: Vec<EventKind>,
    /// Only events of this account: its actor, or the sender or recipient of its delivery.
    pub account: Option<AccountName>,
    /// Only deliveries from this account.
    pub sender: Option<AccountName>,
    /// Only deliveries to this account, or fanned out from this group.
    pub recipient: Option<AccountName>,
    /// Only events with this outcome.
    pub outcome: Option<Outcome>,
    /// Only deliveries whose name matches this glob (`*` and `?`).
    pub file: Option<String>,
    /// What each selected event makes a job for.
    pub handlers: Vec<Handler>,
    /// Accounts or groups that get a copy of each selected delivery (dispatch), made in the
    /// unit that delivers the original. Only for `delivery.delivered`.
    pub copy_to: Vec<AccountName>,
}

impl Rule {
    /// Whether the rule needs the event's delivery to decide.
    fn needs_delivery(&self) -> bool {
        self.sender.is_some() || self.recipient.is_some() || self.file.is_some()
    }

    /// Whether `event` (whose delivery is `delivery`, when it is about one) is selected.
    pub fn selects(&self, event: &Event, delivery: Option<&Delivery>) -> bool {
        if !self.on.contains(&event.kind) {
            return false;
        }
        if self.outcome.is_some_and(|outcome| outcome != event.outcome) {
            return false;
        }
        if let Some(account) = &self.account {
            let party = delivery.is_some_and(|d| d.sender == *account || d.recipient == *account);
            if event.actor != account.as_str() && !party {
                return false;
            }
        }
        if !self.needs_delivery() {
            return true;
        }
        let Some(delivery) = delivery else {
            return false;
        };
        self.sender.as_ref().is_none_or(|s| delivery.sender == *s)
            && self
                .recipient
                .as_ref()
                .is_none_or(|r| delivery.recipient == *r || delivery.target == *r)
            && self
                .file
                .as_ref()
                .is_none_or(|glob| glob_matches(glob, delivery.name.as_str()))
    }
}

/// The rules of a hub, in the order they were written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
    /// The most jobs that may wait at once; a job beyond it is dead on arrival.
    max_queued: u64,
}

/// The queue bound when none is configured.
pub const DEFAULT_MAX_QUEUED: u64 = 100_000;

impl Rules {
    /// Rules with a queue bound. Names must be unique, and each rule must select at least one
    /// event type and name at least one handler.
    pub fn new(rules: Vec<Rule>, max_queued: u64) -> Result<Rules> {
        for (i, rule) in rules.iter().enumerate() {
            if rule.name.is_empty() {
                return Err(CoreError::invalid("a rule needs a name"));
            }
            if rule.name.starts_with('@') {
                return Err(CoreError::invalid(format!(
                    "rule {:?}: names starting with @ are the hub's own",
                    rule.name
                )));
            }
            if rules[..i].iter().any(|earlier| earlier.name == rule.name) {
                return Err(CoreError::invalid(format!(
                    "rule {:?} is named twice",
                    rule.name
                )));
            }
            if rule.on.is_empty() {
                return Err(CoreError::invalid(format!(
                    "rule {:?} selects no event type (on = [...])",
                    rule.name
                )));
            }
            if rule.handlers.is_empty() && rule.copy_to.is_empty() {
                return Err(CoreError::invalid(format!(
                    "rule {:?} names no handler (email, webhook or copy_to)",
                    rule.name
                )));
            }
            let exports = rule
                .handlers
                .iter()
                .any(|h| matches!(h, Handler::Export(_)));
            if (!rule.copy_to.is_empty() || exports) && rule.on != [EventKind::DeliveryDelivered] {
                return Err(CoreError::invalid(format!(
                    "rule {:?}: copy_to and export dispatch deliveries, so it selects on = [\"delivery.delivered\"] only",
                    rule.name
                )));
            }
        }
        Ok(Rules {
            rules,
            max_queued: max_queued.max(1),
        })
    }

    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The queue bound.
    pub fn max_queued(&self) -> u64 {
        self.max_queued
    }

    /// Whether some rule selects events of this kind at all.
    pub fn watches(&self, kind: EventKind) -> bool {
        self.rules.iter().any(|rule| rule.on.contains(&kind))
    }

    /// Whether some rule selecting `kind` needs the event's delivery to decide or to act.
    pub fn needs_delivery(&self, kind: EventKind) -> bool {
        self.rules.iter().any(|rule| {
            rule.on.contains(&kind) && (rule.needs_delivery() || !rule.copy_to.is_empty())
        })
    }

    /// Whether some rule dispatches copies.
    pub fn dispatches(&self) -> bool {
        self.rules.iter().any(|rule| !rule.copy_to.is_empty())
    }

    /// The rules that copy `delivery` (its `delivery.delivered` event being `event`), with
    /// the names they copy it to.
    pub fn copies_for<'a>(
        &'a self,
        event: &'a Event,
        delivery: &'a Delivery,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules
            .iter()
            .filter(move |rule| !rule.copy_to.is_empty() && rule.selects(event, Some(delivery)))
    }

    /// The jobs `event` makes, queued at `now`; one per (rule, handler) that selects it.
    pub fn jobs_for(
        &self,
        event: &Event,
        delivery: Option<&Delivery>,
        now: OffsetDateTime,
    ) -> Vec<Job> {
        self.rules
            .iter()
            .filter(|rule| rule.selects(event, delivery))
            .flat_map(|rule| {
                rule.handlers.iter().map(move |handler| {
                    Job::queued(
                        Uuid::now_v7(),
                        &rule.name,
                        handler.clone(),
                        event.id,
                        now,
                        now,
                    )
                })
            })
            .collect()
    }
}

/// When a failed job runs again: exponential backoff with jitter, and a dead letter after
/// `max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a job is dead.
    pub max_attempts: u32,
    /// The wait after the first failure; each failure doubles it.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::seconds(5),
            cap: Duration::hours(1),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempts` (1 for the first), scaled by `jitter`
    /// in `[0, 1)`: a wait drawn from the upper half of the exponential step ("equal jitter"),
    /// so retries of many jobs spread out yet never come sooner than half the step.
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let step = self
            .base
            .checked_mul(1_i32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap);
        let half = step / 2;
        half + half * jitter.clamp(0.0, 1.0)
    }

    /// Whether a job that has begun `attempts` attempts may try again.
    pub fn may_retry(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_comes_before_half_the_step() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::seconds(10),
            cap: Duration::seconds(60),
        };
        assert_eq!(policy.backoff(1, 0.0), Duration::seconds(5));
        assert_eq!(policy.backoff(1, 1.0), Duration::seconds(10));
        assert_eq!(policy.backoff(2, 0.0), Duration::seconds(10));
        assert_eq!(policy.backoff(3, 0.5), Duration::seconds(30));
        assert_eq!(policy.backoff(9, 1.0), Duration::seconds(60));
        assert_eq!(policy.backoff(200, 0.0), Duration::seconds(30));
        assert!(policy.may_retry(4));
        assert!(!policy.may_retry(5));
    }

    #[test]
    fn a_handler_reads_back_as_written() {
        for handler in [
            Handler::Webhook("https://hooks.example.test/a?b=c".into()),
            Handler::Email("ops@example.test".into()),
            Handler::Check(DeliveryId::new()),
            Handler::Export("/srv/export/erp".into()),
        ] {
            assert_eq!(Handler::parse(&handler.target()).unwrap(), handler);
        }
        assert!(Handler::parse("exec:/bin/sh").is_err());
    }
}
