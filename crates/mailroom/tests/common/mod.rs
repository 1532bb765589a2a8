//! What the binary's integration tests share: how to run `mailroom` on a data folder with a
//! clean environment, what a command must answer, and what a refused start must leave alone.
//! (Each test binary uses its own part of it.)
#![allow(dead_code)]

pub mod cluster;
pub mod site;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mailroom");

/// `mailroom --data DATA ARGS…` with no stray `MAILROOM_*` variable from the caller, as OS
/// user `tester`, the HTTPS front end on a free port (tests run in parallel; each sets its
/// own SFTP port), and standard input closed (a test that feeds input sets its own).
pub fn mailroom(data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MAILROOM_") {
            command.env_remove(name);
        }
    }
    command
        .arg("--data")
        .arg(data)
        .args(args)
        .env("USER", "tester")
        .env("MAILROOM_HTTPS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null());
    command
}

/// Runs `mailroom --data DATA ARGS…` to its end, the SFTP front end on a free port.
pub fn run(data: &Path, args: &[&str]) -> Output {
    mailroom(data, args)
        .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap()
}

/// [`run`] of a command that must succeed; its standard output.
pub fn ok(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(out.status.success(), "mailroom {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// A finished command's status and both streams, for an assertion's message.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The names in a data folder that a refused start must leave as they were: all but the
/// database (compared by its content) and the lock file (the start's own).
pub fn data_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("meta.db") && name != "serve.lock")
        .collect();
    names.sort();
    names
}

/// The line number an error names (`…, line N, …`), if it names one.
pub fn error_line(err: &str) -> Option<usize> {
    err.split("line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

/// One paramiko login (with an SFTP listing when it succeeds) as `user` on `127.0.0.1:port`
/// from the local address `from`, with a keyboard-interactive `code` after the password if
/// given; the test-support driver's `{ok, error, seconds}`.
pub async fn paramiko_login(
    python: &Path,
    port: u16,
    user: &str,
    password: &str,
    from: &str,
    code: Option<&str>,
) -> serde_json::Value {
    let port = port.to_string();
    let mut args = vec![
        "login",
        "127.0.0.1",
        &port,
        user,
        "--password",
        password,
        "--bind",
        from,
    ];
    if let Some(code) = code {
        args.extend(["--code", code]);
    }
    let answer = mailroom_test_support::paramiko(python, &args).await;
    serde_json::from_str(&answer).unwrap()
}

/// Whether a paramiko login was refused before SSH: it never read a server banner.
pub fn refused_at_connect(answer: &serde_json::Value) -> bool {
    answer["ok"] == false
        && answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("SSH protocol banner"))
}

/// Whether a paramiko login got as far as authentication and was refused there.
pub fn refused_at_login(answer: &serde_json::Value) -> bool {
    answer["ok"] == false
        && answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("AuthenticationException"))
}
