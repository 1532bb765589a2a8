//! `mailroom fsck` on the cluster engines (PostgreSQL and s3s-fs, as scripts/services starts
//! them): clean after uploads through OpenSSH sftp; an object overwritten behind the hub's
//! back is found damaged and one deleted is found missing (the bucket changed with curl's
//! own SigV4 signing, as any other S3 client would); the repair sets the damaged object aside
//! under `<prefix>/set-aside/` and marks the deliveries of both failed in PostgreSQL, and
//! fsck is clean again. Without `--repair` nothing changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailroom_test_support::{have, skip, text, write_random};
use sha2::Digest;

mod common;
use common::cluster::{Engines, Node, client, psql, sftp, stop};

/// curl on the bucket with SigV4: `method` on `key` (under the bucket), with `body` if any;
/// returns the status code and the body.
fn s3(engines: &Engines, method: &str, key: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let bucket = engines
        .blob_url
        .strip_prefix("s3://")
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let mut command = std::process::Command::new("curl");
    command
        .args(["-sS", "-o"])
        .arg(out_file.path())
        .args([
            "-w",
            "%{http_code}",
            "-X",
            method,
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
        ])
        .arg("--user")
        .arg(format!("{}:{}", engines.key, engines.secret))
        .arg(format!("{}/{bucket}/{key}", engines.endpoint));
    // s3s wants the payload's SHA-256 named, as the AWS SDKs do; curl signs the header.
    let payload = hex::encode(sha2::Sha256::digest(body.unwrap_or_default()));
    command
        .arg("-H")
        .arg(format!("x-amz-content-sha256: {payload}"));
    let body_file = tempfile::NamedTempFile::new().unwrap();
    if let Some(body) = body {
        std::fs::write(body_file.path(), body).unwrap();
        command
            .arg("--data-binary")
            .arg(format!("@{}", body_file.path().display()));
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "curl {method} {key}: {}", text(&out));
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (code, std::fs::read(out_file.path()).unwrap())
}

#[tokio::test]
async fn fsck_checks_the_cluster_engines_and_its_repair_sets_aside_and_fails() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    if !have("curl") {
        skip("curl is missing");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let node = Node::init(root.path(), "node", &engines).await;
    let alice = client(&node, &engines, root.path(), "alice").await;
    client(&node, &engines, root.path(), "bob").await;
    node.run(&["route", "allow", "alice", "bob"], &engines)
        .await;
    let (one, two) = (root.path().join("one.bin"), root.path().join("two.bin"));
    write_random(&one, 1_500_000, 1);
    write_random(&two, 1_200_000, 2);
    let (mut server, at) = node.serve(&engines).await;
    sftp(
        root.path(),
        &at["sftp"],
        "alice",
        &alice,
        &format!(
            "put {} /outbox/bob/one.bin\nput {} /outbox/bob/two.bin\n",
            one.display(),
            two.display()
        ),
    )
    .await;
    stop(&mut server).await;
    let clean = node.run(&["fsck"], &engines).await;
    assert!(clean.contains("checked 2 blobs"), "{clean}");
    assert!(clean.contains("no problems found"), "{clean}");

    let blob_of = |name: &str| {
        psql(
            &engines,
            &format!("SELECT blob_id FROM deliveries WHERE name = '{name}'"),
        )
    };
    let (damaged, deleted) = (blob_of("one.bin"), blob_of("two.bin"));
    let prefix = engines
        .blob_url
        .strip_prefix("s3://")
        .unwrap()
        .split_once('/')
        .unwrap()
        .1
        .to_owned();
    let key = |id: &str| format!("{prefix}/objects/{}/{id}", &id[..2]);
    let (code, _) = s3(&engines, "PUT", &key(&damaged), Some(b"not what was sent"));
    assert_eq!(code, 200);
    let (code, _) = s3(&engines, "DELETE", &key(&deleted), None);
    assert!(code == 204 || code == 200, "{code}");

    let found = node
        .command(&["--json", "fsck"], &engines)
        .output()
        .await
        .unwrap();
    assert_eq!(found.status.code(), Some(1), "{}", text(&found));
    let report: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{report}");
    let kind_of = |id: &str| {
        problems
            .iter()
            .find(|p| p["blob"] == id)
            .map(|p| p["kind"].as_str().unwrap().to_owned())
    };
    assert_eq!(kind_of(&damaged).as_deref(), Some("damaged"), "{report}");
    assert_eq!(kind_of(&deleted).as_deref(), Some("missing"), "{report}");
    // Nothing changed without --repair.
    assert_eq!(
        psql(
            &engines,
            "SELECT count(*) FROM deliveries WHERE state = 'failed'"
        ),
        "0"
    );
    assert_eq!(
        s3(&engines, "GET", &key(&damaged), None).1,
        b"not what was sent"
    );

    let repaired = node.run(&["fsck", "--repair"], &engines).await;
    assert!(repaired.contains("set aside"), "{repaired}");
    assert_eq!(
        psql(
            &engines,
            "SELECT count(*) FROM deliveries WHERE state = 'failed'"
        ),
        "2"
    );
    let aside = format!("{prefix}/set-aside/{damaged}");
    assert_eq!(
        s3(&engines, "GET", &aside, None),
        (200, b"not what was sent".to_vec())
    );
    assert_eq!(s3(&engines, "GET", &key(&damaged), None).0, 404);
    let again = node.run(&["fsck"], &engines).await;
    assert!(again.contains("no problems found"), "{again}");
    let events = node.run(&["audit", "list"], &engines).await;
    assert_eq!(events.matches("marked failed").count(), 2, "{events}");
}
