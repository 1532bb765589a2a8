//! Webhooks end to end: a Hub on the in-memory test bed with a rule, the real worker and the
//! real sender, and a real HTTPS receiver (hyper on rustls, with a certificate of a CA made
//! for the test) that checks each request's Standard Webhooks signature and timestamp the
//! way a receiver should, answers as the test scripts it, and records what it got.
//!
//! Covered: a signed delivery; a 500 answered, then the same job (same `webhook-id`) sent
//! again after its backoff and done; an address inside the hub's own network refused unless
//! allowed, with nothing sent; a certificate the hub does not trust refused, with nothing
//! sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

mod common;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mailroom_core::{Handler, Hub, Job, JobState, RetryPolicy};
use mailroom_events::{Handlers, Webhooks, WebhooksConfig, secret_key, sign};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One request as the receiver saw it, and whether its signature and timestamp held.
#[derive(Debug)]
struct Received {
    id: String,
    body: serde_json::Value,
    verified: bool,
}

/// A receiver on 127.0.0.1 serving the test PKI's server certificate.
struct Receiver {
    addr: SocketAddr,
    got: mpsc::UnboundedReceiver<Received>,
    /// Statuses to answer, in order; 200 once they run out.
    script: Arc<Mutex<VecDeque<u16>>>,
}

/// Starts a receiver whose certificate the CA in `pki_dir/tls` signed; `key` checks
/// signatures.
async fn receiver(pki_dir: &Path, key: Vec<u8>) -> Receiver {
    let pki = mailroom_tls::ensure_pki(&pki_dir.join("tls"), &mailroom_tls::PkiSettings::default())
        .unwrap();
    let mut settings = mailroom_tls::TlsSettings::from_pki(&pki);
    settings.alpn = vec!["http/1.1".to_owned()];
    let acceptor = tokio_rustls::TlsAcceptor::from(mailroom_tls::server_config(&settings).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, got) = mpsc::unbounded_channel();
    let script = Arc::new(Mutex::new(VecDeque::new()));
    let (key, answers) = (Arc::new(key), script.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, key, tx, answers) =
                (acceptor.clone(), key.clone(), tx.clone(), answers.clone());
            tokio::spawn(async move {
                // A client that refuses our certificate ends here, having sent nothing.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (key, tx, answers) = (key.clone(), tx.clone(), answers.clone());
                    async move {
                        let received = check(&key, request).await;
                        let status = answers.lock().unwrap().pop_front().unwrap_or(200);
                        let status = if received.verified { status } else { 401 };
                        tx.send(received).unwrap();
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(StatusCode::from_u16(status).unwrap())
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Receiver { addr, got, script }
}

/// What a receiver checks: the signature over id, timestamp and body, and a timestamp
/// within five minutes of now.
async fn check(key: &[u8], request: Request<Incoming>) -> Received {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let timestamp: i64 = timestamp.parse().unwrap_or(0);
    let fresh = (time::OffsetDateTime::now_utc().unix_timestamp() - timestamp).abs() <= 300;
    let verified = fresh && !id.is_empty() && sign(key, &id, timestamp, &body) == signature;
    Received {
        id,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        verified,
    }
}

/// A Hub with one rule, `hook`, sending every delivery to `url`, retried fast.
async fn hub(url: &str) -> Arc<Hub> {
    let retry = RetryPolicy {
        max_attempts: 3,
        base: time::Duration::milliseconds(200),
        cap: time::Duration::seconds(1),
    };
    common::hub("hook", Handler::Webhook(url.to_owned()), retry).await
}

/// alice sends bob `report.pdf`; returns the delivery's id.
async fn send(hub: &Hub) -> String {
    common::send(hub, "report.pdf", None).await
}

/// The worker over `hub` with webhooks set up in `data` by `config`.
fn worker(hub: &Arc<Hub>, data: &Path, config: &WebhooksConfig) -> CancellationToken {
    let webhooks = Webhooks::new(config, data).unwrap();
    common::worker(
        hub,
        Handlers {
            webhooks: Some(webhooks),
            mailer: None,
            scanner: None,
        },
    )
}

/// The one job of the hub, once it has left the queue or failed its `attempts`-th attempt
/// (`u32::MAX`: once it has left the queue).
async fn settled(hub: &Hub, attempts: u32) -> Job {
    common::jobs_when(hub, |jobs| {
        let job = &jobs[0];
        job.state != JobState::Queued || (job.attempts >= attempts && job.last_error.is_some())
    })
    .await
    .remove(0)
}

fn trusting(data: &Path, allow_loopback: bool) -> WebhooksConfig {
    WebhooksConfig {
        ca_file: data.join("tls").join(mailroom_tls::files::SERVER_CA_CERT),
        allow_networks: if allow_loopback {
            vec!["127.0.0.0/8".to_owned()]
        } else {
            Vec::new()
        },
        timeout_seconds: 5,
        ..WebhooksConfig::default()
    }
}

/// The key of the secret `serve` would create in `data`.
fn key_in(data: &Path) -> Vec<u8> {
    secret_key(&std::fs::read_to_string(data.join("webhook-secret")).unwrap()).unwrap()
}

#[tokio::test]
async fn a_signed_webhook_is_retried_after_a_500_with_the_same_id() {
    mailroom_tls::install_provider();
    let data = tempfile::tempdir().unwrap();
    // The sender creates the secret; the receiver is given it.
    let config = trusting(data.path(), true);
    Webhooks::new(&WebhooksConfig::default(), data.path()).unwrap();
    let mut receiver = receiver(data.path(), key_in(data.path())).await;
    assert!(
        config.ca_file.exists(),
        "the test PKI's CA is where the config says"
    );
    receiver.script.lock().unwrap().push_back(500);
    let url = format!("https://127.0.0.1:{}/mailroom", receiver.addr.port());
    let hub = hub(&url).await;
    let shutdown = worker(&hub, data.path(), &config);
    let delivery = send(&hub).await;

    let first = receiver.got.recv().await.unwrap();
    let second = receiver.got.recv().await.unwrap();
    assert!(first.verified && second.verified, "{first:?} {second:?}");
    assert_eq!(
        first.id, second.id,
        "the idempotency key is the same on a retry"
    );
    assert_eq!(second.body["type"], "delivery.delivered");
    assert_eq!(second.body["rule"], "hook");
    assert_eq!(second.body["data"]["object"], delivery.as_str());
    assert_eq!(second.body["data"]["kind"], "delivery.delivered");

    let job = settled(&hub, u32::MAX).await;
    assert_eq!((job.state, job.attempts), (JobState::Done, 2));
    assert_eq!(job.id.to_string(), first.id);
    shutdown.cancel();
}

#[tokio::test]
async fn a_webhook_into_the_hubs_own_network_is_refused_unless_allowed() {
    mailroom_tls::install_provider();
    let data = tempfile::tempdir().unwrap();
    let config = trusting(data.path(), false);
    Webhooks::new(&WebhooksConfig::default(), data.path()).unwrap();
    let mut receiver = receiver(data.path(), key_in(data.path())).await;
    // By address and by a name that resolves to loopback.
    for host in ["127.0.0.1".to_owned(), "localhost".to_owned()] {
        let url = format!("https://{host}:{}/mailroom", receiver.addr.port());
        let hub = hub(&url).await;
        let shutdown = worker(&hub, data.path(), &config);
        send(&hub).await;
        let job = settled(&hub, 1).await;
        let error = job.last_error.clone().unwrap();
        assert!(error.contains("public address"), "{host}: {error}");
        shutdown.cancel();
    }
    assert!(
        receiver.got.try_recv().is_err(),
        "nothing reached the receiver"
    );
}

#[tokio::test]
async fn a_receiver_whose_certificate_is_not_trusted_gets_nothing() {
    mailroom_tls::install_provider();
    let data = tempfile::tempdir().unwrap();
    let config = WebhooksConfig {
        ca_file: std::path::PathBuf::new(),
        ..trusting(data.path(), true)
    };
    Webhooks::new(&WebhooksConfig::default(), data.path()).unwrap();
    let mut receiver = receiver(data.path(), key_in(data.path())).await;
    let url = format!("https://127.0.0.1:{}/mailroom", receiver.addr.port());
    let hub = hub(&url).await;
    let shutdown = worker(&hub, data.path(), &config);
    send(&hub).await;
    let job = settled(&hub, 1).await;
    let error = job.last_error.clone().unwrap().to_lowercase();
    assert!(error.contains("certificate"), "{error}");
    assert!(
        receiver.got.try_recv().is_err(),
        "nothing reached the receiver"
    );
    shutdown.cancel();
}
