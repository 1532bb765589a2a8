//! The agent binary against a real hub over TLS: login with a CA or a pinned certificate
//! trusted on first use, send, inbox, fetch with checksums and acknowledgement, and every
//! refusal with its exit code and nothing changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::{Agent, json_lines};
use mailroom_core::{AuthConfig, DeliveryState};
use mailroom_test_support::{TestClient, TestHub, random_bytes, sha256_file};
use sha2::Digest as _;

async fn hub_with_pair() -> (TestHub, TestClient, TestClient) {
    let hub = TestHub::start_https(mailroom_https::Config::default(), AuthConfig::default()).await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    (hub, alice, bob)
}

fn write(path: &Path, data: &[u8]) -> String {
    std::fs::write(path, data).unwrap();
    sha256_file(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_inbox_and_fetch_with_checksums_and_acknowledgement() {
    let (hub, alice, bob) = hub_with_pair().await;
    let (sender, receiver) = (Agent::new(), Agent::new());
    sender.login_ca(&hub, &alice).await;
    receiver.login_ca(&hub, &bob).await;
    // The tokens are the user's alone.
    let mode = std::fs::metadata(sender.session())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let outbox = hub.local_dir("outbox");
    let mut csv = String::new();
    for line in 0..120_000 {
        csv.push_str(&format!("INV-{line:08};ACME;{}.00\n", line * 7 % 9_973));
    }
    let ledger = outbox.join("ledger.csv");
    let ledger_sha = write(&ledger, csv.as_bytes());
    let photo = outbox.join("photo.bin");
    let photo_sha = write(&photo, &random_bytes(9 << 20, 7));
    let run = sender
        .run(
            &[
                "--json",
                "send",
                "--to",
                "bob",
                ledger.to_str().unwrap(),
                photo.to_str().unwrap(),
            ],
            None,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sent = json_lines(&run.stdout);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["sha256"], ledger_sha);
    assert_eq!(sent[1]["sha256"], photo_sha);
    assert_eq!(sent[1]["delivered_to"], serde_json::json!(["bob"]));

    let run = receiver.run(&["--json", "inbox"], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let inbox = json_lines(&run.stdout);
    assert_eq!(inbox.len(), 2);
    assert!(inbox.iter().all(|d| d["sender"] == "alice"));

    let down = hub.local_dir("down");
    let run = receiver
        .run(
            &[
                "--json",
                "fetch",
                "--all",
                "--to",
                down.to_str().unwrap(),
                "--ack",
            ],
            None,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json_lines(&run.stdout).len(), 2);
    assert_eq!(sha256_file(&down.join("ledger.csv")), ledger_sha);
    assert_eq!(sha256_file(&down.join("photo.bin")), photo_sha);
    // Nothing half-written stays behind.
    let names: Vec<String> = std::fs::read_dir(&down)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        hub.deliveries()
            .await
            .iter()
            .all(|d| d.state == DeliveryState::Acknowledged)
    );
    let run = receiver.run(&["--json", "inbox"], None).await;
    assert_eq!(run.stdout, "");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_shows_the_fingerprint_and_pins_it() {
    let (hub, alice, _) = hub_with_pair().await;
    let agent = Agent::new();
    let base = hub.https().base.clone();
    let password = format!("{}\n", alice.password);
    let login = |extra: Vec<String>| {
        let mut args = vec![
            "login".to_owned(),
            base.clone(),
            "--user".to_owned(),
            "alice".to_owned(),
            "--password-stdin".to_owned(),
        ];
        args.extend(extra);
        args
    };
    // No terminal and no fingerprint: refused, with the fingerprint to check.
    let args = login(Vec::new());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = agent.run(&args, Some(&password)).await;
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
    assert!(!agent.session().exists(), "nothing saved");
    // The server certificate's own fingerprint.
    let pem = std::fs::read_to_string(hub.https().tls_dir.join("server.crt")).unwrap();
    let der: Vec<u8> = {
        use base64::Engine as _;
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    };
    assert_eq!(fingerprint, hex::encode(sha2::Sha256::digest(&der)));

    // A different fingerprint: refused.
    let args = login(vec!["--trust-fingerprint".to_owned(), "ab".repeat(32)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = agent.run(&args, Some(&password)).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not the one given"), "{}", run.stderr);
    assert!(!agent.session().exists());

    // The right one: pinned, and the session works.
    let args = login(vec!["--trust-fingerprint".to_owned(), fingerprint.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = agent.run(&args, Some(&password)).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(agent.run(&["inbox"], None).await.code, 0);

    // Another certificate than the pinned one: refused, never retried, nothing sent.
    let text = std::fs::read_to_string(agent.session()).unwrap();
    std::fs::write(
        agent.session(),
        text.replace(&fingerprint, &"cd".repeat(32)),
    )
    .unwrap();
    let run = agent.run(&["inbox"], None).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("certificate changed"), "{}", run.stderr);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_exit_with_their_codes_and_change_nothing() {
    let (hub, alice, _) = hub_with_pair().await;
    hub.client("carol").await;
    let agent = Agent::new();
    // Not logged in.
    let run = agent.run(&["inbox"], None).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("not logged in"), "{}", run.stderr);
    // A wrong password.
    let ca = hub.https().ca.display().to_string();
    let base = hub.https().base.clone();
    let run = agent
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
            Some("Wrong-horse-battery-9\n"),
        )
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!agent.session().exists());
    // A compression the hub does not know: 400 naming both lists, exit 3.
    let run = agent
        .run(
            &[
                "login",
                &base,
                "--user",
                "alice",
                "--password-stdin",
                "--ca",
                &ca,
                "--compression",
                "brotli",
            ],
            Some(&format!("{}\n", alice.password)),
        )
        .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the client offered [brotli], the hub supports [none, zstd, gzip]"),
        "{}",
        run.stderr
    );
    agent.login_ca(&hub, &alice).await;
    // No route to carol: refused, nothing delivered.
    let file = hub.local_dir("refused").join("a.txt");
    std::fs::write(&file, b"not for carol").unwrap();
    let before = hub.snapshot().await;
    let run = agent
        .run(&["send", "--to", "carol", file.to_str().unwrap()], None)
        .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(hub.snapshot().await, before);
    // An unknown delivery.
    let run = agent.run(&["fetch", "0000"], None).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    hub.stop().await;
}

/// Every 32-byte block of `plain` at a multiple of 32: a 64-byte run of `plain` anywhere in
/// another text holds one of them whole, so finding none proves no such run is there.
fn blocks(plain: &[u8]) -> std::collections::HashSet<&[u8]> {
    plain.chunks_exact(32).collect()
}

/// Whether any block of `blocks` occurs in `stored`.
fn holds_any(stored: &[u8], blocks: &std::collections::HashSet<&[u8]>) -> bool {
    stored.windows(32).any(|w| blocks.contains(w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_files_reach_only_their_recipients_keys() {
    let hub = TestHub::start_https(mailroom_https::Config::default(), AuthConfig::default()).await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    let carol = hub.client("carol").await;
    hub.client("dave").await;
    hub.group("team", &["bob", "carol"]).await;
    for to in ["team", "dave"] {
        hub.allow("alice", to).await;
    }
    // alice -> bob carries only end-to-end encrypted files.
    hub.hub
        .set_route_rule(
            &TestHub::admin(),
            mailroom_core::Route {
                from: mailroom_core::AccountName::parse("alice").unwrap(),
                to: mailroom_core::AccountName::parse("bob").unwrap(),
                effect: mailroom_core::RouteEffect::Allow,
                require_e2e: true,
            },
        )
        .await
        .unwrap();
    let (sender, for_bob, for_carol) = (Agent::new(), Agent::new(), Agent::new());
    sender.login_ca(&hub, &alice).await;
    for_bob.login_ca(&hub, &bob).await;
    for_carol.login_ca(&hub, &carol).await;
    // Each recipient makes an identity; its public half goes to the hub.
    for agent in [&for_bob, &for_carol] {
        let run = agent.run(&["key", "generate"], None).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let identity = agent.config.path().join("identity.txt");
        let mode = std::fs::metadata(&identity).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(hub.account("bob").await.e2e_keys.len(), 1);

    // A text that compresses well and repeats no 32-byte block.
    let mut text = String::new();
    for line in 0..40_000 {
        text.push_str(&format!(
            "{line:06} {}\n",
            hex::encode(sha2::Sha256::digest(line.to_string()))
        ));
    }
    let outbox = hub.local_dir("e2e-out");
    let report = outbox.join("report.txt");
    let report_sha = write(&report, text.as_bytes());
    let report = report.to_str().unwrap();

    // Plain to bob: refused by the route, nothing delivered.
    let before = hub.snapshot().await;
    let run = sender.run(&["send", "--to", "bob", report], None).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("requires end-to-end encryption"),
        "{}",
        run.stderr
    );
    // To dave, who has no key: refused before a byte is sent.
    let run = sender
        .run(&["send", "--e2e", "--to", "dave", report], None)
        .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("dave has no end-to-end key"),
        "{}",
        run.stderr
    );
    assert_eq!(hub.snapshot().await, before);

    // To the group, end to end: one ciphertext, for both members' keys.
    let run = sender
        .run(&["--json", "send", "--e2e", "--to", "team", report], None)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let deliveries = hub.deliveries().await;
    assert_eq!(deliveries.len(), 2);
    assert!(deliveries.iter().all(|d| d.e2e), "{deliveries:?}");
    assert!(deliveries.iter().all(|d| d.sha256 != report_sha));
    // Nothing the hub stored holds the text, or any 64-byte run of it: not the blob, not
    // the database, not its journal.
    let plain = blocks(text.as_bytes());
    // (The test's own folders, `local-…`, live beside the hub's.)
    let stored: Vec<_> = mailroom_test_support::files_under(hub.dir.path())
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("/local-"))
        .collect();
    assert!(!stored.is_empty());
    for path in &stored {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !holds_any(&bytes, &plain),
            "{} holds plaintext",
            path.display()
        );
    }

    // Each member's agent decrypts with its own identity; the inbox marks the file.
    for agent in [&for_bob, &for_carol] {
        let run = agent.run(&["--json", "inbox"], None).await;
        assert_eq!(json_lines(&run.stdout)[0]["e2e"], true, "{}", run.stdout);
        let down = hub.local_dir("e2e-in");
        let run = agent
            .run(&["fetch", "--all", "--to", down.to_str().unwrap()], None)
            .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(sha256_file(&down.join("report.txt")), report_sha);
    }
    // Another identity does not decrypt it, and nothing is written.
    let stranger = Agent::new();
    let identity = stranger.config.path().join("stranger.txt");
    std::fs::write(
        &identity,
        format!(
            "{}\n",
            age::secrecy::ExposeSecret::expose_secret(
                &age::x25519::Identity::generate().to_string()
            )
        ),
    )
    .unwrap();
    let down = hub.local_dir("e2e-stranger");
    let run = for_bob
        .run(
            &[
                "fetch",
                "--all",
                "--to",
                down.to_str().unwrap(),
                "--identity",
                identity.to_str().unwrap(),
            ],
            None,
        )
        .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("cannot decrypt"), "{}", run.stderr);
    assert!(!down.join("report.txt").exists());
    hub.stop().await;
}
