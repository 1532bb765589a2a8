//! The start-up sweep: removes staging files of uploads that never finished (except those of
//! resumable uploads the caller names, to be taken up again), committed blobs no live
//! delivery names, and anything else that has no business in the blob folder.
//!
//! It never follows a symbolic link (a link is removed, its target left alone), never
//! removes a directory (an unexpected one is logged and left for the operator), and never
//! removes a regular file whose name is a live blob id, even a misplaced one. Failing to
//! remove one entry is logged and does not stop the sweep; failing to list a folder does.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use mailroom_core::{BlobId, Result, SweepReport};
use tracing::{debug, error, info, warn};

use crate::fsio::storage_error;
use crate::store::{Layout, STAGING_SUFFIX, shard_name};

/// Sweeps `layout`, keeping the committed blobs and the stagings (of resumable uploads) in
/// `live`. Blocking.
pub(crate) fn sweep(layout: &Layout, live: &HashSet<BlobId>) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    for entry in read_dir(&layout.staging)? {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(kind) = entry_kind(&path) else {
            continue;
        };
        if kind == Kind::Directory {
            warn!(path = %path.display(), "unexpected directory in blob staging; leaving it");
            continue;
        }
        let staged = (kind == Kind::File)
            .then(|| name.strip_suffix(STAGING_SUFFIX))
            .flatten()
            .and_then(|id| BlobId::parse(id).ok());
        if staged.as_ref().is_some_and(|id| live.contains(id)) {
            debug!(path = %path.display(), "keeping the staging of a resumable upload");
            continue;
        }
        if staged.is_some() {
            debug!(path = %path.display(), "removing unfinished upload");
        } else {
            warn!(path = %path.display(), "removing unexpected entry in blob staging");
        }
        if remove(&path) {
            report.staging_removed += 1;
        }
    }

    for entry in read_dir(&layout.objects)? {
        let path = entry.path();
        let name = entry.file_name();
        let Some(kind) = entry_kind(&path) else {
            continue;
        };
        let shard = name.to_str().filter(|name| is_shard_name(name));
        match (kind, shard) {
            (Kind::Directory, Some(shard)) => {
                report.orphans_removed += sweep_shard(&path, shard, live)?;
            }
            (Kind::Directory, None) => {
                warn!(path = %path.display(), "unexpected directory in blob objects; leaving it");
            }
            (Kind::File | Kind::Other, _) => {
                warn!(path = %path.display(), "removing unexpected entry in blob objects");
                if remove(&path) {
                    report.orphans_removed += 1;
                }
            }
        }
    }
    info!(
        staging_removed = report.staging_removed,
        orphans_removed = report.orphans_removed,
        "blob sweep finished"
    );
    Ok(report)
}

/// Sweeps one `objects/<aa>` folder; returns how many entries it removed.
fn sweep_shard(dir: &Path, shard: &str, live: &HashSet<BlobId>) -> Result<u64> {
    let mut removed = 0;
    for entry in read_dir(dir)? {
        let path = entry.path();
        let Some(kind) = entry_kind(&path) else {
            continue;
        };
        let id = entry
            .file_name()
            .to_str()
            .and_then(|name| BlobId::parse(name).ok());
        match (kind, id) {
            (Kind::Directory, _) => {
                warn!(path = %path.display(), "unexpected directory in a blob shard; leaving it");
                continue;
            }
            (Kind::File, Some(id)) if live.contains(&id) => {
                if shard_name(&id) != shard {
                    warn!(path = %path.display(), "live blob is in the wrong shard; leaving it");
                }
                continue;
            }
            (Kind::File, Some(id)) if shard_name(&id) == shard => {
                debug!(blob_id = %id, "removing unreferenced blob");
            }
            _ => warn!(path = %path.display(), "removing unexpected entry in a blob shard"),
        }
        if remove(&path) {
            removed += 1;
        }
    }
    Ok(removed)
}

/// What a directory entry is, without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A regular file.
    File,
    /// A real directory (not a link to one).
    Directory,
    /// A symbolic link, socket, FIFO or device.
    Other,
}

/// The kind of the entry at `path`, or `None` if it vanished or cannot be inspected (logged).
fn entry_kind(path: &Path) -> Option<Kind> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Some(Kind::File),
        Ok(meta) if meta.is_dir() => Some(Kind::Directory),
        Ok(_) => Some(Kind::Other),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            error!(path = %path.display(), error = %err, "cannot inspect blob folder entry");
            None
        }
    }
}

/// The entries of a folder the store owns.
fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|entries| entries.collect::<std::io::Result<Vec<_>>>())
        .map_err(|err| storage_error("list blob folder", dir, &err))
}

/// Removes a file or a link (not its target); returns whether it did. Failures are logged.
fn remove(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => {
            error!(path = %path.display(), error = %err, "cannot remove blob folder entry");
            false
        }
    }
}

/// Whether `name` is a shard folder name: two lower-case hex digits.
fn is_shard_name(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
