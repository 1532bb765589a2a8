//! Per-account authorisation as the SSH protocols carry it, driven by real clients (OpenSSH
//! `sftp` and `scp -O`, paramiko) against a TestHub on port 0: a refused open, a write
//! refused mid-file for a quota, an oversize file refused from SCP's announced size, and admin
//! accounts that own no mailbox. The rules themselves (rights, name rules, sizes, quotas,
//! retention, group fan-out, races) are the Hub's and are tested on the in-memory test bed
//! (`crates/mailroom-core/tests/hub/`); here is what the protocols do with their answers.
//!
//! Every refusal is checked three ways: the client sees an error (with the hub's sentence
//! where the protocol carries one: paramiko and SCP show it, OpenSSH `sftp` shows only the
//! status code), a `refused` event names the reason, and `TestHub::snapshot` is unchanged.

use std::process::Output;

use mailroom_core::{EventKind, Outcome};
use mailroom_test_support::{
    Snapshot, TestClient, TestHub, have, paramiko, paramiko_python, text, write_random,
};
use serde_json::Value;

async fn setup() -> (TestHub, TestClient, TestClient) {
    let hub = TestHub::start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    (hub, alice, bob)
}

/// What a check needs to know about the moment before a refused attempt.
struct Before {
    snapshot: Snapshot,
    refused: usize,
    kind: EventKind,
}

async fn before(hub: &TestHub, kind: EventKind) -> Before {
    Before {
        snapshot: hub.snapshot().await,
        refused: hub.events(kind, Outcome::Refused).await.len(),
        kind,
    }
}

/// Asserts the attempt since `before` was refused: a new refused event of its kind whose
/// detail holds `reason`, and no delivery or blob changed.
async fn assert_refused(hub: &TestHub, before: &Before, reason: &str) {
    let events = hub.events(before.kind, Outcome::Refused).await;
    let new = &events[before.refused..];
    assert!(
        new.iter().any(|e| e.detail.contains(reason)),
        "no refused {} event saying {reason:?}: {new:?}",
        before.kind.as_str()
    );
    assert_eq!(
        hub.snapshot().await,
        before.snapshot,
        "a refusal changed something"
    );
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "the client succeeded: {}", text(out));
    text(out)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
}

/// Uploads with paramiko by key, each write waiting for its status (the driver's `write`),
/// so that a refused write raises with the hub's sentence; returns `{"ok", "error", …}`.
///
/// paramiko's own `put` pipelines writes and ignores errors on close, so with
/// `confirm=False` it reports success for a refused upload; its default `confirm=True` then
/// finds no such file. Nothing is delivered either way.
async fn paramiko_put(
    hub: &TestHub,
    python: &std::path::Path,
    client: &TestClient,
    local: &std::path::Path,
    remote: &str,
) -> Value {
    let key = client.key.to_string_lossy();
    let local = local.to_string_lossy();
    json(
        &paramiko(
            python,
            &[
                "write",
                "127.0.0.1",
                &hub.addr.port().to_string(),
                &client.name,
                "--key",
                &key,
                &local,
                remote,
            ],
        )
        .await,
    )
}

fn paramiko_refused(answer: &Value, message: &str) {
    assert_eq!(answer["ok"], false, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains(message), "paramiko said {error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_send_right_every_write_to_the_outbox_is_refused() {
    if !have("sftp") || !have("scp") {
        return;
    }
    let (hub, alice, _bob) = setup().await;
    let local = hub.local_dir("send");
    let file = local.join("report.txt");
    write_random(&file, 5_000, 1);
    hub.set_access("alice", |a| a.rights.send = false).await;

    let check = before(&hub, EventKind::Upload).await;
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", file.display()))
        .await;
    assert!(failed(&out).contains("Permission denied"), "{}", text(&out));
    assert_refused(&hub, &check, "alice may not send files").await;

    let check = before(&hub, EventKind::Upload).await;
    let out = hub
        .scp(&alice, true, file.to_str().unwrap(), ":/outbox/bob/")
        .await;
    assert!(
        failed(&out).contains("alice may not send files"),
        "{}",
        text(&out)
    );
    assert_refused(&hub, &check, "alice may not send files").await;

    if let Some(python) = paramiko_python() {
        let check = before(&hub, EventKind::Upload).await;
        let answer = paramiko_put(&hub, &python, &alice, &file, "/outbox/bob/report.txt").await;
        paramiko_refused(&answer, "alice may not send files");
        assert_refused(&hub, &check, "alice may not send files").await;
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_over_the_senders_limit_is_refused() {
    if !have("sftp") || !have("scp") {
        return;
    }
    let (hub, alice, _bob) = setup().await;
    let local = hub.local_dir("size");
    let big = local.join("big.bin");
    let small = local.join("small.bin");
    write_random(&big, 300_000, 9);
    write_random(&small, 100_000, 10);
    hub.set_access("alice", |a| a.limits.max_file_size = Some(200 << 10))
        .await;
    let reason = "the file is larger than alice's limit of 200.0 KiB per file";

    let check = before(&hub, EventKind::Upload).await;
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", big.display()))
        .await;
    failed(&out);
    assert_refused(&hub, &check, reason).await;
    assert_eq!(
        hub.staged_bytes(),
        0,
        "the refused upload left a staging file"
    );

    // SCP announces the size: refused before any data is sent.
    let check = before(&hub, EventKind::Upload).await;
    let out = hub
        .scp(&alice, true, big.to_str().unwrap(), ":/outbox/bob/")
        .await;
    assert!(failed(&out).contains(reason), "{}", text(&out));
    assert_refused(&hub, &check, reason).await;

    if let Some(python) = paramiko_python() {
        let check = before(&hub, EventKind::Upload).await;
        let answer = paramiko_put(&hub, &python, &alice, &big, "/outbox/bob/big.bin").await;
        paramiko_refused(&answer, reason);
        assert_refused(&hub, &check, reason).await;
    }

    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", small.display()))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hub.deliveries().await.len(), 1);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_mailbox_stops_an_upload_while_it_is_written() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, _bob) = setup().await;
    let local = hub.local_dir("quota");
    let two_mib = local.join("two.bin");
    let half = local.join("half.bin");
    let more = local.join("more.bin");
    write_random(&two_mib, 2 << 20, 11);
    write_random(&half, 600 << 10, 12);
    write_random(&more, 500 << 10, 13);
    hub.set_access("bob", |a| a.limits.quota_bytes = Some(1 << 20))
        .await;

    // 2 MiB into a 1 MiB quota: the write that crosses the limit fails.
    let check = before(&hub, EventKind::Upload).await;
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", two_mib.display()))
        .await;
    failed(&out);
    assert_refused(
        &hub,
        &check,
        "quota-exceeded: the file does not fit in bob's mailbox: 0 bytes of 1.0 MiB used",
    )
    .await;
    assert_eq!(
        hub.staged_bytes(),
        0,
        "the refused upload left a staging file"
    );
    assert!(hub.deliveries().await.is_empty());

    // The message reaches a client that shows it.
    if let Some(python) = paramiko_python() {
        let answer = paramiko_put(&hub, &python, &alice, &two_mib, "/outbox/bob/two.bin").await;
        paramiko_refused(&answer, "the file does not fit in bob's mailbox");
        // Refused mid-file: the writes under the limit were accepted, the one crossing it not.
        let written = answer["written"].as_u64().unwrap();
        assert!(written > 0 && written <= 1 << 20, "{answer}");
    }

    // A file that fits is delivered; then the quota counts it.
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", half.display()))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hub.deliveries().await.len(), 1);
    let check = before(&hub, EventKind::Upload).await;
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", more.display()))
        .await;
    failed(&out);
    assert_refused(&hub, &check, "600.0 KiB of 1.0 MiB used").await;
    assert_eq!(hub.staged_bytes(), 0);

    // A files quota refuses at open once the inbox holds that many.
    hub.set_access("bob", |a| {
        a.limits.quota_bytes = None;
        a.limits.quota_files = Some(1);
    })
    .await;
    let check = before(&hub, EventKind::Upload).await;
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", more.display()))
        .await;
    failed(&out);
    assert_refused(&hub, &check, "bob's mailbox is full: 1 of 1 files waiting").await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_accounts_cannot_log_in_to_read_mailboxes() {
    if !have("sftp") || !have("scp") {
        return;
    }
    let (hub, alice, _bob) = setup().await;
    let root = hub.admin_account("root").await;
    let local = hub.local_dir("admin");
    let file = local.join("payroll.csv");
    write_random(&file, 5_000, 15);
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", file.display()))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let snapshot = hub.snapshot().await;
    let refused_before = hub.events(EventKind::Login, Outcome::Refused).await.len();

    let out = hub.sftp(&root, "ls /inbox\n").await;
    assert!(failed(&out).contains("Permission denied"), "{}", text(&out));
    let out = hub
        .scp(
            &root,
            true,
            ":/inbox/alice/payroll.csv",
            local.to_str().unwrap(),
        )
        .await;
    failed(&out);
    if let Some(python) = paramiko_python() {
        let port = hub.addr.port().to_string();
        for credential in [
            ["--password", root.password.as_str()],
            ["--key", root.key.to_str().unwrap()],
        ] {
            let answer = json(
                &paramiko(
                    &python,
                    &[
                        "login",
                        "127.0.0.1",
                        &port,
                        "root",
                        credential[0],
                        credential[1],
                    ],
                )
                .await,
            );
            assert_eq!(answer["ok"], false, "{answer}");
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains("Authentication failed"), "{error}");
        }
    }

    let refused = hub.events(EventKind::Login, Outcome::Refused).await;
    let new = &refused[refused_before..];
    assert!(
        new.iter().all(|e| e.object == "root") && new.iter().any(|e| e.detail.contains("admin")),
        "{new:?}"
    );
    assert!(
        hub.events(EventKind::Login, Outcome::Ok)
            .await
            .iter()
            .all(|e| e.object != "root"),
        "an admin login was accepted"
    );
    assert!(
        hub.events(EventKind::Download, Outcome::Ok)
            .await
            .is_empty(),
        "something was downloaded"
    );
    assert_eq!(hub.snapshot().await, snapshot);
    hub.stop().await;
}
