//! What a connection may do before it logs in (RFC 4253 §4.2 and §6): an absolute login
//! deadline and a check of the client's cleartext framing, as a stream adapter between the
//! socket and russh; plus the shared place of the connection's [`StartupPermit`] and the
//! bounded recording of pre-authentication refusals as login events.
//!
//! It does not parse SSH messages beyond the type byte, and it stops looking at the bytes at
//! the client's NEWKEYS: after that they are encrypted and russh checks them.
//!
//! What russh 0.65 already enforces (read in `ssh_read.rs`, `cipher/mod.rs`,
//! `server/session.rs`), and why this adapter exists anyway:
//! - The client's version line is read into a 256-byte buffer: a line longer than 255 bytes,
//!   one that does not start `SSH-2.0-` or `SSH-1.99-`, or any line before it, is
//!   `Error::Version` and closes the connection. Nothing unbounded is buffered.
//! - A `packet_length` above 256 KiB + 33 is refused before anything is allocated
//!   (`Error::PacketSize`); a padding length beyond the packet is `IndexOutOfBounds`.
//!   Padding under 4 bytes is accepted, and so is a packet with an empty payload, which is
//!   skipped silently.
//! - A packet that is all padding (`padding_length == packet_length`) is taken for the end of
//!   the stream: russh half-closes and then waits for the client's EOF for up to
//!   `inactivity_timeout` (our idle timeout, 600 s), holding the connection open.
//! - Messages from a session `Handle` (our old login-grace watchdog's disconnect) are not
//!   handled while a key exchange runs, so a client that stalls in the first key exchange
//!   was never cut; and after a disconnect russh waits for the client's EOF as above. The
//!   login grace time was therefore not absolute.
//!
//! So, before the login, this adapter fails every read and write once the deadline passes
//! (russh then drops the socket), and it refuses at once the framing russh lets through:
//! cleartext packets over [`MAX_CLEARTEXT_PACKET`] (RFC 4253 §6.1's 35000 bytes; the client
//! sends only KEXINIT, its key-exchange message and NEWKEYS in the clear, all far smaller),
//! padding under 4 bytes, and packets without a payload. A version line not starting
//! `SSH-2.0-` (1.99 is a server's answer, never a client's) is refused as well.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use mailroom_net::StartupPermit;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest cleartext packet (`packet_length` field) a client may send before NEWKEYS.
pub(crate) const MAX_CLEARTEXT_PACKET: u32 = 35_000;

/// Longest client version line, CR LF included (RFC 4253 §4.2).
const MAX_VERSION_LINE: usize = 255;

/// The only version prefix a client may send.
const CLIENT_VERSION_PREFIX: &[u8] = b"SSH-2.0-";

/// SSH_MSG_NEWKEYS: after the client's, its bytes are encrypted.
const MSG_NEWKEYS: u8 = 21;

/// Why a connection was cut before it logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// The login grace time passed without a login.
    GraceExpired,
    /// The version line does not start `SSH-2.0-`.
    NotSsh2,
    /// The version line is longer than 255 bytes.
    VersionTooLong,
    /// A cleartext packet's length is over [`MAX_CLEARTEXT_PACKET`].
    PacketTooLong(u32),
    /// Padding shorter than 4 bytes.
    PaddingTooShort(u8),
    /// The padding leaves no room for a payload (or exceeds the packet).
    NoPayload {
        /// The `packet_length` field.
        packet_length: u32,
        /// The `padding_length` field.
        padding_length: u8,
    },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::GraceExpired => f.write_str("login grace time exceeded"),
            Violation::NotSsh2 => f.write_str("protocol error: version line is not SSH-2.0"),
            Violation::VersionTooLong => {
                f.write_str("protocol error: version line longer than 255 bytes")
            }
            Violation::PacketTooLong(length) => write!(
                f,
                "protocol error: cleartext packet of {length} bytes (limit {MAX_CLEARTEXT_PACKET})"
            ),
            Violation::PaddingTooShort(padding) => {
                write!(f, "protocol error: padding of {padding} bytes (minimum 4)")
            }
            Violation::NoPayload {
                packet_length,
                padding_length,
            } => write!(
                f,
                "protocol error: padding of {padding_length} bytes leaves no payload in a packet of {packet_length}"
            ),
        }
    }
}

/// The client's side of the stream, as far as this adapter follows it.
#[derive(Debug)]
enum Framing {
    /// Reading the version line; `seen` bytes of it so far.
    Version { seen: usize },
    /// Reading a packet's first 6 bytes: length, padding length, message type.
    Header { bytes: [u8; 6], have: usize },
    /// Skipping the rest of a packet.
    Body { remaining: u32, newkeys: bool },
    /// After the client's NEWKEYS: encrypted, not inspected.
    Done,
}

impl Framing {
    /// Follows `data`, the next bytes from the client; the first violation ends it.
    fn inspect(&mut self, mut data: &[u8]) -> Result<(), Violation> {
        while let Some((&byte, rest)) = data.split_first() {
            match self {
                Framing::Done => return Ok(()),
                Framing::Version { seen } => {
                    if let Some(&expected) = CLIENT_VERSION_PREFIX.get(*seen)
                        && byte != expected
                    {
                        return Err(Violation::NotSsh2);
                    }
                    *seen += 1;
                    if *seen > MAX_VERSION_LINE {
                        return Err(Violation::VersionTooLong);
                    }
                    if byte == b'\n' {
                        *self = Framing::Header {
                            bytes: [0; 6],
                            have: 0,
                        };
                    }
                    data = rest;
                }
                Framing::Header { bytes, have } => {
                    let take = (bytes.len() - *have).min(data.len());
                    let (head, rest) = data.split_at(take);
                    bytes[*have..*have + take].copy_from_slice(head);
                    *have += take;
                    data = rest;
                    // russh reads the length field alone and acts on it: judge it as soon
                    // as it is complete, before russh does.
                    if let [l0, l1, l2, l3, ..] = *bytes
                        && *have >= 4
                    {
                        let packet_length = u32::from_be_bytes([l0, l1, l2, l3]);
                        if packet_length > MAX_CLEARTEXT_PACKET {
                            return Err(Violation::PacketTooLong(packet_length));
                        }
                    }
                    if *have == bytes.len() {
                        *self = Self::body(*bytes)?;
                    }
                }
                Framing::Body { remaining, newkeys } => {
                    let take = u32::try_from(data.len())
                        .unwrap_or(u32::MAX)
                        .min(*remaining);
                    *remaining -= take;
                    data = data.get(take as usize..).unwrap_or_default();
                    if *remaining == 0 {
                        *self = if *newkeys {
                            Framing::Done
                        } else {
                            Framing::Header {
                                bytes: [0; 6],
                                have: 0,
                            }
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a packet header (RFC 4253 §6: uint32 packet_length, byte padding_length,
    /// then the payload's first byte, its message type) and returns the state for its body.
    fn body(header: [u8; 6]) -> Result<Framing, Violation> {
        let [l0, l1, l2, l3, padding_length, message_type] = header;
        let packet_length = u32::from_be_bytes([l0, l1, l2, l3]);
        // The padding-length byte and at least one payload byte besides the padding.
        if u32::from(padding_length) + 2 > packet_length {
            return Err(Violation::NoPayload {
                packet_length,
                padding_length,
            });
        }
        if padding_length < 4 {
            return Err(Violation::PaddingTooShort(padding_length));
        }
        Ok(Framing::Body {
            // Invariant: packet_length >= padding_length + 2 >= 6, so this does not wrap.
            remaining: packet_length - 2,
            newkeys: message_type == MSG_NEWKEYS,
        })
    }
}

/// The socket as russh sees it before the login: reads and writes fail once the login
/// deadline has passed unauthenticated, and reads fail on the first framing violation. After
/// the login it only forwards.
pub(crate) struct PreauthStream<S> {
    inner: S,
    deadline: Pin<Box<tokio::time::Sleep>>,
    authenticated: Arc<AtomicBool>,
    framing: Framing,
    verdict: Arc<OnceLock<Violation>>,
}

impl<S> PreauthStream<S> {
    /// Wraps `inner`; the connection must set `authenticated` within `grace`. The returned
    /// cell holds the reason once the adapter has cut the connection.
    pub(crate) fn new(
        inner: S,
        grace: Duration,
        authenticated: Arc<AtomicBool>,
    ) -> (PreauthStream<S>, Arc<OnceLock<Violation>>) {
        let verdict = Arc::new(OnceLock::new());
        let stream = PreauthStream {
            inner,
            deadline: Box::pin(tokio::time::sleep(grace)),
            authenticated,
            framing: Framing::Version { seen: 0 },
            verdict: verdict.clone(),
        };
        (stream, verdict)
    }

    /// The error to return instead of doing I/O, if any: a verdict already given, or the
    /// deadline passed before the login. Polling the deadline registers the waker, so a
    /// session blocked on a read or a write wakes up when it passes.
    fn refusal(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        if let Some(verdict) = self.verdict.get() {
            return Some(io_error(*verdict));
        }
        if self.authenticated.load(Ordering::Acquire) {
            return None;
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Some(self.refuse(Violation::GraceExpired));
        }
        None
    }

    fn refuse(&self, violation: Violation) -> std::io::Error {
        let verdict = *self.verdict.get_or_init(|| violation);
        io_error(verdict)
    }
}

fn io_error(violation: Violation) -> std::io::Error {
    let kind = match violation {
        Violation::GraceExpired => std::io::ErrorKind::TimedOut,
        _ => std::io::ErrorKind::InvalidData,
    };
    std::io::Error::new(kind, violation.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for PreauthStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(err) = self.refusal(cx) {
            return Poll::Ready(Err(err));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && !matches!(this.framing, Framing::Done)
            && let Err(violation) = this.framing.inspect(&buf.filled()[before..])
        {
            // The offending bytes never reach russh.
            buf.set_filled(before);
            return Poll::Ready(Err(this.refuse(violation)));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreauthStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(err) = self.refusal(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(err) = self.refusal(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The connection's [`StartupPermit`], shared by the connection task and the SSH handler,
/// which gives it back on a successful login ([`StartupSlot::authenticated`]).
#[derive(Clone)]
pub(crate) struct StartupSlot(Arc<Mutex<Option<StartupPermit>>>);

impl StartupSlot {
    pub(crate) fn new(permit: StartupPermit) -> StartupSlot {
        StartupSlot(Arc::new(Mutex::new(Some(permit))))
    }

    /// The connection has logged in: it leaves the unauthenticated count now.
    pub(crate) fn authenticated(&self) {
        let permit = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(permit) = permit {
            permit.authenticated();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed cleartext packet with `payload` and 4..=11 bytes of padding.
    fn packet(payload: &[u8]) -> Vec<u8> {
        let mut padding = 8 - (5 + payload.len()) % 8;
        if padding < 4 {
            padding += 8;
        }
        let length = u32::try_from(1 + payload.len() + padding).unwrap();
        let mut out = length.to_be_bytes().to_vec();
        out.push(u8::try_from(padding).unwrap());
        out.extend_from_slice(payload);
        out.extend(std::iter::repeat_n(0, padding));
        out
    }

    fn raw(length: u32, padding: u8, rest: &[u8]) -> Vec<u8> {
        let mut out = length.to_be_bytes().to_vec();
        out.push(padding);
        out.extend_from_slice(rest);
        out
    }

    /// Feeds `stream` whole and then one byte at a time; both must give `expect`.
    fn check(stream: &[u8], expect: Result<(), Violation>) {
        let mut whole = Framing::Version { seen: 0 };
        assert_eq!(whole.inspect(stream), expect, "whole");
        let mut bytewise = Framing::Version { seen: 0 };
        let got = stream
            .iter()
            .try_for_each(|byte| bytewise.inspect(std::slice::from_ref(byte)));
        assert_eq!(got, expect, "byte by byte");
    }

    fn hello(rest: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"SSH-2.0-OpenSSH_9.6\r\n".to_vec();
        for part in rest {
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn good_streams_pass_and_newkeys_ends_inspection() {
        check(b"SSH-2.0-x\n", Ok(()));
        check(&hello(&[packet(&[20; 1500]), packet(&[30; 40])]), Ok(()));
        // After the client's NEWKEYS anything goes: it is ciphertext.
        check(
            &hello(&[packet(&[20; 100]), packet(&[21]), vec![0xff; 64]]),
            Ok(()),
        );
        let mut long = b"SSH-2.0-".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_VERSION_LINE - 10));
        long.extend_from_slice(b"\r\n");
        assert_eq!(long.len(), MAX_VERSION_LINE);
        check(&long, Ok(()));
    }

    #[test]
    fn violations_are_named() {
        let mut long = b"SSH-2.0-".to_vec();
        long.extend(std::iter::repeat_n(b'a', 1 << 20));
        check(&long, Err(Violation::VersionTooLong));
        check(b"GET / HTTP/1.1\r\n", Err(Violation::NotSsh2));
        check(b"SSH-1.99-old\r\n", Err(Violation::NotSsh2));
        check(b"hello\nSSH-2.0-x\r\n", Err(Violation::NotSsh2));
        check(
            &hello(&[raw(0x7fff_ffff, 4, &[20])]),
            Err(Violation::PacketTooLong(0x7fff_ffff)),
        );
        check(
            &hello(&[raw(MAX_CLEARTEXT_PACKET + 1, 4, &[20])]),
            Err(Violation::PacketTooLong(MAX_CLEARTEXT_PACKET + 1)),
        );
        // The length field alone is enough to judge.
        check(
            &hello(&[0x0100_0000u32.to_be_bytes().to_vec()]),
            Err(Violation::PacketTooLong(0x0100_0000)),
        );
        check(
            &hello(&[raw(12, 200, &[20])]),
            Err(Violation::NoPayload {
                packet_length: 12,
                padding_length: 200,
            }),
        );
        // All padding: the packet russh would take for the end of the stream.
        check(
            &hello(&[raw(12, 11, &[0])]),
            Err(Violation::NoPayload {
                packet_length: 12,
                padding_length: 11,
            }),
        );
        check(
            &hello(&[raw(0, 0, &[0])]),
            Err(Violation::NoPayload {
                packet_length: 0,
                padding_length: 0,
            }),
        );
        check(
            &hello(&[raw(12, 2, &[20])]),
            Err(Violation::PaddingTooShort(2)),
        );
        // A bad second packet is caught too.
        check(
            &hello(&[packet(&[20; 30]), raw(1 << 20, 4, &[30])]),
            Err(Violation::PacketTooLong(1 << 20)),
        );
    }

    #[tokio::test]
    async fn the_deadline_fails_reads_and_writes_until_login() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let grace = Duration::from_millis(300);
        // A read blocked on a silent peer fails when the deadline passes, and so does any
        // later write.
        let (_silent, server) = tokio::io::duplex(1024);
        let (mut stream, verdict) =
            PreauthStream::new(server, grace, Arc::new(AtomicBool::new(false)));
        let start = std::time::Instant::now();
        let err = stream.read(&mut [0; 16]).await.unwrap_err();
        let waited = start.elapsed();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(waited >= grace && waited < grace * 5, "{waited:?}");
        assert_eq!(verdict.get(), Some(&Violation::GraceExpired));
        assert!(stream.write_all(b"x").await.is_err());
        // Once logged in, the deadline no longer applies.
        let (mut client, server) = tokio::io::duplex(1024);
        let authenticated = Arc::new(AtomicBool::new(false));
        let (mut stream, verdict) = PreauthStream::new(server, grace, authenticated.clone());
        authenticated.store(true, Ordering::Release);
        // Past the deadline: the logged-in stream still works.
        tokio::time::sleep(grace * 2).await;
        stream.write_all(b"x").await.unwrap();
        client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        let mut line = [0; 11];
        stream.read_exact(&mut line).await.unwrap();
        assert_eq!(verdict.get(), None);
    }
}
