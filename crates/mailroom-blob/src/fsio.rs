//! File-system plumbing shared by the store, the writer and the reader: running blocking work
//! off the async workers, turning `std::io::Error` into client-safe [`CoreError`]s, and
//! creating private directories durably.
//!
//! It knows nothing about blobs or the layout of the folder.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use mailroom_core::{CoreError, Result};
use tracing::{error, warn};

/// Mode of every directory the store creates: owner only.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Mode of every file the store creates: owner read and write, never executable.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Runs `work` on the blocking pool, so file I/O never stalls an async worker.
///
/// A panic in `work` becomes an internal error; the panic itself is logged.
pub(crate) async fn blocking<T, F>(operation: &'static str, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) => {
            error!(operation, error = %err, "blob storage task failed");
            Err(CoreError::internal("storage failure"))
        }
    }
}

/// Logs an I/O failure with its path and returns the error a client may see.
///
/// A full disk or an exhausted quota is [`mailroom_core::ErrorKind::Transient`] (it may work
/// later); anything else is [`mailroom_core::ErrorKind::Internal`]. The message never holds a
/// host path: those stay in the log.
pub(crate) fn storage_error(operation: &'static str, path: &Path, err: &io::Error) -> CoreError {
    error!(operation, path = %path.display(), error = %err, "blob storage I/O failed");
    if is_storage_full(err) {
        CoreError::transient("storage is full")
    } else {
        CoreError::internal("storage failure")
    }
}

/// Whether `err` says the disk or the owner's quota is full (ENOSPC, EDQUOT).
fn is_storage_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Makes sure `dir` exists, creating it and any missing parents with mode 0700.
///
/// The parent of every directory created here is synced, so the new entry survives a crash.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} exists and is not a directory", dir.display()),
            ));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    ensure_dir(parent)?;
    create_private_dir(dir)?;
    sync_dir(parent)
}

/// Creates one directory with mode 0700; one that already exists is fine.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// Gives a directory the store owns mode 0700 if it has anything else, with a warning, so a
/// folder created by hand or by an older version does not stay readable by others.
pub(crate) fn make_private(dir: &Path) -> io::Result<()> {
    let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode != DIR_MODE {
        warn!(path = %dir.display(), mode = format!("{mode:o}"), "blob directory was not 0700; fixing");
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Flushes a directory's entries (creations, renames) to stable storage.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file if it is there; a missing file is not an error.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;
    use mailroom_core::ErrorKind;

    fn check(err: io::Error, expect: ErrorKind) {
        let mapped = storage_error("test", Path::new("/secret/host/path"), &err);
        assert_eq!(mapped.kind(), expect, "{err:?}");
        assert!(!mapped.message().contains("/secret"), "{mapped:?}");
    }

    #[test]
    fn maps_io_errors_to_kinds() {
        check(
            io::Error::from(io::ErrorKind::StorageFull),
            ErrorKind::Transient,
        );
        check(
            io::Error::from(io::ErrorKind::QuotaExceeded),
            ErrorKind::Transient,
        );
        check(
            io::Error::from(io::ErrorKind::PermissionDenied),
            ErrorKind::Internal,
        );
        check(io::Error::other("boom"), ErrorKind::Internal);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn maps_linux_errnos() {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        const EIO: i32 = 5;
        check(io::Error::from_raw_os_error(ENOSPC), ErrorKind::Transient);
        check(io::Error::from_raw_os_error(EDQUOT), ErrorKind::Transient);
        check(io::Error::from_raw_os_error(EIO), ErrorKind::Internal);
    }

    #[test]
    fn ensure_dir_creates_nested_private_dirs() {
        let temp = tempfile::tempdir().unwrap();
        let deep = temp.path().join("a/b/c");
        ensure_dir(&deep).unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            let mode = fs::metadata(temp.path().join(dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{dir}");
        }
        // A second call is a no-op; a file in the way is refused.
        ensure_dir(&deep).unwrap();
        fs::write(temp.path().join("file"), b"x").unwrap();
        assert!(ensure_dir(&temp.path().join("file")).is_err());
    }
}
