//! Self-service: what a client may change or read of its own account, from its own session.
//!
//! This module owns the operations a signed-in client runs on itself: changing its password
//! (given the current one), adding and removing its own SSH keys, re-enrolling in TOTP
//! (confirmed with a current code or a recovery code), reading its quota use against its
//! limits, and listing its live sessions and signing out the others. The account is always
//! the session's: no operation here takes an account name, so one client can never act on
//! another's account. Each change is one write unit with its `admin` event naming the client
//! as the actor; a refusal changes nothing, and a wrong password or code is recorded and
//! scored as a bad credential, as at login.
//!
//! What it does not do: administrators' changes of any account stay in `admin.rs` and
//! `totp.rs`, and API keys and end-to-end keys have their own modules.

use super::login::source_ip;
use super::tokens::{IssuedTokens, Login, TokenIdentity, TokenLifetimes, store_pair};
use super::totp::{TotpSetup, fresh_enrolment, totp};
use super::{ClientSession, Hub};
use crate::access::{Limits, recovery_code_hash};
use crate::defender::Offence;
use crate::error::{CoreError, ErrorKind, Result};
use crate::model::{Account, AuthorizedKey, EventKind, Outcome};
use crate::names::AccountName;
use crate::ports::{AccountUpdate, Durability, InboxUsage, Tx, Vault};
use crate::secret::Secret;
use crate::sessions::{LiveSessionRecord, SessionInfo};

/// A client's quota use against its limits, as [`Hub::own_usage`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnUsage {
    /// The account's limits (quotas, largest file, retention, sessions).
    pub limits: Limits,
    /// What waits in its inbox now (the deliveries the quotas count).
    pub inbox: InboxUsage,
}

/// One of a client's live sessions, as [`Hub::own_sessions`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnSession {
    /// The session as the registry knows it.
    pub info: SessionInfo,
    /// Whether it is the login asking.
    pub current: bool,
}

impl Hub {
    /// Changes the password of the session's own account, given the current one. Refused,
    /// with nothing changed: a wrong current password (PermissionDenied; recorded and scored
    /// as a bad credential), a new password the strength rules refuse (InvalidName), and a
    /// password changed by someone else between the check and the commit (Conflict). As any
    /// new password ([`Hub::change_account`]), it revokes every bearer token of the account,
    /// the asking login's too, and no API key. One read unit for the stored hash, Argon2
    /// outside any unit, then one write unit that commits only if the hash is still the one
    /// checked.
    pub async fn change_own_password(
        &self,
        session: &ClientSession,
        current: Secret<String>,
        new: Secret<String>,
    ) -> Result<()> {
        let name = session.account.clone();
        let phc = self
            .read_as(session, move |tx| Ok(own_account(tx, &name)?.password_hash))
            .await?;
        if !self.verify_password(current, phc.clone()).await? {
            let err = CoreError::denied("the current password is not right; nothing was changed");
            self.refuse_credential(session, "change own password", &err)
                .await;
            return Err(err);
        }
        let hash = self.hash_password(&session.account, new).await?;
        let event = self.stamp.admin(
            &session.actor(),
            format!("account {}", session.account),
            "change own password".to_owned(),
        );
        let (name, stamp) = (session.account.clone(), self.stamp.clone());
        self.write(Durability::Flush, move |tx| {
            let account = own_account(tx, &name)?;
            if account.disabled {
                return Err(CoreError::denied(format!("{name} is disabled")));
            }
            if account.password_hash != phc {
                return Err(CoreError::conflict(
                    "your password was changed meanwhile; nothing was changed, try again",
                ));
            }
            let update = AccountUpdate {
                password_hash: Some(Some(hash)),
                revoke_tokens: true,
                ..AccountUpdate::default()
            };
            tx.update_account(&name, &update)?;
            stamp.record(tx, &[event])
        })
        .await
    }

    /// The SSH public keys of the session's own account, in the order added.
    pub async fn own_keys(&self, session: &ClientSession) -> Result<Vec<AuthorizedKey>> {
        let name = session.account.clone();
        self.read_as(session, move |tx| Ok(own_account(tx, &name)?.keys))
            .await
    }

    /// Adds an SSH public key to the session's own account, with its `admin` event naming
    /// the client. Refused, with nothing changed: a key the account already has (Conflict).
    /// A malformed key never gets here: [`AuthorizedKey::parse`] refuses it.
    pub async fn add_own_key(&self, session: &ClientSession, key: AuthorizedKey) -> Result<()> {
        let event = self.stamp.admin(
            &session.actor(),
            format!("account {}", session.account),
            format!("add own key {}", key.fingerprint()),
        );
        let (name, stamp) = (session.account.clone(), self.stamp.clone());
        self.write(Durability::Flush, move |tx| {
            let account = own_account(tx, &name)?;
            if account.disabled {
                return Err(CoreError::denied(format!("{name} is disabled")));
            }
            if account.keys.iter().any(|k| k.blob == key.blob) {
                return Err(CoreError::conflict(format!(
                    "your account already has the key {}",
                    key.fingerprint()
                )));
            }
            let mut keys = account.keys;
            keys.push(key);
            let update = AccountUpdate {
                keys: Some(keys),
                ..AccountUpdate::default()
            };
            tx.update_account(&name, &update)?;
            stamp.record(tx, &[event])
        })
        .await
    }

    /// Removes the SSH key with `fingerprint` (`SHA256:…`) from the session's own account and
    /// returns it. NotFound, with nothing changed, when the account has no such key: a key of
    /// another account is never found, since only the session's account is searched.
    pub async fn remove_own_key(
        &self,
        session: &ClientSession,
        fingerprint: &str,
    ) -> Result<AuthorizedKey> {
        let (actor, name, stamp) = (session.actor(), session.account.clone(), self.stamp.clone());
        let wanted = fingerprint.trim().to_owned();
        self.write(Durability::Flush, move |tx| {
            let account = own_account(tx, &name)?;
            if account.disabled {
                return Err(CoreError::denied(format!("{name} is disabled")));
            }
            let mut keys = account.keys;
            let Some(position) = keys.iter().position(|k| k.fingerprint() == wanted) else {
                return Err(CoreError::not_found(
                    "your account has no SSH key with that fingerprint",
                ));
            };
            let removed = keys.remove(position);
            let update = AccountUpdate {
                keys: Some(keys),
                ..AccountUpdate::default()
            };
            tx.update_account(&name, &update)?;
            let event = stamp.admin(
                &actor,
                format!("account {name}"),
                format!("remove own key {}", removed.fingerprint()),
            );
            stamp.record(tx, &[event])?;
            Ok(removed)
        })
        .await
    }

    /// Enrols the session's own account in TOTP with a fresh secret and recovery codes,
    /// returned once. An account already enrolled must confirm with `code`, a current code of
    /// its authenticator or one of its recovery codes, which is spent in the same unit that
    /// replaces the enrolment. Refused, with nothing changed: no code or a wrong one while
    /// enrolled (PermissionDenied; recorded and scored as a bad credential).
    pub async fn enroll_own_totp(
        &self,
        session: &ClientSession,
        code: Option<Secret<String>>,
    ) -> Result<TotpSetup> {
        let (setup, stored) = fresh_enrolment(
            &session.account,
            &self.auth.config.totp_issuer,
            self.vault.as_deref(),
        )?;
        let event = self.stamp.admin(
            &session.actor(),
            format!("account {}", session.account),
            format!(
                "enroll own totp ({} recovery codes)",
                setup.recovery_codes.len()
            ),
        );
        let (name, stamp) = (session.account.clone(), self.stamp.clone());
        let issuer = self.auth.config.totp_issuer.clone();
        let vault = self.vault.clone();
        let now = u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0);
        let result = self
            .write(Durability::Flush, move |tx| {
                let account = own_account(tx, &name)?;
                if account.disabled {
                    return Err(CoreError::denied(format!("{name} is disabled")));
                }
                if account.totp.is_some() {
                    let confirmed = match &code {
                        Some(code) => spend_code(tx, &account, code, &issuer, vault.as_deref(), now)?,
                        None => false,
                    };
                    if !confirmed {
                        return Err(CoreError::denied(
                            "to replace your authenticator, give a current code from it or one of your recovery codes; nothing was changed",
                        ));
                    }
                }
                let update = AccountUpdate {
                    totp: Some(Some(stored)),
                    ..AccountUpdate::default()
                };
                tx.update_account(&name, &update)?;
                stamp.record(tx, &[event])
            })
            .await;
        match result {
            Ok(()) => Ok(setup),
            Err(err) => {
                if err.kind() == ErrorKind::PermissionDenied {
                    self.refuse_credential(session, "enroll own totp", &err)
                        .await;
                }
                Err(err)
            }
        }
    }

    /// The session's own quota use against its limits. One read.
    pub async fn own_usage(&self, session: &ClientSession) -> Result<OwnUsage> {
        let name = session.account.clone();
        self.read_as(session, move |tx| {
            let limits = own_account(tx, &name)?.access.limits;
            let inbox = tx.inbox_usage(&name)?;
            Ok(OwnUsage { limits, inbox })
        })
        .await
    }

    /// The live sessions of the identity's account (every protocol, every live node), the
    /// asking login marked. One read.
    pub async fn own_sessions(&self, identity: &TokenIdentity) -> Result<Vec<OwnSession>> {
        let current = self.registry_id_of(&identity.session);
        let own = self.node.as_ref().map(|n| n.id);
        Ok(self
            .live_sessions()
            .await?
            .into_iter()
            .filter(|s| s.account == identity.account)
            .map(|info| OwnSession {
                current: Some(info.id) == current && (info.node.is_none() || info.node == own),
                info,
            })
            .collect())
    }

    /// Signs out every other session of the identity's account and keeps the asking login:
    /// one write unit moves the account's token generation on (revoking every bearer token,
    /// as a new password does), issues the asking login a fresh pair under the new
    /// generation (returned, to replace the old), asks other nodes to close the account's
    /// sessions there, and records the `admin` event with how many were closed; then this
    /// process closes its own (file sessions disconnect). API keys are no sessions and stay.
    /// Refused for an API key's identity (PermissionDenied), changing nothing.
    pub async fn sign_out_other_sessions(
        &self,
        identity: &TokenIdentity,
        lifetimes: &TokenLifetimes,
    ) -> Result<IssuedTokens> {
        if identity.is_api_key() {
            return Err(CoreError::denied(
                "an API key is no session; sign out from a login's session",
            ));
        }
        let current = self.registry_id_of(&identity.session);
        let own_node = self.node.as_ref().map(|n| n.id);
        let local: Vec<SessionInfo> = self
            .auth
            .sessions
            .list()
            .into_iter()
            .filter(|s| s.account == identity.account && Some(s.id) != current)
            .collect();
        let login = Login {
            id: identity.session.clone(),
            account: identity.account.clone(),
            scope: identity.scope,
            source: identity.source.clone(),
            protocol: identity.protocol,
            methods: identity.methods.clone(),
        };
        let (now, lifetimes, stamp) = (self.clock.now(), *lifetimes, self.stamp.clone());
        let actor = identity.actor();
        let local_count = local.len();
        let issued = self
            .write(Durability::Flush, move |tx| {
                let account = own_account(tx, &login.account)?;
                if account.disabled {
                    return Err(CoreError::denied(format!("{} is disabled", login.account)));
                }
                let alive: Vec<_> = tx
                    .nodes()?
                    .into_iter()
                    .filter(|n| n.alive(now) && Some(n.node.id) != own_node)
                    .map(|n| n.node.id)
                    .collect();
                let remote: Vec<LiveSessionRecord> = tx
                    .live_session_list()?
                    .into_iter()
                    .filter(|s| s.account == login.account && alive.contains(&s.node))
                    .collect();
                for session in &remote {
                    tx.close_live_session(&session.node, session.id, SIGNED_OUT)?;
                }
                let update = AccountUpdate {
                    revoke_tokens: true,
                    ..AccountUpdate::default()
                };
                tx.update_account(&login.account, &update)?;
                tx.delete_token_session(&login.id)?;
                let issued = store_pair(tx, &login, account.token_epoch + 1, now, &lifetimes)?;
                let event = stamp.event(
                    &actor,
                    EventKind::Admin,
                    format!("account {}", login.account),
                    Outcome::Ok,
                    format!(
                        "sign out other sessions ({} closed)",
                        local_count + remote.len()
                    ),
                );
                stamp.record(tx, &[event])?;
                Ok(issued)
            })
            .await?;
        for session in local {
            self.auth.sessions.close(session.id, SIGNED_OUT);
            // A token login has no connection: its registry entry goes (its tokens went with
            // the generation).
            self.auth
                .token_sessions()
                .retain(|_, guard| guard.info().id != session.id);
        }
        Ok(issued)
    }

    /// The registry id of the token login `login`, if this process holds it.
    fn registry_id_of(&self, login: &str) -> Option<u64> {
        self.auth.token_sessions().get(login).map(|g| g.info().id)
    }

    /// Records a refused self-service change whose cause is a wrong password or code, and
    /// scores it as a bad credential (a stolen session must not become a guessing oracle).
    async fn refuse_credential(&self, session: &ClientSession, what: &str, err: &CoreError) {
        let event = self.stamp.event(
            &session.actor(),
            EventKind::Admin,
            format!("account {}", session.account),
            Outcome::Refused,
            format!("{what}: {}", err.message()),
        );
        let ip = source_ip(session.source.as_deref());
        let account = Some(session.account.clone());
        if let Err(record_err) = self
            .record_and_score(vec![event], ip, account, Offence::BadCredentials)
            .await
        {
            tracing::warn!(error = %record_err, "could not record a refusal");
        }
    }
}

/// Why this process closes a session that its owner signed out.
const SIGNED_OUT: &str = "signed out by its owner from another session";

/// The session's own account, read in the unit; only client accounts have sessions here.
fn own_account(tx: &mut dyn Tx, name: &AccountName) -> Result<Account> {
    tx.account(name)?
        .ok_or_else(|| CoreError::not_found(format!("no account named {name}")))
}

/// Checks `code` against the account's enrolment in the unit and spends it: a 6-digit code
/// of the current step (not replayed), or a recovery code.
fn spend_code(
    tx: &mut dyn Tx,
    account: &Account,
    code: &Secret<String>,
    issuer: &str,
    vault: Option<&dyn Vault>,
    now: u64,
) -> Result<bool> {
    let Some(enrolment) = &account.totp else {
        return Ok(false);
    };
    let code = code.expose().trim();
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        let generator = totp(enrolment, &account.name, issuer, vault)?;
        return match generator.check(code, now) {
            Some(step) => tx.use_totp_step(&account.name, step),
            None => Ok(false),
        };
    }
    if code.is_empty() || code.len() > 64 {
        return Ok(false);
    }
    tx.use_recovery_code(&account.name, &recovery_code_hash(code))
}
