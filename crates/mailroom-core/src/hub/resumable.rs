//! Resumable uploads: an upload that outlives the request that started it, so a client whose
//! connection dropped can ask how many bytes arrived and send the rest.
//!
//! The Hub keeps each one in memory, under a random id, for its owner only: another account
//! asking for the id gets NotFound. Bytes are appended in order only (the client names the
//! offset it sends at, and a wrong one is refused before anything is written), and at most
//! the size announced when it began. It is an ordinary [`Upload`] underneath, begun with
//! [`Hub::begin_send`], so routes, rights, name rules, sizes and quotas are the Hub's rules as
//! for every protocol, and it becomes deliveries only through [`Hub::finish_upload`], after
//! the SHA-256 the client names matches. One that is neither finished nor aborted in time is
//! aborted by [`Hub::expire_resumable`].
//!
//! Where the blob store can take a staging up again ([`crate::BlobStore::resume`]: the local
//! folder), each upload is also recorded in the metadata store ([`ResumableRecord`]) and its
//! staging is spared by the start-up sweep, so it outlives a restart: the first request for
//! it afterwards takes it up, checked again against today's routes and limits, at the offset
//! its staging holds (which a client learns with `HEAD`, as after any dropped connection). The
//! record goes in the same unit as the deliveries the upload makes, so a finished upload can
//! never be taken up again and sent twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;

use super::{ClientSession, Content, Hub, Upload};
use crate::error::{CoreError, ErrorKind, Result};
use crate::model::{BlobId, Delivery};
use crate::names::{AccountName, FileName};
use crate::path::{Area, VirtualPath};
use crate::ports::Durability;

/// Resumable uploads one account may have open at once.
pub const MAX_PER_ACCOUNT: usize = 32;

/// A resumable upload as the metadata store keeps it, so that it outlives a restart: what
/// it was begun with, and where its bytes are staged. Its offset is what the staging holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumableRecord {
    /// Its id.
    pub id: String,
    /// The account that began it.
    pub owner: AccountName,
    /// The accounts and groups it is addressed to.
    pub targets: Vec<AccountName>,
    /// The file name.
    pub name: FileName,
    /// The size announced.
    pub size: u64,
    /// The SHA-256 announced, if one was.
    pub sha256: Option<String>,
    /// Whether it is end-to-end encrypted.
    pub e2e: bool,
    /// Its blob store staging ([`crate::BlobStore::resume`]).
    pub staging: BlobId,
    /// When it began.
    pub created: OffsetDateTime,
    /// When it is aborted unless finished.
    pub expires: OffsetDateTime,
}

/// What a client learns about one of its resumable uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumableInfo {
    /// The upload's id (random, 128 bits).
    pub id: String,
    /// The file name the deliveries will carry (before any collision suffix).
    pub name: FileName,
    /// The accounts and groups it is addressed to.
    pub targets: Vec<AccountName>,
    /// The accounts that will receive it.
    pub recipients: Vec<AccountName>,
    /// The size announced when it began.
    pub size: u64,
    /// Bytes received so far: where the next byte must go.
    pub offset: u64,
    /// The SHA-256 announced when it began, if one was.
    pub sha256: Option<String>,
    /// Plain, or end-to-end encrypted.
    pub content: Content,
    /// When it began.
    pub created: OffsetDateTime,
    /// When it is aborted unless finished.
    pub expires: OffsetDateTime,
}

struct Slot {
    owner: AccountName,
    /// `None` once finished or aborted (the slot is then out of the map).
    upload: Option<Upload>,
    info: ResumableInfo,
}

/// The Hub's registry of resumable uploads.
#[derive(Default)]
pub(crate) struct Resumables {
    slots: Mutex<HashMap<String, Entry>>,
}

/// One registered upload: its owner (readable without the slot's lock) and its slot.
struct Entry {
    owner: AccountName,
    slot: Arc<tokio::sync::Mutex<Slot>>,
}

impl Resumables {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Exclusive use of one resumable upload for the length of one request: writes go through
/// it. A second request on the same upload meanwhile is refused with Conflict.
pub struct ResumableLease {
    slot: OwnedMutexGuard<Slot>,
}

impl ResumableLease {
    /// The upload as it stands.
    pub fn info(&self) -> ResumableInfo {
        let mut info = self.slot.info.clone();
        info.offset = self.offset();
        info
    }

    /// Bytes received so far.
    pub fn offset(&self) -> u64 {
        self.slot.upload.as_ref().map_or(0, Upload::size)
    }

    /// Appends `data` at `offset`, which must be [`ResumableLease::offset`]: anything else is
    /// refused with Conflict before a byte is written. Bytes past the announced size are
    /// refused the same way; a write past the Hub's byte limits fails as for every protocol
    /// (and the upload can then only be aborted).
    pub async fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<()> {
        let current = self.offset();
        if offset != current {
            return Err(CoreError::conflict(format!(
                "the upload has {current} bytes; data must be sent at offset {current}, not {offset}"
            )));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > self.slot.info.size {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "{end} bytes is more than the {} announced for this upload",
                    self.slot.info.size
                ),
            ));
        }
        let Some(upload) = self.slot.upload.as_mut() else {
            return Err(CoreError::not_found("the upload has ended"));
        };
        upload.write_at(offset, &data).await
    }
}

impl Hub {
    /// Begins a resumable upload of `size` bytes named `name` to `targets` (accounts or
    /// groups), checked like any upload ([`Hub::begin_send`]); a size over the sender's or
    /// recipients' limits is refused now, before a byte is sent. `sha256`, when given, must
    /// match at the end. It is aborted unless finished within `lifetime`. `content` says
    /// whether the bytes are the file or age ciphertext of it ([`Content`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn open_resumable(
        &self,
        session: &ClientSession,
        targets: &[AccountName],
        name: &FileName,
        size: u64,
        sha256: Option<&str>,
        content: Content,
        lifetime: std::time::Duration,
    ) -> Result<ResumableInfo> {
        let sha256 = sha256.map(parse_sha256).transpose()?;
        let open = self
            .resumables
            .lock()
            .values()
            .filter(|entry| entry.owner == session.account)
            .count();
        if open >= MAX_PER_ACCOUNT {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "{} has {MAX_PER_ACCOUNT} unfinished uploads; finish or abort one first",
                    session.account
                ),
            ));
        }
        let mut upload = self.begin_send(session, targets, name, content).await?;
        if let Err(err) = upload.announce_size(size) {
            self.abort_upload(upload, "size announced over the limit")
                .await;
            return Err(err);
        }
        if let Some(hash) = &sha256 {
            upload.expect_sha256(hash.clone());
        }
        let now = self.clock.now();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let expires = now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::DAY);
        if let Some(staging) = upload.staging_id() {
            let record = ResumableRecord {
                id: id.clone(),
                owner: session.account.clone(),
                targets: upload.targets().to_vec(),
                name: name.clone(),
                size,
                sha256: sha256.clone(),
                e2e: content == Content::EndToEnd,
                staging,
                created: now,
                expires,
            };
            // Relaxed: a record lost with the last moment before a crash only means the
            // client begins again; what must be durable is its removal, which goes with the
            // deliveries.
            let recorded = self
                .write(Durability::Relaxed, move |tx| tx.insert_resumable(&record))
                .await;
            if let Err(err) = recorded {
                self.abort_upload(upload, "could not record the upload")
                    .await;
                return Err(err);
            }
            upload.set_resumable(id.clone());
        }
        let info = ResumableInfo {
            id,
            name: name.clone(),
            targets: upload.targets().to_vec(),
            recipients: upload.recipients(),
            size,
            offset: 0,
            sha256,
            content,
            created: now,
            expires,
        };
        let slot = Slot {
            owner: session.account.clone(),
            upload: Some(upload),
            info: info.clone(),
        };
        self.resumables.lock().insert(
            info.id.clone(),
            Entry {
                owner: session.account.clone(),
                slot: Arc::new(tokio::sync::Mutex::new(slot)),
            },
        );
        tracing::info!(account = %session.account, upload = %info.id, size, "resumable upload begun");
        Ok(info)
    }

    /// Takes one of the session's resumable uploads for one request. NotFound for an unknown
    /// id, another account's, or one that has expired; Conflict while another request holds it.
    pub async fn lease_resumable(
        &self,
        session: &ClientSession,
        id: &str,
    ) -> Result<ResumableLease> {
        let not_found = || CoreError::not_found(format!("no unfinished upload {id}"));
        let held = self
            .resumables
            .lock()
            .get(id)
            .map(|entry| (entry.owner == session.account).then(|| entry.slot.clone()));
        let slot = match held {
            Some(slot) => slot.ok_or_else(not_found)?,
            None => self.take_up(session, id).await?.ok_or_else(not_found)?,
        };
        let slot = slot.try_lock_owned().map_err(|_| {
            CoreError::conflict("another request is writing this upload; try again when it ends")
        })?;
        if slot.owner != session.account || slot.upload.is_none() {
            return Err(not_found());
        }
        if slot.info.expires <= self.clock.now() {
            return Err(not_found());
        }
        Ok(ResumableLease { slot })
    }

    /// Finishes a resumable upload whose bytes have all arrived: the SHA-256 of the content
    /// must be `sha256` (and the one announced at the start, if any), else nothing is
    /// delivered and the upload is gone. An upload still missing bytes is refused with
    /// Conflict and kept, to be resumed.
    pub async fn finish_resumable(
        &self,
        mut lease: ResumableLease,
        sha256: &str,
    ) -> Result<Vec<Delivery>> {
        let sha256 = parse_sha256(sha256)?;
        let (offset, size) = (lease.offset(), lease.slot.info.size);
        if offset != size {
            return Err(CoreError::conflict(format!(
                "only {offset} of the {size} bytes announced have arrived; send the rest first"
            )));
        }
        if let Some(announced) = &lease.slot.info.sha256
            && *announced != sha256
        {
            return Err(CoreError::conflict(format!(
                "the SHA-256 given now ({sha256}) differs from the one announced ({announced})"
            )));
        }
        let Some(mut upload) = lease.slot.upload.take() else {
            return Err(CoreError::not_found("the upload has ended"));
        };
        let id = lease.slot.info.id.clone();
        self.resumables.lock().remove(&id);
        upload.expect_sha256(sha256);
        let finished = self.finish_upload(upload).await;
        if finished.is_err() {
            // Refused or failed: the bytes are gone, and so must its record be.
            self.forget_resumable(&id).await;
        }
        finished
    }

    /// Aborts a resumable upload: nothing is delivered and its bytes are discarded.
    pub async fn abort_resumable(&self, mut lease: ResumableLease, reason: &str) {
        let id = lease.slot.info.id.clone();
        self.resumables.lock().remove(&id);
        if let Some(upload) = lease.slot.upload.take() {
            self.abort_upload(upload, reason).await;
        }
        self.forget_resumable(&id).await;
    }

    /// Removes a resumable upload's record; a failure is left to its expiry.
    async fn forget_resumable(&self, id: &str) {
        let id = id.to_owned();
        if let Err(err) = self
            .write(Durability::Relaxed, move |tx| tx.delete_resumable(&id))
            .await
        {
            tracing::warn!(error = %err, "could not forget a resumable upload; its expiry will");
        }
    }

    /// Takes up, after a restart, the recorded upload `id` of `session`'s account: its
    /// staging reopened, its targets checked again (a route removed meanwhile refuses it),
    /// registered as if it had never left. `None` when there is no such record for this
    /// account, when it has expired, or when the blob store cannot take it up.
    async fn take_up(
        &self,
        session: &ClientSession,
        id: &str,
    ) -> Result<Option<Arc<tokio::sync::Mutex<Slot>>>> {
        // One take-up at a time, so two requests never reopen one staging twice.
        let _one = self.taking_up.lock().await;
        if let Some(entry) = self.resumables.lock().get(id) {
            return Ok((entry.owner == session.account).then(|| entry.slot.clone()));
        }
        let wanted = id.to_owned();
        let Some(record) = self.read(move |tx| tx.resumable(&wanted)).await? else {
            return Ok(None);
        };
        if record.owner != session.account || record.expires <= self.clock.now() {
            return Ok(None);
        }
        let Some(writer) = self.blobs.resume(&record.staging, &record.owner).await? else {
            return Ok(None);
        };
        let content = if record.e2e {
            Content::EndToEnd
        } else {
            Content::Plain
        };
        let Some(first) = record.targets.first() else {
            return Ok(None);
        };
        let path = VirtualPath::File(Area::Outbox, first.clone(), record.name.clone());
        let begun = self
            .begin_targets(
                session,
                &record.targets,
                &record.name,
                path,
                content,
                Some(writer),
            )
            .await;
        let mut upload = match begun {
            Ok(upload) => upload,
            Err(err) => {
                // Today's rules refuse it: it can never be finished, so it ends now.
                if let Some(writer) = self.blobs.resume(&record.staging, &record.owner).await? {
                    writer.abort().await;
                }
                self.forget_resumable(id).await;
                self.record_refusal_of(
                    session,
                    crate::model::EventKind::Upload,
                    format!("/outbox/{first}/{}", record.name),
                    &err,
                )
                .await;
                return Err(err);
            }
        };
        if let Err(err) = upload.announce_size(record.size) {
            self.abort_upload(upload, "size announced over the limit")
                .await;
            self.forget_resumable(id).await;
            return Err(err);
        }
        if let Some(hash) = &record.sha256 {
            upload.expect_sha256(hash.clone());
        }
        upload.set_resumable(record.id.clone());
        let info = ResumableInfo {
            id: record.id.clone(),
            name: record.name.clone(),
            targets: upload.targets().to_vec(),
            recipients: upload.recipients(),
            size: record.size,
            offset: 0,
            sha256: record.sha256.clone(),
            content,
            created: record.created,
            expires: record.expires,
        };
        tracing::info!(
            account = %session.account,
            upload = %record.id,
            offset = upload.size(),
            "resumable upload taken up after a restart"
        );
        let slot = Arc::new(tokio::sync::Mutex::new(Slot {
            owner: session.account.clone(),
            upload: Some(upload),
            info,
        }));
        self.resumables.lock().insert(
            record.id,
            Entry {
                owner: session.account.clone(),
                slot: slot.clone(),
            },
        );
        Ok(Some(slot))
    }

    /// Aborts every resumable upload past its expiry that no request holds now. Returns how
    /// many. Run it every few minutes.
    pub async fn expire_resumable(&self) -> usize {
        let now = self.clock.now();
        let due: Vec<OwnedMutexGuard<Slot>> = {
            let mut slots = self.resumables.lock();
            let mut due = Vec::new();
            slots.retain(|_, entry| match entry.slot.clone().try_lock_owned() {
                Ok(guard) if guard.info.expires <= now => {
                    due.push(guard);
                    false
                }
                _ => true,
            });
            due
        };
        let mut count = due.len();
        for mut slot in due {
            if let Some(upload) = slot.upload.take() {
                self.abort_upload(upload, "expired unfinished").await;
            }
            self.forget_resumable(&slot.info.id).await;
        }
        // And the recorded ones no request took up since a restart.
        let recorded = match self.read(|tx| tx.resumables()).await {
            Ok(recorded) => recorded,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the resumable uploads to expire");
                return count;
            }
        };
        for record in recorded.into_iter().filter(|r| r.expires <= now) {
            if self.resumables.lock().contains_key(&record.id) {
                continue;
            }
            if let Ok(Some(writer)) = self.blobs.resume(&record.staging, &record.owner).await {
                writer.abort().await;
            }
            self.forget_resumable(&record.id).await;
            count += 1;
        }
        count
    }
}

/// A SHA-256 as 64 hex digits, lower-cased.
fn parse_sha256(text: &str) -> Result<String> {
    let text = text.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(CoreError::invalid(
            "a SHA-256 must be 64 hexadecimal digits",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_must_be_64_hex_digits() {
        let good = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(parse_sha256(good).ok(), Some(good.to_ascii_lowercase()));
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
    }
}
