//! Client certificates: issuing one for an account with the client CA, and the record of
//! every certificate issued (`tls/issued.jsonl`, one JSON object per line, appended).
//!
//! This module does not decide which accounts may have a certificate (the binary checks that
//! the account exists and is a client) and does not revoke: an operator revokes with a CRL
//! made by their own tooling, listing serials from the record.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::disk::{self, CERT_MODE, KEY_MODE, RECORD_MODE};
use crate::error::{TlsError, io};
use crate::identity::CertInfo;
use crate::pki::{Pki, random_serial};

/// The longest validity of a client certificate.
const MAX_CLIENT_DAYS: u32 = 3650;
/// Certificates start this long before they are made, for hosts whose clock is behind.
const BACKDATE: Duration = Duration::hours(1);

/// A client certificate just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedClient {
    /// `NAME.crt`: the certificate followed by the client CA certificate.
    pub cert_path: PathBuf,
    /// `NAME.key`: its private key, 0600.
    pub key_path: PathBuf,
    /// The certificate, parsed (subject CN = the account name).
    pub info: CertInfo,
}

/// One line of `tls/issued.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// Serial number, lower-case hex: what a CRL lists.
    pub serial: String,
    /// Subject common name: the account.
    pub cn: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// SHA-256 of the certificate, lower-case hex.
    pub fingerprint_sha256: String,
    /// When it was issued, RFC 3339.
    pub issued_at: String,
}

/// Issues a client certificate for `account` (subject CN, EKU clientAuth, random serial),
/// valid for `days` (1 to 3650, and never past the client CA), signed by the PKI's client CA.
/// Writes `out_dir/ACCOUNT.crt` (the certificate, then the client CA) and `ACCOUNT.key`
/// (0600), and appends the certificate to `tls/issued.jsonl`.
///
/// `account` must already be a valid account name (the binary parses it as one); this
/// function only refuses names that could escape `out_dir`. It refuses to overwrite an
/// existing file, and on any refusal leaves `out_dir` as it was.
pub fn issue_client(
    pki: &Pki,
    account: &str,
    days: u32,
    out_dir: &Path,
) -> Result<IssuedClient, TlsError> {
    let now = OffsetDateTime::now_utc();
    if days == 0 || days > MAX_CLIENT_DAYS {
        return Err(TlsError::Setting(format!(
            "days must be 1 to {MAX_CLIENT_DAYS}, not {days}"
        )));
    }
    issue_client_with_validity(
        pki,
        account,
        now - BACKDATE,
        now + Duration::days(i64::from(days)),
        out_dir,
    )
}

/// [`issue_client`] with an explicit validity period, for tests that need a certificate from
/// the client CA that is expired or not yet valid (the CLI offers only [`issue_client`]).
/// `not_after` is capped at the client CA's own expiry; no other limit applies, so a
/// `not_after` in the past is accepted. Otherwise it behaves as [`issue_client`]: same
/// files, same refusals, and the certificate is recorded in `tls/issued.jsonl`.
pub fn issue_client_with_validity(
    pki: &Pki,
    account: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    out_dir: &Path,
) -> Result<IssuedClient, TlsError> {
    check_file_stem(account)?;
    let cert_path = out_dir.join(format!("{account}.crt"));
    let key_path = out_dir.join(format!("{account}.key"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(TlsError::Exists { path: path.clone() });
        }
    }

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, account);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = not_before;
    params.not_after = not_after.min(pki.client_ca.info.not_after);
    let cert = params.signed_by(&key, &pki.client_ca.issuer()?)?;
    let info = CertInfo::parse(cert.der())?;
    let chain = format!(
        "{}{}",
        cert.pem(),
        disk::read_text(&pki.client_ca.cert_path)?
    );
    let record = IssuedRecord {
        serial: info.serial_hex.clone(),
        cn: account.to_owned(),
        not_after: rfc3339(info.not_after),
        fingerprint_sha256: info.fingerprint_sha256.clone(),
        issued_at: rfc3339(OffsetDateTime::now_utc()),
    };

    if !out_dir.exists() {
        return Err(TlsError::Setting(format!(
            "the output folder {} does not exist",
            out_dir.display()
        )));
    }
    // Both files or neither: a failure after the first removes what was written.
    let written = disk::write_new(&key_path, key.serialize_pem().as_bytes(), KEY_MODE)
        .and_then(|()| {
            disk::write_new(&cert_path, chain.as_bytes(), CERT_MODE).inspect_err(|_| {
                let _ = std::fs::remove_file(&key_path);
            })
        })
        .and_then(|()| {
            append_record(&pki.issued_path(), &record).inspect_err(|_| {
                let _ = std::fs::remove_file(&key_path);
                let _ = std::fs::remove_file(&cert_path);
            })
        });
    written?;
    disk::sync_parent(&cert_path)?;
    Ok(IssuedClient {
        cert_path,
        key_path,
        info,
    })
}

/// Every record in `tls/issued.jsonl`, oldest first; none if the file does not exist.
pub fn issued_records(pki: &Pki) -> Result<Vec<IssuedRecord>, TlsError> {
    let path = pki.issued_path();
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io("read", &path)(err)),
    };
    let mut records = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io("read", &path))?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(
            serde_json::from_str(&line).map_err(|err| TlsError::Invalid {
                path: path.clone(),
                reason: format!("line {}: {err}", index + 1),
            })?,
        );
    }
    Ok(records)
}

fn append_record(path: &Path, record: &IssuedRecord) -> Result<(), TlsError> {
    let mut line = serde_json::to_string(record)
        .map_err(|err| TlsError::Setting(format!("cannot encode the issue record: {err}")))?;
    line.push('\n');
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(RECORD_MODE)
        .open(path)
        .map_err(io("write", path))?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write", path))
}

/// Refuses names that are not a plain file stem (the binary has already parsed an account
/// name, which is stricter; this guards the file names against any other caller).
fn check_file_stem(name: &str) -> Result<(), TlsError> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        Ok(())
    } else {
        Err(TlsError::Setting(format!(
            "{name:?} cannot name a client certificate"
        )))
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    // Invariant: certificate times are within years 1950..9999, which RFC 3339 can show.
    time.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{PkiSettings, ensure_pki, mode_of};
    use rustls::pki_types::{CertificateDer, UnixTime};
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn pki(temp: &tempfile::TempDir) -> Pki {
        ensure_pki(&temp.path().join("tls"), &PkiSettings::default()).unwrap()
    }

    #[test]
    fn a_client_certificate_chains_to_the_client_ca_with_client_auth_and_the_cn() {
        let temp = tempfile::tempdir().unwrap();
        let pki = pki(&temp);
        let out = temp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let issued = issue_client(&pki, "alice", 30, &out).unwrap();
        assert_eq!(issued.cert_path, out.join("alice.crt"));
        assert_eq!(mode_of(&issued.key_path), 0o600);
        assert_eq!(mode_of(&issued.cert_path), 0o644);
        assert_eq!(issued.info.common_name.as_deref(), Some("alice"));

        let chain = crate::disk::read_certs(&issued.cert_path).unwrap();
        assert_eq!(chain.len(), 2, "certificate then client CA");
        assert_eq!(chain[1], pki.client_ca.cert_der);
        let (_, x509) = X509Certificate::from_der(chain[0].as_ref()).unwrap();
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!x509.is_ca());
        let days = (issued.info.not_after - OffsetDateTime::now_utc()).whole_days();
        assert!((29..=30).contains(&days), "{days}");

        // rustls's own client verifier accepts it against the client CA, not the server CA.
        let verify = |ca: &CertificateDer<'static>| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.clone()).unwrap();
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                crate::provider(),
            )
            .build()
            .unwrap()
            .verify_client_cert(&chain[0], &[], UnixTime::now())
            .map(|_| ())
        };
        verify(&pki.client_ca.cert_der).unwrap();
        assert!(verify(&pki.server_ca.cert_der).is_err());

        let records = issued_records(&pki).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].cn, "alice");
        assert_eq!(records[0].serial, issued.info.serial_hex);
        assert_eq!(
            records[0].fingerprint_sha256,
            issued.info.fingerprint_sha256
        );
        assert_eq!(mode_of(&pki.issued_path()), 0o600);

        // A second one for the same account gets its own serial.
        let out2 = temp.path().join("out2");
        std::fs::create_dir(&out2).unwrap();
        let second = issue_client(&pki, "alice", 30, &out2).unwrap();
        assert_ne!(second.info.serial_hex, issued.info.serial_hex);
        assert_eq!(issued_records(&pki).unwrap().len(), 2);
    }

    #[test]
    fn refusals_write_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let pki = pki(&temp);
        let out = temp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("bob.key"), b"mine").unwrap();
        for (name, days, expect) in [
            ("bob", 30, "bob.key already exists"),
            ("../evil", 30, "cannot name"),
            ("", 30, "cannot name"),
            ("carol", 0, "days must be"),
            ("carol", 5000, "days must be"),
        ] {
            let err = issue_client(&pki, name, days, &out)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{name}: {err}");
        }
        let err = issue_client(&pki, "carol", 30, &temp.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(std::fs::read(out.join("bob.key")).unwrap(), b"mine");
        assert!(!pki.issued_path().exists());
    }
}
