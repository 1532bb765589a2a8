//! A client's keys page (`/keys`): its API keys (list, create with the secret shown once on
//! the answer to the form, revoke) and its end-to-end encryption keys (age recipients: list,
//! add, remove). Each form is one Hub call on the session's own account, the calls the API's
//! `/api/v1/api-keys` and `/api/v1/e2e-keys` make; a refusal re-renders the page with the
//! Hub's sentence and changes nothing. The rows are shared with the admin's account page.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailroom_core::{
    ApiKeyInfo, CoreError, E2eKey, Hub, KeyScope, KeyScopes, MAX_API_KEY_LABEL,
    MAX_API_KEYS_PER_ACCOUNT, MAX_E2E_COMMENT, MAX_E2E_KEYS,
};
use mailroom_https::MAX_EXPIRES_IN_DAYS;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::pages::{self, Flash, Page, render};
use crate::session::{User, Web};

/// The code of a notice after a redirect (`?done=…`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
}

impl Done {
    fn flash(&self) -> Option<Flash> {
        let text = match self.done.as_deref()? {
            "api-key-revoked" => "API key revoked: it no longer works.",
            "e2e-key-added" => {
                "Encryption key added: senders' agents now encrypt the files they send you to it too."
            }
            "e2e-key-removed" => "Encryption key removed: senders no longer encrypt to it.",
            _ => return None,
        };
        Some(Flash::ok(text))
    }
}

/// One API key as the pages show it (never its secret: the Hub has only its hash).
pub(crate) struct ApiKeyRow {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) scopes: String,
    pub(crate) created: pages::Time,
    /// `None`: it never expires.
    pub(crate) expires: Option<pages::Time>,
    pub(crate) expired: bool,
    /// `None`: never used.
    pub(crate) last_used: Option<pages::Time>,
}

impl ApiKeyRow {
    pub(crate) fn new(key: &ApiKeyInfo, now: OffsetDateTime) -> ApiKeyRow {
        ApiKeyRow {
            id: key.id.clone(),
            label: key.label.clone(),
            scopes: key.scopes.labels().join(", "),
            created: pages::time(key.created),
            expires: key.expires.map(pages::time),
            expired: key.expires.is_some_and(|e| e <= now),
            last_used: key.last_used.map(pages::time),
        }
    }
}

/// One end-to-end encryption key as the pages show it.
pub(crate) struct E2eKeyRow {
    pub(crate) fingerprint: String,
    pub(crate) recipient: String,
    pub(crate) comment: String,
    pub(crate) added: pages::Time,
}

impl E2eKeyRow {
    pub(crate) fn new(key: &E2eKey) -> E2eKeyRow {
        E2eKeyRow {
            fingerprint: key.fingerprint(),
            recipient: key.recipient.clone(),
            comment: key.comment.clone(),
            added: pages::time(key.added),
        }
    }
}

/// An API key just made: its secret, shown on this one answer.
struct NewKey {
    label: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    page: Page,
    csrf: String,
    api_keys: Vec<ApiKeyRow>,
    e2e_keys: Vec<E2eKeyRow>,
    created: Option<NewKey>,
    max_api_keys: usize,
    max_label: usize,
    max_days: u32,
    max_e2e_keys: usize,
    max_comment: usize,
}

/// The keys page.
pub(crate) async fn keys(
    State(web): State<Arc<Web>>,
    user: User,
    Query(done): Query<Done>,
) -> Response {
    keys_with(&web, &user, StatusCode::OK, done.flash(), None).await
}

async fn keys_with(
    web: &Web,
    user: &User,
    status: StatusCode,
    flash: Option<Flash>,
    created: Option<NewKey>,
) -> Response {
    let hub = &web.app.hub;
    let account = &user.client.account;
    let now = hub.now();
    let (status, flash, api_keys) = pages::listed(hub.api_keys(account).await, status, flash);
    let (status, flash, e2e_keys) = pages::listed(hub.e2e_keys(account).await, status, flash);
    let page = KeysPage {
        page: Page::new("Keys", Some(&user.session), "/keys").with_flash(flash),
        csrf: user.session.csrf.clone(),
        api_keys: api_keys.iter().map(|k| ApiKeyRow::new(k, now)).collect(),
        e2e_keys: e2e_keys.iter().map(E2eKeyRow::new).collect(),
        created,
        max_api_keys: MAX_API_KEYS_PER_ACCOUNT,
        max_label: MAX_API_KEY_LABEL,
        max_days: MAX_EXPIRES_IN_DAYS,
        max_e2e_keys: MAX_E2E_KEYS,
        max_comment: MAX_E2E_COMMENT,
    };
    render(status, &page)
}

/// Redirects to the keys page with a notice, or re-renders it with the refusal.
async fn after(web: &Web, user: &User, result: Result<&str, CoreError>) -> Response {
    match result {
        Ok(done) => Redirect::to(&format!("/keys?done={done}")).into_response(),
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            keys_with(web, user, status, Some(flash), None).await
        }
    }
}

/// The new-API-key form: the boxes send "on" when ticked and nothing otherwise.
#[derive(Deserialize)]
pub(crate) struct NewApiKeyForm {
    #[serde(default)]
    label: String,
    #[serde(default)]
    scope_send: String,
    #[serde(default)]
    scope_receive: String,
    #[serde(default)]
    expires_in_days: String,
}

/// The expiry of an `expires_in_days` field: empty for none, else 1 to
/// [`MAX_EXPIRES_IN_DAYS`] days from now (as the API takes it).
fn expiry(hub: &Hub, days: &str) -> Result<Option<OffsetDateTime>, CoreError> {
    let days = days.trim();
    if days.is_empty() {
        return Ok(None);
    }
    match days.parse::<u32>() {
        Ok(days @ 1..=MAX_EXPIRES_IN_DAYS) => {
            Ok(Some(hub.now() + time::Duration::days(i64::from(days))))
        }
        _ => Err(CoreError::invalid(format!(
            "an API key expires in 1 to {MAX_EXPIRES_IN_DAYS} days, or never when the field is left empty"
        ))),
    }
}

/// Makes an API key for this account and shows its secret on this answer, the only time it
/// is shown.
pub(crate) async fn create_api_key(
    State(web): State<Arc<Web>>,
    user: User,
    Form(form): Form<NewApiKeyForm>,
) -> Response {
    let hub = &web.app.hub;
    let result = async {
        let scopes = KeyScopes::of(
            [
                (form.scope_send == "on").then_some(KeyScope::Send),
                (form.scope_receive == "on").then_some(KeyScope::Receive),
            ]
            .into_iter()
            .flatten(),
        );
        let expires = expiry(hub, &form.expires_in_days)?;
        hub.create_api_key(
            &user.session.identity.actor(),
            &user.client.account,
            form.label.trim(),
            scopes,
            expires,
        )
        .await
    }
    .await;
    match result {
        Ok((key, secret)) => {
            let created = NewKey {
                label: key.label,
                secret: secret.expose().clone(),
            };
            let flash = Flash::ok(
                "API key created. Copy its secret now: it is shown only once, and the hub keeps only a hash of it.",
            );
            keys_with(&web, &user, StatusCode::OK, Some(flash), Some(created)).await
        }
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            keys_with(&web, &user, status, Some(flash), None).await
        }
    }
}

/// Revokes one of this account's API keys (another account's id is no key of this one).
pub(crate) async fn revoke_api_key(
    State(web): State<Arc<Web>>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    let result = web
        .app
        .hub
        .revoke_api_key(&user.session.identity.actor(), &user.client.account, &id)
        .await
        .map(|()| "api-key-revoked");
    after(&web, &user, result).await
}

/// The add-encryption-key form.
#[derive(Deserialize)]
pub(crate) struct E2eKeyForm {
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    comment: String,
}

/// Registers an age recipient as one of this account's end-to-end encryption keys.
pub(crate) async fn add_e2e_key(
    State(web): State<Arc<Web>>,
    user: User,
    Form(form): Form<E2eKeyForm>,
) -> Response {
    let result = web
        .app
        .hub
        .add_e2e_key(
            &user.session.identity.actor(),
            &user.client.account,
            &form.recipient,
            form.comment.trim(),
        )
        .await
        .map(|_| "e2e-key-added");
    after(&web, &user, result).await
}

/// Removes one of this account's end-to-end encryption keys, named by its fingerprint.
pub(crate) async fn remove_e2e_key(
    State(web): State<Arc<Web>>,
    user: User,
    Path(fingerprint): Path<String>,
) -> Response {
    let result = web
        .app
        .hub
        .remove_e2e_key(
            &user.session.identity.actor(),
            &user.client.account,
            &fingerprint,
        )
        .await
        .map(|_| "e2e-key-removed");
    after(&web, &user, result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_known_codes_only() {
        let done = |code: &str| {
            Done {
                done: Some(code.to_owned()),
            }
            .flash()
            .map(|f| f.text)
        };
        assert!(done("api-key-revoked").is_some());
        assert!(done("e2e-key-added").is_some());
        assert!(done("e2e-key-removed").is_some());
        assert_eq!(done("<script>"), None);
    }
}
