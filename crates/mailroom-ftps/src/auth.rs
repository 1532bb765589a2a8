//! FTP logins (USER/PASS, RFC 959 §4.1.1) through the Hub's login steps.
//!
//! FTP has one secret per login, so an account that also requires a one-time code cannot
//! log in here; one that requires a client certificate can, when the TLS handshake presented
//! one that rustls verified against the client CA. Nothing here decides: the Hub checks,
//! scores and records every step; a refusal is one opaque 530 to the client.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use mailroom_core::{Credential, Factor, Hub, LoginProgress, LoginStep, Protocol, Secret};

/// One connection's login state.
pub(crate) struct Login {
    hub: Arc<Hub>,
    peer: SocketAddr,
    /// Factors proved so far; a new user name starts over (the Hub rebinds it).
    progress: LoginProgress,
}

impl Login {
    /// The login state of the connection from `peer`.
    pub(crate) fn new(hub: Arc<Hub>, peer: SocketAddr) -> Login {
        Login {
            hub,
            peer,
            progress: LoginProgress::default(),
        }
    }

    fn source(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    /// One USER/PASS attempt, with the client certificate of the TLS handshake if any.
    /// `Err` when the login could not be checked at all (storage failure).
    pub(crate) async fn attempt(
        &mut self,
        user: &str,
        password: String,
        certificate: Option<&CertificateDer<'_>>,
    ) -> Result<LoginStep, String> {
        let source = self.source();
        let step = self
            .hub
            .login(
                &mut self.progress,
                user,
                Credential::Password(Secret::new(password)),
                source.clone(),
                Protocol::Ftps,
            )
            .await
            .map_err(|err| format!("login failed: {err}"))?;
        let LoginStep::Continue(remaining) = step else {
            return Ok(step);
        };
        // The password was right and more is required: FTP can only add a certificate
        // from the TLS handshake; it has no prompt for a one-time code.
        match (remaining.as_slice(), certificate) {
            ([Factor::Certificate], Some(certificate)) => {
                let Some(name) = crate::tls::subject_common_name(certificate) else {
                    return Ok(self
                        .refuse(user, "client certificate without a usable common name")
                        .await);
                };
                self.hub
                    .login(
                        &mut self.progress,
                        user,
                        Credential::Certificate(name),
                        source,
                        Protocol::Ftps,
                    )
                    .await
                    .map_err(|err| format!("login failed: {err}"))
            }
            _ => {
                let missing = remaining
                    .iter()
                    .map(|factor| factor.to_string())
                    .collect::<Vec<_>>()
                    .join("+");
                let reason = format!(
                    "ftps cannot prove {missing}: FTP carries one password and, when configured, a client certificate; use SFTP for one-time codes"
                );
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
