//! sslyze (from PyPI, installed into the test venv by `.ci/run`) judges the FTPS front end's
//! TLS against Mozilla's "intermediate" server profile on both FTPS ports: `sslyze
//! --mozilla_config intermediate` (with `--starttls ftp` for explicit FTPS) exits 0 only when
//! the server is compliant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mailroom_core::{AuthConfig, DefenderConfig, parse_network};
use mailroom_test_support::{TestHub, paramiko_python, run, skip, text};
use serde_json::Value;

/// The `sslyze` entry point beside the test venv's Python. Absent, or no venv at all: a
/// [`skip`], which fails the test under `CI` (CI skips nothing).
fn sslyze() -> Option<PathBuf> {
    let python = paramiko_python()?;
    let sslyze = python.parent().map(|dir| dir.join("sslyze"));
    match sslyze {
        Some(sslyze) if sslyze.exists() => Some(sslyze),
        _ => {
            skip(&format!(
                "sslyze is not installed beside {}",
                python.display()
            ));
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_finds_ftps_compliant_with_mozilla_intermediate() {
    let Some(sslyze) = sslyze() else {
        return;
    };
    // A scanner opens hundreds of connections that never log in: the defender would ban it
    // (score_no_authentication) before the scan ends, so loopback is on its safe list.
    let auth = AuthConfig {
        defender: DefenderConfig {
            safe: vec![parse_network("127.0.0.0/8").unwrap()],
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    };
    let hub = TestHub::start_ftps_full(mailroom_ftps::Config::default(), auth).await;
    let explicit = format!("127.0.0.1:{}", hub.ftps().addr.port());
    scan(&hub, &sslyze, &["--starttls", "ftp"], &explicit).await;
    let implicit = format!("127.0.0.1:{}", hub.ftps().implicit.port());
    scan(&hub, &sslyze, &[], &implicit).await;
    hub.stop().await;
}

/// Scans `target` and checks the verdict and the protocols accepted.
async fn scan(hub: &TestHub, sslyze: &Path, starttls: &[&str], target: &str) {
    // The JSON goes to a file: stdout keeps the human report, which names each failed
    // check of the Mozilla profile.
    let json = hub.local_dir("sslyze").join("report.json");
    // The profile requires a certificate that validates: our server CA is private, so
    // sslyze is given it the way every client is (`--cacert DATA/tls/server-ca.crt`).
    let mut command = tokio::process::Command::new(sslyze);
    command
        .args(starttls)
        .args(["--mozilla_config", "intermediate"])
        .arg("--certinfo_ca_file")
        .arg(&hub.ftps().ca)
        .arg("--json_out")
        .arg(&json)
        .arg(target);
    let output = run(command).await;
    // Exit 0: every scan ran and the server is compliant; 1: not compliant (the report's
    // last section names each failed check); 2 and up: the scan itself failed.
    assert!(
        output.status.success(),
        "sslyze exit {:?} on {target}: {}",
        output.status.code(),
        text(&output)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap())
        .unwrap_or_else(|err| panic!("sslyze JSON: {err}: {}", text(&output)));
    let server = &report["server_scan_results"][0];
    assert_eq!(server["scan_status"], "COMPLETED", "{server:#}");
    let scans = &server["scan_result"];
    // Belt and braces beside the exit status: no protocol below TLS 1.2 is accepted, and
    // every scan the profile needs ran without an error of its own.
    for old in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert_eq!(scans[old]["status"], "COMPLETED", "{old}: {:#}", scans[old]);
        let accepted = &scans[old]["result"]["accepted_cipher_suites"];
        assert_eq!(accepted, &Value::Array(Vec::new()), "{old}: {accepted:#}");
    }
    for new in ["tls_1_2_cipher_suites", "tls_1_3_cipher_suites"] {
        let accepted = scans[new]["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap();
        assert!(!accepted.is_empty(), "{new}: nothing accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_sees_exactly_the_configured_tls_versions_and_suites() {
    let Some(sslyze) = sslyze() else {
        return;
    };
    let auth = AuthConfig {
        defender: DefenderConfig {
            safe: vec![parse_network("127.0.0.0/8").unwrap()],
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    };
    let config = mailroom_ftps::Config {
        encryption: [
            "tls:1.3",
            "tls-suite:TLS13_CHACHA20_POLY1305_SHA256",
            "tls-suite:TLS13_AES_256_GCM_SHA384",
        ]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect(),
        ..mailroom_ftps::Config::default()
    };
    let hub = TestHub::start_ftps_full(config, auth).await;
    let target = format!("127.0.0.1:{}", hub.ftps().implicit.port());
    let json = hub.local_dir("sslyze-narrow").join("report.json");
    let mut command = tokio::process::Command::new(&sslyze);
    command
        .args([
            "--tlsv1",
            "--tlsv1_1",
            "--tlsv1_2",
            "--tlsv1_3",
            "--json_out",
        ])
        .arg(&json)
        .arg(&target);
    let output = run(command).await;
    assert!(output.status.success(), "{}", text(&output));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let scans = &report["server_scan_results"][0]["scan_result"];
    let accepted = |scan: &str| -> Vec<String> {
        assert_eq!(
            scans[scan]["status"], "COMPLETED",
            "{scan}: {:#}",
            scans[scan]
        );
        let mut names: Vec<String> = scans[scan]["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cipher_suite"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    for old in [
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
        "tls_1_2_cipher_suites",
    ] {
        assert_eq!(accepted(old), Vec::<String>::new(), "{old}");
    }
    assert_eq!(
        accepted("tls_1_3_cipher_suites"),
        ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
    );
    hub.stop().await;
}
