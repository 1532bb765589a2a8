//! The FTPS front end: explicit FTP over TLS (RFC 959, RFC 2228, RFC 4217), as a thin
//! adapter onto the mailbox service, built on libunftp.
//!
//! libunftp speaks the protocol; this crate supplies its storage back end (every file command
//! is one [`mailroom_core::Hub`] call on a `VirtualPath`), its authenticator (the Hub's login
//! steps), the TLS configuration, and the accept loop with the same admission as the SSH
//! front end. TLS is required on the control and data channels unless `allow_plaintext` is
//! set; active mode (PORT) is never offered. What libunftp does not let us enforce is listed
//! in `docs/ftps.md`.

pub mod config;
pub mod tls;

mod auth;
mod server;
mod storage;

pub use config::Config;
pub use server::serve;
