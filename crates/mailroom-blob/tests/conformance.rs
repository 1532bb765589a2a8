//! The [`BlobStore`] conformance suite: one set of checks every backend must pass.
//!
//! Each check in [`suite`] takes a fresh, empty store as `&dyn BlobStore` and uses nothing
//! but the trait, so a later backend (S3) runs the same suite by adding a module like
//! [`local`] with its own `fresh` function. File-system details (modes, layout, junk names)
//! are the local backend's own unit tests, not part of the contract.

// Tests may unwrap (CONTRIBUTING.md): a failed unwrap is a failed check.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use mailroom_blob::LocalBlobStore;
use mailroom_core::{BlobReader, BlobStore, BlobWriter, ErrorKind, StoredBlob};
use sha2::{Digest, Sha256};

/// Generates one `#[tokio::test]` per check, each on a fresh store from `$fresh`, which
/// returns the store and a guard to keep alive for the test's duration.
macro_rules! conformance {
    ($fresh:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $fresh().await;
                crate::suite::$check(&*store).await;
            }
        )*
    };
}

mod local {
    use super::*;

    /// Every blob as a file: the suite reads committed blobs back through `open`. The inline
    /// path (small blobs handed to the metadata store) is tested in the crate's unit tests.
    async fn fresh() -> (Box<dyn BlobStore>, tempfile::TempDir) {
        let temp = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(&temp.path().join("blobs"))
            .await
            .unwrap()
            .with_inline_limit(0);
        (Box::new(store), temp)
    }

    conformance!(fresh;
        round_trip,
        empty_blob,
        streams_multi_mib_in_small_chunks,
        out_of_order_writes,
        overlapping_rewrites,
        sparse_write,
        refused_write_changes_nothing,
        abort_leaves_nothing,
        dropped_writer_is_swept,
        sweep_keeps_live_blobs_only,
        open_missing_is_not_found,
        delete_is_idempotent,
        reads_past_end_are_empty,
        large_reads_return_a_prefix,
        concurrent_writers_are_independent,
        concurrent_reads_share_a_reader,
    );
}

mod suite {
    use super::*;

    pub async fn round_trip(store: &dyn BlobStore) {
        let data = b"hello, mailroom: nothing acknowledged is ever lost".to_vec();
        let mut writer = store.create().await.unwrap();
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
        let writer = store.create().await.unwrap();
        assert_eq!(writer.size(), 0);
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, b"");
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(reader.size(), 0);
        assert!(reader.read_at(0, 100).await.unwrap().is_empty());
    }

    pub async fn streams_multi_mib_in_small_chunks(store: &dyn BlobStore) {
        let data = pattern(3 * MIB + 12_345, 1);
        let mut writer = store.create().await.unwrap();
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
        let mut writer = store.create().await.unwrap();
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
        let mut writer = store.create().await.unwrap();
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
        let mut writer = store.create().await.unwrap();
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
        let mut writer = store.create().await.unwrap();
        writer.write_at(0, b"kept").await.unwrap();
        // An offset whose end overflows u64 is refused before anything happens.
        let err = writer.write_at(u64::MAX - 1, b"xyz").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(writer.size(), 4);
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, b"kept");
    }

    pub async fn abort_leaves_nothing(store: &dyn BlobStore) {
        let mut writer = store.create().await.unwrap();
        write_chunks(&mut *writer, 0, &pattern(MIB + 1, 6), 32 * KIB).await;
        writer.abort().await;
        let report = store.sweep(&HashSet::new()).await.unwrap();
        assert_eq!(report.staging_removed, 0, "abort removed the staging file");
        assert_eq!(
            report.orphans_removed, 0,
            "an aborted blob was never committed"
        );
    }

    pub async fn dropped_writer_is_swept(store: &dyn BlobStore) {
        let kept = commit_bytes(store, b"kept").await;
        let mut writer = store.create().await.unwrap();
        writer.write_at(0, &pattern(MIB + 1, 7)).await.unwrap();
        drop(writer);
        let live = HashSet::from([kept.id.clone()]);
        let report = store.sweep(&live).await.unwrap();
        assert_eq!(report.staging_removed, 1);
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
        let mut writer = store.create().await.unwrap();
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
        let mut first = store.create().await.unwrap();
        let mut second = store.create().await.unwrap();
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
        let mut writer = store.create().await.unwrap();
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

    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;

    /// Deterministic bytes that do not repeat with any short period (xorshift).
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

    fn check_stored(stored: &StoredBlob, content: &[u8]) {
        assert_eq!(stored.size, content.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(content)));
        assert_eq!(
            mailroom_core::BlobId::parse(stored.id.as_str()).unwrap(),
            stored.id
        );
    }

    async fn commit_bytes(store: &dyn BlobStore, content: &[u8]) -> StoredBlob {
        let mut writer = store.create().await.unwrap();
        writer.write_at(0, content).await.unwrap();
        let stored = writer.commit().await.unwrap();
        check_stored(&stored, content);
        stored
    }

    async fn write_chunks(writer: &mut dyn BlobWriter, base: usize, data: &[u8], chunk: usize) {
        for (index, piece) in data.chunks(chunk).enumerate() {
            let offset = (base + index * chunk) as u64;
            writer.write_at(offset, piece).await.unwrap();
        }
    }

    async fn read_all(reader: &dyn BlobReader, chunk: usize) -> Vec<u8> {
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
