//! The policy cache: routes, groups and what each account may do, kept per process and
//! keyed by the store's policy version.
//!
//! Every change to accounts (kind, state, access, token generation), groups, members or
//! routes moves the version on in its own commit, whichever process made it (the admin CLI
//! included). Each unit reads the version inside its own transaction and uses the cached
//! policy only when the versions are equal, so a change applies from the very next operation
//! and a stale policy is never used. Only read units fill the cache: they see committed data
//! only, while a write unit may see changes of its own (or of earlier units in its group
//! commit) that could still be rolled back, and a version number that a rollback frees could
//! later name different content.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::access::AccessPolicy;
use crate::error::Result;
use crate::model::{Account, AccountKind, Group, Route};
use crate::names::AccountName;
use crate::policy::{self, Decision};
use crate::ports::Tx;

/// What one account may do, without its credentials.
#[derive(Debug, Clone)]
pub(super) struct AccountPolicy {
    /// Client or admin.
    pub(super) kind: AccountKind,
    /// A disabled account may do nothing.
    pub(super) disabled: bool,
    /// Factors, networks, rights and limits.
    pub(super) access: AccessPolicy,
    /// The generation of its bearer tokens.
    pub(super) token_epoch: u64,
}

impl AccountPolicy {
    /// The policy part of a stored account.
    pub(super) fn of(account: &Account) -> AccountPolicy {
        AccountPolicy {
            kind: account.kind,
            disabled: account.disabled,
            access: account.access.clone(),
            token_epoch: account.token_epoch,
        }
    }
}

/// Routes, groups and accounts as of one policy version.
#[derive(Debug)]
pub(super) struct Policy {
    version: u64,
    routes: Vec<Route>,
    groups: Vec<Group>,
    accounts: HashMap<AccountName, AccountPolicy>,
}

impl Policy {
    /// Reads the policy of `version` in the unit's transaction.
    fn load(tx: &mut dyn Tx, version: u64) -> Result<Policy> {
        let accounts = tx
            .accounts()?
            .into_iter()
            .map(|account| (account.name.clone(), AccountPolicy::of(&account)))
            .collect();
        Ok(Policy {
            version,
            routes: tx.routes()?,
            groups: tx.groups()?,
            accounts,
        })
    }

    /// One account, if it exists.
    pub(super) fn account(&self, name: &AccountName) -> Option<&AccountPolicy> {
        self.accounts.get(name)
    }

    /// Every account, in no particular order.
    pub(super) fn accounts(&self) -> impl Iterator<Item = (&AccountName, &AccountPolicy)> {
        self.accounts.iter()
    }

    /// One group, if it exists.
    pub(super) fn group(&self, name: &AccountName) -> Option<&Group> {
        self.groups.iter().find(|g| &g.name == name)
    }

    /// Every group, by name.
    pub(super) fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The route decision for `sender` sending to `target` (an account or a group).
    pub(super) fn decide(&self, sender: &AccountName, target: &AccountName) -> Decision {
        policy::decide(&self.routes, &self.groups, sender, target)
    }

    /// Whether a rule that lets `sender` send to `target` demands end-to-end encryption.
    pub(super) fn requires_e2e(&self, sender: &AccountName, target: &AccountName) -> bool {
        policy::requires_e2e(&self.routes, &self.groups, sender, target)
    }
}

/// The newest policy a read unit has seen.
#[derive(Debug, Default)]
pub(super) struct PolicyCache {
    current: Mutex<Option<Arc<Policy>>>,
}

impl PolicyCache {
    /// The policy as the unit's transaction sees it: the cached one when its version is the
    /// transaction's, else read afresh (and cached, by a read unit).
    pub(super) fn get(&self, tx: &mut dyn Tx) -> Result<Arc<Policy>> {
        let version = tx.policy_version()?;
        if let Some(policy) = self.lock().as_ref()
            && policy.version == version
        {
            return Ok(policy.clone());
        }
        let policy = Arc::new(Policy::load(tx, version)?);
        if !tx.writable() {
            let mut current = self.lock();
            // Two readers may load at once; the newer version stays.
            if current.as_ref().is_none_or(|c| c.version <= version) {
                *current = Some(policy.clone());
            }
        }
        Ok(policy)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Policy>>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
