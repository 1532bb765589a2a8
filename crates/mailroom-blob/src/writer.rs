//! The staging writer: buffers in-order data, hashes it as it streams, and commits it with
//! `fsync`, rename and a directory `fsync`.
//!
//! Contiguous writes collect in memory up to [`FLUSH_THRESHOLD`] and go to disk in one
//! blocking task that also feeds the hash, so a stream of small protocol packets costs one
//! thread hop per MiB, not one per packet, and no hashing happens on an async worker. The
//! writer does not wait for that task: the next run fills a second buffer while the first is
//! written and hashed, and only the run after waits for it (at most one run in flight, two
//! buffers per upload), so hashing and `pwrite` overlap with receiving the next MiB instead of
//! stalling it. A write anywhere else (a retransmission, a client writing the tail first)
//! flushes what is pending, starts a new run at its offset and marks the hash stale; `commit`
//! then hashes the file once more from disk, so the result is right whatever order the bytes
//! came in.
//!
//! The staging file is created only when data first has to go to disk. A small blob written
//! in order (at most the store's inline limit) never touches the disk here: `commit` hands
//! its content back as [`StoredBlob::inline`], and the metadata store keeps it in the same
//! transaction as its deliveries, so one WAL `fsync` makes it durable instead of a file
//! `fsync`, a rename and a directory `fsync` plus the WAL's.
//!
//! It does not decide where blobs live (`store.rs`) and never deletes a committed blob.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use async_trait::async_trait;
use mailroom_core::{BlobId, BlobWriter, CoreError, ErrorKind, Result, StoredBlob};
use sha2::{Digest, Sha256};
use tracing::{debug, error, warn};

use crate::MAX_WRITE_LEN;
use crate::fsio::{self, blocking, storage_error};
use crate::store::BlobPaths;

/// How many contiguous bytes collect in memory before they are written out in one go.
pub(crate) const FLUSH_THRESHOLD: usize = 1024 * 1024;

/// The highest end offset a write may reach: `pwrite` takes a signed `off_t`.
const MAX_END: u64 = i64::MAX as u64;

/// The chunk size used to hash a file again after out-of-order writes.
const REHASH_CHUNK: usize = 1024 * 1024;

/// A blob being written to `staging/<id>.part`.
pub(crate) struct LocalBlobWriter {
    id: BlobId,
    paths: Arc<BlobPaths>,
    /// The staging file, once something had to be written to it.
    file: Option<Arc<File>>,
    /// Blobs up to this size, written in order, are returned inline instead of stored.
    inline_limit: usize,
    /// Whether the content is hashed at all: not when a layer above hashes what it means
    /// (the sealing layer of encryption at rest hashes the plaintext); the commit then
    /// reports an empty SHA-256.
    hash: bool,
    /// Bytes not yet written, meant for `buffer_start..buffer_start + buffer.len()`.
    buffer: Vec<u8>,
    /// The file offset of `buffer[0]`; with an empty buffer, where the current run goes on.
    buffer_start: u64,
    /// The hash of bytes `0..buffer_start` while every write so far continued the previous
    /// one from offset 0; `None` once one did not, and `commit` must read the file to hash it.
    hasher: Option<Sha256>,
    /// The highest end offset written (or buffered) so far.
    size: u64,
    /// Set while a blocking step is under way, and kept when it fails or its future is
    /// dropped: from then on the file may not hold what the client sent, so every later
    /// write and the commit are refused with this error.
    failure: Option<CoreError>,
    /// The run being written and hashed on the blocking pool while the next one fills: it
    /// hands back its buffer (for reuse), the hash state and the file.
    in_flight: Option<tokio::task::JoinHandle<Result<RunDone>>>,
}

/// What a written run hands back: its buffer (emptied, for the next run), the hash state after
/// it, and the staging file.
type RunDone = (Vec<u8>, Option<Sha256>, Arc<File>);

impl LocalBlobWriter {
    /// A writer for blob `id`; its staging file is created on the first flush.
    pub(crate) fn new(id: BlobId, paths: BlobPaths, inline_limit: usize, hash: bool) -> Self {
        LocalBlobWriter {
            id,
            paths: Arc::new(paths),
            file: None,
            inline_limit,
            hash,
            buffer: Vec::new(),
            buffer_start: 0,
            hasher: hash.then(Sha256::new),
            size: 0,
            failure: None,
            in_flight: None,
        }
    }

    /// Takes up blob `id`'s staging file after a restart (blocking): the bytes it holds are
    /// hashed again and the writer goes on after them. A staging file that is not there (the
    /// upload's bytes were all still in memory) is taken up empty.
    pub(crate) fn resumed(
        id: BlobId,
        paths: BlobPaths,
        inline_limit: usize,
        hash: bool,
    ) -> Result<Self> {
        let file = match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&paths.staging)
        {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Self::reclaimed(id, paths, inline_limit, hash);
            }
            Err(err) => return Err(storage_error("open staging file", &paths.staging, &err)),
        };
        let io_error = |operation, err: io::Error| storage_error(operation, &paths.staging, &err);
        let size = file
            .metadata()
            .map_err(|err| io_error("stat staging file", err))?
            .len();
        let hasher = if hash {
            Some(hash_prefix(&file, size).map_err(|err| io_error("hash staging file", err))?)
        } else {
            None
        };
        let mut writer = LocalBlobWriter::new(id, paths, inline_limit, hash);
        writer.file = Some(Arc::new(file));
        writer.buffer_start = size;
        writer.size = size;
        writer.hasher = hasher;
        Ok(writer)
    }

    /// [`LocalBlobWriter::resumed`] of a staging that is gone. A kill between a commit's
    /// rename and the metadata unit that records the upload (and forgets its resumable
    /// record) leaves the whole blob committed under the staging's id, referenced by nothing
    /// while the record still names it: it goes back to staging and is taken up as any
    /// staging is, so the client's finish still succeeds. With neither, the upload starts
    /// empty.
    fn reclaimed(id: BlobId, paths: BlobPaths, inline_limit: usize, hash: bool) -> Result<Self> {
        match fs::rename(&paths.object, &paths.staging) {
            Ok(()) => {
                warn!(blob = %id, "a committed blob its upload never recorded goes back to staging");
                for dir in [paths.staging.parent(), Some(paths.shard.as_path())]
                    .into_iter()
                    .flatten()
                {
                    fsio::sync_dir(dir).map_err(|err| storage_error("sync", dir, &err))?;
                }
                Self::resumed(id, paths, inline_limit, hash)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Ok(LocalBlobWriter::new(id, paths, inline_limit, hash))
            }
            Err(err) => Err(storage_error("reclaim committed blob", &paths.object, &err)),
        }
    }

    /// Waits for the run in flight, if any, and takes back its buffer, hash state and file.
    /// A failed run fails this writer for good.
    async fn settle(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(task) = self.in_flight.take() else {
            return Ok(None);
        };
        let done = match task.await {
            Ok(result) => result,
            Err(err) => {
                error!(error = %err, "blob write task failed");
                Err(CoreError::internal("storage failure"))
            }
        };
        match done {
            Ok((spare, hasher, file)) => {
                self.hasher = hasher;
                self.file = Some(file);
                self.failure = None;
                Ok(Some(spare))
            }
            Err(err) => {
                self.failure = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Hands the buffer to a blocking task that writes it out (and hashes it, if the hash is
    /// still streaming), after the run before it is done; returns without waiting for this
    /// one.
    async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // The hash state and the file come back from the run before: one run in flight.
        let spare = self.settle().await?.unwrap_or_default();
        let buffer = std::mem::replace(&mut self.buffer, spare);
        let start = self.buffer_start;
        // Invariant: a buffer never exceeds FLUSH_THRESHOLD + MAX_WRITE_LEN, far below u64.
        self.buffer_start = start + buffer.len() as u64;
        let hasher = self.hasher.take();
        let file = self.file.clone();
        let paths = Arc::clone(&self.paths);
        // Until the run is back, a dropped writer may have left the file short.
        self.failure = Some(CoreError::internal("an earlier write was interrupted"));
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let mut hasher = hasher;
            let file = match file {
                Some(file) => file,
                None => Arc::new(create_staging(&paths)?),
            };
            write_run(&file, &paths, &buffer, start, hasher.as_mut())?;
            let mut buffer = buffer;
            // Keep the allocation for the run after next.
            buffer.clear();
            Ok((buffer, hasher, file))
        }));
        Ok(())
    }

    /// Everything `commit` does, on the blocking pool: the last run, `fsync`, the final hash,
    /// the rename into `objects/` and the `fsync` of its folder.
    fn commit_blocking(self) -> Result<StoredBlob> {
        let LocalBlobWriter {
            id,
            paths,
            file,
            inline_limit: _,
            hash,
            buffer,
            buffer_start,
            mut hasher,
            size,
            failure: _,
            in_flight: _,
        } = self;
        let file = match file {
            Some(file) => file,
            None => Arc::new(create_staging(&paths)?),
        };
        write_run(&file, &paths, &buffer, buffer_start, hasher.as_mut())?;
        let io_error = |operation, err: io::Error| storage_error(operation, &paths.staging, &err);
        file.sync_all()
            .map_err(|err| io_error("sync staging file", err))?;
        let length = file
            .metadata()
            .map_err(|err| io_error("stat staging file", err))?
            .len();
        if length != size {
            error!(path = %paths.staging.display(), length, size, "staging file has an unexpected length");
            return Err(CoreError::internal("storage failure"));
        }
        let sha256 = match hasher {
            _ if !hash => String::new(),
            Some(hasher) => hex::encode(hasher.finalize()),
            None => {
                debug!(blob_id = %id, "hashing blob again after out-of-order writes");
                hex::encode(rehash(&file, size).map_err(|err| io_error("hash staging file", err))?)
            }
        };
        drop(file);
        move_into_place(&paths)?;
        Ok(StoredBlob {
            id,
            size,
            sha256,
            inline: None,
        })
    }

    /// The whole blob, if it is small, was written in order and never left memory.
    fn take_inline(&mut self) -> Option<StoredBlob> {
        let whole = self.inline_limit > 0
            && self.file.is_none()
            && self.buffer_start == 0
            && self.buffer.len() as u64 == self.size
            && self.buffer.len() <= self.inline_limit;
        if !whole {
            return None;
        }
        // Invariant: whole implies nothing was flushed, so the streaming hash is still there
        // (when there is one).
        let sha256 = match self.hasher.take() {
            Some(mut hasher) => {
                hasher.update(&self.buffer);
                hex::encode(hasher.finalize())
            }
            None if !self.hash => String::new(),
            None => return None,
        };
        Some(StoredBlob {
            id: self.id.clone(),
            size: self.size,
            sha256,
            inline: Some(std::mem::take(&mut self.buffer)),
        })
    }
}

#[async_trait]
impl BlobWriter for LocalBlobWriter {
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        // A run that is done is taken back at once (no wait), so its failure shows on the
        // next write. While a run is in flight `failure` only stands for "not back yet".
        if self
            .in_flight
            .as_ref()
            .is_some_and(|task| task.is_finished())
        {
            self.settle().await?;
        }
        if self.in_flight.is_none()
            && let Some(err) = &self.failure
        {
            return Err(err.clone());
        }
        if data.len() > MAX_WRITE_LEN {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                "write request too large",
            ));
        }
        // Invariant: data.len() <= MAX_WRITE_LEN, so it fits a u64.
        let Some(end) = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= MAX_END)
        else {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                "write offset out of range",
            ));
        };
        // An empty write changes nothing: it neither extends the file nor breaks the run.
        if data.is_empty() {
            return Ok(());
        }
        // Invariant: the buffer is at most FLUSH_THRESHOLD + MAX_WRITE_LEN bytes.
        let run_end = self.buffer_start + self.buffer.len() as u64;
        if offset != run_end {
            self.flush().await?;
            // The hash of the runs so far is needed no more: commit hashes from disk.
            self.settle().await?;
            self.hasher = None;
            self.buffer_start = offset;
        }
        // The one copy of the bytes on their way in: from the front end's buffer (an SFTP
        // packet, a TLS read) into the run; the allocation is kept from run to run.
        self.buffer.extend_from_slice(data);
        self.size = self.size.max(end);
        if self.buffer.len() >= FLUSH_THRESHOLD {
            self.flush().await?;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn staging_id(&self) -> Option<BlobId> {
        Some(self.id.clone())
    }

    async fn truncate(&mut self, size: u64) -> Result<()> {
        if size >= self.size {
            return Ok(());
        }
        self.flush().await?;
        self.settle().await?;
        if let Some(err) = &self.failure {
            return Err(err.clone());
        }
        if let Some(file) = self.file.clone() {
            let paths = Arc::clone(&self.paths);
            blocking("truncate", move || {
                file.set_len(size)
                    .map_err(|err| storage_error("truncate staging file", &paths.staging, &err))
            })
            .await?;
        }
        self.size = size;
        self.buffer_start = size;
        // The hash of what is left is needed again: from scratch when nothing is, else the
        // commit reads the file once more.
        self.hasher = (self.hash && size == 0).then(Sha256::new);
        Ok(())
    }

    async fn read_back(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.flush().await?;
        self.settle().await?;
        if let Some(err) = &self.failure {
            return Err(err.clone());
        }
        let end = offset.saturating_add(len as u64);
        if end > self.size {
            return Err(CoreError::internal("read back past what was written"));
        }
        let Some(file) = self.file.clone() else {
            return Err(CoreError::internal("nothing was written to read back"));
        };
        let paths = Arc::clone(&self.paths);
        blocking("read back", move || {
            let mut out = vec![0; len];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut out, offset)
                .map_err(|err| storage_error("read staging file", &paths.staging, &err))?;
            Ok(out)
        })
        .await
    }

    async fn commit(mut self: Box<Self>) -> Result<StoredBlob> {
        if self.in_flight.is_none()
            && self.failure.is_none()
            && let Some(stored) = self.take_inline()
        {
            return Ok(stored);
        }
        // The last run in flight first: its hash state and file are the commit's.
        if let Err(err) = self.settle().await {
            let paths = Arc::clone(&self.paths);
            let _ = blocking("commit", move || {
                remove_staging(&paths);
                Ok(())
            })
            .await;
            return Err(err);
        }
        let paths = Arc::clone(&self.paths);
        let failure = self.failure.take();
        blocking("commit", move || {
            let result = match failure {
                Some(err) => Err(err),
                None => self.commit_blocking(),
            };
            // The writer is gone after this call, so nobody could abort: clean up here. After
            // a successful rename the staging name no longer exists, and a failure after the
            // rename leaves an object that no delivery names, for the sweep.
            if result.is_err() {
                remove_staging(&paths);
            }
            result
        })
        .await
    }

    async fn abort(mut self: Box<Self>) {
        // A run still in flight could create the staging file after it is removed.
        let _ = self.settle().await;
        let paths = Arc::clone(&self.paths);
        drop(self);
        let removed = blocking("abort", move || {
            remove_staging(&paths);
            Ok(())
        })
        .await;
        if removed.is_err() {
            warn!("staging file left for the sweep");
        }
    }
}

/// Creates the staging file of a blob (never an existing one).
fn create_staging(paths: &BlobPaths) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(crate::fsio::FILE_MODE)
        .open(&paths.staging)
        .map_err(|err| storage_error("create staging file", &paths.staging, &err))
}

/// Writes one contiguous run at `start` and, if the hash is streaming, feeds it the same
/// bytes.
fn write_run(
    file: &File,
    paths: &BlobPaths,
    data: &[u8],
    start: u64,
    hasher: Option<&mut Sha256>,
) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    file.write_all_at(data, start)
        .map_err(|err| storage_error("write staging file", &paths.staging, &err))?;
    if let Some(hasher) = hasher {
        hasher.update(data);
    }
    Ok(())
}

/// Hashes the first `size` bytes of `file` from disk.
fn rehash(file: &File, size: u64) -> io::Result<sha2::digest::Output<Sha256>> {
    Ok(hash_prefix(file, size)?.finalize())
}

/// The hash state after the first `size` bytes of `file`.
fn hash_prefix(file: &File, size: u64) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; REHASH_CHUNK];
    let mut offset = 0u64;
    while offset < size {
        let read = match file.read_at(&mut chunk, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "staging file shrank while hashing",
                ));
            }
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        // Invariant: size == the file length checked before, so a read never passes it; the
        // min only guards against a file that grew under us.
        let wanted = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(read);
        hasher.update(&chunk[..wanted]);
        offset += wanted as u64;
    }
    Ok(hasher)
}

/// Renames the synced staging file to `objects/<aa>/<id>` and syncs that folder: after this
/// the blob survives a crash.
fn move_into_place(paths: &BlobPaths) -> Result<()> {
    let rename = || fs::rename(&paths.staging, &paths.object);
    match rename() {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound && !paths.shard.exists() => {
            // The shard folder was removed behind our back (open creates all 256). Make it
            // again and sync `objects/` ourselves, whoever wins the creation, so our blob
            // never hangs off an entry that is not yet on disk.
            warn!(path = %paths.shard.display(), "blob shard folder was missing; creating it");
            fsio::create_private_dir(&paths.shard)
                .and_then(|()| fsio::sync_dir(&paths.objects))
                .map_err(|err| storage_error("create blob shard", &paths.shard, &err))?;
            rename().map_err(|err| storage_error("commit blob", &paths.object, &err))?;
        }
        Err(err) => return Err(storage_error("commit blob", &paths.object, &err)),
    }
    fsio::sync_dir(&paths.shard).map_err(|err| storage_error("sync blob shard", &paths.shard, &err))
}

/// Removes the staging file, logging anything but its absence.
fn remove_staging(paths: &BlobPaths) {
    if let Err(err) = fsio::remove_if_present(&paths.staging) {
        warn!(path = %paths.staging.display(), error = %err, "could not remove staging file; the sweep will");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;
    use crate::LocalBlobStore;
    use mailroom_core::BlobStore;

    /// The account the test blobs come from.
    fn owner() -> mailroom_core::AccountName {
        mailroom_core::AccountName::parse("alice").unwrap()
    }

    /// Bytes in the one staging file; 0 when none was created yet.
    fn staging_len(store: &LocalBlobStore) -> u64 {
        let mut entries = fs::read_dir(store.root().join("staging")).unwrap();
        let Some(entry) = entries.next() else {
            return 0;
        };
        assert!(entries.next().is_none());
        entry.unwrap().metadata().unwrap().len()
    }

    #[tokio::test]
    async fn small_writes_are_buffered_until_the_threshold() {
        let temp = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(temp.path())
            .await
            .unwrap()
            .with_inline_limit(0);
        let layout = crate::store::Layout {
            root: store.root().to_path_buf(),
            staging: store.root().join("staging"),
            objects: store.root().join("objects"),
        };
        let mut writer = LocalBlobWriter::new(BlobId::new(), layout.paths(&BlobId::new()), 0, true);
        let chunk = vec![7u8; 32 * 1024];
        let chunks = FLUSH_THRESHOLD / chunk.len();
        for i in 0..chunks - 1 {
            writer
                .write_at((i * chunk.len()) as u64, &chunk)
                .await
                .unwrap();
        }
        // Nothing reached the disk yet: one hop per MiB, not one per packet.
        assert_eq!(staging_len(&store), 0);
        let offset = ((chunks - 1) * chunk.len()) as u64;
        writer.write_at(offset, &chunk).await.unwrap();
        // The full run is on its way to disk (in flight, not waited for); once settled, all
        // of it is there.
        assert!(writer.in_flight.is_some());
        writer.settle().await.unwrap();
        assert_eq!(staging_len(&store), FLUSH_THRESHOLD as u64);
        assert_eq!(writer.size(), FLUSH_THRESHOLD as u64);
        Box::new(writer).abort().await;
    }

    #[tokio::test]
    async fn small_blobs_never_touch_the_disk_and_come_back_inline() {
        let temp = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(temp.path()).await.unwrap();
        let data = vec![5u8; 4096];
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, &data[..100]).await.unwrap();
        writer.write_at(100, &data[100..]).await.unwrap();
        let stored = writer.commit().await.unwrap();
        assert_eq!(stored.inline.as_deref(), Some(&data[..]));
        assert_eq!(stored.size, 4096);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(staging_len(&store), 0);
        assert_eq!(
            store.open(&stored.id).await.err().map(|e| e.kind()),
            Some(ErrorKind::NotFound),
            "an inline blob is not a file"
        );
        // Past the limit, or out of order, a blob is a file as before.
        let big = vec![6u8; crate::DEFAULT_INLINE_LIMIT + 1];
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, &big).await.unwrap();
        let stored = writer.commit().await.unwrap();
        assert_eq!(stored.inline, None);
        assert_eq!(
            store.open(&stored.id).await.unwrap().size(),
            big.len() as u64
        );
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(10, b"tail").await.unwrap();
        writer.write_at(0, b"head").await.unwrap();
        let stored = writer.commit().await.unwrap();
        assert_eq!(stored.inline, None);
        assert_eq!(stored.size, 14);
    }

    #[tokio::test]
    async fn refused_writes_change_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(temp.path())
            .await
            .unwrap()
            .with_inline_limit(0);
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, b"kept").await.unwrap();

        let too_long = vec![0u8; MAX_WRITE_LEN + 1];
        let err = writer.write_at(4, &too_long).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        let err = writer.write_at(u64::MAX, b"x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        let err = writer.write_at(MAX_END, b"x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        // An empty write far away neither extends the blob nor spoils the streaming hash.
        writer.write_at(1 << 40, &[]).await.unwrap();
        assert_eq!(writer.size(), 4);

        let stored = writer.commit().await.unwrap();
        assert_eq!(stored.size, 4);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(b"kept")));
    }

    #[tokio::test]
    async fn a_failed_write_is_sticky_and_commit_cleans_up() {
        let temp = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(temp.path())
            .await
            .unwrap()
            .with_inline_limit(0);
        let layout = crate::store::Layout {
            root: store.root().to_path_buf(),
            staging: store.root().join("staging"),
            objects: store.root().join("objects"),
        };
        let id = BlobId::new();
        let paths = layout.paths(&id);
        fs::write(&paths.staging, b"").unwrap();
        // A read-only handle makes every write fail, as a broken disk would.
        let file = File::open(&paths.staging).unwrap();
        let mut writer = LocalBlobWriter::new(id.clone(), paths, 0, true);
        writer.file = Some(Arc::new(file));
        // The run goes to disk on the blocking pool while the next one fills: its failure
        // is found when it is settled (at the latest by the next flush or the commit).
        let _ = writer.write_at(0, &vec![1u8; FLUSH_THRESHOLD]).await;
        let err = writer.settle().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        // Later writes are refused too, even ones that would only be buffered.
        let err = writer
            .write_at(FLUSH_THRESHOLD as u64, b"more")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        let staging = writer.paths.staging.clone();
        Box::new(writer).commit().await.unwrap_err();
        assert!(
            !staging.exists(),
            "a failed commit removes its staging file"
        );
        assert_eq!(
            store.open(&id).await.err().map(|err| err.kind()),
            Some(ErrorKind::NotFound)
        );
    }
}
