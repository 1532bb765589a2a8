//! Load balancers for tests of the PROXY protocol: [`HaProxy`] runs the real HAProxy (Debian's
//! `haproxy`) in the foreground on loopback with a configuration of our own, in TCP mode,
//! sending a v1 or v2 header to the hub; [`HeaderRelay`] is a hand-made balancer that sends a
//! header the test wrote ([`proxy_v1`], [`proxy_v2`]), so a test can claim any client
//! address, such as one on the deny list.
//!
//! The addresses say who is who: test clients connect from [`CLIENT_IP`], HAProxy listens on
//! [`FRONT_IP`], and balancers connect to the hub from [`BALANCER_IP`], so a hub configured with
//! `proxy_protocol_from = ["127.0.0.3"]` believes them and nobody else. HAProxy is a child
//! of the test, stopped by its own PID on drop; it never touches a system service.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::{eventually, have};

/// Where test clients connect from (to a balancer), when the test must tell them apart.
pub const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Where balancers connect to the hub from: the network tests put in `proxy_protocol_from`.
pub const BALANCER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Where balancers listen for clients.
pub const FRONT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));

/// Where Debian's `haproxy` package installs the program, which a user's PATH may lack.
const SBIN_HAPROXY: &str = "/usr/sbin/haproxy";

/// How long HAProxy may take to bind its ports and answer on its stats socket.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Which PROXY header HAProxy sends the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    /// The text header (`send-proxy`).
    V1,
    /// The binary header (`send-proxy-v2`).
    V2,
}

impl SendProxy {
    fn keyword(self) -> &'static str {
        match self {
            SendProxy::V1 => "send-proxy",
            SendProxy::V2 => "send-proxy-v2",
        }
    }
}

/// One frontend of [`HaProxy`]: ports on [`FRONT_IP`] relayed to one backend, or to several
/// in turn (round robin).
#[derive(Debug, Clone)]
pub struct Forward {
    ports: RangeInclusive<u16>,
    /// Each server's address and port; `None`: the port the client connected to (a passive
    /// port range).
    servers: Vec<(IpAddr, Option<u16>)>,
    send: SendProxy,
}

impl Forward {
    /// A free port on [`FRONT_IP`] relayed to `backend`.
    pub fn to(backend: SocketAddr, send: SendProxy) -> Forward {
        Forward::round_robin(&[backend], send)
    }

    /// A free port on [`FRONT_IP`] relayed to each of `backends` in turn, one connection
    /// after the other: the layout of several nodes behind one balancer.
    pub fn round_robin(backends: &[SocketAddr], send: SendProxy) -> Forward {
        let port = free_port(FRONT_IP);
        Forward {
            ports: port..=port,
            servers: backends
                .iter()
                .map(|backend| (backend.ip(), Some(backend.port())))
                .collect(),
            send,
        }
    }

    /// The same `ports` on [`FRONT_IP`] relayed each to the same port on `backend_ip`: the
    /// layout for FTPS passive ports.
    pub fn same_ports(ports: RangeInclusive<u16>, backend_ip: IpAddr, send: SendProxy) -> Forward {
        Forward {
            ports,
            servers: vec![(backend_ip, None)],
            send,
        }
    }
}

/// A running HAProxy in TCP mode, one frontend per [`Forward`].
pub struct HaProxy {
    dir: tempfile::TempDir,
    forwards: Vec<Forward>,
    child: Option<Child>,
}

impl HaProxy {
    /// Writes the configuration and starts HAProxy in the foreground (`-db`), returning once
    /// it answers on its stats socket (its frontends are bound by then). `None` (after
    /// [`skip`](crate::skip), which fails under `CI`) when `haproxy` is not installed.
    pub async fn start(forwards: &[Forward]) -> Option<HaProxy> {
        let program = if std::path::Path::new(SBIN_HAPROXY).exists() {
            PathBuf::from(SBIN_HAPROXY)
        } else if have("haproxy") {
            PathBuf::from("haproxy")
        } else {
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let mut proxy = HaProxy {
            dir,
            forwards: forwards.to_vec(),
            child: None,
        };
        let config = proxy.dir.path().join("haproxy.cfg");
        std::fs::write(&config, proxy.config()).expect("write haproxy.cfg");
        let out = std::fs::File::create(proxy.dir.path().join("haproxy.out")).expect("log");
        let err = out.try_clone().expect("log");
        let child = Command::new(program)
            .arg("-f")
            .arg(&config)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn haproxy");
        let child = proxy.child.insert(child);
        let socket = proxy.dir.path().join("admin.sock");
        let mut exited = None;
        let up = eventually(START_LIMIT, async || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            answers(&socket).await
        })
        .await;
        if let Some(status) = exited {
            panic!("haproxy exited at start ({status}):\n{}", proxy.log());
        }
        assert!(
            up,
            "haproxy did not answer within {} s:\n{}",
            START_LIMIT.as_secs(),
            proxy.log()
        );
        Some(proxy)
    }

    /// Where the `index`th forward listens (its first port).
    pub fn frontend(&self, index: usize) -> SocketAddr {
        SocketAddr::new(FRONT_IP, *self.forwards[index].ports.start())
    }

    /// Connections the `index`th forward has taken so far (HAProxy's `stot` of its frontend,
    /// from `show stat`): proof that a client went through the balancer.
    pub async fn connections(&self, index: usize) -> u64 {
        let stats = stats_command(&self.dir.path().join("admin.sock"), "show stat")
            .await
            .expect("haproxy show stat");
        let name = format!("front{index}");
        let mut lines = stats.lines();
        let header = lines.next().unwrap_or_default().trim_start_matches("# ");
        let column = |wanted: &str| header.split(',').position(|c| c == wanted);
        let (Some(stot), Some(svname)) = (column("stot"), column("svname")) else {
            panic!("unexpected show stat header: {header}");
        };
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .find(|fields| {
                fields.first() == Some(&name.as_str()) && fields.get(svname) == Some(&"FRONTEND")
            })
            .and_then(|fields| fields.get(stot)?.parse().ok())
            .unwrap_or_else(|| panic!("no frontend {name} in:\n{stats}"))
    }

    /// What HAProxy printed, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.out")).unwrap_or_default()
    }

    /// The configuration: TCP mode, one frontend and backend per forward, connections to the
    /// hub from [`BALANCER_IP`] with the header asked for.
    fn config(&self) -> String {
        let mut config = format!(
            "global\n    nbthread 1\n    stats socket {}/admin.sock mode 600 level admin\n\n\
             defaults\n    mode tcp\n    timeout connect 10s\n    timeout client 120s\n    timeout server 120s\n",
            self.dir.path().display()
        );
        for (index, forward) in self.forwards.iter().enumerate() {
            let (first, last) = (forward.ports.start(), forward.ports.end());
            let bind = if first == last {
                format!("{FRONT_IP}:{first}")
            } else {
                format!("{FRONT_IP}:{first}-{last}")
            };
            config.push_str(&format!(
                "\nfrontend front{index}\n    bind {bind}\n    default_backend back{index}\n\n\
                 backend back{index}\n    balance roundrobin\n"
            ));
            for (number, (ip, port)) in forward.servers.iter().enumerate() {
                let server = match port {
                    Some(port) => format!("{ip}:{port}"),
                    None => ip.to_string(),
                };
                config.push_str(&format!(
                    "    server hub{number} {server} {} source {BALANCER_IP}\n",
                    forward.send.keyword()
                ));
            }
        }
        config
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Whether HAProxy answers `show info` on its stats socket.
async fn answers(socket: &std::path::Path) -> bool {
    stats_command(socket, "show info")
        .await
        .is_some_and(|reply| reply.contains("Name: HAProxy"))
}

/// HAProxy's answer to one command on its stats socket, within 5 s.
async fn stats_command(socket: &std::path::Path, command: &str) -> Option<String> {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        std::io::Result::Ok(reply)
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(reply)) => Some(String::from_utf8_lossy(&reply).into_owned()),
        _ => None,
    }
}

/// A port on `ip` that is free right now (the kernel's pick).
fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A hand-made load balancer: listens on 127.0.0.1 (a name the test certificates carry), and
/// for each client connects to the target from [`BALANCER_IP`], sends the header it was
/// given, then relays both ways. Stops (with every relayed connection) on drop.
pub struct HeaderRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HeaderRelay {
    /// A relay to `target` that opens every connection with `header`.
    pub async fn start(target: SocketAddr, header: Vec<u8>) -> HeaderRelay {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let task = tokio::spawn(async move {
            let mut relays = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let header = header.clone();
                relays.spawn(async move {
                    let mut hub = connect_from(BALANCER_IP, target).await;
                    if hub.write_all(&header).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut hub).await;
                    }
                });
            }
        });
        HeaderRelay { addr, task }
    }
}

impl Drop for HeaderRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP connection to `target` from `source` (a loopback address: any of 127.0.0.0/8).
pub async fn connect_from(source: IpAddr, target: SocketAddr) -> TcpStream {
    let socket = match source {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source");
    socket.connect(target).await.expect("connect")
}

/// A PROXY protocol v1 header (text) for a TCP connection from `source` to `destination`.
pub fn proxy_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A PROXY protocol v2 header (binary, command PROXY, TCP) for a connection from `source`
/// to `destination` (both of one family).
pub fn proxy_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            header.extend_from_slice(&[0x11, 0, 12]);
            header.extend_from_slice(&from.octets());
            header.extend_from_slice(&to.octets());
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            header.extend_from_slice(&[0x21, 0, 36]);
            header.extend_from_slice(&from.octets());
            header.extend_from_slice(&to.octets());
        }
        _ => panic!("source and destination must be of one family"),
    }
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header
}
