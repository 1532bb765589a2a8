//! `mailroom backup`, `restore` and `fsck` on the real binary: a backup taken while paramiko
//! uploads into a serving hub restores byte for byte, with its chain verified, and serves the
//! files again to OpenSSH's sftp; an incremental backup links what its base holds. fsck finds
//! a flipped byte, a deleted blob, an orphan and an edited event; its repair sets blobs aside
//! and marks deliveries failed, each with an event, and deletes nothing. Each refusal (a
//! non-empty target, a damaged backup, a backup into a non-empty folder) leaves everything as
//! it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mailroom_test_support::{files_under, paramiko_python, sha256_file, text, write_random};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod common;
use common::BIN;
use common::site::Site;

/// Runs `mailroom ARGS…` on `data` to its end.
async fn mailroom(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("MAILROOM_DATA", data)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

/// Every file under `root` with its SHA-256, by path relative to `root`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    files_under(root)
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            (relative, sha256_file(&path))
        })
        .collect()
}

/// A site with alice and bob, a route from alice to bob, and `files` (name, size) uploaded
/// by alice to bob through OpenSSH's sftp; returns the site, alice's and bob's keys and the
/// files' SHA-256 by name. The hub is stopped again.
async fn site_with_files(
    files: &[(&str, usize)],
) -> (Site, PathBuf, PathBuf, BTreeMap<String, String>) {
    let site = Site::new();
    site.admin(&["init"]).await;
    let alice = site.client("alice").await;
    let bob = site.client("bob").await;
    site.admin(&["route", "allow", "alice", "bob"]).await;
    let mut sums = BTreeMap::new();
    let mut batch = String::new();
    for (seed, (name, size)) in files.iter().enumerate() {
        let path = site.path(name);
        sums.insert(
            (*name).to_owned(),
            write_random(&path, *size, seed as u64 + 1),
        );
        batch.push_str(&format!("put {} /outbox/bob/{name}\n", path.display()));
    }
    let (mut server, port) = site.serve(&site.path("log-setup")).await;
    let out = site.sftp(port, "alice", &alice, &batch).await;
    assert!(out.status.success(), "{}", text(&out));
    server.start_kill().unwrap();
    let _ = server.wait().await;
    (site, alice, bob, sums)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_during_uploads_restores_byte_identical_with_its_chain() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let (site, _alice_key, bob_key, mut sums) =
        site_with_files(&[("first.bin", 2_000_000), ("small.txt", 3_000)]).await;
    let (mut server, port) = site.serve(&site.path("log")).await;

    // Twelve more uploads through paramiko; the backup runs after the fourth is
    // acknowledged, while the others go on.
    let mut files = Vec::new();
    for i in 0..12 {
        let name = format!("during-{i:02}.bin");
        let path = site.path(&name);
        sums.insert(
            name,
            write_random(&path, 700_000 + i * 10_000, 100 + i as u64),
        );
        files.push(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mailroom-test-support/clients/paramiko_client.py");
    let alice_key = site.path("alice_key");
    let mut driver = Command::new(&python)
        .arg(script)
        .args(["put-many", "127.0.0.1", &port.to_string(), "alice", "--key"])
        .arg(&alice_key)
        .arg("/outbox/bob")
        .args(&files)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut acknowledged = Vec::new();
    let mut backup = None;
    let backup_dir = site.path("backup-1");
    tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let Some(name) = value["done"].as_str() {
                acknowledged.push(name.to_owned());
                if acknowledged.len() == 4 {
                    let out =
                        mailroom(&site.data(), &["backup", backup_dir.to_str().unwrap()]).await;
                    assert!(out.status.success(), "backup: {}", text(&out));
                    backup = Some((
                        acknowledged.clone(),
                        String::from_utf8_lossy(&out.stdout).into_owned(),
                    ));
                }
            }
        }
    })
    .await
    .expect("the upload driver hung");
    assert!(driver.wait().await.unwrap().success());
    let (before_backup, said) = backup.expect("the backup never ran");
    assert!(said.contains("backed up into"), "{said}");

    // A second backup, incremental against the first: what the first holds is linked.
    let backup_2 = site.path("backup-2");
    let out = mailroom(
        &site.data(),
        &[
            "--json",
            "backup",
            backup_2.to_str().unwrap(),
            "--base",
            backup_dir.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["from_base"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["blobs"].as_u64().unwrap(), 14 - 1, "{report}"); // small.txt is inline
    server.start_kill().unwrap();
    let _ = server.wait().await;
    let head = String::from_utf8(mailroom(&site.data(), &["audit", "head"]).await.stdout).unwrap();

    // Restore the first backup into a new folder: fsck is clean, the chain verifies, and
    // bob downloads through sftp every file acknowledged before it, byte for byte.
    let restored = site.path("restored");
    let out = mailroom(&restored, &["restore", backup_dir.to_str().unwrap()]).await;
    assert!(out.status.success(), "restore: {}", text(&out));
    // A backup holds sealed blobs and wrapped keys, never the master key: the restored hub
    // opens with the key kept apart, here put beside the new folder.
    std::fs::copy(
        site.path("data.master-key"),
        site.path("restored.master-key"),
    )
    .unwrap();
    let fsck = mailroom(&restored, &["fsck"]).await;
    assert!(fsck.status.success(), "fsck: {}", text(&fsck));
    assert!(String::from_utf8_lossy(&fsck.stdout).contains("no problems found"));
    let verify = mailroom(&restored, &["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify));
    // The blob files came back byte-identical to the hub's.
    let hub_blobs = tree(&site.data().join("blobs/objects"));
    for (path, sum) in tree(&restored.join("blobs/objects")) {
        assert_eq!(hub_blobs.get(&path), Some(&sum), "{path}");
    }

    let restored_site = Site {
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::rename(&restored, restored_site.data()).unwrap();
    std::fs::copy(
        site.path("data.master-key"),
        restored_site.path("data.master-key"),
    )
    .unwrap();
    let (mut server, port) = restored_site.serve(&site.path("log-restored")).await;
    let down = site.path("down");
    std::fs::create_dir(&down).unwrap();
    let out = site
        .sftp(
            port,
            "bob",
            &bob_key,
            &format!("lcd {}\nget -r /inbox/alice/ .\n", down.display()),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    server.start_kill().unwrap();
    let _ = server.wait().await;
    let got = tree(&down);
    let got: BTreeMap<String, String> = got
        .into_iter()
        .map(|(path, sum)| {
            (
                Path::new(&path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                sum,
            )
        })
        .collect();
    for name in ["first.bin", "small.txt"]
        .iter()
        .map(|n| (*n).to_owned())
        .chain(before_backup)
    {
        let name = Path::new(&name)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(got.get(&name), sums.get(&name), "{name} after the restore");
    }
    for (name, sum) in &got {
        assert_eq!(
            sums.get(name),
            Some(sum),
            "{name} is not a file that was sent"
        );
    }
    assert!(!head.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_and_backup_refuse_what_they_must_and_change_nothing() {
    let (site, _, _, _) = site_with_files(&[("one.bin", 900_000), ("two.bin", 800_000)]).await;
    let backup = site.path("backup");
    let out = mailroom(&site.data(), &["backup", backup.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out));

    // Into a folder that holds something: refused, the folder as it was.
    let occupied = site.path("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    let out = mailroom(&occupied, &["restore", backup.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(tree(&occupied).keys().collect::<Vec<_>>(), ["keep.txt"]);
    let out = mailroom(&site.data(), &["backup", occupied.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(tree(&occupied).keys().collect::<Vec<_>>(), ["keep.txt"]);

    // A flipped byte in one of the backup's blobs: the restore names it, and leaves no folder.
    let blob = files_under(&backup.join("blobs/objects"))
        .into_iter()
        .next()
        .unwrap();
    // Break the link first so the hub's own file stays whole.
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::remove_file(&blob).unwrap();
    let mut damaged = bytes.clone();
    damaged[1234] ^= 0x40;
    std::fs::write(&blob, &damaged).unwrap();
    let target = site.path("restored");
    let out = mailroom(&target, &["restore", backup.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let id = blob.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        text(&out).contains(&id) && text(&out).contains("damaged"),
        "{}",
        text(&out)
    );
    assert!(
        !target.exists(),
        "a failed restore left {}",
        target.display()
    );

    // A backup without its manifest is no backup.
    std::fs::remove_file(backup.join("manifest.json")).unwrap();
    let out = mailroom(&target, &["restore", backup.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a complete mailroom backup"),
        "{}",
        text(&out)
    );
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsck_finds_damage_and_its_repair_sets_aside_and_fails_without_deleting() {
    let (site, _, _, _) = site_with_files(&[
        ("flipped.bin", 700_000),
        ("deleted.bin", 600_000),
        ("fine.bin", 500_000),
        ("note.txt", 1_000),
    ])
    .await;
    let clean = mailroom(&site.data(), &["fsck"]).await;
    assert!(clean.status.success(), "{}", text(&clean));
    assert!(String::from_utf8_lossy(&clean.stdout).contains("no problems found"));

    // Which blob is which file: by size, as stored sealed (the hub encrypts at rest: a
    // 56-byte header and a 16-byte tag per 64 KiB chunk).
    let objects = site.data().join("blobs/objects");
    let by_size = |size: u64| {
        let sealed = 56 + size + 16 * size.div_ceil(64 * 1024);
        files_under(&objects)
            .into_iter()
            .find(|path| std::fs::metadata(path).unwrap().len() == sealed)
            .unwrap()
    };
    let flipped = by_size(700_000);
    let deleted = by_size(600_000);
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[99] ^= 1;
    std::fs::write(&flipped, &bytes).unwrap();
    std::fs::remove_file(&deleted).unwrap();
    // An orphan: a blob file no delivery names, written an hour ago.
    let orphan_id = "0123456789abcdef0123456789abcdef";
    let orphan = objects.join("01").join(orphan_id);
    std::fs::write(&orphan, b"left behind").unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&orphan)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();

    let before = tree(&site.data().join("blobs"));
    let found = mailroom(&site.data(), &["--json", "fsck"]).await;
    assert_eq!(found.status.code(), Some(1), "{}", text(&found));
    let report: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    let kinds: BTreeMap<String, String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["blob"].as_str().unwrap().to_owned(),
                p["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let id = |path: &Path| path.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        kinds.get(&id(&flipped)).map(String::as_str),
        Some("damaged"),
        "{report}"
    );
    assert_eq!(
        kinds.get(&id(&deleted)).map(String::as_str),
        Some("missing"),
        "{report}"
    );
    assert_eq!(
        kinds.get(orphan_id).map(String::as_str),
        Some("orphan"),
        "{report}"
    );
    assert_eq!(kinds.len(), 3, "{report}");
    assert_eq!(report["inline_checked"], 1, "{report}");
    assert!(report["chain_broken"].is_null(), "{report}");
    // Without --repair nothing changed.
    assert_eq!(tree(&site.data().join("blobs")), before);

    let repaired = mailroom(&site.data(), &["fsck", "--repair"]).await;
    assert!(repaired.status.success(), "{}", text(&repaired));
    let said = String::from_utf8_lossy(&repaired.stdout);
    assert!(said.contains("1 deliveries marked failed"), "{said}");
    // Nothing deleted: the damaged blob and the orphan are set aside, byte for byte.
    let aside = site.data().join("blobs/set-aside");
    assert_eq!(
        std::fs::read(aside.join(orphan_id)).unwrap(),
        b"left behind"
    );
    assert_eq!(std::fs::read(aside.join(id(&flipped))).unwrap(), bytes);
    // Events say so, and the chain holds.
    let events =
        String::from_utf8(mailroom(&site.data(), &["audit", "list"]).await.stdout).unwrap();
    assert!(events.contains("set aside"), "{events}");
    assert_eq!(events.matches("marked failed").count(), 2, "{events}");
    let again = mailroom(&site.data(), &["fsck"]).await;
    assert!(again.status.success(), "{}", text(&again));

    // An edited event breaks the chain: reported, exit 1, and no repair pretends to fix it.
    let db = rusqlite::Connection::open(site.data().join("meta.db")).unwrap();
    db.execute(
        "UPDATE events SET detail = 'nothing happened' WHERE seq = 3",
        [],
    )
    .unwrap();
    drop(db);
    let broken = mailroom(&site.data(), &["--json", "fsck", "--repair"]).await;
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    let report: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert!(
        report["chain_broken"]
            .as_str()
            .unwrap()
            .starts_with("event 3"),
        "{report}"
    );
}
