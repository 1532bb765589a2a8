//! End to end on the real binary, on the cluster engines: live sessions are the cluster's.
//! Two `mailroom serve` nodes share one PostgreSQL database and one S3 prefix (as
//! scripts/services starts them). With `max_sessions = 1`, an OpenSSH sftp session held open on
//! node A makes a login on node B refused, and allowed again once A's session ends; a kick
//! through B's admin CLI, and an `account disable` through it, close the session held on A
//! within 2 s (PostgreSQL's LISTEN/NOTIFY wakes A; its 1 s poll is the fallback). `status`
//! shows both nodes alive, and neither once they stopped cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mailroom_test_support::{eventually, ssh_options, text};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

mod common;
use common::cluster::{Engines, Node, client, stop};

/// How soon a kick or a disable made on one node must close a session held on another.
const WITHIN: Duration = Duration::from_secs(2);

/// An OpenSSH sftp session held open: it runs one command and then waits on its standard
/// input, which the test holds.
struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Held {
    /// Opens one as `user` on the node listening at `address`.
    async fn open(address: &str, user: &str, key: &Path) -> Held {
        let (host, port) = address.rsplit_once(':').unwrap();
        let mut child = Command::new("sftp")
            .args(ssh_options())
            .arg("-i")
            .arg(key)
            .arg("-P")
            .arg(port)
            .args(["-b", "-"])
            .arg(format!("{user}@{host}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"ls /\n").await.unwrap();
        Held {
            child,
            stdin: Some(stdin),
        }
    }

    /// Whether the client has ended. sftp waits on its input and notices a closed
    /// connection only at its next command to the server, so each look sends one (`ls /`):
    /// with the session closed by the server, the batch fails and sftp exits.
    async fn ended(&mut self) -> bool {
        if self.child.try_wait().unwrap().is_some() {
            return true;
        }
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"ls /\n").await;
        }
        // The process's exit is the signal; a look that sees none within a moment says "not
        // yet", and `eventually` looks again.
        tokio::time::timeout(Duration::from_millis(200), self.child.wait())
            .await
            .is_ok()
    }

    /// Ends the session as a client does: end of input, and sftp quits.
    async fn quit(mut self) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("sftp did not quit")
            .unwrap();
        assert!(status.success(), "sftp ended with {status:?}");
    }
}

/// One sftp login with one command, to its end: its output, whatever the outcome.
async fn sftp_once(address: &str, user: &str, key: &Path) -> std::process::Output {
    let (host, port) = address.rsplit_once(':').unwrap();
    let mut held = Command::new("sftp");
    held.args(ssh_options())
        .arg("-i")
        .arg(key)
        .arg("-P")
        .arg(port)
        .args(["-b", "-"])
        .arg(format!("{user}@{host}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = held.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ls /\n").await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("sftp did not finish")
        .unwrap()
}

/// `mailroom --json ARGS` through `node`'s CLI, parsed.
async fn json(node: &Node, engines: &Engines, args: &[&str]) -> Value {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let out = node.run(&with_json, engines).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} gave bad JSON {out:?}: {e}"))
}

/// The live sessions, as `session list` shows them through `node`.
async fn sessions(node: &Node, engines: &Engines) -> Vec<Value> {
    json(node, engines, &["session", "list"])
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `node` lists `count` live sessions, and returns them.
async fn listed(node: &Node, engines: &Engines, count: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let found = eventually(Duration::from_secs(30), async || {
        last = sessions(node, engines).await;
        last.len() == count
    })
    .await;
    assert!(found, "{count} sessions expected, listed: {last:#?}");
    last
}

/// Audit events of one kind and outcome, oldest first, through `node`'s CLI.
async fn events(node: &Node, engines: &Engines, kind: &str, outcome: &str) -> Vec<Value> {
    json(
        node,
        engines,
        &[
            "audit",
            "list",
            "--type",
            kind,
            "--outcome",
            outcome,
            "--limit",
            "1000",
        ],
    )
    .await
    .as_array()
    .unwrap()
    .clone()
}

/// What `node`'s server wrote on standard error so far.
fn log(node: &Node) -> String {
    std::fs::read_to_string(node.data.with_extension("log")).unwrap_or_default()
}

#[tokio::test]
async fn sessions_are_counted_listed_and_closed_across_the_nodes() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let a = Node::init(root.path(), "node-a", &engines).await;
    let b = Node::init(root.path(), "node-b", &engines).await;
    let alice = client(&a, &engines, root.path(), "alice").await;
    b.run(
        &["account", "set", "alice", "--max-sessions", "1"],
        &engines,
    )
    .await;
    let (mut node_a, a_at) = a.serve(&engines).await;
    let (mut node_b, b_at) = b.serve(&engines).await;

    // Both nodes registered and beat; the CLI is no node.
    let status = json(&b, &engines, &["status"]).await;
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{status:#}");
    assert!(nodes.iter().all(|n| n["alive"] == true), "{status:#}");
    let pids: Vec<u64> = nodes.iter().map(|n| n["pid"].as_u64().unwrap()).collect();
    for node in [&node_a, &node_b] {
        assert!(pids.contains(&u64::from(node.id().unwrap())), "{status:#}");
    }
    let node_of_a = nodes
        .iter()
        .find(|n| n["pid"].as_u64() == Some(u64::from(node_a.id().unwrap())))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // ----- max_sessions counts every node's sessions ------------------------------------------
    let held = Held::open(&a_at["sftp"], "alice", &alice).await;
    // Listed through B (its CLI reads every node's), as NODE:NUMBER of node A.
    let before = listed(&b, &engines, 1).await;
    assert_eq!(before[0]["account"], "alice");
    // Logged in over SSH (the subsystem comes after the login).
    assert_eq!(before[0]["protocol"], "ssh");
    assert_eq!(before[0]["node"], node_of_a.as_str());
    assert!(
        before[0]["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{node_of_a}:")),
        "{before:#?}"
    );
    let refusals_before = events(&b, &engines, "login", "refused").await.len();
    let refused = sftp_once(&b_at["sftp"], "alice", &alice).await;
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Permission denied"),
        "{}",
        text(&refused)
    );
    // The refusal says why, in the trail; nothing else changed: A's session is the one live.
    let refusals = events(&b, &engines, "login", "refused").await;
    assert_eq!(refusals.len(), refusals_before + 1, "{refusals:#?}");
    let last = refusals.last().unwrap();
    assert_eq!(last["object"], "alice");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("session limit reached (1 open)"),
        "{last:#}"
    );
    assert_eq!(sessions(&b, &engines).await, before);
    // Once A's session ends, B lets alice in.
    held.quit().await;
    let mut allowed = None;
    assert!(
        eventually(Duration::from_secs(10), async || {
            let out = sftp_once(&b_at["sftp"], "alice", &alice).await;
            let ok = out.status.success();
            allowed = Some(out);
            ok
        })
        .await,
        "B still refuses after A's session ended: {}",
        text(allowed.as_ref().unwrap())
    );
    listed(&b, &engines, 0).await;

    // ----- a kick through B closes the session on A -------------------------------------------
    let mut held = Held::open(&a_at["sftp"], "alice", &alice).await;
    let live = listed(&b, &engines, 1).await;
    let id = live[0]["id"].as_str().unwrap().to_owned();
    // A session that is not live is refused, and nothing changes.
    let missing = format!("{node_of_a}:999999");
    let closed_before = events(&b, &engines, "session.closed", "ok").await.len();
    let out = b
        .command(&["session", "kick", &missing], &engines)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no live session"),
        "{}",
        text(&out)
    );
    assert_eq!(sessions(&b, &engines).await, live);
    assert_eq!(
        events(&b, &engines, "session.closed", "ok").await.len(),
        closed_before
    );
    assert!(!held.ended().await, "a refused kick closed the session");

    let said = b.run(&["session", "kick", &id], &engines).await;
    let kicked = Instant::now();
    assert!(said.contains(&format!("session {id} closed")), "{said}");
    assert!(
        eventually(WITHIN, async || held.ended().await).await,
        "the kicked session on A was still open {:?} after the kick; node A's log:\n{}",
        kicked.elapsed(),
        log(&a)
    );
    assert!(kicked.elapsed() <= WITHIN, "{:?}", kicked.elapsed());
    let closed = events(&b, &engines, "session.closed", "ok").await;
    assert_eq!(closed.len(), closed_before + 1, "{closed:#?}");
    let event = closed.last().unwrap();
    assert_eq!(event["actor"], "cli:tester");
    assert_eq!(event["object"], "alice");
    assert!(
        event["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("session {id} (ssh from 127.0.0.1:")),
        "{event:#}"
    );
    listed(&b, &engines, 0).await;

    // ----- a disable through B closes the session on A ----------------------------------------
    let mut held = Held::open(&a_at["sftp"], "alice", &alice).await;
    listed(&b, &engines, 1).await;
    b.run(&["account", "disable", "alice"], &engines).await;
    let disabled = Instant::now();
    assert!(
        eventually(WITHIN, async || held.ended().await).await,
        "the disabled account's session on A was still open {:?} after the disable; node A's \
         log:\n{}",
        disabled.elapsed(),
        log(&a)
    );
    assert!(disabled.elapsed() <= WITHIN, "{:?}", disabled.elapsed());
    let closed = events(&b, &engines, "session.closed", "ok").await;
    let event = closed.last().unwrap();
    assert_eq!(event["actor"], "alice");
    assert!(
        event["detail"]
            .as_str()
            .unwrap()
            .contains("closed by the hub: account disabled"),
        "{event:#}"
    );
    listed(&b, &engines, 0).await;

    // Nodes that stop cleanly leave the store.
    stop(&mut node_a).await;
    stop(&mut node_b).await;
    let status = json(&a, &engines, &["status"]).await;
    assert_eq!(status["nodes"], serde_json::json!([]), "{status:#}");
    assert!(sessions(&a, &engines).await.is_empty());
}
