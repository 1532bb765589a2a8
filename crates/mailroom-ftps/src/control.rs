//! The control connection (RFC 959 §4): reading command lines with a hard length cap,
//! writing replies, and the switch to TLS (RFC 4217 §4, `AUTH TLS`).
//!
//! Everything read here comes from an unauthenticated peer, so nothing is trusted: a line is
//! at most [`MAX_LINE`] bytes (a longer one ends the connection, it cannot grow memory), a
//! verb is ASCII letters, and an argument stays bytes until the core parses it as a path
//! (never decoded lossily). Reply texts are stripped of control characters so that no text
//! can forge a reply line.

use std::io;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// Longest command line accepted, CRLF included.
pub(crate) const MAX_LINE: usize = 4096;

/// A connection that is plain TCP or TLS over TCP.
pub(crate) type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// One command: an upper-cased verb and its raw argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    /// `RETR`, `STOR`, …; empty when the line did not start with a verb.
    pub(crate) verb: String,
    /// Everything after the first space, as sent.
    pub(crate) arg: Vec<u8>,
}

impl Command {
    /// The argument as text, for commands whose argument is not a path (TYPE, PROT, …).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.arg).trim().to_owned()
    }
}

/// What reading the next line gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A command.
    Command(Command),
    /// More than [`MAX_LINE`] bytes without an end of line.
    TooLong,
    /// The peer closed the connection (possibly in the middle of a line).
    Closed,
}

/// The control connection of one session.
pub(crate) struct Control {
    io: BufReader<Stream>,
}

impl Control {
    /// A control connection over `stream`.
    pub(crate) fn new(stream: Stream) -> Control {
        Control {
            io: BufReader::with_capacity(MAX_LINE, stream),
        }
    }

    /// Whether the connection is protected by TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.io.get_ref(), Either::Right(_))
    }

    /// The end-entity certificate the client presented in the TLS handshake (rustls has
    /// verified it against the client CA).
    pub(crate) fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        match self.io.get_ref() {
            Either::Right(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.clone().into_owned()),
            Either::Left(_) => None,
        }
    }

    /// Reads the next command line.
    pub(crate) async fn read(&mut self) -> io::Result<Line> {
        let mut line = Vec::new();
        (&mut self.io)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if line.last() != Some(&b'\n') {
            return Ok(if line.len() >= MAX_LINE {
                Line::TooLong
            } else {
                Line::Closed
            });
        }
        Ok(Line::Command(parse(&line)))
    }

    /// Sends a reply; a text of several lines becomes a multi-line reply (RFC 959 §4.2).
    pub(crate) async fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        let out = format_reply(code, text);
        let stream = self.io.get_mut();
        stream.write_all(out.as_bytes()).await?;
        stream.flush().await
    }

    /// Answers `AUTH TLS` (234) and performs the TLS handshake. Refused when the client sent
    /// anything after the AUTH line before the handshake: such bytes were sent in clear text
    /// and must never be taken as commands of the protected session (a command injection).
    pub(crate) async fn start_tls(mut self, acceptor: &TlsAcceptor) -> io::Result<Control> {
        if !self.io.buffer().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data after AUTH TLS before the TLS handshake",
            ));
        }
        self.reply(234, "AUTH TLS accepted: start the TLS handshake")
            .await?;
        match self.io.into_inner() {
            Either::Left(tcp) => Ok(Control::new(Either::Right(acceptor.accept(tcp).await?))),
            Either::Right(_) => Err(io::Error::other("TLS is already on")),
        }
    }

    /// Closes the connection: a TLS `close_notify`, then the TCP shutdown.
    pub(crate) async fn close(mut self) {
        let _ = self.io.get_mut().shutdown().await;
    }
}

/// Splits a line (with its line end) into verb and argument. Telnet commands in front of the
/// verb (IAC IP, IAC DM: what ftplib and others send before ABOR) are skipped.
pub(crate) fn parse(line: &[u8]) -> Command {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut line = line.strip_suffix(b"\r").unwrap_or(line);
    loop {
        line = match line {
            [0xff, _, rest @ ..] => rest,
            [0xf2, rest @ ..] => rest,
            _ => break,
        };
    }
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &line[..0]),
    };
    let verb = if !verb.is_empty() && verb.len() <= 4 && verb.iter().all(u8::is_ascii_alphabetic) {
        String::from_utf8_lossy(verb).to_ascii_uppercase()
    } else {
        String::new()
    };
    Command {
        verb,
        arg: arg.to_vec(),
    }
}

/// Formats a reply, one line or several, with control characters in the text replaced.
pub(crate) fn format_reply(code: u16, text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect();
    let lines: Vec<&str> = clean.split('\n').collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i + 1 == lines.len() {
            out.push_str(&format!("{code} {line}\r\n"));
        } else if i == 0 {
            out.push_str(&format!("{code}-{line}\r\n"));
        } else {
            // Continuation lines start with a space so none can look like an end line.
            out.push_str(&format!(" {line}\r\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_verb_and_raw_argument() {
        assert_eq!(
            parse(b"retr /inbox/a/b c\r\n"),
            Command {
                verb: "RETR".into(),
                arg: b"/inbox/a/b c".to_vec()
            }
        );
        assert_eq!(parse(b"NOOP\n").verb, "NOOP");
        assert_eq!(parse(b"STOR \xff.txt\r\n").arg, b"\xff.txt");
        assert_eq!(parse(b"\r\n").verb, "");
        assert_eq!(parse(b"R3TR x\r\n").verb, "");
        assert_eq!(parse(b"TOOLONG x\r\n").verb, "");
        assert_eq!(parse(b"\xff\xf4\xff\xf2ABOR\r\n").verb, "ABOR");
        assert_eq!(parse(b"\xf2ABOR\r\n").verb, "ABOR");
    }

    #[test]
    fn replies_cannot_forge_lines() {
        assert_eq!(format_reply(200, "ok"), "200 ok\r\n");
        assert_eq!(format_reply(550, "a\r\n230 x"), "550-a?\r\n550 230 x\r\n");
        assert_eq!(
            format_reply(211, "Features:\nEPSV\nEnd"),
            "211-Features:\r\n EPSV\r\n211 End\r\n"
        );
    }

    #[tokio::test]
    async fn a_line_without_end_cannot_grow_memory() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            socket.write_all(b"NOOP\r\n").await.unwrap();
            socket.write_all(&vec![b'A'; 3 * MAX_LINE]).await.unwrap();
            socket
        });
        let (socket, _) = listener.accept().await.unwrap();
        let mut control = Control::new(Either::Left(socket));
        assert!(matches!(control.read().await.unwrap(), Line::Command(c) if c.verb == "NOOP"));
        assert_eq!(control.read().await.unwrap(), Line::TooLong);
        assert!(control.io.buffer().len() <= MAX_LINE);
        drop(client.await.unwrap());
    }
}
