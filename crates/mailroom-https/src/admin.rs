//! Administration over HTTP (admin tokens only): accounts, groups, routes, bans, jobs, live
//! sessions and the audit trail. Each handler parses its input with the core's parsers and
//! makes the Hub call the admin CLI makes for the same command, with the admin account as the
//! actor of the audit event. Nothing here reads a mailbox.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use mailroom_core::{
    AccountKind, AccountName, AuthorizedKey, BanSubject, Checkpoint, CoreError, EventKind,
    EventQuery, Factor, FactorSet, JobQuery, JobState, NotifyMode, Outcome, Rights, RouteEffect,
    Secret,
};
use mailroom_core::{Route, SessionRef, parse_globs, parse_networks};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::IntoParams;

use crate::api::Refusals;
use crate::auth::AdminAuth;
use crate::problem::Problem;
use crate::server::{ApiJson, AppState};
use crate::wire::{
    AccountChange, AccountView, BanView, EventView, GroupView, JobDetailView, JobView, KeyRequest,
    MemberRequest, NewAccount, NewBan, NewGroup, RouteView, SessionView, VerifyView,
};

/// A value the core's parser refused: 422 with its sentence.
fn invalid(err: CoreError) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, err.message())
}

fn account_name(text: &str) -> Result<AccountName, Problem> {
    AccountName::parse(text).map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "no account or group named {:?}",
                text.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// Every account.
#[utoipa::path(get, path = "/api/v1/admin/accounts", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Accounts", body = [AccountView]), Refusals))]
pub(crate) async fn accounts(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
) -> Result<Json<Vec<AccountView>>, Problem> {
    let accounts = state.hub.accounts().await?;
    Ok(Json(accounts.iter().map(AccountView::from).collect()))
}

/// Creates an account.
#[utoipa::path(post, path = "/api/v1/admin/accounts", tag = "admin", security(("bearer" = [])),
    request_body = NewAccount,
    responses((status = 201, description = "Created", body = AccountView), Refusals))]
pub(crate) async fn create_account(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    ApiJson(request): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<AccountView>), Problem> {
    let name = AccountName::parse(&request.name).map_err(invalid)?;
    let kind = match request.kind.as_deref() {
        None => AccountKind::Client,
        Some(kind) => AccountKind::parse(kind).map_err(invalid)?,
    };
    let keys = request
        .keys
        .iter()
        .map(|line| AuthorizedKey::parse(line))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let account = state
        .hub
        .add_account(
            &auth.identity.actor(),
            name,
            kind,
            request.password.map(Secret::new),
            keys,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(AccountView::from(&account))))
}

/// One account.
#[utoipa::path(get, path = "/api/v1/admin/accounts/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Account name")),
    responses((status = 200, description = "The account", body = AccountView), Refusals))]
pub(crate) async fn account(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
    Path(name): Path<String>,
) -> Result<Json<AccountView>, Problem> {
    let account = state.hub.account(&account_name(&name)?).await?;
    Ok(Json(AccountView::from(&account)))
}

/// Changes an account: enable or disable, reset its password, required factors, networks,
/// rights, certificate subject, limits, e-mail notices. Only the fields given change.
#[utoipa::path(patch, path = "/api/v1/admin/accounts/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Account name")),
    request_body = AccountChange,
    responses((status = 200, description = "The changed account", body = AccountView), Refusals))]
pub(crate) async fn change_account(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(name): Path<String>,
    ApiJson(change): ApiJson<AccountChange>,
) -> Result<Json<AccountView>, Problem> {
    let name = account_name(&name)?;
    let actor = auth.identity.actor();
    // Everything is parsed before anything changes, and the Hub applies every field in one
    // commit, so a bad field (a weak password included) changes nothing.
    let mut core = mailroom_core::AccountChange {
        password: change.password.map(Secret::new),
        disabled: change.disabled,
        ..mailroom_core::AccountChange::default()
    };
    if let Some(require) = &change.require {
        let factors = require
            .iter()
            .map(|factor| Factor::parse(factor))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        core.factors = Some(FactorSet::new(factors));
    }
    if let Some(networks) = &change.networks {
        core.networks = Some(parse_networks(&networks.join(",")).map_err(invalid)?);
    }
    if let Some(rights) = change.rights {
        core.rights = Some(Rights::from(rights));
    }
    if let Some(subject) = &change.certificate_subject {
        core.certificate_subject =
            Some((!subject.trim().is_empty()).then(|| subject.trim().to_owned()));
    }
    if let Some(limits) = &change.limits {
        core.max_file_size = Some(limits.max_file_size);
        core.quota_bytes = Some(limits.quota_bytes);
        core.quota_files = Some(limits.quota_files);
        core.retention_days = Some(limits.retention_days);
        core.max_sessions = Some(limits.max_sessions);
        core.name_allow = Some(parse_globs(&limits.allow_names.join(",")).map_err(invalid)?);
        core.name_deny = Some(parse_globs(&limits.deny_names.join(",")).map_err(invalid)?);
    }
    if let Some(notices) = &change.notices {
        core.email = Some(notices.email.clone());
        core.notify = Some(NotifyMode::parse(&notices.notify).map_err(invalid)?);
        core.receipts = Some(notices.receipts);
    }
    let account = state.hub.change_account(&actor, &name, core).await?;
    Ok(Json(AccountView::from(&account)))
}

/// Deletes an account (refused while deliveries to or from it are live: disable it instead).
#[utoipa::path(delete, path = "/api/v1/admin/accounts/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Account name")),
    responses((status = 204, description = "Deleted"), Refusals))]
pub(crate) async fn delete_account(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .hub
        .delete_account(&auth.identity.actor(), &account_name(&name)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds an SSH public key to an account.
#[utoipa::path(post, path = "/api/v1/admin/accounts/{name}/keys", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Account name")),
    request_body = KeyRequest,
    responses((status = 204, description = "Added"), Refusals))]
pub(crate) async fn add_key(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<KeyRequest>,
) -> Result<StatusCode, Problem> {
    let name = account_name(&name)?;
    let key = AuthorizedKey::parse(&request.key).map_err(invalid)?;
    state
        .hub
        .add_key(&auth.identity.actor(), &name, key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an SSH public key from an account.
#[utoipa::path(delete, path = "/api/v1/admin/accounts/{name}/keys", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Account name")),
    request_body = KeyRequest,
    responses((status = 204, description = "Removed"), Refusals))]
pub(crate) async fn remove_key(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<KeyRequest>,
) -> Result<StatusCode, Problem> {
    let name = account_name(&name)?;
    let key = AuthorizedKey::parse(&request.key).map_err(invalid)?;
    state
        .hub
        .remove_key(&auth.identity.actor(), &name, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every group.
#[utoipa::path(get, path = "/api/v1/admin/groups", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Groups", body = [GroupView]), Refusals))]
pub(crate) async fn groups(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
) -> Result<Json<Vec<GroupView>>, Problem> {
    let groups = state.hub.groups().await?;
    Ok(Json(groups.iter().map(GroupView::from).collect()))
}

/// Creates a group, with members if given.
#[utoipa::path(post, path = "/api/v1/admin/groups", tag = "admin", security(("bearer" = [])),
    request_body = NewGroup,
    responses((status = 201, description = "Created"), Refusals))]
pub(crate) async fn create_group(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    ApiJson(request): ApiJson<NewGroup>,
) -> Result<StatusCode, Problem> {
    let name = AccountName::parse(&request.name).map_err(invalid)?;
    let members = request
        .members
        .iter()
        .map(|m| AccountName::parse(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    // The group and its members in one commit: an unknown member creates nothing.
    state
        .hub
        .add_group(&auth.identity.actor(), name, members)
        .await?;
    Ok(StatusCode::CREATED)
}

/// Deletes a group.
#[utoipa::path(delete, path = "/api/v1/admin/groups/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Group name")),
    responses((status = 204, description = "Deleted"), Refusals))]
pub(crate) async fn delete_group(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .hub
        .delete_group(&auth.identity.actor(), &account_name(&name)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a client account to a group.
#[utoipa::path(post, path = "/api/v1/admin/groups/{name}/members", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Group name")),
    request_body = MemberRequest,
    responses((status = 204, description = "Added"), Refusals))]
pub(crate) async fn add_member(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<MemberRequest>,
) -> Result<StatusCode, Problem> {
    let group = account_name(&name)?;
    let member = AccountName::parse(&request.member).map_err(invalid)?;
    state
        .hub
        .add_member(&auth.identity.actor(), &group, &member)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an account from a group.
#[utoipa::path(delete, path = "/api/v1/admin/groups/{name}/members/{member}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Group name"),
           ("member" = String, Path, description = "Member account")),
    responses((status = 204, description = "Removed"), Refusals))]
pub(crate) async fn remove_member(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path((name, member)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    state
        .hub
        .remove_member(
            &auth.identity.actor(),
            &account_name(&name)?,
            &account_name(&member)?,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every route rule.
#[utoipa::path(get, path = "/api/v1/admin/routes", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Routes", body = [RouteView]), Refusals))]
pub(crate) async fn routes(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
) -> Result<Json<Vec<RouteView>>, Problem> {
    let routes = state.hub.routes().await?;
    Ok(Json(routes.iter().map(RouteView::from).collect()))
}

/// Sets the rule for (from, to): allow or deny.
#[utoipa::path(post, path = "/api/v1/admin/routes", tag = "admin", security(("bearer" = [])),
    request_body = RouteView,
    responses((status = 204, description = "Set"), Refusals))]
pub(crate) async fn set_route(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    ApiJson(route): ApiJson<RouteView>,
) -> Result<StatusCode, Problem> {
    let from = AccountName::parse(&route.from).map_err(invalid)?;
    let to = AccountName::parse(&route.to).map_err(invalid)?;
    let effect = RouteEffect::parse(&route.effect).map_err(invalid)?;
    let rule = Route {
        from,
        to,
        effect,
        require_e2e: route.require_e2e,
    };
    state
        .hub
        .set_route_rule(&auth.identity.actor(), rule)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which route rule to remove.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RouteKey {
    /// Sending account or group.
    from: String,
    /// Receiving account or group.
    to: String,
}

/// Removes the rule for (from, to).
#[utoipa::path(delete, path = "/api/v1/admin/routes", tag = "admin", security(("bearer" = [])),
    params(RouteKey),
    responses((status = 204, description = "Removed"), Refusals))]
pub(crate) async fn remove_route(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    query: Result<Query<RouteKey>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, Problem> {
    let Query(key) = query.map_err(|r| Problem::bad_request(r.body_text()))?;
    state
        .hub
        .remove_route(
            &auth.identity.actor(),
            &account_name(&key.from)?,
            &account_name(&key.to)?,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every ban, in force or ended.
#[utoipa::path(get, path = "/api/v1/admin/bans", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Bans", body = [BanView]), Refusals))]
pub(crate) async fn bans(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
) -> Result<Json<Vec<BanView>>, Problem> {
    let now = state.hub.now();
    let bans = state.hub.bans().await?;
    Ok(Json(bans.iter().map(|b| BanView::new(b, now)).collect()))
}

/// Bans an address or locks an account (`account:NAME`).
#[utoipa::path(post, path = "/api/v1/admin/bans", tag = "admin", security(("bearer" = [])),
    request_body = NewBan,
    responses((status = 201, description = "Banned", body = BanView), Refusals))]
pub(crate) async fn add_ban(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    ApiJson(request): ApiJson<NewBan>,
) -> Result<(StatusCode, Json<BanView>), Problem> {
    let subject = BanSubject::parse(&request.subject).map_err(invalid)?;
    let minutes = request.minutes.unwrap_or(60);
    let ban = state
        .hub
        .ban(
            &auth.identity.actor(),
            subject,
            std::time::Duration::from_secs(u64::from(minutes) * 60),
            request.reason.as_deref().unwrap_or(""),
        )
        .await
        .map_err(|err| match err.kind() {
            mailroom_core::ErrorKind::InvalidName => invalid(err),
            _ => Problem::from_core(&err),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(BanView::new(&ban, state.hub.now())),
    ))
}

/// Lifts a ban and forgets its history.
#[utoipa::path(delete, path = "/api/v1/admin/bans/{subject}", tag = "admin", security(("bearer" = [])),
    params(("subject" = String, Path, description = "An IP address or account:NAME")),
    responses((status = 204, description = "Lifted"), Refusals))]
pub(crate) async fn remove_ban(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(subject): Path<String>,
) -> Result<StatusCode, Problem> {
    let subject = BanSubject::parse(&subject)
        .map_err(|_| Problem::new(StatusCode::NOT_FOUND, "no such ban"))?;
    state.hub.unban(&auth.identity.actor(), &subject).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The live sessions of every live node of the hub, every protocol.
#[utoipa::path(get, path = "/api/v1/admin/sessions", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Sessions", body = [SessionView]), Refusals))]
pub(crate) async fn sessions(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
) -> Result<Json<Vec<SessionView>>, Problem> {
    Ok(Json(
        state
            .hub
            .live_sessions()
            .await?
            .iter()
            .map(SessionView::from)
            .collect(),
    ))
}

/// Closes a live session (a token login's tokens stop working). A session of another node is
/// closed by that node within two seconds.
#[utoipa::path(delete, path = "/api/v1/admin/sessions/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id: NODE:NUMBER, or NUMBER for this node's")),
    responses((status = 204, description = "Closed, or asked to close"), Refusals))]
pub(crate) async fn kick_session(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let target = SessionRef::parse(&id)
        .map_err(|_| Problem::new(StatusCode::NOT_FOUND, "no such session"))?;
    state
        .hub
        .kick_session(&auth.identity.actor(), &target)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of the job listing (as `mailroom jobs list`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobFilter {
    /// Only jobs in this state: queued, done, dead or dropped.
    state: Option<String>,
    /// At most this many, newest first (1 to 10,000; default 100).
    limit: Option<u32>,
}

/// Jobs of the queue, newest first.
#[utoipa::path(get, path = "/api/v1/admin/jobs", tag = "admin", security(("bearer" = [])),
    params(JobFilter),
    responses((status = 200, description = "Jobs", body = [JobView]), Refusals))]
pub(crate) async fn jobs(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
    query: Result<Query<JobFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<JobView>>, Problem> {
    let Query(filter) = query.map_err(|r| Problem::bad_request(r.body_text()))?;
    let query = JobQuery {
        state: filter
            .state
            .as_deref()
            .map(JobState::parse)
            .transpose()
            .map_err(invalid)?,
        limit: filter.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let jobs = state.hub.jobs(query).await?;
    Ok(Json(jobs.iter().map(JobView::from).collect()))
}

/// A job id from the path; anything else is a job that does not exist.
fn job_id(text: &str) -> Result<uuid::Uuid, Problem> {
    uuid::Uuid::parse_str(text).map_err(|_| Problem::new(StatusCode::NOT_FOUND, "no such job"))
}

/// One job and the event it acts on.
#[utoipa::path(get, path = "/api/v1/admin/jobs/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses((status = 200, description = "The job", body = JobDetailView), Refusals))]
pub(crate) async fn job(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<JobDetailView>, Problem> {
    let (job, event) = state.hub.job(job_id(&id)?).await?;
    Ok(Json(JobDetailView::new(&job, event.as_ref())))
}

/// Runs a dead, dropped or waiting job again now, from its first attempt (audited). A job
/// that is done is refused (409).
#[utoipa::path(post, path = "/api/v1/admin/jobs/{id}/retry", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses((status = 200, description = "Queued again", body = JobView), Refusals))]
pub(crate) async fn retry_job(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<JobView>, Problem> {
    operate_job(&state, &auth, &id, true).await
}

/// Drops a queued or dead job: it never runs again (audited). A job that is done or dropped
/// is refused (409).
#[utoipa::path(post, path = "/api/v1/admin/jobs/{id}/drop", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses((status = 200, description = "Dropped", body = JobView), Refusals))]
pub(crate) async fn drop_job(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<JobView>, Problem> {
    operate_job(&state, &auth, &id, false).await
}

/// Retries (`retry`) or drops a job, as the admin.
async fn operate_job(
    state: &AppState,
    auth: &AdminAuth,
    id: &str,
    retry: bool,
) -> Result<Json<JobView>, Problem> {
    let (id, actor) = (job_id(id)?, auth.identity.actor());
    let job = if retry {
        state.hub.retry_job(&actor, id).await?
    } else {
        state.hub.drop_job(&actor, id).await?
    };
    Ok(Json(JobView::from(&job)))
}

/// Filters of the audit query (as `mailroom audit list`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditFilter {
    /// Event kind: login, transfer.started, upload, download, delivery.*, ban,
    /// session.closed, admin, sweep, job.dead, quota.warning.
    kind: Option<String>,
    /// ok, refused or failed.
    outcome: Option<String>,
    /// The actor (account name, cli:USER, system).
    actor: Option<String>,
    /// A source address or IP.
    source: Option<String>,
    /// Events at or after this time (RFC 3339).
    since: Option<String>,
    /// Events before this time (RFC 3339).
    until: Option<String>,
    /// At most this many, the newest (default 100, at most 10000).
    limit: Option<u32>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>, Problem> {
    value
        .map(|text| {
            OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{name} must be an RFC 3339 time such as 2030-01-31T12:00:00Z"),
                )
            })
        })
        .transpose()
}

/// Audit events, oldest first, filtered.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditFilter),
    responses((status = 200, description = "Events", body = [EventView]), Refusals))]
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
    query: Result<Query<AuditFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<EventView>>, Problem> {
    let Query(filter) = query.map_err(|r| Problem::bad_request(r.body_text()))?;
    let query = EventQuery {
        actor: filter.actor,
        kind: filter
            .kind
            .as_deref()
            .map(EventKind::parse)
            .transpose()
            .map_err(invalid)?,
        outcome: filter
            .outcome
            .as_deref()
            .map(Outcome::parse)
            .transpose()
            .map_err(invalid)?,
        since: time_param("since", filter.since.as_deref())?,
        until: time_param("until", filter.until.as_deref())?,
        source: filter.source,
        limit: Some(filter.limit.unwrap_or(100).clamp(1, 10_000)),
        offset: 0,
    };
    let events = state.hub.events(&query).await?;
    Ok(Json(events.iter().map(EventView::from).collect()))
}

/// The checkpoint to verify against, as `mailroom audit verify --expect`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct VerifyParams {
    /// `SEQ:HASH` noted earlier from the head.
    expect: Option<String>,
}

/// Walks the audit hash chain and says whether it is intact.
#[utoipa::path(get, path = "/api/v1/admin/audit/verify", tag = "admin", security(("bearer" = [])),
    params(VerifyParams),
    responses((status = 200, description = "The chain's state", body = VerifyView), Refusals))]
pub(crate) async fn verify(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
    query: Result<Query<VerifyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<VerifyView>, Problem> {
    let Query(params) = query.map_err(|r| Problem::bad_request(r.body_text()))?;
    let expect = params
        .expect
        .as_deref()
        .map(Checkpoint::parse)
        .transpose()
        .map_err(invalid)?;
    let report = state.hub.verify_audit(expect).await?;
    Ok(Json(VerifyView::from(&report)))
}
