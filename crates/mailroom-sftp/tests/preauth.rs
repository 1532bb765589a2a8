//! Before the login: hostile version lines and packets are cut at once without memory
//! growth, the login grace time is absolute, the seventh authentication attempt is
//! refused with a disconnect, and `max_startups` caps unauthenticated connections (but not
//! logged-in ones, those from the safe networks, or banned ones, which are refused first). Raw TCP from the test, so every byte on the wire is ours (RFC 4253 §4.2
//! and §6: before NEWKEYS packets are plaintext, without MAC).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom_core::{EventQuery, Outcome};
use mailroom_test_support::{TestHub, have, run, text};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// A hostile connection must be closed this fast (the aim is well under a second; the bound
/// is generous so a loaded CI machine does not flake).
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

async fn connect(addr: SocketAddr) -> TcpStream {
    connect_from("127.0.0.1", addr).await
}

/// Connects from `source` (any 127.0.0.0/8 address is local on Linux), so that one test can
/// play several source addresses.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The server's version line, or `None` if it closed without sending one.
async fn server_version(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(CLOSE_LIMIT * 5, async {
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte).await {
                Ok(1) => {
                    line.push(byte[0]);
                    if byte[0] == b'\n' {
                        return true;
                    }
                }
                _ => return false,
            }
        }
    })
    .await
    .expect("the server neither sent its version nor closed");
    read.then(|| String::from_utf8_lossy(&line).into_owned())
}

/// Reads and discards until the server closes (EOF or reset); panics after `limit`. Returns
/// how long it took.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Duration {
    let start = Instant::now();
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    let elapsed = start.elapsed();
    assert!(closed.is_ok(), "still open after {elapsed:?}");
    elapsed
}

/// Version exchange done and the server's KEXINIT read: the next bytes are our first packet.
async fn after_version_exchange(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr).await;
    let version = server_version(&mut stream).await.unwrap();
    assert!(version.starts_with("SSH-2.0-Mailroom"), "{version:?}");
    stream
        .write_all(b"SSH-2.0-PreauthTest_1.0\r\n")
        .await
        .unwrap();
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.unwrap();
    let mut kexinit = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut kexinit).await.unwrap();
    assert_eq!(kexinit.get(1), Some(&20), "SSH_MSG_KEXINIT");
    stream
}

/// `packet_length`, `padding_length`, then `rest` as given (RFC 4253 §6).
fn raw_packet(packet_length: u32, padding_length: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = packet_length.to_be_bytes().to_vec();
    out.push(padding_length);
    out.extend_from_slice(rest);
    out
}

/// A hub whose defender does not score: these tests send more hostile connections from one
/// address than the defender lets through (it would ban the address, rightly, and every later
/// connection would be refused before the framing checks under test). The defender has its own
/// tests in `aaa.rs`.
async fn framing_hub() -> TestHub {
    let auth = mailroom_core::AuthConfig {
        defender: mailroom_core::DefenderConfig {
            enabled: false,
            ..mailroom_core::DefenderConfig::default()
        },
        ..mailroom_core::AuthConfig::default()
    };
    TestHub::start_full(mailroom_sftp::Config::default(), auth).await
}

/// The server process's resident memory (the TestHub runs in this process).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The refused pre-login events recorded, as their reasons. Call after `drain`, which waits
/// for the recordings.
async fn refusals(hub: &TestHub) -> Vec<String> {
    hub.hub
        .events(&EventQuery {
            actor: Some("-".to_owned()),
            outcome: Some(Outcome::Refused),
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.detail)
        .collect()
}

/// Whether the hub still serves a normal login (OpenSSH sftp, key).
async fn normal_login_works(hub: &TestHub) {
    if !have("sftp") {
        return;
    }
    let client = hub.client(&format!("alice{}", hub.addr.port())).await;
    let output = hub.sftp(&client, "ls /\n").await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("inbox"), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_version_lines_are_cut_at_once_and_memory_stays_flat() {
    let hub = framing_hub().await;
    // One MiB without a newline, after an SSH-2.0- prefix and without one; and many short
    // lines (a client may send no lines before its version, RFC 4253 §4.2).
    let mut long_ssh = b"SSH-2.0-".to_vec();
    long_ssh.resize(1 << 20, b'a');
    let long_garbage = vec![b'A'; 1 << 20];
    let many_lines = b"hello there\r\n".repeat(80_000);
    let payloads = Arc::new([long_ssh, long_garbage, many_lines]);

    let attempt = |index: usize| {
        let payloads = payloads.clone();
        let addr = hub.addr;
        async move {
            let mut stream = connect(addr).await;
            assert!(server_version(&mut stream).await.is_some());
            let (mut reader, mut writer) = stream.into_split();
            let writing = tokio::spawn(async move {
                // The server closes long before all of it is read: a failed write is expected.
                let _ = writer.write_all(&payloads[index % payloads.len()]).await;
                writer
            });
            let took = closed_within(&mut reader, CLOSE_LIMIT).await;
            drop(writing.await);
            took
        }
    };
    // Warm up (runtime threads, lazily built state) before the baseline.
    attempt(0).await;
    let before = rss_kib();
    let mut slowest = Duration::ZERO;
    for index in 0..20 {
        slowest = slowest.max(attempt(index).await);
    }
    let after = rss_kib();
    eprintln!(
        "20 garbage banners: slowest close {slowest:?}, RSS {before} kB -> {after} kB ({:+} kB)",
        after as i64 - before as i64
    );
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} kB to {after} kB"
    );
    normal_login_works(&hub).await;
    let mut hub = hub;
    hub.drain().await;
    let reasons = refusals(&hub).await;
    assert!(
        reasons.iter().any(|r| r.contains("longer than 255 bytes")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not SSH-2.0")),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_first_packets_are_cut_at_once() {
    let hub = framing_hub().await;
    let cases: [(&str, Vec<u8>, &str); 9] = [
        (
            "length 0x7fffffff",
            raw_packet(0x7fff_ffff, 4, &[20]),
            "cleartext packet of 2147483647 bytes",
        ),
        (
            "length 1 MiB + 1",
            raw_packet((1 << 20) + 1, 4, &[20]),
            "cleartext packet of 1048577 bytes",
        ),
        (
            "length 35001",
            raw_packet(35_001, 4, &[20]),
            "cleartext packet of 35001 bytes",
        ),
        (
            // The length field alone, as russh reads it.
            "length 0x7fffffff alone",
            0x7fff_ffffu32.to_be_bytes().to_vec(),
            "cleartext packet of 2147483647 bytes",
        ),
        (
            "padding beyond the packet",
            raw_packet(12, 200, &[20; 11]),
            "leaves no payload",
        ),
        (
            "all padding",
            raw_packet(12, 11, &[0; 11]),
            "leaves no payload",
        ),
        (
            "empty payload",
            raw_packet(5, 4, &[0; 4]),
            "leaves no payload",
        ),
        (
            "zero length",
            raw_packet(0, 0, &[0; 8]),
            "leaves no payload",
        ),
        (
            "padding of 2 bytes",
            raw_packet(12, 2, &[20; 11]),
            "padding of 2 bytes (minimum 4)",
        ),
    ];
    let mut slowest = Duration::ZERO;
    for (name, bytes, _) in &cases {
        let mut stream = after_version_exchange(hub.addr).await;
        stream.write_all(bytes).await.unwrap();
        let took = closed_within(&mut stream, CLOSE_LIMIT).await;
        eprintln!("{name}: closed after {took:?}");
        slowest = slowest.max(took);
    }
    eprintln!("malformed packets: slowest close {slowest:?}");
    normal_login_works(&hub).await;
    let mut hub = hub;
    hub.drain().await;
    let reasons = refusals(&hub).await;
    for (name, _, reason) in &cases {
        assert!(
            reasons.iter().any(|r| r.contains(reason)),
            "{name}: no refusal containing {reason:?} in {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_grace_time_is_absolute_even_for_a_trickling_client() {
    let grace = Duration::from_secs(2);
    let hub = TestHub::start_with(mailroom_sftp::Config {
        login_grace_seconds: grace.as_secs(),
        ..mailroom_sftp::Config::default()
    })
    .await;
    // A valid KEXINIT header announcing 1000 bytes, whose body then comes one byte at a time.
    let kexinit_start = raw_packet(1000, 4, &[20]);
    let cases: [(&str, Vec<u8>, &[u8]); 3] = [
        ("trickling the version line", b"SSH-2.0-".to_vec(), b"a"),
        (
            "trickling the KEXINIT",
            [b"SSH-2.0-Slow\r\n".as_slice(), &kexinit_start].concat(),
            b"\0",
        ),
        (
            "silent after the version",
            b"SSH-2.0-Silent\r\n".to_vec(),
            b"",
        ),
    ];
    let mut tasks = Vec::new();
    for (name, opening, trickle) in cases {
        let addr = hub.addr;
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let stream = connect(addr).await;
            let (mut reader, mut writer) = stream.into_split();
            writer.write_all(&opening).await.unwrap();
            // Pacing, not synchronisation: a byte every 100 ms keeps the connection busy
            // until the server cuts it (then the write fails and the loop ends).
            // The writer stays open to the end: dropping it would send our FIN.
            let trickling = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                while !trickle.is_empty() && writer.write_all(trickle).await.is_ok() {
                    tick.tick().await;
                }
                std::future::pending::<()>().await;
                drop(writer);
            });
            closed_within(&mut reader, grace + Duration::from_secs(3)).await;
            let took = start.elapsed();
            trickling.abort();
            (name, took)
        }));
    }
    for task in tasks {
        let (name, took) = task.await.unwrap();
        eprintln!("{name}: cut after {took:?} (grace {grace:?})");
        assert!(
            took >= grace - Duration::from_millis(100) && took < grace + Duration::from_secs(1),
            "{name}: cut after {took:?}, grace {grace:?}"
        );
    }
    let mut hub = hub;
    hub.drain().await;
    let reasons = refusals(&hub).await;
    let expired = reasons
        .iter()
        .filter(|r| *r == "login grace time exceeded")
        .count();
    assert_eq!(expired, 3, "{reasons:?}");
}

/// OpenSSH's `ssh` with passwords from an askpass script that counts its calls: one call per
/// attempt. (paramiko cannot retry on one transport against russh: each `auth_password`
/// sends a new `ssh-userauth` service request, which russh ignores once auth has begun.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seventh_authentication_attempt_is_refused_with_a_disconnect() {
    if !have("ssh") {
        return;
    }
    let hub = TestHub::start_with(mailroom_sftp::Config {
        auth_rejection_ms: 20,
        ..mailroom_sftp::Config::default()
    })
    .await;
    hub.client("alice").await;
    let count = hub.dir.path().join("askpass-calls");
    let askpass = hub.dir.path().join("askpass.sh");
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\necho call >> '{}'\necho wrong-password\n",
            count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut command = tokio::process::Command::new("ssh");
    command
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentityAgent=none",
        ])
        .args(["-o", "PreferredAuthentications=password"])
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=20",
        ])
        .args(["-o", "LogLevel=INFO", "-p", &hub.addr.port().to_string()])
        .args(["alice@127.0.0.1", "true"]);
    let output = run(command).await;
    let passwords = std::fs::read_to_string(&count)
        .unwrap_or_default()
        .lines()
        .count();
    let refused = text(&output).matches("Permission denied").count();
    assert!(!output.status.success());
    // ssh first probes "none", and russh counts that refusal like any other (OpenSSH's
    // MaxAuthTries does not count a first "none"): requests 1 to 6 are "none" and five
    // passwords, all refused; the seventh request, the sixth password, gets the disconnect.
    assert_eq!(
        (passwords, refused),
        (6, 5),
        "six refused requests, then a disconnect: {}",
        text(&output)
    );
    assert!(
        text(&output).contains("Too many authentication attempts"),
        "{}",
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_startups_caps_unauthenticated_connections_and_a_login_frees_its_place() {
    if !have("sftp") {
        return;
    }
    let mut hub = TestHub::start_with(mailroom_sftp::Config {
        max_startups: "2".parse().unwrap(),
        max_startups_per_address: 1,
        ..mailroom_sftp::Config::default()
    })
    .await;
    let client = hub.client("alice").await;

    // A logged-in session from 127.0.0.1 does not count against either cap.
    let mut sftp = hub.sftp_command(&client, None);
    sftp.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut sftp = sftp.spawn().unwrap();
    let mut stdin = sftp.stdin.take().unwrap();
    let mut stdout = BufReader::new(sftp.stdout.take().unwrap()).lines();
    let mut logged_in = async |stdin: &mut tokio::process::ChildStdin| {
        stdin.write_all(b"pwd\n").await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                if line.contains("Remote working directory") {
                    return;
                }
            }
            panic!("sftp ended without answering pwd");
        })
        .await
        .expect("sftp answers pwd");
    };
    logged_in(&mut stdin).await;

    let mut first = connect_from("127.0.0.1", hub.addr).await;
    assert!(
        server_version(&mut first).await.is_some(),
        "admitted: the logged-in session left the unauthenticated count"
    );
    let mut second = connect_from("127.0.0.1", hub.addr).await;
    assert_eq!(
        server_version(&mut second).await,
        None,
        "refused without a version line: one unauthenticated per address"
    );
    let mut other = connect_from("127.0.0.2", hub.addr).await;
    assert!(server_version(&mut other).await.is_some());
    let mut third = connect_from("127.0.0.3", hub.addr).await;
    assert_eq!(
        server_version(&mut third).await,
        None,
        "refused: two unauthenticated connections open"
    );
    // The logged-in session is untouched.
    logged_in(&mut stdin).await;

    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), sftp.wait()).await;
    drop((first, other));
    hub.drain().await;
    let reasons = refusals(&hub).await;
    assert!(
        reasons
            .iter()
            .any(|r| r == "too many unauthenticated connections from this address"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r == "too many unauthenticated connections"),
        "{reasons:?}"
    );
}

/// A hub with `max_startups` 2 (2 per address), `127.0.0.5` on the safe list, and
/// `127.0.0.9` banned.
async fn storm_hub(grace: Duration) -> TestHub {
    let auth = mailroom_core::AuthConfig {
        defender: mailroom_core::DefenderConfig {
            safe: vec!["127.0.0.5/32".parse().unwrap()],
            ..mailroom_core::DefenderConfig::default()
        },
        ..mailroom_core::AuthConfig::default()
    };
    let hub = TestHub::start_full(
        mailroom_sftp::Config {
            max_startups: "2".parse().unwrap(),
            max_startups_per_address: 2,
            login_grace_seconds: grace.as_secs(),
            ..mailroom_sftp::Config::default()
        },
        auth,
    )
    .await;
    hub.hub
        .ban(
            &TestHub::admin(),
            mailroom_core::BanSubject::Address("127.0.0.9".parse().unwrap()),
            Duration::from_secs(3600),
            "test",
        )
        .await
        .unwrap();
    hub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safe_network_client_gets_the_banner_while_max_startups_is_full() {
    let grace = Duration::from_secs(10);
    let mut hub = storm_hub(grace).await;
    let snapshot = hub.snapshot().await;

    // Two unauthenticated connections from one address fill every startup place.
    let mut first = connect_from("127.0.0.1", hub.addr).await;
    assert!(server_version(&mut first).await.is_some());
    let mut second = connect_from("127.0.0.1", hub.addr).await;
    assert!(server_version(&mut second).await.is_some());
    let mut dropped = connect_from("127.0.0.3", hub.addr).await;
    assert_eq!(
        server_version(&mut dropped).await,
        None,
        "an ordinary client is dropped: max_startups is full"
    );

    // The safe network is not counted: its client gets the banner all the same.
    let mut safe = connect_from("127.0.0.5", hub.addr).await;
    let version = server_version(&mut safe).await;
    assert!(
        version
            .as_deref()
            .is_some_and(|v| v.starts_with("SSH-2.0-Mailroom")),
        "{version:?}"
    );
    // And still has only the login grace time to log in.
    closed_within(&mut safe, grace + CLOSE_LIMIT * 5).await;

    drop((first, second));
    hub.drain().await;
    assert_eq!(hub.snapshot().await, snapshot);
    // One startup refusal (the ordinary client); the safe one was never refused.
    let reasons = refusals(&hub).await;
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.starts_with("too many unauthenticated connections"))
            .count(),
        1,
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_address_is_refused_before_it_takes_a_startup_place() {
    let mut hub = storm_hub(Duration::from_secs(60)).await;
    let snapshot = hub.snapshot().await;

    // One place of two is held.
    let mut first = connect_from("127.0.0.1", hub.addr).await;
    assert!(server_version(&mut first).await.is_some());
    // The banned address is closed for its ban and takes no place on the way...
    for _ in 0..3 {
        let mut banned = connect_from("127.0.0.9", hub.addr).await;
        assert_eq!(server_version(&mut banned).await, None, "banned: closed");
    }
    // ...so the second place is an ordinary client's.
    let mut second = connect_from("127.0.0.2", hub.addr).await;
    assert!(server_version(&mut second).await.is_some());
    // With every place taken, the banned address is still refused for its ban: the startup
    // limits never see it, so no startup refusal is recorded (or scored) for it.
    for _ in 0..3 {
        let mut banned = connect_from("127.0.0.9", hub.addr).await;
        assert_eq!(server_version(&mut banned).await, None, "banned: closed");
    }
    drop((first, second));

    hub.drain().await;
    assert_eq!(hub.snapshot().await, snapshot);
    let reasons = refusals(&hub).await;
    assert!(
        reasons.iter().any(|r| r.contains("address banned")),
        "{reasons:?}"
    );
    assert!(
        !reasons
            .iter()
            .any(|r| r.starts_with("too many unauthenticated connections")),
        "the banned connections never reached the startup limits: {reasons:?}"
    );
}
