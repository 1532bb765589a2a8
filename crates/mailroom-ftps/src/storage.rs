//! libunftp's storage back end mapped onto the Hub: every FTP file command (RFC 959: LIST,
//! NLST, MLSD, RETR, STOR, DELE, RNFR/RNTO, CWD, SIZE, MDTM) becomes one Hub call on a
//! `VirtualPath`, and core error kinds become FTP replies in one function, [`ftp_error`].
//!
//! What it deliberately does not do: decide anything. Paths go through
//! `VirtualPath::parse_bytes`, rights and routes are the Hub's. Folders cannot be made or
//! removed (the tree is fixed), and an upload always writes a whole new file: REST before
//! STOR and APPE onto an existing file are refused, because a delivery is immutable once
//! delivered. An upload is delivered only when the data connection ends cleanly; a read error
//! (for TLS: the peer closed without `close_notify`, which is what a killed client does) or
//! the session being closed aborts it, so nothing partial is ever visible.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use unftp_core::storage::{self as ftp, Fileinfo, Metadata, Permissions, StorageBackend};

use mailroom_core::{self as core, CoreError, ErrorKind, Hub, VirtualPath};

use crate::auth::FtpUser;
use mailroom_net::Activity;

/// Bytes read from the data connection before they are handed to the blob writer.
const UPLOAD_CHUNK: usize = 1024 * 1024;
/// Bytes read from a blob per write to the data connection.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

/// The storage of one FTP session: the Hub, seen as the logged-in user (who arrives with
/// each call).
#[derive(Clone)]
pub(crate) struct HubStorage {
    pub(crate) hub: Arc<Hub>,
    pub(crate) activity: Activity,
}

impl Debug for HubStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubStorage")
    }
}

/// What a listing or SIZE/MDTM shows of one entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryMetadata {
    size: u64,
    is_dir: bool,
    modified: SystemTime,
    writable: bool,
}

impl From<&core::Entry> for EntryMetadata {
    fn from(entry: &core::Entry) -> Self {
        EntryMetadata {
            size: entry.size,
            is_dir: entry.is_dir,
            modified: SystemTime::from(entry.modified),
            writable: entry.writable,
        }
    }
}

impl Metadata for EntryMetadata {
    fn len(&self) -> u64 {
        self.size
    }

    fn is_dir(&self) -> bool {
        self.is_dir
    }

    fn is_file(&self) -> bool {
        !self.is_dir
    }

    fn is_symlink(&self) -> bool {
        false
    }

    fn modified(&self) -> ftp::Result<SystemTime> {
        Ok(self.modified)
    }

    fn gid(&self) -> u32 {
        0
    }

    fn uid(&self) -> u32 {
        0
    }

    fn permissions(&self) -> Permissions {
        Permissions(match (self.is_dir, self.writable) {
            (true, true) => 0o755,
            (true, false) => 0o555,
            (false, true) => 0o644,
            (false, false) => 0o444,
        })
    }
}

/// The one mapping from core error kinds to libunftp's storage errors, which libunftp turns
/// into replies: 550 (not found, denied), 553 (name not allowed), 552 (over a limit), 450
/// (transient), 451 (local error). The client-facing sentence is logged; libunftp sends its
/// own fixed text with the code.
pub(crate) fn ftp_error(err: CoreError) -> ftp::Error {
    let kind = match err.kind() {
        ErrorKind::NotFound | ErrorKind::Conflict => ftp::ErrorKind::PermanentFileNotAvailable,
        ErrorKind::PermissionDenied | ErrorKind::RouteDenied => ftp::ErrorKind::PermissionDenied,
        ErrorKind::InvalidName => ftp::ErrorKind::FileNameNotAllowedError,
        ErrorKind::QuotaExceeded => ftp::ErrorKind::ExceededStorageAllocationError,
        ErrorKind::Transient => ftp::ErrorKind::TransientFileNotAvailable,
        ErrorKind::Internal => ftp::ErrorKind::LocalError,
    };
    tracing::info!(kind = %err.kind(), reason = %err.message(), "ftps request refused");
    ftp::Error::new(kind, err)
}

/// A path from libunftp (already joined to the working directory) as a `VirtualPath`.
fn virtual_path(path: &Path) -> Result<VirtualPath, ftp::Error> {
    VirtualPath::parse_bytes(path.as_os_str().as_encoded_bytes()).map_err(ftp_error)
}

#[async_trait]
impl StorageBackend<FtpUser> for HubStorage {
    type Metadata = EntryMetadata;

    fn name(&self) -> &str {
        "mailroom"
    }

    /// REST is honoured for downloads; for uploads `put` refuses a non-zero start.
    fn supported_features(&self) -> u32 {
        ftp::FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> ftp::Result<EntryMetadata> {
        let path = virtual_path(path.as_ref())?;
        let entry = self
            .hub
            .stat(&user.session, &path)
            .await
            .map_err(ftp_error)?;
        Ok(EntryMetadata::from(&entry))
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> ftp::Result<Vec<Fileinfo<PathBuf, EntryMetadata>>> {
        let path = virtual_path(path.as_ref())?;
        let entries = self
            .hub
            .list(&user.session, &path)
            .await
            .map_err(ftp_error)?;
        Ok(entries
            .iter()
            .map(|entry| Fileinfo {
                path: PathBuf::from(&entry.name),
                metadata: EntryMetadata::from(entry),
            })
            .collect())
    }

    /// Streams a delivery (or a receipt) to the data connection in large chunks, then
    /// accounts the download: read completely, a delivery becomes picked-up.
    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> ftp::Result<u64>
    where
        W: AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        let path = virtual_path(path.as_ref())?;
        let read = self
            .hub
            .open_read(&user.session, &path)
            .await
            .map_err(ftp_error)?;
        let _transfer = self.activity.transfer();
        let sent = tokio::select! {
            sent = copy_out(&read, start_pos, output) => sent,
            () = user.ended.cancelled() => Err(ftp::Error::new(
                ftp::ErrorKind::ConnectionClosed,
                "the session was closed",
            )),
        };
        // Accounted whatever happened: the Hub decides from the bytes actually read.
        if let Err(err) = self.hub.close_read(&user.session, read).await {
            tracing::warn!(error = %err, "could not account a download");
        }
        sent
    }

    /// Only `get_into` is used for RETR; SITE MD5, the one other caller, is switched off.
    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &FtpUser,
        _path: P,
        _start_pos: u64,
    ) -> ftp::Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        Err(ftp::ErrorKind::CommandNotImplemented.into())
    }

    /// Reads the whole data connection into a new upload and delivers it at a clean end;
    /// any error aborts it so nothing is delivered.
    async fn put<P: AsRef<Path> + Send + Debug, R: AsyncRead + Send + Sync + Unpin + 'static>(
        &self,
        user: &FtpUser,
        mut input: R,
        path: P,
        start_pos: u64,
    ) -> ftp::Result<u64> {
        let path = virtual_path(path.as_ref())?;
        if start_pos != 0 {
            return Err(ftp_error(CoreError::denied(
                "files cannot be resumed or appended to: send the whole file again",
            )));
        }
        let mut upload = self
            .hub
            .begin_upload(&user.session, &path)
            .await
            .map_err(ftp_error)?;
        let _transfer = self.activity.transfer();
        let received = tokio::select! {
            received = copy_in(&mut input, &mut upload) => received,
            () = user.ended.cancelled() => Err(Failure::Read(std::io::Error::other("the session was closed"))),
        };
        match received {
            Ok(bytes) => {
                // The 226 goes out only after the delivery is durable and committed.
                self.hub.finish_upload(upload).await.map_err(ftp_error)?;
                Ok(bytes)
            }
            Err(Failure::Read(err)) => {
                self.hub
                    .abort_upload(upload, &format!("data connection failed: {err}"))
                    .await;
                Err(ftp::Error::new(ftp::ErrorKind::ConnectionClosed, err))
            }
            Err(Failure::Write(err)) => {
                self.hub
                    .abort_upload(upload, &format!("write failed: {}", err.message()))
                    .await;
                Err(ftp_error(err))
            }
        }
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> ftp::Result<()> {
        let path = virtual_path(path.as_ref())?;
        self.hub
            .remove(&user.session, &path)
            .await
            .map_err(ftp_error)
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &FtpUser,
        path: P,
    ) -> ftp::Result<()> {
        let path = virtual_path(path.as_ref())?;
        self.hub.make_dir(&path).map_err(ftp_error)
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        from: P,
        to: P,
    ) -> ftp::Result<()> {
        let from = virtual_path(from.as_ref())?;
        let to = virtual_path(to.as_ref())?;
        self.hub
            .rename(&user.session, &from, &to)
            .await
            .map_err(ftp_error)
    }

    /// The tree is fixed: a folder is never removed (the Hub refuses).
    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> ftp::Result<()> {
        let path = virtual_path(path.as_ref())?;
        if !path.is_dir() {
            return Err(ftp_error(CoreError::invalid(format!(
                "{path} is not a folder"
            ))));
        }
        self.hub
            .remove(&user.session, &path)
            .await
            .map_err(ftp_error)
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> ftp::Result<()> {
        let path = virtual_path(path.as_ref())?;
        let entry = self
            .hub
            .stat(&user.session, &path)
            .await
            .map_err(ftp_error)?;
        if !entry.is_dir {
            return Err(ftp_error(CoreError::not_found(format!(
                "{path} is a file, not a folder"
            ))));
        }
        Ok(())
    }
}

/// Why an upload stopped before a clean end.
enum Failure {
    /// The data connection failed (reset, or TLS closed without `close_notify`).
    Read(std::io::Error),
    /// The Hub refused a write (over the byte limit) or storage failed.
    Write(CoreError),
}

/// Copies the data connection into the upload in chunks of up to [`UPLOAD_CHUNK`].
async fn copy_in<R: AsyncRead + Unpin>(
    input: &mut R,
    upload: &mut core::Upload,
) -> Result<u64, Failure> {
    let mut offset = 0u64;
    loop {
        let mut chunk = Vec::with_capacity(UPLOAD_CHUNK);
        while chunk.len() < UPLOAD_CHUNK {
            let read = (&mut *input)
                .take((UPLOAD_CHUNK - chunk.len()) as u64)
                .read_buf(&mut chunk)
                .await
                .map_err(Failure::Read)?;
            if read == 0 {
                break;
            }
        }
        if chunk.is_empty() {
            return Ok(offset);
        }
        let len = chunk.len() as u64;
        upload
            .write_at(offset, chunk)
            .await
            .map_err(Failure::Write)?;
        offset += len;
    }
}

/// Copies a download to the data connection from `start` in chunks of [`DOWNLOAD_CHUNK`].
async fn copy_out<W: AsyncWrite + Unpin + ?Sized>(
    read: &core::ReadHandle,
    start: u64,
    output: &mut W,
) -> ftp::Result<u64> {
    let mut offset = start;
    loop {
        let data = read
            .read_at(offset, DOWNLOAD_CHUNK)
            .await
            .map_err(ftp_error)?;
        if data.is_empty() {
            output.flush().await.map_err(ftp::Error::from)?;
            return Ok(offset - start);
        }
        output.write_all(&data).await.map_err(ftp::Error::from)?;
        offset += data.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_reply() {
        for (kind, expect) in [
            (
                ErrorKind::NotFound,
                ftp::ErrorKind::PermanentFileNotAvailable,
            ),
            (
                ErrorKind::Conflict,
                ftp::ErrorKind::PermanentFileNotAvailable,
            ),
            (
                ErrorKind::PermissionDenied,
                ftp::ErrorKind::PermissionDenied,
            ),
            (ErrorKind::RouteDenied, ftp::ErrorKind::PermissionDenied),
            (
                ErrorKind::InvalidName,
                ftp::ErrorKind::FileNameNotAllowedError,
            ),
            (
                ErrorKind::QuotaExceeded,
                ftp::ErrorKind::ExceededStorageAllocationError,
            ),
            (
                ErrorKind::Transient,
                ftp::ErrorKind::TransientFileNotAvailable,
            ),
            (ErrorKind::Internal, ftp::ErrorKind::LocalError),
        ] {
            assert_eq!(
                ftp_error(CoreError::new(kind, "x")).kind(),
                expect,
                "{kind}"
            );
        }
    }

    #[test]
    fn paths_go_through_the_core_parser() {
        assert!(virtual_path(Path::new("/outbox/bob/x")).is_ok());
        assert!(virtual_path(Path::new("/../etc/passwd")).is_err());
        let long = format!("/outbox/bob/{}", "x".repeat(300));
        assert!(virtual_path(Path::new(&long)).is_err());
    }
}
