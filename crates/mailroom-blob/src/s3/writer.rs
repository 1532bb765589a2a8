//! The S3 writer: keeps what a client writes in a bounded window, cuts the data that runs
//! without a gap into parts, hashes them in order and uploads them as an S3 multipart
//! upload, a few at a time.
//!
//! A blob that fits the inline limit and was written in order never reaches S3 (`commit`
//! hands it back inline, as the local store does). A blob of at most one part is one PUT at
//! commit. Anything larger starts a multipart upload when its first [`PART_SIZE`] of
//! contiguous data is there (and more follows); each part is laid out and hashed on the
//! blocking pool, then uploaded by a task of its own while the next one fills, with at most
//! [`PARTS_IN_FLIGHT`] in flight, so a streaming upload holds about three parts in memory
//! whatever its size, and nothing is ever staged on local disk.
//!
//! Writes may come in any order and may overlap, within [`MAX_PENDING`] bytes not yet sent;
//! since parts leave in order, the SHA-256 always streams and is never computed twice. A
//! write to a range already sent, or one that would hold more than the window, is refused
//! and changes nothing. `commit` sends the rest (a gap is zeros) and completes the upload,
//! which is when the object appears; `abort`, a failed commit and a dropped writer abort the
//! upload (a dropped one from a task, if a runtime is there to run it).
//!
//! It does not decide where blobs live (`mod.rs`) and never deletes a committed blob.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use mailroom_core::{BlobId, BlobWriter, CoreError, ErrorKind, Result, StoredBlob};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

use super::pending::{self, Pending, Piece};
use super::{Counters, MAX_BLOB_SIZE, MAX_PENDING, PART_SIZE, PARTS_IN_FLIGHT, Shared, s3_error};
use crate::MAX_WRITE_LEN;
use crate::fsio::blocking;

/// A blob being written to S3.
pub(crate) struct S3BlobWriter {
    id: BlobId,
    shared: Arc<Shared>,
    key: Path,
    /// Blobs up to this size, written in order, are returned inline instead of stored.
    inline_limit: usize,
    /// The data not yet sent, from the first unsent byte on.
    pending: Pending,
    /// The hash of every byte sent so far (`0..pending.base()`); `None` only while a part is
    /// being hashed, and for good if that was interrupted (then `failure` is set).
    hasher: Option<Sha256>,
    /// The highest end offset written so far.
    size: u64,
    /// Where the last write ended, while every write so far continued the one before from
    /// offset 0; `None` once one did not (such a blob is never returned inline).
    in_order_end: Option<u64>,
    /// The multipart upload, once a part had to go.
    upload: Option<Upload>,
    /// Set while a step that leaves the writer half-changed is under way, and kept when it
    /// fails or its future is dropped: every later write and the commit are refused with it.
    failure: Option<CoreError>,
}

/// A multipart upload and its parts in flight.
struct Upload {
    /// The upload. The mutex is never locked (the writer reaches it through `get_mut`); it
    /// only makes the writer `Sync`, as the port asks, around a type that is `Send` alone.
    multipart: Mutex<Box<dyn MultipartUpload>>,
    /// The tasks uploading parts, oldest first, with their sizes.
    in_flight: VecDeque<(JoinHandle<object_store::Result<()>>, u64)>,
}

impl Upload {
    fn multipart(&mut self) -> &mut Box<dyn MultipartUpload> {
        self.multipart
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes of parts in flight.
    fn in_flight_bytes(&self) -> u64 {
        self.in_flight.iter().map(|(_, len)| len).sum()
    }
}

impl S3BlobWriter {
    /// A writer for blob `id`; nothing is sent until a part is ready or the commit.
    pub(crate) fn new(id: BlobId, shared: Arc<Shared>, inline_limit: usize) -> Self {
        S3BlobWriter {
            key: shared.key(&id),
            id,
            shared,
            inline_limit,
            pending: Pending::default(),
            hasher: Some(Sha256::new()),
            size: 0,
            in_order_end: Some(0),
            upload: None,
            failure: None,
        }
    }

    /// Refuses a write that this writer cannot take, before anything changes.
    fn check_write(&self, offset: u64, len: usize) -> Result<()> {
        if let Some(err) = &self.failure {
            return Err(err.clone());
        }
        if len > MAX_WRITE_LEN {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                "write request too large",
            ));
        }
        // Invariant: len <= MAX_WRITE_LEN, so it fits a u64.
        let len = len as u64;
        if offset
            .checked_add(len)
            .is_none_or(|end| end > MAX_BLOB_SIZE)
        {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                "write offset out of range",
            ));
        }
        if len == 0 {
            return Ok(());
        }
        if offset < self.pending.base() {
            return Err(CoreError::conflict(
                "that part of the file was already stored and cannot be written again",
            ));
        }
        if self.pending.bytes() + self.pending.added_by(offset, len) > MAX_PENDING {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                "too much data written out of order",
            ));
        }
        Ok(())
    }

    /// Cuts the next `len` bytes into a part (a gap is zeros), hashes it on the blocking pool
    /// and starts its upload, after waiting for room among the parts in flight.
    ///
    /// A failure (or a dropped future) leaves the writer failed for good: the part's bytes
    /// have left the window.
    async fn send_part(&mut self, len: u64) -> Result<()> {
        self.failure = Some(CoreError::internal("an earlier write was interrupted"));
        let result = self.try_send_part(len).await;
        self.failure = result.as_ref().err().cloned();
        result
    }

    /// [`S3BlobWriter::send_part`] without the bookkeeping of its failure.
    async fn try_send_part(&mut self, len: u64) -> Result<()> {
        if self.upload.is_none() {
            self.upload = Some(self.start_upload().await?);
        }
        self.wait_for_room(PARTS_IN_FLIGHT - 1).await?;
        let part = self.cut(len).await?;
        let Some(upload) = self.upload.as_mut() else {
            return Err(CoreError::internal("storage failure"));
        };
        let request = upload.multipart().put_part(PutPayload::from(part));
        upload.in_flight.push_back((tokio::spawn(request), len));
        Counters::bump(&self.shared.counters.parts);
        self.note_memory();
        Ok(())
    }

    /// Starts the multipart upload of this blob.
    async fn start_upload(&self) -> Result<Upload> {
        let multipart = self
            .shared
            .client
            .put_multipart(&self.key)
            .await
            .map_err(|err| s3_error("start upload", &self.key, &err))?;
        Counters::bump(&self.shared.counters.multipart_uploads);
        debug!(blob_id = %self.id, "multipart upload started");
        Ok(Upload {
            multipart: Mutex::new(multipart),
            in_flight: VecDeque::new(),
        })
    }

    /// Waits until at most `room` parts are in flight, oldest first; a failed part fails
    /// the writer.
    async fn wait_for_room(&mut self, room: usize) -> Result<()> {
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        while upload.in_flight.len() > room {
            let Some((task, _)) = upload.in_flight.front_mut() else {
                break;
            };
            // The task stays queued while it is awaited, so a dropped future loses nothing
            // that `abort` must stop.
            let result = task.await;
            upload.in_flight.pop_front();
            let failure = match result {
                Ok(Ok(())) => continue,
                Ok(Err(err)) => s3_error("upload part", &self.key, &err),
                Err(err) => {
                    error!(error = %err, "S3 part upload task failed");
                    CoreError::internal("storage failure")
                }
            };
            self.failure = Some(failure.clone());
            return Err(failure);
        }
        Ok(())
    }

    /// Settles the parts that are done without waiting for the others, so a failure shows
    /// at the next write rather than at the commit.
    async fn reap_finished(&mut self) -> Result<()> {
        let done = self.upload.as_ref().map_or(0, |upload| {
            upload
                .in_flight
                .iter()
                .take_while(|(task, _)| task.is_finished())
                .count()
        });
        if done == 0 {
            return Ok(());
        }
        let room = self
            .upload
            .as_ref()
            .map_or(0, |upload| upload.in_flight.len() - done);
        self.wait_for_room(room).await
    }

    /// Takes the next `len` bytes out of the window, laid out and hashed on the blocking
    /// pool.
    async fn cut(&mut self, len: u64) -> Result<Bytes> {
        let start = self.pending.base();
        let pieces = self.pending.take(len);
        let Some(hasher) = self.hasher.take() else {
            return Err(CoreError::internal("storage failure"));
        };
        // Invariant: len is at most PART_SIZE, far below usize::MAX.
        let (part, hasher) = blocking("hash part", move || {
            Ok(lay_out(start, len as usize, &pieces, hasher))
        })
        .await?;
        self.hasher = Some(hasher);
        Ok(part)
    }

    /// Records the bytes this writer holds, for [`super::S3Stats::peak_writer_bytes`].
    fn note_memory(&self) {
        let in_flight = self.upload.as_ref().map_or(0, Upload::in_flight_bytes);
        self.shared
            .counters
            .peak_writer_bytes
            .fetch_max(self.pending.bytes() + in_flight, Ordering::Relaxed);
    }

    /// The whole blob, if it is small, was written in order and never left memory.
    fn take_inline(&mut self) -> Option<StoredBlob> {
        let whole = self.inline_limit > 0
            && self.upload.is_none()
            && self.in_order_end == Some(self.size)
            && self.size <= self.inline_limit as u64;
        if !whole {
            return None;
        }
        // Invariant: size <= inline_limit, a usize.
        let size = self.size as usize;
        let content = pending::assemble(0, size, &self.pending.take(self.size));
        let mut hasher = self.hasher.take()?;
        hasher.update(&content);
        Some(StoredBlob {
            id: self.id.clone(),
            size: self.size,
            sha256: hex::encode(hasher.finalize()),
            inline: Some(content),
        })
    }

    /// Everything `commit` does but the clean-up of a failure.
    async fn finish(&mut self) -> Result<StoredBlob> {
        if let Some(err) = &self.failure {
            return Err(err.clone());
        }
        if let Some(stored) = self.take_inline() {
            return Ok(stored);
        }
        if self.upload.is_none() && self.size <= PART_SIZE as u64 {
            self.put_whole().await?;
        } else {
            self.complete_upload().await?;
        }
        let Some(hasher) = self.hasher.take() else {
            return Err(CoreError::internal("storage failure"));
        };
        Ok(StoredBlob {
            id: self.id.clone(),
            size: self.size,
            sha256: hex::encode(hasher.finalize()),
            inline: None,
        })
    }

    /// Writes a blob of at most one part with one PUT.
    async fn put_whole(&mut self) -> Result<()> {
        let part = self.cut(self.size).await?;
        self.shared
            .client
            .put(&self.key, PutPayload::from(part))
            .await
            .map_err(|err| s3_error("put blob", &self.key, &err))?;
        Counters::bump(&self.shared.counters.puts);
        Ok(())
    }

    /// Sends what is left as the last parts, waits for every part, and completes the upload:
    /// the object appears now, whole.
    async fn complete_upload(&mut self) -> Result<()> {
        while self.pending.base() < self.size {
            let len = (self.size - self.pending.base()).min(PART_SIZE as u64);
            self.send_part(len).await?;
        }
        self.wait_for_room(0).await?;
        let Some(upload) = self.upload.as_mut() else {
            return Err(CoreError::internal("storage failure"));
        };
        upload
            .multipart()
            .complete()
            .await
            .map_err(|err| s3_error("complete upload", &self.key, &err))?;
        // Completed: nothing is left for `abort` or `drop` to undo.
        self.upload = None;
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for S3BlobWriter {
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.reap_finished().await?;
        self.check_write(offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        // Invariant: check_write bounded offset + len by MAX_BLOB_SIZE.
        let end = offset + data.len() as u64;
        if self.in_order_end != Some(offset) {
            self.in_order_end = None;
        } else {
            self.in_order_end = Some(end);
        }
        // The one copy of the bytes on their way in: from the front end's buffer into the
        // window; parts are laid out from it once more, on the blocking pool.
        self.pending.insert(offset, Bytes::copy_from_slice(data));
        self.size = self.size.max(end);
        self.note_memory();
        // More than a part: this part is not the last, so it may go (a blob of exactly one
        // part stays a single PUT).
        while self.pending.contiguous() > PART_SIZE as u64 {
            self.send_part(PART_SIZE as u64).await?;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(mut self: Box<Self>) -> Result<StoredBlob> {
        let result = self.finish().await;
        if result.is_err() {
            // The writer is gone after this call, so nobody could abort: clean up here.
            self.abort_upload().await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_upload().await;
    }
}

impl S3BlobWriter {
    /// Stops the parts in flight and aborts the multipart upload, if there is one.
    async fn abort_upload(&mut self) {
        if let Some(upload) = self.upload.take() {
            abort(upload, Arc::clone(&self.shared), self.id.clone()).await;
        }
    }
}

impl Drop for S3BlobWriter {
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else {
            return;
        };
        for (task, _) in &upload.in_flight {
            task.abort();
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let shared = Arc::clone(&self.shared);
                let background = shared.background.clone();
                background.spawn_on(abort(upload, shared, self.id.clone()), &runtime);
            }
            Err(_) => warn!(
                blob_id = %self.id,
                "S3 writer dropped outside a runtime; its upload is left for the bucket's lifecycle rule"
            ),
        }
    }
}

/// Stops the part tasks (and waits until they are gone, so no part lands after the abort),
/// then aborts the upload; a failure is logged and left for the bucket's lifecycle rule.
async fn abort(mut upload: Upload, shared: Arc<Shared>, id: BlobId) {
    for (task, _) in upload.in_flight.drain(..) {
        task.abort();
        let _ = task.await;
    }
    match upload.multipart().abort().await {
        Ok(()) => {
            Counters::bump(&shared.counters.aborted_uploads);
            debug!(blob_id = %id, "multipart upload aborted");
        }
        Err(err) => warn!(
            blob_id = %id,
            error = %err,
            "could not abort an S3 multipart upload; the bucket's lifecycle rule will remove it"
        ),
    }
}

/// Lays `pieces` out as `len` bytes from `start` and feeds them to the hash, in order.
fn lay_out(start: u64, len: usize, pieces: &[Piece], mut hasher: Sha256) -> (Bytes, Sha256) {
    let part = pending::assemble(start, len, pieces);
    hasher.update(&part);
    (Bytes::from(part), hasher)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;
    use crate::S3BlobStore;
    use crate::s3::tests::in_memory;
    use mailroom_core::BlobStore;

    /// The account the test blobs come from.
    fn owner() -> mailroom_core::AccountName {
        mailroom_core::AccountName::parse("alice").unwrap()
    }

    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;

    /// Deterministic bytes without a short period.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8 ^ seed)
            .collect()
    }

    async fn write_chunks(writer: &mut dyn BlobWriter, base: usize, data: &[u8], chunk: usize) {
        for (index, piece) in data.chunks(chunk).enumerate() {
            writer
                .write_at((base + index * chunk) as u64, piece)
                .await
                .unwrap();
        }
    }

    /// Commits `writer` and checks the blob against `expect`, read back through the store.
    async fn commit_and_check(store: &S3BlobStore, writer: Box<dyn BlobWriter>, expect: &[u8]) {
        let stored = writer.commit().await.unwrap();
        assert_eq!(stored.size, expect.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(expect)));
        assert_eq!(stored.inline, None);
        let reader = store.open(&stored.id).await.unwrap();
        let mut back = Vec::new();
        loop {
            let piece = reader.read_at(back.len() as u64, 1 << 20).await.unwrap();
            if piece.is_empty() {
                break;
            }
            back.extend_from_slice(&piece);
        }
        assert!(back == expect, "content differs");
    }

    #[tokio::test]
    async fn small_blobs_come_back_inline_and_never_reach_the_bucket() {
        let (store, _) = in_memory();
        let data = pattern(4096, 1);
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, &data[..100]).await.unwrap();
        writer.write_at(100, &data[100..]).await.unwrap();
        let stored = writer.commit().await.unwrap();
        assert_eq!(stored.inline.as_deref(), Some(&data[..]));
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
        let stats = store.stats();
        assert_eq!((stats.puts, stats.multipart_uploads), (0, 0), "{stats:?}");
        assert_eq!(
            store.open(&stored.id).await.err().map(|err| err.kind()),
            Some(ErrorKind::NotFound)
        );
        // An empty blob is inline too; one written out of order is not.
        let stored = store
            .create(&owner())
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        assert_eq!(stored.inline.as_deref(), Some(&b""[..]));
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(10, b"tail").await.unwrap();
        writer.write_at(0, b"head").await.unwrap();
        commit_and_check(&store, writer, b"head\0\0\0\0\0\0tail").await;
        assert_eq!(store.stats().puts, 1);
    }

    #[tokio::test]
    async fn a_blob_of_one_part_is_one_put_and_more_is_multipart() {
        let (store, _) = in_memory();
        let data = pattern(PART_SIZE + 1, 2);
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &data[..PART_SIZE], MIB).await;
        commit_and_check(&store, writer, &data[..PART_SIZE]).await;
        let stats = store.stats();
        assert_eq!((stats.puts, stats.multipart_uploads), (1, 0), "{stats:?}");

        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &data, MIB).await;
        commit_and_check(&store, writer, &data).await;
        let stats = store.stats();
        assert_eq!(
            (stats.puts, stats.multipart_uploads, stats.parts),
            (1, 1, 2),
            "{stats:?}"
        );
    }

    #[tokio::test]
    async fn streaming_memory_stays_bounded() {
        let (store, _) = in_memory();
        let data = pattern(6 * PART_SIZE + 5, 3);
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &data, 64 * KIB).await;
        commit_and_check(&store, writer, &data).await;
        let stats = store.stats();
        assert_eq!(stats.parts, 7, "{stats:?}");
        let bound = ((PARTS_IN_FLIGHT + 1) * PART_SIZE + 64 * KIB) as u64;
        assert!(stats.peak_writer_bytes <= bound, "{stats:?}");
    }

    #[tokio::test]
    async fn out_of_order_writes_across_parts_are_stored_right() {
        let (store, _) = in_memory();
        let data = pattern(3 * PART_SIZE + 12_345, 4);
        let half = data.len() / 2;
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, half, &data[half..], 32 * KIB).await;
        assert_eq!(store.stats().parts, 0, "nothing is contiguous from 0 yet");
        write_chunks(&mut *writer, 0, &data[..half], 32 * KIB).await;
        commit_and_check(&store, writer, &data).await;
        assert_eq!(store.stats().parts, 4);
    }

    #[tokio::test]
    async fn gaps_are_zeros_even_across_parts() {
        let (store, _) = in_memory();
        let mut expect = vec![0u8; 2 * PART_SIZE + 300];
        expect[0] = 7;
        expect[2 * PART_SIZE + 200..].copy_from_slice(&[9u8; 100]);
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, &[7]).await.unwrap();
        writer
            .write_at((2 * PART_SIZE + 200) as u64, &[9u8; 100])
            .await
            .unwrap();
        assert_eq!(writer.size(), expect.len() as u64);
        commit_and_check(&store, writer, &expect).await;
        assert_eq!(store.stats().parts, 3);
    }

    #[tokio::test]
    async fn refused_writes_change_nothing() {
        let (store, _) = in_memory();
        let mut expect = pattern(PART_SIZE + MIB, 5);
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &expect, MIB).await;
        assert_eq!(store.stats().parts, 1);
        let size = writer.size();

        // Into the part already sent, even partly, or with the same bytes.
        for (offset, len) in [(0, 10), (PART_SIZE - 5, 10), (100, 1)] {
            let err = writer
                .write_at(offset as u64, &expect[offset..offset + len])
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Conflict, "{offset}");
        }
        // Too long, out of range, or past the window of unsent data.
        let err = writer
            .write_at(size, &vec![0u8; MAX_WRITE_LEN + 1])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        let err = writer.write_at(MAX_BLOB_SIZE, b"x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        let err = writer.write_at(u64::MAX - 1, b"xy").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        // Ahead of a gap: 1 MiB unsent, then three 16 MiB writes fit and the fourth not.
        let ahead = vec![3u8; MAX_WRITE_LEN];
        let gap = PART_SIZE + 2 * MIB;
        for k in 0..3 {
            writer
                .write_at((gap + k * MAX_WRITE_LEN) as u64, &ahead)
                .await
                .unwrap();
        }
        let size_before = writer.size();
        let err = writer
            .write_at((gap + 3 * MAX_WRITE_LEN) as u64, &ahead)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(writer.size(), size_before);
        // Rewriting bytes already held ahead adds nothing, so it is taken.
        writer.write_at(gap as u64, &[4u8; 10]).await.unwrap();

        // The writer goes on as if the refused writes never came.
        expect.resize(gap, 1);
        writer
            .write_at(size, &expect[size as usize..])
            .await
            .unwrap();
        for _ in 0..3 {
            expect.extend_from_slice(&ahead);
        }
        expect[gap..gap + 10].copy_from_slice(&[4u8; 10]);
        commit_and_check(&store, writer, &expect).await;
    }

    #[tokio::test]
    async fn abort_and_drop_abort_the_upload() {
        let (store, memory) = in_memory();
        let data = pattern(PART_SIZE + MIB, 6);
        for dropped in [false, true] {
            let mut writer = store.create(&owner()).await.unwrap();
            write_chunks(&mut *writer, 0, &data, MIB).await;
            if dropped {
                drop(writer);
            } else {
                writer.abort().await;
            }
        }
        // The dropped writer's abort runs on a task of its own.
        for _ in 0..1000 {
            if store.stats().aborted_uploads == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let stats = store.stats();
        assert_eq!((stats.multipart_uploads, stats.aborted_uploads), (2, 2));
        let listed = object_store::ObjectStore::list(&*memory, None);
        assert_eq!(futures::StreamExt::count(listed).await, 0);
    }
}
