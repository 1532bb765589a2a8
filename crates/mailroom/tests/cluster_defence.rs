//! Defence across nodes, end to end on the real binary: two `mailroom serve` nodes share one
//! PostgreSQL database and one S3 prefix (as tests/cluster.rs starts them). What one node
//! counted, spent or filled holds on the other:
//!
//! - a brute force of wrong passwords alternating between the nodes is banned once the
//!   threshold is reached over both (neither node alone had seen enough), and the banned
//!   address is then refused at connect by both;
//! - a TOTP code used through one node is refused through the other (a replay);
//! - a quota filled through one node refuses an upload through the other, delivering nothing.
//!
//! Each refusal is checked for its error and for changing nothing else. How the defender
//! counts point by point, and the 2-second bound of the ban cache, are tested on the
//! in-memory test bed (`mailroom-core/tests/hub/defence.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailroom_test_support::{paramiko, paramiko_python, text, write_random};
use serde_json::Value;
use tokio::process::Child;

mod common;
use common::cluster::{Engines, Node, client, sftp, stop};

/// The right password of the password accounts here.
const PASSWORD: &str = "Correct-Horse-Battery-9";
const WRONG: &str = "Wrong-Horse-Battery-9";

/// The attacker's address (any 127/8 address is this machine's).
const ATTACKER: &str = "127.0.0.9";
/// Everybody else's.
const OTHER: &str = "127.0.0.1";

/// Two nodes on fresh engines, each configured with `settings` (`(section, line)`), with
/// `setup` run through node A before they start.
struct Cluster {
    engines: Engines,
    root: tempfile::TempDir,
    a: Node,
    b: Node,
    children: Vec<Child>,
    /// Each node's listeners, by protocol.
    at: [HashMap<String, String>; 2],
}

impl Cluster {
    async fn start(
        engines: Engines,
        settings: &[(&str, &str)],
        setup: impl AsyncFnOnce(&Node, &Engines, &Path),
    ) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let a = Node::init(root.path(), "node-a", &engines).await;
        let b = Node::init(root.path(), "node-b", &engines).await;
        for node in [&a, &b] {
            configure(node, settings);
        }
        setup(&a, &engines, root.path()).await;
        let (child_a, at_a) = a.serve(&engines).await;
        let (child_b, at_b) = b.serve(&engines).await;
        Cluster {
            engines,
            root,
            a,
            b,
            children: vec![child_a, child_b],
            at: [at_a, at_b],
        }
    }

    /// The SFTP port of node 0 (A) or 1 (B).
    fn sftp_port(&self, node: usize) -> u16 {
        self.at[node]["sftp"]
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap()
    }

    /// An admin command's JSON answer, through node A's folder.
    async fn json(&self, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = self.a.run(&with_json, &self.engines).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} gave {out:?}: {e}"))
    }

    /// Every ban, in force or ended.
    async fn bans(&self) -> Value {
        self.json(&["ban", "list", "--all"]).await
    }

    /// Every audit event, oldest first.
    async fn events(&self) -> Vec<Value> {
        self.json(&["audit", "list", "--limit", "100000"])
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// What a refusal must leave alone: the accounts, the bans, and every event that is not
    /// a refusal (a refusal records one event of its own).
    async fn snapshot(&self) -> (Value, Value, Vec<Value>) {
        let kept = self
            .events()
            .await
            .into_iter()
            .filter(|e| e["outcome"] != "refused")
            .collect();
        (
            self.json(&["account", "list"]).await,
            self.bans().await,
            kept,
        )
    }

    /// The refusal events recorded after the first `seen` events.
    async fn refusals_after(&self, seen: usize) -> Vec<Value> {
        self.events().await[seen..]
            .iter()
            .filter(|e| e["outcome"] == "refused")
            .cloned()
            .collect()
    }

    /// SIGTERM to both nodes, which must stop cleanly; then the trail must be one chain.
    async fn stop(mut self) {
        for child in &mut self.children {
            stop(child).await;
        }
        let verdict = self.b.run(&["audit", "verify"], &self.engines).await;
        assert!(verdict.starts_with("audit trail intact: "), "{verdict}");
    }
}

/// Puts `line` under the `[section]` header of a node's mailroom.toml.
fn configure(node: &Node, settings: &[(&str, &str)]) {
    let path = node.data.join("mailroom.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    for (section, line) in settings {
        let header = format!("\n[{section}]\n");
        let at = config
            .find(&header)
            .unwrap_or_else(|| panic!("no [{section}]"))
            + header.len();
        config.insert_str(at, &format!("{line}\n"));
    }
    std::fs::write(&path, config).unwrap();
}

/// Adds a client account that logs in with [`PASSWORD`].
async fn with_password(node: &Node, engines: &Engines, name: &str) {
    common::cluster::with_password(node, engines, name, PASSWORD).await;
}

/// The subjects of a `ban list` answer.
fn subjects(bans: &Value) -> Vec<String> {
    bans.as_array()
        .unwrap()
        .iter()
        .map(|b| b["subject"].as_str().unwrap().to_owned())
        .collect()
}

/// Settings of every test: refusals answered at once.
const FAST: (&str, &str) = ("sftp", "auth_rejection_ms = 0");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_force_over_both_nodes_is_banned_on_both() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let Some(python) = paramiko_python() else {
        return;
    };
    // A ban at 4 points; a wrong password scores 1 against the address and 1 against the
    // account. The connection that ends without a login would score the address 1 more
    // (after the disconnect, so not at a time the test knows): 0 here, so the count is exact.
    let settings = [
        FAST,
        ("auth", "ban_threshold = 4"),
        ("auth", "score_no_authentication = 0"),
    ];
    let cluster = Cluster::start(engines, &settings, async |a, engines, _| {
        with_password(a, engines, "alice").await;
        with_password(a, engines, "bob").await;
    })
    .await;
    let (port_a, port_b) = (cluster.sftp_port(0), cluster.sftp_port(1));
    let before = cluster.snapshot().await;

    // Three wrong passwords, through A, B, A: three points over the cluster, no ban. Each
    // node has seen two at most, and will have seen two when B sees the fourth: with scores
    // per node there would be no ban at all.
    for (attempt, port) in [port_a, port_b, port_a].into_iter().enumerate() {
        let answer = common::paramiko_login(&python, port, "alice", WRONG, ATTACKER, None).await;
        assert!(
            common::refused_at_login(&answer),
            "attempt {attempt}: {answer}"
        );
        assert_eq!(
            cluster.bans().await,
            serde_json::json!([]),
            "banned after {} wrong passwords",
            attempt + 1
        );
    }
    let answer = common::paramiko_login(&python, port_b, "alice", WRONG, ATTACKER, None).await;
    let banned_at = tokio::time::Instant::now();
    assert!(common::refused_at_login(&answer), "{answer}");

    // Four over both nodes: the address is banned and the account locked, by the node that
    // saw the fourth, with a `ban` event each.
    let bans = cluster.json(&["ban", "list"]).await;
    assert_eq!(subjects(&bans), [ATTACKER, "account:alice"], "{bans}");
    for ban in bans.as_array().unwrap() {
        assert_eq!(ban["level"], 1, "{ban}");
        assert_eq!(ban["active"], true, "{ban}");
        assert_eq!(ban["reason"], "4 points in 30 min", "{ban}");
    }
    let ban_events: Vec<Value> = cluster
        .events()
        .await
        .into_iter()
        .filter(|e| e["kind"] == "ban")
        .collect();
    assert_eq!(ban_events.len(), 2, "{ban_events:?}");
    for (event, subject) in ban_events.iter().zip([ATTACKER, "account:alice"]) {
        assert_eq!(event["actor"], "system", "{event}");
        assert_eq!(event["object"], subject, "{event}");
    }

    // Refused at connect, even with the right password, on both nodes: at once on B, which
    // placed the ban, and on A once its ban cache is due for a refresh: at most 2 s after the
    // ban committed (before the fourth refusal was answered).
    for port in [port_b, port_a] {
        if port == port_a {
            tokio::time::sleep_until(banned_at + Duration::from_millis(2100)).await;
        }
        let answer = common::paramiko_login(&python, port, "alice", PASSWORD, ATTACKER, None).await;
        assert!(common::refused_at_connect(&answer), "port {port}: {answer}");
        // From elsewhere, alice is locked out on both nodes, and bob is not.
        let answer = common::paramiko_login(&python, port, "alice", PASSWORD, OTHER, None).await;
        assert!(common::refused_at_login(&answer), "{answer}");
        let answer = common::paramiko_login(&python, port, "bob", PASSWORD, OTHER, None).await;
        assert_eq!(answer["ok"], true, "{answer}");
    }

    // Nothing else changed: the same accounts, and no event but the refused logins, the two
    // bans and bob's logins.
    let (accounts, _, kept) = cluster.snapshot().await;
    assert_eq!(accounts, before.0, "the accounts changed");
    assert_eq!(kept[..before.2.len()], before.2[..]);
    for event in &kept[before.2.len()..] {
        let ban = event["kind"] == "ban" && event["actor"] == "system";
        let bob = event["kind"] == "login" && event["object"] == "bob";
        assert!(
            ban || bob,
            "an event besides the logins and the bans: {event}"
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_totp_code_used_through_one_node_is_refused_through_the_other() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let Some(python) = paramiko_python() else {
        return;
    };
    let enrolment = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let stored = enrolment.clone();
    let cluster = Cluster::start(engines, &[FAST], async move |a, engines, _| {
        with_password(a, engines, "carol").await;
        let out = a
            .run(&["--json", "account", "totp", "enroll", "carol"], engines)
            .await;
        *stored.lock().unwrap() = serde_json::from_str(&out).unwrap();
        a.run(
            &["account", "set", "carol", "--require", "password,totp"],
            engines,
        )
        .await;
    })
    .await;
    let enrolment = enrolment.lock().unwrap().clone();
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let recovery = enrolment["recovery_codes"][0].as_str().unwrap().to_owned();
    let (port_a, port_b) = (cluster.sftp_port(0), cluster.sftp_port(1));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = mailroom_core::totp_code(&secret, now).unwrap();
    let answer =
        common::paramiko_login(&python, port_a, "carol", PASSWORD, OTHER, Some(&code)).await;
    assert_eq!(answer["ok"], true, "the code through A: {answer}");

    // The same code through B: the password passes, the code is a replay.
    let before = cluster.snapshot().await;
    let seen = cluster.events().await.len();
    let shown = cluster.json(&["account", "show", "carol"]).await;
    let answer =
        common::paramiko_login(&python, port_b, "carol", PASSWORD, OTHER, Some(&code)).await;
    assert!(
        common::refused_at_login(&answer),
        "the replay through B: {answer}"
    );
    let refusals = cluster.refusals_after(seen).await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["object"], "carol", "{}", refusals[0]);
    assert_eq!(
        refusals[0]["detail"], "totp: wrong or reused code",
        "{}",
        refusals[0]
    );
    assert_eq!(
        cluster.snapshot().await,
        before,
        "the replay changed something"
    );
    assert_eq!(cluster.json(&["account", "show", "carol"]).await, shown);

    // B itself is fine: a recovery code lets carol in through it.
    let answer =
        common::paramiko_login(&python, port_b, "carol", PASSWORD, OTHER, Some(&recovery)).await;
    assert_eq!(answer["ok"], true, "a recovery code through B: {answer}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_filled_through_one_node_refuses_an_upload_through_the_other() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let Some(python) = paramiko_python() else {
        return;
    };
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::<PathBuf>::new()));
    let made = keys.clone();
    let cluster = Cluster::start(engines, &[FAST], async move |a, engines, root| {
        let alice = client(a, engines, root, "alice").await;
        let bob = client(a, engines, root, "bob").await;
        a.run(&["route", "allow", "alice", "bob"], engines).await;
        a.run(&["account", "set", "bob", "--quota-bytes", "1M"], engines)
            .await;
        made.lock().unwrap().extend([alice, bob]);
    })
    .await;
    let (alice, bob) = {
        let keys = keys.lock().unwrap();
        (keys[0].clone(), keys[1].clone())
    };
    let root = cluster.root.path();
    let first = root.join("first.bin");
    write_random(&first, 600 << 10, 1);
    let second = root.join("second.bin");
    write_random(&second, 500 << 10, 2);

    // 600 KiB of bob's 1 MiB, through A.
    sftp(
        root,
        &cluster.at[0]["sftp"],
        "alice",
        &alice,
        &format!("put {} /outbox/bob/first.bin\n", first.display()),
    )
    .await;

    // 500 KiB more, through B: refused by the quota that A's upload filled.
    let listing = sftp(
        root,
        &cluster.at[1]["sftp"],
        "bob",
        &bob,
        "ls -1 /inbox/alice\n",
    )
    .await;
    let before = cluster.snapshot().await;
    let seen = cluster.events().await.len();
    let port_b = cluster.sftp_port(1).to_string();
    let answer: Value = serde_json::from_str(
        &paramiko(
            &python,
            &[
                "write",
                "127.0.0.1",
                &port_b,
                "alice",
                "--key",
                alice.to_str().unwrap(),
                second.to_str().unwrap(),
                "/outbox/bob/second.bin",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("the file does not fit in bob's mailbox: 600.0 KiB of 1.0 MiB used"),
        "{answer}"
    );

    // Nothing delivered: bob's inbox lists the first file only, one delivery is stored, and
    // the new events are alice's login and the refusal, which says why.
    let refusals = cluster.refusals_after(seen).await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["actor"], "alice", "{}", refusals[0]);
    assert!(
        refusals[0]["detail"]
            .as_str()
            .unwrap()
            .contains("quota-exceeded: the file does not fit in bob's mailbox"),
        "{}",
        refusals[0]
    );
    let (accounts, bans, kept) = cluster.snapshot().await;
    assert_eq!((&accounts, &bans), (&before.0, &before.1));
    assert_eq!(kept[..before.2.len()], before.2[..], "events changed");
    let logins: Vec<_> = kept[before.2.len()..]
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["object"].as_str().unwrap()))
        .collect();
    assert_eq!(logins, [("login", "alice")], "events besides the refusal");
    let after = sftp(
        root,
        &cluster.at[0]["sftp"],
        "bob",
        &bob,
        "ls -1 /inbox/alice\n",
    )
    .await;
    assert_eq!(after, listing);
    assert!(
        after.contains("first.bin") && !after.contains("second.bin"),
        "{after}"
    );
    let deliveries = std::process::Command::new("psql")
        .arg(&cluster.engines.meta_url)
        .args(["-tAc", "SELECT count(*) FROM deliveries"])
        .output()
        .unwrap();
    assert!(deliveries.status.success(), "{}", text(&deliveries));
    assert_eq!(String::from_utf8_lossy(&deliveries.stdout).trim(), "1");
    cluster.stop().await;
}
