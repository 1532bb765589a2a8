//! [`S3BlobStore`]: [`mailroom_core::BlobStore`] on S3-compatible object storage, for hubs
//! that share one bucket between several nodes.
//!
//! Layout in the bucket, under the prefix of the store's URL (`s3://bucket/prefix`):
//!
//! ```text
//! <prefix>/objects/<aa>/<id>    committed blobs, <aa> = the first two hex digits of the id
//! ```
//!
//! There is no staging folder: an upload in progress is an S3 multipart upload, which is
//! invisible until it completes, so a committed blob appears atomically and an abandoned one
//! never appears at all. Ids are the same server-made [`BlobId`]s as on the local folder.
//!
//! This module owns opening the store (checking the URL, reaching the bucket once so that a
//! wrong endpoint or wrong credentials fail at start), keys, `delete`, and how an
//! `object_store` error becomes a [`CoreError`]. Writing lives in `writer.rs` (and its window
//! of unsent data in `pending.rs`), reading in `reader.rs`, the sweep in `sweep.rs`, the
//! options and the client in `options.rs`.
//!
//! Deliberately not here: the local folder (`store.rs`), and encryption at rest.

mod options;
mod pending;
mod reader;
mod sweep;
mod writer;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mailroom_core::{
    AccountName, BlobId, BlobReader, BlobStore, BlobWriter, CoreError, ListedBlob, Result,
    SweepReport,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tracing::{error, info};

pub use options::S3Options;

use crate::DEFAULT_INLINE_LIMIT;
use crate::store::shard_name;
use options::{Location, scrub};
use reader::S3BlobReader;
use writer::S3BlobWriter;

/// The size of every part of a multipart upload but the last (S3 wants at least 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one upload on their way to S3 at once; with the part being filled, a streaming
/// upload holds about three parts in memory.
pub const PARTS_IN_FLIGHT: usize = 2;

/// The most bytes a writer keeps that it has not sent yet: the unsent tail and data written
/// ahead of it out of order. A write that would need more is refused.
pub const MAX_PENDING: u64 = 64 * 1024 * 1024;

/// The largest blob: S3 allows 10,000 parts, and every part but the last is [`PART_SIZE`].
pub const MAX_BLOB_SIZE: u64 = 10_000 * PART_SIZE as u64;

/// How much one ranged GET of a reader fetches at least; sequential reads inside it cost
/// no request.
pub const READ_WINDOW: usize = 4 * 1024 * 1024;

/// How old an unreferenced blob must be before a sweep deletes it: another node may have
/// committed it a moment ago and not yet recorded the delivery that names it.
pub const DEFAULT_SWEEP_GRACE: Duration = Duration::from_secs(10 * 60);

/// Blobs in an S3 bucket (AWS or an S3-compatible service), shared safely between nodes.
///
/// Small blobs written in order are returned inline as on the local folder; larger ones are
/// streamed to S3 in [`PART_SIZE`] parts while their SHA-256 is computed, never staged on
/// local disk and never held whole in memory. Out-of-order and repeated writes are accepted
/// within a window of [`MAX_PENDING`] unsent bytes; a write to a range already sent is
/// refused (Conflict), as is one past the window (QuotaExceeded).
///
/// Cheap to clone: clones share the client and the counters.
#[derive(Clone)]
pub struct S3BlobStore {
    shared: Arc<Shared>,
    inline_limit: usize,
    sweep_grace: Duration,
}

/// What every writer and reader of a store needs.
pub(crate) struct Shared {
    /// The S3 client.
    pub(crate) client: Arc<dyn ObjectStore>,
    /// `<prefix>/objects`.
    pub(crate) objects: Path,
    /// What the store has done, for [`S3BlobStore::stats`].
    pub(crate) counters: Counters,
    /// The aborts of writers dropped without `commit` or `abort`, which run on tasks of their
    /// own ([`S3BlobStore::settled`] waits for them).
    pub(crate) background: tokio_util::task::TaskTracker,
    /// Where the bucket is, for `Debug` and log lines.
    location: Location,
    /// The endpoint, for `Debug` and log lines; `None` for AWS.
    endpoint: Option<String>,
}

/// What an [`S3BlobStore`] has done since it opened: requests by kind and the memory its
/// writers held. Tests and the bench read them; nothing depends on them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct S3Stats {
    /// Blobs written with one PUT (smaller than a part).
    pub puts: u64,
    /// Multipart uploads started.
    pub multipart_uploads: u64,
    /// Parts handed to S3.
    pub parts: u64,
    /// Multipart uploads aborted (by `abort`, a dropped writer or a failed commit).
    pub aborted_uploads: u64,
    /// Ranged GETs made by readers.
    pub range_gets: u64,
    /// Bytes those GETs fetched.
    pub bytes_fetched: u64,
    /// The most bytes one writer held at once: unsent data plus parts in flight.
    pub peak_writer_bytes: u64,
}

/// The live counters behind [`S3Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) puts: AtomicU64,
    pub(crate) multipart_uploads: AtomicU64,
    pub(crate) parts: AtomicU64,
    pub(crate) aborted_uploads: AtomicU64,
    pub(crate) range_gets: AtomicU64,
    pub(crate) bytes_fetched: AtomicU64,
    pub(crate) peak_writer_bytes: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> S3Stats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        S3Stats {
            puts: read(&self.puts),
            multipart_uploads: read(&self.multipart_uploads),
            parts: read(&self.parts),
            aborted_uploads: read(&self.aborted_uploads),
            range_gets: read(&self.range_gets),
            bytes_fetched: read(&self.bytes_fetched),
            peak_writer_bytes: read(&self.peak_writer_bytes),
        }
    }
}

impl S3BlobStore {
    /// Opens the store the options describe, over the environment's AWS settings, and lists
    /// the prefix once: a wrong endpoint, bucket or credentials fail here, with a message that
    /// names the bucket and the endpoint but never the secret.
    ///
    /// Errors: InvalidInput for a bad URL or setting; PermissionDenied when S3 refuses the
    /// credentials; NotFound when the bucket does not exist; another kind when S3 cannot be
    /// reached.
    pub async fn open(options: S3Options) -> io::Result<S3BlobStore> {
        let location = Location::parse(&options.url)?;
        let client = options::client(&options, &location)?;
        let store = S3BlobStore::from_client(Arc::new(client), location, options.endpoint.clone());
        store
            .probe()
            .await
            .map_err(|err| io::Error::new(err.kind(), scrub(&err.to_string(), &options)))?;
        let shared = &store.shared;
        info!(
            bucket = %shared.location.bucket,
            prefix = %shared.location.prefix,
            endpoint = shared.endpoint.as_deref().unwrap_or("AWS"),
            "S3 blob store opened"
        );
        Ok(store)
    }

    /// A store on `client` at `location`, with nothing checked.
    pub(crate) fn from_client(
        client: Arc<dyn ObjectStore>,
        location: Location,
        endpoint: Option<String>,
    ) -> S3BlobStore {
        let objects = if location.prefix.is_empty() {
            Path::from("objects")
        } else {
            Path::from(format!("{}/objects", location.prefix))
        };
        S3BlobStore {
            shared: Arc::new(Shared {
                client,
                objects,
                counters: Counters::default(),
                background: tokio_util::task::TaskTracker::new(),
                location,
                endpoint,
            }),
            inline_limit: DEFAULT_INLINE_LIMIT,
            sweep_grace: DEFAULT_SWEEP_GRACE,
        }
    }

    /// Sets the inline limit: blobs up to `bytes`, written in order, are returned inline by
    /// `commit` for the metadata store to keep; 0 stores every blob in the bucket.
    pub fn with_inline_limit(mut self, bytes: usize) -> Self {
        self.inline_limit = bytes;
        self
    }

    /// Sets how old an unreferenced blob must be before [`BlobStore::sweep`] deletes it
    /// ([`DEFAULT_SWEEP_GRACE`]); tests that own their prefix set zero.
    pub fn with_sweep_grace(mut self, grace: Duration) -> Self {
        self.sweep_grace = grace;
        self
    }

    /// Whether the store's prefix holds no blob at all (one listing request).
    pub async fn is_empty(&self) -> Result<bool> {
        use futures::StreamExt;
        let objects = &self.shared.objects;
        let mut listing = self.shared.client.list(Some(objects));
        match listing.next().await {
            None => Ok(true),
            Some(Ok(_)) => Ok(false),
            Some(Err(err)) => Err(s3_error("list blobs", objects, &err)),
        }
    }

    /// A writer of the blob `id`, which the caller chose: copying a blob in from another
    /// store keeps its id, so the deliveries that name it stay true. Everything else is as
    /// [`BlobStore::create`] (nothing is visible before `commit`).
    pub fn create_with_id(&self, id: BlobId) -> Box<dyn BlobWriter> {
        Box::new(S3BlobWriter::new(
            id,
            Arc::clone(&self.shared),
            self.inline_limit,
        ))
    }

    /// Returns once the aborts of every writer dropped so far (without `commit` or `abort`)
    /// have finished: a clean shutdown, or a test, waits here instead of guessing.
    pub async fn settled(&self) {
        let background = &self.shared.background;
        background.close();
        background.wait().await;
        background.reopen();
    }

    /// What the store has done since it opened.
    pub fn stats(&self) -> S3Stats {
        self.shared.counters.snapshot()
    }

    /// Lists the prefix once, to learn whether the bucket answers.
    async fn probe(&self) -> io::Result<()> {
        let shared = &self.shared;
        let prefix = (!shared.location.prefix.is_empty())
            .then(|| Path::from(shared.location.prefix.as_str()));
        let Err(err) = shared.client.list_with_delimiter(prefix.as_ref()).await else {
            return Ok(());
        };
        let kind = match &err {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            _ => io_kind_of(&err),
        };
        Err(io::Error::new(
            kind,
            format!(
                "cannot list S3 bucket {} at {} (check the endpoint, the bucket and the \
                 credentials): {err}",
                shared.location.bucket,
                shared.endpoint.as_deref().unwrap_or("AWS"),
            ),
        ))
    }
}

/// The kind of an `object_store` error the client reports only as text: S3's answer to a
/// listing is not mapped to a variant, but its status is in the message.
fn io_kind_of(err: &object_store::Error) -> io::ErrorKind {
    let text = err.to_string();
    if text.contains("403 Forbidden") || text.contains("401 Unauthorized") {
        io::ErrorKind::PermissionDenied
    } else if text.contains("404 Not Found") || text.contains("NoSuchBucket") {
        io::ErrorKind::NotFound
    } else {
        io::ErrorKind::Other
    }
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.shared.location.bucket)
            .field("prefix", &self.shared.location.prefix)
            .field("endpoint", &self.shared.endpoint)
            .field("inline_limit", &self.inline_limit)
            .field("sweep_grace", &self.sweep_grace)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// `<prefix>/objects/<aa>/<id>`.
    pub(crate) fn key(&self, id: &BlobId) -> Path {
        self.objects.clone().join(shard_name(id)).join(id.as_str())
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn create(&self, _owner: &AccountName) -> Result<Box<dyn BlobWriter>> {
        // No request yet: a small blob never reaches S3, a larger one starts its multipart
        // upload when its first part is ready.
        let id = BlobId::new();
        Ok(Box::new(S3BlobWriter::new(
            id,
            Arc::clone(&self.shared),
            self.inline_limit,
        )))
    }

    async fn open(&self, id: &BlobId) -> Result<Arc<dyn BlobReader>> {
        let key = self.shared.key(id);
        let meta = match self.shared.client.head(&key).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(CoreError::not_found("no such blob"));
            }
            Err(err) => return Err(s3_error("open blob", &key, &err)),
        };
        let reader = S3BlobReader::new(Arc::clone(&self.shared), key, meta.size);
        Ok(Arc::new(reader))
    }

    async fn delete(&self, id: &BlobId) -> Result<()> {
        let key = self.shared.key(id);
        match self.shared.client.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(s3_error("delete blob", &key, &err)),
        }
    }

    /// Deletes the committed blobs not in `live` that are older than the sweep grace (so a
    /// blob another node has just committed is safe), and reports them as orphans.
    ///
    /// Uploads that never completed are S3 multipart uploads: invisible, and not listed by
    /// the client used here, so `staging_removed` is always 0. Give the bucket a lifecycle
    /// rule `AbortIncompleteMultipartUpload` (a day, say) to remove the parts of uploads a
    /// crashed node could not abort.
    async fn sweep(&self, live: &HashSet<BlobId>) -> Result<SweepReport> {
        sweep::sweep(&self.shared, live, self.sweep_grace).await
    }

    /// Every object `<prefix>/objects/<aa>/<id>` named by a blob id.
    async fn list(&self) -> Result<Vec<ListedBlob>> {
        use futures::StreamExt;
        let objects = &self.shared.objects;
        let mut listing = self.shared.client.list(Some(objects));
        let mut listed = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|err| s3_error("list blobs", objects, &err))?;
            let Some(id) = meta
                .location
                .filename()
                .and_then(|name| BlobId::parse(name).ok())
            else {
                continue;
            };
            let modified =
                time::OffsetDateTime::from_unix_timestamp(meta.last_modified.timestamp())
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            listed.push(ListedBlob {
                id,
                size: meta.size,
                modified,
            });
        }
        Ok(listed)
    }

    /// Renames the object to `<prefix>/set-aside/<id>` (a copy, then a delete).
    async fn set_aside(&self, id: &BlobId) -> Result<String> {
        let from = self.shared.key(id);
        let to = match self.shared.location.prefix.as_str() {
            "" => Path::from(format!("{}/{}", crate::SET_ASIDE, id.as_str())),
            prefix => Path::from(format!("{prefix}/{}/{}", crate::SET_ASIDE, id.as_str())),
        };
        match self.shared.client.rename(&from, &to).await {
            Ok(()) => Ok(to.to_string()),
            Err(object_store::Error::NotFound { .. }) => Err(CoreError::not_found("no such blob")),
            Err(err) => Err(s3_error("set aside blob", &from, &err)),
        }
    }
}

/// Logs a failed S3 request with its key and returns the error a client may see.
///
/// What the client could not get through (the network, a 5xx, throttling, retries given up)
/// is Transient: it may work later. Anything else (refused credentials, a malformed answer)
/// is Internal. The message never holds a key or an address: those stay in the log.
pub(crate) fn s3_error(
    operation: &'static str,
    key: &Path,
    err: &object_store::Error,
) -> CoreError {
    error!(operation, key = %key, error = %err, "S3 blob storage request failed");
    match err {
        object_store::Error::Generic { .. } => CoreError::transient("storage is unavailable"),
        _ => CoreError::internal("storage failure"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
pub(crate) mod tests {
    use super::*;
    use object_store::memory::InMemory;

    /// A store on an in-memory object store under the prefix `hub`, with the default inline
    /// limit and grace, and the object store itself for looking behind the store's back.
    pub(crate) fn in_memory() -> (S3BlobStore, Arc<InMemory>) {
        let memory = Arc::new(InMemory::new());
        let location = Location {
            bucket: "test".into(),
            prefix: "hub".into(),
        };
        let client: Arc<dyn ObjectStore> = memory.clone();
        (S3BlobStore::from_client(client, location, None), memory)
    }

    #[test]
    fn keys_are_sharded_under_the_prefix() {
        let (store, _) = in_memory();
        let id = BlobId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            store.shared.key(&id).as_ref(),
            "hub/objects/01/0123456789abcdef0123456789abcdef"
        );
        let bare = S3BlobStore::from_client(
            Arc::new(InMemory::new()),
            Location {
                bucket: "test".into(),
                prefix: String::new(),
            },
            None,
        );
        assert_eq!(
            bare.shared.key(&id).as_ref(),
            "objects/01/0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn debug_shows_where_not_how() {
        let (store, _) = in_memory();
        let debug = format!("{store:?}");
        assert!(debug.contains("bucket: \"test\"") && debug.contains("prefix: \"hub\""));
    }

    #[tokio::test]
    async fn open_refuses_a_bad_url_before_any_request() {
        let err = S3BlobStore::open(S3Options {
            url: "s3://Not_A_Bucket/x".into(),
            ..S3Options::default()
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
