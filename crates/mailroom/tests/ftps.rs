//! The binary serves FTPS with the certificates `init` made: enabled by configuration alone,
//! it answers curl over explicit and implicit TLS with the data folder's server CA trusted,
//! and a client that does not trust that CA is refused.

// Tests may unwrap (CONTRIBUTING.md): a failed unwrap is a failed check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mailroom_test_support::{free_port_range, have};

const PASSWORD: &str = "Correct-Horse-Battery-9";

#[test]
fn serve_speaks_ftps_with_the_certificates_of_init() {
    if !have("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = common::mailroom(&data, &["init"]).output().unwrap();
    assert!(init.status.success());
    let mut add = common::mailroom(&data, &["account", "add", "alice", "--password-stdin"]);
    let mut child = add.stdin(Stdio::piped()).spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());

    let passive = free_port_range(5);
    let mut serve = common::mailroom(&data, &["serve"]);
    serve
        .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
        .env("MAILROOM_FTPS_ENABLED", "true")
        .env("MAILROOM_FTPS_LISTEN", "127.0.0.1:0")
        .env("MAILROOM_FTPS_IMPLICIT_LISTEN", "127.0.0.1:0")
        .env(
            "MAILROOM_FTPS_PASSIVE_PORTS",
            format!("{}-{}", passive.start(), passive.end()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut server = serve.spawn().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = server.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut address, mut implicit) = (None, None);
    while address.is_none() || implicit.is_none() {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("no ftps listening lines");
        if let Some(found) = line.strip_prefix("mailroom: ftps listening on ") {
            address = Some(found.to_owned());
        }
        if let Some(found) = line.strip_prefix("mailroom: ftps-implicit listening on ") {
            implicit = Some(found.to_owned());
        }
    }
    let (address, implicit) = (address.unwrap(), implicit.unwrap());

    let ca = data.join("tls/server-ca.crt");
    assert!(ca.exists(), "init made no server CA");
    let curl = |url: &str, trust: bool| {
        let mut command = Command::new("curl");
        command.args(["-sS", "--max-time", "60", "--ssl-reqd", "--user"]);
        command.arg(format!("alice:{PASSWORD}"));
        if trust {
            command.arg("--cacert").arg(&ca);
        }
        command.arg(url);
        command.output().unwrap()
    };
    for url in [format!("ftp://{address}/"), format!("ftps://{implicit}/")] {
        let listed = curl(&url, true);
        let listing = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
        for folder in ["inbox", "outbox", "sent"] {
            assert!(listing.contains(folder), "{url}: {listing}");
        }
        // Without the data folder's CA the server certificate is not trusted.
        let untrusted = curl(&url, false);
        assert!(!untrusted.status.success(), "{url}");
    }

    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(server.wait().unwrap().success());
}
