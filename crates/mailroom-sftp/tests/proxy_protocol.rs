//! SSH behind a load balancer: the PROXY protocol (v1 and v2) from the networks in
//! `[sftp] proxy_protocol_from`, with real HAProxy and OpenSSH `sftp`, and with hand-made
//! headers from a raw TCP client that claims an address of its choosing. The client address
//! in a believed header is what the login events, account networks, bans and the deny list
//! see; a connection from the balancer without a valid header, and a header from anyone
//! else, change nothing.
//!
//! Addresses (module `mailroom_test_support::haproxy`): clients connect from 127.0.0.2,
//! balancers listen on 127.0.0.4 and reach the hub from 127.0.0.3, the one trusted network.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mailroom_core::{
    AuthConfig, BanSubject, DefenderConfig, Event, EventKind, EventQuery, Outcome, parse_network,
};
use mailroom_net::Networks;
use mailroom_test_support::haproxy::{
    BALANCER_IP, CLIENT_IP, Forward, HaProxy, HeaderRelay, SendProxy, connect_from, proxy_v1,
    proxy_v2,
};
use mailroom_test_support::{TestClient, TestHub, have, run, ssh_options, text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// The address hand-made headers claim.
const CLAIMED: &str = "203.0.113.7:4242";

/// A network on the hub's deny list.
const DENIED: &str = "198.51.100.0/24";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// `[sftp]` with the balancer's address trusted.
fn behind_balancer() -> mailroom_sftp::Config {
    mailroom_sftp::Config {
        proxy_protocol_from: Networks::new([BALANCER_IP.into()]),
        ..mailroom_sftp::Config::default()
    }
}

fn deny_list() -> AuthConfig {
    AuthConfig {
        defender: DefenderConfig {
            deny: vec![parse_network(DENIED).unwrap()],
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    }
}

/// OpenSSH `sftp` in batch mode as `client` by key, to `to`, connecting from `from`.
async fn sftp_to(
    hub: &TestHub,
    client: &TestClient,
    to: SocketAddr,
    from: IpAddr,
    commands: &str,
) -> std::process::Output {
    let batch = hub.local_dir("batch").join("commands");
    std::fs::write(&batch, commands).unwrap();
    let mut command = Command::new("sftp");
    command
        .args(ssh_options())
        .arg("-o")
        .arg(format!("BindAddress={from}"))
        .arg("-i")
        .arg(&client.key)
        .arg("-P")
        .arg(to.port().to_string())
        .arg("-b")
        .arg(batch)
        .arg(format!("{}@{}", client.name, to.ip()));
    run(command).await
}

/// Every event so far.
async fn all_events(hub: &TestHub) -> Vec<Event> {
    hub.hub.events(&EventQuery::default()).await.unwrap()
}

/// The events after the first `before`.
async fn new_events(hub: &TestHub, before: usize) -> Vec<Event> {
    all_events(hub).await.split_off(before)
}

/// What the server sends before it closes (or, after 15 s, what it sent so far).
async fn server_says(stream: &mut TcpStream) -> Vec<u8> {
    let mut said = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut said)).await;
    said
}

/// The first line the server sends, or `None` when it closes without one.
async fn server_line(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(1) = stream.read(&mut byte).await {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                return true;
            }
        }
        false
    })
    .await
    .expect("the server neither answered nor closed");
    read.then(|| String::from_utf8_lossy(&line).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssh_through_haproxy_is_seen_at_its_own_address() {
    if !have("sftp") {
        return;
    }
    let hub = TestHub::start_with(behind_balancer()).await;
    let alice = hub.client("alice").await;
    let Some(haproxy) = HaProxy::start(&[
        Forward::to(hub.addr, SendProxy::V2),
        Forward::to(hub.addr, SendProxy::V1),
    ])
    .await
    else {
        return;
    };
    // Only the client's own address may log in: the hub must see it, not HAProxy's.
    hub.set_access("alice", |access| {
        access.networks = vec![parse_network(&CLIENT_IP.to_string()).unwrap()];
    })
    .await;
    for (index, version) in [(0, "v2"), (1, "v1")] {
        let listed = sftp_to(&hub, &alice, haproxy.frontend(index), CLIENT_IP, "ls /\n").await;
        assert!(
            listed.status.success(),
            "{version}: {}\n{}",
            text(&listed),
            haproxy.log()
        );
        assert!(text(&listed).contains("outbox"), "{}", text(&listed));
        let login = hub
            .events(EventKind::Login, Outcome::Ok)
            .await
            .pop()
            .unwrap();
        let source: SocketAddr = login.source.as_deref().unwrap().parse().unwrap();
        assert_eq!(source.ip(), CLIENT_IP, "{version}: {login:?}");
    }
    assert_eq!(hub.events(EventKind::Login, Outcome::Ok).await.len(), 2);
    assert!(
        hub.events(EventKind::Login, Outcome::Refused)
            .await
            .is_empty()
    );

    // HAProxy's own address, straight to the hub without a header, gets nothing.
    let before = all_events(&hub).await.len();
    let direct = sftp_to(&hub, &alice, hub.addr, BALANCER_IP, "ls /\n").await;
    assert!(!direct.status.success(), "{}", text(&direct));
    assert!(new_events(&hub, before).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_made_header_is_believed_from_the_balancer_network() {
    if !have("sftp") {
        return;
    }
    let hub = TestHub::start_with(behind_balancer()).await;
    let alice = hub.client("alice").await;
    hub.set_access("alice", |access| {
        access.networks = vec![parse_network("203.0.113.0/24").unwrap()];
    })
    .await;
    let to = addr("192.0.2.1:22");
    for (version, header) in [
        ("v2", proxy_v2(addr(CLAIMED), to)),
        ("v1", proxy_v1(addr(CLAIMED), to)),
    ] {
        let relay = HeaderRelay::start(hub.addr, header).await;
        let listed = sftp_to(&hub, &alice, relay.addr, CLIENT_IP, "ls /\n").await;
        assert!(listed.status.success(), "{version}: {}", text(&listed));
        let login = hub
            .events(EventKind::Login, Outcome::Ok)
            .await
            .pop()
            .unwrap();
        assert_eq!(login.source.as_deref(), Some(CLAIMED), "{version}");
    }
    // Straight from 127.0.0.1, outside the account's networks, the same account gets no
    // session (its key is not even taken).
    let direct = hub.sftp(&alice, "ls /\n").await;
    assert!(!direct.status.success(), "{}", text(&direct));
    assert_eq!(hub.events(EventKind::Login, Outcome::Ok).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_header_naming_a_denied_or_banned_address_is_refused_at_admission() {
    let hub = TestHub::start_full(behind_balancer(), deny_list()).await;
    let banned: IpAddr = "203.0.113.9".parse().unwrap();
    hub.hub
        .ban(
            &TestHub::admin(),
            BanSubject::Address(banned),
            Duration::from_secs(3600),
            "test",
        )
        .await
        .unwrap();
    let snapshot = hub.snapshot().await;
    let before = all_events(&hub).await.len();

    for (claim, reason) in [
        ("198.51.100.7:5000", "address on the deny list"),
        ("203.0.113.9:5001", "address banned"),
    ] {
        let mut balancer = connect_from(BALANCER_IP, hub.addr).await;
        balancer
            .write_all(&proxy_v2(addr(claim), hub.addr))
            .await
            .unwrap();
        assert!(
            server_says(&mut balancer).await.is_empty(),
            "{claim}: the server spoke before admission"
        );
        let events = new_events(&hub, before).await;
        let refusal = events
            .iter()
            .find(|e| e.source.as_deref() == Some(claim))
            .unwrap_or_else(|| panic!("no refusal for {claim}: {events:#?}"));
        assert_eq!(refusal.kind, EventKind::Login);
        assert_eq!(refusal.outcome, Outcome::Refused);
        assert!(refusal.detail.contains(reason), "{refusal:?}");
    }
    // Exactly the two refusals; nothing stored, no new ban.
    assert_eq!(new_events(&hub, before).await.len(), 2);
    assert_eq!(hub.snapshot().await, snapshot);
    assert_eq!(hub.hub.bans().await.unwrap().len(), 1);

    // Another client of the same balancer is not refused: it gets the SSH greeting.
    let mut other = connect_from(BALANCER_IP, hub.addr).await;
    other
        .write_all(&proxy_v1(addr("203.0.113.10:5002"), hub.addr))
        .await
        .unwrap();
    let greeting = server_line(&mut other).await.unwrap();
    assert!(greeting.starts_with("SSH-2.0-"), "{greeting:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_valid_header_the_balancer_is_dropped_and_nothing_changes() {
    let hub = TestHub::start_with(behind_balancer()).await;
    let _alice = hub.client("alice").await;
    let snapshot = hub.snapshot().await;
    let before = all_events(&hub).await.len();
    let full = proxy_v2(addr(CLAIMED), hub.addr);
    let mut oversized = full[..16].to_vec();
    oversized[14..16].copy_from_slice(&0x0400u16.to_be_bytes());
    let cases: [(&str, Vec<u8>); 5] = [
        ("no header", b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec()),
        ("oversized v2", oversized),
        (
            "overlong v1",
            format!("PROXY UNKNOWN {}\r\n", "x".repeat(200)).into_bytes(),
        ),
        (
            "malformed v1",
            b"PROXY TCP4 203.0.113.7 nowhere 4242 22\r\n".to_vec(),
        ),
        (
            "v2 of version 1",
            [&full[..12], &[0x11], &full[13..]].concat(),
        ),
    ];
    for (case, bytes) in cases {
        let mut balancer = connect_from(BALANCER_IP, hub.addr).await;
        let _ = balancer.write_all(&bytes).await;
        assert!(server_says(&mut balancer).await.is_empty(), "{case}");
    }
    // Truncated: half a header, then the balancer stops sending.
    let mut truncated = connect_from(BALANCER_IP, hub.addr).await;
    truncated.write_all(&full[..20]).await.unwrap();
    truncated.shutdown().await.unwrap();
    assert!(server_says(&mut truncated).await.is_empty(), "truncated");

    // Slow: part of a header, then nothing; closed at the 5 s deadline. A real client
    // through the balancer meanwhile gets its SSH greeting.
    let mut slow = connect_from(BALANCER_IP, hub.addr).await;
    slow.write_all(b"PROXY TCP4 203.0.113.7 ").await.unwrap();
    let mut quick = connect_from(BALANCER_IP, hub.addr).await;
    quick
        .write_all(&proxy_v2(addr("203.0.113.8:4243"), hub.addr))
        .await
        .unwrap();
    let greeting = server_line(&mut quick).await.unwrap();
    assert!(greeting.starts_with("SSH-2.0-"), "{greeting:?}");
    drop(quick);
    assert!(server_says(&mut slow).await.is_empty(), "slow");

    // The quick one ended without logging in (scored as such); the refused ones left no
    // trace at all.
    let events = new_events(&hub, before).await;
    assert!(
        events.iter().all(|e| e
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with("203.0.113.8:"))),
        "{events:#?}"
    );
    assert_eq!(hub.snapshot().await, snapshot);
    assert!(hub.hub.bans().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_header_from_outside_the_balancer_networks_is_not_believed() {
    // Off (the default), and on with only 127.0.0.3 trusted: a header from 127.0.0.1 is a
    // broken SSH version line like any other, refused and recorded at the real address.
    for config in [mailroom_sftp::Config::default(), behind_balancer()] {
        let hub = TestHub::start_with(config).await;
        let snapshot = hub.snapshot().await;
        let before = all_events(&hub).await.len();
        let mut client = connect_from("127.0.0.1".parse().unwrap(), hub.addr).await;
        let local = client.local_addr().unwrap();
        client
            .write_all(&proxy_v2(addr(CLAIMED), hub.addr))
            .await
            .unwrap();
        let said = server_says(&mut client).await;
        assert!(said.starts_with(b"SSH-2.0-"), "{said:?}");
        let refused = mailroom_test_support::eventually(Duration::from_secs(10), async || {
            !new_events(&hub, before).await.is_empty()
        })
        .await;
        assert!(refused, "no refusal recorded");
        let events = new_events(&hub, before).await;
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(
            events[0].source.as_deref(),
            Some(local.to_string().as_str())
        );
        assert_eq!(events[0].outcome, Outcome::Refused);
        assert!(events[0].detail.contains("not SSH-2.0"), "{events:#?}");
        assert_eq!(hub.snapshot().await, snapshot);
        assert!(hub.hub.bans().await.unwrap().is_empty());
    }
}
