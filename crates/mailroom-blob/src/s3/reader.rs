//! Reading a committed S3 blob with ranged GETs through a read-ahead window.
//!
//! Each miss fetches [`READ_WINDOW`] bytes (or the read's length, if longer) from the read's
//! offset with one ranged GET and keeps them, so a sequential reader asking for 32 to 256 KiB
//! at a time costs one request per window, not one per read, and a resumed transfer (an FTPS
//! REST, an HTTP range) fetches only what it needs, never the whole object. Blobs are
//! write-once, so the size taken at open stays true and reads past it need no request.
//!
//! Concurrent reads of one reader take turns on the window: a pipelined client's next read
//! waits for the window being fetched and is then served from it, instead of fetching the
//! same bytes again.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use mailroom_core::{BlobReader, CoreError, Result};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::{Counters, READ_WINDOW, Shared, s3_error};
use crate::reader::{framed, read_len};

/// An open committed blob in S3.
pub(crate) struct S3BlobReader {
    shared: Arc<Shared>,
    key: Path,
    size: u64,
    /// The bytes of the last GET.
    window: tokio::sync::Mutex<Option<Window>>,
}

/// Bytes fetched from `start` on.
struct Window {
    start: u64,
    data: Bytes,
}

impl Window {
    /// `offset..offset + len`, if this window holds all of it.
    fn slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let from = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.data.get(from..from.checked_add(len)?)
    }
}

impl S3BlobReader {
    /// A reader of the object at `key`, which is `size` bytes long.
    pub(crate) fn new(shared: Arc<Shared>, key: Path, size: u64) -> Self {
        S3BlobReader {
            shared,
            key,
            size,
            window: tokio::sync::Mutex::new(None),
        }
    }

    /// Fetches the window that begins at `offset` and holds at least `len` bytes (both
    /// inside the blob).
    async fn fetch(&self, offset: u64, len: usize) -> Result<Window> {
        let end = self
            .size
            .min(offset.saturating_add(len.max(READ_WINDOW) as u64));
        let data = match self.shared.client.get_range(&self.key, offset..end).await {
            Ok(data) => data,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(CoreError::not_found("no such blob"));
            }
            Err(err) => return Err(s3_error("read blob", &self.key, &err)),
        };
        let counters = &self.shared.counters;
        Counters::bump(&counters.range_gets);
        counters
            .bytes_fetched
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if data.len() as u64 != end - offset {
            tracing::error!(key = %self.key, expected = end - offset, got = data.len(),
                "S3 returned a range of the wrong length");
            return Err(CoreError::internal("storage failure"));
        }
        Ok(Window {
            start: offset,
            data,
        })
    }
}

#[async_trait]
impl BlobReader for S3BlobReader {
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
        let mut window = self.window.lock().await;
        let cached = window
            .as_ref()
            .and_then(|window| window.slice(offset, wanted));
        if let Some(data) = cached {
            return Ok(framed(room, data));
        }
        let fresh = self.fetch(offset, wanted).await?;
        // fetch checked the length, so the window holds the read; never answer short here,
        // which a client would take for the end of the file.
        let Some(data) = fresh.slice(offset, wanted) else {
            return Err(CoreError::internal("storage failure"));
        };
        let answer = framed(room, data);
        *window = Some(fresh);
        Ok(answer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use mailroom_core::{BlobId, BlobStore};
    use object_store::ObjectStoreExt;

    use super::*;
    use crate::s3::tests::in_memory;

    #[tokio::test]
    async fn sequential_reads_fetch_one_window_each() {
        let (store, memory) = in_memory();
        let id = BlobId::new();
        let data: Vec<u8> = (0..10 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
        let key = store.shared.key(&id);
        memory.put(&key, data.clone().into()).await.unwrap();

        let reader = store.open(&id).await.unwrap();
        let mut back = Vec::new();
        loop {
            let piece = reader.read_at(back.len() as u64, 32 * 1024).await.unwrap();
            if piece.is_empty() {
                break;
            }
            back.extend_from_slice(&piece);
        }
        assert!(back == data);
        let stats = store.stats();
        assert_eq!(stats.range_gets, data.len().div_ceil(READ_WINDOW) as u64);
        assert_eq!(stats.bytes_fetched, data.len() as u64);
        // Past the end, and empty reads, cost nothing.
        assert!(
            reader
                .read_at(data.len() as u64, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(reader.read_at_after(0, 0, 3).await.unwrap(), [0, 0, 0]);
        // A read outside the window fetches from its own offset.
        assert_eq!(
            reader.read_at_after(5, 3, 2).await.unwrap(),
            [0, 0, 5, 6, 7]
        );
        assert_eq!(store.stats().range_gets, stats.range_gets + 1);
    }

    #[tokio::test]
    async fn a_blob_deleted_while_open_is_not_found() {
        let (store, memory) = in_memory();
        let id = BlobId::new();
        memory
            .put(&store.shared.key(&id), b"gone".to_vec().into())
            .await
            .unwrap();
        let reader = store.open(&id).await.unwrap();
        store.delete(&id).await.unwrap();
        let err = reader.read_at(0, 4).await.unwrap_err();
        assert_eq!(err.kind(), mailroom_core::ErrorKind::NotFound);
    }
}
