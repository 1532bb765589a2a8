//! Data connections (RFC 959 §3.2, RFC 2428, RFC 4217 §9–10) and the byte streams over
//! them.
//!
//! A data connection is where FTP is easiest to attack, so every one is checked before a
//! byte of a file crosses it: it must come from (passive) or go to (active) the control
//! connection's address; with TLS it must complete its handshake within the data timeout and,
//! by default, resume the control connection's TLS session, which only the client that holds
//! that session's keys can do (data-connection stealing). Behind a load balancer
//! (`proxy_protocol_from`), a passive connection from it must carry a PROXY header naming the
//! control connection's client. A failed check or handshake is an
//! error value that becomes a 425 reply; nothing here panics on what a peer sends.
//!
//! Transfers stream in large chunks on the blob store's I/O path (the Hub's `write_at` and
//! `read_at`): 1 MiB into an upload, 256 KiB per write out. An upload counts as complete only
//! at a clean end of the stream (for TLS: the client's `close_notify`), so a killed client
//! never delivers a truncated file.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use rustls::HandshakeKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use mailroom_core::{self as core, CoreError};
use mailroom_net::ProxyProtocol;

use crate::control::Stream;

/// Bytes read from the data connection before they are handed to the blob writer.
const UPLOAD_CHUNK: usize = 1024 * 1024;
/// Bytes read from a blob per write to the data connection.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

/// How the next data connection is made, set by PASV/EPSV or PORT/EPRT.
pub(crate) enum Plan {
    /// The client connects to this listener.
    Passive(TcpListener),
    /// The server connects to this address (already checked against the control peer).
    Active(SocketAddr),
}

/// Binds a passive listener on `ip` at a port of `ports`, starting from a random one so that
/// the next port is not predictable.
pub(crate) async fn bind_passive(
    ip: IpAddr,
    ports: RangeInclusive<u16>,
) -> io::Result<TcpListener> {
    let first = u32::from(*ports.start());
    let count = u32::from(*ports.end()) - first + 1;
    let start = rand::random_range(0..count);
    for step in 0..count {
        let port = u16::try_from(first + (start + step) % count).unwrap_or(0);
        match TcpListener::bind((ip, port)).await {
            Ok(listener) => return Ok(listener),
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => continue,
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "every passive port is in use",
    ))
}

/// Why a data connection could not be used; becomes a 425 reply.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

/// Makes the TCP part of the data connection: accepts the client's connection (passive) or
/// connects to it (active), within `timeout`. A passive connection from any address other
/// than `peer` is refused: it is someone else racing the client to the port. A passive
/// connection from a load balancer `proxy` names must open with a PROXY header, and the
/// address checked is the one the header names.
pub(crate) async fn open(
    plan: Plan,
    peer: IpAddr,
    proxy: &ProxyProtocol,
    timeout: Duration,
) -> Result<TcpStream, Refused> {
    let connect = async {
        match plan {
            Plan::Passive(listener) => {
                let (mut socket, from) = listener
                    .accept()
                    .await
                    .map_err(|err| Refused(format!("data connection failed: {err}")))?;
                let client = if proxy.expects_header(from.ip()) {
                    proxy
                        .client_address(&mut socket, from)
                        .await
                        .map_err(|err| {
                            tracing::warn!(balancer = %from, error = %err, "data connection from a load balancer refused");
                            Refused(
                                "data connection refused: no valid PROXY header from the load balancer"
                                    .to_owned(),
                            )
                        })?
                } else {
                    from
                };
                if client.ip().to_canonical() != peer.to_canonical() {
                    tracing::warn!(from = %client, "data connection from another address refused");
                    return Err(Refused(
                        "data connection refused: it did not come from the control connection's address"
                            .to_owned(),
                    ));
                }
                Ok(socket)
            }
            Plan::Active(address) => TcpStream::connect(address)
                .await
                .map_err(|err| Refused(format!("cannot connect to {address}: {err}"))),
        }
    };
    let socket = tokio::time::timeout(timeout, connect)
        .await
        .unwrap_or_else(|_| {
            Err(Refused(format!(
                "no data connection within {} s",
                timeout.as_secs()
            )))
        })?;
    // TLS records (16 KiB) are smaller than a loopback segment: with Nagle each one would
    // wait for the previous one's acknowledgement.
    if let Err(err) = socket.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY on a data connection");
    }
    Ok(socket)
}

/// Secures an open data connection: with `tls`, a TLS handshake within `timeout` that must
/// resume a session of the control connection when `require_resumption` is set.
pub(crate) async fn secure(
    socket: TcpStream,
    tls: Option<&TlsAcceptor>,
    require_resumption: bool,
    timeout: Duration,
) -> Result<Stream, Refused> {
    let Some(acceptor) = tls else {
        return Ok(Either::Left(socket));
    };
    let stream = match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::info!(error = %err, "data connection TLS handshake failed");
            return Err(Refused(format!(
                "TLS handshake on the data connection failed: {err}"
            )));
        }
        Err(_) => {
            return Err(Refused(format!(
                "no TLS handshake on the data connection within {} s",
                timeout.as_secs()
            )));
        }
    };
    if require_resumption && stream.get_ref().1.handshake_kind() != Some(HandshakeKind::Resumed) {
        tracing::warn!("data connection did not resume the control connection's TLS session");
        return Err(Refused(
            "data connection refused: it must resume the control connection's TLS session (TLS session reuse)"
                .to_owned(),
        ));
    }
    Ok(Either::Right(stream))
}

/// Why an upload stopped before a clean end.
pub(crate) enum Failure {
    /// The data connection failed (reset, or TLS closed without `close_notify`).
    Read(io::Error),
    /// The Hub refused a write (over the byte limit) or storage failed.
    Write(CoreError),
}

/// Copies the data connection into the upload in chunks of up to [`UPLOAD_CHUNK`], until a
/// clean end of the stream; the bytes received.
pub(crate) async fn copy_in<R: AsyncRead + Unpin>(
    input: &mut R,
    upload: &mut core::Upload,
) -> Result<u64, Failure> {
    let mut offset = 0u64;
    // One buffer for the whole transfer: the writer copies each chunk into its run.
    let mut chunk = Vec::with_capacity(UPLOAD_CHUNK);
    loop {
        chunk.clear();
        while chunk.len() < UPLOAD_CHUNK {
            let read = (&mut *input)
                .take((UPLOAD_CHUNK - chunk.len()) as u64)
                .read_buf(&mut chunk)
                .await
                .map_err(Failure::Read)?;
            if read == 0 {
                break;
            }
        }
        if chunk.is_empty() {
            return Ok(offset);
        }
        let len = chunk.len() as u64;
        upload
            .write_at(offset, &chunk)
            .await
            .map_err(Failure::Write)?;
        offset += len;
    }
}

/// What stopped a download.
pub(crate) enum SendFailure {
    /// Reading the stored file failed.
    Read(CoreError),
    /// The data connection failed.
    Write(io::Error),
}

/// Copies a download to the data connection from `start` in chunks of [`DOWNLOAD_CHUNK`],
/// then ends the stream cleanly (TLS `close_notify`); the bytes sent. The next chunk is read
/// while the current one is written, so the disk and the connection work at the same time.
pub(crate) async fn copy_out<W: AsyncWrite + Unpin>(
    read: &core::ReadHandle,
    start: u64,
    output: &mut W,
) -> Result<u64, SendFailure> {
    let mut offset = start;
    let mut data = read
        .read_at(offset, DOWNLOAD_CHUNK)
        .await
        .map_err(SendFailure::Read)?;
    while !data.is_empty() {
        let next = offset + data.len() as u64;
        let (written, following) =
            tokio::join!(output.write_all(&data), read.read_at(next, DOWNLOAD_CHUNK));
        written.map_err(SendFailure::Write)?;
        data = following.map_err(SendFailure::Read)?;
        offset = next;
    }
    output.shutdown().await.map_err(SendFailure::Write)?;
    Ok(offset - start)
}

/// Sends a listing and ends the stream cleanly.
pub(crate) async fn send_text<W: AsyncWrite + Unpin>(output: &mut W, text: &str) -> io::Result<()> {
    output.write_all(text.as_bytes()).await?;
    output.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passive_ports_stay_in_range_and_skip_busy_ones() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let listener =
            bind_passive("127.0.0.1".parse().unwrap(), port..=port.saturating_add(1)).await;
        // Either the one free neighbour or, if that is taken too, an AddrInUse error.
        match listener {
            Ok(listener) => assert_eq!(listener.local_addr().unwrap().port(), port + 1),
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::AddrInUse),
        }
        let all_busy = bind_passive("127.0.0.1".parse().unwrap(), port..=port).await;
        assert_eq!(all_busy.unwrap_err().kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn a_passive_connection_from_another_address_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await });
        let refused = open(
            Plan::Passive(listener),
            "192.0.2.1".parse().unwrap(),
            &ProxyProtocol::default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(
            refused.0.contains("control connection's address"),
            "{refused:?}"
        );
        drop(client.await);
    }

    #[tokio::test]
    async fn a_missing_data_connection_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = open(
            Plan::Passive(listener),
            "127.0.0.1".parse().unwrap(),
            &ProxyProtocol::default(),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(refused.0.contains("no data connection"), "{refused:?}");
    }

    /// Opens a passive data connection for the control client `control` while a peer at
    /// `source` connects and sends `first`; what the server reads after the check, or why it
    /// refused.
    async fn through(
        proxy: &ProxyProtocol,
        control: &str,
        source: &str,
        first: &str,
    ) -> Result<Vec<u8>, String> {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let first = first.as_bytes().to_vec();
        let source: IpAddr = source.parse().unwrap();
        let client = tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(source, 0)).unwrap();
            let mut stream = socket.connect(addr).await.unwrap();
            // The server may have refused and closed already: a failed write is its answer.
            let _ = stream
                .write_all(&[first.as_slice(), b"DATA"].concat())
                .await;
            stream
        });
        let opened = open(
            Plan::Passive(listener),
            control.parse().unwrap(),
            proxy,
            Duration::from_secs(10),
        )
        .await;
        let _client = client.await.unwrap();
        let mut socket = opened.map_err(|refused| refused.0)?;
        let mut data = [0u8; 4];
        socket.read_exact(&mut data).await.unwrap();
        Ok(data.to_vec())
    }

    #[tokio::test]
    async fn a_passive_connection_through_the_balancer_must_name_the_control_client() {
        let proxy = ProxyProtocol::new("127.0.0.3".parse().unwrap());
        let client = "203.0.113.7";
        let header = "PROXY TCP4 203.0.113.7 127.0.0.1 4242 50000\r\n";
        assert_eq!(
            through(&proxy, client, "127.0.0.3", header).await.unwrap(),
            b"DATA",
            "the header is read, and not a byte more"
        );
        let cases = [
            // Another client of the same balancer.
            (
                "PROXY TCP4 203.0.113.8 127.0.0.1 4242 50000\r\n",
                "control connection's address",
            ),
            // The balancer's own connection is not the client's.
            ("PROXY UNKNOWN\r\n", "control connection's address"),
            // No header at all.
            ("DATA", "no valid PROXY header"),
        ];
        for (first, expect) in cases {
            let refused = through(&proxy, client, "127.0.0.3", first)
                .await
                .unwrap_err();
            assert!(refused.contains(expect), "{first:?}: {refused}");
        }
        // From outside the balancer's networks nothing is read for a header: the TCP peer is
        // what the check sees, and a header claiming the client does not help.
        let refused = through(&proxy, client, "127.0.0.1", header)
            .await
            .unwrap_err();
        assert!(
            refused.contains("control connection's address"),
            "{refused}"
        );
        let direct = through(&proxy, "127.0.0.1", "127.0.0.1", "").await.unwrap();
        assert_eq!(direct, b"DATA");
    }
}
