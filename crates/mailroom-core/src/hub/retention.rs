//! Housekeeping of what is stored: the start-up sweep of unreferenced blobs, the expiry of
//! deliveries past their recipient's retention, and the alerts about the host: a storage
//! running out of space, a clock no longer synchronised. The binary looks; the core records.

use time::OffsetDateTime;

use super::remove::unused_blobs;
use super::{Actor, Hub};
use crate::error::Result;
use crate::model::{DeliveryState, EventKind, Outcome};
use crate::names::AccountName;
use crate::ports::{DeliveryQuery, Durability, SweepReport};

/// Deliveries expired in one transaction.
const EXPIRE_BATCH: u32 = 500;

impl Hub {
    /// Records that the storage under the data folder fell below its free-space floor
    /// (`detail` says how far): a `disk.low` event, which rules turn into alerts. The caller
    /// records a crossing, not every look.
    pub async fn record_disk_low(&self, detail: String) -> Result<()> {
        let event = self.stamp.event(
            &Actor::system(),
            EventKind::DiskLow,
            "data folder".to_owned(),
            Outcome::Failed,
            detail,
        );
        self.record(vec![event], Durability::Flush).await
    }

    /// Records that the host's clock is no longer synchronised (`detail` says what the kernel
    /// reported): a `clock.unsynchronised` event, which rules turn into alerts. The caller
    /// records a crossing, not every look.
    pub async fn record_clock_unsynchronised(&self, detail: String) -> Result<()> {
        let event = self.stamp.event(
            &Actor::system(),
            EventKind::ClockUnsynchronised,
            "clock".to_owned(),
            Outcome::Failed,
            detail,
        );
        self.record(vec![event], Durability::Flush).await
    }

    // ----- start-up --------------------------------------------------------------------------

    /// Removes staging files and blobs that no live delivery references (left by a crash or by
    /// a deletion interrupted between commit and unlink). Run it before serving.
    pub async fn sweep(&self) -> Result<SweepReport> {
        // The stagings of recorded resumable uploads are kept, to be taken up again.
        let live = self
            .read(|tx| {
                let mut live = tx.live_blobs()?;
                live.extend(tx.resumables()?.into_iter().map(|r| r.staging));
                Ok(live)
            })
            .await?;
        let report = self.blobs.sweep(&live).await?;
        if report.staging_removed + report.orphans_removed > 0 {
            let event = self.stamp.event(
                &Actor::system(),
                EventKind::Sweep,
                "blobs".to_owned(),
                Outcome::Ok,
                format!(
                    "removed {} unfinished uploads and {} orphan blobs",
                    report.staging_removed, report.orphans_removed
                ),
            );
            self.record(vec![event], Durability::Flush).await?;
        }
        Ok(report)
    }

    // ----- retention -------------------------------------------------------------------------

    /// Expires what retention no longer keeps: for every account with `retention_days`, each
    /// live delivery to it created more than that many days before `now` moves to `expired`
    /// (with a `delivery.expired` event by `system`, durably) and its blob is deleted once no
    /// live delivery uses it. Returns how many deliveries expired.
    pub async fn expire(&self, now: OffsetDateTime) -> Result<u64> {
        let cache = self.policy.clone();
        let retained: Vec<(AccountName, u32)> = self
            .read(move |tx| {
                let policy = cache.get(tx)?;
                Ok(policy
                    .accounts()
                    .filter_map(|(name, account)| {
                        account
                            .access
                            .limits
                            .retention_days
                            .map(|days| (name.clone(), days))
                    })
                    .collect())
            })
            .await?;
        let mut expired = 0;
        for (account, days) in retained {
            // A retention longer than the calendar can hold keeps everything.
            let Some(cutoff) = now.checked_sub(time::Duration::days(i64::from(days))) else {
                continue;
            };
            // In batches, so that a large backlog never holds the write lock for long.
            loop {
                let stamp = self.stamp.clone();
                let recipient = account.clone();
                let (moved, released) = self
                    .write(Durability::Flush, move |tx| {
                        let due = tx.deliveries(&DeliveryQuery {
                            recipient: Some(recipient.clone()),
                            states: DeliveryState::LIVE.to_vec(),
                            created_before: Some(cutoff),
                            limit: Some(EXPIRE_BATCH),
                            ..DeliveryQuery::default()
                        })?;
                        let mut moved = Vec::with_capacity(due.len());
                        let mut events = Vec::with_capacity(due.len());
                        for delivery in due {
                            let mut event = stamp.delivery(
                                &Actor::system(),
                                EventKind::DeliveryExpired,
                                &delivery,
                            );
                            event.detail.push_str(&format!(
                                "; kept {days} days by {recipient}'s retention"
                            ));
                            if tx.transition(
                                &delivery.id,
                                &DeliveryState::LIVE,
                                DeliveryState::Expired,
                                event.time,
                            )? {
                                events.push(event);
                                moved.push(delivery);
                            }
                        }
                        stamp.record(tx, &events)?;
                        let released = unused_blobs(tx, &moved)?;
                        Ok((moved.len() as u64, released))
                    })
                    .await?;
                self.delete_blobs(&released).await;
                expired += moved;
                if moved < u64::from(EXPIRE_BATCH) {
                    break;
                }
            }
        }
        if expired > 0 {
            tracing::info!(expired, "retention expired deliveries");
        }
        Ok(expired)
    }

    /// [`Hub::expire`] at the hub clock's current time.
    pub async fn expire_due(&self) -> Result<u64> {
        self.expire(self.clock.now()).await
    }
}
