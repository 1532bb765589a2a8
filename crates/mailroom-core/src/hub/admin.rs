//! Administration: accounts, groups, routes and reads of the audit trail.

use ipnet::IpNet;

use super::{Actor, Hub};
use crate::access::{
    AccessPolicy, Factor, FactorSet, NotifyMode, Rights, format_size, parse_email,
};
use crate::audit::{AuditRecord, ChainHead, ChainReport, ChainVerifier, Checkpoint};
use crate::error::{CoreError, Result};
use crate::model::{Account, AccountKind, AuthorizedKey, Event, Group, Route, RouteEffect};
use crate::names::AccountName;
use crate::password;
use crate::ports::{AccountUpdate, Durability, EventQuery, Tx};
use crate::secret::Secret;

/// A change of an account, as an administrator's form or command gives it: every field that
/// is set is changed, all in one commit by [`Hub::change_account`], or none is.
#[derive(Debug, Clone, Default)]
pub struct AccountChange {
    /// A new password (it must pass the strength rules).
    pub password: Option<Secret<String>>,
    /// Disables (true) or enables (false) the account.
    pub disabled: Option<bool>,
    /// The factors a login must present (`totp` only once enrolled).
    pub factors: Option<FactorSet>,
    /// The source networks; empty allows any.
    pub networks: Option<Vec<IpNet>>,
    /// The subject a client certificate must name; `Some(None)`: the account name.
    pub certificate_subject: Option<Option<String>>,
    /// What the account may do.
    pub rights: Option<Rights>,
    /// File-name globs an upload's name must match one of; empty allows every name.
    pub name_allow: Option<Vec<String>>,
    /// File-name globs no upload's name may match.
    pub name_deny: Option<Vec<String>>,
    /// The largest file the account may send; `Some(None)`: no limit.
    pub max_file_size: Option<Option<u64>>,
    /// Most bytes waiting in its inbox; `Some(None)`: no limit.
    pub quota_bytes: Option<Option<u64>>,
    /// Most files waiting in its inbox; `Some(None)`: no limit.
    pub quota_files: Option<Option<u64>>,
    /// Days a delivery to it is kept; `Some(None)`: for ever.
    pub retention_days: Option<Option<u32>>,
    /// Most sessions at once; `Some(None)`: no limit.
    pub max_sessions: Option<Option<u32>>,
    /// The address of its mails ([`crate::parse_email`]); `Some(None)`: none.
    pub email: Option<Option<String>>,
    /// When it is told of new files (needs an address unless off).
    pub notify: Option<NotifyMode>,
    /// Whether it is told when its files are picked up or acknowledged (needs an address).
    pub receipts: Option<bool>,
}

impl AccountChange {
    /// Whether the change sets no field at all.
    pub fn is_empty(&self) -> bool {
        self.password.is_none() && self.disabled.is_none() && !self.touches_access()
    }

    /// Whether the change touches the access policy.
    fn touches_access(&self) -> bool {
        self.factors.is_some()
            || self.networks.is_some()
            || self.certificate_subject.is_some()
            || self.rights.is_some()
            || self.name_allow.is_some()
            || self.name_deny.is_some()
            || self.max_file_size.is_some()
            || self.quota_bytes.is_some()
            || self.quota_files.is_some()
            || self.retention_days.is_some()
            || self.max_sessions.is_some()
            || self.email.is_some()
            || self.notify.is_some()
            || self.receipts.is_some()
    }

    /// `access` with this change's fields applied.
    fn apply_to(&self, access: &AccessPolicy) -> AccessPolicy {
        let mut new = access.clone();
        if let Some(factors) = &self.factors {
            new.factors = factors.clone();
        }
        if let Some(networks) = &self.networks {
            new.networks = networks.clone();
        }
        if let Some(subject) = &self.certificate_subject {
            new.certificate_subject = subject.clone();
        }
        if let Some(rights) = self.rights {
            new.rights = rights;
        }
        let limits = &mut new.limits;
        if let Some(globs) = &self.name_allow {
            limits.name_allow = globs.clone();
        }
        if let Some(globs) = &self.name_deny {
            limits.name_deny = globs.clone();
        }
        if let Some(size) = self.max_file_size {
            limits.max_file_size = size;
        }
        if let Some(bytes) = self.quota_bytes {
            limits.quota_bytes = bytes;
        }
        if let Some(files) = self.quota_files {
            limits.quota_files = files;
        }
        if let Some(days) = self.retention_days {
            limits.retention_days = days;
        }
        if let Some(sessions) = self.max_sessions {
            limits.max_sessions = sessions;
        }
        let notices = &mut new.notices;
        if let Some(email) = &self.email {
            notices.email = email.clone();
        }
        if let Some(mode) = self.notify {
            notices.mode = mode;
        }
        if let Some(receipts) = self.receipts {
            notices.receipts = receipts;
        }
        new
    }
}

impl AccessPolicy {
    /// The whole policy as a change: what [`Hub::change_account`] takes to replace it.
    pub fn as_change(&self) -> AccountChange {
        AccountChange {
            factors: Some(self.factors.clone()),
            networks: Some(self.networks.clone()),
            certificate_subject: Some(self.certificate_subject.clone()),
            rights: Some(self.rights),
            name_allow: Some(self.limits.name_allow.clone()),
            name_deny: Some(self.limits.name_deny.clone()),
            max_file_size: Some(self.limits.max_file_size),
            quota_bytes: Some(self.limits.quota_bytes),
            quota_files: Some(self.limits.quota_files),
            retention_days: Some(self.limits.retention_days),
            max_sessions: Some(self.limits.max_sessions),
            email: Some(self.notices.email.clone()),
            notify: Some(self.notices.mode),
            receipts: Some(self.notices.receipts),
            ..AccountChange::default()
        }
    }
}

impl Hub {
    /// One account.
    pub async fn account(&self, name: &AccountName) -> Result<Account> {
        let name = name.clone();
        self.read(move |tx| tx.account(&name)?.ok_or_else(|| no_account(&name)))
            .await
    }

    /// Every account.
    pub async fn accounts(&self) -> Result<Vec<Account>> {
        self.read(|tx| tx.accounts()).await
    }

    /// Creates an account. A password, when given, must pass the strength rules.
    pub async fn add_account(
        &self,
        actor: &Actor,
        name: AccountName,
        kind: AccountKind,
        password: Option<Secret<String>>,
        keys: Vec<AuthorizedKey>,
    ) -> Result<Account> {
        let password_hash = match password {
            Some(password) => Some(self.hash_password(&name, password).await?),
            None => None,
        };
        let account = Account {
            name: name.clone(),
            kind,
            disabled: false,
            password_hash,
            keys,
            e2e_keys: Vec::new(),
            created: self.clock.now(),
            access: AccessPolicy::default(),
            totp: None,
            token_epoch: 0,
        };
        let event = self.stamp.admin(
            actor,
            format!("account {name}"),
            format!("add {}", kind.as_str()),
        );
        let stored = account.clone();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            tx.insert_account(&stored)?;
            stamp.record(tx, &[event])
        })
        .await?;
        Ok(account)
    }

    /// Changes every field of an account that `change` sets, in one commit, and returns the
    /// account as it then is. A refused field (a weak password, `totp` required without an
    /// enrolment) refuses the whole change and nothing is stored. A new password and a
    /// disable revoke the account's bearer tokens in the same commit. Each aspect changed is
    /// its own audit event (`set …`, `set password`, `disable`/`enable`).
    pub async fn change_account(
        &self,
        actor: &Actor,
        name: &AccountName,
        change: AccountChange,
    ) -> Result<Account> {
        let mut change = change;
        if let Some(Some(email)) = &change.email {
            change.email = Some(Some(parse_email(email)?));
        }
        // Checked and hashed before the transaction: Argon2 takes tens of milliseconds, and
        // the unit writes only the hash, so a disable or a spent recovery code committed
        // meanwhile is kept.
        let password_hash = match change.password.clone() {
            Some(password) => Some(self.hash_password(name, password).await?),
            None => None,
        };
        let (stamp, actor, name) = (self.stamp.clone(), actor.clone(), name.clone());
        self.write(Durability::Flush, move |tx| {
            let account = tx.account(&name)?.ok_or_else(|| no_account(&name))?;
            let object = format!("account {name}");
            let mut update = AccountUpdate::default();
            let mut events = Vec::new();
            if change.touches_access() {
                let access = change.apply_to(&account.access);
                if access.factors.factors().contains(&Factor::Totp) && account.totp.is_none() {
                    return Err(CoreError::conflict(format!(
                        "{name} has no TOTP enrolment; enroll TOTP first: mailroom account totp enroll {name}"
                    )));
                }
                let notices = &access.notices;
                if (notices.mode != NotifyMode::Off || notices.receipts) && notices.email.is_none()
                {
                    return Err(CoreError::invalid(format!(
                        "{name} has no e-mail address for its notifications; set one (--email)"
                    )));
                }
                events.push(stamp.admin(
                    &actor,
                    object.clone(),
                    describe_access_change(&account.access, &access),
                ));
                if access != account.access {
                    update.access = Some(access);
                }
            }
            if let Some(hash) = password_hash {
                update.password_hash = Some(Some(hash));
                // A new password revokes every bearer token issued under the old one.
                update.revoke_tokens = true;
                events.push(stamp.admin(&actor, object.clone(), "set password".to_owned()));
            }
            if let Some(disabled) = change.disabled {
                update.disabled = Some(disabled);
                // Disabling revokes every bearer token for good: enabling again does not
                // revive them.
                update.revoke_tokens |= disabled;
                let what = if disabled { "disable" } else { "enable" };
                events.push(stamp.admin(&actor, object, what.to_owned()));
            }
            if !update.is_empty() {
                tx.update_account(&name, &update)?;
            }
            stamp.record(tx, &events)?;
            tx.account(&name)?.ok_or_else(|| no_account(&name))
        })
        .await
    }

    /// Sets a new password ([`Hub::change_account`] with the password alone).
    pub async fn set_password(
        &self,
        actor: &Actor,
        name: &AccountName,
        password: Secret<String>,
    ) -> Result<()> {
        let change = AccountChange {
            password: Some(password),
            ..AccountChange::default()
        };
        self.change_account(actor, name, change).await.map(|_| ())
    }

    /// Disables or enables an account ([`Hub::change_account`] with that field alone).
    pub async fn set_disabled(
        &self,
        actor: &Actor,
        name: &AccountName,
        disabled: bool,
    ) -> Result<()> {
        let change = AccountChange {
            disabled: Some(disabled),
            ..AccountChange::default()
        };
        self.change_account(actor, name, change).await.map(|_| ())
    }

    /// Adds an SSH public key to an account.
    pub async fn add_key(
        &self,
        actor: &Actor,
        name: &AccountName,
        key: AuthorizedKey,
    ) -> Result<()> {
        let event = self.stamp.admin(
            actor,
            format!("account {name}"),
            format!("add key {}", key.fingerprint()),
        );
        let name = name.clone();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            let account = tx.account(&name)?.ok_or_else(|| no_account(&name))?;
            if account.keys.iter().any(|k| k.blob == key.blob) {
                return Err(CoreError::conflict(format!(
                    "{name} already has the key {}",
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

    /// Removes an SSH public key from an account.
    pub async fn remove_key(
        &self,
        actor: &Actor,
        name: &AccountName,
        key: &AuthorizedKey,
    ) -> Result<()> {
        let event = self.stamp.admin(
            actor,
            format!("account {name}"),
            format!("remove key {}", key.fingerprint()),
        );
        let (name, key) = (name.clone(), key.clone());
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            let account = tx.account(&name)?.ok_or_else(|| no_account(&name))?;
            let mut keys = account.keys;
            let before = keys.len();
            keys.retain(|k| k.blob != key.blob);
            if keys.len() == before {
                return Err(CoreError::not_found(format!(
                    "{name} has no key {}",
                    key.fingerprint()
                )));
            }
            let update = AccountUpdate {
                keys: Some(keys),
                ..AccountUpdate::default()
            };
            tx.update_account(&name, &update)?;
            stamp.record(tx, &[event])
        })
        .await
    }

    /// Deletes an account. Refused while live deliveries are addressed to it or sent by it,
    /// which would otherwise be lost or pass to a new account of the same name: disable the
    /// account instead.
    pub async fn delete_account(&self, actor: &Actor, name: &AccountName) -> Result<()> {
        let event = self
            .stamp
            .admin(actor, format!("account {name}"), "delete".to_owned());
        let name = name.clone();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            tx.delete_account(&name)?;
            stamp.record(tx, &[event])
        })
        .await
    }

    /// Whether an account or a group has this name.
    pub async fn principal_exists(&self, name: &AccountName) -> Result<bool> {
        let name = name.clone();
        self.read(move |tx| Ok(tx.account(&name)?.is_some() || tx.group(&name)?.is_some()))
            .await
    }

    /// Every group.
    pub async fn groups(&self) -> Result<Vec<Group>> {
        self.read(|tx| tx.groups()).await
    }

    /// Creates a group with its members (client accounts), in one commit: an unknown or
    /// admin member refuses the whole group and nothing is stored.
    pub async fn add_group(
        &self,
        actor: &Actor,
        name: AccountName,
        members: Vec<AccountName>,
    ) -> Result<Group> {
        let mut members = members;
        members.sort();
        members.dedup();
        let detail = if members.is_empty() {
            "add".to_owned()
        } else {
            let list: Vec<&str> = members.iter().map(AccountName::as_str).collect();
            format!("add with members {}", list.join(","))
        };
        let event = self.stamp.admin(actor, format!("group {name}"), detail);
        let group = Group { name, members };
        let stored = group.clone();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            for member in &stored.members {
                client_member(tx, &stored.name, member)?;
            }
            tx.insert_group(&stored)?;
            stamp.record(tx, &[event])
        })
        .await?;
        Ok(group)
    }

    /// Deletes a group.
    pub async fn delete_group(&self, actor: &Actor, name: &AccountName) -> Result<()> {
        let event = self
            .stamp
            .admin(actor, format!("group {name}"), "delete".to_owned());
        let name = name.clone();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            tx.delete_group(&name)?;
            stamp.record(tx, &[event])
        })
        .await
    }

    /// Adds a client account to a group.
    pub async fn add_member(
        &self,
        actor: &Actor,
        group: &AccountName,
        member: &AccountName,
    ) -> Result<()> {
        let added = member.clone();
        self.change_members(
            actor,
            group,
            format!("add member {member}"),
            move |tx, group, members| {
                client_member(tx, group, &added)?;
                if members.contains(&added) {
                    return Err(CoreError::conflict(format!(
                        "{added} is already in {group}"
                    )));
                }
                members.push(added);
                members.sort();
                Ok(())
            },
        )
        .await
    }

    /// Removes an account from a group.
    pub async fn remove_member(
        &self,
        actor: &Actor,
        group: &AccountName,
        member: &AccountName,
    ) -> Result<()> {
        let removed = member.clone();
        self.change_members(
            actor,
            group,
            format!("remove member {member}"),
            move |_, group, members| {
                if !members.contains(&removed) {
                    return Err(CoreError::not_found(format!("{removed} is not in {group}")));
                }
                members.retain(|m| *m != removed);
                Ok(())
            },
        )
        .await
    }

    /// Changes a group's member list with `edit`, in one unit with its event `detail`.
    async fn change_members(
        &self,
        actor: &Actor,
        group: &AccountName,
        detail: String,
        edit: impl FnOnce(&mut dyn Tx, &AccountName, &mut Vec<AccountName>) -> Result<()>
        + Send
        + 'static,
    ) -> Result<()> {
        let event = self.stamp.admin(actor, format!("group {group}"), detail);
        let group = group.clone();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            let mut members = tx.group(&group)?.ok_or_else(|| no_group(&group))?.members;
            edit(tx, &group, &mut members)?;
            tx.set_members(&group, &members)?;
            stamp.record(tx, &[event])
        })
        .await
    }

    /// Every route rule.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        self.read(|tx| tx.routes()).await
    }

    /// Allows or denies sending from `from` to `to` (accounts or groups), without requiring
    /// end-to-end encryption (see [`Hub::set_route_rule`]).
    pub async fn set_route(
        &self,
        actor: &Actor,
        from: AccountName,
        to: AccountName,
        effect: RouteEffect,
    ) -> Result<()> {
        self.set_route_rule(
            actor,
            Route {
                from,
                to,
                effect,
                require_e2e: false,
            },
        )
        .await
    }

    /// Sets the rule for (`route.from`, `route.to`), replacing one there was. An allow rule
    /// with `require_e2e` admits only end-to-end encrypted uploads; a deny rule cannot require
    /// it (Invalid: there is nothing to encrypt on a route that carries nothing).
    pub async fn set_route_rule(&self, actor: &Actor, route: Route) -> Result<()> {
        if route.require_e2e && route.effect == RouteEffect::Deny {
            return Err(CoreError::invalid(
                "only an allow rule can require end-to-end encryption",
            ));
        }
        let detail = if route.require_e2e {
            format!("{} (end-to-end encryption required)", route.effect.as_str())
        } else {
            route.effect.as_str().to_owned()
        };
        let event = self.stamp.admin(
            actor,
            format!("route {} -> {}", route.from, route.to),
            detail,
        );
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            for name in [&route.from, &route.to] {
                principal_exists(tx, name)?;
            }
            tx.put_route(&route)?;
            stamp.record(tx, &[event])
        })
        .await
    }

    /// Removes the rule for (from, to).
    pub async fn remove_route(
        &self,
        actor: &Actor,
        from: &AccountName,
        to: &AccountName,
    ) -> Result<()> {
        let event = self
            .stamp
            .admin(actor, format!("route {from} -> {to}"), "remove".to_owned());
        let (from, to) = (from.clone(), to.clone());
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            tx.delete_route(&from, &to)?;
            stamp.record(tx, &[event])
        })
        .await
    }

    /// Audit events, oldest first.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let query = query.clone();
        self.read(move |tx| tx.events(&query)).await
    }

    /// One page of the audit trail with its chain fields: the events matching `query` whose
    /// `seq` is above `after_seq`, oldest first, at most `page` of them. Pass the last `seq`
    /// of a page to get the next, until a page comes back empty.
    pub async fn audit_records(
        &self,
        query: &EventQuery,
        after_seq: u64,
        page: u32,
    ) -> Result<Vec<AuditRecord>> {
        let query = query.clone();
        self.read(move |tx| tx.audit_records(&query, after_seq, page))
            .await
    }

    /// Walks the whole hash chain in `seq` order, in pages inside one snapshot, and reports
    /// the events checked, the head and the first bad event; with `expect`, also whether that
    /// earlier checkpoint is still on the chain. A broken chain is a report, not an error.
    pub async fn verify_audit(&self, expect: Option<Checkpoint>) -> Result<ChainReport> {
        self.read(move |tx| {
            let mut verifier = ChainVerifier::new(tx.audit_legacy_through()?, expect);
            let everything = EventQuery::default();
            let mut after = 0;
            'pages: loop {
                let page = tx.audit_records(&everything, after, VERIFY_PAGE)?;
                let Some(last) = page.last() else {
                    break;
                };
                after = last.seq;
                for record in &page {
                    if !verifier.push(record) {
                        break 'pages;
                    }
                }
            }
            Ok(verifier.finish())
        })
        .await
    }

    /// The newest event of the audit chain, without verifying it; `None` while no chained
    /// event exists.
    pub async fn audit_head(&self) -> Result<Option<ChainHead>> {
        self.read(|tx| tx.audit_head()).await
    }

    pub(super) async fn hash_password(
        &self,
        name: &AccountName,
        password: Secret<String>,
    ) -> Result<String> {
        password::check_strength(&password, name.as_str())?;
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|_| CoreError::internal("password hashing failed"))?
    }
}

/// Events read per page when verifying the chain: bounded memory whatever the trail's size.
const VERIFY_PAGE: u32 = 10_000;

/// NotFound for an account.
fn no_account(name: &AccountName) -> CoreError {
    CoreError::not_found(format!("no account named {name}"))
}

/// NotFound for a group.
fn no_group(name: &AccountName) -> CoreError {
    CoreError::not_found(format!("no group named {name}"))
}

/// Checks that `member` may join `group`: an existing client account.
fn client_member(tx: &mut dyn Tx, group: &AccountName, member: &AccountName) -> Result<()> {
    match tx.account(member)? {
        Some(account) if account.kind == AccountKind::Client => Ok(()),
        Some(_) => Err(CoreError::denied(format!(
            "{member} is an admin account; only clients can be group members"
        ))),
        None => Err(CoreError::not_found(format!(
            "no account named {member} (group {group} was not changed)"
        ))),
    }
}

/// Checks that `name` may be one side of a route: a client account or a group.
fn principal_exists(tx: &mut dyn Tx, name: &AccountName) -> Result<()> {
    match tx.account(name)? {
        Some(account) if account.kind == AccountKind::Admin => Err(CoreError::denied(format!(
            "{name} is an admin account; routes are between clients and groups"
        ))),
        Some(_) => Ok(()),
        None if tx.group(name)?.is_some() => Ok(()),
        None => Err(CoreError::not_found(format!(
            "no account or group named {name}"
        ))),
    }
}

/// One line for the audit trail naming each part of an access policy that changed, e.g.
/// `rights send,receive; quota 1.0 GiB`; `no change` when nothing did.
fn describe_access_change(old: &AccessPolicy, new: &AccessPolicy) -> String {
    fn size(value: Option<u64>) -> String {
        value.map_or_else(|| "none".to_owned(), format_size)
    }
    fn number<T: ToString>(value: Option<T>) -> String {
        value.map_or_else(|| "none".to_owned(), |v| v.to_string())
    }
    fn globs(globs: &[String], empty: &str) -> String {
        if globs.is_empty() {
            empty.to_owned()
        } else {
            globs.join(",")
        }
    }
    let mut parts = Vec::new();
    if old.factors != new.factors {
        parts.push(format!("require {}", new.factors));
    }
    if old.networks != new.networks {
        let networks: Vec<String> = new.networks.iter().map(|n| n.to_string()).collect();
        parts.push(format!(
            "networks {}",
            if networks.is_empty() {
                "any".to_owned()
            } else {
                networks.join(",")
            }
        ));
    }
    if old.certificate_subject != new.certificate_subject {
        parts.push(format!(
            "certificate subject {}",
            new.certificate_subject.as_deref().unwrap_or("none")
        ));
    }
    if old.rights != new.rights {
        parts.push(format!("rights {}", new.rights));
    }
    let (old_notices, new_notices) = (&old.notices, &new.notices);
    let (old, new) = (&old.limits, &new.limits);
    if old.name_allow != new.name_allow {
        parts.push(format!("allow names {}", globs(&new.name_allow, "any")));
    }
    if old.name_deny != new.name_deny {
        parts.push(format!("deny names {}", globs(&new.name_deny, "none")));
    }
    if old.max_file_size != new.max_file_size {
        parts.push(format!("max file size {}", size(new.max_file_size)));
    }
    if old.quota_bytes != new.quota_bytes {
        parts.push(format!("quota {}", size(new.quota_bytes)));
    }
    if old.quota_files != new.quota_files {
        parts.push(format!("quota files {}", number(new.quota_files)));
    }
    if old.retention_days != new.retention_days {
        parts.push(format!(
            "retention {}",
            new.retention_days
                .map_or_else(|| "none".to_owned(), |d| format!("{d} days"))
        ));
    }
    if old.max_sessions != new.max_sessions {
        parts.push(format!("max sessions {}", number(new.max_sessions)));
    }
    let (old, new) = (&old_notices, &new_notices);
    if old.email != new.email {
        parts.push(format!("email {}", new.email.as_deref().unwrap_or("none")));
    }
    if old.mode != new.mode {
        parts.push(format!("notify {}", new.mode));
    }
    if old.receipts != new.receipts {
        parts.push(format!(
            "receipts {}",
            if new.receipts { "on" } else { "off" }
        ));
    }
    if parts.is_empty() {
        "set access: no change".to_owned()
    } else {
        format!("set {}", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_changes_are_described() {
        let old = AccessPolicy::default();
        assert_eq!(describe_access_change(&old, &old), "set access: no change");
        let mut new = old.clone();
        new.rights = crate::access::Rights::parse("send,receive").unwrap();
        new.limits.quota_bytes = Some(1 << 30);
        new.limits.retention_days = Some(30);
        new.limits.name_deny = vec!["*.exe".into()];
        assert_eq!(
            describe_access_change(&old, &new),
            "set rights send,receive; deny names *.exe; quota 1.0 GiB; retention 30 days"
        );
        assert_eq!(
            describe_access_change(&new, &old),
            "set rights send,receive,delete,recall; deny names none; quota none; retention none"
        );
    }
}
