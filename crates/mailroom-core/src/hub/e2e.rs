//! End-to-end encryption keys: the age X25519 recipients an account registers so that a
//! sender's agent can encrypt a file to them and the hub stores only ciphertext.
//!
//! This module owns the registry: adding and removing an account's keys (each change one
//! unit with its audit event, `account NAME` / `add e2e key FINGERPRINT`), reading them, and
//! what a sender may learn of a recipient's keys ([`Hub::recipient_e2e_keys`]): only for a
//! recipient an upload from it would reach, decided by the very check the upload path makes
//! (`upload::may_send` and `upload::recipients_of`), so a sender learns nothing of a recipient
//! it may not send to. The hub never sees an identity (a private key) and encrypts nothing.

use super::policy_cache::Policy;
use super::{Actor, ClientSession, Hub, upload};
use crate::error::{CoreError, ErrorKind, Result};
use crate::model::{AccountKind, E2eKey, MAX_E2E_KEYS};
use crate::names::AccountName;
use crate::ports::{AccountUpdate, Durability, Tx};

/// The end-to-end keys of one account a sender's file would reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientE2eKeys {
    /// The account (a group's member, or the recipient named).
    pub account: AccountName,
    /// Its keys, in the order added; empty when it registered none (the caller decides
    /// whether to send then).
    pub keys: Vec<E2eKey>,
}

impl Hub {
    /// An account's end-to-end encryption keys, in the order added. NotFound for an unknown
    /// account.
    pub async fn e2e_keys(&self, account: &AccountName) -> Result<Vec<E2eKey>> {
        let name = account.clone();
        self.read(move |tx| Ok(client_account(tx, &name)?.e2e_keys))
            .await
    }

    /// Registers `recipient` (an age X25519 recipient, `age1…`) with `comment` as one of
    /// `account`'s end-to-end encryption keys, and returns the key as stored (its recipient
    /// in canonical form). Refused, with nothing changed and no event: a malformed recipient
    /// or comment (InvalidName), an unknown account (NotFound), an admin account
    /// (PermissionDenied: it receives no files), a recipient it already has (Conflict), and a
    /// key beyond [`MAX_E2E_KEYS`] (QuotaExceeded).
    pub async fn add_e2e_key(
        &self,
        actor: &Actor,
        account: &AccountName,
        recipient: &str,
        comment: &str,
    ) -> Result<E2eKey> {
        let key = E2eKey::new(recipient, comment, self.clock.now())?;
        let event = self.stamp.admin(
            actor,
            format!("account {account}"),
            format!("add e2e key {}", key.fingerprint()),
        );
        let (name, stamp, added) = (account.clone(), self.stamp.clone(), key.clone());
        self.write(Durability::Flush, move |tx| {
            let mut keys = client_account(tx, &name)?.e2e_keys;
            if keys.iter().any(|k| k.recipient == added.recipient) {
                return Err(CoreError::conflict(format!(
                    "{name} already has the e2e key {}",
                    added.fingerprint()
                )));
            }
            if keys.len() >= MAX_E2E_KEYS {
                return Err(CoreError::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "{name} has {MAX_E2E_KEYS} e2e keys, the most an account may hold; remove one first"
                    ),
                ));
            }
            keys.push(added);
            let update = AccountUpdate {
                e2e_keys: Some(keys),
                ..AccountUpdate::default()
            };
            tx.update_account(&name, &update)?;
            stamp.record(tx, &[event])
        })
        .await?;
        Ok(key)
    }

    /// Removes the end-to-end key of `account` that `wanted` names (its recipient or its
    /// fingerprint, see [`E2eKey::is_named_by`]), and returns it. NotFound, with nothing
    /// changed and no event, when the account is unknown or has no such key.
    pub async fn remove_e2e_key(
        &self,
        actor: &Actor,
        account: &AccountName,
        wanted: &str,
    ) -> Result<E2eKey> {
        let (actor, name, stamp) = (actor.clone(), account.clone(), self.stamp.clone());
        let wanted = wanted.to_owned();
        self.write(Durability::Flush, move |tx| {
            let mut keys = client_account(tx, &name)?.e2e_keys;
            let Some(position) = keys.iter().position(|k| k.is_named_by(&wanted)) else {
                // What was given is not echoed: it may be an identity pasted by mistake.
                return Err(CoreError::not_found(format!(
                    "{name} has no such e2e key (name one by its recipient or its 16-digit fingerprint)"
                )));
            };
            let removed = keys.remove(position);
            let update = AccountUpdate {
                e2e_keys: Some(keys),
                ..AccountUpdate::default()
            };
            tx.update_account(&name, &update)?;
            let event = stamp.admin(
                &actor,
                format!("account {name}"),
                format!("remove e2e key {}", removed.fingerprint()),
            );
            stamp.record(tx, &[event])?;
            Ok(removed)
        })
        .await
    }

    /// The end-to-end keys of every account an upload from `session` to `recipient` (an
    /// account or a group) would reach, each labelled by its account: for an account, its
    /// own; for a group, each member's the upload would deliver to, in member order. Refused
    /// exactly as [`Hub::begin_upload`] would refuse that upload for its sender or its
    /// route (the same error), so a sender learns nothing of a recipient it may not send to;
    /// a refusal records no event (nothing was attempted). A member without keys is listed
    /// with none.
    pub async fn recipient_e2e_keys(
        &self,
        session: &ClientSession,
        recipient: &AccountName,
    ) -> Result<Vec<RecipientE2eKeys>> {
        let cache = self.policy.clone();
        let (sender, target) = (session.account.clone(), recipient.clone());
        self.read(move |tx| {
            let policy = cache.get(tx)?;
            let members = reachable(&policy, &sender, &target)?;
            members
                .into_iter()
                .map(|account| {
                    let keys = tx
                        .account(&account)?
                        .map(|a| a.e2e_keys)
                        .unwrap_or_default();
                    Ok(RecipientE2eKeys { account, keys })
                })
                .collect()
        })
        .await
    }
}

/// The accounts an upload from `sender` to `target` would reach, or the refusal that upload
/// would get from its sender's standing and rights or from the route.
fn reachable(
    policy: &Policy,
    sender: &AccountName,
    target: &AccountName,
) -> Result<Vec<AccountName>> {
    upload::may_send(policy, sender)?;
    upload::recipients_of(policy, sender, target)
}

/// A client account as stored: NotFound when there is none, PermissionDenied for an admin
/// account (it owns no mailbox, so nothing is encrypted to it).
fn client_account(tx: &mut dyn Tx, name: &AccountName) -> Result<crate::model::Account> {
    match tx.account(name)? {
        Some(account) if account.kind == AccountKind::Client => Ok(account),
        Some(_) => Err(CoreError::denied(format!(
            "{name} is an admin account: it receives no files, so it has no e2e keys"
        ))),
        None => Err(CoreError::not_found(format!("no account named {name}"))),
    }
}
