//! The defender on the real binary: wrong passwords from paramiko ban the source address, the
//! ban survives a restart (it lives in `meta.db`) and `ban remove` lifts it in a running server
//! within seconds; repeat bans grow; the safe list is never banned and the deny list is
//! refused before SSH; wrong passwords spread over several addresses lock the account; and the
//! `account totp` commands, their refusals, and a TOTP login whose secrets never reach the log.
//!
//! What the defender decides point by point is tested in memory in `mailroom-core`; here only
//! what an operator sees: exit codes, `ban list`, the audit trail and real logins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mailroom_test_support::eventually;
use serde_json::Value;

mod common;

/// The right password of every client account in these tests.
const PASSWORD: &str = "Correct-Horse-Battery-9";
const WRONG: &str = "Wrong-Horse-Battery-9";

/// An initialised data folder with its log files.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        site.ok(&["init"], &[]);
        site
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary with a clean environment: no stray `MAILROOM_*` from the caller.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = common::mailroom(&self.data(), args);
        command.envs(env.iter().copied());
        command
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run(args, env);
        assert!(out.status.success(), "mailroom {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = self.ok(&with_json, &[]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} gave bad JSON {out:?}: {e}"))
    }

    /// Every ban, in force or ended.
    fn bans(&self) -> Value {
        self.json(&["ban", "list", "--all"])
    }

    /// The audit events of one kind, oldest first.
    fn events(&self, kind: &str) -> Vec<Value> {
        self.json(&["audit", "list", "--type", kind, "--limit", "1000"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// Everything the refusals below could change: accounts, bans and the audit trail.
    fn snapshot(&self) -> [Value; 3] {
        [
            self.json(&["account", "list"]),
            self.bans(),
            self.json(&["audit", "list", "--limit", "100000"]),
        ]
    }

    /// Runs a command that must be refused with exit 1 and one sentence containing `expect`,
    /// and checks that nothing changed.
    fn refused(&self, args: &[&str], env: &[(&str, &str)], expect: &str) {
        let before = self.snapshot();
        let out = self.run(args, env);
        assert_eq!(
            out.status.code(),
            Some(1),
            "mailroom {args:?}: {}",
            text(&out)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr for {args:?}: {err:?}");
        assert!(
            lines[0].starts_with("mailroom: error: ") && lines[0].contains(expect),
            "{args:?}: {err:?} does not say {expect:?}"
        );
        assert_eq!(self.snapshot(), before, "{args:?} changed something");
    }

    /// Adds a client account with [`PASSWORD`].
    fn client(&self, name: &str) {
        let mut child = self
            .command(&["account", "add", name, "--password-stdin"], &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{PASSWORD}").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "account add {name}: {}", text(&out));
    }
}

/// A running `mailroom serve` with its stderr in a log file; killed on drop if the test
/// failed before stopping it.
struct Server {
    child: Option<Child>,
    port: u16,
}

impl Server {
    fn start(site: &Site, log: &Path, env: &[(&str, &str)]) -> Server {
        let mut command = site.command(&["serve"], env);
        command
            .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_SFTP_AUTH_REJECTION_MS", "0")
            .env("MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS", "5")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        // Keeps draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        let address = loop {
            let line = lines_rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| {
                    panic!(
                        "serve did not start listening: {}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    )
                });
            if let Some(address) = line.strip_prefix("mailroom: sftp listening on ") {
                break address.to_owned();
            }
        };
        let port = address.rsplit(':').next().unwrap().parse().unwrap();
        Server {
            child: Some(child),
            port,
        }
    }

    /// SIGTERM; the server must exit 0.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(output: &Output) -> String {
    mailroom_test_support::text(output)
}

/// The subjects in a `ban list --json` answer.
fn subjects(bans: &Value) -> Vec<String> {
    bans.as_array()
        .unwrap()
        .iter()
        .map(|b| b["subject"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_ban_survives_a_restart_and_lifting_it_takes_effect_within_seconds() {
    let Some(python) = mailroom_test_support::paramiko_python() else {
        return;
    };
    let site = Site::new();
    site.client("alice");
    let env = [("MAILROOM_AUTH_BAN_THRESHOLD", "4")];
    let server = Server::start(&site, &site.path("log1"), &env);

    // Each wrong password scores 1, and its connection ending without a login 1 more (after
    // the disconnect, so not always before the next attempt): banned within 4 attempts.
    let mut attempts = 0;
    while subjects(&site.json(&["ban", "list"])).is_empty() {
        attempts += 1;
        assert!(attempts <= 4, "not banned after 4 wrong passwords");
        let answer =
            common::paramiko_login(&python, server.port, "alice", WRONG, "127.0.0.1", None).await;
        assert_eq!(answer["ok"], false, "{answer}");
    }
    let banned = site.json(&["ban", "list"]);
    assert_eq!(subjects(&banned), ["127.0.0.1"], "{banned}");
    assert_eq!(banned[0]["active"], true);
    assert_eq!(banned[0]["level"], 1);

    // The right password is refused now: the connection is closed before SSH.
    let answer =
        common::paramiko_login(&python, server.port, "alice", PASSWORD, "127.0.0.1", None).await;
    assert!(common::refused_at_connect(&answer), "{answer}");
    let refusals: Vec<Value> = site
        .events("login")
        .into_iter()
        .filter(|e| {
            e["outcome"] == "refused"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("connection refused: address banned until ")
        })
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");

    // A restart reads the ban from the store.
    server.stop();
    let server = Server::start(&site, &site.path("log2"), &env);
    let answer =
        common::paramiko_login(&python, server.port, "alice", PASSWORD, "127.0.0.1", None).await;
    assert!(common::refused_at_connect(&answer), "{answer}");
    assert_eq!(site.json(&["ban", "list"]), banned);

    // Lifted by the CLI while the server runs: it re-reads the bans every 2 s.
    let out = site.ok(&["ban", "remove", "127.0.0.1"], &[]);
    assert_eq!(out, "lifted the ban of 127.0.0.1\n");
    assert_eq!(site.bans(), serde_json::json!([]));
    let works = eventually(Duration::from_secs(15), async || {
        let answer =
            common::paramiko_login(&python, server.port, "alice", PASSWORD, "127.0.0.1", None)
                .await;
        if answer["ok"] != true {
            assert!(common::refused_at_connect(&answer), "{answer}");
        }
        answer["ok"] == true
    })
    .await;
    assert!(works, "the right password works again: not within 15 s");
    server.stop();

    // The trail: one ban by the defender (none again after the restart), one lift by the CLI.
    let bans = site.events("ban");
    assert_eq!(bans.len(), 2, "{bans:?}");
    assert_eq!(bans[0]["actor"], "system");
    assert_eq!(bans[0]["object"], "127.0.0.1");
    assert!(
        bans[0]["detail"]
            .as_str()
            .unwrap()
            .contains("(ban #1, 30 min)"),
        "{}",
        bans[0]
    );
    assert_eq!(bans[1]["actor"], "cli:tester");
    assert_eq!(bans[1]["object"], "127.0.0.1");
    assert_eq!(bans[1]["detail"], "ban lifted");
}

#[test]
fn repeat_bans_grow_and_lifting_what_is_not_banned_is_refused() {
    let site = Site::new();
    let out = site.ok(&["ban", "add", "192.0.2.7", "--minutes", "10"], &[]);
    assert!(out.contains("(ban #1)"), "{out}");
    let out = site.ok(
        &[
            "ban",
            "add",
            "192.0.2.7",
            "--minutes",
            "10",
            "--reason",
            "scanning",
        ],
        &[],
    );
    assert!(out.contains("(ban #2)"), "{out}");
    let bans = site.bans();
    assert_eq!(subjects(&bans), ["192.0.2.7"], "{bans}");
    assert_eq!(bans[0]["level"], 2);
    assert_eq!(bans[0]["active"], true);
    assert_eq!(bans[0]["reason"], "scanning");

    site.refused(
        &["ban", "remove", "192.0.2.8"],
        &[],
        "cannot lift the ban of 192.0.2.8: 192.0.2.8 is not banned",
    );
    site.refused(
        &["ban", "remove", "account:bob"],
        &[],
        "account:bob is not banned",
    );
}

#[tokio::test]
async fn the_safe_list_is_never_banned() {
    let Some(python) = mailroom_test_support::paramiko_python() else {
        return;
    };
    let site = Site::new();
    site.client("alice");
    let env = [
        ("MAILROOM_AUTH_BAN_THRESHOLD", "4"),
        ("MAILROOM_AUTH_SAFE_NETWORKS", r#"["127.0.0.1"]"#),
    ];
    let server = Server::start(&site, &site.path("log"), &env);
    for _ in 0..10 {
        let answer =
            common::paramiko_login(&python, server.port, "alice", WRONG, "127.0.0.1", None).await;
        assert!(common::refused_at_login(&answer), "{answer}");
    }
    let answer =
        common::paramiko_login(&python, server.port, "alice", PASSWORD, "127.0.0.1", None).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(site.bans(), serde_json::json!([]));

    site.refused(
        &["ban", "add", "127.0.0.1", "--minutes", "5"],
        &env,
        "127.0.0.1 is on the safe list and is never banned",
    );
    server.stop();
}

#[tokio::test]
async fn the_deny_list_is_refused_before_ssh() {
    let Some(python) = mailroom_test_support::paramiko_python() else {
        return;
    };
    let site = Site::new();
    site.client("alice");
    let env = [("MAILROOM_AUTH_DENY_NETWORKS", r#"["127.0.0.0/8"]"#)];
    let server = Server::start(&site, &site.path("log"), &env);
    let answer =
        common::paramiko_login(&python, server.port, "alice", PASSWORD, "127.0.0.1", None).await;
    assert!(common::refused_at_connect(&answer), "{answer}");
    // Recorded before the socket is dropped; polled all the same, since another process reads.
    let deny_refusal = || {
        site.events("login").into_iter().find(|e| {
            e["outcome"] == "refused" && e["detail"].as_str().unwrap().contains("deny list")
        })
    };
    assert!(
        eventually(Duration::from_secs(10), async || deny_refusal().is_some()).await,
        "the deny-list refusal in the audit trail: not within 10 s"
    );
    let refusal = deny_refusal().unwrap();
    assert_eq!(refusal["object"], "127.0.0.1", "{refusal}");
    // Refused at the door, so nothing is scored and nobody is banned.
    assert_eq!(site.bans(), serde_json::json!([]));
    server.stop();
}

#[tokio::test]
async fn wrong_passwords_from_many_addresses_lock_the_account_only() {
    let Some(python) = mailroom_test_support::paramiko_python() else {
        return;
    };
    let site = Site::new();
    site.client("alice");
    site.client("bob");
    let env = [("MAILROOM_AUTH_BAN_THRESHOLD", "4")];
    let server = Server::start(&site, &site.path("log"), &env);

    // One wrong password from each of four addresses: 4 points for the account, 2 for each
    // address (the wrong password and the connection that never logged in).
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.4", "127.0.0.5"] {
        let answer = common::paramiko_login(&python, server.port, "alice", WRONG, from, None).await;
        assert!(common::refused_at_login(&answer), "{from}: {answer}");
    }
    let bans = site.json(&["ban", "list"]);
    assert_eq!(subjects(&bans), ["account:alice"], "{bans}");
    assert_eq!(bans[0]["level"], 1);

    // Locked: the right password from a fresh address is refused at login, and says why in
    // the trail; another account logs in from an address that tried before.
    let answer =
        common::paramiko_login(&python, server.port, "alice", PASSWORD, "127.0.0.3", None).await;
    assert!(common::refused_at_login(&answer), "{answer}");
    let locked = site.events("login").into_iter().any(|e| {
        e["source"].as_str().unwrap_or("").starts_with("127.0.0.3:")
            && e["outcome"] == "refused"
            && e["detail"]
                .as_str()
                .unwrap()
                .contains("account locked by the defender")
    });
    assert!(locked, "no 'account locked' login event from 127.0.0.3");
    let answer =
        common::paramiko_login(&python, server.port, "bob", PASSWORD, "127.0.0.1", None).await;
    assert_eq!(answer["ok"], true, "{answer}");
    server.stop();
}

#[tokio::test]
async fn totp_enrolment_its_refusals_and_a_login_that_logs_no_secret() {
    let site = Site::new();
    site.client("alice");

    let setup = site.json(&["account", "totp", "enroll", "alice"]);
    assert_eq!(setup["account"], "alice");
    let secret = setup["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.len() >= 26
            && secret
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
        "not base32: {secret}"
    );
    let uri = setup["uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}")),
        "{uri}"
    );
    let codes: Vec<String> = setup["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "{codes:?}");

    // `account show` tells the state, never the secret or a code.
    let show = |site: &Site| {
        let out = site.ok(&["--json", "account", "show", "alice"], &[]);
        assert!(
            !out.contains(&secret),
            "account show leaks the secret: {out}"
        );
        for code in &codes {
            assert!(!out.contains(code.as_str()), "account show leaks {code}");
        }
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let shown = show(&site);
    assert_eq!(shown["totp"]["enrolled"], true, "{shown}");
    assert_eq!(shown["totp"]["recovery_codes_left"], 10, "{shown}");

    // Admin accounts log in nowhere that asks for a code.
    let admin_before = site.json(&["account", "show", "admin"]);
    site.refused(
        &["account", "totp", "enroll", "admin"],
        &[],
        "cannot enrol admin in TOTP: admin accounts cannot log in over the client protocols",
    );
    assert_eq!(site.json(&["account", "show", "admin"]), admin_before);

    // Required, so the enrolment cannot go.
    site.ok(
        &["account", "set", "alice", "--require", "password,totp"],
        &[],
    );
    let required = show(&site);
    site.refused(
        &["account", "totp", "remove", "alice"],
        &[],
        "alice requires totp (password+totp)",
    );
    assert_eq!(show(&site), required);

    // A login with the password and a code, then one with a recovery code, against a server
    // logging at debug level: neither the secret nor any code may reach the log.
    if let Some(python) = mailroom_test_support::paramiko_python() {
        let log = site.path("log");
        let server = Server::start(&site, &log, &[("MAILROOM_LOG", "debug")]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let code = mailroom_core::totp_code(&secret, now).unwrap();
        let answer =
            common::paramiko_login(&python, server.port, "alice", PASSWORD, "127.0.0.1", None)
                .await;
        assert_eq!(
            answer["ok"], false,
            "the password alone let alice in: {answer}"
        );
        let answer = common::paramiko_login(
            &python,
            server.port,
            "alice",
            PASSWORD,
            "127.0.0.1",
            Some(&code),
        )
        .await;
        assert_eq!(answer["ok"], true, "{answer}");
        let answer = common::paramiko_login(
            &python,
            server.port,
            "alice",
            PASSWORD,
            "127.0.0.1",
            Some(&codes[0]),
        )
        .await;
        assert_eq!(answer["ok"], true, "recovery code: {answer}");
        server.stop();
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("login"), "the log is empty: {logged}");
        assert!(!logged.contains(&secret), "the secret is in the log");
        assert!(!logged.contains(PASSWORD), "the password is in the log");
        // The six-digit code itself is not looked for: any timestamp may contain it.
        for code in &codes {
            assert!(!logged.contains(code.as_str()), "{code} is in the log");
        }
        assert_eq!(show(&site)["totp"]["recovery_codes_left"], 9);
    }

    site.ok(&["account", "set", "alice", "--require", "any"], &[]);
    let out = site.ok(&["account", "totp", "remove", "alice"], &[]);
    assert_eq!(out, "removed the TOTP enrolment of alice\n");
    let shown = show(&site);
    assert_eq!(shown["totp"]["enrolled"], false, "{shown}");
}
