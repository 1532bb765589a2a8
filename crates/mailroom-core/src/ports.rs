//! The ports the service needs from the outside world: metadata, blobs and time.
//!
//! Adapters implement them (`mailroom-meta`, `mailroom-blob`; in memory, [`crate::testing`]);
//! the binary picks which. The metadata port is shaped by operations, not by tables: each Hub
//! operation hands the store one [`Unit`] of work (its reads, its writes and the audit events
//! that describe them), and the store runs the whole unit as one transaction, in one hop to
//! wherever the database work happens. A unit that fails changes nothing. The unit itself is
//! plain synchronous code over [`Tx`], so the decisions stay in the core while the store
//! decides how the transaction is run (a writer thread with group commit on SQLite, one
//! connection per unit on a server database).

use std::any::Any;
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access::{AccessPolicy, Ban, BanSubject, TotpEnrolment};
use crate::audit::{AuditRecord, ChainHead};
use crate::error::{CoreError, Result};
use crate::hub::{ApiKeyRecord, ResumableRecord, TokenRecord};
use crate::jobs::{Job, JobCounts, JobQuery, JobState};
use crate::model::{
    Account, AuthorizedKey, BlobId, Delivery, DeliveryId, DeliveryState, E2eKey, Event, EventKind,
    Group, Outcome, Route,
};
use crate::names::{AccountName, FileName};
use crate::sessions::{LiveSessionRecord, NodeId, NodeInfo, NodeRecord};

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
    /// Of this upload (its deliveries share the batch id).
    pub batch: Option<DeliveryId>,
    /// In one of these states; empty means any state.
    pub states: Vec<DeliveryState>,
    /// Created before this time.
    pub created_before: Option<OffsetDateTime>,
    /// Whose visible name contains this text, ASCII letters matched without regard to case
    /// (`rep` finds `Report.PDF`; other letters must match exactly). Stores match it as
    /// plain text: `%` and `_` are no wildcards.
    pub name_contains: Option<String>,
    /// The order of the answer, and so which ones `offset` and `limit` take.
    pub order: DeliveryOrder,
    /// Skips this many matches first (with `limit`: one page of a listing).
    pub offset: u32,
    /// At most this many, the first ones in `order`; `None` for all.
    pub limit: Option<u32>,
}

/// The order of a delivery listing: a column, then the id to break ties, in one direction.
/// The default, oldest first, is what every query had before listings could be sorted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryOrder {
    /// The column sorted on.
    pub sort: DeliverySort,
    /// Which way.
    pub direction: SortDirection,
}

/// The column a delivery listing is sorted on. Each has an index in the SQL stores, so a
/// page is a seek, not a sort of the whole mailbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeliverySort {
    /// When it was stored.
    #[default]
    Created,
    /// The visible name (byte order).
    Name,
    /// The size in bytes.
    Size,
    /// The sending account.
    Sender,
    /// The receiving account.
    Recipient,
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortDirection {
    /// Smallest, oldest or first in the alphabet first.
    #[default]
    Ascending,
    /// Largest, newest or last in the alphabet first.
    Descending,
}

impl DeliverySort {
    /// The name used on the wire and in SQL: `date`, `name`, `size`, `sender`, `recipient`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliverySort::Created => "date",
            DeliverySort::Name => "name",
            DeliverySort::Size => "size",
            DeliverySort::Sender => "sender",
            DeliverySort::Recipient => "recipient",
        }
    }

    /// The sort named `text` ([`DeliverySort::as_str`]); `None` for anything else.
    pub fn parse(text: &str) -> Option<DeliverySort> {
        [
            DeliverySort::Created,
            DeliverySort::Name,
            DeliverySort::Size,
            DeliverySort::Sender,
            DeliverySort::Recipient,
        ]
        .into_iter()
        .find(|sort| sort.as_str() == text)
    }
}

impl SortDirection {
    /// `asc` or `desc`.
    pub fn as_str(self) -> &'static str {
        match self {
            SortDirection::Ascending => "asc",
            SortDirection::Descending => "desc",
        }
    }

    /// The direction named `text` (`asc`, `desc`); `None` for anything else.
    pub fn parse(text: &str) -> Option<SortDirection> {
        match text {
            "asc" => Some(SortDirection::Ascending),
            "desc" => Some(SortDirection::Descending),
            _ => None,
        }
    }
}

impl EventQuery {
    /// When `source` is an IP address alone, the start of every source recorded from it (on
    /// any port): `203.0.113.9:` or `[2001:db8::1]:`. `None` for anything else, which
    /// matches only a source recorded exactly so.
    pub fn any_port_prefix(source: &str) -> Option<String> {
        match source.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => Some(format!("{ip}:")),
            Ok(std::net::IpAddr::V6(ip)) => Some(format!("[{ip}]:")),
            Err(_) => None,
        }
    }
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
    /// Leave out this many of the newest first: with `limit`, one page of the trail counted
    /// from its newest end (page `n` of `limit` events skips `(n - 1) * limit`).
    pub offset: u32,
}

/// The result of a unit, boxed so that one trait method serves every operation; the Hub's
/// typed helpers put the type back.
pub type UnitOutput = Box<dyn Any + Send>;

/// One operation's work on the metadata store, run inside one transaction by
/// [`MetaStore::read`] or [`MetaStore::write`]. It must not block on anything but the
/// store: no password hashing, no blob I/O (do those before or after).
pub type Unit = Box<dyn FnOnce(&mut dyn Tx) -> Result<UnitOutput> + Send>;

/// What a store has done since it opened: the hops the Hub's operations made to it and the
/// commits and flushes they cost. The bench prints them per file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Read units run.
    pub reads: u64,
    /// Write units run (committed or not).
    pub writes: u64,
    /// Write transactions committed; with group commit several units share one.
    pub commits: u64,
    /// Commits that waited for stable storage (an `fsync` of the log).
    pub flushes: u64,
}

impl StoreStats {
    /// Units of either kind: the hops to the store.
    pub fn hops(&self) -> u64 {
        self.reads + self.writes
    }
}

/// The metadata store: accounts, groups, routes, deliveries, bans, tokens, API keys and the
/// audit trail, reached only through units of work.
///
/// Errors: a unit's own errors come back unchanged (and its writes are undone); a busy or
/// unreachable database is [`crate::ErrorKind::Transient`]; a store that is closing too.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Runs a unit that only reads, in one read transaction: every read sees one snapshot.
    /// A write inside it fails as Internal.
    async fn read(&self, unit: Unit) -> Result<UnitOutput>;
    /// [`MetaStore::read`] of a unit that reads a few rows by key (what a file operation
    /// looks up): the store may run it on the caller's own thread, sparing the two thread
    /// switches of a hop to a store thread. Never for a unit whose reads grow with the data
    /// (listings, the audit trail).
    async fn read_short(&self, unit: Unit) -> Result<UnitOutput> {
        self.read(unit).await
    }
    /// Runs a unit that may write, in one write transaction, and returns once that
    /// transaction has committed with `durability` (or the unit failed, and nothing of it
    /// was kept). Writes of one unit are never visible without each other.
    async fn write(&self, durability: Durability, unit: Unit) -> Result<UnitOutput>;
    /// What the store has done so far.
    fn stats(&self) -> StoreStats;
    /// Woken (`notify_one`) when another process may have asked this one to act: a live
    /// session asked to close, or a change of accounts, groups, routes or bans committed. A
    /// store that cannot tell (the default: `None`) is polled instead. Asking for it may start
    /// the store's listener, so only a process that acts on it (a serving node) asks.
    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// Typed units over any [`MetaStore`]: the unit returns its own type, and the boxing the port
/// needs stays here.
pub trait MetaStoreExt: MetaStore {
    /// [`MetaStore::read`] of a unit that returns a `T`.
    fn read_with<T: Send + 'static>(
        &self,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send {
        let future = self.read(boxed(unit));
        async move { unbox(future.await?) }
    }

    /// [`MetaStore::read_short`] of a unit that returns a `T`.
    fn read_short_with<T: Send + 'static>(
        &self,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send {
        let future = self.read_short(boxed(unit));
        async move { unbox(future.await?) }
    }

    /// [`MetaStore::write`] of a unit that returns a `T`.
    fn write_with<T: Send + 'static>(
        &self,
        durability: Durability,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send {
        let future = self.write(durability, boxed(unit));
        async move { unbox(future.await?) }
    }
}

impl<S: MetaStore + ?Sized> MetaStoreExt for S {}

/// A typed unit as the store port takes it.
fn boxed<T: Send + 'static>(unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static) -> Unit {
    Box::new(move |tx| unit(tx).map(|value| Box::new(value) as UnitOutput))
}

/// A unit's output with its type back.
fn unbox<T: 'static>(output: UnitOutput) -> Result<T> {
    output
        .downcast::<T>()
        .map(|value| *value)
        .map_err(|_| crate::CoreError::internal("a unit of work returned the wrong type"))
}

/// A field-level change of one account: only the fields that are set are written, so a change
/// never rewrites a field from a copy read earlier.
#[derive(Debug, Clone, Default)]
pub struct AccountUpdate {
    /// Disables (true) or enables (false) the account.
    pub disabled: Option<bool>,
    /// A new Argon2id PHC string, or `Some(None)` to turn password login off.
    pub password_hash: Option<Option<String>>,
    /// The whole access policy (the unit merged its change into the stored one).
    pub access: Option<AccessPolicy>,
    /// The SSH keys, in order (the unit added or removed one of the stored ones).
    pub keys: Option<Vec<AuthorizedKey>>,
    /// The end-to-end encryption keys, in order (the unit added or removed one of the stored
    /// ones).
    pub e2e_keys: Option<Vec<E2eKey>>,
    /// A new TOTP enrolment (its last step unset), or `Some(None)` to remove it.
    pub totp: Option<Option<TotpEnrolment>>,
    /// Moves the account's token generation on by one, revoking every token issued before.
    pub revoke_tokens: bool,
}

impl AccountUpdate {
    /// Whether the update changes anything.
    pub fn is_empty(&self) -> bool {
        self.disabled.is_none()
            && self.password_hash.is_none()
            && self.access.is_none()
            && self.keys.is_none()
            && self.e2e_keys.is_none()
            && self.totp.is_none()
            && !self.revoke_tokens
    }
}

/// What a unit may do inside its transaction. Reads see the transaction's snapshot and the
/// unit's own writes. Every write that changes an account's kind, state, access or token
/// generation, a group, its members or a route moves the [`Tx::policy_version`] on in the
/// same transaction, which is what keeps the Hub's policy cache exact.
///
/// Errors: a name already taken by an account or a group, or a live delivery name taken, is
/// [`crate::ErrorKind::Conflict`]; a missing object is [`crate::ErrorKind::NotFound`].
pub trait Tx {
    /// Whether this unit may write (a write unit), or only read a committed snapshot.
    fn writable(&self) -> bool;

    // ----- policy ----------------------------------------------------------------------------

    /// The version of accounts, groups and routes, as committed (or as this unit changed it).
    fn policy_version(&mut self) -> Result<u64>;

    // ----- accounts --------------------------------------------------------------------------

    /// One account with its keys.
    fn account(&mut self, name: &AccountName) -> Result<Option<Account>>;
    /// Every account with its keys, by name.
    fn accounts(&mut self) -> Result<Vec<Account>>;
    /// Adds an account. Conflict if an account or a group has the name.
    fn insert_account(&mut self, account: &Account) -> Result<()>;
    /// Writes the fields an update sets. NotFound if the account is absent.
    fn update_account(&mut self, name: &AccountName, update: &AccountUpdate) -> Result<()>;
    /// Removes an account, its keys, its group memberships, its tokens, its API keys and the
    /// routes that name it. NotFound if absent; Conflict while a live delivery is addressed to it or sent
    /// by it.
    fn delete_account(&mut self, name: &AccountName) -> Result<()>;

    // ----- groups and routes -----------------------------------------------------------------

    /// One group with its members.
    fn group(&mut self, name: &AccountName) -> Result<Option<Group>>;
    /// Every group with its members, by name.
    fn groups(&mut self) -> Result<Vec<Group>>;
    /// Adds a group with its members (each must be an account). Conflict if an account or a
    /// group has the name; NotFound naming the first member that is no account.
    fn insert_group(&mut self, group: &Group) -> Result<()>;
    /// Replaces a group's members. NotFound if the group or a member is absent.
    fn set_members(&mut self, group: &AccountName, members: &[AccountName]) -> Result<()>;
    /// Removes a group and the routes that name it. NotFound if absent.
    fn delete_group(&mut self, name: &AccountName) -> Result<()>;
    /// Every route rule, by (from, to).
    fn routes(&mut self) -> Result<Vec<Route>>;
    /// Adds the rule for (from, to), replacing an earlier rule for the same pair. NotFound if
    /// either name is neither an account nor a group.
    fn put_route(&mut self, route: &Route) -> Result<()>;
    /// Removes the rule for (from, to). NotFound if absent.
    fn delete_route(&mut self, from: &AccountName, to: &AccountName) -> Result<()>;

    // ----- deliveries ------------------------------------------------------------------------

    /// Adds deliveries. Conflict if one would share its (recipient, sender, name) with a live
    /// delivery. `inline` is the content of a small blob the blob store kept in memory
    /// ([`StoredBlob::inline`]), kept while a live delivery references its blob id.
    fn insert_deliveries(
        &mut self,
        deliveries: &[Delivery],
        inline: Option<(&BlobId, &[u8])>,
    ) -> Result<()>;
    /// One delivery by id.
    fn delivery(&mut self, id: &DeliveryId) -> Result<Option<Delivery>>;
    /// Deliveries matching the query, oldest first.
    fn deliveries(&mut self, query: &DeliveryQuery) -> Result<Vec<Delivery>>;
    /// The oldest delivery matching the query, with its blob's content when the blob is kept
    /// in the metadata store: what opening a file for reading needs.
    fn first_delivery_with_content(
        &mut self,
        query: &DeliveryQuery,
    ) -> Result<Option<(Delivery, Option<Vec<u8>>)>>;
    /// The content of a blob kept in the metadata store, if this blob is one.
    fn inline_blob(&mut self, blob_id: &BlobId) -> Result<Option<Vec<u8>>>;
    /// Moves a delivery to `to`, dated `at`, if it is in one of `from`; returns whether it
    /// moved. When a move leaves no live delivery on an inline blob, its content goes too.
    fn transition(
        &mut self,
        id: &DeliveryId,
        from: &[DeliveryState],
        to: DeliveryState,
        at: OffsetDateTime,
    ) -> Result<bool>;
    /// Renames a live delivery. Conflict if the name is taken between the same sender and
    /// recipient; NotFound if the delivery is not live.
    fn rename_delivery(&mut self, id: &DeliveryId, name: &FileName) -> Result<()>;
    /// Blob ids referenced by at least one delivery in a live state.
    fn live_blobs(&mut self) -> Result<HashSet<BlobId>>;
    /// Whether any delivery in a live state references the blob.
    fn blob_in_use(&mut self, blob_id: &BlobId) -> Result<bool>;
    /// The bytes and files of the live deliveries addressed to `recipient`.
    fn inbox_usage(&mut self, recipient: &AccountName) -> Result<InboxUsage>;

    // ----- one-time codes --------------------------------------------------------------------

    /// Marks TOTP step `step` used if it is later than the last used step; returns whether it
    /// was (false: replayed or older code, or no enrolment).
    fn use_totp_step(&mut self, name: &AccountName, step: u64) -> Result<bool>;
    /// Removes one unused recovery code (by its hash); returns whether it was there.
    fn use_recovery_code(&mut self, name: &AccountName, code_hash: &str) -> Result<bool>;

    // ----- bans ------------------------------------------------------------------------------

    /// Every ban, active or ended, by subject.
    fn bans(&mut self) -> Result<Vec<Ban>>;
    /// The ban of one subject, active or ended.
    fn ban(&mut self, subject: &BanSubject) -> Result<Option<Ban>>;
    /// Places or replaces the ban of its subject.
    fn put_ban(&mut self, ban: &Ban) -> Result<()>;
    /// Removes the ban of `subject` (its history too). NotFound if there is none.
    fn delete_ban(&mut self, subject: &BanSubject) -> Result<()>;

    // ----- the defender's offences -----------------------------------------------------------

    /// Adds an offence of `subject` at `at`, worth `weight` points (the defender's score is
    /// the sum of a subject's recent offences, whichever node added them). An offence worth
    /// no points is not kept.
    fn add_offence(&mut self, subject: &BanSubject, at: OffsetDateTime, weight: u32) -> Result<()>;
    /// The points of `subject`'s offences dated at or after `since`, as committed (or as
    /// this unit added them).
    fn offence_score(&mut self, subject: &BanSubject, since: OffsetDateTime) -> Result<u64>;
    /// Deletes every offence of `subject` (a ban was placed or lifted); returns how many.
    fn forget_offences(&mut self, subject: &BanSubject) -> Result<u64>;
    /// Deletes offences no score needs: of those dated before `before`, the `limit` oldest
    /// (by date); and of those added before the last `keep` additions, the `limit` added
    /// first (an addition rolled back with its unit may count as one). Returns how many went.
    /// Called with a small `limit` by every unit that adds offences, it keeps the table at
    /// about `keep` rows at most, however many subjects offend.
    fn prune_offences(&mut self, before: OffsetDateTime, keep: u64, limit: u32) -> Result<u64>;

    // ----- the audit trail -------------------------------------------------------------------

    /// Appends events to the audit trail, chained in order. Conflict if an event id is
    /// recorded already.
    fn record(&mut self, events: &[Event]) -> Result<()>;
    /// Events matching the query, oldest first.
    fn events(&mut self, query: &EventQuery) -> Result<Vec<Event>>;
    /// One page of the audit trail with its chain fields: the events matching `query` whose
    /// `seq` is above `after_seq`, oldest first, at most `page` of them (`query.limit` is not
    /// used).
    fn audit_records(
        &mut self,
        query: &EventQuery,
        after_seq: u64,
        page: u32,
    ) -> Result<Vec<AuditRecord>>;
    /// The newest chained event, without verifying it.
    fn audit_head(&mut self) -> Result<Option<ChainHead>>;
    /// The highest `seq` recorded before the chain began (events up to it carry no hash).
    fn audit_legacy_through(&mut self) -> Result<u64>;
    /// One event by id.
    fn event(&mut self, id: &Uuid) -> Result<Option<Event>>;

    // ----- the job queue ---------------------------------------------------------------------

    /// Queues jobs. Conflict if a job id is taken.
    fn insert_jobs(&mut self, jobs: &[Job]) -> Result<()>;
    /// One job by id.
    fn job(&mut self, id: &Uuid) -> Result<Option<Job>>;
    /// Jobs matching the query, newest first.
    fn jobs(&mut self, query: &JobQuery) -> Result<Vec<Job>>;
    /// Queued jobs due at `now`, soonest due first, at most `limit`.
    fn due_jobs(&mut self, now: OffsetDateTime, limit: u32) -> Result<Vec<Job>>;
    /// Stores a job's state, attempts, due time, last error and update time, if it is still
    /// in one of `from`; returns whether it was.
    fn update_job(&mut self, job: &Job, from: &[JobState]) -> Result<bool>;
    /// How many jobs are in each state.
    fn job_counts(&mut self) -> Result<JobCounts>;
    /// How many jobs are queued (the queue's depth); read by every unit that queues jobs, so
    /// it must not cost more with a longer queue.
    fn queued_jobs(&mut self) -> Result<u64>;

    // ----- bearer tokens ---------------------------------------------------------------------

    /// Stores bearer tokens (their hashes), each with every field of its record (its
    /// negotiated methods too). Conflict if a hash is taken.
    fn insert_tokens(&mut self, tokens: &[TokenRecord]) -> Result<()>;
    /// One token by its hash.
    fn token(&mut self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Removes one token by its hash and returns it.
    fn take_token(&mut self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Deletes every token of one login; returns how many.
    fn delete_token_session(&mut self, session: &str) -> Result<u64>;
    /// Deletes the tokens expired at `now`; returns how many, and the logins left with none.
    fn delete_expired_tokens(&mut self, now: OffsetDateTime) -> Result<(u64, Vec<String>)>;

    // ----- API keys --------------------------------------------------------------------------

    /// Stores an API key (the hash of its secret) with every field of its record. NotFound if
    /// its account does not exist; Conflict if its id is taken. Deleting the account deletes
    /// its keys.
    fn insert_api_key(&mut self, key: &ApiKeyRecord) -> Result<()>;
    /// One API key by its id.
    fn api_key(&mut self, id: &str) -> Result<Option<ApiKeyRecord>>;
    /// The API keys of one account, oldest first (by creation, then id).
    fn api_keys(&mut self, account: &AccountName) -> Result<Vec<ApiKeyRecord>>;
    /// Deletes API key `id` of `account`; returns whether it was there (a key of another
    /// account is not).
    fn delete_api_key(&mut self, account: &AccountName, id: &str) -> Result<bool>;
    /// Records when API key `id` was last used; returns whether the key is there.
    fn touch_api_key(&mut self, id: &str, at: OffsetDateTime) -> Result<bool>;

    // ----- resumable uploads -----------------------------------------------------------------

    /// Records an unfinished resumable upload, so that it outlives a restart. Conflict if its
    /// id is taken.
    fn insert_resumable(&mut self, upload: &ResumableRecord) -> Result<()>;
    /// One unfinished resumable upload by its id.
    fn resumable(&mut self, id: &str) -> Result<Option<ResumableRecord>>;
    /// Every unfinished resumable upload, by id.
    fn resumables(&mut self) -> Result<Vec<ResumableRecord>>;
    /// Forgets a resumable upload (finished, aborted or expired); returns whether it was
    /// there.
    fn delete_resumable(&mut self, id: &str) -> Result<bool>;

    // ----- nodes and their live sessions -----------------------------------------------------

    /// Registers `node`, or writes its heartbeat (and what it registered) if it is
    /// registered already.
    fn put_node(&mut self, node: &NodeInfo, heartbeat: OffsetDateTime) -> Result<()>;
    /// Every registered node with its last heartbeat, alive or dead, by id.
    fn nodes(&mut self) -> Result<Vec<NodeRecord>>;
    /// Removes a node and every live session of it (a node that stops, or one long dead);
    /// returns whether the node was registered.
    fn delete_node(&mut self, node: &NodeId) -> Result<bool>;
    /// Inserts a live session unless its account already has `max` of them: those of
    /// `session.node` and of every node whose heartbeat is at or after `alive_since` (the
    /// sessions of dead and unknown nodes do not count; closing ones do, until their node
    /// closes them). Returns false, inserting nothing, when the count reached `max`. Conflict
    /// if the node already has a session of this id.
    fn insert_live_session(
        &mut self,
        session: &LiveSessionRecord,
        max: Option<u32>,
        alive_since: OffsetDateTime,
    ) -> Result<bool>;
    /// Deletes one live session; returns whether it was there.
    fn delete_live_session(&mut self, node: &NodeId, id: u64) -> Result<bool>;
    /// Every live session of every node, by node then id.
    fn live_session_list(&mut self) -> Result<Vec<LiveSessionRecord>>;
    /// Asks one live session to close, with `reason`, for its node to act on; a session
    /// asked already keeps its first reason. Returns whether the session is there. On a
    /// store that can tell other processes of changes ([`MetaStore::changes`]), the commit
    /// tells them.
    fn close_live_session(&mut self, node: &NodeId, id: u64, reason: &str) -> Result<bool>;
    /// The sessions of `node` asked to close, with their reasons, by id.
    fn closing_sessions(&mut self, node: &NodeId) -> Result<Vec<(u64, String)>>;

    // ----- data keys (encryption at rest) -----
    /// Every wrapped data key, by id.
    fn data_keys(&mut self) -> Result<Vec<DataKeyRecord>>;
    /// Inserts a data key unless its owner has one already; returns whether it was inserted
    /// (false: another writer won, and its key is the owner's).
    fn insert_data_key(&mut self, key: &DataKeyRecord) -> Result<bool>;
    /// Replaces the wrapping of data key `id` (a master key rotation); returns whether the
    /// key is there.
    fn rewrap_data_key(&mut self, id: &str, wrapped: &[u8], master: &str) -> Result<bool>;
}

/// A data key of encryption at rest as the metadata store keeps it: wrapped (encrypted and
/// authenticated) under the master key, which never reaches the store.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKeyRecord {
    /// The key's id, 32 lower-case hex digits; sealed blobs name it in their header.
    pub id: String,
    /// Whose key it is: an account (its mailbox) or [`HUB_KEY_OWNER`].
    pub owner: String,
    /// The key wrapped under the master key.
    pub wrapped: Vec<u8>,
    /// The fingerprint of the master key that wrapped it.
    pub master: String,
    /// When it was made.
    pub created: OffsetDateTime,
}

impl fmt::Debug for DataKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyRecord")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("master", &self.master)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The owner of the hub's own data key (TOTP secrets, the web UI's CSRF key): a name no
/// account can have.
pub const HUB_KEY_OWNER: &str = "@hub";

/// Seals the small secrets the metadata store keeps (TOTP secrets) under the hub's data key,
/// so they are not readable from a copy of the store without the master key. `context` binds
/// a sealed value to where it belongs (an account's name): moved elsewhere it does not open.
pub trait Vault: Send + Sync + 'static {
    /// `plain` sealed, as text fit for a text column.
    fn seal(&self, context: &str, plain: &str) -> Result<String>;
    /// The text `sealed` was made from; Internal if it was altered, moved or sealed under
    /// another key.
    fn open(&self, context: &str, sealed: &str) -> Result<String>;
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

/// A committed blob as its store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlob {
    /// Its id.
    pub id: BlobId,
    /// Its size in bytes, as stored.
    pub size: u64,
    /// When it was last written.
    pub modified: OffsetDateTime,
}

/// Content storage: write-once blobs under server-made ids.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts a new blob in a staging area; nothing is visible until [`BlobWriter::commit`].
    /// `owner` is the account whose mailbox the content comes from (a store that encrypts at
    /// rest seals it under that mailbox's data key).
    async fn create(&self, owner: &AccountName) -> Result<Box<dyn BlobWriter>>;
    /// Takes up again, after a restart, the unfinished blob whose staging is `staging`
    /// ([`BlobWriter::staging_id`]): a writer holding what reached the staging (maybe less
    /// than was written before, never other bytes), to be written on from its size. `None`
    /// from a store that cannot (the default); a staging that is gone is taken up empty.
    async fn resume(
        &self,
        staging: &BlobId,
        owner: &AccountName,
    ) -> Result<Option<Box<dyn BlobWriter>>> {
        let _ = (staging, owner);
        Ok(None)
    }
    /// Opens a committed blob for reading. NotFound if absent.
    async fn open(&self, id: &BlobId) -> Result<Arc<dyn BlobReader>>;
    /// Deletes a committed blob; a missing blob is not an error.
    async fn delete(&self, id: &BlobId) -> Result<()>;
    /// Removes what no delivery will reference: unfinished uploads and committed blobs not in
    /// `live` (which also names the stagings of resumable uploads to keep). A store of this node alone (the local folder) removes all of them, so call it
    /// only while none of its uploads is under way (at start, before serving); a store that
    /// several nodes share (S3) removes only what is older than any upload still being
    /// delivered, so it may run while other nodes serve.
    async fn sweep(&self, live: &HashSet<BlobId>) -> Result<SweepReport>;
    /// Every committed blob, in no particular order (a consistency check, a backup). What
    /// is not a blob under its own id is not listed; unfinished uploads are not either.
    async fn list(&self) -> Result<Vec<ListedBlob>>;
    /// Moves the committed blob `id` out of the store's blobs into its set-aside area, where
    /// no reader, writer or sweep touches it and an operator may look at it; returns where
    /// it went, for the report. NotFound if there is no such blob.
    async fn set_aside(&self, id: &BlobId) -> Result<String>;
    /// A reader of the blob `id` that the metadata store kept inline, from the `content` it
    /// kept ([`StoredBlob::inline`] as this store returned it): the content itself (this
    /// default), or, from a store that encrypts at rest, the content opened.
    async fn open_inline(&self, id: &BlobId, content: Vec<u8>) -> Result<Arc<dyn BlobReader>> {
        let _ = id;
        Ok(Arc::new(InlineReader(content)))
    }
}

/// A reader of content held in memory (a blob kept inline).
pub struct InlineReader(pub Vec<u8>);

#[async_trait]
impl BlobReader for InlineReader {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let end = start.saturating_add(len).min(self.0.len());
        Ok(self.0[start..end].to_vec())
    }
}

/// A blob being written. Dropping it without `commit` leaves nothing visible: a staging file
/// that the next sweep removes (local folder) or an upload the store abandons (S3); call
/// `abort` to discard it at once.
#[async_trait]
pub trait BlobWriter: Send + Sync {
    /// Writes `data` at `offset`. In-order writes are hashed as they stream; out-of-order and
    /// overlapping ones are allowed (a store may have to hash the file once more at `commit`).
    /// A store that sends the blob on while it is written (S3) may refuse a rewrite of data it
    /// has already sent on (Conflict), or out-of-order data past the window of unsent data it
    /// keeps (QuotaExceeded); a refused write changes nothing. Real clients write in order.
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// The size written so far (highest offset + length).
    fn size(&self) -> u64;
    /// The id under which [`BlobStore::resume`] takes this blob up again after a restart;
    /// `None` (the default) for a store that cannot.
    fn staging_id(&self) -> Option<BlobId> {
        None
    }
    /// Cuts what was written back to `size` bytes (a resumed writer dropping a torn tail).
    /// Unsupported by default.
    async fn truncate(&mut self, size: u64) -> Result<()> {
        let _ = size;
        Err(CoreError::internal(
            "this blob store cannot cut a blob short",
        ))
    }
    /// Reads `len` bytes at `offset` of what was written so far (a resumed writer looking at
    /// the tail it took up). Unsupported by default.
    async fn read_back(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let _ = (offset, len);
        Err(CoreError::internal(
            "this blob store cannot read an unfinished blob back",
        ))
    }
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
    /// [`BlobReader::read_at`] into a buffer that begins with `room` zero bytes for the
    /// caller's header, so a protocol reply can be framed around the data without copying
    /// it again: the data is `result[room..]`, empty at end of file. A store that cannot do
    /// better copies (this default).
    async fn read_at_after(&self, offset: u64, len: usize, room: usize) -> Result<Vec<u8>> {
        let data = self.read_at(offset, len).await?;
        let mut framed = vec![0_u8; room];
        framed.extend_from_slice(&data);
        Ok(framed)
    }
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
