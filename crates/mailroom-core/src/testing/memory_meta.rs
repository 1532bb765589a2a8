//! [`MemoryMeta`]: the metadata store in memory, for tests of the Hub without a database.
//!
//! It keeps every invariant the SQLite store keeps (one namespace for accounts and groups,
//! one live delivery per name between a sender and a recipient, members that are accounts,
//! routes between existing names, the policy version moved by every policy change, the audit
//! chain) so that the conformance suite runs the same scenarios on both. A write unit runs on
//! a copy of the state that replaces it only when the unit succeeds, so a failed unit changes
//! nothing; units run one at a time. A unit that panics fails as Internal, as on SQLite.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access::{Ban, BanSubject};
use crate::audit::{AuditRecord, ChainHead, GENESIS_HASH, chain_hash};
use crate::error::{CoreError, Result};
use crate::hub::{ApiKeyRecord, ResumableRecord, TokenRecord};
use crate::jobs::{Job, JobCounts, JobQuery, JobState};
use crate::model::{
    Account, BlobId, Delivery, DeliveryId, DeliveryState, Event, Group, Route, RouteEffect,
};
use crate::names::{AccountName, FileName};
use crate::ports::{
    AccountUpdate, DataKeyRecord, DeliveryOrder, DeliveryQuery, DeliverySort, Durability,
    EventQuery, InboxUsage, MetaStore, SortDirection, StoreStats, Tx, Unit, UnitOutput,
};
use crate::sessions::{LiveSessionRecord, NodeId, NodeInfo, NodeRecord};

/// The metadata store in memory.
#[derive(Default)]
pub struct MemoryMeta {
    store: Mutex<Store>,
    reads: AtomicU64,
    writes: AtomicU64,
    commits: AtomicU64,
    flushes: AtomicU64,
}

impl MemoryMeta {
    /// An empty store.
    pub fn new() -> MemoryMeta {
        MemoryMeta::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl MetaStore for MemoryMeta {
    async fn read(&self, unit: Unit) -> Result<UnitOutput> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut store = self.lock();
        let Store { state, events } = &mut *store;
        let mut tx = MemoryTx {
            state,
            events,
            writable: false,
        };
        run_unit(unit, &mut tx)
    }

    async fn write(&self, durability: Durability, unit: Unit) -> Result<UnitOutput> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut store = self.lock();
        let Store { state, events } = &mut *store;
        let mut work = state.clone();
        let recorded = events.len();
        let result = {
            let mut tx = MemoryTx {
                state: &mut work,
                events,
                writable: true,
            };
            run_unit(unit, &mut tx)
        };
        match result {
            Ok(output) => {
                *state = work;
                self.commits.fetch_add(1, Ordering::Relaxed);
                if durability == Durability::Flush {
                    self.flushes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(output)
            }
            Err(err) => {
                events.truncate(recorded);
                Err(err)
            }
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}

/// A unit's answer: its own result, or Internal if it panicked (as the SQLite store answers),
/// so that a panic neither poisons the store nor leaves the unit's events in the trail.
fn run_unit(unit: Unit, tx: &mut MemoryTx<'_>) -> Result<UnitOutput> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unit(tx)))
        .unwrap_or_else(|_| Err(CoreError::internal("metadata store error")))
}

/// Everything stored: the state a write unit copies, and the audit trail, which only grows
/// (a failed unit's events are cut off again).
#[derive(Default)]
struct Store {
    state: State,
    events: Vec<AuditRecord>,
}

#[derive(Clone, Default)]
struct State {
    accounts: BTreeMap<AccountName, Account>,
    groups: BTreeMap<AccountName, Vec<AccountName>>,
    /// Each rule's effect and whether it requires end-to-end encryption.
    routes: BTreeMap<(AccountName, AccountName), (RouteEffect, bool)>,
    deliveries: HashMap<DeliveryId, Delivery>,
    inline: HashMap<BlobId, Vec<u8>>,
    bans: BTreeMap<String, Ban>,
    /// The defender's offences by the order they were added: (subject key, time, points).
    offences: BTreeMap<u64, (String, OffsetDateTime, u32)>,
    /// The last offence number given, so that none is reused (as SQLite's AUTOINCREMENT).
    offence_seq: u64,
    tokens: BTreeMap<String, TokenRecord>,
    /// API keys by id.
    api_keys: BTreeMap<String, ApiKeyRecord>,
    resumables: BTreeMap<String, ResumableRecord>,
    /// Data keys of encryption at rest, by id.
    data_keys: BTreeMap<String, DataKeyRecord>,
    jobs: BTreeMap<Uuid, Job>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    live_sessions: BTreeMap<(NodeId, u64), LiveSessionRecord>,
    policy_version: u64,
    /// The highest `seq` ever given, so that none is reused.
    seq: u64,
}

struct MemoryTx<'a> {
    state: &'a mut State,
    events: &'a mut Vec<AuditRecord>,
    writable: bool,
}

impl MemoryTx<'_> {
    fn writing(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(CoreError::internal("a read unit tried to write"))
        }
    }

    fn bump_policy(&mut self) {
        self.state.policy_version += 1;
    }

    fn name_holder(&self, name: &AccountName) -> Option<&'static str> {
        if self.state.accounts.contains_key(name) {
            Some("an account")
        } else if self.state.groups.contains_key(name) {
            Some("a group")
        } else {
            None
        }
    }

    fn claim(&self, name: &AccountName) -> Result<()> {
        match self.name_holder(name) {
            Some(holder) => Err(CoreError::conflict(format!(
                "the name {name} is already taken by {holder}"
            ))),
            None => Ok(()),
        }
    }

    fn check_members(&self, group: &AccountName, members: &[AccountName]) -> Result<()> {
        for member in members {
            if !self.state.accounts.contains_key(member) {
                return Err(CoreError::not_found(format!(
                    "cannot add {member} to group {group}: there is no account by that name"
                )));
            }
        }
        Ok(())
    }

    /// Whether a live delivery other than `except` holds (recipient, sender, name).
    fn live_name_taken(&self, delivery: &Delivery, except: Option<&DeliveryId>) -> bool {
        self.state.deliveries.values().any(|d| {
            Some(&d.id) != except
                && d.state.is_live()
                && d.recipient == delivery.recipient
                && d.sender == delivery.sender
                && d.name == delivery.name
        })
    }
}

impl Tx for MemoryTx<'_> {
    fn writable(&self) -> bool {
        self.writable
    }

    fn policy_version(&mut self) -> Result<u64> {
        Ok(self.state.policy_version)
    }

    fn account(&mut self, name: &AccountName) -> Result<Option<Account>> {
        Ok(self.state.accounts.get(name).cloned())
    }

    fn accounts(&mut self) -> Result<Vec<Account>> {
        Ok(self.state.accounts.values().cloned().collect())
    }

    fn insert_account(&mut self, account: &Account) -> Result<()> {
        self.writing()?;
        self.claim(&account.name)?;
        self.state
            .accounts
            .insert(account.name.clone(), account.clone());
        self.bump_policy();
        Ok(())
    }

    fn update_account(&mut self, name: &AccountName, update: &AccountUpdate) -> Result<()> {
        self.writing()?;
        let account = self
            .state
            .accounts
            .get_mut(name)
            .ok_or_else(|| CoreError::not_found(format!("there is no account named {name}")))?;
        let mut policy_changed = false;
        if let Some(disabled) = update.disabled {
            policy_changed |= account.disabled != disabled;
            account.disabled = disabled;
        }
        if let Some(hash) = &update.password_hash {
            account.password_hash = hash.clone();
        }
        if let Some(access) = &update.access {
            policy_changed |= account.access != *access;
            account.access = access.clone();
        }
        if let Some(keys) = &update.keys {
            account.keys = keys.clone();
        }
        if let Some(keys) = &update.e2e_keys {
            account.e2e_keys = keys.clone();
        }
        if let Some(totp) = &update.totp {
            account.totp = totp.clone().map(|mut enrolment| {
                enrolment.last_step = None;
                enrolment
            });
        }
        if update.revoke_tokens {
            account.token_epoch = account.token_epoch.saturating_add(1);
            policy_changed = true;
        }
        if policy_changed {
            self.bump_policy();
        }
        Ok(())
    }

    fn delete_account(&mut self, name: &AccountName) -> Result<()> {
        self.writing()?;
        // Live deliveries first, whatever holds the name (SQLite's order): deliveries outlive
        // accounts.
        let live = self
            .state
            .deliveries
            .values()
            .filter(|d| d.state.is_live() && (d.recipient == *name || d.sender == *name))
            .count();
        if live > 0 {
            return Err(CoreError::conflict(format!(
                "{name} still has {live} deliveries waiting to or from it; disable the account instead"
            )));
        }
        if !self.state.accounts.contains_key(name) {
            return Err(CoreError::not_found(format!(
                "there is no account named {name}"
            )));
        }
        self.state
            .routes
            .retain(|(from, to), _| from != name && to != name);
        for members in self.state.groups.values_mut() {
            members.retain(|m| m != name);
        }
        self.state.tokens.retain(|_, t| t.account != *name);
        self.state.api_keys.retain(|_, k| k.account != *name);
        self.state.accounts.remove(name);
        self.bump_policy();
        Ok(())
    }

    fn group(&mut self, name: &AccountName) -> Result<Option<Group>> {
        Ok(self.state.groups.get(name).map(|members| Group {
            name: name.clone(),
            members: members.clone(),
        }))
    }

    fn groups(&mut self) -> Result<Vec<Group>> {
        Ok(self
            .state
            .groups
            .iter()
            .map(|(name, members)| Group {
                name: name.clone(),
                members: members.clone(),
            })
            .collect())
    }

    fn insert_group(&mut self, group: &Group) -> Result<()> {
        self.writing()?;
        self.claim(&group.name)?;
        self.check_members(&group.name, &group.members)?;
        let mut members = group.members.clone();
        members.sort();
        members.dedup();
        self.state.groups.insert(group.name.clone(), members);
        self.bump_policy();
        Ok(())
    }

    fn set_members(&mut self, group: &AccountName, members: &[AccountName]) -> Result<()> {
        self.writing()?;
        if !self.state.groups.contains_key(group) {
            return Err(CoreError::not_found(format!(
                "there is no group named {group}"
            )));
        }
        self.check_members(group, members)?;
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        // The same members again is no change, and does not move the policy version.
        if self.state.groups.get(group) != Some(&members) {
            self.state.groups.insert(group.clone(), members);
            self.bump_policy();
        }
        Ok(())
    }

    fn delete_group(&mut self, name: &AccountName) -> Result<()> {
        self.writing()?;
        if self.state.groups.remove(name).is_none() {
            return Err(CoreError::not_found(format!(
                "there is no group named {name}"
            )));
        }
        self.state
            .routes
            .retain(|(from, to), _| from != name && to != name);
        self.bump_policy();
        Ok(())
    }

    fn routes(&mut self) -> Result<Vec<Route>> {
        Ok(self
            .state
            .routes
            .iter()
            .map(|((from, to), (effect, require_e2e))| Route {
                from: from.clone(),
                to: to.clone(),
                effect: *effect,
                require_e2e: *require_e2e,
            })
            .collect())
    }

    fn put_route(&mut self, route: &Route) -> Result<()> {
        self.writing()?;
        for name in [&route.from, &route.to] {
            if self.name_holder(name).is_none() {
                return Err(CoreError::not_found(format!(
                    "no account or group is named {name}"
                )));
            }
        }
        // The same rule again is no change, and does not move the policy version.
        let rule = (route.effect, route.require_e2e);
        let earlier = self
            .state
            .routes
            .insert((route.from.clone(), route.to.clone()), rule);
        if earlier != Some(rule) {
            self.bump_policy();
        }
        Ok(())
    }

    fn delete_route(&mut self, from: &AccountName, to: &AccountName) -> Result<()> {
        self.writing()?;
        if self
            .state
            .routes
            .remove(&(from.clone(), to.clone()))
            .is_none()
        {
            return Err(CoreError::not_found(format!(
                "there is no route rule from {from} to {to}"
            )));
        }
        self.bump_policy();
        Ok(())
    }

    fn insert_deliveries(
        &mut self,
        deliveries: &[Delivery],
        inline: Option<(&BlobId, &[u8])>,
    ) -> Result<()> {
        self.writing()?;
        for delivery in deliveries {
            if self.state.deliveries.contains_key(&delivery.id) {
                return Err(CoreError::conflict(format!(
                    "a delivery with id {} exists already",
                    delivery.id
                )));
            }
            if delivery.state.is_live() && self.live_name_taken(delivery, None) {
                return Err(CoreError::conflict(format!(
                    "{} already has a live delivery named {:?} from {}",
                    delivery.recipient,
                    delivery.name.as_str(),
                    delivery.sender
                )));
            }
            self.state.deliveries.insert(delivery.id, delivery.clone());
        }
        if let Some((blob_id, content)) = inline {
            if self.state.inline.contains_key(blob_id) {
                return Err(CoreError::conflict(format!(
                    "inline blob {blob_id} exists already"
                )));
            }
            self.state.inline.insert(blob_id.clone(), content.to_vec());
        }
        Ok(())
    }

    fn delivery(&mut self, id: &DeliveryId) -> Result<Option<Delivery>> {
        Ok(self.state.deliveries.get(id).cloned())
    }

    fn deliveries(&mut self, query: &DeliveryQuery) -> Result<Vec<Delivery>> {
        let matching: Vec<Delivery> = self
            .state
            .deliveries
            .values()
            .filter(|d| matches(query, d))
            .cloned()
            .collect();
        let mut sorted = matching;
        in_order(&mut sorted, query.order);
        let page = sorted.into_iter().skip(query.offset as usize);
        Ok(match query.limit {
            Some(limit) => page.take(limit as usize).collect(),
            None => page.collect(),
        })
    }

    fn first_delivery_with_content(
        &mut self,
        query: &DeliveryQuery,
    ) -> Result<Option<(Delivery, Option<Vec<u8>>)>> {
        // The oldest match, whatever limit the query carries.
        let query = DeliveryQuery {
            limit: None,
            ..query.clone()
        };
        let first = self.deliveries(&query)?.into_iter().next();
        Ok(first.map(|d| {
            let content = self.state.inline.get(&d.blob_id).cloned();
            (d, content)
        }))
    }

    fn inline_blob(&mut self, blob_id: &BlobId) -> Result<Option<Vec<u8>>> {
        Ok(self.state.inline.get(blob_id).cloned())
    }

    fn transition(
        &mut self,
        id: &DeliveryId,
        from: &[DeliveryState],
        to: DeliveryState,
        at: OffsetDateTime,
    ) -> Result<bool> {
        self.writing()?;
        let Some(current) = self.state.deliveries.get(id).cloned() else {
            return Ok(false);
        };
        if !from.contains(&current.state) {
            return Ok(false);
        }
        let mut moved = current.clone();
        moved.state = to;
        if to.is_live() && !current.state.is_live() && self.live_name_taken(&moved, Some(id)) {
            return Err(CoreError::conflict(
                "another live delivery between the same sender and recipient has this name",
            ));
        }
        moved.updated = at;
        let blob_id = moved.blob_id.clone();
        self.state.deliveries.insert(*id, moved);
        if !to.is_kept() && !self.blob_in_use(&blob_id)? {
            self.state.inline.remove(&blob_id);
        }
        Ok(true)
    }

    fn rename_delivery(&mut self, id: &DeliveryId, name: &FileName) -> Result<()> {
        self.writing()?;
        let Some(current) = self.state.deliveries.get(id).filter(|d| d.state.is_live()) else {
            return Err(CoreError::not_found(format!(
                "no pending delivery has the id {id}"
            )));
        };
        let mut renamed = current.clone();
        renamed.name = name.clone();
        if self.live_name_taken(&renamed, Some(id)) {
            return Err(CoreError::conflict(format!(
                "the name {:?} is taken by another live delivery between the same sender and recipient",
                name.as_str()
            )));
        }
        self.state.deliveries.insert(*id, renamed);
        Ok(())
    }

    fn live_blobs(&mut self) -> Result<HashSet<BlobId>> {
        Ok(self
            .state
            .deliveries
            .values()
            .filter(|d| d.state.is_kept())
            .map(|d| d.blob_id.clone())
            .collect())
    }

    fn blob_in_use(&mut self, blob_id: &BlobId) -> Result<bool> {
        Ok(self
            .state
            .deliveries
            .values()
            .any(|d| d.state.is_kept() && d.blob_id == *blob_id))
    }

    fn inbox_usage(&mut self, recipient: &AccountName) -> Result<InboxUsage> {
        let mut usage = InboxUsage::default();
        for d in self
            .state
            .deliveries
            .values()
            .filter(|d| d.state.is_live() && d.recipient == *recipient)
        {
            usage.bytes += d.size;
            usage.files += 1;
        }
        Ok(usage)
    }

    fn use_totp_step(&mut self, name: &AccountName, step: u64) -> Result<bool> {
        self.writing()?;
        let Some(enrolment) = self
            .state
            .accounts
            .get_mut(name)
            .and_then(|a| a.totp.as_mut())
        else {
            return Ok(false);
        };
        if enrolment.last_step.is_some_and(|last| last >= step) {
            return Ok(false);
        }
        enrolment.last_step = Some(step);
        Ok(true)
    }

    fn use_recovery_code(&mut self, name: &AccountName, code_hash: &str) -> Result<bool> {
        self.writing()?;
        let Some(enrolment) = self
            .state
            .accounts
            .get_mut(name)
            .and_then(|a| a.totp.as_mut())
        else {
            return Ok(false);
        };
        let before = enrolment.recovery.len();
        enrolment.recovery.retain(|c| c != code_hash);
        Ok(enrolment.recovery.len() < before)
    }

    fn bans(&mut self) -> Result<Vec<Ban>> {
        Ok(self.state.bans.values().cloned().collect())
    }

    fn ban(&mut self, subject: &BanSubject) -> Result<Option<Ban>> {
        Ok(self.state.bans.get(&subject.key()).cloned())
    }

    fn put_ban(&mut self, ban: &Ban) -> Result<()> {
        self.writing()?;
        let mut stored = ban.clone();
        stored.level = stored.level.max(1);
        self.state.bans.insert(ban.subject.key(), stored);
        Ok(())
    }

    fn delete_ban(&mut self, subject: &BanSubject) -> Result<()> {
        self.writing()?;
        match self.state.bans.remove(&subject.key()) {
            Some(_) => Ok(()),
            None => Err(CoreError::not_found(format!("{subject} is not banned"))),
        }
    }

    fn add_offence(&mut self, subject: &BanSubject, at: OffsetDateTime, weight: u32) -> Result<()> {
        self.writing()?;
        if weight > 0 {
            self.state.offence_seq += 1;
            let id = self.state.offence_seq;
            self.state.offences.insert(id, (subject.key(), at, weight));
        }
        Ok(())
    }

    fn offence_score(&mut self, subject: &BanSubject, since: OffsetDateTime) -> Result<u64> {
        let key = subject.key();
        Ok(self
            .state
            .offences
            .values()
            .filter(|(s, at, _)| *s == key && *at >= since)
            .map(|(_, _, weight)| u64::from(*weight))
            .sum())
    }

    fn forget_offences(&mut self, subject: &BanSubject) -> Result<u64> {
        self.writing()?;
        let key = subject.key();
        let before = self.state.offences.len();
        self.state.offences.retain(|_, (s, _, _)| *s != key);
        Ok((before - self.state.offences.len()) as u64)
    }

    fn prune_offences(&mut self, before: OffsetDateTime, keep: u64, limit: u32) -> Result<u64> {
        self.writing()?;
        let limit = limit as usize;
        let mut old: Vec<(OffsetDateTime, u64)> = self
            .state
            .offences
            .iter()
            .filter(|(_, (_, at, _))| *at < before)
            .map(|(id, (_, at, _))| (*at, *id))
            .collect();
        old.sort_unstable();
        let mut gone: HashSet<u64> = old.into_iter().take(limit).map(|(_, id)| id).collect();
        let newest = self.state.offences.keys().next_back().copied().unwrap_or(0);
        if let Some(last) = newest.checked_sub(keep) {
            gone.extend(
                self.state
                    .offences
                    .range(..=last)
                    .take(limit)
                    .map(|(id, _)| *id),
            );
        }
        self.state.offences.retain(|id, _| !gone.contains(id));
        Ok(gone.len() as u64)
    }

    fn record(&mut self, events: &[Event]) -> Result<()> {
        self.writing()?;
        let ids: HashSet<Uuid> = self.events.iter().map(|r| r.event.id).collect();
        let mut prev_hash = self
            .events
            .iter()
            .rev()
            .find_map(|r| r.hash.clone())
            .unwrap_or_else(|| GENESIS_HASH.to_owned());
        let mut fresh = HashSet::new();
        for event in events {
            if ids.contains(&event.id) || !fresh.insert(event.id) {
                return Err(CoreError::conflict(
                    "an event of this change is already recorded",
                ));
            }
        }
        for event in events {
            self.state.seq += 1;
            let seq = self.state.seq;
            let hash = chain_hash(&prev_hash, seq, event);
            self.events.push(AuditRecord {
                seq,
                event: event.clone(),
                prev_hash: Some(std::mem::replace(&mut prev_hash, hash.clone())),
                hash: Some(hash),
            });
        }
        Ok(())
    }

    fn event(&mut self, id: &Uuid) -> Result<Option<Event>> {
        Ok(self
            .events
            .iter()
            .find(|r| r.event.id == *id)
            .map(|r| r.event.clone()))
    }

    fn insert_jobs(&mut self, jobs: &[Job]) -> Result<()> {
        self.writing()?;
        for (i, job) in jobs.iter().enumerate() {
            if self.state.jobs.contains_key(&job.id) || jobs[..i].iter().any(|j| j.id == job.id) {
                return Err(CoreError::conflict(format!("job {} exists", job.id)));
            }
        }
        for job in jobs {
            self.state.jobs.insert(job.id, job.clone());
        }
        Ok(())
    }

    fn job(&mut self, id: &Uuid) -> Result<Option<Job>> {
        Ok(self.state.jobs.get(id).cloned())
    }

    fn jobs(&mut self, query: &JobQuery) -> Result<Vec<Job>> {
        let mut jobs: Vec<Job> = self
            .state
            .jobs
            .values()
            .filter(|job| query.state.is_none_or(|state| job.state == state))
            .cloned()
            .collect();
        jobs.sort_by_key(|job| std::cmp::Reverse((job.created, job.id)));
        jobs.truncate(query.limit as usize);
        Ok(jobs)
    }

    fn due_jobs(&mut self, now: OffsetDateTime, limit: u32) -> Result<Vec<Job>> {
        let mut jobs: Vec<Job> = self
            .state
            .jobs
            .values()
            .filter(|job| job.state == JobState::Queued && job.due <= now)
            .cloned()
            .collect();
        jobs.sort_by_key(|job| (job.due, job.id));
        jobs.truncate(limit as usize);
        Ok(jobs)
    }

    fn update_job(&mut self, job: &Job, from: &[JobState]) -> Result<bool> {
        self.writing()?;
        match self.state.jobs.get_mut(&job.id) {
            Some(stored) if from.contains(&stored.state) => {
                stored.state = job.state;
                stored.attempts = job.attempts;
                stored.due = job.due;
                stored.updated = job.updated;
                stored.last_error.clone_from(&job.last_error);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn queued_jobs(&mut self) -> Result<u64> {
        Ok(self
            .state
            .jobs
            .values()
            .filter(|job| job.state == JobState::Queued)
            .count() as u64)
    }

    fn job_counts(&mut self) -> Result<JobCounts> {
        let mut counts = JobCounts::default();
        for job in self.state.jobs.values() {
            match job.state {
                JobState::Queued => counts.queued += 1,
                JobState::Done => counts.done += 1,
                JobState::Dead => counts.dead += 1,
                JobState::Dropped => counts.dropped += 1,
            }
        }
        Ok(counts)
    }

    fn events(&mut self, query: &EventQuery) -> Result<Vec<Event>> {
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let matching: Vec<Event> = self
            .events
            .iter()
            .filter(|r| event_matches(query, &r.event))
            .map(|r| r.event.clone())
            .collect();
        let end = matching.len().saturating_sub(query.offset as usize);
        let start = match query.limit {
            Some(limit) => end.saturating_sub(limit as usize),
            None => 0,
        };
        Ok(matching[start..end].to_vec())
    }

    fn audit_records(
        &mut self,
        query: &EventQuery,
        after_seq: u64,
        page: u32,
    ) -> Result<Vec<AuditRecord>> {
        Ok(self
            .events
            .iter()
            .filter(|r| r.seq > after_seq && event_matches(query, &r.event))
            .take(page as usize)
            .cloned()
            .collect())
    }

    fn audit_head(&mut self) -> Result<Option<ChainHead>> {
        let total = self.events.len() as u64;
        Ok(self.events.iter().rev().find_map(|r| {
            r.hash.as_ref().map(|hash| ChainHead {
                seq: r.seq,
                hash: hash.clone(),
                time: r.event.time,
                events: total,
            })
        }))
    }

    fn audit_legacy_through(&mut self) -> Result<u64> {
        Ok(0)
    }

    fn insert_tokens(&mut self, tokens: &[TokenRecord]) -> Result<()> {
        self.writing()?;
        for token in tokens {
            if self.state.tokens.contains_key(&token.hash) {
                return Err(CoreError::conflict("token already stored"));
            }
            self.state.tokens.insert(token.hash.clone(), token.clone());
        }
        Ok(())
    }

    fn token(&mut self, hash: &str) -> Result<Option<TokenRecord>> {
        Ok(self.state.tokens.get(hash).cloned())
    }

    fn take_token(&mut self, hash: &str) -> Result<Option<TokenRecord>> {
        self.writing()?;
        Ok(self.state.tokens.remove(hash))
    }

    fn delete_token_session(&mut self, session: &str) -> Result<u64> {
        self.writing()?;
        let before = self.state.tokens.len();
        self.state.tokens.retain(|_, t| t.session != session);
        Ok((before - self.state.tokens.len()) as u64)
    }

    fn delete_expired_tokens(&mut self, now: OffsetDateTime) -> Result<(u64, Vec<String>)> {
        self.writing()?;
        let mut sessions: Vec<String> = self
            .state
            .tokens
            .values()
            .filter(|t| t.expires <= now)
            .map(|t| t.session.clone())
            .collect();
        sessions.sort();
        sessions.dedup();
        let before = self.state.tokens.len();
        self.state.tokens.retain(|_, t| t.expires > now);
        let deleted = (before - self.state.tokens.len()) as u64;
        let ended = sessions
            .into_iter()
            .filter(|s| !self.state.tokens.values().any(|t| t.session == *s))
            .collect();
        Ok((deleted, ended))
    }

    fn insert_api_key(&mut self, key: &ApiKeyRecord) -> Result<()> {
        self.writing()?;
        if !self.state.accounts.contains_key(&key.account) {
            return Err(CoreError::not_found(format!(
                "there is no account named {}",
                key.account
            )));
        }
        if self.state.api_keys.contains_key(&key.id) {
            return Err(CoreError::conflict("API key already stored"));
        }
        self.state.api_keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    fn api_key(&mut self, id: &str) -> Result<Option<ApiKeyRecord>> {
        Ok(self.state.api_keys.get(id).cloned())
    }

    fn api_keys(&mut self, account: &AccountName) -> Result<Vec<ApiKeyRecord>> {
        let mut keys: Vec<ApiKeyRecord> = self
            .state
            .api_keys
            .values()
            .filter(|k| k.account == *account)
            .cloned()
            .collect();
        keys.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(keys)
    }

    fn delete_api_key(&mut self, account: &AccountName, id: &str) -> Result<bool> {
        self.writing()?;
        let keys = &mut self.state.api_keys;
        let theirs = keys.get(id).is_some_and(|k| k.account == *account);
        if theirs {
            keys.remove(id);
        }
        Ok(theirs)
    }

    fn touch_api_key(&mut self, id: &str, at: OffsetDateTime) -> Result<bool> {
        self.writing()?;
        Ok(match self.state.api_keys.get_mut(id) {
            Some(key) => {
                key.last_used = Some(at);
                true
            }
            None => false,
        })
    }

    fn insert_resumable(&mut self, upload: &ResumableRecord) -> Result<()> {
        self.writing()?;
        if self.state.resumables.contains_key(&upload.id) {
            return Err(CoreError::conflict("resumable upload already stored"));
        }
        self.state
            .resumables
            .insert(upload.id.clone(), upload.clone());
        Ok(())
    }

    fn resumable(&mut self, id: &str) -> Result<Option<ResumableRecord>> {
        Ok(self.state.resumables.get(id).cloned())
    }

    fn resumables(&mut self) -> Result<Vec<ResumableRecord>> {
        Ok(self.state.resumables.values().cloned().collect())
    }

    fn delete_resumable(&mut self, id: &str) -> Result<bool> {
        self.writing()?;
        Ok(self.state.resumables.remove(id).is_some())
    }

    fn put_node(&mut self, node: &NodeInfo, heartbeat: OffsetDateTime) -> Result<()> {
        self.writing()?;
        self.state.nodes.insert(
            node.id,
            NodeRecord {
                node: node.clone(),
                heartbeat,
            },
        );
        Ok(())
    }

    fn nodes(&mut self) -> Result<Vec<NodeRecord>> {
        Ok(self.state.nodes.values().cloned().collect())
    }

    fn delete_node(&mut self, node: &NodeId) -> Result<bool> {
        self.writing()?;
        self.state.live_sessions.retain(|(n, _), _| n != node);
        Ok(self.state.nodes.remove(node).is_some())
    }

    fn insert_live_session(
        &mut self,
        session: &LiveSessionRecord,
        max: Option<u32>,
        alive_since: OffsetDateTime,
    ) -> Result<bool> {
        self.writing()?;
        if self
            .state
            .live_sessions
            .contains_key(&(session.node, session.id))
        {
            return Err(CoreError::conflict(format!(
                "node {} already has a session {}",
                session.node, session.id
            )));
        }
        if let Some(max) = max {
            let nodes = &self.state.nodes;
            let open = self
                .state
                .live_sessions
                .values()
                .filter(|s| s.account == session.account)
                .filter(|s| {
                    s.node == session.node
                        || nodes
                            .get(&s.node)
                            .is_some_and(|n| n.heartbeat >= alive_since)
                })
                .count();
            if open >= max as usize {
                return Ok(false);
            }
        }
        self.state
            .live_sessions
            .insert((session.node, session.id), session.clone());
        Ok(true)
    }

    fn delete_live_session(&mut self, node: &NodeId, id: u64) -> Result<bool> {
        self.writing()?;
        Ok(self.state.live_sessions.remove(&(*node, id)).is_some())
    }

    fn live_session_list(&mut self) -> Result<Vec<LiveSessionRecord>> {
        Ok(self.state.live_sessions.values().cloned().collect())
    }

    fn close_live_session(&mut self, node: &NodeId, id: u64, reason: &str) -> Result<bool> {
        self.writing()?;
        Ok(match self.state.live_sessions.get_mut(&(*node, id)) {
            Some(session) => {
                session.closing.get_or_insert_with(|| reason.to_owned());
                true
            }
            None => false,
        })
    }

    fn closing_sessions(&mut self, node: &NodeId) -> Result<Vec<(u64, String)>> {
        Ok(self
            .state
            .live_sessions
            .values()
            .filter(|s| s.node == *node)
            .filter_map(|s| s.closing.clone().map(|reason| (s.id, reason)))
            .collect())
    }

    fn data_keys(&mut self) -> Result<Vec<DataKeyRecord>> {
        Ok(self.state.data_keys.values().cloned().collect())
    }

    fn insert_data_key(&mut self, key: &DataKeyRecord) -> Result<bool> {
        self.writing()?;
        if self.state.data_keys.contains_key(&key.id)
            || self.state.data_keys.values().any(|k| k.owner == key.owner)
        {
            return Ok(false);
        }
        self.state.data_keys.insert(key.id.clone(), key.clone());
        Ok(true)
    }

    fn rewrap_data_key(&mut self, id: &str, wrapped: &[u8], master: &str) -> Result<bool> {
        self.writing()?;
        Ok(match self.state.data_keys.get_mut(id) {
            Some(key) => {
                key.wrapped = wrapped.to_vec();
                key.master = master.to_owned();
                true
            }
            None => false,
        })
    }
}

/// Whether a delivery matches every field the query sets.
fn matches(query: &DeliveryQuery, d: &Delivery) -> bool {
    query.sender.as_ref().is_none_or(|s| *s == d.sender)
        && query.recipient.as_ref().is_none_or(|r| *r == d.recipient)
        && query.target.as_ref().is_none_or(|t| *t == d.target)
        && query.name.as_ref().is_none_or(|n| *n == d.name)
        && query.batch.as_ref().is_none_or(|b| *b == d.batch_id)
        && (query.states.is_empty() || query.states.contains(&d.state))
        && query.created_before.is_none_or(|before| d.created < before)
        && query.name_contains.as_ref().is_none_or(|needle| {
            // ASCII letters only, as SQLite's lower() and PostgreSQL's under "C" fold them.
            d.name
                .as_str()
                .to_ascii_lowercase()
                .contains(&needle.to_ascii_lowercase())
        })
}

/// Sorts deliveries in a query's order: its column, then the id, both in its direction.
fn in_order(deliveries: &mut [Delivery], order: DeliveryOrder) {
    deliveries.sort_by(|a, b| {
        let by_column = match order.sort {
            DeliverySort::Created => a.created.cmp(&b.created),
            DeliverySort::Name => a.name.as_str().cmp(b.name.as_str()),
            DeliverySort::Size => a.size.cmp(&b.size),
            DeliverySort::Sender => a.sender.as_str().cmp(b.sender.as_str()),
            DeliverySort::Recipient => a.recipient.as_str().cmp(b.recipient.as_str()),
        };
        let both = by_column.then_with(|| a.id.cmp(&b.id));
        match order.direction {
            SortDirection::Ascending => both,
            SortDirection::Descending => both.reverse(),
        }
    });
}

/// Whether an event matches every filter of the query but its limit.
fn event_matches(query: &EventQuery, e: &Event) -> bool {
    query.actor.as_ref().is_none_or(|a| *a == e.actor)
        && query.kind.is_none_or(|k| k == e.kind)
        && query.outcome.is_none_or(|o| o == e.outcome)
        && query.since.is_none_or(|since| e.time >= since)
        && query.until.is_none_or(|until| e.time < until)
        && query
            .source
            .as_ref()
            .is_none_or(|wanted| source_matches(wanted, e.source.as_deref()))
}

/// A source as recorded (`203.0.113.9:50022`) matches itself, and an IP address alone
/// matches it on any port.
fn source_matches(wanted: &str, recorded: Option<&str>) -> bool {
    let Some(recorded) = recorded else {
        return false;
    };
    if recorded == wanted {
        return true;
    }
    EventQuery::any_port_prefix(wanted).is_some_and(|prefix| recorded.starts_with(&prefix))
}
