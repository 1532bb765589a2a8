//! TLS pieces of the front end: the one place that reads a name out of a verified client
//! certificate, and the per-connection server configuration that ties data connections to
//! their control connection. The base configuration (server certificate, client CA, ALPN
//! `ftp`) comes from `mailroom-tls`, built by the binary from the data folder's PKI.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::ServerSessionMemoryCache;

/// TLS 1.2 sessions (by id, for clients without tickets) one control connection's cache
/// holds: its own and those of its recent data connections.
const SESSIONS_PER_CONNECTION: usize = 16;

/// The subject common name of a certificate, which rustls has already verified against the
/// client CA; `None` when it does not parse or has no UTF-8 common name.
pub(crate) fn subject_common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    mailroom_tls::client_identity(std::slice::from_ref(certificate))
        .ok()
        .map(|identity| identity.subject_cn)
}

/// The TLS configurations of one control connection and of its data connections.
pub(crate) struct ConnectionTls {
    /// For the control connection (explicit upgrade or implicit start).
    pub(crate) control: Arc<ServerConfig>,
    /// For its data connections: the same session cache and ticket key, but no TLS 1.3
    /// tickets sent. A client that only sends on an upload's data connection never reads
    /// them, and closing a socket with unread data makes the kernel send a reset, which can
    /// overtake the client's last bytes and its `close_notify`: the upload would fail.
    pub(crate) data: Arc<ServerConfig>,
}

/// The TLS configurations of one control connection and its data connections: the base
/// configuration with a session cache and a ticket key of their own. A data connection
/// whose handshake resumed a session can only have resumed one made on this control
/// connection (another connection's ticket does not decrypt, another's session id is not in
/// this cache), which proves it comes from the client that holds that connection's keys
/// (RFC 4217 §10, vsftpd's `require_ssl_reuse`). Tickets are stateless under this
/// connection's key, so one ticket resumes every data connection of the session, as
/// clients expect (a stateful TLS 1.3 ticket would be single-use); without early data a
/// reused ticket replays nothing.
pub(crate) fn per_connection(base: &ServerConfig) -> Result<ConnectionTls, rustls::Error> {
    let mut control = base.clone();
    control.session_storage = ServerSessionMemoryCache::new(SESSIONS_PER_CONNECTION);
    control.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    control.max_early_data_size = 0;
    let mut data = control.clone();
    data.send_tls13_tickets = 0;
    Ok(ConnectionTls {
        control: Arc::new(control),
        data: Arc::new(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        let der = CertificateDer::from(b"not a certificate".to_vec());
        assert_eq!(subject_common_name(&der), None);
    }
}
