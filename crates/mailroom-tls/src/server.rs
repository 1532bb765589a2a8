//! The rustls `ServerConfig` of a TLS front end: aws-lc-rs explicitly, the TLS versions and
//! cipher suites of the listener's negotiated methods (by default TLS 1.3 and 1.2 with the
//! provider's suites: TLS 1.3 AES-GCM and ChaCha20-Poly1305; TLS 1.2 only ECDHE with AES-GCM
//! or ChaCha20-Poly1305, which is Mozilla's "intermediate" profile), the front end's ALPN
//! list, and client certificates checked against a client CA with an optional CRL.
//!
//! This module builds configs; it does not accept connections, and it does not map a verified
//! certificate to an account (see [`crate::client_identity`] and the Hub's login).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::{WebPkiClientVerifier, danger::ClientCertVerifier};
use rustls::{RootCertStore, ServerConfig};

use mailroom_ace::{TlsMethods, TlsVersion};

use crate::disk;
use crate::error::TlsError;
use crate::pki::Pki;

/// Whether clients present certificates. In the configuration (`client_certificates` of
/// `[ftps]` and `[https]`) it is written `"off"`, `"optional"` or `"required"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No certificate is asked for.
    #[default]
    Off,
    /// A certificate is asked for; a client without one is let in (to log in otherwise), and
    /// a client with one that does not verify is refused.
    Optional,
    /// A verified certificate is required to complete the handshake.
    Required,
}

impl ClientAuth {
    /// The configuration word: `off`, `optional` or `required`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Off => "off",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

impl std::fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one TLS front end serves with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server certificate chain, PEM, end-entity first.
    pub cert_chain: PathBuf,
    /// The server's private key, PEM.
    pub key: PathBuf,
    /// ALPN protocols in preference order (FTPS: `ftp`; HTTPS: `h2`, `http/1.1`). A client
    /// offering ALPN without any of these is refused; one offering none is served.
    pub alpn: Vec<String>,
    /// Whether clients present certificates.
    pub client_auth: ClientAuth,
    /// The CA certificates (PEM bundle) client certificates must chain to: our client CA, or
    /// an external bundle. Unused when `client_auth` is `Off`.
    pub client_ca: PathBuf,
    /// A CRL file (PEM or DER) of the client CA; a listed client certificate is refused.
    /// When set, a client certificate whose issuer it does not cover is refused too.
    pub crl: Option<PathBuf>,
    /// The TLS versions and cipher suites offered (the listener's negotiated methods).
    pub methods: TlsMethods,
}

impl TlsSettings {
    /// Serves the PKI's server certificate, no ALPN, clients unauthenticated; client
    /// certificates, when turned on, are checked against the PKI's own client CA.
    pub fn from_pki(pki: &Pki) -> TlsSettings {
        TlsSettings {
            cert_chain: pki.server_cert_path.clone(),
            key: pki.server_key_path.clone(),
            alpn: Vec::new(),
            client_auth: ClientAuth::Off,
            client_ca: pki.client_ca.cert_path.clone(),
            crl: None,
            methods: default_methods(),
        }
    }
}

/// The methods of the default `[ace.encryption]`: every version and suite the hub offers.
pub fn default_methods() -> TlsMethods {
    // Invariant: the default lists pass their own checks (mailroom-ace's tests run them).
    mailroom_ace::Ace::default()
        .tls(mailroom_ace::Link::Https)
        .unwrap_or_default()
}

/// Builds the server config described by `settings`, reading its files now.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let mut provider = (*crate::provider()).clone();
    // The listener's suites, in its order; a name the provider lacks is an error, never
    // silently dropped (the ACE check knows only names this provider offers).
    let mut suites = Vec::new();
    for name in &settings.methods.suites {
        let suite = provider
            .cipher_suites
            .iter()
            .find(|suite| suite.suite().as_str() == Some(*name))
            .ok_or_else(|| TlsError::Methods(format!("the TLS library does not offer {name}")))?;
        suites.push(*suite);
    }
    provider.cipher_suites = suites;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = settings
        .methods
        .versions
        .iter()
        .map(|version| match version {
            TlsVersion::V13 => &rustls::version::TLS13,
            TlsVersion::V12 => &rustls::version::TLS12,
        })
        .collect();
    if versions.is_empty() {
        return Err(TlsError::Methods("no TLS version to offer".to_owned()));
    }
    let provider = Arc::new(provider);
    let chain = disk::read_certs(&settings.cert_chain)?;
    let key = disk::read_key(&settings.key)?;
    let verifier = client_verifier(settings, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = settings
        .alpn
        .iter()
        .map(|protocol| protocol.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(config))
}

fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    if settings.client_auth == ClientAuth::Off {
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    for cert in disk::read_certs(&settings.client_ca)? {
        roots.add(cert).map_err(|err| TlsError::Invalid {
            path: settings.client_ca.clone(),
            reason: format!("holds a certificate that cannot be a trust anchor: {err}"),
        })?;
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl) = &settings.crl {
        // Only the client's own certificate is looked up: the CRL is the issuing CA's, and
        // CAs above it (in an external bundle) need not publish one here. A certificate from
        // an issuer the CRL does not cover is refused (rustls's default), failing closed.
        builder = builder
            .with_crls(disk::read_crls(crl)?)
            .only_check_end_entity_revocation();
    }
    if settings.client_auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    use super::ClientAuth;

    #[test]
    fn client_auth_reads_and_writes_its_configuration_word() {
        for auth in [ClientAuth::Off, ClientAuth::Optional, ClientAuth::Required] {
            let word = serde_json::to_string(&auth).unwrap();
            assert_eq!(word, format!("\"{auth}\""));
            assert_eq!(serde_json::from_str::<ClientAuth>(&word).unwrap(), auth);
        }
        let err = serde_json::from_str::<ClientAuth>("\"yes\"").unwrap_err();
        assert!(
            err.to_string().contains("`off`, `optional`, `required`"),
            "{err}"
        );
    }

    #[test]
    fn tls12_suites_are_ecdhe_with_aead_only() {
        let provider = crate::provider();
        assert!(!provider.cipher_suites.is_empty());
        for suite in &provider.cipher_suites {
            let name = format!("{:?}", suite.suite());
            if suite.version() == &rustls::version::TLS12 {
                assert!(name.contains("_ECDHE_"), "{name}");
            }
            assert!(
                name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
        }
    }
}
