//! Downloads: opening an inbox file or a receipt, reading it, and the close that accounts
//! for it and marks a delivery picked up after its first complete read.

use std::sync::{Arc, Mutex};

use super::tree::{no_such_file, receipt, receipt_text, visible_query};
use super::{ClientSession, Hub};
use crate::error::{CoreError, Result};
use crate::model::{Delivery, DeliveryId, DeliveryState, EventKind, Outcome};
use crate::path::{Area, VirtualPath};
use crate::ports::{BlobReader, Durability};

/// An open download: a delivery's blob or a receipt.
pub struct ReadHandle {
    path: VirtualPath,
    source: ReadSource,
    size: u64,
    delivery: Option<Delivery>,
    covered: Mutex<Coverage>,
}

/// The byte ranges of a file a download has returned, merged, so that "read completely"
/// means every byte was sent at least once, whatever the order of the reads.
#[derive(Debug, Default)]
struct Coverage {
    /// Disjoint, sorted, non-adjacent `[start, end)` ranges.
    ranges: Vec<(u64, u64)>,
    /// Set when a client scattered more ranges than are worth tracking.
    gave_up: bool,
}

/// Disjoint ranges tracked per download before giving up (a normal client has one).
const MAX_RANGES: usize = 64;

impl Coverage {
    fn add(&mut self, start: u64, end: u64) {
        if start >= end || self.gave_up {
            return;
        }
        let mut merged = (start, end);
        let mut kept = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in &self.ranges {
            if e < merged.0 || s > merged.1 {
                kept.push((s, e));
            } else {
                merged = (merged.0.min(s), merged.1.max(e));
            }
        }
        kept.push(merged);
        kept.sort_unstable();
        if kept.len() > MAX_RANGES {
            self.gave_up = true;
            self.ranges.clear();
            return;
        }
        self.ranges = kept;
    }

    fn covers(&self, size: u64) -> u64 {
        // Bytes from 0 that are covered without a gap.
        match self.ranges.first() {
            Some(&(0, end)) => end.min(size),
            _ => 0,
        }
    }
}

enum ReadSource {
    Blob(Arc<dyn BlobReader>),
    Memory(Vec<u8>),
}

impl ReadHandle {
    /// Reads up to `len` bytes at `offset`; empty at end of file.
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.read_at_after(offset, len, 0).await
    }

    /// [`ReadHandle::read_at`] into a buffer that begins with `room` zero bytes, for a front
    /// end to write its reply's header into: the data is `result[room..]` (empty at end of
    /// file), read from storage straight into the reply, with no copy of its own.
    pub async fn read_at_after(&self, offset: u64, len: usize, room: usize) -> Result<Vec<u8>> {
        let framed = match &self.source {
            ReadSource::Blob(reader) => reader.read_at_after(offset, len, room).await?,
            ReadSource::Memory(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(len).min(bytes.len());
                let mut framed = Vec::with_capacity(room + end - start);
                framed.resize(room, 0);
                framed.extend_from_slice(&bytes[start..end]);
                framed
            }
        };
        let read = framed.len().saturating_sub(room);
        let end = offset.saturating_add(read as u64);
        self.covered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(offset, end);
        Ok(framed)
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path it was opened at.
    pub fn path(&self) -> &VirtualPath {
        &self.path
    }
}

impl Hub {
    // ----- downloads -------------------------------------------------------------------------

    /// Opens the content of a delivery that is delivered (and not yet acknowledged, recalled
    /// or expired) for the hub's own use, such as an export rule; `None` when it is no more.
    /// Reading it marks nothing picked up.
    pub async fn open_delivered(&self, id: &DeliveryId) -> Result<Option<(Delivery, ReadHandle)>> {
        let id = *id;
        let found = self
            .read_short(move |tx| {
                let Some(delivery) = tx.delivery(&id)? else {
                    return Ok(None);
                };
                if !DeliveryState::VISIBLE.contains(&delivery.state) {
                    return Ok(None);
                }
                let inline = tx.inline_blob(&delivery.blob_id)?;
                Ok(Some((delivery, inline)))
            })
            .await?;
        let Some((delivery, inline)) = found else {
            return Ok(None);
        };
        let path = VirtualPath::File(Area::Inbox, delivery.sender.clone(), delivery.name.clone());
        let handle = self.read_handle(path, delivery.clone(), inline).await?;
        Ok(Some((delivery, handle)))
    }

    /// Opens an inbox file or a receipt for reading.
    pub async fn open_read(
        &self,
        session: &ClientSession,
        path: &VirtualPath,
    ) -> Result<ReadHandle> {
        if matches!(path, VirtualPath::File(Area::Inbox | Area::Sent, ..)) {
            self.file_operation();
        }
        match path {
            VirtualPath::File(Area::Inbox, sender, name) => {
                // The delivery and, for a small blob, its content (small blobs live in the
                // metadata store: one WAL fsync made them durable) in one read.
                let query = visible_query(session, Area::Inbox, sender, name)?;
                let (sender, name) = (sender.clone(), name.clone());
                let (delivery, inline) = self
                    .read_short_as(session, move |tx| {
                        tx.first_delivery_with_content(&query)?
                            .ok_or_else(|| no_such_file(Area::Inbox, &sender, &name))
                    })
                    .await?;
                self.read_handle(path.clone(), delivery, inline).await
            }
            VirtualPath::File(Area::Sent, recipient, entry) => {
                let (me, recipient, entry) =
                    (session.account.clone(), recipient.clone(), entry.clone());
                let delivery = self
                    .read_short_as(session, move |tx| receipt(tx, &me, &recipient, &entry))
                    .await?;
                let text = receipt_text(&delivery).into_bytes();
                Ok(ReadHandle {
                    path: path.clone(),
                    size: text.len() as u64,
                    source: ReadSource::Memory(text),
                    delivery: None,
                    covered: Mutex::new(Coverage::default()),
                })
            }
            VirtualPath::File(Area::Outbox, ..) => Err(CoreError::denied(
                "outbox files are write-only: the copy is the recipient's now",
            )),
            _ => Err(CoreError::denied(format!("{path} is a folder, not a file"))),
        }
    }

    /// The handle that reads a delivery at `path`: its inline content, or its blob.
    pub(super) async fn read_handle(
        &self,
        path: VirtualPath,
        delivery: Delivery,
        inline: Option<Vec<u8>>,
    ) -> Result<ReadHandle> {
        let source = match inline {
            Some(content) => {
                ReadSource::Blob(self.blobs.open_inline(&delivery.blob_id, content).await?)
            }
            None => ReadSource::Blob(self.blobs.open(&delivery.blob_id).await?),
        };
        Ok(ReadHandle {
            path,
            size: delivery.size,
            source,
            delivery: Some(delivery),
            covered: Mutex::new(Coverage::default()),
        })
    }

    /// Ends a download: accounts for it and, the first time a delivery was read completely,
    /// marks it picked up.
    pub async fn close_read(&self, session: &ClientSession, handle: ReadHandle) -> Result<()> {
        let Some(delivery) = handle.delivery else {
            return Ok(());
        };
        self.file_operation();
        let bytes = handle
            .covered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .covers(delivery.size);
        let complete = bytes >= delivery.size;
        metrics::counter!("mailroom_transfer_bytes_total", "direction" => "download", "protocol" => session.protocol.as_str())
            .increment(bytes);
        let actor = session.actor();
        let download = self.stamp.event(
            &actor,
            EventKind::Download,
            handle.path.to_string(),
            if complete {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            format!(
                "delivery {} {bytes} of {} bytes read{}",
                delivery.id,
                delivery.size,
                if complete { "" } else { " (incomplete)" }
            ),
        );
        // Accounting of a download needs no fsync of its own: the client has its bytes, and a
        // lost pick-up mark after a power cut only shows the file as delivered again. The
        // first complete download records itself with the pick-up, in one transaction.
        let stamp = self.stamp.clone();
        self.write(Durability::Relaxed, move |tx| {
            if complete && delivery.state == DeliveryState::Delivered {
                let moved = tx.transition(
                    &delivery.id,
                    &[DeliveryState::Delivered],
                    DeliveryState::PickedUp,
                    download.time,
                )?;
                if moved {
                    let picked_up = stamp.delivery(&actor, EventKind::DeliveryPickedUp, &delivery);
                    return stamp.record(tx, &[download, picked_up]);
                }
            }
            stamp.record(tx, &[download])
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_counts_each_byte_once_in_any_order() {
        let mut c = Coverage::default();
        c.add(0, 10);
        c.add(0, 10);
        assert_eq!(
            c.covers(20),
            10,
            "reading the same half twice is still half"
        );
        c.add(15, 20);
        assert_eq!(c.covers(20), 10);
        c.add(10, 15);
        assert_eq!(c.covers(20), 20);
        let mut c = Coverage::default();
        c.add(50, 100);
        c.add(0, 50);
        assert_eq!(c.covers(100), 100, "out of order, adjacent ranges merge");
        let mut c = Coverage::default();
        for i in 0..100 {
            c.add(i * 10, i * 10 + 5);
        }
        assert!(c.gave_up);
        assert_eq!(c.covers(1000), 0, "a scattered reader is never complete");
    }
}
