//! kill -9 of a node on the cluster engines (PostgreSQL and s3s-fs, as scripts/services starts
//! them), while it uploads and while it works the job queue: every upload whose close
//! returned is listed and intact through the other node, the one cut short shows nowhere,
//! and the dead node's jobs are finished by the other node once their lease runs out, each
//! mail keyed by its job's id (none lost).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use mailroom_test_support::{eventually, python_with, sha256_file, write_random};

mod common;
use common::cluster::{Engines, Node, client, probe, sftp, slow_put, stop};

/// Sends the rules' mail to a plain SMTP relay on `port` of loopback, retries every second,
/// never gives a job up, with short leases; and mails every admin change to ops.
fn mail_rule(node: &Node, port: u16) {
    let path = node.data.join("mailroom.toml");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "\n[jobs]\n",
            "\n[jobs]\nbackoff_seconds = 1\nmax_backoff_seconds = 1\nmax_attempts = 1000\nlease_seconds = 2\n",
        )
        .replace(
            "\n[smtp]\n",
            &format!(
                "\n[smtp]\nserver = \"127.0.0.1:{port}\"\nsecurity = \"none\"\nfrom = \"mailroom@example.test\"\n"
            ),
        );
    std::fs::write(
        &path,
        config
            + "\n[[rules]]\nname = \"accounts\"\non = [\"admin\"]\nemail = [\"ops@example.test\"]\n",
    )
    .unwrap();
}

/// The jobs as `jobs list --json` shows them.
async fn jobs(node: &Node, engines: &Engines) -> Vec<serde_json::Value> {
    let out = node.run(&["jobs", "list", "--json"], engines).await;
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_node_killed_mid_work_loses_nothing_and_its_jobs_finish_elsewhere() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let Some(python) = python_with("aiosmtpd") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let a = Node::init(root.path(), "node-a", &engines).await;
    let b = Node::init(root.path(), "node-b", &engines).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    mail_rule(&a, port);
    mail_rule(&b, port);
    let alice = client(&a, &engines, root.path(), "alice").await;
    let bob = client(&a, &engines, root.path(), "bob").await;
    a.run(&["route", "allow", "alice", "bob"], &engines).await;

    let (mut node_a, a_at) = a.serve(&engines).await;
    // Admin changes (by another process) queue jobs; node A claims them and fails (no relay).
    for i in 0..3 {
        a.run(&["account", "add", &format!("user{i}")], &engines)
            .await;
    }
    let tried = eventually(Duration::from_secs(60), async || {
        let jobs = jobs(&a, &engines).await;
        // alice, bob, the route and three users: six admin changes, six mails.
        jobs.len() == 6 && jobs.iter().all(|j| j["attempts"].as_u64().unwrap() >= 1)
    })
    .await;
    assert!(
        tried,
        "node A did not try the jobs: {:?}",
        jobs(&a, &engines).await
    );

    // Two uploads complete through node A; a third is under way when A is killed.
    let done = root.path().join("done.bin");
    let done_sha = write_random(&done, 3 * 1024 * 1024 + 1, 11);
    sftp(
        root.path(),
        &a_at["sftp"],
        "alice",
        &alice,
        &format!(
            "put {} /outbox/bob/first.bin\nput {} /outbox/bob/second.bin\n",
            done.display(),
            done.display()
        ),
    )
    .await;
    let big = root.path().join("big.bin");
    write_random(&big, 64 * 1024 * 1024, 12);
    // 1 MB/s: the upload is under way for a minute.
    let mut cut = slow_put(
        root.path(),
        &a_at["sftp"],
        "alice",
        &alice,
        (&big, "/outbox/bob/cut.bin"),
        8000,
    );
    // Under way: node A has opened its third blob (its metrics count the blob store's calls).
    let started = eventually(Duration::from_secs(60), async || {
        let (_, metrics) = probe(&a_at["ops"], "/metrics").await;
        metrics
            .lines()
            .any(|line| line == "mailroom_blob_seconds_count{call=\"create\"} 3")
    })
    .await;
    assert!(started, "the third upload did not start");
    node_a.start_kill().unwrap();
    node_a.wait().await.unwrap();
    let _ = cut.wait().await;
    let queued: BTreeSet<String> = jobs(&a, &engines)
        .await
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();

    // The relay comes up and node B starts: it takes A's jobs over once their leases end.
    let maildir = root.path().join("maildir");
    let mut relay = std::process::Command::new(&python)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut node_b, b_at) = b.serve(&engines).await;
    let all_done = eventually(Duration::from_secs(120), async || {
        jobs(&b, &engines)
            .await
            .iter()
            .all(|j| j["state"] == "done")
    })
    .await;
    let _ = relay.kill();
    let _ = relay.wait();
    assert!(all_done, "jobs left: {:?}", jobs(&b, &engines).await);
    let mut mailed = BTreeSet::new();
    for mail in std::fs::read_dir(maildir.join("new")).unwrap() {
        let text = std::fs::read_to_string(mail.unwrap().path()).unwrap();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .and_then(|rest| rest.strip_suffix("@mailroom>"))
            .unwrap()
            .to_owned();
        mailed.insert(id);
    }
    assert!(
        queued.is_subset(&mailed),
        "{queued:?} not all in {mailed:?}"
    );

    // Through node B: the two finished uploads, intact; nothing of the one cut short.
    let listing = sftp(
        root.path(),
        &b_at["sftp"],
        "bob",
        &bob,
        "ls -1 /inbox/alice\n",
    )
    .await;
    let names: Vec<&str> = listing
        .lines()
        .filter(|line| !line.starts_with("sftp>"))
        .map(|line| line.trim().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["first.bin", "second.bin"], "{listing}");
    let fetched = root.path().join("fetched.bin");
    sftp(
        root.path(),
        &b_at["sftp"],
        "bob",
        &bob,
        &format!("get /inbox/alice/second.bin {}\n", fetched.display()),
    )
    .await;
    assert_eq!(sha256_file(&fetched), done_sha);
    stop(&mut node_b).await;
    let verdict = b.run(&["audit", "verify"], &engines).await;
    assert!(verdict.starts_with("audit trail intact: "), "{verdict}");
}
