//! Housekeeping of what is stored: the start-up sweep of unreferenced blobs and the expiry of
//! deliveries past their recipient's retention.

use time::OffsetDateTime;

use super::{Actor, Hub};
use crate::error::Result;
use crate::model::{DeliveryState, EventKind, Outcome};
use crate::ports::{DeliveryQuery, Durability, SweepReport};

impl Hub {
    // ----- start-up --------------------------------------------------------------------------

    /// Removes staging files and blobs that no live delivery references (left by a crash or by
    /// a deletion interrupted between commit and unlink). Run it before serving.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let live = self.meta.live_blobs().await?;
        let report = self.blobs.sweep(&live).await?;
        if report.staging_removed + report.orphans_removed > 0 {
            let event = self.event(
                &Actor::system(),
                EventKind::Sweep,
                "blobs".to_owned(),
                Outcome::Ok,
                format!(
                    "removed {} unfinished uploads and {} orphan blobs",
                    report.staging_removed, report.orphans_removed
                ),
            );
            self.meta.record(&[event], Durability::Flush).await?;
        }
        Ok(report)
    }

    // ----- retention -------------------------------------------------------------------------

    /// Expires what retention no longer keeps: for every account with `retention_days`, each
    /// live delivery to it created more than that many days before `now` moves to `expired`
    /// (with a `delivery.expired` event by `system`, durably) and its blob is deleted once no
    /// live delivery uses it. Returns how many deliveries expired.
    pub async fn expire(&self, now: OffsetDateTime) -> Result<u64> {
        let actor = Actor::system();
        let mut expired = 0;
        for account in self.meta.accounts().await? {
            let Some(days) = account.access.limits.retention_days else {
                continue;
            };
            // A retention longer than the calendar can hold keeps everything.
            let Some(cutoff) = now.checked_sub(time::Duration::days(i64::from(days))) else {
                continue;
            };
            let due = self
                .meta
                .deliveries(&DeliveryQuery {
                    recipient: Some(account.name.clone()),
                    states: DeliveryState::LIVE.to_vec(),
                    created_before: Some(cutoff),
                    ..DeliveryQuery::default()
                })
                .await?;
            for delivery in &due {
                let mut event = self.delivery_event(&actor, EventKind::DeliveryExpired, delivery);
                event.detail.push_str(&format!(
                    "; kept {days} days by {}'s retention",
                    account.name
                ));
                // A delivery acknowledged or recalled since the query is simply not moved.
                let moved = self
                    .meta
                    .transition(
                        &delivery.id,
                        &DeliveryState::LIVE,
                        DeliveryState::Expired,
                        std::slice::from_ref(&event),
                        Durability::Flush,
                    )
                    .await?;
                if moved {
                    expired += 1;
                    self.release_blob(delivery).await;
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
