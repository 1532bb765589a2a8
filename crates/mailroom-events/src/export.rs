//! Export: an export rule's job writes a delivered file into a local folder, as
//! `<folder>/<recipient>/<name>`, for a system on the hub's host to take.
//!
//! A file appears whole or not at all: it is written under a hidden temporary name, synced,
//! and linked into place, and the folder is synced. Every step below the configured folder
//! works relative to directory handles opened without following links (`openat`, `linkat`),
//! so a link planted there (by whoever may write to the folder) cannot redirect a write. A job run twice (after a crash) finds its
//! file there with the same SHA-256 and does nothing; another file of that name is never
//! overwritten: the export takes `name (2)`, `name (3)`, and so on. Folders it makes are
//! private to the hub's user (0700), files too (0600).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use mailroom_core::{Event, Hub};
use rustix::fs::{AtFlags, Mode, OFlags};
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
    let shown = folder.join(delivery.recipient.as_str());
    let fail = |err: std::io::Error| format!("export to {}: {err}", shown.display());
    let (folder_c, recipient) = (folder.to_owned(), delivery.recipient.as_str().to_owned());
    let temp = format!(".{}.{}.part", delivery.id, std::process::id());
    let temp_c = temp.clone();
    let (dir, file) =
        tokio::task::spawn_blocking(move || open_target(&folder_c, &recipient, &temp_c))
            .await
            .map_err(|err| err.to_string())?
            .map_err(fail)?;
    let dir = std::sync::Arc::new(dir);
    let mut file = file;
    let mut offset = 0_u64;
    loop {
        let chunk = match content.read_at(offset, CHUNK).await {
            Ok(chunk) => chunk,
            Err(err) => {
                discard(&dir, &temp);
                return Err(err.to_string());
            }
        };
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        let written = tokio::task::spawn_blocking(move || file.write_all(&chunk).map(|()| file))
            .await
            .map_err(|err| err.to_string())?;
        file = match written {
            Ok(file) => file,
            Err(err) => {
                discard(&dir, &temp);
                return Err(fail(err));
            }
        };
    }
    if offset != delivery.size {
        discard(&dir, &temp);
        return Err(format!(
            "the content ended at {offset} of {} bytes",
            delivery.size
        ));
    }
    let (name, sha256) = (delivery.name.as_str().to_owned(), delivery.sha256.clone());
    let dir_c = dir.clone();
    let placed = tokio::task::spawn_blocking(move || place(file, &dir_c, &temp, &name, &sha256))
        .await
        .map_err(|err| err.to_string())?
        .map_err(fail)?;
    tracing::info!(delivery = %delivery.id, path = %shown.join(&placed).display(), "exported");
    Ok(())
}

/// Opens `<folder>/<recipient>` (made 0700 if missing) without following a link, and creates
/// the hidden temporary file `temp` in it (0600, never over anything): every later step works
/// relative to that folder's handle, so a link planted in the export folder cannot send the
/// hub's writes elsewhere.
fn open_target(
    folder: &Path,
    recipient: &str,
    temp: &str,
) -> std::io::Result<(OwnedFd, std::fs::File)> {
    // The configured folder was checked at start (ours, not world-writable); below it,
    // nothing is followed.
    let top = rustix::fs::open(
        folder,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let directory = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::mkdirat(&top, recipient, Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {}
        Err(err) => return Err(err.into()),
    }
    let dir = rustix::fs::openat(&top, recipient, directory, Mode::empty())?;
    let file = rustix::fs::openat(
        &dir,
        temp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok((dir, std::fs::File::from(file)))
}

/// Removes the temporary file after a failure; a failure to remove it is left to the
/// operator (it is hidden, and named after its delivery).
fn discard(dir: &OwnedFd, temp: &str) {
    let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
}

/// Syncs `file`, then links `temp` in `dir` to the first free variant of `name` (or drops it
/// when that name holds the same content already), unlinks `temp`, and syncs `dir`. Returns
/// the name it took.
fn place(
    file: std::fs::File,
    dir: &OwnedFd,
    temp: &str,
    name: &str,
    sha256: &str,
) -> std::io::Result<String> {
    file.sync_all()?;
    drop(file);
    for n in 1..=MAX_VARIANTS {
        let candidate = variant(name, n);
        // linkat never follows or replaces: an existing name (a file, a link) is EEXIST.
        match rustix::fs::linkat(dir, temp, dir, &candidate, AtFlags::empty()) {
            Ok(()) => {
                rustix::fs::unlinkat(dir, temp, AtFlags::empty())?;
                rustix::fs::fsync(dir)?;
                return Ok(candidate);
            }
            Err(rustix::io::Errno::EXIST) if same_content(dir, &candidate, sha256) => {
                // Exported before (a job run again after a crash).
                rustix::fs::unlinkat(dir, temp, AtFlags::empty())?;
                return Ok(candidate);
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(err) => {
                discard(dir, temp);
                return Err(err.into());
            }
        }
    }
    discard(dir, temp);
    Err(std::io::Error::other(format!(
        "{MAX_VARIANTS} files named like {name} are there already"
    )))
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

/// Whether the regular file `name` in `dir` (not a link) has this SHA-256.
fn same_content(dir: &OwnedFd, name: &str, sha256: &str) -> bool {
    let Ok(fd) = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let mut file = std::fs::File::from(fd);
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
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
