//! FTPS behind a load balancer: the PROXY protocol from the networks in `[ftps]
//! proxy_protocol_from`, on the control port and on the passive data ports. Real HAProxy in
//! the layout docs/ftps.md describes (control port and passive range through the balancer)
//! with curl; hand-made headers on the control connection with Python's ftplib, claiming an
//! address the hub then logs, bans and refuses at admission.
//!
//! Addresses (module `mailroom_test_support::haproxy`): clients connect from 127.0.0.2,
//! HAProxy listens on 127.0.0.4 and reaches the hub from 127.0.0.3, the one trusted network.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mailroom_core::{BanSubject, Event, EventKind, EventQuery, Outcome};
use mailroom_net::Networks;
use mailroom_test_support::haproxy::{
    BALANCER_IP, CLIENT_IP, FRONT_IP, Forward, HaProxy, HeaderRelay, SendProxy, connect_from,
    proxy_v1, proxy_v2,
};
use mailroom_test_support::{TestClient, TestHub, have, run, sha256_file, text, write_random};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The address hand-made headers claim.
const CLAIMED: &str = "203.0.113.7:4242";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// `[ftps]` with the balancer's address trusted, and PASV answering with HAProxy's address.
fn behind_balancer() -> mailroom_ftps::Config {
    mailroom_ftps::Config {
        enabled: true,
        proxy_protocol_from: Networks::new([BALANCER_IP.into()]),
        passive_address: Some("127.0.0.4".parse().unwrap()),
        ..mailroom_ftps::Config::default()
    }
}

async fn all_events(hub: &TestHub) -> Vec<Event> {
    hub.hub.events(&EventQuery::default()).await.unwrap()
}

/// curl over explicit FTPS to `localhost:port` resolved to `ip`, from `from`, as `client`.
async fn curl_via(
    hub: &TestHub,
    client: &TestClient,
    ip: IpAddr,
    port: u16,
    from: IpAddr,
    args: &[&str],
) -> std::process::Output {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--ssl-reqd", "--max-time", "60", "--cacert"])
        .arg(&hub.ftps().ca)
        .arg("--user")
        .arg(format!("{}:{}", client.name, client.password))
        .arg("--interface")
        .arg(from.to_string())
        .arg("--resolve")
        .arg(format!("localhost:{port}:{ip}"))
        .args(args);
    run(command).await
}

/// The ftplib driver through `port` on 127.0.0.1, its steps parsed.
async fn ftplib_on(hub: &TestHub, port: u16, client: &TestClient, ops: &[&str]) -> Vec<Value> {
    let output = run(hub.ftplib_command_on(port, &client.name, &client.password, ops)).await;
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_through_haproxy_with_passive_ports_behind_it() {
    if !have("curl") {
        return;
    }
    let hub = TestHub::start_ftps(behind_balancer()).await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let passive = hub.ftps().passive.clone();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let Some(haproxy) = HaProxy::start(&[
        Forward::to(hub.ftps().addr, SendProxy::V2),
        Forward::same_ports(passive, loopback, SendProxy::V2),
    ])
    .await
    else {
        return;
    };
    let control = haproxy.frontend(0);
    assert_eq!(control.ip(), FRONT_IP);

    let local = hub.local_dir("upload");
    let file = local.join("report.bin");
    let sha = write_random(&file, 300_000, 7);
    let sent = curl_via(
        &hub,
        &alice,
        FRONT_IP,
        control.port(),
        CLIENT_IP,
        &[
            "-T",
            file.to_str().unwrap(),
            &format!("ftp://localhost:{}/outbox/bob/report.bin", control.port()),
        ],
    )
    .await;
    assert!(sent.status.success(), "{}\n{}", text(&sent), haproxy.log());
    let got = local.join("got.bin");
    let fetched = curl_via(
        &hub,
        &bob,
        FRONT_IP,
        control.port(),
        CLIENT_IP,
        &[
            "-o",
            got.to_str().unwrap(),
            &format!("ftp://localhost:{}/inbox/alice/report.bin", control.port()),
        ],
    )
    .await;
    assert!(
        fetched.status.success(),
        "{}\n{}",
        text(&fetched),
        haproxy.log()
    );
    assert_eq!(sha256_file(&got), sha);
    // Both transfers went through the balancer's passive ports, and both logins through its
    // control port.
    assert_eq!(haproxy.connections(0).await, 2);
    assert_eq!(haproxy.connections(1).await, 2);

    let logins = hub.events(EventKind::Login, Outcome::Ok).await;
    assert_eq!(logins.len(), 2, "{logins:#?}");
    for login in logins {
        let source: SocketAddr = login.source.as_deref().unwrap().parse().unwrap();
        assert_eq!(source.ip(), CLIENT_IP, "{login:?}");
    }
    assert!(
        hub.events(EventKind::Login, Outcome::Refused)
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_made_header_on_the_control_connection_is_believed() {
    if !have("python3") {
        return;
    }
    let hub = TestHub::start_ftps(behind_balancer()).await;
    let alice = hub.client("alice").await;
    let _bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let to = addr("192.0.2.1:21");
    for (version, header) in [
        ("v2", proxy_v2(addr(CLAIMED), to)),
        ("v1", proxy_v1(addr(CLAIMED), to)),
    ] {
        let relay = HeaderRelay::start(hub.ftps().addr, header).await;
        let steps = ftplib_on(&hub, relay.addr.port(), &alice, &["cmd:NOOP"]).await;
        assert_eq!(steps[0]["ok"], true, "{version}: {steps:?}");
        assert_eq!(steps[1]["ok"], true, "{version}: {steps:?}");
        let login = hub
            .events(EventKind::Login, Outcome::Ok)
            .await
            .pop()
            .unwrap();
        assert_eq!(login.source.as_deref(), Some(CLAIMED), "{version}");
    }

    // A data connection straight from 127.0.0.1 is not from the client the header named:
    // refused, and nothing is stored.
    let snapshot = hub.snapshot().await;
    let relay = HeaderRelay::start(hub.ftps().addr, proxy_v2(addr(CLAIMED), to)).await;
    let local = hub.local_dir("put");
    let file = local.join("f.bin");
    write_random(&file, 1000, 3);
    let put = format!("put:{}:/outbox/bob/f.bin", file.display());
    let steps = ftplib_on(&hub, relay.addr.port(), &alice, &[&put]).await;
    assert_eq!(steps[1]["ok"], false, "{steps:?}");
    assert!(
        steps[1]["reply"].as_str().unwrap().starts_with("425"),
        "{steps:?}"
    );
    assert_eq!(hub.snapshot().await, snapshot);

    // Once the claimed address is banned, its next connection is refused before the greeting.
    hub.hub
        .ban(
            &TestHub::admin(),
            BanSubject::Address(addr(CLAIMED).ip()),
            Duration::from_secs(3600),
            "test",
        )
        .await
        .unwrap();
    let before = all_events(&hub).await.len();
    let mut balancer = connect_from(BALANCER_IP, hub.ftps().addr).await;
    balancer
        .write_all(&proxy_v2(addr(CLAIMED), hub.ftps().addr))
        .await
        .unwrap();
    let mut said = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), balancer.read_to_end(&mut said))
        .await
        .unwrap()
        .unwrap();
    assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));
    let events = all_events(&hub).await.split_off(before);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].source.as_deref(), Some(CLAIMED));
    assert!(events[0].detail.contains("banned"), "{events:#?}");
    assert_eq!(hub.snapshot().await, snapshot);

    // Without a header the balancer gets nothing, and nothing is recorded.
    let mut bare = connect_from(BALANCER_IP, hub.ftps().addr).await;
    bare.write_all(b"USER alice\r\n").await.unwrap();
    let mut said = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), bare.read_to_end(&mut said)).await;
    assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));
    assert_eq!(all_events(&hub).await.len(), before + 1);
}
