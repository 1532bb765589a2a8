//! Real TLS handshakes, in memory over a `tokio::io::duplex` pipe with tokio-rustls: the server
//! configs of [`crate::server_config`] against rustls clients presenting our certificates,
//! foreign ones, expired and revoked ones, none, and ALPN offers.

use std::path::Path;
use std::sync::Arc;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use time::{Duration, OffsetDateTime};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::client::issue_client_with_validity;
use crate::disk::{read_certs, read_key};
use crate::{
    ClientAuth, IssuedClient, Pki, PkiSettings, TlsSettings, client_identity, ensure_pki,
    issue_client, server_config,
};

/// What the server saw of one handshake.
#[derive(Debug)]
struct Accepted {
    peer: Option<Vec<CertificateDer<'static>>>,
    alpn: Option<Vec<u8>>,
}

/// Runs one handshake; the server's verdict decides (in TLS 1.3 the client finishes before
/// the server has checked its certificate).
async fn handshake(
    server: &TlsSettings,
    pki: &Pki,
    client_cert: Option<&IssuedClient>,
    client_alpn: &[&str],
) -> Result<Accepted, String> {
    let server_config = server_config(server).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    roots.add(pki.server_ca.cert_der.clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut client_config = match client_cert {
        Some(issued) => builder
            .with_client_auth_cert(
                read_certs(&issued.cert_path).unwrap(),
                read_key(&issued.key_path).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    client_config.alpn_protocols = client_alpn.iter().map(|p| p.as_bytes().to_vec()).collect();

    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server_config);
    let connector = TlsConnector::from(Arc::new(client_config));
    let name = ServerName::try_from("localhost").unwrap();
    let (server_side, _client_side) = tokio::join!(
        acceptor.accept(server_io),
        connector.connect(name, client_io)
    );
    let stream = server_side.map_err(|e| e.to_string())?;
    let connection = stream.get_ref().1;
    Ok(Accepted {
        peer: connection.peer_certificates().map(<[_]>::to_vec),
        alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
    })
}

fn fresh_pki(dir: &Path) -> Pki {
    ensure_pki(&dir.join("tls"), &PkiSettings::default()).unwrap()
}

fn issue(pki: &Pki, dir: &Path, name: &str) -> IssuedClient {
    let out = dir.join(format!("out-{name}"));
    std::fs::create_dir_all(&out).unwrap();
    issue_client(pki, name, 30, &out).unwrap()
}

fn settings(pki: &Pki, client_auth: ClientAuth) -> TlsSettings {
    TlsSettings {
        client_auth,
        alpn: vec!["ftp".to_owned()],
        ..TlsSettings::from_pki(pki)
    }
}

#[tokio::test]
async fn required_accepts_our_certificate_and_names_the_account() {
    let temp = tempfile::tempdir().unwrap();
    let pki = fresh_pki(temp.path());
    let alice = issue(&pki, temp.path(), "alice");
    let accepted = handshake(
        &settings(&pki, ClientAuth::Required),
        &pki,
        Some(&alice),
        &[],
    )
    .await
    .unwrap();
    let identity = client_identity(&accepted.peer.unwrap()).unwrap();
    assert_eq!(identity.subject_cn, "alice");
    assert_eq!(identity.fingerprint_sha256, alice.info.fingerprint_sha256);
    assert_eq!(identity.not_after, alice.info.not_after);
}

#[tokio::test]
async fn required_refuses_foreign_expired_and_missing_certificates() {
    let temp = tempfile::tempdir().unwrap();
    let pki = fresh_pki(temp.path());
    let required = settings(&pki, ClientAuth::Required);

    let other = fresh_pki(&temp.path().join("other"));
    let mallory = issue(&other, temp.path(), "mallory");
    let err = handshake(&required, &pki, Some(&mallory), &[])
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // The server CA does not sign client certificates: one from it is foreign too.
    let server_signed = issue(&pki_with_client_ca_swapped(&pki), temp.path(), "eve");
    assert!(
        handshake(&required, &pki, Some(&server_signed), &[])
            .await
            .is_err()
    );

    let out = temp.path().join("expired");
    std::fs::create_dir(&out).unwrap();
    let now = OffsetDateTime::now_utc();
    let expired = issue_client_with_validity(
        &pki,
        "alice",
        now - Duration::days(40),
        now - Duration::days(10),
        &out,
    )
    .unwrap();
    let err = handshake(&required, &pki, Some(&expired), &[])
        .await
        .unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");

    let err = handshake(&required, &pki, None, &[]).await.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_and_others_are_not() {
    let temp = tempfile::tempdir().unwrap();
    let pki = fresh_pki(temp.path());
    let alice = issue(&pki, temp.path(), "alice");
    let bob = issue(&pki, temp.path(), "bob");
    let now = OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(7),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from_slice(&hex::decode(&alice.info.serial_hex).unwrap()),
            revocation_time: now - Duration::minutes(5),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&pki.client_ca.issuer().unwrap())
    .unwrap();
    let crl_path = temp.path().join("client.crl");
    std::fs::write(&crl_path, crl.pem().unwrap()).unwrap();
    let with_crl = TlsSettings {
        crl: Some(crl_path.clone()),
        ..settings(&pki, ClientAuth::Required)
    };
    let err = handshake(&with_crl, &pki, Some(&alice), &[])
        .await
        .unwrap_err();
    assert!(err.contains("Revoked"), "{err}");
    handshake(&with_crl, &pki, Some(&bob), &[]).await.unwrap();

    // The same CRL as DER.
    std::fs::write(&crl_path, crl.der().as_ref()).unwrap();
    assert!(handshake(&with_crl, &pki, Some(&alice), &[]).await.is_err());
    handshake(&with_crl, &pki, Some(&bob), &[]).await.unwrap();
}

#[tokio::test]
async fn optional_accepts_no_certificate_but_not_a_bad_one() {
    let temp = tempfile::tempdir().unwrap();
    let pki = fresh_pki(temp.path());
    let optional = settings(&pki, ClientAuth::Optional);
    let accepted = handshake(&optional, &pki, None, &[]).await.unwrap();
    assert!(accepted.peer.is_none());

    let alice = issue(&pki, temp.path(), "alice");
    let accepted = handshake(&optional, &pki, Some(&alice), &[]).await.unwrap();
    assert_eq!(
        client_identity(&accepted.peer.unwrap()).unwrap().subject_cn,
        "alice"
    );

    let other = fresh_pki(&temp.path().join("other"));
    let mallory = issue(&other, temp.path(), "mallory");
    assert!(
        handshake(&optional, &pki, Some(&mallory), &[])
            .await
            .is_err()
    );

    // Off asks for nothing: a client with a certificate does not send it.
    let off = settings(&pki, ClientAuth::Off);
    let accepted = handshake(&off, &pki, Some(&alice), &[]).await.unwrap();
    assert!(accepted.peer.is_none());
}

#[tokio::test]
async fn an_external_client_ca_bundle_replaces_ours() {
    let temp = tempfile::tempdir().unwrap();
    let pki = fresh_pki(temp.path());
    let external = fresh_pki(&temp.path().join("external"));
    let ours = issue(&pki, temp.path(), "alice");
    let theirs = issue(&external, temp.path(), "bob");
    let settings = TlsSettings {
        client_ca: external.client_ca.cert_path.clone(),
        ..settings(&pki, ClientAuth::Required)
    };
    handshake(&settings, &pki, Some(&theirs), &[])
        .await
        .unwrap();
    assert!(handshake(&settings, &pki, Some(&ours), &[]).await.is_err());
}

#[tokio::test]
async fn alpn_ftp_is_negotiated_and_h2_alone_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let pki = fresh_pki(temp.path());
    let ftp = settings(&pki, ClientAuth::Off);
    let accepted = handshake(&ftp, &pki, None, &["ftp"]).await.unwrap();
    assert_eq!(accepted.alpn.as_deref(), Some(&b"ftp"[..]));
    let accepted = handshake(&ftp, &pki, None, &["h2", "ftp"]).await.unwrap();
    assert_eq!(accepted.alpn.as_deref(), Some(&b"ftp"[..]));
    let err = handshake(&ftp, &pki, None, &["h2"]).await.unwrap_err();
    assert!(err.contains("doesn't support any known protocol"), "{err}");
    // A client that offers no ALPN at all is served.
    let accepted = handshake(&ftp, &pki, None, &[]).await.unwrap();
    assert_eq!(accepted.alpn, None);
}

/// A copy of `pki` whose "client CA" is really the server CA, to issue a client certificate
/// that the server CA signed.
fn pki_with_client_ca_swapped(pki: &Pki) -> Pki {
    let loaded = ensure_pki(&pki.dir, &PkiSettings::default()).unwrap();
    let server_ca = ensure_pki(&pki.dir, &PkiSettings::default())
        .unwrap()
        .server_ca;
    Pki {
        client_ca: server_ca,
        ..loaded
    }
}
