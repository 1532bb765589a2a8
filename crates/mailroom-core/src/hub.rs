//! The Hub: the mailbox service API that every front end and the admin CLI call.
//!
//! It resolves the virtual tree, enforces route policy, runs the delivery lifecycle and
//! accounts for every action. It never sees a socket or a file: metadata, blobs and time come
//! through the ports, and each state change is handed to the metadata store together with the
//! audit events that describe it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::access::{self, AccessPolicy, ByteLimit, Factor, Mailbox, format_size};
use crate::audit::{AuditRecord, ChainHead, ChainReport, Checkpoint};
use crate::error::{CoreError, ErrorKind, Result};
use crate::login::{AuthConfig, Guard};
use crate::model::{
    Account, AccountKind, AuthorizedKey, Delivery, DeliveryId, DeliveryState, Event, EventKind,
    Group, Outcome, Protocol, Route, RouteEffect,
};
use crate::names::{AccountName, FileName};
use crate::password;
use crate::path::{Area, VirtualPath};
use crate::policy::{self, Decision};
use crate::ports::{
    BlobReader, BlobStore, BlobWriter, Clock, DeliveryQuery, Durability, EventQuery, InboxUsage,
    MetaStore, SweepReport,
};
use crate::secret::Secret;

/// How many collision suffixes to try before giving up on a name.
const MAX_SUFFIX: u32 = 10_000;

/// Who is acting, for the audit trail: an administrator, the system, or a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Account name, `cli:<os user>` or `system`.
    pub name: String,
    /// Peer address, if the action came over the network.
    pub source: Option<String>,
    /// The channel it came through.
    pub protocol: Protocol,
}

impl Actor {
    /// The admin command line, run by the given OS user.
    pub fn cli(os_user: &str) -> Actor {
        Actor {
            name: format!("cli:{os_user}"),
            source: None,
            protocol: Protocol::Cli,
        }
    }

    /// The hub itself.
    pub fn system() -> Actor {
        Actor {
            name: "system".to_owned(),
            source: None,
            protocol: Protocol::System,
        }
    }
}

/// An authenticated client: the account and where it connected from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSession {
    /// The logged-in client account.
    pub account: AccountName,
    /// Peer address.
    pub source: Option<String>,
    /// The protocol in use; a front end may switch it (SSH to SFTP or SCP).
    pub protocol: Protocol,
}

impl ClientSession {
    fn actor(&self) -> Actor {
        Actor {
            name: self.account.to_string(),
            source: self.source.clone(),
            protocol: self.protocol,
        }
    }
}

/// One entry of a listing or the answer to a stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The last path component (`/` for the root).
    pub name: String,
    /// Folder or file.
    pub is_dir: bool,
    /// Size in bytes (0 for folders).
    pub size: u64,
    /// Last change.
    pub modified: OffsetDateTime,
    /// Whether the client may write here (an outbox folder).
    pub writable: bool,
}

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
        let data = match &self.source {
            ReadSource::Blob(reader) => reader.read_at(offset, len).await?,
            ReadSource::Memory(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(len).min(bytes.len());
                bytes[start..end].to_vec()
            }
        };
        let end = offset.saturating_add(data.len() as u64);
        self.covered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(offset, end);
        Ok(data)
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

/// An upload in progress. Nothing of it is visible to anyone until [`Hub::finish_upload`].
pub struct Upload {
    session: ClientSession,
    path: VirtualPath,
    /// The outbox folders it was written to (accounts or groups); one for the file protocols.
    targets: Vec<AccountName>,
    name: FileName,
    /// Who receives it, with the target each came through, decided by route policy when the
    /// upload started.
    recipients: Vec<(AccountName, AccountName)>,
    /// The SHA-256 the content must have, when the client named one.
    expected_sha256: Option<String>,
    /// The recipients that had a quota when the upload started, checked again at the end.
    quota_recipients: Vec<AccountName>,
    /// The most bytes the file may reach (sender's largest file, recipients' free quota),
    /// decided when the upload started.
    limit: Option<ByteLimit>,
    /// Set when a write was refused for the limit: the upload can then only be aborted.
    refusal: Option<CoreError>,
    writer: Box<dyn BlobWriter>,
}

impl Upload {
    /// Writes data at an offset of the file being uploaded. A write that would take the file
    /// past its byte limit is refused with [`ErrorKind::QuotaExceeded`], writes nothing, and
    /// poisons the upload: every later write fails the same way and
    /// [`Hub::finish_upload`] refuses it, so a truncated file is never delivered.
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if let Some(err) = &self.refusal {
            return Err(err.clone());
        }
        if let Some(limit) = &self.limit
            && offset.saturating_add(data.len() as u64) > limit.bytes
        {
            self.refusal = Some(limit.error.clone());
            return Err(limit.error.clone());
        }
        self.writer.write_at(offset, data).await
    }

    /// The most bytes this upload may write, if it is limited.
    pub fn byte_limit(&self) -> Option<u64> {
        self.limit.as_ref().map(|l| l.bytes)
    }

    /// Checks a size the client announced before sending (SCP's file header) against the
    /// limit, so an oversize file is refused before its first byte. A refusal poisons the
    /// upload like a refused write.
    pub fn announce_size(&mut self, size: u64) -> Result<()> {
        if let Some(limit) = &self.limit
            && size > limit.bytes
        {
            self.refusal = Some(limit.error.clone());
            return Err(limit.error.clone());
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.writer.size()
    }

    /// The path being written.
    pub fn path(&self) -> &VirtualPath {
        &self.path
    }

    /// The accounts and groups it is addressed to.
    pub fn targets(&self) -> &[AccountName] {
        &self.targets
    }

    /// The accounts that will receive it.
    pub fn recipients(&self) -> Vec<AccountName> {
        self.recipients.iter().map(|(r, _)| r.clone()).collect()
    }

    /// Requires the content's SHA-256 (64 lower-case hex digits) to be `sha256`:
    /// [`Hub::finish_upload`] then refuses other content and delivers nothing.
    pub fn expect_sha256(&mut self, sha256: String) {
        self.expected_sha256 = Some(sha256);
    }
}

/// Targets one upload may name at once.
pub const MAX_TARGETS: usize = 64;

/// The mailbox service.
pub struct Hub {
    pub(crate) meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Authentication and defence state (see [`crate::login`]).
    pub(crate) guard: Guard,
    /// Resumable uploads under way (see [`crate::resumable`]).
    pub(crate) resumables: crate::resumable::Resumables,
}

impl Hub {
    /// Builds the service on its ports.
    pub fn new(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>, clock: Arc<dyn Clock>) -> Hub {
        Hub {
            meta,
            blobs,
            clock,
            guard: Guard::new(AuthConfig::default()),
            resumables: crate::resumable::Resumables::default(),
        }
    }

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

    // ----- the tree --------------------------------------------------------------------------

    /// Describes one path.
    pub async fn stat(&self, session: &ClientSession, path: &VirtualPath) -> Result<Entry> {
        let now = self.clock.now();
        let dir = |name: &str, writable: bool| Entry {
            name: name.to_owned(),
            is_dir: true,
            size: 0,
            modified: now,
            writable,
        };
        match path {
            VirtualPath::Root => Ok(dir("/", false)),
            VirtualPath::Area(area) => Ok(dir(area.as_str(), false)),
            VirtualPath::Folder(area, name) => Ok(dir(name.as_str(), *area == Area::Outbox)),
            VirtualPath::File(Area::Sent, recipient, entry) => {
                let delivery = self.receipt(session, recipient, entry).await?;
                Ok(file_entry(
                    entry.as_str(),
                    receipt_text(&delivery).len() as u64,
                    delivery.updated,
                    false,
                ))
            }
            VirtualPath::File(area, folder, name) => {
                let delivery = self.visible_file(session, *area, folder, name).await?;
                Ok(file_entry(
                    name.as_str(),
                    delivery.size,
                    delivery.created,
                    *area == Area::Outbox,
                ))
            }
        }
    }

    /// Lists a folder. Files have no children: listing one is refused.
    pub async fn list(&self, session: &ClientSession, path: &VirtualPath) -> Result<Vec<Entry>> {
        let me = &session.account;
        let now = self.clock.now();
        let dir = |name: &str, writable: bool| Entry {
            name: name.to_owned(),
            is_dir: true,
            size: 0,
            modified: now,
            writable,
        };
        match path {
            VirtualPath::Root => Ok(Area::ALL
                .iter()
                .map(|area| dir(area.as_str(), false))
                .collect()),
            VirtualPath::Area(Area::Inbox) => {
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        recipient: Some(me.clone()),
                        states: DeliveryState::VISIBLE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                let senders: BTreeSet<_> = deliveries.into_iter().map(|d| d.sender).collect();
                Ok(senders.iter().map(|s| dir(s.as_str(), false)).collect())
            }
            VirtualPath::Area(Area::Outbox) => {
                let mut targets = self.allowed_targets(me).await?;
                let pending = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(me.clone()),
                        states: DeliveryState::RECALLABLE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                targets.extend(pending.into_iter().map(|d| d.target));
                Ok(targets.iter().map(|t| dir(t.as_str(), true)).collect())
            }
            VirtualPath::Area(Area::Sent) => {
                let sent = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(me.clone()),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                let recipients: BTreeSet<_> = sent.into_iter().map(|d| d.recipient).collect();
                Ok(recipients.iter().map(|r| dir(r.as_str(), false)).collect())
            }
            VirtualPath::Folder(Area::Inbox, sender) => {
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        recipient: Some(me.clone()),
                        sender: Some(sender.clone()),
                        states: DeliveryState::VISIBLE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                Ok(deliveries
                    .iter()
                    .map(|d| file_entry(d.name.as_str(), d.size, d.created, false))
                    .collect())
            }
            VirtualPath::Folder(Area::Outbox, target) => {
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(me.clone()),
                        target: Some(target.clone()),
                        states: DeliveryState::RECALLABLE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                // A group fan-out is one entry: its deliveries share a name and a blob.
                let mut seen = BTreeSet::new();
                Ok(deliveries
                    .iter()
                    .filter(|d| seen.insert(d.batch_id))
                    .map(|d| file_entry(d.name.as_str(), d.size, d.created, true))
                    .collect())
            }
            VirtualPath::Folder(Area::Sent, recipient) => {
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(me.clone()),
                        recipient: Some(recipient.clone()),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                Ok(deliveries
                    .iter()
                    .map(|d| {
                        file_entry(
                            &receipt_name(d),
                            receipt_text(d).len() as u64,
                            d.updated,
                            false,
                        )
                    })
                    .collect())
            }
            VirtualPath::File(..) => Err(CoreError::new(
                ErrorKind::NotFound,
                "not a folder: this is a file",
            )),
        }
    }

    /// Folders cannot be created: the tree is fixed.
    pub fn make_dir(&self, path: &VirtualPath) -> Result<()> {
        Err(CoreError::denied(format!(
            "cannot create {path}: the tree is fixed (write files into /outbox/<recipient>/)"
        )))
    }

    /// Links cannot be created: the tree has no links.
    pub fn make_link(&self, path: &VirtualPath) -> Result<()> {
        Err(CoreError::denied(format!(
            "cannot create a link at {path}: links are not supported"
        )))
    }

    // ----- downloads -------------------------------------------------------------------------

    /// Opens an inbox file or a receipt for reading.
    pub async fn open_read(
        &self,
        session: &ClientSession,
        path: &VirtualPath,
    ) -> Result<ReadHandle> {
        match path {
            VirtualPath::File(Area::Inbox, sender, name) => {
                // The delivery and, for a small blob, its content (small blobs live in the
                // metadata store: one WAL fsync made them durable) in one lookup.
                let query = visible_query(session, Area::Inbox, sender, name)?;
                let (delivery, inline) = self
                    .meta
                    .first_delivery_with_content(&query)
                    .await?
                    .ok_or_else(|| no_such_file(Area::Inbox, sender, name))?;
                let source = match inline {
                    Some(content) => ReadSource::Memory(content),
                    None => ReadSource::Blob(self.blobs.open(&delivery.blob_id).await?),
                };
                Ok(ReadHandle {
                    path: path.clone(),
                    size: delivery.size,
                    source,
                    delivery: Some(delivery),
                    covered: Mutex::new(Coverage::default()),
                })
            }
            VirtualPath::File(Area::Sent, recipient, entry) => {
                let delivery = self.receipt(session, recipient, entry).await?;
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

    /// Ends a download: accounts for it and, the first time a delivery was read completely,
    /// marks it picked up.
    pub async fn close_read(&self, session: &ClientSession, handle: ReadHandle) -> Result<()> {
        let Some(delivery) = handle.delivery else {
            return Ok(());
        };
        let bytes = handle
            .covered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .covers(delivery.size);
        let complete = bytes >= delivery.size;
        let actor = session.actor();
        let download = self.event(
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
        if complete && delivery.state == DeliveryState::Delivered {
            let picked_up = self.delivery_event(&actor, EventKind::DeliveryPickedUp, &delivery);
            let moved = self
                .meta
                .transition(
                    &delivery.id,
                    &[DeliveryState::Delivered],
                    DeliveryState::PickedUp,
                    &[download.clone(), picked_up],
                    Durability::Relaxed,
                )
                .await?;
            if moved {
                return Ok(());
            }
        }
        self.meta.record(&[download], Durability::Relaxed).await
    }

    // ----- uploads ---------------------------------------------------------------------------

    /// Starts an upload to `/outbox/<recipient-or-group>/<name>`. The route is checked before a
    /// byte is stored.
    pub async fn begin_upload(
        &self,
        session: &ClientSession,
        path: &VirtualPath,
    ) -> Result<Upload> {
        let result = self.begin_upload_inner(session, path).await;
        if let Err(err) = &result {
            self.record_refusal(session, EventKind::Upload, path, err)
                .await;
        }
        result
    }

    async fn begin_upload_inner(
        &self,
        session: &ClientSession,
        path: &VirtualPath,
    ) -> Result<Upload> {
        let VirtualPath::File(Area::Outbox, target, name) = path else {
            return Err(match path {
                VirtualPath::File(Area::Inbox, ..) => CoreError::denied(
                    "the inbox is read-only: write to /outbox/<recipient>/ to send",
                ),
                VirtualPath::File(Area::Sent, ..) => CoreError::denied("receipts are read-only"),
                _ => CoreError::denied(format!("{path} is a folder, not a file")),
            });
        };
        self.begin_targets(session, std::slice::from_ref(target), name, path.clone())
            .await
    }

    /// Starts one upload named `name` to several accounts or groups at once (the HTTPS API's
    /// send): each target is checked as [`Hub::begin_upload`] checks its one, and any refusal
    /// refuses the whole upload. An account reached through several targets receives one
    /// delivery. The deliveries share one name, free between the sender and every recipient.
    pub async fn begin_send(
        &self,
        session: &ClientSession,
        targets: &[AccountName],
        name: &FileName,
    ) -> Result<Upload> {
        let Some(first) = targets.first() else {
            return Err(CoreError::invalid("name at least one recipient"));
        };
        let path = VirtualPath::File(Area::Outbox, first.clone(), name.clone());
        let result = if targets.len() > MAX_TARGETS {
            Err(CoreError::invalid(format!(
                "at most {MAX_TARGETS} recipients per upload"
            )))
        } else {
            self.begin_targets(session, targets, name, path.clone())
                .await
        };
        if let Err(err) = &result {
            self.record_refusal_of(
                session,
                EventKind::Upload,
                outbox_object(targets, name.as_str()),
                err,
            )
            .await;
        }
        result
    }

    async fn begin_targets(
        &self,
        session: &ClientSession,
        targets: &[AccountName],
        name: &FileName,
        path: VirtualPath,
    ) -> Result<Upload> {
        let sender = self.sender(session).await?;
        if let Some(reason) = sender.access.limits.name_refusal(name.as_str()) {
            return Err(CoreError::denied(format!(
                "{} may not send this file: {reason}",
                sender.name
            )));
        }
        let mut unique_targets: Vec<AccountName> = Vec::with_capacity(targets.len());
        let mut recipients: Vec<(Account, AccountName)> = Vec::new();
        for target in targets {
            if unique_targets.contains(target) {
                continue;
            }
            unique_targets.push(target.clone());
            for account in self.recipients(&session.account, target).await? {
                if !recipients.iter().any(|(a, _)| a.name == account.name) {
                    recipients.push((account, target.clone()));
                }
            }
        }
        // Only inboxes with a quota are measured: the common case costs no query.
        let quota_recipients: Vec<&Account> = recipients
            .iter()
            .map(|(a, _)| a)
            .filter(|a| has_quota(a))
            .collect();
        let mut usages = Vec::with_capacity(quota_recipients.len());
        for recipient in &quota_recipients {
            usages.push(self.meta.inbox_usage(&recipient.name).await?);
        }
        let mailboxes = mailboxes(&quota_recipients, &usages);
        let limit = access::upload_limit(&sender.name, &sender.access.limits, &mailboxes)?;
        let quota_recipients = quota_recipients.iter().map(|a| a.name.clone()).collect();
        let writer = self.blobs.create().await?;
        Ok(Upload {
            session: session.clone(),
            path,
            targets: unique_targets,
            name: name.clone(),
            recipients: recipients
                .into_iter()
                .map(|(account, target)| (account.name, target))
                .collect(),
            expected_sha256: None,
            quota_recipients,
            limit,
            refusal: None,
            writer,
        })
    }

    /// The session's own account, checked for the right to send.
    async fn sender(&self, session: &ClientSession) -> Result<Account> {
        let account = self.session_account(session).await?;
        if !account.access.rights.send {
            return Err(CoreError::denied(format!(
                "{} may not send files",
                account.name
            )));
        }
        Ok(account)
    }

    /// The session's account as stored now (rights and limits may have changed since login).
    async fn session_account(&self, session: &ClientSession) -> Result<Account> {
        self.meta
            .account(&session.account)
            .await?
            .ok_or_else(|| CoreError::denied(format!("{} no longer exists", session.account)))
    }

    /// Checks, just before a finished upload is committed, that the file still fits the
    /// quota of each recipient that had one when the upload opened: another upload may have
    /// filled the inbox since.
    async fn recheck_quota(&self, recipients: &[AccountName], size: u64) -> Result<()> {
        for name in recipients {
            let Some(account) = self.meta.account(name).await? else {
                continue;
            };
            let limits = &account.access.limits;
            if limits.quota_bytes.is_none() && limits.quota_files.is_none() {
                continue;
            }
            let usage = self.meta.inbox_usage(name).await?;
            Mailbox {
                account: name,
                limits,
                usage,
            }
            .admit(size)?;
        }
        Ok(())
    }

    /// Completes an upload: makes the blob durable, then commits one delivery per recipient
    /// with a name free between sender and each recipient. Only when this returns Ok may the
    /// client be told the file is stored.
    pub async fn finish_upload(&self, upload: Upload) -> Result<Vec<Delivery>> {
        // Route policy was decided when the upload started: a file that was allowed when its
        // first byte was accepted is delivered, like a letter posted before a rule changed.
        let Upload {
            session,
            path: _,
            targets,
            name,
            recipients,
            expected_sha256,
            quota_recipients,
            limit: _,
            refusal,
            writer,
        } = upload;
        let object = |name: &FileName| outbox_object(&targets, name.as_str());
        // The quota is checked again before the blob is made durable. Two uploads closing at
        // the same instant can still both pass this check; the window is one commit long.
        let refused = match refusal {
            Some(err) => Err(err),
            None => self.recheck_quota(&quota_recipients, writer.size()).await,
        };
        if let Err(err) = refused {
            writer.abort().await;
            self.record_refusal_of(&session, EventKind::Upload, object(&name), &err)
                .await;
            return Err(err);
        }
        let blob = writer.commit().await?;
        if let Some(expected) = expected_sha256
            && expected != blob.sha256
        {
            // Durable but referenced by nothing: removed now (or by the next sweep).
            if blob.inline.is_none() {
                let _ = self.blobs.delete(&blob.id).await;
            }
            let err = CoreError::conflict(format!(
                "the content's SHA-256 is {}, not {expected}: nothing was delivered",
                blob.sha256
            ));
            self.record_refusal_of(&session, EventKind::Upload, object(&name), &err)
                .await;
            return Err(err);
        }
        let recipient_names: Vec<AccountName> = recipients.iter().map(|(r, _)| r.clone()).collect();
        let actor = session.actor();
        let mut suffix = 1;
        loop {
            let candidate = self
                .free_name(
                    &session.account,
                    &targets,
                    &recipient_names,
                    &name,
                    &mut suffix,
                )
                .await;
            let candidate = match candidate {
                Ok(candidate) => candidate,
                Err(err) => {
                    self.blobs.delete(&blob.id).await?;
                    return Err(err);
                }
            };
            let now = self.clock.now();
            let batch_id = DeliveryId::new();
            let deliveries: Vec<Delivery> = recipients
                .iter()
                .map(|(recipient, target)| Delivery {
                    id: DeliveryId::new(),
                    batch_id,
                    sender: session.account.clone(),
                    recipient: recipient.clone(),
                    target: target.clone(),
                    name: candidate.clone(),
                    size: blob.size,
                    sha256: blob.sha256.clone(),
                    blob_id: blob.id.clone(),
                    state: DeliveryState::Delivered,
                    created: now,
                    updated: now,
                })
                .collect();
            let mut events = vec![self.event(
                &actor,
                EventKind::Upload,
                object(&candidate),
                Outcome::Ok,
                format!(
                    "batch {batch_id} {} bytes sha256 {} to {} recipient(s)",
                    blob.size,
                    blob.sha256,
                    deliveries.len()
                ),
            )];
            for delivery in &deliveries {
                events.push(self.delivery_event(&actor, EventKind::DeliveryStored, delivery));
                events.push(self.delivery_event(&actor, EventKind::DeliveryDelivered, delivery));
            }
            let inline = blob.inline.as_deref().map(|content| (&blob.id, content));
            match self
                .meta
                .insert_deliveries(&deliveries, &events, inline)
                .await
            {
                Ok(()) => return Ok(deliveries),
                // Another upload took the name between our check and our commit: next suffix.
                Err(err) if err.kind() == ErrorKind::Conflict && suffix < MAX_SUFFIX => {
                    suffix += 1;
                }
                Err(err) => {
                    // The blob is durable but no delivery references it: remove it now (the
                    // start-up sweep would otherwise).
                    let _ = self.blobs.delete(&blob.id).await;
                    return Err(err);
                }
            }
        }
    }

    /// Abandons an upload (connection dropped, client closed early); nothing becomes visible.
    pub async fn abort_upload(&self, upload: Upload, reason: &str) {
        // A write refused for a limit is a refusal, not a failure, and says which limit.
        let (outcome, detail) = match &upload.refusal {
            Some(err) => (
                Outcome::Refused,
                format!(
                    "{}: {} ({reason}; {} bytes accepted, nothing delivered)",
                    err.kind(),
                    err.message(),
                    upload.size()
                ),
            ),
            None => (
                Outcome::Failed,
                format!("{reason} after {} bytes; nothing delivered", upload.size()),
            ),
        };
        let event = self.event(
            &upload.session.actor(),
            EventKind::Upload,
            outbox_object(&upload.targets, upload.name.as_str()),
            outcome,
            detail,
        );
        upload.writer.abort().await;
        if let Err(err) = self.meta.record(&[event], Durability::Relaxed).await {
            tracing::warn!(error = %err, "could not record an aborted upload");
        }
    }

    /// Picks the first name (`name`, `name~2`, …) that is free between the sender and every
    /// recipient and, for a group, among the sender's pending fan-outs to that group.
    async fn free_name(
        &self,
        sender: &AccountName,
        targets: &[AccountName],
        recipients: &[AccountName],
        name: &FileName,
        suffix: &mut u32,
    ) -> Result<FileName> {
        while *suffix <= MAX_SUFFIX {
            let candidate = if *suffix == 1 {
                name.clone()
            } else {
                name.with_suffix(*suffix)
            };
            let taken = self
                .meta
                .deliveries(&DeliveryQuery {
                    sender: Some(sender.clone()),
                    name: Some(candidate.clone()),
                    states: DeliveryState::LIVE.to_vec(),
                    ..DeliveryQuery::default()
                })
                .await?
                .iter()
                .any(|d| recipients.contains(&d.recipient) || targets.contains(&d.target));
            if !taken {
                return Ok(candidate);
            }
            *suffix += 1;
        }
        Err(CoreError::conflict(format!(
            "too many deliveries named {name} are pending; remove some first"
        )))
    }

    /// The accounts an upload to `target` reaches, after route policy and the recipients'
    /// right to receive.
    ///
    /// A group member who may not receive refuses the whole upload, naming the member:
    /// skipping it silently would tell the sender the group got the file when part of it did
    /// not. (Members denied by route policy, disabled or admin are skipped, as before: the
    /// sender was never meant to reach them through the group.)
    async fn recipients(&self, sender: &AccountName, target: &AccountName) -> Result<Vec<Account>> {
        let routes = self.meta.routes().await?;
        let groups = self.meta.groups().await?;
        let decision = policy::decide(&routes, &groups, sender, target);
        if let Some(group) = groups.iter().find(|g| &g.name == target) {
            if decision != Decision::Allowed {
                return Err(route_denied(sender, target));
            }
            let mut recipients = Vec::new();
            for member in group.members.iter().filter(|m| *m != sender) {
                // A member denied explicitly is skipped; so are disabled and admin accounts.
                if policy::decide(&routes, &groups, sender, member) == Decision::Denied {
                    continue;
                }
                let Some(account) = self.meta.account(member).await? else {
                    continue;
                };
                if account.kind != AccountKind::Client || account.disabled {
                    continue;
                }
                if !account.access.rights.receive {
                    return Err(CoreError::new(
                        ErrorKind::RouteDenied,
                        format!(
                            "{member} in group {target} may not receive files; nothing was sent to the group"
                        ),
                    ));
                }
                recipients.push(account);
            }
            if recipients.is_empty() {
                return Err(CoreError::new(
                    ErrorKind::NotFound,
                    format!("group {target} has no member who can receive from you"),
                ));
            }
            return Ok(recipients);
        }
        let account = self.meta.account(target).await?;
        match account {
            Some(account) if account.kind == AccountKind::Client => {
                if decision != Decision::Allowed {
                    return Err(route_denied(sender, target));
                }
                if account.disabled {
                    return Err(CoreError::new(
                        ErrorKind::PermissionDenied,
                        format!("{target} is disabled and cannot receive files"),
                    ));
                }
                if !account.access.rights.receive {
                    return Err(CoreError::new(
                        ErrorKind::RouteDenied,
                        format!("{target} may not receive files"),
                    ));
                }
                Ok(vec![account])
            }
            _ => Err(CoreError::not_found(format!(
                "no recipient named {target}: there is no such account or group"
            ))),
        }
    }

    /// Accounts and groups the sender may write to, for the `/outbox` listing.
    async fn allowed_targets(&self, sender: &AccountName) -> Result<BTreeSet<AccountName>> {
        let routes = self.meta.routes().await?;
        let groups = self.meta.groups().await?;
        let accounts = self.meta.accounts().await?;
        let mut targets = BTreeSet::new();
        for account in accounts
            .iter()
            .filter(|a| a.kind == AccountKind::Client && !a.disabled && a.access.rights.receive)
        {
            if policy::decide(&routes, &groups, sender, &account.name) == Decision::Allowed {
                targets.insert(account.name.clone());
            }
        }
        for group in &groups {
            if policy::decide(&routes, &groups, sender, &group.name) == Decision::Allowed {
                targets.insert(group.name.clone());
            }
        }
        Ok(targets)
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

    // ----- removal and renames ---------------------------------------------------------------

    /// Deletes a file: in the inbox it acknowledges the delivery; in the outbox it recalls a
    /// delivery that is not yet picked up (every pending one of a group fan-out).
    pub async fn remove(&self, session: &ClientSession, path: &VirtualPath) -> Result<()> {
        let result = self.remove_inner(session, path).await;
        if let Err(err) = &result {
            let kind = match path {
                VirtualPath::File(Area::Outbox, ..) => EventKind::DeliveryRecalled,
                _ => EventKind::DeliveryAcknowledged,
            };
            self.record_refusal(session, kind, path, err).await;
        }
        result
    }

    async fn remove_inner(&self, session: &ClientSession, path: &VirtualPath) -> Result<()> {
        let actor = session.actor();
        match path {
            VirtualPath::File(Area::Inbox, sender, name) => {
                let account = self.session_account(session).await?;
                if !account.access.rights.delete {
                    return Err(CoreError::denied(format!(
                        "{} may not delete files from the inbox",
                        account.name
                    )));
                }
                let delivery = self
                    .visible_file(session, Area::Inbox, sender, name)
                    .await?;
                let event = self.delivery_event(&actor, EventKind::DeliveryAcknowledged, &delivery);
                let moved = self
                    .meta
                    .transition(
                        &delivery.id,
                        &DeliveryState::VISIBLE,
                        DeliveryState::Acknowledged,
                        std::slice::from_ref(&event),
                        Durability::Flush,
                    )
                    .await?;
                if !moved {
                    return Err(CoreError::not_found(format!("{path}: no such file")));
                }
                self.release_blob(&delivery).await;
                Ok(())
            }
            VirtualPath::File(Area::Outbox, target, name) => {
                let account = self.session_account(session).await?;
                if !account.access.rights.recall {
                    return Err(CoreError::denied(format!(
                        "{} may not recall files it sent",
                        account.name
                    )));
                }
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(session.account.clone()),
                        target: Some(target.clone()),
                        name: Some(name.clone()),
                        states: DeliveryState::LIVE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                if deliveries.is_empty() {
                    return Err(CoreError::not_found(format!("{path}: no such file")));
                }
                let mut recalled = 0;
                for delivery in &deliveries {
                    let event = self.delivery_event(&actor, EventKind::DeliveryRecalled, delivery);
                    if self
                        .meta
                        .transition(
                            &delivery.id,
                            &DeliveryState::RECALLABLE,
                            DeliveryState::Recalled,
                            std::slice::from_ref(&event),
                            Durability::Flush,
                        )
                        .await?
                    {
                        recalled += 1;
                        self.release_blob(delivery).await;
                    }
                }
                if recalled == 0 {
                    return Err(CoreError::conflict(format!(
                        "{path} was already picked up and can no longer be recalled"
                    )));
                }
                Ok(())
            }
            VirtualPath::File(Area::Sent, ..) => Err(CoreError::denied("receipts are read-only")),
            _ => Err(CoreError::denied(format!(
                "cannot remove {path}: the tree's folders are fixed"
            ))),
        }
    }

    /// Renames a pending delivery within one outbox folder. Nothing is ever overwritten: a
    /// taken name is refused. Renaming is sending under a new name: it needs the right to
    /// send, and the new name must pass the sender's file-name rules.
    pub async fn rename(
        &self,
        session: &ClientSession,
        from: &VirtualPath,
        to: &VirtualPath,
    ) -> Result<()> {
        let result = self.rename_inner(session, from, to).await;
        if let Err(err) = &result {
            self.record_refusal(session, EventKind::DeliveryRenamed, from, err)
                .await;
        }
        result
    }

    async fn rename_inner(
        &self,
        session: &ClientSession,
        from: &VirtualPath,
        to: &VirtualPath,
    ) -> Result<()> {
        let (
            VirtualPath::File(Area::Outbox, from_target, from_name),
            VirtualPath::File(Area::Outbox, to_target, to_name),
        ) = (from, to)
        else {
            return Err(CoreError::denied(
                "only files in an outbox folder can be renamed, within that folder",
            ));
        };
        if from_target != to_target {
            return Err(CoreError::denied(
                "a file cannot move between outbox folders: recall it and send it again",
            ));
        }
        if from_name == to_name {
            return Ok(());
        }
        let sender = self.sender(session).await?;
        if let Some(reason) = sender.access.limits.name_refusal(to_name.as_str()) {
            return Err(CoreError::denied(format!(
                "{} may not rename to {to_name}: {reason}",
                sender.name
            )));
        }
        let deliveries = self
            .meta
            .deliveries(&DeliveryQuery {
                sender: Some(session.account.clone()),
                target: Some(from_target.clone()),
                name: Some(from_name.clone()),
                states: DeliveryState::RECALLABLE.to_vec(),
                ..DeliveryQuery::default()
            })
            .await?;
        if deliveries.is_empty() {
            return Err(CoreError::not_found(format!("{from}: no such file")));
        }
        let actor = session.actor();
        for delivery in &deliveries {
            let event = self.event(
                &actor,
                EventKind::DeliveryRenamed,
                delivery.id.to_string(),
                Outcome::Ok,
                format!("{from_name} -> {to_name}"),
            );
            self.meta
                .rename_delivery(&delivery.id, to_name, &event)
                .await?;
        }
        Ok(())
    }

    /// Deletes a delivery's blob when no live delivery references it any more.
    async fn release_blob(&self, delivery: &Delivery) {
        match self.meta.blob_in_use(&delivery.blob_id).await {
            Ok(false) => {
                if let Err(err) = self.blobs.delete(&delivery.blob_id).await {
                    tracing::warn!(error = %err, blob = %delivery.blob_id, "blob not deleted; the next sweep will");
                }
            }
            Ok(true) => {}
            Err(err) => {
                tracing::warn!(error = %err, blob = %delivery.blob_id, "blob use unknown; the next sweep will decide");
            }
        }
    }

    /// A delivery the client sees at `/<area>/<folder>/<name>`.
    async fn visible_file(
        &self,
        session: &ClientSession,
        area: Area,
        folder: &AccountName,
        name: &FileName,
    ) -> Result<Delivery> {
        let query = visible_query(session, area, folder, name)?;
        self.meta
            .deliveries(&query)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| no_such_file(area, folder, name))
    }

    /// The delivery behind a receipt entry `<name>@<short id>`.
    async fn receipt(
        &self,
        session: &ClientSession,
        recipient: &AccountName,
        entry: &FileName,
    ) -> Result<Delivery> {
        let not_found =
            || CoreError::not_found(format!("/sent/{recipient}/{entry}: no such receipt"));
        let (name, short) = entry.as_str().rsplit_once('@').ok_or_else(not_found)?;
        let name = FileName::parse(name).map_err(|_| not_found())?;
        self.meta
            .deliveries(&DeliveryQuery {
                sender: Some(session.account.clone()),
                recipient: Some(recipient.clone()),
                name: Some(name),
                ..DeliveryQuery::default()
            })
            .await?
            .into_iter()
            .find(|d| d.id.short() == short)
            .ok_or_else(not_found)
    }

    // ----- administration --------------------------------------------------------------------

    /// One account.
    pub async fn account(&self, name: &AccountName) -> Result<Account> {
        self.meta
            .account(name)
            .await?
            .ok_or_else(|| CoreError::not_found(format!("no account named {name}")))
    }

    /// Every account.
    pub async fn accounts(&self) -> Result<Vec<Account>> {
        self.meta.accounts().await
    }

    /// Creates an account. A password, when given, must pass the strength rules.
    pub async fn add_account(
        &self,
        actor: &Actor,
        name: AccountName,
        kind: AccountKind,
        password: Option<Secret<String>>,
        keys: Vec<AuthorizedKey>,
    ) -> Result<Account> {
        let password_hash = match password {
            Some(password) => Some(self.hash_password(&name, password).await?),
            None => None,
        };
        let account = Account {
            name: name.clone(),
            kind,
            disabled: false,
            password_hash,
            keys,
            created: self.clock.now(),
            access: AccessPolicy::default(),
            totp: None,
            token_epoch: 0,
        };
        let event = self.admin_event(
            actor,
            format!("account {name}"),
            format!("add {}", kind.as_str()),
        );
        self.meta.insert_account(&account, &event).await?;
        Ok(account)
    }

    /// Sets a new password.
    pub async fn set_password(
        &self,
        actor: &Actor,
        name: &AccountName,
        password: Secret<String>,
    ) -> Result<()> {
        let mut account = self.account(name).await?;
        account.password_hash = Some(self.hash_password(name, password).await?);
        // A new password revokes every bearer token issued under the old one.
        account.token_epoch = account.token_epoch.saturating_add(1);
        let event = self.admin_event(actor, format!("account {name}"), "set password".to_owned());
        self.meta.update_account(&account, &event).await
    }

    /// Replaces an account's access policy (factors, networks, rights, limits) and records
    /// an admin event naming what changed. Requiring TOTP of an account that has not enrolled
    /// is refused: it could never log in again.
    pub async fn set_access(
        &self,
        actor: &Actor,
        name: &AccountName,
        access: AccessPolicy,
    ) -> Result<Account> {
        let mut account = self.account(name).await?;
        if access.factors.factors().contains(&Factor::Totp) && account.totp.is_none() {
            return Err(CoreError::conflict(format!(
                "{name} has no TOTP enrolment; enroll TOTP first: mailroom account totp enroll {name}"
            )));
        }
        let detail = describe_access_change(&account.access, &access);
        account.access = access;
        let event = self.admin_event(actor, format!("account {name}"), detail);
        self.meta.update_account(&account, &event).await?;
        Ok(account)
    }

    /// Disables or enables an account.
    pub async fn set_disabled(
        &self,
        actor: &Actor,
        name: &AccountName,
        disabled: bool,
    ) -> Result<()> {
        let mut account = self.account(name).await?;
        account.disabled = disabled;
        if disabled {
            // Disabling revokes every bearer token for good: enabling again does not revive them.
            account.token_epoch = account.token_epoch.saturating_add(1);
        }
        let what = if disabled { "disable" } else { "enable" };
        let event = self.admin_event(actor, format!("account {name}"), what.to_owned());
        self.meta.update_account(&account, &event).await
    }

    /// Adds an SSH public key to an account.
    pub async fn add_key(
        &self,
        actor: &Actor,
        name: &AccountName,
        key: AuthorizedKey,
    ) -> Result<()> {
        let mut account = self.account(name).await?;
        if account.keys.iter().any(|k| k.blob == key.blob) {
            return Err(CoreError::conflict(format!(
                "{name} already has the key {}",
                key.fingerprint()
            )));
        }
        let event = self.admin_event(
            actor,
            format!("account {name}"),
            format!("add key {}", key.fingerprint()),
        );
        account.keys.push(key);
        self.meta.update_account(&account, &event).await
    }

    /// Removes an SSH public key from an account.
    pub async fn remove_key(
        &self,
        actor: &Actor,
        name: &AccountName,
        key: &AuthorizedKey,
    ) -> Result<()> {
        let mut account = self.account(name).await?;
        let before = account.keys.len();
        account.keys.retain(|k| k.blob != key.blob);
        if account.keys.len() == before {
            return Err(CoreError::not_found(format!(
                "{name} has no key {}",
                key.fingerprint()
            )));
        }
        let event = self.admin_event(
            actor,
            format!("account {name}"),
            format!("remove key {}", key.fingerprint()),
        );
        self.meta.update_account(&account, &event).await
    }

    /// Deletes an account. Refused while live deliveries are addressed to it or sent by it,
    /// which would otherwise be lost or pass to a new account of the same name: disable the
    /// account instead.
    pub async fn delete_account(&self, actor: &Actor, name: &AccountName) -> Result<()> {
        let event = self.admin_event(actor, format!("account {name}"), "delete".to_owned());
        self.meta.delete_account(name, &event).await
    }

    /// Every group.
    pub async fn groups(&self) -> Result<Vec<Group>> {
        self.meta.groups().await
    }

    /// Creates an empty group.
    pub async fn add_group(&self, actor: &Actor, name: AccountName) -> Result<()> {
        let event = self.admin_event(actor, format!("group {name}"), "add".to_owned());
        let group = Group {
            name,
            members: Vec::new(),
        };
        self.meta.insert_group(&group, &event).await
    }

    /// Deletes a group.
    pub async fn delete_group(&self, actor: &Actor, name: &AccountName) -> Result<()> {
        let event = self.admin_event(actor, format!("group {name}"), "delete".to_owned());
        self.meta.delete_group(name, &event).await
    }

    /// Adds a client account to a group.
    pub async fn add_member(
        &self,
        actor: &Actor,
        group: &AccountName,
        member: &AccountName,
    ) -> Result<()> {
        let mut g = self.group(group).await?;
        let account = self.account(member).await?;
        if account.kind != AccountKind::Client {
            return Err(CoreError::denied(format!(
                "{member} is an admin account; only clients can be group members"
            )));
        }
        if g.members.contains(member) {
            return Err(CoreError::conflict(format!(
                "{member} is already in {group}"
            )));
        }
        g.members.push(member.clone());
        g.members.sort();
        let event = self.admin_event(
            actor,
            format!("group {group}"),
            format!("add member {member}"),
        );
        self.meta.update_group(&g, &event).await
    }

    /// Removes an account from a group.
    pub async fn remove_member(
        &self,
        actor: &Actor,
        group: &AccountName,
        member: &AccountName,
    ) -> Result<()> {
        let mut g = self.group(group).await?;
        if !g.members.contains(member) {
            return Err(CoreError::not_found(format!("{member} is not in {group}")));
        }
        g.members.retain(|m| m != member);
        let event = self.admin_event(
            actor,
            format!("group {group}"),
            format!("remove member {member}"),
        );
        self.meta.update_group(&g, &event).await
    }

    async fn group(&self, name: &AccountName) -> Result<Group> {
        self.meta
            .group(name)
            .await?
            .ok_or_else(|| CoreError::not_found(format!("no group named {name}")))
    }

    /// Every route rule.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        self.meta.routes().await
    }

    /// Allows or denies sending from `from` to `to` (accounts or groups).
    pub async fn set_route(
        &self,
        actor: &Actor,
        from: AccountName,
        to: AccountName,
        effect: RouteEffect,
    ) -> Result<()> {
        for name in [&from, &to] {
            self.principal_exists(name).await?;
        }
        let event = self.admin_event(
            actor,
            format!("route {from} -> {to}"),
            effect.as_str().to_owned(),
        );
        self.meta
            .put_route(&Route { from, to, effect }, &event)
            .await
    }

    /// Removes the rule for (from, to).
    pub async fn remove_route(
        &self,
        actor: &Actor,
        from: &AccountName,
        to: &AccountName,
    ) -> Result<()> {
        let event = self.admin_event(actor, format!("route {from} -> {to}"), "remove".to_owned());
        self.meta.delete_route(from, to, &event).await
    }

    async fn principal_exists(&self, name: &AccountName) -> Result<()> {
        match self.meta.account(name).await? {
            Some(account) if account.kind == AccountKind::Admin => Err(CoreError::denied(format!(
                "{name} is an admin account; routes are between clients and groups"
            ))),
            Some(_) => Ok(()),
            None if self.meta.group(name).await?.is_some() => Ok(()),
            None => Err(CoreError::not_found(format!(
                "no account or group named {name}"
            ))),
        }
    }

    /// Audit events, oldest first.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        self.meta.events(query).await
    }

    /// One page of the audit trail with its chain fields ([`MetaStore::audit_records`]).
    pub async fn audit_records(
        &self,
        query: &EventQuery,
        after_seq: u64,
        page: u32,
    ) -> Result<Vec<AuditRecord>> {
        self.meta.audit_records(query, after_seq, page).await
    }

    /// Walks the audit hash chain ([`MetaStore::verify_audit`]).
    pub async fn verify_audit(&self, expect: Option<Checkpoint>) -> Result<ChainReport> {
        self.meta.verify_audit(expect).await
    }

    /// The newest event of the audit chain ([`MetaStore::audit_head`]).
    pub async fn audit_head(&self) -> Result<Option<ChainHead>> {
        self.meta.audit_head().await
    }

    async fn hash_password(&self, name: &AccountName, password: Secret<String>) -> Result<String> {
        password::check_strength(&password, name.as_str())?;
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|_| CoreError::internal("password hashing failed"))?
    }

    // ----- events ----------------------------------------------------------------------------

    pub(crate) fn event(
        &self,
        actor: &Actor,
        kind: EventKind,
        object: String,
        outcome: Outcome,
        detail: String,
    ) -> Event {
        Event {
            id: Uuid::now_v7(),
            time: self.clock.now(),
            kind,
            actor: actor.name.clone(),
            source: actor.source.clone(),
            protocol: actor.protocol,
            object,
            outcome,
            detail,
        }
    }

    fn admin_event(&self, actor: &Actor, object: String, detail: String) -> Event {
        self.event(actor, EventKind::Admin, object, Outcome::Ok, detail)
    }

    fn delivery_event(&self, actor: &Actor, kind: EventKind, delivery: &Delivery) -> Event {
        self.event(
            actor,
            kind,
            delivery.id.to_string(),
            Outcome::Ok,
            format!(
                "{} -> {} {} ({} bytes)",
                delivery.sender, delivery.recipient, delivery.name, delivery.size
            ),
        )
    }

    /// Accounts for a refused client action; failures to record are logged, not raised, so
    /// the client still gets the refusal it is owed.
    async fn record_refusal(
        &self,
        session: &ClientSession,
        kind: EventKind,
        path: &VirtualPath,
        err: &CoreError,
    ) {
        self.record_refusal_of(session, kind, path.to_string(), err)
            .await;
    }

    /// Records a refused client action on `object` (a path, a delivery id).
    pub(crate) async fn record_refusal_of(
        &self,
        session: &ClientSession,
        kind: EventKind,
        object: String,
        err: &CoreError,
    ) {
        let outcome = if err.kind() == ErrorKind::Internal || err.kind() == ErrorKind::Transient {
            Outcome::Failed
        } else {
            Outcome::Refused
        };
        let event = self.event(
            &session.actor(),
            kind,
            object,
            outcome,
            format!("{}: {}", err.kind(), err.message()),
        );
        tracing::info!(event_id = %event.id, account = %session.account, object = %event.object, error = %err, "refused");
        if let Err(record_err) = self.meta.record(&[event], Durability::Relaxed).await {
            tracing::warn!(error = %record_err, "could not record a refusal");
        }
    }
}

/// One line for the audit trail naming each part of an access policy that changed, e.g.
/// `rights send,receive; quota 1.0 GiB`; `no change` when nothing did.
fn describe_access_change(old: &AccessPolicy, new: &AccessPolicy) -> String {
    fn size(value: Option<u64>) -> String {
        value.map_or_else(|| "none".to_owned(), format_size)
    }
    fn number<T: ToString>(value: Option<T>) -> String {
        value.map_or_else(|| "none".to_owned(), |v| v.to_string())
    }
    fn globs(globs: &[String], empty: &str) -> String {
        if globs.is_empty() {
            empty.to_owned()
        } else {
            globs.join(",")
        }
    }
    let mut parts = Vec::new();
    if old.factors != new.factors {
        parts.push(format!("require {}", new.factors));
    }
    if old.networks != new.networks {
        let networks: Vec<String> = new.networks.iter().map(|n| n.to_string()).collect();
        parts.push(format!(
            "networks {}",
            if networks.is_empty() {
                "any".to_owned()
            } else {
                networks.join(",")
            }
        ));
    }
    if old.certificate_subject != new.certificate_subject {
        parts.push(format!(
            "certificate subject {}",
            new.certificate_subject.as_deref().unwrap_or("none")
        ));
    }
    if old.rights != new.rights {
        parts.push(format!("rights {}", new.rights));
    }
    let (old, new) = (&old.limits, &new.limits);
    if old.name_allow != new.name_allow {
        parts.push(format!("allow names {}", globs(&new.name_allow, "any")));
    }
    if old.name_deny != new.name_deny {
        parts.push(format!("deny names {}", globs(&new.name_deny, "none")));
    }
    if old.max_file_size != new.max_file_size {
        parts.push(format!("max file size {}", size(new.max_file_size)));
    }
    if old.quota_bytes != new.quota_bytes {
        parts.push(format!("quota {}", size(new.quota_bytes)));
    }
    if old.quota_files != new.quota_files {
        parts.push(format!("quota files {}", number(new.quota_files)));
    }
    if old.retention_days != new.retention_days {
        parts.push(format!(
            "retention {}",
            new.retention_days
                .map_or_else(|| "none".to_owned(), |d| format!("{d} days"))
        ));
    }
    if old.max_sessions != new.max_sessions {
        parts.push(format!("max sessions {}", number(new.max_sessions)));
    }
    if parts.is_empty() {
        "set access: no change".to_owned()
    } else {
        format!("set {}", parts.join("; "))
    }
}

/// Whether an account limits what waits in its inbox.
fn has_quota(account: &Account) -> bool {
    let limits = &account.access.limits;
    limits.quota_bytes.is_some() || limits.quota_files.is_some()
}

/// Pairs each recipient with its inbox usage, for the quota arithmetic.
fn mailboxes<'a>(recipients: &[&'a Account], usages: &[InboxUsage]) -> Vec<Mailbox<'a>> {
    recipients
        .iter()
        .zip(usages)
        .map(|(&account, usage)| Mailbox {
            account: &account.name,
            limits: &account.access.limits,
            usage: *usage,
        })
        .collect()
}

/// The event object of an upload: `/outbox/<target>/<name>`, or `/outbox/{a,b}/<name>` for
/// one sent to several targets at once.
fn outbox_object(targets: &[AccountName], name: &str) -> String {
    match targets {
        [one] => format!("/outbox/{one}/{name}"),
        many => {
            let list: Vec<&str> = many.iter().map(AccountName::as_str).collect();
            format!("/outbox/{{{}}}/{name}", list.join(","))
        }
    }
}

fn route_denied(sender: &AccountName, target: &AccountName) -> CoreError {
    CoreError::new(
        ErrorKind::RouteDenied,
        format!("{sender} may not send to {target}: no route allows it"),
    )
}

fn file_entry(name: &str, size: u64, modified: OffsetDateTime, writable: bool) -> Entry {
    Entry {
        name: name.to_owned(),
        is_dir: false,
        size,
        modified,
        writable,
    }
}

/// The entry name of a receipt: `<name>@<short id>`.
fn receipt_name(delivery: &Delivery) -> String {
    format!("{}@{}", delivery.name, delivery.id.short())
}

/// The text of a receipt, one `key: value` per line.
fn receipt_text(delivery: &Delivery) -> String {
    let time = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    format!(
        "delivery: {}\nsender: {}\nrecipient: {}\nvia: {}\nname: {}\nsize: {}\nsha256: {}\nstate: {}\ncreated: {}\nupdated: {}\n",
        delivery.id,
        delivery.sender,
        delivery.recipient,
        delivery.target,
        delivery.name,
        delivery.size,
        delivery.sha256,
        delivery.state.as_str(),
        time(delivery.created),
        time(delivery.updated),
    )
}

/// A user name from the wire, made safe to store and print: control characters replaced,
/// length capped.
pub(crate) fn printable(user: &str) -> String {
    user.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The query for the file `/<area>/<folder>/<name>` as `session`'s account sees it: in its
/// inbox, a visible delivery from `folder`; in its outbox, a recallable one to `folder`.
fn visible_query(
    session: &ClientSession,
    area: Area,
    folder: &AccountName,
    name: &FileName,
) -> Result<DeliveryQuery> {
    let me = session.account.clone();
    match area {
        Area::Inbox => Ok(DeliveryQuery {
            recipient: Some(me),
            sender: Some(folder.clone()),
            name: Some(name.clone()),
            states: DeliveryState::VISIBLE.to_vec(),
            ..DeliveryQuery::default()
        }),
        Area::Outbox => Ok(DeliveryQuery {
            sender: Some(me),
            target: Some(folder.clone()),
            name: Some(name.clone()),
            states: DeliveryState::RECALLABLE.to_vec(),
            ..DeliveryQuery::default()
        }),
        Area::Sent => Err(CoreError::internal("receipts are not deliveries")),
    }
}

/// The NotFound for a file path that names no delivery.
fn no_such_file(area: Area, folder: &AccountName, name: &FileName) -> CoreError {
    CoreError::not_found(format!("/{}/{folder}/{name}: no such file", area.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_changes_are_described() {
        let old = AccessPolicy::default();
        assert_eq!(describe_access_change(&old, &old), "set access: no change");
        let mut new = old.clone();
        new.rights = crate::access::Rights::parse("send,receive").unwrap();
        new.limits.quota_bytes = Some(1 << 30);
        new.limits.retention_days = Some(30);
        new.limits.name_deny = vec!["*.exe".into()];
        assert_eq!(
            describe_access_change(&old, &new),
            "set rights send,receive; deny names *.exe; quota 1.0 GiB; retention 30 days"
        );
        assert_eq!(
            describe_access_change(&new, &old),
            "set rights send,receive,delete,recall; deny names none; quota none; retention none"
        );
    }

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
