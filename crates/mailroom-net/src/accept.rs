//! The accept step every front end shares ([`Acceptor`]): take the next connection, learn its
//! client's address (from a PROXY header when the peer is a configured load balancer), admit
//! it through the connection limits, screen it ([`Acceptor::with_screen`]: the front end's
//! question to the mailbox service, deny list, bans and safe networks), and only then, for a
//! connection the screen says to count, through the startup (not yet logged in) limits; or
//! drop it at once, before any protocol byte, and say why.
//!
//! The order is the point: a refused (banned, denied) connection never takes a startup
//! place, so a ban frees the places its address held, and a connection from the safe
//! networks is neither counted nor dropped by the startup limits, so a login storm from
//! elsewhere cannot keep it out (OpenSSH's `MaxStartups` has no such exemption).
//!
//! Headers and screens run per connection, beside the accept, never in its way: a balancer
//! that is slow to send a header, or a screen waiting on the store, delays only its own
//! connection. At most [`MAX_PENDING_HEADERS`] headers wait at once; past that a new
//! connection from a balancer is dropped. Screens are bounded by the connection limits,
//! whose place a connection takes before it is screened. The limits are applied to the
//! client's address only once it is known, so they count clients, not the balancer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::proxy::{ProxyHeaderError, ProxyProtocol};
use crate::{ConnectionLimits, ConnectionPermit, StartupLimits, StartupPermit};

/// Connections from load balancers whose PROXY header is still being read, per listener.
pub const MAX_PENDING_HEADERS: usize = 256;

/// A connection both limits admitted: the socket (`TCP_NODELAY` set), its client's address,
/// and its places in the limits, released when dropped (the startup place also on login).
#[derive(Debug)]
pub struct Admitted {
    /// The connection, positioned after its PROXY header when it had one.
    pub socket: TcpStream,
    /// The client's address: the TCP peer, or the source its load balancer's PROXY header
    /// named. Admission, limits, logins and events use this one.
    pub peer: SocketAddr,
    /// The load balancer the connection came through (its TCP peer), when it sent a header;
    /// for logs.
    pub via: Option<SocketAddr>,
    /// Its place among the open connections.
    pub permit: ConnectionPermit,
    /// Its place among the connections not yet logged in.
    pub startup: StartupPermit,
}

/// A connection whose header has been read: the socket, the client, the balancer.
type Relayed = (TcpStream, SocketAddr, SocketAddr);

/// What the screen says of a new connection's client, before the startup limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screening {
    /// Refused (deny list, ban): closed at once, without taking a startup place. The screen
    /// has logged and recorded why.
    Refuse,
    /// From the safe networks: admitted without counting against the startup limits.
    Exempt,
    /// Any other client: counted, and dropped when over the startup limits.
    Count,
}

/// The front end's screen: asked once per connection, with the client's address.
type Screen =
    Arc<dyn Fn(SocketAddr) -> Pin<Box<dyn Future<Output = Screening> + Send>> + Send + Sync>;

/// A connection in the connection limits whose screening is under way.
type Screened = (
    TcpStream,
    SocketAddr,
    Option<SocketAddr>,
    ConnectionPermit,
    Screening,
);

/// A listener with its limits, its PROXY protocol setting and its screen, and the headers
/// being read and connections being screened.
pub struct Acceptor {
    listener: TcpListener,
    limits: Arc<ConnectionLimits>,
    startups: Arc<StartupLimits>,
    proxy: ProxyProtocol,
    screen: Option<Screen>,
    headers: JoinSet<Option<Relayed>>,
    screens: JoinSet<Screened>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("listener", &self.listener)
            .field("limits", &self.limits)
            .field("startups", &self.startups)
            .field("proxy", &self.proxy)
            .field("screen", &self.screen.is_some())
            .field("headers", &self.headers.len())
            .field("screens", &self.screens.len())
            .finish()
    }
}

impl Acceptor {
    /// Accepts on `listener` under `limits` and `startups` (which several listeners may
    /// share), expecting PROXY headers from the peers `proxy` names.
    pub fn new(
        listener: TcpListener,
        limits: Arc<ConnectionLimits>,
        startups: Arc<StartupLimits>,
        proxy: ProxyProtocol,
    ) -> Acceptor {
        Acceptor {
            listener,
            limits,
            startups,
            proxy,
            screen: None,
            headers: JoinSet::new(),
            screens: JoinSet::new(),
        }
    }

    /// Screens every connection with `screen` after the connection limits and before the
    /// startup limits. Without a screen every connection is counted.
    #[must_use]
    pub fn with_screen<F, Fut>(mut self, screen: F) -> Acceptor
    where
        F: Fn(SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Screening> + Send + 'static,
    {
        self.screen = Some(Arc::new(move |peer| Box::pin(screen(peer))));
        self
    }

    /// Waits for the next connection the limits and the screen admit; `None` once `shutdown`
    /// is cancelled (headers still being read and screens still running are then abandoned
    /// and their connections closed).
    ///
    /// A connection from a load balancer without a valid header in time is dropped and
    /// logged with the balancer's address. A connection over the connection limits is
    /// dropped and logged; one the screen refuses is dropped; one over the startup limits is
    /// dropped, logged and handed to `refused` (client, reason) for accounting, which
    /// returns whether it was recorded. An accept error (out of file descriptors and the
    /// like) is logged and retried after 50 ms.
    pub async fn accept(
        &mut self,
        shutdown: &CancellationToken,
        mut refused: impl FnMut(SocketAddr, String) -> bool,
    ) -> Option<Admitted> {
        loop {
            let (socket, peer, via) = tokio::select! {
                () = shutdown.cancelled() => {
                    self.headers.abort_all();
                    self.screens.abort_all();
                    return None;
                }
                Some(joined) = self.screens.join_next(), if !self.screens.is_empty() => {
                    match joined {
                        Ok((socket, peer, via, permit, screening)) => {
                            if let Some(admitted) = self.admit_screened(socket, peer, via, permit, screening, &mut refused) {
                                return Some(admitted);
                            }
                        }
                        Err(err) => tracing::error!(error = %err, "screening a connection failed"),
                    }
                    continue;
                }
                Some(joined) = self.headers.join_next(), if !self.headers.is_empty() => {
                    match joined {
                        Ok(Some((socket, client, balancer))) => (socket, client, Some(balancer)),
                        Ok(None) => continue,
                        Err(err) => {
                            tracing::error!(error = %err, "reading a PROXY header failed");
                            continue;
                        }
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, peer)) if self.proxy.expects_header(peer.ip()) => {
                        self.read_header(socket, peer);
                        continue;
                    }
                    Ok((socket, peer)) => (socket, peer, None),
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Some(admitted) = self.admit(socket, peer, via, &mut refused) {
                return Some(admitted);
            }
        }
    }

    /// Starts reading the header of a connection from the balancer at `balancer`, unless too
    /// many are being read already.
    fn read_header(&mut self, mut socket: TcpStream, balancer: SocketAddr) {
        if self.headers.len() >= MAX_PENDING_HEADERS {
            tracing::warn!(
                balancer = %balancer,
                pending = self.headers.len(),
                "connection from a load balancer dropped: too many PROXY headers pending"
            );
            return;
        }
        let proxy = self.proxy.clone();
        let read = async move {
            match proxy.client_address(&mut socket, balancer).await {
                Ok(client) => Some((socket, client, balancer)),
                // A plain TCP check of the port (connect, close) is no attack: not a warning.
                Err(ProxyHeaderError::Closed(0)) => {
                    tracing::debug!(balancer = %balancer, "load balancer closed without a PROXY header");
                    None
                }
                Err(err) => {
                    tracing::warn!(
                        balancer = %balancer,
                        error = %err,
                        "connection from a load balancer dropped: no valid PROXY header"
                    );
                    None
                }
            }
        };
        self.headers.spawn(read.in_current_span());
    }

    /// Admits a connection from `peer` through the connection limits, then starts its
    /// screening (its answer comes back through `screens`), or, without a screen, goes on
    /// to the startup limits at once. `None` when dropped or when screening.
    fn admit(
        &mut self,
        socket: TcpStream,
        peer: SocketAddr,
        via: Option<SocketAddr>,
        refused: &mut impl FnMut(SocketAddr, String) -> bool,
    ) -> Option<Admitted> {
        let permit = match self.limits.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(limit) => {
                tracing::warn!(peer = %peer, via = via.map(tracing::field::display), reason = %limit, "connection refused");
                return None;
            }
        };
        let Some(screen) = self.screen.clone() else {
            return self.admit_screened(socket, peer, via, permit, Screening::Count, refused);
        };
        let screening = async move {
            let screening = screen(peer).await;
            (socket, peer, via, permit, screening)
        };
        self.screens.spawn(screening.in_current_span());
        None
    }

    /// Admits a screened connection: drops a refused one, lets an exempt one through
    /// uncounted, and puts any other through the startup limits.
    fn admit_screened(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        via: Option<SocketAddr>,
        permit: ConnectionPermit,
        screening: Screening,
        refused: &mut impl FnMut(SocketAddr, String) -> bool,
    ) -> Option<Admitted> {
        let startup = match screening {
            Screening::Refuse => return None,
            Screening::Exempt => Ok(StartupPermit::uncounted(peer.ip())),
            Screening::Count => self.startups.admit(peer.ip()),
        };
        let startup = match startup {
            Ok(startup) => startup,
            Err(reason) => {
                let recorded = refused(peer, reason.to_string());
                tracing::warn!(
                    peer = %peer,
                    via = via.map(tracing::field::display),
                    reason = %reason,
                    unauthenticated = self.startups.unauthenticated(),
                    recorded,
                    "connection refused before login"
                );
                return None;
            }
        };
        let _ = socket.set_nodelay(true);
        Some(Admitted {
            socket,
            peer,
            via,
            permit,
            startup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MaxStartups;
    use crate::proxy::Networks;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BALANCER: &str = "127.0.0.3";

    async fn acceptor(limits: Arc<ConnectionLimits>, proxy: ProxyProtocol) -> Acceptor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let startups = StartupLimits::new(MaxStartups::default(), 10);
        Acceptor::new(listener, limits, startups, proxy)
    }

    async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(source.parse().unwrap(), 0))
            .unwrap();
        socket.connect(to).await.unwrap()
    }

    fn behind(networks: &str) -> ProxyProtocol {
        ProxyProtocol::new(networks.parse::<Networks>().unwrap())
            .with_deadline(Duration::from_millis(500))
    }

    /// Whether the server closed `stream` (a reset counts: unread bytes make the close one).
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(stream.read(&mut byte).await, Ok(0) | Err(_))
    }

    async fn next(acceptor: &mut Acceptor) -> Admitted {
        let shutdown = CancellationToken::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            acceptor.accept(&shutdown, |_, _| false),
        )
        .await
        .expect("a connection within 10 s")
        .expect("not shut down")
    }

    /// A screen that refuses 127.0.0.9 (banned), exempts 127.0.0.2 (safe), counts the rest.
    fn screen(peer: SocketAddr) -> std::future::Ready<Screening> {
        std::future::ready(match peer.ip().to_string().as_str() {
            "127.0.0.9" => Screening::Refuse,
            "127.0.0.2" => Screening::Exempt,
            _ => Screening::Count,
        })
    }

    /// Runs `acceptor` in the background (so refused connections are closed while the test
    /// waits on them), handing over what it admits.
    fn run(mut acceptor: Acceptor) -> tokio::sync::mpsc::UnboundedReceiver<Admitted> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let shutdown = CancellationToken::new();
            while let Some(admitted) = acceptor.accept(&shutdown, |_, _| false).await {
                if sender.send(admitted).is_err() {
                    break;
                }
            }
        });
        receiver
    }

    async fn received(admitted: &mut tokio::sync::mpsc::UnboundedReceiver<Admitted>) -> Admitted {
        tokio::time::timeout(Duration::from_secs(10), admitted.recv())
            .await
            .expect("a connection within 10 s")
            .expect("the acceptor runs")
    }

    #[tokio::test]
    async fn refused_connections_take_no_startup_place_and_safe_ones_pass_a_full_house() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        // One unauthenticated connection in all.
        let one = MaxStartups {
            start: 1,
            rate: 100,
            full: 1,
        };
        let startups = StartupLimits::new(one, 1);
        let limits = ConnectionLimits::new(100, 100);
        let acceptor = Acceptor::new(
            listener,
            limits.clone(),
            startups.clone(),
            ProxyProtocol::default(),
        )
        .with_screen(screen);
        let mut admitted = run(acceptor);

        // Three from the banned address: each closed, and none holds the one place.
        for _ in 0..3 {
            let mut banned = connect_from("127.0.0.9", to).await;
            assert!(closed(&mut banned).await, "banned: closed");
        }
        assert_eq!(startups.unauthenticated(), 0);
        // An ordinary client gets the place the banned ones did not take.
        let _ordinary = connect_from("127.0.0.1", to).await;
        let ordinary = received(&mut admitted).await;
        assert_eq!(ordinary.peer.ip().to_string(), "127.0.0.1");
        assert_eq!(startups.unauthenticated(), 1);
        assert_eq!(startups.refusals(), crate::StartupRefusals::default());

        // The place is taken: another ordinary client is dropped, a safe one still passes,
        // uncounted.
        let mut late = connect_from("127.0.0.3", to).await;
        assert!(closed(&mut late).await, "over max_startups: closed");
        assert_eq!(startups.refusals().full, 1);
        let _safe = connect_from("127.0.0.2", to).await;
        let exempt = received(&mut admitted).await;
        assert_eq!(exempt.peer.ip().to_string(), "127.0.0.2");
        assert_eq!(startups.unauthenticated(), 1);
        // The safe one logs in; the ordinary one's place is untouched.
        exempt.startup.authenticated();
        assert_eq!(startups.unauthenticated(), 1);
        assert_eq!(limits.open(), 2);
        drop(ordinary);
        assert_eq!(startups.unauthenticated(), 0);
    }

    #[tokio::test]
    async fn the_client_address_comes_from_the_header_and_the_limits_count_it() {
        // One connection per client address.
        let limits = ConnectionLimits::new(10, 1);
        let mut acceptor = acceptor(limits.clone(), behind(BALANCER)).await;
        let to = acceptor.listener.local_addr().unwrap();

        let mut first = connect_from(BALANCER, to).await;
        first
            .write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 22\r\nSSH-2.0-x\r\n")
            .await
            .unwrap();
        let mut admitted = next(&mut acceptor).await;
        assert_eq!(admitted.peer, "203.0.113.7:4242".parse().unwrap());
        assert_eq!(admitted.via.unwrap().ip().to_string(), BALANCER);
        let mut rest = [0u8; 11];
        admitted.socket.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"SSH-2.0-x\r\n");

        // Another client through the same balancer is its own address; the first one's
        // address again is over its limit, and dropped.
        let mut same = connect_from(BALANCER, to).await;
        same.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 4243 22\r\n")
            .await
            .unwrap();
        let mut other = connect_from(BALANCER, to).await;
        other
            .write_all(b"PROXY TCP4 203.0.113.8 192.0.2.1 4244 22\r\n")
            .await
            .unwrap();
        let second = next(&mut acceptor).await;
        assert_eq!(second.peer, "203.0.113.8:4244".parse().unwrap());
        assert!(closed(&mut same).await, "over the limit: closed");
        assert_eq!(limits.open(), 2);
        drop((admitted, second, first, other));
    }

    #[tokio::test]
    async fn a_slow_balancer_does_not_hold_up_the_others() {
        let limits = ConnectionLimits::new(10, 10);
        let mut acceptor = acceptor(limits, behind("127.0.0.0/8")).await;
        let to = acceptor.listener.local_addr().unwrap();
        // Sends half a header and stops.
        let mut slow = connect_from(BALANCER, to).await;
        slow.write_all(b"PROXY TCP4 198.51").await.unwrap();
        // A header that is no header.
        let mut wrong = connect_from(BALANCER, to).await;
        wrong.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        let mut quick = connect_from(BALANCER, to).await;
        quick
            .write_all(b"PROXY TCP4 203.0.113.9 192.0.2.1 4245 22\r\n")
            .await
            .unwrap();
        let admitted = next(&mut acceptor).await;
        assert_eq!(admitted.peer, "203.0.113.9:4245".parse().unwrap());
        // The wrong one and, at its deadline, the slow one are closed without a byte.
        assert!(closed(&mut wrong).await);
        let started = std::time::Instant::now();
        assert!(closed(&mut slow).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        // A LOCAL header (a health check) keeps the balancer's own address.
        let mut local = connect_from(BALANCER, to).await;
        local.write_all(b"PROXY UNKNOWN\r\n").await.unwrap();
        let admitted = next(&mut acceptor).await;
        assert_eq!(admitted.peer, local.local_addr().unwrap());
        assert_eq!(admitted.via, Some(local.local_addr().unwrap()));
    }

    #[tokio::test]
    async fn a_peer_outside_the_balancer_networks_is_never_read_for_a_header() {
        let limits = ConnectionLimits::new(10, 10);
        let mut acceptor = acceptor(limits, behind(BALANCER)).await;
        let to = acceptor.listener.local_addr().unwrap();
        let mut direct = connect_from("127.0.0.1", to).await;
        direct
            .write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 22\r\n")
            .await
            .unwrap();
        let mut admitted = next(&mut acceptor).await;
        assert_eq!(admitted.peer, direct.local_addr().unwrap());
        assert_eq!(admitted.via, None);
        // The header is left for the protocol, which will refuse it.
        let mut start = [0u8; 6];
        admitted.socket.read_exact(&mut start).await.unwrap();
        assert_eq!(&start, b"PROXY ");
    }

    #[tokio::test]
    async fn shutdown_abandons_pending_headers() {
        let limits = ConnectionLimits::new(10, 10);
        let mut acceptor = acceptor(limits, ProxyProtocol::new(BALANCER.parse().unwrap())).await;
        let to = acceptor.listener.local_addr().unwrap();
        let mut slow = connect_from(BALANCER, to).await;
        slow.write_all(b"PROXY ").await.unwrap();
        // Accepted in order: once the quick one is through, the slow one's read is pending.
        let mut quick = connect_from(BALANCER, to).await;
        quick.write_all(b"PROXY UNKNOWN\r\n").await.unwrap();
        let _admitted = next(&mut acceptor).await;
        assert_eq!(acceptor.headers.len(), 1);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert!(acceptor.accept(&shutdown, |_, _| false).await.is_none());
        // Closed at once, long before the 5 s deadline.
        let started = std::time::Instant::now();
        assert!(closed(&mut slow).await);
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
