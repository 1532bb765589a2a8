//! Drop folders (`[[drop]]`): systems on the hub's own host hand files over by writing them
//! into a folder, and the hub delivers each complete file as an account, then removes it.
//!
//! This module owns the `[[drop]]` tables of `mailroom.toml` (each value parsed as the file is
//! read), the checks `serve` runs before anything changes (the folder exists, is a directory
//! owned by the user the hub runs as and not world-writable; the modes' settings fit together;
//! the named accounts exist; no two folders share or nest), and the task that watches each
//! folder and takes its files. It deliberately decides nothing about where a file may go:
//! every file is uploaded through `Hub::begin_upload`, `Upload::write_at` and
//! `Hub::finish_upload` as its sending account, so routes, rights, names, sizes and quotas
//! are the hub's, as for any client.
//!
//! - **Complete files only.** A name that starts with `.` or ends in `.tmp`, `.part` or
//!   `.partial` is still being written (write, then rename) and is never taken. Any other
//!   file is taken once its size and modification time have not changed for `settle_seconds`.
//! - **Watching.** `notify`'s recommended watcher (inotify on Linux; recursive in private
//!   mode) only nudges the folder's task through a channel of one; the task rescans the
//!   folder, so events that coalesce, overflow or go missing lose nothing. A full rescan also
//!   runs every `rescan_seconds`, and the task wakes when a waiting file may have settled.
//! - **At least once.** A file is removed only after `finish_upload` returned Ok: the
//!   delivery is durable then. A crash between the two delivers it again at the next start;
//!   it is never lost. A file is never uploaded twice at once.
//! - **Refusals** (a bad name, no route, a folder that names no account, the hub refusing)
//!   move the file to `<path>/rejected/` with `<name>.reason`; a transient failure leaves it
//!   in place for the next rescan.
//! - **Nothing is followed.** Whoever may write into a drop folder must not make the hub read
//!   or write elsewhere, so every file call is relative to a folder opened with `O_NOFOLLOW`
//!   (`openat`, `renameat`, `unlinkat`): a symbolic link, device or pipe is never opened, and
//!   is rejected like any file that cannot be delivered. (A hard link to a file elsewhere is
//!   the kernel's to prevent: `fs.protected_hardlinks`, on by default, allows one only to
//!   files its maker could read and write anyway.)

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::num::NonZeroU64;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use mailroom_core::{
    AccountKind, AccountName, Area, ClientSession, CoreError, Delivery, ErrorKind, FileName, Hub,
    Protocol, VirtualPath, glob_matches,
};
use notify::Watcher as _;
use notify::event::{AccessKind, AccessMode};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::rules::{GlobSetting, NameSetting};

/// The longest `settle_seconds` (an hour): a file that waits longer looks lost.
pub const MAX_SETTLE_SECONDS: u64 = 3600;

/// The folder inside each drop folder that refused files are moved to; never scanned.
pub const REJECTED: &str = "rejected";

/// Bytes read from a dropped file and written to its upload at a time.
const CHUNK: usize = 256 * 1024;

/// Files of one drop folder uploaded at once.
const MAX_TAKING: usize = 4;

/// The least time between two scans that events asked for: a file being written makes an
/// event per write, and one scan after a burst sees what all of them would.
const MIN_SCAN_GAP: Duration = Duration::from_millis(100);

/// How many `~N` suffixes to try for a name in `rejected/`.
const MAX_SUFFIX: u32 = 10_000;

/// The commented example of `[[drop]]` in the template `init` writes.
pub const TEMPLATE_EXAMPLE: &str = "
# Drop folders: systems on this host hand files to the hub by writing them into a folder.
# Each complete file (not named .*, *.tmp, *.part or *.partial, and unchanged for
# settle_seconds) is uploaded as an account, like any client's file, then removed; a file
# that cannot be delivered is moved to <path>/rejected/ with a <name>.reason file. The folder
# must exist, belong to the user the hub runs as, and not be world-writable.
# mode = \"private\": files in <path>/<recipient>/ go from account to that account or group.
# mode = \"shared\": routes = [{ file = \"INV-*.edi\", sender = \"erp\", to = \"bank\" }, …],
# the first route whose file glob matches wins.
#
# [[drop]]
# path = \"/srv/mailroom/drop/erp\"
# mode = \"private\"
# account = \"erp\"
# settle_seconds = 5
# rescan_seconds = 30
";

/// One drop folder as written in `mailroom.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// The folder: an absolute path on the hub's host.
    pub path: FolderSetting,
    /// `private`: a file in `<path>/<recipient>/` goes from `account` to that account or
    /// group. `shared`: a file goes where the first route matching its name says.
    pub mode: DropMode,
    /// Private mode: the account every file is sent as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<NameSetting>,
    /// Seconds a file's size and modification time must stay unchanged before it is taken.
    #[serde(default)]
    pub settle_seconds: SettleSeconds,
    /// Seconds between full rescans, the fallback for file-system events that were missed.
    #[serde(default = "default_rescan_seconds")]
    pub rescan_seconds: NonZeroU64,
    /// Shared mode: where files go, by name; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<DropRoute>,
}

/// How a drop folder's files find their recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DropMode {
    /// `<path>/<recipient>/<name>`, all sent as one account.
    Private,
    /// `<path>/<name>`, routed by name.
    Shared,
}

impl DropMode {
    /// The label in the file.
    fn as_str(self) -> &'static str {
        match self {
            DropMode::Private => "private",
            DropMode::Shared => "shared",
        }
    }
}

/// One route of a shared drop folder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DropRoute {
    /// A glob on the file name (`*`, `?`, case-insensitive).
    pub file: GlobSetting,
    /// The account the file is sent as.
    pub sender: NameSetting,
    /// The account or group it is sent to.
    pub to: NameSetting,
}

/// An absolute folder path, with `.` components dropped; `..` is refused, so that what is
/// checked and shown is where the files are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct FolderSetting(PathBuf);

impl TryFrom<String> for FolderSetting {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let path = Path::new(&value);
        if !path.is_absolute() {
            return Err(format!("{value:?} is not an absolute path"));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(format!(
                "{value:?}: a drop folder's path cannot contain \"..\""
            ));
        }
        Ok(FolderSetting(path.components().collect()))
    }
}

impl From<FolderSetting> for String {
    fn from(setting: FolderSetting) -> String {
        setting.0.display().to_string()
    }
}

/// `settle_seconds`: at most [`MAX_SETTLE_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct SettleSeconds(u64);

impl Default for SettleSeconds {
    fn default() -> Self {
        SettleSeconds(5)
    }
}

impl TryFrom<u64> for SettleSeconds {
    type Error = String;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        if value > MAX_SETTLE_SECONDS {
            return Err(format!(
                "settle_seconds is at most {MAX_SETTLE_SECONDS}, not {value}"
            ));
        }
        Ok(SettleSeconds(value))
    }
}

impl From<SettleSeconds> for u64 {
    fn from(setting: SettleSeconds) -> u64 {
        setting.0
    }
}

fn default_rescan_seconds() -> NonZeroU64 {
    // Invariant-free: 30 is built without a fallible constructor (1 + 29).
    NonZeroU64::MIN.saturating_add(29)
}

/// A drop folder that passed the start-up checks, ready to be watched.
#[derive(Debug)]
pub struct DropFolder {
    /// The folder as configured: what logs and messages show.
    shown: String,
    /// The folder with symbolic links resolved, as checked.
    path: PathBuf,
    /// Where its files go.
    routing: Routing,
    /// How long a file must stay unchanged.
    settle: Duration,
    /// Time between full rescans.
    rescan: Duration,
    /// Held while a file is moved to `rejected/`, so two refusals never pick one name.
    rejecting: Mutex<()>,
}

/// Where the files of a drop folder go, with every name parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Routing {
    /// From `account` to the account or group its sub-folder names.
    Private {
        /// The sending account.
        account: AccountName,
    },
    /// By the first route whose glob matches the name.
    Shared {
        /// The routes, in order.
        routes: Vec<Route>,
    },
}

/// A route of a shared drop folder, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    file: String,
    sender: AccountName,
    to: AccountName,
}

/// What `serve` checks before anything changes, each refusal naming the configuration file,
/// the `[[drop]]` table's line, the folder and the reason: the settings of each mode fit
/// together; the folder exists, is a directory owned by the user the hub runs as and is not
/// world-writable; the accounts and groups named exist; no two folders share or nest.
pub async fn check(drops: &[DropConfig], hub: &Hub, config_file: &Path) -> Result<Vec<DropFolder>> {
    if drops.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(config_file).unwrap_or_default();
    let user = rustix::process::geteuid().as_raw();
    let mut folders: Vec<DropFolder> = Vec::with_capacity(drops.len());
    for (i, drop) in drops.iter().enumerate() {
        let folder = match check_one(drop, hub, user).await {
            Ok(folder) => folder,
            Err(reason) => bail!("{}: {reason}", at(config_file, &text, i, drop)),
        };
        if let Some(other) = folders
            .iter()
            .find(|f| f.path.starts_with(&folder.path) || folder.path.starts_with(&f.path))
        {
            bail!(
                "{}: it shares or nests with the drop folder {} ({}); each file must belong to one",
                at(config_file, &text, i, drop),
                other.shown,
                other.path.display()
            );
        }
        folders.push(folder);
    }
    Ok(folders)
}

/// Checks one drop folder; the reason of a refusal, without the place.
async fn check_one(drop: &DropConfig, hub: &Hub, user: u32) -> Result<DropFolder, String> {
    let routing = routing(drop)?;
    let path = check_folder(&drop.path.0, user)?;
    match &routing {
        Routing::Private { account } => check_sender(hub, account).await?,
        Routing::Shared { routes } => {
            for route in routes {
                check_sender(hub, &route.sender).await?;
                match hub.principal_exists(&route.to).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(format!(
                            "no account or group is named {:?} (route for {:?})",
                            route.to.as_str(),
                            route.file
                        ));
                    }
                    Err(err) => return Err(format!("cannot look up {}: {err}", route.to)),
                }
            }
        }
    }
    Ok(DropFolder {
        shown: drop.path.0.display().to_string(),
        path,
        routing,
        settle: Duration::from_secs(drop.settle_seconds.0),
        rescan: Duration::from_secs(drop.rescan_seconds.get()),
        rejecting: Mutex::new(()),
    })
}

/// The routing of a drop, if its settings fit its mode.
fn routing(drop: &DropConfig) -> Result<Routing, String> {
    match drop.mode {
        DropMode::Private => {
            if !drop.routes.is_empty() {
                return Err(
                    "a private drop folder takes no routes: its sub-folders name the recipients"
                        .to_owned(),
                );
            }
            let Some(account) = &drop.account else {
                return Err(
                    "a private drop folder needs account = \"NAME\", the account its files are sent as"
                        .to_owned(),
                );
            };
            Ok(Routing::Private {
                account: account.0.clone(),
            })
        }
        DropMode::Shared => {
            if drop.account.is_some() {
                return Err(
                    "a shared drop folder takes no account: each route names its sender".to_owned(),
                );
            }
            if drop.routes.is_empty() {
                return Err(
                    "a shared drop folder needs at least one route: routes = [{ file = \"*.pdf\", sender = \"NAME\", to = \"NAME\" }]"
                        .to_owned(),
                );
            }
            Ok(Routing::Shared {
                routes: drop
                    .routes
                    .iter()
                    .map(|route| Route {
                        file: route.file.0.clone(),
                        sender: route.sender.0.clone(),
                        to: route.to.0.clone(),
                    })
                    .collect(),
            })
        }
    }
}

/// The folder with links resolved, if it is a directory owned by `user` that others may not
/// write to, and its `rejected/` (if there is one) is a folder of its own.
fn check_folder(path: &Path, user: u32) -> Result<PathBuf, String> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err("the folder does not exist".to_owned());
        }
        Err(err) => return Err(format!("the folder cannot be read: {err}")),
    };
    if !metadata.is_dir() {
        return Err("it is not a directory".to_owned());
    }
    if metadata.uid() != user {
        return Err(format!(
            "it is owned by user id {}, not by the user the hub runs as (user id {user})",
            metadata.uid()
        ));
    }
    let mode = metadata.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "it is world-writable (mode {:o}): anyone on the host could hand files to the hub; remove the write permission of others (chmod o-w)",
            mode & 0o7777
        ));
    }
    let resolved = std::fs::canonicalize(path)
        .map_err(|err| format!("the folder cannot be resolved: {err}"))?;
    match std::fs::symlink_metadata(resolved.join(REJECTED)) {
        Ok(rejected) if !rejected.is_dir() => Err(format!(
            "{REJECTED} in it is not a folder: refused files are moved there"
        )),
        _ => Ok(resolved),
    }
}

/// Refuses a sender that is not an existing client account.
async fn check_sender(hub: &Hub, name: &AccountName) -> Result<(), String> {
    match hub.account(name).await {
        Ok(account) if account.kind == AccountKind::Client => Ok(()),
        Ok(_) => Err(format!(
            "{name} is an admin account, which owns no mailbox and cannot send files"
        )),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            Err(format!("no account is named {:?}", name.as_str()))
        }
        Err(err) => Err(format!("cannot look up {name}: {err}")),
    }
}

/// `mailroom.toml, line N, drop folder /path`: where the `i`-th `[[drop]]` table starts.
fn at(config_file: &Path, text: &str, i: usize, drop: &DropConfig) -> String {
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with("[[drop]]"))
        .nth(i)
        .map_or(0, |(n, _)| n + 1);
    format!(
        "{}, line {line}, drop folder {}",
        config_file.display(),
        drop.path.0.display()
    )
}

/// Watches every drop folder and takes its files until `shutdown`; each folder has a task
/// of its own. An upload under way at shutdown is aborted and its file left for the next
/// start.
pub async fn run(hub: Arc<Hub>, folders: Vec<DropFolder>, shutdown: CancellationToken) {
    let mut watchers = JoinSet::new();
    for folder in folders {
        watchers.spawn(watch(hub.clone(), Arc::new(folder), shutdown.clone()));
    }
    while let Some(ended) = watchers.join_next().await {
        if let Err(err) = ended {
            error!(error = %err, "a drop folder's task ended abnormally");
        }
    }
}

/// One folder's loop: scan when an event, a settling file or the rescan schedule asks, hand
/// each complete file to a task of its own, and remember what is waiting or under way.
async fn watch(hub: Arc<Hub>, folder: Arc<DropFolder>, shutdown: CancellationToken) {
    let (nudge, mut nudges) = mpsc::channel(1);
    let _events = match watch_events(&folder, nudge) {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            warn!(
                drop = %folder.shown,
                error = %err,
                rescan_seconds = folder.rescan.as_secs(),
                "cannot watch the drop folder for changes; it is rescanned on schedule only"
            );
            None
        }
    };
    info!(
        drop = %folder.shown,
        mode = folder.mode().as_str(),
        settle_seconds = folder.settle.as_secs(),
        rescan_seconds = folder.rescan.as_secs(),
        "watching a drop folder"
    );
    let mut files = Files::default();
    let mut taking: JoinSet<Taken> = JoinSet::new();
    let mut keys: HashMap<tokio::task::Id, PathBuf> = HashMap::new();
    let mut rescan_at = Instant::now();
    let mut scan_at: Option<Instant> = None;
    let mut last_scan: Option<Instant> = None;
    loop {
        let ready = if taking.len() < MAX_TAKING {
            files.next_ready()
        } else {
            None
        };
        let wake = [scan_at, ready]
            .into_iter()
            .flatten()
            .fold(rescan_at, Instant::min);
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(ended) = taking.join_next_with_id() => {
                finish(&folder, &mut files, &mut keys, ended);
                // A slot is free, and the folder may have changed while the file was taken.
                scan_at = Some(earliest_scan(last_scan));
                continue;
            }
            Some(()) = nudges.recv() => {
                scan_at = Some(scan_at.unwrap_or_else(|| earliest_scan(last_scan)));
                continue;
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if now >= rescan_at {
            rescan_at = now + folder.rescan;
        }
        scan_at = None;
        last_scan = Some(now);
        let listing = {
            let folder = folder.clone();
            tokio::task::spawn_blocking(move || list(&folder)).await
        };
        let listing = match listing {
            Ok(Ok(listing)) => listing,
            Ok(Err(err)) => {
                warn!(drop = %folder.shown, error = %err, "cannot scan the drop folder; trying again at the next rescan");
                continue;
            }
            Err(err) => {
                error!(drop = %folder.shown, error = %err, "a scan of the drop folder ended abnormally");
                continue;
            }
        };
        let slots = MAX_TAKING.saturating_sub(taking.len());
        for candidate in files.ready(&folder, listing, now, slots) {
            let key = candidate.key.clone();
            let handle = taking.spawn(take(
                hub.clone(),
                folder.clone(),
                candidate,
                shutdown.clone(),
            ));
            keys.insert(handle.id(), key);
        }
    }
    // Uploads under way see the token between chunks, abort, and leave their files.
    while let Some(ended) = taking.join_next_with_id().await {
        finish(&folder, &mut files, &mut keys, ended);
    }
}

/// When a scan that an event asked for may run.
fn earliest_scan(last_scan: Option<Instant>) -> Instant {
    let now = Instant::now();
    last_scan.map_or(now, |last| (last + MIN_SCAN_GAP).max(now))
}

/// Books the end of a task that took a file.
fn finish(
    folder: &DropFolder,
    files: &mut Files,
    keys: &mut HashMap<tokio::task::Id, PathBuf>,
    ended: Result<(tokio::task::Id, Taken), tokio::task::JoinError>,
) {
    let (id, taken) = match ended {
        Ok((id, taken)) => (id, taken),
        Err(err) => {
            error!(drop = %folder.shown, error = %err, "taking a dropped file ended abnormally; it is tried again at the next rescan");
            (err.id(), Taken::Later)
        }
    };
    if let Some(key) = keys.remove(&id) {
        files.taken(key, taken, Instant::now() + folder.rescan);
    }
}

/// Starts the watcher that nudges the folder's task. It only sends on the channel: a full
/// channel means a scan is due already, and the scan sees whatever the event was about.
fn watch_events(
    folder: &DropFolder,
    nudge: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let matters = match &event {
            Ok(event) => matters(&event.kind),
            // An error (an overflowed queue, say): something may have been missed.
            Err(_) => true,
        };
        if matters {
            let _ = nudge.try_send(());
        }
    })?;
    let recursive = match folder.routing {
        // Files arrive in the recipients' sub-folders, which come and go.
        Routing::Private { .. } => notify::RecursiveMode::Recursive,
        Routing::Shared { .. } => notify::RecursiveMode::NonRecursive,
    };
    watcher.watch(&folder.path, recursive)?;
    Ok(watcher)
}

/// Whether an event may mean a file arrived, grew or moved. Opening and reading (the hub's
/// own reads among them) change nothing; closing a file written to may complete it.
fn matters(kind: &notify::EventKind) -> bool {
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

impl DropFolder {
    fn mode(&self) -> DropMode {
        match self.routing {
            Routing::Private { .. } => DropMode::Private,
            Routing::Shared { .. } => DropMode::Shared,
        }
    }
}

/// What the folder's task knows of its files between scans.
#[derive(Default)]
struct Files {
    /// Files seen and not yet complete: their state, and when they will have settled.
    settling: HashMap<PathBuf, Settling>,
    /// Files being taken by a task.
    busy: HashSet<PathBuf>,
    /// Files left after a transient failure, not tried again before the given time.
    later: HashMap<PathBuf, Instant>,
    /// Files delivered that could not be removed: not taken again while they stay as they
    /// were.
    kept: HashMap<PathBuf, FileState>,
}

/// A file waiting to settle.
struct Settling {
    state: FileState,
    ready_at: Instant,
}

impl Files {
    /// The earliest time a waiting file may have settled, or one left after a failure may
    /// be tried again.
    fn next_ready(&self) -> Option<Instant> {
        self.settling
            .values()
            .map(|s| s.ready_at)
            .chain(self.later.values().copied())
            .min()
    }

    /// Updates what is known from a scan, and returns at most `slots` entries to take now:
    /// settled files, and entries to reject at once.
    fn ready(
        &mut self,
        folder: &DropFolder,
        listing: Listing,
        now: Instant,
        slots: usize,
    ) -> Vec<Candidate> {
        let wall = SystemTime::now();
        let present: HashSet<PathBuf> = listing.entries.iter().map(|e| e.key.clone()).collect();
        self.settling.retain(|key, _| present.contains(key));
        self.later
            .retain(|key, until| present.contains(key) && *until > now);
        self.kept.retain(|key, _| present.contains(key));
        let mut ready = Vec::new();
        for entry in listing.entries {
            if self.busy.contains(&entry.key) || self.later.contains_key(&entry.key) {
                continue;
            }
            if let Entry::File(state) = entry.what {
                if self.kept.get(&entry.key) == Some(&state) {
                    continue;
                }
                if !self.settled(folder, &entry.key, state, now, wall) {
                    continue;
                }
            }
            if ready.len() >= slots {
                continue;
            }
            self.settling.remove(&entry.key);
            self.busy.insert(entry.key.clone());
            ready.push(Candidate {
                key: entry.key,
                root: listing.root.clone(),
                parent: entry.parent,
                recipient: entry.recipient,
                name: entry.name,
                what: entry.what,
            });
        }
        ready
    }

    /// Whether a file in `state` has settled: unchanged for the folder's settle time, by
    /// its modification time or, when that lies in the future, by what the scans saw.
    fn settled(
        &mut self,
        folder: &DropFolder,
        key: &Path,
        state: FileState,
        now: Instant,
        wall: SystemTime,
    ) -> bool {
        if let Some(settling) = self.settling.get(key)
            && settling.state == state
        {
            return now >= settling.ready_at;
        }
        let wait = state
            .modified()
            .and_then(|modified| wall.duration_since(modified).ok())
            .map_or(folder.settle, |age| folder.settle.saturating_sub(age));
        if !wait.is_zero() {
            debug!(
                drop = %folder.shown,
                file = %key.display(),
                bytes = state.size,
                wait_ms = wait.as_millis(),
                "a dropped file is settling"
            );
        }
        self.settling.insert(
            key.to_owned(),
            Settling {
                state,
                ready_at: now + wait,
            },
        );
        wait.is_zero()
    }

    /// Books what became of a file a task took.
    fn taken(&mut self, key: PathBuf, taken: Taken, retry_at: Instant) {
        self.busy.remove(&key);
        match taken {
            Taken::Done | Taken::Changed => {}
            Taken::Kept(state) => {
                self.kept.insert(key, state);
            }
            Taken::Later => {
                self.later.insert(key, retry_at);
            }
        }
    }
}

/// What one scan found: the folder, open, and every entry that is not being written.
struct Listing {
    root: Arc<OwnedFd>,
    entries: Vec<Listed>,
}

/// An entry of a scan.
struct Listed {
    /// Its path inside the drop folder (`bob/report.csv`): its key between scans.
    key: PathBuf,
    /// The folder it is in, open.
    parent: Arc<OwnedFd>,
    /// Private mode: the sub-folder it is in.
    recipient: Option<OsString>,
    /// Its name in `parent`.
    name: OsString,
    /// What it is.
    what: Entry,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A regular file where files belong, as it stood.
    File(FileState),
    /// Anything else, with the reason it is refused.
    Stray(&'static str),
}

/// Lists the folder without following a link: every entry but `rejected/` and names still
/// being written, in private mode one level down.
fn list(folder: &DropFolder) -> std::io::Result<Listing> {
    let root = Arc::new(rustix::fs::open(
        &folder.path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?);
    let mut entries = Vec::new();
    for name in names(&root)? {
        if in_progress(&name) || name == REJECTED {
            continue;
        }
        let Some(kind) = kind_at(&root, &name)? else {
            continue;
        };
        let what = match (&folder.routing, kind) {
            (Routing::Private { .. }, Kind::Directory) => {
                list_recipient(&root, name, &mut entries)?;
                continue;
            }
            (Routing::Shared { .. }, Kind::File(state)) => Entry::File(state),
            (Routing::Private { .. }, Kind::File(_)) => Entry::Stray(
                "a file directly in a private drop folder has no recipient: write it into <recipient>/",
            ),
            (Routing::Shared { .. }, Kind::Directory) => {
                Entry::Stray("a folder: a shared drop folder takes files only")
            }
            (_, Kind::Other) => Entry::Stray(NOT_A_FILE),
        };
        entries.push(Listed {
            key: PathBuf::from(&name),
            parent: root.clone(),
            recipient: None,
            name,
            what,
        });
    }
    Ok(Listing { root, entries })
}

const NOT_A_FILE: &str =
    "not a regular file (a symbolic link, device or pipe is never followed or read)";

/// Lists the recipient folder `recipient` of a private drop folder into `entries`.
fn list_recipient(
    root: &OwnedFd,
    recipient: OsString,
    entries: &mut Vec<Listed>,
) -> std::io::Result<()> {
    let folder = match rustix::fs::openat(
        root,
        &recipient,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(folder) => Arc::new(folder),
        // Gone, or replaced by something else, since it was listed: the next scan sees it.
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    for name in names(&folder)? {
        if in_progress(&name) {
            continue;
        }
        let Some(kind) = kind_at(&folder, &name)? else {
            continue;
        };
        let what = match kind {
            Kind::File(state) => Entry::File(state),
            Kind::Directory => {
                Entry::Stray("a folder inside a recipient's folder: only files are taken")
            }
            Kind::Other => Entry::Stray(NOT_A_FILE),
        };
        entries.push(Listed {
            key: Path::new(&recipient).join(&name),
            parent: folder.clone(),
            recipient: Some(recipient.clone()),
            name,
            what,
        });
    }
    Ok(())
}

/// The names in an open folder, but `.` and `..`.
fn names(folder: &OwnedFd) -> std::io::Result<Vec<OsString>> {
    let mut listing = rustix::fs::Dir::read_from(folder)?;
    let mut names = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

/// What an entry is, without following a link.
enum Kind {
    File(FileState),
    Directory,
    Other,
}

/// The kind of `name` in `folder`; None when it is gone.
fn kind_at(folder: &OwnedFd, name: &OsStr) -> std::io::Result<Option<Kind>> {
    let stat = match rustix::fs::statat(folder, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    Ok(Some(match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Kind::File(FileState::of_stat(&stat)),
        FileType::Directory => Kind::Directory,
        _ => Kind::Other,
    }))
}

/// Whether a name is one a writer is still working on (write, then rename): hidden, or with
/// a temporary extension. Such a file is never taken.
fn in_progress(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    if bytes.starts_with(b".") {
        return true;
    }
    let lower = bytes.to_ascii_lowercase();
    [&b".tmp"[..], b".part", b".partial"]
        .iter()
        .any(|suffix| lower.ends_with(suffix))
}

/// A file as a stat saw it: which file, how big, when last written. Two equal states mean
/// nothing was written in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    device: u64,
    inode: u64,
    size: u64,
    modified_seconds: i64,
    modified_nanos: i64,
}

impl FileState {
    fn of_stat(stat: &rustix::fs::Stat) -> FileState {
        FileState {
            device: unsigned(stat.st_dev),
            inode: unsigned(stat.st_ino),
            size: unsigned(stat.st_size),
            modified_seconds: signed(stat.st_mtime),
            modified_nanos: signed(stat.st_mtime_nsec),
        }
    }

    fn of_metadata(metadata: &std::fs::Metadata) -> FileState {
        FileState {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_seconds: metadata.mtime(),
            modified_nanos: metadata.mtime_nsec(),
        }
    }

    fn same_file(&self, other: &FileState) -> bool {
        self.device == other.device && self.inode == other.inode
    }

    /// The modification time, if it is after 1970.
    fn modified(&self) -> Option<SystemTime> {
        let seconds = u64::try_from(self.modified_seconds).ok()?;
        let nanos = u32::try_from(self.modified_nanos).ok()?;
        UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
    }
}

/// A stat field as u64, whatever its C type on this platform.
fn unsigned<T: TryInto<u64>>(value: T) -> u64 {
    value.try_into().unwrap_or(u64::MAX)
}

/// A stat field as i64, whatever its C type on this platform.
fn signed<T: TryInto<i64>>(value: T) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// An entry handed to [`take`].
struct Candidate {
    key: PathBuf,
    root: Arc<OwnedFd>,
    parent: Arc<OwnedFd>,
    recipient: Option<OsString>,
    name: OsString,
    what: Entry,
}

/// What became of an entry a task took.
#[derive(Debug)]
enum Taken {
    /// Delivered and removed, or moved to `rejected/`, or gone.
    Done,
    /// Delivered, but it could not be removed: not taken again while it stays as it is.
    Kept(FileState),
    /// Left in place after a transient failure: tried again at the next rescan.
    Later,
    /// It changed while it was read: it must settle again.
    Changed,
}

/// Takes one entry: delivers a settled file as its sender and removes it, or moves what
/// cannot be delivered to `rejected/`.
async fn take(
    hub: Arc<Hub>,
    folder: Arc<DropFolder>,
    candidate: Candidate,
    shutdown: CancellationToken,
) -> Taken {
    let state = match candidate.what {
        Entry::Stray(reason) => return reject(&folder, &candidate, reason).await,
        Entry::File(state) => state,
    };
    let (session, path) = match address(&folder.routing, &candidate) {
        Ok(addressed) => addressed,
        Err(reason) => return reject(&folder, &candidate, &reason).await,
    };
    let deliveries = match deliver(&hub, &candidate, state, &session, &path, &shutdown).await {
        Ok(deliveries) => deliveries,
        Err(Failure::Refused(err)) => return reject(&folder, &candidate, err.message()).await,
        Err(Failure::Transient(reason)) => {
            warn!(
                drop = %folder.shown,
                file = %candidate.key.display(),
                reason = %reason,
                "a dropped file could not be delivered for now; it stays and is tried again at the next rescan"
            );
            return Taken::Later;
        }
        Err(Failure::Changed) => return Taken::Changed,
        Err(Failure::Stopped) => return Taken::Later,
    };
    let VirtualPath::File(_, recipient, name) = &path else {
        // Invariant: `address` builds only file paths.
        return Taken::Done;
    };
    let ids: Vec<String> = deliveries.iter().map(|d| d.id.to_string()).collect();
    // The hub gives a name taken by a delivery still pending a `~N` suffix.
    let name = deliveries.first().map_or(name, |d| &d.name);
    info!(
        drop = %folder.shown,
        account = %session.account,
        recipient = %recipient,
        name = %name,
        bytes = state.size,
        delivery = %ids.join(","),
        "took a dropped file"
    );
    let removed = {
        let (parent, name) = (candidate.parent.clone(), candidate.name.clone());
        tokio::task::spawn_blocking(move || remove(&parent, &name, &state)).await
    };
    match removed {
        Ok(Ok(())) => Taken::Done,
        Ok(Err(err)) => {
            error!(
                drop = %folder.shown,
                file = %candidate.key.display(),
                error = %err,
                "a delivered file cannot be removed from the drop folder; it is not taken again while it stays as it is"
            );
            Taken::Kept(state)
        }
        Err(err) => {
            error!(drop = %folder.shown, file = %candidate.key.display(), error = %err, "removing a delivered file ended abnormally");
            Taken::Kept(state)
        }
    }
}

/// Who sends a file and where it goes, or why it cannot go anywhere. Only names are
/// checked here; the hub decides the rest.
fn address(
    routing: &Routing,
    candidate: &Candidate,
) -> Result<(ClientSession, VirtualPath), String> {
    let Some(text) = candidate.name.to_str() else {
        return Err("the file name is not valid UTF-8".to_owned());
    };
    let name = FileName::parse(text).map_err(|err| err.message().to_owned())?;
    let (sender, target) = match routing {
        Routing::Private { account } => {
            let folder = candidate.recipient.as_deref().unwrap_or_default();
            let Some(folder) = folder.to_str() else {
                return Err("the folder's name is not valid UTF-8".to_owned());
            };
            let recipient = AccountName::parse(folder).map_err(|err| {
                format!(
                    "the folder {folder:?} names no account or group: {}",
                    err.message()
                )
            })?;
            (account.clone(), recipient)
        }
        Routing::Shared { routes } => {
            let Some(route) = routes
                .iter()
                .find(|route| glob_matches(&route.file, name.as_str()))
            else {
                return Err(format!("no route of the drop folder matches {name}"));
            };
            (route.sender.clone(), route.to.clone())
        }
    };
    let session = ClientSession {
        account: sender,
        source: None,
        protocol: Protocol::Drop,
    };
    Ok((session, VirtualPath::File(Area::Outbox, target, name)))
}

/// Why a file was not delivered.
enum Failure {
    /// The hub refused it: it goes to `rejected/`.
    Refused(CoreError),
    /// A failure that may pass (the store, reading the file): it stays.
    Transient(String),
    /// The file changed or went while it was read.
    Changed,
    /// The hub is shutting down.
    Stopped,
}

impl Failure {
    /// The one place a hub error of a drop folder becomes a decision: refusals are final,
    /// store trouble is not.
    fn from_hub(err: CoreError) -> Failure {
        match err.kind() {
            ErrorKind::Transient | ErrorKind::Internal => Failure::Transient(err.to_string()),
            ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::RouteDenied
            | ErrorKind::InvalidName
            | ErrorKind::QuotaExceeded
            | ErrorKind::Conflict => Failure::Refused(err),
        }
    }
}

/// Uploads the file as `session` to `path`, in chunks, and checks that what was read is the
/// file that settled, whole, before the upload is finished.
async fn deliver(
    hub: &Hub,
    candidate: &Candidate,
    settled: FileState,
    session: &ClientSession,
    path: &VirtualPath,
    shutdown: &CancellationToken,
) -> Result<Vec<Delivery>, Failure> {
    let opened = {
        let (parent, name) = (candidate.parent.clone(), candidate.name.clone());
        tokio::task::spawn_blocking(move || open_file(&parent, &name)).await
    };
    let file = match opened {
        Ok(Ok(Some(file))) => file,
        Ok(Ok(None)) => return Err(Failure::Changed),
        Ok(Err(err)) => return Err(Failure::Transient(format!("cannot open the file: {err}"))),
        Err(err) => {
            return Err(Failure::Transient(format!(
                "opening the file failed: {err}"
            )));
        }
    };
    let mut file = tokio::fs::File::from_std(file);
    match file.metadata().await {
        Ok(metadata) if FileState::of_metadata(&metadata) == settled => {}
        Ok(_) => return Err(Failure::Changed),
        Err(err) => return Err(Failure::Transient(format!("cannot read the file: {err}"))),
    }
    let mut upload = hub
        .begin_upload(session, path)
        .await
        .map_err(Failure::from_hub)?;
    let mut buffer = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        if shutdown.is_cancelled() {
            hub.abort_upload(
                upload,
                "the hub is shutting down; the file stays in the drop folder",
            )
            .await;
            return Err(Failure::Stopped);
        }
        let read = match file.read(&mut buffer).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) => {
                hub.abort_upload(upload, "the dropped file could not be read")
                    .await;
                return Err(Failure::Transient(format!("cannot read the file: {err}")));
            }
        };
        let chunk = buffer.get(..read).unwrap_or_default();
        if let Err(err) = upload.write_at(offset, chunk).await {
            hub.abort_upload(upload, "the dropped file could not be stored")
                .await;
            return Err(Failure::from_hub(err));
        }
        offset = offset.saturating_add(chunk.len() as u64);
    }
    // What was read must be the file that settled, whole: written to since, or replaced at
    // its name, it must settle again.
    let now_open = file.metadata().await.map(|m| FileState::of_metadata(&m));
    let at_name = {
        let (parent, name) = (candidate.parent.clone(), candidate.name.clone());
        tokio::task::spawn_blocking(move || kind_at(&parent, &name)).await
    };
    let unchanged = matches!(now_open, Ok(state) if state == settled)
        && matches!(at_name, Ok(Ok(Some(Kind::File(state)))) if state == settled)
        && offset == settled.size;
    if !unchanged {
        hub.abort_upload(upload, "the dropped file changed while it was read")
            .await;
        return Err(Failure::Changed);
    }
    hub.finish_upload(upload).await.map_err(Failure::from_hub)
}

/// Opens `name` in `parent` for reading, never through a link and never blocking on a pipe;
/// None when it is gone or is no longer a regular file.
fn open_file(parent: &OwnedFd, name: &OsStr) -> std::io::Result<Option<std::fs::File>> {
    let fd = match rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Removes a delivered file, if the name still holds the file that was delivered (a writer
/// may have put a new one there since: that one is taken on its own), and makes the removal
/// durable, so that a crash does not deliver it again.
fn remove(parent: &OwnedFd, name: &OsStr, delivered: &FileState) -> std::io::Result<()> {
    match kind_at(parent, name)? {
        Some(Kind::File(now)) if now.same_file(delivered) => {}
        _ => return Ok(()),
    }
    rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
    rustix::fs::fsync(parent)?;
    Ok(())
}

/// Moves an entry that cannot be delivered to `rejected/`, with a `.reason` file beside it.
async fn reject(folder: &Arc<DropFolder>, candidate: &Candidate, reason: &str) -> Taken {
    let when = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "an unknown time".to_owned());
    let text = format!(
        "{} in the drop folder {} was not delivered.\nReason: {reason}\nTime: {when}\n",
        candidate.key.display(),
        folder.shown
    );
    let moved = {
        let folder = folder.clone();
        let (root, parent, name) = (
            candidate.root.clone(),
            candidate.parent.clone(),
            candidate.name.clone(),
        );
        tokio::task::spawn_blocking(move || {
            move_to_rejected(&root, &parent, &name, &text, &folder.rejecting)
        })
        .await
    };
    match moved {
        Ok(Ok(Some(rejected))) => {
            warn!(
                drop = %folder.shown,
                file = %candidate.key.display(),
                rejected = %Path::new(REJECTED).join(rejected).display(),
                reason = %reason,
                "rejected a dropped file"
            );
            Taken::Done
        }
        Ok(Ok(None)) => Taken::Done,
        Ok(Err(err)) => {
            error!(
                drop = %folder.shown,
                file = %candidate.key.display(),
                reason = %reason,
                error = %err,
                "cannot move a refused file to rejected/; it stays and is tried again at the next rescan"
            );
            Taken::Later
        }
        Err(err) => {
            error!(drop = %folder.shown, file = %candidate.key.display(), error = %err, "rejecting a dropped file ended abnormally");
            Taken::Later
        }
    }
}

/// Moves `name` from `parent` into `rejected/` under the first free name (`name`, `name~2`,
/// …, free for it and its `.reason`), then writes the reason; the name it got, or None when
/// it was gone.
fn move_to_rejected(
    root: &OwnedFd,
    parent: &OwnedFd,
    name: &OsStr,
    reason: &str,
    lock: &Mutex<()>,
) -> std::io::Result<Option<OsString>> {
    let rejected = rejected_folder(root)?;
    // A poisoned lock only means another rejection panicked; the folder is still whole.
    let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
    for n in 1..=MAX_SUFFIX {
        let candidate = suffixed(name, n);
        let mut reason_name = candidate.clone();
        reason_name.push(".reason");
        if kind_at(&rejected, &candidate)?.is_some() || kind_at(&rejected, &reason_name)?.is_some()
        {
            continue;
        }
        match rustix::fs::renameat(parent, name, &rejected, &candidate) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Ok(None),
            Err(err) => return Err(err.into()),
        }
        let fd = rustix::fs::openat(
            &rejected,
            &reason_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        std::fs::File::from(fd).write_all(reason.as_bytes())?;
        return Ok(Some(candidate));
    }
    Err(std::io::Error::other(format!(
        "{MAX_SUFFIX} files of this name are in rejected/ already"
    )))
}

/// `rejected/` in the drop folder, created (0700) if missing, never through a link.
fn rejected_folder(root: &OwnedFd) -> std::io::Result<OwnedFd> {
    let open = || {
        rustix::fs::openat(
            root,
            REJECTED,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    match open() {
        Ok(folder) => Ok(folder),
        Err(Errno::NOENT) => {
            match rustix::fs::mkdirat(root, REJECTED, Mode::RWXU) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(err) => return Err(err.into()),
            }
            Ok(open()?)
        }
        Err(err) => Err(err.into()),
    }
}

/// `name` with a collision suffix before its extension: `report.csv` and 2 give
/// `report~2.csv`; 1 gives the name itself.
fn suffixed(name: &OsStr, n: u32) -> OsString {
    if n == 1 {
        return name.to_owned();
    }
    let bytes = name.as_bytes();
    let (stem, extension) = match bytes.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => bytes.split_at(dot),
        _ => (bytes, &b""[..]),
    };
    let mut out = stem.to_vec();
    out.extend_from_slice(format!("~{n}").as_bytes());
    out.extend_from_slice(extension);
    OsStr::from_bytes(&out).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_being_written_are_never_taken() {
        let check = |name: &str, expect: bool| {
            assert_eq!(in_progress(OsStr::new(name)), expect, "{name}");
        };
        check(".report.csv", true);
        check(".rsync.X3f9", true);
        check("report.csv.tmp", true);
        check("report.csv.part", true);
        check("big.dat.PART", true);
        check("big.dat.partial", true);
        check("report.csv", false);
        check("part", false);
        check("report.tmp.csv", false);
        check("tmp", false);
    }

    #[test]
    fn rejected_names_get_a_suffix_before_the_extension() {
        let check = |name: &str, n: u32, expect: &str| {
            assert_eq!(suffixed(OsStr::new(name), n), OsString::from(expect));
        };
        check("report.csv", 1, "report.csv");
        check("report.csv", 2, "report~2.csv");
        check("archive.tar.gz", 3, "archive.tar~3.gz");
        check("README", 2, "README~2");
        check(".hidden", 2, ".hidden~2");
        let odd = OsStr::from_bytes(b"a\xff.bin");
        assert_eq!(suffixed(odd, 2).as_bytes(), b"a\xff~2.bin");
    }

    fn parse(text: &str) -> Result<Vec<DropConfig>, String> {
        crate::config::parse(Path::new("/d/mailroom.toml"), text, &[])
            .map(|config| config.drop)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn values_are_checked_as_the_file_is_read() {
        let check_err = |text: &str, expect: &[&str]| {
            let err = parse(text).unwrap_err();
            for part in expect {
                assert!(err.contains(part), "{err:?} lacks {part:?}");
            }
        };
        check_err(
            "[[drop]]\npath = \"/srv/drop\"\nmode = \"public\"\naccount = \"erp\"\n",
            &["/d/mailroom.toml", "line 3", "unknown variant `public`"],
        );
        check_err(
            "[[drop]]\npath = \"srv/drop\"\nmode = \"private\"\naccount = \"erp\"\n",
            &["line 2", "not an absolute path"],
        );
        check_err(
            "[[drop]]\npath = \"/srv/../etc\"\nmode = \"private\"\naccount = \"erp\"\n",
            &["line 2", "\"..\""],
        );
        check_err(
            "[[drop]]\npath = \"/srv/drop\"\nmode = \"private\"\naccount = \"erp\"\nsettle_seconds = 3601\n",
            &["line 5", "at most 3600"],
        );
        check_err(
            "[[drop]]\npath = \"/srv/drop\"\nmode = \"private\"\naccount = \"Erp\"\n",
            &["line 4", "not a valid name"],
        );
        check_err(
            "[[drop]]\npath = \"/srv/drop\"\nmode = \"shared\"\nroutes = [{ file = \"*.pdf\", sender = \"erp\", too = \"bob\" }]\n",
            &["line 4", "unknown field `too`"],
        );
        check_err(
            "[[drop]]\npath = \"/srv/drop\"\nmode = \"private\"\naccount = \"erp\"\nrescan_seconds = 0\n",
            &["line 5"],
        );

        let drops =
            parse("[[drop]]\npath = \"/srv/./drop/\"\nmode = \"private\"\naccount = \"erp\"\n")
                .unwrap();
        assert_eq!(drops[0].path.0, PathBuf::from("/srv/drop"));
        assert_eq!(drops[0].settle_seconds, SettleSeconds(5));
        assert_eq!(drops[0].rescan_seconds.get(), 30);
    }

    #[test]
    fn each_mode_takes_its_own_settings() {
        let check = |text: &str, expect: Result<(), &str>| {
            let drops = parse(text).unwrap();
            match (routing(&drops[0]), expect) {
                (Ok(_), Ok(())) => {}
                (Err(err), Err(part)) => assert!(err.contains(part), "{err:?} lacks {part:?}"),
                (got, expect) => panic!("{text}: {got:?}, expected {expect:?}"),
            }
        };
        let route = "routes = [{ file = \"*.pdf\", sender = \"erp\", to = \"bob\" }]\n";
        check(
            "[[drop]]\npath = \"/d\"\nmode = \"private\"\naccount = \"erp\"\n",
            Ok(()),
        );
        check(
            "[[drop]]\npath = \"/d\"\nmode = \"private\"\n",
            Err("needs account"),
        );
        check(
            &format!("[[drop]]\npath = \"/d\"\nmode = \"private\"\naccount = \"erp\"\n{route}"),
            Err("takes no routes"),
        );
        check(
            &format!("[[drop]]\npath = \"/d\"\nmode = \"shared\"\n{route}"),
            Ok(()),
        );
        check(
            "[[drop]]\npath = \"/d\"\nmode = \"shared\"\n",
            Err("at least one route"),
        );
        check(
            &format!("[[drop]]\npath = \"/d\"\nmode = \"shared\"\naccount = \"erp\"\n{route}"),
            Err("takes no account"),
        );
    }

    fn candidate(recipient: Option<&str>, name: &[u8]) -> Candidate {
        let fd: OwnedFd = std::fs::File::open("/").unwrap().into();
        let fd = Arc::new(fd);
        Candidate {
            key: PathBuf::new(),
            root: fd.clone(),
            parent: fd,
            recipient: recipient.map(OsString::from),
            name: OsStr::from_bytes(name).to_owned(),
            what: Entry::Stray(""),
        }
    }

    #[test]
    fn files_are_addressed_by_folder_or_by_the_first_matching_route() {
        let name = |s: &str| AccountName::parse(s).unwrap();
        let private = Routing::Private {
            account: name("erp"),
        };
        let shared = Routing::Shared {
            routes: vec![
                Route {
                    file: "INV-*.edi".to_owned(),
                    sender: name("erp"),
                    to: name("bank"),
                },
                Route {
                    file: "*.edi".to_owned(),
                    sender: name("erp"),
                    to: name("archive"),
                },
                Route {
                    file: "*.pdf".to_owned(),
                    sender: name("scanner"),
                    to: name("accounts"),
                },
            ],
        };
        let check = |routing: &Routing, recipient, file: &[u8], expect: Result<&str, &str>| {
            let got = address(routing, &candidate(recipient, file));
            match (got, expect) {
                (Ok((session, path)), Ok(expect)) => {
                    assert_eq!(session.protocol, Protocol::Drop);
                    assert_eq!(session.source, None);
                    assert_eq!(format!("{} {path}", session.account), expect);
                }
                (Err(err), Err(part)) => assert!(err.contains(part), "{err:?} lacks {part:?}"),
                (got, expect) => panic!(
                    "{:?}: {:?}, expected {expect:?}",
                    String::from_utf8_lossy(file),
                    got.map(|(s, p)| format!("{} {p}", s.account))
                ),
            }
        };
        check(
            &private,
            Some("bob"),
            b"report.csv",
            Ok("erp /outbox/bob/report.csv"),
        );
        check(
            &private,
            Some("team"),
            b"a.pdf",
            Ok("erp /outbox/team/a.pdf"),
        );
        check(&private, Some("Bob"), b"a.pdf", Err("names no account"));
        check(&private, Some("bob"), b"a\xff.pdf", Err("not valid UTF-8"));
        check(
            &private,
            Some("bob"),
            b"a\x07.pdf",
            Err("forbidden character"),
        );
        check(
            &shared,
            None,
            b"INV-1.edi",
            Ok("erp /outbox/bank/INV-1.edi"),
        );
        check(
            &shared,
            None,
            b"inv-2.EDI",
            Ok("erp /outbox/bank/inv-2.EDI"),
        );
        check(
            &shared,
            None,
            b"ORD-1.edi",
            Ok("erp /outbox/archive/ORD-1.edi"),
        );
        check(
            &shared,
            None,
            b"scan.pdf",
            Ok("scanner /outbox/accounts/scan.pdf"),
        );
        check(&shared, None, b"notes.txt", Err("no route"));
    }

    fn state(size: u64, modified: SystemTime) -> FileState {
        let since = modified.duration_since(UNIX_EPOCH).unwrap();
        FileState {
            device: 1,
            inode: 2,
            size,
            modified_seconds: i64::try_from(since.as_secs()).unwrap(),
            modified_nanos: i64::from(since.subsec_nanos()),
        }
    }

    fn listing(entries: &[(&str, Entry)]) -> Listing {
        let fd: OwnedFd = std::fs::File::open("/").unwrap().into();
        let fd = Arc::new(fd);
        Listing {
            root: fd.clone(),
            entries: entries
                .iter()
                .map(|(name, what)| Listed {
                    key: PathBuf::from(name),
                    parent: fd.clone(),
                    recipient: None,
                    name: OsString::from(name),
                    what: *what,
                })
                .collect(),
        }
    }

    fn taken(ready: &[Candidate]) -> Vec<String> {
        ready.iter().map(|c| c.key.display().to_string()).collect()
    }

    #[test]
    fn a_file_is_taken_once_it_has_stayed_unchanged_for_the_settle_time() {
        let folder = DropFolder {
            shown: "/d".to_owned(),
            path: PathBuf::from("/d"),
            routing: Routing::Private {
                account: AccountName::parse("erp").unwrap(),
            },
            settle: Duration::from_secs(5),
            rescan: Duration::from_secs(30),
            rejecting: Mutex::new(()),
        };
        let wall = SystemTime::now();
        let old = state(10, wall - Duration::from_secs(60));
        let fresh = state(10, wall);
        let grown = state(20, wall);
        let future = state(10, wall + Duration::from_secs(3600));
        let mut files = Files::default();
        let t0 = Instant::now();
        let second = Duration::from_secs(1);

        // Unchanged for a minute by its modification time: taken at once; a stray too.
        let ready = files.ready(
            &folder,
            listing(&[
                ("old", Entry::File(old)),
                ("fresh", Entry::File(fresh)),
                ("future", Entry::File(future)),
                ("link", Entry::Stray(NOT_A_FILE)),
            ]),
            t0,
            MAX_TAKING,
        );
        assert_eq!(taken(&ready), ["old", "link"]);
        let ready_at = files.next_ready().unwrap();
        assert!(ready_at > t0 && ready_at <= t0 + 5 * second, "{ready_at:?}");
        // Being taken: never handed out twice.
        let listed = [
            ("old", Entry::File(old)),
            ("fresh", Entry::File(grown)),
            ("future", Entry::File(future)),
        ];
        let ready = files.ready(&folder, listing(&listed), t0 + second, MAX_TAKING);
        assert!(ready.is_empty());
        // `fresh` grew at t0 + 1 s: it waits from then. `future` waits by what the scans
        // saw, its modification time being of no use.
        let ready = files.ready(&folder, listing(&listed), t0 + 5 * second, MAX_TAKING);
        assert_eq!(taken(&ready), ["future"]);
        let ready = files.ready(&folder, listing(&listed), t0 + 6 * second, MAX_TAKING);
        assert_eq!(taken(&ready), ["fresh"]);

        // A transient failure: left alone until the time given, then tried again.
        files.taken(PathBuf::from("old"), Taken::Later, t0 + 40 * second);
        files.taken(PathBuf::from("link"), Taken::Done, t0);
        let listed = [("old", Entry::File(old))];
        assert_eq!(files.next_ready(), Some(t0 + 40 * second));
        assert!(
            files
                .ready(&folder, listing(&listed), t0 + 39 * second, MAX_TAKING)
                .is_empty()
        );
        let ready = files.ready(&folder, listing(&listed), t0 + 40 * second, MAX_TAKING);
        assert_eq!(taken(&ready), ["old"]);
        // Delivered but not removable: not taken again while it stays as it was.
        files.taken(PathBuf::from("old"), Taken::Kept(old), t0);
        assert!(
            files
                .ready(&folder, listing(&listed), t0 + 41 * second, MAX_TAKING)
                .is_empty()
        );
        let ready = files.ready(
            &folder,
            listing(&[(
                "old",
                Entry::File(state(11, wall - Duration::from_secs(60))),
            )]),
            t0 + 42 * second,
            MAX_TAKING,
        );
        assert_eq!(taken(&ready), ["old"]);
        // No more at once than the free slots; the rest wait for the next scan.
        let many: Vec<(String, Entry)> = (0..6)
            .map(|i| (format!("f{i}"), Entry::File(old)))
            .collect();
        let many: Vec<(&str, Entry)> = many.iter().map(|(n, e)| (n.as_str(), *e)).collect();
        let mut files = Files::default();
        assert_eq!(files.ready(&folder, listing(&many), t0, 2).len(), 2);
        assert_eq!(files.ready(&folder, listing(&many), t0, 4).len(), 4);
        assert!(files.ready(&folder, listing(&many), t0, 4).is_empty());
    }

    #[test]
    fn only_events_that_may_change_a_file_nudge_a_scan() {
        use notify::EventKind;
        use notify::event::{CreateKind, ModifyKind, RenameMode};
        let check = |kind: EventKind, expect: bool| {
            assert_eq!(matters(&kind), expect, "{kind:?}");
        };
        check(EventKind::Create(CreateKind::File), true);
        check(EventKind::Modify(ModifyKind::Name(RenameMode::To)), true);
        check(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            true,
        );
        check(EventKind::Access(AccessKind::Open(AccessMode::Any)), false);
        check(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            false,
        );
        check(EventKind::Any, true);
    }
}
