//! The certificate commands end to end: `init` creates the PKI with private modes,
//! `ca issue-client` writes a certificate that chains to the client CA (checked here with
//! x509-parser, as a client would read it, signature included), and its refusals exit 1 with
//! one sentence and write nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use x509_parser::pem::Pem;
use x509_parser::prelude::X509Certificate;

mod common;
use common::mailroom;

fn run(data: &Path, args: &[&str]) -> Output {
    mailroom(data, args).output().unwrap()
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = run(data, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Exit code 1, one sentence on standard error containing `expect`.
fn refused(data: &Path, args: &[&str], expect: &str) {
    let out = run(data, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.contains(expect), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn pems(path: &Path) -> Vec<Pem> {
    let bytes = std::fs::read(path).unwrap();
    Pem::iter_from_buffer(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn initialised() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    ok(&data, &["init"]);
    (temp, data)
}

/// Every file under `dir` (the database aside), with its contents, for "nothing changed"
/// checks.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    mailroom_test_support::files_under(dir)
        .into_iter()
        .filter(|path| !path.to_string_lossy().contains("meta.db"))
        .map(|path| {
            let content = std::fs::read(&path).unwrap();
            (path, content)
        })
        .collect()
}

#[test]
fn init_creates_the_pki_with_private_keys() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let report = ok(&data, &["init"]);
    let tls = data.join("tls");
    assert_eq!(mode(&tls), 0o700);
    for (name, expected) in [
        ("server-ca.crt", 0o644),
        ("server-ca.key", 0o600),
        ("server.crt", 0o644),
        ("server.key", 0o600),
        ("client-ca.crt", 0o644),
        ("client-ca.key", 0o600),
    ] {
        assert_eq!(mode(&tls.join(name)), expected, "{name}");
        assert!(
            report.contains(&format!("tls/{name}")),
            "{name} in {report}"
        );
    }
    let before = snapshot(&tls);
    let again = ok(&data, &["init"]);
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(snapshot(&tls), before);

    let shown = ok(&data, &["ca", "show", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let roles: Vec<&str> = shown["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["server CA", "server certificate", "client CA"]);
    assert!(!shown.to_string().contains("PRIVATE KEY"));
}

#[test]
fn issue_client_writes_a_certificate_that_chains_to_the_client_ca() {
    let (temp, data) = initialised();
    ok(&data, &["account", "add", "alice"]);
    let out_dir = temp.path().join("certs");
    let printed = ok(
        &data,
        &[
            "ca",
            "issue-client",
            "alice",
            "--out",
            out_dir.to_str().unwrap(),
            "--days",
            "30",
        ],
    );
    assert_eq!(mode(&out_dir.join("alice.key")), 0o600);
    assert_eq!(mode(&out_dir.join("alice.crt")), 0o644);
    assert!(!printed.contains("PRIVATE KEY"));

    let chain = pems(&out_dir.join("alice.crt"));
    assert_eq!(chain.len(), 2, "the certificate, then the client CA");
    let leaf: X509Certificate = chain[0].parse_x509().unwrap();
    let ca_file = pems(&data.join("tls/client-ca.crt"));
    let ca: X509Certificate = ca_file[0].parse_x509().unwrap();
    assert_eq!(chain[1].contents, ca_file[0].contents);
    assert_eq!(leaf.issuer(), ca.subject());
    leaf.verify_signature(Some(ca.public_key()))
        .expect("signed by the client CA");
    let server_ca_file = pems(&data.join("tls/server-ca.crt"));
    let server_ca: X509Certificate = server_ca_file[0].parse_x509().unwrap();
    assert!(leaf.verify_signature(Some(server_ca.public_key())).is_err());
    let cn: Vec<&str> = leaf
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["alice"]);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let days = (leaf.validity().not_after.timestamp() - time_now()) / 86_400;
    assert!((29..=30).contains(&days), "{days}");
    let fingerprint = hex_sha256(&chain[0].contents);
    assert!(printed.contains(&fingerprint), "{printed}");

    let issued = std::fs::read_to_string(data.join("tls/issued.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(issued.trim()).unwrap();
    assert_eq!(record["cn"], "alice");
    assert_eq!(record["fingerprint_sha256"], fingerprint.as_str());
    assert_eq!(record["serial"], hex::encode(leaf.raw_serial()));

    // A second certificate into the same folder would overwrite the first: refused.
    let before = snapshot(temp.path());
    refused(
        &data,
        &[
            "ca",
            "issue-client",
            "alice",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        "already exists",
    );
    assert_eq!(snapshot(temp.path()), before);
}

#[test]
fn issue_client_refusals_write_nothing() {
    let (temp, data) = initialised();
    ok(&data, &["account", "add", "root2", "--admin"]);
    ok(&data, &["account", "add", "alice"]);
    let out_dir = temp.path().join("certs");
    let out = out_dir.to_str().unwrap();
    for (args, expect) in [
        (vec!["ca", "issue-client", "nobody", "--out", out], "nobody"),
        (
            vec!["ca", "issue-client", "root2", "--out", out],
            "root2 is an admin account",
        ),
        (
            vec!["ca", "issue-client", "alice", "--out", out, "--days", "0"],
            "days must be",
        ),
        (vec!["ca", "issue-client", "Bad Name", "--out", out], ""),
    ] {
        let before = snapshot(temp.path());
        refused(&data, &args, expect);
        assert_eq!(snapshot(temp.path()), before, "{args:?}");
        assert!(!data.join("tls/issued.jsonl").exists());
    }
    assert!(
        !out_dir.exists(),
        "the output folder is made only for a certificate"
    );

    // With an external client CA configured, ours issues nothing.
    let config = data.join("mailroom.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replacen(
        "\n[tls]\n",
        "\n[tls]\nclient_ca_bundle = \"/etc/pki/partners.pem\"\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let before = snapshot(temp.path());
    refused(
        &data,
        &["ca", "issue-client", "alice", "--out", out],
        "the client CA is external; issue client certificates there",
    );
    assert_eq!(snapshot(temp.path()), before);
}

#[test]
fn a_host_name_change_reissues_the_server_certificate_on_init() {
    let (_temp, data) = initialised();
    let ca_before = std::fs::read(data.join("tls/server-ca.crt")).unwrap();
    let cert_before = std::fs::read(data.join("tls/server.crt")).unwrap();
    let report = String::from_utf8(
        mailroom(&data, &["init"])
            .env("MAILROOM_TLS_HOSTNAMES", "[\"files.example.com\"]")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(report.contains("tls/server.crt"), "{report}");
    assert_eq!(
        std::fs::read(data.join("tls/server-ca.crt")).unwrap(),
        ca_before
    );
    let cert_after = std::fs::read(data.join("tls/server.crt")).unwrap();
    assert_ne!(cert_after, cert_before);
    let pem = &pems(&data.join("tls/server.crt"))[0];
    let leaf: X509Certificate = pem.parse_x509().unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        format!("{:?}", san.general_names),
        "[DNSName(\"files.example.com\")]"
    );
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
