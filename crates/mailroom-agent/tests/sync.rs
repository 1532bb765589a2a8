//! `mailroom-agent sync` against a real hub: files dropped into the outbox while it runs are
//! delivered and moved to `.sent`; a kill of the agent mid-upload, or between the hub's
//! confirmation and the move, neither loses nor duplicates a file; the inbox side writes,
//! checks and acknowledges each delivery once, even when killed between the two.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use mailroom_core::{AuthConfig, DeliveryState};
use mailroom_test_support::{TestClient, TestHub, eventually, random_bytes, sha256_file};
use tokio::io::AsyncWriteExt as _;

fn agent(config: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailroom-agent"));
    command
        .env("MAILROOM_AGENT_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(mut command: tokio::process::Command, input: Option<&str>) -> (i32, String) {
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).await.unwrap();
    }
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the agent hung")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

async fn login(hub: &TestHub, config: &Path, who: &TestClient) {
    let mut command = agent(config);
    command.args([
        "login",
        &hub.https().base,
        "--user",
        &who.name,
        "--password-stdin",
        "--ca",
    ]);
    command.arg(&hub.https().ca);
    let (code, text) = finish(command, Some(&format!("{}\n", who.password))).await;
    assert_eq!(code, 0, "{text}");
}

/// Drops a file into `folder` the way writers should: under a `.part` name, then renamed.
fn drop_file(folder: &Path, name: &str, data: &[u8]) -> String {
    std::fs::create_dir_all(folder).unwrap();
    let part = folder.join(format!("{name}.part"));
    std::fs::write(&part, data).unwrap();
    std::fs::rename(&part, folder.join(name)).unwrap();
    sha256_file(&folder.join(name))
}

async fn deliveries_named(hub: &TestHub, name: &str) -> usize {
    hub.deliveries()
        .await
        .iter()
        .filter(|d| d.name.as_str() == name)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_sent_once_whatever_kills_the_agent() {
    let hub = TestHub::start_https(mailroom_https::Config::default(), AuthConfig::default()).await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let config = tempfile::tempdir().unwrap();
    login(&hub, config.path(), &alice).await;
    let outbox = hub.local_dir("outbox");
    std::fs::create_dir_all(outbox.join("bob")).unwrap();

    // Files appear while it runs.
    let mut command = agent(config.path());
    command
        .args(["sync", "--watch", "--interval", "1", "--outbox"])
        .arg(&outbox);
    let mut watcher = command.spawn().unwrap();
    let first = drop_file(&outbox.join("bob"), "first.csv", b"a;b;c\n1;2;3\n");
    let second = drop_file(&outbox.join("bob"), "second.bin", &random_bytes(300_000, 3));
    assert!(
        eventually(Duration::from_secs(60), async || {
            outbox.join(".sent/bob/first.csv").exists()
                && outbox.join(".sent/bob/second.bin").exists()
        })
        .await,
        "not moved to .sent"
    );
    let deliveries = hub.deliveries().await;
    assert!(deliveries.iter().any(|d| d.sha256 == first));
    assert!(deliveries.iter().any(|d| d.sha256 == second));
    // A half-written file (still .part) is left alone.
    std::fs::write(outbox.join("bob/third.csv.part"), b"half").unwrap();

    // Killed mid-upload: a big file, the agent killed once the hub holds part of it.
    let big = drop_file(&outbox.join("bob"), "big.bin", &random_bytes(96 << 20, 9));
    let staged = eventually(Duration::from_secs(60), async || {
        hub.staged_bytes() > 0 || deliveries_named(&hub, "big.bin").await > 0
    })
    .await;
    assert!(staged);
    watcher.kill().await.unwrap();
    let mid_upload = deliveries_named(&hub, "big.bin").await == 0;
    println!(
        "killed {}",
        if mid_upload {
            "mid-upload"
        } else {
            "after the upload"
        }
    );
    // Run again, one pass: resumed or found done; delivered exactly once.
    let mut command = agent(config.path());
    command.args(["sync", "--outbox"]).arg(&outbox);
    let (code, text) = finish(command, None).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(deliveries_named(&hub, "big.bin").await, 1);
    assert!(hub.deliveries().await.iter().any(|d| d.sha256 == big));
    assert!(outbox.join(".sent/bob/big.bin").exists());
    assert!(outbox.join("bob/third.csv.part").exists());

    // Killed between the hub's confirmation and the move to .sent: the journal holds an
    // upload the hub no longer has open, and the receipts show the file delivered. The next
    // pass moves it without sending it again.
    let again = drop_file(&outbox.join("bob"), "again.csv", b"x;y\n");
    let mut command = agent(config.path());
    command
        .args(["send", "--to", "bob"])
        .arg(outbox.join("bob/again.csv"));
    let (code, text) = finish(command, None).await;
    assert_eq!(code, 0, "{text}");
    let entry = serde_json::json!({
        "file": {"path": outbox.join("bob/again.csv"), "name": "again.csv", "size": 4, "sha256": again},
        "recipient": "bob",
        "upload": "0123456789abcdef0123456789abcdef",
        "since": 0,
    });
    std::fs::write(
        outbox.join(".mailroom-sync/0-again.json"),
        serde_json::to_string(&entry).unwrap(),
    )
    .unwrap();
    let mut command = agent(config.path());
    command.args(["sync", "--outbox"]).arg(&outbox);
    let (code, text) = finish(command, None).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(deliveries_named(&hub, "again.csv").await, 1, "sent twice");
    assert!(outbox.join(".sent/bob/again.csv").exists());

    // Killed around a one-request send of a small file: the journal says `direct`. One that
    // arrived is found among the receipts and moved; one that did not is sent, once.
    let arrived = drop_file(&outbox.join("bob"), "arrived.csv", b"p;q\n");
    let mut command = agent(config.path());
    command
        .args(["send", "--to", "bob"])
        .arg(outbox.join("bob/arrived.csv"));
    let (code, text) = finish(command, None).await;
    assert_eq!(code, 0, "{text}");
    let lost = drop_file(&outbox.join("bob"), "lost.csv", b"r;s\n");
    for (name, sha) in [("arrived.csv", &arrived), ("lost.csv", &lost)] {
        let entry = serde_json::json!({
            "file": {"path": outbox.join("bob").join(name), "name": name, "size": 4, "sha256": sha},
            "recipient": "bob",
            "upload": "direct",
            "since": 0,
        });
        std::fs::write(
            outbox.join(format!(".mailroom-sync/0-{name}.json")),
            serde_json::to_string(&entry).unwrap(),
        )
        .unwrap();
    }
    let mut command = agent(config.path());
    command.args(["sync", "--outbox"]).arg(&outbox);
    let (code, text) = finish(command, None).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(deliveries_named(&hub, "arrived.csv").await, 1, "sent twice");
    assert_eq!(deliveries_named(&hub, "lost.csv").await, 1, "not sent");
    assert!(outbox.join(".sent/bob/arrived.csv").exists());
    assert!(outbox.join(".sent/bob/lost.csv").exists());
    assert_eq!(
        std::fs::read_dir(outbox.join(".mailroom-sync"))
            .unwrap()
            .count(),
        0,
        "journal left behind"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_receives_each_delivery_once() {
    let hub = TestHub::start_https(mailroom_https::Config::default(), AuthConfig::default()).await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let (alice_config, bob_config) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    login(&hub, alice_config.path(), &alice).await;
    login(&hub, bob_config.path(), &bob).await;
    let local = hub.local_dir("send");
    let mut shas = Vec::new();
    for (name, seed) in [("one.bin", 1), ("two.bin", 2)] {
        let sha = drop_file(&local, name, &random_bytes(200_000, seed));
        let mut command = agent(alice_config.path());
        command.args(["send", "--to", "bob"]).arg(local.join(name));
        let (code, text) = finish(command, None).await;
        assert_eq!(code, 0, "{text}");
        shas.push(sha);
    }
    let inbox = hub.local_dir("inbox");
    // Killed after "one.bin" was written and renamed, before its acknowledgement: its
    // journal mark is there, and the file.
    let one = hub
        .deliveries()
        .await
        .into_iter()
        .find(|d| d.name.as_str() == "one.bin")
        .unwrap();
    std::fs::create_dir_all(inbox.join(".mailroom-sync")).unwrap();
    std::fs::copy(local.join("one.bin"), inbox.join("one.bin")).unwrap();
    std::fs::write(
        inbox.join(".mailroom-sync").join(one.id.to_string()),
        "one.bin",
    )
    .unwrap();

    let mut command = agent(bob_config.path());
    command.args(["--json", "sync", "--inbox"]).arg(&inbox);
    let (code, text) = finish(command, None).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"received\":\"two.bin\""), "{text}");
    assert!(!text.contains("one.bin"), "fetched again: {text}");
    assert_eq!(sha256_file(&inbox.join("one.bin")), shas[0]);
    assert_eq!(sha256_file(&inbox.join("two.bin")), shas[1]);
    let names: Vec<String> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        hub.deliveries()
            .await
            .iter()
            .all(|d| d.state == DeliveryState::Acknowledged)
    );
    // Another pass: nothing new.
    let mut command = agent(bob_config.path());
    command.args(["--json", "sync", "--inbox"]).arg(&inbox);
    let (code, text) = finish(command, None).await;
    assert_eq!((code, text.as_str()), (0, ""));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_to_end_outbox_resumes_the_same_ciphertext_after_a_kill() {
    let hub = TestHub::start_https(mailroom_https::Config::default(), AuthConfig::default()).await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let (alice_config, bob_config) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    login(&hub, alice_config.path(), &alice).await;
    login(&hub, bob_config.path(), &bob).await;
    let mut command = agent(bob_config.path());
    command.args(["key", "generate"]);
    let (code, text) = finish(command, None).await;
    assert_eq!(code, 0, "{text}");

    // Killed mid-upload of a big file, sent end to end.
    let outbox = hub.local_dir("sealed-out");
    let big = drop_file(&outbox.join("bob"), "big.bin", &random_bytes(64 << 20, 4));
    let mut command = agent(alice_config.path());
    command
        .args(["sync", "--e2e", "--watch", "--interval", "1", "--outbox"])
        .arg(&outbox);
    let mut watcher = command.spawn().unwrap();
    let staged = eventually(Duration::from_secs(60), async || {
        hub.staged_bytes() > 0 || deliveries_named(&hub, "big.bin").await > 0
    })
    .await;
    assert!(staged);
    watcher.kill().await.unwrap();
    // Again: the journal's spool is resumed (or found delivered), once, and removed.
    let mut command = agent(alice_config.path());
    command.args(["sync", "--e2e", "--outbox"]).arg(&outbox);
    let (code, text) = finish(command, None).await;
    assert_eq!(code, 0, "{text}");
    let deliveries = hub.deliveries().await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert!(deliveries[0].e2e);
    assert_ne!(deliveries[0].sha256, big, "the hub holds ciphertext");
    assert!(outbox.join(".sent/bob/big.bin").exists());
    assert_eq!(
        std::fs::read_dir(outbox.join(".mailroom-sync"))
            .unwrap()
            .count(),
        0,
        "journal or spool left behind"
    );

    // bob's inbox decrypts it with his identity.
    let inbox = hub.local_dir("sealed-in");
    let mut command = agent(bob_config.path());
    command.args(["sync", "--inbox"]).arg(&inbox);
    let (code, text) = finish(command, None).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(sha256_file(&inbox.join("big.bin")), big);
    hub.stop().await;
}
