//! `mailroom serve`: initialise a fresh folder, read the configuration, start logging, sweep
//! leftovers, bind the listeners, run the front ends, and shut down gracefully.
//!
//! The binary binds the sockets and hands each front end its listener, an `Arc<Hub>` and a
//! shutdown token. On SIGTERM or SIGINT the token is cancelled (front ends stop accepting),
//! running sessions get `[server] shutdown_grace_seconds` to finish, and the process exits 0.
//! Beside the front ends it runs the retention pass, at start and every
//! `[retention] interval_seconds`, the free-space watch (`[disk]`), the clock check (at start
//! and hourly, `clock`), the job worker
//! (`[[rules]]`, checks before delivery, accounts' notices) and the drop folders (`[[drop]]`),
//! until shutdown. Before any of it, the data folder, configuration and keys must pass the
//! check of their modes (`strict`).
//! Protocol work lives in the front-end crates; this module only wires and waits.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use mailroom_core::{Hub, NodeId, NodeInfo};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::cli_actor;
use crate::config::{self, Config};
use crate::data::DataDir;
use crate::init::{self, InitReport};
use crate::logging;
use crate::output::Output;
use crate::syslog;

/// Runs the hub until a signal asks it to stop.
pub async fn run(data: &DataDir, out: &Output) -> Result<()> {
    // StrictModes: a folder, configuration or key that others may write is refused, named,
    // before anything is created or locked.
    crate::strict::check_folder(data)?;
    let mut created = init::prepare_folder(data)?;
    let config = config::load(&data.config_file(), &config::env_overrides()?)
        .context("invalid configuration")?;
    crate::strict::check_files(data, &config)?;
    logging::install_for_server(&config.server)?;
    // The negotiated methods: an unknown method or one below the floor stops the start here,
    // named, before anything is opened or listens.
    methods(&config)?;
    // One server per folder while an engine lives in it (the start-up sweep of one would
    // delete the other's uploads); nodes on the cluster engines share none of it.
    let _lock = if config.meta.url.is_empty() || config.blob.url.is_empty() {
        Some(data.lock_for_serve()?)
    } else {
        None
    };
    // Before the Hub exists, so its gauges and counters land in the recorder.
    let metrics = crate::ops::install_recorder()?;
    // This process as a node of the hub: the embedded engines are a cluster of one.
    let node = NodeInfo {
        id: NodeId::new(),
        host: syslog::hostname(),
        pid: std::process::id(),
        started: time::OffsetDateTime::now_utc(),
    };
    let (stores, first_admin) =
        init::open_stores(data, &config, &cli_actor(), &mut created, Some(node)).await?;
    if !created.is_empty() {
        info!(data = %data.root().display(), created = ?created, "initialised the data folder");
        out.init(&InitReport {
            data: data.root().to_owned(),
            created,
            first_admin,
        })?;
    }

    // The store's tap is counted for the metrics and shared with the syslog sink before
    // anything is served; the sink stops after the store has closed, so every event committed
    // while serving is handed over.
    let (sink, subscribers) = match syslog::start(&config.audit).await? {
        Some((sink, sender)) => (Some(sink), vec![sender]),
        None => (None, Vec::new()),
    };
    let fan_out = crate::ops::fan_out(&stores.meta, subscribers)?;
    let result = serve(
        &stores.hub,
        &config,
        FrontEndKeys {
            host_key: stores.host_key,
            pki: &stores.pki,
            keyring: stores.keyring.clone(),
        },
        data,
        crate::ops::Telemetry {
            metrics,
            meta: stores.meta.clone(),
        },
        out,
    )
    .await;
    // Its sessions have ended: the node leaves, with their rows.
    if let Err(err) = stores.hub.leave_cluster().await {
        warn!(error = %err, "could not remove this node from the store; it counts as dead in 15 s");
    }
    stores.meta.close().await;
    fan_out.stop().await;
    if let Some(sink) = sink {
        sink.stop().await;
    }
    if result.is_ok() {
        info!("stopped");
    }
    result
}

/// The checked negotiated methods, and what each enabled front end offers: refused, naming
/// the setting and the method, when a method is unknown, below the floor, or leaves an
/// enabled front end without one it needs.
fn methods(config: &Config) -> Result<Methods> {
    let invalid = |err: mailroom_ace::AceError| anyhow!("invalid configuration: {err}");
    let ace = config.ace.check().map_err(invalid)?;
    let ssh = if config.sftp.enabled {
        Some(ace.ssh().map_err(invalid)?)
    } else {
        None
    };
    let ftps = if config.ftps.enabled {
        Some(
            ace.tls_for(mailroom_ace::Link::Ftps, &config.ftps.encryption)
                .map_err(invalid)?,
        )
    } else {
        None
    };
    let https = if config.https.enabled && !config.https.allow_plaintext {
        Some(
            ace.tls_for(mailroom_ace::Link::Https, &config.https.encryption)
                .map_err(invalid)?,
        )
    } else {
        None
    };
    Ok(Methods {
        ace: Arc::new(ace),
        ssh,
        ftps,
        https,
    })
}

/// The negotiated methods, checked, and what each enabled front end offers.
struct Methods {
    ace: Arc<mailroom_ace::Ace>,
    ssh: Option<mailroom_ace::SshMethods>,
    ftps: Option<mailroom_ace::TlsMethods>,
    https: Option<mailroom_ace::TlsMethods>,
}

/// The keys of the front ends: the SSH host key, the TLS certificates, and the keyring of
/// encryption at rest (the web UI's CSRF key derives from it).
struct FrontEndKeys<'a> {
    host_key: russh::keys::PrivateKey,
    pki: &'a mailroom_tls::Pki,
    keyring: Option<Arc<mailroom_blob::at_rest::Keyring>>,
}

/// The web UI's CSRF key, which outlives a restart so that a form opened before one posts
/// after it: derived from the hub's data key when the hub encrypts at rest, else kept in the
/// data folder.
fn csrf_key(
    data: &DataDir,
    keyring: Option<&mailroom_blob::at_rest::Keyring>,
) -> Result<mailroom_web::CsrfKey> {
    Ok(match keyring {
        Some(keyring) => mailroom_web::CsrfKey::from_bytes(
            keyring
                .csrf_key()
                .context("deriving the web UI's CSRF key")?,
        ),
        None => {
            let csrf_path = data.root().join(mailroom_web::CSRF_KEY_FILE);
            mailroom_web::load_or_create_csrf_key(&csrf_path)
                .with_context(|| format!("loading the web UI's CSRF key {}", csrf_path.display()))?
        }
    })
}

/// Sweeps, starts the front ends, waits for a signal or a front end's failure, then drains.
async fn serve(
    hub: &Arc<Hub>,
    config: &Config,
    keys: FrontEndKeys<'_>,
    data: &DataDir,
    telemetry: crate::ops::Telemetry,
    out: &Output,
) -> Result<()> {
    let crate::ops::Telemetry { metrics, meta } = telemetry;
    let methods = methods(config)?;
    // The rules' names, addresses and handlers are checked before anything changes.
    let handlers = job_handlers(hub, config, data).await?;
    if config.jobs.nice > 19 {
        return Err(anyhow!(
            "invalid configuration: [jobs] nice = {}: 0 to 19, as nice(1) counts",
            config.jobs.nice
        ));
    }
    if config.disk.min_free_percent > 100 {
        return Err(anyhow!(
            "invalid configuration: [disk] min_free_percent = {}: a share of the file system, 0 to 100",
            config.disk.min_free_percent
        ));
    }
    // So are the drop folders: each is ours, not world-writable, and names accounts that exist.
    let drop_folders = crate::drop::check(&config.drop, hub, &data.config_file()).await?;
    let swept = hub
        .sweep()
        .await
        .context("cannot sweep the blob store before serving")?;
    info!(
        staging_removed = swept.staging_removed,
        orphans_removed = swept.orphans_removed,
        "swept unfinished uploads and orphan blobs"
    );
    // The node's first heartbeat, before any session can count against it.
    let forgotten = hub
        .join_cluster()
        .await
        .context("cannot register this node in the metadata store")?;
    if let Some(node) = hub.node() {
        info!(node = %node.id, host = %node.host, forgotten, "registered this node");
    }
    // The clock check at start, before anything is served (an unsynchronised clock is
    // recorded, not refused), then every hour.
    let clock_probe = crate::clock::probe();
    let mut clock_watch = crate::clock::ClockWatch::default();
    let clock_status = clock_watch
        .look(clock_probe.as_ref(), async |detail| {
            hub.record_clock_unsynchronised(detail).await?;
            Ok(())
        })
        .await;
    info!(clock = clock_status.label(), detail = %clock_status.detail(), "clock");
    match &keys.keyring {
        Some(keyring) => info!(
            master_key = keyring.fingerprint(),
            data_keys = keyring.len(),
            "encryption at rest is on"
        ),
        None => warn!("encryption at rest is off: files and TOTP secrets are stored in plain"),
    }

    // Signal handlers first, so a signal that arrives while we bind is not lost.
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    // SIGUSR1 too: its default action ends the process, so a supervisor's (or the bench's)
    // first request for statistics must not arrive before it is watched.
    let user1 = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;

    // TLS first: a bad certificate stops the start before anything listens.
    config.tls.check_server_files()?;
    let ftps_tls = if config.ftps.enabled {
        let mut settings = config.tls.settings(data, keys.pki);
        settings.alpn = vec!["ftp".to_owned()];
        settings.client_auth = config.ftps.client_certificates;
        settings.methods = methods.ftps.clone().unwrap_or_default();
        Some(
            mailroom_tls::server_config(&settings)
                .context("cannot build the FTPS TLS configuration ([tls], [ftps])")?,
        )
    } else {
        None
    };
    let https_tls = if config.https.enabled && !config.https.allow_plaintext {
        let mut settings = config.tls.settings(data, keys.pki);
        settings.alpn = mailroom_https::ALPN
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        settings.client_auth = config.https.client_certificates;
        settings.methods = methods.https.clone().unwrap_or_default();
        Some(
            mailroom_tls::server_config(&settings)
                .context("cannot build the HTTPS TLS configuration ([tls], [https])")?,
        )
    } else {
        None
    };
    let shutdown = CancellationToken::new();
    // The operations listener outlives the drain, answering "not ready" while sessions end.
    let ops_stop = CancellationToken::new();
    let ops = match config.ops.listen {
        Some(address) => {
            let listener = listen("ops", address, "[ops] listen", out).await?;
            let state = mailroom_https::ops::OpsState {
                hub: hub.clone(),
                draining: shutdown.clone(),
                metrics: Arc::new(move || metrics.render()),
            };
            Some(tokio::spawn(mailroom_https::ops::serve_ops(
                listener,
                state,
                ops_stop.clone(),
            )))
        }
        None => None,
    };
    let queue_gauges = tokio::spawn(crate::ops::watch_queue(hub.clone(), shutdown.clone()));
    let mut front_ends: JoinSet<(&'static str, io::Result<()>)> = JoinSet::new();
    if config.sftp.enabled {
        let listener = listen("sftp", config.sftp.listen, "[sftp] listen", out).await?;
        let run = mailroom_sftp::serve(
            listener,
            hub.clone(),
            config.sftp.clone(),
            keys.host_key,
            methods.ssh.clone().unwrap_or_default(),
            shutdown.clone(),
        );
        front_ends.spawn(async move { ("sftp", run.await) });
    }
    if let Some(tls) = ftps_tls {
        let ftps = &config.ftps;
        let explicit = listen("ftps", ftps.listen, "[ftps] listen", out).await?;
        info!(proto = "ftps", passive_ports = %ftps.passive_ports, "explicit TLS (AUTH TLS)");
        let implicit = match ftps.implicit_listen {
            Some(address) => {
                Some(listen("ftps-implicit", address, "[ftps] implicit_listen", out).await?)
            }
            None => None,
        };
        let listeners = mailroom_ftps::Listeners { explicit, implicit };
        let run = mailroom_ftps::serve(listeners, hub.clone(), ftps.clone(), tls, shutdown.clone());
        front_ends.spawn(async move { ("ftps", run.await) });
    }
    if config.https.enabled {
        let mut https = config.https.clone();
        if !https.trusted_proxy_key_file.as_os_str().is_empty() {
            https.trusted_proxy_key_file = data.resolve(&https.trusted_proxy_key_file);
        }
        // A bad proxy key makes the HTTPS front end fail at once, which stops the server with
        // the reason (`AppState::new` reads the key, once).
        let listener = listen("https", https.listen, "[https] listen", out).await?;
        if https.allow_plaintext {
            info!(proto = "https", "plain HTTP ([https] allow_plaintext)");
        }
        // The web UI's pages are served beside the API, on the same listener. Their CSRF key
        // outlives a restart, so a form opened before one posts after it: derived from the
        // hub's data key when the hub encrypts at rest, else kept in the data folder.
        let csrf_key = csrf_key(data, keys.keyring.as_deref())?;
        let run = mailroom_https::serve_with(
            listener,
            hub.clone(),
            https,
            methods.ace.clone(),
            https_tls,
            move |state| mailroom_web::router_with_key(state, csrf_key),
            shutdown.clone(),
        );
        front_ends.spawn(async move { ("https", run.await) });
    }
    if front_ends.is_empty() {
        warn!("[sftp], [ftps] and [https] are all disabled: no front end is running");
    }

    // Housekeeping: the node's heartbeat; close sessions of accounts disabled, deleted, banned
    // or moved out of their networks (also by another process, such as the admin CLI or
    // another node) and those another node's administrator kicked; re-read the bans. It runs
    // until the front ends have drained, so the node's sessions count to their end.
    let housekeeping_stop = CancellationToken::new();
    let housekeeping = tokio::spawn(housekeeping(hub.clone(), housekeeping_stop.clone()));
    // `kill -USR1 <pid>` logs what the metadata store has done so far (the bench reads it).
    let stats = tokio::spawn(stats_on_signal(hub.clone(), meta, user1, shutdown.clone()));
    let retention = tokio::spawn(retention_loop(
        hub.clone(),
        Duration::from_secs(config.retention.interval_seconds.get()),
        shutdown.clone(),
    ));
    // The free-space watch: a `disk.low` event when the data folder's file system runs low.
    let disk = tokio::spawn(disk_watch(
        hub.clone(),
        data.root().to_owned(),
        config.disk.clone(),
        shutdown.clone(),
    ));
    let clock = tokio::spawn(clock_loop(
        hub.clone(),
        clock_probe,
        clock_watch,
        shutdown.clone(),
    ));
    // The job worker runs on a runtime of its own, whose threads the kernel schedules after
    // the transfers' ([jobs] nice). It stops taking jobs at the token; running ones finish
    // within their handler's timeout, and a job cut short runs again after its lease.
    let jobs_runtime = jobs_runtime(config.jobs.nice)?;
    let worker = jobs_runtime.spawn(mailroom_events::run(
        hub.clone(),
        handlers,
        config.jobs.clone(),
        shutdown.clone(),
    ));
    // The drop folders: files that systems on this host write there are delivered as their
    // accounts. At the token an upload under way is aborted, and its file stays for the next
    // start.
    let drops = tokio::spawn(crate::drop::run(
        hub.clone(),
        drop_folders,
        shutdown.clone(),
    ));

    let early_end = tokio::select! {
        _ = terminate.recv() => { info!(signal = "SIGTERM", "shutting down"); None }
        _ = interrupt.recv() => { info!(signal = "SIGINT", "shutting down"); None }
        Some(ended) = front_ends.join_next() => Some(ended),
    };
    shutdown.cancel();
    let _ = queue_gauges.await;
    let _ = stats.await;
    let _ = disk.await;
    let _ = clock.await;
    // The retention loop stops at the token; a pass cut short leaves at most a blob that the
    // next start-up sweep removes (each expiry itself commits atomically).
    if let Err(err) = retention.await {
        error!(error = %err, "the retention task ended abnormally");
    }
    if let Err(err) = worker.await {
        error!(error = %err, "the job worker ended abnormally");
    }
    // The worker has returned: nothing of it is left to wait for.
    jobs_runtime.shutdown_background();
    if let Err(err) = drops.await {
        error!(error = %err, "the drop folders' task ended abnormally");
    }
    if let Some(ended) = early_end {
        // A front end stopped on its own: that is a failure even if it says Ok.
        let failure = front_end_result(ended)
            .err()
            .unwrap_or_else(|| anyhow!("a front end stopped unexpectedly"));
        drain(&mut front_ends, config).await;
        housekeeping_stop.cancel();
        let _ = housekeeping.await;
        stop_ops(ops_stop, ops).await;
        return Err(failure);
    }
    drain(&mut front_ends, config).await;
    housekeeping_stop.cancel();
    let _ = housekeeping.await;
    stop_ops(ops_stop, ops).await;
    Ok(())
}

/// Stops the operations listener once the drain is over.
async fn stop_ops(stop: CancellationToken, ops: Option<tokio::task::JoinHandle<io::Result<()>>>) {
    stop.cancel();
    if let Some(ops) = ops {
        match ops.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => error!(error = %err, "the operations listener failed"),
            Err(err) => error!(error = %err, "the operations listener ended abnormally"),
        }
    }
}

/// Checks the rules against the store and the handlers' settings, and sets up the handlers
/// they use (webhooks: the client and the signing secret, created on first use).
async fn job_handlers(
    hub: &Hub,
    config: &Config,
    data: &DataDir,
) -> Result<mailroom_events::Handlers> {
    let allowed = config
        .webhooks
        .allowed_networks()
        .map_err(|err| anyhow!("invalid configuration: {err}"))?;
    let mailer = mailroom_events::Mailer::new(&config.smtp, data.root())
        .map_err(|err| anyhow!("invalid configuration: {err}"))?;
    crate::rules::check(
        &config.rules,
        hub,
        &allowed,
        mailer.is_some(),
        &data.config_file(),
    )
    .await?;
    let webhooks = if config.rules.iter().any(|rule| !rule.webhook.is_empty()) {
        Some(
            mailroom_events::Webhooks::new(&config.webhooks, data.root())
                .map_err(|err| anyhow!("webhooks: {err}"))?,
        )
    } else {
        None
    };
    if !config.rules.is_empty() {
        info!(rules = config.rules.len(), "rules loaded");
    }
    let scanner = mailroom_events::Scanner::from_config(&config.check, &data.root().join("check"))
        .map_err(|err| anyhow!("invalid configuration: {err}"))?;
    if let Some(scanner) = &scanner {
        info!(scanner = %scanner, "uploads are checked before delivery");
    }
    Ok(mailroom_events::Handlers {
        webhooks,
        mailer,
        scanner,
    })
}

/// The runtime of the job worker: two threads named `mailroom-jobs`, each lowered to `nice`
/// (0 to 19, checked at start; the kernel then runs them after the transfers' threads when
/// the CPU is busy; Linux applies a thread's niceness to that thread alone).
fn jobs_runtime(nice: u8) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mailroom-jobs")
        .enable_all()
        .on_thread_start(move || {
            if nice == 0 {
                return;
            }
            let thread = rustix::thread::gettid();
            if let Err(err) = rustix::process::setpriority_process(Some(thread), i32::from(nice)) {
                warn!(error = %err, "cannot lower the priority of a job thread");
            }
        })
        .build()
        .context("cannot start the job worker's runtime")
}

/// How often the node writes its heartbeat and checks its live sessions against their accounts
/// and what other processes asked: a kick or a disable made anywhere closes a session within
/// about a second even when the store cannot tell at once (SQLite, or PostgreSQL while the
/// listener reconnects).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Ticks of [`HOUSEKEEPING_INTERVAL`] between sweeps of expired tokens and unfinished
/// resumable uploads (one minute).
const SWEEP_TICKS: u32 = 60;

/// Runs [`Hub::enforce_sessions`] every [`HOUSEKEEPING_INTERVAL`], and at once when the store
/// tells of a change another process made ([`Hub::store_changes`]: PostgreSQL's
/// LISTEN/NOTIFY), until `stop`; every minute it also sweeps expired bearer tokens and aborts
/// expired resumable uploads.
async fn housekeeping(hub: Arc<Hub>, stop: CancellationToken) {
    let changes = hub.store_changes();
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        let ticked = tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => true,
            () = changed(changes.as_deref()) => false,
        };
        if ticked {
            ticks = ticks.wrapping_add(1);
        }
        if ticked && ticks.is_multiple_of(SWEEP_TICKS) {
            match hub.sweep_tokens().await {
                Ok(0) => {}
                Ok(deleted) => info!(deleted, "swept expired tokens"),
                Err(err) => warn!(error = %err, "could not sweep expired tokens"),
            }
            let aborted = hub.expire_resumable().await;
            if aborted > 0 {
                info!(aborted, "aborted expired unfinished uploads");
            }
        }
        match hub.enforce_sessions().await {
            Ok(0) => {}
            Ok(closed) => info!(closed, "closed sessions that may no longer run"),
            Err(err) => warn!(error = %err, "could not check live sessions"),
        }
    }
}

/// Resolves when the store tells of a change; never without a store that can.
async fn changed(changes: Option<&tokio::sync::Notify>) {
    match changes {
        Some(changes) => changes.notified().await,
        None => std::future::pending().await,
    }
}

/// Watches the free space of the data folder's file system until `shutdown`: at once and
/// every `[disk] check_seconds`, a `disk.low` event when it falls below the floor (once per
/// crossing; a log line when it is back above).
async fn disk_watch(
    hub: Arc<Hub>,
    root: std::path::PathBuf,
    config: crate::config::DiskConfig,
    shutdown: CancellationToken,
) {
    if config.min_free_percent == 0 {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(config.check_seconds.get()));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut low = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (free, total) = match rustix::fs::statvfs(&root) {
            Ok(stat) => (
                stat.f_bavail.saturating_mul(stat.f_frsize),
                stat.f_blocks.saturating_mul(stat.f_frsize),
            ),
            Err(err) => {
                warn!(error = %err, "cannot read the data folder's free space");
                continue;
            }
        };
        let floor = u128::from(total) * u128::from(config.min_free_percent) / 100;
        let below = u128::from(free) < floor || config.min_free_percent == 100;
        if below && !low {
            let detail = format!(
                "{} free of {} on the data folder's file system ({}), below the floor of {} %",
                mailroom_core::format_size(free),
                mailroom_core::format_size(total),
                root.display(),
                config.min_free_percent
            );
            warn!(free, total, "disk low: {detail}");
            match hub.record_disk_low(detail).await {
                Ok(()) => low = true,
                Err(err) => warn!(error = %err, "could not record the disk.low event"),
            }
        } else if !below && low {
            info!(
                free,
                total, "the data folder's file system is above its free-space floor again"
            );
            low = false;
        }
    }
}

/// Looks at the clock every [`crate::clock::CHECK_INTERVAL`] after the look at start, until
/// `shutdown`: a `clock.unsynchronised` event per crossing, a warning in the log at every look
/// while it lasts.
async fn clock_loop(
    hub: Arc<Hub>,
    probe: Box<dyn crate::clock::ClockProbe>,
    mut watch: crate::clock::ClockWatch,
    shutdown: CancellationToken,
) {
    let first = tokio::time::Instant::now() + crate::clock::CHECK_INTERVAL;
    let mut ticks = tokio::time::interval_at(first, crate::clock::CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        watch
            .look(probe.as_ref(), async |detail| {
                hub.record_clock_unsynchronised(detail).await?;
                Ok(())
            })
            .await;
    }
}

/// Runs the retention pass at once and then every `interval` until `shutdown`. A failed pass
/// is logged and retried at the next tick; it never stops the server.
async fn retention_loop(hub: Arc<Hub>, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = hub.expire_due() => match result {
                Ok(expired) => info!(expired, "retention pass"),
                Err(err) => warn!(error = %err, "retention pass failed; retrying at the next interval"),
            },
        }
    }
}

/// Waits up to the grace period for the front ends to finish their sessions, then cuts them.
async fn drain(front_ends: &mut JoinSet<(&'static str, io::Result<()>)>, config: &Config) {
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let drained = tokio::time::timeout(grace, async {
        while let Some(ended) = front_ends.join_next().await {
            if let Err(err) = front_end_result(ended) {
                error!(
                    error = format!("{err:#}"),
                    "front end failed while stopping"
                );
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            grace_seconds = config.server.shutdown_grace_seconds,
            "grace period over: closing the sessions still running"
        );
        front_ends.abort_all();
    }
}

fn front_end_result(
    ended: Result<(&'static str, io::Result<()>), tokio::task::JoinError>,
) -> Result<()> {
    match ended {
        Ok((_, Ok(()))) => Ok(()),
        Ok((name, Err(err))) => Err(err).with_context(|| format!("the {name} front end failed")),
        Err(err) => Err(anyhow!("a front end task ended abnormally: {err}")),
    }
}

/// Binds one front end's listener, logs it and announces it on standard output (the line
/// scripts and tests read the port from).
async fn listen(
    protocol: &str,
    address: SocketAddr,
    setting: &str,
    out: &Output,
) -> Result<TcpListener> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} ({setting})"))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("cannot read the address of {setting}"))?;
    info!(proto = protocol, address = %bound, "listening");
    out.listening(protocol, bound)?;
    Ok(listener)
}

/// Logs the metadata store's counters (units read and written, commits, flushed commits) each
/// time SIGUSR1 arrives, as one line with target `mailroom::stats` at `info`, until shutdown.
async fn stats_on_signal(
    hub: Arc<Hub>,
    meta: crate::engines::Meta,
    mut user1: tokio::signal::unix::Signal,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(()) = user1.recv() => {
                let stats = hub.store_stats();
                info!(
                    target: "mailroom::stats",
                    reads = stats.reads,
                    writes = stats.writes,
                    hops = stats.hops(),
                    file_operations = hub.file_operations(),
                    commits = stats.commits,
                    flushes = stats.flushes,
                    round_trips = meta.round_trips(),
                    "store statistics"
                );
            }
        }
    }
}
