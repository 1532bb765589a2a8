//! The static files of the pages (stylesheet, scripts, icon), compiled into the binary with
//! `include_str!`. All are ours; nothing is fetched from elsewhere. They carry no secret and
//! change only with the binary, so they may be cached for a day.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// `(name, content type, body)` of every asset.
const ASSETS: [(&str, &str, &str); 5] = [
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "time.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/time.js"),
    ),
    (
        "send.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/send.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../assets/icon.svg"),
    ),
];

/// `/assets/{name}`; an unknown name is the pages' 404.
pub(crate) async fn asset(
    Path(name): Path<String>,
    session: crate::session::MaybeSession,
    uri: axum::http::Uri,
) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return crate::pages::not_found(session, uri).await;
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}
