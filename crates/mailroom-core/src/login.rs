//! Authentication and defence: logins with one or several factors, source networks, bans,
//! live sessions and their limits, TOTP enrolment.
//!
//! Every front end logs in through these calls and gets the same answers: a refusal looks
//! the same and takes the same work whether or not the account exists (unknown accounts pay
//! an Argon2 verification against a dummy hash; a key offered for an unknown account is
//! refused like an unknown key). The reason of a refusal goes to the audit trail only.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use rand::RngExt;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::access::{
    Ban, BanSubject, Factor, TotpEnrolment, canonical, in_networks, recovery_code_hash,
};
use crate::defender::{Defender, DefenderConfig, Offence};
use crate::error::{CoreError, ErrorKind, Result};
use crate::hub::{Actor, ClientSession, Hub, printable};
use crate::model::{Account, AccountKind, EventKind, Outcome, Protocol};
use crate::names::AccountName;
use crate::password;
use crate::ports::Durability;
use crate::secret::Secret;
use crate::sessions::{SessionGuard, SessionInfo, Sessions};

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

/// How often the ban list is re-read from the metadata store, so bans placed by another
/// process (the admin CLI, another node) take effect.
const BAN_REFRESH: time::Duration = time::Duration::seconds(2);

/// At most one "connection refused" event per address in this time, so a banned address
/// hammering the port does not write the audit trail per connection.
const REFUSAL_EVENT_INTERVAL: time::Duration = time::Duration::seconds(60);

/// When a ban too long for the calendar ends (within what the metadata store keeps).
const MAX_BAN_END: OffsetDateTime = time::macros::datetime!(2200-01-01 00:00 UTC);

/// The longest ban an administrator may place: ten years.
const MAX_MANUAL_BAN: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

/// Recovery codes made at enrolment.
const RECOVERY_CODES: usize = 10;

/// The authentication state the Hub keeps.
pub(crate) struct Guard {
    config: AuthConfig,
    defender: Defender,
    pub(crate) sessions: Arc<Sessions>,
    hash_jobs: Arc<Semaphore>,
    bans: Mutex<BanCache>,
    refusals: Mutex<HashMap<IpAddr, OffsetDateTime>>,
    /// The registered sessions of token logins (see [`crate::tokens`]), by login id.
    token_sessions: Mutex<HashMap<String, SessionGuard>>,
}

#[derive(Default)]
struct BanCache {
    loaded: Option<OffsetDateTime>,
    active: HashMap<BanSubject, OffsetDateTime>,
}

impl Guard {
    pub(crate) fn new(config: AuthConfig) -> Guard {
        Guard {
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
    pub(crate) fn token_sessions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, SessionGuard>> {
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

    fn bind(&mut self, user: &str) {
        if self.user.as_deref() != Some(user) {
            *self = LoginProgress {
                user: Some(user.to_owned()),
                scope: self.scope,
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
    Accepted(ClientSession, SessionGuard),
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

/// What an administrator gets back from a TOTP enrolment, to hand to the user once.
#[derive(Debug, Clone)]
pub struct TotpSetup {
    /// The `otpauth://` URI for authenticator apps (holds the secret).
    pub uri: Secret<String>,
    /// The secret in base32, for manual entry.
    pub secret: Secret<String>,
    /// Single-use recovery codes.
    pub recovery_codes: Vec<Secret<String>>,
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
        self.guard = Guard::new(config);
        self
    }

    /// The authentication and defence settings.
    pub fn auth_config(&self) -> &AuthConfig {
        &self.guard.config
    }

    // ----- admission -------------------------------------------------------------------------

    /// Decides whether a new connection from `source` may start at all: refused when the
    /// address is on the deny list or banned (the safe list is never refused). Refusals are
    /// accounted at most once a minute per address.
    pub async fn admit(&self, source: SocketAddr, protocol: Protocol) -> Result<()> {
        let ip = canonical(source.ip());
        let defender = self.guard.defender.config();
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
                .guard
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
            let event = self.event(
                &actor,
                EventKind::Login,
                ip.to_string(),
                Outcome::Refused,
                format!("connection refused: {reason}"),
            );
            self.meta.record(&[event], Durability::Relaxed).await?;
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
        let event = self.event(
            &actor,
            EventKind::Login,
            printable(user),
            Outcome::Refused,
            reason.to_owned(),
        );
        self.meta.record(&[event], Durability::Relaxed).await?;
        if let Some(ip) = ip {
            self.score(ip, None, Offence::ProtocolError).await?;
        }
        Ok(())
    }

    /// Scores a connection that ended without authenticating (no login attempted or none
    /// completed), without an event of its own.
    pub async fn score_unauthenticated(&self, source: Option<String>) -> Result<()> {
        match source_ip(source.as_deref()) {
            Some(ip) => self.score(ip, None, Offence::NoAuthentication).await,
            None => Ok(()),
        }
    }

    async fn login_candidate(&self, user: &str) -> Result<Option<Account>> {
        match AccountName::parse(user) {
            Ok(name) => self.meta.account(&name).await,
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
        if let Some(reason) = self.standing(account, ip, scope).await? {
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
    pub(crate) async fn standing(
        &self,
        account: &Account,
        ip: Option<IpAddr>,
        scope: Scope,
    ) -> Result<Option<String>> {
        let safe = ip.is_some_and(|ip| self.guard.defender.config().is_safe(ip));
        if !safe {
            if let Some(ip) = ip
                && self.active_ban(&BanSubject::Address(ip)).await?.is_some()
            {
                return Ok(Some("address banned".to_owned()));
            }
            if self
                .active_ban(&BanSubject::Account(account.name.clone()))
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
        let factor = credential.factor();
        let ip = source_ip(source.as_deref());
        let account = self.login_candidate(user).await?;
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
                let info = SessionInfo {
                    id: 0,
                    account: account.name.clone(),
                    source: source.clone(),
                    protocol,
                    started: self.clock.now(),
                };
                match self
                    .guard
                    .sessions
                    .register(info, account.access.limits.max_sessions)
                {
                    Some(guard) => {
                        let proved: Vec<&str> =
                            progress.passed.iter().map(|f| f.as_str()).collect();
                        let event = self.event(
                            &actor,
                            EventKind::Login,
                            account.name.to_string(),
                            Outcome::Ok,
                            proved.join("+"),
                        );
                        self.meta.record(&[event], Durability::Relaxed).await?;
                        return Ok(LoginStep::Accepted(
                            ClientSession {
                                account: account.name,
                                source,
                                protocol,
                            },
                            guard,
                        ));
                    }
                    None => {
                        // Not the client's fault: no score.
                        progress.passed.clear();
                        let event = self.event(
                            &actor,
                            EventKind::Login,
                            account.name.to_string(),
                            Outcome::Refused,
                            format!(
                                "{factor}: session limit reached ({} open)",
                                account.access.limits.max_sessions.unwrap_or(0)
                            ),
                        );
                        self.meta.record(&[event], Durability::Relaxed).await?;
                        return Ok(LoginStep::Refused);
                    }
                }
            }
            (account, refusal) => (account, refusal.unwrap_or_else(|| "refused".to_owned())),
        };
        let event = self.event(
            &actor,
            EventKind::Login,
            printable(user),
            Outcome::Refused,
            format!("{factor}: {reason}"),
        );
        self.meta.record(&[event], Durability::Relaxed).await?;
        if let Some(ip) = ip
            && !reason.contains("banned")
            && !reason.contains("locked")
        {
            let offence = if account.is_some() {
                Offence::BadCredentials
            } else {
                Offence::UnknownAccount
            };
            self.score(ip, account.as_ref().map(|a| a.name.clone()), offence)
                .await?;
        }
        Ok(LoginStep::Refused)
    }

    async fn verify_password(&self, password: Secret<String>, phc: Option<String>) -> Result<bool> {
        let _permit = self
            .guard
            .hash_jobs
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CoreError::internal("password check failed"))?;
        tokio::task::spawn_blocking(move || password::verify(&password, phc.as_deref()))
            .await
            .map_err(|_| CoreError::internal("password check failed"))
    }

    /// Checks a TOTP code (and spends its step) or a recovery code (and spends it).
    async fn check_code(&self, account: &Account, code: &Secret<String>) -> Result<bool> {
        let Some(enrolment) = &account.totp else {
            return Ok(false);
        };
        let code = code.expose().trim();
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            let totp = totp(enrolment, &account.name, &self.guard.config.totp_issuer)?;
            let now = u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0);
            return match totp.check(code, now) {
                Some(step) => self.meta.use_totp_step(&account.name, step).await,
                None => Ok(false),
            };
        }
        if code.len() > 64 {
            return Ok(false);
        }
        let used = self
            .meta
            .use_recovery_code(&account.name, &recovery_code_hash(code))
            .await?;
        if used {
            tracing::warn!(account = %account.name, "recovery code used");
        }
        Ok(used)
    }

    // ----- defence ---------------------------------------------------------------------------

    /// Scores an offence from `ip` (and against `account`), banning what reaches the
    /// threshold.
    async fn score(
        &self,
        ip: IpAddr,
        account: Option<AccountName>,
        offence: Offence,
    ) -> Result<()> {
        if self.guard.defender.config().is_safe(ip) {
            return Ok(());
        }
        let mut subjects = vec![BanSubject::Address(ip)];
        if let Some(name) = account {
            subjects.push(BanSubject::Account(name));
        }
        let now = self.clock.now();
        for subject in self.guard.defender.score(&subjects, offence, now) {
            let previous = self.meta.ban(&subject).await?;
            let level = previous.map_or(1, |b| b.level.saturating_add(1));
            let length = self.guard.defender.config().ban_length(level);
            let reason = format!(
                "{} points in {} min",
                self.guard.defender.config().threshold,
                self.guard.defender.config().window.as_secs() / 60
            );
            self.place_ban(&Actor::system(), subject, length, level, reason)
                .await?;
        }
        Ok(())
    }

    async fn place_ban(
        &self,
        actor: &Actor,
        subject: BanSubject,
        length: std::time::Duration,
        level: u32,
        reason: String,
    ) -> Result<Ban> {
        let now = self.clock.now();
        // A length past the calendar's end (a typo of many zeros) bans until its end.
        let until = time::Duration::try_from(length)
            .ok()
            .and_then(|length| now.checked_add(length))
            .unwrap_or(MAX_BAN_END);
        let ban = Ban {
            subject: subject.clone(),
            until,
            level,
            reason: reason.clone(),
            created: now,
        };
        let event = self.event(
            actor,
            EventKind::Ban,
            subject.key(),
            Outcome::Ok,
            format!(
                "banned until {} (ban #{level}, {} min): {reason}",
                rfc3339(until),
                length.as_secs() / 60
            ),
        );
        if actor.protocol == Protocol::System {
            tracing::warn!(subject = %subject, until = %rfc3339(until), level, reason = %reason, "ban");
        }
        self.meta.put_ban(&ban, &event).await?;
        self.guard
            .bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .active
            .insert(subject, until);
        Ok(ban)
    }

    /// When the ban of `subject` ends, if one is in force. Reads a cache refreshed from the
    /// metadata store every two seconds.
    async fn active_ban(&self, subject: &BanSubject) -> Result<Option<OffsetDateTime>> {
        let now = self.clock.now();
        let stale = {
            let cache = self
                .guard
                .bans
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            cache
                .loaded
                .is_none_or(|at| at + BAN_REFRESH <= now || at > now)
        };
        if stale {
            self.refresh_bans().await?;
        }
        let cache = self
            .guard
            .bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(cache
            .active
            .get(subject)
            .copied()
            .filter(|until| *until > now))
    }

    /// Re-reads the bans in force from the metadata store.
    pub async fn refresh_bans(&self) -> Result<()> {
        let now = self.clock.now();
        let active: HashMap<BanSubject, OffsetDateTime> = self
            .meta
            .bans()
            .await?
            .into_iter()
            .filter(|b| b.active(now))
            .map(|b| (b.subject, b.until))
            .collect();
        let mut cache = self
            .guard
            .bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.active = active;
        cache.loaded = Some(now);
        Ok(())
    }

    /// Every ban, in force or ended (kept for the growth of the next one).
    pub async fn bans(&self) -> Result<Vec<Ban>> {
        self.meta.bans().await
    }

    /// Bans an address or an account for `length`, by hand. The safe list cannot be banned.
    pub async fn ban(
        &self,
        actor: &Actor,
        subject: BanSubject,
        length: std::time::Duration,
        reason: &str,
    ) -> Result<Ban> {
        if let BanSubject::Address(ip) = &subject
            && self.guard.defender.config().is_safe(*ip)
        {
            return Err(CoreError::denied(format!(
                "{ip} is on the safe list and is never banned"
            )));
        }
        if length.is_zero() {
            return Err(CoreError::invalid("a ban must last longer than zero"));
        }
        if length > MAX_MANUAL_BAN {
            return Err(CoreError::invalid("a ban lasts at most 3650 days"));
        }
        let level = self
            .meta
            .ban(&subject)
            .await?
            .map_or(1, |b| b.level.saturating_add(1));
        let reason = if reason.trim().is_empty() {
            "banned by an administrator".to_owned()
        } else {
            printable(reason)
        };
        self.place_ban(actor, subject, length, level, reason).await
    }

    /// Lifts a ban and forgets its history and score.
    pub async fn unban(&self, actor: &Actor, subject: &BanSubject) -> Result<()> {
        let event = self.event(
            actor,
            EventKind::Ban,
            subject.key(),
            Outcome::Ok,
            "ban lifted".to_owned(),
        );
        self.meta.delete_ban(subject, &event).await?;
        self.guard.defender.forgive(subject);
        self.guard
            .bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .active
            .remove(subject);
        Ok(())
    }

    // ----- sessions --------------------------------------------------------------------------

    /// The live sessions of this process.
    pub fn live_sessions(&self) -> Vec<SessionInfo> {
        self.guard.sessions.list()
    }

    /// Closes every live session whose account was disabled, deleted, locked or moved out of
    /// the session's network, and re-reads the bans. Front ends close the connection when the
    /// session's guard fires. Run it every few seconds.
    pub async fn enforce_sessions(&self) -> Result<usize> {
        self.refresh_bans().await?;
        let live = self.guard.sessions.list();
        if live.is_empty() {
            return Ok(0);
        }
        let accounts: HashMap<AccountName, Account> = self
            .meta
            .accounts()
            .await?
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect();
        let mut closed = 0;
        for session in live {
            let ip = source_ip(session.source.as_deref());
            let reason = match accounts.get(&session.account) {
                None => Some("account deleted".to_owned()),
                Some(account) if account.disabled => Some("account disabled".to_owned()),
                Some(account)
                    if !account.access.networks.is_empty()
                        && !ip.is_some_and(|ip| in_networks(&account.access.networks, ip)) =>
                {
                    Some("source address no longer in the account's networks".to_owned())
                }
                Some(account) => {
                    let safe = ip.is_some_and(|ip| self.guard.defender.config().is_safe(ip));
                    let banned = !safe
                        && (self
                            .active_ban(&BanSubject::Account(account.name.clone()))
                            .await?
                            .is_some()
                            || match ip {
                                Some(ip) => {
                                    self.active_ban(&BanSubject::Address(ip)).await?.is_some()
                                }
                                None => false,
                            });
                    banned.then(|| "banned".to_owned())
                }
            };
            if let Some(reason) = reason {
                let actor = Actor {
                    name: session.account.to_string(),
                    source: session.source.clone(),
                    protocol: session.protocol,
                };
                let event = self.event(
                    &actor,
                    EventKind::SessionClosed,
                    session.account.to_string(),
                    Outcome::Ok,
                    format!("closed by the hub: {reason}"),
                );
                tracing::info!(account = %session.account, reason = %reason, "closing session");
                // Accounted first, so the event exists by the time the client sees the close.
                self.meta.record(&[event], Durability::Relaxed).await?;
                if self.guard.sessions.close(session.id, &reason) {
                    closed += 1;
                }
                // A token login has no connection to close: its tokens go instead.
                self.end_token_session_of(session.id).await?;
            }
        }
        Ok(closed)
    }

    // ----- TOTP ------------------------------------------------------------------------------

    /// Enrols an account in TOTP with a fresh secret and fresh recovery codes, replacing an
    /// earlier enrolment. The secret and codes are returned once, to hand to the user.
    pub async fn enroll_totp(&self, actor: &Actor, name: &AccountName) -> Result<TotpSetup> {
        let mut account = self.account(name).await?;
        if account.kind == AccountKind::Admin {
            return Err(CoreError::denied(
                "admin accounts cannot log in over the client protocols; TOTP is for clients",
            ));
        }
        let mut secret = [0u8; 20];
        rand::rng().fill(&mut secret[..]);
        let enrolment = TotpEnrolment {
            secret: Secret::new(base32(&secret)),
            last_step: None,
            recovery: Vec::new(),
        };
        let uri = totp(&enrolment, name, &self.guard.config.totp_issuer)?
            .to_url()
            .map_err(|_| CoreError::internal("could not build the otpauth URI"))?;
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
        account.totp = Some(TotpEnrolment {
            recovery: codes.iter().map(|c| recovery_code_hash(c)).collect(),
            ..enrolment.clone()
        });
        let event = self.event(
            actor,
            EventKind::Admin,
            format!("account {name}"),
            Outcome::Ok,
            format!("enroll totp ({RECOVERY_CODES} recovery codes)"),
        );
        self.meta.update_account(&account, &event).await?;
        Ok(TotpSetup {
            uri: Secret::new(uri),
            secret: enrolment.secret,
            recovery_codes: codes.into_iter().map(Secret::new).collect(),
        })
    }

    /// Removes an account's TOTP enrolment. Refused while its required factors include TOTP.
    pub async fn remove_totp(&self, actor: &Actor, name: &AccountName) -> Result<()> {
        let mut account = self.account(name).await?;
        if account.totp.is_none() {
            return Err(CoreError::not_found(format!(
                "{name} has no TOTP enrolment"
            )));
        }
        if account.access.factors.factors().contains(&Factor::Totp) {
            return Err(CoreError::new(
                ErrorKind::Conflict,
                format!(
                    "{name} requires totp ({}): change that with `mailroom account set {name} --require …` first",
                    account.access.factors
                ),
            ));
        }
        account.totp = None;
        let event = self.event(
            actor,
            EventKind::Admin,
            format!("account {name}"),
            Outcome::Ok,
            "remove totp".to_owned(),
        );
        self.meta.update_account(&account, &event).await
    }
}

/// The TOTP generator of an enrolment: SHA-1, 6 digits, 30 s steps, one step of skew (what
/// every authenticator app does).
fn totp(enrolment: &TotpEnrolment, name: &AccountName, issuer: &str) -> Result<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(enrolment.secret.expose())
        .map_err(|_| CoreError::internal("stored TOTP secret is not base32"))?;
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_account_name(name.as_str())
        .with_issuer(Some(issuer.replace(':', "")))
        .build()
        .map_err(|_| CoreError::internal("stored TOTP secret is not usable"))
}

/// The current TOTP code of a base32 secret at `unix_time`, for tests and tools that play the
/// authenticator app.
pub fn totp_code(secret_base32: &str, unix_time: u64) -> Result<String> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32)
        .map_err(|_| CoreError::invalid("not a base32 TOTP secret"))?;
    let totp = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .map_err(|_| CoreError::invalid("not a usable TOTP secret"))?;
    Ok(totp.generate(unix_time).to_string())
}

/// RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A recovery code: 16 characters from an alphabet without look-alikes (79 bits), in groups
/// of four.
fn recovery_code() -> String {
    const ALPHABET: &[u8; 31] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let chars: Vec<char> = (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn totp_codes_match_rfc6238() {
        // RFC 6238 appendix B, SHA-1, secret "12345678901234567890", 8 digits there; the
        // last 6 digits are the 6-digit code.
        let secret = base32(b"12345678901234567890");
        assert_eq!(totp_code(&secret, 59).unwrap(), "287082");
        assert_eq!(totp_code(&secret, 1_111_111_109).unwrap(), "081804");
    }

    #[test]
    fn recovery_codes_are_random_and_grouped() {
        let a = recovery_code();
        let b = recovery_code();
        assert_ne!(a, b);
        assert_eq!(a.len(), 19);
        assert_eq!(a.matches('-').count(), 3);
    }

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
}
