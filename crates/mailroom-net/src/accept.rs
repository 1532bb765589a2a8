//! The accept step every front end shares: take the next connection, admit it through the
//! connection limits and the startup (not yet logged in) limits, or drop it at once, before
//! any protocol byte, and say why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{ConnectionLimits, ConnectionPermit, StartupLimits, StartupPermit};

/// A connection both limits admitted: the socket (`TCP_NODELAY` set), its peer, and its
/// places in the limits, released when dropped (the startup place also on login).
#[derive(Debug)]
pub struct Admitted {
    /// The connection.
    pub socket: TcpStream,
    /// Its peer address.
    pub peer: SocketAddr,
    /// Its place among the open connections.
    pub permit: ConnectionPermit,
    /// Its place among the connections not yet logged in.
    pub startup: StartupPermit,
}

/// Waits for the next connection the limits admit; `None` once `shutdown` is cancelled.
/// A connection over the connection limits is dropped and logged; one over the startup
/// limits is dropped, logged and handed to `refused` (peer, reason) for accounting, which
/// returns whether it was recorded. An accept error (out of file descriptors and the like)
/// is logged and retried after 50 ms.
pub async fn accept(
    listener: &TcpListener,
    limits: &Arc<ConnectionLimits>,
    startups: &Arc<StartupLimits>,
    shutdown: &CancellationToken,
    mut refused: impl FnMut(SocketAddr, String) -> bool,
) -> Option<Admitted> {
    loop {
        let (socket, peer) = tokio::select! {
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match limits.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(limit) => {
                tracing::warn!(peer = %peer, reason = %limit, "connection refused");
                continue;
            }
        };
        let startup = match startups.admit(peer.ip()) {
            Ok(startup) => startup,
            Err(reason) => {
                let recorded = refused(peer, reason.to_string());
                tracing::warn!(
                    peer = %peer,
                    reason = %reason,
                    unauthenticated = startups.unauthenticated(),
                    recorded,
                    "connection refused before login"
                );
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        return Some(Admitted {
            socket,
            peer,
            permit,
            startup,
        });
    }
}
