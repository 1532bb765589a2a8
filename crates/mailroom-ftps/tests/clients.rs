//! The FTPS front end driven by real clients (curl, lftp, Python ftplib) against a TestHub on
//! port 0: round trips, refusals that change nothing, login rules (a one-time code appended
//! to the password included), the data-channel rules, an interrupted upload, and a session
//! closed by the hub.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mailroom_core::{
    AccountName, AuthConfig, Clock, DefenderConfig, DeliveryState, EventKind, FactorSet, Outcome,
    Protocol, Secret, parse_network, totp_code,
};
use mailroom_test_support::{
    TestClient, TestHub, eventually, have, run, sha256_file, text, write_random,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// The ftplib driver's steps, parsed.
async fn ftplib(hub: &TestHub, user: &str, password: &str, ops: &[&str]) -> Vec<Value> {
    hub.ftplib(user, password, ops)
        .await
        .iter()
        .map(|line| json(line))
        .collect()
}

/// A hub serving FTPS with alice allowed to send to bob, and loopback on the safe list so
/// that refusal tests are not cut short by a ban (the defender has its own test).
async fn hub_with_route() -> (TestHub, TestClient, TestClient) {
    let auth = AuthConfig {
        defender: DefenderConfig {
            safe: vec![parse_network("127.0.0.0/8").unwrap()],
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    };
    let hub = TestHub::start_ftps_full(mailroom_ftps::Config::default(), auth).await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.client("carol").await;
    hub.allow("alice", "bob").await;
    (hub, alice, bob)
}

fn state_of(hub_deliveries: &[mailroom_core::Delivery], name: &str) -> Vec<DeliveryState> {
    hub_deliveries
        .iter()
        .filter(|d| d.name.as_str() == name)
        .map(|d| d.state)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_uploads_lists_downloads_acknowledges_and_recalls() {
    if !have("curl") {
        return;
    }
    let (hub, alice, bob) = hub_with_route().await;
    let local = hub.local_dir("curl");
    let sent = local.join("report.bin");
    let sha = write_random(&sent, 3 * 1024 * 1024 + 17, 1);

    let up = hub
        .curl_ftps(
            &alice,
            &[
                "-T",
                sent.to_str().unwrap(),
                &hub.ftps_url("/outbox/bob/report.bin"),
            ],
        )
        .await;
    assert!(up.status.success(), "{}", text(&up));
    let deliveries = hub.deliveries().await;
    assert_eq!(
        state_of(&deliveries, "report.bin"),
        [DeliveryState::Delivered]
    );
    assert_eq!(deliveries[0].sha256, sha);
    let uploads = hub.events(EventKind::Upload, Outcome::Ok).await;
    assert_eq!(uploads.last().unwrap().protocol, Protocol::Ftps);

    let list = hub.curl_ftps(&bob, &[&hub.ftps_url("/inbox/alice/")]).await;
    assert!(list.status.success(), "{}", text(&list));
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(listing.contains("report.bin"), "{listing}");
    assert!(
        listing.contains(&(3 * 1024 * 1024 + 17).to_string()),
        "{listing}"
    );

    let got = local.join("got.bin");
    let down = hub
        .curl_ftps(
            &bob,
            &[
                "-o",
                got.to_str().unwrap(),
                &hub.ftps_url("/inbox/alice/report.bin"),
            ],
        )
        .await;
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(sha256_file(&got), sha);
    assert_eq!(
        state_of(&hub.deliveries().await, "report.bin"),
        [DeliveryState::PickedUp]
    );
    // A resumed download (REST): curl -C asks for the bytes from an offset on.
    let tail = local.join("tail.bin");
    let resumed = hub
        .curl_ftps(
            &bob,
            &[
                "-C",
                "1000000",
                "-o",
                tail.to_str().unwrap(),
                &hub.ftps_url("/inbox/alice/report.bin"),
            ],
        )
        .await;
    assert!(resumed.status.success(), "{}", text(&resumed));
    let whole = std::fs::read(&got).unwrap();
    assert_eq!(std::fs::read(&tail).unwrap(), whole[1_000_000..]);

    let delete = hub
        .curl_ftps(
            &bob,
            &["-Q", "DELE /inbox/alice/report.bin", &hub.ftps_url("/")],
        )
        .await;
    assert!(delete.status.success(), "{}", text(&delete));
    assert_eq!(
        state_of(&hub.deliveries().await, "report.bin"),
        [DeliveryState::Acknowledged]
    );

    // A sender recalls what is not picked up yet by deleting it from the outbox.
    let second = local.join("second.txt");
    write_random(&second, 1000, 2);
    let up = hub
        .curl_ftps(
            &alice,
            &[
                "-T",
                second.to_str().unwrap(),
                &hub.ftps_url("/outbox/bob/second.txt"),
            ],
        )
        .await;
    assert!(up.status.success(), "{}", text(&up));
    let recall = hub
        .curl_ftps(
            &alice,
            &["-Q", "DELE /outbox/bob/second.txt", &hub.ftps_url("/")],
        )
        .await;
    assert!(recall.status.success(), "{}", text(&recall));
    assert_eq!(
        state_of(&hub.deliveries().await, "second.txt"),
        [DeliveryState::Recalled]
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lftp_round_trip_with_tls_forced_on_both_channels() {
    if !have("lftp") {
        return;
    }
    let (hub, alice, bob) = hub_with_route().await;
    let local = hub.local_dir("lftp");
    let sent = local.join("data.bin");
    let sha = write_random(&sent, 2 * 1024 * 1024 + 5, 3);

    let up = hub
        .lftp(
            &alice,
            &format!("put {} -o /outbox/bob/data.bin", sent.display()),
        )
        .await;
    assert!(up.status.success(), "{}", text(&up));

    let got = local.join("got.bin");
    let down = hub
        .lftp(
            &bob,
            &format!(
                "cls -l /inbox/alice/; get /inbox/alice/data.bin -o {}; rm /inbox/alice/data.bin",
                got.display()
            ),
        )
        .await;
    assert!(down.status.success(), "{}", text(&down));
    assert!(String::from_utf8_lossy(&down.stdout).contains("data.bin"));
    assert_eq!(sha256_file(&got), sha);
    assert_eq!(
        state_of(&hub.deliveries().await, "data.bin"),
        [DeliveryState::Acknowledged]
    );
    hub.stop().await;
}

/// rclone (Debian's package) against the hub: explicit TLS with the hub's CA, data
/// connections resumed from the control session (Go's session cache).
async fn rclone(hub: &TestHub, client: &TestClient, args: &[&str]) -> std::process::Output {
    let mut obscure = tokio::process::Command::new("rclone");
    obscure.args(["obscure", &client.password]);
    let obscured = run(obscure).await;
    assert!(obscured.status.success(), "{}", text(&obscured));
    let mut command = tokio::process::Command::new("rclone");
    command
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_HUB_TYPE", "ftp")
        .env("RCLONE_CONFIG_HUB_HOST", "127.0.0.1")
        .env("RCLONE_CONFIG_HUB_PORT", hub.ftps().addr.port().to_string())
        .env("RCLONE_CONFIG_HUB_USER", &client.name)
        .env(
            "RCLONE_CONFIG_HUB_PASS",
            String::from_utf8_lossy(&obscured.stdout).trim(),
        )
        .env("RCLONE_CONFIG_HUB_EXPLICIT_TLS", "true")
        // Go trusts the roots in SSL_CERT_FILE: the hub's CA only (the ftp backend has no
        // CA option of its own).
        .env("SSL_CERT_FILE", &hub.ftps().ca)
        .args([
            "--retries",
            "1",
            "--low-level-retries",
            "1",
            "--contimeout",
            "20s",
        ])
        .args(args);
    run(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rclone_round_trip() {
    if !have("rclone") {
        return;
    }
    let (hub, alice, bob) = hub_with_route().await;
    let local = hub.local_dir("rclone");
    let sent = local.join("r.bin");
    let sha = write_random(&sent, 2 * 1024 * 1024 + 1, 10);

    let up = rclone(
        &hub,
        &alice,
        &["copyto", sent.to_str().unwrap(), "hub:/outbox/bob/r.bin"],
    )
    .await;
    assert!(up.status.success(), "{}", text(&up));
    assert_eq!(
        state_of(&hub.deliveries().await, "r.bin"),
        [DeliveryState::Delivered]
    );

    let list = rclone(&hub, &bob, &["lsl", "hub:/inbox/alice"]).await;
    assert!(list.status.success(), "{}", text(&list));
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains("r.bin") && listing.contains("2097153"),
        "{listing}"
    );

    let got = local.join("got.bin");
    let down = rclone(
        &hub,
        &bob,
        &["copyto", "hub:/inbox/alice/r.bin", got.to_str().unwrap()],
    )
    .await;
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(sha256_file(&got), sha);
    let delete = rclone(&hub, &bob, &["deletefile", "hub:/inbox/alice/r.bin"]).await;
    assert!(delete.status.success(), "{}", text(&delete));
    assert_eq!(
        state_of(&hub.deliveries().await, "r.bin"),
        [DeliveryState::Acknowledged]
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ftplib_round_trip_and_recall() {
    let (hub, alice, bob) = hub_with_route().await;
    let local = hub.local_dir("ftplib");
    let sent = local.join("x");
    let sha = write_random(&sent, 300_000, 4);
    let put = format!("put:{}:/outbox/bob/x", sent.display());
    let again = format!("put:{}:/outbox/bob/y", sent.display());

    let steps = ftplib(
        &hub,
        "alice",
        &alice.password,
        &[&put, "list:/outbox/bob", &again],
    )
    .await;
    assert!(steps.iter().all(|s| s["ok"] == true), "{steps:?}");
    assert!(
        steps[1]["reply"].as_str().unwrap().starts_with("226"),
        "{steps:?}"
    );

    assert!(steps[2]["lines"].to_string().contains(" x\""), "{steps:?}");

    let got = local.join("got");
    let get = format!("get:/inbox/alice/x:{}", got.display());
    let steps = ftplib(
        &hub,
        "bob",
        &bob.password,
        &["list:/inbox/alice", &get, "delete:/inbox/alice/x"],
    )
    .await;
    assert!(steps.iter().all(|s| s["ok"] == true), "{steps:?}");
    assert_eq!(sha256_file(&got), sha);

    let steps = ftplib(&hub, "alice", &alice.password, &["delete:/outbox/bob/y"]).await;
    assert!(steps.iter().all(|s| s["ok"] == true), "{steps:?}");
    let deliveries = hub.deliveries().await;
    assert_eq!(state_of(&deliveries, "x"), [DeliveryState::Acknowledged]);
    assert_eq!(state_of(&deliveries, "y"), [DeliveryState::Recalled]);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_denied_route_and_hostile_paths_are_refused_and_change_nothing() {
    let (hub, alice, _bob) = hub_with_route().await;
    let local = hub.local_dir("hostile");
    let file = local.join("f");
    write_random(&file, 1000, 5);
    let f = file.display();
    let before = hub.snapshot().await;
    let refused_before = hub.events(EventKind::Upload, Outcome::Refused).await.len();

    let long = "n".repeat(300);
    let deep = format!("/outbox/bob/{}/x", "d");
    let ops: Vec<String> = vec![
        format!("put:{f}:/outbox/carol/x"),  // no route alice -> carol
        format!("put:{f}:../../etc/passwd"), // above the root
        format!("put:{f}:/outbox/bob/../../../x"), // climbs out
        format!("put:{f}:/outbox/bob/{long}"), // name over 255 bytes
        format!("put:{f}:/outbox/bob/{}", "p/".repeat(600)), // path over 1024 bytes
        format!("put:{f}:{deep}"),           // deeper than the tree
        format!("put:{f}:/outbox/bob/evil\u{202E}txt.exe"), // bidi override
        format!("put:{f}:/inbox/bob/x"),     // the inbox is read-only
        format!("putlatin1:{f}:2f6f7574626f782f626f622fff2e747874"), // "/outbox/bob/\xff.txt"
        "cmd:MKD /outbox/newfolder".to_owned(),
        "cmd:RMD /outbox/bob".to_owned(),
        "cmd:REST 10".to_owned(),
        format!("put:{f}:/outbox/bob/resumed"), // STOR after REST 10
        "cmd:APPE /outbox/bob/x".to_owned(),
        "cmd:STOU".to_owned(),
        "cmd:DELE /inbox/bob/nothing".to_owned(),
    ];
    let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
    let steps = ftplib(&hub, "alice", &alice.password, &ops).await;
    assert_eq!(steps.len(), ops.len() + 1, "{steps:?}");
    for (op, step) in ops.iter().zip(&steps[1..]) {
        if *op == "cmd:REST 10" {
            assert_eq!(step["ok"], true, "{op}: {step}");
            continue;
        }
        assert_eq!(step["ok"], false, "{op} was not refused: {step}");
        let reply = step["reply"].as_str().unwrap();
        assert!(reply.starts_with('5'), "{op}: {reply}");
    }
    // The route refusal and the name refusals: 550 and 553.
    assert!(
        steps[1]["reply"].as_str().unwrap().starts_with("550"),
        "{:?}",
        steps[1]
    );
    assert!(
        steps[4]["reply"].as_str().unwrap().starts_with("553"),
        "{:?}",
        steps[4]
    );
    assert!(
        steps[9]["reply"].as_str().unwrap().starts_with("553"),
        "{:?}",
        steps[9]
    );

    assert_eq!(hub.snapshot().await, before);
    let refused = hub.events(EventKind::Upload, Outcome::Refused).await;
    assert!(refused.len() > refused_before, "no refused upload event");
    let route = refused
        .iter()
        .find(|e| e.object.contains("carol"))
        .expect("an event for the denied route");
    assert_eq!(route.protocol, Protocol::Ftps);
    assert_eq!(route.actor, "alice");

    // "%00" is three ordinary characters in FTP: it arrives as they are, never as a NUL.
    let steps = ftplib(
        &hub,
        "alice",
        &alice.password,
        &[&format!("put:{f}:/outbox/bob/a%00b")],
    )
    .await;
    assert_eq!(steps[1]["ok"], true, "{steps:?}");
    assert_eq!(
        state_of(&hub.deliveries().await, "a%00b"),
        [DeliveryState::Delivered]
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_before_auth_tls_gets_534_and_logs_nobody_in() {
    let (hub, alice, _bob) = hub_with_route().await;
    let before = hub.events(EventKind::Login, Outcome::Ok).await.len();
    let steps = ftplib(&hub, "alice", &alice.password, &["--plain"]).await;
    assert_eq!(steps[0]["ok"], false, "{steps:?}");
    assert!(
        steps[0]["reply"].as_str().unwrap().starts_with("534"),
        "{steps:?}"
    );
    assert_eq!(
        hub.events(EventKind::Login, Outcome::Ok).await.len(),
        before
    );
    // The password never reached the hub: no login verdict for alice either way.
    let refused = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(refused.iter().all(|e| e.actor != "alice"), "{refused:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_passwords_get_530_are_recorded_and_the_defender_bans() {
    let auth = AuthConfig {
        defender: DefenderConfig {
            threshold: 5,
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    };
    let hub = TestHub::start_ftps_full(mailroom_ftps::Config::default(), auth).await;
    let alice = hub.client("alice").await;
    let ok = ftplib(&hub, "alice", &alice.password, &[]).await;
    assert_eq!(ok[0]["ok"], true, "{ok:?}");

    let mut attempts = 0;
    while hub.hub.bans().await.unwrap().is_empty() {
        attempts += 1;
        assert!(attempts <= 3, "no ban after {attempts} attempts");
        let steps = ftplib(&hub, "alice", "Wrong-password-42", &[]).await;
        assert_eq!(steps[0]["ok"], false, "{steps:?}");
        assert!(
            steps[0]["reply"].as_str().unwrap().starts_with("530"),
            "{steps:?}"
        );
    }
    let refused = hub.events(EventKind::Login, Outcome::Refused).await;
    let wrong = refused
        .iter()
        .find(|e| e.actor == "alice")
        .expect("a refused login event for alice");
    assert_eq!(wrong.protocol, Protocol::Ftps);
    let bans = hub.hub.bans().await.unwrap();
    assert_eq!(bans[0].subject.key(), "127.0.0.1", "{bans:?}");

    // Banned: the right password does not get a greeting now.
    let steps = ftplib(&hub, "alice", &alice.password, &[]).await;
    assert_eq!(steps[0]["ok"], false, "{steps:?}");
    hub.stop().await;
}

/// Enrols `name` in TOTP and requires `factors` of it; the TOTP secret.
async fn require_totp(hub: &TestHub, name: &str, factors: &str) -> Secret<String> {
    let setup = hub
        .hub
        .enroll_totp(&TestHub::admin(), &AccountName::parse(name).unwrap())
        .await
        .unwrap();
    hub.set_access(name, |access| {
        access.factors = FactorSet::parse(factors).unwrap();
    })
    .await;
    setup.secret
}

/// The code of `secret` now on the hub's clock (the hub takes it for its 30 s step and one
/// step either side).
fn code_now(hub: &TestHub, secret: &Secret<String>) -> String {
    let now = u64::try_from(hub.clock.now().unix_timestamp()).unwrap();
    totp_code(secret.expose(), now).unwrap()
}

/// `client` with `:code` appended to its password, as FTP's PASS carries it.
fn with_code(client: &TestClient, code: &str) -> TestClient {
    TestClient {
        password: format!("{}:{code}", client.password),
        ..client.clone()
    }
}

/// Login events about `account` with `outcome`, oldest first.
async fn logins_of(hub: &TestHub, account: &str, outcome: Outcome) -> Vec<mailroom_core::Event> {
    hub.events(EventKind::Login, outcome)
        .await
        .into_iter()
        .filter(|event| event.actor == account)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_logs_in_with_the_code_after_the_password_and_the_code_works_once() {
    if !have("curl") {
        return;
    }
    let (hub, alice, _bob) = hub_with_route().await;
    let totp = require_totp(&hub, "alice", "password,totp").await;
    let local = hub.local_dir("curl-totp");
    let sent = local.join("coded.bin");
    let sha = write_random(&sent, 70_000, 7);

    // curl splits --user at the first colon: the password is "password:CODE".
    let coded = with_code(&alice, &code_now(&hub, &totp));
    let up = hub
        .curl_ftps(
            &coded,
            &[
                "-T",
                sent.to_str().unwrap(),
                &hub.ftps_url("/outbox/bob/coded.bin"),
            ],
        )
        .await;
    assert!(up.status.success(), "{}", text(&up));
    let deliveries = hub.deliveries().await;
    assert_eq!(
        state_of(&deliveries, "coded.bin"),
        [DeliveryState::Delivered]
    );
    assert_eq!(deliveries[0].sha256, sha);
    let ok = logins_of(&hub, "alice", Outcome::Ok).await;
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].detail, "password+totp");
    assert_eq!(ok[0].protocol, Protocol::Ftps);

    // The same code again: 530, and the second upload delivered nothing.
    let before = hub.snapshot().await;
    let again = hub
        .curl_ftps(
            &coded,
            &[
                "-T",
                sent.to_str().unwrap(),
                &hub.ftps_url("/outbox/bob/again.bin"),
            ],
        )
        .await;
    assert_eq!(again.status.code(), Some(67), "{}", text(&again));
    assert!(text(&again).contains("530"), "{}", text(&again));
    assert_eq!(hub.snapshot().await, before);
    assert!(state_of(&hub.deliveries().await, "again.bin").is_empty());
    assert_eq!(logins_of(&hub, "alice", Outcome::Ok).await.len(), 1);
    let refused = logins_of(&hub, "alice", Outcome::Refused).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].detail, "totp: wrong or reused code");
    assert_eq!(refused[0].protocol, Protocol::Ftps);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lftp_logs_in_with_the_code_after_the_password_lists_and_uploads() {
    if !have("lftp") {
        return;
    }
    let (hub, alice, _bob) = hub_with_route().await;
    let totp = require_totp(&hub, "alice", "password,totp").await;
    let local = hub.local_dir("lftp-totp");
    let sent = local.join("lftp-coded.bin");
    let sha = write_random(&sent, 300_000, 8);

    let coded = with_code(&alice, &code_now(&hub, &totp));
    let session = hub
        .lftp(
            &coded,
            &format!(
                "cls -1 /; put {} -o /outbox/bob/lftp-coded.bin; cls -l /sent/bob/",
                sent.display()
            ),
        )
        .await;
    assert!(session.status.success(), "{}", text(&session));
    let listing = String::from_utf8_lossy(&session.stdout);
    for name in ["inbox", "outbox", "sent", "lftp-coded.bin"] {
        assert!(listing.contains(name), "{name} not listed: {listing}");
    }
    let deliveries = hub.deliveries().await;
    assert_eq!(
        state_of(&deliveries, "lftp-coded.bin"),
        [DeliveryState::Delivered]
    );
    assert_eq!(deliveries[0].sha256, sha);
    // One connection, one login, one code spent.
    let ok = logins_of(&hub, "alice", Outcome::Ok).await;
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].detail, "password+totp");
    assert!(logins_of(&hub, "alice", Outcome::Refused).await.is_empty());
    assert!(hub.account("alice").await.totp.unwrap().last_step.is_some());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_password_without_its_code_gets_530_says_how_and_changes_nothing() {
    if !have("curl") {
        return;
    }
    let (hub, alice, _bob) = hub_with_route().await;
    require_totp(&hub, "alice", "password,totp").await;
    let local = hub.local_dir("no-code");
    let sent = local.join("uncoded.bin");
    write_random(&sent, 1000, 9);
    let before = hub.snapshot().await;

    let up = hub
        .curl_ftps(
            &alice,
            &[
                "-T",
                sent.to_str().unwrap(),
                &hub.ftps_url("/outbox/bob/uncoded.bin"),
            ],
        )
        .await;
    assert_eq!(up.status.code(), Some(67), "{}", text(&up));
    assert!(text(&up).contains("530"), "{}", text(&up));
    // The client hears only "Login incorrect"; the operator reads how in the audit trail.
    assert!(!text(&up).contains("one-time"), "{}", text(&up));
    assert_eq!(hub.snapshot().await, before);
    assert!(logins_of(&hub, "alice", Outcome::Ok).await.is_empty());
    let refused = logins_of(&hub, "alice", Outcome::Refused).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0].detail,
        "ftps needs the one-time code appended to the password (PASS password:123456)"
    );
    assert_eq!(refused[0].protocol, Protocol::Ftps);
    assert_eq!(hub.account("alice").await.totp.unwrap().last_step, None);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn active_mode_is_refused_and_passive_ports_stay_in_range() {
    let (hub, alice, _bob) = hub_with_route().await;
    // A socket the server would connect to in active mode.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let port = trap.local_addr().unwrap().port();
    let port_cmd = format!("cmd:PORT 127,0,0,1,{},{}", port / 256, port % 256);
    let eprt_cmd = format!("cmd:EPRT |1|127.0.0.1|{port}|");
    let steps = ftplib(
        &hub,
        "alice",
        &alice.password,
        &[&port_cmd, &eprt_cmd, "cmd:PASV", "cmd:EPSV"],
    )
    .await;
    assert_eq!(steps[1]["ok"], false, "{steps:?}");
    assert!(
        steps[1]["reply"].as_str().unwrap().starts_with("502"),
        "{steps:?}"
    );
    assert_eq!(steps[2]["ok"], false, "{steps:?}");
    assert!(
        steps[2]["reply"].as_str().unwrap().starts_with('5'),
        "{steps:?}"
    );
    // The client has gone: anything the server had connected would be queued by now.
    assert_eq!(
        trap.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the server connected out"
    );

    let range = hub.ftps().passive.clone();
    let pasv = steps[3]["reply"].as_str().unwrap();
    assert!(pasv.starts_with("227"), "{pasv}");
    let numbers: Vec<u16> = pasv[pasv.find('(').unwrap() + 1..pasv.find(')').unwrap()]
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert_eq!(&numbers[..4], &[127, 0, 0, 1], "{pasv}");
    let pasv_port = numbers[4] * 256 + numbers[5];
    assert!(range.contains(&pasv_port), "{pasv_port} not in {range:?}");
    let epsv = steps[4]["reply"].as_str().unwrap();
    assert!(epsv.starts_with("229"), "{epsv}");
    let epsv_port: u16 = epsv
        .split('|')
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{epsv}"));
    assert!(range.contains(&epsv_port), "{epsv_port} not in {range:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_killed_mid_upload_delivers_nothing() {
    let (hub, alice, _bob) = hub_with_route().await;
    let before = hub.snapshot().await;
    let mut child = hub
        .ftplib_command(
            "alice",
            &alice.password,
            &["stall:/outbox/bob/big.bin:3145728"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for expected in ["login", "stall"] {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("driver output");
        let step = json(&line);
        assert_eq!(step["op"], expected, "{step}");
        assert_eq!(step["ok"], true, "{step}");
    }
    // The upload is under way once its bytes reach the staging area.
    assert!(
        eventually(Duration::from_secs(60), async || hub.staged_bytes() > 0).await,
        "timed out waiting for bytes in staging"
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    assert!(
        eventually(Duration::from_secs(60), async || {
            !hub.events(EventKind::Upload, Outcome::Failed)
                .await
                .is_empty()
        })
        .await,
        "timed out waiting for a failed upload event"
    );
    let failed = hub.events(EventKind::Upload, Outcome::Failed).await;
    assert_eq!(failed[0].protocol, Protocol::Ftps);
    assert!(hub.deliveries().await.is_empty());
    assert_eq!(hub.staged_bytes(), 0);
    assert_eq!(hub.snapshot().await, before);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_accounts_session_is_closed_within_seconds() {
    let (hub, alice, _bob) = hub_with_route().await;
    let mut child = hub
        .ftplib_command("alice", &alice.password, &["wait-closed"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let login = json(&lines.next_line().await.unwrap().expect("login line"));
    assert_eq!(login["ok"], true, "{login}");

    let disabled_at = Instant::now();
    hub.hub
        .set_disabled(
            &TestHub::admin(),
            &mailroom_core::AccountName::parse("alice").unwrap(),
            true,
        )
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("the session was not closed within 15 s")
        .unwrap()
        .expect("wait-closed line");
    let closed = json(&closed);
    assert_eq!(closed["op"], "wait-closed", "{closed}");
    assert!(disabled_at.elapsed() < Duration::from_secs(10));
    let events = hub.events(EventKind::SessionClosed, Outcome::Ok).await;
    assert!(
        events.iter().any(|e| e.object.contains("alice")),
        "{events:?}"
    );
    child.wait().await.unwrap();
    hub.stop().await;
}

/// Runs curl with TLS on the control connection only (`--ftp-ssl-control`), so that it
/// asks for clear-text data connections (PROT C), uploading `file` to `name`.
async fn curl_clear_data(
    hub: &TestHub,
    alice: &TestClient,
    file: &std::path::Path,
    extra: &[&str],
    name: &str,
) -> std::process::Output {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--ftp-ssl-control", "--max-time", "60", "--cacert"])
        .arg(&hub.ftps().ca)
        .arg("--user")
        .arg(format!("{}:{}", alice.name, alice.password))
        .args(extra)
        .arg("-T")
        .arg(file)
        .arg(hub.ftps_url(&format!("/outbox/bob/{name}")));
    run(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clear_text_data_connections_are_refused() {
    if !have("curl") {
        return;
    }
    let (hub, alice, _bob) = hub_with_route().await;
    let local = hub.local_dir("clear");
    let file = local.join("f");
    write_random(&file, 5000, 6);
    let before = hub.snapshot().await;

    // curl --ftp-ssl-control logs in over TLS and sends no PROT P: its EPSV and its PASV
    // are refused (534), so no data connection is ever opened.
    for (extra, name) in [
        (&[][..], "clear-epsv"),
        (&["--disable-epsv"][..], "clear-pasv"),
    ] {
        let out = curl_clear_data(&hub, &alice, &file, extra, name).await;
        assert!(!out.status.success(), "{name} accepted: {}", text(&out));
        assert!(text(&out).contains("534"), "{name}: {}", text(&out));
    }
    // PROT C, S and E are refused (536).
    let steps = ftplib(
        &hub,
        "alice",
        &alice.password,
        &["cmd:PROT C", "cmd:PROT S", "cmd:PROT E"],
    )
    .await;
    for step in &steps[1..] {
        assert!(
            step["reply"].as_str().unwrap().starts_with("536"),
            "{steps:?}"
        );
    }
    let mut raw = RawFtp::connect(hub.ftps().addr).await;
    raw.expect("220").await;
    raw.send("FEAT").await;
    let features = raw.expect("211").await;
    assert!(
        features.contains(" AUTH TLS") && features.contains(" EPSV"),
        "{features}"
    );
    raw.send("PBSZ 0").await;
    raw.expect("503").await;
    raw.send("USER alice").await;
    raw.expect("534").await;
    raw.send("STOR /outbox/bob/x").await;
    raw.expect("530").await;
    assert_eq!(hub.snapshot().await, before);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_connections_that_are_not_the_clients_own_are_refused() {
    let (hub, alice, _bob) = hub_with_route().await;
    let local = hub.local_dir("steal");
    let file = local.join("f");
    write_random(&file, 100_000, 7);
    let f = file.display();
    let before = hub.snapshot().await;

    // A data connection that does not resume the control connection's TLS session (plain
    // ftplib's way): refused with 425 after the 150, nothing delivered.
    let put = format!("put:{f}:/outbox/bob/noreuse");
    let steps = ftplib(
        &hub,
        "alice",
        &alice.password,
        &["--no-reuse", &put, "cmd:NOOP"],
    )
    .await;
    assert_eq!(steps[1]["ok"], false, "{steps:?}");
    let reply = steps[1]["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("425") && reply.contains("resume"),
        "{reply}"
    );
    assert_eq!(steps[2]["ok"], true, "the session goes on: {steps:?}");

    // A data connection from another loopback address: refused before its handshake.
    let put = format!("put:{f}:/outbox/bob/elsewhere");
    let steps = ftplib(
        &hub,
        "alice",
        &alice.password,
        &["--data-from=127.0.0.2", &put, "list:/outbox/bob"],
    )
    .await;
    assert_eq!(steps[1]["ok"], false, "{steps:?}");
    let reply = steps[1]["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("425") && reply.contains("address"),
        "{reply}"
    );

    // Garbage instead of a TLS handshake on the data connection: a 425, no panic, and the
    // session and the server carry on.
    let steps = ftplib(
        &hub,
        "alice",
        &alice.password,
        &["garbage:LIST /outbox", "cmd:NOOP"],
    )
    .await;
    assert_eq!(steps[1]["ok"], false, "{steps:?}");
    assert!(
        steps[1]["reply"].as_str().unwrap().starts_with("425"),
        "{steps:?}"
    );
    assert_eq!(steps[2]["ok"], true, "{steps:?}");

    assert_eq!(hub.snapshot().await, before);
    let failed = hub.events(EventKind::Upload, Outcome::Failed).await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    // And with the session resumed from the right address, the same upload goes through.
    let put = format!("put:{f}:/outbox/bob/fine");
    let steps = ftplib(&hub, "alice", &alice.password, &[&put]).await;
    assert_eq!(steps[1]["ok"], true, "{steps:?}");
    assert_eq!(
        steps[1]["data_error"],
        Value::Null,
        "close_notify both ways: {steps:?}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn implicit_ftps_serves_curl_and_ftplib() {
    let (hub, alice, bob) = hub_with_route().await;
    let local = hub.local_dir("implicit");
    let sent = local.join("i.bin");
    let sha = write_random(&sent, 1024 * 1024 + 3, 8);
    let port = hub.ftps().implicit.port();
    if have("curl") {
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["-sS", "--max-time", "60", "--cacert"])
            .arg(&hub.ftps().ca)
            .arg("--user")
            .arg(format!("{}:{}", alice.name, alice.password))
            .arg("-T")
            .arg(&sent)
            .arg(format!("ftps://127.0.0.1:{port}/outbox/bob/i.bin"));
        let up = run(command).await;
        assert!(up.status.success(), "{}", text(&up));
        assert_eq!(
            state_of(&hub.deliveries().await, "i.bin"),
            [DeliveryState::Delivered]
        );
    }
    let got = local.join("got");
    let get = format!("get:/inbox/alice/i.bin:{}", got.display());
    let steps: Vec<Value> = hub
        .ftplib_implicit("bob", &bob.password, &["list:/inbox/alice", &get])
        .await
        .iter()
        .map(|line| json(line))
        .collect();
    assert!(steps.iter().all(|s| s["ok"] == true), "{steps:?}");
    if have("curl") {
        assert_eq!(sha256_file(&got), sha);
    }

    // Clear text on the implicit port is not FTP: a TLS alert at most, never a greeting.
    let mut raw = RawFtp::connect(hub.ftps().implicit).await;
    raw.send("USER alice").await;
    let answer = raw.rest().await;
    assert!(
        !answer.contains("220") && !answer.contains("331"),
        "{answer:?}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_control_line_without_end_is_cut_off() {
    let (hub, alice, _bob) = hub_with_route().await;
    let mut raw = RawFtp::connect(hub.ftps().addr).await;
    raw.expect("220").await;
    raw.write(&vec![b'A'; 64 * 1024]).await;
    raw.expect("500").await;
    assert_eq!(raw.line().await, None, "the connection is closed");
    // The server carries on.
    let steps = ftplib(&hub, "alice", &alice.password, &["cmd:NOOP"]).await;
    assert_eq!(steps[1]["ok"], true, "{steps:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn active_mode_when_allowed_connects_only_back_to_the_client() {
    let auth = AuthConfig {
        defender: DefenderConfig {
            safe: vec![parse_network("127.0.0.0/8").unwrap()],
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    };
    let config = mailroom_ftps::Config {
        allow_active: true,
        ..mailroom_ftps::Config::default()
    };
    let hub = TestHub::start_ftps_full(config, auth).await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let local = hub.local_dir("active");
    let file = local.join("a");
    let sha = write_random(&file, 200_000, 9);

    // A third address (a bounce) and a privileged port: refused, nothing connects.
    let trap = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let port = trap.local_addr().unwrap().port();
    let bounce = format!("cmd:PORT 127,0,0,2,{},{}", port / 256, port % 256);
    let eprt = format!("cmd:EPRT |1|127.0.0.2|{port}|");
    let steps = ftplib(
        &hub,
        "alice",
        &alice.password,
        &[&bounce, &eprt, "cmd:PORT 127,0,0,1,0,25", "cmd:LIST"],
    )
    .await;
    for step in &steps[1..4] {
        assert!(
            step["reply"].as_str().unwrap().starts_with("501"),
            "{steps:?}"
        );
    }
    // No data connection was set up by the refused commands.
    assert!(
        steps[4]["reply"].as_str().unwrap().starts_with("425"),
        "{steps:?}"
    );
    assert_eq!(
        trap.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the server connected to a third address"
    );

    // Back to the client itself: an active upload goes through (TLS resumed as well).
    let put = format!("put:{}:/outbox/bob/active", file.display());
    let steps = ftplib(&hub, "alice", &alice.password, &["--active", &put]).await;
    assert_eq!(steps[1]["ok"], true, "{steps:?}");
    let deliveries = hub.deliveries().await;
    assert_eq!(state_of(&deliveries, "active"), [DeliveryState::Delivered]);
    assert_eq!(deliveries[0].sha256, sha);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_ftp_only_when_allowed_and_the_advertised_passive_address() {
    let config = mailroom_ftps::Config {
        allow_plaintext: true,
        passive_address: Some(std::net::Ipv4Addr::new(192, 0, 2, 7)),
        ..mailroom_ftps::Config::default()
    };
    let hub = TestHub::start_ftps(config).await;
    let alice = hub.client("alice").await;
    // Allowed: a login without AUTH TLS.
    let steps = ftplib(&hub, "alice", &alice.password, &["--plain", "cmd:PWD"]).await;
    assert!(steps.iter().all(|s| s["ok"] == true), "{steps:?}");
    // PASV announces the configured address (behind NAT), not the one the client reached.
    let steps = ftplib(&hub, "alice", &alice.password, &["cmd:PASV"]).await;
    let pasv = steps[1]["reply"].as_str().unwrap();
    assert!(
        pasv.starts_with("227") && pasv.contains("(192,0,2,7,"),
        "{pasv}"
    );
    hub.stop().await;
}

/// A bare control connection, for what no client library would send.
struct RawFtp {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawFtp {
    async fn connect(addr: std::net::SocketAddr) -> RawFtp {
        let (read, writer) = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap()
            .into_split();
        RawFtp {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        // The server may close before everything is written; that is what some tests want.
        let _ = self.writer.write_all(bytes).await;
    }

    async fn send(&mut self, line: &str) {
        self.write(format!("{line}\r\n").as_bytes()).await;
    }

    /// The next line, or `None` at end of stream (or a reset).
    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(30), self.reader.read_line(&mut line))
            .await
            .expect("a line or the end within 30 s")
        {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    }

    /// Everything until the end of the stream, lossily as text.
    async fn rest(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        let read = self.reader.read_to_end(&mut bytes);
        let _ = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the end within 30 s");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Reads a whole reply and checks its code; the reply's text.
    async fn expect(&mut self, code: &str) -> String {
        let mut reply = String::new();
        loop {
            let line = self.line().await.expect("a reply");
            reply.push_str(&line);
            if line.starts_with(&format!("{code} ")) {
                return reply;
            }
            assert!(
                line.starts_with(&format!("{code}-")) || line.starts_with(' '),
                "expected {code}, got {reply:?}"
            );
        }
    }
}
