//! The one place that reads a name out of a verified client certificate. The TLS
//! configuration itself (server certificate, client CA, ALPN `ftp`) comes from `mailroom-tls`,
//! built by the binary from the data folder's PKI.

/// The subject common name of a DER certificate, which rustls has already verified against
/// the client CA; `None` when it does not parse or has no UTF-8 common name.
pub(crate) fn subject_common_name(der: &[u8]) -> Option<String> {
    let certificate = rustls::pki_types::CertificateDer::from(der.to_vec());
    mailroom_tls::client_identity(std::slice::from_ref(&certificate))
        .ok()
        .map(|identity| identity.subject_cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(subject_common_name(b"not a certificate"), None);
    }
}
