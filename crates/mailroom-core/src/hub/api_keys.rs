//! API keys: long-lived secrets with which unattended clients (the client agent on a server,
//! scripts) call the HTTPS API without a login.
//!
//! An API key belongs to one client account and carries a set of scopes ([`KeyScopes`]:
//! `receive` lists the inbox, downloads and acknowledges; `send` uploads, lists what was sent
//! and recalls). Its secret, `mrk_<id>_<64 hex digits>`, is shown once, by
//! [`Hub::create_api_key`]; the store keeps only its SHA-256 ([`ApiKeyRecord`]), found by the
//! id the secret carries and compared in constant time. [`Hub::check_api_key`] runs on every
//! request, as [`Hub::check_token`] does, and answers the same [`TokenIdentity`], with the key's
//! scopes in [`TokenIdentity::key_scopes`]: besides the key's own expiry it checks the account
//! as it is now (deleted, disabled, locked, banned address, outside its networks, not a
//! client). A disable or a new password does not revoke keys (they are no login of a
//! password), but a disabled account's keys are refused while it is disabled. When a key was
//! last used is written at most once a minute, relaxed. Every creation and revocation is an
//! audit event of the account (`add api key ID LABEL`, `revoke api key ID`); the secret never
//! is. At most [`MAX_API_KEYS_PER_ACCOUNT`] keys per account.

use std::fmt;

use rand::RngExt;
use time::OffsetDateTime;

use super::login::{constant_time_eq, source_ip};
use super::tokens::{TokenCheck, TokenIdentity, token_hash};
use super::{Actor, Hub, Scope};
use crate::error::{CoreError, ErrorKind, Result};
use crate::model::{AccountKind, Protocol};
use crate::names::AccountName;
use crate::ports::Durability;
use crate::secret::Secret;

/// What every API key's secret starts with, so a front end tells it from a token.
pub const API_KEY_PREFIX: &str = "mrk_";

/// The most API keys one account may have.
pub const MAX_API_KEYS_PER_ACCOUNT: usize = 20;

/// The longest label of an API key, in characters.
pub const MAX_API_KEY_LABEL: usize = 64;

/// How long after its last recorded use a key's use is recorded again.
const TOUCH_EVERY: time::Duration = time::Duration::MINUTE;

/// Hex digits of a key's id (a UUID v4, simple form).
const ID_LEN: usize = 32;

/// Hex digits of a key's random part (256 bits).
const RANDOM_LEN: usize = 64;

/// One thing an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyScope {
    /// Upload, list what was sent, recall.
    Send,
    /// List the inbox, download, acknowledge.
    Receive,
}

impl KeyScope {
    /// Every scope, in the order labels are written.
    pub const ALL: [KeyScope; 2] = [KeyScope::Send, KeyScope::Receive];

    /// The stable label (`send`, `receive`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Send => "send",
            KeyScope::Receive => "receive",
        }
    }

    /// Parses a label written by [`KeyScope::as_str`].
    pub fn parse(input: &str) -> Result<KeyScope> {
        match input.trim() {
            "send" => Ok(KeyScope::Send),
            "receive" => Ok(KeyScope::Receive),
            other => Err(CoreError::invalid(format!(
                "unknown API key scope {:?}: use send or receive",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes of an API key: a set of [`KeyScope`]s. A key holds at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyScopes {
    send: bool,
    receive: bool,
}

impl KeyScopes {
    /// Both scopes.
    pub const ALL: KeyScopes = KeyScopes {
        send: true,
        receive: true,
    };

    /// The set of `scopes` (repeats count once).
    pub fn of(scopes: impl IntoIterator<Item = KeyScope>) -> KeyScopes {
        let mut set = KeyScopes::default();
        for scope in scopes {
            match scope {
                KeyScope::Send => set.send = true,
                KeyScope::Receive => set.receive = true,
            }
        }
        set
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: KeyScope) -> bool {
        match scope {
            KeyScope::Send => self.send,
            KeyScope::Receive => self.receive,
        }
    }

    /// Whether the set is empty (no key may have it).
    pub fn is_empty(self) -> bool {
        !self.send && !self.receive
    }

    /// The scopes in the set, in [`KeyScope::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = KeyScope> {
        KeyScope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The labels of the scopes in the set.
    pub fn labels(self) -> Vec<&'static str> {
        self.iter().map(KeyScope::as_str).collect()
    }

    /// Parses a comma-separated list of labels (`send,receive`), as [`fmt::Display`] writes
    /// it; an empty list is refused.
    pub fn parse(input: &str) -> Result<KeyScopes> {
        let scopes = input
            .split(',')
            .map(KeyScope::parse)
            .collect::<Result<Vec<_>>>()?;
        let set = KeyScopes::of(scopes);
        if set.is_empty() {
            return Err(no_scope());
        }
        Ok(set)
    }
}

impl fmt::Display for KeyScopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.labels().join(","))
    }
}

/// An API key as the metadata store keeps it: the SHA-256 of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Its id: a UUID v4, 32 lower-case hex digits; part of the secret, safe to show.
    pub id: String,
    /// The client account it acts for.
    pub account: AccountName,
    /// What the account's owner called it (1 to 64 printable characters).
    pub label: String,
    /// SHA-256 of the secret, lower-case hex.
    pub hash: String,
    /// What it may do.
    pub scopes: KeyScopes,
    /// When it was made.
    pub created: OffsetDateTime,
    /// When it stops working; `None`: never.
    pub expires: Option<OffsetDateTime>,
    /// When it was last used (written at most once a minute); `None`: never.
    pub last_used: Option<OffsetDateTime>,
}

/// What may be shown of an API key: everything but its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// Its id.
    pub id: String,
    /// The account it acts for.
    pub account: AccountName,
    /// Its label.
    pub label: String,
    /// What it may do.
    pub scopes: KeyScopes,
    /// When it was made.
    pub created: OffsetDateTime,
    /// When it stops working; `None`: never.
    pub expires: Option<OffsetDateTime>,
    /// When it was last used; `None`: never.
    pub last_used: Option<OffsetDateTime>,
}

impl From<&ApiKeyRecord> for ApiKeyInfo {
    fn from(record: &ApiKeyRecord) -> ApiKeyInfo {
        ApiKeyInfo {
            id: record.id.clone(),
            account: record.account.clone(),
            label: record.label.clone(),
            scopes: record.scopes,
            created: record.created,
            expires: record.expires,
            last_used: record.last_used,
        }
    }
}

/// Whether a presented bearer secret is an API key (by its prefix), for front ends to choose
/// between [`Hub::check_api_key`] and [`Hub::check_token`].
pub fn is_api_key(secret: &str) -> bool {
    secret.starts_with(API_KEY_PREFIX)
}

/// The id a well-formed secret carries, or `None`.
fn key_id(secret: &str) -> Option<&str> {
    let (id, random) = secret.strip_prefix(API_KEY_PREFIX)?.split_once('_')?;
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex(id, ID_LEN) && hex(random, RANDOM_LEN)).then_some(id)
}

/// A new key's id and secret.
fn new_secret() -> (String, Secret<String>) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut bytes = [0u8; RANDOM_LEN / 2];
    rand::rng().fill(&mut bytes[..]);
    let secret = Secret::new(format!("{API_KEY_PREFIX}{id}_{}", hex::encode(bytes)));
    (id, secret)
}

/// Checks a label: 1 to [`MAX_API_KEY_LABEL`] characters, none a control character, not only
/// spaces.
fn check_label(label: &str) -> Result<()> {
    let chars = label.chars().count();
    if label.trim().is_empty() || chars > MAX_API_KEY_LABEL {
        return Err(CoreError::invalid(format!(
            "an API key's label has 1 to {MAX_API_KEY_LABEL} characters"
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            "an API key's label has only printable characters",
        ));
    }
    Ok(())
}

fn no_scope() -> CoreError {
    CoreError::invalid("an API key needs at least one scope: send, receive or both")
}

fn no_account(name: &AccountName) -> CoreError {
    CoreError::not_found(format!("no account named {name}"))
}

impl TokenIdentity {
    /// Refuses (PermissionDenied, naming the scope) a request that needs `scope` when it is
    /// made with an API key without it; ordinary tokens have every scope.
    pub fn require_key_scope(&self, scope: KeyScope) -> Result<()> {
        match self.key_scopes {
            Some(scopes) if !scopes.contains(scope) => Err(CoreError::denied(format!(
                "this API key lacks the {scope} scope ({}); make a key with --scope {scope}",
                match scope {
                    KeyScope::Send => "uploads, the sent list and recalls",
                    KeyScope::Receive => "the inbox, downloads and acknowledgements",
                }
            ))),
            _ => Ok(()),
        }
    }

    /// Whether this identity is an API key's rather than a login's.
    pub fn is_api_key(&self) -> bool {
        self.key_scopes.is_some()
    }
}

impl Hub {
    /// Makes an API key for client account `account`, labelled `label`, with `scopes`, until
    /// `expires` (`None`: no expiry), and returns what may be shown of it with its secret,
    /// which is shown this once. Refused: a bad label (1 to 64 printable characters), no
    /// scope or an expiry not in the future (InvalidName), no such account (NotFound), an admin
    /// account (PermissionDenied), an account with [`MAX_API_KEYS_PER_ACCOUNT`] keys
    /// (QuotaExceeded). Audited as `add api key ID LABEL`.
    pub async fn create_api_key(
        &self,
        actor: &Actor,
        account: &AccountName,
        label: &str,
        scopes: KeyScopes,
        expires: Option<OffsetDateTime>,
    ) -> Result<(ApiKeyInfo, Secret<String>)> {
        check_label(label)?;
        if scopes.is_empty() {
            return Err(no_scope());
        }
        let now = self.clock.now();
        if expires.is_some_and(|expires| expires <= now) {
            return Err(CoreError::invalid(
                "an API key's expiry must be in the future",
            ));
        }
        let (id, secret) = new_secret();
        let record = ApiKeyRecord {
            id: id.clone(),
            account: account.clone(),
            label: label.to_owned(),
            hash: token_hash(secret.expose()),
            scopes,
            created: now,
            expires,
            last_used: None,
        };
        let event = self.stamp.admin(
            actor,
            format!("account {account}"),
            format!("add api key {id} {label}"),
        );
        let (stamp, stored) = (self.stamp.clone(), record.clone());
        self.write(Durability::Flush, move |tx| {
            let name = &stored.account;
            let account = tx.account(name)?.ok_or_else(|| no_account(name))?;
            if account.kind != AccountKind::Client {
                return Err(CoreError::denied(format!(
                    "{name} is an admin account; API keys are for client accounts"
                )));
            }
            if tx.api_keys(name)?.len() >= MAX_API_KEYS_PER_ACCOUNT {
                return Err(CoreError::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "{name} has {MAX_API_KEYS_PER_ACCOUNT} API keys, the most an account may have; revoke one first"
                    ),
                ));
            }
            tx.insert_api_key(&stored)?;
            stamp.record(tx, &[event])
        })
        .await?;
        Ok((ApiKeyInfo::from(&record), secret))
    }

    /// The API keys of `account`, oldest first, without their hashes. NotFound if there is no
    /// such account.
    pub async fn api_keys(&self, account: &AccountName) -> Result<Vec<ApiKeyInfo>> {
        let name = account.clone();
        self.read(move |tx| {
            tx.account(&name)?.ok_or_else(|| no_account(&name))?;
            Ok(tx.api_keys(&name)?.iter().map(ApiKeyInfo::from).collect())
        })
        .await
    }

    /// Revokes (deletes) API key `id` of `account`: it stops working at once. NotFound if the
    /// account has no such key (another account's id included). Audited as `revoke api key ID`.
    pub async fn revoke_api_key(
        &self,
        actor: &Actor,
        account: &AccountName,
        id: &str,
    ) -> Result<()> {
        let shown: String = id.chars().take(ID_LEN + 8).collect();
        let event = self.stamp.admin(
            actor,
            format!("account {account}"),
            format!("revoke api key {shown}"),
        );
        let (stamp, name, id) = (self.stamp.clone(), account.clone(), id.to_owned());
        self.write(Durability::Flush, move |tx| {
            tx.account(&name)?.ok_or_else(|| no_account(&name))?;
            if !tx.delete_api_key(&name, &id)? {
                return Err(CoreError::not_found(format!(
                    "{name} has no API key {shown}"
                )));
            }
            stamp.record(tx, &[event])
        })
        .await
    }

    /// Checks an API key presented from `source` (the request's peer) over `protocol`: it must
    /// be well-formed, exist with this secret (compared in constant time), be unexpired, and
    /// its account must still be a client allowed to act from `source` (not deleted, disabled,
    /// locked, banned, or outside its networks). The identity carries the key's scopes. One
    /// read of the store, and a relaxed write of when the key was used, at most once a minute.
    pub async fn check_api_key(
        &self,
        secret: &str,
        source: Option<String>,
        protocol: Protocol,
    ) -> Result<TokenCheck> {
        let Some(id) = key_id(secret) else {
            return Ok(TokenCheck::Refused("malformed API key".to_owned()));
        };
        let (id, hash) = (id.to_owned(), token_hash(secret));
        let found = self
            .credential_with_account(move |tx| tx.api_key(&id), |r| &r.account)
            .await?;
        let Some((record, account)) = found else {
            return Ok(TokenCheck::Refused("unknown or revoked API key".to_owned()));
        };
        if !constant_time_eq(record.hash.as_bytes(), hash.as_bytes()) {
            return Ok(TokenCheck::Refused("wrong API key secret".to_owned()));
        }
        let now = self.clock.now();
        if record.expires.is_some_and(|expires| expires <= now) {
            return Ok(TokenCheck::Refused("API key expired".to_owned()));
        }
        let Some(account) = account else {
            return Ok(TokenCheck::Refused("account deleted".to_owned()));
        };
        if let Some(reason) = self
            .standing(
                &record.account,
                &account,
                source_ip(source.as_deref()),
                Scope::Client,
            )
            .await?
        {
            return Ok(TokenCheck::Refused(reason));
        }
        if record
            .last_used
            .is_none_or(|used| now - used >= TOUCH_EVERY)
        {
            let id = record.id.clone();
            if let Err(err) = self
                .write(Durability::Relaxed, move |tx| tx.touch_api_key(&id, now))
                .await
            {
                tracing::warn!(key = %record.id, error = %err, "could not record an API key's use");
            }
        }
        Ok(TokenCheck::Valid(TokenIdentity {
            session: record.id,
            account: record.account,
            scope: Scope::Client,
            expires: record.expires.unwrap_or(NEVER),
            source,
            protocol,
            methods: None,
            key_scopes: Some(record.scopes),
        }))
    }
}

/// The expiry an identity of a key without one carries: the last day time can write.
const NEVER: OffsetDateTime = time::PrimitiveDateTime::MAX.assume_utc();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_their_id_and_are_long_and_random() {
        let (id, secret) = new_secret();
        let (other_id, other) = new_secret();
        assert_ne!(id, other_id);
        assert_ne!(secret.expose(), other.expose());
        assert!(is_api_key(secret.expose()));
        assert_eq!(key_id(secret.expose()), Some(id.as_str()));
        assert_eq!(secret.expose().len(), 4 + ID_LEN + 1 + RANDOM_LEN);
        // Malformed: other prefix, short parts, upper case, extra parts.
        let good = secret.expose().clone();
        for bad in [
            good.replacen("mrk_", "mrx_", 1),
            good[..good.len() - 1].to_owned(),
            good.to_uppercase().replacen("MRK_", "mrk_", 1),
            format!("{good}_00"),
            format!("mrk_{id}"),
            String::new(),
        ] {
            assert_eq!(key_id(&bad), None, "{bad}");
        }
    }

    #[test]
    fn scopes_parse_and_print() {
        assert_eq!(KeyScopes::parse("send,receive").unwrap(), KeyScopes::ALL);
        assert_eq!(KeyScopes::parse("receive, send").unwrap(), KeyScopes::ALL);
        let receive = KeyScopes::parse("receive").unwrap();
        assert!(receive.contains(KeyScope::Receive) && !receive.contains(KeyScope::Send));
        assert_eq!(receive.to_string(), "receive");
        assert_eq!(KeyScopes::ALL.to_string(), "send,receive");
        assert_eq!(
            KeyScopes::of([KeyScope::Send, KeyScope::Send]).labels(),
            ["send"]
        );
        assert!(KeyScopes::parse("").is_err());
        assert!(KeyScopes::parse("send,delete").is_err());
        assert!(KeyScopes::default().is_empty());
    }

    #[test]
    fn labels_are_short_and_printable() {
        assert!(check_label("backup agent on srv-1").is_ok());
        assert!(check_label(&"é".repeat(MAX_API_KEY_LABEL)).is_ok());
        for bad in ["", "   ", "a\nb", "tab\there"] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        assert!(check_label(&"x".repeat(MAX_API_KEY_LABEL + 1)).is_err());
    }
}
