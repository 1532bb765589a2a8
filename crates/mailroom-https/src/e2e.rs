//! End-to-end encryption keys over HTTP: a client's own age recipients (`/api/v1/e2e-keys`:
//! list, add, remove by fingerprint), and the keys a sender's agent encrypts a file to
//! (`/api/v1/recipients/{name}/e2e-keys`), given only for a recipient the sender may send
//! to. Each handler is one Hub call on the token's session; refusals are the Hub's, mapped by
//! [`Problem::from_core`]: a malformed recipient or comment 422, a duplicate 409, an unknown
//! fingerprint 404, a recipient out of reach what an upload to it would answer (403 for a
//! route that does not allow it, 404 for a name that reaches no account).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailroom_core::AccountName;

use crate::api::Refusals;
use crate::auth::ClientAuth;
use crate::problem::Problem;
use crate::server::{ApiJson, AppState};
use crate::wire::{E2eKeyRequest, E2eKeyView, RecipientKeysView};

/// Your account's end-to-end encryption keys, in the order added.
#[utoipa::path(get, path = "/api/v1/e2e-keys", tag = "client", security(("bearer" = [])),
    responses((status = 200, description = "Your keys", body = [E2eKeyView]), Refusals))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    auth: ClientAuth,
) -> Result<Json<Vec<E2eKeyView>>, Problem> {
    let keys = state.hub.e2e_keys(&auth.session.account).await?;
    Ok(Json(keys.iter().map(E2eKeyView::from).collect()))
}

/// Registers an age X25519 recipient as one of your account's end-to-end encryption keys
/// (at most 16): senders' agents then encrypt files to you with it.
#[utoipa::path(post, path = "/api/v1/e2e-keys", tag = "client", security(("bearer" = [])),
    request_body = E2eKeyRequest,
    responses((status = 201, description = "Added", body = E2eKeyView), Refusals))]
pub(crate) async fn add(
    State(state): State<Arc<AppState>>,
    auth: ClientAuth,
    ApiJson(request): ApiJson<E2eKeyRequest>,
) -> Result<(StatusCode, Json<E2eKeyView>), Problem> {
    let key = state
        .hub
        .add_e2e_key(
            &auth.identity.actor(),
            &auth.session.account,
            &request.recipient,
            &request.comment,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(E2eKeyView::from(&key))))
}

/// Removes one of your account's end-to-end encryption keys, named by its fingerprint (or
/// its recipient).
#[utoipa::path(delete, path = "/api/v1/e2e-keys/{fingerprint}", tag = "client", security(("bearer" = [])),
    params(("fingerprint" = String, Path, description = "The key's fingerprint (16 hex digits) or its recipient")),
    responses((status = 204, description = "Removed"), Refusals))]
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    auth: ClientAuth,
    Path(fingerprint): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .hub
        .remove_e2e_key(&auth.identity.actor(), &auth.session.account, &fingerprint)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The end-to-end encryption keys to encrypt a file for `name` (an account or a group) to:
/// one entry per account an upload from you to it would reach, each with that account's keys
/// (empty when it registered none). Refused as that upload would be.
#[utoipa::path(get, path = "/api/v1/recipients/{name}/e2e-keys", tag = "client", security(("bearer" = [])),
    params(("name" = String, Path, description = "The recipient: an account or a group")),
    responses((status = 200, description = "The keys of every account the file would reach", body = [RecipientKeysView]), Refusals))]
pub(crate) async fn of_recipient(
    State(state): State<Arc<AppState>>,
    auth: ClientAuth,
    Path(name): Path<String>,
) -> Result<Json<Vec<RecipientKeysView>>, Problem> {
    // A name that is no name reaches nobody: as an unknown one.
    let name = AccountName::parse(&name).map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "no recipient named {:?}: there is no such account or group",
                name.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let recipients = state.hub.recipient_e2e_keys(&auth.session, &name).await?;
    Ok(Json(
        recipients.iter().map(RecipientKeysView::from).collect(),
    ))
}
