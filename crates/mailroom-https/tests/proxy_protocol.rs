//! The HTTPS API behind a load balancer: the PROXY protocol from the networks in `[https]
//! proxy_protocol_from`, before TLS. curl through real HAProxy, and through a hand-made
//! balancer whose header claims an address: the login events, the login limit, bans and the
//! deny list all see the client address the header names; a header from anyone else is not
//! believed.
//!
//! Addresses (module `mailroom_test_support::haproxy`): clients connect from 127.0.0.2,
//! HAProxy listens on 127.0.0.4, and balancers reach the hub from 127.0.0.3, the one trusted
//! network.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mailroom_core::{
    AuthConfig, BanSubject, DefenderConfig, Event, EventKind, EventQuery, Outcome, parse_network,
};
use mailroom_net::Networks;
use mailroom_test_support::haproxy::{
    BALANCER_IP, CLIENT_IP, FRONT_IP, Forward, HaProxy, HeaderRelay, SendProxy, proxy_v1, proxy_v2,
};
use mailroom_test_support::{TestClient, TestHub, eventually, have, run, text};
use serde_json::Value;

/// The address hand-made headers claim.
const CLAIMED: &str = "203.0.113.7:4242";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn behind_balancer() -> mailroom_https::Config {
    mailroom_https::Config {
        proxy_protocol_from: Networks::new([BALANCER_IP.into()]),
        ..mailroom_https::Config::default()
    }
}

fn deny_list() -> AuthConfig {
    AuthConfig {
        defender: DefenderConfig {
            deny: vec![parse_network("198.51.100.0/24").unwrap()],
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    }
}

async fn all_events(hub: &TestHub) -> Vec<Event> {
    hub.hub.events(&EventQuery::default()).await.unwrap()
}

/// The events after the first `before`, but for sessions the hub closed (a ban closes the
/// banned address's sessions within its housekeeping period): logins and refusals.
async fn logins_since(hub: &TestHub, before: usize) -> Vec<Event> {
    let events = all_events(hub).await.split_off(before);
    for event in &events {
        assert!(
            event.kind == EventKind::Login
                || (event.kind == EventKind::SessionClosed && event.detail.contains("banned")),
            "{event:?}"
        );
    }
    events
        .into_iter()
        .filter(|event| event.kind == EventKind::Login)
        .collect()
}

/// curl to `https://localhost:PORT{path}` with `localhost` resolved to `ip`, from `from`:
/// the HTTP status and the body.
async fn curl(
    hub: &TestHub,
    ip: IpAddr,
    port: u16,
    from: IpAddr,
    path: &str,
    args: &[&str],
) -> (u16, String) {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(&hub.https().ca)
        .arg("--interface")
        .arg(from.to_string())
        .arg("--resolve")
        .arg(format!("localhost:{port}:{ip}"))
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("https://localhost:{port}{path}"));
    let output = run(command).await;
    assert!(output.status.success(), "{}", text(&output));
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// `POST /api/v1/token` for `client` through `ip:port`: the status and the answer.
async fn login(
    hub: &TestHub,
    client: &TestClient,
    ip: IpAddr,
    port: u16,
    from: IpAddr,
) -> (u16, Value) {
    let body = serde_json::json!({"username": client.name, "password": client.password, "scope": "client"});
    let (status, answer) = curl(
        hub,
        ip,
        port,
        from,
        "/api/v1/token",
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            &body.to_string(),
        ],
    )
    .await;
    (status, serde_json::from_str(&answer).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_through_haproxy_is_seen_at_its_own_address() {
    if !have("curl") {
        return;
    }
    let hub = TestHub::start_https(behind_balancer(), AuthConfig::default()).await;
    let alice = hub.client("alice").await;
    let Some(haproxy) = HaProxy::start(&[
        Forward::to(hub.https().addr, SendProxy::V2),
        Forward::to(hub.https().addr, SendProxy::V1),
    ])
    .await
    else {
        return;
    };
    for index in [0, 1] {
        let front = haproxy.frontend(index);
        let (status, tokens) = login(&hub, &alice, FRONT_IP, front.port(), CLIENT_IP).await;
        assert_eq!(status, 200, "{tokens}\n{}", haproxy.log());
        let token = tokens["access_token"].as_str().unwrap();
        let (status, inbox) = curl(
            &hub,
            FRONT_IP,
            front.port(),
            CLIENT_IP,
            "/api/v1/inbox",
            &["-H", &format!("Authorization: Bearer {token}")],
        )
        .await;
        assert_eq!(status, 200, "{inbox}");
        let login = hub
            .events(EventKind::Login, Outcome::Ok)
            .await
            .pop()
            .unwrap();
        let source: SocketAddr = login.source.as_deref().unwrap().parse().unwrap();
        assert_eq!(source.ip(), CLIENT_IP, "{login:?}");
    }
    assert_eq!(hub.events(EventKind::Login, Outcome::Ok).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_header_address_is_what_the_limiter_bans_and_the_deny_list_see() {
    if !have("curl") {
        return;
    }
    let config = mailroom_https::Config {
        login_attempts_per_minute: 1,
        ..behind_balancer()
    };
    let hub = TestHub::start_https(config, deny_list()).await;
    let alice = hub.client("alice").await;
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let to = addr("192.0.2.1:443");
    let hub_addr = hub.https().addr;
    let claimed = HeaderRelay::start(hub_addr, proxy_v2(addr(CLAIMED), to)).await;
    let other = HeaderRelay::start(hub_addr, proxy_v1(addr("203.0.113.8:4343"), to)).await;

    // The claimed address logs in and is recorded; its second token request is over its
    // limit, while another client of the same balancer is not.
    let (status, tokens) = login(&hub, &alice, loopback, claimed.addr.port(), loopback).await;
    assert_eq!(status, 200, "{tokens}");
    let login_event = hub
        .events(EventKind::Login, Outcome::Ok)
        .await
        .pop()
        .unwrap();
    assert_eq!(login_event.source.as_deref(), Some(CLAIMED));
    let (status, _) = login(&hub, &alice, loopback, claimed.addr.port(), loopback).await;
    assert_eq!(status, 429);
    let (status, answer) = login(&hub, &alice, loopback, other.addr.port(), loopback).await;
    assert_eq!(status, 200, "{answer}");
    let other_token = answer["access_token"].as_str().unwrap().to_owned();
    let login_event = hub
        .events(EventKind::Login, Outcome::Ok)
        .await
        .pop()
        .unwrap();
    assert_eq!(login_event.source.as_deref(), Some("203.0.113.8:4343"));

    // A ban of the claimed address refuses it, and only it.
    hub.hub
        .ban(
            &TestHub::admin(),
            BanSubject::Address(addr(CLAIMED).ip()),
            Duration::from_secs(3600),
            "test",
        )
        .await
        .unwrap();
    // The token of the other client's login: the ban closes the claimed address's session
    // (housekeeping, `session.closed`), not this one.
    let bearer = format!("Authorization: Bearer {other_token}");
    let snapshot = hub.snapshot().await;
    let before = all_events(&hub).await.len();
    let inbox = async |port: u16| {
        curl(
            &hub,
            loopback,
            port,
            loopback,
            "/api/v1/inbox",
            &["-H", &bearer],
        )
        .await
    };
    let (status, problem) = inbox(claimed.addr.port()).await;
    assert_eq!(status, 403, "{problem}");
    let (status, _) = inbox(other.addr.port()).await;
    assert_eq!(status, 200);
    let (status, _) = inbox(hub_addr.port()).await;
    assert_eq!(status, 200, "straight from 127.0.0.1");
    let events = logins_since(&hub, before).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].source.as_deref(), Some(CLAIMED));
    assert!(events[0].detail.contains("banned"), "{events:#?}");

    // An address on the deny list, named by the header, is refused too.
    let denied = HeaderRelay::start(hub_addr, proxy_v2(addr("198.51.100.7:4444"), to)).await;
    let (status, problem) = inbox(denied.addr.port()).await;
    assert_eq!(status, 403, "{problem}");
    let events = logins_since(&hub, before).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1].source.as_deref(), Some("198.51.100.7:4444"));
    assert!(events[1].detail.contains("deny list"), "{events:#?}");
    assert_eq!(hub.snapshot().await, snapshot);
    assert_eq!(hub.hub.bans().await.unwrap().len(), 1);

    // The session the claimed address logged in with is closed by the ban; the other stays.
    let closed = eventually(Duration::from_secs(10), async || {
        !hub.events(EventKind::SessionClosed, Outcome::Ok)
            .await
            .is_empty()
    })
    .await;
    assert!(closed, "the banned address's session was not closed");
    let closed = hub.events(EventKind::SessionClosed, Outcome::Ok).await;
    assert_eq!(closed.len(), 1, "{closed:#?}");
    assert_eq!(closed[0].source.as_deref(), Some(CLAIMED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_header_from_anyone_else_is_not_believed_and_none_from_the_balancer_is_dropped() {
    if !have("curl") {
        return;
    }
    for (config, from) in [
        // Off: curl's own PROXY header breaks the TLS handshake.
        (mailroom_https::Config::default(), "127.0.0.1"),
        // On, from outside the balancer's networks: the same.
        (behind_balancer(), "127.0.0.1"),
        // On, from the balancer without a header: dropped before TLS.
        (behind_balancer(), "127.0.0.3"),
    ] {
        let hub = TestHub::start_https(config, AuthConfig::default()).await;
        let alice = hub.client("alice").await;
        let snapshot = hub.snapshot().await;
        let before = all_events(&hub).await.len();
        let port = hub.https().addr.port();
        let body = serde_json::json!({"username": alice.name, "password": alice.password, "scope": "client"});
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["-sS", "--max-time", "30", "--cacert"])
            .arg(&hub.https().ca)
            .args(["--interface", from])
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .args(["-H", "Content-Type: application/json", "--data"])
            .arg(body.to_string())
            .arg(format!("https://localhost:{port}/api/v1/token"));
        if from == "127.0.0.1" {
            command.arg("--haproxy-protocol");
        }
        let output = run(command).await;
        assert!(!output.status.success(), "{from}: {}", text(&output));
        assert_eq!(all_events(&hub).await.len(), before, "{from}");
        assert_eq!(hub.snapshot().await, snapshot);
        assert!(hub.hub.bans().await.unwrap().is_empty());
    }
}
