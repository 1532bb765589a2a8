//! Export: an export rule's job writes a delivered file into a local folder, as
//! `<folder>/<recipient>/<name>`, for a system on the hub's host to take.
//!
//! A file appears whole or not at all: it is written under a hidden temporary name, synced,
//! and renamed into place, and the folder is synced. A job run twice (after a crash) finds its
//! file there with the same SHA-256 and does nothing; another file of that name is never
//! overwritten: the export takes `name (2)`, `name (3)`, and so on. Folders it makes are
//! private to the hub's user (0700), files too (0600).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mailroom_core::{Event, Hub};
use sha2::{Digest, Sha256};

/// Reads per step.
const CHUNK: usize = 256 * 1024;
/// The most `name (n)` variants tried.
const MAX_VARIANTS: u32 = 1000;

/// Exports the delivery `event` is about into `folder`; nothing to do when it is no longer
/// delivered (acknowledged, recalled, expired).
pub async fn export(hub: &Hub, folder: &Path, event: &Event) -> Result<(), String> {
    let Ok(id) = mailroom_core::DeliveryId::parse(&event.object) else {
        return Err(format!("event {} is not about a delivery", event.id));
    };
    let Some((delivery, content)) = hub
        .open_delivered(&id)
        .await
        .map_err(|err| err.to_string())?
    else {
        return Ok(());
    };
    let dir = folder.join(delivery.recipient.as_str());
    let temp = dir.join(format!(".{}.{}.part", delivery.id, std::process::id()));
    let (dir_c, temp_c) = (dir.clone(), temp.clone());
    let mut file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir_c)?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp_c)
    })
    .await
    .map_err(|err| err.to_string())?
    .map_err(|err| format!("export to {}: {err}", dir.display()))?;
    let mut offset = 0_u64;
    loop {
        let chunk = content
            .read_at(offset, CHUNK)
            .await
            .map_err(|err| err.to_string())?;
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        file = tokio::task::spawn_blocking(move || file.write_all(&chunk).map(|()| file))
            .await
            .map_err(|err| err.to_string())?
            .map_err(|err| format!("export to {}: {err}", temp.display()))?;
    }
    if offset != delivery.size {
        let _ = std::fs::remove_file(&temp);
        return Err(format!(
            "the content ended at {offset} of {} bytes",
            delivery.size
        ));
    }
    let (name, sha256) = (delivery.name.as_str().to_owned(), delivery.sha256.clone());
    let placed = tokio::task::spawn_blocking(move || place(file, &temp, &dir, &name, &sha256))
        .await
        .map_err(|err| err.to_string())?;
    placed.map(|path| {
        tracing::info!(delivery = %delivery.id, path = %path.display(), "exported");
    })
}

/// Syncs `file`, then renames `temp` to the first free variant of `name` in `dir` (or drops
/// it when that name holds the same content already), and syncs `dir`.
fn place(
    file: std::fs::File,
    temp: &Path,
    dir: &Path,
    name: &str,
    sha256: &str,
) -> Result<PathBuf, String> {
    let fail = |err: std::io::Error| format!("export to {}: {err}", dir.display());
    file.sync_all().map_err(fail)?;
    drop(file);
    for n in 1..=MAX_VARIANTS {
        let candidate = dir.join(variant(name, n));
        match std::fs::symlink_metadata(&candidate) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                // No rename over a file that appeared meanwhile: hard-link, then unlink.
                match std::fs::hard_link(temp, &candidate) {
                    Ok(()) => {
                        std::fs::remove_file(temp).map_err(fail)?;
                        std::fs::File::open(dir)
                            .and_then(|d| d.sync_all())
                            .map_err(fail)?;
                        return Ok(candidate);
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(err) => return Err(fail(err)),
                }
            }
            Err(err) => return Err(fail(err)),
            Ok(meta) if meta.is_file() && same_content(&candidate, sha256) => {
                // Exported before (a job run again after a crash).
                std::fs::remove_file(temp).map_err(fail)?;
                return Ok(candidate);
            }
            Ok(_) => continue,
        }
    }
    let _ = std::fs::remove_file(temp);
    Err(format!(
        "export to {}: {MAX_VARIANTS} files named like {name} are there already",
        dir.display()
    ))
}

/// `name`, or `stem (n).ext` for n > 1.
fn variant(name: &str, n: u32) -> String {
    if n == 1 {
        return name.to_owned();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{name} ({n})"),
    }
}

/// Whether the file at `path` has this SHA-256.
fn same_content(path: &Path, sha256: &str) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0_u8; CHUNK];
    loop {
        match std::io::Read::read(&mut file, &mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(_) => return false,
        }
    }
    hex_lower(&hasher.finalize()) == sha256
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_keep_the_extension() {
        assert_eq!(variant("a.pdf", 1), "a.pdf");
        assert_eq!(variant("a.pdf", 2), "a (2).pdf");
        assert_eq!(variant("README", 3), "README (3)");
        assert_eq!(variant(".profile", 2), ".profile (2)");
    }
}
