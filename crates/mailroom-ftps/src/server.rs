//! The FTPS accept loop and the life of one connection (explicit FTPS, RFC 4217, over
//! libunftp).
//!
//! We own the listener, so the same admission as SSH applies before libunftp sees a byte:
//! connection limits, unauthenticated-connection limits (`mailroom_net`), and `Hub::admit`
//! (deny list, bans). Each accepted connection gets a libunftp `Server` of its own (its
//! authenticator and user provider hold that connection's login state) and is handed over
//! with `Server::service`.
//!
//! libunftp offers no way to end a session from outside, so before handing the socket over we
//! keep a duplicate of its file descriptor; `shutdown(Both)` on the duplicate makes
//! libunftp's next read see end-of-stream and its loop end. That is how this module enforces
//! the login deadline (absolute, from accept, across the TLS handshake, which libunftp does
//! not time out), closes a session the Hub closes (`SessionGuard::closed`), and stops at
//! server shutdown once no transfer is running.

use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libunftp::options::{ActivePassiveMode, FtpsRequired, PassiveHost, SiteMd5};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use mailroom_core::{Hub, Protocol, RefusalRecorder, SessionGuard};
use mailroom_net::{Activity, ConnectionLimits, ConnectionPermit, StartupLimits, StartupPermit};

use crate::auth::{FtpUser, HubAuthenticator, HubUsers, Login};
use crate::config::Config;
use crate::storage::HubStorage;

/// The greeting (reply 220) before AUTH TLS. It names no software or version.
const GREETING: &str = "Mailroom FTPS: AUTH TLS, then log in";

/// Serves FTPS on `listener` with the TLS configuration `tls` until `shutdown` is cancelled,
/// then stops accepting and returns once every running session has ended (a session in a
/// transfer is left to finish it).
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: Config,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if config.allow_plaintext {
        tracing::warn!(
            "[ftps] allow_plaintext = true: clients may log in and transfer files without TLS; passwords and files can then be read on the network"
        );
    }
    let limits = ConnectionLimits::new(config.max_connections, config.max_connections_per_address);
    let startups = StartupLimits::new(config.max_startups, config.max_startups_per_address);
    let tracker = TaskTracker::new();
    let recorder = RefusalRecorder::new(hub.clone(), Protocol::Ftps, tracker.clone());
    let shared = Arc::new(Shared {
        hub,
        config,
        tls,
        shutdown: shutdown.clone(),
        recorder: recorder.clone(),
    });
    loop {
        let Some(admitted) =
            mailroom_net::accept(&listener, &limits, &startups, &shutdown, |peer, reason| {
                recorder.record(peer, reason)
            })
            .await
        else {
            break;
        };
        let (socket, peer) = (admitted.socket, admitted.peer);
        let span = tracing::info_span!("session", id = %mailroom_net::session_id(), proto = "ftps", peer = %peer);
        tracker.spawn(
            shared
                .clone()
                .connection(socket, peer, admitted.permit, admitted.startup)
                .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// What every connection of one listener shares.
struct Shared {
    hub: Arc<Hub>,
    config: Config,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    recorder: RefusalRecorder,
}

impl Shared {
    async fn connection(
        self: Arc<Self>,
        socket: TcpStream,
        peer: SocketAddr,
        _permit: ConnectionPermit,
        startup: StartupPermit,
    ) {
        // The deny list and bans: refused before the greeting.
        if let Err(err) = self.hub.admit(peer, Protocol::Ftps).await {
            tracing::info!(reason = %err, "connection refused");
            return;
        }
        let (socket, control) = match duplicate(socket) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "cannot duplicate the socket; closing");
                return;
            }
        };
        let ended = CancellationToken::new();
        // Transfers still running on data connections stop when the connection ends.
        let _ended = ended.clone().drop_guard();
        let (guard_sender, mut guard_receiver) = oneshot::channel();
        let login = Login::new(self.hub.clone(), peer, guard_sender, ended.clone());
        let (activity, mut transfers) = Activity::new();
        let server = match self.server(login, activity) {
            Ok(server) => server,
            Err(err) => {
                tracing::error!(error = %err, "cannot build the FTP server");
                return;
            }
        };
        let service = server.service(socket);
        tokio::pin!(service);
        let deadline = tokio::time::sleep(Duration::from_secs(self.config.login_grace_seconds));
        tokio::pin!(deadline);
        let mut startup = Some(startup);
        let mut guard: Option<SessionGuard> = None;
        let mut guard_waiting = true;
        let mut stopping = false;
        let mut refused = false;
        let closed = async |guard: &mut Option<SessionGuard>| match guard {
            Some(guard) => guard.closed().await,
            None => std::future::pending().await,
        };
        loop {
            tokio::select! {
                _ = &mut service => break,
                received = &mut guard_receiver, if guard_waiting => {
                    guard_waiting = false;
                    if let Ok(received) = received {
                        guard = Some(received);
                        if let Some(startup) = startup.take() {
                            startup.authenticated();
                        }
                    }
                }
                () = &mut deadline, if guard.is_none() && !refused => {
                    refused = true;
                    let reason = format!(
                        "no login within {} s (login_grace_seconds)",
                        self.config.login_grace_seconds
                    );
                    let recorded = self.recorder.record(peer, reason.clone());
                    tracing::warn!(reason = %reason, recorded, "connection closed before login");
                    close(&control);
                }
                reason = closed(&mut guard) => {
                    tracing::info!(reason = %reason, "session closed by the hub");
                    ended.cancel();
                    close(&control);
                    guard = None;
                }
                () = self.shutdown.cancelled(), if !stopping => stopping = true,
                changed = transfers.changed(), if stopping => {
                    if changed.is_err() {
                        stopping = false;
                    }
                }
            }
            if stopping && *transfers.borrow() == 0 {
                close(&control);
                stopping = false;
            }
        }
        if guard_waiting && guard.is_none() && !refused {
            // Ended without logging in (and without a deadline refusal, which was scored).
            if let Err(err) = self.hub.score_unauthenticated(Some(peer.to_string())).await {
                tracing::warn!(error = %err, "could not score an unauthenticated connection");
            }
        }
        tracing::debug!("session ended");
    }

    /// A libunftp server for one connection, around its login state.
    fn server(
        &self,
        login: Arc<Login>,
        activity: Activity,
    ) -> Result<libunftp::Server<HubStorage, FtpUser>, libunftp::ServerError> {
        let storage = HubStorage {
            hub: self.hub.clone(),
            activity,
        };
        let required = if self.config.allow_plaintext {
            FtpsRequired::None
        } else {
            FtpsRequired::All
        };
        let passive_host = match self.config.passive_address {
            Some(address) => PassiveHost::Ip(address),
            None => PassiveHost::FromConnection,
        };
        libunftp::ServerBuilder::with_user_detail_provider(
            Box::new(move || storage.clone()),
            Arc::new(HubUsers(login.clone())),
        )
        .authenticator(Arc::new(HubAuthenticator(login)))
        .greeting(GREETING)
        .ftps_manual::<PathBuf>(self.tls.clone())
        .ftps_required(required, required)
        .active_passive_mode(ActivePassiveMode::PassiveOnly)
        .passive_ports(self.config.passive_ports.range())
        .passive_host(passive_host)
        .idle_session_timeout(self.config.idle_timeout_seconds)
        // SITE MD5 would read whole files through `get`; clients have SHA-256 receipts.
        .sitemd5(SiteMd5::None)
        .build()
    }
}

/// Splits a socket into the stream libunftp gets and a duplicate of its descriptor that
/// stays here, to end the connection with [`close`].
fn duplicate(socket: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let socket = socket.into_std()?;
    let control = socket.try_clone()?;
    Ok((TcpStream::from_std(socket)?, control))
}

/// Ends the connection under libunftp: its reads see end-of-stream, its writes fail.
fn close(control: &std::net::TcpStream) {
    if let Err(err) = control.shutdown(Shutdown::Both) {
        tracing::debug!(error = %err, "shutdown of a closed socket");
    }
}
