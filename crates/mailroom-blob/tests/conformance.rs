//! The [`BlobStore`] conformance suite: one set of checks every backend must pass.
//!
//! Each check in [`suite`] takes a fresh, empty store as `&dyn BlobStore` and uses nothing
//! but the trait; each backend runs all of them from a module with its own `fresh` function
//! ([`local`], [`sealed`] (encryption at rest over the local folder), and [`s3`] on the
//! bucket the `MAILROOM_TEST_S3_*` variables name). What only
//! one backend promises (the local staging folder, S3's parts and ranged reads) is checked in
//! that backend's module. File-system details (modes, layout, junk names) are the local
//! backend's own unit tests, not part of the contract.

// Tests may unwrap (CONTRIBUTING.md): a failed unwrap is a failed check.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use mailroom_blob::{LocalBlobStore, S3BlobStore, S3Options};
use mailroom_core::{BlobReader, BlobStore, BlobWriter, ErrorKind, StoredBlob};
use sha2::{Digest, Sha256};

/// The account the test blobs come from.
fn owner() -> mailroom_core::AccountName {
    mailroom_core::AccountName::parse("alice").unwrap()
}

/// Generates one `#[tokio::test]` per check, each on a fresh store from `$fresh`, which
/// returns the store and a guard to keep alive for the test's duration, or `None` when the
/// backend cannot be reached here (the test is then skipped). `$finish` tidies up after a
/// check that passed.
macro_rules! conformance {
    ($fresh:path, $finish:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let Some((store, guard)) = $fresh().await else {
                    return;
                };
                crate::suite::$check(&*store).await;
                $finish(&*store, guard).await;
            }
        )*
    };
}

/// Every check of [`suite`], for each backend's module.
macro_rules! every_check {
    ($fresh:path, $finish:path) => {
        conformance!($fresh, $finish;
            round_trip,
            empty_blob,
            streams_multi_mib_in_small_chunks,
            out_of_order_writes,
            overlapping_rewrites,
            sparse_write,
            refused_write_changes_nothing,
            abort_leaves_nothing,
            dropped_writer_commits_nothing,
            sweep_keeps_live_blobs_only,
            open_missing_is_not_found,
            delete_is_idempotent,
            list_names_committed_blobs_and_set_aside_moves_one,
            reads_past_end_are_empty,
            large_reads_return_a_prefix,
            concurrent_writers_are_independent,
            concurrent_reads_share_a_reader,
        );
    };
}

mod local {
    use super::*;

    /// Every blob as a file: the suite reads committed blobs back through `open`. The inline
    /// path (small blobs handed to the metadata store) is tested in the crate's unit tests.
    async fn fresh() -> Option<(Box<dyn BlobStore>, tempfile::TempDir)> {
        let temp = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(&temp.path().join("blobs"))
            .await
            .unwrap()
            .with_inline_limit(0);
        Some((Box::new(store), temp))
    }

    /// Nothing to tidy: the folder goes with its guard.
    async fn finish(_store: &dyn BlobStore, _guard: tempfile::TempDir) {}

    every_check!(fresh, finish);

    /// A dropped writer leaves its staging file, which the next sweep removes and counts.
    #[tokio::test]
    async fn dropped_writer_is_swept() {
        let (store, _guard) = fresh().await.unwrap();
        let store = &*store;
        let kept = suite::commit_bytes(store, b"kept").await;
        let mut writer = store.create(&owner()).await.unwrap();
        writer
            .write_at(0, &suite::pattern(suite::MIB + 1, 7))
            .await
            .unwrap();
        drop(writer);
        let live = HashSet::from([kept.id.clone()]);
        let report = store.sweep(&live).await.unwrap();
        assert_eq!(report.staging_removed, 1);
        assert_eq!(report.orphans_removed, 0);
        assert_eq!(store.sweep(&live).await.unwrap().staging_removed, 0);
        let reader = store.open(&kept.id).await.unwrap();
        assert_eq!(suite::read_all(&*reader, 64).await, b"kept");
    }

    /// A resumable upload's staging outlives the store (a restart): the sweep spares it when
    /// named live, and `resume` goes on after what reached the disk, whatever the old writer
    /// still held in memory; the blob committed is the whole content, hashed right.
    #[tokio::test]
    async fn a_staging_is_taken_up_after_a_restart() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("blobs");
        let content = suite::pattern(3 * suite::MIB + 4321, 9);
        let staging = {
            let store = LocalBlobStore::open(&root).await.unwrap();
            let mut writer = store.create(&owner()).await.unwrap();
            for (i, chunk) in content[..2 * suite::MIB + 100]
                .chunks(64 * 1024)
                .enumerate()
            {
                writer
                    .write_at((i * 64 * 1024) as u64, chunk)
                    .await
                    .unwrap();
            }
            writer.staging_id().unwrap()
            // Dropped here without a commit, as a killed process would.
        };
        let store = LocalBlobStore::open(&root).await.unwrap();
        let report = store
            .sweep(&HashSet::from([staging.clone()]))
            .await
            .unwrap();
        assert_eq!(report.staging_removed, 0);
        let mut writer = store.resume(&staging, &owner()).await.unwrap().unwrap();
        let held = usize::try_from(writer.size()).unwrap();
        assert!(held > 0 && held <= 2 * suite::MIB + 100, "{held}");
        assert_eq!(writer.staging_id(), Some(staging.clone()));
        writer
            .write_at(held as u64, &content[held..])
            .await
            .unwrap();
        let stored = writer.commit().await.unwrap();
        assert_eq!(stored.size, content.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&content)));
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(suite::read_all(&*reader, suite::MIB).await, content);
        // Not named live, a staging goes; one that is gone is taken up empty.
        let mut other = store.create(&owner()).await.unwrap();
        other.write_at(0, &content).await.unwrap();
        let lost = other.staging_id().unwrap();
        drop(other);
        assert_eq!(
            store.sweep(&HashSet::new()).await.unwrap().staging_removed,
            1
        );
        let empty = store.resume(&lost, &owner()).await.unwrap().unwrap();
        assert_eq!(empty.size(), 0);
    }
}

mod sealed {
    //! The suite through the sealing store over the local folder, and what sealing adds:
    //! nothing of the plaintext on disk, inline blobs sealed too, a flipped byte or a blob cut
    //! after a whole chunk refused while the other chunks still read, range reads across
    //! chunk edges, and an upload taken up after a restart sealed on under the same key.

    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use mailroom_blob::at_rest::{Keyring, MasterKey, SEAL_CHUNK, SealedBlobStore};
    use mailroom_core::testing::MemoryMeta;

    use super::*;

    /// The header's length: magic, key id, salt.
    const HEADER: usize = 8 + 16 + 32;
    /// A whole chunk as stored.
    const SEALED: usize = SEAL_CHUNK + 16;

    /// A sealing store over a local folder in `root`, keys in `meta` under `master`.
    async fn store_at(
        root: &Path,
        meta: Arc<MemoryMeta>,
        master: &MasterKey,
        inline: usize,
    ) -> SealedBlobStore {
        let local = LocalBlobStore::open(root)
            .await
            .unwrap()
            .with_inline_limit(inline)
            .without_content_hash();
        let keyring = Keyring::open(master.clone(), meta, true).await.unwrap();
        SealedBlobStore::new(Arc::new(local), Arc::new(keyring))
    }

    async fn fresh() -> Option<(Box<dyn BlobStore>, tempfile::TempDir)> {
        let temp = tempfile::tempdir().unwrap();
        let store = store_at(
            &temp.path().join("blobs"),
            Arc::new(MemoryMeta::new()),
            &MasterKey::generate(),
            0,
        )
        .await;
        Some((Box::new(store), temp))
    }

    async fn finish(_store: &dyn BlobStore, _guard: tempfile::TempDir) {}

    every_check!(fresh, finish);

    /// The file of a committed blob.
    fn file_of(root: &Path, id: &mailroom_core::BlobId) -> PathBuf {
        root.join("objects")
            .join(&id.as_str()[..2])
            .join(id.as_str())
    }

    /// A fresh sealing store holding one committed blob of three and a bit chunks: the store
    /// (and the folder it keeps alive), the content, the blob and its file.
    async fn sealed_on_disk(
        seed: u64,
    ) -> (
        tempfile::TempDir,
        SealedBlobStore,
        Vec<u8>,
        StoredBlob,
        PathBuf,
    ) {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("blobs");
        let store = store_at(
            &root,
            Arc::new(MemoryMeta::new()),
            &MasterKey::generate(),
            0,
        )
        .await;
        let data = suite::pattern(3 * SEAL_CHUNK + 500, seed);
        let stored = suite::commit_bytes(&store, &data).await;
        let path = file_of(&root, &stored.id);
        (temp, store, data, stored, path)
    }

    /// Whether `haystack` holds `needle`.
    fn holds(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    #[tokio::test]
    async fn nothing_of_the_plaintext_is_stored_and_a_flipped_byte_fails_only_its_chunk() {
        let (_temp, store, data, stored, path) = sealed_on_disk(11).await;
        let mut on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), HEADER + 4 * 16 + data.len());
        for at in [0, 1000, SEAL_CHUNK, 2 * SEAL_CHUNK + 7, data.len() - 32] {
            assert!(!holds(&on_disk, &data[at..at + 32]), "plaintext at {at}");
        }
        // A flipped byte in chunk 1: reads touching it fail, the others still read.
        on_disk[HEADER + SEALED + 100] ^= 1;
        std::fs::write(&path, &on_disk).unwrap();
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(reader.size(), data.len() as u64);
        let err = reader.read_at(SEAL_CHUNK as u64 + 5, 10).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(reader.read_at(0, 2 * SEAL_CHUNK).await.is_err());
        assert_eq!(reader.read_at(0, 100).await.unwrap(), &data[..100]);
        assert_eq!(
            reader
                .read_at(2 * SEAL_CHUNK as u64, SEAL_CHUNK)
                .await
                .unwrap(),
            &data[2 * SEAL_CHUNK..3 * SEAL_CHUNK]
        );
    }

    #[tokio::test]
    async fn a_blob_cut_after_a_whole_chunk_or_with_swapped_chunks_does_not_read() {
        let (_temp, store, _data, stored, path) = sealed_on_disk(12).await;
        let whole = std::fs::read(&path).unwrap();

        // Cut after chunk 1: its new last chunk was not sealed as the last.
        std::fs::write(&path, &whole[..HEADER + 2 * SEALED]).unwrap();
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(reader.size(), 2 * SEAL_CHUNK as u64);
        assert!(reader.read_at(SEAL_CHUNK as u64, 10).await.is_err());

        // Chunks 0 and 1 swapped: each fails under the other's number.
        let mut swapped = whole.clone();
        swapped[HEADER..HEADER + SEALED]
            .copy_from_slice(&whole[HEADER + SEALED..HEADER + 2 * SEALED]);
        swapped[HEADER + SEALED..HEADER + 2 * SEALED]
            .copy_from_slice(&whole[HEADER..HEADER + SEALED]);
        std::fs::write(&path, &swapped).unwrap();
        let reader = store.open(&stored.id).await.unwrap();
        assert!(reader.read_at(0, 10).await.is_err());
        assert!(reader.read_at(SEAL_CHUNK as u64, 10).await.is_err());
    }

    #[tokio::test]
    async fn range_reads_across_chunk_edges_match_the_plaintext() {
        let (store, _guard) = fresh().await.unwrap();
        let data = suite::pattern(5 * SEAL_CHUNK + 333, 13);
        let stored = suite::commit_bytes(&*store, &data).await;
        let reader = store.open(&stored.id).await.unwrap();
        for (at, len) in [
            (0, 1),
            (SEAL_CHUNK - 3, 6),
            (SEAL_CHUNK, SEAL_CHUNK),
            (SEAL_CHUNK + 1, 3 * SEAL_CHUNK),
            (5 * SEAL_CHUNK + 300, 100),
            (5 * SEAL_CHUNK + 333, 10),
        ] {
            let end = (at + len).min(data.len());
            assert_eq!(
                reader.read_at(at as u64, len).await.unwrap(),
                &data[at..end],
                "{at}+{len}"
            );
        }
    }

    #[tokio::test]
    async fn an_inline_blob_is_sealed_and_opens_through_the_store() {
        let temp = tempfile::tempdir().unwrap();
        let store = store_at(
            &temp.path().join("blobs"),
            Arc::new(MemoryMeta::new()),
            &MasterKey::generate(),
            4096,
        )
        .await;
        let data = suite::pattern(1000, 14);
        let stored = suite::commit_bytes(&store, &data).await;
        let inline = stored.inline.clone().unwrap();
        assert!(inline.starts_with(b"MRSEAL01"));
        assert!(!holds(&inline, &data[100..132]));
        let reader = store.open_inline(&stored.id, inline.clone()).await.unwrap();
        assert_eq!(suite::read_all(&*reader, 100).await, data);
        let mut flipped = inline;
        flipped[HEADER + 3] ^= 1;
        assert!(store.open_inline(&stored.id, flipped).await.is_err());
    }

    #[tokio::test]
    async fn an_upload_taken_up_after_a_restart_seals_on_under_the_same_key() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("blobs");
        let (meta, master) = (Arc::new(MemoryMeta::new()), MasterKey::generate());
        let content = suite::pattern(2 * suite::MIB + 4321, 15);
        let staging = {
            let store = store_at(&root, meta.clone(), &master, 0).await;
            let mut writer = store.create(&owner()).await.unwrap();
            // More than the unsealed window, so whole chunks reach the disk.
            suite::write_chunks(&mut *writer, 0, &content[..2 * suite::MIB], 32 * suite::KIB).await;
            writer.staging_id().unwrap()
        };
        let store = store_at(&root, meta, &master, 0).await;
        let mut writer = store.resume(&staging, &owner()).await.unwrap().unwrap();
        let held = usize::try_from(writer.size()).unwrap();
        assert_eq!(held % SEAL_CHUNK, 0);
        assert!(held <= 2 * suite::MIB, "{held}");
        writer
            .write_at(held as u64, &content[held..])
            .await
            .unwrap();
        let stored = writer.commit().await.unwrap();
        suite::check_stored(&stored, &content);
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(suite::read_all(&*reader, suite::MIB).await, content);
    }

    /// A commit that reached the store but not the metadata (a crash between the two): the
    /// upload's next request takes the whole blob up again, its final chunk opened back into
    /// the window, whether it is a whole chunk or a short one.
    #[tokio::test]
    async fn a_commit_never_recorded_is_taken_up_whole() {
        for len in [3 * SEAL_CHUNK, 3 * SEAL_CHUNK + 77, 100] {
            let temp = tempfile::tempdir().unwrap();
            let root = temp.path().join("blobs");
            let store = store_at(
                &root,
                Arc::new(MemoryMeta::new()),
                &MasterKey::generate(),
                0,
            )
            .await;
            let content = suite::pattern(len, 17);
            let mut writer = store.create(&owner()).await.unwrap();
            suite::write_chunks(&mut *writer, 0, &content, 32 * suite::KIB).await;
            let staging = writer.staging_id().unwrap();
            writer.commit().await.unwrap();
            let mut again = store.resume(&staging, &owner()).await.unwrap().unwrap();
            assert_eq!(again.size(), len as u64, "{len}");
            // The client may send its last bytes again, as a resuming client does.
            let from = len.saturating_sub(10);
            again.write_at(from as u64, &content[from..]).await.unwrap();
            let stored = again.commit().await.unwrap();
            suite::check_stored(&stored, &content);
            let reader = store.open(&stored.id).await.unwrap();
            assert_eq!(
                suite::read_all(&*reader, suite::MIB).await,
                content,
                "{len}"
            );
        }
    }

    #[tokio::test]
    async fn a_rewrite_of_sealed_data_and_a_write_far_ahead_are_refused() {
        let (store, _guard) = fresh().await.unwrap();
        let data = suite::pattern(6 * suite::MIB, 16);
        let mut writer = store.create(&owner()).await.unwrap();
        suite::write_chunks(&mut *writer, 0, &data, 64 * suite::KIB).await;
        let err = writer.write_at(0, b"again").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let err = writer
            .write_at(data.len() as u64 + 8 * suite::MIB as u64, b"far")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        // Neither changed the upload.
        let stored = writer.commit().await.unwrap();
        suite::check_stored(&stored, &data);
    }
}

mod s3 {
    //! The suite on S3, each check under a fresh prefix `t-<uuid>` of the test bucket, and
    //! what only S3 promises: parts, bounded memory, ranged reads, aborted uploads, and
    //! `open` failing clearly (and without the secret) when the bucket cannot be reached.

    use std::time::Duration;

    use mailroom_blob::{PART_SIZE, PARTS_IN_FLIGHT, READ_WINDOW};

    use super::suite::{KIB, MIB, pattern, read_all, write_chunks};
    use super::*;

    /// The variables that name the test bucket; the first is required.
    const URL: &str = "MAILROOM_TEST_S3_URL";
    const ENDPOINT: &str = "MAILROOM_TEST_S3_ENDPOINT";
    const KEY: &str = "MAILROOM_TEST_S3_KEY";
    const SECRET: &str = "MAILROOM_TEST_S3_SECRET";

    /// The options of a fresh prefix in the test bucket, or `None` (skipped) when the
    /// variables are unset.
    fn options() -> Option<S3Options> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let Some(url) = var(URL) else {
            skip(&format!(
                "no S3 test bucket: set {URL} (e.g. s3://mailroom-test), {ENDPOINT}, {KEY} \
                 and {SECRET}"
            ));
            return None;
        };
        let endpoint = var(ENDPOINT);
        Some(S3Options {
            url: format!(
                "{}/t-{}",
                url.trim_end_matches('/'),
                uuid::Uuid::new_v4().simple()
            ),
            allow_http: endpoint
                .as_deref()
                .is_some_and(|endpoint| endpoint.starts_with("http://")),
            endpoint,
            region: None,
            access_key_id: var(KEY),
            secret_access_key: var(SECRET),
        })
    }

    /// As `mailroom_test_support::skip`, which this crate does not depend on: with `CI` set,
    /// a missing bucket fails the test; else it prints `skipped: why` and records the skip
    /// for `scripts/test`.
    fn skip(why: &str) {
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        if std::env::var_os("CI").is_some() {
            panic!("{test} cannot run: {why}; CI must start an S3 server (.ci/run)");
        }
        eprintln!("skipped: {why}");
        if let Some(path) = std::env::var_os("MAILROOM_TEST_SKIPS") {
            use std::io::Write;
            let line = format!("{test}\t{}\n", why.replace(['\n', '\t'], " "));
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = file.write_all(line.as_bytes());
            }
        }
    }

    /// A store on a fresh prefix that writes every blob to the bucket and sweeps without a
    /// grace period (nobody else writes under the prefix).
    async fn store() -> Option<S3BlobStore> {
        let store = S3BlobStore::open(options()?).await.unwrap();
        Some(store.with_inline_limit(0).with_sweep_grace(Duration::ZERO))
    }

    async fn fresh() -> Option<(Box<dyn BlobStore>, ())> {
        Some((Box::new(store().await?), ()))
    }

    /// Deletes what a check left under its prefix.
    async fn finish(store: &dyn BlobStore, _guard: ()) {
        store.sweep(&HashSet::new()).await.unwrap();
    }

    every_check!(fresh, finish);

    /// S3 cannot take an upload up after a restart (its multipart upload's hash state is
    /// gone): it says so, and its writers name no staging to record.
    #[tokio::test]
    async fn a_staging_cannot_be_taken_up() {
        let Some((store, ())) = fresh().await else {
            return;
        };
        let writer = store.create(&owner()).await.unwrap();
        assert_eq!(writer.staging_id(), None);
        writer.abort().await;
        let id = mailroom_core::BlobId::new();
        assert!(store.resume(&id, &owner()).await.unwrap().is_none());
        finish(&*store, ()).await;
    }

    /// Bigger than three parts, and not a whole number of them.
    const LARGE: usize = 3 * PART_SIZE + 4 * MIB + 12_345;

    async fn write_large(store: &S3BlobStore, data: &[u8]) -> StoredBlob {
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, data, 32 * KIB).await;
        writer.commit().await.unwrap()
    }

    #[tokio::test]
    async fn a_large_blob_streams_in_parts_with_bounded_memory() {
        let Some(store) = store().await else {
            return;
        };
        let data = pattern(LARGE, 21);
        let stored = write_large(&store, &data).await;
        suite::check_stored(&stored, &data);
        let stats = store.stats();
        assert_eq!((stats.multipart_uploads, stats.puts), (1, 0), "{stats:?}");
        assert_eq!(stats.parts, LARGE.div_ceil(PART_SIZE) as u64, "{stats:?}");
        // Parts in flight, the one filling, and one client write: never the whole file.
        let bound = ((PARTS_IN_FLIGHT + 1) * PART_SIZE + 32 * KIB) as u64;
        assert!(stats.peak_writer_bytes <= bound, "{stats:?}");
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(reader.size(), LARGE as u64);
        assert!(read_all(&*reader, 256 * KIB).await == data);
        finish(&store, ()).await;
    }

    #[tokio::test]
    async fn sequential_reads_cost_one_get_per_window() {
        let Some(store) = store().await else {
            return;
        };
        let data = pattern(LARGE, 22);
        let stored = write_large(&store, &data).await;
        let before = store.stats().range_gets;
        let reader = store.open(&stored.id).await.unwrap();
        assert!(read_all(&*reader, 32 * KIB).await == data);
        let gets = store.stats().range_gets - before;
        assert!(
            gets <= (LARGE.div_ceil(READ_WINDOW) + 1) as u64,
            "{gets} GETs"
        );
        // A resumed transfer (a new reader) fetches one window from its offset, not the
        // whole object.
        let before = store.stats();
        let reader = store.open(&stored.id).await.unwrap();
        let middle = LARGE / 2;
        let piece = reader.read_at(middle as u64, 64 * KIB).await.unwrap();
        assert!(piece == data[middle..middle + 64 * KIB]);
        let after = store.stats();
        assert_eq!(after.range_gets - before.range_gets, 1);
        assert_eq!(
            after.bytes_fetched - before.bytes_fetched,
            READ_WINDOW as u64
        );
        finish(&store, ()).await;
    }

    #[tokio::test]
    async fn an_aborted_or_dropped_upload_leaves_no_object() {
        let Some(store) = store().await else {
            return;
        };
        let data = pattern(2 * PART_SIZE + MIB, 23);
        for dropped in [false, true] {
            let mut writer = store.create(&owner()).await.unwrap();
            write_chunks(&mut *writer, 0, &data, 256 * KIB).await;
            assert!(writer.size() == data.len() as u64);
            if dropped {
                drop(writer);
            } else {
                writer.abort().await;
            }
        }
        let stats = store.stats();
        assert_eq!(stats.multipart_uploads, 2, "{stats:?}");
        assert!(stats.parts >= 4, "{stats:?}");
        // The dropped writer aborts from a task of its own.
        tokio::time::timeout(Duration::from_secs(20), store.settled())
            .await
            .expect("the dropped writer's abort did not finish");
        assert_eq!(store.stats().aborted_uploads, 2, "{:?}", store.stats());
        let report = store.sweep(&HashSet::new()).await.unwrap();
        assert_eq!((report.staging_removed, report.orphans_removed), (0, 0));
    }

    #[tokio::test]
    async fn a_rewrite_of_sent_data_is_refused_and_changes_nothing() {
        let Some(store) = store().await else {
            return;
        };
        let data = pattern(PART_SIZE + 2 * MIB, 24);
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &data[..PART_SIZE + MIB], 64 * KIB).await;
        // The first part has gone; its bytes cannot change any more.
        let err = writer.write_at(10, b"late").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(writer.size(), (PART_SIZE + MIB) as u64);
        write_chunks(
            &mut *writer,
            PART_SIZE + MIB,
            &data[PART_SIZE + MIB..],
            64 * KIB,
        )
        .await;
        let stored = writer.commit().await.unwrap();
        suite::check_stored(&stored, &data);
        finish(&store, ()).await;
    }

    #[tokio::test]
    async fn wrong_credentials_fail_open_without_the_secret() {
        let Some(mut options) = options() else {
            return;
        };
        let secret = format!("wrong-{}", uuid::Uuid::new_v4().simple());
        options.secret_access_key = Some(secret.clone());
        let err = S3BlobStore::open(options.clone()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        assert!(!err.to_string().contains(&secret), "{err}");
        assert!(!format!("{err:?}").contains(&secret));
        assert!(!format!("{options:?}").contains(&secret));
        // A store that opened shows its bucket, never its secret.
        let Some(good) = self::options() else {
            return;
        };
        let real = good.secret_access_key.clone();
        let store = S3BlobStore::open(good).await.unwrap();
        let debug = format!("{store:?}");
        assert!(debug.contains("t-"), "{debug}");
        if let Some(real) = real {
            assert!(!debug.contains(&real), "{debug}");
        }
    }

    #[tokio::test]
    async fn a_missing_bucket_or_endpoint_fails_open() {
        let Some(options) = options() else {
            return;
        };
        let missing = S3Options {
            url: format!("s3://mailroom-missing-{}", uuid::Uuid::new_v4().simple()),
            ..options.clone()
        };
        let err = S3BlobStore::open(missing).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("mailroom-missing-"), "{err}");
        if options.endpoint.is_some() {
            // Nothing listens on port 9 of loopback (discard, never run here).
            let nowhere = S3Options {
                endpoint: Some("http://127.0.0.1:9".into()),
                allow_http: true,
                ..options
            };
            let err = S3BlobStore::open(nowhere).await.unwrap_err();
            assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
        }
    }
}

mod suite {
    use super::*;

    pub async fn round_trip(store: &dyn BlobStore) {
        let data = b"hello, mailroom: nothing acknowledged is ever lost".to_vec();
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, &data[..10]).await.unwrap();
        writer.write_at(10, &data[10..]).await.unwrap();
        assert_eq!(writer.size(), data.len() as u64);
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, &data);
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(reader.size(), data.len() as u64);
        assert_eq!(read_all(&*reader, 7).await, data);
        assert_eq!(reader.read_at(7, 8).await.unwrap(), &data[7..15]);
    }

    pub async fn empty_blob(store: &dyn BlobStore) {
        let writer = store.create(&owner()).await.unwrap();
        assert_eq!(writer.size(), 0);
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, b"");
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(reader.size(), 0);
        assert!(reader.read_at(0, 100).await.unwrap().is_empty());
    }

    pub async fn streams_multi_mib_in_small_chunks(store: &dyn BlobStore) {
        let data = pattern(3 * MIB + 12_345, 1);
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &data, 32 * KIB).await;
        assert_eq!(writer.size(), data.len() as u64);
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, &data);
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(read_all(&*reader, 64 * KIB).await, data);
    }

    pub async fn out_of_order_writes(store: &dyn BlobStore) {
        let data = pattern(5 * MIB / 2 + 7, 2);
        let half = data.len() / 2;
        let mut writer = store.create(&owner()).await.unwrap();
        // The tail first, then the head, each in small chunks.
        write_chunks(&mut *writer, half, &data[half..], 32 * KIB).await;
        assert_eq!(writer.size(), data.len() as u64);
        write_chunks(&mut *writer, 0, &data[..half], 32 * KIB).await;
        assert_eq!(writer.size(), data.len() as u64);
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, &data);
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(read_all(&*reader, MIB).await, data);
    }

    pub async fn overlapping_rewrites(store: &dyn BlobStore) {
        let mut data = pattern(3 * MIB / 2, 3);
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &data, 32 * KIB).await;
        // A retransmitted chunk with the same bytes, then a rewrite with new ones.
        writer
            .write_at(64 * KIB as u64, &data[64 * KIB..96 * KIB])
            .await
            .unwrap();
        let patch = pattern(200_000, 4);
        data[100_000..300_000].copy_from_slice(&patch);
        writer.write_at(100_000, &patch).await.unwrap();
        // And one at the very start, after the stream has moved on.
        let head = pattern(10, 5);
        data[..10].copy_from_slice(&head);
        writer.write_at(0, &head).await.unwrap();
        assert_eq!(writer.size(), data.len() as u64);
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, &data);
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(read_all(&*reader, 100 * KIB).await, data);
    }

    pub async fn sparse_write(store: &dyn BlobStore) {
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(10, b"tail").await.unwrap();
        assert_eq!(writer.size(), 14);
        let stored = writer.commit().await.unwrap();
        let mut expect = vec![0u8; 10];
        expect.extend_from_slice(b"tail");
        check_stored(&stored, &expect);
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(read_all(&*reader, 5).await, expect);
    }

    pub async fn refused_write_changes_nothing(store: &dyn BlobStore) {
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, b"kept").await.unwrap();
        // An offset whose end overflows u64 is refused before anything happens.
        let err = writer.write_at(u64::MAX - 1, b"xyz").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(writer.size(), 4);
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, b"kept");
    }

    pub async fn abort_leaves_nothing(store: &dyn BlobStore) {
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &pattern(MIB + 1, 6), 32 * KIB).await;
        writer.abort().await;
        let report = store.sweep(&HashSet::new()).await.unwrap();
        assert_eq!(report.staging_removed, 0, "abort removed the staging file");
        assert_eq!(
            report.orphans_removed, 0,
            "an aborted blob was never committed"
        );
    }

    pub async fn dropped_writer_commits_nothing(store: &dyn BlobStore) {
        let kept = commit_bytes(store, b"kept").await;
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, &pattern(MIB + 1, 7)).await.unwrap();
        drop(writer);
        // Whatever a backend leaves of it (a staging file, an unfinished upload), nothing of
        // it is a committed blob, and the sweep keeps the live one.
        let live = HashSet::from([kept.id.clone()]);
        let report = store.sweep(&live).await.unwrap();
        assert_eq!(report.orphans_removed, 0);
        assert_eq!(store.sweep(&live).await.unwrap().staging_removed, 0);
        let reader = store.open(&kept.id).await.unwrap();
        assert_eq!(read_all(&*reader, 64).await, b"kept");
    }

    pub async fn sweep_keeps_live_blobs_only(store: &dyn BlobStore) {
        let a = commit_bytes(store, b"alpha").await;
        let b = commit_bytes(store, b"bravo").await;
        let c = commit_bytes(store, b"charlie").await;
        let live = HashSet::from([a.id.clone(), c.id.clone()]);
        let report = store.sweep(&live).await.unwrap();
        assert_eq!(report.orphans_removed, 1);
        assert_eq!(report.staging_removed, 0);
        for (blob, content) in [(&a, &b"alpha"[..]), (&c, &b"charlie"[..])] {
            let reader = store.open(&blob.id).await.unwrap();
            assert_eq!(read_all(&*reader, 64).await, content);
        }
        let err = store.open(&b.id).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        // A second sweep finds nothing more to do.
        let report = store.sweep(&live).await.unwrap();
        assert_eq!((report.staging_removed, report.orphans_removed), (0, 0));
        // An empty live set removes everything.
        let report = store.sweep(&HashSet::new()).await.unwrap();
        assert_eq!(report.orphans_removed, 2);
    }

    pub async fn open_missing_is_not_found(store: &dyn BlobStore) {
        let err = store
            .open(&mailroom_core::BlobId::new())
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    pub async fn delete_is_idempotent(store: &dyn BlobStore) {
        let blob = commit_bytes(store, b"gone soon").await;
        let other = commit_bytes(store, b"stays").await;
        store.delete(&blob.id).await.unwrap();
        store.delete(&blob.id).await.unwrap();
        store.delete(&mailroom_core::BlobId::new()).await.unwrap();
        let err = store.open(&blob.id).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let reader = store.open(&other.id).await.unwrap();
        assert_eq!(read_all(&*reader, 64).await, b"stays");
    }

    pub async fn list_names_committed_blobs_and_set_aside_moves_one(store: &dyn BlobStore) {
        let one = commit_bytes(store, b"first blob").await;
        let two = commit_bytes(store, b"second, longer blob").await;
        let mut unfinished = store.create(&owner()).await.unwrap();
        unfinished.write_at(0, b"not yet committed").await.unwrap();
        let sizes = |listed: Vec<mailroom_core::ListedBlob>| {
            listed
                .into_iter()
                .map(|blob| (blob.id, blob.size))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let listed = sizes(store.list().await.unwrap());
        assert_eq!(listed.len(), 2, "{listed:?}");
        // Sizes as stored: the content, plus what a store adds per blob (a sealing store's
        // header and tag), the same for both.
        let (one_size, two_size) = (listed[&one.id], listed[&two.id]);
        assert!(one_size >= 10, "{listed:?}");
        assert_eq!(two_size - one_size, 19 - 10, "{listed:?}");

        let place = store.set_aside(&one.id).await.unwrap();
        assert!(place.contains(one.id.as_str()), "{place}");
        let err = store.open(&one.id).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let listed = sizes(store.list().await.unwrap());
        assert_eq!(listed.keys().collect::<Vec<_>>(), [&two.id]);
        // Twice, or a blob that never was: NotFound, and nothing else moves.
        for id in [one.id.clone(), mailroom_core::BlobId::new()] {
            let err = store.set_aside(&id).await.err().unwrap();
            assert_eq!(err.kind(), ErrorKind::NotFound);
        }
        let reader = store.open(&two.id).await.unwrap();
        assert_eq!(read_all(&*reader, 64).await, b"second, longer blob");
        unfinished.abort().await;
    }

    pub async fn reads_past_end_are_empty(store: &dyn BlobStore) {
        let blob = commit_bytes(store, b"0123456789").await;
        let reader = store.open(&blob.id).await.unwrap();
        assert_eq!(reader.read_at(7, 100).await.unwrap(), b"789");
        assert!(reader.read_at(10, 100).await.unwrap().is_empty());
        assert!(reader.read_at(11, 100).await.unwrap().is_empty());
        assert!(reader.read_at(u64::MAX, 100).await.unwrap().is_empty());
        assert!(reader.read_at(0, 0).await.unwrap().is_empty());
        // Reads framed for a reply: the room first (zeros), then the same bytes.
        assert_eq!(
            reader.read_at_after(7, 100, 13).await.unwrap(),
            [&[0_u8; 13][..], b"789"].concat()
        );
        assert_eq!(
            reader.read_at_after(2, 3, 4).await.unwrap(),
            [&[0_u8; 4][..], b"234"].concat()
        );
        assert_eq!(reader.read_at_after(10, 100, 13).await.unwrap(), [0_u8; 13]);
        assert_eq!(
            reader.read_at_after(u64::MAX, 100, 5).await.unwrap(),
            [0_u8; 5]
        );
    }

    pub async fn large_reads_return_a_prefix(store: &dyn BlobStore) {
        let data = pattern(5 * MIB, 8);
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &data, MIB).await;
        let blob = writer.commit().await.unwrap();
        let reader = store.open(&blob.id).await.unwrap();
        // A backend may return less than asked, never more, and never a wrong byte.
        let got = reader.read_at(0, usize::MAX).await.unwrap();
        assert!(!got.is_empty() && got.len() <= data.len());
        assert!(got == data[..got.len()]);
    }

    pub async fn concurrent_writers_are_independent(store: &dyn BlobStore) {
        let one = pattern(MIB + 3, 9);
        let two = pattern(MIB / 2 + 5, 10);
        let mut first = store.create(&owner()).await.unwrap();
        let mut second = store.create(&owner()).await.unwrap();
        for offset in (0..one.len().max(two.len())).step_by(32 * KIB) {
            for (writer, data) in [(&mut first, &one), (&mut second, &two)] {
                if offset < data.len() {
                    let end = (offset + 32 * KIB).min(data.len());
                    writer
                        .write_at(offset as u64, &data[offset..end])
                        .await
                        .unwrap();
                }
            }
        }
        let (first, second) = tokio::join!(first.commit(), second.commit());
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_ne!(first.id, second.id);
        check_stored(&first, &one);
        check_stored(&second, &two);
    }

    pub async fn concurrent_reads_share_a_reader(store: &dyn BlobStore) {
        let data = pattern(2 * MIB, 11);
        let mut writer = store.create(&owner()).await.unwrap();
        write_chunks(&mut *writer, 0, &data, MIB).await;
        let blob = writer.commit().await.unwrap();
        let reader = store.open(&blob.id).await.unwrap();
        let (head, tail) = tokio::join!(
            reader.read_at(0, 1000),
            reader.read_at((2 * MIB - 1000) as u64, 1000)
        );
        assert_eq!(head.unwrap(), &data[..1000]);
        assert_eq!(tail.unwrap(), &data[2 * MIB - 1000..]);
    }

    pub const KIB: usize = 1024;
    pub const MIB: usize = 1024 * KIB;

    /// Deterministic bytes that do not repeat with any short period (xorshift).
    pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect()
    }

    pub fn check_stored(stored: &StoredBlob, content: &[u8]) {
        assert_eq!(stored.size, content.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(content)));
        assert_eq!(
            mailroom_core::BlobId::parse(stored.id.as_str()).unwrap(),
            stored.id
        );
    }

    pub async fn commit_bytes(store: &dyn BlobStore, content: &[u8]) -> StoredBlob {
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, content).await.unwrap();
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, content);
        stored
    }

    pub async fn write_chunks(writer: &mut dyn BlobWriter, base: usize, data: &[u8], chunk: usize) {
        for (index, piece) in data.chunks(chunk).enumerate() {
            let offset = (base + index * chunk) as u64;
            writer.write_at(offset, piece).await.unwrap();
        }
    }

    pub async fn read_all(reader: &dyn BlobReader, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let piece = reader.read_at(out.len() as u64, chunk).await.unwrap();
            if piece.is_empty() {
                break;
            }
            assert!(piece.len() <= chunk);
            out.extend_from_slice(&piece);
        }
        assert_eq!(out.len() as u64, reader.size());
        out
    }
}
