//! End to end on the real binary, on the cluster engines: two `mailroom serve` nodes, each
//! with a data folder of its own, share one PostgreSQL database (`[meta] url`) and one S3
//! bucket prefix (`[blob] url`), as scripts/services starts them (PostgreSQL from Debian,
//! s3s-fs from crates.io). A file uploaded with OpenSSH sftp through node A is listed and
//! downloaded intact through node B at once; both nodes' events form one chain; neither node
//! takes the data folder's serve lock; and the operations listener answers the probes and
//! the metrics scrape. Behind HAProxy (Debian's package) with the PROXY protocol, SFTP and
//! HTTPS go round robin to both nodes, and every login event names the client's address, not
//! the balancer's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use mailroom_test_support::haproxy::{CLIENT_IP, Forward, HaProxy, SendProxy};
use mailroom_test_support::{eventually, sha256_file, ssh_options, text, write_random};
use tokio::process::Command;

mod common;
use common::cluster::{Engines, Node, client, probe, sftp, slow_put, stop, with_password};

#[tokio::test]
async fn a_file_sent_through_one_node_is_fetched_through_the_other() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let a = Node::init(root.path(), "node-a", &engines).await;
    let b = Node::init(root.path(), "node-b", &engines).await;
    // Neither folder holds an engine: no meta.db, no blobs/.
    for node in [&a, &b] {
        assert!(!node.data.join("meta.db").exists());
        assert!(!node.data.join("blobs").exists());
    }
    let alice = client(&a, &engines, root.path(), "alice").await;
    let bob = client(&b, &engines, root.path(), "bob").await;
    a.run(&["route", "allow", "alice", "bob"], &engines).await;

    let (mut node_a, a_at) = a.serve(&engines).await;
    let (mut node_b, b_at) = b.serve(&engines).await;
    // A second node on A's own folder starts too: the cluster engines take no lock.
    let (mut node_a2, a2_at) = a.serve(&engines).await;

    // Large enough for several multipart parts, and a small one kept inline in PostgreSQL.
    let big = root.path().join("big.bin");
    let big_sha = write_random(&big, 20 * 1024 * 1024 + 123, 7);
    let small = root.path().join("small.txt");
    let small_sha = write_random(&small, 4096, 8);
    sftp(
        root.path(),
        &a_at["sftp"],
        "alice",
        &alice,
        &format!(
            "put {} /outbox/bob/big.bin\nput {} /outbox/bob/small.txt\n",
            big.display(),
            small.display()
        ),
    )
    .await;

    // Listed and fetched through node B at once: no cache, no replication delay.
    let listing = sftp(
        root.path(),
        &b_at["sftp"],
        "bob",
        &bob,
        "ls -l /inbox/alice\n",
    )
    .await;
    assert!(listing.contains("big.bin"), "{listing}");
    assert!(listing.contains("small.txt"), "{listing}");
    let fetched = root.path().join("fetched");
    std::fs::create_dir(&fetched).unwrap();
    sftp(
        root.path(),
        &b_at["sftp"],
        "bob",
        &bob,
        &format!(
            "get /inbox/alice/big.bin {}\nget /inbox/alice/small.txt {}\n",
            fetched.join("big.bin").display(),
            fetched.join("small.txt").display()
        ),
    )
    .await;
    assert_eq!(sha256_file(&fetched.join("big.bin")), big_sha);
    assert_eq!(sha256_file(&fetched.join("small.txt")), small_sha);

    // The probes: alive and ready on both nodes, and metrics that counted the transfers.
    for at in [&a_at, &b_at] {
        assert_eq!(
            probe(&at["ops"], "/healthz").await,
            (200, "ok\n".to_owned())
        );
        assert_eq!(
            probe(&at["ops"], "/readyz").await,
            (200, "ready\n".to_owned())
        );
    }
    let (status, metrics) = probe(&a_at["ops"], "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("mailroom_transfer_bytes_total{direction=\"upload\",protocol=\"sftp\"}"),
        "{metrics}"
    );
    for series in [
        "mailroom_store_seconds_bucket",
        "mailroom_blob_seconds_bucket",
        "mailroom_connections{listener=\"sftp\"}",
        "mailroom_events_total{kind=\"upload\",protocol=\"sftp\",outcome=\"ok\"} 2",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    let (_, metrics_b) = probe(&b_at["ops"], "/metrics").await;
    assert!(
        metrics_b
            .contains("mailroom_transfer_bytes_total{direction=\"download\",protocol=\"sftp\"}"),
        "{metrics_b}"
    );

    // Draining: the third node, asked to stop while a transfer runs, answers "not ready" (a
    // balancer takes it out) and stays alive until the transfer ends.
    let slow = root.path().join("slow.bin");
    write_random(&slow, 16 * 1024 * 1024, 9);
    let mut transfer = slow_put(
        root.path(),
        &a2_at["sftp"],
        "alice",
        &alice,
        (&slow, "/outbox/bob/slow.bin"),
        800,
    );
    let under_way = eventually(Duration::from_secs(60), async || {
        let (_, metrics) = probe(&a2_at["ops"], "/metrics").await;
        metrics.contains("mailroom_blob_seconds_count{call=\"create\"} 1")
    })
    .await;
    assert!(under_way, "the slow upload did not start");
    let pid = node_a2.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let draining = eventually(Duration::from_secs(10), async || {
        probe(&a2_at["ops"], "/readyz").await == (503, "draining\n".to_owned())
    })
    .await;
    assert!(draining, "a draining node still says it is ready");
    assert_eq!(
        probe(&a2_at["ops"], "/healthz").await,
        (200, "ok\n".to_owned())
    );
    assert!(
        node_a2.try_wait().unwrap().is_none(),
        "the node did not wait for the transfer"
    );
    transfer.start_kill().unwrap();
    let _ = transfer.wait().await;
    let exit = tokio::time::timeout(Duration::from_secs(60), node_a2.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "the drained node did not stop cleanly: {exit:?}"
    );

    for child in [&mut node_a, &mut node_b] {
        stop(child).await;
    }
    // Three processes wrote events; the trail is one chain.
    let verdict = b.run(&["audit", "verify"], &engines).await;
    assert!(verdict.starts_with("audit trail intact: "), "{verdict}");
}

#[tokio::test]
async fn behind_haproxy_both_nodes_serve_and_events_show_the_client() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let a = Node::init(root.path(), "node-a", &engines).await;
    let b = Node::init(root.path(), "node-b", &engines).await;
    let alice = client(&a, &engines, root.path(), "alice").await;
    // carol logs in with a password over HTTPS.
    with_password(&a, &engines, "carol", "Vq7-tundra-ferret-94-lamp").await;

    // Both nodes serve node A's certificate (a certificate from "your CA", [tls] cert_file),
    // and believe the PROXY header from the balancer's address only.
    let tls = a.data.join("tls");
    let cert = tls.join("server.crt");
    let key = tls.join("server.key");
    let settings = [
        ("MAILROOM_SFTP_PROXY_PROTOCOL_FROM", "[\"127.0.0.3/32\"]"),
        ("MAILROOM_HTTPS_PROXY_PROTOCOL_FROM", "[\"127.0.0.3/32\"]"),
        ("MAILROOM_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("MAILROOM_TLS_KEY_FILE", key.to_str().unwrap()),
    ];
    let (mut node_a, a_at) = a.serve_with(&engines, &settings).await;
    let (mut node_b, b_at) = b.serve_with(&engines, &settings).await;
    let address = |at: &std::collections::HashMap<String, String>, protocol: &str| {
        at[protocol].parse::<std::net::SocketAddr>().unwrap()
    };
    let Some(haproxy) = HaProxy::start(&[
        Forward::round_robin(
            &[address(&a_at, "sftp"), address(&b_at, "sftp")],
            SendProxy::V2,
        ),
        Forward::round_robin(
            &[address(&a_at, "https"), address(&b_at, "https")],
            SendProxy::V2,
        ),
    ])
    .await
    else {
        return;
    };

    // Two SFTP sessions and two HTTPS logins through the balancer, from 127.0.0.2.
    let sftp_front = haproxy.frontend(0);
    for _ in 0..2 {
        let out = Command::new("sftp")
            .args(ssh_options())
            .args(["-o", &format!("BindAddress={CLIENT_IP}")])
            .arg("-i")
            .arg(&alice)
            .arg("-P")
            .arg(sftp_front.port().to_string())
            .arg("-b")
            .arg("-")
            .arg(format!("alice@{}", sftp_front.ip()))
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let https_front = haproxy.frontend(1);
    let ca = tls.join("server-ca.crt");
    // curl through the balancer from the client's address: the HTTP status and the body.
    let curl = async |path: &str, args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "60",
                "-w",
                "\n%{http_code}",
                "--cacert",
            ])
            .arg(&ca)
            .arg("--interface")
            .arg(CLIENT_IP.to_string())
            .arg("--resolve")
            .arg(format!(
                "localhost:{}:{}",
                https_front.port(),
                https_front.ip()
            ))
            .args(args)
            .arg(format!("https://localhost:{}{path}", https_front.port()))
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = out.rsplit_once('\n').unwrap();
        (status.parse::<u16>().unwrap(), body.to_owned())
    };
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (status, body) = curl(
            "/api/v1/token",
            &[
                "-H",
                "Content-Type: application/json",
                "--data",
                r#"{"username":"carol","password":"Vq7-tundra-ferret-94-lamp","scope":"client"}"#,
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        tokens.push(answer["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(haproxy.connections(0).await, 2, "{}", haproxy.log());
    assert_eq!(haproxy.connections(1).await, 2, "{}", haproxy.log());

    // Each node served one of each (round robin), as its own metrics count.
    for at in [&a_at, &b_at] {
        let (_, metrics) = probe(&at["ops"], "/metrics").await;
        for protocol in ["ssh", "https"] {
            let line = format!("mailroom_logins_total{{protocol=\"{protocol}\",outcome=\"ok\"}} 1");
            assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
        }
    }
    // And every login event, on either node, names the client, not the balancer.
    let logins = a
        .run(&["audit", "export", "--type", "login"], &engines)
        .await;
    let sources: Vec<String> = logins
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["source"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(sources.len(), 4, "{logins}");
    assert!(
        sources
            .iter()
            .all(|source| source.starts_with("127.0.0.2:")),
        "{sources:?}"
    );

    // Token revocation holds on every node: both tokens work through either node, and once
    // carol is disabled through node B's CLI, neither does, on either node.
    for token in &tokens {
        for _ in 0..2 {
            let auth = format!("Authorization: Bearer {token}");
            assert_eq!(curl("/api/v1/inbox", &["-H", &auth]).await.0, 200);
        }
    }
    b.run(&["account", "disable", "carol"], &engines).await;
    for token in &tokens {
        for _ in 0..2 {
            let auth = format!("Authorization: Bearer {token}");
            assert_eq!(curl("/api/v1/inbox", &["-H", &auth]).await.0, 401);
        }
    }
    drop(haproxy);
    stop(&mut node_a).await;
    stop(&mut node_b).await;
}
