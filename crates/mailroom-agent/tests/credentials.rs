//! The agent's other credentials against a real hub over TLS: an API key kept instead of
//! tokens (sends and receives within its scopes, refused with exit code 2 once revoked and
//! never refreshed), and a client certificate presented in every handshake (alone, with a
//! password for two factors, or refused when another CA issued it), each refusal with its
//! exit code and nothing sent or saved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Agent, json_lines};
use mailroom_core::{AccountName, AuthConfig, DeliveryState, FactorSet, KeyScope, KeyScopes};
use mailroom_test_support::{TestHub, random_bytes, sha256_file};

fn name(text: &str) -> AccountName {
    AccountName::parse(text).unwrap()
}

/// Makes an API key for `account`, as `mailroom account api-key add` does (one Hub call):
/// its id and its secret.
async fn api_key(hub: &TestHub, account: &str, scopes: &[KeyScope]) -> (String, String) {
    let (key, secret) = hub
        .hub
        .create_api_key(
            &TestHub::admin(),
            &name(account),
            "agent on srv-1",
            KeyScopes::of(scopes.iter().copied()),
            None,
        )
        .await
        .unwrap();
    (key.id, secret.expose().clone())
}

/// A client certificate with CN `account` from the client CA of the PKI in `tls_dir`, in a
/// fresh folder under the hub's data folder: its certificate and key files.
fn issue(hub: &TestHub, tls_dir: &Path, account: &str) -> (String, String) {
    let pki = mailroom_tls::load_pki(tls_dir).unwrap();
    let out = hub.local_dir(&format!("cert-{account}"));
    let issued = mailroom_tls::issue_client(&pki, account, 30, &out).unwrap();
    (
        issued.cert_path.display().to_string(),
        issued.key_path.display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_sends_and_receives_within_its_scopes_until_it_is_revoked() {
    let hub = TestHub::start_https(mailroom_https::Config::default(), AuthConfig::default()).await;
    hub.client("alice").await;
    hub.client("bob").await;
    hub.allow("alice", "bob").await;
    hub.allow("bob", "alice").await;
    let base = hub.https().base.clone();
    let ca = hub.https().ca.display().to_string();
    let (alice_id, alice_key) = api_key(&hub, "alice", &[KeyScope::Send, KeyScope::Receive]).await;
    let (bob_id, bob_key) = api_key(&hub, "bob", &[KeyScope::Receive]).await;

    // A key the hub does not know: refused at login, exit 2, nothing saved.
    let stranger = Agent::new();
    let unknown = format!("mrk_{}_{}", "0".repeat(32), "a".repeat(64));
    let run = stranger
        .run(
            &["login", &base, "--api-key-stdin", "--ca", &ca],
            Some(&format!("{unknown}\n")),
        )
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("refused the API key"), "{}", run.stderr);
    assert!(!stranger.session().exists());
    // Something that is not a key at all: a local mistake, said before any request.
    let run = stranger
        .run(
            &["login", &base, "--api-key-stdin", "--ca", &ca],
            Some("hunter2\n"),
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("not an API key"), "{}", run.stderr);
    assert!(!stranger.session().exists());

    // The sender's key from standard input: kept instead of tokens, 0600.
    let sender = Agent::new();
    let run = sender
        .run(
            &["--json", "login", &base, "--api-key-stdin", "--ca", &ca],
            Some(&format!("{alice_key}\n")),
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let shown = &json_lines(&run.stdout)[0];
    assert_eq!(shown["api_key"], alice_id.as_str());
    assert_eq!(shown["ace"]["compression"], "zstd", "{shown}");
    assert!(
        !run.stdout.contains(&alice_key),
        "the secret is never shown"
    );
    let saved = sender.saved();
    assert_eq!(saved["api_key"], alice_key.as_str());
    assert!(saved.get("access_token").is_none(), "{saved}");
    assert!(saved.get("refresh_token").is_none(), "{saved}");

    // The receiver's key (receive only) from an environment variable.
    let receiver = Agent::new();
    let run = receiver
        .run_with(
            &["login", &base, "--api-key-env", "BOB_KEY", "--ca", &ca],
            None,
            &[("BOB_KEY", &bob_key)],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&bob_id), "{}", run.stdout);
    assert_eq!(receiver.saved()["api_key"], bob_key.as_str());

    // Send, inbox and fetch work with the keys.
    let outbox = hub.local_dir("outbox");
    let report = outbox.join("report.bin");
    std::fs::write(&report, random_bytes(3 << 20, 11)).unwrap();
    let report_sha = sha256_file(&report);
    let run = sender
        .run(
            &["--json", "send", "--to", "bob", report.to_str().unwrap()],
            None,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json_lines(&run.stdout)[0]["sha256"], report_sha.as_str());
    let run = receiver.run(&["--json", "inbox"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let inbox = json_lines(&run.stdout);
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["sender"], "alice");
    let down = hub.local_dir("down");
    let run = receiver
        .run(
            &["fetch", "--all", "--ack", "--to", down.to_str().unwrap()],
            None,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sha256_file(&down.join("report.bin")), report_sha);
    let deliveries = hub.deliveries().await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].state, DeliveryState::Acknowledged);

    // A receive-only key cannot send: the hub's words, exit 3, nothing delivered.
    let reply = outbox.join("reply.txt");
    std::fs::write(&reply, b"thanks").unwrap();
    let before = hub.snapshot().await;
    let run = receiver
        .run(&["send", "--to", "alice", reply.to_str().unwrap()], None)
        .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("lacks the send scope"),
        "{}",
        run.stderr
    );
    assert_eq!(hub.snapshot().await, before);

    // Revoked, as `mailroom account api-key revoke alice ID` does: the next command is
    // refused at once (exit 2, no refresh), naming the key, and nothing reaches bob.
    hub.hub
        .revoke_api_key(&TestHub::admin(), &name("alice"), &alice_id)
        .await
        .unwrap();
    let before = hub.snapshot().await;
    let run = sender
        .run(&["send", "--to", "bob", report.to_str().unwrap()], None)
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("the hub refused the API key {alice_id}")),
        "{}",
        run.stderr
    );
    assert_eq!(hub.snapshot().await, before);
    let run = receiver.run(&["--json", "inbox"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "", "bob's inbox is as it was: empty");
    // The key stays in the session (a key is not refreshed or replaced behind one's back).
    assert_eq!(sender.saved()["api_key"], alice_key.as_str());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_alone_or_with_a_password_and_another_ca_is_refused() {
    let config = mailroom_https::Config {
        client_certificates: mailroom_tls::ClientAuth::Optional,
        ..mailroom_https::Config::default()
    };
    let hub = TestHub::start_https(config, AuthConfig::default()).await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.allow("alice", "bob").await;
    hub.set_access("alice", |access| {
        access.factors = FactorSet::parse("password,certificate").unwrap();
    })
    .await;
    hub.set_access("bob", |access| {
        access.factors = FactorSet::parse("certificate").unwrap();
    })
    .await;
    let base = hub.https().base.clone();
    let ca = hub.https().ca.display().to_string();
    let tls_dir = hub.https().tls_dir.clone();
    let (alice_cert, alice_key) = issue(&hub, &tls_dir, "alice");
    let (bob_cert, bob_key) = issue(&hub, &tls_dir, "bob");

    // Bob's certificate alone, the account taken from its CN.
    let bob = Agent::new();
    let run = bob
        .run(
            &[
                "login", &base, "--cert", &bob_cert, "--key", &bob_key, "--ca", &ca,
            ],
            None,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("as bob"), "{}", run.stdout);
    let saved = bob.saved();
    assert_eq!(saved["client_certificate"]["cert"], bob_cert.as_str());
    assert_eq!(saved["client_certificate"]["key"], bob_key.as_str());
    let text = std::fs::read_to_string(bob.session()).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "the key is not copied");
    let logins = hub
        .events(mailroom_core::EventKind::Login, mailroom_core::Outcome::Ok)
        .await;
    let last = logins.last().unwrap();
    assert!(
        last.detail.contains("certificate"),
        "the hub took the certificate as the factor: {last:?}"
    );

    // Alice: her password alone is one factor short (named, exit 2, nothing saved); with
    // her certificate it is two.
    let alice_agent = Agent::new();
    let password = format!("{}\n", alice.password);
    let run = alice_agent
        .run(
            &[
                "login",
                &base,
                "--user",
                "alice",
                "--password-stdin",
                "--ca",
                &ca,
            ],
            Some(&password),
        )
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("certificate"), "{}", run.stderr);
    assert!(!alice_agent.session().exists());
    let run = alice_agent
        .run(
            &[
                "login",
                &base,
                "--user",
                "alice",
                "--password-stdin",
                "--cert",
                &alice_cert,
                "--key",
                &alice_key,
                "--ca",
                &ca,
            ],
            Some(&password),
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("as alice"), "{}", run.stdout);

    // Alice sends, bob's certificate session sees it in his inbox.
    let file = hub.local_dir("out").join("a.txt");
    std::fs::write(&file, b"signed, sealed, delivered").unwrap();
    let run = alice_agent
        .run(&["send", "--to", "bob", file.to_str().unwrap()], None)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = bob.run(&["--json", "inbox"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let inbox = json_lines(&run.stdout);
    assert_eq!(inbox.len(), 1, "{}", run.stdout);
    assert_eq!(inbox[0]["sender"], "alice");

    // A certificate for bob from another CA: refused in the handshake, exit 2, nothing saved.
    let elsewhere = tempfile::tempdir().unwrap();
    mailroom_tls::ensure_pki(elsewhere.path(), &mailroom_tls::PkiSettings::default()).unwrap();
    let (forged_cert, forged_key) = issue(&hub, elsewhere.path(), "bob");
    let mallory = Agent::new();
    let run = mallory
        .run(
            &[
                "login",
                &base,
                "--cert",
                &forged_cert,
                "--key",
                &forged_key,
                "--ca",
                &ca,
            ],
            None,
        )
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("refused the client certificate"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&forged_cert), "{}", run.stderr);
    assert!(!mallory.session().exists());

    // Files that are not there are named, before anything is sent.
    let missing = format!("{bob_cert}.missing");
    let run = mallory
        .run(
            &[
                "login", &base, "--cert", &missing, "--key", &bob_key, "--ca", &ca,
            ],
            None,
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&missing), "{}", run.stderr);
    // A key that is not the certificate's.
    let run = mallory
        .run(
            &[
                "login", &base, "--cert", &bob_cert, "--key", &alice_key, "--ca", &ca,
            ],
            None,
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("not a certificate and its private key"),
        "{}",
        run.stderr
    );
    assert!(!mallory.session().exists());
    // A saved session whose key file has gone names it.
    std::fs::rename(&bob_key, format!("{bob_key}.moved")).unwrap();
    let run = bob.run(&["inbox"], None).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&bob_key), "{}", run.stderr);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_requires_certificates_is_pinned_and_served_with_the_certificate() {
    let config = mailroom_https::Config {
        client_certificates: mailroom_tls::ClientAuth::Required,
        ..mailroom_https::Config::default()
    };
    let hub = TestHub::start_https(config, AuthConfig::default()).await;
    hub.client("bob").await;
    hub.set_access("bob", |access| {
        access.factors = FactorSet::parse("certificate").unwrap();
    })
    .await;
    let base = hub.https().base.clone();
    let tls_dir = hub.https().tls_dir.clone();
    let (cert, key) = issue(&hub, &tls_dir, "bob");
    let bob = Agent::new();
    let login = |extra: &[&str]| {
        let mut args = vec![
            "login",
            base.as_str(),
            "--cert",
            cert.as_str(),
            "--key",
            key.as_str(),
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };

    // First use: the hub ends the probe's handshake for want of a client certificate, but
    // the fingerprint it presented is shown all the same.
    let args = login(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = bob.run(&args, None).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let fingerprint = run
        .stderr
        .split("--trust-fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{}", run.stderr))
        .trim_end_matches(',')
        .to_owned();
    assert_eq!(fingerprint.len(), 64);
    assert!(!bob.session().exists());

    let args = login(&["--trust-fingerprint", &fingerprint]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = bob.run(&args, None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = bob.run(&["inbox"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Every later connection presents the certificate: without it in the session, the
    // hub ends the handshake, and the agent says what it wants (exit 2, not retried).
    let mut saved = bob.saved();
    saved
        .as_object_mut()
        .unwrap()
        .remove("client_certificate")
        .unwrap();
    std::fs::write(bob.session(), saved.to_string()).unwrap();
    let run = bob.run(&["inbox"], None).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("the hub requires a client certificate")
            && run.stderr.contains("CertificateRequired"),
        "{}",
        run.stderr
    );
    hub.stop().await;
}
