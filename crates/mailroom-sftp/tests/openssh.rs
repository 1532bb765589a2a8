//! The SSH front end driven by the real OpenSSH `sftp` and `scp` (both modes) against a
//! TestHub on port 0: send, list, download, delete, fan-out, recall, refusals, collisions.

use mailroom_core::DeliveryState;
use mailroom_test_support::{TestHub, have, sha256_file, text, write_random};

async fn hub_with_alice_and_bob() -> (
    TestHub,
    mailroom_test_support::TestClient,
    mailroom_test_support::TestClient,
) {
    let hub = TestHub::start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    (hub, alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_list_download_delete() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, bob) = hub_with_alice_and_bob().await;
    let local = hub.local_dir("send");
    let file = local.join("report.pdf");
    let sha = write_random(&file, 300_000, 1);

    let out = hub
        .sftp(
            &alice,
            &format!("put {} /outbox/bob/\nls -l /outbox/bob\n", file.display()),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("report.pdf"), "{}", text(&out));

    let deliveries = hub.deliveries().await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].state, DeliveryState::Delivered);
    assert_eq!(deliveries[0].sha256, sha);
    assert_eq!(deliveries[0].size, 300_000);

    // Bob sees it under the sender's name and downloads it intact.
    let down = hub.local_dir("down");
    let out = hub
        .sftp(
            &bob,
            &format!(
                "ls /inbox\nls -l /inbox/alice\nget /inbox/alice/report.pdf {}\n",
                down.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("alice"));
    assert_eq!(sha256_file(&down.join("report.pdf")), sha);
    assert_eq!(hub.deliveries().await[0].state, DeliveryState::PickedUp);

    // Picked up: gone from Alice's outbox listing, receipt shows the state.
    let out = hub.sftp(&alice, "ls /outbox/bob\nls /sent/bob\n").await;
    assert!(out.status.success(), "{}", text(&out));
    let id_short = {
        let id = hub.deliveries().await[0].id.to_string().replace('-', "");
        id[id.len() - 8..].to_owned()
    };
    let receipt = format!("report.pdf@{id_short}");
    assert!(text(&out).contains(&receipt), "{}", text(&out));
    let out = hub
        .sftp(
            &alice,
            &format!(
                "get /sent/bob/{receipt} {}\n",
                down.join("receipt.txt").display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let receipt_text = std::fs::read_to_string(down.join("receipt.txt")).unwrap();
    assert!(receipt_text.contains("state: picked-up"), "{receipt_text}");
    assert!(receipt_text.contains(&sha), "{receipt_text}");

    // Bob deletes: acknowledged, and the blob is gone.
    let out = hub
        .sftp(&bob, "rm /inbox/alice/report.pdf\nls /inbox/alice\n")
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hub.deliveries().await[0].state, DeliveryState::Acknowledged);
    assert!(hub.snapshot().await.blobs.is_empty(), "blob not released");
    hub.stop().await;
}

/// `get` of a glob lists the folder, stats every match, then stats, opens, reads and closes
/// each file: the stats are answered from the listing, so each file costs the Hub its open
/// and its close only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_after_a_listing_are_answered_from_it() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, bob) = hub_with_alice_and_bob().await;
    let local = hub.local_dir("many");
    let mut shas = Vec::new();
    for i in 0..3u64 {
        shas.push(write_random(&local.join(format!("f{i}.txt")), 5000, 20 + i));
    }
    let out = hub
        .sftp(
            &alice,
            &format!(
                "put {}/* /outbox/bob/
",
                local.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let down = hub.local_dir("got");
    let before = hub.hub.file_operations();
    let out = hub
        .sftp(
            &bob,
            &format!(
                "get /inbox/alice/* {}
",
                down.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    for (i, sha) in shas.iter().enumerate() {
        assert_eq!(&sha256_file(&down.join(format!("f{i}.txt"))), sha);
    }
    // One listing, then an open and a close per file; no stat reached the Hub.
    assert_eq!(hub.hub.file_operations() - before, 1 + 3 * 2);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_fan_out_shares_one_blob() {
    if !have("sftp") {
        return;
    }
    let hub = TestHub::start().await;
    let hq = hub.client("hq").await;
    let paris = hub.client("paris").await;
    let rome = hub.client("rome").await;
    hub.group("branches", &["paris", "rome"]).await;
    hub.allow("hq", "branches").await;
    let local = hub.local_dir("fan");
    let file = local.join("prices.csv");
    let sha = write_random(&file, 50_000, 2);

    let out = hub
        .sftp(
            &hq,
            &format!(
                "put {} /outbox/branches/\nls /outbox/branches\n",
                file.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("prices.csv"));
    let deliveries = hub.deliveries().await;
    assert_eq!(deliveries.len(), 2);
    assert_eq!(
        deliveries[0].blob_id, deliveries[1].blob_id,
        "fan-out shares one blob"
    );
    assert_eq!(hub.snapshot().await.blobs.len(), 1);

    for (client, label) in [(&paris, "paris"), (&rome, "rome")] {
        let down = hub.local_dir(label);
        let out = hub
            .sftp(
                client,
                &format!("get /inbox/hq/prices.csv {}\n", down.display()),
            )
            .await;
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(sha256_file(&down.join("prices.csv")), sha);
    }
    // One acknowledgement keeps the shared blob; the second releases it.
    let out = hub.sftp(&paris, "rm /inbox/hq/prices.csv\n").await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hub.snapshot().await.blobs.len(), 1);
    let out = hub.sftp(&rome, "rm /inbox/hq/prices.csv\n").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(hub.snapshot().await.blobs.is_empty());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recall_before_pick_up_only() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, bob) = hub_with_alice_and_bob().await;
    let local = hub.local_dir("recall");
    let file = local.join("oops.txt");
    write_random(&file, 1000, 3);

    let out = hub
        .sftp(
            &alice,
            &format!(
                "put {} /outbox/bob/\nrm /outbox/bob/oops.txt\n",
                file.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hub.deliveries().await[0].state, DeliveryState::Recalled);
    let out = hub.sftp(&bob, "ls /inbox/alice\n").await;
    assert!(!text(&out).contains("oops.txt"), "{}", text(&out));
    assert!(hub.snapshot().await.blobs.is_empty());

    // Once picked up it cannot be recalled, and nothing changes.
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", file.display()))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let down = hub.local_dir("recall-down");
    let out = hub
        .sftp(
            &bob,
            &format!("get /inbox/alice/oops.txt {}\n", down.display()),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let before = hub.snapshot().await;
    let out = hub.sftp(&alice, "rm /outbox/bob/oops.txt\n").await;
    assert!(
        !out.status.success(),
        "recall after pick-up must fail: {}",
        text(&out)
    );
    assert_eq!(hub.snapshot().await, before);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_denied_and_unknown_recipient_deliver_nothing() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, bob) = hub_with_alice_and_bob().await;
    let local = hub.local_dir("deny");
    let file = local.join("x.txt");
    write_random(&file, 100, 4);
    let before = hub.snapshot().await;

    // Bob has no route to Alice.
    let out = hub
        .sftp(&bob, &format!("put {} /outbox/alice/\n", file.display()))
        .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    // Nobody called carol exists.
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/carol/\n", file.display()))
        .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("No such file"), "{}", text(&out));
    // Writing into an inbox or a receipt folder is refused.
    let out = hub
        .sftp(&alice, &format!("put {} /inbox/bob/\n", file.display()))
        .await;
    assert!(!out.status.success());
    let out = hub
        .sftp(&alice, &format!("put {} /sent/bob/\n", file.display()))
        .await;
    assert!(!out.status.success());
    let out = hub.sftp(&alice, "mkdir /outbox/newfolder\n").await;
    assert!(!out.status.success());
    let out = hub
        .sftp(&alice, "ln -s /etc/passwd /outbox/bob/link\n")
        .await;
    assert!(!out.status.success());

    assert_eq!(hub.snapshot().await, before);
    // Each refusal is accounted.
    let events = hub
        .hub
        .events(&mailroom_core::EventQuery {
            outcome: Some(mailroom_core::Outcome::Refused),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.detail.contains("route-denied")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.detail.contains("not-found")),
        "{events:?}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_name_twice_gets_a_stable_suffix() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, bob) = hub_with_alice_and_bob().await;
    let local = hub.local_dir("dup");
    let file = local.join("data.csv");
    let first = write_random(&file, 2000, 5);
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", file.display()))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let second = write_random(&file, 3000, 6);
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", file.display()))
        .await;
    assert!(out.status.success(), "{}", text(&out));

    let down = hub.local_dir("dup-down");
    let out = hub
        .sftp(
            &bob,
            &format!(
                "ls /inbox/alice\nget /inbox/alice/data.csv {0}/a.csv\nget /inbox/alice/data~2.csv {0}/b.csv\n",
                down.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    // Nothing was overwritten: each name holds the content it was sent with.
    assert_eq!(sha256_file(&down.join("a.csv")), first);
    assert_eq!(sha256_file(&down.join("b.csv")), second);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scp_both_modes_upload_and_download() {
    if !have("scp") {
        return;
    }
    let (hub, alice, bob) = hub_with_alice_and_bob().await;
    let local = hub.local_dir("scp");
    for (legacy, name, seed) in [(false, "modern.bin", 7), (true, "legacy.bin", 8)] {
        let file = local.join(name);
        let sha = write_random(&file, 700_000, seed);
        let out = hub
            .scp(&alice, legacy, file.to_str().unwrap(), ":/outbox/bob/")
            .await;
        assert!(out.status.success(), "legacy={legacy}: {}", text(&out));
        let down = hub.local_dir("scp-down");
        let out = hub
            .scp(
                &bob,
                legacy,
                &format!(":/inbox/alice/{name}"),
                down.to_str().unwrap(),
            )
            .await;
        assert!(out.status.success(), "legacy={legacy}: {}", text(&out));
        assert_eq!(sha256_file(&down.join(name)), sha, "legacy={legacy}");
    }
    // Legacy scp refusals: exit status 1 with the reason, nothing delivered.
    let before = hub.snapshot().await;
    let file = local.join("denied.bin");
    write_random(&file, 10, 9);
    let out = hub
        .scp(&bob, true, file.to_str().unwrap(), ":/outbox/alice/")
        .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("may not send"), "{}", text(&out));
    let out = hub
        .scp(
            &bob,
            true,
            ":/inbox/alice/nothing.bin",
            local.to_str().unwrap(),
        )
        .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("no such file"), "{}", text(&out));
    let out = hub
        .scp(&alice, true, ":/etc/passwd", local.to_str().unwrap())
        .await;
    assert!(!out.status.success());
    assert_eq!(hub.snapshot().await, before);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_within_an_outbox_folder_and_harmless_setstat() {
    if !have("sftp") {
        return;
    }
    let (hub, alice, bob) = hub_with_alice_and_bob().await;
    hub.client("carol").await;
    hub.allow("alice", "carol").await;
    let local = hub.local_dir("rename");
    for (name, seed) in [("draft.txt", 20), ("other.txt", 21)] {
        write_random(&local.join(name), 500, seed);
    }
    let out = hub
        .sftp(
            &alice,
            &format!(
                "put {0}/draft.txt /outbox/bob/\nput {0}/other.txt /outbox/bob/\nrename /outbox/bob/draft.txt /outbox/bob/final.txt\nchmod 600 /outbox/bob/final.txt\n",
                local.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = hub.sftp(&bob, "ls /inbox/alice\n").await;
    assert!(text(&out).contains("final.txt"), "{}", text(&out));
    assert!(!text(&out).contains("draft.txt"), "{}", text(&out));

    // Nothing is overwritten, nothing moves between folders or out of the outbox.
    let before = hub.snapshot().await;
    for command in [
        "rename /outbox/bob/final.txt /outbox/bob/other.txt",
        "rename /outbox/bob/final.txt /outbox/carol/final.txt",
        "rename /outbox/bob/final.txt /inbox/bob/final.txt",
        "rename /outbox/bob/missing.txt /outbox/bob/x.txt",
    ] {
        let out = hub.sftp(&alice, &format!("{command}\n")).await;
        assert!(!out.status.success(), "{command} must fail: {}", text(&out));
    }
    assert_eq!(hub.snapshot().await, before);
    // The recipient cannot rename what it received.
    let out = hub
        .sftp(
            &bob,
            "rename /inbox/alice/final.txt /inbox/alice/mine.txt\n",
        )
        .await;
    assert!(!out.status.success());
    assert_eq!(hub.snapshot().await, before);
    hub.stop().await;
}
