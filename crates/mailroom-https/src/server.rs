//! The accept loop, the life of one connection, and what every request goes through.
//!
//! We own the listener, so the same admission as the file protocols applies before a byte of
//! HTTP: the PROXY header from a configured load balancer (`proxy_protocol_from`), whose
//! client address is then the peer of everything below (`ConnInfo::peer`), connection limits
//! per listener and per address (`mailroom_net`), then the TLS handshake (rustls, ALPN `h2`
//! and `http/1.1`, an optional client certificate verified against the client CA) under a
//! deadline. hyper then serves HTTP/1.1 or HTTP/2 on the
//! connection, handing each request to the axum [`router`] with the connection's
//! [`ConnInfo`]. Every request is admitted again by `Hub::admit` (a ban placed while a
//! connection is open takes effect at its next request, with a 403 problem), carries the
//! security headers, and is held to the body limits. On shutdown, connections finish the
//! requests under way and close.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mailroom_core::{Hub, Protocol};
use mailroom_net::{Acceptor, ConnectionLimits, ProxyProtocol, StartupLimits};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::Instrument;

use crate::config::Config;
use crate::problem::Problem;
use crate::proxy::TrustedProxy;

/// What every request handler shares.
pub struct AppState {
    /// The mailbox service.
    pub hub: Arc<Hub>,
    /// The `[https]` settings.
    pub config: Config,
    /// Token requests per source address.
    pub(crate) logins: LoginLimiter,
    /// Whether the listener speaks TLS (HSTS is sent only then).
    pub(crate) tls: bool,
    /// The reverse proxy that may vouch for users, when configured.
    pub(crate) proxy: Option<TrustedProxy>,
    /// The negotiated methods (`[ace.*]`), checked.
    pub ace: Arc<mailroom_ace::Ace>,
}

impl AppState {
    /// The state for `hub` with `config` and the negotiated methods `ace`; `tls` says whether
    /// connections are HTTPS. Fails when the trusted proxy's settings are unusable (see
    /// [`TrustedProxy::from_settings`]).
    pub fn new(
        hub: Arc<Hub>,
        config: Config,
        ace: Arc<mailroom_ace::Ace>,
        tls: bool,
    ) -> Result<Arc<AppState>, String> {
        let proxy = TrustedProxy::from_settings(
            &config.trusted_proxy_key_file,
            &config.trusted_proxy_networks,
        )?;
        Ok(Arc::new(AppState {
            logins: LoginLimiter::new(config.login_attempts_per_minute),
            hub,
            config,
            tls,
            proxy,
            ace,
        }))
    }
}

impl AppState {
    /// Counts one login attempt from `ip` against `[https] login_attempts_per_minute`, the
    /// limit the token endpoints share with other login forms (the web pages): the seconds
    /// to wait when over it.
    pub fn admit_login(&self, ip: IpAddr) -> Result<(), u64> {
        self.logins.check(ip, self.hub.now())
    }
}

/// The connection a request came on, as a request extension.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address: the TCP peer, or behind a load balancer the source its PROXY
    /// header named.
    pub peer: SocketAddr,
    /// The common name of the client certificate rustls verified in the handshake, if any.
    pub certificate_cn: Option<String>,
}

/// Serves the API on `listener` until `shutdown` is cancelled: HTTPS with `tls`, or plain HTTP
/// when `tls` is `None` (only with `allow_plaintext`, refused otherwise). Returns once every
/// connection has finished its requests.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: Config,
    ace: Arc<mailroom_ace::Ace>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, hub, config, ace, tls, |_| Router::new(), shutdown).await
}

/// [`serve`] with more routes beside the API: `pages` gets the shared state and returns a
/// router (the web UI's, from `mailroom-web`) that is merged into the API's. Its routes bring
/// their own layers (admission, headers) and must not set a fallback.
pub async fn serve_with(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: Config,
    ace: Arc<mailroom_ace::Ace>,
    tls: Option<Arc<rustls::ServerConfig>>,
    pages: impl FnOnce(Arc<AppState>) -> Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if tls.is_none() && !config.allow_plaintext {
        return Err(std::io::Error::other(
            "no TLS configuration for the HTTPS front end and [https] allow_plaintext is off",
        ));
    }
    if tls.is_none() {
        tracing::warn!(
            "[https] allow_plaintext = true: serving plain HTTP; passwords and tokens cross the network in clear text unless a TLS-terminating proxy is in front"
        );
    }
    let limits = ConnectionLimits::for_listener(
        "https",
        config.max_connections,
        config.max_connections_per_address,
    );
    // TLS handshakes under way, per address: the "startup" phase of this protocol.
    let startups = StartupLimits::new(
        mailroom_net::MaxStartups::default(),
        config.max_connections_per_address,
    );
    let handshake = Duration::from_secs(config.handshake_timeout_seconds.max(1));
    let idle = Duration::from_secs(config.idle_timeout_seconds.max(1));
    let state = AppState::new(hub, config, ace, tls.is_some()).map_err(std::io::Error::other)?;
    let proxy = ProxyProtocol::new(state.config.proxy_protocol_from.clone());
    let app = router(state.clone()).merge(pages(state));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = Acceptor::new(listener, limits, startups, proxy);
    let tracker = TaskTracker::new();
    loop {
        let Some(admitted) = connections.accept(&shutdown, |_, _| false).await else {
            break;
        };
        let (socket, peer) = (admitted.socket, admitted.peer);
        let (permit, startup) = (admitted.permit, admitted.startup);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!(
            "session",
            id = %mailroom_net::session_id(),
            proto = "https",
            peer = %peer,
            via = admitted.via.map(tracing::field::display),
        );
        tracker.spawn(
            async move {
                let _permit = permit;
                match acceptor {
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake, acceptor.accept(socket)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(err)) => {
                                    tracing::debug!(error = %err, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!("TLS handshake timed out");
                                    return;
                                }
                            };
                        drop(startup);
                        let certificate_cn = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| mailroom_tls::client_identity(chain).ok())
                            .map(|identity| identity.subject_cn);
                        let conn = ConnInfo {
                            peer,
                            certificate_cn,
                        };
                        serve_connection(stream, app, conn, idle, shutdown).await;
                    }
                    None => {
                        drop(startup);
                        let conn = ConnInfo {
                            peer,
                            certificate_cn: None,
                        };
                        serve_connection(socket, app, conn, idle, shutdown).await;
                    }
                }
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until the client closes it or `shutdown`
/// asks it to finish (requests under way complete first).
async fn serve_connection<S>(
    stream: S,
    app: Router,
    conn: ConnInfo,
    idle: Duration,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(conn.clone());
            request.map(Body::new)
        },
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(64);
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error while draining");
            }
        }
    }
}

/// The whole API: routes, body limits, security headers, admission, problem documents for
/// unknown paths and methods.
pub fn router(state: Arc<AppState>) -> Router {
    // JSON bodies are limited by `ApiJson`; upload bodies by the upload's size and
    // `max_chunk_bytes`.
    let api = crate::api::routes()
        .layer(DefaultBodyLimit::disable())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), admission))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; the API is described at /api/v1/openapi.json",
    )
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method; see /api/v1/openapi.json",
    )
}

/// Refuses requests from a banned or denied address with a 403 problem (the Hub accounts the
/// refusal at most once a minute per address).
async fn admission(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnInfo>().map(|c| c.peer);
    if let Some(peer) = peer
        && let Err(err) = state.hub.admit(peer, Protocol::Https).await
    {
        tracing::info!(reason = %err, "request refused at admission");
        return Problem::new(
            StatusCode::FORBIDDEN,
            "requests from your address are refused for now",
        )
        .into_response();
    }
    next.run(request).await
}

/// Adds the security headers to every answer.
async fn security_headers(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if state.tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A JSON body whose rejections (malformed JSON, wrong content type, too large) are problem
/// documents like every other error. A body over `[https] max_json_bytes` is read to its end
/// (up to [`DRAIN_LIMIT`] more) and discarded before the 413 answer, so an HTTP/1.1 client
/// still writing it gets the answer rather than a reset connection.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// How much of an oversize body is read and thrown away so its client gets the 413.
pub const DRAIN_LIMIT: usize = 16 << 20;

impl<T> FromRequest<Arc<AppState>> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(
        request: Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        use http_body_util::BodyExt;
        let limit = state.config.max_json_bytes;
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| v == "application/json" || v.ends_with("+json"));
        let mut body = request.into_body();
        let mut bytes = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Problem::bad_request("the request body ended early"))?;
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen <= limit {
                    bytes.extend_from_slice(&data);
                } else if seen > limit.saturating_add(DRAIN_LIMIT) {
                    break;
                }
            }
        }
        if seen > limit {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a JSON body is at most {limit} bytes"),
            ));
        }
        if !json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with \"Content-Type: application/json\"",
            ));
        }
        // Every request body of this API is an object (serde would take an array for a struct).
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|err| Problem::bad_request(format!("the body is not valid JSON: {err}")))?;
        if !value.is_object() {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(value).map(ApiJson).map_err(|err| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the JSON body does not fit this endpoint: {err}"),
            )
        })
    }
}

/// Reads what is left of a request body (up to [`DRAIN_LIMIT`]) and throws it away, so that an
/// HTTP/1.1 client still sending it gets the answer of a request refused before its body.
pub async fn drain(mut body: Body) {
    use http_body_util::BodyExt;
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
}

/// Token requests per source address per minute (a fixed one-minute window). Bounded: at most
/// 100,000 addresses are tracked; when full, windows that ended are dropped first.
pub(crate) struct LoginLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (OffsetDateTime, u32)>>,
}

impl LoginLimiter {
    fn new(per_minute: u32) -> LoginLimiter {
        LoginLimiter {
            per_minute: per_minute.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request from `ip` at `now`; the seconds to wait when over the limit.
    pub(crate) fn check(&self, ip: IpAddr, now: OffsetDateTime) -> Result<(), u64> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= 100_000 {
            windows.retain(|_, (start, _)| *start + time::Duration::MINUTE > now);
            if windows.len() >= 100_000 {
                windows.clear();
            }
        }
        let entry = windows.entry(ip).or_insert((now, 0));
        if entry.0 + time::Duration::MINUTE <= now {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > self.per_minute {
            let wait = (entry.0 + time::Duration::MINUTE - now)
                .whole_seconds()
                .max(1);
            return Err(u64::try_from(wait).unwrap_or(60));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_limiter_counts_per_address_per_minute() {
        let limiter = LoginLimiter::new(2);
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        assert!(limiter.check(a, t0).is_ok());
        assert!(limiter.check(a, t0).is_ok());
        assert_eq!(limiter.check(a, t0 + time::Duration::seconds(15)), Err(45));
        assert!(
            limiter.check(b, t0).is_ok(),
            "another address has its own count"
        );
        assert!(
            limiter.check(a, t0 + time::Duration::MINUTE).is_ok(),
            "a new window"
        );
    }
}
