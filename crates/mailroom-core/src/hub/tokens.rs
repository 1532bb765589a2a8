//! Bearer tokens: what a stateless protocol (the HTTPS API, and the web pages built on it)
//! holds instead of a connection after a login.
//!
//! A login through [`Hub::login`] ends in a registered session; [`Hub::issue_tokens`] turns it
//! into a short-lived access token and a longer-lived refresh token, both 256 random bits.
//! Only their SHA-256 is stored ([`TokenRecord`]), so a copy of the metadata store lets nobody
//! in. [`Hub::check_token`] is run on every request: besides the token's own expiry it checks
//! the account as it is now (deleted, disabled, locked, banned address, moved out of its
//! networks, other kind) and the account's token generation, which a new password or a
//! disable moves on, so such a change revokes every token in the same commit. Logout, a
//! session closed by the hub or an administrator, and a refresh remove tokens; expired ones are
//! swept by [`Hub::sweep_tokens`]. The negotiated methods a login agreed on (plain text, as the
//! front end wrote them) are stored on each of its tokens and carried over by a refresh, so
//! every node that checks a token knows them.
//!
//! The session registry sees one session per login (a token "session"), held by the Hub
//! while its tokens live, so `max_sessions`, the live-session list and kicks work as for the
//! file protocols.

use std::fmt;

use rand::RngExt;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::login::{Scope, source_ip};
use super::policy_cache::AccountPolicy;
use super::{Actor, ClientSession, Hub};
use crate::error::{CoreError, Result};
use crate::model::{Event, EventKind, Outcome, Protocol};
use crate::names::AccountName;
use crate::ports::{Durability, Tx};
use crate::secret::Secret;
use crate::sessions::LiveSession;

/// Whether a token is presented on requests or traded for new tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Presented as `Authorization: Bearer` on requests; short-lived.
    Access,
    /// Traded once for a new pair; longer-lived.
    Refresh,
}

impl TokenKind {
    /// Stable label for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }

    /// Parses the label written by [`TokenKind::as_str`].
    pub fn parse(input: &str) -> Result<TokenKind> {
        match input {
            "access" => Ok(TokenKind::Access),
            "refresh" => Ok(TokenKind::Refresh),
            other => Err(CoreError::invalid(format!("unknown token kind {other:?}"))),
        }
    }
}

/// A token as the metadata store keeps it: its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// SHA-256 of the token, lower-case hex.
    pub hash: String,
    /// Access or refresh.
    pub kind: TokenKind,
    /// The login it belongs to; every token of one login shares it.
    pub session: String,
    /// The account it acts for.
    pub account: AccountName,
    /// Client or admin.
    pub scope: Scope,
    /// The account's token generation when it was issued.
    pub epoch: u64,
    /// The peer address of the login.
    pub source: Option<String>,
    /// The protocol of the login.
    pub protocol: Protocol,
    /// When it was issued.
    pub created: OffsetDateTime,
    /// When it stops working.
    pub expires: OffsetDateTime,
    /// The negotiated methods the login agreed on, as the API wrote them
    /// (`authentication=password compression=zstd …`); `None` for clients that did not
    /// negotiate. Every token of one login carries the same.
    pub methods: Option<String>,
}

/// How long issued tokens live; the front end's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetimes {
    /// Access tokens.
    pub access: std::time::Duration,
    /// Refresh tokens, and so the whole login when it is refreshed in time.
    pub refresh: std::time::Duration,
}

impl Default for TokenLifetimes {
    fn default() -> Self {
        TokenLifetimes {
            access: std::time::Duration::from_secs(15 * 60),
            refresh: std::time::Duration::from_secs(12 * 3600),
        }
    }
}

/// A fresh token pair, to hand to the client once.
#[derive(Debug)]
pub struct IssuedTokens {
    /// The login's id, shared by its tokens (safe to show: it grants nothing).
    pub session: String,
    /// The account.
    pub account: AccountName,
    /// Client or admin.
    pub scope: Scope,
    /// The access token.
    pub access: Secret<String>,
    /// When the access token expires.
    pub access_expires: OffsetDateTime,
    /// The refresh token.
    pub refresh: Secret<String>,
    /// When the refresh token expires.
    pub refresh_expires: OffsetDateTime,
    /// The negotiated methods the login agreed on, as the front end wrote them.
    pub methods: Option<String>,
}

/// Who a valid access token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The login's id.
    pub session: String,
    /// The account.
    pub account: AccountName,
    /// Client or admin.
    pub scope: Scope,
    /// When the access token expires.
    pub expires: OffsetDateTime,
    /// The peer address of the request.
    pub source: Option<String>,
    /// The protocol of the request.
    pub protocol: Protocol,
    /// The negotiated methods the login agreed on, as the API wrote them; `None` for clients
    /// that did not negotiate.
    pub methods: Option<String>,
    /// The scopes of the API key presented (see [`super::api_keys`]), which bound what the
    /// request may do; `None` for the tokens of a login, which may do all their account may.
    /// For a key, `session` is the key's id and `expires` its expiry (the end of time when it
    /// has none).
    pub key_scopes: Option<super::api_keys::KeyScopes>,
}

impl TokenIdentity {
    /// The client session every mailbox call runs as; `None` for an admin token, which owns
    /// no mailbox.
    pub fn client_session(&self) -> Option<ClientSession> {
        (self.scope == Scope::Client).then(|| ClientSession {
            account: self.account.clone(),
            source: self.source.clone(),
            protocol: self.protocol,
        })
    }

    /// The actor of admin calls and audit events made with this token.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.account.to_string(),
            source: self.source.clone(),
            protocol: self.protocol,
        }
    }
}

/// The answer to a presented token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// The token is good for this identity.
    Valid(TokenIdentity),
    /// Refused; the reason is for the log, the client gets one opaque answer.
    Refused(String),
}

/// A fresh random token: 256 bits as 64 hex digits.
fn new_token() -> Secret<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes[..]);
    Secret::new(hex::encode(bytes))
}

/// The stored form of a token: SHA-256, lower-case hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token longer than this is refused before it is hashed.
const MAX_TOKEN_LEN: usize = 256;

impl Hub {
    /// The hub clock's current time (what token and upload expiry are measured against).
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Issues the first token pair of a login that [`Hub::login`] accepted. The Hub keeps
    /// `guard` (the registered session) until the login ends: logout, a close by the hub or an
    /// administrator, or the expiry of its refresh token. `methods` are the negotiated methods
    /// the login agreed on (`None`: the client did not negotiate); both tokens carry them, and
    /// so do the pairs of later refreshes, so every node that checks a token knows them.
    pub async fn issue_tokens(
        &self,
        session: &ClientSession,
        guard: LiveSession,
        scope: Scope,
        lifetimes: &TokenLifetimes,
        methods: Option<String>,
    ) -> Result<IssuedTokens> {
        let login = Login {
            id: uuid::Uuid::new_v4().simple().to_string(),
            account: session.account.clone(),
            scope,
            source: session.source.clone(),
            protocol: session.protocol,
            methods,
        };
        let (now, lifetimes) = (self.clock.now(), *lifetimes);
        let epoch = guard.info().token_epoch;
        let issued = self
            .write(Durability::Flush, move |tx| {
                let account = tx.account(&login.account)?.ok_or_else(|| {
                    CoreError::not_found(format!("no account named {}", login.account))
                })?;
                // A password change or disable committed between the login and now revokes
                // what the login would have been given.
                if account.token_epoch != epoch || account.disabled {
                    return Err(CoreError::denied(format!(
                        "{} changed since this login (password or state); log in again",
                        login.account
                    )));
                }
                store_pair(tx, &login, epoch, now, &lifetimes)
            })
            .await?;
        self.auth
            .token_sessions()
            .insert(issued.session.clone(), guard);
        Ok(issued)
    }

    /// Checks an access token presented from `source` (the request's peer) over `protocol`:
    /// it must exist, be an access token, be unexpired, be of the account's current token
    /// generation, and the account must still be allowed to act in the token's scope from
    /// `source` (not deleted, disabled, locked, banned, or outside its networks). One read of
    /// the store.
    pub async fn check_token(
        &self,
        token: &str,
        source: Option<String>,
        protocol: Protocol,
    ) -> Result<TokenCheck> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(TokenCheck::Refused("malformed token".to_owned()));
        }
        let hash = token_hash(token);
        let found = self
            .credential_with_account(move |tx| tx.token(&hash), |r| &r.account)
            .await?;
        let Some((record, account)) = found else {
            return Ok(TokenCheck::Refused("unknown or revoked token".to_owned()));
        };
        if record.kind != TokenKind::Access {
            return Ok(TokenCheck::Refused(
                "a refresh token is not an access token".to_owned(),
            ));
        }
        if let Some(reason) = self
            .token_refusal(&record, account.as_ref(), source.as_deref())
            .await?
        {
            return Ok(TokenCheck::Refused(reason));
        }
        Ok(TokenCheck::Valid(TokenIdentity {
            session: record.session,
            account: record.account,
            scope: record.scope,
            expires: record.expires,
            source,
            protocol,
            methods: record.methods,
            key_scopes: None,
        }))
    }

    /// Why a stored token no longer works, if it does not: `account` is its account's policy
    /// as read with it (`None`: deleted).
    async fn token_refusal(
        &self,
        record: &TokenRecord,
        account: Option<&AccountPolicy>,
        source: Option<&str>,
    ) -> Result<Option<String>> {
        if record.expires <= self.clock.now() {
            return Ok(Some(format!("{} token expired", record.kind.as_str())));
        }
        let Some(account) = account else {
            return Ok(Some("account deleted".to_owned()));
        };
        if account.token_epoch != record.epoch {
            return Ok(Some(
                "token revoked (password changed or account disabled)".to_owned(),
            ));
        }
        self.standing(&record.account, account, source_ip(source), record.scope)
            .await
    }

    /// Trades a refresh token for a new pair of the same login, with the login's negotiated
    /// methods. The refresh token works once; the login's earlier access tokens stop working.
    /// `None` when the token is unknown, used, expired or revoked, or the account may no
    /// longer act.
    pub async fn refresh_tokens(
        &self,
        refresh: &str,
        source: Option<String>,
        lifetimes: &TokenLifetimes,
    ) -> Result<Option<IssuedTokens>> {
        if refresh.is_empty() || refresh.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let (hash, cache) = (token_hash(refresh), self.policy.clone());
        // Taken in its own commit: of two requests racing with one refresh token, one wins.
        let taken = self
            .write(Durability::Flush, move |tx| {
                let Some(record) = tx.take_token(&hash)? else {
                    return Ok(None);
                };
                let account = cache.get(tx)?.account(&record.account).cloned();
                Ok(Some((record, account)))
            })
            .await?;
        let Some((record, account)) = taken else {
            return Ok(None);
        };
        if record.kind != TokenKind::Refresh {
            // An access token presented here is spent too: it was shown where it should not be.
            self.end_login(&record.session, None).await?;
            return Ok(None);
        }
        if let Some(reason) = self
            .token_refusal(&record, account.as_ref(), source.as_deref())
            .await?
        {
            tracing::info!(account = %record.account, reason = %reason, "refresh refused");
            self.end_login(&record.session, None).await?;
            return Ok(None);
        }
        let login = Login {
            id: record.session.clone(),
            account: record.account.clone(),
            scope: record.scope,
            source,
            protocol: record.protocol,
            methods: record.methods.clone(),
        };
        let (now, lifetimes) = (self.clock.now(), *lifetimes);
        let issued = self
            .write(Durability::Flush, move |tx| {
                // The login's other tokens (its current access token) end with the trade.
                tx.delete_token_session(&login.id)?;
                store_pair(tx, &login, record.epoch, now, &lifetimes)
            })
            .await?;
        Ok(Some(issued))
    }

    /// Ends the login of `identity` (logout): its tokens are deleted with a `session.closed`
    /// event, and its place in the session registry is freed. An API key's identity is
    /// refused (PermissionDenied): revoking a key is [`Hub::revoke_api_key`].
    pub async fn logout(&self, identity: &TokenIdentity) -> Result<()> {
        if identity.is_api_key() {
            return Err(CoreError::denied(
                "an API key is no login and cannot log out; revoke it instead",
            ));
        }
        let event = self.stamp.event(
            &identity.actor(),
            EventKind::SessionClosed,
            identity.account.to_string(),
            Outcome::Ok,
            format!("logout of {} session {}", identity.scope, identity.session),
        );
        self.end_login(&identity.session, Some(event)).await
    }

    /// Deletes a login's tokens (with `event`, if any) and drops its registry entry.
    async fn end_login(&self, session: &str, event: Option<Event>) -> Result<()> {
        let login = session.to_owned();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            tx.delete_token_session(&login)?;
            stamp.record(tx, event.as_slice())
        })
        .await?;
        self.auth.token_sessions().remove(session);
        Ok(())
    }

    /// Ends the token login registered under registry id `registry_id`, if one is: called when
    /// the hub or an administrator closes that session.
    pub(crate) async fn end_token_session_of(&self, registry_id: u64) -> Result<()> {
        let session = self
            .auth
            .token_sessions()
            .iter()
            .find(|(_, guard)| guard.info().id == registry_id)
            .map(|(session, _)| session.clone());
        match session {
            Some(session) => self.end_login(&session, None).await,
            None => Ok(()),
        }
    }

    /// Deletes expired tokens and frees the registry entries of logins that have none left.
    /// Returns how many tokens were deleted.
    pub async fn sweep_tokens(&self) -> Result<u64> {
        let now = self.clock.now();
        let (deleted, ended) = self
            .write(Durability::Flush, move |tx| tx.delete_expired_tokens(now))
            .await?;
        let mut sessions = self.auth.token_sessions();
        for session in ended {
            sessions.remove(&session);
        }
        Ok(deleted)
    }
}

/// One login's identity, which every token pair of it carries.
pub(super) struct Login {
    /// The login's id.
    pub(super) id: String,
    pub(super) account: AccountName,
    pub(super) scope: Scope,
    pub(super) source: Option<String>,
    pub(super) protocol: Protocol,
    /// The negotiated methods it agreed on, if any.
    pub(super) methods: Option<String>,
}

/// Stores a fresh access and refresh token of `login` in the unit's transaction and returns
/// them, to hand to the client once.
pub(super) fn store_pair(
    tx: &mut dyn Tx,
    login: &Login,
    epoch: u64,
    now: OffsetDateTime,
    lifetimes: &TokenLifetimes,
) -> Result<IssuedTokens> {
    let later = |d: std::time::Duration| {
        now + time::Duration::try_from(d).unwrap_or(time::Duration::MINUTE)
    };
    let (access, refresh) = (new_token(), new_token());
    let record = |token: &Secret<String>, kind, expires| TokenRecord {
        hash: token_hash(token.expose()),
        kind,
        session: login.id.clone(),
        account: login.account.clone(),
        scope: login.scope,
        epoch,
        source: login.source.clone(),
        protocol: login.protocol,
        created: now,
        expires,
        methods: login.methods.clone(),
    };
    let (access_expires, refresh_expires) = (later(lifetimes.access), later(lifetimes.refresh));
    tx.insert_tokens(&[
        record(&access, TokenKind::Access, access_expires),
        record(&refresh, TokenKind::Refresh, refresh_expires),
    ])?;
    Ok(IssuedTokens {
        session: login.id.clone(),
        account: login.account.clone(),
        scope: login.scope,
        access,
        access_expires,
        refresh,
        refresh_expires,
        methods: login.methods.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 64, "256 bits as hex");
        let hash = token_hash(a.expose());
        assert_eq!(hash.len(), 64);
        assert_ne!(&hash, a.expose());
        assert_eq!(hash, token_hash(a.expose()));
    }

    #[test]
    fn labels_round_trip() {
        for kind in [TokenKind::Access, TokenKind::Refresh] {
            assert_eq!(TokenKind::parse(kind.as_str()).ok(), Some(kind));
        }
        for scope in [Scope::Client, Scope::Admin] {
            assert_eq!(Scope::parse(scope.as_str()).ok(), Some(scope));
        }
        assert!(Scope::parse("root").is_err());
    }

    #[test]
    fn default_lifetimes_are_short() {
        let lifetimes = TokenLifetimes::default();
        assert_eq!(lifetimes.access.as_secs(), 900);
        assert!(lifetimes.refresh > lifetimes.access);
    }
}
