//! The operations listener: what a load balancer and a monitoring system ask a node, on an
//! address of their own, apart from the clients' listeners.
//!
//! - `GET /healthz`: 200 while the process serves requests at all (liveness).
//! - `GET /readyz`: 200 when the node should get clients: not draining after SIGTERM, and both
//!   storage engines answer ([`Hub::check_engines`]); else 503 with the reason in the body.
//! - `GET /metrics`: the Prometheus text the binary's recorder renders.
//!
//! Plain HTTP without authentication, like every probe and scrape target: bind it to a
//! management network or loopback, never to the clients' interface. Nothing it answers names
//! an account or a file.

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mailroom_core::Hub;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Renders the metrics as Prometheus text.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What the operations listener answers from.
#[derive(Clone)]
pub struct OpsState {
    /// The node's Hub, whose engines readiness asks.
    pub hub: Arc<Hub>,
    /// Cancelled once the node drains (SIGTERM): from then on it is not ready.
    pub draining: CancellationToken,
    /// The metrics recorder's rendering.
    pub metrics: RenderMetrics,
}

/// Serves the operations endpoints on `listener` until `stop` is cancelled. Keep it running
/// through a drain, so the balancer sees "not ready" and takes the node out first.
pub async fn serve_ops(
    listener: TcpListener,
    state: OpsState,
    stop: CancellationToken,
) -> io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".to_owned())
}

async fn readyz(State(state): State<OpsState>) -> Response {
    if state.draining.is_cancelled() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned());
    }
    match state.hub.check_engines().await {
        Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
        Err(err) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", err.message()),
        ),
    }
}

async fn metrics(State(state): State<OpsState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        (state.metrics)(),
    )
        .into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
