//! Who a browser is: the session cookies, their refresh, and the CSRF token of a session.
//!
//! A sign-in ends in the Hub's token pair (`mailroom_https::auth::login`). The access token
//! travels in the `__Host-mailroom` cookie and the refresh token in `__Host-mailroom-refresh`,
//! both `Secure; HttpOnly; SameSite=Strict; Path=/` and no longer-lived than the tokens. Every
//! request is resolved by [`resolve`]: the access token is checked by the Hub
//! (`mailroom_https::auth::authenticate`), and once it has expired the refresh token is traded
//! once for a new pair, so an active user stays signed in up to the refresh lifetime. Logout,
//! a password change, a disable, a ban or a kick revoke the tokens in the Hub's store, and so
//! the session. Nothing about a session is kept here.
//!
//! The CSRF token of a session is an HMAC-SHA-256 of its login id under the key of
//! [`crate::csrf_key`] (kept in the data folder, so a token outlives a restart as the login
//! does); [`crate::page_checks::csrf`] checks it on every state-changing request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, KeyInit, Mac};
use mailroom_core::{ClientSession, IssuedTokens, Scope, Secret, TokenIdentity};
use mailroom_https::{AppState, ConnInfo};
use sha2::Sha256;

use crate::csrf_key::CsrfKey;
use crate::pages;

/// The cookie holding the access token.
pub(crate) const SESSION_COOKIE: &str = "__Host-mailroom";
/// The cookie holding the refresh token.
pub(crate) const REFRESH_COOKIE: &str = "__Host-mailroom-refresh";
/// The cookie holding the sign-in form's anti-forgery nonce (double submit).
pub(crate) const LOGIN_COOKIE: &str = "__Host-mailroom-login";

/// What the pages share: the API's state, the CSRF key and the API's router (for the bridge).
pub(crate) struct Web {
    /// The HTTPS front end's state (Hub, `[https]` settings, login limiter).
    pub(crate) app: Arc<AppState>,
    /// The API's router, which the bridge hands browser uploads and downloads to.
    pub(crate) api: Router,
    csrf_key: CsrfKey,
}

impl Web {
    /// The pages' state over the API's, with the CSRF tokens made under `csrf_key`.
    pub(crate) fn new(app: Arc<AppState>, csrf_key: CsrfKey) -> Web {
        Web {
            api: mailroom_https::router(app.clone()),
            app,
            csrf_key,
        }
    }

    fn mac(&self, login_id: &str) -> Hmac<Sha256> {
        // Invariant: HMAC takes a key of any length, so this never fails.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.csrf_key.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(b"mailroom-web csrf\0");
        mac.update(login_id.as_bytes());
        mac
    }

    /// The CSRF token of the login `login_id`.
    pub(crate) fn csrf_token(&self, login_id: &str) -> String {
        hex::encode(self.mac(login_id).finalize().into_bytes())
    }

    /// Whether `presented` is the CSRF token of `login_id` (compared in constant time).
    pub(crate) fn csrf_ok(&self, login_id: &str, presented: &str) -> bool {
        let Ok(bytes) = hex::decode(presented.trim()) else {
            return false;
        };
        self.mac(login_id).verify_slice(&bytes).is_ok()
    }
}

/// A signed-in browser: the identity the Hub vouches for, the access token to act with, and
/// the session's CSRF token for the forms of the page.
#[derive(Clone)]
pub(crate) struct WebSession {
    /// Who the session acts for.
    pub(crate) identity: TokenIdentity,
    /// The access token (for the bridge's `Authorization` header).
    pub(crate) access: Arc<Secret<String>>,
    /// The CSRF token of this login.
    pub(crate) csrf: String,
}

/// Resolves the session cookies of every request into a [`WebSession`] request extension,
/// refreshing the token pair when the access token has expired; sets or clears the cookies on
/// the way out.
pub(crate) async fn resolve(
    State(web): State<Arc<Web>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnInfo>().map(|c| c.peer);
    let mut cookies = Vec::new();
    if let Some(peer) = peer {
        let (session, set) = session_of(&web, request.headers(), peer).await;
        cookies = set;
        if let Some(session) = session {
            request.extensions_mut().insert(session);
        }
    }
    let mut response = next.run(request).await;
    // A handler that set the session cookie itself (sign-in, sign-out) has the last word.
    let handled = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| {
            v.as_bytes()
                .starts_with(format!("{SESSION_COOKIE}=").as_bytes())
        });
    if !handled {
        for cookie in cookies {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    response
}

/// The session of a request's cookies, and the cookies to set (after a refresh) or clear
/// (when they no longer work).
async fn session_of(
    web: &Web,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> (Option<WebSession>, Vec<HeaderValue>) {
    let hub = &web.app.hub;
    if let Some(token) = cookie(headers, SESSION_COOKIE)
        && let Ok(identity) = mailroom_https::auth::authenticate(hub, token, peer).await
    {
        let session = web_session(web, identity, token.to_owned());
        return (Some(session), Vec::new());
    }
    let Some(refresh) = cookie(headers, REFRESH_COOKIE) else {
        if cookie(headers, SESSION_COOKIE).is_some() {
            return (None, clear_session_cookies());
        }
        return (None, Vec::new());
    };
    let lifetimes = web.app.config.token_lifetimes();
    match hub
        .refresh_tokens(refresh, Some(peer.to_string()), &lifetimes)
        .await
    {
        Ok(Some(issued)) => {
            let access = issued.access.expose().clone();
            match mailroom_https::auth::authenticate(hub, &access, peer).await {
                Ok(identity) => {
                    let cookies = session_cookies(web, &issued);
                    (Some(web_session(web, identity, access)), cookies)
                }
                Err(_) => (None, clear_session_cookies()),
            }
        }
        Ok(None) | Err(_) => (None, clear_session_cookies()),
    }
}

fn web_session(web: &Web, identity: TokenIdentity, access: String) -> WebSession {
    WebSession {
        csrf: web.csrf_token(&identity.session),
        identity,
        access: Arc::new(Secret::new(access)),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A `Set-Cookie` value for `name`: secure, script-proof, same-site only, for the whole site.
pub(crate) fn set_cookie(name: &str, value: &str, max_age_seconds: i64) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| clear_cookie(name))
}

/// A `Set-Cookie` value that deletes cookie `name`.
pub(crate) fn clear_cookie(name: &str) -> HeaderValue {
    match name {
        SESSION_COOKIE => HeaderValue::from_static(
            "__Host-mailroom=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
        REFRESH_COOKIE => HeaderValue::from_static(
            "__Host-mailroom-refresh=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
        _ => HeaderValue::from_static(
            "__Host-mailroom-login=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    }
}

/// The cookies of a fresh token pair.
pub(crate) fn session_cookies(web: &Web, issued: &IssuedTokens) -> Vec<HeaderValue> {
    let now = web.app.hub.now();
    let seconds = |until: time::OffsetDateTime| (until - now).whole_seconds().max(1);
    vec![
        set_cookie(
            SESSION_COOKIE,
            issued.access.expose(),
            seconds(issued.access_expires),
        ),
        set_cookie(
            REFRESH_COOKIE,
            issued.refresh.expose(),
            seconds(issued.refresh_expires),
        ),
    ]
}

/// The cookies that end a session in the browser.
pub(crate) fn clear_session_cookies() -> Vec<HeaderValue> {
    vec![clear_cookie(SESSION_COOKIE), clear_cookie(REFRESH_COOKIE)]
}

/// A signed-in client (a mailbox owner). Without a session: a redirect to the sign-in page;
/// with an admin session: a 403 page.
pub(crate) struct User {
    /// The browser's session.
    pub(crate) session: WebSession,
    /// The mailbox session every Hub call runs as.
    pub(crate) client: ClientSession,
}

impl FromRequestParts<Arc<Web>> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Web>) -> Result<Self, Self::Rejection> {
        let Some(session) = parts.extensions.get::<WebSession>().cloned() else {
            return Err(Redirect::to("/login").into_response());
        };
        let Some(client) = session.identity.client_session() else {
            return Err(pages::refusal(
                Some(&session),
                axum::http::StatusCode::FORBIDDEN,
                "Administrators own no mailbox",
                "This page shows a mailbox. Administrator accounts have none: manage accounts and policy from the administration pages.",
            ));
        };
        Ok(User { session, client })
    }
}

/// A signed-in administrator. Without a session: a redirect to the sign-in page; with a
/// client session: a 403 page.
pub(crate) struct Admin {
    /// The browser's session.
    pub(crate) session: WebSession,
}

impl FromRequestParts<Arc<Web>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Web>) -> Result<Self, Self::Rejection> {
        let Some(session) = parts.extensions.get::<WebSession>().cloned() else {
            return Err(Redirect::to("/login").into_response());
        };
        if session.identity.scope != Scope::Admin {
            return Err(pages::refusal(
                Some(&session),
                axum::http::StatusCode::FORBIDDEN,
                "For administrators only",
                "This page belongs to the administration of the hub. Your account is a client account.",
            ));
        }
        Ok(Admin { session })
    }
}

/// The session of a request, if it has one (pages that work either way).
pub(crate) struct MaybeSession(pub(crate) Option<WebSession>);

impl FromRequestParts<Arc<Web>> for MaybeSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Web>) -> Result<Self, Self::Rejection> {
        Ok(MaybeSession(parts.extensions.get::<WebSession>().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-mailroom-refresh=r; __Host-mailroom=a; x=1"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("a"));
        assert_eq!(cookie(&headers, REFRESH_COOKIE), Some("r"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }

    #[test]
    fn set_cookies_carry_every_flag() {
        let value = set_cookie(SESSION_COOKIE, "abc", 900);
        let text = value.to_str().unwrap_or_default();
        for flag in [
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=900",
        ] {
            assert!(text.contains(flag), "{text} lacks {flag}");
        }
        assert!(!text.contains("Domain"), "__Host- cookies carry no Domain");
    }
}
