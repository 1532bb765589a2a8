//! `mailroom migrate` end to end: an embedded install with files sent through OpenSSH sftp
//! moves to PostgreSQL and s3s-fs (as scripts/services starts them), then serves from the
//! cluster engines with every file intact, the same accounts' end-to-end keys and the same
//! audit chain. A damaged blob stops the move with nothing of it in the database and the
//! blob's copy gone; the next run resumes from the blobs already checked; a second move into
//! the now full target is refused and changes nothing. An API key moves with the rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::FileExt;

use mailroom_test_support::{files_under, sha256_file, text, write_random};

mod common;
use common::cluster::{Engines, Node, client, psql, sftp, stop};

#[tokio::test]
async fn an_embedded_install_moves_to_the_cluster_engines_with_every_blob_checked() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let site = Node::init_embedded(root.path(), "site", &engines).await;
    let alice = client(&site, &engines, root.path(), "alice").await;
    let bob = client(&site, &engines, root.path(), "bob").await;
    site.run(&["route", "allow", "alice", "bob"], &engines)
        .await;
    // An end-to-end key (a column of its own), read back from PostgreSQL after the move.
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let add = [
        "account",
        "e2e-key",
        "add",
        "alice",
        &recipient,
        "--comment",
        "laptop",
    ];
    site.run(&add, &engines).await;
    let list = ["--json", "account", "e2e-key", "list", "alice"];
    let e2e_keys = site.run(&list, &engines).await;
    assert!(e2e_keys.contains(&recipient), "{e2e_keys}");
    // An API key of alice, whose row moves too.
    site.run(
        &["account", "api-key", "add", "alice", "--label", "agent"],
        &engines,
    )
    .await;

    // Two files large enough to be blob files (one of them in two parts of the bucket's
    // multipart upload), and a small one kept inline in meta.db.
    let files = [
        ("one.bin", 9 * 1024 * 1024 + 17, 1),
        ("two.bin", 3 * 1024 * 1024 + 5, 2),
        ("note.txt", 2000, 3),
    ];
    let mut sums = Vec::new();
    let mut batch = String::new();
    for (name, size, seed) in files {
        let path = root.path().join(name);
        sums.push((name, write_random(&path, size, seed)));
        batch.push_str(&format!("put {} /outbox/bob/{name}\n", path.display()));
    }
    let (mut server, at) = site.serve(&engines).await;
    sftp(root.path(), &at["sftp"], "alice", &alice, &batch).await;
    stop(&mut server).await;
    let head_before = site.run(&["audit", "head"], &engines).await;

    // Damage the blob that sorts last (the move copies blobs in id order): the first is
    // copied and checked, the second stops the move.
    let mut blob_files: Vec<_> = files_under(&site.data.join("blobs/objects"));
    blob_files.sort_by_key(|path| path.file_name().unwrap().to_owned());
    assert_eq!(blob_files.len(), 2, "{blob_files:?}");
    let damaged = blob_files[1].clone();
    let damaged_id = damaged.file_name().unwrap().to_string_lossy().into_owned();
    let original = flip_byte(&damaged, 1000, None);

    let refused = migrate(&site, &engines).await;
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains(&damaged_id) && said.contains("does not match its metadata"),
        "{said}"
    );
    // Nothing of the install reached the database; the bad copy is not in the bucket.
    assert_eq!(psql(&engines, "SELECT count(*) FROM events"), "0");
    assert_eq!(psql(&engines, "SELECT count(*) FROM principals"), "0");
    assert!(std::fs::read_to_string(site.data.join("migrate-progress")).is_ok());

    // Repaired, the move resumes: the first blob is not copied again.
    flip_byte(&damaged, 1000, Some(original));
    let moved = site
        .run(
            &[
                "migrate",
                "--meta",
                &engines.meta_url,
                "--blob",
                &engines.blob_url,
            ],
            &engines,
        )
        .await;
    assert!(
        moved.contains("moved 1 blobs") && moved.contains("1 more copied by an earlier run"),
        "{moved}"
    );
    let seq_hash = head_before
        .lines()
        .find_map(|line| line.strip_prefix("checkpoint: "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        moved.contains(&format!("the audit trail ends at {seq_hash} on both sides")),
        "{moved}\n{head_before}"
    );
    assert!(!site.data.join("migrate-progress").exists());
    assert_eq!(
        psql(&engines, "SELECT account || ' ' || label FROM api_keys"),
        "alice agent"
    );

    // Again into the full target: refused, and nothing changes there.
    let events = psql(&engines, "SELECT count(*) FROM events");
    let again = migrate(&site, &engines).await;
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));
    assert_eq!(psql(&engines, "SELECT count(*) FROM events"), events);

    // The same folder, now on the cluster engines: bob gets every file intact, and the
    // trail continues the chain it had.
    let cluster = Node {
        data: site.data.clone(),
        cluster: true,
    };
    let (mut node, at) = cluster.serve(&engines).await;
    let fetched = root.path().join("fetched");
    std::fs::create_dir(&fetched).unwrap();
    let mut gets = String::new();
    for (name, _) in &sums {
        gets.push_str(&format!(
            "get /inbox/alice/{name} {}\n",
            fetched.join(name).display()
        ));
    }
    sftp(root.path(), &at["sftp"], "bob", &bob, &gets).await;
    for (name, sum) in &sums {
        assert_eq!(&sha256_file(&fetched.join(name)), sum, "{name}");
    }
    stop(&mut node).await;
    let verdict = cluster
        .run(&["audit", "verify", "--expect", &seq_hash], &engines)
        .await;
    assert!(verdict.starts_with("audit trail intact: "), "{verdict}");
    assert_eq!(cluster.run(&list, &engines).await, e2e_keys);
}

/// `mailroom migrate` of `site` to the test's engines, to its end.
async fn migrate(site: &Node, engines: &Engines) -> std::process::Output {
    site.command(
        &[
            "migrate",
            "--meta",
            &engines.meta_url,
            "--blob",
            &engines.blob_url,
        ],
        engines,
    )
    .output()
    .await
    .unwrap()
}

/// Flips (or, given the original, restores) the byte at `offset`; returns the original.
fn flip_byte(path: &std::path::Path, offset: u64, restore: Option<u8>) -> u8 {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0_u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    let original = byte[0];
    let new = restore.unwrap_or(original ^ 0xff);
    file.write_all_at(&[new], offset).unwrap();
    original
}
