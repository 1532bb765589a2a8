//! [`MemoryBlobs`]: the blob store in memory, for tests of the Hub without a disk.
//!
//! Blobs are write-once byte vectors under server-made ids, hashed with SHA-256 on commit,
//! like the folder store's; small ones can be handed back inline for the metadata store to
//! keep, as the folder store does, so both paths of the Hub are exercised. Unfinished blobs
//! are staged under their own ids, outside any writer, so a Hub made again on the same store
//! (a restart) can take them up with [`BlobStore::resume`], as the folder store's staging
//! files are.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::model::BlobId;
use crate::names::AccountName;
use crate::ports::{BlobReader, BlobStore, BlobWriter, ListedBlob, StoredBlob, SweepReport};

/// The blob store in memory.
#[derive(Default)]
pub struct MemoryBlobs {
    blobs: Arc<Mutex<HashMap<BlobId, Arc<Vec<u8>>>>>,
    /// Unfinished blobs by staging id.
    staging: Arc<Mutex<HashMap<BlobId, Vec<u8>>>>,
    /// Blobs set aside, by id.
    aside: Arc<Mutex<HashMap<BlobId, Arc<Vec<u8>>>>>,
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

    /// The ids of the blobs set aside.
    pub fn set_aside_ids(&self) -> HashSet<BlobId> {
        lock(&self.aside).keys().cloned().collect()
    }

    /// Replaces the content of a committed blob, as damage on a disk would (tests of the
    /// consistency check). NotFound if there is no such blob.
    pub fn damage(&self, id: &BlobId, content: Vec<u8>) -> Result<()> {
        let mut blobs = lock(&self.blobs);
        let blob = blobs
            .get_mut(id)
            .ok_or_else(|| CoreError::not_found(format!("no blob {id}")))?;
        *blob = Arc::new(content);
        Ok(())
    }

    /// The ids of the unfinished blobs it stages.
    pub fn staged(&self) -> HashSet<BlobId> {
        lock(&self.staging).keys().cloned().collect()
    }

    fn writer(&self, id: BlobId) -> MemoryWriter {
        MemoryWriter {
            id,
            blobs: self.blobs.clone(),
            staging: self.staging.clone(),
            inline_up_to: self.inline_up_to,
        }
    }
}

fn lock<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn create(&self, _owner: &AccountName) -> Result<Box<dyn BlobWriter>> {
        let id = BlobId::new();
        lock(&self.staging).insert(id.clone(), Vec::new());
        Ok(Box::new(self.writer(id)))
    }

    async fn resume(
        &self,
        staging: &BlobId,
        _owner: &AccountName,
    ) -> Result<Option<Box<dyn BlobWriter>>> {
        lock(&self.staging).entry(staging.clone()).or_default();
        Ok(Some(Box::new(self.writer(staging.clone()))))
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
        let mut staging = lock(&self.staging);
        let staged = staging.len();
        staging.retain(|id, _| live.contains(id));
        let mut blobs = lock(&self.blobs);
        let before = blobs.len();
        blobs.retain(|id, _| live.contains(id));
        Ok(SweepReport {
            staging_removed: (staged - staging.len()) as u64,
            orphans_removed: (before - blobs.len()) as u64,
        })
    }

    async fn list(&self) -> Result<Vec<ListedBlob>> {
        let modified = time::OffsetDateTime::UNIX_EPOCH;
        Ok(lock(&self.blobs)
            .iter()
            .map(|(id, data)| ListedBlob {
                id: id.clone(),
                size: data.len() as u64,
                modified,
            })
            .collect())
    }

    async fn set_aside(&self, id: &BlobId) -> Result<String> {
        let data = lock(&self.blobs)
            .remove(id)
            .ok_or_else(|| CoreError::not_found(format!("no blob {id}")))?;
        lock(&self.aside).insert(id.clone(), data);
        Ok(format!("set-aside/{id}"))
    }
}

/// Writes through to the store's staging map, where a restart finds what was written.
struct MemoryWriter {
    id: BlobId,
    blobs: Arc<Mutex<HashMap<BlobId, Arc<Vec<u8>>>>>,
    staging: Arc<Mutex<HashMap<BlobId, Vec<u8>>>>,
    inline_up_to: Option<u64>,
}

#[async_trait]
impl BlobWriter for MemoryWriter {
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| CoreError::invalid("offset too large"))?;
        let end = start
            .checked_add(data.len())
            .ok_or_else(|| CoreError::invalid("offset too large"))?;
        let mut staging = lock(&self.staging);
        let staged = staging
            .get_mut(&self.id)
            .ok_or_else(|| CoreError::not_found("the staging is gone"))?;
        if staged.len() < end {
            staged.resize(end, 0);
        }
        staged[start..end].copy_from_slice(data);
        Ok(())
    }

    fn size(&self) -> u64 {
        lock(&self.staging)
            .get(&self.id)
            .map_or(0, |staged| staged.len() as u64)
    }

    fn staging_id(&self) -> Option<BlobId> {
        Some(self.id.clone())
    }

    async fn commit(self: Box<Self>) -> Result<StoredBlob> {
        let data = lock(&self.staging)
            .remove(&self.id)
            .ok_or_else(|| CoreError::not_found("the staging is gone"))?;
        let id = BlobId::new();
        let size = data.len() as u64;
        let sha256 = hex::encode(Sha256::digest(&data));
        if self.inline_up_to.is_some_and(|limit| size <= limit) {
            return Ok(StoredBlob {
                id,
                size,
                sha256,
                inline: Some(data),
            });
        }
        lock(&self.blobs).insert(id.clone(), Arc::new(data));
        Ok(StoredBlob {
            id,
            size,
            sha256,
            inline: None,
        })
    }

    async fn abort(self: Box<Self>) {
        lock(&self.staging).remove(&self.id);
    }
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
