//! E-mail end to end: a Hub on the in-memory test bed with an e-mail rule, the real worker and
//! mailer (lettre over rustls), and a real SMTP server, aiosmtpd from PyPI (`.ci/run`
//! installs it into `.venv-test`), which writes each mail it accepts into a maildir. Run
//! plain to a loopback relay, and with STARTTLS required by the server and verified by the
//! hub against the test PKI's CA. Each mail carries the job's id as its Message-ID, a
//! readable text part and the event as JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mailroom_core::{Handler, Hub, JobState, RetryPolicy};
use mailroom_events::{Handlers, Mailer, SmtpConfig, SmtpSecurity};
use mailroom_test_support::{eventually, python_with};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// aiosmtpd on 127.0.0.1, writing mails into `maildir/new`.
struct Smtp {
    port: u16,
    maildir: PathBuf,
    _child: Child,
}

async fn smtp(python: &Path, dir: &Path, tls: Option<(&Path, &Path)>) -> Smtp {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let maildir = dir.join("maildir");
    let mut command = Command::new(python);
    command
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"]);
    if let Some((cert, key)) = tls {
        // Without --no-requiretls the server refuses MAIL before STARTTLS.
        command.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
    }
    command
        .arg(&maildir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    let up = eventually(Duration::from_secs(30), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "aiosmtpd did not start on port {port}");
    Smtp {
        port,
        maildir,
        _child: child,
    }
}

/// A Hub whose rule mails every delivery to ops@example.test, with the worker running on
/// `mailer`; alice may send to bob.
async fn hub_mailing(mailer: Mailer) -> (Arc<Hub>, CancellationToken) {
    let handler = Handler::Email("ops@example.test".to_owned());
    let hub = common::hub("mail-ops", handler, RetryPolicy::default()).await;
    let shutdown = common::worker(
        &hub,
        Handlers {
            webhooks: None,
            mailer: Some(mailer),
            scanner: None,
        },
    );
    (hub, shutdown)
}

/// alice sends bob `invoice.pdf` from 192.0.2.10; returns the delivery's id.
async fn send(hub: &Hub) -> String {
    common::send(hub, "invoice.pdf", Some("192.0.2.10:50000")).await
}

/// A hub mailing through `config` sends one delivery's mail to `server`, which is checked;
/// returns the mail and the worker's token.
async fn round_trip(config: &SmtpConfig, dir: &Path, server: &Smtp) -> (String, CancellationToken) {
    let mailer = Mailer::new(config, dir).unwrap().unwrap();
    let (hub, shutdown) = hub_mailing(mailer).await;
    let delivery = send(&hub).await;
    common::jobs_when(&hub, |jobs| jobs[0].state == JobState::Done).await;
    let mail = the_mail(&server.maildir);
    check_mail(&hub, &mail, &delivery).await;
    (mail, shutdown)
}

/// The one mail in the maildir. aiosmtpd writes a mail before it answers 250, so once the
/// job is done the mail is there.
fn the_mail(maildir: &Path) -> String {
    let new = maildir.join("new");
    let mut mails: Vec<_> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    std::fs::read_to_string(mails.pop().unwrap()).unwrap()
}

/// Checks a mail: headers, the text part and the JSON part, against the job and delivery.
async fn check_mail(hub: &Hub, mail: &str, delivery: &str) {
    let job = common::jobs_when(hub, |jobs| jobs[0].state == JobState::Done)
        .await
        .remove(0);
    assert!(
        mail.contains(&format!("Message-ID: <{}@mailroom>", job.id)),
        "{mail}"
    );
    assert!(mail.contains("To: ops@example.test"), "{mail}");
    assert!(
        mail.contains("Subject: [Mailroom] delivery.delivered ok"),
        "{mail}"
    );
    assert!(mail.contains("Content-Type: text/plain"), "{mail}");
    assert!(
        mail.contains("Mailroom rule \"mail-ops\" selected this event."),
        "{mail}"
    );
    assert!(mail.contains("from 192.0.2.10:50000"), "{mail}");
    // The JSON part: from its first brace to its last.
    let json_at = mail
        .find("Content-Type: application/json")
        .expect("a JSON part");
    let part = &mail[json_at..];
    let json = &part[part.find('{').unwrap()..=part.rfind('}').unwrap()];
    let event: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(event["kind"], "delivery.delivered");
    assert_eq!(event["object"], delivery);
    assert_eq!(event["id"], job.event.to_string().as_str());
}

#[tokio::test]
async fn a_mail_goes_plain_to_a_loopback_relay() {
    let Some(python) = python_with("aiosmtpd") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = smtp(&python, dir.path(), None).await;
    let config = SmtpConfig {
        server: format!("127.0.0.1:{}", server.port),
        security: SmtpSecurity::None,
        from: "mailroom@example.test".to_owned(),
        ..SmtpConfig::default()
    };
    let (mail, shutdown) = round_trip(&config, dir.path(), &server).await;
    assert!(mail.contains("From: mailroom@example.test"), "{mail}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_mail_goes_over_starttls_verified_against_the_ca() {
    let Some(python) = python_with("aiosmtpd") else {
        return;
    };
    mailroom_tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = mailroom_tls::ensure_pki(
        &dir.path().join("tls"),
        &mailroom_tls::PkiSettings::default(),
    )
    .unwrap();
    let server = smtp(
        &python,
        dir.path(),
        Some((&pki.server_cert_path, &pki.server_key_path)),
    )
    .await;
    let config = SmtpConfig {
        server: format!("127.0.0.1:{}", server.port),
        security: SmtpSecurity::Starttls,
        from: "mailroom@example.test".to_owned(),
        ca_file: pki.server_ca.cert_path.clone(),
        ..SmtpConfig::default()
    };
    let (_mail, shutdown) = round_trip(&config, dir.path(), &server).await;
    shutdown.cancel();

    // The same server, but a hub that does not trust its CA: nothing is sent, and the job
    // records why.
    let untrusted = SmtpConfig {
        ca_file: PathBuf::new(),
        ..config
    };
    let mailer = Mailer::new(&untrusted, dir.path()).unwrap().unwrap();
    let (hub, shutdown) = hub_mailing(mailer).await;
    send(&hub).await;
    let error = common::jobs_when(&hub, |jobs| jobs[0].last_error.is_some())
        .await
        .remove(0)
        .last_error
        .unwrap()
        .to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("tls"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_dir(server.maildir.join("new"))
            .unwrap()
            .count(),
        1,
        "no second mail"
    );
    shutdown.cancel();
}
