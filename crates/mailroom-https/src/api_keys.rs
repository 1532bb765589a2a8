//! API keys over HTTP: a client account makes, lists and revokes its own (`/api/v1/api-keys`,
//! with the tokens of a login: a key cannot manage keys), and an administrator those of any
//! client account (`/api/v1/admin/accounts/{name}/api-keys`). Each handler is one Hub call; a
//! new key's secret is in the 201 answer of its creation and never again. Presenting a key is
//! [`crate::auth`]'s.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mailroom_core::{AccountName, Actor, Hub, KeyScope, KeyScopes};

use crate::api::Refusals;
use crate::auth::{AdminAuth, LoginAuth};
use crate::problem::Problem;
use crate::server::{ApiJson, AppState};
use crate::wire::{ApiKeyView, NewApiKey, NewApiKeyView};

/// The longest life a key may be given, in days (ten years).
pub const MAX_EXPIRES_IN_DAYS: u32 = 3650;

/// An account name of a path; one that cannot be a name is no account (404).
fn account_name(text: &str) -> Result<AccountName, Problem> {
    AccountName::parse(text).map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "no account named {:?}",
                text.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// Makes the key `request` asks for, for `account`: 201 with the key and its secret.
async fn create(
    hub: &Hub,
    actor: &Actor,
    account: &AccountName,
    request: NewApiKey,
) -> Result<Response, Problem> {
    let scopes = request
        .scopes
        .iter()
        .map(|scope| KeyScope::parse(scope))
        .collect::<Result<Vec<_>, _>>()?;
    let expires = match request.expires_in_days {
        None => None,
        Some(days @ 1..=MAX_EXPIRES_IN_DAYS) => {
            Some(hub.now() + time::Duration::days(i64::from(days)))
        }
        Some(_) => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("expires_in_days is 1 to {MAX_EXPIRES_IN_DAYS}, or absent for no expiry"),
            ));
        }
    };
    let (key, secret) = hub
        .create_api_key(
            actor,
            account,
            &request.label,
            KeyScopes::of(scopes),
            expires,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(NewApiKeyView::new(&key, &secret))).into_response())
}

/// The keys of `account`.
async fn list(hub: &Hub, account: &AccountName) -> Result<Json<Vec<ApiKeyView>>, Problem> {
    let keys = hub.api_keys(account).await?;
    Ok(Json(keys.iter().map(ApiKeyView::from).collect()))
}

/// Makes an API key for your account, for an unattended client: `Authorization: Bearer
/// mrk_…` then works where your tokens do, within the key's scopes. The secret is in this
/// answer only. Needs the tokens of a login (an API key cannot make keys).
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "client", security(("bearer" = [])),
    request_body = NewApiKey,
    responses((status = 201, description = "Made; keep the secret, it is not shown again", body = NewApiKeyView), Refusals))]
pub(crate) async fn create_own(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
    ApiJson(request): ApiJson<NewApiKey>,
) -> Result<Response, Problem> {
    let identity = &auth.identity;
    create(&state.hub, &identity.actor(), &identity.account, request).await
}

/// Your account's API keys, without their secrets.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "client", security(("bearer" = [])),
    responses((status = 200, description = "Your API keys", body = [ApiKeyView]), Refusals))]
pub(crate) async fn list_own(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
) -> Result<Json<Vec<ApiKeyView>>, Problem> {
    list(&state.hub, &auth.identity.account).await
}

/// Revokes one of your API keys: it stops working at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"), Refusals))]
pub(crate) async fn revoke_own(
    State(state): State<Arc<AppState>>,
    LoginAuth(auth): LoginAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let identity = &auth.identity;
    state
        .hub
        .revoke_api_key(&identity.actor(), &identity.account, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes an API key for a client account; the secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/admin/accounts/{name}/api-keys", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Account name")),
    request_body = NewApiKey,
    responses((status = 201, description = "Made; hand the secret over, it is not shown again", body = NewApiKeyView), Refusals))]
pub(crate) async fn create_for(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<NewApiKey>,
) -> Result<Response, Problem> {
    let name = account_name(&name)?;
    create(&state.hub, &auth.identity.actor(), &name, request).await
}

/// A client account's API keys, without their secrets.
#[utoipa::path(get, path = "/api/v1/admin/accounts/{name}/api-keys", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Account name")),
    responses((status = 200, description = "Its API keys", body = [ApiKeyView]), Refusals))]
pub(crate) async fn list_for(
    State(state): State<Arc<AppState>>,
    _auth: AdminAuth,
    Path(name): Path<String>,
) -> Result<Json<Vec<ApiKeyView>>, Problem> {
    list(&state.hub, &account_name(&name)?).await
}

/// Revokes an API key of a client account: it stops working at once.
#[utoipa::path(delete, path = "/api/v1/admin/accounts/{name}/api-keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Account name"),
           ("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"), Refusals))]
pub(crate) async fn revoke_for(
    State(state): State<Arc<AppState>>,
    auth: AdminAuth,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    state
        .hub
        .revoke_api_key(&auth.identity.actor(), &account_name(&name)?, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_no_name_is_no_account() {
        let problem = account_name("../etc").err().map(|p| p.status);
        assert_eq!(problem, Some(404));
        assert!(account_name("alice").is_ok());
    }
}
