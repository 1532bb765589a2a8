//! The ports the service needs from the outside world: metadata, blobs and time.
//!
//! Adapters implement them (`mailroom-meta`, `mailroom-blob`); the binary picks which. Every
//! method that changes state takes the audit events that describe the change, and the
//! metadata store commits both in one transaction, so an event exists exactly when its change
//! does.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::access::{Ban, BanSubject};
use crate::audit::{AuditRecord, ChainHead, ChainReport, Checkpoint};
use crate::error::Result;
use crate::hub::TokenRecord;
use crate::model::{
    Account, BlobId, Delivery, DeliveryId, DeliveryState, Event, EventKind, Group, Outcome, Route,
};
use crate::names::{AccountName, FileName};

/// Which deliveries to fetch. Every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// Sent by this account.
    pub sender: Option<AccountName>,
    /// Addressed to this account.
    pub recipient: Option<AccountName>,
    /// Written to this outbox folder (recipient or group).
    pub target: Option<AccountName>,
    /// With this visible name.
    pub name: Option<FileName>,
    /// In one of these states; empty means any state.
    pub states: Vec<DeliveryState>,
    /// Created before this time.
    pub created_before: Option<OffsetDateTime>,
}

/// What waits in one inbox: the live deliveries addressed to an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxUsage {
    /// Their total size in bytes.
    pub bytes: u64,
    /// How many there are.
    pub files: u64,
}

/// How durable a write must be when the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On stable storage: survives a crash of the machine. Deliveries, acknowledgements,
    /// recalls and admin changes.
    Flush,
    /// Survives a crash of the process at once, and a crash of the machine once the next
    /// flushed write commits (they share one log). For accounting that must not cost an
    /// `fsync` per item: logins, downloads, refusals, pick-up marks.
    Relaxed,
}

/// Which audit events to fetch.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events by this actor.
    pub actor: Option<String>,
    /// Only events of this kind.
    pub kind: Option<EventKind>,
    /// Only events with this outcome.
    pub outcome: Option<Outcome>,
    /// Only events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
    /// Only events from this peer: a source as recorded (`203.0.113.9:50022`), or an IP
    /// address alone (`203.0.113.9`, `2001:db8::1`), which matches it on any port.
    pub source: Option<String>,
    /// At most this many, the newest ones; `None` for all.
    pub limit: Option<u32>,
}

/// Accounts, groups, routes, deliveries and the audit trail.
///
/// Errors: a name already taken by an account or a group, or a live delivery name taken, is
/// [`crate::ErrorKind::Conflict`]; a missing object is [`crate::ErrorKind::NotFound`]; a busy
/// or unreachable database is [`crate::ErrorKind::Transient`].
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// One account with its keys.
    async fn account(&self, name: &AccountName) -> Result<Option<Account>>;
    /// Every account with its keys, by name.
    async fn accounts(&self) -> Result<Vec<Account>>;
    /// Adds an account. Conflict if an account or a group has the name.
    async fn insert_account(&self, account: &Account, event: &Event) -> Result<()>;
    /// Stores the account's mutable fields (disabled, password hash, keys). NotFound if absent.
    async fn update_account(&self, account: &Account, event: &Event) -> Result<()>;
    /// Removes an account, its keys, its group memberships and the routes that name it.
    /// NotFound if absent; Conflict, checked in the same transaction, while a live delivery
    /// is addressed to it or sent by it.
    async fn delete_account(&self, name: &AccountName, event: &Event) -> Result<()>;

    /// One group with its members.
    async fn group(&self, name: &AccountName) -> Result<Option<Group>>;
    /// Every group with its members, by name.
    async fn groups(&self) -> Result<Vec<Group>>;
    /// Adds a group. Conflict if an account or a group has the name.
    async fn insert_group(&self, group: &Group, event: &Event) -> Result<()>;
    /// Replaces the group's member list. NotFound if absent.
    async fn update_group(&self, group: &Group, event: &Event) -> Result<()>;
    /// Removes a group and the routes that name it. NotFound if absent.
    async fn delete_group(&self, name: &AccountName, event: &Event) -> Result<()>;

    /// Every route rule, by (from, to).
    async fn routes(&self) -> Result<Vec<Route>>;
    /// Adds the rule for (from, to), replacing an earlier rule for the same pair.
    async fn put_route(&self, route: &Route, event: &Event) -> Result<()>;
    /// Removes the rule for (from, to). NotFound if absent.
    async fn delete_route(&self, from: &AccountName, to: &AccountName, event: &Event)
    -> Result<()>;

    /// Adds deliveries with their events, all or nothing, durably. Conflict if one would share
    /// its (recipient, sender, name) with a live delivery. `inline` is the content of a small
    /// blob the blob store kept in memory ([`StoredBlob::inline`]): it is stored in the same
    /// transaction and kept while a live delivery references its blob id.
    async fn insert_deliveries(
        &self,
        deliveries: &[Delivery],
        events: &[Event],
        inline: Option<(&BlobId, &[u8])>,
    ) -> Result<()>;
    /// The content of a blob kept in the metadata store, if this blob is one.
    async fn inline_blob(&self, blob_id: &BlobId) -> Result<Option<Vec<u8>>>;
    /// One delivery by id.
    async fn delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>>;
    /// Deliveries matching the query, oldest first.
    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>>;
    /// The oldest delivery matching the query, with its blob's content when the blob is kept
    /// in the metadata store (as [`MetaStore::inline_blob`] would return it), in one lookup:
    /// what opening a file for reading needs.
    async fn first_delivery_with_content(
        &self,
        query: &DeliveryQuery,
    ) -> Result<Option<(Delivery, Option<Vec<u8>>)>>;
    /// Moves a delivery to `to` if it is in one of `from`, recording `events` only then.
    /// Returns whether it moved. When a move leaves no live delivery on an inline blob, its
    /// content is deleted in the same transaction.
    async fn transition(
        &self,
        id: &DeliveryId,
        from: &[DeliveryState],
        to: DeliveryState,
        events: &[Event],
        durability: Durability,
    ) -> Result<bool>;
    /// Renames a live delivery. Conflict if the name is taken between the same sender and
    /// recipient; NotFound if the delivery is not live.
    async fn rename_delivery(&self, id: &DeliveryId, name: &FileName, event: &Event) -> Result<()>;
    /// Blob ids referenced by at least one delivery in a live state.
    async fn live_blobs(&self) -> Result<HashSet<BlobId>>;
    /// Whether any delivery in a live state references the blob.
    async fn blob_in_use(&self, blob_id: &BlobId) -> Result<bool>;

    /// The bytes and files of the live deliveries addressed to `recipient`.
    async fn inbox_usage(&self, recipient: &AccountName) -> Result<InboxUsage>;

    /// Marks TOTP step `step` used for the account if it is later than the last used step,
    /// atomically; returns whether it was (false: replayed or older code, or no enrolment).
    async fn use_totp_step(&self, name: &AccountName, step: u64) -> Result<bool>;
    /// Removes one unused recovery code (by its hash) from the account's enrolment,
    /// atomically; returns whether it was there.
    async fn use_recovery_code(&self, name: &AccountName, code_hash: &str) -> Result<bool>;

    /// Every ban, active or ended, by subject.
    async fn bans(&self) -> Result<Vec<Ban>>;
    /// The ban of one subject, active or ended.
    async fn ban(&self, subject: &BanSubject) -> Result<Option<Ban>>;
    /// Places or replaces the ban of its subject, with its event, durably.
    async fn put_ban(&self, ban: &Ban, event: &Event) -> Result<()>;
    /// Removes the ban of `subject` (its history too). NotFound if there is none.
    async fn delete_ban(&self, subject: &BanSubject, event: &Event) -> Result<()>;

    /// Records events that describe no stored change (logins, refusals).
    async fn record(&self, events: &[Event], durability: Durability) -> Result<()>;
    /// Events matching the query, oldest first.
    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>>;

    /// One page of the audit trail with its chain fields: the events matching `query` whose
    /// `seq` is above `after_seq`, oldest first, at most `page` of them (`query.limit` is not
    /// used). Pass the last `seq` of a page to get the next, until a page comes back empty.
    async fn audit_records(
        &self,
        query: &EventQuery,
        after_seq: u64,
        page: u32,
    ) -> Result<Vec<AuditRecord>>;
    /// Walks the whole hash chain in `seq` order, in pages, and reports the events checked,
    /// the head and the first bad event; with `expect`, also whether that earlier checkpoint
    /// is still on the chain. A broken chain is a report, not an error.
    async fn verify_audit(&self, expect: Option<Checkpoint>) -> Result<ChainReport>;
    /// The newest event of the chain, without verifying it; `None` while no chained event
    /// exists.
    async fn audit_head(&self) -> Result<Option<ChainHead>>;

    /// Stores bearer tokens (their hashes), all or nothing. Conflict if a hash is taken.
    async fn insert_tokens(&self, tokens: &[TokenRecord]) -> Result<()>;
    /// One token by its hash.
    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Removes one token by its hash and returns it, atomically: of two callers racing with
    /// one token, one gets it and the other `None`.
    async fn take_token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Deletes every token of one login, with `event` when given, in one transaction; returns
    /// how many were deleted.
    async fn delete_token_session(&self, session: &str, event: Option<&Event>) -> Result<u64>;
    /// Deletes the tokens expired at `now`; returns how many, and the logins left with none.
    async fn delete_expired_tokens(&self, now: OffsetDateTime) -> Result<(u64, Vec<String>)>;
}

/// A committed blob: durable under `id`, or, when `inline` holds its content, to be made
/// durable by the metadata store together with the deliveries that reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its id.
    pub id: BlobId,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content, lower-case hex.
    pub sha256: String,
    /// The content of a small blob the blob store did not write to storage.
    pub inline: Option<Vec<u8>>,
}

/// What a start-up sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Staging files of uploads that never completed.
    pub staging_removed: u64,
    /// Committed blobs that no live delivery references.
    pub orphans_removed: u64,
}

/// Content storage: write-once blobs under server-made ids.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts a new blob in a staging area; nothing is visible until [`BlobWriter::commit`].
    async fn create(&self) -> Result<Box<dyn BlobWriter>>;
    /// Opens a committed blob for reading. NotFound if absent.
    async fn open(&self, id: &BlobId) -> Result<Arc<dyn BlobReader>>;
    /// Deletes a committed blob; a missing blob is not an error.
    async fn delete(&self, id: &BlobId) -> Result<()>;
    /// Removes every staging file and every committed blob not in `live`. Call it only while
    /// no upload is under way (at start, before serving).
    async fn sweep(&self, live: &HashSet<BlobId>) -> Result<SweepReport>;
}

/// A blob being written. Dropping it without `commit` leaves a staging file that the next
/// sweep removes; call `abort` to remove it at once.
#[async_trait]
pub trait BlobWriter: Send + Sync {
    /// Writes `data` at `offset`. In-order writes are hashed as they stream; out-of-order ones
    /// are allowed and make `commit` hash the file once more.
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// The size written so far (highest offset + length).
    fn size(&self) -> u64;
    /// Makes the blob durable (data synced, renamed into place, directory synced) and returns
    /// its id, size and SHA-256; or, for a small blob the store keeps in memory, returns its
    /// content in [`StoredBlob::inline`] for the metadata store to keep. Only after this
    /// returns may a delivery reference it.
    async fn commit(self: Box<Self>) -> Result<StoredBlob>;
    /// Discards the staging file.
    async fn abort(self: Box<Self>);
}

/// A committed blob open for reading.
#[async_trait]
pub trait BlobReader: Send + Sync {
    /// Its size in bytes.
    fn size(&self) -> u64;
    /// Reads up to `len` bytes at `offset`; an empty result means end of file.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
}

/// The source of time, so tests can hold the clock.
pub trait Clock: Send + Sync + 'static {
    /// The current time in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
