//! One FTPS session: the command loop of RFC 959 with the security extensions of RFC 2228
//! and RFC 4217 (AUTH TLS, PBSZ, PROT), EPSV (RFC 2428), and SIZE, MDTM, REST, MLST/MLSD
//! (RFC 3659), every file command mapped to one [`mailroom_core::Hub`] call on a
//! `VirtualPath`.
//!
//! What it decides itself is only the protocol: the order of commands, that TLS protects the
//! login and every data connection, and which data connection may carry a transfer. Paths go
//! through the core's parser, rights and routes are the Hub's, and a refusal's reply carries
//! the Hub's own sentence. An upload is checked by the Hub before the 150 is sent (so a
//! refused upload never has its bytes sent), written while it streams, and answered 226 only
//! once it is durable and delivered; any failure before a clean end aborts it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use mailroom_core::{ClientSession, CoreError, ErrorKind, LiveSession, LoginStep, VirtualPath};
use mailroom_net::StartupPermit;

use crate::auth::Login;
use crate::control::{Command, Control, Line, MAX_LINE, Stream};
use crate::data::{self, Failure, Plan, Refused, SendFailure};
use crate::listing;
use crate::server::{Mode, Shared};

/// The greeting (reply 220). It names no software or version.
const GREETING: &str = "Mailroom FTPS ready";

/// Failed USER/PASS pairs on one connection before it is closed (as SSH's MaxAuthTries).
const MAX_LOGIN_ATTEMPTS: u32 = 6;

/// Commands answered before a login; every other one gets 530.
const BEFORE_LOGIN: &[&str] = &[
    "AUTH", "PBSZ", "PROT", "CCC", "USER", "PASS", "FEAT", "SYST", "NOOP", "QUIT", "OPTS", "HELP",
];

/// Whether the loop goes on after a command.
enum Flow {
    Go,
    Quit,
}

/// What ended a wait for the next command.
enum Wake {
    Line(io::Result<Line>),
    Timeout,
    Closed(String),
    Shutdown,
}

/// The state of one control connection.
pub(crate) struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    /// TLS for this connection, and for its data connections (sessions of their own).
    acceptor: TlsAcceptor,
    data_acceptor: TlsAcceptor,
    /// `None` only after a failed TLS upgrade, when the connection is gone.
    control: Option<Control>,
    login: Login,
    /// The name of the last USER, waiting for PASS.
    user: Option<String>,
    failed_logins: u32,
    /// The logged-in client and its place in the session registry.
    client: Option<(ClientSession, LiveSession)>,
    /// Released at login: the connection no longer counts as a startup.
    startup: Option<StartupPermit>,
    /// The absolute login deadline, from accept.
    deadline: Instant,
    /// Whether the client has closed the session's login window by the deadline refusal.
    deadline_refused: bool,
    pbsz: bool,
    /// PROT P in force: data connections use TLS.
    private: bool,
    cwd: VirtualPath,
    /// REST offset for the next RETR.
    rest: u64,
    /// RNFR's path, for the next command if it is RNTO.
    rename_from: Option<VirtualPath>,
    /// How the next data connection is made.
    plan: Option<Plan>,
}

impl Session {
    /// Runs the session on an admitted connection until it ends.
    pub(crate) async fn run(
        shared: Arc<Shared>,
        socket: TcpStream,
        peer: SocketAddr,
        mode: Mode,
        startup: StartupPermit,
    ) {
        let Ok(local) = socket.local_addr() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(shared.config.login_grace_seconds);
        let (acceptor, data_acceptor) = match crate::tls::per_connection(&shared.tls) {
            Ok(tls) => (TlsAcceptor::from(tls.control), TlsAcceptor::from(tls.data)),
            Err(err) => {
                tracing::error!(error = %err, "cannot make the connection's TLS configuration");
                return;
            }
        };
        let stream: Stream = match mode {
            Mode::Explicit => Either::Left(socket),
            Mode::Implicit => {
                match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
                    Ok(Ok(tls)) => Either::Right(tls),
                    Ok(Err(err)) => {
                        tracing::info!(error = %err, "TLS handshake failed");
                        score(&shared, peer).await;
                        return;
                    }
                    Err(_) => {
                        deadline_refusal(&shared, peer);
                        return;
                    }
                }
            }
        };
        let implicit = mode == Mode::Implicit;
        let mut session = Session {
            login: Login::new(shared.hub.clone(), peer),
            shared,
            peer,
            local,
            acceptor,
            data_acceptor,
            control: Some(Control::new(stream)),
            user: None,
            failed_logins: 0,
            client: None,
            startup: Some(startup),
            deadline,
            deadline_refused: false,
            // Implicit FTPS protects data connections from the start.
            pbsz: implicit,
            private: implicit,
            cwd: VirtualPath::Root,
            rest: 0,
            rename_from: None,
            plan: None,
        };
        session.main().await;
    }

    async fn main(&mut self) {
        if self.reply(220, GREETING).await.is_err() {
            return;
        }
        loop {
            let config = &self.shared.config;
            let logged_in = self.client.is_some();
            let until = if logged_in {
                Instant::now() + Duration::from_secs(config.idle_timeout_seconds)
            } else {
                self.deadline
            };
            let Some(control) = self.control.as_mut() else {
                break;
            };
            let shutdown = self.shared.shutdown.clone();
            let wake = tokio::select! {
                line = control.read() => Wake::Line(line),
                () = tokio::time::sleep_until(until) => Wake::Timeout,
                reason = closed(&mut self.client) => Wake::Closed(reason),
                () = shutdown.cancelled() => Wake::Shutdown,
            };
            let flow = match wake {
                Wake::Line(Ok(Line::Command(command))) => self.command(command).await,
                Wake::Line(Ok(Line::TooLong)) => {
                    tracing::info!("command line too long");
                    self.say(
                        500,
                        &format!("Command line longer than {MAX_LINE} bytes: closing"),
                    )
                    .await;
                    break;
                }
                Wake::Line(Ok(Line::Closed) | Err(_)) => break,
                Wake::Timeout if logged_in => {
                    self.say(
                        421,
                        &format!(
                            "Idle for {} s: closing the session",
                            config.idle_timeout_seconds
                        ),
                    )
                    .await;
                    break;
                }
                Wake::Timeout => {
                    self.deadline_refused = true;
                    deadline_refusal(&self.shared, self.peer);
                    self.say(421, "No login in time: closing").await;
                    break;
                }
                Wake::Closed(reason) => {
                    tracing::info!(reason = %reason, "session closed by the hub");
                    self.say(421, &format!("Session closed by the server: {reason}"))
                        .await;
                    break;
                }
                Wake::Shutdown => {
                    self.say(421, "The server is shutting down").await;
                    break;
                }
            };
            match flow {
                Ok(Flow::Go) => {}
                Ok(Flow::Quit) | Err(_) => break,
            }
        }
        if self.client.is_none() && !self.deadline_refused {
            // Ended without logging in (and without a deadline refusal, which was scored).
            score(&self.shared, self.peer).await;
        }
        if let Some(control) = self.control.take() {
            control.close().await;
        }
    }

    /// Sends a reply.
    async fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        match self.control.as_mut() {
            Some(control) => control.reply(code, text).await,
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Sends a last reply, ignoring a connection that is already gone.
    async fn say(&mut self, code: u16, text: &str) {
        let _ = self.reply(code, text).await;
    }

    /// Replies and goes on.
    async fn answer(&mut self, code: u16, text: &str) -> io::Result<Flow> {
        self.reply(code, text).await?;
        Ok(Flow::Go)
    }

    /// Replies with a Hub refusal and goes on.
    async fn refuse(&mut self, err: &CoreError) -> io::Result<Flow> {
        let (code, text) = refusal(err);
        self.answer(code, &text).await
    }

    fn is_tls(&self) -> bool {
        self.control.as_ref().is_some_and(Control::is_tls)
    }

    /// Why USER or PASS may not be sent now: already logged in, or no TLS on the control
    /// connection while plain FTP is not allowed.
    fn login_refusal(&self) -> Option<(u16, &'static str)> {
        if self.client.is_some() {
            return Some((503, "Already logged in"));
        }
        if !self.is_tls() && !self.shared.config.allow_plaintext {
            return Some((534, "TLS required: send AUTH TLS before logging in"));
        }
        None
    }

    fn logged_in(&self) -> Option<ClientSession> {
        self.client.as_ref().map(|(client, _)| client.clone())
    }

    async fn command(&mut self, command: Command) -> io::Result<Flow> {
        let verb = command.verb.as_str();
        // REST holds for the next transfer (clients send PASV or TYPE in between), RNFR's
        // path only for the next command.
        let keeps_rest = matches!(
            verb,
            "PASV" | "EPSV" | "PORT" | "EPRT" | "TYPE" | "MODE" | "STRU" | "NOOP" | "REST"
        );
        let rest = if keeps_rest {
            self.rest
        } else {
            std::mem::take(&mut self.rest)
        };
        let rename_from = self.rename_from.take();
        if self.client.is_none() && !BEFORE_LOGIN.contains(&verb) {
            if verb.is_empty() {
                return self.answer(500, "Syntax error: no command").await;
            }
            return self.answer(530, "Log in first (USER and PASS)").await;
        }
        match verb {
            "AUTH" => self.auth(&command).await,
            "PBSZ" => {
                if !self.is_tls() {
                    return self.answer(503, "PBSZ needs AUTH TLS first").await;
                }
                self.pbsz = true;
                self.answer(200, "PBSZ=0").await
            }
            "PROT" => self.prot(&command).await,
            "CCC" => {
                self.answer(534, "CCC refused: the control connection stays encrypted")
                    .await
            }
            "USER" => self.user(&command).await,
            "PASS" => self.pass(command).await,
            "FEAT" => {
                let mut features = vec![
                    "Features:",
                    "AUTH TLS",
                    "PBSZ",
                    "PROT",
                    "EPSV",
                    "MDTM",
                    "REST STREAM",
                    "SIZE",
                    "TVFS",
                    "UTF8",
                ];
                if self.shared.config.allow_active {
                    features.push("EPRT");
                }
                let mlst = format!("MLST {}", listing::MLST_FACTS);
                features.push(&mlst);
                features.push("End");
                self.answer(211, &features.join("\n")).await
            }
            "SYST" => self.answer(215, "UNIX Type: L8").await,
            "NOOP" => self.answer(200, "OK").await,
            "QUIT" => {
                self.reply(221, "Goodbye").await?;
                Ok(Flow::Quit)
            }
            "OPTS" => {
                let option = command.text().to_ascii_uppercase();
                if option == "UTF8 ON" || option == "UTF-8 ON" {
                    self.answer(200, "UTF-8 is always on").await
                } else if option.starts_with("MLST") {
                    self.answer(200, "MLST OPTS type;size;modify;perm;").await
                } else {
                    self.answer(501, "Unknown option").await
                }
            }
            "HELP" => {
                self.answer(
                    214,
                    "Commands: AUTH PBSZ PROT USER PASS PWD CWD CDUP PASV EPSV TYPE MODE STRU LIST NLST MLSD MLST RETR STOR DELE RNFR RNTO SIZE MDTM REST FEAT OPTS SYST STAT NOOP QUIT\nSend files with STOR to /outbox/<recipient>/; collect them from /inbox/<sender>/.",
                )
                .await
            }
            "STAT" if command.arg.is_empty() => {
                let account = self
                    .logged_in()
                    .map(|c| c.account.to_string())
                    .unwrap_or_default();
                let data = if self.private { "private" } else { "clear" };
                self.answer(
                    211,
                    &format!("Mailroom FTPS\nLogged in as {account}, data protection {data}\nEnd"),
                )
                .await
            }
            "TYPE" => match command.text().to_ascii_uppercase().as_str() {
                // Files cross unchanged in every type: a delivery is never rewritten.
                "A" | "A N" | "I" | "L 8" => self.answer(200, "Type set").await,
                _ => self.answer(504, "Only TYPE I and A are offered").await,
            },
            "MODE" => match command.text().to_ascii_uppercase().as_str() {
                "S" => self.answer(200, "Mode S").await,
                _ => self.answer(504, "Only MODE S is offered").await,
            },
            "STRU" => match command.text().to_ascii_uppercase().as_str() {
                "F" => self.answer(200, "Structure F").await,
                _ => self.answer(504, "Only STRU F is offered").await,
            },
            "ALLO" => self.answer(202, "No storage allocation needed").await,
            "ABOR" => self.answer(226, "No transfer to abort").await,
            "PWD" | "XPWD" => {
                let cwd = self.cwd.to_string().replace('"', "\"\"");
                self.answer(257, &format!("\"{cwd}\" is the current folder"))
                    .await
            }
            "CWD" | "XCWD" => self.cwd(&command.arg).await,
            "CDUP" | "XCUP" => {
                self.cwd = self.cwd.parent();
                self.answer(250, &format!("Folder is now {}", self.cwd)).await
            }
            "PASV" => self.pasv().await,
            "EPSV" => self.epsv(&command).await,
            "PORT" | "EPRT" => self.port(&command).await,
            "LIST" | "NLST" | "MLSD" => self.list(verb, &command.arg).await,
            "MLST" => self.mlst(&command.arg).await,
            "SIZE" | "MDTM" => self.size_or_time(verb, &command.arg).await,
            "RETR" => self.retr(&command.arg, rest).await,
            "STOR" => self.stor(&command.arg, rest).await,
            "APPE" | "STOU" => {
                self.answer(
                    550,
                    &format!(
                        "{verb} refused: a delivery cannot be appended to or named by the server; send the whole file with STOR"
                    ),
                )
                .await
            }
            "REST" => match command.text().parse::<u64>() {
                Ok(offset) => {
                    self.rest = offset;
                    self.answer(
                        350,
                        &format!("Restarting at {offset} (downloads only): send RETR"),
                    )
                    .await
                }
                Err(_) => self.answer(501, "REST needs a byte offset").await,
            },
            "DELE" => self.remove(&command.arg, false).await,
            "RMD" | "XRMD" => self.remove(&command.arg, true).await,
            "MKD" | "XMKD" => {
                let result = self
                    .path(&command.arg)
                    .and_then(|path| self.shared.hub.make_dir(&path));
                match result {
                    Ok(()) => self.answer(257, "Created").await,
                    Err(err) => self.refuse(&err).await,
                }
            }
            "RNFR" => self.rnfr(&command.arg).await,
            "RNTO" => self.rnto(&command.arg, rename_from).await,
            "" => self.answer(500, "Syntax error: no command").await,
            _ => self.answer(502, "Command not implemented").await,
        }
    }

    // ----- TLS and login ---------------------------------------------------------------

    async fn auth(&mut self, command: &Command) -> io::Result<Flow> {
        let mechanism = command.text().to_ascii_uppercase();
        if !matches!(mechanism.as_str(), "TLS" | "TLS-C" | "SSL") {
            return self.answer(504, "Only AUTH TLS is offered").await;
        }
        if self.is_tls() {
            return self.answer(503, "TLS is already on").await;
        }
        if self.client.is_some() {
            return self
                .answer(503, "AUTH TLS must come before the login")
                .await;
        }
        let Some(control) = self.control.take() else {
            return Ok(Flow::Quit);
        };
        match tokio::time::timeout_at(self.deadline, control.start_tls(&self.acceptor)).await {
            Ok(Ok(control)) => {
                self.control = Some(control);
                // RFC 4217 §4: the login starts over under TLS.
                self.user = None;
                Ok(Flow::Go)
            }
            Ok(Err(err)) => {
                tracing::info!(error = %err, "TLS upgrade failed");
                Ok(Flow::Quit)
            }
            Err(_) => {
                self.deadline_refused = true;
                deadline_refusal(&self.shared, self.peer);
                Ok(Flow::Quit)
            }
        }
    }

    async fn prot(&mut self, command: &Command) -> io::Result<Flow> {
        if !self.is_tls() {
            return self.answer(503, "PROT needs AUTH TLS first").await;
        }
        if !self.pbsz {
            return self.answer(503, "Send PBSZ 0 before PROT").await;
        }
        match command.text().to_ascii_uppercase().as_str() {
            "P" => {
                self.private = true;
                self.answer(200, "Data connections will be encrypted").await
            }
            "C" if self.shared.config.allow_plaintext => {
                self.private = false;
                self.answer(200, "Data connections will be in clear text")
                    .await
            }
            "C" | "S" | "E" => {
                self.answer(
                    536,
                    "Only PROT P is offered: data connections must be encrypted",
                )
                .await
            }
            _ => self.answer(504, "Unknown protection level").await,
        }
    }

    async fn user(&mut self, command: &Command) -> io::Result<Flow> {
        if let Some((code, text)) = self.login_refusal() {
            return self.answer(code, text).await;
        }
        let name = command.text();
        if name.is_empty() {
            return self.answer(501, "USER needs a name").await;
        }
        self.user = Some(name);
        self.answer(331, "Password required").await
    }

    async fn pass(&mut self, command: Command) -> io::Result<Flow> {
        if let Some((code, text)) = self.login_refusal() {
            return self.answer(code, text).await;
        }
        let Some(user) = self.user.take() else {
            return self.answer(503, "Send USER first").await;
        };
        let password = String::from_utf8_lossy(&command.arg).into_owned();
        let certificate = self.control.as_ref().and_then(Control::peer_certificate);
        match self
            .login
            .attempt(&user, password, certificate.as_ref())
            .await
        {
            Ok(LoginStep::Accepted(client, guard)) => {
                tracing::info!(account = %client.account, "logged in");
                if let Some(startup) = self.startup.take() {
                    startup.authenticated();
                }
                let text = format!("Logged in as {}", client.account);
                self.client = Some((client, guard));
                self.answer(230, &text).await
            }
            Ok(_) => {
                self.failed_logins += 1;
                if self.failed_logins >= MAX_LOGIN_ATTEMPTS {
                    self.reply(530, "Login incorrect; too many attempts: closing")
                        .await?;
                    return Ok(Flow::Quit);
                }
                self.answer(530, "Login incorrect").await
            }
            Err(reason) => {
                tracing::error!(reason = %reason, "login could not be checked");
                self.reply(421, "The login could not be checked; try again later")
                    .await?;
                Ok(Flow::Quit)
            }
        }
    }

    // ----- paths and listings ------------------------------------------------------------

    /// A command's path argument, relative to the current folder, through the core's parser.
    fn path(&self, arg: &[u8]) -> Result<VirtualPath, CoreError> {
        resolve_path(&self.cwd, arg)
    }

    /// The logged-in client and a command's path; `None` after replying with the refusal.
    async fn target(&mut self, arg: &[u8]) -> io::Result<Option<(ClientSession, VirtualPath)>> {
        let Some(client) = self.logged_in() else {
            return Ok(None);
        };
        match self.path(arg) {
            Ok(path) => Ok(Some((client, path))),
            Err(err) => {
                self.refuse(&err).await?;
                Ok(None)
            }
        }
    }

    async fn cwd(&mut self, arg: &[u8]) -> io::Result<Flow> {
        let Some((client, path)) = self.target(arg).await? else {
            return Ok(Flow::Go);
        };
        match self.shared.hub.stat(&client, &path).await {
            Ok(entry) if entry.is_dir => {
                self.cwd = path;
                self.answer(250, &format!("Folder is now {}", self.cwd))
                    .await
            }
            Ok(_) => {
                self.answer(550, &format!("{path} is a file, not a folder"))
                    .await
            }
            Err(err) => self.refuse(&err).await,
        }
    }

    async fn list(&mut self, verb: &str, arg: &[u8]) -> io::Result<Flow> {
        let Some((client, path)) = self.target(skip_list_options(arg)).await? else {
            return Ok(Flow::Go);
        };
        if let Some((code, text)) = self.data_refusal() {
            return self.answer(code, &text).await;
        }
        let hub = &self.shared.hub;
        let entries = if path.is_dir() {
            hub.list(&client, &path).await
        } else if verb == "MLSD" {
            Err(CoreError::not_found(format!(
                "{path} is a file, not a folder"
            )))
        } else {
            hub.stat(&client, &path).await.map(|entry| vec![entry])
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err(err) => return self.refuse(&err).await,
        };
        let now = time::OffsetDateTime::now_utc();
        let text: String = entries
            .iter()
            .map(|entry| match verb {
                "NLST" => format!("{}\r\n", entry.name),
                "MLSD" => format!("{}\r\n", listing::facts(entry, &entry.name)),
                _ => listing::list_line(entry, now),
            })
            .collect();
        let Some(mut stream) = self.data_connection(&format!("Listing {path}")).await? else {
            return Ok(Flow::Go);
        };
        match data::send_text(&mut stream, &text).await {
            Ok(()) => self.answer(226, "Listing sent").await,
            Err(err) => {
                self.answer(426, &format!("Data connection failed: {err}"))
                    .await
            }
        }
    }

    async fn mlst(&mut self, arg: &[u8]) -> io::Result<Flow> {
        let Some((client, path)) = self.target(arg).await? else {
            return Ok(Flow::Go);
        };
        match self.shared.hub.stat(&client, &path).await {
            Ok(entry) => {
                let facts = listing::facts(&entry, &path.to_string());
                self.answer(250, &format!("Listing {path}\n{facts}\nEnd"))
                    .await
            }
            Err(err) => self.refuse(&err).await,
        }
    }

    async fn size_or_time(&mut self, verb: &str, arg: &[u8]) -> io::Result<Flow> {
        let Some((client, path)) = self.target(arg).await? else {
            return Ok(Flow::Go);
        };
        match self.shared.hub.stat(&client, &path).await {
            Ok(entry) if entry.is_dir => {
                self.answer(550, &format!("{path} is a folder, not a file"))
                    .await
            }
            Ok(entry) if verb == "SIZE" => self.answer(213, &entry.size.to_string()).await,
            Ok(entry) => self.answer(213, &listing::mdtm(&entry)).await,
            Err(err) => self.refuse(&err).await,
        }
    }

    // ----- data connections --------------------------------------------------------------

    /// Why a data connection may not be set up or used now, if it may not.
    fn data_refusal(&self) -> Option<(u16, String)> {
        if self.is_tls() && !self.private && !self.shared.config.allow_plaintext {
            return Some((
                534,
                "Data connections must be encrypted: send PBSZ 0 and PROT P first".to_owned(),
            ));
        }
        None
    }

    async fn pasv(&mut self) -> io::Result<Flow> {
        if let Some((code, text)) = self.data_refusal() {
            return self.answer(code, &text).await;
        }
        let IpAddr::V4(local) = self.local.ip() else {
            return self.answer(522, "PASV is for IPv4; use EPSV (1,2)").await;
        };
        let Some(port) = self.listen_passive().await? else {
            return Ok(Flow::Go);
        };
        let [a, b, c, d] = self.shared.config.passive_address.unwrap_or(local).octets();
        self.answer(
            227,
            &format!(
                "Entering Passive Mode ({a},{b},{c},{d},{},{})",
                port >> 8,
                port & 0xff
            ),
        )
        .await
    }

    async fn epsv(&mut self, command: &Command) -> io::Result<Flow> {
        match command.text().to_ascii_uppercase().as_str() {
            "ALL" => return self.answer(200, "EPSV ALL: only EPSV from now on").await,
            "" | "1" | "2" => {}
            _ => {
                return self
                    .answer(522, "Network protocol not supported, use (1,2)")
                    .await;
            }
        }
        if let Some((code, text)) = self.data_refusal() {
            return self.answer(code, &text).await;
        }
        let Some(port) = self.listen_passive().await? else {
            return Ok(Flow::Go);
        };
        self.answer(229, &format!("Entering Extended Passive Mode (|||{port}|)"))
            .await
    }

    /// Binds a passive listener for the next transfer; its port, or `None` after a 425.
    async fn listen_passive(&mut self) -> io::Result<Option<u16>> {
        self.plan = None;
        let ports = self.shared.config.passive_ports.range();
        let bound = data::bind_passive(self.local.ip(), ports).await;
        match bound.and_then(|listener| Ok((listener.local_addr()?.port(), listener))) {
            Ok((port, listener)) => {
                self.plan = Some(Plan::Passive(listener));
                Ok(Some(port))
            }
            Err(err) => {
                tracing::warn!(error = %err, "no passive port");
                self.reply(425, "No passive port is free; try again")
                    .await?;
                Ok(None)
            }
        }
    }

    async fn port(&mut self, command: &Command) -> io::Result<Flow> {
        if !self.shared.config.allow_active {
            return self
                .answer(502, "Active mode is off: use PASV or EPSV")
                .await;
        }
        if let Some((code, text)) = self.data_refusal() {
            return self.answer(code, &text).await;
        }
        let text = command.text();
        let target = if command.verb == "PORT" {
            parse_port(&text)
        } else {
            parse_eprt(&text)
        };
        let Some(target) = target else {
            return self.answer(501, "Cannot parse the address").await;
        };
        if target.ip() != self.peer.ip() || target.port() < 1024 {
            tracing::warn!(target = %target, "active-mode target refused");
            return self
                .answer(
                    501,
                    "Refused: data connections go only to your own address and a port of 1024 or more",
                )
                .await;
        }
        self.plan = Some(Plan::Active(target));
        self.answer(200, "Active mode: the server will connect")
            .await
    }

    /// Opens the data connection for a transfer the Hub has already allowed: the TCP
    /// connection, then the 150, then TLS. `None` after a 425.
    async fn data_connection(&mut self, what: &str) -> io::Result<Option<Stream>> {
        let Some(plan) = self.plan.take() else {
            self.reply(425, "Use PASV or EPSV first").await?;
            return Ok(None);
        };
        let config = &self.shared.config;
        let timeout = Duration::from_secs(config.data_timeout_seconds);
        let require_resumption = config.require_tls_resumption;
        let socket = match data::open(plan, self.peer.ip(), &self.shared.proxy, timeout).await {
            Ok(socket) => socket,
            Err(Refused(text)) => {
                self.reply(425, &text).await?;
                return Ok(None);
            }
        };
        self.reply(150, what).await?;
        let tls = if self.is_tls() && self.private {
            Some(&self.data_acceptor)
        } else {
            None
        };
        match data::secure(socket, tls, require_resumption, timeout).await {
            Ok(stream) => Ok(Some(stream)),
            Err(Refused(text)) => {
                self.reply(425, &text).await?;
                Ok(None)
            }
        }
    }

    // ----- transfers ---------------------------------------------------------------------

    async fn retr(&mut self, arg: &[u8], rest: u64) -> io::Result<Flow> {
        let Some((client, path)) = self.target(arg).await? else {
            return Ok(Flow::Go);
        };
        if let Some((code, text)) = self.data_refusal() {
            return self.answer(code, &text).await;
        }
        if self.plan.is_none() {
            return self.answer(425, "Use PASV or EPSV first").await;
        }
        let hub = self.shared.hub.clone();
        let read = match hub.open_read(&client, &path).await {
            Ok(read) => read,
            Err(err) => return self.refuse(&err).await,
        };
        if rest > read.size() {
            let size = read.size();
            close_read(&hub, &client, read).await;
            return self
                .answer(
                    554,
                    &format!("REST {rest} is past the end of the file ({size} bytes)"),
                )
                .await;
        }
        let what = format!("Sending {path} ({} bytes)", read.size() - rest);
        let Some(mut stream) = self.data_connection(&what).await? else {
            close_read(&hub, &client, read).await;
            return Ok(Flow::Go);
        };
        let sent = tokio::select! {
            sent = data::copy_out(&read, rest, &mut stream) => Some(sent),
            _ = closed(&mut self.client) => None,
        };
        // Accounted whatever happened: the Hub decides from the bytes actually read.
        close_read(&hub, &client, read).await;
        match sent {
            Some(Ok(bytes)) => self.answer(226, &format!("Sent {bytes} bytes")).await,
            Some(Err(SendFailure::Read(err))) => self.refuse(&err).await,
            Some(Err(SendFailure::Write(err))) => {
                self.answer(426, &format!("Data connection failed: {err}"))
                    .await
            }
            None => self.answer(426, "The session was closed").await,
        }
    }

    async fn stor(&mut self, arg: &[u8], rest: u64) -> io::Result<Flow> {
        let Some((client, path)) = self.target(arg).await? else {
            return Ok(Flow::Go);
        };
        if rest != 0 {
            return self
                .answer(
                    550,
                    "Uploads cannot be resumed or appended to: send the whole file again (without REST)",
                )
                .await;
        }
        if let Some((code, text)) = self.data_refusal() {
            return self.answer(code, &text).await;
        }
        if self.plan.is_none() {
            return self.answer(425, "Use PASV or EPSV first").await;
        }
        let hub = self.shared.hub.clone();
        let mut upload = match hub.begin_upload(&client, &path).await {
            Ok(upload) => upload,
            Err(err) => return self.refuse(&err).await,
        };
        let Some(mut stream) = self.data_connection(&format!("Receiving {path}")).await? else {
            hub.abort_upload(upload, "no data connection").await;
            return Ok(Flow::Go);
        };
        let received = tokio::select! {
            received = data::copy_in(&mut stream, &mut upload) => Some(received),
            _ = closed(&mut self.client) => None,
        };
        match received {
            Some(Ok(bytes)) => {
                // Our own close_notify: the client may wait for it before reading the reply.
                let timeout = Duration::from_secs(self.shared.config.data_timeout_seconds);
                let _ = tokio::time::timeout(timeout, stream.shutdown()).await;
                drop(stream);
                // The 226 goes out only after the delivery is durable and committed.
                match hub.finish_upload(upload).await {
                    Ok(_) => {
                        self.answer(226, &format!("Received {bytes} bytes: delivered"))
                            .await
                    }
                    Err(err) => self.refuse(&err).await,
                }
            }
            Some(Err(Failure::Read(err))) => {
                hub.abort_upload(upload, &format!("data connection failed: {err}"))
                    .await;
                self.answer(
                    426,
                    &format!("Data connection failed ({err}): nothing was delivered"),
                )
                .await
            }
            Some(Err(Failure::Write(err))) => {
                hub.abort_upload(upload, &format!("write failed: {}", err.message()))
                    .await;
                self.refuse(&err).await
            }
            None => {
                hub.abort_upload(upload, "the session was closed").await;
                self.answer(426, "The session was closed: nothing was delivered")
                    .await
            }
        }
    }

    // ----- changes -----------------------------------------------------------------------

    async fn remove(&mut self, arg: &[u8], folder: bool) -> io::Result<Flow> {
        let Some((client, path)) = self.target(arg).await? else {
            return Ok(Flow::Go);
        };
        if folder && !path.is_dir() {
            return self.answer(550, &format!("{path} is not a folder")).await;
        }
        if !folder && path.is_dir() {
            return self
                .answer(550, &format!("{path} is a folder, not a file"))
                .await;
        }
        match self.shared.hub.remove(&client, &path).await {
            Ok(()) => self.answer(250, &format!("Removed {path}")).await,
            Err(err) => self.refuse(&err).await,
        }
    }

    async fn rnfr(&mut self, arg: &[u8]) -> io::Result<Flow> {
        let Some((client, path)) = self.target(arg).await? else {
            return Ok(Flow::Go);
        };
        match self.shared.hub.stat(&client, &path).await {
            Ok(_) => {
                self.rename_from = Some(path);
                self.answer(350, "Ready for RNTO").await
            }
            Err(err) => self.refuse(&err).await,
        }
    }

    async fn rnto(&mut self, arg: &[u8], from: Option<VirtualPath>) -> io::Result<Flow> {
        let Some(from) = from else {
            return self.answer(503, "Send RNFR first").await;
        };
        let Some((client, to)) = self.target(arg).await? else {
            return Ok(Flow::Go);
        };
        match self.shared.hub.rename(&client, &from, &to).await {
            Ok(()) => self.answer(250, &format!("Renamed to {to}")).await,
            Err(err) => self.refuse(&err).await,
        }
    }
}

/// Resolves with the Hub's reason when it closes the logged-in session; never before login.
async fn closed(client: &mut Option<(ClientSession, LiveSession)>) -> String {
    match client {
        Some((_, guard)) => guard.closed().await,
        None => std::future::pending().await,
    }
}

/// Ends a download, accounting for it.
async fn close_read(
    hub: &mailroom_core::Hub,
    client: &ClientSession,
    read: mailroom_core::ReadHandle,
) {
    if let Err(err) = hub.close_read(client, read).await {
        tracing::warn!(error = %err, "could not account a download");
    }
}

/// Scores a connection that ended without logging in.
async fn score(shared: &Shared, peer: SocketAddr) {
    if let Err(err) = shared
        .hub
        .score_unauthenticated(Some(peer.to_string()))
        .await
    {
        tracing::warn!(error = %err, "could not score an unauthenticated connection");
    }
}

/// Records a connection that did not log in by the deadline.
fn deadline_refusal(shared: &Shared, peer: SocketAddr) {
    let reason = format!(
        "no login within {} s (login_grace_seconds)",
        shared.config.login_grace_seconds
    );
    let recorded = shared.recorder.record(peer, reason.clone());
    tracing::warn!(reason = %reason, recorded, "connection closed before login");
}

/// The one mapping from core error kinds to FTP replies, with the Hub's own sentence: 550
/// (not found, denied), 553 (name not allowed), 552 (over a limit), 450 (transient), 451
/// (local error, whose details stay in the log).
fn refusal(err: &CoreError) -> (u16, String) {
    tracing::info!(kind = %err.kind(), reason = %err.message(), "ftps request refused");
    match err.kind() {
        ErrorKind::NotFound
        | ErrorKind::Conflict
        | ErrorKind::PermissionDenied
        | ErrorKind::RouteDenied => (550, err.message().to_owned()),
        ErrorKind::InvalidName => (553, err.message().to_owned()),
        ErrorKind::QuotaExceeded => (552, err.message().to_owned()),
        ErrorKind::Transient => (450, err.message().to_owned()),
        ErrorKind::Internal => (
            451,
            "Local error; the server log has the details".to_owned(),
        ),
    }
}

/// `LIST -la path` → `path`: ls-style options some clients send are skipped.
fn skip_list_options(mut arg: &[u8]) -> &[u8] {
    while arg.starts_with(b"-") {
        arg = match arg.iter().position(|&b| b == b' ') {
            Some(space) => &arg[space + 1..],
            None => &arg[..0],
        };
    }
    arg
}

/// A path argument taken from the current folder `cwd`: absolute as sent, relative joined
/// to `cwd`, empty the folder itself; the core's parser decides the rest.
pub(crate) fn resolve_path(cwd: &VirtualPath, arg: &[u8]) -> Result<VirtualPath, CoreError> {
    if arg.is_empty() {
        return Ok(cwd.clone());
    }
    if arg.starts_with(b"/") {
        return VirtualPath::parse_bytes(arg);
    }
    let mut full = cwd.to_string().into_bytes();
    full.push(b'/');
    full.extend_from_slice(arg);
    VirtualPath::parse_bytes(&full)
}

/// `PORT h1,h2,h3,h4,p1,p2` (RFC 959).
pub(crate) fn parse_port(text: &str) -> Option<SocketAddr> {
    let numbers: Vec<u8> = text
        .split(',')
        .map(|n| n.trim().parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, p1, p2] = numbers[..] else {
        return None;
    };
    Some(SocketAddr::from((
        [a, b, c, d],
        u16::from(p1) << 8 | u16::from(p2),
    )))
}

/// `EPRT |1|132.235.1.2|6275|` (RFC 2428).
pub(crate) fn parse_eprt(text: &str) -> Option<SocketAddr> {
    let delimiter = text.chars().next()?;
    let parts: Vec<&str> = text.split(delimiter).collect();
    let [_, family, address, port, _] = parts[..] else {
        return None;
    };
    let ip: IpAddr = address.parse().ok()?;
    let family_ok = matches!((family, ip), ("1", IpAddr::V4(_)) | ("2", IpAddr::V6(_)));
    family_ok.then_some(SocketAddr::new(ip, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_addresses_parse() {
        assert_eq!(
            parse_port("127,0,0,1,4,1"),
            Some("127.0.0.1:1025".parse().unwrap())
        );
        assert_eq!(parse_port("127,0,0,1,4"), None);
        assert_eq!(parse_port("127,0,0,1,4,256"), None);
        assert_eq!(
            parse_eprt("|1|127.0.0.1|2000|"),
            Some("127.0.0.1:2000".parse().unwrap())
        );
        assert_eq!(
            parse_eprt("|2|::1|2000|"),
            Some("[::1]:2000".parse().unwrap())
        );
        assert_eq!(parse_eprt("|2|127.0.0.1|2000|"), None);
        assert_eq!(parse_eprt("|1|127.0.0.1|x|"), None);
        assert_eq!(parse_eprt(""), None);
    }

    #[test]
    fn list_options_are_skipped() {
        assert_eq!(skip_list_options(b"-la /inbox"), b"/inbox");
        assert_eq!(skip_list_options(b"-a"), b"");
        assert_eq!(skip_list_options(b"/outbox/bob"), b"/outbox/bob");
    }

    #[test]
    fn every_kind_has_a_reply() {
        for (kind, code) in [
            (ErrorKind::NotFound, 550),
            (ErrorKind::Conflict, 550),
            (ErrorKind::PermissionDenied, 550),
            (ErrorKind::RouteDenied, 550),
            (ErrorKind::InvalidName, 553),
            (ErrorKind::QuotaExceeded, 552),
            (ErrorKind::Transient, 450),
            (ErrorKind::Internal, 451),
        ] {
            let (got, text) = refusal(&CoreError::new(kind, "secret detail"));
            assert_eq!(got, code, "{kind}");
            assert_eq!(text.contains("secret detail"), kind != ErrorKind::Internal);
        }
    }
}
