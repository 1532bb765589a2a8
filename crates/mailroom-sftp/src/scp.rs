//! Legacy SCP (`scp -O`): the rcp protocol behind `scp -t` (sink: the client uploads) and
//! `scp -f` (source: the client downloads), the only commands this hub "executes".
//!
//! Nothing is run: the command line is parsed here, by hand, into options and paths, and the
//! transfer goes through the Hub like any SFTP transfer. Recursive copies and wildcards are
//! refused (there is no shell to expand them). Every length and name from the wire is checked
//! before it is used. Protocol summary: each side acknowledges with a single byte, `\0` for
//! success, `\x01` + message + `\n` for an error the peer may continue after, `\x02` for a
//! fatal one.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use russh::ChannelMsg;
use russh::server::Msg;

use mailroom_core::{Area, ClientSession, CoreError, FileName, Hub, VirtualPath};

/// Longest control line (`C0644 <size> <name>`) accepted.
const MAX_LINE: usize = 4096;
/// Bytes read from a blob per channel write when sending.
const CHUNK: usize = 256 * 1024;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    /// `-t`: the client sends files to us; `-f`: we send files to the client.
    pub sink: bool,
    /// `-p`: preserve times (we send `T` lines; we ignore theirs).
    pub preserve: bool,
    /// `-r`: recursive, which the tree does not support.
    pub recursive: bool,
    /// The paths after the options.
    pub paths: Vec<String>,
}

/// Parses an exec command line. `None` when it is not an scp server command.
pub(crate) fn parse_command(line: &[u8]) -> Option<Command> {
    let line = std::str::from_utf8(line).ok()?;
    let words = shell_words(line)?;
    let mut words = words.into_iter();
    if words.next()? != "scp" {
        return None;
    }
    let mut command = Command {
        sink: false,
        preserve: false,
        recursive: false,
        paths: Vec::new(),
    };
    let mut mode = None;
    let mut options_done = false;
    for word in words {
        if !options_done && word == "--" {
            options_done = true;
        } else if !options_done && word.starts_with('-') && word.len() > 1 {
            for flag in word[1..].chars() {
                match flag {
                    't' => mode = Some(true),
                    'f' => mode = Some(false),
                    'p' => command.preserve = true,
                    'r' => command.recursive = true,
                    'd' | 'v' | 'q' => {}
                    _ => return None,
                }
            }
        } else {
            command.paths.push(word);
        }
    }
    command.sink = mode?;
    if command.paths.is_empty() {
        return None;
    }
    Some(command)
}

/// Splits a command line the way a POSIX shell would for plain words, single and double
/// quotes and backslash escapes. `None` on an unterminated quote or shell syntax we refuse.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => current.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => current.push(chars.next()?),
                        c => current.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                current.push(chars.next()?);
            }
            // Anything a shell would act on is refused rather than taken literally.
            ';' | '&' | '|' | '`' | '$' | '<' | '>' | '(' | ')' | '\n' => return None,
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Some(words)
}

/// Runs one scp command on an accepted channel and ends the channel with the exit status.
pub(crate) async fn run(
    channel: russh::Channel<Msg>,
    hub: Arc<Hub>,
    session: ClientSession,
    command: Command,
) {
    let (read_half, write_half) = channel.split();
    let mut peer = Peer {
        read_half,
        buffer: BytesMut::new(),
        eof: false,
    };
    let mut out = Out { write_half };
    let result = if command.recursive {
        let _ = out
            .fatal("recursive copies are not supported: send files one by one")
            .await;
        Err(())
    } else if command.sink {
        sink(&hub, &session, &command, &mut peer, &mut out).await
    } else {
        source(&hub, &session, &command, &mut peer, &mut out).await
    };
    let code = if result.is_ok() { 0 } else { 1 };
    let _ = out.write_half.exit_status(code).await;
    let _ = out.write_half.eof().await;
    let _ = out.write_half.close().await;
}

/// The client's side of the channel, buffered.
struct Peer {
    read_half: russh::ChannelReadHalf,
    buffer: BytesMut,
    eof: bool,
}

impl Peer {
    /// Waits until at least one byte is buffered; false at end of input.
    async fn fill(&mut self) -> bool {
        while self.buffer.is_empty() && !self.eof {
            match self.read_half.wait().await {
                Some(ChannelMsg::Data { data }) => self.buffer.extend_from_slice(&data),
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => self.eof = true,
                Some(_) => {}
            }
        }
        !self.buffer.is_empty()
    }

    async fn byte(&mut self) -> Option<u8> {
        if self.fill().await {
            Some(self.buffer.get_u8())
        } else {
            None
        }
    }

    /// Reads a line without its `\n`; `None` at end of input or past [`MAX_LINE`].
    async fn line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let byte = self.byte().await?;
            if byte == b'\n' {
                return Some(line);
            }
            if line.len() >= MAX_LINE {
                return None;
            }
            line.push(byte);
        }
    }

    /// Reads an acknowledgement: Ok, or the peer's error message.
    async fn ack(&mut self) -> Result<(), String> {
        match self.byte().await {
            Some(0) => Ok(()),
            Some(1 | 2) => {
                let line = self.line().await.unwrap_or_default();
                Err(String::from_utf8_lossy(&line).into_owned())
            }
            Some(_) => Err("protocol error".to_owned()),
            None => Err("connection closed".to_owned()),
        }
    }
}

/// Our side of the channel.
struct Out {
    write_half: russh::ChannelWriteHalf<Msg>,
}

impl Out {
    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        self.write_half.data_bytes(bytes).await.map_err(|_| ())
    }

    async fn ok(&mut self) -> Result<(), ()> {
        self.send(vec![0]).await
    }

    /// A non-fatal error: the client reports it and carries on with the next file.
    async fn warn(&mut self, message: &str) -> Result<(), ()> {
        self.send(format!("\x01scp: {}\n", one_line(message)).into_bytes())
            .await
    }

    async fn fatal(&mut self, message: &str) -> Result<(), ()> {
        self.send(format!("\x02scp: {}\n", one_line(message)).into_bytes())
            .await
    }
}

/// `scp -t`: receive files into the outbox.
async fn sink(
    hub: &Hub,
    session: &ClientSession,
    command: &Command,
    peer: &mut Peer,
    out: &mut Out,
) -> Result<(), ()> {
    let [target] = command.paths.as_slice() else {
        let _ = out.fatal("exactly one target path is expected").await;
        return Err(());
    };
    let target = match VirtualPath::parse(target) {
        Ok(path) => path,
        Err(err) => {
            let _ = out.fatal(err.message()).await;
            return Err(());
        }
    };
    out.ok().await?;
    let mut failed = false;
    loop {
        let Some(line) = peer.line().await else {
            // End of input after complete files is the normal end.
            return if failed { Err(()) } else { Ok(()) };
        };
        match line.first() {
            Some(b'C') => {
                if receive_file(hub, session, &target, &line, peer, out).await? {
                    continue;
                }
                failed = true;
            }
            Some(b'T') | Some(b'E') => out.ok().await?,
            Some(b'D') => {
                out.warn("folders cannot be uploaded: send files one by one")
                    .await?;
                failed = true;
            }
            Some(1) => {
                tracing::info!(message = %String::from_utf8_lossy(&line[1..]), "scp client reported an error");
                failed = true;
            }
            _ => {
                let _ = out.fatal("protocol error: unexpected control line").await;
                return Err(());
            }
        }
    }
}

/// Handles one `C<mode> <size> <name>` record. Returns Ok(true) when the file was
/// delivered, Ok(false) when it was refused and the session can go on, Err when it cannot.
async fn receive_file(
    hub: &Hub,
    session: &ClientSession,
    target: &VirtualPath,
    line: &[u8],
    peer: &mut Peer,
    out: &mut Out,
) -> Result<bool, ()> {
    let Some((size, name)) = parse_record(line) else {
        let _ = out.fatal("protocol error: malformed file record").await;
        return Err(());
    };
    let path = match destination(target, &name) {
        Ok(path) => path,
        Err(err) => {
            out.warn(err.message()).await?;
            return Ok(false);
        }
    };
    let mut upload = match hub.begin_upload(session, &path).await {
        Ok(upload) => upload,
        Err(err) => {
            out.warn(err.message()).await?;
            return Ok(false);
        }
    };
    // The header announces the size: a file over the sender's or a recipient's limit is
    // refused before any data is sent.
    if let Err(err) = upload.announce_size(size) {
        hub.abort_upload(upload, "announced size over the limit")
            .await;
        out.warn(err.message()).await?;
        return Ok(false);
    }
    out.ok().await?;
    let mut offset = 0u64;
    let mut write_error: Option<CoreError> = None;
    while offset < size {
        if !peer.fill().await {
            hub.abort_upload(upload, "connection closed mid-file").await;
            return Err(());
        }
        let take = (peer.buffer.len() as u64).min(size - offset) as usize;
        if write_error.is_none()
            && let Err(err) = upload.write_at(offset, &peer.buffer[..take]).await
        {
            write_error = Some(err);
        }
        peer.buffer.advance(take);
        offset += take as u64;
    }
    // The client ends the data with its own status byte.
    if let Err(message) = peer.ack().await {
        hub.abort_upload(upload, &format!("client reported: {message}"))
            .await;
        return Err(());
    }
    if let Some(err) = write_error {
        hub.abort_upload(upload, &format!("write failed: {}", err.message()))
            .await;
        out.warn(err.message()).await?;
        return Ok(false);
    }
    match hub.finish_upload(upload).await {
        Ok(_) => {
            out.ok().await?;
            Ok(true)
        }
        Err(err) => {
            out.warn(err.message()).await?;
            Ok(false)
        }
    }
}

/// Parses `C<4 octal digits> <size> <name>`.
pub(crate) fn parse_record(line: &[u8]) -> Option<(u64, String)> {
    let text = std::str::from_utf8(line.get(1..)?).ok()?;
    let mut parts = text.splitn(3, ' ');
    let mode = parts.next()?;
    let size = parts.next()?;
    let name = parts.next()?;
    if mode.len() != 4 || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((size.parse().ok()?, name.to_owned()))
}

/// Where a received file goes: into the target folder under its own name, or at the target
/// path itself when that names a file.
pub(crate) fn destination(target: &VirtualPath, name: &str) -> Result<VirtualPath, CoreError> {
    match target {
        VirtualPath::Folder(Area::Outbox, recipient) => Ok(VirtualPath::File(
            Area::Outbox,
            recipient.clone(),
            FileName::parse(name)?,
        )),
        VirtualPath::File(..) => Ok(target.clone()),
        _ => Err(CoreError::denied(
            "files can only be sent to /outbox/<recipient>/",
        )),
    }
}

/// `scp -f`: send inbox files or receipts to the client.
async fn source(
    hub: &Hub,
    session: &ClientSession,
    command: &Command,
    peer: &mut Peer,
    out: &mut Out,
) -> Result<(), ()> {
    // The client says it is ready.
    peer.ack().await.map_err(|_| ())?;
    let mut failed = false;
    for raw in &command.paths {
        let opened = match VirtualPath::parse(raw) {
            Ok(path) => hub.open_read(session, &path).await,
            Err(err) => Err(err),
        };
        let handle = match opened {
            Ok(handle) => handle,
            Err(err) => {
                out.warn(err.message()).await?;
                failed = true;
                continue;
            }
        };
        let name = match handle.path() {
            VirtualPath::File(_, _, name) => name.to_string(),
            other => other.to_string(),
        };
        if command.preserve {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            out.send(format!("T{now} 0 {now} 0\n").into_bytes()).await?;
            peer.ack().await.map_err(|_| ())?;
        }
        out.send(format!("C0644 {} {}\n", handle.size(), name).into_bytes())
            .await?;
        if peer.ack().await.is_err() {
            let _ = hub.close_read(session, handle).await;
            failed = true;
            continue;
        }
        let mut offset = 0u64;
        let mut read_error = None;
        while offset < handle.size() {
            match handle.read_at(offset, CHUNK).await {
                Ok(data) if data.is_empty() => break,
                Ok(data) => {
                    offset += data.len() as u64;
                    out.send(data).await?;
                }
                Err(err) => {
                    read_error = Some(err);
                    break;
                }
            }
        }
        let _ = hub.close_read(session, handle).await;
        match read_error {
            Some(err) => {
                // The client expects the announced size; a broken stream cannot continue.
                let _ = out.fatal(err.message()).await;
                return Err(());
            }
            None => {
                out.ok().await?;
                if peer.ack().await.is_err() {
                    failed = true;
                }
            }
        }
    }
    if failed { Err(()) } else { Ok(()) }
}

/// Makes a message safe to put on one protocol line.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Option<Command> {
        parse_command(line.as_bytes())
    }

    #[test]
    fn commands() {
        let c = parsed("scp -t /outbox/bob/").unwrap();
        assert!(c.sink && !c.recursive);
        assert_eq!(c.paths, vec!["/outbox/bob/"]);
        let c = parsed("scp -v -p -f '/inbox/alice/a b.txt'").unwrap();
        assert!(!c.sink && c.preserve);
        assert_eq!(c.paths, vec!["/inbox/alice/a b.txt"]);
        let c = parsed("scp -r -d -t -- /outbox/bob").unwrap();
        assert!(c.recursive);
        assert_eq!(parsed("scp -f a\\ b").unwrap().paths, vec!["a b"]);
        for bad in [
            "ls -la",
            "scp /x",
            "scp -t",
            "scp -t /x; rm -rf /",
            "scp -t $(id)",
            "scp -t `id`",
            "scp -t 'unterminated",
            "scp -Z -t /x",
            "sh -c 'scp -t /x'",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
        assert_eq!(parse_command(b"scp -t /outbox/\xff"), None);
    }

    #[test]
    fn records() {
        assert_eq!(
            parse_record(b"C0644 12 a b.txt"),
            Some((12, "a b.txt".to_owned()))
        );
        assert_eq!(parse_record(b"C0644 -1 x"), None);
        assert_eq!(parse_record(b"C0644 99999999999999999999999 x"), None);
        assert_eq!(parse_record(b"C644 1 x"), None);
        assert_eq!(parse_record(b"C0648 1 x"), None);
        assert_eq!(parse_record(b"C0644 1"), None);
    }

    #[test]
    fn destinations() {
        let folder = VirtualPath::parse("/outbox/bob").unwrap();
        assert_eq!(
            destination(&folder, "a.txt").unwrap().to_string(),
            "/outbox/bob/a.txt"
        );
        assert!(destination(&folder, "../x").is_err());
        assert!(destination(&folder, "a/b").is_err());
        let file = VirtualPath::parse("/outbox/bob/c.txt").unwrap();
        assert_eq!(destination(&file, "a.txt").unwrap(), file);
        assert!(destination(&VirtualPath::parse("/inbox").unwrap(), "a").is_err());
    }
}
