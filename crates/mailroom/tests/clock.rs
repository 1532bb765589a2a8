//! The clock check with the real binary: through the documented test hook
//! (`MAILROOM_TEST_CLOCK=unsynchronised`, never the machine's clock), `serve` records one
//! `clock.unsynchronised` event at start and warns in its log, and `status` shows the state;
//! without the hook `status` shows what the kernel answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

const HOOK: (&str, &str) = ("MAILROOM_TEST_CLOCK", "unsynchronised");

/// The `clock.unsynchronised` events of the audit trail.
fn clock_events(data: &Path) -> Vec<serde_json::Value> {
    let out = common::ok(data, &["--json", "audit", "list", "--limit", "1000"]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    events
        .into_iter()
        .filter(|event| event["kind"] == "clock.unsynchronised")
        .collect()
}

#[test]
fn an_unsynchronised_clock_is_recorded_once_at_start_and_shown_by_status() {
    let site = tempfile::tempdir().unwrap();
    let data = site.path().join("data");
    common::ok(&data, &["init"]);
    assert_eq!(clock_events(&data), Vec::<serde_json::Value>::new());

    let mut command = common::mailroom(&data, &["serve"]);
    command
        .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
        .env("MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS", "5")
        .env(HOOK.0, HOOK.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    // The look at start comes before the first listener: once one listens, it is recorded.
    let listening = lines_rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("no listening line: {:?}", child.try_wait()));
    assert!(listening.contains("listening on"), "{listening}");

    let events = clock_events(&data);
    assert_eq!(events.len(), 1, "one event per crossing: {events:?}");
    assert_eq!(events[0]["outcome"], "failed", "{events:?}");
    assert_eq!(events[0]["object"], "clock", "{events:?}");
    assert!(
        events[0]["detail"]
            .as_str()
            .unwrap()
            .contains("MAILROOM_TEST_CLOCK"),
        "{events:?}"
    );

    // status, with the hook: the state and its reason, in the table and in JSON.
    let out = common::mailroom(&data, &["status"])
        .env(HOOK.0, HOOK.1)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(
            "clock:            unsynchronised (reported by the test hook MAILROOM_TEST_CLOCK)"
        ),
        "{table}"
    );
    let out = common::mailroom(&data, &["--json", "status"])
        .env(HOOK.0, HOOK.1)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["clock"]["state"], "unsynchronised", "{status}");

    // Without the hook, what the kernel says: this machine's state, but never "unknown".
    let status: serde_json::Value =
        serde_json::from_str(&common::ok(&data, &["--json", "status"])).unwrap();
    let state = status["clock"]["state"].as_str().unwrap();
    assert!(
        ["synchronised", "unsynchronised"].contains(&state),
        "{status}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap();
    assert!(
        log.contains("the clock is not synchronised"),
        "no warning in the log: {log}"
    );
    // Still one: the hourly looks had not come, and a stop records none.
    assert_eq!(clock_events(&data).len(), 1);
}
