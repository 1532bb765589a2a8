//! Client-certificate accounts over FTPS, driven by curl (and Python ftplib for the good
//! case) against a TestHub whose FTPS front end asks for client certificates
//! (`client_certificates = "optional"`, verified against the data folder's client CA).
//!
//! `alice` requires `password,certificate`. A good certificate (CN alice, our client CA) logs
//! her in; one naming bob (our client CA, so the handshake succeeds) is refused at login; an
//! expired one and one from a foreign CA are refused by the TLS handshake, before any login;
//! none at all is refused at login because the certificate factor is missing. An account
//! that also requires TOTP logs in with the certificate and `password:CODE`. Every refusal
//! is checked at the client, in the audit events, and against a snapshot of the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use mailroom_core::{
    AccountName, AuthConfig, Clock, DefenderConfig, EventKind, FactorSet, Outcome, Protocol,
    parse_network, totp_code,
};
use mailroom_test_support::{TestClient, TestHub, have, text};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

/// A client certificate on disk: the chain (certificate first) and its key.
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// A hub serving FTPS with client certificates asked for, alice requiring a password and a
/// certificate, bob a plain client, and loopback on the defender's safe list so that the
/// refusals do not end in a ban (the defender has its own test).
async fn hub_with_certificate_account() -> (TestHub, TestClient) {
    let config = mailroom_ftps::Config {
        client_certificates: mailroom_tls::ClientAuth::Optional,
        ..mailroom_ftps::Config::default()
    };
    let auth = AuthConfig {
        defender: DefenderConfig {
            safe: vec![parse_network("127.0.0.0/8").unwrap()],
            ..DefenderConfig::default()
        },
        ..AuthConfig::default()
    };
    let hub = TestHub::start_ftps_full(config, auth).await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.set_access("alice", |access| {
        access.factors = FactorSet::parse("password,certificate").unwrap();
    })
    .await;
    (hub, alice)
}

/// The data folder's PKI, as the TestHub made it.
fn pki(hub: &TestHub) -> mailroom_tls::Pki {
    mailroom_tls::load_pki(&hub.dir.path().join("tls")).unwrap()
}

/// Issues a certificate for `cn` from our client CA, valid 30 days, into a fresh folder.
fn issue_ours(hub: &TestHub, cn: &str) -> CertFiles {
    let out = hub.local_dir(&format!("cert-{cn}"));
    let issued = mailroom_tls::issue_client(&pki(hub), cn, 30, &out).unwrap();
    CertFiles {
        cert: issued.cert_path,
        key: issued.key_path,
    }
}

/// A certificate for `cn` from our client CA that expired ten days ago.
fn issue_expired(hub: &TestHub, cn: &str) -> CertFiles {
    let out = hub.local_dir(&format!("expired-{cn}"));
    let now = OffsetDateTime::now_utc();
    let issued = mailroom_tls::issue_client_with_validity(
        &pki(hub),
        cn,
        now - Duration::days(40),
        now - Duration::days(10),
        &out,
    )
    .unwrap();
    CertFiles {
        cert: issued.cert_path,
        key: issued.key_path,
    }
}

/// A certificate for `cn`, fit for client authentication in every respect except that its
/// issuer is a CA of our own making that the hub has never seen.
fn issue_foreign(dir: &Path, cn: &str) -> CertFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Mailroom client CA impostor");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.clone().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).unwrap();

    let files = CertFiles {
        cert: dir.join(format!("{cn}-foreign.crt")),
        key: dir.join(format!("{cn}-foreign.key")),
    };
    std::fs::write(&files.cert, format!("{}{}", cert.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// curl lists `/` over FTPS as `client`, presenting `cert` if given.
async fn curl_list(hub: &TestHub, client: &TestClient, cert: Option<&CertFiles>) -> Output {
    let mut args: Vec<&str> = Vec::new();
    if let Some(cert) = cert {
        args.extend([
            "--cert",
            cert.cert.to_str().unwrap(),
            "--key",
            cert.key.to_str().unwrap(),
        ]);
    }
    let url = hub.ftps_url("/");
    args.push(&url);
    hub.curl_ftps(client, &args).await
}

/// Login events about `account`, with any outcome.
async fn login_events(hub: &TestHub, account: &str, outcome: Outcome) -> Vec<mailroom_core::Event> {
    hub.events(EventKind::Login, outcome)
        .await
        .into_iter()
        .filter(|event| event.actor == account)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_good_certificate_and_the_password_log_in_with_curl_and_ftplib() {
    if !have("curl") {
        return;
    }
    let (hub, alice) = hub_with_certificate_account().await;
    let good = issue_ours(&hub, "alice");

    let output = curl_list(&hub, &alice, Some(&good)).await;
    assert!(output.status.success(), "{}", text(&output));
    let listing = String::from_utf8_lossy(&output.stdout);
    for folder in ["inbox", "outbox", "sent"] {
        assert!(listing.contains(folder), "{folder} missing: {listing}");
    }
    let ok = login_events(&hub, "alice", Outcome::Ok).await;
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].detail, "password+certificate");
    assert_eq!(ok[0].protocol, Protocol::Ftps);

    // Python's ssl module presents it the same way (load_cert_chain).
    let steps: Vec<Value> = hub
        .ftplib(
            "alice",
            &alice.password,
            &[
                &format!("--cert={}", good.cert.display()),
                &format!("--key={}", good.key.display()),
                "list:/",
            ],
        )
        .await
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(steps[0]["ok"], true, "{steps:?}");
    assert_eq!(steps[1]["ok"], true, "{steps:?}");
    let lines = steps[1]["lines"].to_string();
    assert!(lines.contains("inbox"), "{steps:?}");
    let ok = login_events(&hub, "alice", Outcome::Ok).await;
    assert_eq!(ok.len(), 2, "{ok:?}");
    assert_eq!(ok[1].detail, "password+certificate");
    assert!(
        login_events(&hub, "alice", Outcome::Refused)
            .await
            .is_empty()
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_naming_another_account_is_refused_at_login() {
    if !have("curl") {
        return;
    }
    let (hub, alice) = hub_with_certificate_account().await;
    let bobs = issue_ours(&hub, "bob");
    let before = hub.snapshot().await;

    let output = curl_list(&hub, &alice, Some(&bobs)).await;
    // curl exit 67: "the remote server denied curl to login" (the 530 to PASS).
    assert_eq!(output.status.code(), Some(67), "{}", text(&output));
    assert!(text(&output).contains("530"), "{}", text(&output));
    assert!(login_events(&hub, "alice", Outcome::Ok).await.is_empty());
    let refused = login_events(&hub, "alice", Outcome::Refused).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0].detail,
        "certificate: certificate subject does not match"
    );
    assert_eq!(refused[0].protocol, Protocol::Ftps);
    assert_eq!(hub.snapshot().await, before);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_certificate_is_refused_at_login_for_the_missing_factor() {
    if !have("curl") {
        return;
    }
    let (hub, alice) = hub_with_certificate_account().await;
    let before = hub.snapshot().await;

    let output = curl_list(&hub, &alice, None).await;
    assert_eq!(output.status.code(), Some(67), "{}", text(&output));
    assert!(text(&output).contains("530"), "{}", text(&output));
    assert!(login_events(&hub, "alice", Outcome::Ok).await.is_empty());
    let refused = login_events(&hub, "alice", Outcome::Refused).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]
            .detail
            .starts_with("ftps cannot prove certificate"),
        "{refused:?}"
    );
    assert_eq!(hub.snapshot().await, before);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_and_foreign_certificates_are_refused_by_the_handshake() {
    if !have("curl") {
        return;
    }
    let (hub, alice) = hub_with_certificate_account().await;
    let expired = issue_expired(&hub, "alice");
    let foreign = issue_foreign(&hub.local_dir("foreign"), "alice");
    let before = hub.snapshot().await;

    for (label, cert) in [("expired", &expired), ("foreign CA", &foreign)] {
        let output = curl_list(&hub, &alice, Some(cert)).await;
        // The server's alert ends the TLS session that AUTH TLS began: in TLS 1.3 curl has
        // finished its side of the handshake, so it sees the alert as a failed receive (56)
        // or as a failed handshake (35), never a login reply.
        assert!(
            matches!(output.status.code(), Some(35 | 56)),
            "{label}: {}",
            text(&output)
        );
        assert!(!text(&output).contains("530"), "{label}: {}", text(&output));
    }
    // The password was never read: no login event of any outcome for alice.
    assert!(login_events(&hub, "alice", Outcome::Ok).await.is_empty());
    assert!(
        login_events(&hub, "alice", Outcome::Refused)
            .await
            .is_empty()
    );
    assert_eq!(hub.snapshot().await, before);

    // The same hub still lets alice in with a good certificate: the refusals were the
    // certificates', not a ban or a broken listener.
    let good = issue_ours(&hub, "alice");
    let output = curl_list(&hub, &alice, Some(&good)).await;
    assert!(output.status.success(), "{}", text(&output));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_and_the_password_with_its_code_log_in_an_account_that_needs_all_three() {
    if !have("curl") {
        return;
    }
    let (hub, alice) = hub_with_certificate_account().await;
    let setup = hub
        .hub
        .enroll_totp(&TestHub::admin(), &AccountName::parse("alice").unwrap())
        .await
        .unwrap();
    hub.set_access("alice", |access| {
        access.factors = FactorSet::parse("password,certificate,totp").unwrap();
    })
    .await;
    let good = issue_ours(&hub, "alice");

    // The certificate and the password, but no code: 530, the reason says how, nothing spent.
    let before = hub.snapshot().await;
    let output = curl_list(&hub, &alice, Some(&good)).await;
    assert_eq!(output.status.code(), Some(67), "{}", text(&output));
    assert!(text(&output).contains("530"), "{}", text(&output));
    let refused = login_events(&hub, "alice", Outcome::Refused).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0].detail,
        "ftps needs the one-time code appended to the password (PASS password:123456)"
    );
    assert_eq!(hub.snapshot().await, before);
    assert_eq!(hub.account("alice").await.totp.unwrap().last_step, None);

    // With the code after the password (curl splits --user at the first colon).
    let now = u64::try_from(hub.clock.now().unix_timestamp()).unwrap();
    let coded = TestClient {
        password: format!(
            "{}:{}",
            alice.password,
            totp_code(setup.secret.expose(), now).unwrap()
        ),
        ..alice.clone()
    };
    let output = curl_list(&hub, &coded, Some(&good)).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("inbox"),
        "{}",
        text(&output)
    );
    let ok = login_events(&hub, "alice", Outcome::Ok).await;
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].detail, "password+totp+certificate");
    hub.stop().await;
}
