//! Per-account authorisation driven by real clients (OpenSSH `sftp` and `scp -O`, paramiko)
//! against a TestHub on port 0: rights, file-name rules, the largest file, mailbox quotas,
//! retention, and admin accounts that own no mailbox; plus one race driven through the Hub
//! directly (two uploads that each fit a quota alone), which no client can time.
//!
//! Every refusal is checked three ways: the client sees an error (with the hub's sentence
//! where the protocol carries one: paramiko and SCP show it, OpenSSH `sftp` shows only the
//! status code), a `refused` event names the reason, and `TestHub::snapshot` is unchanged.

use std::process::Output;

use mailroom_core::{
    AccountName, ClientSession, DeliveryState, ErrorKind, EventKind, Outcome, Protocol, Rights,
    VirtualPath,
};
use mailroom_test_support::{
    Snapshot, TestClient, TestHub, have, paramiko, paramiko_python, text, write_random,
};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

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
async fn a_recipient_without_the_receive_right_is_refused_alone_and_in_a_group() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, _bob) = setup().await;
    let _carol = hub.client("carol").await;
    hub.group("team", &["bob", "carol"]).await;
    hub.allow("alice", "team").await;
    let local = hub.local_dir("receive");
    let file = local.join("plan.txt");
    write_random(&file, 5_000, 2);
    hub.set_access("bob", |a| a.rights.receive = false).await;

    let check = before(&hub, EventKind::Upload).await;
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", file.display()))
        .await;
    assert!(failed(&out).contains("Permission denied"), "{}", text(&out));
    assert_refused(&hub, &check, "route-denied: bob may not receive files").await;

    // The group is refused as a whole, naming the member: carol gets nothing either.
    let check = before(&hub, EventKind::Upload).await;
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/team/\n", file.display()))
        .await;
    failed(&out);
    assert_refused(&hub, &check, "bob in group team may not receive files").await;
    if let Some(python) = paramiko_python() {
        let answer = paramiko_put(&hub, &python, &alice, &file, "/outbox/team/plan.txt").await;
        paramiko_refused(&answer, "bob in group team may not receive files");
    }
    assert!(hub.deliveries().await.is_empty());

    // Given the right back, the same upload goes to both.
    hub.set_access("bob", |a| a.rights.receive = true).await;
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/team/\n", file.display()))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hub.deliveries().await.len(), 2);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_delete_or_recall_rights_nothing_is_removed() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, bob) = setup().await;
    let local = hub.local_dir("remove");
    let first = local.join("first.txt");
    let second = local.join("second.txt");
    write_random(&first, 5_000, 3);
    write_random(&second, 5_000, 4);
    let out = hub
        .sftp(
            &alice,
            &format!(
                "put {} /outbox/bob/\nput {} /outbox/bob/\n",
                first.display(),
                second.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    hub.set_access("bob", |a| a.rights.delete = false).await;
    hub.set_access("alice", |a| a.rights.recall = false).await;

    let check = before(&hub, EventKind::DeliveryAcknowledged).await;
    let out = hub.sftp(&bob, "rm /inbox/alice/first.txt\n").await;
    failed(&out);
    assert_refused(&hub, &check, "bob may not delete files from the inbox").await;

    let check = before(&hub, EventKind::DeliveryRecalled).await;
    let out = hub.sftp(&alice, "rm /outbox/bob/second.txt\n").await;
    failed(&out);
    assert_refused(&hub, &check, "alice may not recall files it sent").await;

    // The rights are each account's own: bob may still recall nothing of alice's, but
    // alice's loss of recall does not stop bob acknowledging once he may delete again.
    hub.set_access("bob", |a| a.rights = Rights::default())
        .await;
    let out = hub.sftp(&bob, "rm /inbox/alice/first.txt\n").await;
    assert!(out.status.success(), "{}", text(&out));
    let states: Vec<DeliveryState> = hub.deliveries().await.iter().map(|d| d.state).collect();
    assert_eq!(
        states,
        [DeliveryState::Acknowledged, DeliveryState::Delivered]
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_name_rules_apply_to_uploads_and_renames() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, _bob) = setup().await;
    let local = hub.local_dir("names");
    for (name, seed) in [
        ("setup.exe", 5),
        ("notes.txt", 6),
        ("prices.csv", 7),
        ("secret.csv", 8),
    ] {
        write_random(&local.join(name), 3_000, seed);
    }
    hub.set_access("alice", |a| {
        a.limits.name_allow = vec!["*.csv".into(), "*.exe".into()];
        a.limits.name_deny = vec!["*.exe".into(), "secret*".into()];
    })
    .await;

    for (name, reason) in [
        ("setup.exe", "matches the denied pattern *.exe"),
        ("secret.csv", "matches the denied pattern secret*"),
        (
            "notes.txt",
            "matches none of the allowed patterns *.csv, *.exe",
        ),
    ] {
        let check = before(&hub, EventKind::Upload).await;
        let out = hub
            .sftp(
                &alice,
                &format!("put {} /outbox/bob/\n", local.join(name).display()),
            )
            .await;
        assert!(failed(&out).contains("Permission denied"), "{}", text(&out));
        assert_refused(&hub, &check, reason).await;
    }
    if let Some(python) = paramiko_python() {
        let answer = paramiko_put(
            &hub,
            &python,
            &alice,
            &local.join("setup.exe"),
            "/outbox/bob/setup.exe",
        )
        .await;
        paramiko_refused(
            &answer,
            "alice may not send this file: the name setup.exe matches the denied pattern *.exe",
        );
    }

    let out = hub
        .sftp(
            &alice,
            &format!("put {} /outbox/bob/\n", local.join("prices.csv").display()),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));

    let check = before(&hub, EventKind::DeliveryRenamed).await;
    let out = hub
        .sftp(
            &alice,
            "rename /outbox/bob/prices.csv /outbox/bob/prices.exe\n",
        )
        .await;
    failed(&out);
    assert_refused(&hub, &check, "may not rename to prices.exe").await;
    let out = hub
        .sftp(
            &alice,
            "rename /outbox/bob/prices.csv /outbox/bob/prices-2.csv\n",
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hub.deliveries().await[0].name.as_str(), "prices-2.csv");
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
async fn retention_expires_old_deliveries_and_the_receipt_says_so() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, bob) = setup().await;
    let _carol = hub.client("carol").await;
    hub.allow("alice", "carol").await;
    let local = hub.local_dir("retention");
    let file = local.join("old.bin");
    // Over the inline size, so the blob is a file on disk.
    write_random(&file, 200_000, 14);
    hub.set_access("bob", |a| a.limits.retention_days = Some(7))
        .await;
    let out = hub
        .sftp(
            &alice,
            &format!(
                "put {} /outbox/bob/\nput {} /outbox/carol/\n",
                file.display(),
                file.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let blobs_before = hub.snapshot().await.blobs.len();
    assert_eq!(blobs_before, 2);

    let now = OffsetDateTime::now_utc();
    assert_eq!(hub.hub.expire(now + Duration::days(6)).await.unwrap(), 0);
    assert_eq!(hub.hub.expire(now + Duration::days(8)).await.unwrap(), 1);
    // Running it again finds nothing more.
    assert_eq!(hub.hub.expire(now + Duration::days(8)).await.unwrap(), 0);

    let deliveries = hub.deliveries().await;
    let to_bob = deliveries
        .iter()
        .find(|d| d.recipient.as_str() == "bob")
        .unwrap();
    let to_carol = deliveries
        .iter()
        .find(|d| d.recipient.as_str() == "carol")
        .unwrap();
    assert_eq!(to_bob.state, DeliveryState::Expired);
    assert_eq!(to_carol.state, DeliveryState::Delivered, "carol keeps hers");
    let expired = hub.events(EventKind::DeliveryExpired, Outcome::Ok).await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].actor, "system");
    assert_eq!(expired[0].object, to_bob.id.to_string());
    assert!(
        expired[0].detail.contains("7 days"),
        "{}",
        expired[0].detail
    );
    assert_eq!(
        hub.snapshot().await.blobs.len(),
        1,
        "bob's blob was not deleted"
    );

    // Bob's inbox is empty; alice's receipt says expired.
    let out = hub.sftp(&bob, "ls -1 /inbox\nls -1 /inbox/alice\n").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("old.bin"), "{}", text(&out));
    let receipt = format!("old.bin@{}", to_bob.id.short());
    let down = local.join("receipt.txt");
    let out = hub
        .sftp(
            &alice,
            &format!("get /sent/bob/{receipt} {}\n", down.display()),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let receipt_text = std::fs::read_to_string(&down).unwrap();
    assert!(receipt_text.contains("state: expired"), "{receipt_text}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_uploads_that_each_fit_alone_do_not_both_land() {
    let (hub, _alice, _bob) = setup().await;
    hub.set_access("bob", |a| a.limits.quota_bytes = Some(1 << 20))
        .await;
    let session = ClientSession {
        account: AccountName::parse("alice").unwrap(),
        source: None,
        protocol: Protocol::Sftp,
    };
    let path = |name: &str| VirtualPath::parse(&format!("/outbox/bob/{name}")).unwrap();
    // Both open while the inbox is empty, so each may write up to 1 MiB.
    let mut first = hub
        .hub
        .begin_upload(&session, &path("a.bin"))
        .await
        .unwrap();
    let mut second = hub
        .hub
        .begin_upload(&session, &path("b.bin"))
        .await
        .unwrap();
    assert_eq!(first.byte_limit(), Some(1 << 20));
    assert_eq!(second.byte_limit(), Some(1 << 20));
    first.write_at(0, &vec![1; 600 << 10]).await.unwrap();
    second.write_at(0, &vec![2; 600 << 10]).await.unwrap();
    hub.hub.finish_upload(first).await.unwrap();
    let check = before(&hub, EventKind::Upload).await;
    let err = hub.hub.finish_upload(second).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    assert_eq!(
        err.message(),
        "the file does not fit in bob's mailbox: 600.0 KiB of 1.0 MiB used"
    );
    assert_refused(&hub, &check, "600.0 KiB of 1.0 MiB used").await;
    assert_eq!(hub.staged_bytes(), 0);
    assert_eq!(hub.deliveries().await.len(), 1);
    hub.stop().await;
}
