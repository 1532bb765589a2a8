//! Reading certificates with x509-parser: the summary [`CertInfo`] shown by `ca show` and
//! recorded at issue, and the [`ClientIdentity`] a front end takes from a verified client
//! chain. Nothing here verifies a chain: rustls has done that before a front end asks.

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::error::TlsError;

/// Who a client certificate names, for the front end to hand the CN to
/// `Hub::login(…, Credential::Certificate(cn), …)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject's common name (the account name, for certificates we issue).
    pub subject_cn: String,
    /// SHA-256 of the certificate's DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// When the certificate stops being valid.
    pub not_after: OffsetDateTime,
}

/// The identity in the end-entity certificate of a client chain (the first one), as rustls
/// hands it over (`ServerConnection::peer_certificates`). Refuses an empty chain, an
/// unparsable certificate and a subject without a UTF-8 common name.
pub fn client_identity(certs: &[CertificateDer<'_>]) -> Result<ClientIdentity, TlsError> {
    let Some(leaf) = certs.first() else {
        return Err(TlsError::Certificate(
            "no certificate was presented".to_owned(),
        ));
    };
    let info = CertInfo::parse(leaf)?;
    let Some(subject_cn) = info.common_name else {
        return Err(TlsError::Certificate(
            "the subject has no common name".to_owned(),
        ));
    };
    Ok(ClientIdentity {
        subject_cn,
        fingerprint_sha256: info.fingerprint_sha256,
        not_after: info.not_after,
    })
}

/// Every certificate of a PEM file (a CA bundle, a chain), parsed.
pub fn read_cert_infos(path: &std::path::Path) -> Result<Vec<CertInfo>, TlsError> {
    crate::disk::read_certs(path)?
        .iter()
        .map(CertInfo::parse)
        .collect()
}

/// SHA-256 of a certificate's DER encoding, lower-case hex.
pub fn fingerprint_sha256(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// What `ca show` and the issue record say about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject as an RFC 4514 string (`CN=…, O=…`).
    pub subject: String,
    /// The subject's first common name, if it has one in UTF-8.
    pub common_name: Option<String>,
    /// The issuer as an RFC 4514 string.
    pub issuer: String,
    /// The serial number, lower-case hex.
    pub serial_hex: String,
    /// SHA-256 of the DER encoding, lower-case hex.
    pub fingerprint_sha256: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Subject alternative names: DNS names as written, IP addresses in their usual form.
    pub names: Vec<String>,
}

impl CertInfo {
    /// Reads one DER certificate.
    pub fn parse(cert: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
        let x509 = parse_x509(cert)?;
        let names = subject_alt_names(&x509)?;
        let common_name = x509
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(CertInfo {
            subject: x509.subject().to_string(),
            common_name,
            issuer: x509.issuer().to_string(),
            serial_hex: hex::encode(x509.raw_serial()),
            fingerprint_sha256: fingerprint_sha256(cert),
            not_before: x509.validity().not_before.to_datetime(),
            not_after: x509.validity().not_after.to_datetime(),
            names,
        })
    }
}

/// Parses a DER certificate, refusing trailing bytes.
pub(crate) fn parse_x509<'a>(
    cert: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, TlsError> {
    match X509Certificate::from_der(cert.as_ref()) {
        Ok(([], x509)) => Ok(x509),
        Ok(_) => Err(TlsError::Certificate(
            "trailing bytes after the certificate".to_owned(),
        )),
        Err(err) => Err(TlsError::Certificate(err.to_string())),
    }
}

/// DNS and IP subject alternative names, in certificate order.
pub(crate) fn subject_alt_names(x509: &X509Certificate<'_>) -> Result<Vec<String>, TlsError> {
    let san = x509
        .subject_alternative_name()
        .map_err(|err| TlsError::Certificate(err.to_string()))?;
    let Some(san) = san else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                    names.push(std::net::Ipv4Addr::from(v4).to_string());
                } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    names.push(std::net::Ipv6Addr::from(v6).to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_chain_and_garbage_are_refused() {
        assert!(matches!(
            client_identity(&[]),
            Err(TlsError::Certificate(_))
        ));
        let garbage = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        assert!(client_identity(&[garbage]).is_err());
    }

    #[test]
    fn a_subject_without_common_name_is_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "no cn");
        let cert = params.self_signed(&key).unwrap();
        let err = client_identity(&[cert.der().clone()]).unwrap_err();
        assert!(err.to_string().contains("no common name"), "{err}");
    }
}
