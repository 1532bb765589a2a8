//! The SSH front end offers the negotiated methods of `[ace.*]`: compression that OpenSSH's
//! `sftp -C` takes (the client's own byte counts show the file crossed smaller), algorithm
//! lists that ssh-audit reads back exactly as configured, and login methods left out that are
//! neither offered nor accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailroom_ace::{Ace, Category, Method, MethodLists, default_lists};
use mailroom_core::AuthConfig;
use mailroom_test_support::{TestHub, have, paramiko_python, run, sha256_file, skip, text};
use serde_json::Value;

fn methods(keywords: &[&str]) -> Vec<Method> {
    keywords.iter().map(|k| k.parse().unwrap()).collect()
}

/// An `Ace` with `category`'s supported list replaced.
fn ace_with(category: Category, supported: &[&str]) -> Ace {
    let lists = |c: Category| {
        let mut lists: MethodLists = default_lists(c);
        if c == category {
            lists.supported = methods(supported);
            lists.default.retain(|m| lists.supported.contains(m));
            lists
                .service_default
                .retain(|m| lists.supported.contains(m));
            lists
                .needs_authentication
                .retain(|m| lists.supported.contains(m));
        }
        lists
    };
    Ace::new(
        &lists(Category::Authentication),
        &lists(Category::Compression),
        &lists(Category::Encryption),
    )
    .unwrap()
}

/// "Transferred: sent N, received M bytes": what the OpenSSH client itself counted on the
/// wire (printed at `-v`).
fn bytes_sent(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|line| line.starts_with("Transferred: sent "))
        .unwrap_or_else(|| panic!("no transfer summary in: {stderr}"));
    line["Transferred: sent ".len()..]
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sftp_compression_sends_a_compressible_file_smaller() {
    if !have("sftp") {
        return;
    }
    let hub = TestHub::start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let local = hub.local_dir("compress");
    // 4 MiB of invoice lines: the kind of file that compresses well.
    let mut body = String::new();
    let mut line = 0u64;
    while body.len() < 4 << 20 {
        body.push_str(&format!(
            "INV-{line:08};ACME Corp;2026-12-02;EUR;{:>10}.00;net 30\n",
            line * 7 % 100_000
        ));
        line += 1;
    }
    let mut sent = Vec::new();
    for (name, compress) in [("plain.csv", false), ("packed.csv", true)] {
        let file = local.join(name);
        std::fs::write(&file, &body).unwrap();
        let options: &[&str] = if compress { &["-v", "-C"] } else { &["-v"] };
        let command = hub.sftp_command_with(
            &alice,
            Some(&format!("put {} /outbox/bob/\n", file.display())),
            options,
        );
        let out = run(command).await;
        assert!(out.status.success(), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if compress {
            assert!(
                stderr.contains("Enabling compression"),
                "compression was not negotiated: {stderr}"
            );
        }
        sent.push(bytes_sent(&stderr));
        // The hub stored the file as sent, whatever crossed the wire.
        let sha = sha256_file(&file);
        assert!(
            hub.deliveries()
                .await
                .iter()
                .any(|d| d.sha256 == sha && d.name.as_str() == name),
            "{name} not delivered intact"
        );
    }
    let (plain, packed) = (sent[0], sent[1]);
    println!(
        "4 MiB of CSV over sftp: {plain} bytes sent plain, {packed} with -C (zlib@openssh.com)"
    );
    assert!(plain > 4 << 20, "plain sent {plain}");
    assert!(packed * 4 < plain, "compressed {packed} vs plain {plain}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_compression_configured_sftp_c_falls_back_to_none() {
    if !have("sftp") {
        return;
    }
    let ace = ace_with(Category::Compression, &["none", "zstd", "gzip"]);
    let hub = TestHub::start_ssh_methods(
        mailroom_sftp::Config::default(),
        AuthConfig::default(),
        ace.ssh().unwrap(),
    )
    .await;
    let alice = hub.client("alice").await;
    let out = run(hub.sftp_command_with(&alice, Some("ls /\n"), &["-v", "-C"])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Enabling compression"),
        "{}",
        text(&out)
    );
    hub.stop().await;
}

/// The ssh-audit entry point beside the test venv's Python.
fn ssh_audit() -> Option<std::path::PathBuf> {
    let audit = paramiko_python()?.parent()?.join("ssh-audit");
    if audit.exists() {
        Some(audit)
    } else {
        skip("ssh-audit is not installed beside the test venv's python");
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_algorithm_lists_are_what_ssh_audit_sees() {
    let Some(audit) = ssh_audit() else {
        return;
    };
    let mut encryption = default_lists(Category::Encryption);
    encryption.supported = methods(&[
        "tls",
        "tls+e2e",
        "tls:1.3",
        "tls-suite:TLS13_AES_256_GCM_SHA384",
        "ssh-kex:curve25519-sha256",
        "ssh-cipher:aes256-gcm@openssh.com",
        "ssh-cipher:aes128-ctr",
        "ssh-mac:hmac-sha2-256-etm@openssh.com",
    ]);
    let ace = Ace::new(
        &default_lists(Category::Authentication),
        &default_lists(Category::Compression),
        &encryption,
    )
    .unwrap();
    let hub = TestHub::start_ssh_methods(
        mailroom_sftp::Config::default(),
        AuthConfig::default(),
        ace.ssh().unwrap(),
    )
    .await;
    let port = hub.addr.port().to_string();
    let mut command = tokio::process::Command::new(&audit);
    command.args(["-j", "-p", &port, "127.0.0.1"]);
    let output = run(command).await;
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("ssh-audit JSON: {err}: {}", text(&output)));
    let names = |section: &str| -> Vec<String> {
        report[section]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| entry["algorithm"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names("kex"),
        [
            "curve25519-sha256",
            "ext-info-s",
            "kex-strict-s-v00@openssh.com"
        ]
    );
    assert_eq!(names("enc"), ["aes256-gcm@openssh.com", "aes128-ctr"]);
    assert_eq!(names("mac"), ["hmac-sha2-256-etm@openssh.com"]);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_method_left_out_is_neither_offered_nor_accepted() {
    if !have("sftp") {
        return;
    }
    // Public keys left out: alice's key is refused, and nothing of hers changes.
    let ace = ace_with(
        Category::Authentication,
        &["password", "totp", "certificate", "token"],
    );
    let hub = TestHub::start_ssh_methods(
        mailroom_sftp::Config::default(),
        AuthConfig::default(),
        ace.ssh().unwrap(),
    )
    .await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let before = hub.snapshot().await;
    let file = hub.local_dir("refused").join("a.txt");
    std::fs::write(&file, b"never sent").unwrap();
    let out = hub
        .sftp(&alice, &format!("put {} /outbox/bob/\n", file.display()))
        .await;
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The client's refusal names the methods the server takes: no publickey.
    let offered = stderr
        .lines()
        .find(|line| line.contains("Permission denied ("))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(!offered.contains("publickey"), "{offered}");
    assert!(offered.contains("password"), "{offered}");
    assert_eq!(hub.snapshot().await, before);
    hub.stop().await;
}
