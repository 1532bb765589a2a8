//! End to end on the real binary: `kill -9` of the server during uploads and during a group
//! fan-out, then a restart. Every upload whose close returned OK must be intact (SHA-256),
//! no partial file may be visible, and orphans must be swept. The client agent's sync across
//! a `kill -9` of the hub: its resumable upload is taken up after the restart and delivered
//! once. Also: SIGTERM exits 0, and passwords never reach the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mailroom_test_support::{have, paramiko_python, sha256_file, text, write_random};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;
use common::BIN;
use common::site::Site;

/// Uploads `files` with paramiko into `remote_dir`, killing the server with SIGKILL once
/// `kill_after` uploads were acknowledged. Returns the names whose close returned OK.
async fn upload_then_kill(
    python: &Path,
    port: u16,
    (user, key): (&str, &Path),
    remote_dir: &str,
    files: &[PathBuf],
    server: &mut Child,
    kill_after: usize,
) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mailroom-test-support/clients/paramiko_client.py");
    let mut driver = Command::new(python)
        .arg(script)
        .args(["put-many", "127.0.0.1", &port.to_string(), user, "--key"])
        .arg(key)
        .arg(remote_dir)
        .args(files)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut done = Vec::new();
    let mut killed = false;
    let result = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let Some(name) = value["done"].as_str() {
                done.push(name.to_owned());
                if done.len() == kill_after && !killed {
                    // SIGKILL: no shutdown code runs.
                    server.start_kill().unwrap();
                    killed = true;
                }
            }
        }
    })
    .await;
    assert!(result.is_ok(), "upload driver hung");
    let _ = server.wait().await;
    assert!(
        killed,
        "the server was not killed: only {} uploads completed",
        done.len()
    );
    assert!(
        done.len() < files.len(),
        "the kill came too late to interrupt anything"
    );
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_uploads_and_fan_out_loses_nothing_acknowledged() {
    let Some(python) = paramiko_python() else {
        return;
    };
    if !have("sftp") {
        return;
    }
    let site = Site::new();
    site.admin(&["init"]).await;
    let alice = site.client("alice").await;
    let bob = site.client("bob").await;
    let carol = site.client("carol").await;
    site.admin(&["group", "add", "team"]).await;
    site.admin(&["group", "member", "add", "team", "bob"]).await;
    site.admin(&["group", "member", "add", "team", "carol"])
        .await;
    site.admin(&["route", "allow", "alice", "bob"]).await;
    site.admin(&["route", "allow", "alice", "team"]).await;

    // 1. Direct uploads, killed mid-way.
    let mut sums = HashMap::new();
    let files: Vec<PathBuf> = (0..40)
        .map(|i| {
            let path = site.path(&format!("direct-{i:02}.bin"));
            sums.insert(
                format!("direct-{i:02}.bin"),
                // Odd files are small: they commit inline, inside the metadata transaction.
                write_random(&path, direct_size(i), i as u64),
            );
            path
        })
        .collect();
    let (mut server, port) = site.serve(&site.path("log1")).await;
    let direct_done = upload_then_kill(
        &python,
        port,
        ("alice", &alice),
        "/outbox/bob",
        &files,
        &mut server,
        5,
    )
    .await;

    // 2. Restart; fan-out uploads to the group, killed mid-way.
    let fan_files: Vec<PathBuf> = (0..40)
        .map(|i| {
            let path = site.path(&format!("fan-{i:02}.bin"));
            sums.insert(
                format!("fan-{i:02}.bin"),
                write_random(&path, 2_000_000 + i * 1000, 100 + i as u64),
            );
            path
        })
        .collect();
    let (mut server, port) = site.serve(&site.path("log2")).await;
    let fan_done = upload_then_kill(
        &python,
        port,
        ("alice", &alice),
        "/outbox/team",
        &fan_files,
        &mut server,
        4,
    )
    .await;

    // 3. Restart and look from the recipients' side.
    let (mut server, port) = site.serve(&site.path("log3")).await;
    assert!(
        site.files_under("blobs/staging").is_empty(),
        "staging files survived the start-up sweep"
    );
    for (user, key, expect_direct) in [("bob", &bob, true), ("carol", &carol, false)] {
        let down = site.path(&format!("down-{user}"));
        std::fs::create_dir_all(&down).unwrap();
        let out = site
            .sftp(
                port,
                user,
                key,
                &format!("lcd {}\nget /inbox/alice/*\n", down.display()),
            )
            .await;
        assert!(out.status.success(), "{user}: {}", text(&out));
        let got: Vec<String> = std::fs::read_dir(&down)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        // Every acknowledged upload is there, intact.
        let mut expected: Vec<&String> = fan_done.iter().collect();
        if expect_direct {
            expected.extend(direct_done.iter());
        }
        for name in expected {
            assert!(
                got.contains(name),
                "{user} lacks acknowledged {name}; has {got:?}"
            );
        }
        // Nothing partial: every visible file is a complete file that was sent. (An upload
        // whose close committed but whose OK the client never saw may be there too, whole.)
        for name in &got {
            let sum = sums
                .get(name)
                .unwrap_or_else(|| panic!("{user} sees unexpected {name}"));
            assert_eq!(
                &sha256_file(&down.join(name)),
                sum,
                "{user}: {name} is damaged"
            );
            if !expect_direct {
                assert!(name.starts_with("fan-"), "carol sees {name}");
            }
        }
    }
    // A fan-out is all or nothing: Bob and Carol see the same fan-out files.
    let fan = |user: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(site.path(&format!("down-{user}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("fan-"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(fan("bob"), fan("carol"));
    // Orphans swept: every stored object belongs to a live delivery (one blob per upload
    // that is too large to be kept inline).
    let objects = site.files_under("blobs/objects").len();
    let large = |name: &str| {
        std::fs::metadata(site.path("down-bob").join(name))
            .unwrap()
            .len()
            > 64 * 1024
    };
    let uploads = std::fs::read_dir(site.path("down-bob"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| large(name))
        .count();
    assert_eq!(objects, uploads, "orphan blobs were not swept");
    server.start_kill().unwrap();
    let _ = server.wait().await;
}

/// Size of the i-th direct upload: large (a blob file) for even i, small (inline) for odd.
fn direct_size(i: usize) -> usize {
    if i.is_multiple_of(2) {
        3_000_000 + i * 1000
    } else {
        2_000 + i
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_exits_zero_and_passwords_never_reach_the_log() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let site = Site::new();
    let init = site.admin(&["init"]).await;
    let admin_password = init
        .lines()
        .find_map(|l| l.split_whitespace().last().filter(|w| w.len() >= 20))
        .unwrap_or_else(|| panic!("no one-time password in: {init}"))
        .to_owned();
    let good = "Sunflower-over-9-rivers";
    let bad = "Thistle-under-7-bridges";
    let out = Command::new(BIN)
        .args(["account", "add", "dave", "--password-stdin"])
        .env("MAILROOM_DATA", site.data())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = out.stdin.take().unwrap();
        stdin
            .write_all(format!("{good}\n").as_bytes())
            .await
            .unwrap();
    }
    let status = out.wait().await.unwrap();
    assert!(status.success());

    let log = site.path("log");
    let (server, port) = site.serve(&log).await;
    let port = port.to_string();
    for password in [good, bad] {
        let r = mailroom_test_support::paramiko(
            &python,
            &["login", "127.0.0.1", &port, "dave", "--password", password],
        )
        .await;
        assert!(
            r.contains(if password == good {
                "\"ok\": true"
            } else {
                "\"ok\": false"
            }),
            "{r}"
        );
    }
    let pid = server.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let mut server = server;
    let exit = tokio::time::timeout(Duration::from_secs(120), server.wait())
        .await
        .expect("no exit after SIGTERM")
        .unwrap();
    assert!(exit.success(), "SIGTERM must exit 0, got {exit:?}");

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("login"),
        "the log should record logins: {log_text}"
    );
    for secret in [good, bad, admin_password.as_str()] {
        assert!(!log_text.contains(secret), "a password reached the log");
    }
    // Nor is any password stored in clear.
    let db = std::fs::read(site.data().join("meta.db")).unwrap();
    for secret in [good, admin_password.as_str()] {
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}

/// The client agent, built beside this binary by `cargo test --workspace`.
fn agent_binary() -> PathBuf {
    let path = Path::new(BIN).with_file_name("mailroom-agent");
    assert!(
        path.exists(),
        "{} is missing: build it with cargo build -p mailroom-agent (cargo test --workspace does)",
        path.display()
    );
    path
}

/// Runs the agent with its config in `config`, `input` on its stdin; its exit code and output.
async fn agent(config: &Path, args: &[&str], input: &str) -> (i32, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(agent_binary())
        .args(args)
        .env("MAILROOM_AGENT_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the agent hung")
        .unwrap();
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Bytes staged under the blob folder: uploads under way.
fn staged(site: &Site) -> u64 {
    site.files_under("blobs/staging")
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agents_upload_is_taken_up_after_a_kill_9_of_the_hub() {
    let site = Site::new();
    site.admin(&["init"]).await;
    for who in ["alice", "bob"] {
        let out = Command::new(BIN)
            .args(["account", "add", who, "--password-stdin"])
            .env("MAILROOM_DATA", site.data())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = out;
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = out.stdin.take().unwrap();
            stdin.write_all(b"Sunflower-over-9-rivers\n").await.unwrap();
        }
        assert!(out.wait().await.unwrap().success());
    }
    site.admin(&["route", "allow", "alice", "bob"]).await;
    let port = *mailroom_test_support::free_port_range(1).start();
    let https = format!("127.0.0.1:{port}");
    let base = format!("https://localhost:{port}");
    let (mut server, _) = site.serve_https_on(&site.path("log-1"), &https).await;

    let (config, bob_config) = (site.path("agent-alice"), site.path("agent-bob"));
    let ca = site.data().join("tls/server-ca.crt");
    let ca = ca.to_str().unwrap();
    for (dir, who) in [(&config, "alice"), (&bob_config, "bob")] {
        let (code, out) = agent(
            dir,
            &[
                "login",
                &base,
                "--user",
                who,
                "--password-stdin",
                "--ca",
                ca,
            ],
            "Sunflower-over-9-rivers\n",
        )
        .await;
        assert_eq!(code, 0, "{out}");
    }
    let outbox = site.path("outbox");
    std::fs::create_dir_all(outbox.join("bob")).unwrap();
    let sha = write_random(&outbox.join("bob/big.bin"), 256 << 20, 11);

    // The agent syncs; the hub dies (SIGKILL) once part of the file is staged.
    let mut watcher = Command::new(agent_binary())
        .args(["sync", "--watch", "--interval", "1", "--outbox"])
        .arg(&outbox)
        .env("MAILROOM_AGENT_CONFIG", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        mailroom_test_support::eventually(Duration::from_secs(120), async || staged(&site)
            > (16 << 20))
        .await,
        "the upload never began"
    );
    server.start_kill().unwrap();
    let _ = server.wait().await;
    let held = staged(&site);
    let status: serde_json::Value =
        serde_json::from_str(&site.admin(&["--json", "status"]).await).unwrap();
    assert_eq!(
        status["live_deliveries"], 0,
        "the kill came too late to interrupt the upload"
    );
    assert!(held < 256 << 20);

    // The restart keeps the staging; the agent, still running, resumes and finishes.
    let log = site.path("log-2");
    let (mut server, _) = site.serve_https_on(&log, &https).await;
    assert!(
        mailroom_test_support::eventually(Duration::from_secs(240), async || outbox
            .join(".sent/bob/big.bin")
            .exists())
        .await,
        "not sent after the restart"
    );
    watcher.kill().await.unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("resumable upload taken up after a restart"),
        "the upload began again instead of resuming: {log_text}"
    );
    // Delivered once, whole.
    let (code, out) = agent(&bob_config, &["--json", "inbox"], "").await;
    assert_eq!(code, 0, "{out}");
    let inbox: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(inbox.len(), 1, "{out}");
    assert_eq!(inbox[0]["sha256"], sha);
    assert!(site.files_under("blobs/staging").is_empty());
    server.start_kill().unwrap();
    let _ = server.wait().await;
}
