//! Uploads: where a file may go (route policy, rights, name rules, sizes and quotas), the
//! upload in progress, and its commit as one delivery per recipient.

use std::collections::BTreeSet;

use super::policy_cache::{AccountPolicy, Policy};
use super::{Actor, ClientSession, Hub};
use crate::access::{self, ByteLimit, Limits, Mailbox};
use crate::error::{CoreError, ErrorKind, Result};
use crate::model::{AccountKind, Delivery, DeliveryId, DeliveryState, EventKind, Outcome};
use crate::names::{AccountName, FileName};
use crate::path::{Area, VirtualPath};
use crate::policy::Decision;
use crate::ports::{BlobWriter, DeliveryQuery, Durability, StoredBlob, Tx};

/// How many collision suffixes to try before giving up on a name.
const MAX_SUFFIX: u32 = 10_000;

/// What every age v1 file begins with: the first line of its header.
const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

/// What a client says it is sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// The file itself (every protocol; the hub may scan it).
    Plain,
    /// Age ciphertext the sender's agent made for every recipient's end-to-end keys: each
    /// recipient must have a key, the content must begin as an age file, and the hub
    /// delivers it unscanned, marked end-to-end encrypted.
    EndToEnd,
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
    /// Plain, or end-to-end encrypted.
    content: Content,
    /// The first bytes written in order (up to the age header's length), kept to check that
    /// end-to-end content is an age file.
    head: Vec<u8>,
    /// Set for an upload taken up after a restart with bytes already staged: its first bytes
    /// were checked by no one this process knows of, and are not checked again.
    head_unknown: bool,
    /// The id of the resumable upload it is, whose record the commit removes with the
    /// deliveries it makes.
    resumable: Option<String>,
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
        if self.content == Content::EndToEnd
            && offset == self.head.len() as u64
            && self.head.len() < AGE_HEADER.len()
        {
            let take = (AGE_HEADER.len() - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
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

    /// Plain, or end-to-end encrypted.
    pub fn content(&self) -> Content {
        self.content
    }

    /// Where the blob store stages it, for a resume after a restart.
    pub(super) fn staging_id(&self) -> Option<crate::model::BlobId> {
        self.writer.staging_id()
    }

    /// Makes it the resumable upload `id`, whose record the commit removes.
    pub(super) fn set_resumable(&mut self, id: String) {
        self.resumable = Some(id);
        // Taken up after a restart, it may hold bytes this process never saw.
        self.head_unknown = self.size() > 0;
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

impl Hub {
    // ----- uploads ---------------------------------------------------------------------------

    /// Starts an upload to `/outbox/<recipient-or-group>/<name>`. The route is checked before a
    /// byte is stored.
    pub async fn begin_upload(
        &self,
        session: &ClientSession,
        path: &VirtualPath,
    ) -> Result<Upload> {
        self.file_operation();
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
        self.begin_targets(
            session,
            std::slice::from_ref(target),
            name,
            path.clone(),
            Content::Plain,
            None,
        )
        .await
    }

    /// Starts one upload named `name` to several accounts or groups at once (the HTTPS API's
    /// send): each target is checked as [`Hub::begin_upload`] checks its one, and any refusal
    /// refuses the whole upload. An account reached through several targets receives one
    /// delivery. The deliveries share one name, free between the sender and every recipient.
    /// `content` says whether the client sends the file or age ciphertext of it
    /// ([`Content`]).
    pub async fn begin_send(
        &self,
        session: &ClientSession,
        targets: &[AccountName],
        name: &FileName,
        content: Content,
    ) -> Result<Upload> {
        self.file_operation();
        let Some(first) = targets.first() else {
            return Err(CoreError::invalid("name at least one recipient"));
        };
        let path = VirtualPath::File(Area::Outbox, first.clone(), name.clone());
        let result = if targets.len() > MAX_TARGETS {
            Err(CoreError::invalid(format!(
                "at most {MAX_TARGETS} recipients per upload"
            )))
        } else {
            self.begin_targets(session, targets, name, path.clone(), content, None)
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

    pub(super) async fn begin_targets(
        &self,
        session: &ClientSession,
        targets: &[AccountName],
        name: &FileName,
        path: VirtualPath,
        content: Content,
        resumed: Option<Box<dyn BlobWriter>>,
    ) -> Result<Upload> {
        let cache = self.policy.clone();
        let sender = session.account.clone();
        let wanted = targets.to_vec();
        let file_name = name.clone();
        let plan = self
            .read_short(move |tx| {
                let policy = cache.get(tx)?;
                plan_upload(tx, &policy, &sender, &wanted, &file_name, content)
            })
            .await?;
        if self.stamp.rules.watches(EventKind::TransferStarted) {
            let to: Vec<&str> = plan.targets.iter().map(AccountName::as_str).collect();
            let event = self.stamp.event(
                &session.actor(),
                EventKind::TransferStarted,
                path.to_string(),
                Outcome::Ok,
                format!("{} -> {} {name}", session.account, to.join(", ")),
            );
            // Accounting, like a login's: the upload goes on if it cannot be recorded.
            if let Err(err) = self.record(vec![event], Durability::Relaxed).await {
                tracing::warn!(error = %err, "could not record a transfer's start");
            }
        }
        let writer = match resumed {
            Some(writer) => writer,
            None => self.blobs.create(&session.account).await?,
        };
        Ok(Upload {
            session: session.clone(),
            path,
            targets: plan.targets,
            name: name.clone(),
            recipients: plan.recipients,
            expected_sha256: None,
            quota_recipients: plan.quota_recipients,
            limit: plan.limit,
            refusal: None,
            content,
            head: Vec::new(),
            head_unknown: false,
            resumable: None,
            writer,
        })
    }

    /// Completes an upload: makes the blob durable, then commits one delivery per recipient
    /// with a name free between sender and each recipient, in one unit that also checks the
    /// recipients' quotas again. Only when this returns Ok may the client be told the file is
    /// stored.
    pub async fn finish_upload(&self, upload: Upload) -> Result<Vec<Delivery>> {
        self.file_operation();
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
            content,
            head,
            head_unknown,
            resumable,
            writer,
        } = upload;
        let e2e = content == Content::EndToEnd;
        let object = outbox_object(&targets, name.as_str());
        if let Some(err) = refusal {
            writer.abort().await;
            self.record_refusal_of(&session, EventKind::Upload, object, &err)
                .await;
            return Err(err);
        }
        if e2e && !head_unknown && head != AGE_HEADER {
            writer.abort().await;
            let err = CoreError::invalid(
                "an end-to-end encrypted upload must be an age file \
                 (age-encryption.org/v1): nothing was delivered",
            );
            self.record_refusal_of(&session, EventKind::Upload, object, &err)
                .await;
            return Err(err);
        }
        let blob = writer.commit().await?;
        if let Some(expected) = expected_sha256
            && expected != blob.sha256
        {
            self.discard_blob(&blob).await;
            let err = CoreError::conflict(format!(
                "the content's SHA-256 is {}, not {expected}: nothing was delivered",
                blob.sha256
            ));
            self.record_refusal_of(&session, EventKind::Upload, object, &err)
                .await;
            return Err(err);
        }
        let cache = self.policy.clone();
        let stamp = self.stamp.clone();
        let sender = session.clone();
        let stored = blob.clone();
        // End-to-end content is delivered at once: the hub cannot read it, so there is
        // nothing to scan.
        let check = self.check && !e2e;
        let skipped_check = self.check && e2e;
        let committed = self
            .write(Durability::Flush, move |tx| {
                let policy = cache.get(tx)?;
                // The quota is checked again inside the transaction that commits: another
                // upload may have filled the inbox since this one opened. An inbox this file
                // takes across 90 % of a quota gets a `quota.warning` event.
                let mut warnings = Vec::new();
                for name in &quota_recipients {
                    let Some(account) = policy.account(name) else {
                        continue;
                    };
                    let limits = &account.access.limits;
                    if limits.quota_bytes.is_none() && limits.quota_files.is_none() {
                        continue;
                    }
                    let usage = tx.inbox_usage(name)?;
                    Mailbox {
                        account: name,
                        limits,
                        usage,
                    }
                    .admit(stored.size)?;
                    if let Some(detail) =
                        access::quota_warning(limits, usage.bytes, usage.files, stored.size)
                    {
                        warnings.push((name.clone(), detail));
                    }
                }
                let recipient_names: Vec<AccountName> =
                    recipients.iter().map(|(r, _)| r.clone()).collect();
                let free = free_name(tx, &sender.account, &targets, &recipient_names, &name)?;
                let now = stamp.now();
                let batch_id = DeliveryId::new();
                let deliveries: Vec<Delivery> = recipients
                    .iter()
                    .map(|(recipient, target)| Delivery {
                        id: DeliveryId::new(),
                        batch_id,
                        sender: sender.account.clone(),
                        recipient: recipient.clone(),
                        target: target.clone(),
                        name: free.clone(),
                        size: stored.size,
                        sha256: stored.sha256.clone(),
                        blob_id: stored.id.clone(),
                        state: if check {
                            DeliveryState::Checking
                        } else {
                            DeliveryState::Delivered
                        },
                        created: now,
                        updated: now,
                        e2e,
                    })
                    .collect();
                let actor = sender.actor();
                let mut events = vec![stamp.event(
                    &actor,
                    EventKind::Upload,
                    outbox_object(&targets, free.as_str()),
                    Outcome::Ok,
                    format!(
                        "batch {batch_id} {} bytes sha256 {} to {} recipient(s){}",
                        stored.size,
                        stored.sha256,
                        deliveries.len(),
                        match (e2e, skipped_check) {
                            (true, true) => "; end-to-end encrypted, so not scanned",
                            (true, false) => "; end-to-end encrypted",
                            (false, _) => "",
                        }
                    ),
                )];
                for delivery in &deliveries {
                    events.push(stamp.delivery(&actor, EventKind::DeliveryStored, delivery));
                    if !check {
                        events.push(stamp.delivery(&actor, EventKind::DeliveryDelivered, delivery));
                    }
                }
                for (name, detail) in warnings {
                    events.push(stamp.event(
                        &Actor::system(),
                        EventKind::QuotaWarning,
                        format!("account {name}"),
                        Outcome::Ok,
                        format!("{name}'s inbox is {detail}"),
                    ));
                }
                let inline = stored
                    .inline
                    .as_deref()
                    .map(|content| (&stored.id, content));
                tx.insert_deliveries(&deliveries, inline)?;
                if let Some(id) = &resumable {
                    tx.delete_resumable(id)?;
                }
                stamp.record(tx, &events)?;
                if check {
                    // One check for the upload, whatever its fan-out; queued whatever the
                    // queue's bound, or the deliveries would wait for ever.
                    stamp.queue_check(tx, batch_id, events[0].id)?;
                }
                Ok(deliveries)
            })
            .await;
        match committed {
            Ok(deliveries) => {
                metrics::counter!("mailroom_transfer_bytes_total", "direction" => "upload", "protocol" => session.protocol.as_str())
                    .increment(blob.size);
                Ok(deliveries)
            }
            Err(err) => {
                // The blob is durable but no delivery references it: remove it now (the
                // start-up sweep would otherwise).
                self.discard_blob(&blob).await;
                self.record_refusal_of(&session, EventKind::Upload, object, &err)
                    .await;
                Err(err)
            }
        }
    }

    /// Removes a committed blob that no delivery will reference; a failure is left to the next
    /// sweep.
    async fn discard_blob(&self, blob: &StoredBlob) {
        if blob.inline.is_none()
            && let Err(err) = self.blobs.delete(&blob.id).await
        {
            tracing::warn!(error = %err, blob = %blob.id, "blob not deleted; the next sweep will");
        }
    }

    /// Abandons an upload (connection dropped, client closed early); nothing becomes visible.
    pub async fn abort_upload(&self, upload: Upload, reason: &str) {
        self.file_operation();
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
        let event = self.stamp.event(
            &upload.session.actor(),
            EventKind::Upload,
            outbox_object(&upload.targets, upload.name.as_str()),
            outcome,
            detail,
        );
        upload.writer.abort().await;
        if let Err(err) = self.record(vec![event], Durability::Relaxed).await {
            tracing::warn!(error = %err, "could not record an aborted upload");
        }
    }
}

/// What [`Hub::begin_send`] decided before a byte is stored.
struct Plan {
    /// The targets, each once.
    targets: Vec<AccountName>,
    /// Each recipient with the target it came through.
    recipients: Vec<(AccountName, AccountName)>,
    /// The recipients with a quota, checked again at the end.
    quota_recipients: Vec<AccountName>,
    /// The most bytes the file may reach.
    limit: Option<ByteLimit>,
}

/// Decides where an upload named `name` from `sender` to `targets` goes and how big it may
/// grow: the sender's right to send and name rules, route policy and each recipient's right
/// to receive, the sender's largest file and the recipients' free quota.
fn plan_upload(
    tx: &mut dyn Tx,
    policy: &Policy,
    sender: &AccountName,
    targets: &[AccountName],
    name: &FileName,
    content: Content,
) -> Result<Plan> {
    let sender_policy = may_send(policy, sender)?;
    if let Some(reason) = sender_policy.access.limits.name_refusal(name.as_str()) {
        return Err(CoreError::denied(format!(
            "{sender} may not send this file: {reason}"
        )));
    }
    let mut unique_targets: Vec<AccountName> = Vec::with_capacity(targets.len());
    let mut recipients: Vec<(AccountName, AccountName)> = Vec::new();
    for target in targets {
        if unique_targets.contains(target) {
            continue;
        }
        unique_targets.push(target.clone());
        for account in recipients_of(policy, sender, target)? {
            if !recipients.iter().any(|(a, _)| *a == account) {
                recipients.push((account, target.clone()));
            }
        }
    }
    match content {
        // A rule requiring end-to-end encryption binds a recipient however it is reached,
        // through its own name or a group's.
        Content::Plain => {
            for (recipient, target) in &recipients {
                for to in [target, recipient] {
                    if policy.requires_e2e(sender, to) {
                        return Err(CoreError::new(
                            ErrorKind::RouteDenied,
                            format!(
                                "the route from {sender} to {to} requires end-to-end encryption: \
                                 send with the client agent's --e2e (plain content is refused)"
                            ),
                        ));
                    }
                }
            }
        }
        Content::EndToEnd => {
            let mut keyless = Vec::new();
            for (recipient, _) in &recipients {
                let keys = tx
                    .account(recipient)?
                    .map(|a| a.e2e_keys)
                    .unwrap_or_default();
                if keys.is_empty() {
                    keyless.push(recipient.as_str());
                }
            }
            if !keyless.is_empty() {
                return Err(CoreError::new(
                    ErrorKind::RouteDenied,
                    format!(
                        "cannot send end-to-end encrypted: {} {} no end-to-end key",
                        keyless.join(", "),
                        if keyless.len() == 1 { "has" } else { "have" }
                    ),
                ));
            }
        }
    }
    // Only inboxes with a quota are measured: the common case costs no query.
    let mut quota_recipients = Vec::new();
    let mut usages = Vec::new();
    for (recipient, _) in &recipients {
        if let Some(account) = policy.account(recipient)
            && has_quota(&account.access.limits)
        {
            usages.push(tx.inbox_usage(recipient)?);
            quota_recipients.push(recipient.clone());
        }
    }
    let mailboxes: Vec<Mailbox<'_>> = quota_recipients
        .iter()
        .zip(&usages)
        .filter_map(|(name, usage)| {
            policy.account(name).map(|account| Mailbox {
                account: name,
                limits: &account.access.limits,
                usage: *usage,
            })
        })
        .collect();
    let limit = access::upload_limit(sender, &sender_policy.access.limits, &mailboxes)?;
    Ok(Plan {
        targets: unique_targets,
        recipients,
        quota_recipients,
        limit,
    })
}

/// The sender's policy, if it still exists and may send.
pub(super) fn may_send<'a>(policy: &'a Policy, sender: &AccountName) -> Result<&'a AccountPolicy> {
    let account = session_policy(policy, sender)?;
    if !account.access.rights.send {
        return Err(CoreError::denied(format!("{sender} may not send files")));
    }
    Ok(account)
}

/// The session's account as the policy has it now (rights and limits may have changed since
/// login): refused when it no longer exists or is disabled. A disabled account does nothing
/// more, even in a session still open (the housekeeping closes it within seconds).
pub(super) fn session_policy<'a>(
    policy: &'a Policy,
    account: &AccountName,
) -> Result<&'a AccountPolicy> {
    match policy.account(account) {
        None => Err(CoreError::denied(format!("{account} no longer exists"))),
        Some(found) if found.disabled => Err(CoreError::denied(format!("{account} is disabled"))),
        Some(found) => Ok(found),
    }
}

/// Picks the first name (`name`, `name~2`, …) that is free between the sender and every
/// recipient and, for a group, among the sender's pending fan-outs to that group.
pub(super) fn free_name(
    tx: &mut dyn Tx,
    sender: &AccountName,
    targets: &[AccountName],
    recipients: &[AccountName],
    name: &FileName,
) -> Result<FileName> {
    for suffix in 1..=MAX_SUFFIX {
        let candidate = if suffix == 1 {
            name.clone()
        } else {
            name.with_suffix(suffix)
        };
        if !name_taken(tx, sender, targets, recipients, &candidate)? {
            return Ok(candidate);
        }
    }
    Err(CoreError::conflict(format!(
        "too many deliveries named {name} are pending; remove some first"
    )))
}

/// Whether a live delivery from `sender` holds `name` for one of `recipients` or in one of
/// the outbox folders `targets`: one exact lookup each, whatever the sender has pending.
fn name_taken(
    tx: &mut dyn Tx,
    sender: &AccountName,
    targets: &[AccountName],
    recipients: &[AccountName],
    name: &FileName,
) -> Result<bool> {
    let live = |recipient: Option<&AccountName>, target: Option<&AccountName>| DeliveryQuery {
        sender: Some(sender.clone()),
        recipient: recipient.cloned(),
        target: target.cloned(),
        name: Some(name.clone()),
        states: DeliveryState::LIVE.to_vec(),
        limit: Some(1),
        ..DeliveryQuery::default()
    };
    for recipient in recipients {
        if !tx.deliveries(&live(Some(recipient), None))?.is_empty() {
            return Ok(true);
        }
    }
    for target in targets {
        if !tx.deliveries(&live(None, Some(target)))?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The accounts an upload to `target` reaches, after route policy and the recipients' right
/// to receive.
///
/// A group member who may not receive refuses the whole upload, naming the member: skipping
/// it silently would tell the sender the group got the file when part of it did not. (Members
/// denied by route policy, disabled or admin are skipped, as before: the sender was never
/// meant to reach them through the group.)
pub(super) fn recipients_of(
    policy: &Policy,
    sender: &AccountName,
    target: &AccountName,
) -> Result<Vec<AccountName>> {
    let decision = policy.decide(sender, target);
    if let Some(group) = policy.group(target) {
        if decision != Decision::Allowed {
            return Err(route_denied(sender, target));
        }
        let mut recipients = Vec::new();
        for member in group.members.iter().filter(|m| *m != sender) {
            // A member denied explicitly is skipped; so are disabled and admin accounts.
            if policy.decide(sender, member) == Decision::Denied {
                continue;
            }
            let Some(account) = policy.account(member) else {
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
            recipients.push(member.clone());
        }
        if recipients.is_empty() {
            return Err(CoreError::new(
                ErrorKind::NotFound,
                format!("group {target} has no member who can receive from you"),
            ));
        }
        return Ok(recipients);
    }
    match policy.account(target) {
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
            Ok(vec![target.clone()])
        }
        _ => Err(CoreError::not_found(format!(
            "no recipient named {target}: there is no such account or group"
        ))),
    }
}

/// Accounts and groups the sender may write to, for the `/outbox` listing.
pub(super) fn allowed_targets(policy: &Policy, sender: &AccountName) -> BTreeSet<AccountName> {
    let mut targets = BTreeSet::new();
    for (name, account) in policy.accounts() {
        if account.kind == AccountKind::Client
            && !account.disabled
            && account.access.rights.receive
            && policy.decide(sender, name) == Decision::Allowed
        {
            targets.insert(name.clone());
        }
    }
    for group in policy.groups() {
        if policy.decide(sender, &group.name) == Decision::Allowed {
            targets.insert(group.name.clone());
        }
    }
    targets
}

/// Whether limits hold what waits in an inbox.
fn has_quota(limits: &Limits) -> bool {
    limits.quota_bytes.is_some() || limits.quota_files.is_some()
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
