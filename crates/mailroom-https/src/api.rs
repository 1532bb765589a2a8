//! The routes of `/api/v1`, the token endpoints, and the OpenAPI document generated from the
//! handlers' annotations (utoipa), served at `/api/v1/openapi.json`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use mailroom_core::{LoginStep, Protocol, Scope, Secret};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::admin;
use crate::api_keys;
use crate::auth::{self, AnyAuth, LoginForm};
use crate::batch;
use crate::client;
use crate::e2e;
use crate::me;
use crate::problem::Problem;
use crate::server::{ApiJson, AppState, ConnInfo};
use crate::wire::{RefreshRequest, TokenRequest, TokenResponse};

/// Every refusal an endpoint may answer, as problem documents.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Refusals {
    /// Malformed request.
    #[response(
        status = 400,
        description = "Malformed request",
        content_type = "application/problem+json"
    )]
    BadRequest(Problem),
    /// No valid token, or failed login.
    #[response(
        status = 401,
        description = "Authentication failed",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// Not allowed (scope, rights, route policy, banned address).
    #[response(
        status = 403,
        description = "Not allowed",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    /// No such object for this account.
    #[response(
        status = 404,
        description = "Not found",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    /// Method not allowed on this path.
    #[response(
        status = 405,
        description = "Method not allowed",
        content_type = "application/problem+json"
    )]
    MethodNotAllowed(Problem),
    /// Conflict with the current state (wrong offset, checksum, already picked up).
    #[response(
        status = 409,
        description = "Conflict",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
    /// A size limit or quota was hit.
    #[response(
        status = 413,
        description = "Too large",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    /// The body is not JSON.
    #[response(
        status = 415,
        description = "Unsupported media type",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(Problem),
    /// A field's value was refused (names, sizes, hashes).
    #[response(
        status = 422,
        description = "Unprocessable",
        content_type = "application/problem+json"
    )]
    Unprocessable(Problem),
    /// Too many login attempts.
    #[response(
        status = 429,
        description = "Too many requests",
        content_type = "application/problem+json"
    )]
    TooMany(Problem),
    /// Try again later.
    #[response(
        status = 503,
        description = "Unavailable",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Mailroom HTTPS API",
        description = "Store-and-forward file exchange: log in for a bearer token, list and download your inbox, send files with resumable uploads, read receipts; administrators manage accounts, groups, routes, bans, sessions, the job queue and the audit trail. Errors are RFC 9457 problem documents."
    ),
    paths(
        token, proxy_token, refresh, logout, openapi_json, crate::ace::published,
        client::inbox, client::inbox_item, client::content, client::acknowledge,
        batch::zip, batch::acknowledge,
        client::sent, client::recall,
        client::create_upload, client::upload_status, client::upload_offset, client::upload_patch,
        client::finish_upload, client::abort_upload, client::send_file,
        e2e::list, e2e::add, e2e::remove, e2e::of_recipient,
        me::change_password, me::ssh_keys, me::add_ssh_key, me::remove_ssh_key,
        me::enroll_totp, me::usage, me::sessions, me::sign_out_others,
        admin::accounts, admin::create_account, admin::account, admin::change_account,
        admin::delete_account, admin::add_key, admin::remove_key,
        admin::groups, admin::create_group, admin::delete_group, admin::add_member,
        admin::remove_member,
        admin::routes, admin::set_route, admin::remove_route,
        admin::bans, admin::add_ban, admin::remove_ban,
        admin::sessions, admin::kick_session,
        admin::audit, admin::verify,
        admin::jobs, admin::job, admin::retry_job, admin::drop_job,
        api_keys::create_own, api_keys::list_own, api_keys::revoke_own,
        api_keys::create_for, api_keys::list_for, api_keys::revoke_for,
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Tokens"),
        (name = "client", description = "A client's mailbox"),
        (name = "admin", description = "Administration (admin tokens only)"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The routes of the API, for [`crate::server::router`].
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/ace", get(crate::ace::published))
        .route("/api/v1/token", post(token))
        .route("/api/v1/token/proxy", post(proxy_token))
        .route("/api/v1/token/refresh", post(refresh))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/inbox", get(client::inbox))
        .route("/api/v1/inbox/zip", post(batch::zip))
        .route("/api/v1/inbox/acknowledge", post(batch::acknowledge))
        .route("/api/v1/inbox/{id}", get(client::inbox_item))
        .route("/api/v1/inbox/{id}/content", get(client::content))
        .route("/api/v1/inbox/{id}/ack", post(client::acknowledge))
        .route("/api/v1/sent", get(client::sent))
        .route("/api/v1/sent/{id}/recall", post(client::recall))
        .route("/api/v1/uploads", post(client::create_upload))
        .route(
            "/api/v1/uploads/{id}",
            get(client::upload_status)
                .head(client::upload_offset)
                .patch(client::upload_patch)
                .delete(client::abort_upload),
        )
        .route("/api/v1/uploads/{id}/finish", post(client::finish_upload))
        .route("/api/v1/outbox/{target}/{name}", put(client::send_file))
        .route("/api/v1/e2e-keys", get(e2e::list).post(e2e::add))
        .route("/api/v1/e2e-keys/{fingerprint}", delete(e2e::remove))
        .route("/api/v1/recipients/{name}/e2e-keys", get(e2e::of_recipient))
        .route("/api/v1/me/password", post(me::change_password))
        .route(
            "/api/v1/me/ssh-keys",
            get(me::ssh_keys).post(me::add_ssh_key),
        )
        .route(
            "/api/v1/me/ssh-keys/{fingerprint}",
            delete(me::remove_ssh_key),
        )
        .route("/api/v1/me/totp", post(me::enroll_totp))
        .route("/api/v1/me/usage", get(me::usage))
        .route("/api/v1/me/sessions", get(me::sessions))
        .route(
            "/api/v1/me/sessions/sign-out-others",
            post(me::sign_out_others),
        )
        .route(
            "/api/v1/admin/accounts",
            get(admin::accounts).post(admin::create_account),
        )
        .route(
            "/api/v1/admin/accounts/{name}",
            get(admin::account)
                .patch(admin::change_account)
                .delete(admin::delete_account),
        )
        .route(
            "/api/v1/admin/accounts/{name}/keys",
            post(admin::add_key).delete(admin::remove_key),
        )
        .route(
            "/api/v1/admin/groups",
            get(admin::groups).post(admin::create_group),
        )
        .route("/api/v1/admin/groups/{name}", delete(admin::delete_group))
        .route(
            "/api/v1/admin/groups/{name}/members",
            post(admin::add_member),
        )
        .route(
            "/api/v1/admin/groups/{name}/members/{member}",
            delete(admin::remove_member),
        )
        .route(
            "/api/v1/admin/routes",
            get(admin::routes)
                .post(admin::set_route)
                .delete(admin::remove_route),
        )
        .route("/api/v1/admin/bans", get(admin::bans).post(admin::add_ban))
        .route("/api/v1/admin/bans/{subject}", delete(admin::remove_ban))
        .route("/api/v1/admin/sessions", get(admin::sessions))
        .route("/api/v1/admin/sessions/{id}", delete(admin::kick_session))
        .route("/api/v1/admin/audit", get(admin::audit))
        .route("/api/v1/admin/audit/verify", get(admin::verify))
        .route("/api/v1/admin/jobs", get(admin::jobs))
        .route("/api/v1/admin/jobs/{id}", get(admin::job))
        .route("/api/v1/admin/jobs/{id}/retry", post(admin::retry_job))
        .route("/api/v1/admin/jobs/{id}/drop", post(admin::drop_job))
        .route(
            "/api/v1/api-keys",
            get(api_keys::list_own).post(api_keys::create_own),
        )
        .route("/api/v1/api-keys/{id}", delete(api_keys::revoke_own))
        .route(
            "/api/v1/admin/accounts/{name}/api-keys",
            get(api_keys::list_for).post(api_keys::create_for),
        )
        .route(
            "/api/v1/admin/accounts/{name}/api-keys/{id}",
            delete(api_keys::revoke_for),
        )
}

/// The OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "auth",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object), Refusals))]
pub(crate) async fn openapi_json() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(_) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "no OpenAPI document").into_response()
        }
    }
}

fn too_many(wait: u64) -> Problem {
    let mut problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many login attempts from your address; try again in {wait} s"),
    );
    problem.retry_after = Some(wait);
    problem
}

/// Logs in with a password (and a TOTP code where the account requires one) or the client
/// certificate of the TLS handshake, for a bearer token pair.
#[utoipa::path(post, path = "/api/v1/token", tag = "auth", request_body = TokenRequest,
    responses((status = 200, description = "Logged in", body = TokenResponse), Refusals))]
pub(crate) async fn token(
    State(state): State<Arc<AppState>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    state
        .logins
        .check(conn.peer.ip(), state.hub_now())
        .map_err(too_many)?;
    let scope = request.scope.map_or(Scope::Client, Scope::from);
    // An agent names its methods first: no agreement, or credentials that are not the agreed
    // method, is a 400 before any credential is checked, so nothing is recorded or changed.
    let agreed = match &request.ace {
        Some(wanted) => {
            // Naming no authentication method means the one presented.
            let mut wanted = wanted.clone();
            if wanted.authentication.is_empty() {
                let presented = if request.password.is_some() {
                    "password"
                } else {
                    "certificate"
                };
                wanted.authentication = presented.parse().into_iter().collect();
            }
            let agreed = crate::ace::agree(&state.ace, &wanted)?;
            crate::ace::check_credentials(
                &agreed,
                request.password.is_some(),
                conn.certificate_cn.is_some(),
            )?;
            Some(agreed)
        }
        None => None,
    };
    let form = LoginForm {
        username: request.username,
        password: request.password.map(Secret::new),
        code: request.totp.map(Secret::new),
        scope,
        methods: agreed.as_ref().map(ToString::to_string),
    };
    let issued = auth::login(
        &state.hub,
        form,
        conn.peer,
        conn.certificate_cn.as_deref(),
        &state.config.token_lifetimes(),
    )
    .await?;
    Ok(Json(TokenResponse::new(issued, state.hub_now())))
}

/// Logs in a user a trusted reverse proxy vouches for with its signed `Mailroom-Proxy-User`,
/// `Mailroom-Proxy-Time` and `Mailroom-Proxy-Signature` headers (off unless configured; see
/// the `proxy` module). Client accounts only; the account's standing is checked as for any
/// login.
#[utoipa::path(post, path = "/api/v1/token/proxy", tag = "auth",
    responses((status = 200, description = "Logged in", body = TokenResponse), Refusals))]
pub(crate) async fn proxy_token(
    State(state): State<Arc<AppState>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    headers: axum::http::HeaderMap,
) -> Result<Json<TokenResponse>, Problem> {
    state
        .logins
        .check(conn.peer.ip(), state.hub_now())
        .map_err(too_many)?;
    let source = Some(conn.peer.to_string());
    let now = state.hub_now().unix_timestamp();
    let vouched = match &state.proxy {
        Some(proxy) => {
            proxy.vouched_user(conn.peer.ip(), &headers, "POST", "/api/v1/token/proxy", now)
        }
        None => Err(crate::proxy::Refusal::NotConfigured),
    };
    let user = match vouched {
        Ok(user) => user,
        Err(refusal) => {
            // Someone presenting proxy headers that do not verify: scored like a failed login.
            let user = headers
                .get(crate::proxy::USER_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            state
                .hub
                .record_login_refusal(user, &format!("proxy: {refusal}"), source, Protocol::Https)
                .await?;
            return Err(Problem::unauthorized());
        }
    };
    let step = state
        .hub
        .login_vouched(&user, "the trusted proxy", source, Protocol::Https)
        .await?;
    let LoginStep::Accepted(session, guard) = step else {
        return Err(Problem::unauthorized());
    };
    let issued = state
        .hub
        .issue_tokens(
            &session,
            guard,
            Scope::Client,
            &state.config.token_lifetimes(),
            None,
        )
        .await?;
    Ok(Json(TokenResponse::new(issued, state.hub_now())))
}

/// Trades a refresh token (once) for a new token pair of the same login.
#[utoipa::path(post, path = "/api/v1/token/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, description = "A new token pair", body = TokenResponse), Refusals))]
pub(crate) async fn refresh(
    State(state): State<Arc<AppState>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    state
        .logins
        .check(conn.peer.ip(), state.hub_now())
        .map_err(too_many)?;
    let issued = state
        .hub
        .refresh_tokens(
            &request.refresh_token,
            Some(conn.peer.to_string()),
            &state.config.token_lifetimes(),
        )
        .await?
        .ok_or_else(Problem::unauthorized)?;
    Ok(Json(TokenResponse::new(issued, state.hub_now())))
}

/// Ends the login of the presented token: its access and refresh tokens stop working.
#[utoipa::path(post, path = "/api/v1/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Logged out"), Refusals))]
pub(crate) async fn logout(
    State(state): State<Arc<AppState>>,
    auth: AnyAuth,
) -> Result<StatusCode, Problem> {
    state.hub.logout(&auth.identity).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl AppState {
    /// The hub's clock now.
    pub(crate) fn hub_now(&self) -> time::OffsetDateTime {
        self.hub.now()
    }
}
