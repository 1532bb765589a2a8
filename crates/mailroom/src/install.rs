//! `mailroom verify-install`: is the running binary the one the build wrote a manifest for?
//!
//! The release build (`scripts/release`) writes `mailroom-<version>.sha256` beside the binary,
//! in `sha256sum`'s format (`<hex>  mailroom`). This module hashes the running executable
//! (`std::env::current_exe`) with SHA-256, finds the manifest (beside the binary, or where
//! `--manifest` says) and compares the two. It reports; it repairs nothing, and a manifest
//! proves only what the place it was kept proves: keep a copy where the hub's host cannot
//! write (docs/operations.md).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The name the manifest gives the binary.
const BINARY_NAME: &str = "mailroom";

/// What a successful check found.
#[derive(Debug)]
pub struct InstallCheck {
    /// The running binary.
    pub binary: PathBuf,
    /// The manifest it was checked against.
    pub manifest: PathBuf,
    /// The binary's SHA-256, lower-case hex, as the manifest records it.
    pub sha256: String,
}

/// The manifest's file name for this version: `mailroom-<version>.sha256`.
pub fn manifest_name() -> String {
    format!("{BINARY_NAME}-{}.sha256", env!("CARGO_PKG_VERSION"))
}

/// Checks the running binary against `manifest` (default: [`manifest_name`] beside the
/// binary). Refused, with the binary's SHA-256 in the sentence, when the manifest is missing,
/// has no line for `mailroom`, or records another hash.
pub fn verify(manifest: Option<&Path>) -> Result<InstallCheck> {
    let binary = std::env::current_exe().context("cannot find the running binary")?;
    let sha256 = sha256_of(&binary)?;
    let manifest = match manifest {
        Some(path) => path.to_owned(),
        None => binary.parent().map_or_else(
            || PathBuf::from(manifest_name()),
            |dir| dir.join(manifest_name()),
        ),
    };
    let text = match std::fs::read_to_string(&manifest) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "no manifest at {}: cannot verify {} (its SHA-256 is {sha256}); pass --manifest PATH, or build with scripts/release, which writes it",
            manifest.display(),
            binary.display()
        ),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read {}", manifest.display()));
        }
    };
    let Some(expected) = recorded_hash(&text) else {
        bail!(
            "{} has no line for {BINARY_NAME} in sha256sum's format (<hex>  {BINARY_NAME}); the binary's SHA-256 is {sha256}",
            manifest.display()
        );
    };
    if expected != sha256 {
        bail!(
            "{} does not match its manifest: its SHA-256 is {sha256}, {} records {expected}; the binary was changed or is another build, reinstall it",
            binary.display(),
            manifest.display()
        );
    }
    Ok(InstallCheck {
        binary,
        manifest,
        sha256,
    })
}

/// The lower-case SHA-256 that a `sha256sum` manifest records for `mailroom` (text `  ` or
/// binary ` *` marker; the name may carry a folder), if it has exactly that line.
fn recorded_hash(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let (hash, name) = line.split_once(' ')?;
        let name = name.strip_prefix(' ').or_else(|| name.strip_prefix('*'))?;
        let file_name = Path::new(name).file_name()?;
        let hex_ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        (file_name == BINARY_NAME && hex_ok).then(|| hash.to_ascii_lowercase())
    })
}

/// The SHA-256 of the file at `path`, read in chunks, as lower-case hex.
fn sha256_of(path: &Path) -> Result<String> {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    };
    read().with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn check(manifest: &str, expect: Option<&str>) {
        assert_eq!(recorded_hash(manifest).as_deref(), expect, "{manifest:?}");
    }

    #[test]
    fn the_manifest_line_for_mailroom_is_found_in_sha256sum_format() {
        let upper = HASH.to_ascii_uppercase();
        check(&format!("{HASH}  mailroom\n"), Some(HASH));
        check(&format!("{HASH} *mailroom\n"), Some(HASH));
        check(&format!("{HASH}  target/release/mailroom\n"), Some(HASH));
        check(&format!("{upper}  mailroom"), Some(HASH));
        check(
            &format!("{HASH}  mailroom-agent\n{HASH}  mailroom\n"),
            Some(HASH),
        );
        check(&format!("{HASH}  mailroom-agent\n"), None);
        check(&format!("{HASH}mailroom\n"), None);
        check(&format!("{HASH} mailroom\n"), None);
        check(&format!("{}  mailroom\n", &HASH[1..]), None);
        check(&format!("{}g  mailroom\n", &HASH[1..]), None);
        check("", None);
    }

    #[test]
    fn the_manifest_is_named_after_the_version() {
        assert_eq!(
            manifest_name(),
            format!("mailroom-{}.sha256", env!("CARGO_PKG_VERSION"))
        );
    }
}
