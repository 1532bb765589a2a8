//! The HTTPS front end: a JSON REST API onto the mailbox service, described by an OpenAPI
//! document generated from the code (`/api/v1/openapi.json`).
//!
//! Like the file protocols it is a thin adapter: every endpoint is one or a few
//! [`mailroom_core::Hub`] calls. Logins go through the Hub's login steps and end in bearer
//! tokens the Hub issues and checks on every request ([`auth`]), or in the API keys of
//! unattended clients ([`api_keys`]); a client's inbox, receipts and
//! resumable sends are [`client`], many inbox deliveries at once (a streamed ZIP written by
//! [`zip`], one acknowledgement) [`batch`], its end-to-end encryption keys and the keys of those it
//! sends to [`e2e`], its own account (password, SSH keys, TOTP, quota use,
//! sessions) [`me`]; administration is [`admin`] (admin tokens only). Errors are
//! RFC 9457 problem documents ([`problem`]). [`server::serve`] owns the accept loop: connection
//! limits, TLS (rustls with aws-lc-rs, ALPN `h2` and `http/1.1`, optional client certificates),
//! per-request admission (bans), security headers and body limits.
//!
//! Reuse by server-rendered pages: [`auth::login`] turns a login form into a token pair and
//! [`auth::authenticate`] turns a token (from a header or a cookie) into a
//! [`mailroom_core::TokenIdentity`]; [`server::router`] is an axum `Router` that more routes
//! can be merged into.
//!
//! Negotiated methods ([`ace`]): `/api/v1/ace` publishes them, an agent's login agrees on
//! one per category, and bodies are compressed as agreed.
//!
//! Apart from the clients' listener, [`ops::serve_ops`] answers a load balancer's probes
//! (`/healthz`, `/readyz`) and a Prometheus scrape (`/metrics`) on an address of its own.

pub mod ace;
pub mod api;
pub mod auth;
pub mod batch;
pub mod config;
pub mod listing;
pub mod ops;
pub mod problem;
pub mod proxy;
pub mod server;
pub mod wire;
pub mod zip;

mod admin;
mod api_keys;
mod client;
mod e2e;
mod me;

pub use api_keys::MAX_EXPIRES_IN_DAYS;
pub use config::Config;
pub use problem::Problem;
pub use server::{AppState, ConnInfo, router, serve, serve_with};

/// The ALPN protocols the HTTPS front end offers, in preference order.
pub const ALPN: [&str; 2] = ["h2", "http/1.1"];
