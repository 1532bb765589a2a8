//! The start-up check of file modes, in the spirit of OpenSSH's StrictModes: `mailroom serve`
//! refuses a data folder, configuration or key file that its group or other users may write,
//! since whoever can change them can change who logs in, what the hub trusts and what the
//! audit trail says.
//!
//! What is checked: the data folder, `mailroom.toml`, every entry directly in the folder
//! (not the contents of `blobs/`), the TLS folder and its files, and each secret file the
//! configuration names wherever it lives (SSH host key, `[tls] key_file`, the trusted proxy's
//! key, the webhook secret, the SMTP password, the bucket's secret key). The check only
//! reads: a refusal names the file and the fix (`chmod go-w PATH`) before the lock is taken
//! or anything is created. Everything the hub puts in a fresh folder is written with an
//! explicit mode, except `meta.db`, which SQLite creates under the umask: [`PrivateFiles`]
//! holds a umask of 077 while the engines open, so a fresh folder passes whatever the
//! caller's umask. Ownership is not checked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::Mode;

use crate::config::Config;
use crate::data::DataDir;

/// The write bits of group and others.
const LOOSE: u32 = 0o022;

/// The first of the checks that need no configuration: the folder and `mailroom.toml`, when
/// the folder is already initialised (a fresh one is made private by `init`). Runs before
/// anything is created.
pub fn check_folder(data: &DataDir) -> Result<()> {
    let config_file = data.config_file();
    if !config_file.exists() {
        return Ok(());
    }
    check_path(data.root(), "the data folder")?;
    check_path(&config_file, "the configuration")
}

/// The rest, once the configuration is read: every entry of the folder, the TLS folder and
/// its files, and each secret file the configuration names. Files that do not exist yet are
/// skipped (they are created private).
pub fn check_files(data: &DataDir, config: &Config) -> Result<()> {
    check_folder(data)?;
    // The named secrets first, so that a refusal says which one it is.
    let named = [
        (&config.sftp.host_key, "the SSH host key"),
        (&config.tls.key_file, "the TLS key ([tls] key_file)"),
        (
            &config.https.trusted_proxy_key_file,
            "the trusted proxy's key ([https] trusted_proxy_key_file)",
        ),
        (
            &config.webhooks.secret_file,
            "the webhook secret ([webhooks] secret_file)",
        ),
        (
            &config.smtp.password_file,
            "the SMTP password ([smtp] password_file)",
        ),
        (
            &config.blob.secret_access_key_file,
            "the bucket's secret key ([blob] secret_access_key_file)",
        ),
    ];
    for (path, what) in named {
        if path.as_os_str().is_empty() {
            continue;
        }
        let path = data.resolve(path);
        if path.exists() {
            check_path(&path, what)?;
        }
    }
    let tls_dir = data.resolve(&config.tls.dir);
    if tls_dir.exists() {
        check_path(&tls_dir, "the TLS folder")?;
        for entry in entries(&tls_dir)? {
            check_entry(&entry, "a TLS file")?;
        }
    }
    for entry in entries(data.root())? {
        check_entry(&entry, "a file of the data folder")?;
    }
    Ok(())
}

/// While alive, files and folders the process creates are private to its user (umask 077);
/// the previous umask comes back when it drops. Held only while the engines open (nothing
/// else runs then), so what the hub writes later, such as the drop folders' `rejected/`,
/// keeps the operator's umask.
pub struct PrivateFiles {
    previous: Mode,
}

impl PrivateFiles {
    /// Sets the umask to 077.
    pub fn new() -> PrivateFiles {
        PrivateFiles {
            previous: rustix::process::umask(Mode::from_raw_mode(0o077)),
        }
    }
}

impl Drop for PrivateFiles {
    fn drop(&mut self) {
        rustix::process::umask(self.previous);
    }
}

/// The entries of `dir`, sorted so that the first loose one named is always the same.
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = std::fs::read_dir(dir)
        .and_then(|read| {
            read.map(|entry| entry.map(|entry| entry.path()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .with_context(|| format!("cannot list {}", dir.display()))?;
    paths.sort();
    Ok(paths)
}

/// An entry found in a folder: a symbolic link's own mode means nothing (its target, when the
/// configuration names it, is checked by name), so links are skipped.
fn check_entry(path: &Path, what: &str) -> Result<()> {
    let metadata = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read the mode of {}", path.display()))?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    check_mode(path, metadata.permissions().mode(), what)
}

/// A named path, its link followed.
fn check_path(path: &Path, what: &str) -> Result<()> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read the mode of {}", path.display()))?;
    check_mode(path, metadata.permissions().mode(), what)
}

fn check_mode(path: &Path, mode: u32, what: &str) -> Result<()> {
    if mode & LOOSE == 0 {
        return Ok(());
    }
    bail!(
        "{} ({what}) is writable by {} (mode {:04o}): whoever can write it could change the hub's configuration, keys or records; remove that permission (chmod go-w {}) and start again",
        path.display(),
        writers(mode),
        mode & 0o7777,
        path.display()
    )
}

/// Who besides the owner may write, for the sentence.
fn writers(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and others",
        (true, false) => "its group",
        (false, _) => "others",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mode: u32, expect: Option<&str>) {
        let result = check_mode(Path::new("/data/x"), mode, "a file");
        match (result, expect) {
            (Ok(()), None) => {}
            (Err(err), Some(expect)) => {
                let err = err.to_string();
                assert!(err.contains(expect), "{mode:o}: {err}");
                assert!(err.contains("chmod go-w /data/x"), "{mode:o}: {err}");
            }
            (result, expect) => panic!("{mode:o}: {result:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn only_write_by_group_or_others_is_refused() {
        check(0o600, None);
        check(0o700, None);
        check(0o644, None);
        check(0o755, None);
        check(0o100600, None);
        check(0o4755, None);
        check(0o620, Some("writable by its group (mode 0620)"));
        check(0o602, Some("writable by others (mode 0602)"));
        check(0o666, Some("writable by its group and others (mode 0666)"));
        check(0o40777, Some("(mode 0777)"));
        check(0o1777, Some("(mode 1777)"));
    }
}
