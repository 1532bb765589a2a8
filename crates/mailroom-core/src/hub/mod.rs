//! The Hub: the mailbox service API that every front end and the admin CLI call.
//!
//! It resolves the virtual tree, enforces route policy, runs the delivery lifecycle and
//! accounts for every action. It never sees a socket or a file: metadata, blobs and time come
//! through the ports, and each state change is handed to the metadata store together with the
//! audit events that describe it.
//!
//! One module per concern: [`tree`] (stat, list), [`download`], [`upload`], [`remove`]
//! (acknowledge, recall, rename), [`retention`] (expiry, start-up sweep), [`admin`] (accounts,
//! groups, routes, audit reads), [`login`] (admission and logins), [`bans`], [`sessions`],
//! [`totp`], [`tokens`], [`api_keys`] (unattended clients' keys), [`e2e`] (accounts'
//! end-to-end encryption keys), [`resumable`], [`by_id`],
//! [`jobs`] (the job queue), [`check`] (checking before delivery, the quarantine) and
//! [`notices`] (accounts' "you have files"
//! mails and receipts). This file
//! holds the service itself, who
//! acts ([`Actor`], [`ClientSession`]) and the event helpers every module shares.

mod admin;
mod api_keys;
mod bans;
mod by_id;
mod check;
mod download;
mod e2e;
mod fsck;
mod health;
mod jobs;
mod login;
mod notices;
mod own;
mod policy_cache;
mod remove;
mod resumable;
mod retention;
mod sessions;
mod tokens;
mod totp;
mod tree;
mod upload;

pub use admin::AccountChange;
pub use api_keys::{
    API_KEY_PREFIX, ApiKeyInfo, ApiKeyRecord, KeyScope, KeyScopes, MAX_API_KEY_LABEL,
    MAX_API_KEYS_PER_ACCOUNT, is_api_key,
};
pub use by_id::{ListedPage, Listing, MAX_BATCH, MAX_NAME_FILTER, MAX_PAGE_SIZE};
pub use check::CheckVerdict;
pub use download::ReadHandle;
pub use e2e::RecipientE2eKeys;
pub use fsck::KeptBlob;
pub use jobs::JobOutcome;
pub use login::{AuthConfig, Credential, LoginProgress, LoginStep, Scope, source_ip};
pub use notices::{DIGEST_RULE, NOTIFY_RULE, RECEIPT_RULE};
pub use own::{OwnSession, OwnUsage};
pub use resumable::{
    MAX_PER_ACCOUNT as MAX_RESUMABLE_PER_ACCOUNT, ResumableInfo, ResumableLease, ResumableRecord,
};
pub use tokens::{
    IssuedTokens, TokenCheck, TokenIdentity, TokenKind, TokenLifetimes, TokenRecord, token_hash,
};
pub use totp::{TotpSetup, totp_code};
pub use tree::Entry;
pub use upload::{Content, MAX_TARGETS, Upload};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::{CoreError, ErrorKind, Result};
use crate::jobs::{Job, JobState, RetryPolicy, Rules};
use crate::model::{Delivery, DeliveryId, Event, EventKind, Outcome, Protocol};
use crate::names::AccountName;
use crate::path::VirtualPath;
use crate::ports::{BlobStore, Clock, Durability, MetaStore, MetaStoreExt, StoreStats, Tx};
use login::AuthState;
use policy_cache::PolicyCache;

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

/// The mailbox service.
pub struct Hub {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    /// Makes the audit events, on the caller's side and inside units.
    stamp: Stamp,
    /// Routes, groups and account access, as of the last policy version a read saw.
    policy: Arc<PolicyCache>,
    /// Authentication and defence state (see [`login`]).
    auth: AuthState,
    /// Resumable uploads under way (see [`resumable`]).
    resumables: resumable::Resumables,
    /// Held while a recorded resumable upload is taken up after a restart.
    taking_up: tokio::sync::Mutex<()>,
    /// File operations begun (see [`Hub::file_operations`]).
    file_operations: AtomicU64,
    /// When a failed job runs again (see [`jobs`]).
    retry: RetryPolicy,
    /// Counts the batches of job outcomes committed (see [`Hub::watch_settled`]).
    settled: tokio::sync::watch::Sender<u64>,
    /// Whether uploads wait in `checking` for a check job (see [`check`]).
    check: bool,
    /// This process as a node of a cluster, if it is one (see [`sessions`]).
    node: Option<crate::sessions::NodeInfo>,
    /// Calls of [`Hub::enforce_sessions`] so far (see [`sessions`]).
    enforced: AtomicU64,
    /// Seals TOTP secrets at rest, when the hub encrypts at rest (see [`Hub::with_vault`]).
    vault: Option<Arc<dyn crate::ports::Vault>>,
}

impl Hub {
    /// Builds the service on its ports.
    pub fn new(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>, clock: Arc<dyn Clock>) -> Hub {
        Hub {
            meta,
            blobs,
            stamp: Stamp::new(clock.clone()),
            clock,
            policy: Arc::new(PolicyCache::default()),
            auth: AuthState::new(AuthConfig::default()),
            resumables: resumable::Resumables::default(),
            taking_up: tokio::sync::Mutex::new(()),
            file_operations: AtomicU64::new(0),
            retry: RetryPolicy::default(),
            settled: tokio::sync::watch::Sender::new(0),
            check: false,
            node: None,
            enforced: AtomicU64::new(0),
            vault: None,
        }
    }

    /// Seals the TOTP secrets it stores with `vault` from now on, and opens the sealed ones
    /// with it (a hub encrypting at rest). Secrets stored before, in plain, still work.
    pub fn with_vault(mut self, vault: Arc<dyn crate::ports::Vault>) -> Hub {
        self.vault = Some(vault);
        self
    }

    /// What the metadata store has done so far: hops, commits and flushes.
    pub fn store_stats(&self) -> StoreStats {
        self.meta.stats()
    }

    /// File operations that reached the store so far: the calls of the tree and of deliveries
    /// by id (stat and list of what the store holds, open, close, upload begin and finish,
    /// remove, rename, inbox and sent listings). Each is one hop when it succeeds (a refusal
    /// adds one to record itself); [`Hub::store_stats`] over this is the hops per operation.
    pub fn file_operations(&self) -> u64 {
        self.file_operations.load(Ordering::Relaxed)
    }

    /// Counts one file operation (see [`Hub::file_operations`]).
    fn file_operation(&self) {
        self.file_operations.fetch_add(1, Ordering::Relaxed);
    }

    // ----- units of work ---------------------------------------------------------------------

    /// Runs `unit` as one read transaction of the metadata store: one hop, one snapshot.
    async fn read<T: Send + 'static>(
        &self,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.meta.read_with(unit).await
    }

    /// [`Hub::read`] of a unit that reads a few rows by key ([`MetaStore::read_short`]).
    async fn read_short<T: Send + 'static>(
        &self,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.meta.read_short_with(unit).await
    }

    /// [`Hub::read`] for a client: the unit runs only while the session's account still
    /// exists and is not disabled, checked in the same transaction.
    async fn read_as<T: Send + 'static>(
        &self,
        session: &ClientSession,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.read(client_unit(&self.policy, session, unit)).await
    }

    /// [`Hub::read_as`] of a unit that reads a few rows by key ([`MetaStore::read_short`]).
    async fn read_short_as<T: Send + 'static>(
        &self,
        session: &ClientSession,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.read_short(client_unit(&self.policy, session, unit))
            .await
    }

    /// Runs `unit` as one write transaction of the metadata store, committed with
    /// `durability` before this returns: one hop. An error from the unit undoes its writes.
    async fn write<T: Send + 'static>(
        &self,
        durability: Durability,
        unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.meta.write_with(durability, unit).await
    }

    /// Records, as an admin event, a change `actor` made outside the Hub's own operations:
    /// the master key of encryption at rest (`mailroom keys`), which the blob layer holds.
    pub async fn record_admin_change(
        &self,
        actor: &Actor,
        object: &str,
        detail: String,
    ) -> Result<()> {
        let event = self.stamp.admin(actor, object.to_owned(), detail);
        self.record(vec![event], Durability::Flush).await
    }

    /// Records events that describe no stored change (logins, refusals), in a unit of their
    /// own.
    async fn record(&self, events: Vec<Event>, durability: Durability) -> Result<()> {
        let stamp = self.stamp.clone();
        self.write(durability, move |tx| stamp.record(tx, &events))
            .await
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
        let event = self.stamp.event(
            &session.actor(),
            kind,
            object,
            outcome,
            format!("{}: {}", err.kind(), err.message()),
        );
        tracing::info!(event_id = %event.id, account = %session.account, object = %event.object, error = %err, "refused");
        if let Err(record_err) = self.record(vec![event], Durability::Relaxed).await {
            tracing::warn!(error = %record_err, "could not record a refusal");
        }
    }
}

/// A user name from the wire, made safe to store and print: control characters replaced,
/// length capped.
pub(crate) fn printable(user: &str) -> String {
    user.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Makes audit events stamped by the hub's clock, and records them with the jobs the rules
/// make of them; cheap to clone into a unit of work.
#[derive(Clone)]
struct Stamp {
    clock: Arc<dyn Clock>,
    /// The rules that turn events into jobs (none unless configured).
    rules: Arc<Rules>,
    /// Woken when a unit queues a job, so the worker need not wait for its next look.
    queued: Arc<Notify>,
    /// The digest period of accounts' notices, while notices can be sent (see
    /// [`Hub::with_notices`]); `None`: no notices are queued.
    notices: Option<time::Duration>,
}

impl Stamp {
    fn new(clock: Arc<dyn Clock>) -> Stamp {
        Stamp {
            clock,
            rules: Arc::new(Rules::default()),
            queued: Arc::new(Notify::new()),
            notices: None,
        }
    }

    /// Records `events` in the unit's transaction, and with them what the rules make of them:
    /// the copies of dispatch rules (deliveries of their own, with their own events) and the
    /// jobs. A committed event never lacks its jobs or copies, and a unit that fails leaves
    /// none. The copies' events make jobs but never copies, so no rule can loop.
    fn record(&self, tx: &mut dyn Tx, events: &[Event]) -> Result<()> {
        tx.record(events)?;
        let copied = self.dispatch(tx, events)?;
        self.queue_jobs(tx, events)?;
        if !copied.is_empty() {
            tx.record(&copied)?;
            self.queue_jobs(tx, &copied)?;
        }
        Ok(())
    }

    /// Makes the copies dispatch rules ask for of the deliveries `events` delivered, and
    /// returns their events (to record). A copy comes from the original's sender, carries the
    /// same content (the blob is shared) under a name free between that sender and its
    /// recipient, and is addressed to the account or group the rule names (a group's
    /// members, but for the original's sender and recipient). Operators write these rules:
    /// routes, rights and quotas do not stop a copy.
    fn dispatch(&self, tx: &mut dyn Tx, events: &[Event]) -> Result<Vec<Event>> {
        if !self.rules.dispatches() {
            return Ok(Vec::new());
        }
        let mut copied = Vec::new();
        for event in events {
            if event.kind != EventKind::DeliveryDelivered || event.outcome != Outcome::Ok {
                continue;
            }
            let Ok(id) = DeliveryId::parse(&event.object) else {
                continue;
            };
            let Some(original) = tx.delivery(&id)? else {
                continue;
            };
            let rules: Vec<_> = self.rules.copies_for(event, &original).collect();
            for rule in rules {
                for target in &rule.copy_to {
                    let members = match tx.group(target)? {
                        Some(group) => group.members,
                        None => vec![target.clone()],
                    };
                    let recipients: Vec<AccountName> = members
                        .into_iter()
                        .filter(|r| *r != original.recipient && *r != original.sender)
                        .collect();
                    if recipients.is_empty() {
                        continue;
                    }
                    let name = upload::free_name(
                        tx,
                        &original.sender,
                        std::slice::from_ref(target),
                        &recipients,
                        &original.name,
                    )?;
                    let (batch_id, now) = (DeliveryId::new(), self.now());
                    let copies: Vec<Delivery> = recipients
                        .iter()
                        .map(|recipient| Delivery {
                            id: DeliveryId::new(),
                            batch_id,
                            recipient: recipient.clone(),
                            target: target.clone(),
                            name: name.clone(),
                            created: now,
                            updated: now,
                            ..original.clone()
                        })
                        .collect();
                    tx.insert_deliveries(&copies, None)?;
                    for copy in &copies {
                        for kind in [EventKind::DeliveryStored, EventKind::DeliveryDelivered] {
                            let mut event = self.delivery(&Actor::system(), kind, copy);
                            event.detail.push_str(&format!(
                                ", copied by rule {} from {}",
                                rule.name, original.id
                            ));
                            copied.push(event);
                        }
                    }
                }
            }
        }
        Ok(copied)
    }

    /// Queues the jobs `events` make. Beyond the queue bound a job is stored dead, with the
    /// reason and a `job.dead` event of its own, for an operator to retry: never lost silently,
    /// never growing the queue without end.
    fn queue_jobs(&self, tx: &mut dyn Tx, events: &[Event]) -> Result<()> {
        if self.rules.is_empty() && self.notices.is_none() {
            return Ok(());
        }
        let now = self.now();
        let mut jobs = Vec::new();
        for event in events {
            let watched = self.rules.watches(event.kind);
            let noticed = self.notices.is_some()
                && notices::NOTICED.contains(&event.kind)
                && event.outcome == Outcome::Ok;
            if !watched && !noticed {
                continue;
            }
            let delivery = match noticed || self.rules.needs_delivery(event.kind) {
                true => match DeliveryId::parse(&event.object) {
                    Ok(id) => tx.delivery(&id)?,
                    Err(_) => None,
                },
                false => None,
            };
            if watched {
                jobs.extend(self.rules.jobs_for(event, delivery.as_ref(), now));
            }
            if let (Some(period), Some(delivery)) = (self.notices, &delivery) {
                notices::queue(tx, event, delivery, period, now, &mut jobs)?;
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let room = self.rules.max_queued().saturating_sub(tx.queued_jobs()?);
        let mut dead = Vec::new();
        for job in jobs
            .iter_mut()
            .skip(usize::try_from(room).unwrap_or(usize::MAX))
        {
            job.state = JobState::Dead;
            job.last_error = Some(format!(
                "the job queue was full ({} jobs waiting)",
                self.rules.max_queued()
            ));
            dead.push(self.job_dead(job));
        }
        tx.insert_jobs(&jobs)?;
        if !dead.is_empty() {
            tracing::warn!(
                jobs = dead.len(),
                bound = self.rules.max_queued(),
                "job queue full: jobs dead on arrival"
            );
            tx.record(&dead)?;
        }
        self.queued.notify_one();
        Ok(())
    }

    /// Queues the check of upload `batch`, whose `upload` event was recorded in this unit.
    fn queue_check(&self, tx: &mut dyn Tx, batch: DeliveryId, upload: Uuid) -> Result<()> {
        let now = self.now();
        tx.insert_jobs(&[Job::queued(
            Uuid::now_v7(),
            crate::jobs::CHECK_RULE,
            crate::jobs::Handler::Check(batch),
            upload,
            now,
            now,
        )])?;
        self.queued.notify_one();
        Ok(())
    }

    /// The event of `job` given up: the alert operators' rules can select.
    fn job_dead(&self, job: &Job) -> Event {
        self.event(
            &Actor::system(),
            EventKind::JobDead,
            job.id.to_string(),
            Outcome::Failed,
            format!(
                "{} of rule {} after {} attempt(s): {}",
                job.handler,
                job.rule,
                job.attempts,
                job.last_error.as_deref().unwrap_or("no error recorded")
            ),
        )
    }

    /// The event of `actor` doing `kind` to `object`, stamped now.
    fn event(
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

    /// An administrator's change of `object`.
    fn admin(&self, actor: &Actor, object: String, detail: String) -> Event {
        self.event(actor, EventKind::Admin, object, Outcome::Ok, detail)
    }

    /// A step of a delivery's lifecycle.
    fn delivery(&self, actor: &Actor, kind: EventKind, delivery: &Delivery) -> Event {
        self.event(
            actor,
            kind,
            delivery.id.to_string(),
            Outcome::Ok,
            format!(
                "{} -> {} {} ({} bytes{})",
                delivery.sender,
                delivery.recipient,
                delivery.name,
                delivery.size,
                if delivery.e2e {
                    ", end-to-end encrypted"
                } else {
                    ""
                }
            ),
        )
    }

    /// The current time.
    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}

/// `unit`, run only while `session`'s account still exists and is not disabled.
fn client_unit<T>(
    policy: &Arc<PolicyCache>,
    session: &ClientSession,
    unit: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
) -> impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static {
    let (cache, account) = (policy.clone(), session.account.clone());
    move |tx| {
        let policy = cache.get(tx)?;
        upload::session_policy(&policy, &account)?;
        unit(tx)
    }
}
