//! The data folder: where each piece lives, and opening the stores into a [`Hub`].
//!
//! ```text
//! <data>/               0700
//!   mailroom.toml       the configuration (written by init, never rewritten)
//!   ssh_host_ed25519_key  (or wherever [sftp] host_key points)
//!   meta.db             SQLite metadata, WAL (plus meta.db-wal, meta.db-shm), unless
//!                       [meta] url names PostgreSQL
//!   blobs/              the local blob store, unless [blob] url names a bucket
//!   serve.lock          held by the one `mailroom serve` running on the folder while
//!                       either engine is embedded
//!   tls/                the PKI of the TLS front ends (or wherever [tls] dir points;
//!                       see `mailroom_tls`): server CA, server certificate, client CA
//! ```
//!
//! Nothing in it may be written by group or others: `serve` refuses to start otherwise
//! (`crate::strict`).
//!
//! This module knows paths and wiring; it does not create the folder (see [`crate::init`]).

use std::fs::{File, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mailroom_blob::at_rest::Keyring;
use mailroom_core::{BlobStore, Hub, NodeInfo, SystemClock};

use crate::engines::{Engines, Meta};

/// The data folder given by `--data`.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// The stores of a data folder, opened and wired into a [`Hub`].
pub struct OpenHub {
    /// The mailbox service on those stores.
    pub hub: Arc<Hub>,
    /// The metadata store, kept to close it cleanly and for read-only counts.
    pub meta: Meta,
    /// The blob store the Hub writes to, for the commands that walk it (fsck, backup).
    pub blobs: Arc<dyn BlobStore>,
    /// The keyring of encryption at rest, when the hub encrypts.
    pub keyring: Option<Arc<Keyring>>,
}

impl DataDir {
    /// The folder at `root` (not touched yet).
    pub fn new(root: PathBuf) -> DataDir {
        DataDir { root }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `mailroom.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("mailroom.toml")
    }

    /// The SQLite metadata database.
    pub fn meta_db(&self) -> PathBuf {
        self.root.join("meta.db")
    }

    /// The blob store's root.
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// A path from the configuration: relative to the data folder unless absolute.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }

    /// Opens the stores of an initialised folder and builds the Hub on them. Refuses a folder
    /// without a metadata database rather than create an empty one.
    pub async fn open_hub(&self) -> Result<OpenHub> {
        if !self.config_file().exists() {
            bail!(
                "{} is not an initialised mailroom data folder (no mailroom.toml); run `mailroom init` first or pass --data",
                self.root.display()
            );
        }
        // The admin commands honour the configuration too (the safe list, for one).
        let config = crate::config::load(&self.config_file(), &crate::config::env_overrides()?)
            .context("invalid configuration")?;
        let (engines, _) = crate::engines::open(self, &config, false).await?;
        Ok(OpenHub {
            hub: wire(&engines, &config, &self.config_file(), None)?,
            meta: engines.meta,
            blobs: engines.blobs,
            keyring: engines.keyring,
        })
    }

    /// Takes the folder's serve lock, so that two servers never share a folder (the start-up
    /// sweep of one would delete the other's uploads in progress). Held until the file drops.
    pub fn lock_for_serve(&self) -> Result<File> {
        let path = self.root.join("serve.lock");
        let file = File::options()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(TryLockError::WouldBlock) => bail!(
                "another `mailroom serve` is already running on {}",
                self.root.display()
            ),
            Err(TryLockError::Error(err)) => {
                Err(err).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// The Hub on the configured engines with the configured authentication settings, rules,
/// check before delivery and accounts' notices (`config_file` is where they were read, for
/// errors). The admin commands run on it too, so their events make jobs as the server's do.
/// `node` makes the Hub a node of the cluster (`serve`; the admin commands are none).
pub fn wire(
    engines: &Engines,
    config: &crate::config::Config,
    config_file: &Path,
    node: Option<NodeInfo>,
) -> Result<Arc<Hub>> {
    let rules = crate::rules::build(&config.rules, config.jobs.max_queued, config_file)?;
    // Both engines timed for the metrics (a no-op without a recorder, as in admin commands).
    let meta = Arc::new(crate::ops::MeteredMeta::new(engines.meta.port()));
    let blobs = Arc::new(crate::ops::MeteredBlobs::new(engines.blobs.clone()));
    let mut hub = Hub::new(meta, blobs, Arc::new(SystemClock))
        .with_auth(config.auth.to_core())
        .with_jobs(rules, config.jobs.retry())
        .with_check(config.check.enabled());
    if config.smtp.enabled() {
        hub = hub.with_notices(config.notifications.digest_period());
    }
    if let Some(node) = node {
        hub = hub.with_node(node);
    }
    if let Some(keyring) = &engines.keyring {
        hub = hub.with_vault(keyring.clone());
    }
    Ok(Arc::new(hub))
}
