//! The test bed: a Hub on [`MemoryMeta`], [`MemoryBlobs`] and a [`ManualClock`], with the
//! few helpers every scenario needs (accounts, routes, groups, uploads, downloads) and the
//! check every refusal gets: the error kind, and nothing changed.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use mailroom_core::Clock;
use mailroom_core::testing::{ManualClock, MemoryBlobs, MemoryMeta};
use mailroom_core::{
    Account, AccountChange, AccountKind, AccountName, Actor, BlobId, ClientSession, CoreError,
    Credential, Delivery, DeliveryQuery, ErrorKind, Event, EventKind, EventQuery, FileName, Group,
    Hub, IssuedTokens, Job, JobQuery, LoginProgress, LoginStep, MetaStore, MetaStoreExt, NodeId,
    NodeInfo, Outcome, Protocol, Result, RetryPolicy, Route, RouteEffect, Rules, Scope, Secret,
    TokenLifetimes, VirtualPath,
};
use time::OffsetDateTime;
use time::macros::datetime;

/// Where every bed's clock starts.
pub const T0: OffsetDateTime = datetime!(2030-01-07 09:00 UTC);

/// A password every strength rule accepts (and that names none of the test accounts).
pub const PASSWORD: &str = "tulip-orbit-7-lantern";

/// Another one, for password changes.
pub const NEW_PASSWORD: &str = "Another-long-passphrase-77";

/// A Hub and the stores and clock under it, which the test holds too.
pub struct Bed {
    pub hub: Arc<Hub>,
    pub meta: Arc<MemoryMeta>,
    pub blobs: Arc<MemoryBlobs>,
    pub clock: Arc<ManualClock>,
}

impl Bed {
    /// A bed whose blob store keeps every blob itself (so [`MemoryBlobs::ids`] sees them).
    pub fn new() -> Bed {
        Bed::with_blobs(MemoryBlobs::new())
    }

    /// A bed whose blob store hands blobs of up to 64 KiB back inline, for the metadata store
    /// to keep: the path small files take in production.
    pub fn inline() -> Bed {
        Bed::with_blobs(MemoryBlobs::inline_up_to(64 * 1024))
    }

    /// A bed whose Hub turns events into jobs by `rules`, retried by `retry`.
    pub fn with_jobs(rules: Rules, retry: RetryPolicy) -> Bed {
        let bed = Bed::new();
        let hub = Hub::new(bed.meta.clone(), bed.blobs.clone(), bed.clock.clone())
            .with_jobs(rules, retry);
        Bed {
            hub: Arc::new(hub),
            ..bed
        }
    }

    /// [`Bed::with_jobs`] whose Hub holds every upload for its check ([`Hub::with_check`]).
    pub fn checked(rules: Rules, retry: RetryPolicy) -> Bed {
        let bed = Bed::new();
        let hub = Hub::new(bed.meta.clone(), bed.blobs.clone(), bed.clock.clone())
            .with_jobs(rules, retry)
            .with_check(true);
        Bed {
            hub: Arc::new(hub),
            ..bed
        }
    }

    /// A bed whose Hub queues accounts' notices, digests grouped by `period`.
    pub fn noticed(period: time::Duration) -> Bed {
        let bed = Bed::new();
        let hub =
            Hub::new(bed.meta.clone(), bed.blobs.clone(), bed.clock.clone()).with_notices(period);
        Bed {
            hub: Arc::new(hub),
            ..bed
        }
    }

    fn with_blobs(blobs: MemoryBlobs) -> Bed {
        let meta = Arc::new(MemoryMeta::new());
        Bed::on(meta.clone(), meta, Arc::new(blobs))
    }

    /// A bed whose Hub reaches `meta` through `port` (a wrapper around it), so a test can
    /// step in between the Hub and the store.
    pub fn on(port: Arc<dyn MetaStore>, meta: Arc<MemoryMeta>, blobs: Arc<MemoryBlobs>) -> Bed {
        let clock = Arc::new(ManualClock::new(T0));
        let hub = Hub::new(port, blobs.clone(), clock.clone());
        Bed {
            hub: Arc::new(hub),
            meta,
            blobs,
            clock,
        }
    }

    /// A second Hub on the same stores and clock: another process (the admin CLI, another
    /// node) with its own policy cache.
    pub fn other_process(&self) -> Hub {
        Hub::new(self.meta.clone(), self.blobs.clone(), self.clock.clone())
    }

    /// A Hub on the same stores and clock that is a node of a cluster, on host `host`: its
    /// sessions are kept in the store too ([`Hub::with_node`]).
    pub fn node(&self, host: &str) -> Hub {
        self.other_process().with_node(NodeInfo {
            id: NodeId::new(),
            host: host.to_owned(),
            pid: 4242,
            started: self.clock.now(),
        })
    }

    /// This bed with [`Bed::node`] as its Hub.
    pub fn into_node(self, host: &str) -> Bed {
        Bed {
            hub: Arc::new(self.node(host)),
            ..self
        }
    }

    // ----- administration ------------------------------------------------------------------

    /// Adds client accounts without passwords (no Argon2: they only send and receive).
    pub async fn clients(&self, names: &[&str]) {
        self.add(AccountKind::Client, names, None).await;
    }

    /// Adds admin accounts without passwords.
    pub async fn admins(&self, names: &[&str]) {
        self.add(AccountKind::Admin, names, None).await;
    }

    /// Adds client accounts that log in with [`PASSWORD`].
    pub async fn clients_with_password(&self, names: &[&str]) {
        self.add(AccountKind::Client, names, Some(PASSWORD)).await;
    }

    /// Adds admin accounts that log in with [`PASSWORD`].
    pub async fn admins_with_password(&self, names: &[&str]) {
        self.add(AccountKind::Admin, names, Some(PASSWORD)).await;
    }

    async fn add(&self, kind: AccountKind, names: &[&str], password: Option<&str>) {
        for name in names {
            self.hub
                .add_account(
                    &admin(),
                    account(name),
                    kind,
                    password.map(secret),
                    Vec::new(),
                )
                .await
                .unwrap();
        }
    }

    /// Allows `from` to send to `to`.
    pub async fn allow(&self, from: &str, to: &str) {
        self.route(from, to, RouteEffect::Allow).await;
    }

    /// Denies `from` sending to `to`.
    pub async fn deny(&self, from: &str, to: &str) {
        self.route(from, to, RouteEffect::Deny).await;
    }

    /// Sets the rule for (from, to).
    pub async fn route(&self, from: &str, to: &str, effect: RouteEffect) {
        self.hub
            .set_route(&admin(), account(from), account(to), effect)
            .await
            .unwrap();
    }

    /// Creates a group of client accounts.
    pub async fn group(&self, name: &str, members: &[&str]) {
        self.hub
            .add_group(
                &admin(),
                account(name),
                members.iter().map(|m| account(m)).collect(),
            )
            .await
            .unwrap();
    }

    /// Applies an administrator's change to an account.
    pub async fn change(&self, name: &str, change: AccountChange) {
        self.hub
            .change_account(&admin(), &account(name), change)
            .await
            .unwrap();
    }

    /// One account as stored.
    pub async fn account(&self, name: &str) -> Account {
        self.hub.account(&account(name)).await.unwrap()
    }

    // ----- the mailbox ---------------------------------------------------------------------

    /// Uploads `bytes` to `to` as `from`, in one write, and returns the deliveries made.
    pub async fn upload(&self, from: &str, to: &str, bytes: &[u8]) -> Result<Vec<Delivery>> {
        let mut upload = self.hub.begin_upload(&client(from), &path(to)).await?;
        // A refused write poisons the upload; the finish then refuses it and records why.
        let _ = upload.write_at(0, bytes).await;
        self.hub.finish_upload(upload).await
    }

    /// [`Bed::upload`] that must succeed.
    pub async fn send(&self, from: &str, to: &str, bytes: &[u8]) -> Vec<Delivery> {
        match self.upload(from, to, bytes).await {
            Ok(deliveries) => deliveries,
            Err(err) => panic!("{from} could not send {to}: {} {err}", err.kind()),
        }
    }

    /// Downloads a file completely as `who` (which marks a delivery picked up).
    pub async fn download(&self, who: &str, at: &str) -> Vec<u8> {
        let session = client(who);
        let handle = self.hub.open_read(&session, &path(at)).await.unwrap();
        let data = handle
            .read_at(0, usize::try_from(handle.size()).unwrap())
            .await
            .unwrap();
        self.hub.close_read(&session, handle).await.unwrap();
        data
    }

    /// The names in a folder of `who`'s tree, in listing order.
    pub async fn listing(&self, who: &str, folder: &str) -> Vec<String> {
        self.hub
            .list(&client(who), &path(folder))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    // ----- logins --------------------------------------------------------------------------

    /// One password login step of `user` over HTTPS, in `scope`.
    pub async fn login(&self, user: &str, password: &str, scope: Scope) -> LoginStep {
        let mut progress = LoginProgress::for_scope(scope);
        self.hub
            .login(
                &mut progress,
                user,
                Credential::Password(secret(password)),
                None,
                Protocol::Https,
            )
            .await
            .unwrap()
    }

    /// A client login with [`PASSWORD`] that must succeed, turned into bearer tokens.
    pub async fn tokens(&self, user: &str) -> IssuedTokens {
        let LoginStep::Accepted(session, guard) = self.login(user, PASSWORD, Scope::Client).await
        else {
            panic!("{user} could not log in");
        };
        self.hub
            .issue_tokens(
                &session,
                guard,
                Scope::Client,
                &TokenLifetimes::default(),
                None,
            )
            .await
            .unwrap()
    }

    // ----- what is stored ------------------------------------------------------------------

    /// Every delivery, oldest first, read from the store itself.
    pub async fn deliveries(&self) -> Vec<Delivery> {
        self.meta
            .read_with(|tx| tx.deliveries(&DeliveryQuery::default()))
            .await
            .unwrap()
    }

    /// Every job, newest first, read from the store itself.
    pub async fn jobs(&self) -> Vec<Job> {
        self.meta
            .read_with(|tx| {
                tx.jobs(&JobQuery {
                    state: None,
                    limit: u32::MAX,
                })
            })
            .await
            .unwrap()
    }

    /// Every audit event, oldest first.
    pub async fn events(&self) -> Vec<Event> {
        self.meta
            .read_with(|tx| tx.events(&EventQuery::default()))
            .await
            .unwrap()
    }

    /// The events of one kind and outcome.
    pub async fn events_of(&self, kind: EventKind, outcome: Outcome) -> Vec<Event> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.kind == kind && e.outcome == outcome)
            .collect()
    }

    /// Everything a refusal must leave alone.
    pub async fn snapshot(&self) -> Snapshot {
        let (accounts, groups, routes) = self
            .meta
            .read_with(|tx| Ok((tx.accounts()?, tx.groups()?, tx.routes()?)))
            .await
            .unwrap();
        let events = self.events().await;
        let (refused, kept): (Vec<Event>, Vec<Event>) = events
            .into_iter()
            .partition(|e| e.outcome == Outcome::Refused);
        Snapshot {
            accounts,
            groups,
            routes,
            deliveries: self.deliveries().await,
            jobs: self.jobs().await,
            blobs: self.blobs.ids().into_iter().collect(),
            events: kept,
            refused: refused.into_iter().map(|e| e.kind).collect(),
        }
    }

    /// Runs `op`, which must fail with `kind`, and checks that it changed nothing: accounts,
    /// groups, routes, deliveries, blobs and events are as before, except for the one
    /// `refused` event a client refusal records (`refused_event: None` for calls that record
    /// none, such as an administrator's). Returns the error, for its message.
    pub async fn refused<T>(
        &self,
        kind: ErrorKind,
        refused_event: Option<EventKind>,
        op: impl Future<Output = Result<T>>,
    ) -> CoreError {
        let before = self.snapshot().await;
        let err = match op.await {
            Ok(_) => panic!("expected {kind}, but the call succeeded"),
            Err(err) => err,
        };
        assert_eq!(err.kind(), kind, "{err}");
        let mut after = self.snapshot().await;
        let recorded: Vec<EventKind> = after.refused.drain(before.refused.len()..).collect();
        assert_eq!(
            recorded,
            refused_event.into_iter().collect::<Vec<_>>(),
            "refusal events of {err}"
        );
        assert_eq!(after, before, "the refusal {err:?} changed something");
        err
    }
}

/// What a refusal must leave as it was.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub accounts: Vec<Account>,
    pub groups: Vec<Group>,
    pub routes: Vec<Route>,
    pub deliveries: Vec<Delivery>,
    pub jobs: Vec<Job>,
    pub blobs: BTreeSet<BlobId>,
    /// Every event but refusals.
    pub events: Vec<Event>,
    /// The kinds of the refusal events, in order.
    pub refused: Vec<EventKind>,
}

/// The administrator of every test.
pub fn admin() -> Actor {
    Actor::cli("test")
}

/// An account or group name.
pub fn account(name: &str) -> AccountName {
    AccountName::parse(name).unwrap()
}

/// A file name.
pub fn file(name: &str) -> FileName {
    FileName::parse(name).unwrap()
}

/// A path of the virtual tree.
pub fn path(p: &str) -> VirtualPath {
    VirtualPath::parse(p).unwrap()
}

/// A logged-in client, over SFTP.
pub fn client(name: &str) -> ClientSession {
    ClientSession {
        account: account(name),
        source: None,
        protocol: Protocol::Sftp,
    }
}

/// A secret string.
pub fn secret(s: &str) -> Secret<String> {
    Secret::new(s.to_owned())
}

/// `len` bytes of content that differ with `seed`.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The names of deliveries, for compact assertions.
pub fn names(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.name.to_string()).collect()
}

/// The recipients of deliveries, sorted.
pub fn recipients(deliveries: &[Delivery]) -> Vec<String> {
    let mut all: Vec<String> = deliveries.iter().map(|d| d.recipient.to_string()).collect();
    all.sort();
    all
}
