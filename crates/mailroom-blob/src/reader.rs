//! Reading a committed blob with positional reads (`pread`) on the blocking pool.
//!
//! Blobs are write-once, so the size taken at open stays true for the life of the reader and
//! reads past it are answered without touching the disk. One reader may serve concurrent
//! reads: nothing here has a cursor.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use mailroom_core::{BlobReader, Result};

use crate::MAX_READ_LEN;
use crate::fsio::{blocking, storage_error};

/// An open committed blob.
pub(crate) struct LocalBlobReader {
    file: Arc<File>,
    size: u64,
    /// For log lines only; never shown to a client.
    path: Arc<PathBuf>,
}

impl LocalBlobReader {
    /// A reader of `file`, which is `size` bytes long and lives at `path`.
    pub(crate) fn new(file: File, size: u64, path: PathBuf) -> Self {
        LocalBlobReader {
            file: Arc::new(file),
            size,
            path: Arc::new(path),
        }
    }
}

#[async_trait]
impl BlobReader for LocalBlobReader {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.read_at_after(offset, len, 0).await
    }

    async fn read_at_after(&self, offset: u64, len: usize, room: usize) -> Result<Vec<u8>> {
        let available = self.size.saturating_sub(offset);
        // Invariant: the result is at most MAX_READ_LEN, so it fits a usize.
        let wanted = usize::try_from(available)
            .unwrap_or(usize::MAX)
            .min(len)
            .min(MAX_READ_LEN);
        if wanted == 0 {
            return Ok(vec![0u8; room]);
        }
        let file = Arc::clone(&self.file);
        let path = Arc::clone(&self.path);
        blocking("read", move || {
            // The data lands after the caller's room: read once, never copied here.
            let mut buffer = vec![0u8; room + wanted];
            let mut filled = 0;
            while filled < wanted {
                match file.read_at(&mut buffer[room + filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(read) => filled += read,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(storage_error("read blob", &path, &err)),
                }
            }
            buffer.truncate(room + filled);
            Ok(buffer)
        })
        .await
    }
}
