//! Encryption at rest as the binary runs it: where the master key comes from, whether a data
//! folder encrypts, and `mailroom keys`.
//!
//! The master key is looked for, first found wins, in:
//! 1. the environment variable `MAILROOM_MASTER_KEY` (64 hex digits);
//! 2. the systemd credential `mailroom-master-key` (`LoadCredential=` or
//!    `LoadCredentialEncrypted=`, read from `$CREDENTIALS_DIRECTORY`);
//! 3. the key file: `[at_rest] master_key_file`, by default `<data folder>.master-key` beside
//!    the data folder. It must lie outside the data folder (a copy of the folder, a backup of
//!    it or a stolen disk holding only it then opens nothing) and be readable by its owner
//!    only.
//!
//! What happens at start:
//! - data keys stored and no master key found, or the wrong one: refused before anything is
//!   written, naming where it looked;
//! - data keys stored and the right key: the blob store is sealed ([`SealedBlobStore`]) and
//!   the Hub's vault is the keyring (TOTP secrets), the web UI's CSRF key derives from it;
//! - no data keys and a key found: encryption starts now (the hub's data key is made, TOTP
//!   secrets stored in plain are sealed); blobs stored before stay readable as they are;
//! - no data keys, no key, a folder being created with `enabled` on: a key file is written;
//! - otherwise the hub runs without encryption at rest and says so.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mailroom_blob::at_rest::{Keyring, MasterKey, SealedBlobStore};
use mailroom_core::{BlobStore, MetaStore};
use serde::{Deserialize, Serialize};

use crate::cli::KeysCommand;
use crate::config::Config;
use crate::data::DataDir;
use crate::output::Output;

/// The environment variable that may hold the master key.
pub const MASTER_KEY_ENV: &str = "MAILROOM_MASTER_KEY";
/// The name of the systemd credential that may hold it.
pub const CREDENTIAL_NAME: &str = "mailroom-master-key";

mailroom_net::config_section! {
    [at_rest]
    /// Encryption at rest: file content (AES-256-GCM in 64 KiB authenticated chunks, under a
    /// data key per mailbox), TOTP secrets and the web UI's CSRF key, with the data keys
    /// wrapped by a master key kept outside the data folder. The master key comes from
    /// MAILROOM_MASTER_KEY, the systemd credential "mailroom-master-key", or the key file
    /// below, in that order. Lose the master key and the files are gone: back it up apart
    /// from the data folder.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct AtRestConfig {
        /// Whether `mailroom init` (and the first `serve`) of a new data folder writes a
        /// master key and encrypts from the start. Once data keys exist the hub always needs
        /// its master key, whatever this says.
        pub enabled: bool,
        /// The master key file (64 hex digits, mode 0600), outside the data folder; a
        /// relative path is taken from the data folder's parent. Empty: "<data folder>.master-key".
        pub master_key_file: PathBuf,
    }
}

impl Default for AtRestConfig {
    fn default() -> Self {
        AtRestConfig {
            enabled: true,
            master_key_file: PathBuf::new(),
        }
    }
}

/// Where a master key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `MAILROOM_MASTER_KEY`.
    Environment,
    /// A systemd credential, at this path.
    Credential(PathBuf),
    /// The key file.
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Environment => write!(f, "the environment variable {MASTER_KEY_ENV}"),
            KeySource::Credential(path) => write!(f, "the systemd credential {}", path.display()),
            KeySource::File(path) => write!(f, "the key file {}", path.display()),
        }
    }
}

/// The data folder as an absolute path without `.` or `..` (the folder may not exist yet).
fn absolute_root(data: &DataDir) -> Result<PathBuf> {
    let root = std::path::absolute(data.root())
        .with_context(|| format!("cannot resolve {}", data.root().display()))?;
    Ok(root.components().collect())
}

/// The key file of `data` under `config`: outside the folder, or refused.
pub fn key_file(data: &DataDir, config: &AtRestConfig) -> Result<PathBuf> {
    let root = absolute_root(data)?;
    let Some(parent) = root.parent() else {
        bail!(
            "the data folder / has no place beside it for a master key file; set [at_rest] master_key_file"
        );
    };
    let path = if config.master_key_file.as_os_str().is_empty() {
        let name = root
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        parent.join(format!("{name}.master-key"))
    } else {
        parent.join(&config.master_key_file)
    };
    let path: PathBuf = path.components().collect();
    if path.starts_with(&root) {
        bail!(
            "the master key file {} is inside the data folder {}: a copy of the folder would then carry its key; set [at_rest] master_key_file to a path outside it",
            path.display(),
            root.display()
        );
    }
    Ok(path)
}

/// The master key, from the first place that has one; `None` if none does.
pub fn find_key(data: &DataDir, config: &AtRestConfig) -> Result<Option<(MasterKey, KeySource)>> {
    if let Some(text) = std::env::var_os(MASTER_KEY_ENV).filter(|v| !v.is_empty()) {
        let key = MasterKey::parse(&text.to_string_lossy())
            .map_err(|err| anyhow::anyhow!("{MASTER_KEY_ENV}: {err}"))?;
        return Ok(Some((key, KeySource::Environment)));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(CREDENTIAL_NAME);
        if path.exists() {
            let key = read_key(&path, false)?;
            return Ok(Some((key, KeySource::Credential(path))));
        }
    }
    let path = key_file(data, config)?;
    if !path.exists() {
        return Ok(None);
    }
    let key = read_key(&path, true)?;
    Ok(Some((key, KeySource::File(path))))
}

/// The key in `path`; with `private`, refused unless only its owner may read it.
fn read_key(path: &Path, private: bool) -> Result<MasterKey> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if private && meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the master key file {} may be read or written by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    MasterKey::parse(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))
}

/// Writes a fresh master key to `path` (mode 0600, never over an existing file) and returns it.
pub fn write_new_key(path: &Path) -> Result<MasterKey> {
    let key = MasterKey::generate();
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(format!("{}\n", key.to_text()).as_bytes())?;
        file.sync_all()?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("cannot write the master key file {}", path.display()))?;
    Ok(key)
}

/// The blob store and keyring of a hub, once the master key is settled.
pub struct Settled {
    /// The blob store the Hub writes to: sealed when the hub encrypts.
    pub blobs: Arc<dyn BlobStore>,
    /// The keyring, when the hub encrypts.
    pub keyring: Option<Arc<Keyring>>,
    /// The key file written now, for a new folder.
    pub created_key: Option<PathBuf>,
}

/// Opens the keyring of the hub on `meta` as the module doc says, and seals the blob store
/// with it. `blobs(sealed)` makes the blob store underneath (sealed: it need not hash what it
/// stores, the sealing layer hashes the plaintext). `new_folder`: the metadata store was
/// created just now. Refusals change nothing.
pub async fn settle(
    data: &DataDir,
    config: &AtRestConfig,
    meta: Arc<dyn MetaStore>,
    blobs: impl FnOnce(bool) -> Arc<dyn BlobStore>,
    new_folder: bool,
) -> Result<Settled> {
    let records = Keyring::records(&*meta)
        .await
        .context("cannot read the data keys")?;
    let found = find_key(data, config)?;
    let (master, created_key) = match found {
        Some((master, _)) => (master, None),
        None if !records.is_empty() => bail!(
            "this hub encrypts at rest ({} data keys) and no master key was found: set {MASTER_KEY_ENV}, give the systemd credential {CREDENTIAL_NAME}, or put the key in {}",
            records.len(),
            key_file(data, config)?.display()
        ),
        None if new_folder && config.enabled => {
            let path = key_file(data, config)?;
            (write_new_key(&path)?, Some(path))
        }
        None => {
            if config.enabled {
                tracing::warn!(
                    key_file = %key_file(data, config)?.display(),
                    "encryption at rest is off for this data folder: no master key was found (run `mailroom keys init` to turn it on)"
                );
            }
            return Ok(Settled {
                blobs: blobs(false),
                keyring: None,
                created_key: None,
            });
        }
    };
    let keyring = Arc::new(
        Keyring::open(master, meta, true)
            .await
            .map_err(anyhow::Error::from)?,
    );
    Ok(Settled {
        blobs: Arc::new(SealedBlobStore::new(blobs(true), keyring.clone())),
        keyring: Some(keyring),
        created_key,
    })
}

/// `mailroom keys …`.
pub async fn run(data: &DataDir, out: &Output, command: KeysCommand) -> Result<()> {
    let config = crate::config::load(&data.config_file(), &crate::config::env_overrides()?)
        .context("invalid configuration")?;
    match command {
        KeysCommand::Status => status(data, out, &config).await,
        KeysCommand::Init => init(data, out, &config).await,
        KeysCommand::Rotate {
            new_key_file,
            generate,
        } => rotate(data, out, &config, &new_key_file, generate).await,
    }
}

/// What `keys status` reports.
#[derive(Debug, Serialize)]
pub struct KeysStatus {
    /// Whether the hub encrypts at rest (it has data keys).
    pub encrypted: bool,
    /// The fingerprint of the master key the data keys are wrapped with, if any.
    pub wrapped_with: Option<String>,
    /// Where a master key was found, if one was.
    pub key_source: Option<String>,
    /// The fingerprint of the key found.
    pub key_fingerprint: Option<String>,
    /// Whether the key found is the one the data keys need.
    pub key_matches: Option<bool>,
    /// The data keys: the hub's own and one per mailbox that has uploaded.
    pub data_keys: usize,
    /// Where `serve` looks for the key file.
    pub key_file: String,
}

async fn status(data: &DataDir, out: &Output, config: &Config) -> Result<()> {
    let (meta, _) = crate::engines::open_meta(data, &config.meta, false).await?;
    let records = Keyring::records(&*meta.port()).await;
    meta.close().await;
    let records = records.context("cannot read the data keys")?;
    let found = find_key(data, &config.at_rest)?;
    let wrapped_with = records.first().map(|record| record.master.clone());
    let status = KeysStatus {
        encrypted: !records.is_empty(),
        key_matches: match (&found, &wrapped_with) {
            (Some((key, _)), Some(wrapped)) => Some(key.fingerprint() == wrapped),
            _ => None,
        },
        wrapped_with,
        key_source: found.as_ref().map(|(_, source)| source.to_string()),
        key_fingerprint: found.as_ref().map(|(key, _)| key.fingerprint().to_owned()),
        data_keys: records.len(),
        key_file: key_file(data, &config.at_rest)?.display().to_string(),
    };
    out.keys_status(&status)
}

async fn init(data: &DataDir, out: &Output, config: &Config) -> Result<()> {
    let (meta, _) = crate::engines::open_meta(data, &config.meta, false).await?;
    let records = Keyring::records(&*meta.port()).await;
    meta.close().await;
    if !records.context("cannot read the data keys")?.is_empty() {
        bail!("this hub encrypts at rest already; `mailroom keys status` shows its keys");
    }
    let written = match find_key(data, &config.at_rest)? {
        Some(_) => None,
        None => {
            let path = key_file(data, &config.at_rest)?;
            write_new_key(&path)?;
            Some(path)
        }
    };
    // Opening the hub with a key and no data keys makes the hub's data key.
    let open = data.open_hub().await?;
    let result = async {
        let actor = crate::admin::cli_actor();
        let keyring = open
            .keyring
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the hub did not open its keyring"))?;
        let sealed = open.hub.seal_totp_secrets(&actor).await?;
        open.hub
            .record_admin_change(
                &actor,
                "hub",
                format!(
                    "turn encryption at rest on (master key {})",
                    keyring.fingerprint()
                ),
            )
            .await?;
        Ok::<_, anyhow::Error>((keyring.fingerprint().to_owned(), sealed))
    }
    .await;
    open.meta.close().await;
    let (fingerprint, sealed) = result?;
    let mut message = format!("encryption at rest is on: master key {fingerprint}");
    if let Some(path) = written {
        message.push_str(&format!(
            ", written to {} (back it up apart from the data folder)",
            path.display()
        ));
    }
    message.push_str(&format!(
        "; {sealed} TOTP secrets sealed; files stored before stay readable as they are; restart `mailroom serve`"
    ));
    out.done(&message)
}

async fn rotate(
    data: &DataDir,
    out: &Output,
    config: &Config,
    new_key_file: &Path,
    generate: bool,
) -> Result<()> {
    let Some((old, source)) = find_key(data, &config.at_rest)? else {
        bail!(
            "no master key was found (set {MASTER_KEY_ENV}, give the systemd credential {CREDENTIAL_NAME}, or put it in {}): rotating needs the current one",
            key_file(data, &config.at_rest)?.display()
        );
    };
    // The current key is checked (opening the hub unwraps every data key) before a new key
    // file is written.
    let open = data.open_hub().await?;
    let result = async {
        if open.keyring.is_none() {
            bail!("this hub does not encrypt at rest: `mailroom keys init` turns it on");
        }
        let new = if generate {
            write_new_key(new_key_file)?
        } else {
            read_key(new_key_file, true)?
        };
        if new.fingerprint() == old.fingerprint() {
            bail!(
                "{} holds the current master key ({}); rotate to a new one",
                new_key_file.display(),
                old.fingerprint()
            );
        }
        let count = mailroom_blob::at_rest::rotate(&*open.meta.port(), &old, &new).await?;
        open.hub
            .record_admin_change(
                &crate::admin::cli_actor(),
                "hub",
                format!(
                    "rotate the master key from {} to {} ({count} data keys rewrapped)",
                    old.fingerprint(),
                    new.fingerprint()
                ),
            )
            .await?;
        Ok((count, new))
    }
    .await;
    open.meta.close().await;
    let (count, new) = result?;
    out.done(&format!(
        "{count} data keys rewrapped from master key {} ({source}) to {} ({}); put the new key where `serve` looks and restart every node: the old key no longer opens this hub",
        old.fingerprint(),
        new.fingerprint(),
        new_key_file.display()
    ))
}
