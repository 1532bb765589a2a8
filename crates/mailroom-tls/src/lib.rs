//! Mailroom's TLS: a local PKI in the data folder and rustls server configs for the TLS front
//! ends (FTPS now, HTTPS later), all on rustls with the aws-lc-rs provider.
//!
//! - [`ensure_pki`] keeps two certificate authorities in `tls/`: a **server CA**, which signs
//!   the server certificate clients check, and a separate **client CA**, which signs the
//!   certificates clients log in with. Keeping them apart means trusting the server never
//!   means accepting its certificates as client identities, and the other way round.
//! - [`issue_client`] issues a client certificate for an account and records its serial.
//! - [`server_config`] builds a `rustls::ServerConfig` (TLS 1.2 and 1.3, AEAD suites only,
//!   ALPN, client authentication off, optional or required, with an optional CRL).
//! - [`client_identity`] reads the subject CN, fingerprint and expiry of a verified client
//!   certificate, for the front end to hand the CN to the Hub's login.
//!
//! This crate deliberately knows nothing of accounts, logins or sockets: it does not decide
//! who may log in (the Hub does) and does not accept connections (the front ends do). It
//! never logs or prints, and private keys leave it only as files written 0600.

mod client;
mod disk;
mod error;
mod identity;
mod pki;
mod server;

#[cfg(test)]
mod handshake_tests;

pub use client::{
    IssuedClient, IssuedRecord, issue_client, issue_client_with_validity, issued_records,
};
pub use error::TlsError;
pub use identity::{
    CertInfo, ClientIdentity, client_identity, fingerprint_sha256, read_cert_infos,
};
pub use pki::{Authority, Pki, PkiSettings, ServerReissue, ensure_pki, files, load_pki};
/// The rustls the configs are built with, for the front ends' types (`CertificateDer`, …).
pub use rustls;
pub use server::{ClientAuth, TlsSettings, server_config};

/// Installs aws-lc-rs as the process-wide rustls crypto provider. Harmless when a provider
/// is already installed (by an earlier call or by a dependency); returns whether this call
/// installed it. Call it once at start-up: it guards the `builder()` paths of other crates
/// against a second provider ever appearing in the graph.
pub fn install_provider() -> bool {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_ok()
}

/// The crypto provider every config of this crate is built with: aws-lc-rs, explicitly, so a
/// config never depends on what the process installed as its default.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
