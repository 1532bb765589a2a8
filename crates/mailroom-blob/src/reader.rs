//! Reading a committed blob with positional reads (`pread`) on the blocking pool, and what
//! every reader of the crate shares (the S3 one in `s3/reader.rs` too): how much of a read is
//! answered ([`read_len`]) and the reply framed after the caller's room ([`framed`]).
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

/// How many bytes a read of `len` at `offset` answers in a blob of `size` bytes: none past
/// the end, and never more than [`MAX_READ_LEN`] (so it fits a `usize`).
pub(crate) fn read_len(size: u64, offset: u64, len: usize) -> usize {
    let available = size.saturating_sub(offset);
    usize::try_from(available)
        .unwrap_or(usize::MAX)
        .min(len)
        .min(MAX_READ_LEN)
}

/// `data` after `room` zero bytes for the caller's header
/// ([`mailroom_core::BlobReader::read_at_after`]).
pub(crate) fn framed(room: usize, data: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(room + data.len());
    framed.resize(room, 0);
    framed.extend_from_slice(data);
    framed
}

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
        let wanted = read_len(self.size, offset, len);
        if wanted == 0 {
            return Ok(framed(room, &[]));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_clamped_to_the_blob_and_the_limit() {
        assert_eq!(read_len(10, 4, 100), 6);
        assert_eq!(read_len(10, 10, 100), 0);
        assert_eq!(read_len(10, u64::MAX, 100), 0);
        assert_eq!(read_len(u64::MAX, 0, usize::MAX), MAX_READ_LEN);
        assert_eq!(framed(2, b"ab"), b"\0\0ab");
        assert_eq!(framed(3, &[]), [0, 0, 0]);
    }
}
