//! What every page request goes through besides the session: admission (bans, as for the
//! API), the security headers (a strict CSP with no inline script or style, no framing, no
//! sniffing), and the CSRF check of every state-changing request.
//!
//! CSRF defence is layered: the cookies are `SameSite=Strict`; a request that says where it
//! comes from (`Origin`, `Sec-Fetch-Site`) must come from this site; and every request other
//! than GET and HEAD must carry the session's CSRF token, in the `csrf` field of a form or the
//! `X-CSRF-Token` header (the upload script). The sign-in form, which has no session yet, is
//! checked against the nonce of its own cookie (double submit). A refusal is a 403 page and
//! the handler never runs, so nothing changes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mailroom_core::Protocol;
use mailroom_https::ConnInfo;

use crate::pages;
use crate::session::{LOGIN_COOKIE, Web, WebSession, cookie};

/// The header the upload script sends its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Largest form body read for its CSRF field (forms are small; uploads use the header).
const FORM_LIMIT: usize = 64 * 1024;

/// The content security policy of every page: our own files only, nothing inline, no frames,
/// forms only to us.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

/// Adds the security headers to every answer of the pages.
pub(crate) async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` Chromium sends `Origin: null`
    // with form posts, and the origin check needs the real one. Other sites still get nothing.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Refuses requests from a banned or denied address, as the API does (the Hub accounts the
/// refusal at most once a minute per address).
pub(crate) async fn admission(
    State(web): State<Arc<Web>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnInfo>().map(|c| c.peer);
    if let Some(peer) = peer
        && let Err(err) = web.app.hub.admit(peer, Protocol::Https).await
    {
        tracing::info!(reason = %err, "page request refused at admission");
        if request.uri().path().starts_with("/api/") {
            return mailroom_https::Problem::new(
                StatusCode::FORBIDDEN,
                "requests from your address are refused for now",
            )
            .into_response();
        }
        return pages::refusal(
            None,
            StatusCode::FORBIDDEN,
            "Access refused",
            "Requests from your address are refused for now. Try again later or ask your administrator.",
        );
    }
    next.run(request).await
}

/// Checks the origin and CSRF token of every request other than GET and HEAD.
pub(crate) async fn csrf(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    // Under `/api/` the pages serve only the API's 404 problem for paths the API lacks: it
    // changes nothing and takes bearer tokens, not cookies.
    if matches!(*request.method(), Method::GET | Method::HEAD)
        || request.uri().path().starts_with("/api/")
    {
        return next.run(request).await;
    }
    let session = request.extensions().get::<WebSession>().cloned();
    if !same_origin(request.headers(), request.uri()) {
        tracing::info!(path = %request.uri().path(), "cross-site request refused");
        return forged(session.as_ref());
    }
    let (parts, body) = request.into_parts();
    let mut presented = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = body;
    if presented.is_none() && is_form(&parts.headers) {
        let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
            return pages::refusal(
                session.as_ref(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form sent more than this server takes. Go back and shorten it.",
            );
        };
        presented = form_field(&bytes, "csrf");
        body = Body::from(bytes);
    }
    let good = match (parts.uri.path(), presented.as_deref()) {
        (_, None) => false,
        ("/login", Some(token)) => cookie(&parts.headers, LOGIN_COOKIE)
            .is_some_and(|nonce| constant_time_eq(nonce.as_bytes(), token.as_bytes())),
        (_, Some(token)) => session
            .as_ref()
            .is_some_and(|s| web.csrf_ok(&s.identity.session, token)),
    };
    if !good {
        tracing::info!(path = %parts.uri.path(), "request without a valid CSRF token refused");
        return forged(session.as_ref());
    }
    next.run(Request::from_parts(parts, body)).await
}

fn forged(session: Option<&WebSession>) -> Response {
    let mut response = pages::refusal(
        session,
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The request did not carry this page's security token, or came from another site, so nothing was changed. Reload the page and try again.",
    );
    response
        .headers_mut()
        .insert("x-mailroom-refusal", HeaderValue::from_static("csrf"));
    response.into_response()
}

/// Whether a request says it comes from this site, or says nothing (non-browser clients; the
/// token still decides).
pub(crate) fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let (Some(host), Ok(origin)) = (host, origin.to_str()) else {
        return false;
    };
    origin.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "https" | "http") && rest.eq_ignore_ascii_case(host)
    })
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The value of field `name` in a url-encoded form body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let fields: Vec<(String, String)> = serde_urlencoded_fields(body);
    fields.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn serde_urlencoded_fields(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn origins() {
        let uri: Uri = "/inbox".parse().unwrap_or_default();
        let check = |pairs: &[(&'static str, &'static str)]| same_origin(&headers(pairs), &uri);
        assert!(check(&[("host", "hub.example:8443")]));
        assert!(check(&[
            ("host", "hub.example:8443"),
            ("origin", "https://hub.example:8443")
        ]));
        assert!(!check(&[
            ("host", "hub.example:8443"),
            ("origin", "https://evil.example")
        ]));
        assert!(!check(&[("host", "hub.example:8443"), ("origin", "null")]));
        assert!(!check(&[
            ("host", "hub.example:8443"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(!check(&[
            ("host", "hub.example:8443"),
            ("sec-fetch-site", "same-site")
        ]));
    }

    #[test]
    fn form_fields() {
        assert_eq!(
            form_field(b"a=1&csrf=ab%20c&b=2", "csrf").as_deref(),
            Some("ab c")
        );
        assert_eq!(form_field(b"a=1", "csrf"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
