//! Outside scanners judge the real binary's TLS on every TLS port: the HTTPS API's, explicit
//! FTPS (AUTH TLS) and implicit FTPS. testssl.sh (Debian's `testssl.sh` package; protocols,
//! server defaults, server preferences and vulnerabilities, `--fast`) fails the test on any
//! finding of severity HIGH or CRITICAL not in [`TESTSSL_EXCEPTIONS`], and on a scan that did
//! not run; sslyze (the test venv's) must find each port compliant with Mozilla's
//! "intermediate" profile. A missing tool is a `skip`, which fails under CI (`.ci/run`
//! installs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mailroom_test_support::skip;
use serde_json::Value;

mod common;

/// Findings of testssl.sh at HIGH or above that are known and accepted: the finding's id,
/// why it is accepted, and when to look at it again. Keep each one justified.
const TESTSSL_EXCEPTIONS: [(&str, &str, &str); 2] = [
    (
        "cipher_order",
        "the client chooses among the suites the hub offers, as Mozilla's intermediate profile \
         recommends (sslyze checks it): every suite offered is AEAD with forward secrecy, so no \
         client choice is weak; testssl.sh 3.0 rates any missing server order HIGH",
        "2027-06-01",
    ),
    (
        "cert_revocation",
        "the hub's own server CA (tls/) issues short-lived server certificates that clients pin \
         or trust by the CA file, without CRL or OCSP; a certificate from a public CA \
         ([tls] cert_file) brings its CA's revocation",
        "2027-06-01",
    ),
];

/// Severities that fail the scan.
const FAILING: [&str; 2] = ["HIGH", "CRITICAL"];

/// A `mailroom serve` with HTTPS and both FTPS listeners on free ports, and loopback on the
/// defender's safe list (a scanner opens hundreds of connections that never log in).
struct Server {
    _site: tempfile::TempDir,
    data: PathBuf,
    child: Child,
    /// `https`, `ftps`, `ftps-implicit` → the address each listens on.
    listening: Vec<(String, String)>,
}

impl Server {
    fn start() -> Server {
        let site = tempfile::tempdir().unwrap();
        let data = site.path().join("data");
        common::ok(&data, &["init"]);
        let mut command = common::mailroom(&data, &["serve"]);
        command
            .env("MAILROOM_SFTP_ENABLED", "false")
            .env("MAILROOM_FTPS_ENABLED", "true")
            .env("MAILROOM_FTPS_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_FTPS_IMPLICIT_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_AUTH_SAFE_NETWORKS", "[\"127.0.0.0/8\"]")
            .env("MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS", "5")
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
        // The log is drained so the server never blocks on a full pipe.
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log);
        });
        let mut listening = Vec::new();
        while listening.len() < 3 {
            let line = lines_rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("listeners so far: {listening:?}"));
            if let Some((protocol, address)) = line
                .strip_prefix("mailroom: ")
                .and_then(|rest| rest.split_once(" listening on "))
            {
                listening.push((protocol.to_owned(), address.to_owned()));
            }
        }
        Server {
            _site: site,
            data,
            child,
            listening,
        }
    }

    fn address(&self, protocol: &str) -> &str {
        &self
            .listening
            .iter()
            .find(|(p, _)| p == protocol)
            .unwrap_or_else(|| panic!("no {protocol} listener: {:?}", self.listening))
            .1
    }

    /// The server CA every client is given.
    fn ca(&self) -> PathBuf {
        self.data.join("tls/server-ca.crt")
    }

    /// The three TLS ports: a name, the address, and whether TLS starts with AUTH TLS.
    fn targets(&self) -> [(&'static str, String, bool); 3] {
        [
            ("https", self.address("https").to_owned(), false),
            ("ftps explicit", self.address("ftps").to_owned(), true),
            (
                "ftps implicit",
                self.address("ftps-implicit").to_owned(),
                false,
            ),
        ]
    }

    fn stop(mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        assert!(self.child.wait().unwrap().success());
    }
}

/// testssl.sh on PATH (Debian names it `testssl`), or a [`skip`].
fn testssl() -> Option<PathBuf> {
    for name in ["testssl", "testssl.sh"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .unwrap();
        if found.status.success() {
            let path = String::from_utf8(found.stdout).unwrap();
            return Some(PathBuf::from(path.trim()));
        }
    }
    skip("testssl.sh is not installed (Debian package testssl.sh)");
    None
}

/// The test venv's sslyze, beside its Python, or a [`skip`].
fn sslyze() -> Option<PathBuf> {
    let python = mailroom_test_support::python_with("sslyze")?;
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

#[test]
fn testssl_finds_nothing_high_or_critical_on_https_and_both_ftps_ports() {
    let Some(testssl) = testssl() else {
        return;
    };
    let server = Server::start();
    let reports = tempfile::tempdir().unwrap();
    // The three scans at once: each waits on the network far more than it computes.
    let scans: Vec<_> = server
        .targets()
        .into_iter()
        .enumerate()
        .map(|(n, (name, address, starttls))| {
            let json = reports.path().join(format!("{n}.json"));
            let mut command = Command::new(&testssl);
            command
                .args(["--quiet", "--color", "0", "--warnings", "off", "--fast"])
                .args(["--protocols", "--server-defaults", "--server-preference"])
                .arg("--vulnerable")
                .arg("--add-ca")
                .arg(server.ca())
                .arg("--jsonfile")
                .arg(&json)
                .stdin(Stdio::null());
            if starttls {
                command.args(["--starttls", "ftp"]);
            }
            command.arg(&address);
            let child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (name, json, child)
        })
        .collect();
    let mut failures = Vec::new();
    for (name, json, child) in scans {
        let output = child.wait_with_output().unwrap();
        let report = std::fs::read(&json).unwrap_or_else(|err| {
            panic!(
                "testssl.sh wrote no report for {name} ({err}): {}",
                common::text(&output)
            )
        });
        let findings: Vec<Value> = serde_json::from_slice(&report).unwrap();
        failures.extend(judge(name, &findings));
    }
    server.stop();
    assert!(
        failures.is_empty(),
        "testssl.sh findings:\n{}",
        failures.join("\n")
    );
}

/// What fails in one port's findings: a HIGH or CRITICAL finding not excepted, a scan error,
/// or a report that shows the scan did not reach the server.
fn judge(name: &str, findings: &[Value]) -> Vec<String> {
    let mut failures = Vec::new();
    let field = |finding: &Value, key: &str| finding[key].as_str().unwrap_or("").to_owned();
    for finding in findings {
        let (id, severity) = (field(finding, "id"), field(finding, "severity"));
        let excepted = TESTSSL_EXCEPTIONS.iter().any(|(except, ..)| *except == id);
        if (FAILING.contains(&severity.as_str()) && !excepted) || severity == "FATAL" {
            failures.push(format!(
                "{name}: {id} {severity}: {}",
                field(finding, "finding")
            ));
        }
    }
    // The scan ran: it saw TLS 1.3 offered and SSLv3 not.
    let finding_of = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| field(f, "finding"))
    };
    match finding_of("TLS1_3") {
        Some(finding) if finding.starts_with("offered") => {}
        other => failures.push(format!("{name}: TLS 1.3 not seen offered: {other:?}")),
    }
    match finding_of("SSLv3") {
        Some(finding) if finding.starts_with("not offered") => {}
        other => failures.push(format!("{name}: SSLv3 not seen refused: {other:?}")),
    }
    failures
}

#[test]
fn sslyze_finds_https_and_both_ftps_ports_compliant_with_mozilla_intermediate() {
    let Some(sslyze) = sslyze() else {
        return;
    };
    let server = Server::start();
    let reports = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (n, (name, address, starttls)) in server.targets().into_iter().enumerate() {
        let json = reports.path().join(format!("{n}.json"));
        let mut command = Command::new(&sslyze);
        if starttls {
            command.args(["--starttls", "ftp"]);
        }
        let output = command
            .args(["--mozilla_config", "intermediate"])
            .arg("--certinfo_ca_file")
            .arg(server.ca())
            .arg("--json_out")
            .arg(&json)
            .arg(&address)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // Exit 0: compliant; 1: not (the report names each failed check); 2: no scan.
        if !output.status.success() {
            failures.push(format!("{name}: {}", common::text(&output)));
            continue;
        }
        failures.extend(sslyze_incomplete(name, &json));
    }
    server.stop();
    assert!(failures.is_empty(), "sslyze:\n{}", failures.join("\n"));
}

/// Belt and braces beside sslyze's exit status: the scan completed, and accepted nothing
/// below TLS 1.2.
fn sslyze_incomplete(name: &str, json: &Path) -> Vec<String> {
    let report: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let server = &report["server_scan_results"][0];
    if server["scan_status"] != "COMPLETED" {
        return vec![format!("{name}: scan {}", server["scan_status"])];
    }
    let scans = &server["scan_result"];
    [
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ]
    .into_iter()
    .filter(|old| scans[old]["result"]["accepted_cipher_suites"] != Value::Array(Vec::new()))
    .map(|old| format!("{name}: {old}: {}", scans[old]))
    .collect()
}

#[test]
fn every_testssl_exception_says_why_and_when_to_look_again() {
    for (id, reason, review) in TESTSSL_EXCEPTIONS {
        assert!(!id.is_empty() && reason.len() > 40, "{id}: {reason}");
        let date: Vec<&str> = review.split('-').collect();
        assert!(
            date.len() == 3 && date.iter().all(|p| p.parse::<u32>().is_ok()),
            "{id}: review date {review:?} is not YYYY-MM-DD"
        );
    }
    // The judging itself: an excepted HIGH passes, another HIGH, a CRITICAL or a FATAL fails.
    let finding = |id: &str, severity: &str, text: &str| serde_json::json!({"id": id, "severity": severity, "finding": text});
    let ran = [
        finding("TLS1_3", "OK", "offered with final"),
        finding("SSLv3", "OK", "not offered"),
    ];
    let with = |extra: Value| {
        let mut findings = ran.to_vec();
        findings.push(extra);
        judge("test", &findings)
    };
    assert_eq!(
        with(finding("cipher_order", "HIGH", "x")),
        Vec::<String>::new()
    );
    assert_eq!(with(finding("BREACH", "MEDIUM", "x")), Vec::<String>::new());
    assert_eq!(with(finding("heartbleed", "HIGH", "x")).len(), 1);
    assert_eq!(
        with(finding("cert_chain_of_trust", "CRITICAL", "x")).len(),
        1
    );
    assert_eq!(with(finding("scanProblem", "FATAL", "x")).len(), 1);
    assert_eq!(judge("test", &[]).len(), 2, "an empty report is no pass");
}
