//! How the agent trusts a hub: a CA file (`--ca`), verified the usual way with the host name,
//! or the hub's own certificate pinned by its SHA-256 fingerprint, trusted on first use.
//!
//! A pinned connection accepts exactly the certificate whose fingerprint was pinned (its
//! handshake signatures still verified); a probe connection, made only to show the operator
//! the fingerprint before anything is sent, accepts any certificate and records what it saw.
//! Credentials never cross a probe connection, and neither does a client certificate.
//!
//! A client certificate (`--cert`, `--key`: PEM files) is presented in every handshake of a
//! session's connections ([`ClientCertificate`]); the hub may take it as a login factor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
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

/// A client certificate and its private key, as the paths of their PEM files (the key is
/// read at each start, never copied).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientCertificate {
    /// The certificate (and any intermediates after it), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
}

impl ClientCertificate {
    /// The pair at `cert` and `key`, checked now (both read, the key matching the
    /// certificate) and kept by their absolute paths, so the session works from any folder.
    pub fn new(cert: &Path, key: &Path) -> Result<ClientCertificate> {
        let absolute = |path: &Path, what: &str| {
            std::fs::canonicalize(path)
                .with_context(|| format!("cannot read the client {what} {}", path.display()))
        };
        let pair = ClientCertificate {
            cert: absolute(cert, "certificate")?,
            key: absolute(key, "key")?,
        };
        let (chain, key) = pair.load()?;
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("no TLS versions")?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_client_auth_cert(chain, key)
            .with_context(|| {
                format!(
                    "{} and {} are not a certificate and its private key",
                    pair.cert.display(),
                    pair.key.display()
                )
            })?;
        Ok(pair)
    }

    /// The certificate chain and the private key, read from their files.
    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let pem = std::fs::read(&self.cert).with_context(|| {
            format!("cannot read the client certificate {}", self.cert.display())
        })?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| anyhow!("{}: not a PEM certificate ({err})", self.cert.display()))?;
        if chain.is_empty() {
            return Err(anyhow!("{} holds no PEM certificate", self.cert.display()));
        }
        let pem = std::fs::read(&self.key)
            .with_context(|| format!("cannot read the client key {}", self.key.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|err| anyhow!("{} holds no PEM private key ({err})", self.key.display()))?;
        Ok((chain, key))
    }

    /// The subject common name of the certificate, if it has one: the account it names.
    pub fn common_name(&self) -> Result<Option<String>> {
        let (chain, _) = self.load()?;
        let first = chain
            .first()
            .ok_or_else(|| anyhow!("{} holds no PEM certificate", self.cert.display()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(first)
            .map_err(|err| anyhow!("{}: not an X.509 certificate ({err})", self.cert.display()))?;
        Ok(cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned))
    }
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

/// The HTTP client for a hub trusted by `trust`, presenting `certificate` when the hub asks
/// for one.
pub fn client(trust: &Trust, certificate: Option<&ClientCertificate>) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("mailroom-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(20))
        .tls_backend_preconfigured(session_config(trust, certificate)?)
        .build()
        .context("cannot build the HTTPS client")
}

/// The TLS settings of a session's connections: the hub verified by `trust`, `certificate`
/// presented when asked for, HTTP/2 or HTTP/1.1.
fn session_config(
    trust: &Trust,
    certificate: Option<&ClientCertificate>,
) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in ca_certificates(path)? {
                roots
                    .add(cert)
                    .with_context(|| format!("{}: not a CA certificate", path.display()))?;
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .with_context(|| format!("{}: not a CA certificate", path.display()))?
        }
        Trust::Pinned(fingerprint) => Arc::new(Pinned {
            pin: Some(fingerprint.clone()),
            seen: Arc::default(),
            provider: provider.clone(),
        }),
    };
    let identity = certificate.map(ClientCertificate::load).transpose()?;
    config(provider, verifier, identity)
}

/// The TLS alerts with which a hub refuses a client certificate, or the want of one.
const CERTIFICATE_ALERTS: [&str; 6] = [
    "fatal alert: BadCertificate",
    "fatal alert: UnknownCA",
    "fatal alert: CertificateRequired",
    "fatal alert: CertificateExpired",
    "fatal alert: CertificateRevoked",
    "fatal alert: UnsupportedCertificate",
];

/// The certificate alert in an error's text, if any.
pub fn certificate_alert(text: &str) -> Option<&'static str> {
    CERTIFICATE_ALERTS
        .iter()
        .find(|alert| text.contains(*alert))
        .map(|alert| alert.trim_start_matches("fatal alert: "))
}

/// Why the hub at `url` ended a session's connection, when it was over the client
/// certificate: one more handshake as the session makes them (`certificate` presented, if
/// any) and one HTTP/1.1 request, to read what the hub says. In TLS 1.3 a hub refuses the
/// client's certificate only after the client has finished its side of the handshake, so
/// the HTTP client sees a closed connection, not the alert; this connection reads it. The
/// alert's name when there is one, else `None` (the hub answered, or could not be reached).
pub async fn certificate_refusal(
    url: &str,
    trust: &Trust,
    certificate: Option<&ClientCertificate>,
) -> Option<&'static str> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default()?;
    let mut config = session_config(trust, certificate).ok()?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(host.clone()).ok()?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let mut tls = connector.connect(name, tcp).await?;
        let request =
            format!("GET /api/v1/ace HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.map(|_| ())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(20), exchange).await {
        Ok(Err(err)) => certificate_alert(&err.to_string()),
        _ => None,
    }
}

/// A client that accepts any certificate and records the fingerprint it was shown: for the
/// first contact only, before the operator has decided to trust it.
pub fn probe() -> Result<(reqwest::Client, Arc<Mutex<Option<String>>>)> {
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let provider = provider();
    let verifier = Arc::new(Pinned {
        pin: None,
        seen: seen.clone(),
        provider: provider.clone(),
    });
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .tls_backend_preconfigured(config(provider, verifier, None)?)
        .build()
        .context("cannot build the HTTPS client")?;
    Ok((client, seen))
}

fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow!("{}: not a PEM certificate ({err})", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("no TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .context("the client certificate and key do not go together")?,
        None => builder.with_no_client_auth(),
    };
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
