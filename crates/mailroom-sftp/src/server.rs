//! The SSH server: accept loop, connection limits, login, and the channel requests it honours
//! (the `sftp` subsystem and `scp -t`/`scp -f`). Everything else (shells, commands, ptys,
//! port, agent and X11 forwarding) is refused.
//!
//! russh has no LoginGraceTime and no MaxStartups, so this module owns both: a connection
//! must log in within `login_grace_seconds` of its accept, whatever it sends meanwhile, or
//! the socket is closed (`preauth::PreauthStream`); and unauthenticated connections are
//! counted (`mailroom_net::StartupLimits`), a newcomer past those limits being closed before
//! any SSH byte is sent. Every such refusal is logged and recorded as a refused login.
//! Before those limits, the acceptor asks [`screen`]: `Hub::admit` refuses the deny list and
//! banned addresses (so they never hold a startup place), and a connection from `[auth]
//! safe_networks` is not counted by the startup limits at all; it still has the login grace
//! time and goes through the login as any other.
//!
//! Behind a load balancer (`proxy_protocol_from`), `mailroom_net::Acceptor` reads the PROXY
//! header first, and the client's address it names is the peer of everything here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::server::{Auth, Msg, Session};
use std::borrow::Cow;

use mailroom_ace::{AuthMethod, SshMethods};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Preferred, kex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use mailroom_core::{
    ClientSession, Credential, Factor, Hub, LiveSession, LoginProgress, LoginStep, Protocol,
    RefusalRecorder, Secret,
};
use mailroom_net::{
    Acceptor, Activity, ConnectionLimits, ConnectionPermit, ProxyProtocol, Screening, StartupLimits,
};

use crate::config::Config;
use crate::preauth::{PreauthStream, StartupSlot, Violation};
use crate::{scp, sftp};

/// Session channels one connection may open at once.
const MAX_CHANNELS: usize = 10;

/// Serves SSH on `listener` until `shutdown` is cancelled, then stops accepting and returns
/// once every running session has ended.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: Config,
    host_key: PrivateKey,
    methods: SshMethods,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let logins = Logins::of(&methods);
    let ssh_config = Arc::new(ssh_config(&config, host_key, &methods)?);
    let limits = ConnectionLimits::for_listener(
        "sftp",
        config.max_connections,
        config.max_connections_per_address,
    );
    let startups = StartupLimits::new(config.max_startups, config.max_startups_per_address);
    let proxy = ProxyProtocol::new(config.proxy_protocol_from.clone());
    let screen_hub = hub.clone();
    let mut acceptor = Acceptor::new(listener, limits, startups, proxy)
        .with_screen(move |peer| screen(screen_hub.clone(), peer));
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let recorder = RefusalRecorder::new(hub.clone(), Protocol::Ssh, tracker.clone());
    loop {
        let Some(admitted) = acceptor
            .accept(&shutdown, |peer, reason| recorder.record(peer, reason))
            .await
        else {
            break;
        };
        let (socket, peer) = (admitted.socket, admitted.peer);
        let span = tracing::info_span!(
            "session",
            id = %mailroom_net::session_id(),
            proto = "ssh",
            peer = %peer,
            via = admitted.via.map(tracing::field::display),
        );
        let connection = Connection {
            hub: hub.clone(),
            config: config.clone(),
            ssh_config: ssh_config.clone(),
            logins,
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            recorder: recorder.clone(),
        };
        tracker.spawn(
            connection
                .run(
                    socket,
                    peer,
                    admitted.permit,
                    StartupSlot::new(admitted.startup),
                )
                .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// The acceptor's screen of a new connection, before the startup limits: the deny list and
/// bans refuse it (`Hub::admit`, which records the refusal), the safe networks are exempt
/// from the startup limits, anyone else is counted.
async fn screen(hub: Arc<Hub>, peer: SocketAddr) -> Screening {
    if let Err(err) = hub.admit(peer, Protocol::Ssh).await {
        tracing::info!(peer = %peer, reason = %err, "connection refused");
        return Screening::Refuse;
    }
    if hub.auth_config().defender.is_safe(peer.ip()) {
        Screening::Exempt
    } else {
        Screening::Count
    }
}

/// The russh configuration: our host key, the algorithms of `[ace.encryption]` and
/// `[ace.compression]` in their order (the strict-kex and ext-info markers added), our limits.
/// A name russh does not know is refused here, naming it (the ACE check knows only names
/// russh offers, so this is a guard, not a path).
fn ssh_config(
    config: &Config,
    host_key: PrivateKey,
    methods: &SshMethods,
) -> std::io::Result<russh::server::Config> {
    fn names<N: for<'a> TryFrom<&'a str>>(kind: &str, list: &[&str]) -> std::io::Result<Vec<N>> {
        list.iter()
            .map(|name| {
                N::try_from(name).map_err(|_| {
                    std::io::Error::other(format!("the SSH library does not offer {kind} {name}"))
                })
            })
            .collect()
    }
    let mut kex: Vec<kex::Name> = names("key exchange", &methods.kex)?;
    kex.extend([
        kex::EXTENSION_SUPPORT_AS_SERVER,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ]);
    Ok(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-Mailroom".into()),
        methods: Logins::of(methods).all(),
        auth_rejection_time: Duration::from_millis(config.auth_rejection_ms),
        // OpenSSH probes with "none" first; answering it at once costs nothing.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        max_auth_attempts: config.max_auth_attempts as usize,
        inactivity_timeout: Some(Duration::from_secs(config.idle_timeout_seconds)),
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        preferred: Preferred {
            kex: Cow::Owned(kex),
            key: Cow::Borrowed(&[
                Algorithm::Ed25519,
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]),
            cipher: Cow::Owned(names("cipher", &methods.ciphers)?),
            mac: Cow::Owned(names("MAC", &methods.macs)?),
            compression: Cow::Owned(names("compression", &methods.compression)?),
            ..Preferred::default()
        },
        ..russh::server::Config::default()
    })
}

/// What one connection needs.
struct Connection {
    hub: Arc<Hub>,
    config: Arc<Config>,
    ssh_config: Arc<russh::server::Config>,
    logins: Logins,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    recorder: RefusalRecorder,
}

impl Connection {
    async fn run(
        self,
        socket: TcpStream,
        peer: SocketAddr,
        _permit: ConnectionPermit,
        startup: StartupSlot,
    ) {
        let grace = Duration::from_secs(self.config.login_grace_seconds);
        let authenticated = Arc::new(AtomicBool::new(false));
        // The deadline runs from here, across the version exchange, the key exchange and the
        // login, whatever the client sends (see `preauth`).
        let (stream, verdict) = PreauthStream::new(socket, grace, authenticated.clone());
        let (activity, mut transfers) = Activity::new();
        let (session_sender, session_receiver) = oneshot::channel();
        let handler = SshHandler {
            span: tracing::Span::current(),
            activity,
            hub: self.hub.clone(),
            config: self.config.clone(),
            peer,
            session: None,
            progress: LoginProgress::default(),
            logins: self.logins,
            interactive: None,
            session_guard: Some(session_sender),
            channels: HashMap::new(),
            authenticated: authenticated.clone(),
            startup,
            tracker: self.tracker.clone(),
        };
        let running =
            match russh::server::run_stream(self.ssh_config.clone(), stream, handler).await {
                Ok(running) => running,
                Err(err) => {
                    self.ended_before_login(peer, &verdict, &err).await;
                    return;
                }
            };
        let handle = running.handle();
        tokio::pin!(running);
        let mut stopping = false;
        // The registered session, once the login completes; the hub fires it to close the
        // session (account disabled, deleted, banned, out of its networks).
        let mut session_receiver = session_receiver;
        let mut guard: Option<LiveSession> = None;
        let closed = async |guard: &mut Option<LiveSession>| match guard {
            Some(guard) => guard.closed().await,
            None => std::future::pending().await,
        };
        let result = loop {
            tokio::select! {
                result = &mut running => break result,
                received = &mut session_receiver, if guard.is_none() => {
                    if let Ok(received) = received {
                        guard = Some(received);
                    } else {
                        session_receiver = oneshot::channel().1;
                    }
                }
                reason = closed(&mut guard) => {
                    tracing::info!(reason = %reason, "session closed by the hub");
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            format!("session closed: {reason}"),
                            "en".to_owned(),
                        )
                        .await;
                    break (&mut running).await;
                }
                () = self.shutdown.cancelled(), if !stopping => stopping = true,
                changed = transfers.changed(), if stopping => {
                    if changed.is_err() {
                        stopping = false;
                    }
                }
            }
            if stopping && *transfers.borrow() == 0 {
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "the server is shutting down".to_owned(),
                        "en".to_owned(),
                    )
                    .await;
                break (&mut running).await;
            }
        };
        match result {
            Ok(()) if !authenticated.load(Ordering::Acquire) => self.unauthenticated(peer).await,
            Ok(()) => tracing::debug!("session ended"),
            Err(err) if !authenticated.load(Ordering::Acquire) => {
                self.ended_before_login(peer, &verdict, &err).await;
            }
            Err(err) => tracing::debug!(error = %err, "session ended with an error"),
        }
        drop(guard);
    }

    /// Logs and records a connection that ended in an error before logging in: the login
    /// deadline, a framing violation caught by `preauth`, or a protocol error russh found
    /// (each recorded as a refused login, which the defender scores). A client that just went
    /// away (EOF, reset) without logging in is scored as an unauthenticated connection.
    async fn ended_before_login(
        &self,
        peer: SocketAddr,
        verdict: &OnceLock<Violation>,
        err: &russh::Error,
    ) {
        let reason = match (verdict.get(), err) {
            (Some(violation), _) => violation.to_string(),
            (None, russh::Error::IO(_) | russh::Error::Disconnect | russh::Error::HUP) => {
                tracing::debug!(error = %err, "connection closed before login");
                self.unauthenticated(peer).await;
                return;
            }
            (None, err) => format!("protocol error: {err}"),
        };
        let recorded = self.recorder.record(peer, reason.clone());
        tracing::warn!(peer = %peer, reason = %reason, recorded, "connection closed before login");
    }

    /// Scores a connection that ended without completing a login.
    async fn unauthenticated(&self, peer: SocketAddr) {
        if let Err(err) = self.hub.score_unauthenticated(Some(peer.to_string())).await {
            tracing::warn!(error = %err, "could not score an unauthenticated connection");
        }
    }
}

/// The per-connection russh handler.
struct SshHandler {
    /// The connection's `session` span. russh runs the handler in a task of its own, so the
    /// span is carried here and entered (or attached) explicitly.
    span: tracing::Span,
    activity: Activity,
    hub: Arc<Hub>,
    config: Arc<Config>,
    peer: SocketAddr,
    session: Option<ClientSession>,
    /// Factors proved so far in this connection.
    progress: LoginProgress,
    /// The login methods allowed on SSH.
    logins: Logins,
    /// What the keyboard-interactive prompt in flight asked for.
    interactive: Option<Factor>,
    /// Hands the registered session to [`Connection::run`] once the login completes.
    session_guard: Option<oneshot::Sender<LiveSession>>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    authenticated: Arc<AtomicBool>,
    /// The connection's place among the unauthenticated ones, given back at login.
    startup: StartupSlot,
    tracker: TaskTracker,
}

/// The login methods `[ace.authentication]` allows on SSH: a method left out is neither
/// offered nor accepted, whatever the client tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Logins {
    password: bool,
    publickey: bool,
    totp: bool,
}

impl Logins {
    fn of(methods: &SshMethods) -> Logins {
        let has = |method| methods.authentication.contains(&method);
        Logins {
            password: has(AuthMethod::Password),
            publickey: has(AuthMethod::PublicKey),
            totp: has(AuthMethod::Totp),
        }
    }

    /// Every method a first attempt may use. Always the same list, whatever the account, so
    /// the list tells nothing about it. Keyboard-interactive asks for the password first,
    /// then, when the account requires it, a one-time code.
    fn all(self) -> MethodSet {
        self.for_factors(&[Factor::PublicKey, Factor::Password, Factor::Totp])
    }

    /// The SSH methods that can prove the remaining factors.
    fn for_factors(self, factors: &[Factor]) -> MethodSet {
        let mut methods = MethodSet::empty();
        let password = self.password && factors.contains(&Factor::Password);
        let totp = self.totp && factors.contains(&Factor::Totp);
        if self.publickey && factors.contains(&Factor::PublicKey) {
            methods.push(MethodKind::PublicKey);
        }
        if password {
            methods.push(MethodKind::Password);
        }
        if password || totp {
            methods.push(MethodKind::KeyboardInteractive);
        }
        methods
    }

    /// Whether a factor may be proved on SSH.
    fn allows(self, factor: Factor) -> bool {
        match factor {
            Factor::Password => self.password,
            Factor::PublicKey => self.publickey,
            Factor::Totp => self.totp,
            Factor::Certificate => false,
        }
    }
}

impl SshHandler {
    fn accept(&mut self, outcome: mailroom_core::Result<LoginStep>) -> Auth {
        let _entered = self.span.clone().entered();
        match outcome {
            Ok(LoginStep::Accepted(session, guard)) => {
                tracing::info!(account = %session.account, "login");
                self.session = Some(session);
                self.authenticated.store(true, Ordering::Release);
                self.startup.authenticated();
                if let Some(sender) = self.session_guard.take() {
                    let _ = sender.send(guard);
                }
                Auth::Accept
            }
            Ok(LoginStep::Continue(remaining)) => {
                let names: Vec<&str> = remaining.iter().map(|f| f.as_str()).collect();
                tracing::info!(remaining = %names.join(","), "factor accepted; more required");
                Auth::Reject {
                    proceed_with_methods: Some(self.logins.for_factors(&remaining)),
                    partial_success: true,
                }
            }
            Ok(LoginStep::Refused) => self.reject(),
            Err(err) => {
                tracing::error!(error = %err, "login could not be checked");
                self.reject()
            }
        }
    }

    /// The one refusal. It always names the methods explicitly: given `None`, russh drops
    /// `password` from the list after a failed password, so paramiko reads "password not
    /// permitted" (`BadAuthenticationType`) and falls back to keyboard-interactive, which
    /// russh's default method set advertises but nothing answers, until paramiko's 30 s
    /// auth timeout. Measured against russh 0.65 with its defaults: 30.6 s and that error;
    /// with this refusal and only publickey and password offered: refused in
    /// `auth_rejection_ms`, with "Authentication failed".
    fn reject(&self) -> Auth {
        let methods = if self.progress.passed().is_empty() {
            self.logins.all()
        } else {
            self.logins.for_factors(self.progress.remaining())
        };
        Auth::Reject {
            proceed_with_methods: Some(methods),
            partial_success: false,
        }
    }

    fn source(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    /// The logged-in client, with the protocol of the channel it is about to use.
    fn client(&self, protocol: Protocol) -> Option<ClientSession> {
        self.session.clone().map(|mut session| {
            session.protocol = protocol;
            session
        })
    }
}

impl russh::server::Handler for SshHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(self.reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if !self.logins.password {
            return Ok(self.reject());
        }
        let source = self.source();
        let outcome = self
            .hub
            .login(
                &mut self.progress,
                user,
                Credential::Password(Secret::new(password.to_owned())),
                source,
                Protocol::Ssh,
            )
            .await;
        Ok(self.accept(outcome))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if !self.logins.publickey {
            return Ok(self.reject());
        }
        let Ok(blob) = offer.public_key.to_bytes() else {
            return Ok(self.reject());
        };
        match self
            .hub
            .key_acceptable(&self.progress, user, &blob, self.source())
            .await
        {
            Ok(true) => Ok(Auth::Accept),
            Ok(false) => Ok(self.reject()),
            Err(err) => {
                tracing::error!(error = %err, "key could not be checked");
                Ok(self.reject())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if !self.logins.publickey {
            return Ok(self.reject());
        }
        let Ok(blob) = key.public_key.to_bytes() else {
            return Ok(self.reject());
        };
        let source = self.source();
        let outcome = self
            .hub
            .login(
                &mut self.progress,
                user,
                Credential::Key(blob),
                source,
                Protocol::Ssh,
            )
            .await;
        Ok(self.accept(outcome))
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut response) = response else {
            // A new exchange: ask for the password, or for the code once the password (or
            // whatever came first) is proved. A new user name starts over.
            let factor = if self.progress.passed().is_empty() {
                Factor::Password
            } else {
                self.progress.interactive_factor()
            };
            if !self.logins.allows(factor) {
                return Ok(self.reject());
            }
            self.interactive = Some(factor);
            let prompt = match factor {
                Factor::Totp => "Verification code: ",
                _ => "Password: ",
            };
            return Ok(Auth::Partial {
                name: "".into(),
                instructions: "".into(),
                prompts: vec![(prompt.into(), false)].into(),
            });
        };
        let (Some(factor), Some(answer)) = (self.interactive.take(), response.next()) else {
            return Ok(self.reject());
        };
        // One answer, valid UTF-8, of sane length: never trust a length from the wire.
        let answer = match String::from_utf8(answer.to_vec()) {
            Ok(answer) if answer.len() <= 4096 => Secret::new(answer),
            _ => return Ok(self.reject()),
        };
        let source = self.source();
        let credential = match factor {
            Factor::Totp => Credential::Code(answer),
            _ => Credential::Password(answer),
        };
        let outcome = self
            .hub
            .login(&mut self.progress, user, credential, source, Protocol::Ssh)
            .await;
        // A right password with a code still to come: ask for the code in the same exchange
        // (RFC 4256 allows several rounds), as OpenSSH with PAM does. Clients that run one
        // method per service request (paramiko sends a new one for each method, which russh
        // ignores) can then finish password + code with one keyboard-interactive login.
        if let Ok(LoginStep::Continue(remaining)) = &outcome
            && factor == Factor::Password
            && remaining.contains(&Factor::Totp)
            && self.logins.totp
        {
            let _entered = self.span.clone().entered();
            tracing::info!("password accepted; asking for the one-time code");
            self.interactive = Some(Factor::Totp);
            return Ok(Auth::Partial {
                name: "".into(),
                instructions: "".into(),
                prompts: vec![("Verification code: ".into(), false)].into(),
            });
        }
        Ok(self.accept(outcome))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.session.is_none() || self.channels.len() >= MAX_CHANNELS {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let client = self.client(Protocol::Sftp);
        match (name, client, self.channels.remove(&channel_id)) {
            ("sftp", Some(client), Some(channel)) => {
                session.channel_success(channel_id)?;
                let hub = self.hub.clone();
                let max = self.config.max_requests_in_flight as usize;
                let activity = self.activity.clone();
                self.tracker.spawn(
                    sftp::run(channel, hub, client, max, activity).instrument(self.span.clone()),
                );
            }
            (_, _, channel) => {
                let _entered = self.span.clone().entered();
                tracing::info!(subsystem = %name.chars().take(64).collect::<String>(), "subsystem refused");
                if let Some(channel) = channel {
                    self.channels.insert(channel_id, channel);
                }
                session.channel_failure(channel_id)?;
            }
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel_id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let client = self.client(Protocol::Scp);
        match (
            scp::parse_command(data),
            client,
            self.channels.remove(&channel_id),
        ) {
            (Some(command), Some(client), Some(channel)) => {
                session.channel_success(channel_id)?;
                let hub = self.hub.clone();
                let activity = self.activity.clone();
                // A running scp command is a transfer from start to end.
                activity.add(1);
                self.tracker.spawn(
                    async move {
                        scp::run(channel, hub, client, command).await;
                        activity.add(-1);
                    }
                    .instrument(self.span.clone()),
                );
            }
            (_, _, channel) => {
                let _entered = self.span.clone().entered();
                tracing::info!("command refused: this hub runs no commands but scp");
                if let Some(channel) = channel {
                    self.channels.insert(channel_id, channel);
                }
                session.channel_failure(channel_id)?;
            }
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel_id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.span.in_scope(|| tracing::info!("shell refused"));
        session.channel_failure(channel_id)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel_id: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel_id)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel_id: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel_id)?;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel_id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel_id);
        Ok(())
    }
}
