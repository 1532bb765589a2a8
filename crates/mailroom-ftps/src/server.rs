//! The FTPS accept loops (explicit and implicit TLS) and what every connection shares.
//!
//! We own the listeners, so the same admission as SSH applies before a byte is answered, in
//! this order: connection limits, then `Hub::admit` (deny list, bans: refused without taking
//! a startup place) as the acceptor's screen, then the unauthenticated-connection limits
//! (`mailroom_net`, shared by the explicit and implicit ports), which do not count a client
//! from `[auth] safe_networks`; all on the client's address, which behind a load balancer (`proxy_protocol_from`) is the one its PROXY header
//! names (`mailroom_net::Acceptor`). Each admitted connection becomes one [`Session`] task;
//! at shutdown the loops stop accepting and `serve` returns when every session has ended (a
//! running transfer is left to finish).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use mailroom_core::{Hub, Protocol, RefusalRecorder};
use mailroom_net::{
    Acceptor, ConnectionLimits, ConnectionPermit, ProxyProtocol, Screening, StartupLimits,
    StartupPermit,
};

use crate::config::Config;
use crate::session::Session;

/// The listening sockets of the front end.
pub struct Listeners {
    /// Explicit FTPS: the client upgrades with `AUTH TLS` (`[ftps] listen`).
    pub explicit: TcpListener,
    /// Implicit FTPS: TLS from the first byte (`[ftps] implicit_listen`), when offered.
    pub implicit: Option<TcpListener>,
}

/// How a connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// In clear text, until `AUTH TLS`.
    Explicit,
    /// With a TLS handshake before the greeting.
    Implicit,
}

/// Serves FTPS on `listeners` with the TLS configuration `tls` until `shutdown` is
/// cancelled, then stops accepting and returns once every running session has ended.
pub async fn serve(
    listeners: Listeners,
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
    let tracker = TaskTracker::new();
    let shared = Arc::new(Shared {
        limits: ConnectionLimits::for_listener(
            "ftps",
            config.max_connections,
            config.max_connections_per_address,
        ),
        startups: StartupLimits::new(config.max_startups, config.max_startups_per_address),
        recorder: RefusalRecorder::new(hub.clone(), Protocol::Ftps, tracker.clone()),
        proxy: ProxyProtocol::new(config.proxy_protocol_from.clone()),
        hub,
        config,
        tls,
        shutdown,
        tracker: tracker.clone(),
    });
    let explicit = shared
        .clone()
        .accept_loop(listeners.explicit, Mode::Explicit);
    let implicit = async {
        if let Some(listener) = listeners.implicit {
            shared.clone().accept_loop(listener, Mode::Implicit).await;
        }
    };
    tokio::join!(explicit, implicit);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// What every connection of the front end shares.
pub(crate) struct Shared {
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: Config,
    pub(crate) tls: Arc<rustls::ServerConfig>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) recorder: RefusalRecorder,
    /// The load balancers whose PROXY headers are believed, on control and data ports.
    pub(crate) proxy: ProxyProtocol,
    limits: Arc<ConnectionLimits>,
    startups: Arc<StartupLimits>,
    tracker: TaskTracker,
}

impl Shared {
    async fn accept_loop(self: Arc<Self>, listener: TcpListener, mode: Mode) {
        let mut acceptor = Acceptor::new(
            listener,
            self.limits.clone(),
            self.startups.clone(),
            self.proxy.clone(),
        )
        .with_screen({
            let hub = self.hub.clone();
            move |peer| screen(hub.clone(), peer)
        });
        loop {
            let admitted = acceptor
                .accept(&self.shutdown, |peer, reason| {
                    self.recorder.record(peer, reason)
                })
                .await;
            let Some(admitted) = admitted else {
                break;
            };
            let peer = admitted.peer;
            let span = tracing::info_span!(
                "session",
                id = %mailroom_net::session_id(),
                proto = "ftps",
                peer = %peer,
                via = admitted.via.map(tracing::field::display),
            );
            self.tracker.spawn(
                self.clone()
                    .connection(
                        admitted.socket,
                        peer,
                        mode,
                        admitted.permit,
                        admitted.startup,
                    )
                    .instrument(span),
            );
        }
    }

    async fn connection(
        self: Arc<Self>,
        socket: TcpStream,
        peer: SocketAddr,
        mode: Mode,
        _permit: ConnectionPermit,
        startup: StartupPermit,
    ) {
        Session::run(self, socket, peer, mode, startup).await;
        tracing::debug!("session ended");
    }
}

/// The acceptor's screen of a new connection, before the startup limits: the deny list and
/// bans refuse it (`Hub::admit`, which records the refusal), the safe networks are exempt
/// from the startup limits, anyone else is counted.
async fn screen(hub: Arc<Hub>, peer: SocketAddr) -> Screening {
    if let Err(err) = hub.admit(peer, Protocol::Ftps).await {
        tracing::info!(peer = %peer, reason = %err, "connection refused");
        return Screening::Refuse;
    }
    if hub.auth_config().defender.is_safe(peer.ip()) {
        Screening::Exempt
    } else {
        Screening::Count
    }
}
