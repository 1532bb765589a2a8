//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2) on the receiving
//! side: which peers must send a header ([`ProxyProtocol`], from a listener's
//! `proxy_protocol_from` networks, [`Networks`]), and reading exactly one header off a
//! connection ([`read_header`]) to learn the client address a load balancer relays.
//!
//! It reads no byte past the header: the protocol that follows (SSH, FTP, TLS) gets the
//! stream untouched. Every length is checked before it is read (v1 at most 107 bytes, v2 at
//! most [`V2_MAX_BYTES`]), the whole header must arrive within a deadline, and parsing is
//! `ppp`'s on bytes already framed here. It decides nothing about the client: limits, bans
//! and logins see the address it returns.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a load balancer has to send its whole header after the TCP accept.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(5);

/// The longest version 1 header, `CRLF` included, as the specification bounds it.
pub const V1_MAX_BYTES: usize = 107;

/// The longest version 2 header we take: the 16 fixed bytes and at most 496 bytes of
/// addresses and TLVs (an IPv6 header without TLVs has 52 bytes in all).
pub const V2_MAX_BYTES: usize = 512;

/// The version 2 signature, the first 12 bytes of every binary header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The version 2 fixed part: signature, version and command, family and protocol, length.
const V2_FIXED_BYTES: usize = 16;

/// The version 1 prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// The shortest header of either version (`PROXY UNKNOWN\r\n`); this many bytes are read
/// before the version is decided, never more than any header holds.
const MIN_HEADER_BYTES: usize = 15;

/// A list of networks in CIDR form (a bare address is a network of one), as the
/// configuration writes it: a list of strings, each checked when the file is read.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// The networks given, each truncated to its prefix (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Networks {
        Networks(networks.into_iter().map(|net| net.trunc()).collect())
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` lies in one of the networks; an IPv4-mapped IPv6 address counts as
    /// its IPv4 address.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The networks.
    pub fn as_slice(&self) -> &[IpNet] {
        &self.0
    }
}

/// A network that is neither CIDR nor a bare address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network: use CIDR like 10.0.0.0/8 or a single address")]
pub struct NetworkError(String);

impl std::str::FromStr for Networks {
    type Err = NetworkError;

    /// Parses a comma-separated list (`10.0.0.0/8, 192.0.2.7`).
    fn from_str(text: &str) -> Result<Networks, NetworkError> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_network)
            .collect::<Result<Vec<_>, _>>()
            .map(Networks::new)
    }
}

impl TryFrom<Vec<String>> for Networks {
    type Error = NetworkError;

    fn try_from(list: Vec<String>) -> Result<Networks, NetworkError> {
        list.iter()
            .map(|text| parse_network(text.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Networks::new)
    }
}

impl From<Networks> for Vec<String> {
    fn from(networks: Networks) -> Vec<String> {
        networks.0.iter().map(ToString::to_string).collect()
    }
}

/// One network in CIDR form, or a bare address as a network of one.
fn parse_network(text: &str) -> Result<IpNet, NetworkError> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| NetworkError(text.chars().take(60).collect()))
}

/// Which peers of a listener are load balancers that must open with a PROXY header, and how
/// long they have. Off (no networks) by default: then no connection is ever read for a
/// header, so a client cannot claim another address.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    from: Networks,
    deadline: Duration,
}

impl Default for ProxyProtocol {
    fn default() -> Self {
        ProxyProtocol::new(Networks::default())
    }
}

impl ProxyProtocol {
    /// Headers expected from peers in `from` (none: off), within [`HEADER_DEADLINE`].
    pub fn new(from: Networks) -> ProxyProtocol {
        ProxyProtocol {
            from,
            deadline: HEADER_DEADLINE,
        }
    }

    /// The same with another deadline for the whole header.
    pub fn with_deadline(mut self, deadline: Duration) -> ProxyProtocol {
        self.deadline = deadline;
        self
    }

    /// Whether any peer must send a header.
    pub fn is_on(&self) -> bool {
        !self.from.is_empty()
    }

    /// Whether a connection from `peer` must open with a header.
    pub fn expects_header(&self, peer: IpAddr) -> bool {
        self.from.contains(peer)
    }

    /// Reads the header a load balancer at `balancer` opened `stream` with, within the
    /// deadline, and returns the client's address: the header's source, or `balancer` itself
    /// when the header speaks for the balancer (v1 `UNKNOWN`, v2 `LOCAL`, as health checks
    /// send). Nothing after the header is read.
    pub async fn client_address<R: AsyncRead + Unpin>(
        &self,
        stream: &mut R,
        balancer: SocketAddr,
    ) -> Result<SocketAddr, ProxyHeaderError> {
        let header = tokio::time::timeout(self.deadline, read_header(stream))
            .await
            .map_err(|_| ProxyHeaderError::Timeout(self.deadline))??;
        Ok(match header {
            ProxyHeader::Relayed(client) => client,
            ProxyHeader::Local => balancer,
        })
    }
}

/// What a PROXY header says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The balancer relays a client connected from this address.
    Relayed(SocketAddr),
    /// The connection is the balancer's own (v1 `UNKNOWN`; v2 `LOCAL`, or `PROXY` with an
    /// unspecified or Unix address family): the receiver keeps the TCP peer.
    Local,
}

/// Why a connection from a load balancer did not carry a usable header.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The whole header did not arrive within the deadline.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The connection closed before the header was complete (`0`: before any byte, as a
    /// plain TCP health check does).
    #[error("connection closed after {0} bytes, before a complete PROXY header")]
    Closed(usize),
    /// The first bytes are neither `PROXY ` nor the version 2 signature.
    #[error("not a PROXY header")]
    NotAHeader,
    /// Longer than the protocol (v1) or our cap (v2) allows.
    #[error("PROXY header longer than {0} bytes")]
    TooLong(usize),
    /// Framed like a header but not a valid one.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// Reading the socket failed.
    #[error("reading the PROXY header failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads exactly one PROXY header (v1 or v2) from the start of `stream`, and not a byte
/// more. No deadline here: the caller bounds the wait ([`ProxyProtocol::client_address`]).
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<ProxyHeader, ProxyHeaderError> {
    let mut header = Vec::with_capacity(64);
    // The first bytes decide the version; a stranger is refused at its first wrong byte.
    while header.len() < MIN_HEADER_BYTES {
        read_more(stream, &mut header, MIN_HEADER_BYTES).await?;
        let v1 = header.len().min(V1_PREFIX.len());
        let v2 = header.len().min(V2_SIGNATURE.len());
        if header[..v1] != V1_PREFIX[..v1] && header[..v2] != V2_SIGNATURE[..v2] {
            return Err(ProxyHeaderError::NotAHeader);
        }
    }
    if header.starts_with(V1_PREFIX) {
        read_v1(stream, &mut header).await?;
        parse_v1(&header)
    } else {
        read_v2(stream, &mut header).await?;
        parse_v2(&header)
    }
}

/// Reads the rest of a v1 line up to its `CRLF`: two bytes at a time while the line cannot
/// end sooner, one after a `CR`, so nothing past the `LF` is taken.
async fn read_v1<R: AsyncRead + Unpin>(
    stream: &mut R,
    header: &mut Vec<u8>,
) -> Result<(), ProxyHeaderError> {
    loop {
        if let Some(at) = header.iter().position(|&byte| byte == b'\n') {
            // Invariant: the prefix check left `PROXY ` in front, so `at` >= 6.
            if at + 1 != header.len() || header.get(at.wrapping_sub(1)) != Some(&b'\r') {
                return Err(ProxyHeaderError::Malformed(
                    "a version 1 line must end in CRLF".to_owned(),
                ));
            }
            return Ok(());
        }
        if header.len() >= V1_MAX_BYTES {
            return Err(ProxyHeaderError::TooLong(V1_MAX_BYTES));
        }
        let want = if header.last() == Some(&b'\r') { 1 } else { 2 };
        let upto = (header.len() + want).min(V1_MAX_BYTES);
        read_more(stream, header, upto).await?;
    }
}

/// Reads the rest of a v2 header: the fixed part, then the length it announces, after
/// checking that length against [`V2_MAX_BYTES`].
async fn read_v2<R: AsyncRead + Unpin>(
    stream: &mut R,
    header: &mut Vec<u8>,
) -> Result<(), ProxyHeaderError> {
    while header.len() < V2_FIXED_BYTES {
        read_more(stream, header, V2_FIXED_BYTES).await?;
    }
    // Invariant: the loop above read the 16 fixed bytes; bytes 14 and 15 are the length.
    let announced = usize::from(u16::from_be_bytes([header[14], header[15]]));
    let total = V2_FIXED_BYTES + announced;
    if total > V2_MAX_BYTES {
        return Err(ProxyHeaderError::TooLong(V2_MAX_BYTES));
    }
    while header.len() < total {
        read_more(stream, header, total).await?;
    }
    Ok(())
}

/// Reads more bytes onto `header`, at least one and never past `upto` bytes in all (callers
/// pass an `upto` beyond the current length and within [`V2_MAX_BYTES`]); a closed stream is
/// [`ProxyHeaderError::Closed`].
async fn read_more<R: AsyncRead + Unpin>(
    stream: &mut R,
    header: &mut Vec<u8>,
    upto: usize,
) -> Result<(), ProxyHeaderError> {
    let mut chunk = [0u8; V2_MAX_BYTES];
    let want = upto.saturating_sub(header.len()).clamp(1, chunk.len());
    let read = stream.read(&mut chunk[..want]).await?;
    if read == 0 {
        return Err(ProxyHeaderError::Closed(header.len()));
    }
    header.extend_from_slice(&chunk[..read]);
    Ok(())
}

/// A complete v1 line (`PROXY TCP4|TCP6|UNKNOWN …\r\n`), as `ppp` reads it.
fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let header = ppp::v1::Header::try_from(line)
        .map_err(|err| ProxyHeaderError::Malformed(err.to_string()))?;
    // `ppp` stops at the first CR; a CR inside the line would leave bytes unparsed.
    if header.header.len() != line.len() {
        return Err(ProxyHeaderError::Malformed(
            "a carriage return inside the line".to_owned(),
        ));
    }
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(ip) => ProxyHeader::Relayed(SocketAddr::new(
            IpAddr::V4(ip.source_address),
            ip.source_port,
        )),
        ppp::v1::Addresses::Tcp6(ip) => ProxyHeader::Relayed(SocketAddr::new(
            IpAddr::V6(ip.source_address).to_canonical(),
            ip.source_port,
        )),
        ppp::v1::Addresses::Unknown => ProxyHeader::Local,
    })
}

/// A complete v2 header (fixed part and the length it announces), as `ppp` reads it.
fn parse_v2(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let header = ppp::v2::Header::try_from(bytes)
        .map_err(|err| ProxyHeaderError::Malformed(err.to_string()))?;
    if header.command == ppp::v2::Command::Local {
        return Ok(ProxyHeader::Local);
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(ip) => ProxyHeader::Relayed(SocketAddr::new(
            IpAddr::V4(ip.source_address),
            ip.source_port,
        )),
        ppp::v2::Addresses::IPv6(ip) => ProxyHeader::Relayed(SocketAddr::new(
            IpAddr::V6(ip.source_address).to_canonical(),
            ip.source_port,
        )),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => ProxyHeader::Local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A v2 header for TCP over IPv4 from `source` (to 192.0.2.1:22), with `tlv` appended.
    fn v2_ipv4(command: u8, source: SocketAddr, tlv: &[u8]) -> Vec<u8> {
        let SocketAddr::V4(source) = source else {
            panic!("IPv4 only")
        };
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x20 | command);
        header.push(0x11);
        header.extend_from_slice(&u16::try_from(12 + tlv.len()).unwrap().to_be_bytes());
        header.extend_from_slice(&source.ip().octets());
        header.extend_from_slice(&[192, 0, 2, 1]);
        header.extend_from_slice(&source.port().to_be_bytes());
        header.extend_from_slice(&22u16.to_be_bytes());
        header.extend_from_slice(tlv);
        header
    }

    /// Reads a header from `input` followed by `after`, then checks that `after` is still
    /// there, untouched, for the protocol that follows.
    async fn check(input: &[u8], expect: Result<ProxyHeader, &str>) {
        let after = b"SSH-2.0-client\r\n";
        let stream = [input, after.as_slice()].concat();
        let mut reader = stream.as_slice();
        let got = read_header(&mut reader).await;
        match (got, expect) {
            (Ok(got), Ok(expect)) => {
                assert_eq!(got, expect, "{input:?}");
                assert_eq!(reader, after, "bytes after the header were consumed");
            }
            (Err(got), Err(expect)) => {
                assert!(got.to_string().contains(expect), "{input:?}: {got}");
            }
            (got, expect) => panic!("{input:?}: got {got:?}, expected {expect:?}"),
        }
    }

    #[tokio::test]
    async fn version_1_headers() {
        let relayed = |text: &str| Ok(ProxyHeader::Relayed(addr(text)));
        check(
            b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 22\r\n",
            relayed("203.0.113.7:4242"),
        )
        .await;
        check(
            b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 443\r\n",
            relayed("[2001:db8::7]:4242"),
        )
        .await;
        // An IPv4-mapped source is its IPv4 address.
        check(
            b"PROXY TCP6 ::ffff:203.0.113.7 ::1 4242 443\r\n",
            relayed("203.0.113.7:4242"),
        )
        .await;
        check(b"PROXY UNKNOWN\r\n", Ok(ProxyHeader::Local)).await;
        check(
            b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
            Ok(ProxyHeader::Local),
        )
        .await;
        check(b"PROXY TCP4 203.0.113.7\r\n", Err("malformed")).await;
        check(b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 22\n", Err("CRLF")).await;
        check(
            b"PROXY TCP4 203.0.113.7\r192.0.2.1 4242 22\r\n",
            Err("malformed"),
        )
        .await;
        check(
            b"PROXY TCP4 203.0.113.999 192.0.2.1 4242 22\r\n",
            Err("malformed"),
        )
        .await;
        check(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", Err("malformed")).await;
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        check(long.as_bytes(), Err("longer than 107")).await;
        check(b"SSH-2.0-OpenSSH_9.2\r\n", Err("not a PROXY header")).await;
        check(
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            Err("not a PROXY header"),
        )
        .await;
        check(b"GET / HTTP/1.1\r\n", Err("not a PROXY header")).await;
    }

    #[tokio::test]
    async fn version_2_headers() {
        let client = addr("203.0.113.7:4242");
        check(&v2_ipv4(1, client, &[]), Ok(ProxyHeader::Relayed(client))).await;
        // TLVs (here a NOOP of 3 bytes) are read past and ignored.
        check(
            &v2_ipv4(1, client, &[0x04, 0, 3, 1, 2, 3]),
            Ok(ProxyHeader::Relayed(client)),
        )
        .await;
        check(&v2_ipv4(0, client, &[]), Ok(ProxyHeader::Local)).await;
        // IPv6.
        let mut v6 = V2_SIGNATURE.to_vec();
        v6.extend_from_slice(&[0x21, 0x21, 0, 36]);
        v6.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[0x10, 0x92, 0, 22]);
        check(&v6, Ok(ProxyHeader::Relayed(addr("[2001:db8::7]:4242")))).await;
        // An unspecified family: the balancer's own connection.
        let mut unspecified = V2_SIGNATURE.to_vec();
        unspecified.extend_from_slice(&[0x21, 0x00, 0, 0]);
        check(&unspecified, Ok(ProxyHeader::Local)).await;
        // Length over the cap, refused before reading it.
        let mut long = V2_SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0x02, 0x00]);
        check(&long, Err("longer than 512")).await;
        // Version 1 in the binary form, an unknown command, an address too short for its family.
        let mut wrong = v2_ipv4(1, client, &[]);
        wrong[12] = 0x11;
        check(&wrong, Err("malformed")).await;
        let mut wrong = v2_ipv4(1, client, &[]);
        wrong[12] = 0x25;
        check(&wrong, Err("malformed")).await;
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        check(&short, Err("malformed")).await;
        // A broken signature.
        let mut broken = v2_ipv4(1, client, &[]);
        broken[8] = b'X';
        check(&broken, Err("not a PROXY header")).await;
    }

    #[tokio::test]
    async fn a_truncated_header_is_refused_when_the_stream_ends() {
        let full = v2_ipv4(1, addr("203.0.113.7:4242"), &[]);
        for cut in [0, 1, 5, 15, 16, 20, full.len() - 1] {
            let mut reader = &full[..cut];
            let err = read_header(&mut reader).await.unwrap_err();
            assert!(
                matches!(err, ProxyHeaderError::Closed(n) if n == cut),
                "{cut}: {err}"
            );
        }
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 22\r";
        let mut reader = &line[..];
        let err = read_header(&mut reader).await.unwrap_err();
        assert!(matches!(err, ProxyHeaderError::Closed(_)), "{err}");
    }

    #[tokio::test]
    async fn a_slow_header_runs_into_the_deadline() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PROXY TCP4 203.0.113.7 ").await.unwrap();
        let proxy =
            ProxyProtocol::new(Networks::default()).with_deadline(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = proxy
            .client_address(&mut server, addr("127.0.0.1:1"))
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyHeaderError::Timeout(_)), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(client);
    }

    #[tokio::test]
    async fn a_header_sent_a_byte_at_a_time_is_read_whole() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let header = b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 22\r\nhello".to_vec();
        let writer = tokio::spawn(async move {
            for byte in header {
                client.write_all(&[byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let proxy = ProxyProtocol::new(Networks::default());
        let balancer = addr("127.0.0.3:5000");
        let client_address = proxy.client_address(&mut server, balancer).await.unwrap();
        assert_eq!(client_address, addr("203.0.113.7:4242"));
        let _client = writer.await.unwrap();
        let mut rest = [0u8; 5];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        // A header that speaks for the balancer keeps the balancer's address.
        let mut local = &b"PROXY UNKNOWN\r\n"[..];
        assert_eq!(
            proxy.client_address(&mut local, balancer).await.unwrap(),
            balancer
        );
    }

    #[test]
    fn networks_parse_and_match() {
        let networks: Networks =
            serde_json::from_str(r#"["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]"#).unwrap();
        let proxy = ProxyProtocol::new(networks.clone());
        assert!(proxy.is_on());
        for (ip, expect) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("::ffff:10.9.9.9", true),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
        ] {
            assert_eq!(proxy.expects_header(ip.parse().unwrap()), expect, "{ip}");
        }
        assert_eq!(
            serde_json::to_string(&networks).unwrap(),
            r#"["10.0.0.0/8","192.0.2.7/32","2001:db8::/32"]"#
        );
        assert_eq!(
            "10.1.2.3/8, 127.0.0.1"
                .parse::<Networks>()
                .unwrap()
                .as_slice(),
            &[
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "127.0.0.1/32".parse().unwrap()
            ]
        );
        for bad in [
            r#"["10.0.0.0/33"]"#,
            r#"["example.com"]"#,
            r#"[""]"#,
            r#""10.0.0.0/8""#,
        ] {
            assert!(serde_json::from_str::<Networks>(bad).is_err(), "{bad}");
        }
        let off = ProxyProtocol::default();
        assert!(!off.is_on());
        assert!(!off.expects_header("127.0.0.1".parse().unwrap()));
    }
}
