//! How the agent trusts a hub: a CA file (`--ca`), verified the usual way with the host name,
//! or the hub's own certificate pinned by its SHA-256 fingerprint, trusted on first use.
//!
//! A pinned connection accepts exactly the certificate whose fingerprint was pinned (its
//! handshake signatures still verified); a probe connection, made only to show the operator
//! the fingerprint before anything is sent, accepts any certificate and records what it saw.
//! Credentials never cross a probe connection.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// How a saved session trusts its hub.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Certificates chaining to this CA file (PEM), with the host name checked.
    Ca(std::path::PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint (lower-case hex).
    Pinned(String),
}

/// A certificate's SHA-256 fingerprint, lower-case hex.
pub fn fingerprint(cert: &[u8]) -> String {
    hex::encode(Sha256::digest(cert))
}

/// The fingerprint written for people: upper-case hex pairs joined by colons.
pub fn shown(fingerprint: &str) -> String {
    fingerprint
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads a fingerprint as given on the command line: hex, with or without colons, any case.
pub fn parse_fingerprint(text: &str) -> Result<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(anyhow!(
            "{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        ));
    }
    Ok(hex)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The HTTP client for a hub trusted by `trust`.
pub fn client(trust: &Trust) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("mailroom-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(20));
    let builder = match trust {
        Trust::Ca(path) => builder.tls_certs_only([ca_certificate(path)?]),
        Trust::Pinned(fingerprint) => {
            let verifier = Pinned {
                pin: Some(fingerprint.clone()),
                seen: Arc::default(),
                provider: provider(),
            };
            builder.tls_backend_preconfigured(config(verifier)?)
        }
    };
    builder.build().context("cannot build the HTTPS client")
}

/// A client that accepts any certificate and records the fingerprint it was shown: for the
/// first contact only, before the operator has decided to trust it.
pub fn probe() -> Result<(reqwest::Client, Arc<Mutex<Option<String>>>)> {
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let verifier = Pinned {
        pin: None,
        seen: seen.clone(),
        provider: provider(),
    };
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .tls_backend_preconfigured(config(verifier)?)
        .build()
        .context("cannot build the HTTPS client")?;
    Ok((client, seen))
}

fn ca_certificate(path: &Path) -> Result<reqwest::Certificate> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    reqwest::Certificate::from_pem(&pem)
        .with_context(|| format!("{} holds no PEM certificate", path.display()))
}

fn config(verifier: Pinned) -> Result<rustls::ClientConfig> {
    let provider = verifier.provider.clone();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("no TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts the pinned certificate only, or, without a pin, any certificate (recording it).
#[derive(Debug)]
struct Pinned {
    pin: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint(end_entity);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(presented.clone());
        }
        match &self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) if pin.as_bytes() == presented.as_bytes() => {
                Ok(ServerCertVerified::assertion())
            }
            Some(_) => Err(rustls::Error::General(format!(
                "the hub's certificate changed: it now has SHA-256 fingerprint {}, not the one pinned at login; log in again only if you expected this",
                shown(&presented)
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_in_any_common_form() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex).unwrap(), hex);
        assert_eq!(parse_fingerprint(&shown(&hex)).unwrap(), hex);
        assert!(shown(&hex).starts_with("AB:AB:"));
        for bad in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
        }
    }
}
