//! The rustls configuration of the FTPS front end, built from PEM files, and the one place
//! that reads a name out of a verified client certificate.
//!
//! This is deliberately one small function, [`server_config`]: the hub's own certificate
//! authority (`mailroom-tls`, later) will hand the front end a ready `ServerConfig`, and only
//! this module changes then. The provider is aws-lc-rs, passed explicitly so that no
//! process-wide default is needed; ALPN is `ftp` (RFC 9110's registry entry for FTP over
//! TLS), and TLS 1.2 and 1.3 are the versions offered.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ClientCertificates;

/// What went wrong building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate, the key or the client CA.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// Builds the server's TLS configuration from a PEM certificate chain and private key, and,
/// when `client_certificates` is `Optional`, a verifier that asks for a client certificate and
/// checks any presented one against the CA certificates in `client_ca`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_certificates: ClientCertificates,
    client_ca: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|err| TlsError::Pem {
        path: key.to_owned(),
        reason: format!("no usable private key: {err}"),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?;
    let builder = match client_certificates {
        ClientCertificates::Off => builder.with_no_client_auth(),
        ClientCertificates::Optional => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(client_ca)? {
                roots
                    .add(ca)
                    .map_err(|err| TlsError::Config(format!("client CA: {err}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|err| TlsError::Config(format!("client CA: {err}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|err| TlsError::Config(err.to_string()))?;
    config.alpn_protocols = vec![b"ftp".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|err| bad(format!("cannot read: {err}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(format!("not PEM: {err}")))?;
    if chain.is_empty() {
        return Err(bad("no certificate in the file".to_owned()));
    }
    Ok(chain)
}

/// The subject common name of a DER certificate, which rustls has already verified against
/// the client CA; `None` when it does not parse or has no UTF-8 common name.
pub(crate) fn subject_common_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = certificate
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_path() {
        let err = server_config(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
            ClientCertificates::Off,
            Path::new("/nonexistent/ca.pem"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(subject_common_name(b"not a certificate"), None);
    }
}
