//! The malware check of a delivery: the `[check]` section and the [`Scanner`] that asks a
//! scanner for a [`Verdict`] on a file's content before the file is delivered.
//!
//! Two scanners: ClamAV's daemon over its INSTREAM command (clamd(8), "COMMANDS": `zINSTREAM`
//! and then chunks, each after its length as four bytes in network order, ended by a chunk of
//! length zero), on TCP or a Unix socket; or a program run on a temporary copy of the file,
//! whose exit status is the verdict (0 clean, 1 found, as clamscan answers). The content is
//! streamed in chunks of 64 KiB through [`Content`] and never held whole in memory.
//!
//! A scanner's answer is untrusted: the reply is read up to 4 KiB only, and a signature name
//! is made printable and short before anyone shows it. Anything but a clear answer is an
//! `Err`, "could not decide": the caller keeps the file hidden and asks again later, so the
//! check fails closed. What a verdict does to a delivery (hold, deliver, quarantine) is the
//! Hub's business, not this module's.

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mailroom_net::config_section! {
    [check]
    /// The malware check: each delivered file is scanned before its recipient may see it.
    /// A file the scanner cannot judge (scanner down, timeout, error) stays hidden and is
    /// scanned again after a backoff: the check fails closed. Set either clamd or command;
    /// neither: no check.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct CheckConfig {
        /// ClamAV's daemon, asked with INSTREAM: "tcp://host:port" (e.g.
        /// "tcp://127.0.0.1:3310") or its Unix socket, "/run/clamav/clamd.ctl" or
        /// "unix:/path". Its StreamMaxLength (clamd.conf) must exceed the largest file: a
        /// larger one is never judged, so it stays hidden. Empty: not used.
        #[serde(deserialize_with = "none_if_empty", serialize_with = "empty_if_none")]
        pub clamd: Option<String>,
        /// A scanner program run on each file instead, e.g. "clamscan --no-summary {path}":
        /// its words split at spaces (no quoting, no shell), `{path}` standing for a copy of
        /// the file made for the scan (mode 0600, in the data folder, removed afterwards).
        /// Exit status 0: clean; 1: malware, named by the first line of its output; anything
        /// else: not judged. It inherits only PATH, HOME, LANG, LC_ALL and TZ of the hub's
        /// environment. Empty: not used.
        #[serde(deserialize_with = "none_if_empty", serialize_with = "empty_if_none")]
        pub command: Option<String>,
        /// Seconds one scan may take (connecting, sending and the answer, or the program's
        /// whole run) before it counts as not judged.
        pub timeout_seconds: u64,
    }
}

impl CheckConfig {
    /// Whether a scanner is named at all (then every upload waits for its check).
    pub fn enabled(&self) -> bool {
        self.clamd.is_some() || self.command.is_some()
    }
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            clamd: None,
            command: None,
            timeout_seconds: 60,
        }
    }
}

/// What a scanner said about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing found.
    Clean,
    /// Malware found: the signature's name as the scanner gave it (e.g.
    /// `Hub-Test-EICAR-Body.UNOFFICIAL`), made printable and at most 200 characters long.
    Found(String),
}

/// The content to scan, read piece by piece.
#[async_trait::async_trait]
pub trait Content: Send + Sync {
    /// The content's length in bytes; a scan reads exactly this much.
    fn size(&self) -> u64;

    /// Up to `len` bytes from `offset`; an empty `Vec` means the content ends there.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, String>;
}

/// A configured scanner: clamd, or a program.
#[derive(Debug, Clone)]
pub struct Scanner {
    engine: Engine,
    timeout: Duration,
}

#[derive(Debug, Clone)]
enum Engine {
    Clamd(ClamdAddress),
    Command(ScanCommand),
}

impl Scanner {
    /// The scanner `config` describes; `None` when it names none. A command's copies of the
    /// content are written in `work_dir`, created (mode 0700) when missing. The error names
    /// the setting and the value at fault.
    pub fn from_config(config: &CheckConfig, work_dir: &Path) -> Result<Option<Scanner>, String> {
        let clamd = config.clamd.as_deref().map(str::trim).unwrap_or_default();
        let command = config.command.as_deref().map(str::trim).unwrap_or_default();
        let timeout = Duration::from_secs(config.timeout_seconds.max(1));
        let engine = match (clamd.is_empty(), command.is_empty()) {
            (true, true) => return Ok(None),
            (false, false) => {
                return Err("[check]: set either clamd or command, not both".to_owned());
            }
            (false, true) => Engine::Clamd(ClamdAddress::parse(clamd)?),
            (true, false) => Engine::Command(ScanCommand::parse(command, work_dir)?),
        };
        Ok(Some(Scanner { engine, timeout }))
    }

    /// Scans `content`. `Err` means the scanner could not decide (unreachable, an error, a
    /// timeout, an answer it should not give): one line saying why.
    pub async fn scan(&self, content: &dyn Content) -> Result<Verdict, String> {
        match &self.engine {
            Engine::Clamd(address) => address.scan(content, self.timeout).await,
            Engine::Command(command) => command.scan(content, self.timeout).await,
        }
    }
}

impl fmt::Display for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.engine {
            Engine::Clamd(address) => write!(f, "clamd at {address}"),
            Engine::Command(command) => write!(f, "scanner command {}", command.program),
        }
    }
}

/// The variables of the hub's environment a scanner command inherits; the rest stay out.
const SCANNER_ENVIRONMENT: [&str; 5] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

/// The size of one piece of content: one INSTREAM chunk, one write of a command's copy.
const CHUNK: usize = 64 * 1024;
/// The longest wait for clamd to accept a connection: a daemon that does not accept within
/// it is not there, however long a scan may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// The longest reply of clamd that is read; its real replies are one short line.
const MAX_REPLY: usize = 4096;
/// How much of a command's stdout and stderr is kept; the rest is read and dropped, so that
/// the program never blocks on a full pipe.
const MAX_OUTPUT: usize = 64 * 1024;
/// The longest signature name or scanner message passed on.
const MAX_NAME: usize = 200;

/// The content read in order, exactly [`Content::size`] bytes, [`CHUNK`] at a time.
struct Pieces<'a> {
    content: &'a dyn Content,
    offset: u64,
    size: u64,
}

impl<'a> Pieces<'a> {
    fn new(content: &'a dyn Content) -> Self {
        Pieces {
            content,
            offset: 0,
            size: content.size(),
        }
    }

    /// The next piece, or `None` at the end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        let left = self.size - self.offset;
        if left == 0 {
            return Ok(None);
        }
        let want = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
        let mut piece = self
            .content
            .read_at(self.offset, want)
            .await
            .map_err(|err| format!("reading the file: {err}"))?;
        if piece.is_empty() {
            // A scan of part of a file would call the whole of it clean.
            return Err(format!(
                "reading the file: it ended after {} of {} bytes",
                self.offset, self.size
            ));
        }
        piece.truncate(want);
        self.offset += piece.len() as u64;
        Ok(Some(piece))
    }
}

/// Where clamd listens.
#[derive(Debug, Clone)]
enum ClamdAddress {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClamdAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            ClamdAddress::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            ClamdAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl ClamdAddress {
    /// `tcp://host:port` (a bracketed IPv6 address too), `unix:/path` or `/path`.
    fn parse(text: &str) -> Result<ClamdAddress, String> {
        let bad = || {
            format!(
                "[check] clamd {:?}: expected tcp://host:port, unix:/path or an absolute socket path",
                printable(text)
            )
        };
        if let Some(rest) = text.strip_prefix("tcp://") {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let host = match host.strip_prefix('[') {
                Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
                None => host,
            };
            let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
            if host.is_empty() || port == 0 || !host.chars().all(plain) {
                return Err(bad());
            }
            return Ok(ClamdAddress::Tcp {
                host: host.to_owned(),
                port,
            });
        }
        let path = Path::new(text.strip_prefix("unix:").unwrap_or(text));
        if !path.is_absolute() {
            return Err(bad());
        }
        Ok(ClamdAddress::Unix(path.to_owned()))
    }

    async fn scan(&self, content: &dyn Content, timeout: Duration) -> Result<Verdict, String> {
        let exchange = async {
            match self {
                ClamdAddress::Tcp { host, port } => {
                    let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
                    let stream = self.connected(connect, timeout).await?;
                    instream(stream, content, self).await
                }
                ClamdAddress::Unix(path) => {
                    let connect = tokio::net::UnixStream::connect(path);
                    let stream = self.connected(connect, timeout).await?;
                    instream(stream, content, self).await
                }
            }
        };
        let reply = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("clamd at {self}: no answer within {} s", timeout.as_secs()))??;
        clamd_verdict(&reply, self)
    }

    /// The connection `connect` makes, within [`CONNECT_LIMIT`] (or `timeout` when shorter).
    async fn connected<S>(
        &self,
        connect: impl Future<Output = std::io::Result<S>>,
        timeout: Duration,
    ) -> Result<S, String> {
        let limit = timeout.min(CONNECT_LIMIT);
        match tokio::time::timeout(limit, connect).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(format!("clamd at {self}: {err}")),
            Err(_) => Err(format!(
                "clamd at {self}: no connection within {} s",
                limit.as_secs()
            )),
        }
    }
}

/// Sends `content` with INSTREAM and returns clamd's reply, without its final NUL.
async fn instream<S>(
    mut stream: S,
    content: &dyn Content,
    address: &ClamdAddress,
) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = |err: std::io::Error| Unsent::Connection(format!("clamd at {address}: {err}"));
    let sent = async {
        stream.write_all(b"zINSTREAM\0").await.map_err(io)?;
        let mut pieces = Pieces::new(content);
        let mut frame = Vec::with_capacity(4 + CHUNK);
        while let Some(piece) = pieces.next().await.map_err(Unsent::Content)? {
            // Invariant: a piece is at most CHUNK (64 KiB) long, so its length fits.
            let len = u32::try_from(piece.len()).unwrap_or(u32::MAX);
            frame.clear();
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&piece);
            stream.write_all(&frame).await.map_err(io)?;
        }
        stream.write_all(&0u32.to_be_bytes()).await.map_err(io)?;
        stream.flush().await.map_err(io)
    }
    .await;
    match sent {
        Ok(()) => read_reply(&mut stream, address).await,
        // clamd waits for the rest of a stream that will not come: no reply to read.
        Err(Unsent::Content(err)) => Err(err),
        // clamd answers and closes as soon as a stream exceeds its StreamMaxLength, and the
        // rest of the content meets a closed socket: its reply, when there is one, says why.
        Err(Unsent::Connection(err)) => match read_reply(&mut stream, address).await {
            Ok(reply) if !reply.is_empty() => Ok(reply),
            _ => Err(err),
        },
    }
}

/// Why a stream was not sent whole.
enum Unsent {
    /// The content could not be read.
    Content(String),
    /// The connection failed.
    Connection(String),
}

/// clamd's reply: up to its NUL or the end of the connection, at most [`MAX_REPLY`] bytes.
async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
    address: &ClamdAddress,
) -> Result<String, String> {
    let mut reply = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|err| format!("clamd at {address}: reading the answer: {err}"))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(format!(
                "clamd at {address}: an answer longer than {MAX_REPLY} bytes"
            ));
        }
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_owned())
}

/// The verdict in a reply to INSTREAM: `stream: OK`, `stream: NAME FOUND`, or `… ERROR`.
fn clamd_verdict(reply: &str, address: &ClamdAddress) -> Result<Verdict, String> {
    if reply.ends_with("ERROR") {
        if reply.contains("size limit exceeded") {
            return Err(format!(
                "clamd at {address}: INSTREAM size limit exceeded (raise StreamMaxLength in clamd.conf)"
            ));
        }
        return Err(format!("clamd at {address}: {}", printable(reply)));
    }
    let unexpected = || {
        format!(
            "clamd at {address}: unexpected answer {:?}",
            printable(reply)
        )
    };
    let Some(result) = reply.strip_prefix("stream:") else {
        return Err(unexpected());
    };
    let result = result.trim();
    if result == "OK" {
        return Ok(Verdict::Clean);
    }
    let Some(name) = result.strip_suffix("FOUND") else {
        return Err(unexpected());
    };
    Ok(Verdict::Found(signature(name.trim(), "clamd")))
}

/// A scanner program and its arguments, `{path}` among them.
#[derive(Debug, Clone)]
struct ScanCommand {
    program: String,
    args: Vec<String>,
    work_dir: PathBuf,
}

/// What stands for the file in a command's words.
const PATH_PLACEHOLDER: &str = "{path}";

impl ScanCommand {
    /// The words of `text`, split at whitespace. No quoting: a word cannot hold a space, and
    /// the program is run directly, never by a shell.
    fn parse(text: &str, work_dir: &Path) -> Result<ScanCommand, String> {
        let mut words = text.split_whitespace().map(str::to_owned);
        let Some(program) = words.next() else {
            return Err("[check] command is empty".to_owned());
        };
        let args: Vec<String> = words.collect();
        if !args.iter().any(|arg| arg.contains(PATH_PLACEHOLDER)) {
            return Err(format!(
                "[check] command {:?}: no {PATH_PLACEHOLDER} for the file to scan",
                printable(text)
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(work_dir)
            .map_err(|err| {
                format!(
                    "[check] command: its work folder {}: {err}",
                    work_dir.display()
                )
            })?;
        Ok(ScanCommand {
            program,
            args,
            work_dir: work_dir.to_owned(),
        })
    }

    async fn scan(&self, content: &dyn Content, timeout: Duration) -> Result<Verdict, String> {
        let copy = self.copy(content).await?;
        let path = copy.path().to_string_lossy().into_owned();
        let args = self
            .args
            .iter()
            .map(|arg| arg.replace(PATH_PLACEHOLDER, &path));
        let run = self.run(args, timeout).await;
        // The copy goes whatever happened; when this future is dropped instead, its drop
        // removes it.
        let _ = tokio::task::spawn_blocking(move || copy.close()).await;
        run
    }

    /// A copy of `content` in the work folder, mode 0600, removed when dropped.
    async fn copy(&self, content: &dyn Content) -> Result<tempfile::NamedTempFile, String> {
        let failed = |err: std::io::Error| {
            format!(
                "scanner command {}: a copy of the file in {}: {err}",
                self.program,
                self.work_dir.display()
            )
        };
        let work_dir = self.work_dir.clone();
        let copy = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(".scan-")
                .permissions(std::fs::Permissions::from_mode(0o600))
                .tempfile_in(work_dir)
        })
        .await
        .map_err(|err| format!("scanner command {}: {err}", self.program))?
        .map_err(failed)?;
        let file = copy.as_file().try_clone().map_err(failed)?;
        let mut file = tokio::fs::File::from_std(file);
        let mut pieces = Pieces::new(content);
        while let Some(piece) = pieces.next().await? {
            file.write_all(&piece).await.map_err(failed)?;
        }
        file.flush().await.map_err(failed)?;
        Ok(copy)
    }

    /// Runs the program with `args` and reads its verdict from the exit status. Its output
    /// is read to the end, so a helper it leaves running with the pipes open makes the scan
    /// time out; at the timeout the program itself is killed, not helpers it started (a
    /// scanner that forks should be wrapped to take its helpers down with it).
    async fn run(
        &self,
        args: impl Iterator<Item = String>,
        timeout: Duration,
    ) -> Result<Verdict, String> {
        let program = &self.program;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            // The hub's environment may hold secrets (configuration overrides, credentials):
            // the scanner gets a search path, a locale and a home, nothing else.
            .env_clear()
            .envs(
                SCANNER_ENVIRONMENT
                    .iter()
                    .filter_map(|name| std::env::var_os(name).map(|value| (*name, value))),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| format!("scanner command {program}: {err}"))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let finished = tokio::time::timeout(timeout, async {
            let (status, stdout, stderr) =
                tokio::join!(child.wait(), read_capped(stdout), read_capped(stderr));
            (status, stdout, stderr)
        })
        .await;
        let Ok((status, stdout, stderr)) = finished else {
            // Killed and reaped here, not left to the drop: the program is gone when the
            // caller hears of the timeout.
            let _ = child.kill().await;
            return Err(format!(
                "scanner command {program} timed out after {} s",
                timeout.as_secs()
            ));
        };
        let status = status.map_err(|err| format!("scanner command {program}: {err}"))?;
        match status.code() {
            Some(0) => Ok(Verdict::Clean),
            Some(1) => Ok(Verdict::Found(found_in_output(&stdout, program))),
            _ => {
                let why = first_line(&stderr)
                    .map(|line| format!(": {}", printable(line)))
                    .unwrap_or_default();
                Err(format!("scanner command {program} failed, {status}{why}"))
            }
        }
    }
}

/// All of a pipe, of which the first [`MAX_OUTPUT`] bytes are kept.
async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The signature a program reported: its line ending in `FOUND` (clamscan's
/// `path: NAME FOUND` gives NAME), else its first line, else `found by <program>`.
fn found_in_output(stdout: &str, program: &str) -> String {
    let found = stdout
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_suffix("FOUND"));
    if let Some(found) = found {
        let name = found.rsplit_once(": ").map_or(found, |(_, name)| name);
        return signature(name.trim(), program);
    }
    match first_line(stdout) {
        Some(line) => signature(line, program),
        None => signature("", program),
    }
}

/// The first line of `text` that is not blank, trimmed.
fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|line| !line.is_empty())
}

/// A signature name as passed on: printable, or `found by <scanner>` when there is none.
fn signature(name: &str, scanner: &str) -> String {
    let name = printable(name);
    if name.trim().is_empty() {
        let scanner = Path::new(scanner)
            .file_name()
            .map_or_else(|| scanner.to_owned(), |n| n.to_string_lossy().into_owned());
        return printable(&format!("found by {scanner}"));
    }
    name
}

/// `text` with its control characters replaced by `?`, at most [`MAX_NAME`] characters.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_NAME)
        .collect()
}

/// Reads `""` as "not set": the file has no other way to say it.
fn none_if_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok((!text.trim().is_empty()).then_some(text))
}

/// Writes "not set" as `""`, the form [`none_if_empty`] reads.
fn empty_if_none<S: Serializer>(value: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.as_deref().unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn address(text: &str) -> ClamdAddress {
        ClamdAddress::parse(text).unwrap()
    }

    #[test]
    fn clamd_addresses_are_tcp_urls_or_absolute_socket_paths() {
        for (text, shown) in [
            ("tcp://127.0.0.1:3310", "tcp://127.0.0.1:3310"),
            ("tcp://clamav.internal:3310/", "tcp://clamav.internal:3310"),
            ("tcp://[::1]:3310", "tcp://[::1]:3310"),
            ("/run/clamav/clamd.ctl", "/run/clamav/clamd.ctl"),
            ("unix:/run/clamav/clamd.ctl", "/run/clamav/clamd.ctl"),
        ] {
            assert_eq!(address(text).to_string(), shown, "{text}");
        }
        for bad in [
            "127.0.0.1:3310",
            "tcp://127.0.0.1",
            "tcp://:3310",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:99999",
            "tcp://user@host:3310",
            "clamd.ctl",
            "unix:clamd.ctl",
            "http://127.0.0.1:3310",
        ] {
            let err = ClamdAddress::parse(bad).err().unwrap();
            assert!(err.contains("[check] clamd") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn clamd_replies_become_verdicts() {
        let at = address("tcp://127.0.0.1:3310");
        let check = |reply: &str| clamd_verdict(reply, &at);
        assert_eq!(check("stream: OK"), Ok(Verdict::Clean));
        assert_eq!(
            check("stream: Eicar-Signature FOUND"),
            Ok(Verdict::Found("Eicar-Signature".to_owned()))
        );
        assert_eq!(
            check("stream: Evil\u{1b}[31mRed FOUND"),
            Ok(Verdict::Found("Evil?[31mRed".to_owned()))
        );
        let long = format!("stream: {} FOUND", "A".repeat(1000));
        assert_eq!(check(&long), Ok(Verdict::Found("A".repeat(200))));
        assert_eq!(
            check("INSTREAM size limit exceeded. ERROR"),
            Err("clamd at tcp://127.0.0.1:3310: INSTREAM size limit exceeded (raise StreamMaxLength in clamd.conf)".to_owned())
        );
        assert!(
            check("stream: lstat() failed ERROR")
                .unwrap_err()
                .contains("lstat")
        );
        assert!(check("UNKNOWN COMMAND").unwrap_err().contains("unexpected"));
        assert!(check("").unwrap_err().contains("unexpected"));
    }

    #[test]
    fn a_program_names_what_it_found() {
        let check = |stdout: &str| found_in_output(stdout, "/usr/bin/clamscan");
        assert_eq!(check("/tmp/x: Eicar-Test FOUND\n"), "Eicar-Test");
        assert_eq!(check("/tmp/a: b: Evil FOUND\n"), "Evil");
        assert_eq!(check("\n  scanning\nx: Evil FOUND\n"), "Evil");
        assert_eq!(check("\n\nTrojan.Bad\nmore"), "Trojan.Bad");
        assert_eq!(check(""), "found by clamscan");
        assert_eq!(check("x:  FOUND"), "found by clamscan");
    }

    #[test]
    fn a_command_needs_words_and_a_path() {
        let dir = std::env::temp_dir();
        let command = ScanCommand::parse("  scan   --flag={path}  -x ", &dir).unwrap();
        assert_eq!(command.program, "scan");
        assert_eq!(command.args, ["--flag={path}", "-x"]);
        assert!(
            ScanCommand::parse("   ", &dir)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            ScanCommand::parse("scan --all", &dir)
                .unwrap_err()
                .contains("{path}")
        );
    }

    #[test]
    fn the_section_reads_empty_as_unset() {
        let config: CheckConfig = serde_json::from_str(r#"{"clamd": "", "command": " "}"#).unwrap();
        assert_eq!(config, CheckConfig::default());
        assert!(
            Scanner::from_config(&config, Path::new("/nonexistent"))
                .unwrap()
                .is_none()
        );
        let both = CheckConfig {
            clamd: Some("tcp://127.0.0.1:3310".to_owned()),
            command: Some("scan {path}".to_owned()),
            ..CheckConfig::default()
        };
        let err = Scanner::from_config(&both, Path::new("/nonexistent"))
            .err()
            .unwrap();
        assert!(err.contains("either clamd or command"), "{err}");
    }
}
