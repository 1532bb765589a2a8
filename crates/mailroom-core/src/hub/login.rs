//! Authentication and defence: logins with one or several factors, source networks, bans,
//! live sessions and their limits, TOTP enrolment.
//!
//! Every front end logs in through these calls and gets the same answers: a refusal looks
//! the same and takes the same work whether or not the account exists (unknown accounts pay
//! an Argon2 verification against a dummy hash; a key offered for an unknown account is
//! refused like an unknown key). The reason of a refusal goes to the audit trail only.
//!
//! A protocol with one secret per login (FTP) passes the one-time code appended to the
//! password, `secret:123456`; [`Hub::login_password_with_code`] decides whether and where to
//! split it, so the front end decides nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::bans::BanCache;
use super::policy_cache::AccountPolicy;
use super::{Actor, ClientSession, Hub, printable};
use crate::access::{BanSubject, Factor, canonical, in_networks};
use crate::defender::{Defender, DefenderConfig, Offence};
use crate::error::{CoreError, Result};
use crate::model::{Account, AccountKind, EventKind, Outcome, Protocol};
use crate::names::AccountName;
use crate::password;
use crate::ports::Durability;
use crate::secret::Secret;
use crate::sessions::{LiveSession, LiveSessionRecord, NODE_TIMEOUT, SessionInfo, Sessions};

/// Settings of authentication and defence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Scores and bans.
    pub defender: DefenderConfig,
    /// Argon2 verifications that may run at once; further logins wait, so a login flood
    /// cannot exhaust memory (each costs 19 MiB).
    pub hash_jobs: usize,
    /// The issuer shown by authenticator apps.
    pub totp_issuer: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            defender: DefenderConfig::default(),
            hash_jobs: 4,
            totp_issuer: "Mailroom".to_owned(),
        }
    }
}

/// At most one "connection refused" event per address in this time, so a banned address
/// hammering the port does not write the audit trail per connection.
const REFUSAL_EVENT_INTERVAL: time::Duration = time::Duration::seconds(60);

/// The authentication state the Hub keeps.
pub(crate) struct AuthState {
    pub(super) config: AuthConfig,
    pub(super) defender: Defender,
    pub(crate) sessions: Arc<Sessions>,
    pub(super) hash_jobs: Arc<Semaphore>,
    pub(super) bans: Mutex<BanCache>,
    pub(super) refusals: Mutex<HashMap<IpAddr, OffsetDateTime>>,
    /// The registered sessions of token logins (see [`super::tokens`]), by login id.
    pub(super) token_sessions: Mutex<HashMap<String, LiveSession>>,
}

impl AuthState {
    pub(crate) fn new(config: AuthConfig) -> AuthState {
        AuthState {
            defender: Defender::new(config.defender.clone()),
            hash_jobs: Arc::new(Semaphore::new(config.hash_jobs.max(1))),
            config,
            sessions: Arc::new(Sessions::default()),
            bans: Mutex::new(BanCache::default()),
            refusals: Mutex::new(HashMap::new()),
            token_sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The registered sessions of token logins, locked.
    pub(crate) fn token_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveSession>> {
        self.token_sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What kind of account a login is for. The file protocols log in clients only; the HTTPS
/// API also lets administrators in, to its admin endpoints only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// A client account, which owns a mailbox.
    #[default]
    Client,
    /// An admin account, which manages accounts and policy and owns no mailbox.
    Admin,
}

impl Scope {
    /// Stable label for storage and the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Admin => "admin",
        }
    }

    /// Parses the label written by [`Scope::as_str`].
    pub fn parse(input: &str) -> Result<Scope> {
        match input {
            "client" => Ok(Scope::Client),
            "admin" => Ok(Scope::Admin),
            other => Err(CoreError::invalid(format!(
                "unknown scope {:?}: expected \"client\" or \"admin\"",
                printable(other)
            ))),
        }
    }

    /// The account kind this scope logs in.
    pub fn kind(self) -> AccountKind {
        match self {
            Scope::Client => AccountKind::Client,
            Scope::Admin => AccountKind::Admin,
        }
    }
}

/// One connection's progress through the factors its account requires. A new user name in
/// the same connection starts over.
#[derive(Debug, Default, Clone)]
pub struct LoginProgress {
    user: Option<String>,
    passed: Vec<Factor>,
    remaining: Vec<Factor>,
    scope: Scope,
    /// The negotiated methods the front end says this login agreed on.
    methods: Option<String>,
}

impl LoginProgress {
    /// A login for accounts of `scope` (the default, [`Scope::Client`], is what the file
    /// protocols use; an admin account is then refused like any other refusal).
    pub fn for_scope(scope: Scope) -> LoginProgress {
        LoginProgress {
            scope,
            ..LoginProgress::default()
        }
    }

    /// The kind of account this login is for.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Says which negotiated methods this login agreed on (as the front end writes them,
    /// `authentication=password compression=zstd …`), before [`Hub::login`]: the accepted
    /// login's event names them. They stay when a new user name starts the login over.
    pub fn set_methods(&mut self, methods: String) {
        self.methods = Some(methods);
    }

    /// The negotiated methods set by [`LoginProgress::set_methods`], if any.
    pub fn methods(&self) -> Option<&str> {
        self.methods.as_deref()
    }

    fn bind(&mut self, user: &str) {
        if self.user.as_deref() != Some(user) {
            *self = LoginProgress {
                user: Some(user.to_owned()),
                scope: self.scope,
                methods: self.methods.take(),
                ..LoginProgress::default()
            };
        }
    }

    /// Factors this connection has proved so far.
    pub fn passed(&self) -> &[Factor] {
        &self.passed
    }

    /// Factors still missing after a partial success; empty before the first one.
    pub fn remaining(&self) -> &[Factor] {
        &self.remaining
    }

    /// What a keyboard-interactive prompt should ask for: the password until one has been
    /// proved (so a first prompt tells nothing about the account), then a one-time code.
    pub fn interactive_factor(&self) -> Factor {
        if self.passed.is_empty() || self.remaining.contains(&Factor::Password) {
            Factor::Password
        } else if self.remaining.contains(&Factor::Totp) {
            Factor::Totp
        } else {
            Factor::Password
        }
    }
}

/// The result of one login step.
#[derive(Debug)]
pub enum LoginStep {
    /// Every required factor is proved: the session is registered.
    Accepted(ClientSession, LiveSession),
    /// This factor is right; these are still missing.
    Continue(Vec<Factor>),
    /// Refused; the client is told nothing more.
    Refused,
}

/// A credential presented at login.
pub enum Credential {
    /// A password.
    Password(Secret<String>),
    /// An SSH public key (wire encoding) whose signature the protocol layer has verified.
    Key(Vec<u8>),
    /// A TOTP code or a recovery code.
    Code(Secret<String>),
    /// The subject common name of a client certificate the protocol layer has verified
    /// against the client CA.
    Certificate(String),
}

impl Credential {
    fn factor(&self) -> Factor {
        match self {
            Credential::Password(_) => Factor::Password,
            Credential::Key(_) => Factor::PublicKey,
            Credential::Code(_) => Factor::Totp,
            Credential::Certificate(_) => Factor::Certificate,
        }
    }
}

/// The IP address of a `source` as front ends pass it (`ip:port` or a bare address).
pub fn source_ip(source: Option<&str>) -> Option<IpAddr> {
    let source = source?;
    source
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| source.parse::<IpAddr>())
        .ok()
        .map(canonical)
}

impl Hub {
    /// Replaces the authentication and defence settings. Call before serving.
    pub fn with_auth(mut self, config: AuthConfig) -> Hub {
        self.auth = AuthState::new(config);
        self.auth.sessions = self.session_registry();
        self
    }

    /// The authentication and defence settings.
    pub fn auth_config(&self) -> &AuthConfig {
        &self.auth.config
    }

    // ----- admission -------------------------------------------------------------------------

    /// Decides whether a new connection from `source` may start at all: refused when the
    /// address is on the deny list or banned (the safe list is never refused). Refusals are
    /// accounted at most once a minute per address.
    pub async fn admit(&self, source: SocketAddr, protocol: Protocol) -> Result<()> {
        let ip = canonical(source.ip());
        let defender = self.auth.defender.config();
        if defender.is_safe(ip) {
            return Ok(());
        }
        let reason = if defender.is_denied(ip) {
            Some("address on the deny list".to_owned())
        } else {
            self.active_ban(&BanSubject::Address(ip))
                .await?
                .map(|until| format!("address banned until {}", rfc3339(until)))
        };
        let Some(reason) = reason else {
            return Ok(());
        };
        let now = self.clock.now();
        let due = {
            let mut refusals = self
                .auth
                .refusals
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if refusals.len() > 10_000 {
                refusals.retain(|_, last| *last + REFUSAL_EVENT_INTERVAL > now);
            }
            match refusals.get(&ip) {
                Some(last) if *last + REFUSAL_EVENT_INTERVAL > now => false,
                _ => {
                    refusals.insert(ip, now);
                    true
                }
            }
        };
        if due {
            let actor = Actor {
                name: "-".to_owned(),
                source: Some(source.to_string()),
                protocol,
            };
            let event = self.stamp.event(
                &actor,
                EventKind::Login,
                ip.to_string(),
                Outcome::Refused,
                format!("connection refused: {reason}"),
            );
            self.record(vec![event], Durability::Relaxed).await?;
        }
        Err(CoreError::denied(reason))
    }

    // ----- logins ----------------------------------------------------------------------------

    /// Whether an offered public key would be accepted as the next factor, without a
    /// signature and without an event. An unknown account answers like a known account with
    /// an unknown key.
    pub async fn key_acceptable(
        &self,
        progress: &LoginProgress,
        user: &str,
        key_blob: &[u8],
        source: Option<String>,
    ) -> Result<bool> {
        if progress.user.as_deref() == Some(user) && progress.passed.contains(&Factor::PublicKey) {
            return Ok(false);
        }
        let account = self.login_candidate(user).await?;
        let Some(account) = account else {
            return Ok(false);
        };
        let ip = source_ip(source.as_deref());
        Ok(self
            .refusal(&account, ip, Factor::PublicKey, progress.scope)
            .await?
            .is_none()
            && account.keys.iter().any(|k| k.blob == key_blob))
    }

    /// Records a login refused by the protocol layer before the service saw credentials (a
    /// method the hub does not offer, a protocol error, a timeout), and scores it.
    pub async fn record_login_refusal(
        &self,
        user: &str,
        reason: &str,
        source: Option<String>,
        protocol: Protocol,
    ) -> Result<()> {
        let ip = source_ip(source.as_deref());
        let actor = Actor {
            name: printable(user),
            source,
            protocol,
        };
        let event = self.stamp.event(
            &actor,
            EventKind::Login,
            printable(user),
            Outcome::Refused,
            reason.to_owned(),
        );
        self.record_and_score(vec![event], ip, None, Offence::ProtocolError)
            .await
    }

    /// Scores a connection that ended without authenticating (no login attempted or none
    /// completed), without an event of its own: one relaxed unit, unless nothing is scored.
    pub async fn score_unauthenticated(&self, source: Option<String>) -> Result<()> {
        let ip = source_ip(source.as_deref());
        self.record_and_score(Vec::new(), ip, None, Offence::NoAuthentication)
            .await
    }

    async fn login_candidate(&self, user: &str) -> Result<Option<Account>> {
        match AccountName::parse(user) {
            Ok(name) => {
                // The bans, when their cache is due, come with the account: one hop.
                let stale = self.bans_stale();
                let (account, bans) = self
                    .read_short(move |tx| {
                        let bans = if stale { Some(tx.bans()?) } else { None };
                        Ok((tx.account(&name)?, bans))
                    })
                    .await?;
                if let Some(bans) = bans {
                    self.cache_bans(bans);
                }
                Ok(account)
            }
            Err(_) => Ok(None),
        }
    }

    /// Why `account` may not use `factor` from `ip` now, if it may not. Credentials aside.
    async fn refusal(
        &self,
        account: &Account,
        ip: Option<IpAddr>,
        factor: Factor,
        scope: Scope,
    ) -> Result<Option<String>> {
        if let Some(reason) = self
            .standing(&account.name, &AccountPolicy::of(account), ip, scope)
            .await?
        {
            return Ok(Some(reason));
        }
        Ok(if !account.access.factors.uses(factor) {
            Some(format!(
                "{factor} is not one of the account's factors ({})",
                account.access.factors
            ))
        } else {
            None
        })
    }

    /// Why `account` may not act from `ip` now in `scope`, if it may not: address banned,
    /// account locked (neither from the safe list), disabled, of the other kind, or outside
    /// its networks. Checked at every login step and, for bearer tokens, at every request.
    pub(super) async fn standing(
        &self,
        name: &AccountName,
        account: &AccountPolicy,
        ip: Option<IpAddr>,
        scope: Scope,
    ) -> Result<Option<String>> {
        let safe = ip.is_some_and(|ip| self.auth.defender.config().is_safe(ip));
        if !safe {
            if let Some(ip) = ip
                && self.active_ban(&BanSubject::Address(ip)).await?.is_some()
            {
                return Ok(Some("address banned".to_owned()));
            }
            if self
                .active_ban(&BanSubject::Account(name.clone()))
                .await?
                .is_some()
            {
                return Ok(Some("account locked by the defender".to_owned()));
            }
        }
        Ok(if account.disabled {
            Some("account disabled".to_owned())
        } else if account.kind != scope.kind() {
            Some(match account.kind {
                AccountKind::Admin => {
                    "admin accounts own no mailbox and cannot log in here".to_owned()
                }
                AccountKind::Client => "not an admin account".to_owned(),
            })
        } else if !account.access.networks.is_empty()
            && !ip.is_some_and(|ip| in_networks(&account.access.networks, ip))
        {
            Some("source address not in the account's networks".to_owned())
        } else {
            None
        })
    }

    /// A login vouched for by a trusted front: a reverse proxy that authenticated the user
    /// itself and signed a header the protocol layer verified (the web authentication
    /// plug-in of the original design, docs/design.md). The account's own factors are not
    /// asked; its standing is (disabled, banned, locked, an admin, outside its networks), and
    /// only client accounts may be vouched for. `voucher` names the front in the login event.
    /// A refusal is recorded but not scored: the source is the trusted proxy, not the user.
    pub async fn login_vouched(
        &self,
        user: &str,
        voucher: &str,
        source: Option<String>,
        protocol: Protocol,
    ) -> Result<LoginStep> {
        let ip = source_ip(source.as_deref());
        let actor = Actor {
            name: printable(user),
            source: source.clone(),
            protocol,
        };
        let account = self.login_candidate(user).await?;
        let refusal = match &account {
            None => Some("unknown account".to_owned()),
            Some(account) => {
                self.standing(
                    &account.name,
                    &AccountPolicy::of(account),
                    ip,
                    Scope::Client,
                )
                .await?
            }
        };
        match (account, refusal) {
            (Some(account), None) => {
                self.open_session(
                    account,
                    &actor,
                    format!("vouched by {voucher}"),
                    None,
                    source,
                    protocol,
                )
                .await
            }
            (_, refusal) => {
                let reason = refusal.unwrap_or_else(|| "refused".to_owned());
                let event = self.stamp.event(
                    &actor,
                    EventKind::Login,
                    printable(user),
                    Outcome::Refused,
                    format!("vouched by {voucher}: {reason}"),
                );
                self.record(vec![event], Durability::Relaxed).await?;
                Ok(LoginStep::Refused)
            }
        }
    }

    /// Registers the session of a completed login (within the account's session limit) and
    /// records the login event with `detail` (the factors proved), which an accepted login
    /// ends with `; methods: …` when it negotiated `methods`. On a node the session's row
    /// is inserted in the same relaxed unit as the event, its limit counted over every live
    /// node, so the login costs no more hops than elsewhere; a refusal for the limit records
    /// its event in that unit too, having inserted nothing.
    async fn open_session(
        &self,
        account: Account,
        actor: &Actor,
        detail: String,
        methods: Option<&str>,
        source: Option<String>,
        protocol: Protocol,
    ) -> Result<LoginStep> {
        let now = self.clock.now();
        let info = SessionInfo {
            node: None,
            id: 0,
            account: account.name.clone(),
            source: source.clone(),
            protocol,
            started: now,
            token_epoch: account.token_epoch,
        };
        let max = account.access.limits.max_sessions;
        let refused = self.stamp.event(
            actor,
            EventKind::Login,
            account.name.to_string(),
            Outcome::Refused,
            format!(
                "{detail}: session limit reached ({} open)",
                max.unwrap_or(0)
            ),
        );
        let accepted = self.stamp.event(
            actor,
            EventKind::Login,
            account.name.to_string(),
            Outcome::Ok,
            match methods {
                Some(methods) => format!("{detail}; methods: {methods}"),
                None => detail,
            },
        );
        // On a node the store counts the sessions, this one's included.
        let local_max = if self.node.is_some() { None } else { max };
        let Some(mut guard) = self.auth.sessions.register(info, local_max) else {
            // Not the client's fault: no score.
            self.record(vec![refused], Durability::Relaxed).await?;
            return Ok(LoginStep::Refused);
        };
        match &self.node {
            None => self.record(vec![accepted], Durability::Relaxed).await?,
            Some(node) => {
                let record = LiveSessionRecord {
                    node: node.id,
                    id: guard.info().id,
                    account: account.name.clone(),
                    protocol,
                    source: source.clone(),
                    started: now,
                    closing: None,
                };
                let stamp = self.stamp.clone();
                let inserted = self
                    .write(Durability::Relaxed, move |tx| {
                        let inserted = tx.insert_live_session(&record, max, now - NODE_TIMEOUT)?;
                        stamp.record(tx, &[if inserted { accepted } else { refused }])?;
                        Ok(inserted)
                    })
                    .await?;
                if !inserted {
                    return Ok(LoginStep::Refused);
                }
                guard.mark_stored();
            }
        }
        Ok(LoginStep::Accepted(
            ClientSession {
                account: account.name,
                source,
                protocol,
            },
            guard,
        ))
    }

    /// One login step: checks `credential` for `user` coming from `source`, and says whether
    /// the login is complete, needs more factors, or is refused. Unknown names, disabled and
    /// admin accounts and wrong passwords all cost one Argon2 verification and give the same
    /// [`LoginStep::Refused`]; a one-time code is spent when it is checked.
    pub async fn login(
        &self,
        progress: &mut LoginProgress,
        user: &str,
        credential: Credential,
        source: Option<String>,
        protocol: Protocol,
    ) -> Result<LoginStep> {
        progress.bind(user);
        let account = self.login_candidate(user).await?;
        self.login_step(progress, user, account, credential, source, protocol)
            .await
    }

    /// A password login step whose password may carry the account's one-time code after it,
    /// `secret:123456`, for protocols with one secret per login (FTP's `PASS`, as SFTPGo
    /// takes it). The string is split at its last colon only when the account exists, its
    /// factors still need [`Factor::Totp`] on this `progress`, and the string ends in `:`
    /// and exactly six ASCII digits; otherwise all of it is the password, so an account
    /// without TOTP whose password ends in `:123456` logs in with it as before.
    ///
    /// Then the ordinary steps of [`Hub::login`], on the one read of the account: the
    /// password (one Argon2 verification, against a dummy hash for an unknown account, with
    /// the same opaque refusal), and, when it is right and a code was split off while TOTP
    /// is still missing, the code in the same `progress` (spent when checked; a wrong or
    /// reused one is refused, recorded and scored like any code). A right password without
    /// its code answers [`LoginStep::Continue`] naming [`Factor::Totp`], and records
    /// nothing: the caller refuses and says why.
    pub async fn login_password_with_code(
        &self,
        progress: &mut LoginProgress,
        user: &str,
        combined: Secret<String>,
        source: Option<String>,
        protocol: Protocol,
    ) -> Result<LoginStep> {
        progress.bind(user);
        let account = self.login_candidate(user).await?;
        let needs_code = account.as_ref().is_some_and(|account| {
            account
                .access
                .factors
                .remaining(&progress.passed)
                .contains(&Factor::Totp)
        });
        let split = if needs_code {
            split_code(combined.expose())
                .map(|(password, code)| (Secret::new(password.to_owned()), code.to_owned()))
        } else {
            None
        };
        let (password, code) = match split {
            Some((password, code)) => (password, Some(Secret::new(code))),
            None => (combined, None),
        };
        // The code's step checks the account as read for the password: no second read.
        let for_code = code.as_ref().and_then(|_| account.clone());
        let step = self
            .login_step(
                progress,
                user,
                account,
                Credential::Password(password),
                source.clone(),
                protocol,
            )
            .await?;
        match (step, code, for_code) {
            (LoginStep::Continue(remaining), Some(code), Some(account))
                if remaining.contains(&Factor::Totp) =>
            {
                self.login_step(
                    progress,
                    user,
                    Some(account),
                    Credential::Code(code),
                    source,
                    protocol,
                )
                .await
            }
            (step, _, _) => Ok(step),
        }
    }

    /// One login step on the candidate `account` already read for `user` (`None`: unknown).
    async fn login_step(
        &self,
        progress: &mut LoginProgress,
        user: &str,
        account: Option<Account>,
        credential: Credential,
        source: Option<String>,
        protocol: Protocol,
    ) -> Result<LoginStep> {
        let factor = credential.factor();
        let ip = source_ip(source.as_deref());
        let mut refusal = match &account {
            None => Some("unknown account".to_owned()),
            Some(account) if progress.passed.contains(&factor) => {
                let _ = account;
                Some(format!("{factor} already proved"))
            }
            Some(account) => self.refusal(account, ip, factor, progress.scope).await?,
        };
        // Credentials are checked only when nothing else refuses (a code is spent when it is
        // checked), but a password always costs its Argon2 verification.
        let verified = match credential {
            Credential::Password(password) => {
                let phc = match (&account, &refusal) {
                    (Some(account), None) => account.password_hash.clone(),
                    _ => None,
                };
                self.verify_password(password, phc).await?
            }
            _ if refusal.is_some() => false,
            Credential::Key(blob) => account
                .as_ref()
                .is_some_and(|a| a.keys.iter().any(|k| k.blob == blob)),
            Credential::Code(code) => match &account {
                Some(account) => self.check_code(account, &code).await?,
                None => false,
            },
            Credential::Certificate(subject) => account.as_ref().is_some_and(|a| {
                let expected = a
                    .access
                    .certificate_subject
                    .clone()
                    .unwrap_or_else(|| a.name.to_string());
                constant_time_eq(expected.as_bytes(), subject.as_bytes())
            }),
        };
        if refusal.is_none() && !verified {
            refusal = Some(match factor {
                Factor::Password => "wrong password".to_owned(),
                Factor::PublicKey => "unknown key".to_owned(),
                Factor::Totp => "wrong or reused code".to_owned(),
                Factor::Certificate => "certificate subject does not match".to_owned(),
            });
        }
        let actor = Actor {
            name: printable(user),
            source: source.clone(),
            protocol,
        };
        let (account, reason) = match (account, refusal) {
            (Some(account), None) => {
                progress.passed.push(factor);
                let factors = &account.access.factors;
                if !factors.satisfied_by(&progress.passed) {
                    progress.remaining = factors.remaining(&progress.passed);
                    tracing::debug!(account = %account.name, %factor, "factor proved; more required");
                    return Ok(LoginStep::Continue(progress.remaining.clone()));
                }
                let proved: Vec<&str> = progress.passed.iter().map(|f| f.as_str()).collect();
                let step = self
                    .open_session(
                        account,
                        &actor,
                        proved.join("+"),
                        progress.methods.as_deref(),
                        source,
                        protocol,
                    )
                    .await?;
                if matches!(step, LoginStep::Refused) {
                    progress.passed.clear();
                }
                return Ok(step);
            }
            (account, refusal) => (account, refusal.unwrap_or_else(|| "refused".to_owned())),
        };
        let event = self.stamp.event(
            &actor,
            EventKind::Login,
            printable(user),
            Outcome::Refused,
            format!("{factor}: {reason}"),
        );
        // The event, the offences and any ban they earn: one unit. A refusal because of a
        // ban or a lock is not scored.
        if reason.contains("banned") || reason.contains("locked") {
            self.record(vec![event], Durability::Relaxed).await?;
        } else {
            let offence = if account.is_some() {
                Offence::BadCredentials
            } else {
                Offence::UnknownAccount
            };
            let name = account.map(|a| a.name);
            self.record_and_score(vec![event], ip, name, offence)
                .await?;
        }
        Ok(LoginStep::Refused)
    }

    pub(super) async fn verify_password(
        &self,
        password: Secret<String>,
        phc: Option<String>,
    ) -> Result<bool> {
        let _permit = self
            .auth
            .hash_jobs
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CoreError::internal("password check failed"))?;
        tokio::task::spawn_blocking(move || password::verify(&password, phc.as_deref()))
            .await
            .map_err(|_| CoreError::internal("password check failed"))
    }
}

/// `password:123456` split at its last colon into the password and the code, when what
/// follows the colon is exactly six ASCII digits.
fn split_code(combined: &str) -> Option<(&str, &str)> {
    let (password, code) = combined.rsplit_once(':')?;
    (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())).then_some((password, code))
}

/// Compares two byte strings in time that depends only on their lengths.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            source_ip(Some("127.0.0.1:2222")),
            Some("127.0.0.1".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert_eq!(
            source_ip(Some("[::ffff:10.0.0.1]:22")),
            Some("10.0.0.1".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert_eq!(source_ip(Some("nonsense")), None);
    }

    #[test]
    fn a_code_splits_off_only_as_six_digits_after_the_last_colon() {
        assert_eq!(split_code("secret:123456"), Some(("secret", "123456")));
        assert_eq!(split_code("a:b:123456"), Some(("a:b", "123456")));
        assert_eq!(split_code(":123456"), Some(("", "123456")));
        for whole in [
            "secret",
            "secret123456",
            "secret:12345",
            "secret:1234567",
            "secret:12345a",
            "secret:123456:",
            "secret:１２３４５６",
            "secret: 123456",
        ] {
            assert_eq!(split_code(whole), None, "{whole:?}");
        }
    }
}
