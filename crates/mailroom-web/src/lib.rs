//! The browser UI of the HTTPS front end: server-rendered pages for users (inbox, send,
//! receipts, their API keys and end-to-end encryption keys, TOTP enrolment, their own account:
//! quota use, password, SSH keys, sessions) and for
//! administrators (accounts with their keys, groups, routes, bans, live sessions, the audit
//! trail).
//!
//! It is a thin adapter like the API beside it, and reuses the API's pieces rather than
//! repeating them: a sign-in is `mailroom_https::auth::login` (the Hub's login steps, the same
//! defender, events and limits), the session cookie carries the same bearer token the Hub
//! issues and checks on every request ([`session`]), and the browser's uploads and downloads
//! go through the API's own handlers ([`bridge`]). Pages call the Hub directly with the core's
//! parsers. Templates (askama) and static assets are compiled into the binary; the pages run
//! no third-party code and no inline script or style, under a strict CSP ([`guard`]).
//!
//! What it does not do: it decides no login and no authorisation (the Hub does), and it never
//! shows an administrator a mailbox's content (admin accounts own none).

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{any, get, post};
use mailroom_https::AppState;

pub use csrf_key::{CSRF_KEY_FILE, CsrfKey, load_or_create_csrf_key};

mod account;
mod admin;
mod assets;
mod bridge;
mod csrf_key;
mod keys;
mod page_checks;
mod pages;
mod qr;
mod session;
mod user;

/// [`router_with_key`] with a CSRF key drawn now: forms opened before a restart fail after it.
/// For tests and callers without a data folder; `mailroom serve` keeps its key
/// ([`load_or_create_csrf_key`]).
pub fn router(state: Arc<AppState>) -> Router {
    router_with_key(state, CsrfKey::random())
}

/// The web UI's router, to merge beside the API (`mailroom_https::serve_with`), its CSRF
/// tokens made under `csrf_key`. It serves `/`, the pages, `/assets/*` and `/app/api/v1/*`
/// (the API's uploads for a signed-in browser); the API keeps `/api/v1/*`. It sets no
/// fallback, so that it merges with the API's: a catch-all route answers every other path,
/// with a 404 page, or under `/api/` with the API's 404 problem document.
pub fn router_with_key(state: Arc<AppState>, csrf_key: CsrfKey) -> Router {
    let web = Arc::new(session::Web::new(state, csrf_key));
    Router::new()
        .route("/", get(user::home))
        .route("/login", get(user::login_page).post(user::login_submit))
        .route("/logout", post(user::logout))
        .route("/inbox", get(user::inbox))
        .route("/inbox/zip", post(user::zip_selected))
        .route("/inbox/acknowledge", post(user::acknowledge_selected))
        .route("/inbox/{id}/download", get(bridge::download))
        .route("/inbox/{id}/ack", post(user::acknowledge))
        .route("/send", get(user::send))
        .route("/sent", get(user::sent))
        .route("/sent/{id}/recall", post(user::recall))
        .route("/keys", get(keys::keys))
        .route("/keys/api", post(keys::create_api_key))
        .route("/keys/api/{id}/revoke", post(keys::revoke_api_key))
        .route("/keys/e2e", post(keys::add_e2e_key))
        .route("/keys/e2e/{fingerprint}/remove", post(keys::remove_e2e_key))
        .route("/security", get(user::security))
        .route("/security/totp", post(user::enroll_totp))
        .route("/account", get(account::account))
        .route("/account/password", post(account::change_password))
        .route("/account/ssh-keys", post(account::add_key))
        .route("/account/ssh-keys/remove", post(account::remove_key))
        .route(
            "/account/sessions/sign-out-others",
            post(account::sign_out_others),
        )
        .route("/app/api/v1/uploads", post(bridge::upload))
        .route(
            "/app/api/v1/uploads/{id}",
            get(bridge::upload)
                .head(bridge::upload)
                .patch(bridge::upload)
                .delete(bridge::upload),
        )
        .route("/app/api/v1/uploads/{id}/finish", post(bridge::upload))
        .route("/admin", get(admin::home))
        .route(
            "/admin/accounts",
            get(admin::accounts).post(admin::create_account),
        )
        .route("/admin/accounts/{name}", get(admin::account))
        .route("/admin/accounts/{name}/state", post(admin::set_state))
        .route(
            "/admin/accounts/{name}/password",
            post(admin::reset_password),
        )
        .route("/admin/accounts/{name}/access", post(admin::set_access))
        .route("/admin/accounts/{name}/keys", post(admin::add_key))
        .route(
            "/admin/accounts/{name}/keys/remove",
            post(admin::remove_key),
        )
        .route(
            "/admin/accounts/{name}/api-keys/{id}/revoke",
            post(admin::revoke_api_key),
        )
        .route(
            "/admin/accounts/{name}/e2e-keys/{fingerprint}/remove",
            post(admin::remove_e2e_key),
        )
        .route("/admin/accounts/{name}/delete", post(admin::delete_account))
        .route(
            "/admin/groups",
            get(admin::groups).post(admin::create_group),
        )
        .route("/admin/groups/{name}/delete", post(admin::delete_group))
        .route("/admin/groups/{name}/members", post(admin::add_member))
        .route(
            "/admin/groups/{name}/members/remove",
            post(admin::remove_member),
        )
        .route("/admin/routes", get(admin::routes).post(admin::set_route))
        .route("/admin/routes/remove", post(admin::remove_route))
        .route("/admin/bans", get(admin::bans).post(admin::add_ban))
        .route("/admin/bans/remove", post(admin::remove_ban))
        .route("/admin/sessions", get(admin::sessions))
        .route("/admin/sessions/{id}/kick", post(admin::kick))
        .route("/admin/jobs", get(admin::jobs))
        .route("/admin/jobs/{id}/{action}", post(admin::job_action))
        .route("/admin/audit", get(admin::audit))
        .route("/assets/{name}", get(assets::asset))
        .route("/{*rest}", any(pages::not_found))
        .method_not_allowed_fallback(pages::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            web.clone(),
            page_checks::csrf,
        ))
        .layer(middleware::from_fn_with_state(
            web.clone(),
            session::resolve,
        ))
        .layer(middleware::from_fn_with_state(
            web.clone(),
            page_checks::admission,
        ))
        .layer(middleware::from_fn(page_checks::headers))
        .with_state(web)
}
