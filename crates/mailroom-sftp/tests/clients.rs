//! The SSH front end driven by paramiko and curl, plus abuse: hostile paths, wrong
//! credentials answered alike, and a dropped upload. (The 1 GiB round trip with OpenSSH is
//! `bench/run`'s: it uploads and downloads 1 GiB with `sftp` and compares the copy byte for
//! byte, outside the default test suite.)

use std::time::Duration;

use mailroom_core::parse_network;
use mailroom_core::{AuthConfig, DefenderConfig, EventKind, EventQuery, Outcome};
use mailroom_test_support::{
    TestClient, TestHub, eventually, have, paramiko, paramiko_python, sha256_file, text,
    write_random,
};
use serde_json::Value;

async fn setup() -> (TestHub, TestClient, TestClient) {
    let hub = TestHub::start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    (hub, alice, bob)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paramiko_password_and_key_logins_work_and_refusals_are_prompt_and_alike() {
    let Some(python) = paramiko_python() else {
        return;
    };
    // Loopback on the safe list: this test makes more failed logins than the defender lets
    // an address make (tests/aaa.rs covers the defender).
    let hub = TestHub::start_full(
        mailroom_sftp::Config::default(),
        AuthConfig {
            defender: DefenderConfig {
                safe: vec![parse_network("127.0.0.0/8").unwrap()],
                ..DefenderConfig::default()
            },
            ..AuthConfig::default()
        },
    )
    .await;
    let alice = hub.client("alice").await;
    let host = "127.0.0.1";
    let port = hub.addr.port().to_string();
    let key = alice.key.to_str().unwrap().to_owned();

    let ok = json(
        &paramiko(
            &python,
            &["login", host, &port, "alice", "--password", &alice.password],
        )
        .await,
    );
    assert_eq!(ok["ok"], true, "{ok}");
    let ok = json(&paramiko(&python, &["login", host, &port, "alice", "--key", &key]).await);
    assert_eq!(ok["ok"], true, "{ok}");

    // Wrong password for a real account and any password for a missing one: same words,
    // same time (both padded to the rejection delay), and prompt.
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..4 {
        let w = json(
            &paramiko(
                &python,
                &[
                    "login",
                    host,
                    &port,
                    "alice",
                    "--password",
                    "Wrong-pass-123456",
                ],
            )
            .await,
        );
        let u = json(
            &paramiko(
                &python,
                &[
                    "login",
                    host,
                    &port,
                    "nobody",
                    "--password",
                    "Wrong-pass-123456",
                ],
            )
            .await,
        );
        assert_eq!(w["ok"], false);
        assert_eq!(u["ok"], false);
        assert_eq!(w["error"], u["error"], "refusals must read alike");
        // A plain refusal, not the BadAuthenticationType a bare russh server provokes.
        assert!(
            w["error"]
                .as_str()
                .unwrap()
                .contains("Authentication failed"),
            "{w}"
        );
        wrong.push(w["seconds"].as_f64().unwrap());
        unknown.push(u["seconds"].as_f64().unwrap());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[1] + v[2]) / 2.0
    };
    let (w, u) = (median(&mut wrong), median(&mut unknown));
    assert!(w < 5.0 && u < 5.0, "refusals must be prompt: {w} {u}");
    // Both are padded to the same rejection delay; Argon2 runs in both cases.
    assert!(
        (w - u).abs() < 0.3,
        "refusal times differ: {w:.3}s vs {u:.3}s"
    );
    eprintln!("refusal medians: wrong password {w:.3}s, unknown user {u:.3}s");
    // A key the hub does not know is refused too.
    let stranger = hub.client("stranger").await;
    let other_key = stranger.key.to_str().unwrap().to_owned();
    let r = json(
        &paramiko(
            &python,
            &["login", host, &port, "alice", "--key", &other_key],
        )
        .await,
    );
    assert_eq!(r["ok"], false, "{r}");

    let events = hub
        .hub
        .events(&EventQuery {
            kind: Some(EventKind::Login),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.outcome == Outcome::Refused && e.detail.contains("wrong password"))
    );
    assert!(
        events
            .iter()
            .any(|e| e.outcome == Outcome::Refused && e.detail.contains("unknown account"))
    );
    assert!(
        events
            .iter()
            .any(|e| e.outcome == Outcome::Ok && e.detail == "publickey")
    );
    // The refused password itself is never recorded.
    assert!(events.iter().all(|e| !e.detail.contains("Wrong-pass")));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paramiko_transfers() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let (hub, alice, bob) = setup().await;
    let port = hub.addr.port().to_string();
    let local = hub.local_dir("paramiko");
    let file = local.join("p.bin");
    let sha = write_random(&file, 1_500_000, 11);
    let r = json(
        &paramiko(
            &python,
            &[
                "put",
                "127.0.0.1",
                &port,
                "alice",
                "--key",
                alice.key.to_str().unwrap(),
                file.to_str().unwrap(),
                "/outbox/bob/p.bin",
            ],
        )
        .await,
    );
    assert_eq!(r["ok"], true, "{r}");
    let out = local.join("back.bin");
    let r = json(
        &paramiko(
            &python,
            &[
                "get",
                "127.0.0.1",
                &port,
                "bob",
                "--key",
                bob.key.to_str().unwrap(),
                "/inbox/alice/p.bin",
                out.to_str().unwrap(),
            ],
        )
        .await,
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(sha256_file(&out), sha);
    hub.stop().await;
}

/// A folder is read when the client reads it, not when it opens it: a delivery that lands
/// between OPENDIR and READDIR is listed (a client polling its inbox sees what is there when
/// it asks). A file cannot be opened as a folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listing_shows_the_folder_as_it_is_when_read() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let (hub, alice, bob) = setup().await;
    let port = hub.addr.port().to_string();
    let r = json(
        &paramiko(
            &python,
            &[
                "fresh-listing",
                "127.0.0.1",
                &port,
                "bob",
                "--key",
                bob.key.to_str().unwrap(),
                "alice",
                alice.key.to_str().unwrap(),
                "/inbox/alice",
                "/outbox/bob/news.txt",
            ],
        )
        .await,
    );
    assert_eq!(r["names"], serde_json::json!(["news.txt"]), "{r}");
    let refused = r["file_opendir_error"].as_str().unwrap_or_default();
    assert!(refused.contains("not a folder"), "{r}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_paths_are_refused_and_change_nothing() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let (hub, alice, _bob) = setup().await;
    let before = hub.snapshot().await;
    let port = hub.addr.port().to_string();
    let r = json(
        &paramiko(
            &python,
            &[
                "hostile",
                "127.0.0.1",
                &port,
                "alice",
                "--key",
                alice.key.to_str().unwrap(),
            ],
        )
        .await,
    );
    let results = r["results"].as_array().unwrap();
    assert!(results.len() > 25, "{r}");
    for result in results {
        assert_eq!(result["ok"], false, "must be refused: {result}");
    }
    // The server still serves the same session after all of that.
    assert_eq!(r["alive"], serde_json::json!(["inbox", "outbox", "sent"]));
    assert_eq!(
        hub.snapshot().await,
        before,
        "a hostile request changed stored data"
    );
    // Nothing was written outside the data folder either.
    assert!(!std::path::Path::new("/etc/passwd~2").exists());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_sftp_upload_and_download() {
    if !have("curl") {
        return;
    }
    let (hub, alice, bob) = setup().await;
    let local = hub.local_dir("curl");
    let file = local.join("c.bin");
    let sha = write_random(&file, 400_000, 12);
    let port = hub.addr.port();
    let up = tokio::process::Command::new("curl")
        .args(["-sS", "--insecure", "-u"])
        .arg(format!("alice:{}", alice.password))
        .arg("-T")
        .arg(&file)
        .arg(format!("sftp://127.0.0.1:{port}/outbox/bob/c.bin"))
        .output();
    let up = mailroom_test_support::run_output(up).await;
    assert!(up.status.success(), "{}", text(&up));
    let out = local.join("c.back");
    let down = tokio::process::Command::new("curl")
        .args(["-sS", "--insecure", "-u"])
        .arg(format!("bob:{}", bob.password))
        .arg("-o")
        .arg(&out)
        .arg(format!("sftp://127.0.0.1:{port}/inbox/alice/c.bin"))
        .output();
    let down = mailroom_test_support::run_output(down).await;
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(sha256_file(&out), sha);
    // A listing through curl shows the folder.
    let list = tokio::process::Command::new("curl")
        .args(["-sS", "--insecure", "-u"])
        .arg(format!("bob:{}", bob.password))
        .arg(format!("sftp://127.0.0.1:{port}/inbox/alice/"))
        .output();
    let list = mailroom_test_support::run_output(list).await;
    assert!(text(&list).contains("c.bin"), "{}", text(&list));
    // Wrong password: refused.
    let bad = tokio::process::Command::new("curl")
        .args(["-sS", "--insecure", "-u", "alice:Not-the-password-1"])
        .arg(format!("sftp://127.0.0.1:{port}/inbox/"))
        .output();
    let bad = mailroom_test_support::run_output(bad).await;
    assert!(!bad.status.success());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_upload_is_never_delivered() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, _bob) = setup().await;
    let local = hub.local_dir("drop");
    let file = local.join("big.bin");
    write_random(&file, 200 * 1024 * 1024, 13);
    let put = format!("put {} /outbox/bob/big.bin\n", file.display());
    let mut child = hub.sftp_command(&alice, Some(&put)).spawn().unwrap();
    // Wait until bytes have reached the staging area, then cut the client off. This polls
    // another process's progress (no signal exists for "the client has sent some bytes"),
    // bounded by a deadline; nothing is assumed to have happened after a fixed delay.
    assert!(
        eventually(Duration::from_secs(120), async || hub.staged_bytes() > 0).await,
        "upload never started"
    );
    child.kill().await.unwrap();
    let _ = child.wait().await;

    // Draining the server waits for the session to end and clean up: then the upload must
    // be aborted and accounted, and nothing of it stored or visible.
    let mut hub = hub;
    hub.drain().await;
    let aborted = hub
        .hub
        .events(&EventQuery {
            kind: Some(EventKind::Upload),
            outcome: Some(Outcome::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    assert!(hub.deliveries().await.is_empty());
    assert!(
        hub.snapshot().await.blobs.is_empty(),
        "staging file left behind"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_running_uploads_finish_and_closes_idle_sessions() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, bob) = setup().await;
    let local = hub.local_dir("shutdown");
    let file = local.join("big.bin");
    let sha = write_random(&file, 300 * 1024 * 1024, 15);
    let put = format!("put {} /outbox/bob/big.bin\n", file.display());
    let uploader = tokio::spawn(hub.sftp_command(&alice, Some(&put)).output());
    // An idle interactive session: its stdin stays open and silent.
    let mut idle = hub
        .sftp_command(&bob, None)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the upload to be under way and for Bob's login to be recorded: polling other
    // processes' progress, bounded by a deadline.
    // Bytes in staging mean the OPEN was answered: the upload is a running transfer.
    let going = eventually(Duration::from_secs(120), async || {
        let bob_in = hub
            .hub
            .events(&EventQuery {
                actor: Some("bob".into()),
                kind: Some(EventKind::Login),
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .any(|e| e.outcome == Outcome::Ok);
        hub.staged_bytes() > 0 && bob_in
    })
    .await;
    assert!(going, "setup never got going");
    // Stop: returns only when every session has ended.
    let deliveries = hub.meta.clone();
    let stopped = tokio::time::timeout(Duration::from_secs(240), hub.stop()).await;
    assert!(stopped.is_ok(), "shutdown did not complete");
    let idle_status = tokio::time::timeout(Duration::from_secs(60), idle.wait()).await;
    assert!(idle_status.is_ok(), "idle session was not closed");
    // The upload ran to the end; the client may then see the session closed under it.
    let upload = uploader.await.unwrap().unwrap();
    assert!(
        !text(&upload).contains("Couldn't"),
        "running upload must finish: {}",
        text(&upload)
    );
    use mailroom_core::MetaStoreExt;
    let all = deliveries
        .read_with(|tx| tx.deliveries(&Default::default()))
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].sha256, sha);
}
