//! The audit trail on the wire: one event, and what a walk of the hash chain found (its head,
//! the first bad event, the expected checkpoints).

use mailroom_core::{ChainBreak, ChainHead, ChainReport, Checkpoint, CheckpointStatus, Event};
use serde::Serialize;
use utoipa::ToSchema;

use crate::rfc3339;

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EventView {
    /// Its id (a UUID, also in the log line of the action).
    pub id: String,
    /// When it happened (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub time: String,
    /// login, transfer.started, upload, download, delivery.* (stored, delivered, picked-up,
    /// acknowledged, recalled, renamed, expired), ban, session.closed, admin, sweep, job.dead
    /// or quota.warning.
    pub kind: String,
    /// Who: an account name, `cli:<os user>` or `system`.
    pub actor: String,
    /// The peer address; null when the action did not come over the network.
    #[schema(required = true)]
    pub source: Option<String>,
    /// The channel it came through: sftp, scp, ssh, ftps, https, cli or system.
    pub protocol: String,
    /// What it was done to: a path, an account, a delivery id.
    pub object: String,
    /// ok, refused or failed.
    pub outcome: String,
    /// Details for the operator (never a secret).
    pub detail: String,
}

impl From<&Event> for EventView {
    fn from(event: &Event) -> EventView {
        EventView {
            id: event.id.to_string(),
            time: rfc3339(event.time),
            kind: event.kind.as_str().to_owned(),
            actor: event.actor.clone(),
            source: event.source.clone(),
            protocol: event.protocol.as_str().to_owned(),
            object: event.object.clone(),
            outcome: event.outcome.as_str().to_owned(),
            detail: event.detail.clone(),
        }
    }
}

/// What a walk of the audit hash chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VerifyView {
    /// Whether the chain is intact and passes through every expected checkpoint.
    pub intact: bool,
    /// Chained events checked and found intact.
    pub checked: u64,
    /// Events recorded before the chain began, which it does not cover.
    pub legacy_events: u64,
    /// The newest event of an unbroken chain: the checkpoint to note down elsewhere. Null when
    /// the chain is broken (the last intact event is no head to record) or empty.
    #[schema(required = true)]
    pub head: Option<HeadView>,
    /// The first bad event; null when there is none.
    #[schema(required = true)]
    pub broken: Option<BrokenView>,
    /// Each expected checkpoint and what became of it; empty when none was given.
    pub checkpoints: Vec<CheckpointView>,
}

impl VerifyView {
    /// The verdict of `report` and of the `checkpoints` checked (each by its own walk, as the
    /// CLI checks several): intact when nothing is broken and every checkpoint was found.
    pub fn new(report: &ChainReport, checkpoints: &[(Checkpoint, CheckpointStatus)]) -> VerifyView {
        VerifyView {
            intact: report.broken.is_none()
                && checkpoints
                    .iter()
                    .all(|(_, status)| *status == CheckpointStatus::Found),
            checked: report.checked,
            legacy_events: report.legacy,
            head: report
                .head
                .as_ref()
                .filter(|_| report.broken.is_none())
                .map(HeadView::from),
            broken: report.broken.as_ref().map(BrokenView::from),
            checkpoints: checkpoints
                .iter()
                .map(|(checkpoint, status)| CheckpointView {
                    checkpoint: checkpoint.to_string(),
                    status: checkpoint_status(*status).to_owned(),
                })
                .collect(),
        }
    }
}

impl From<&ChainReport> for VerifyView {
    /// The verdict of one walk, with its expected checkpoint if one was given.
    fn from(report: &ChainReport) -> VerifyView {
        let checkpoints: Vec<_> = report.checkpoint.iter().cloned().collect();
        VerifyView::new(report, &checkpoints)
    }
}

/// The newest event of the chain: what `--expect SEQ:HASH` (CLI) or `?expect=SEQ:HASH` (API)
/// later checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HeadView {
    /// Its `seq`.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
    /// Events on the chain up to it.
    pub events: u64,
    /// When it was recorded (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub time: String,
    /// `SEQ:HASH`, the checkpoint to keep somewhere else.
    pub checkpoint: String,
}

impl From<&ChainHead> for HeadView {
    fn from(head: &ChainHead) -> HeadView {
        HeadView {
            seq: head.seq,
            hash: head.hash.clone(),
            events: head.events,
            time: rfc3339(head.time),
            checkpoint: format!("{}:{}", head.seq, head.hash),
        }
    }
}

/// The first event where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BrokenView {
    /// Its `seq`.
    pub seq: u64,
    /// Its id.
    pub id: String,
    /// What is wrong, for scripts: content-changed, predecessor-missing, inserted,
    /// out-of-place, unhashed.
    pub problem: String,
    /// What is wrong, for people.
    pub description: String,
}

impl From<&ChainBreak> for BrokenView {
    fn from(broken: &ChainBreak) -> BrokenView {
        BrokenView {
            seq: broken.seq,
            id: broken.id.to_string(),
            problem: broken.problem.as_str().to_owned(),
            description: broken.problem.describe().to_owned(),
        }
    }
}

/// An expected checkpoint and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CheckpointView {
    /// `SEQ:HASH`, as given.
    pub checkpoint: String,
    /// found, missing (truncated), mismatch (rewritten) or unchecked (the chain broke first).
    pub status: String,
}

/// The label of a checkpoint's status: found, missing, mismatch or unchecked.
pub fn checkpoint_status(status: CheckpointStatus) -> &'static str {
    match status {
        CheckpointStatus::Found => "found",
        CheckpointStatus::Missing => "missing",
        CheckpointStatus::Mismatch => "mismatch",
        CheckpointStatus::Unchecked => "unchecked",
    }
}
