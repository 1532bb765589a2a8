//! The administration pages: accounts (create, disable and enable, reset password, SSH keys,
//! a client's API keys (revoke) and end-to-end encryption keys (remove), required factors,
//! networks, rights, limits, delete), groups, routes, bans, live sessions
//! (kick) and the audit trail with filters, a page at a time from the newest, and the hash
//! chain's verification status.
//!
//! Each form is parsed with the core's parsers before anything changes and makes the Hub
//! call the API and the CLI make for the same action, with the admin as the actor of its
//! audit event. A refusal re-renders the page with the Hub's sentence. Nothing here reads a
//! mailbox: an administrator sees accounts and policy, never a file.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailroom_core::{
    AccountChange, AccountKind, AccountName, AuthorizedKey, BanSubject, CoreError, EventKind,
    EventQuery, FactorSet, JobCounts, JobQuery, JobState, NotifyMode, Outcome, Rights, RouteEffect,
    Secret,
};
use mailroom_core::{SessionRef, parse_globs, parse_networks, parse_size};
use mailroom_https::wire::{AccountView, BanView, JobView, SessionView};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::keys::{ApiKeyRow, E2eKeyRow};
use crate::pages::{self, Flash, Page, render};
use crate::session::{Admin, Web};

/// The code of a notice after a redirect (`?done=…`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
}

impl Done {
    fn flash(&self) -> Option<Flash> {
        let text = match self.done.as_deref()? {
            "created" => "Account created.",
            "disabled" => "Account disabled: its sessions and tokens end now.",
            "enabled" => "Account enabled.",
            "password" => {
                "Password reset: the account's earlier sessions and tokens no longer work."
            }
            "access" => "Access policy saved.",
            "key-added" => "Key added.",
            "key-removed" => "Key removed.",
            "api-key-revoked" => "API key revoked: it no longer works.",
            "e2e-key-removed" => "Encryption key removed.",
            "deleted" => "Account deleted.",
            "group-created" => "Group created.",
            "group-deleted" => "Group deleted.",
            "member-added" => "Member added.",
            "member-removed" => "Member removed.",
            "route-set" => "Route saved.",
            "route-removed" => "Route removed.",
            "banned" => "Ban placed.",
            "unbanned" => "Ban lifted.",
            "kicked" => "Session closed.",
            "job-retried" => "Job queued to run now.",
            "job-dropped" => "Job dropped: it will not run again.",
            _ => return None,
        };
        Some(Flash::ok(text))
    }
}

/// A Hub or parser refusal as a status and a notice.
fn refused(err: &CoreError) -> (StatusCode, Option<Flash>) {
    let (status, flash) = pages::hub_error(err);
    (status, Some(flash))
}

fn name_of(text: &str) -> Result<AccountName, CoreError> {
    AccountName::parse(text.trim())
}

/// `/admin`.
pub(crate) async fn home(_admin: Admin) -> Redirect {
    Redirect::to("/admin/accounts")
}

// ----- accounts ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin_accounts.html")]
struct AccountsPage {
    page: Page,
    csrf: String,
    /// Each account with its required factors as the access form writes them.
    accounts: Vec<(AccountView, String)>,
}

/// Every account, and the form to create one.
pub(crate) async fn accounts(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Query(done): Query<Done>,
) -> Response {
    accounts_with(&web, &admin, StatusCode::OK, done.flash()).await
}

async fn accounts_with(
    web: &Web,
    admin: &Admin,
    status: StatusCode,
    flash: Option<Flash>,
) -> Response {
    let (status, flash, accounts) = pages::listed(web.app.hub.accounts().await, status, flash);
    let page = AccountsPage {
        page: Page::new("Accounts", Some(&admin.session), "/admin/accounts").with_flash(flash),
        csrf: admin.session.csrf.clone(),
        accounts: accounts
            .iter()
            .map(|a| (AccountView::from(a), require_field(&a.access.factors)))
            .collect(),
    };
    render(status, &page)
}

/// The create-account form.
#[derive(Deserialize)]
pub(crate) struct NewAccount {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    keys: String,
}

/// Creates an account.
pub(crate) async fn create_account(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Form(form): Form<NewAccount>,
) -> Response {
    let result = async {
        let name = name_of(&form.name)?;
        let kind = match form.kind.trim() {
            "" => AccountKind::Client,
            kind => AccountKind::parse(kind)?,
        };
        let keys = form
            .keys
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(AuthorizedKey::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let password = (!form.password.is_empty()).then(|| Secret::new(form.password.clone()));
        web.app
            .hub
            .add_account(
                &admin.session.identity.actor(),
                name.clone(),
                kind,
                password,
                keys,
            )
            .await?;
        Ok::<_, CoreError>(name)
    }
    .await;
    match result {
        Ok(name) => Redirect::to(&format!("/admin/accounts/{name}?done=created")).into_response(),
        Err(err) => {
            let (status, flash) = refused(&err);
            accounts_with(&web, &admin, status, flash).await
        }
    }
}

#[derive(Template)]
#[template(path = "admin_account.html")]
struct AccountPage {
    page: Page,
    csrf: String,
    account: AccountView,
    access: AccessFields,
    limits: LimitFields,
    /// Whether it is a client account (only those have API and encryption keys).
    client: bool,
    api_keys: Vec<ApiKeyRow>,
    e2e_keys: Vec<E2eKeyRow>,
}

/// Required factors and rights as the access form takes them.
struct AccessFields {
    require: String,
    rights: String,
}

/// Required factors as the access form takes them: `any`, or a list such as `password,totp`.
fn require_field(factors: &FactorSet) -> String {
    if factors.is_default() {
        "any".to_owned()
    } else {
        factors.labels().join(",")
    }
}

/// An account's limits as form values ("" for none).
struct LimitFields {
    max_file_size: String,
    quota_bytes: String,
    quota_files: String,
    retention_days: String,
    max_sessions: String,
    allow_names: String,
    deny_names: String,
}

fn text<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// One account, with a form per change.
pub(crate) async fn account(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    account_with(&web, &admin, &name, StatusCode::OK, done.flash()).await
}

async fn account_with(
    web: &Web,
    admin: &Admin,
    name: &str,
    status: StatusCode,
    flash: Option<Flash>,
) -> Response {
    let account = match name_of(name) {
        Ok(name) => web.app.hub.account(&name).await,
        Err(_) => Err(CoreError::not_found("no such account")),
    };
    let (account, access, client, e2e_keys) = match account {
        Ok(account) => (
            AccountView::from(&account),
            AccessFields {
                require: require_field(&account.access.factors),
                rights: account.access.rights.to_string(),
            },
            account.kind == AccountKind::Client,
            account.e2e_keys.iter().map(E2eKeyRow::new).collect(),
        ),
        Err(err) => {
            let (status, flash) = refused(&err);
            return accounts_with(web, admin, status, flash).await;
        }
    };
    let l = &account.limits;
    let limits = LimitFields {
        max_file_size: text(l.max_file_size),
        quota_bytes: text(l.quota_bytes),
        quota_files: text(l.quota_files),
        retention_days: text(l.retention_days),
        max_sessions: text(l.max_sessions),
        allow_names: l.allow_names.join(", "),
        deny_names: l.deny_names.join(", "),
    };
    let (status, flash, api_keys) = if client {
        let keys = match name_of(name) {
            Ok(name) => web.app.hub.api_keys(&name).await,
            Err(err) => Err(err),
        };
        pages::listed(keys, status, flash)
    } else {
        (status, flash, Vec::new())
    };
    let now = web.app.hub.now();
    let page = AccountPage {
        page: Page::new(
            format!("Account {}", account.name),
            Some(&admin.session),
            "/admin/accounts",
        )
        .with_flash(flash),
        csrf: admin.session.csrf.clone(),
        account,
        access,
        limits,
        client,
        api_keys: api_keys.iter().map(|k| ApiKeyRow::new(k, now)).collect(),
        e2e_keys,
    };
    render(status, &page)
}

/// Redirects to the account's page with a notice, or re-renders it with the refusal.
async fn after(web: &Web, admin: &Admin, name: &str, result: Result<&str, CoreError>) -> Response {
    match result {
        Ok(done) => Redirect::to(&format!("/admin/accounts/{name}?done={done}")).into_response(),
        Err(err) => {
            let (status, flash) = refused(&err);
            account_with(web, admin, name, status, flash).await
        }
    }
}

/// The enable/disable form.
#[derive(Deserialize)]
pub(crate) struct StateForm {
    #[serde(default)]
    disabled: String,
}

/// Disables or enables an account.
pub(crate) async fn set_state(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
    Form(form): Form<StateForm>,
) -> Response {
    let disabled = form.disabled == "true";
    let result = async {
        let account = name_of(&name)?;
        web.app
            .hub
            .set_disabled(&admin.session.identity.actor(), &account, disabled)
            .await?;
        Ok(if disabled { "disabled" } else { "enabled" })
    }
    .await;
    after(&web, &admin, &name, result).await
}

/// The reset-password form.
#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    #[serde(default)]
    password: String,
}

/// Resets an account's password (its tokens are revoked in the same commit).
pub(crate) async fn reset_password(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let result = async {
        let account = name_of(&name)?;
        web.app
            .hub
            .set_password(
                &admin.session.identity.actor(),
                &account,
                Secret::new(form.password.clone()),
            )
            .await?;
        Ok("password")
    }
    .await;
    after(&web, &admin, &name, result).await
}

/// The access-policy form.
#[derive(Deserialize)]
pub(crate) struct AccessForm {
    #[serde(default)]
    require: String,
    #[serde(default)]
    networks: String,
    #[serde(default)]
    rights: String,
    #[serde(default)]
    certificate_subject: String,
    #[serde(default)]
    max_file_size: String,
    #[serde(default)]
    quota_bytes: String,
    #[serde(default)]
    quota_files: String,
    #[serde(default)]
    retention_days: String,
    #[serde(default)]
    max_sessions: String,
    #[serde(default)]
    allow_names: String,
    #[serde(default)]
    deny_names: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    notify: String,
    /// "on" when the box is ticked; absent otherwise.
    #[serde(default)]
    receipts: String,
}

fn optional<T>(
    field: &str,
    value: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, CoreError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    parse(value)
        .map(Some)
        .ok_or_else(|| CoreError::invalid(format!("{field}: {value:.40} is not a number")))
}

/// Sets required factors, networks, rights, certificate subject, limits and notices: everything is
/// parsed first, so one bad field changes nothing.
pub(crate) async fn set_access(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
    Form(form): Form<AccessForm>,
) -> Response {
    let result = async {
        let account_name = name_of(&name)?;
        let change = AccountChange {
            factors: Some(FactorSet::parse(&form.require)?),
            networks: Some(parse_networks(&form.networks.replace('\n', ","))?),
            rights: Some(Rights::parse(&form.rights)?),
            certificate_subject: Some(
                Some(form.certificate_subject.trim().to_owned()).filter(|s| !s.is_empty()),
            ),
            max_file_size: Some(match form.max_file_size.trim() {
                "" => None,
                size => Some(parse_size(size)?),
            }),
            quota_bytes: Some(match form.quota_bytes.trim() {
                "" => None,
                size => Some(parse_size(size)?),
            }),
            quota_files: Some(optional("quota files", &form.quota_files, |v| {
                v.parse().ok()
            })?),
            retention_days: Some(optional("retention days", &form.retention_days, |v| {
                v.parse().ok()
            })?),
            max_sessions: Some(optional("max sessions", &form.max_sessions, |v| {
                v.parse().ok()
            })?),
            name_allow: Some(parse_globs(&form.allow_names)?),
            name_deny: Some(parse_globs(&form.deny_names)?),
            email: Some(Some(form.email.trim().to_owned()).filter(|e| !e.is_empty())),
            notify: Some(match form.notify.trim() {
                "" => NotifyMode::Off,
                mode => NotifyMode::parse(mode)?,
            }),
            receipts: Some(form.receipts == "on"),
            ..AccountChange::default()
        };
        web.app
            .hub
            .change_account(&admin.session.identity.actor(), &account_name, change)
            .await?;
        Ok("access")
    }
    .await;
    after(&web, &admin, &name, result).await
}

/// The key forms.
#[derive(Deserialize)]
pub(crate) struct KeyForm {
    #[serde(default)]
    key: String,
}

/// Adds an SSH public key.
pub(crate) async fn add_key(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
    Form(form): Form<KeyForm>,
) -> Response {
    let result = async {
        let account = name_of(&name)?;
        let key = AuthorizedKey::parse(form.key.trim())?;
        web.app
            .hub
            .add_key(&admin.session.identity.actor(), &account, key)
            .await?;
        Ok("key-added")
    }
    .await;
    after(&web, &admin, &name, result).await
}

/// Removes an SSH public key.
pub(crate) async fn remove_key(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
    Form(form): Form<KeyForm>,
) -> Response {
    let result = async {
        let account = name_of(&name)?;
        let key = AuthorizedKey::parse(form.key.trim())?;
        web.app
            .hub
            .remove_key(&admin.session.identity.actor(), &account, &key)
            .await?;
        Ok("key-removed")
    }
    .await;
    after(&web, &admin, &name, result).await
}

/// Revokes an API key of a client account: it stops working at once.
pub(crate) async fn revoke_api_key(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let result = async {
        let account = name_of(&name)?;
        web.app
            .hub
            .revoke_api_key(&admin.session.identity.actor(), &account, &id)
            .await?;
        Ok("api-key-revoked")
    }
    .await;
    after(&web, &admin, &name, result).await
}

/// Removes an end-to-end encryption key of a client account, named by its fingerprint.
pub(crate) async fn remove_e2e_key(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path((name, fingerprint)): Path<(String, String)>,
) -> Response {
    let result = async {
        let account = name_of(&name)?;
        web.app
            .hub
            .remove_e2e_key(&admin.session.identity.actor(), &account, &fingerprint)
            .await?;
        Ok("e2e-key-removed")
    }
    .await;
    after(&web, &admin, &name, result).await
}

/// Deletes an account (the Hub refuses while deliveries to or from it are live).
pub(crate) async fn delete_account(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
) -> Response {
    let result = async {
        let account = name_of(&name)?;
        web.app
            .hub
            .delete_account(&admin.session.identity.actor(), &account)
            .await
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/admin/accounts?done=deleted").into_response(),
        Err(err) => {
            let (status, flash) = refused(&err);
            account_with(&web, &admin, &name, status, flash).await
        }
    }
}

// ----- groups -----------------------------------------------------------------------------

/// A group as the page shows it.
struct GroupRow {
    name: String,
    members: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin_groups.html")]
struct GroupsPage {
    page: Page,
    csrf: String,
    groups: Vec<GroupRow>,
}

/// Every group, with forms to change them.
pub(crate) async fn groups(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Query(done): Query<Done>,
) -> Response {
    groups_with(&web, &admin, StatusCode::OK, done.flash()).await
}

async fn groups_with(
    web: &Web,
    admin: &Admin,
    status: StatusCode,
    flash: Option<Flash>,
) -> Response {
    let (status, flash, groups) = pages::listed(web.app.hub.groups().await, status, flash);
    let page = GroupsPage {
        page: Page::new("Groups", Some(&admin.session), "/admin/groups").with_flash(flash),
        csrf: admin.session.csrf.clone(),
        groups: groups
            .iter()
            .map(|g| GroupRow {
                name: g.name.to_string(),
                members: g.members.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    };
    render(status, &page)
}

async fn after_groups(web: &Web, admin: &Admin, result: Result<&str, CoreError>) -> Response {
    match result {
        Ok(done) => Redirect::to(&format!("/admin/groups?done={done}")).into_response(),
        Err(err) => {
            let (status, flash) = refused(&err);
            groups_with(web, admin, status, flash).await
        }
    }
}

/// The create-group form.
#[derive(Deserialize)]
pub(crate) struct GroupForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    members: String,
}

/// Creates a group, with members if given (all names are parsed first).
pub(crate) async fn create_group(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Form(form): Form<GroupForm>,
) -> Response {
    let result = async {
        let name = name_of(&form.name)?;
        let members = form
            .members
            .split([',', '\n'])
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(AccountName::parse)
            .collect::<Result<Vec<_>, _>>()?;
        // The group and its members in one commit: an unknown member creates nothing.
        web.app
            .hub
            .add_group(&admin.session.identity.actor(), name, members)
            .await?;
        Ok("group-created")
    }
    .await;
    after_groups(&web, &admin, result).await
}

/// Deletes a group.
pub(crate) async fn delete_group(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
) -> Response {
    let result = async {
        let group = name_of(&name)?;
        web.app
            .hub
            .delete_group(&admin.session.identity.actor(), &group)
            .await?;
        Ok("group-deleted")
    }
    .await;
    after_groups(&web, &admin, result).await
}

/// The member forms.
#[derive(Deserialize)]
pub(crate) struct MemberForm {
    #[serde(default)]
    member: String,
}

/// Adds a client account to a group.
pub(crate) async fn add_member(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
    Form(form): Form<MemberForm>,
) -> Response {
    let result = async {
        let group = name_of(&name)?;
        let member = name_of(&form.member)?;
        web.app
            .hub
            .add_member(&admin.session.identity.actor(), &group, &member)
            .await?;
        Ok("member-added")
    }
    .await;
    after_groups(&web, &admin, result).await
}

/// Removes an account from a group.
pub(crate) async fn remove_member(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(name): Path<String>,
    Form(form): Form<MemberForm>,
) -> Response {
    let result = async {
        let group = name_of(&name)?;
        let member = name_of(&form.member)?;
        web.app
            .hub
            .remove_member(&admin.session.identity.actor(), &group, &member)
            .await?;
        Ok("member-removed")
    }
    .await;
    after_groups(&web, &admin, result).await
}

// ----- routes -----------------------------------------------------------------------------

/// A route rule as the page shows it.
struct RouteRow {
    from: String,
    to: String,
    effect: String,
}

#[derive(Template)]
#[template(path = "admin_routes.html")]
struct RoutesPage {
    page: Page,
    csrf: String,
    routes: Vec<RouteRow>,
}

/// Every route rule.
pub(crate) async fn routes(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Query(done): Query<Done>,
) -> Response {
    routes_with(&web, &admin, StatusCode::OK, done.flash()).await
}

async fn routes_with(
    web: &Web,
    admin: &Admin,
    status: StatusCode,
    flash: Option<Flash>,
) -> Response {
    let (status, flash, routes) = pages::listed(web.app.hub.routes().await, status, flash);
    let page = RoutesPage {
        page: Page::new("Routes", Some(&admin.session), "/admin/routes").with_flash(flash),
        csrf: admin.session.csrf.clone(),
        routes: routes
            .iter()
            .map(|r| RouteRow {
                from: r.from.to_string(),
                to: r.to.to_string(),
                effect: r.effect.as_str().to_owned(),
            })
            .collect(),
    };
    render(status, &page)
}

async fn after_routes(web: &Web, admin: &Admin, result: Result<&str, CoreError>) -> Response {
    match result {
        Ok(done) => Redirect::to(&format!("/admin/routes?done={done}")).into_response(),
        Err(err) => {
            let (status, flash) = refused(&err);
            routes_with(web, admin, status, flash).await
        }
    }
}

/// The route forms.
#[derive(Deserialize)]
pub(crate) struct RouteForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    effect: String,
}

/// Sets the rule for (from, to).
pub(crate) async fn set_route(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Form(form): Form<RouteForm>,
) -> Response {
    let result = async {
        let from = name_of(&form.from)?;
        let to = name_of(&form.to)?;
        let effect = RouteEffect::parse(form.effect.trim())?;
        web.app
            .hub
            .set_route(&admin.session.identity.actor(), from, to, effect)
            .await?;
        Ok("route-set")
    }
    .await;
    after_routes(&web, &admin, result).await
}

/// Removes the rule for (from, to).
pub(crate) async fn remove_route(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Form(form): Form<RouteForm>,
) -> Response {
    let result = async {
        let from = name_of(&form.from)?;
        let to = name_of(&form.to)?;
        web.app
            .hub
            .remove_route(&admin.session.identity.actor(), &from, &to)
            .await?;
        Ok("route-removed")
    }
    .await;
    after_routes(&web, &admin, result).await
}

// ----- bans -------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin_bans.html")]
struct BansPage {
    page: Page,
    csrf: String,
    bans: Vec<BanView>,
}

/// Every ban, in force or ended.
pub(crate) async fn bans(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Query(done): Query<Done>,
) -> Response {
    bans_with(&web, &admin, StatusCode::OK, done.flash()).await
}

async fn bans_with(web: &Web, admin: &Admin, status: StatusCode, flash: Option<Flash>) -> Response {
    let now = web.app.hub.now();
    let (status, flash, bans) = pages::listed(web.app.hub.bans().await, status, flash);
    let page = BansPage {
        page: Page::new("Bans", Some(&admin.session), "/admin/bans").with_flash(flash),
        csrf: admin.session.csrf.clone(),
        bans: bans.iter().map(|b| BanView::new(b, now)).collect(),
    };
    render(status, &page)
}

async fn after_bans(web: &Web, admin: &Admin, result: Result<&str, CoreError>) -> Response {
    match result {
        Ok(done) => Redirect::to(&format!("/admin/bans?done={done}")).into_response(),
        Err(err) => {
            let (status, flash) = refused(&err);
            bans_with(web, admin, status, flash).await
        }
    }
}

/// The ban forms.
#[derive(Deserialize)]
pub(crate) struct BanForm {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    minutes: String,
    #[serde(default)]
    reason: String,
}

/// Bans an address or locks an account (`account:NAME`).
pub(crate) async fn add_ban(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Form(form): Form<BanForm>,
) -> Response {
    let result = async {
        let subject = BanSubject::parse(&form.subject)?;
        let minutes: u64 = optional("minutes", &form.minutes, |v| v.parse().ok())?.unwrap_or(60);
        web.app
            .hub
            .ban(
                &admin.session.identity.actor(),
                subject,
                std::time::Duration::from_secs(minutes.saturating_mul(60)),
                form.reason.trim(),
            )
            .await?;
        Ok("banned")
    }
    .await;
    after_bans(&web, &admin, result).await
}

/// Lifts a ban.
pub(crate) async fn remove_ban(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Form(form): Form<BanForm>,
) -> Response {
    let result = async {
        let subject = BanSubject::parse(&form.subject)?;
        web.app
            .hub
            .unban(&admin.session.identity.actor(), &subject)
            .await?;
        Ok("unbanned")
    }
    .await;
    after_bans(&web, &admin, result).await
}

// ----- jobs -------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin_jobs.html")]
struct JobsPage {
    page: Page,
    csrf: String,
    jobs: Vec<JobView>,
    counts: JobCounts,
    /// The state shown ("" for every state).
    state: String,
}

/// Which jobs to show.
#[derive(Deserialize, Default)]
pub(crate) struct JobsFilter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    done: Option<String>,
}

/// The job queue: counts, and the newest 200 jobs (of one state, if asked).
pub(crate) async fn jobs(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Query(filter): Query<JobsFilter>,
) -> Response {
    let flash = Done {
        done: filter.done.clone(),
    }
    .flash();
    jobs_with(&web, &admin, &filter.state, StatusCode::OK, flash).await
}

async fn jobs_with(
    web: &Web,
    admin: &Admin,
    state: &str,
    status: StatusCode,
    flash: Option<Flash>,
) -> Response {
    let parsed = match state.trim() {
        "" => Ok(None),
        other => JobState::parse(other).map(Some),
    };
    let (status, flash, state) = match parsed {
        Ok(state) => (status, flash, state),
        Err(err) => {
            let (status, flash) = refused(&err);
            (status, flash, None)
        }
    };
    let listed = web.app.hub.jobs(JobQuery { state, limit: 200 }).await;
    let (status, flash, jobs) = pages::listed(listed, status, flash);
    let counts = web.app.hub.job_counts().await.unwrap_or_default();
    let page = JobsPage {
        page: Page::new("Jobs", Some(&admin.session), "/admin/jobs").with_flash(flash),
        csrf: admin.session.csrf.clone(),
        jobs: jobs.iter().map(JobView::from).collect(),
        counts,
        state: state.map(|s| s.as_str().to_owned()).unwrap_or_default(),
    };
    render(status, &page)
}

async fn after_jobs(web: &Web, admin: &Admin, result: Result<&str, CoreError>) -> Response {
    match result {
        Ok(done) => Redirect::to(&format!("/admin/jobs?done={done}")).into_response(),
        Err(err) => {
            let (status, flash) = refused(&err);
            jobs_with(web, admin, "", status, flash).await
        }
    }
}

/// A job id from the path (anything else is a job that does not exist).
fn job_id(text: &str) -> Result<uuid::Uuid, CoreError> {
    uuid::Uuid::parse_str(text).map_err(|_| CoreError::not_found("no such job"))
}

/// Retries (runs again now, from its first attempt) or drops a job: `/admin/jobs/{id}/retry`
/// or `/admin/jobs/{id}/drop`.
pub(crate) async fn job_action(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let result = async {
        let (id, actor) = (job_id(&id)?, admin.session.identity.actor());
        match action.as_str() {
            "retry" => web
                .app
                .hub
                .retry_job(&actor, id)
                .await
                .map(|_| "job-retried"),
            "drop" => web
                .app
                .hub
                .drop_job(&actor, id)
                .await
                .map(|_| "job-dropped"),
            _ => Err(CoreError::not_found("no such action")),
        }
    }
    .await;
    after_jobs(&web, &admin, result).await
}

// ----- sessions ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin_sessions.html")]
struct SessionsPage {
    page: Page,
    csrf: String,
    sessions: Vec<SessionView>,
}

/// The live sessions of every protocol.
pub(crate) async fn sessions(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Query(done): Query<Done>,
) -> Response {
    sessions_with(&web, &admin, StatusCode::OK, done.flash()).await
}

async fn sessions_with(
    web: &Web,
    admin: &Admin,
    status: StatusCode,
    flash: Option<Flash>,
) -> Response {
    // Every live node's, by node and number.
    let sessions: Vec<SessionView> = match web.app.hub.live_sessions().await {
        Ok(sessions) => sessions.iter().map(SessionView::from).collect(),
        Err(err) => {
            let (status, flash) = refused(&err);
            return render(
                status,
                &SessionsPage {
                    page: Page::new("Live sessions", Some(&admin.session), "/admin/sessions")
                        .with_flash(flash),
                    csrf: admin.session.csrf.clone(),
                    sessions: Vec::new(),
                },
            );
        }
    };
    let page = SessionsPage {
        page: Page::new("Live sessions", Some(&admin.session), "/admin/sessions").with_flash(flash),
        csrf: admin.session.csrf.clone(),
        sessions,
    };
    render(status, &page)
}

/// Closes a live session (a browser's or API client's tokens stop working).
pub(crate) async fn kick(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Response {
    let result = match SessionRef::parse(&id) {
        Ok(target) => {
            web.app
                .hub
                .kick_session(&admin.session.identity.actor(), &target)
                .await
        }
        Err(_) => Err(CoreError::not_found("no such session")),
    };
    match result {
        Ok(()) => Redirect::to("/admin/sessions?done=kicked").into_response(),
        Err(err) => {
            let (status, flash) = refused(&err);
            sessions_with(&web, &admin, status, flash).await
        }
    }
}

// ----- audit ------------------------------------------------------------------------------

/// The audit filters (all optional; empty fields are ignored).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditFilter {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Events per page (default [`AUDIT_PER_PAGE`]).
    #[serde(default)]
    limit: String,
    /// The page, from 1 (the newest events).
    #[serde(default)]
    page: String,
}

/// Events on a page of the audit trail unless `limit` says otherwise.
const AUDIT_PER_PAGE: u32 = 200;
/// The most events one page shows.
const AUDIT_MAX_PER_PAGE: u32 = 10_000;

impl AuditFilter {
    /// The link to page `page` of this filter: every field given, and the page.
    fn page_href(&self, page: u32) -> String {
        let page = page.to_string();
        let fields: Vec<(&str, &str)> = [
            ("kind", self.kind.as_str()),
            ("outcome", self.outcome.as_str()),
            ("actor", self.actor.as_str()),
            ("source", self.source.as_str()),
            ("since", self.since.as_str()),
            ("until", self.until.as_str()),
            ("limit", self.limit.as_str()),
            ("page", page.as_str()),
        ]
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .collect();
        format!(
            "/admin/audit?{}",
            serde_urlencoded::to_string(fields).unwrap_or_default()
        )
    }
}

/// One event as the audit page shows it.
struct EventRow {
    time: pages::Time,
    kind: String,
    actor: String,
    source: String,
    protocol: String,
    object: String,
    outcome: String,
    detail: String,
}

/// The chain's verification, for the page.
struct ChainStatus {
    intact: bool,
    checked: u64,
    head: String,
    problem: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    page: Page,
    filter: AuditFilter,
    kinds: Vec<&'static str>,
    events: Vec<EventRow>,
    chain: Option<ChainStatus>,
    /// The page shown, from 1, and the links to the newer and older pages, if any.
    number: u32,
    newer: Option<String>,
    older: Option<String>,
}

/// A time filter: RFC 3339, or a date and time as `<input type="datetime-local">` sends it
/// (taken as UTC).
fn time_filter(field: &str, value: &str) -> Result<Option<OffsetDateTime>, CoreError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let candidates = [
        value.to_owned(),
        format!("{value}:00Z"),
        format!("{value}Z"),
    ];
    candidates
        .iter()
        .find_map(|c| OffsetDateTime::parse(c, rfc3339).ok())
        .map(Some)
        .ok_or_else(|| {
            CoreError::invalid(format!(
                "{field} must be a time such as 2030-01-31T12:00 (UTC)"
            ))
        })
}

/// The audit trail, newest first, filtered, one page at a time; and whether its hash chain is
/// intact. The store does the paging: the page's events and one more, which says whether an
/// older page follows.
pub(crate) async fn audit(
    State(web): State<Arc<Web>>,
    admin: Admin,
    Query(filter): Query<AuditFilter>,
) -> Response {
    let (mut per_page, mut number) = (AUDIT_PER_PAGE, 1);
    let query = (|| {
        per_page = optional("limit", &filter.limit, |v| v.parse::<u32>().ok())?
            .unwrap_or(AUDIT_PER_PAGE)
            .clamp(1, AUDIT_MAX_PER_PAGE);
        number = optional("page", &filter.page, |v| {
            v.parse::<u32>().ok().filter(|page| *page >= 1)
        })?
        .unwrap_or(1);
        let offset = (number - 1).checked_mul(per_page).ok_or_else(|| {
            CoreError::invalid(format!("page {number} is beyond any audit trail"))
        })?;
        Ok::<_, CoreError>(EventQuery {
            actor: Some(filter.actor.trim().to_owned()).filter(|s| !s.is_empty()),
            kind: match filter.kind.trim() {
                "" => None,
                kind => Some(EventKind::parse(kind)?),
            },
            outcome: match filter.outcome.trim() {
                "" => None,
                outcome => Some(Outcome::parse(outcome)?),
            },
            since: time_filter("since", &filter.since)?,
            until: time_filter("until", &filter.until)?,
            source: Some(filter.source.trim().to_owned()).filter(|s| !s.is_empty()),
            limit: Some(per_page + 1),
            offset,
        })
    })();
    let mut flash = None;
    let mut status = StatusCode::OK;
    let mut events = Vec::new();
    match query {
        Ok(query) => match web.app.hub.events(&query).await {
            Ok(found) => events = found,
            Err(err) => (status, flash) = refused(&err),
        },
        Err(err) => (status, flash) = refused(&err),
    }
    // Oldest first from the store: the one beyond the page is the first.
    let older = events.len() > per_page as usize;
    if older {
        events.remove(0);
    }
    if status != StatusCode::OK {
        number = 1;
    }
    let chain = match web.app.hub.verify_audit(None).await {
        Ok(report) => {
            let view = mailroom_https::wire::VerifyView::from(&report);
            Some(ChainStatus {
                intact: view.intact,
                checked: view.checked,
                head: view.head.map(|h| h.checkpoint).unwrap_or_default(),
                problem: view
                    .broken
                    .map(|b| format!("at event {}: {}", b.seq, b.description))
                    .unwrap_or_default(),
            })
        }
        Err(err) => {
            tracing::warn!(error = %err, "audit verification failed");
            None
        }
    };
    let rows = events
        .iter()
        .rev()
        .map(|e| EventRow {
            time: pages::time(e.time),
            kind: e.kind.as_str().to_owned(),
            actor: e.actor.clone(),
            source: e.source.clone().unwrap_or_default(),
            protocol: e.protocol.as_str().to_owned(),
            object: e.object.clone(),
            outcome: e.outcome.as_str().to_owned(),
            detail: e.detail.clone(),
        })
        .collect();
    let page = AuditPage {
        page: Page::new("Audit trail", Some(&admin.session), "/admin/audit").with_flash(flash),
        kinds: EventKind::ALL.iter().map(|k| k.as_str()).collect(),
        events: rows,
        chain,
        number,
        newer: (number > 1).then(|| filter.page_href(number - 1)),
        older: older.then(|| filter.page_href(number + 1)),
        filter,
    };
    render(status, &page)
}
