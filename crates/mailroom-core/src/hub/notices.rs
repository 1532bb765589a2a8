//! Accounts' notices: the "you have files" mails a recipient asked for (one per file, or a
//! digest per period) and the receipts a sender asked for (its file was picked up or
//! acknowledged), set per account ([`crate::Notices`]).
//!
//! They are jobs like a rule's, queued by [`super::Stamp::record`] in the unit of the event
//! that causes them, with rule names of the hub's own ([`NOTIFY_RULE`], [`DIGEST_RULE`],
//! [`RECEIPT_RULE`]), and only while notices can be sent ([`Hub::with_notices`]). A digest is
//! one job per account and period: its id is made from both, so the period's first delivery
//! queues it, due at the period's end, and the later ones find it queued.

use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::Hub;
use crate::access::NotifyMode;
use crate::error::Result;
use crate::jobs::{Handler, Job};
use crate::model::{Delivery, DeliveryId, DeliveryState, Event, EventKind};
use crate::names::AccountName;
use crate::ports::{DeliveryQuery, Tx};

/// The rule name of a recipient's mail about one new file.
pub const NOTIFY_RULE: &str = "@notify";
/// The rule name of a recipient's digest of the files waiting.
pub const DIGEST_RULE: &str = "@digest";
/// The rule name of a sender's receipt (its file was picked up or acknowledged).
pub const RECEIPT_RULE: &str = "@receipt";

/// The events that may make notices.
pub(super) const NOTICED: [EventKind; 3] = [
    EventKind::DeliveryDelivered,
    EventKind::DeliveryPickedUp,
    EventKind::DeliveryAcknowledged,
];

/// The most files one digest lists.
const DIGEST_FILES: u32 = 200;

impl Hub {
    /// Queues accounts' notices (see the module), digests grouped by `digest_period`. Call
    /// it before the Hub is shared, and only with a worker that can send mail.
    pub fn with_notices(mut self, digest_period: Duration) -> Hub {
        self.stamp.notices = Some(digest_period.max(Duration::seconds(1)));
        self
    }

    /// The delivery an event is about, if it is about one that exists.
    pub async fn event_delivery(&self, event: &Event) -> Result<Option<Delivery>> {
        let Ok(id) = DeliveryId::parse(&event.object) else {
            return Ok(None);
        };
        self.read_short(move |tx| tx.delivery(&id)).await
    }

    /// The files waiting in `account`'s inbox, delivered and not yet picked up, oldest first
    /// (at most 200): what a digest lists.
    pub async fn waiting_files(&self, account: &AccountName) -> Result<Vec<Delivery>> {
        let account = account.clone();
        self.read(move |tx| {
            tx.deliveries(&DeliveryQuery {
                recipient: Some(account),
                states: vec![DeliveryState::Delivered],
                limit: Some(DIGEST_FILES),
                ..DeliveryQuery::default()
            })
        })
        .await
    }
}

/// Adds to `jobs` the notices `event` (about `delivery`) makes.
pub(super) fn queue(
    tx: &mut dyn Tx,
    event: &Event,
    delivery: &Delivery,
    period: Duration,
    now: OffsetDateTime,
    jobs: &mut Vec<Job>,
) -> Result<()> {
    let told = match event.kind {
        EventKind::DeliveryDelivered => &delivery.recipient,
        _ => &delivery.sender,
    };
    let Some(account) = tx.account(told)? else {
        return Ok(());
    };
    let notices = account.access.notices;
    let Some(email) = notices.email else {
        return Ok(());
    };
    let job = |id: Uuid, rule: &str, due: OffsetDateTime| {
        Job::queued(id, rule, Handler::Email(email.clone()), event.id, due, now)
    };
    match (event.kind, notices.mode) {
        (EventKind::DeliveryDelivered, NotifyMode::Instant) => {
            jobs.push(job(Uuid::now_v7(), NOTIFY_RULE, now));
        }
        (EventKind::DeliveryDelivered, NotifyMode::Digest) => {
            let due = period_end(now, period);
            let id = digest_id(told, due);
            if !jobs.iter().any(|j| j.id == id) && tx.job(&id)?.is_none() {
                jobs.push(job(id, DIGEST_RULE, due));
            }
        }
        (EventKind::DeliveryDelivered, NotifyMode::Off) => {}
        _ if notices.receipts => jobs.push(job(Uuid::now_v7(), RECEIPT_RULE, now)),
        _ => {}
    }
    Ok(())
}

/// The end of the digest period `now` is in (periods count from the Unix epoch).
fn period_end(now: OffsetDateTime, period: Duration) -> OffsetDateTime {
    let seconds = period.whole_seconds().max(1);
    let start = now.unix_timestamp().div_euclid(seconds) * seconds;
    OffsetDateTime::from_unix_timestamp(start.saturating_add(seconds)).unwrap_or(now + period)
}

/// The id of `account`'s digest due at `due`: the same for every delivery of the period.
fn digest_id(account: &AccountName, due: OffsetDateTime) -> Uuid {
    let hash = Sha256::new()
        .chain_update(b"mailroom digest\0")
        .chain_update(account.as_str().as_bytes())
        .chain_update(b"\0")
        .chain_update(due.unix_timestamp().to_be_bytes())
        .finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_ends_on_its_boundary_and_a_digest_id_is_one_per_account_and_period() {
        let at =
            |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let hour = Duration::hours(1);
        assert_eq!(period_end(at(7200), hour), at(10_800));
        assert_eq!(period_end(at(7201), hour), at(10_800));
        assert_eq!(period_end(at(10_799), hour), at(10_800));
        let (bob, carol) = (
            AccountName::parse("bob").unwrap_or_else(|_| unreachable!()),
            AccountName::parse("carol").unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(digest_id(&bob, at(10_800)), digest_id(&bob, at(10_800)));
        assert_ne!(digest_id(&bob, at(10_800)), digest_id(&bob, at(14_400)));
        assert_ne!(digest_id(&bob, at(10_800)), digest_id(&carol, at(10_800)));
    }
}
