//! Authentication and defence over SSH with real clients: required factor sets (OpenSSH
//! `sftp` answering keyboard-interactive prompts through `SSH_ASKPASS`, and paramiko), TOTP
//! codes that work once, recovery codes, source networks, session limits, live sessions
//! closed when their account is disabled, the defender's bans, and refusals that take the
//! same time whether or not the account exists.

// Tests may unwrap (CONTRIBUTING.md): a failed unwrap is a failed check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mailroom_core::parse_network;
use mailroom_core::totp_code;
use mailroom_core::{
    AuthConfig, BanSubject, DefenderConfig, EventKind, FactorSet, Outcome, Secret,
};
use mailroom_test_support::{TestClient, TestHub, eventually, paramiko, paramiko_python, text};
use serde_json::Value;

fn name(text: &str) -> mailroom_core::AccountName {
    mailroom_core::AccountName::parse(text).unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
}

/// The TOTP code an authenticator app would show now.
fn code_now(secret: &Secret<String>) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    totp_code(secret.expose(), u64::try_from(now).unwrap()).unwrap()
}

/// An `SSH_ASKPASS` program that answers "Verification code" prompts from `code` and every
/// other prompt from `password`, and logs each prompt to `prompts`.
fn askpass(dir: &Path, password: &str, code: &str) -> std::path::PathBuf {
    let script = dir.join(format!("askpass-{}", rand_suffix()));
    std::fs::write(dir.join("askpass.password"), password).unwrap();
    std::fs::write(dir.join("askpass.code"), code).unwrap();
    let body = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{dir}/askpass.prompts'\ncase \"$1\" in\n  *erification*) cat '{dir}/askpass.code' ;;\n  *) cat '{dir}/askpass.password' ;;\nesac\n",
        dir = dir.display()
    );
    std::fs::write(&script, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    script
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// OpenSSH `sftp -b` logged in as `client` with its key plus keyboard-interactive answers
/// from `askpass` (batch mode off so the prompts are asked).
async fn sftp_interactive(
    hub: &TestHub,
    client: &TestClient,
    askpass: &Path,
    commands: &str,
) -> std::process::Output {
    let batch = hub.dir.path().join(format!("batch-{}", rand_suffix()));
    std::fs::write(&batch, commands).unwrap();
    let mut command = tokio::process::Command::new("sftp");
    command
        // Given before sftp's own `-oBatchMode yes` for -b, so it wins (ssh keeps the first).
        .args(["-o", "BatchMode=no"])
        .args(["-F", "/dev/null"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-o", "IdentityAgent=none"])
        .args(["-o", "LogLevel=ERROR"])
        .arg("-i")
        .arg(&client.key)
        .arg("-P")
        .arg(hub.addr.port().to_string())
        .arg("-b")
        .arg(&batch)
        .arg(format!("{}@127.0.0.1", client.name))
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env_remove("DISPLAY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("sftp finished")
        .expect("sftp ran")
}

/// An interactive OpenSSH `sftp` logged in by key and sitting idle at its prompt (its
/// standard input held open in the returned handle), once the hub has registered
/// `sessions` live sessions in all.
async fn idle_sftp(
    hub: &TestHub,
    client: &TestClient,
    sessions: usize,
) -> (tokio::process::Child, tokio::process::ChildStdin) {
    let mut child = hub
        .sftp_command(client, None)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `Child::wait` would close standard input, and sftp ends its session on end of input.
    let stdin = child.stdin.take().unwrap();
    assert!(
        eventually(Duration::from_secs(20), async || hub
            .hub
            .live_sessions()
            .await
            .unwrap()
            .len()
            == sessions)
        .await,
        "the session never registered"
    );
    (child, stdin)
}

/// One paramiko login from 127.0.0.1 with a password (`--password`) or a key file (`--key`).
async fn login(python: &Path, hub: &TestHub, user: &str, flag: &str, secret: &str) -> Value {
    let port = hub.addr.port().to_string();
    json(&paramiko(python, &["login", "127.0.0.1", &port, user, flag, secret]).await)
}

fn safe_loopback() -> AuthConfig {
    AuthConfig {
        defender: DefenderConfig {
            safe: vec![parse_network("127.0.0.0/8").unwrap()],
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssh_logs_in_with_key_password_and_a_totp_code_that_works_once() {
    if !mailroom_test_support::have("sftp") {
        return;
    }
    let hub = TestHub::start().await;
    let alice = hub.client("alice").await;
    let setup = hub
        .hub
        .enroll_totp(&TestHub::admin(), &name("alice"))
        .await
        .unwrap();
    hub.set_access("alice", |a| {
        a.factors = FactorSet::parse("publickey,password,totp").unwrap();
    })
    .await;

    // The key alone is not enough: a partial success, then no way on in batch mode.
    let key_only = hub.sftp(&alice, "ls /\n").await;
    assert!(!key_only.status.success(), "{}", text(&key_only));
    assert!(hub.hub.live_sessions().await.unwrap().is_empty());

    // Key, then password and code through keyboard-interactive, answered by askpass.
    let code = code_now(&setup.secret);
    let dir = hub.local_dir("askpass");
    let script = askpass(&dir, &alice.password, &code);
    let ok = sftp_interactive(&hub, &alice, &script, "ls /\n").await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("outbox"), "{}", text(&ok));
    let prompts = std::fs::read_to_string(dir.join("askpass.prompts")).unwrap();
    assert!(prompts.contains("Password"), "{prompts}");
    assert!(prompts.contains("Verification code"), "{prompts}");
    let logins = hub.events(EventKind::Login, Outcome::Ok).await;
    assert_eq!(logins.last().unwrap().detail, "publickey+password+totp");

    // The same code a second time is refused, and so is a wrong one.
    let again = sftp_interactive(&hub, &alice, &script, "ls /\n").await;
    assert!(!again.status.success(), "a TOTP code worked twice");
    let wrong_dir = hub.local_dir("askpass-wrong");
    let wrong = askpass(&wrong_dir, &alice.password, "000000");
    let refused = sftp_interactive(&hub, &alice, &wrong, "ls /\n").await;
    assert!(!refused.status.success());
    let refusals = hub.events(EventKind::Login, Outcome::Refused).await;
    let code_refusals = refusals
        .iter()
        .filter(|e| e.detail == "totp: wrong or reused code")
        .count();
    assert!(code_refusals >= 2, "{refusals:#?}");
    assert_eq!(
        hub.events(EventKind::Login, Outcome::Ok).await.len(),
        1,
        "only the first login succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paramiko_password_then_code_and_recovery_codes_work_once() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let hub = TestHub::start().await;
    let bob = hub.client("bob").await;
    let setup = hub
        .hub
        .enroll_totp(&TestHub::admin(), &name("bob"))
        .await
        .unwrap();
    hub.set_access("bob", |a| {
        a.factors = FactorSet::parse("password,totp").unwrap();
    })
    .await;
    let port = hub.addr.port().to_string();
    let mfa = async |extra: &[&str]| {
        let mut args = vec!["mfa", "127.0.0.1", &port, "bob"];
        args.extend_from_slice(extra);
        json(&paramiko(&python, &args).await)
    };

    // The password alone: a partial success that asks for keyboard-interactive.
    let partial = mfa(&["--password", &bob.password]).await;
    assert_eq!(partial["ok"], false, "{partial}");
    assert_eq!(
        partial["steps"][0]["remaining"],
        serde_json::json!(["keyboard-interactive"])
    );
    // A key is not one of bob's factors.
    let key = mfa(&["--key", bob.key.to_str().unwrap()]).await;
    assert_eq!(key["ok"], false, "{key}");

    let code = code_now(&setup.secret);
    let ok = mfa(&["--password", &bob.password, "--code", &code]).await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(
        ok["prompts"],
        serde_json::json!(["Password: ", "Verification code: "])
    );
    let replay = mfa(&["--password", &bob.password, "--code", &code]).await;
    assert_eq!(replay["ok"], false, "a code worked twice: {replay}");

    // A recovery code stands in for a code, once; formatting does not matter.
    let recovery = setup.recovery_codes[0].expose().to_uppercase();
    let ok = mfa(&["--password", &bob.password, "--code", &recovery]).await;
    assert_eq!(ok["ok"], true, "{ok}");
    let again = mfa(&["--password", &bob.password, "--code", &recovery]).await;
    assert_eq!(again["ok"], false, "{again}");
    let account = hub.account("bob").await;
    assert_eq!(account.totp.unwrap().recovery.len(), 9);

    // A code without the password is refused: the first prompt asks for the password.
    let code_only = mfa(&["--code", &code_now(&setup.secret)]).await;
    assert_eq!(code_only["ok"], false, "{code_only}");
    assert_eq!(hub.events(EventKind::Login, Outcome::Ok).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_networks_are_enforced_at_login() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let hub = TestHub::start_full(mailroom_sftp::Config::default(), safe_loopback()).await;
    let alice = hub.client("alice").await;
    let key = alice.key.to_str().unwrap().to_owned();
    let key_login = async || login(&python, &hub, "alice", "--key", &key).await;

    hub.set_access("alice", |a| {
        a.networks = vec![parse_network("10.0.0.0/8").unwrap()];
    })
    .await;
    let before = hub.snapshot().await;
    let refused = key_login().await;
    assert_eq!(refused["ok"], false, "{refused}");
    let pw = login(&python, &hub, "alice", "--password", &alice.password).await;
    assert_eq!(pw["ok"], false, "{pw}");
    assert_eq!(hub.snapshot().await, before);
    let refusals = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(
        refusals.iter().any(|e| e
            .detail
            .contains("source address not in the account's networks")),
        "{refusals:#?}"
    );

    hub.set_access("alice", |a| {
        a.networks = vec![parse_network("127.0.0.0/8").unwrap()];
    })
    .await;
    assert_eq!(key_login().await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_account_loses_its_live_session_within_seconds() {
    if !mailroom_test_support::have("sftp") {
        return;
    }
    let hub = TestHub::start().await;
    let alice = hub.client("alice").await;
    let (mut child, _stdin) = idle_sftp(&hub, &alice, 1).await;
    // sftp stays up reading its standard input after the server hangs up; what shows the
    // close is the disconnect message ssh prints, so read its standard error for it.
    let stderr = child.stderr.take().unwrap();
    let disabled_at = Instant::now();
    hub.hub
        .set_disabled(&TestHub::admin(), &name("alice"), true)
        .await
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let seen = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("session closed: account disabled") {
                return line;
            }
        }
        panic!("sftp's standard error ended without the disconnect");
    })
    .await
    .expect("sftp was not disconnected");
    let took = disabled_at.elapsed();
    assert!(seen.contains("Received disconnect"), "{seen}");
    child.kill().await.unwrap();
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert!(
        eventually(Duration::from_secs(5), async || hub
            .hub
            .live_sessions()
            .await
            .unwrap()
            .is_empty())
        .await
    );
    let closed = hub.events(EventKind::SessionClosed, Outcome::Ok).await;
    assert_eq!(closed.len(), 1, "{closed:#?}");
    assert!(closed[0].detail.contains("account disabled"), "{closed:#?}");
    // And it cannot come back.
    let again = hub.sftp(&alice, "ls /\n").await;
    assert!(!again.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_limit_refuses_one_more_session() {
    let Some(python) = paramiko_python() else {
        return;
    };
    if !mailroom_test_support::have("sftp") {
        return;
    }
    let hub = TestHub::start().await;
    let alice = hub.client("alice").await;
    hub.set_access("alice", |a| a.limits.max_sessions = Some(1))
        .await;
    let key = alice.key.to_str().unwrap().to_owned();

    let (mut first, _stdin) = idle_sftp(&hub, &alice, 1).await;
    let second = login(&python, &hub, "alice", "--key", &key).await;
    assert_eq!(second["ok"], false, "{second}");
    let refusals = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(
        refusals
            .iter()
            .any(|e| e.detail.contains("session limit reached")),
        "{refusals:#?}"
    );

    first.kill().await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), async || hub
            .hub
            .live_sessions()
            .await
            .unwrap()
            .is_empty())
        .await
    );
    let third = login(&python, &hub, "alice", "--key", &key).await;
    assert_eq!(third["ok"], true, "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_defender_bans_an_address_and_then_refuses_the_right_password() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let auth = AuthConfig {
        defender: DefenderConfig {
            threshold: 5,
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    };
    let hub = TestHub::start_full(mailroom_sftp::Config::default(), auth).await;
    let alice = hub.client("alice").await;
    let password =
        async |user: &str, password: &str| login(&python, &hub, user, "--password", password).await;
    assert_eq!(password("alice", &alice.password).await["ok"], true);

    // Wrong passwords (1 point each, plus 1 for each connection that ends without a login):
    // banned within three attempts at a threshold of 5.
    let mut attempts = 0;
    while hub.hub.bans().await.unwrap().is_empty() {
        attempts += 1;
        assert!(attempts <= 3, "no ban after {attempts} attempts");
        let r = password("alice", "Wrong-password-42").await;
        assert_eq!(r["ok"], false);
    }
    let bans = hub.hub.bans().await.unwrap();
    let loopback = BanSubject::parse("127.0.0.1").unwrap();
    assert_eq!(bans[0].subject, loopback, "{bans:#?}");
    assert_eq!(bans[0].level, 1);
    let ban_events = hub.events(EventKind::Ban, Outcome::Ok).await;
    assert_eq!(ban_events.len(), 1);
    assert_eq!(ban_events[0].actor, "system");

    // The right password is refused now, before or at the login.
    let before = hub.snapshot().await;
    let refused = password("alice", &alice.password).await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(hub.snapshot().await, before);
    let refusals = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(
        refusals.iter().any(|e| e.detail.contains("banned")),
        "{refusals:#?}"
    );

    // Lifted: the right password works again.
    hub.hub.unban(&TestHub::admin(), &loopback).await.unwrap();
    assert_eq!(password("alice", &alice.password).await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_safe_list_is_never_banned() {
    let Some(python) = paramiko_python() else {
        return;
    };
    let mut auth = safe_loopback();
    auth.defender.threshold = 3;
    let hub = TestHub::start_full(mailroom_sftp::Config::default(), auth).await;
    let alice = hub.client("alice").await;
    for _ in 0..6 {
        let r = login(&python, &hub, "nobody", "--password", "Wrong-password-42").await;
        assert_eq!(r["ok"], false);
    }
    assert!(hub.hub.bans().await.unwrap().is_empty());
    let ok = login(&python, &hub, "alice", "--password", &alice.password).await;
    assert_eq!(ok["ok"], true, "{ok}");
}

/// Median of a sample.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The seconds and results of one side of a `timing` run.
fn side(run: &Value, label: &str) -> (Vec<f64>, Vec<String>) {
    let items = run[label].as_array().unwrap();
    (
        items
            .iter()
            .map(|i| i["seconds"].as_f64().unwrap())
            .collect(),
        items
            .iter()
            .map(|i| i["result"].as_str().unwrap().to_owned())
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_take_the_same_time_whether_or_not_the_account_exists() {
    let Some(python) = paramiko_python() else {
        return;
    };
    // Loopback on the safe list so 120 refusals do not ban it; a short rejection delay keeps
    // the run short (every refusal is answered at the same moment after its request).
    let config = mailroom_sftp::Config {
        auth_rejection_ms: 150,
        ..mailroom_sftp::Config::default()
    };
    let hub = TestHub::start_full(config, safe_loopback()).await;
    let _alice = hub.client("alice").await;
    let stranger = hub.client("stranger").await;
    hub.hub
        .delete_account(&TestHub::admin(), &name("stranger"))
        .await
        .unwrap();
    let port = hub.addr.port().to_string();

    // Passwords: a wrong one for alice vs any for an account that does not exist.
    let run = json(
        &paramiko(
            &python,
            &[
                "timing",
                "127.0.0.1",
                &port,
                "alice",
                "--password",
                "Wrong-password-42",
                "40",
                "nobody",
            ],
        )
        .await,
    );
    let (known, known_results) = side(&run, "a");
    let (unknown, unknown_results) = side(&run, "b");
    assert!(
        known_results
            .iter()
            .chain(&unknown_results)
            .all(|r| r == &known_results[0])
    );
    assert!(
        known_results[0].contains("Authentication failed"),
        "{known_results:?}"
    );
    let (k, u) = (median(known), median(unknown));
    eprintln!("password refusals: known account {k:.4}s, unknown {u:.4}s");
    assert!((k - u).abs() < 0.005, "medians differ: {k:.4}s vs {u:.4}s");

    // Keys: an unknown key for alice vs a key offered for an account that does not exist.
    let key = stranger.key.to_str().unwrap().to_owned();
    let run = json(
        &paramiko(
            &python,
            &[
                "timing",
                "127.0.0.1",
                &port,
                "alice",
                "--key",
                &key,
                "20",
                "nobody",
            ],
        )
        .await,
    );
    let (known, known_results) = side(&run, "a");
    let (unknown, unknown_results) = side(&run, "b");
    assert!(
        known_results
            .iter()
            .chain(&unknown_results)
            .all(|r| r == &known_results[0])
    );
    let (k, u) = (median(known), median(unknown));
    eprintln!("key refusals: known account {k:.4}s, unknown {u:.4}s");
    assert!((k - u).abs() < 0.005, "medians differ: {k:.4}s vs {u:.4}s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protocol_errors_are_scored_until_the_address_is_banned() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = AuthConfig {
        defender: DefenderConfig {
            threshold: 5,
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    };
    let hub = TestHub::start_full(mailroom_sftp::Config::default(), auth).await;
    let loopback = BanSubject::parse("127.0.0.1").unwrap();
    // An HTTP request where the SSH version line belongs: a protocol error, one point each;
    // the fifth reaches the threshold.
    for sent in 1..=5 {
        assert!(
            hub.hub.bans().await.unwrap().is_empty(),
            "banned after {sent} errors"
        );
        let mut stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
        let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
        // The refusal is recorded and scored off the connection's task: wait for it.
        assert!(
            eventually(Duration::from_secs(5), async || {
                hub.events(EventKind::Login, Outcome::Refused).await.len() >= sent
            })
            .await
        );
    }
    assert!(
        eventually(Duration::from_secs(5), async || !hub
            .hub
            .bans()
            .await
            .unwrap()
            .is_empty())
        .await,
        "no ban after 5 protocol errors"
    );
    let bans = hub.hub.bans().await.unwrap();
    assert_eq!(bans[0].subject, loopback, "{bans:#?}");
    // Now refused before a byte of SSH: the server closes without its version line.
    let mut stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let mut first = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut first)).await;
    assert!(first.is_empty(), "{:?}", String::from_utf8_lossy(&first));
    let refusals = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(
        refusals
            .iter()
            .any(|e| e.detail.starts_with("connection refused: address banned")),
        "{refusals:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_session_is_closed_after_the_idle_timeout() {
    if !mailroom_test_support::have("sftp") {
        return;
    }
    let config = mailroom_sftp::Config {
        idle_timeout_seconds: 2,
        ..mailroom_sftp::Config::default()
    };
    let hub = TestHub::start_with(config).await;
    let alice = hub.client("alice").await;
    let (mut child, _stdin) = idle_sftp(&hub, &alice, 1).await;
    let idle_from = Instant::now();
    assert!(
        eventually(Duration::from_secs(15), async || hub
            .hub
            .live_sessions()
            .await
            .unwrap()
            .is_empty())
        .await,
        "an idle session was not closed"
    );
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(1500),
        "closed too early: {idle:?}"
    );
    child.kill().await.unwrap();
}
