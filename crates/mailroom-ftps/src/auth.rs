//! FTP logins (USER/PASS, RFC 959 §4.1.1) through the Hub's login steps.
//!
//! FTP has one secret per login, so an account that also requires a one-time code sends it
//! appended to the password, `PASS secret:123456` (as SFTPGo takes it); the Hub decides
//! whether the string carries a code ([`Hub::login_password_with_code`]). An account that
//! requires a client certificate logs in when the TLS handshake presented one that rustls
//! verified against the client CA. Each USER/PASS pair is a whole login: factors proved by an
//! earlier refused pair do not carry over. Nothing here decides: the Hub checks, scores and
//! records every step; a refusal is one opaque 530 to the client, and a factor FTP could not
//! present is recorded with how to present it.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use mailroom_core::{Credential, Factor, Hub, LoginProgress, LoginStep, Protocol, Secret};

/// The recorded reason when the password was right but the one-time code was not sent.
const CODE_MISSING: &str =
    "ftps needs the one-time code appended to the password (PASS password:123456)";

/// One connection's login state.
pub(crate) struct Login {
    hub: Arc<Hub>,
    peer: SocketAddr,
}

impl Login {
    /// The login state of the connection from `peer`.
    pub(crate) fn new(hub: Arc<Hub>, peer: SocketAddr) -> Login {
        Login { hub, peer }
    }

    fn source(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    /// One USER/PASS attempt, with the client certificate of the TLS handshake if any; the
    /// password may end in `:` and the current one-time code. `Err` when the login could not
    /// be checked at all (storage failure).
    pub(crate) async fn attempt(
        &mut self,
        user: &str,
        password: String,
        certificate: Option<&CertificateDer<'_>>,
    ) -> Result<LoginStep, String> {
        let source = self.source();
        // A fresh progress: a pair refused after a right password must not leave it proved
        // for the next pair (which would then be refused as "already proved").
        let mut progress = LoginProgress::default();
        let step = self
            .hub
            .login_password_with_code(
                &mut progress,
                user,
                Secret::new(password),
                source.clone(),
                Protocol::Ftps,
            )
            .await
            .map_err(|err| format!("login failed: {err}"))?;
        let LoginStep::Continue(remaining) = step else {
            return Ok(step);
        };
        // The password (and any code) was right and more is required: FTP can only add a
        // certificate from the TLS handshake.
        match (remaining.as_slice(), certificate) {
            ([Factor::Certificate], Some(certificate)) => {
                let Some(name) = crate::tls::subject_common_name(certificate) else {
                    return Ok(self
                        .refuse(user, "client certificate without a usable common name")
                        .await);
                };
                self.hub
                    .login(
                        &mut progress,
                        user,
                        Credential::Certificate(name),
                        source,
                        Protocol::Ftps,
                    )
                    .await
                    .map_err(|err| format!("login failed: {err}"))
            }
            _ => {
                let reason = missing_reason(&remaining, certificate.is_some());
                Ok(self.refuse(user, &reason).await)
            }
        }
    }

    /// Records a refusal the Hub did not see as a verdict, and refuses.
    async fn refuse(&self, user: &str, reason: &str) -> LoginStep {
        tracing::info!(reason = %reason, "login refused");
        if let Err(err) = self
            .hub
            .record_login_refusal(user, reason, self.source(), Protocol::Ftps)
            .await
        {
            tracing::error!(error = %err, "refusal could not be recorded");
        }
        LoginStep::Refused
    }
}

/// Why a login whose password was right still lacks `remaining`, for the audit event: the
/// factors FTP cannot present at all (a key; a certificate the handshake did not bring), or
/// else how to send the one-time code.
fn missing_reason(remaining: &[Factor], have_certificate: bool) -> String {
    let cannot: Vec<String> = remaining
        .iter()
        .filter(|factor| match factor {
            Factor::PublicKey => true,
            Factor::Certificate => !have_certificate,
            Factor::Password | Factor::Totp => false,
        })
        .map(|factor| factor.to_string())
        .collect();
    if !cannot.is_empty() {
        format!(
            "ftps cannot prove {}: FTP carries a password (with the one-time code appended when one is required: PASS password:123456) and, when configured, a client certificate",
            cannot.join("+")
        )
    } else if remaining.contains(&Factor::Totp) {
        CODE_MISSING.to_owned()
    } else {
        let missing: Vec<String> = remaining.iter().map(|f| f.to_string()).collect();
        format!("ftps cannot prove {}", missing.join("+"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_says_what_ftp_cannot_bring_or_how_to_send_the_code() {
        assert_eq!(missing_reason(&[Factor::Totp], false), CODE_MISSING);
        assert_eq!(
            missing_reason(&[Factor::Certificate, Factor::Totp], true),
            CODE_MISSING
        );
        let no_certificate = missing_reason(&[Factor::Certificate, Factor::Totp], false);
        assert!(
            no_certificate.starts_with("ftps cannot prove certificate:"),
            "{no_certificate}"
        );
        assert!(
            no_certificate.contains("PASS password:123456"),
            "{no_certificate}"
        );
        let key = missing_reason(&[Factor::PublicKey], true);
        assert!(key.starts_with("ftps cannot prove publickey:"), "{key}");
    }
}
