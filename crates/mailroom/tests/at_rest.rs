//! Encryption at rest on the real binary. A new data folder gets a master key beside it (mode
//! 0600, never inside the folder); files uploaded with OpenSSH's sftp are stored sealed, so
//! no byte of their plaintext, nor a TOTP secret, is found anywhere in the data folder, while
//! sftp gets them back byte for byte and paramiko's range reads across chunk edges match. A
//! wrong or a missing master key stops the start with a message that says what to do, and
//! changes nothing. `keys rotate` rewraps the data keys: the old key no longer opens the hub,
//! the new one serves the old files, and the audit trail says so. fsck finds a flipped byte
//! in a sealed blob by its tag. `keys init` turns encryption on for a folder that had none:
//! files stored before stay readable and new ones are sealed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use mailroom_test_support::{
    files_under, paramiko, paramiko_python, python_with, sha256_file, text,
};
use tokio::process::Command;

mod common;
use common::BIN;
use common::site::Site;

/// What a file full of it is easy to find by: no sealed byte run repeats it.
const MARKER: &[u8] = b"MAILROOM-PLAINTEXT-MARKER-0123456789 ";

/// Runs `mailroom ARGS…` on `data` with `env` to its end.
async fn mailroom(data: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("MAILROOM_DATA", data)
        .env_remove("MAILROOM_MASTER_KEY")
        .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
        .env("MAILROOM_HTTPS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.unwrap()
}

/// What a refused command must leave as it was: every file under `root` with its SHA-256,
/// by relative path, but the lock and the database's files, and the database's content as
/// SQLite dumps it (opening a database may rewrite its pages and journal without changing a
/// row).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut tree: BTreeMap<String, String> = files_under(root)
        .into_iter()
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name != "serve.lock" && !name.starts_with("meta.db")
        })
        .map(|path| {
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            (relative, sha256_file(&path))
        })
        .collect();
    let python = python_with("sqlite3").expect("python3 with sqlite3");
    let dump = std::process::Command::new(python)
        .args([
            "-c",
            "import sqlite3, sys\nfor line in sqlite3.connect(sys.argv[1]).iterdump(): print(line)",
        ])
        .arg(root.join("meta.db"))
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", text(&dump));
    tree.insert(
        "meta.db (rows)".to_owned(),
        String::from_utf8(dump.stdout).unwrap(),
    );
    tree
}

/// Whether any file under `root` holds `needle`.
fn found_in(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|path| {
            std::fs::read(path)
                .unwrap()
                .windows(needle.len())
                .any(|window| window == needle)
        })
        .collect()
}

/// `len` bytes of the marker, repeated.
fn marked(len: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(len).collect()
}

/// A site with alice and bob and a route from alice to bob; alice uploads `files` with
/// OpenSSH's sftp, the hub is stopped again. Returns the site and bob's key.
async fn uploaded(site: &Site, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let alice = site.client("alice").await;
    let bob = site.client("bob").await;
    site.admin(&["route", "allow", "alice", "bob"]).await;
    let mut batch = String::new();
    for (name, content) in files {
        std::fs::write(site.path(name), content).unwrap();
        batch.push_str(&format!(
            "put {} /outbox/bob/{name}\n",
            site.path(name).display()
        ));
    }
    let (mut server, port) = site.serve(&site.path("log-upload")).await;
    let out = site.sftp(port, "alice", &alice, &batch).await;
    assert!(out.status.success(), "{}", text(&out));
    server.start_kill().unwrap();
    let _ = server.wait().await;
    bob
}

/// Bob downloads each of `names` with sftp and they match what was uploaded.
async fn downloads_match(site: &Site, bob: &Path, names: &[&str], log: &str) {
    let (mut server, port) = site.serve(&site.path(log)).await;
    let mut batch = String::new();
    for name in names {
        batch.push_str(&format!(
            "get /inbox/alice/{name} {}\n",
            site.path(&format!("back-{name}")).display()
        ));
    }
    let out = site.sftp(port, "bob", bob, &batch).await;
    assert!(out.status.success(), "{}", text(&out));
    for name in names {
        assert_eq!(
            sha256_file(&site.path(&format!("back-{name}"))),
            sha256_file(&site.path(name)),
            "{name} came back different"
        );
        std::fs::remove_file(site.path(&format!("back-{name}"))).unwrap();
    }
    server.start_kill().unwrap();
    let _ = server.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_hub_seals_files_and_totp_secrets_and_serves_every_byte_back() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let site = Site::new();
    let init = site.admin(&["init"]).await;
    let key_file = site.path("data.master-key");
    assert!(init.contains("master key"), "{init}");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    // 1 MiB + 100 bytes of marker (chunks, a short last one), a small inline one, an empty one.
    let big = marked(1024 * 1024 + 100);
    let bob = uploaded(
        &site,
        &[
            ("big.txt", big.clone()),
            ("small.txt", marked(300)),
            ("empty.txt", Vec::new()),
        ],
    )
    .await;
    // TOTP: the secret handed out once is not in the data folder.
    let enrolled: serde_json::Value = serde_json::from_str(
        &site
            .admin(&["--json", "account", "totp", "enroll", "bob"])
            .await,
    )
    .unwrap();
    let secret = enrolled["secret"].as_str().unwrap().to_owned();

    // Nothing of the plaintext, the TOTP secret or the master key is in the data folder; the
    // web UI's CSRF key is derived, not stored.
    let data = site.data();
    assert_eq!(found_in(&data, &MARKER[..24]), Vec::<PathBuf>::new());
    assert_eq!(found_in(&data, secret.as_bytes()), Vec::<PathBuf>::new());
    assert_eq!(
        found_in(&data, key_text.trim().as_bytes()),
        Vec::<PathBuf>::new()
    );
    assert!(!data.join("web_csrf_key").exists());
    // The sealed blobs are there, larger than their content by a header and a tag a chunk.
    let blobs = files_under(&data.join("blobs/objects"));
    assert!(
        blobs
            .iter()
            .any(|path| std::fs::read(path).unwrap().starts_with(b"MRSEAL01")),
        "{blobs:?}"
    );

    downloads_match(
        &site,
        &bob,
        &["big.txt", "small.txt", "empty.txt"],
        "log-get",
    )
    .await;

    // Range reads across chunk edges, as FTPS REST and HTTP Range make them.
    let (mut server, port) = site.serve(&site.path("log-ranges")).await;
    let ranges = [
        (0usize, 10usize),
        (65_530, 20),
        (65_536, 65_536),
        (131_000, 200_000),
        (1_048_570, 30),
        (1_048_600, 100),
    ];
    let mut args = vec![
        "ranges".to_owned(),
        "127.0.0.1".to_owned(),
        port.to_string(),
        "bob".to_owned(),
        "--key".to_owned(),
        bob.display().to_string(),
        "/inbox/alice/big.txt".to_owned(),
    ];
    args.extend(ranges.iter().map(|(at, len)| format!("{at}:{len}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let answer: serde_json::Value = serde_json::from_str(&paramiko(&python, &args).await).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let expected: Vec<String> = ranges
        .iter()
        .map(|(at, len)| {
            let end = (at + len).min(big.len());
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&big[*at..end]))
        })
        .collect();
    assert_eq!(answer["sha256"], serde_json::json!(expected));
    server.start_kill().unwrap();
    let _ = server.wait().await;

    let status = site.admin(&["status"]).await;
    assert!(status.contains("at rest:          on"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_or_missing_master_key_stops_the_start_and_changes_nothing() {
    let site = Site::new();
    site.admin(&["init"]).await;
    let bob = uploaded(&site, &[("a.txt", marked(200_000))]).await;
    let key_file = site.path("data.master-key");
    let right = std::fs::read_to_string(&key_file).unwrap();
    let before = tree(&site.data());

    let wrong = "ab".repeat(32);
    std::fs::write(&key_file, format!("{wrong}\n")).unwrap();
    let out = mailroom(&site.data(), &["serve"], &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not the one this hub's data keys are wrapped with"),
        "{err}"
    );
    assert!(
        !err.contains(&wrong) && !err.contains(right.trim()),
        "{err}"
    );
    assert_eq!(tree(&site.data()), before);

    std::fs::remove_file(&key_file).unwrap();
    let out = mailroom(&site.data(), &["serve"], &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no master key was found") && err.contains("MAILROOM_MASTER_KEY"),
        "{err}"
    );
    assert_eq!(tree(&site.data()), before);
    // Not even an admin command opens the hub without it.
    let out = mailroom(&site.data(), &["account", "list"], &[]).await;
    assert!(!out.status.success(), "{}", text(&out));

    // The wrong key in the environment is refused as well; a key others may read too.
    let out = mailroom(&site.data(), &["serve"], &[("MAILROOM_MASTER_KEY", &wrong)]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not the one"));
    std::fs::write(&key_file, &right).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = mailroom(&site.data(), &["serve"], &[]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out)
    );
    assert_eq!(tree(&site.data()), before);

    // The right key, from the environment, opens it.
    std::fs::remove_file(&key_file).unwrap();
    let out = mailroom(
        &site.data(),
        &["keys", "status"],
        &[("MAILROOM_MASTER_KEY", right.trim())],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(matches)"));
    std::fs::write(&key_file, &right).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    downloads_match(&site, &bob, &["a.txt"], "log-after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_rewraps_the_keys_and_only_the_new_master_key_opens_the_hub() {
    let site = Site::new();
    site.admin(&["init"]).await;
    let bob = uploaded(&site, &[("a.txt", marked(300_000))]).await;
    let key_file = site.path("data.master-key");
    let old = std::fs::read_to_string(&key_file).unwrap();
    let new_file = site.path("new.master-key");

    // A new key file that others may read is refused, and nothing changes.
    std::fs::write(&new_file, format!("{}\n", "cd".repeat(32))).unwrap();
    std::fs::set_permissions(&new_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = tree(&site.data());
    let out = mailroom(
        &site.data(),
        &[
            "keys",
            "rotate",
            "--new-key-file",
            new_file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    assert_eq!(tree(&site.data()), before);
    std::fs::remove_file(&new_file).unwrap();

    let out = site
        .admin(&[
            "keys",
            "rotate",
            "--generate",
            "--new-key-file",
            new_file.to_str().unwrap(),
        ])
        .await;
    assert!(out.contains("data keys rewrapped"), "{out}");
    let new = std::fs::read_to_string(&new_file).unwrap();
    assert_ne!(old.trim(), new.trim());

    // The old key no longer opens the hub; the new one does and serves the old file.
    let out = mailroom(&site.data(), &["serve"], &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not the one"));
    std::fs::copy(&new_file, &key_file).unwrap();
    downloads_match(&site, &bob, &["a.txt"], "log-rotated").await;
    let audit = site.admin(&["audit", "list"]).await;
    assert!(audit.contains("rotate the master key"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsck_finds_a_flipped_byte_in_a_sealed_blob_by_its_tag() {
    let site = Site::new();
    site.admin(&["init"]).await;
    uploaded(&site, &[("a.txt", marked(200_000))]).await;
    let clean = mailroom(&site.data(), &["fsck"], &[]).await;
    assert!(clean.status.success(), "{}", text(&clean));

    let blob = files_under(&site.data().join("blobs/objects"))
        .into_iter()
        .find(|path| std::fs::metadata(path).unwrap().len() > 100_000)
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100_000] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let found = mailroom(&site.data(), &["--json", "fsck"], &[]).await;
    assert!(!found.status.success(), "{}", text(&found));
    let report: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["kind"], "damaged", "{report}");
    assert!(
        problems[0]["detail"]
            .as_str()
            .unwrap()
            .contains("integrity check"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_init_turns_encryption_on_for_a_plain_folder_and_old_files_stay_readable() {
    let site = Site::new();
    let plain = [("MAILROOM_AT_REST_ENABLED", "false")];
    let out = mailroom(&site.data(), &["init"], &plain).await;
    assert!(out.status.success(), "{}", text(&out));
    let key_file = site.path("data.master-key");
    assert!(!key_file.exists());
    let bob = uploaded(&site, &[("old.txt", marked(150_000))]).await;
    assert!(!found_in(&site.data(), &MARKER[..24]).is_empty());
    let status = site.admin(&["status"]).await;
    assert!(status.contains("at rest:          off"), "{status}");

    let out = site.admin(&["keys", "init"]).await;
    assert!(out.contains("encryption at rest is on"), "{out}");
    assert!(key_file.exists());
    // A second init is refused and changes nothing.
    let before = tree(&site.data());
    let again = mailroom(&site.data(), &["keys", "init"], &[]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
    assert_eq!(tree(&site.data()), before);

    // The old file still reads; a new one is sealed.
    downloads_match(&site, &bob, &["old.txt"], "log-old").await;
    let alice = site.path("alice_key");
    let fresh = marked(100_000)
        .into_iter()
        .map(|b| b.to_ascii_lowercase())
        .collect::<Vec<u8>>();
    std::fs::write(site.path("new.txt"), &fresh).unwrap();
    let (mut server, port) = site.serve(&site.path("log-new")).await;
    let out = site
        .sftp(
            port,
            "alice",
            &alice,
            &format!(
                "put {} /outbox/bob/new.txt\n",
                site.path("new.txt").display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    server.start_kill().unwrap();
    let _ = server.wait().await;
    let lower: Vec<u8> = MARKER[..24].to_ascii_lowercase();
    assert_eq!(found_in(&site.data(), &lower), Vec::<PathBuf>::new());
    downloads_match(&site, &bob, &["old.txt", "new.txt"], "log-both").await;
}
