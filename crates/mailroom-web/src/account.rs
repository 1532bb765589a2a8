//! A client's own account page (`/account`): its quota use against its limits, its password
//! (changed given the current one), its SSH keys (added, removed) and its live sessions (sign
//! out the others). TOTP re-enrolment stays on the security page ([`crate::user`]).
//!
//! Each form is one Hub call on the session's own account (`Hub::change_own_password` and its
//! siblings), so a page can never act on another account; a Hub refusal is shown with the
//! Hub's own sentence and changes nothing. What it does not do: it decides nothing itself but
//! that the two new passwords typed agree.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use mailroom_core::{AuthorizedKey, Secret};
use serde::Deserialize;

use crate::pages::{self, Flash, Page, Time, render};
use crate::session::{self, User, Web, clear_session_cookies};

/// The code of a notice after a redirect (`?done=…`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
}

impl Done {
    fn flash(&self) -> Option<Flash> {
        let text = match self.done.as_deref()? {
            "key-added" => "SSH key added: it signs you in over SFTP and SCP from now on.",
            "key-removed" => "SSH key removed: it no longer signs you in.",
            "signed-out-others" => {
                "Your other sessions are signed out. This one goes on; API keys are not sessions and still work."
            }
            _ => return None,
        };
        Some(Flash::ok(text))
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    page: Page,
    csrf: String,
    usage: Option<Usage>,
    keys: Vec<KeyRow>,
    sessions: Vec<SessionRow>,
    key_draft: String,
}

/// Quota use against limits, in words.
struct Usage {
    files: String,
    bytes: String,
    /// Percent of the tighter quota used (for the meter), when there is a quota.
    percent: Option<u64>,
    max_file_size: String,
    retention: String,
    max_sessions: String,
}

/// One SSH key.
struct KeyRow {
    algorithm: String,
    fingerprint: String,
    comment: String,
}

/// One live session.
struct SessionRow {
    id: String,
    protocol: String,
    source: String,
    started: Time,
    current: bool,
}

/// `/account`.
pub(crate) async fn account(
    State(web): State<Arc<Web>>,
    user: User,
    Query(done): Query<Done>,
) -> Response {
    account_with(&web, &user, StatusCode::OK, done.flash(), String::new()).await
}

async fn account_with(
    web: &Web,
    user: &User,
    status: StatusCode,
    flash: Option<Flash>,
    key_draft: String,
) -> Response {
    let hub = &web.app.hub;
    let (status, flash, usage) = match hub.own_usage(&user.client).await {
        Ok(usage) => (status, flash, Some(describe(&usage))),
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            (status, Some(flash), None)
        }
    };
    let keys = hub
        .own_keys(&user.client)
        .await
        .unwrap_or_default()
        .iter()
        .map(|k| KeyRow {
            algorithm: k.algorithm.clone(),
            fingerprint: k.fingerprint(),
            comment: k.comment.clone(),
        })
        .collect();
    let sessions = hub
        .own_sessions(&user.session.identity)
        .await
        .unwrap_or_default()
        .iter()
        .map(|s| SessionRow {
            id: s.info.reference().to_string(),
            protocol: s.info.protocol.as_str().to_owned(),
            source: s
                .info
                .source
                .clone()
                .unwrap_or_else(|| "unknown".to_owned()),
            started: pages::time(s.info.started),
            current: s.current,
        })
        .collect();
    let page = AccountPage {
        page: Page::new("Account", Some(&user.session), "/account").with_flash(flash),
        csrf: user.session.csrf.clone(),
        usage,
        keys,
        sessions,
        key_draft,
    };
    render(status, &page)
}

/// The account's use and limits in words.
fn describe(usage: &mailroom_core::OwnUsage) -> Usage {
    let limits = &usage.limits;
    let (files, bytes) = (usage.inbox.files, usage.inbox.bytes);
    let percent = [
        limits.quota_files.map(|q| ratio(files, q)),
        limits.quota_bytes.map(|q| ratio(bytes, q)),
    ]
    .into_iter()
    .flatten()
    .max();
    let of = |limit: Option<u64>, show: &dyn Fn(u64) -> String| match limit {
        Some(limit) => format!(" of {}", show(limit)),
        None => " (no limit)".to_owned(),
    };
    Usage {
        files: format!("{files}{}", of(limits.quota_files, &|n| n.to_string())),
        bytes: format!(
            "{}{}",
            pages::size(bytes),
            of(limits.quota_bytes, &pages::size)
        ),
        percent,
        max_file_size: limits
            .max_file_size
            .map_or_else(|| "no limit".to_owned(), pages::size),
        retention: limits.retention_days.map_or_else(
            || "kept until acknowledged".to_owned(),
            |d| format!("{d} days"),
        ),
        max_sessions: limits
            .max_sessions
            .map_or_else(|| "no limit".to_owned(), |n| n.to_string()),
    }
}

/// `used` as a percentage of `limit`, at most 100.
fn ratio(used: u64, limit: u64) -> u64 {
    if limit == 0 {
        return 100;
    }
    (used.saturating_mul(100) / limit).min(100)
}

/// The fields of the password form.
#[derive(Deserialize)]
pub(crate) struct PasswordFields {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

/// Changes the account's password, given the current one. Every token of the account is
/// revoked with it (this session's too), so the browser is signed out and asked to sign in
/// with the new password.
pub(crate) async fn change_password(
    State(web): State<Arc<Web>>,
    user: User,
    Form(fields): Form<PasswordFields>,
) -> Response {
    if fields.new != fields.confirm {
        let flash = Flash::error("The two new passwords differ. Nothing was changed.");
        return account_with(
            &web,
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(flash),
            String::new(),
        )
        .await;
    }
    let result = web
        .app
        .hub
        .change_own_password(
            &user.client,
            Secret::new(fields.current),
            Secret::new(fields.new),
        )
        .await;
    match result {
        Ok(()) => {
            let mut response = Redirect::to("/login?done=password-changed").into_response();
            for value in clear_session_cookies() {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            account_with(&web, &user, status, Some(flash), String::new()).await
        }
    }
}

/// The field of the new SSH key form.
#[derive(Deserialize)]
pub(crate) struct KeyFields {
    #[serde(default)]
    key: String,
}

/// Adds an SSH public key to the account.
pub(crate) async fn add_key(
    State(web): State<Arc<Web>>,
    user: User,
    Form(fields): Form<KeyFields>,
) -> Response {
    let result = match AuthorizedKey::parse(&fields.key) {
        Ok(key) => web.app.hub.add_own_key(&user.client, key).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => Redirect::to("/account?done=key-added").into_response(),
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            // The draft comes back (escaped), capped, so a typo need not be pasted again.
            let draft: String = fields.key.chars().take(16 * 1024).collect();
            account_with(&web, &user, status, Some(flash), draft).await
        }
    }
}

/// The field of a key's remove form.
#[derive(Deserialize)]
pub(crate) struct RemoveFields {
    #[serde(default)]
    fingerprint: String,
}

/// Removes one of the account's SSH keys by its fingerprint.
pub(crate) async fn remove_key(
    State(web): State<Arc<Web>>,
    user: User,
    Form(fields): Form<RemoveFields>,
) -> Response {
    match web
        .app
        .hub
        .remove_own_key(&user.client, &fields.fingerprint)
        .await
    {
        Ok(_) => Redirect::to("/account?done=key-removed").into_response(),
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            account_with(&web, &user, status, Some(flash), String::new()).await
        }
    }
}

/// Signs out every other session of the account; this one goes on with a fresh token pair
/// in its cookies.
pub(crate) async fn sign_out_others(State(web): State<Arc<Web>>, user: User) -> Response {
    let lifetimes = web.app.config.token_lifetimes();
    match web
        .app
        .hub
        .sign_out_other_sessions(&user.session.identity, &lifetimes)
        .await
    {
        Ok(issued) => {
            let mut response = Redirect::to("/account?done=signed-out-others").into_response();
            for value in session::session_cookies(&web, &issued) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            account_with(&web, &user, status, Some(flash), String::new()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_capped_percentages() {
        assert_eq!(ratio(0, 10), 0);
        assert_eq!(ratio(5, 10), 50);
        assert_eq!(ratio(30, 10), 100);
        assert_eq!(ratio(1, 0), 100);
        assert_eq!(ratio(u64::MAX, 3), 100);
    }
}
