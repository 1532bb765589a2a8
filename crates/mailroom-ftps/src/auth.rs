//! FTP logins (USER/PASS, RFC 959 §4.1.1) through the Hub's login steps.
//!
//! libunftp asks an `Authenticator` for a `Principal` (only a user name) and then a
//! `UserDetailProvider` for the user the storage sees. One [`Login`] per connection joins the
//! two: the authenticator runs `Hub::login`, parks the accepted `ClientSession` in it and
//! hands the `SessionGuard` to the connection task; the provider takes the session out.
//!
//! FTP has one secret per login, so an account that also requires a one-time code cannot
//! log in here; one that requires a client certificate can, when the TLS handshake presented
//! one that rustls verified against the client CA. Nothing here decides: the Hub checks,
//! scores and records every step; a refusal is one opaque 530 to the client.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};

use mailroom_core::{
    ClientSession, Credential, Factor, Hub, LoginProgress, LoginStep, Protocol, Secret,
    SessionGuard,
};

/// The logged-in user as libunftp's storage calls see it.
#[derive(Debug)]
pub(crate) struct FtpUser {
    /// The Hub session every storage call runs as.
    pub(crate) session: ClientSession,
    /// Cancelled when the connection ends or the Hub closes the session: transfers still
    /// running on a data connection stop then (an upload is aborted).
    pub(crate) ended: CancellationToken,
}

impl fmt::Display for FtpUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.session.account)
    }
}

impl UserDetail for FtpUser {}

/// One connection's login state, shared by its authenticator and user provider.
pub(crate) struct Login {
    hub: Arc<Hub>,
    peer: SocketAddr,
    /// Factors proved so far; a new user name starts over (the Hub rebinds it).
    progress: tokio::sync::Mutex<LoginProgress>,
    /// The session accepted by the authenticator, for the provider to take.
    accepted: Mutex<Option<ClientSession>>,
    /// Hands the session guard to the connection task at the first accepted login.
    guard: Mutex<Option<oneshot::Sender<SessionGuard>>>,
    ended: CancellationToken,
}

impl Login {
    /// A login for the connection from `peer`; the guard of an accepted login is sent on
    /// `guard`, and users carry `ended`.
    pub(crate) fn new(
        hub: Arc<Hub>,
        peer: SocketAddr,
        guard: oneshot::Sender<SessionGuard>,
        ended: CancellationToken,
    ) -> Arc<Login> {
        Arc::new(Login {
            hub,
            peer,
            progress: tokio::sync::Mutex::new(LoginProgress::default()),
            accepted: Mutex::new(None),
            guard: Mutex::new(Some(guard)),
            ended,
        })
    }

    fn source(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    /// One USER/PASS attempt, with the certificate of the TLS handshake if any.
    async fn attempt(&self, user: &str, creds: &Credentials) -> Result<LoginStep, String> {
        let Some(password) = creds.password.clone() else {
            return Err("no password given".to_owned());
        };
        let mut progress = self.progress.lock().await;
        let step = self
            .hub
            .login(
                &mut progress,
                user,
                Credential::Password(Secret::new(password)),
                self.source(),
                Protocol::Ftps,
            )
            .await
            .map_err(|err| format!("login failed: {err}"))?;
        let LoginStep::Continue(remaining) = step else {
            return Ok(step);
        };
        // The password was right and more is required: FTP can only add a certificate
        // from the TLS handshake; it has no prompt for a one-time code.
        let certificate = creds
            .certificate_chain
            .as_ref()
            .and_then(|chain| chain.first());
        match (remaining.as_slice(), certificate) {
            ([Factor::Certificate], Some(certificate)) => {
                let Some(name) = crate::tls::subject_common_name(&certificate.0) else {
                    return Ok(self
                        .refuse(user, "client certificate without a usable common name")
                        .await);
                };
                self.hub
                    .login(
                        &mut progress,
                        user,
                        Credential::Certificate(name),
                        self.source(),
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

/// libunftp's authenticator for one connection.
pub(crate) struct HubAuthenticator(pub(crate) Arc<Login>);

impl fmt::Debug for HubAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HubAuthenticator")
    }
}

#[async_trait]
impl Authenticator for HubAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let login = &self.0;
        match login.attempt(username, creds).await {
            Ok(LoginStep::Accepted(session, guard)) => {
                tracing::info!(account = %session.account, "logged in");
                *login
                    .accepted
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(session);
                let sender = login
                    .guard
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take();
                if let Some(sender) = sender {
                    // The connection task ends only after libunftp's loop, so it is there
                    // to receive; if not, the guard drops and the session unregisters.
                    let _ = sender.send(guard);
                }
                Ok(Principal {
                    username: username.to_owned(),
                })
            }
            Ok(_) => Err(AuthenticationError::BadPassword),
            Err(reason) => {
                tracing::error!(reason = %reason, "login could not be checked");
                Err(AuthenticationError::new("login could not be checked"))
            }
        }
    }

    fn name(&self) -> &str {
        "mailroom"
    }
}

/// libunftp's user provider for one connection: hands over the accepted session.
pub(crate) struct HubUsers(pub(crate) Arc<Login>);

impl fmt::Debug for HubUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HubUsers")
    }
}

#[async_trait]
impl UserDetailProvider for HubUsers {
    type User = FtpUser;

    async fn provide_user_detail(
        &self,
        _principal: &Principal,
    ) -> Result<FtpUser, UserDetailError> {
        let session = self
            .0
            .accepted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match session {
            Some(session) => Ok(FtpUser {
                session,
                ended: self.0.ended.clone(),
            }),
            None => Err(UserDetailError::Generic("no accepted login".to_owned())),
        }
    }
}
