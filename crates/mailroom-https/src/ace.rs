//! Negotiated methods on the API: `GET /api/v1/ace` publishes what each kind of link
//! supports; an agent's login names the methods it wants and gets one per category or a 400
//! naming both lists; and request and response bodies are compressed as agreed.
//!
//! Body compression (`Content-Encoding` / `Accept-Encoding`, `zstd` or `gzip`) is honoured
//! only on requests with a token, never before login: a token from a negotiated login takes
//! exactly the compression it agreed on, any other token the ones `[ace.compression]`
//! supports for HTTPS. A compressed upload counts its decompressed bytes against the PATCH
//! limit and the upload's size, so a small body cannot expand past either.

use std::io;
use std::sync::Arc;

use async_compression::tokio::bufread::{GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use futures::{Stream, StreamExt, TryStreamExt};
use mailroom_ace::{Ace, Agreed, BodyCoding, Link, Published, Wanted};
use mailroom_core::TokenIdentity;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::api::Refusals;
use crate::problem::Problem;
use crate::server::AppState;

/// Bytes read from a decoder or encoder at a time.
const CODING_CHUNK: usize = 64 * 1024;

/// The supported and default methods per kind of link: what an agent reads before it logs
/// in, to name the methods it wants.
#[utoipa::path(get, path = "/api/v1/ace", tag = "auth",
    responses((status = 200, description = "The hub's methods per link", body = Published), Refusals))]
pub(crate) async fn published(State(state): State<Arc<AppState>>) -> Json<Published> {
    Json(state.ace.published())
}

/// Agrees on the methods an agent's login wants, before any credential is checked: no
/// agreement is a 400 that names both lists, and nothing is recorded or changed.
pub(crate) fn agree(ace: &Ace, wanted: &Wanted) -> Result<Agreed, Problem> {
    ace.agree(Link::Agent, wanted, false)
        .map_err(|err| Problem::bad_request(err.to_string()))
}

/// Refuses a login whose credentials are not the authentication method it agreed on: a
/// password login must bring a password, a certificate login a verified client certificate;
/// the other methods (a code, a token) cannot start a login.
pub(crate) fn check_credentials(
    agreed: &Agreed,
    password: bool,
    certificate: bool,
) -> Result<(), Problem> {
    let method = agreed.authentication.to_string();
    let presented = match method.as_str() {
        "password" => password,
        "certificate" => certificate,
        _ => {
            return Err(Problem::bad_request(format!(
                "authentication by {method} cannot start a login; offer password or certificate"
            )));
        }
    };
    if presented {
        Ok(())
    } else {
        let what = if method == "password" {
            "no password"
        } else {
            "no client certificate"
        };
        Err(Problem::bad_request(format!(
            "this login agreed on authentication by {method} but presented {what}"
        )))
    }
}

/// The methods a token's login agreed on, if it negotiated.
pub(crate) fn agreed(identity: &TokenIdentity) -> Option<Agreed> {
    identity
        .methods
        .as_deref()
        .and_then(|text| text.parse().ok())
}

fn coding_named(name: &str) -> Option<BodyCoding> {
    match name {
        "zstd" => Some(BodyCoding::Zstd),
        "gzip" | "x-gzip" => Some(BodyCoding::Gzip),
        _ => None,
    }
}

/// The compression a request body arrives in (`Content-Encoding`), checked against what the
/// token may use: refused with 415 when it is not that.
pub(crate) fn request_coding(
    ace: &Ace,
    identity: &TokenIdentity,
    headers: &HeaderMap,
) -> Result<Option<BodyCoding>, Problem> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    let name = value
        .to_str()
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if name.is_empty() || name == "identity" {
        return Ok(None);
    }
    let unsupported = |why: String| Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, why);
    let coding = coding_named(&name).ok_or_else(|| {
        unsupported(format!(
            "Content-Encoding {:.32} is not taken; this hub takes {}",
            name,
            supported_codings(ace)
        ))
    })?;
    match agreed(identity) {
        Some(agreed) if agreed.body_coding() != Some(coding) => Err(unsupported(format!(
            "this session agreed on compression {}; send the body that way",
            agreed.compression
        ))),
        Some(_) => Ok(Some(coding)),
        None if ace.body_coding_supported(Link::Https, coding) => Ok(Some(coding)),
        None => Err(unsupported(format!(
            "Content-Encoding {} is not supported here; this hub takes {}",
            coding.as_str(),
            supported_codings(ace)
        ))),
    }
}

fn supported_codings(ace: &Ace) -> String {
    let codings: Vec<&str> = [BodyCoding::Zstd, BodyCoding::Gzip]
        .into_iter()
        .filter(|coding| ace.body_coding_supported(Link::Https, *coding))
        .map(BodyCoding::as_str)
        .collect();
    if codings.is_empty() {
        "no compressed bodies".to_owned()
    } else {
        format!("identity, {}", codings.join(", "))
    }
}

/// The compression to answer a download with: the token's agreed one when the request
/// accepts it (`Accept-Encoding`) and asks for the whole file; none otherwise (a `Range`
/// counts bytes of the file, not of a compressed stream).
pub(crate) fn response_coding(identity: &TokenIdentity, headers: &HeaderMap) -> Option<BodyCoding> {
    let coding = agreed(identity)?.body_coding()?;
    if headers.contains_key(header::RANGE) {
        return None;
    }
    let accepted = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            coding_named(&name.to_ascii_lowercase()) == Some(coding) && !refused
        });
    accepted.then_some(coding)
}

/// A request body as a stream of its decoded bytes. An error of the body itself (the client
/// went away) is `ConnectionAborted`; any other error is the decoder's (the bytes are not
/// what their `Content-Encoding` says, or stop mid-stream).
pub(crate) fn decoded(
    body: Body,
    coding: Option<BodyCoding>,
) -> std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>> {
    let raw = body
        .into_data_stream()
        .map_err(|err| io::Error::new(io::ErrorKind::ConnectionAborted, err));
    match coding {
        None => Box::pin(raw),
        Some(BodyCoding::Zstd) => Box::pin(ReaderStream::with_capacity(
            ZstdDecoder::new(StreamReader::new(raw)),
            CODING_CHUNK,
        )),
        Some(BodyCoding::Gzip) => Box::pin(ReaderStream::with_capacity(
            GzipDecoder::new(StreamReader::new(raw)),
            CODING_CHUNK,
        )),
    }
}

/// A response body of `chunks`, compressed with `coding`.
pub(crate) fn encoded(
    chunks: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    coding: BodyCoding,
) -> Body {
    let reader = StreamReader::new(chunks.boxed());
    match coding {
        BodyCoding::Zstd => Body::from_stream(ReaderStream::with_capacity(
            ZstdEncoder::new(reader),
            CODING_CHUNK,
        )),
        BodyCoding::Gzip => Body::from_stream(ReaderStream::with_capacity(
            GzipEncoder::new(reader),
            CODING_CHUNK,
        )),
    }
}

/// The `Content-Encoding` header value of `coding`.
pub(crate) fn header_value(coding: BodyCoding) -> HeaderValue {
    HeaderValue::from_static(coding.as_str())
}
