//! [`MemoryBlobs`]: the blob store in memory, for tests of the Hub without a disk.
//!
//! Blobs are write-once byte vectors under server-made ids, hashed with SHA-256 on commit,
//! like the folder store's; small ones can be handed back inline for the metadata store to
//! keep, as the folder store does, so both paths of the Hub are exercised.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::model::BlobId;
use crate::ports::{BlobReader, BlobStore, BlobWriter, StoredBlob, SweepReport};

/// The blob store in memory.
#[derive(Default)]
pub struct MemoryBlobs {
    blobs: Arc<Mutex<HashMap<BlobId, Arc<Vec<u8>>>>>,
    /// Blobs up to this size are returned inline instead of stored.
    inline_up_to: Option<u64>,
}

impl MemoryBlobs {
    /// A store that keeps every blob itself.
    pub fn new() -> MemoryBlobs {
        MemoryBlobs::default()
    }

    /// A store that hands blobs of at most `size` bytes back inline, for the metadata store.
    pub fn inline_up_to(size: u64) -> MemoryBlobs {
        MemoryBlobs {
            inline_up_to: Some(size),
            ..MemoryBlobs::default()
        }
    }

    /// The ids of the blobs it holds, for checks that nothing leaked.
    pub fn ids(&self) -> HashSet<BlobId> {
        lock(&self.blobs).keys().cloned().collect()
    }
}

fn lock(
    blobs: &Mutex<HashMap<BlobId, Arc<Vec<u8>>>>,
) -> std::sync::MutexGuard<'_, HashMap<BlobId, Arc<Vec<u8>>>> {
    blobs
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn create(&self) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemoryWriter {
            blobs: self.blobs.clone(),
            inline_up_to: self.inline_up_to,
            data: Vec::new(),
        }))
    }

    async fn open(&self, id: &BlobId) -> Result<Arc<dyn BlobReader>> {
        let data = lock(&self.blobs)
            .get(id)
            .cloned()
            .ok_or_else(|| CoreError::not_found(format!("no blob {id}")))?;
        Ok(Arc::new(MemoryReader { data }))
    }

    async fn delete(&self, id: &BlobId) -> Result<()> {
        lock(&self.blobs).remove(id);
        Ok(())
    }

    async fn sweep(&self, live: &HashSet<BlobId>) -> Result<SweepReport> {
        let mut blobs = lock(&self.blobs);
        let before = blobs.len();
        blobs.retain(|id, _| live.contains(id));
        Ok(SweepReport {
            staging_removed: 0,
            orphans_removed: (before - blobs.len()) as u64,
        })
    }
}

struct MemoryWriter {
    blobs: Arc<Mutex<HashMap<BlobId, Arc<Vec<u8>>>>>,
    inline_up_to: Option<u64>,
    data: Vec<u8>,
}

#[async_trait]
impl BlobWriter for MemoryWriter {
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| CoreError::invalid("offset too large"))?;
        let end = start
            .checked_add(data.len())
            .ok_or_else(|| CoreError::invalid("offset too large"))?;
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(data);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    async fn commit(self: Box<Self>) -> Result<StoredBlob> {
        let id = BlobId::new();
        let size = self.data.len() as u64;
        let sha256 = hex::encode(Sha256::digest(&self.data));
        if self.inline_up_to.is_some_and(|limit| size <= limit) {
            return Ok(StoredBlob {
                id,
                size,
                sha256,
                inline: Some(self.data),
            });
        }
        lock(&self.blobs).insert(id.clone(), Arc::new(self.data));
        Ok(StoredBlob {
            id,
            size,
            sha256,
            inline: None,
        })
    }

    async fn abort(self: Box<Self>) {}
}

struct MemoryReader {
    data: Arc<Vec<u8>>,
}

#[async_trait]
impl BlobReader for MemoryReader {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        let end = start.saturating_add(len).min(self.data.len());
        Ok(self.data[start..end].to_vec())
    }
}
