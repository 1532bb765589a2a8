//! Administration: accounts, groups, routes and reads of the audit trail.

use super::{Actor, Hub};
use crate::access::{AccessPolicy, Factor, format_size};
use crate::audit::{AuditRecord, ChainHead, ChainReport, Checkpoint};
use crate::error::{CoreError, Result};
use crate::model::{Account, AccountKind, AuthorizedKey, Event, Group, Route, RouteEffect};
use crate::names::AccountName;
use crate::password;
use crate::ports::EventQuery;
use crate::secret::Secret;

impl Hub {
    // ----- administration --------------------------------------------------------------------

    /// One account.
    pub async fn account(&self, name: &AccountName) -> Result<Account> {
        self.meta
            .account(name)
            .await?
            .ok_or_else(|| CoreError::not_found(format!("no account named {name}")))
    }

    /// Every account.
    pub async fn accounts(&self) -> Result<Vec<Account>> {
        self.meta.accounts().await
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
            created: self.clock.now(),
            access: AccessPolicy::default(),
            totp: None,
            token_epoch: 0,
        };
        let event = self.admin_event(
            actor,
            format!("account {name}"),
            format!("add {}", kind.as_str()),
        );
        self.meta.insert_account(&account, &event).await?;
        Ok(account)
    }

    /// Sets a new password.
    pub async fn set_password(
        &self,
        actor: &Actor,
        name: &AccountName,
        password: Secret<String>,
    ) -> Result<()> {
        let mut account = self.account(name).await?;
        account.password_hash = Some(self.hash_password(name, password).await?);
        // A new password revokes every bearer token issued under the old one.
        account.token_epoch = account.token_epoch.saturating_add(1);
        let event = self.admin_event(actor, format!("account {name}"), "set password".to_owned());
        self.meta.update_account(&account, &event).await
    }

    /// Replaces an account's access policy (factors, networks, rights, limits) and records
    /// an admin event naming what changed. Requiring TOTP of an account that has not enrolled
    /// is refused: it could never log in again.
    pub async fn set_access(
        &self,
        actor: &Actor,
        name: &AccountName,
        access: AccessPolicy,
    ) -> Result<Account> {
        let mut account = self.account(name).await?;
        if access.factors.factors().contains(&Factor::Totp) && account.totp.is_none() {
            return Err(CoreError::conflict(format!(
                "{name} has no TOTP enrolment; enroll TOTP first: mailroom account totp enroll {name}"
            )));
        }
        let detail = describe_access_change(&account.access, &access);
        account.access = access;
        let event = self.admin_event(actor, format!("account {name}"), detail);
        self.meta.update_account(&account, &event).await?;
        Ok(account)
    }

    /// Disables or enables an account.
    pub async fn set_disabled(
        &self,
        actor: &Actor,
        name: &AccountName,
        disabled: bool,
    ) -> Result<()> {
        let mut account = self.account(name).await?;
        account.disabled = disabled;
        if disabled {
            // Disabling revokes every bearer token for good: enabling again does not revive them.
            account.token_epoch = account.token_epoch.saturating_add(1);
        }
        let what = if disabled { "disable" } else { "enable" };
        let event = self.admin_event(actor, format!("account {name}"), what.to_owned());
        self.meta.update_account(&account, &event).await
    }

    /// Adds an SSH public key to an account.
    pub async fn add_key(
        &self,
        actor: &Actor,
        name: &AccountName,
        key: AuthorizedKey,
    ) -> Result<()> {
        let mut account = self.account(name).await?;
        if account.keys.iter().any(|k| k.blob == key.blob) {
            return Err(CoreError::conflict(format!(
                "{name} already has the key {}",
                key.fingerprint()
            )));
        }
        let event = self.admin_event(
            actor,
            format!("account {name}"),
            format!("add key {}", key.fingerprint()),
        );
        account.keys.push(key);
        self.meta.update_account(&account, &event).await
    }

    /// Removes an SSH public key from an account.
    pub async fn remove_key(
        &self,
        actor: &Actor,
        name: &AccountName,
        key: &AuthorizedKey,
    ) -> Result<()> {
        let mut account = self.account(name).await?;
        let before = account.keys.len();
        account.keys.retain(|k| k.blob != key.blob);
        if account.keys.len() == before {
            return Err(CoreError::not_found(format!(
                "{name} has no key {}",
                key.fingerprint()
            )));
        }
        let event = self.admin_event(
            actor,
            format!("account {name}"),
            format!("remove key {}", key.fingerprint()),
        );
        self.meta.update_account(&account, &event).await
    }

    /// Deletes an account. Refused while live deliveries are addressed to it or sent by it,
    /// which would otherwise be lost or pass to a new account of the same name: disable the
    /// account instead.
    pub async fn delete_account(&self, actor: &Actor, name: &AccountName) -> Result<()> {
        let event = self.admin_event(actor, format!("account {name}"), "delete".to_owned());
        self.meta.delete_account(name, &event).await
    }

    /// Every group.
    pub async fn groups(&self) -> Result<Vec<Group>> {
        self.meta.groups().await
    }

    /// Creates an empty group.
    pub async fn add_group(&self, actor: &Actor, name: AccountName) -> Result<()> {
        let event = self.admin_event(actor, format!("group {name}"), "add".to_owned());
        let group = Group {
            name,
            members: Vec::new(),
        };
        self.meta.insert_group(&group, &event).await
    }

    /// Deletes a group.
    pub async fn delete_group(&self, actor: &Actor, name: &AccountName) -> Result<()> {
        let event = self.admin_event(actor, format!("group {name}"), "delete".to_owned());
        self.meta.delete_group(name, &event).await
    }

    /// Adds a client account to a group.
    pub async fn add_member(
        &self,
        actor: &Actor,
        group: &AccountName,
        member: &AccountName,
    ) -> Result<()> {
        let mut g = self.group(group).await?;
        let account = self.account(member).await?;
        if account.kind != AccountKind::Client {
            return Err(CoreError::denied(format!(
                "{member} is an admin account; only clients can be group members"
            )));
        }
        if g.members.contains(member) {
            return Err(CoreError::conflict(format!(
                "{member} is already in {group}"
            )));
        }
        g.members.push(member.clone());
        g.members.sort();
        let event = self.admin_event(
            actor,
            format!("group {group}"),
            format!("add member {member}"),
        );
        self.meta.update_group(&g, &event).await
    }

    /// Removes an account from a group.
    pub async fn remove_member(
        &self,
        actor: &Actor,
        group: &AccountName,
        member: &AccountName,
    ) -> Result<()> {
        let mut g = self.group(group).await?;
        if !g.members.contains(member) {
            return Err(CoreError::not_found(format!("{member} is not in {group}")));
        }
        g.members.retain(|m| m != member);
        let event = self.admin_event(
            actor,
            format!("group {group}"),
            format!("remove member {member}"),
        );
        self.meta.update_group(&g, &event).await
    }

    async fn group(&self, name: &AccountName) -> Result<Group> {
        self.meta
            .group(name)
            .await?
            .ok_or_else(|| CoreError::not_found(format!("no group named {name}")))
    }

    /// Every route rule.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        self.meta.routes().await
    }

    /// Allows or denies sending from `from` to `to` (accounts or groups).
    pub async fn set_route(
        &self,
        actor: &Actor,
        from: AccountName,
        to: AccountName,
        effect: RouteEffect,
    ) -> Result<()> {
        for name in [&from, &to] {
            self.principal_exists(name).await?;
        }
        let event = self.admin_event(
            actor,
            format!("route {from} -> {to}"),
            effect.as_str().to_owned(),
        );
        self.meta
            .put_route(&Route { from, to, effect }, &event)
            .await
    }

    /// Removes the rule for (from, to).
    pub async fn remove_route(
        &self,
        actor: &Actor,
        from: &AccountName,
        to: &AccountName,
    ) -> Result<()> {
        let event = self.admin_event(actor, format!("route {from} -> {to}"), "remove".to_owned());
        self.meta.delete_route(from, to, &event).await
    }

    async fn principal_exists(&self, name: &AccountName) -> Result<()> {
        match self.meta.account(name).await? {
            Some(account) if account.kind == AccountKind::Admin => Err(CoreError::denied(format!(
                "{name} is an admin account; routes are between clients and groups"
            ))),
            Some(_) => Ok(()),
            None if self.meta.group(name).await?.is_some() => Ok(()),
            None => Err(CoreError::not_found(format!(
                "no account or group named {name}"
            ))),
        }
    }

    /// Audit events, oldest first.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        self.meta.events(query).await
    }

    /// One page of the audit trail with its chain fields ([`MetaStore::audit_records`]).
    pub async fn audit_records(
        &self,
        query: &EventQuery,
        after_seq: u64,
        page: u32,
    ) -> Result<Vec<AuditRecord>> {
        self.meta.audit_records(query, after_seq, page).await
    }

    /// Walks the audit hash chain ([`MetaStore::verify_audit`]).
    pub async fn verify_audit(&self, expect: Option<Checkpoint>) -> Result<ChainReport> {
        self.meta.verify_audit(expect).await
    }

    /// The newest event of the audit chain ([`MetaStore::audit_head`]).
    pub async fn audit_head(&self) -> Result<Option<ChainHead>> {
        self.meta.audit_head().await
    }

    async fn hash_password(&self, name: &AccountName, password: Secret<String>) -> Result<String> {
        password::check_strength(&password, name.as_str())?;
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|_| CoreError::internal("password hashing failed"))?
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
