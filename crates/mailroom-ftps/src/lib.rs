//! The FTPS front end: FTP over TLS (RFC 959, RFC 2228, RFC 4217), explicit (`AUTH TLS`) and
//! implicit, as a thin adapter onto the mailbox service.
//!
//! The protocol is ours (a command loop over tokio and rustls) so that every rule of a
//! hardened FTPS server can be enforced: TLS on the login and on every data connection
//! (`PROT P`, checked at PASV/EPSV and at each transfer), a data connection only from the
//! control connection's address and resuming its TLS session, a 4 KiB cap on a command
//! line, ALPN `ftp` (from the TLS configuration), a checked handshake that never panics,
//! refusals before the 150. Everything else is the Hub's: every file command is one Hub
//! call on a `VirtualPath`, and logins are the Hub's login steps.

pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

mod auth;
mod control;
mod data;
mod listing;
mod server;
mod session;
mod tls;

pub use config::Config;
pub use server::{Listeners, serve};
