//! A client's own account over HTTP (`/api/v1/me/…`): its password (given the current one),
//! its SSH keys, a new TOTP enrolment (confirmed with a current code or a recovery code while
//! enrolled), its quota use against its limits, and its live sessions (sign out the others).
//!
//! Every route takes the tokens of a login ([`LoginAuth`]): an API key, made for an unattended
//! client, changes nothing of its account. Each handler is one Hub call on the token's own
//! account (`Hub::change_own_password` and its siblings), so no route can reach another
//! account; refusals are the Hub's, mapped by [`Problem::from_core`] (a wrong password or code
//! 403, a weak password or malformed key 422, a duplicate key 409, an unknown key 404).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailroom_core::{AuthorizedKey, Secret};

use crate::api::Refusals;
use crate::auth::LoginAuth;
use crate::problem::Problem;
use crate::server::{ApiJson, AppState};
use crate::wire::{
    KeyRequest, KeyView, OwnSessionView, PasswordChange, TokenResponse, TotpEnrolRequest,
    TotpSetupView, UsageView,
};

/// Changes your password, given the current one. Every token of your account is revoked,
/// this one too (log in again with the new password); API keys stay.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "client", security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 204, description = "Changed; every token of the account revoked"), Refusals))]
pub(crate) async fn change_password(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
    ApiJson(request): ApiJson<PasswordChange>,
) -> Result<StatusCode, Problem> {
    state
        .hub
        .change_own_password(
            &auth.session,
            Secret::new(request.current_password),
            Secret::new(request.new_password),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Your SSH public keys, in the order added.
#[utoipa::path(get, path = "/api/v1/me/ssh-keys", tag = "client", security(("bearer" = [])),
    responses((status = 200, description = "Your keys", body = [KeyView]), Refusals))]
pub(crate) async fn ssh_keys(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
) -> Result<Json<Vec<KeyView>>, Problem> {
    let keys = state.hub.own_keys(&auth.session).await?;
    Ok(Json(keys.iter().map(KeyView::from).collect()))
}

/// Adds an SSH public key (one `authorized_keys` line: ssh-ed25519 or ssh-rsa) to your
/// account.
#[utoipa::path(post, path = "/api/v1/me/ssh-keys", tag = "client", security(("bearer" = [])),
    request_body = KeyRequest,
    responses((status = 201, description = "Added", body = KeyView), Refusals))]
pub(crate) async fn add_ssh_key(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
    ApiJson(request): ApiJson<KeyRequest>,
) -> Result<(StatusCode, Json<KeyView>), Problem> {
    let key = AuthorizedKey::parse(&request.key)?;
    let view = KeyView::from(&key);
    state.hub.add_own_key(&auth.session, key).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Removes one of your SSH keys by its fingerprint (`SHA256:…`, percent-encoded in the path).
#[utoipa::path(delete, path = "/api/v1/me/ssh-keys/{fingerprint}", tag = "client", security(("bearer" = [])),
    params(("fingerprint" = String, Path, description = "The key's OpenSSH fingerprint, SHA256:…")),
    responses((status = 204, description = "Removed"), Refusals))]
pub(crate) async fn remove_ssh_key(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
    Path(fingerprint): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .hub
        .remove_own_key(&auth.session, &fingerprint)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enrols your account in TOTP with a fresh secret and recovery codes, shown only in this
/// answer. While enrolled, confirm with a current code or one of your recovery codes.
#[utoipa::path(post, path = "/api/v1/me/totp", tag = "client", security(("bearer" = [])),
    request_body = TotpEnrolRequest,
    responses((status = 201, description = "Enrolled; the old secret and codes no longer work", body = TotpSetupView), Refusals))]
pub(crate) async fn enroll_totp(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
    ApiJson(request): ApiJson<TotpEnrolRequest>,
) -> Result<(StatusCode, Json<TotpSetupView>), Problem> {
    let code = request
        .code
        .filter(|c| !c.trim().is_empty())
        .map(Secret::new);
    let setup = state.hub.enroll_own_totp(&auth.session, code).await?;
    let view = TotpSetupView {
        uri: setup.uri.expose().clone(),
        secret: setup.secret.expose().clone(),
        recovery_codes: setup
            .recovery_codes
            .iter()
            .map(|c| c.expose().clone())
            .collect(),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// Your quota use (what waits in your inbox) against your limits.
#[utoipa::path(get, path = "/api/v1/me/usage", tag = "client", security(("bearer" = [])),
    responses((status = 200, description = "Use and limits", body = UsageView), Refusals))]
pub(crate) async fn usage(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
) -> Result<Json<UsageView>, Problem> {
    let usage = state.hub.own_usage(&auth.session).await?;
    Ok(Json(UsageView::from(&usage)))
}

/// Your live sessions, every protocol, this one marked `current`.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "client", security(("bearer" = [])),
    responses((status = 200, description = "Your sessions", body = [OwnSessionView]), Refusals))]
pub(crate) async fn sessions(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
) -> Result<Json<Vec<OwnSessionView>>, Problem> {
    let sessions = state.hub.own_sessions(&auth.identity).await?;
    Ok(Json(sessions.iter().map(OwnSessionView::from).collect()))
}

/// Signs out every other session of your account (other logins' tokens revoked, file
/// sessions closed) and answers a fresh token pair for this one, which replaces the pair in
/// use (now revoked).
#[utoipa::path(post, path = "/api/v1/me/sessions/sign-out-others", tag = "client", security(("bearer" = [])),
    responses((status = 200, description = "The others signed out; this login's new tokens", body = TokenResponse), Refusals))]
pub(crate) async fn sign_out_others(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
) -> Result<Json<TokenResponse>, Problem> {
    let lifetimes = state.config.token_lifetimes();
    let issued = state
        .hub
        .sign_out_other_sessions(&auth.identity, &lifetimes)
        .await?;
    Ok(Json(TokenResponse::new(issued, state.hub.now())))
}
