//! End to end on the real binary, on the cluster engines: two `mailroom serve` nodes, each
//! with a data folder of its own, share one PostgreSQL database (`[meta] url`) and one S3
//! bucket prefix (`[blob] url`), as scripts/services starts them (PostgreSQL from Debian,
//! s3s-fs from crates.io). A file uploaded with OpenSSH sftp through node A is listed and
//! downloaded intact through node B at once; both nodes' events form one chain; neither node
//! takes the data folder's serve lock; and the operations listener answers the probes and
//! the metrics scrape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailroom_test_support::{sha256_file, write_random};

mod common;
use common::cluster::{Engines, Node, client, probe, sftp, stop};

#[tokio::test]
async fn a_file_sent_through_one_node_is_fetched_through_the_other() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let a = Node::init(root.path(), "node-a", &engines).await;
    let b = Node::init(root.path(), "node-b", &engines).await;
    // Neither folder holds an engine: no meta.db, no blobs/.
    for node in [&a, &b] {
        assert!(!node.data.join("meta.db").exists());
        assert!(!node.data.join("blobs").exists());
    }
    let alice = client(&a, &engines, root.path(), "alice").await;
    let bob = client(&b, &engines, root.path(), "bob").await;
    a.run(&["route", "allow", "alice", "bob"], &engines).await;

    let (mut node_a, a_at) = a.serve(&engines).await;
    let (mut node_b, b_at) = b.serve(&engines).await;
    // A second node on A's own folder starts too: the cluster engines take no lock.
    let (mut node_a2, _) = a.serve(&engines).await;

    // Large enough for several multipart parts, and a small one kept inline in PostgreSQL.
    let big = root.path().join("big.bin");
    let big_sha = write_random(&big, 20 * 1024 * 1024 + 123, 7);
    let small = root.path().join("small.txt");
    let small_sha = write_random(&small, 4096, 8);
    sftp(
        root.path(),
        &a_at["sftp"],
        "alice",
        &alice,
        &format!(
            "put {} /outbox/bob/big.bin\nput {} /outbox/bob/small.txt\n",
            big.display(),
            small.display()
        ),
    )
    .await;

    // Listed and fetched through node B at once: no cache, no replication delay.
    let listing = sftp(
        root.path(),
        &b_at["sftp"],
        "bob",
        &bob,
        "ls -l /inbox/alice\n",
    )
    .await;
    assert!(listing.contains("big.bin"), "{listing}");
    assert!(listing.contains("small.txt"), "{listing}");
    let fetched = root.path().join("fetched");
    std::fs::create_dir(&fetched).unwrap();
    sftp(
        root.path(),
        &b_at["sftp"],
        "bob",
        &bob,
        &format!(
            "get /inbox/alice/big.bin {}\nget /inbox/alice/small.txt {}\n",
            fetched.join("big.bin").display(),
            fetched.join("small.txt").display()
        ),
    )
    .await;
    assert_eq!(sha256_file(&fetched.join("big.bin")), big_sha);
    assert_eq!(sha256_file(&fetched.join("small.txt")), small_sha);

    // The probes: alive and ready on both nodes, and metrics that counted the transfers.
    for at in [&a_at, &b_at] {
        assert_eq!(
            probe(&at["ops"], "/healthz").await,
            (200, "ok\n".to_owned())
        );
        assert_eq!(
            probe(&at["ops"], "/readyz").await,
            (200, "ready\n".to_owned())
        );
    }
    let (status, metrics) = probe(&a_at["ops"], "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("mailroom_transfer_bytes_total{direction=\"upload\",protocol=\"sftp\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mailroom_store_seconds_bucket"),
        "{metrics}"
    );
    let (_, metrics_b) = probe(&b_at["ops"], "/metrics").await;
    assert!(
        metrics_b
            .contains("mailroom_transfer_bytes_total{direction=\"download\",protocol=\"sftp\"}"),
        "{metrics_b}"
    );

    for child in [&mut node_a, &mut node_b, &mut node_a2] {
        stop(child).await;
    }
    // Three processes wrote events; the trail is one chain.
    let verdict = b.run(&["audit", "verify"], &engines).await;
    assert!(verdict.starts_with("audit trail intact: "), "{verdict}");
}
