//! `mailroom init`, and the first half of `mailroom serve`: bring a data folder to a usable
//! state, creating only what is missing.
//!
//! Every step is idempotent, so an init interrupted half-way finishes on the next run, and a
//! run on an initialised folder changes nothing. The first admin account is created only in a
//! database where nothing has ever happened (no account, no audit event): an operator who
//! later deletes every account does not get a fresh admin on the next start. Its one-time
//! password goes back to the caller to print once; it is stored only as an Argon2id hash and
//! never logged.

use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use mailroom_core::{AccountKind, AccountName, Actor, EventQuery, Hub, Secret};
use rand::RngExt;
use rand::distr::Alphanumeric;
use russh::keys::PrivateKey;

use crate::config::Config;
use crate::data::{self, DataDir};

/// Name of the first admin account.
pub const FIRST_ADMIN: &str = "admin";

/// Length of the generated one-time password.
const PASSWORD_CHARS: usize = 24;

/// What an init did.
#[derive(Debug)]
pub struct InitReport {
    /// The data folder.
    pub data: std::path::PathBuf,
    /// What was created, in order (`mailroom.toml`, `meta.db`, …); empty if nothing was.
    pub created: Vec<String>,
    /// The first admin account and its one-time password, if one was created now.
    pub first_admin: Option<FirstAdmin>,
}

/// The first admin account, created by this init.
#[derive(Debug)]
pub struct FirstAdmin {
    /// Its name.
    pub name: AccountName,
    /// Its one-time password: print it once, store it nowhere.
    pub password: Secret<String>,
}

/// The opened stores of an initialised folder.
pub struct Stores {
    /// The mailbox service.
    pub hub: Arc<Hub>,
    /// The metadata store, for closing it cleanly.
    pub meta: crate::engines::Meta,
    /// The keyring of encryption at rest, when the hub encrypts (the web UI's CSRF key).
    pub keyring: Option<Arc<mailroom_blob::at_rest::Keyring>>,
    /// The SSH host key.
    pub host_key: PrivateKey,
    /// The TLS certificates of the data folder (server CA and certificate, client CA).
    pub pki: mailroom_tls::Pki,
}

/// `mailroom init`: creates what is missing and reports it.
pub async fn run(data: &DataDir, actor: &Actor) -> Result<InitReport> {
    let mut created = prepare_folder(data)?;
    let config = crate::config::load(&data.config_file(), &crate::config::env_overrides()?)
        .context("invalid configuration")?;
    let (stores, first_admin) = open_stores(data, &config, actor, &mut created, None).await?;
    stores.meta.close().await;
    Ok(InitReport {
        data: data.root().to_owned(),
        created,
        first_admin,
    })
}

/// Creates the folder (0700) and writes the config template if either is missing; returns
/// what it created. Runs before the configuration is read, since it writes the file.
pub fn prepare_folder(data: &DataDir) -> Result<Vec<String>> {
    let root = data.root();
    let mut created = Vec::new();
    if !root.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("cannot create the data folder {}", root.display()))?;
        created.push(format!("{}/", root.display()));
    }
    let config_file = data.config_file();
    if !config_file.exists() {
        // A fresh folder: an existing empty folder (a mount point, a temp dir) is made
        // private too, since it is about to hold keys and hashes.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (0700)", root.display()))?;
        write_new_file(&config_file, crate::config::template().as_bytes())?;
        created.push("mailroom.toml".to_owned());
    }
    Ok(created)
}

/// Opens (creating where missing) the host key, the blob store and the metadata database,
/// then creates the first admin account if the database is brand new. `node` makes the Hub a
/// node of the cluster (`serve`).
pub async fn open_stores(
    data: &DataDir,
    config: &Config,
    actor: &Actor,
    created: &mut Vec<String>,
    node: Option<mailroom_core::NodeInfo>,
) -> Result<(Stores, Option<FirstAdmin>)> {
    let host_key_path = data.resolve(&config.sftp.host_key);
    let host_key_existed = host_key_path.exists();
    let host_key = {
        let path = host_key_path.clone();
        tokio::task::spawn_blocking(move || mailroom_sftp::host_key::load_or_generate(&path))
            .await
            .context("the host key task failed")?
            .with_context(|| format!("cannot load the host key {}", host_key_path.display()))?
    };
    if !host_key_existed {
        created.push(relative_name(data, &host_key_path));
    }

    // SQLite creates meta.db (and its journal, with the same mode) under the umask; the rest
    // is written with explicit modes. A umask of 077 meanwhile keeps a loose umask from
    // leaving a group-writable database that `serve`'s check of modes would refuse.
    let private_files = crate::strict::PrivateFiles::new();
    let opened = crate::engines::open(data, config, true).await;
    drop(private_files);
    let (engines, made) = opened?;
    if made.blobs {
        created.push("blobs/".to_owned());
    }
    if made.meta_db {
        created.push("meta.db".to_owned());
    }
    if let Some(path) = &made.master_key {
        created.push(format!(
            "master key {} (back it up apart from the data folder)",
            path.display()
        ));
    }

    let pki = crate::ca::ensure(data, config).await?;
    created.extend(pki.created.iter().map(|path| {
        let name = relative_name(data, path);
        if path.is_dir() {
            format!("{name}/")
        } else {
            name
        }
    }));

    let hub = data::wire(&engines, config, &data.config_file(), node)?;
    let first_admin = create_first_admin(&hub, actor).await?;
    let sealed = hub
        .seal_totp_secrets(actor)
        .await
        .context("cannot seal the TOTP secrets stored in plain")?;
    if sealed > 0 {
        created.push(format!("{sealed} TOTP secrets sealed at rest"));
    }
    if let Some(admin) = &first_admin {
        created.push(format!("admin account {}", admin.name));
    }
    Ok((
        Stores {
            hub,
            meta: engines.meta,
            keyring: engines.keyring,
            host_key,
            pki,
        },
        first_admin,
    ))
}

/// Creates `admin` with a random password if nothing has ever happened in the database.
async fn create_first_admin(hub: &Hub, actor: &Actor) -> Result<Option<FirstAdmin>> {
    let untouched = hub
        .events(&EventQuery {
            limit: Some(1),
            ..EventQuery::default()
        })
        .await
        .context("cannot read the audit trail")?
        .is_empty()
        && hub
            .accounts()
            .await
            .context("cannot list accounts")?
            .is_empty();
    if !untouched {
        return Ok(None);
    }
    let name = AccountName::parse(FIRST_ADMIN).context("the first admin's name")?;
    let password = one_time_password(&name);
    hub.add_account(
        actor,
        name.clone(),
        AccountKind::Admin,
        Some(password.clone()),
        Vec::new(),
    )
    .await
    .with_context(|| format!("cannot create the first admin account {name}"))?;
    tracing::info!(account = %name, "created the first admin account");
    Ok(Some(FirstAdmin { name, password }))
}

/// A random alphanumeric password that passes the strength rules (a draw that happens to
/// contain the account name is drawn again).
fn one_time_password(name: &AccountName) -> Secret<String> {
    loop {
        let password: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(PASSWORD_CHARS)
            .map(char::from)
            .collect();
        let password = Secret::new(password);
        if mailroom_core::check_password_strength(&password, name.as_str()).is_ok() {
            return password;
        }
    }
}

/// Writes a new file (0600) through a temporary name, synced, so a crash leaves either no file
/// or the whole one.
fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    let temp = path.with_extension("toml.tmp");
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&temp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// `path` as shown in reports: relative to the data folder when inside it.
fn relative_name(data: &DataDir, path: &Path) -> String {
    path.strip_prefix(data.root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_strong() {
        let name = AccountName::parse(FIRST_ADMIN).unwrap();
        let a = one_time_password(&name);
        let b = one_time_password(&name);
        assert_eq!(a.expose().len(), PASSWORD_CHARS);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose(), b.expose());
        assert!(mailroom_core::check_password_strength(&a, "admin").is_ok());
    }
}
