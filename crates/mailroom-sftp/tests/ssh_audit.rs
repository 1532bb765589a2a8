//! ssh-audit (from PyPI, installed into the test venv by `.ci/run`) judges the algorithms the
//! SSH front end offers: no failures, strict key exchange (the Terrapin counter-measure,
//! `kex-strict-s-v00@openssh.com`) offered, and no CBC cipher, SHA-1 MAC or key exchange, or
//! NIST curve anywhere in what we offer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use mailroom_test_support::{TestHub, paramiko_python, run, skip, text};
use serde_json::Value;

/// The `ssh-audit` entry point beside the test venv's Python. Absent, or no venv with
/// paramiko at all: a [`skip`], which fails the test under `CI` (CI skips nothing).
fn ssh_audit() -> Option<PathBuf> {
    let python = paramiko_python()?;
    let audit = python.parent().map(|dir| dir.join("ssh-audit"));
    match audit {
        Some(audit) if audit.exists() => Some(audit),
        _ => {
            skip(&format!(
                "ssh-audit is not installed beside {}",
                python.display()
            ));
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_audit_finds_no_failures_and_strict_kex() {
    let Some(audit) = ssh_audit() else {
        return;
    };
    let hub = TestHub::start().await;
    let port = hub.addr.port().to_string();
    let mut command = tokio::process::Command::new(&audit);
    command.args(["-j", "-p", &port, "127.0.0.1"]);
    let output = run(command).await;
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("ssh-audit JSON: {err}: {}", text(&output)));
    // Exit codes (ssh_audit/exitcodes.py): 0 good, 2 warnings, 3 failures. Warnings are
    // expected: curve25519 is not post-quantum, and the non-etm MACs kept for libssh2
    // before 1.11 (Debian 12's curl) are encrypt-and-MAC.
    let status = output.status.code();
    assert!(
        matches!(status, Some(0 | 2)),
        "ssh-audit exit {status:?}: {report:#}"
    );
    let mut offered = Vec::new();
    for section in ["kex", "key", "enc", "mac"] {
        for entry in report[section].as_array().into_iter().flatten() {
            let name = entry["algorithm"].as_str().unwrap_or_default().to_owned();
            let fails = &entry["notes"]["fail"];
            assert!(
                fails.is_null() || fails.as_array().is_some_and(Vec::is_empty),
                "{section} {name}: {fails}"
            );
            offered.push(name);
        }
    }
    assert!(
        offered
            .iter()
            .any(|name| name == "kex-strict-s-v00@openssh.com"),
        "strict kex not offered: {offered:?}"
    );
    for name in &offered {
        let weak = [
            "cbc",
            "sha1",
            "nistp",
            "ecdh-sha2",
            "group1-",
            "group14-",
            "md5",
        ];
        assert!(
            !weak.iter().any(|w| name.contains(w)),
            "weak algorithm offered: {name}"
        );
    }
    assert_eq!(report["cves"], Value::Array(Vec::new()), "{report:#}");
    eprintln!("ssh-audit exit {status:?}, offered {offered:?}");
    let failures = text(&output).matches("[fail]").count();
    assert_eq!(failures, 0, "{}", text(&output));
}
