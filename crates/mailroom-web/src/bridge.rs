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
//! download is a GET, protected by the `SameSite=Strict` cookie and `Sec-Fetch-Site`; a
//! download the API refuses is shown as a page with the Hub's sentence (a followed link is no
//! place for a JSON document), while the upload script keeps the API's problem documents.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
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
    if request.extensions().get::<WebSession>().is_none() {
        return Redirect::to("/login").into_response();
    }
    let session = request.extensions().get::<WebSession>().cloned();
    let response = forward(&web, request, &format!("/api/v1/inbox/{id}/content")).await;
    as_page(session.as_ref(), response).await
}

/// A download the API refused, as a page: a link the browser followed shows the Hub's
/// sentence, not a JSON document. Anything else passes unchanged.
async fn as_page(session: Option<&WebSession>, response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_problem {
        return response;
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        detail: String,
    }
    // Problem documents are a few hundred bytes; a larger one is not read.
    let detail = axum::body::to_bytes(response.into_body(), 16 * 1024)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Detail>(&bytes).ok())
        .map_or_else(
            || "The download was refused.".to_owned(),
            |d| crate::pages::capitalise(&d.detail),
        );
    crate::pages::refusal(session, status, "Download refused", &detail)
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
