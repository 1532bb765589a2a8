//! What a consistency check (`mailroom fsck`) and a backup ask of the Hub: every blob the
//! kept deliveries reference, as the metadata records it, and the repair that marks the
//! deliveries of a lost blob `failed`. Reading and hashing the blob store's files, and
//! judging what is an orphan there, are the caller's: the core does no I/O.

use sha2::{Digest, Sha256};

use super::{Actor, Hub};
use crate::error::{CoreError, Result};
use crate::model::{BlobId, Delivery, DeliveryId, DeliveryState};
use crate::ports::{DeliveryQuery, Durability};

/// A blob that kept deliveries ([`DeliveryState::KEPT`]) reference, as the metadata records
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptBlob {
    /// Its id in the blob store (or in the metadata store, when kept inline).
    pub id: BlobId,
    /// The size the deliveries record.
    pub size: u64,
    /// The SHA-256 the deliveries record, lower-case hex.
    pub sha256: String,
    /// For a blob kept inline in the metadata store, whether its content has the recorded
    /// size and SHA-256; `None` for a blob in the blob store.
    pub inline: Option<bool>,
    /// The kept deliveries that reference it, oldest first.
    pub deliveries: Vec<DeliveryId>,
}

impl Hub {
    /// Every blob the kept deliveries reference, by id, in one snapshot; inline blobs are
    /// checked against their size and SHA-256 on the way (opened through the blob store, so
    /// a sealed one's tags are checked too).
    pub async fn kept_blobs(&self) -> Result<Vec<KeptBlob>> {
        let mut blobs = self.kept_blobs_unchecked().await?;
        for blob in blobs.iter_mut().filter(|blob| blob.inline.is_some()) {
            let id = blob.id.clone();
            let content = self.read(move |tx| tx.inline_blob(&id)).await?;
            blob.inline = Some(match content {
                Some(content) => self.inline_matches(blob, content).await,
                None => false,
            });
        }
        Ok(blobs)
    }

    /// Whether inline `content` opens to the size and SHA-256 `blob` records.
    async fn inline_matches(&self, blob: &KeptBlob, content: Vec<u8>) -> bool {
        let Ok(reader) = self.blobs.open_inline(&blob.id, content).await else {
            return false;
        };
        if reader.size() != blob.size {
            return false;
        }
        let mut hasher = Sha256::new();
        let mut offset = 0;
        while offset < blob.size {
            match reader.read_at(offset, 1 << 20).await {
                Ok(data) if !data.is_empty() => {
                    offset += data.len() as u64;
                    hasher.update(&data);
                }
                _ => return false,
            }
        }
        hex::encode(hasher.finalize()) == blob.sha256
    }

    /// [`Hub::kept_blobs`] with every inline blob marked `Some(false)`, unchecked.
    async fn kept_blobs_unchecked(&self) -> Result<Vec<KeptBlob>> {
        self.read(|tx| {
            let deliveries = tx.deliveries(&DeliveryQuery {
                states: DeliveryState::KEPT.to_vec(),
                ..DeliveryQuery::default()
            })?;
            let mut blobs: std::collections::BTreeMap<String, KeptBlob> = Default::default();
            for delivery in deliveries {
                if let Some(blob) = blobs.get_mut(delivery.blob_id.as_str()) {
                    blob.deliveries.push(delivery.id);
                    continue;
                }
                let inline = tx.inline_blob(&delivery.blob_id)?.map(|_| false);
                blobs.insert(
                    delivery.blob_id.as_str().to_owned(),
                    KeptBlob {
                        id: delivery.blob_id.clone(),
                        size: delivery.size,
                        sha256: delivery.sha256.clone(),
                        inline,
                        deliveries: vec![delivery.id],
                    },
                );
            }
            Ok(blobs.into_values().collect())
        })
        .await
    }

    /// Marks every kept delivery of `blob` `failed`, its content being missing or damaged,
    /// with an admin event each that names the delivery and `reason`, in one unit; returns
    /// them as they are now. The blob itself is left where it is (the caller sets a damaged
    /// one aside first, so that nothing is deleted silently). An empty list when no kept
    /// delivery references it any more.
    pub async fn fail_lost_blob(
        &self,
        actor: &Actor,
        blob: &BlobId,
        reason: &str,
    ) -> Result<Vec<Delivery>> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(CoreError::invalid("a reason is required"));
        }
        let (stamp, actor, blob, reason) = (
            self.stamp.clone(),
            actor.clone(),
            blob.clone(),
            reason.to_owned(),
        );
        self.write(Durability::Flush, move |tx| {
            let kept = tx.deliveries(&DeliveryQuery {
                states: DeliveryState::KEPT.to_vec(),
                ..DeliveryQuery::default()
            })?;
            let now = stamp.now();
            let mut failed = Vec::new();
            let mut events = Vec::new();
            for delivery in kept.into_iter().filter(|d| d.blob_id == blob) {
                if !tx.transition(
                    &delivery.id,
                    &DeliveryState::KEPT,
                    DeliveryState::Failed,
                    now,
                )? {
                    continue;
                }
                events.push(stamp.admin(
                    &actor,
                    format!("delivery:{}", delivery.id),
                    format!(
                        "marked failed ({} -> {} {}, was {}): {reason}",
                        delivery.sender,
                        delivery.recipient,
                        delivery.name,
                        delivery.state.as_str()
                    ),
                ));
                failed.push(Delivery {
                    state: DeliveryState::Failed,
                    updated: now,
                    ..delivery
                });
            }
            stamp.record(tx, &events)?;
            Ok(failed)
        })
        .await
    }
}

impl Hub {
    /// The blob ids of the stagings that recorded resumable uploads hold (see
    /// [`crate::ResumableRecord`]): such a blob is an upload under way, not an orphan, even
    /// when a crash left it among the committed blobs.
    pub async fn unfinished_stagings(&self) -> Result<Vec<BlobId>> {
        self.read(|tx| Ok(tx.resumables()?.into_iter().map(|r| r.staging).collect()))
            .await
    }

    /// Records that the blob `id` of `size` bytes was set aside at `place` (by the
    /// consistency check's repair, which never deletes), with `reason`: one admin event.
    pub async fn record_set_aside(
        &self,
        actor: &Actor,
        id: &BlobId,
        size: u64,
        place: &str,
        reason: &str,
    ) -> Result<()> {
        let event = self.stamp.admin(
            actor,
            format!("blob:{id}"),
            format!("set aside ({size} bytes) at {place}: {reason}"),
        );
        self.record(vec![event], Durability::Flush).await
    }
}
