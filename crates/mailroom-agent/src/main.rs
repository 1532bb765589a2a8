//! `mailroom-agent`: the client agent of a Mailroom hub, for systems and people who send and
//! collect files from their own machines. It speaks only the hub's public HTTPS API and does
//! not link the server.
//!
//! `login` pins the hub (a CA file, or the hub's certificate trusted on first use with its
//! fingerprint shown), negotiates the session's methods (`GET /api/v1/ace`, then the login
//! names what it wants) and keeps the tokens in the config folder, 0600 (`session`). It logs
//! in with a password (and a one-time code), a client certificate presented in every
//! handshake (`tls::ClientCertificate`), or both; or it keeps an API key, checked once, as
//! the bearer of every request instead of tokens. `send`,
//! `inbox` and `fetch` are the transfers (`transfer`), through the API client (`hub`), which
//! retries, refreshes and turns refusals into exit codes a script can rely on
//! (`hub::exit`). Standard output carries results (one JSON object per line with `--json`);
//! progress and notes go to standard error.

mod e2e;
mod hub;
mod session;
mod sync;
mod tls;
mod transfer;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mailroom_ace::{Method, Wanted};

use crate::hub::{Failure, Hub, Tokens, exit, fail};
use crate::session::{Credentials, Session, api_key_id};
use crate::tls::{ClientCertificate, Trust};

/// The Mailroom client agent: send and fetch files through a hub's HTTPS API.
#[derive(Debug, Parser)]
#[command(name = "mailroom-agent", version)]
struct Cli {
    /// Print results as JSON, one object per line.
    #[arg(long, global = true)]
    json: bool,
    /// How many times a request is retried when the hub cannot be reached.
    #[arg(long, global = true, default_value_t = 5)]
    retries: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in to a hub and keep the session (tokens or an API key, the pinned certificate,
    /// the agreed methods) in the config folder.
    Login(LoginArgs),
    /// Forget the saved session (and end it on the hub).
    Logout,
    /// Send files to accounts or groups.
    Send {
        /// Recipients: account or group names, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        /// The files to send.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Encrypt end to end to every recipient's keys: the hub stores only ciphertext.
        /// The default when the login agreed on tls+e2e.
        #[arg(long)]
        e2e: bool,
    },
    /// Your end-to-end encryption key: make one (kept in the config folder, 0600, and its
    /// public half registered with the hub), or list the registered ones.
    #[command(subcommand)]
    Key(KeyCommand),
    /// List the files waiting in your inbox.
    Inbox,
    /// Send the files of an outbox folder (`OUTBOX/<recipient>/FILE`, moved to
    /// `OUTBOX/.sent/<recipient>/` once the hub has them) and receive into an inbox folder
    /// (checked, renamed, acknowledged). Safe to kill and run again: nothing is lost or
    /// delivered twice.
    Sync {
        /// The outbox folder.
        #[arg(long, required_unless_present = "inbox")]
        outbox: Option<PathBuf>,
        /// The inbox folder.
        #[arg(long)]
        inbox: Option<PathBuf>,
        /// Keep running, a pass every --interval seconds.
        #[arg(long)]
        watch: bool,
        /// Seconds between passes with --watch.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// The age identity file that decrypts end-to-end encrypted files (default: the
        /// config folder's identity.txt, when there is one).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Send the outbox's files end to end, encrypted to each recipient's keys. The
        /// default when the login agreed on tls+e2e.
        #[arg(long)]
        e2e: bool,
    },
    /// Download files from your inbox: checked against their SHA-256 before they take
    /// their name.
    Fetch {
        /// Every file waiting in the inbox.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// The deliveries to fetch, by id.
        ids: Vec<String>,
        /// The folder to write to.
        #[arg(long, default_value = ".")]
        to: PathBuf,
        /// Acknowledge each file once it is safely written, so the hub can drop it.
        #[arg(long)]
        ack: bool,
        /// The age identity file that decrypts end-to-end encrypted files (default: the
        /// config folder's identity.txt, when there is one).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Make an identity in the config folder and register its public key with the hub.
    Generate {
        /// A note shown beside the key (e.g. the machine).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// The end-to-end keys registered for your account.
    List,
}

/// The identities that decrypt: `given`, else the config folder's identity when it exists.
fn identities(given: Option<PathBuf>) -> Result<Option<Vec<age::x25519::Identity>>> {
    let path = match given {
        Some(path) => path,
        None => {
            let path = e2e::default_identity()?;
            if !path.exists() {
                return Ok(None);
            }
            path
        }
    };
    e2e::identities(&path).map(Some)
}

#[derive(Debug, clap::Args)]
struct LoginArgs {
    /// The hub's HTTPS address, e.g. https://hub.example.org:8443.
    url: String,
    /// The account name (with --cert, the certificate's CN when not given).
    #[arg(long)]
    user: Option<String>,
    /// Read the password as one line from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Read an API key (mrk_…) as one line from standard input, and use it instead of a
    /// login: it is kept in the session and sent with every request, never refreshed.
    #[arg(long, conflicts_with_all = ["password_stdin", "user", "totp", "api_key_env"])]
    api_key_stdin: bool,
    /// Take the API key from this environment variable instead of standard input.
    #[arg(long, value_name = "VAR", conflicts_with_all = ["password_stdin", "user", "totp"])]
    api_key_env: Option<String>,
    /// Present this client certificate (PEM) in every TLS handshake: a login factor where the
    /// hub asks for one. Its path is kept in the session, not a copy.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// A one-time code, when the account requires one (asked for on a terminal otherwise).
    #[arg(long)]
    totp: Option<String>,
    /// Trust hub certificates issued by this CA (PEM) instead of pinning the hub's own.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Pin the hub's certificate with this SHA-256 fingerprint, without asking.
    #[arg(long, value_name = "SHA256")]
    trust_fingerprint: Option<String>,
    /// Compression methods to ask for, in order of preference (see GET /api/v1/ace).
    #[arg(long, value_delimiter = ',', default_value = "zstd,none")]
    compression: Vec<Method>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return report(&err.into()),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(err) => report(&err),
    }
}

fn report(err: &anyhow::Error) -> ExitCode {
    let code = err
        .downcast_ref::<Failure>()
        .map_or(exit::LOCAL, |failure| failure.code);
    hub::tracing_line(&format!("error: {err:#}"));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Writes one result: a JSON line, or the text.
fn out(json: bool, value: &impl serde::Serialize, text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut stdout, value)?;
        writeln!(stdout)?;
    } else {
        writeln!(stdout, "{text}")?;
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Login(args) => login(args, cli.json, cli.retries).await,
        Command::Logout => {
            if let Ok(mut hub) = Hub::open(0) {
                if let Credentials::ApiKey { api_key } = &hub.session.credentials {
                    hub::tracing_line(&format!(
                        "forgot API key {}; it works until it is revoked on the hub",
                        api_key_id(api_key)
                    ));
                } else {
                    let _ = hub
                        .request(reqwest::Method::POST, "/api/v1/logout", Ok)
                        .await;
                }
            }
            Session::remove()
        }
        Command::Send { to, files, e2e } => {
            let mut hub = Hub::open(cli.retries)?;
            let e2e = e2e || hub.session.ace.as_ref().is_some_and(|ace| ace.end_to_end());
            for file in &files {
                let sent = if e2e {
                    transfer::send_e2e(&mut hub, file, &to).await?
                } else {
                    transfer::send(&mut hub, file, &to).await?
                };
                out(
                    cli.json,
                    &sent,
                    &format!(
                        "sent {} ({} bytes, sha256 {}) to {}",
                        sent.name,
                        sent.size,
                        sent.sha256,
                        sent.delivered_to.join(", ")
                    ),
                )?;
            }
            Ok(())
        }
        Command::Inbox => {
            let mut hub = Hub::open(cli.retries)?;
            for delivery in transfer::inbox(&mut hub).await? {
                out(
                    cli.json,
                    &delivery,
                    &format!(
                        "{}  {:<16} {:>12}  {}",
                        delivery.id, delivery.sender, delivery.size, delivery.name
                    ),
                )?;
            }
            Ok(())
        }
        Command::Key(KeyCommand::Generate { comment }) => {
            let mut hub = Hub::open(cli.retries)?;
            let path = e2e::default_identity()?;
            let recipient = e2e::generate(&path)?;
            e2e::register(&mut hub, &recipient, &comment).await?;
            out(
                cli.json,
                &serde_json::json!({"recipient": recipient, "identity": path}),
                &format!(
                    "made {} and registered its public key {recipient}; keep a copy of the identity: files sent to this key cannot be read without it",
                    path.display()
                ),
            )
        }
        Command::Key(KeyCommand::List) => {
            let mut hub = Hub::open(cli.retries)?;
            let keys: Vec<serde_json::Value> = hub
                .expect(reqwest::Method::GET, "/api/v1/e2e-keys", Ok)
                .await?
                .json()
                .await?;
            for key in keys {
                let text = format!(
                    "{}  {}",
                    key["recipient"].as_str().unwrap_or_default(),
                    key["comment"].as_str().unwrap_or_default()
                );
                out(cli.json, &key, &text)?;
            }
            Ok(())
        }
        Command::Sync {
            outbox,
            inbox,
            watch,
            interval,
            identity,
            e2e,
        } => {
            let identities = identities(identity)?;
            let mut hub = Hub::open(cli.retries)?;
            let e2e = e2e || hub.session.ace.as_ref().is_some_and(|ace| ace.end_to_end());
            let json = cli.json;
            let report = |done: &sync::Pass| -> Result<()> {
                for name in &done.sent {
                    out(
                        json,
                        &serde_json::json!({"sent": name}),
                        &format!("sent {name}"),
                    )?;
                }
                for name in &done.received {
                    out(
                        json,
                        &serde_json::json!({"received": name}),
                        &format!("received {name}"),
                    )?;
                }
                Ok(())
            };
            if watch {
                sync::watch(
                    &mut hub,
                    outbox.as_deref(),
                    inbox.as_deref(),
                    identities.as_deref(),
                    e2e,
                    std::time::Duration::from_secs(interval.max(1)),
                    report,
                )
                .await
            } else {
                let done = sync::pass(
                    &mut hub,
                    outbox.as_deref(),
                    inbox.as_deref(),
                    identities.as_deref(),
                    e2e,
                )
                .await?;
                report(&done)
            }
        }
        Command::Fetch {
            all,
            ids,
            to,
            ack,
            identity,
        } => {
            let identities = identities(identity)?;
            if !all && ids.is_empty() {
                return Err(fail(exit::LOCAL, "name the deliveries to fetch, or --all"));
            }
            let mut hub = Hub::open(cli.retries)?;
            let inbox = transfer::inbox(&mut hub).await?;
            for id in &ids {
                if !inbox.iter().any(|d| &d.id == id) {
                    return Err(fail(
                        exit::REFUSED,
                        format!("no delivery {id} in your inbox"),
                    ));
                }
            }
            for delivery in inbox.iter().filter(|d| all || ids.contains(&d.id)) {
                let fetched =
                    transfer::fetch(&mut hub, delivery, &to, ack, identities.as_deref()).await?;
                out(
                    cli.json,
                    &fetched,
                    &format!(
                        "fetched {} ({} bytes)",
                        fetched.path.display(),
                        fetched.size
                    ),
                )?;
            }
            Ok(())
        }
    }
}

/// One line from the terminal, for questions while standard input carries other things.
fn ask(question: &str) -> Option<String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let mut writer = tty.try_clone().ok()?;
    write!(writer, "{question}").ok()?;
    writer.flush().ok()?;
    let mut line = String::new();
    std::io::BufReader::new(tty).read_line(&mut line).ok()?;
    Some(line.trim().to_owned())
}

/// One line of standard input, without its line end.
fn stdin_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The API key of `--api-key-env VAR` or `--api-key-stdin`, if either was given, checked to
/// be one.
fn api_key(args: &LoginArgs) -> Result<Option<String>> {
    let key = match (&args.api_key_env, args.api_key_stdin) {
        (Some(var), _) => std::env::var(var).map_err(|_| {
            fail(
                exit::LOCAL,
                format!("the environment variable {var} holds no API key"),
            )
        })?,
        (None, true) => stdin_line()?,
        (None, false) => return Ok(None),
    };
    let key = key.trim().to_owned();
    if !key.starts_with("mrk_") || api_key_id(&key).is_empty() {
        return Err(fail(
            exit::LOCAL,
            "that is not an API key: a key reads mrk_<id>_<secret>, as `mailroom account api-key add` prints it",
        ));
    }
    Ok(Some(key))
}

async fn login(args: LoginArgs, json: bool, retries: u32) -> Result<()> {
    let url = args.url.trim_end_matches('/').to_owned();
    if !url.starts_with("https://") {
        return Err(fail(
            exit::LOCAL,
            format!("{url}: the agent speaks https:// only"),
        ));
    }
    // Every credential is read and checked before anything crosses the network.
    let api_key = api_key(&args)?;
    let certificate = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(ClientCertificate::new(cert, key)?),
        _ => None,
    };
    let password = if args.password_stdin {
        Some(stdin_line()?)
    } else {
        None
    };
    if api_key.is_none() && password.is_none() && certificate.is_none() {
        return Err(fail(
            exit::LOCAL,
            "give the password on standard input with --password-stdin, an API key with --api-key-stdin (or --api-key-env VAR), or a client certificate with --cert FILE --key FILE",
        ));
    }
    let user = match (&args.user, &certificate) {
        _ if api_key.is_some() => String::new(),
        (Some(user), _) => user.clone(),
        (None, Some(certificate)) => certificate.common_name()?.ok_or_else(|| {
            fail(
                exit::LOCAL,
                format!(
                    "{} names no account (its subject has no CN): give --user",
                    certificate.cert.display()
                ),
            )
        })?,
        (None, None) => return Err(fail(exit::LOCAL, "give the account name with --user")),
    };
    let trust = match (&args.ca, &args.trust_fingerprint) {
        (Some(ca), _) => Trust::Ca(
            std::fs::canonicalize(ca).with_context(|| format!("cannot read {}", ca.display()))?,
        ),
        (None, given) => Trust::Pinned(first_use(&url, given.as_deref()).await?),
    };
    let http = tls::client(&trust, certificate.as_ref())?;
    // What the hub supports for agents: the first of our choices it has is what we ask for
    // (the hub would otherwise prefer its own default); none of them, and we ask for all, so
    // the refusal names both lists.
    let published: serde_json::Value = match http.get(format!("{url}/api/v1/ace")).send().await {
        Ok(response) => response,
        Err(err) => {
            return Err(hub::unreachable(&err, &url, &trust, certificate.as_ref()).await);
        }
    }
    .json()
    .await
    .context("the hub did not publish its methods (GET /api/v1/ace)")?;
    let supported = |link: &str, category: &str, method: &Method| {
        published[link][category]["supported"]
            .as_array()
            .is_some_and(|list| list.iter().any(|m| m.as_str() == Some(&method.to_string())))
    };
    if let Some(api_key) = api_key {
        // A key negotiates nothing: its requests take what the hub's HTTPS link supports.
        let compression = args
            .compression
            .iter()
            .find(|method| supported("https", "compression", method))
            .cloned()
            .ok_or_else(|| {
                let theirs: Vec<&str> = published["https"]["compression"]["supported"]
                    .as_array()
                    .map(|list| list.iter().filter_map(|m| m.as_str()).collect())
                    .unwrap_or_default();
                let ours: Vec<String> = args.compression.iter().map(ToString::to_string).collect();
                fail(
                    exit::REFUSED,
                    format!(
                        "no compression in common: the client offered [{}], the hub supports [{}]",
                        ours.join(", "),
                        theirs.join(", ")
                    ),
                )
            })?;
        let session = Session {
            url: url.clone(),
            account: None,
            trust,
            credentials: Credentials::ApiKey { api_key },
            client_certificate: certificate,
            ace: Some(mailroom_ace::Agreed {
                authentication: "token".parse()?,
                compression,
                encryption: "tls".parse()?,
            }),
        };
        return key_login(session, json, retries).await;
    }
    let choose = |category: &str, ours: &[Method]| -> Vec<Method> {
        match ours
            .iter()
            .find(|method| supported("agent", category, method))
        {
            Some(method) => vec![method.clone()],
            None => ours.to_vec(),
        }
    };
    let wanted = Wanted {
        compression: choose("compression", &args.compression),
        encryption: choose("encryption", &["tls".parse()?]),
        ..Wanted::default()
    };
    let mut body = serde_json::json!({
        "username": user,
        "ace": wanted,
    });
    if let Some(password) = password {
        body["password"] = serde_json::Value::String(password);
    }
    let mut code = args.totp.clone();
    loop {
        if let Some(code) = &code {
            body["totp"] = serde_json::Value::String(code.clone());
        }
        let response = match http
            .post(format!("{url}/api/v1/token"))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => {
                return Err(hub::unreachable(&err, &url, &trust, certificate.as_ref()).await);
            }
        };
        let status = response.status();
        if status.is_success() {
            let tokens: Tokens = response.json().await?;
            let session = Session {
                url: url.clone(),
                account: Some(tokens.account.clone()),
                trust: trust.clone(),
                credentials: Credentials::Tokens {
                    access_token: tokens.access_token,
                    refresh_token: tokens.refresh_token,
                },
                client_certificate: certificate,
                ace: tokens.ace.clone(),
            };
            session.save()?;
            let methods = tokens
                .ace
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            return out(
                json,
                &serde_json::json!({"account": tokens.account, "url": url, "ace": tokens.ace}),
                &format!("logged in to {url} as {} ({methods})", tokens.account),
            );
        }
        let detail = hub::refusal(response).await;
        if status == reqwest::StatusCode::UNAUTHORIZED
            && detail.contains("totp")
            && code.is_none()
            && let Some(answer) = ask("One-time code: ")
        {
            code = Some(answer);
            continue;
        }
        let code = if status == reqwest::StatusCode::UNAUTHORIZED {
            exit::AUTH
        } else {
            exit::REFUSED
        };
        return Err(fail(code, format!("login refused: {detail}")));
    }
}

/// Keeps an API key as the session once the hub took it for an authenticated request that
/// any key's scope allows (the account's own end-to-end keys): a refused key is exit code 2
/// and nothing is saved.
async fn key_login(session: Session, json: bool, retries: u32) -> Result<()> {
    let url = session.url.clone();
    let id = api_key_id(session.credentials.bearer()).to_owned();
    let mut hub = Hub::new(session, retries)?;
    hub.expect(reqwest::Method::GET, "/api/v1/e2e-keys", Ok)
        .await?;
    hub.session.save()?;
    let ace = hub.session.ace.clone();
    let methods = ace.as_ref().map(ToString::to_string).unwrap_or_default();
    out(
        json,
        &serde_json::json!({"api_key": id, "url": url, "ace": ace}),
        &format!("logged in to {url} with API key {id} ({methods})"),
    )
}

/// Trust on first use: shows the hub's certificate fingerprint and pins it once the operator
/// agrees (or gave the same fingerprint). Nothing but `GET /api/v1/ace` crosses the probe.
async fn first_use(url: &str, given: Option<&str>) -> Result<String> {
    let (probe, seen) = tls::probe()?;
    let reached = probe.get(format!("{url}/api/v1/ace")).send().await;
    // A hub that requires a client certificate ends the probe's handshake after presenting
    // its own (the probe presents none): what it presented is all the probe needs.
    let seen = seen.lock().ok().and_then(|seen| seen.clone());
    let presented = match (seen, reached) {
        (Some(presented), _) => presented,
        (None, Err(err)) => {
            return Err(fail(
                exit::UNREACHABLE,
                format!("cannot reach the hub: {}", hub::chain(&err)),
            ));
        }
        (None, Ok(_)) => return Err(fail(exit::UNREACHABLE, "the hub presented no certificate")),
    };
    let shown = tls::shown(&presented);
    match given {
        Some(given) => {
            if tls::parse_fingerprint(given)? == presented {
                Ok(presented)
            } else {
                Err(fail(
                    exit::AUTH,
                    format!(
                        "the hub presented a certificate with SHA-256 fingerprint {shown}, not the one given; not logging in"
                    ),
                ))
            }
        }
        None if std::io::stderr().is_terminal() => {
            hub::tracing_line(&format!(
                "the hub presents a certificate with SHA-256 fingerprint\n  {shown}"
            ));
            match ask("Pin it and log in? [y/N] ") {
                Some(answer) if answer.eq_ignore_ascii_case("y") => Ok(presented),
                _ => Err(fail(exit::AUTH, "not trusted; not logging in")),
            }
        }
        None => Err(fail(
            exit::AUTH,
            format!(
                "the hub presents a certificate with SHA-256 fingerprint {shown}; check it with the hub's operator and log in again with --trust-fingerprint {presented}, or give its CA with --ca"
            ),
        )),
    }
}
