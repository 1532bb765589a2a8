//! The browser's way into the API's uploads and downloads. A signed-in page cannot send a
//! bearer token (the session cookie is HttpOnly), so `/app/api/v1/uploads…` and
//! `/inbox/{id}/download` hand the request, unchanged but for its path and an
//! `Authorization` header made from the session, to the API's own router: the resumable
//! uploads (create, `PATCH` at `Upload-Offset`, `HEAD`/`GET` for the offset, finish with the
//! SHA-256, abort) and the download with `Range` are the API's handlers, with the API's
//! checks, events and problem documents.
//!
//! Upload requests are state-changing, so [`crate::page_checks::csrf`] has already checked their
//! `X-CSRF-Token` header and origin; the offset queries (`HEAD`, `GET`) change nothing. A
//! download is a GET, protected by the `SameSite=Strict` cookie and `Sec-Fetch-Site`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use mailroom_https::{ConnInfo, Problem};
use tower::ServiceExt;

use crate::session::{Web, WebSession};

/// The prefix the pages' script uses for the API.
const PREFIX: &str = "/app";

/// `/app/api/v1/uploads…`: the API's resumable uploads for the signed-in browser.
pub(crate) async fn upload(State(web): State<Arc<Web>>, request: Request) -> Response {
    let Some(target) = request
        .uri()
        .path_and_query()
        .and_then(|pq| pq.as_str().strip_prefix(PREFIX))
        .map(str::to_owned)
    else {
        return Problem::new(StatusCode::NOT_FOUND, "no such endpoint").into_response();
    };
    forward(&web, request, &target).await
}

/// `/inbox/{id}/download`: the API's download of a delivery (with `Range`), for the browser.
pub(crate) async fn download(
    State(web): State<Arc<Web>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    if let Some(site) = request.headers().get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Problem::new(StatusCode::FORBIDDEN, "downloads start from this site only")
            .into_response();
    }
    // Delivery ids are hex; anything else never reaches the API's path.
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return crate::pages::refusal(
            request.extensions().get::<WebSession>(),
            StatusCode::NOT_FOUND,
            "No such file",
            "There is no such delivery in your inbox.",
        );
    }
    forward(&web, request, &format!("/api/v1/inbox/{id}/content")).await
}

/// Hands `request` to the API at `target` as the session's bearer.
async fn forward(web: &Web, request: Request, target: &str) -> Response {
    let Some(session) = request.extensions().get::<WebSession>().cloned() else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "your session has ended; sign in again",
        )
        .into_response();
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return Problem::new(StatusCode::NOT_FOUND, "no such endpoint").into_response();
    };
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {}", session.access.expose())) else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "your session has ended; sign in again",
        )
        .into_response();
    };
    // A fresh request: the API's router must not see this router's extensions (its matched
    // path parameters); only the connection goes along.
    let conn = request.extensions().get::<ConnInfo>().cloned();
    let (parts, body) = request.into_parts();
    let mut forwarded = Request::new(body);
    *forwarded.method_mut() = parts.method;
    *forwarded.uri_mut() = uri;
    *forwarded.version_mut() = parts.version;
    *forwarded.headers_mut() = parts.headers;
    if let Some(conn) = conn {
        forwarded.extensions_mut().insert(conn);
    }
    let headers = forwarded.headers_mut();
    headers.remove(header::COOKIE);
    headers.insert(header::AUTHORIZATION, bearer);
    match web.api.clone().oneshot(forwarded).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
