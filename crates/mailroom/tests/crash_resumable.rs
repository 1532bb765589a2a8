//! A finding of `bench/crash-soak` (docs/reliability.md, "Crash soak"), kept as a regression
//! test: a `kill -9` of the hub while an HTTPS resumable upload's `finish` runs, after its blob
//! was committed (staging renamed into `objects/`) and before the metadata unit that inserts
//! the deliveries and drops the upload's record, left a committed blob that no delivery
//! references while the record still names it. fsck reported it as an orphan, and the
//! client's finish after the restart failed with 409. Now fsck counts it as an unfinished
//! upload's, and the upload's next request takes it back to staging, so the finish succeeds.
//!
//! The kill lands in a window of microseconds, so the test makes the state it leaves
//! directly: a resumable upload fully PATCHed (its staging on disk), `kill -9`, then the
//! staging renamed to `objects/<aa>/<id>` as finish's blob commit does, dated 11 minutes back
//! (fsck's orphan age). After a restart fsck is clean, the finish succeeds with the file's
//! SHA-256, and fsck then checks the blob as a delivery's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use mailroom_test_support::{have, sha256_file, skip, text, write_random};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

mod common;
use common::BIN;
use common::site::Site;

const PASSWORD: &str = "Sunflower-over-9-rivers";

/// curl against the API with the site's CA; panics unless it exits 0. Its stdout.
async fn curl(ca: &Path, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn staged(site: &Site) -> Vec<PathBuf> {
    site.files_under("blobs/staging")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "part"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_inside_a_resumable_finish_leaves_no_orphan_and_the_upload_still_finishes() {
    if !have("curl") {
        skip("curl is missing");
        return;
    }
    let site = Site::new();
    // Without encryption at rest: the test stands the plain file in for what a commit wrote,
    // which a sealing store would have sealed (its own taking up of a commit never recorded
    // is mailroom-blob's conformance test `a_commit_never_recorded_is_taken_up_whole`).
    let init = Command::new(BIN)
        .arg("init")
        .env("MAILROOM_DATA", site.data())
        .env("MAILROOM_AT_REST_ENABLED", "false")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(init.status.success(), "{}", text(&init));
    for who in ["alice", "bob"] {
        let mut child = Command::new(BIN)
            .args(["account", "add", who, "--password-stdin"])
            .env("MAILROOM_DATA", site.data())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .await
            .unwrap();
        drop(stdin);
        assert!(child.wait().await.unwrap().success());
    }
    site.admin(&["route", "allow", "alice", "bob"]).await;
    let port = *mailroom_test_support::free_port_range(1).start();
    let https = format!("127.0.0.1:{port}");
    let api = format!("https://localhost:{port}/api/v1");
    let ca = site.data().join("tls/server-ca.crt");
    let (mut server, _) = site.serve_https_on(&site.path("log-1"), &https).await;

    // A resumable upload, all its bytes sent (large enough to be staged on disk), not finished.
    let file = site.path("report.bin");
    write_random(&file, 8 << 20, 16);
    let login = format!(r#"{{"username":"alice","password":"{PASSWORD}"}}"#);
    let token: serde_json::Value = serde_json::from_str(
        &curl(
            &ca,
            &[
                "-H",
                "Content-Type: application/json",
                "-d",
                &login,
                &format!("{api}/token"),
            ],
        )
        .await,
    )
    .unwrap();
    let auth = format!(
        "Authorization: Bearer {}",
        token["access_token"].as_str().unwrap()
    );
    let create = format!(
        r#"{{"recipients":["bob"],"name":"report.bin","size":{}}}"#,
        8 << 20
    );
    let created: serde_json::Value = serde_json::from_str(
        &curl(
            &ca,
            &[
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                &create,
                &format!("{api}/uploads"),
            ],
        )
        .await,
    )
    .unwrap();
    let upload = created["id"].as_str().unwrap().to_owned();
    curl(
        &ca,
        &[
            "-H",
            &auth,
            "-X",
            "PATCH",
            "-H",
            "Upload-Offset: 0",
            "-H",
            "Content-Type: application/offset+octet-stream",
            "-T",
            file.to_str().unwrap(),
            &format!("{api}/uploads/{upload}"),
        ],
    )
    .await;
    server.start_kill().unwrap();
    let _ = server.wait().await;

    // What finish's blob commit does before its metadata unit, where the soak's kill fell:
    // the staging renamed into objects/<aa>/<id>. Dated past fsck's 10 minutes.
    let staging = staged(&site);
    assert_eq!(staging.len(), 1, "expected one staging file: {staging:?}");
    let id = staging[0].file_stem().unwrap().to_str().unwrap().to_owned();
    let object = site.data().join("blobs/objects").join(&id[..2]).join(&id);
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    // A commit renames a staging that holds every byte; the kill may have cut this staging
    // short (the last run still in memory), so the whole file stands in for it.
    std::fs::remove_file(&staging[0]).unwrap();
    std::fs::write(&object, std::fs::read(&file).unwrap()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&object)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(11 * 60))
        .unwrap();

    // The restart sweeps; fsck, beside the serving hub, must find nothing.
    let (mut server, _) = site.serve_https_on(&site.path("log-2"), &https).await;
    let fsck = Command::new(BIN)
        .arg("fsck")
        .env("MAILROOM_DATA", site.data())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck after the restart: {} (the blob {} is {})",
        text(&fsck),
        id,
        if object.exists() {
            "still there"
        } else {
            "gone"
        }
    );

    // The upload's next request takes the blob back up: the finish succeeds with the file's
    // SHA-256, and the blob is a delivery's now, no longer an unfinished upload's.
    let finish = format!(r#"{{"sha256":"{}"}}"#, sha256_file(&file));
    curl(
        &ca,
        &[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            &finish,
            &format!("{api}/uploads/{upload}/finish"),
        ],
    )
    .await;
    server.start_kill().unwrap();
    let _ = server.wait().await;
    let out = Command::new(BIN)
        .args(["--json", "fsck"])
        .env("MAILROOM_DATA", site.data())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unfinished_uploads"], 0, "{report}");
    assert_eq!(report["blobs_checked"], 1, "{report}");
}
