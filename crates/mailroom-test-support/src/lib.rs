//! Dev-only test support: a [`TestHub`] serving SSH (and, with [`TestHub::start_ftps`], FTPS,
//! with [`TestHub::start_https`], the HTTPS API) on port 0 over real storage (SQLite file, local blob folder, in a temp dir), and drivers
//! for the real clients users use (OpenSSH `sftp` and `scp`, curl, lftp, Python paramiko and
//! ftplib). Also [`Snapshot`], to check that a refusal changed nothing, [`Clamd`] (module
//! [`clamd`]), a throwaway ClamAV daemon on loopback with test signatures of our own, and
//! [`HaProxy`] (module [`haproxy`]), HAProxy in front of the listeners with the PROXY
//! protocol, beside hand-made PROXY headers.
//!
//! A test that needs a client which is not installed calls [`skip`]: on a developer's machine
//! it prints `skipped: <why>`, records the skip for `scripts/test` (which counts skipped tests
//! apart from passed ones) and returns; when `CI` is set it fails the test instead, so CI,
//! which installs every client, can never count a missing tool as a pass.

// Test support may panic on setup failures: a broken fixture should stop the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use mailroom_core::{
    AccessPolicy, Account, AccountKind, AccountName, Actor, AuthConfig, AuthorizedKey, Clock,
    DeliveryQuery, Event, EventKind, EventQuery, Hub, Outcome, RouteEffect, Secret,
};
use mailroom_core::{Delivery, MetaStoreExt};
use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

pub mod clamd;
pub mod haproxy;

pub use clamd::{Clamd, EICAR};
pub use haproxy::HaProxy;

/// How often a TestHub checks live sessions against their accounts (`mailroom serve`: 2 s).
pub const HOUSEKEEPING: std::time::Duration = std::time::Duration::from_millis(500);

/// A hub serving SSH on 127.0.0.1:<random port> with its own temp data folder.
pub struct TestHub {
    /// The service, for direct calls from tests.
    pub hub: Arc<Hub>,
    /// The metadata store, for inspection.
    pub meta: Arc<mailroom_meta::SqliteStore>,
    /// Where SSH listens.
    pub addr: SocketAddr,
    /// The data folder (metadata, blobs, keys).
    pub dir: tempfile::TempDir,
    /// The FTPS front end, when started with [`TestHub::start_ftps`].
    pub ftps: Option<FtpsEndpoint>,
    /// The HTTPS front end, when started with [`TestHub::start_https`].
    pub https: Option<HttpsEndpoint>,
    /// The hub's clock: the system clock plus an offset tests may move forward.
    pub clock: Arc<TestClock>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    ftps_server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    https_server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The system clock plus an offset that tests move forward ([`TestClock::advance`]), so that
/// expiry is tested without waiting.
#[derive(Debug, Default)]
pub struct TestClock {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl TestClock {
    /// Moves the hub's time forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms
            .fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
            + time::Duration::milliseconds(self.offset_ms.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Where a TestHub's HTTPS API listens and what its clients need to trust it.
#[derive(Debug, Clone)]
pub struct HttpsEndpoint {
    /// The listening address.
    pub addr: SocketAddr,
    /// `https://localhost:PORT` (the server certificate names localhost).
    pub base: String,
    /// The PEM of the server CA.
    pub ca: PathBuf,
    /// The PKI folder (server and client CAs), for issuing client certificates.
    pub tls_dir: PathBuf,
}

/// Where a TestHub's FTPS front end listens and what its clients need to trust it.
#[derive(Debug, Clone)]
pub struct FtpsEndpoint {
    /// The control connection's address (explicit TLS).
    pub addr: SocketAddr,
    /// The implicit-TLS address (TLS from the first byte).
    pub implicit: SocketAddr,
    /// The PEM of the server CA that issued the server certificate (for `localhost`,
    /// 127.0.0.1 and ::1).
    pub ca: PathBuf,
    /// The passive port range the server was given.
    pub passive: std::ops::RangeInclusive<u16>,
}

/// A client account made by [`TestHub::client`], with its secrets on disk.
#[derive(Debug, Clone)]
pub struct TestClient {
    /// Account name.
    pub name: String,
    /// Its password.
    pub password: String,
    /// Path of its private ed25519 key (the `.pub` is beside it).
    pub key: PathBuf,
}

impl TestHub {
    /// Starts a hub with default SSH settings.
    pub async fn start() -> TestHub {
        Self::start_with(mailroom_sftp::Config::default()).await
    }

    /// Starts a hub with the given SSH settings (the listen address is ignored: port 0).
    pub async fn start_with(config: mailroom_sftp::Config) -> TestHub {
        Self::start_full(config, AuthConfig::default()).await
    }

    /// Starts a hub with the given SSH and authentication settings. Like `mailroom serve`, it
    /// runs the session housekeeping (closing sessions of disabled accounts) every
    /// [`HOUSEKEEPING`].
    pub async fn start_full(config: mailroom_sftp::Config, auth: AuthConfig) -> TestHub {
        let methods = mailroom_ace::Ace::default()
            .ssh()
            .expect("the default SSH methods");
        Self::start_ssh_methods(config, auth, methods).await
    }

    /// [`TestHub::start_full`] with SSH offering `methods` (from an `Ace` the test built).
    pub async fn start_ssh_methods(
        config: mailroom_sftp::Config,
        auth: AuthConfig,
        methods: mailroom_ace::SshMethods,
    ) -> TestHub {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = Arc::new(
            mailroom_meta::SqliteStore::open(&dir.path().join("meta.db"))
                .await
                .expect("open metadata"),
        );
        let blobs = Arc::new(
            mailroom_blob::LocalBlobStore::open(&dir.path().join("blobs"))
                .await
                .expect("open blobs"),
        );
        let clock = Arc::new(TestClock::default());
        let hub = Arc::new(Hub::new(meta.clone(), blobs, clock.clone()).with_auth(auth));
        let host_key = mailroom_sftp::host_key::load_or_generate(&dir.path().join("host_key"))
            .expect("host key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(mailroom_sftp::serve(
            listener,
            hub.clone(),
            config,
            host_key,
            methods,
            shutdown.clone(),
        ));
        let housekeeping_hub = hub.clone();
        let housekeeping_stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = housekeeping_stop.cancelled() => return,
                    () = tokio::time::sleep(HOUSEKEEPING) => {}
                }
                if let Err(err) = housekeeping_hub.enforce_sessions().await {
                    eprintln!("session housekeeping failed: {err}");
                }
            }
        });
        TestHub {
            hub,
            meta,
            addr,
            dir,
            ftps: None,
            https: None,
            clock,
            shutdown,
            server: Some(server),
            ftps_server: None,
            https_server: None,
        }
    }

    /// Starts a hub (default SSH settings, `auth`) that also serves the HTTPS API on port 0
    /// with the data folder's own PKI (`listen` of `config` is replaced). Client certificates,
    /// when `client_certificates` asks for them, are checked against the PKI's client CA.
    pub async fn start_https(config: mailroom_https::Config, auth: AuthConfig) -> TestHub {
        Self::start_https_with(config, auth, |_| axum::Router::new()).await
    }

    /// [`TestHub::start_https`] with `pages` (the web UI's router) merged beside the API, as
    /// `mailroom serve` does with `mailroom_web::router`.
    pub async fn start_https_with(
        config: mailroom_https::Config,
        auth: AuthConfig,
        pages: impl FnOnce(Arc<mailroom_https::AppState>) -> axum::Router + Send + 'static,
    ) -> TestHub {
        Self::start_https_in(config, auth, |state, _| pages(state)).await
    }

    /// [`TestHub::start_https_with`] whose `pages` also get the data folder (where the web
    /// UI keeps its CSRF key, as `mailroom serve` does).
    pub async fn start_https_in(
        config: mailroom_https::Config,
        auth: AuthConfig,
        pages: impl FnOnce(Arc<mailroom_https::AppState>, &Path) -> axum::Router + Send + 'static,
    ) -> TestHub {
        let mut hub = Self::start_full(mailroom_sftp::Config::default(), auth).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind https");
        hub.serve_https(config, pages, listener);
        hub
    }

    /// A restart of the hub: every front end stops (sessions drained), the data folder is
    /// opened anew in a new `Hub` with `auth`, as `mailroom serve` opens it after a restart
    /// (in-process state such as live sessions is gone; the store and the files stay), and
    /// HTTPS is served again on the same port with `pages`. SSH and FTPS are not started
    /// again.
    pub async fn restart_https_in(
        &mut self,
        config: mailroom_https::Config,
        auth: AuthConfig,
        pages: impl FnOnce(Arc<mailroom_https::AppState>, &Path) -> axum::Router + Send + 'static,
    ) {
        let addr = self.https().addr;
        self.drain().await;
        let meta = Arc::new(
            mailroom_meta::SqliteStore::open(&self.dir.path().join("meta.db"))
                .await
                .expect("open metadata again"),
        );
        let blobs = Arc::new(
            mailroom_blob::LocalBlobStore::open(&self.dir.path().join("blobs"))
                .await
                .expect("open blobs again"),
        );
        self.hub = Arc::new(Hub::new(meta.clone(), blobs, self.clock.clone()).with_auth(auth));
        self.meta = meta;
        self.shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind https again on its port");
        self.serve_https(config, pages, listener);
    }

    /// Serves the API and `pages` on `listener` with the data folder's PKI.
    fn serve_https(
        &mut self,
        config: mailroom_https::Config,
        pages: impl FnOnce(Arc<mailroom_https::AppState>, &Path) -> axum::Router + Send + 'static,
        listener: tokio::net::TcpListener,
    ) {
        let hub = self;
        let tls_dir = hub.dir.path().join("tls");
        let pki = mailroom_tls::ensure_pki(&tls_dir, &mailroom_tls::PkiSettings::default())
            .expect("test PKI");
        let mut settings = mailroom_tls::TlsSettings::from_pki(&pki);
        settings.alpn = mailroom_https::ALPN
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        settings.client_auth = config.client_certificates;
        settings.methods = mailroom_ace::Ace::default()
            .tls_for(mailroom_ace::Link::Https, &config.encryption)
            .expect("[https] encryption");
        let tls = if config.allow_plaintext {
            None
        } else {
            Some(mailroom_tls::server_config(&settings).expect("https tls config"))
        };
        let addr = listener.local_addr().expect("local addr");
        let data = hub.dir.path().to_owned();
        hub.https_server = Some(tokio::spawn(mailroom_https::serve_with(
            listener,
            hub.hub.clone(),
            config.clone(),
            Arc::new(mailroom_ace::Ace::default()),
            tls,
            move |state| pages(state, &data),
            hub.shutdown.clone(),
        )));
        let scheme = if config.allow_plaintext {
            "http"
        } else {
            "https"
        };
        hub.https = Some(HttpsEndpoint {
            addr,
            base: format!("{scheme}://localhost:{}", addr.port()),
            ca: pki.server_ca.cert_path.clone(),
            tls_dir,
        });
    }

    /// The HTTPS endpoint; panics when the hub was not started with [`TestHub::start_https`].
    pub fn https(&self) -> &HttpsEndpoint {
        self.https.as_ref().expect("started with start_https")
    }

    /// Starts a hub (default SSH and authentication settings) that also serves FTPS on port 0,
    /// explicit and implicit, with the data folder's own PKI (as `mailroom init` makes it) and
    /// a passive range of free ports (`listen`, `implicit_listen` and `passive_ports` of
    /// `config` are replaced).
    pub async fn start_ftps(config: mailroom_ftps::Config) -> TestHub {
        Self::start_ftps_full(config, AuthConfig::default()).await
    }

    /// [`TestHub::start_ftps`] with the given authentication settings.
    pub async fn start_ftps_full(mut config: mailroom_ftps::Config, auth: AuthConfig) -> TestHub {
        let mut hub = Self::start_full(mailroom_sftp::Config::default(), auth).await;
        // The data folder's PKI, as `mailroom init` makes it: clients trust its server CA.
        let pki = mailroom_tls::ensure_pki(
            &hub.dir.path().join("tls"),
            &mailroom_tls::PkiSettings::default(),
        )
        .expect("test PKI");
        let ca = pki.server_ca.cert_path.clone();
        let passive = free_port_range(10);
        config.passive_ports =
            mailroom_ftps::config::PassivePorts::new(*passive.start(), *passive.end())
                .expect("passive range");
        let mut settings = mailroom_tls::TlsSettings::from_pki(&pki);
        settings.alpn = vec!["ftp".to_owned()];
        settings.client_auth = config.client_certificates;
        // The listener's TLS methods, as `mailroom serve` takes them from `[ftps] encryption`.
        settings.methods = mailroom_ace::Ace::default()
            .tls_for(mailroom_ace::Link::Ftps, &config.encryption)
            .expect("[ftps] encryption");
        let tls = mailroom_tls::server_config(&settings).expect("ftps tls config");
        let explicit = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ftps");
        let implicit = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind implicit ftps");
        let addr = explicit.local_addr().expect("local addr");
        let implicit_addr = implicit.local_addr().expect("local addr");
        hub.ftps_server = Some(tokio::spawn(mailroom_ftps::serve(
            mailroom_ftps::Listeners {
                explicit,
                implicit: Some(implicit),
            },
            hub.hub.clone(),
            config,
            tls,
            hub.shutdown.clone(),
        )));
        hub.ftps = Some(FtpsEndpoint {
            addr,
            implicit: implicit_addr,
            ca,
            passive,
        });
        hub
    }

    /// The FTPS endpoint; panics when the hub was not started with [`TestHub::start_ftps`].
    pub fn ftps(&self) -> &FtpsEndpoint {
        self.ftps.as_ref().expect("started with start_ftps")
    }

    /// Stops accepting and waits for the server to return.
    pub async fn stop(mut self) {
        self.drain().await;
    }

    /// Stops the server and waits until every session has ended and cleaned up (aborted
    /// uploads accounted for), keeping the data folder for inspection.
    pub async fn drain(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(server) = self.ftps_server.take() {
            let _ = server.await;
        }
        if let Some(server) = self.https_server.take() {
            let _ = server.await;
        }
    }

    /// The actor tests use for admin calls.
    pub fn admin() -> Actor {
        Actor::cli("test")
    }

    /// Creates a client account with a password and a fresh ed25519 key.
    pub async fn client(&self, name: &str) -> TestClient {
        self.account_of_kind(name, AccountKind::Client).await
    }

    async fn account_of_kind(&self, name: &str, kind: AccountKind) -> TestClient {
        let key = self.dir.path().join(format!("{name}_ed25519"));
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .expect("run ssh-keygen");
        assert!(status.success(), "ssh-keygen failed");
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("read .pub");
        let password = format!("Tulip-{}-orbit-4711", name.len() * 7919);
        self.hub
            .add_account(
                &Self::admin(),
                AccountName::parse(name).expect("valid name"),
                kind,
                Some(Secret::new(password.clone())),
                vec![AuthorizedKey::parse(&public).expect("valid key")],
            )
            .await
            .expect("add account");
        TestClient {
            name: name.to_owned(),
            password,
            key,
        }
    }

    /// Creates an admin account with a password and a fresh ed25519 key: credentials that
    /// must still not open a mailbox.
    pub async fn admin_account(&self, name: &str) -> TestClient {
        self.account_of_kind(name, AccountKind::Admin).await
    }

    /// Changes an account's access policy through the Hub's admin call.
    pub async fn set_access(&self, account: &str, change: impl FnOnce(&mut AccessPolicy)) {
        let mut access = self.account(account).await.access;
        change(&mut access);
        self.hub
            .change_account(&Self::admin(), &name(account), access.as_change())
            .await
            .expect("set access");
    }

    /// Events of one kind and outcome, oldest first.
    pub async fn events(&self, kind: EventKind, outcome: Outcome) -> Vec<Event> {
        self.hub
            .events(&EventQuery {
                kind: Some(kind),
                outcome: Some(outcome),
                ..EventQuery::default()
            })
            .await
            .expect("events")
    }

    /// Stores a dead webhook job to `url`, failed with `error`, about the hub's first admin
    /// event, as the job worker leaves one (a test hub has no rules), and returns it.
    pub async fn dead_job(&self, url: &str, error: &str) -> mailroom_core::Job {
        let event = self.events(EventKind::Admin, Outcome::Ok).await.remove(0);
        let now = self.clock.now();
        let job = mailroom_core::Job {
            id: uuid::Uuid::now_v7(),
            rule: "hook".to_owned(),
            handler: mailroom_core::Handler::Webhook(url.to_owned()),
            event: event.id,
            state: mailroom_core::JobState::Dead,
            attempts: 8,
            due: now,
            created: now,
            updated: now,
            last_error: Some(error.to_owned()),
        };
        let stored = job.clone();
        self.meta
            .write_with(mailroom_core::Durability::Flush, move |tx| {
                tx.insert_jobs(std::slice::from_ref(&stored))
            })
            .await
            .expect("store a job");
        job
    }

    /// Allows `from` to send to `to`.
    pub async fn allow(&self, from: &str, to: &str) {
        self.hub
            .set_route(&Self::admin(), name(from), name(to), RouteEffect::Allow)
            .await
            .expect("route");
    }

    /// Creates a group with members.
    pub async fn group(&self, group: &str, members: &[&str]) {
        self.hub
            .add_group(
                &Self::admin(),
                name(group),
                members.iter().map(|m| name(m)).collect(),
            )
            .await
            .expect("group");
    }

    /// One account, for assertions.
    pub async fn account(&self, account: &str) -> Account {
        self.hub.account(&name(account)).await.expect("account")
    }

    /// Every delivery, oldest first.
    pub async fn deliveries(&self) -> Vec<Delivery> {
        self.meta
            .read_with(|tx| tx.deliveries(&DeliveryQuery::default()))
            .await
            .expect("deliveries")
    }

    /// What a refusal must not change: deliveries and stored blob files.
    pub async fn snapshot(&self) -> Snapshot {
        let deliveries = self
            .deliveries()
            .await
            .iter()
            .map(|d| {
                format!(
                    "{} {} {} {} {} {}",
                    d.id,
                    d.sender,
                    d.recipient,
                    d.name,
                    d.state.as_str(),
                    d.sha256
                )
            })
            .collect();
        let mut blobs = files_under(&self.dir.path().join("blobs"));
        // Small blobs live in the metadata store; they count as stored blobs too.
        for id in self.meta.inline_blob_ids().await.expect("inline blobs") {
            blobs.push(PathBuf::from(format!("inline:{id}")));
        }
        Snapshot { deliveries, blobs }
    }

    /// Runs OpenSSH `sftp` in batch mode with key authentication, feeding `commands`.
    pub async fn sftp(&self, client: &TestClient, commands: &str) -> Output {
        run(self.sftp_command(client, Some(commands))).await
    }

    /// An OpenSSH `sftp` command logged in as `client` by key, for tests that drive the
    /// process themselves: in batch mode over `commands`, or interactive when `None`.
    pub fn sftp_command(&self, client: &TestClient, commands: Option<&str>) -> Command {
        self.sftp_command_with(client, commands, &[])
    }

    /// [`TestHub::sftp_command`] with more `sftp` options (`-C`, `-v`) before the destination.
    pub fn sftp_command_with(
        &self,
        client: &TestClient,
        commands: Option<&str>,
        options: &[&str],
    ) -> Command {
        let mut command = Command::new("sftp");
        command
            .args(ssh_options())
            .args(options)
            .arg("-i")
            .arg(&client.key)
            .arg("-P")
            .arg(self.addr.port().to_string());
        if let Some(commands) = commands {
            let batch = self.dir.path().join(format!("batch-{}", unique()));
            std::fs::write(&batch, commands).expect("write batch");
            command.arg("-b").arg(batch);
        }
        command
            .arg(format!("{}@127.0.0.1", client.name))
            .kill_on_drop(true);
        command
    }

    /// Bytes in the blob store's staging area: uploads under way.
    pub fn staged_bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.path().join("blobs/staging"))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Runs OpenSSH `scp` with key authentication. `legacy` adds `-O` (the scp protocol).
    pub async fn scp(&self, client: &TestClient, legacy: bool, from: &str, to: &str) -> Output {
        let mut command = Command::new("scp");
        command.args(ssh_options()).arg("-i").arg(&client.key);
        if legacy {
            command.arg("-O");
        }
        command
            .arg("-P")
            .arg(self.addr.port().to_string())
            .arg(self.remote(client, from))
            .arg(self.remote(client, to));
        run(command).await
    }

    /// `user@127.0.0.1:path` for arguments that start with `:`, others unchanged.
    fn remote(&self, client: &TestClient, arg: &str) -> String {
        match arg.strip_prefix(':') {
            Some(path) => format!("{}@127.0.0.1:{path}", client.name),
            None => arg.to_owned(),
        }
    }

    /// `ftp://127.0.0.1:PORT{path}` on the FTPS endpoint (explicit TLS: curl upgrades with
    /// `--ssl-reqd`).
    pub fn ftps_url(&self, path: &str) -> String {
        format!("ftp://127.0.0.1:{}{path}", self.ftps().addr.port())
    }

    /// Runs curl against the FTPS endpoint as `client`, TLS required and the test CA trusted,
    /// with `args` after the common options.
    pub async fn curl_ftps(&self, client: &TestClient, args: &[&str]) -> Output {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--ssl-reqd", "--max-time", "120", "--cacert"])
            .arg(&self.ftps().ca)
            .arg("--user")
            .arg(format!("{}:{}", client.name, client.password))
            .args(args);
        run(command).await
    }

    /// Runs lftp with TLS forced on both channels, the test CA trusted, logged in as
    /// `client`, then `commands` (`;`-separated lftp commands).
    pub async fn lftp(&self, client: &TestClient, commands: &str) -> Output {
        let script = format!(
            "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file {}; \
             set net:max-retries 1; set net:timeout 20; set cmd:fail-exit true; \
             open -u {},{} -p {} 127.0.0.1; {commands}",
            self.ftps().ca.display(),
            client.name,
            client.password,
            self.ftps().addr.port(),
        );
        let mut command = Command::new("lftp");
        command.arg("-c").arg(script);
        run(command).await
    }

    /// The ftplib driver (`clients/ftplib_client.py`) logged in as `user`, running `ops`, for
    /// tests that drive the process themselves.
    pub fn ftplib_command(&self, user: &str, password: &str, ops: &[&str]) -> Command {
        self.ftplib_command_on(self.ftps().addr.port(), user, password, ops)
    }

    /// [`TestHub::ftplib_command`] against `port` (the driver's options in `ops` say how to
    /// talk to it, e.g. `--implicit`).
    pub fn ftplib_command_on(
        &self,
        port: u16,
        user: &str,
        password: &str,
        ops: &[&str],
    ) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/ftplib_client.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(&self.ftps().ca)
            .arg(user)
            .arg(password)
            .args(ops)
            .kill_on_drop(true);
        command
    }

    /// Runs the ftplib driver to the end; its JSON lines, one per step.
    pub async fn ftplib(&self, user: &str, password: &str, ops: &[&str]) -> Vec<String> {
        ftplib_lines(self.ftplib_command(user, password, ops)).await
    }

    /// Runs the ftplib driver against the implicit-TLS port (`--implicit` is added).
    pub async fn ftplib_implicit(&self, user: &str, password: &str, ops: &[&str]) -> Vec<String> {
        let mut ops = ops.to_vec();
        ops.insert(0, "--implicit");
        let port = self.ftps().implicit.port();
        ftplib_lines(self.ftplib_command_on(port, user, password, &ops)).await
    }

    /// A fresh folder under the data dir for a test's local files.
    pub fn local_dir(&self, label: &str) -> PathBuf {
        let path = self.dir.path().join(format!("local-{label}-{}", unique()));
        std::fs::create_dir_all(&path).expect("local dir");
        path
    }
}

/// Runs an ftplib driver command to the end; its JSON lines, one per step.
async fn ftplib_lines(command: Command) -> Vec<String> {
    let output = run(command).await;
    assert!(
        output.status.success(),
        "ftplib driver failed: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `count` consecutive loopback ports that are free right now, below Linux's ephemeral range
/// (so outgoing connections do not take them meanwhile).
pub fn free_port_range(count: u16) -> std::ops::RangeInclusive<u16> {
    let seed = u64::from(std::process::id()).wrapping_mul(7919) + unique() * 104_729;
    for attempt in 0..200u64 {
        let first = 20_000 + ((seed + attempt * 613) % 12_000) as u16;
        let last = first + count - 1;
        let free =
            (first..=last).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return first..=last;
        }
    }
    panic!("no {count} free consecutive ports found");
}

/// Deliveries and blob files at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// One line per delivery: id, sender, recipient, name, state, sha256.
    pub deliveries: Vec<String>,
    /// Files under the blob folder, staging included, and `inline:<id>` for each blob kept
    /// in the metadata store.
    pub blobs: Vec<PathBuf>,
}

/// SSH options for tests: no host key prompts, no agent, no user config, fast failure.
pub fn ssh_options() -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Runs a command with a hard time limit, so a hung client fails the test instead of CI.
pub async fn run(mut command: Command) -> Output {
    command
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    match tokio::time::timeout(std::time::Duration::from_secs(300), command.output()).await {
        Ok(output) => output.expect("run client"),
        Err(_) => panic!("client did not finish within 300 s: {command:?}"),
    }
}

/// Waits until `check` holds, asking every 20 ms, for at most `limit`; returns whether it
/// held. For states the server or another process reaches on its own (bytes staged, an event
/// committed, a session registered or gone) where no signal exists to await; the deadline
/// bounds it, and nothing is assumed to have happened after a fixed delay.
pub async fn eventually(limit: std::time::Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether a program is on PATH; [`skip`]s (fails under `CI`) when it is not.
pub fn have(program: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        skip(&format!("{program} is not installed"));
    }
    found
}

/// A test cannot run here because `why` (a client or tool is missing). With `CI` set this
/// panics: CI installs everything, and a skipped test must never count as a passed one. Else
/// it prints `skipped: why` and appends the test's name and reason to the file named by
/// `MAILROOM_TEST_SKIPS` (set by `scripts/test`), which counts them; the caller then returns.
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run: {why}; CI must install it (.ci/run)");
    }
    eprintln!("skipped: {why}");
    if let Some(path) = std::env::var_os("MAILROOM_TEST_SKIPS") {
        use std::io::Write;
        let line = format!("{test}\t{}\n", why.replace(['\n', '\t'], " "));
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// `len` pseudo-random bytes (xorshift, seeded): the same for a seed, different between
/// seeds, and matching no scanner signature by chance.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// Writes [`random_bytes`] to `path` and returns their SHA-256 hex.
pub fn write_random(path: &Path, len: usize, seed: u64) -> String {
    let data = random_bytes(len, seed);
    std::fs::write(path, &data).expect("write file");
    hex::encode(Sha256::digest(&data))
}

/// SHA-256 hex of a file's content.
pub fn sha256_file(path: &Path) -> String {
    let data = std::fs::read(path).expect("read file");
    hex::encode(Sha256::digest(&data))
}

/// Combined stdout and stderr, for assertions and failure messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn name(text: &str) -> AccountName {
    AccountName::parse(text).expect("valid name")
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Every file under `root` (recursively), sorted.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The Python interpreter with paramiko: `$MAILROOM_TEST_PYTHON`, else `.venv-test` at the
/// workspace root, else `python3`. `None` (and a [`skip`]) when paramiko is missing.
pub fn paramiko_python() -> Option<PathBuf> {
    python_with("paramiko")
}

/// A Python that can import `module` (`.ci/run` installs the test modules into
/// `.venv-test`): `MAILROOM_TEST_PYTHON`, the repository's `.venv-test`, or `python3`;
/// [`skip`]s (fails under `CI`) when none can.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        std::env::var_os("MAILROOM_TEST_PYTHON").map(PathBuf::from),
        Some(root.join(".venv-test/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    for python in candidates.into_iter().flatten() {
        let ok = std::process::Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(python);
        }
    }
    skip(&format!(
        "Python with {module} not found (set MAILROOM_TEST_PYTHON)"
    ));
    None
}

/// Runs the paramiko driver (`clients/paramiko_client.py`) and returns its JSON answer.
pub async fn paramiko(python: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/paramiko_client.py");
    let mut command = Command::new(python);
    command.arg(script).args(args);
    let output = run(command).await;
    assert!(
        output.status.success(),
        "paramiko driver failed: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Awaits a client's `output()` future with the same hard time limit as [`run`].
pub async fn run_output(
    output: impl std::future::Future<Output = std::io::Result<Output>>,
) -> Output {
    match tokio::time::timeout(std::time::Duration::from_secs(300), output).await {
        Ok(output) => output.expect("run client"),
        Err(_) => panic!("client did not finish within 300 s"),
    }
}
