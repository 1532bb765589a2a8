//! The local PKI in `<data>/tls/`: two certificate authorities and the server certificate.
//!
//! ```text
//! tls/                 0700
//!   server-ca.crt      0644  the server CA (self-signed, 10 years): what clients trust
//!   server-ca.key      0600
//!   server.crt         0644  the server certificate, signed by the server CA, for the
//!   server.key         0600  configured host names (re-issued when they change or expire)
//!   client-ca.crt      0644  the client CA (self-signed, 10 years): what signs client
//!   client-ca.key      0600  certificates; the TLS front ends verify clients against it
//!   issued.jsonl       0600  one line per client certificate issued (see `client.rs`)
//! ```
//!
//! Keys are ECDSA P-256 with SHA-256 signatures: every TLS client in use (OpenSSL 3's curl,
//! GnuTLS's lftp, Python's ssl, Chromium, rustls) accepts it for server certificates, which is
//! not yet true of Ed25519. [`ensure_pki`] creates what is missing and loads what exists; it
//! never overwrites a certificate authority. It does not revoke (see the `crl` setting) and
//! does not decide which CA the front ends verify clients against (see [`crate::TlsSettings`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::disk::{self, CERT_MODE, KEY_MODE};
use crate::error::{TlsError, io};
use crate::identity::{CertInfo, parse_x509};

/// File names inside the PKI folder.
pub mod files {
    /// The server CA certificate: what clients are told to trust.
    pub const SERVER_CA_CERT: &str = "server-ca.crt";
    /// The server CA key.
    pub const SERVER_CA_KEY: &str = "server-ca.key";
    /// The server certificate.
    pub const SERVER_CERT: &str = "server.crt";
    /// The server certificate's key.
    pub const SERVER_KEY: &str = "server.key";
    /// The client CA certificate.
    pub const CLIENT_CA_CERT: &str = "client-ca.crt";
    /// The client CA key.
    pub const CLIENT_CA_KEY: &str = "client-ca.key";
    /// The record of issued client certificates, one JSON object per line.
    pub const ISSUED: &str = "issued.jsonl";
}

/// How long a certificate authority is valid.
const CA_DAYS: i64 = 3650;
/// The server certificate is re-issued when it expires within this time.
const RENEW_BEFORE: Duration = Duration::days(30);
/// Certificates start this long before they are made, for clients whose clock is behind.
const BACKDATE: Duration = Duration::hours(1);
/// The longest validity accepted for a server certificate: browsers refuse more than 398 days.
const MAX_SERVER_DAYS: u32 = 398;

/// What the server certificate must cover and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiSettings {
    /// Host names and IP addresses the server certificate names (DNS or IP SANs).
    pub hostnames: Vec<String>,
    /// Days a newly issued server certificate is valid (1 to 398; the default, 365, keeps
    /// within the 366 days of Mozilla's "intermediate" server profile).
    pub server_cert_days: u32,
}

impl Default for PkiSettings {
    fn default() -> Self {
        PkiSettings {
            hostnames: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            server_cert_days: 365,
        }
    }
}

/// Why [`ensure_pki`] issued a new server certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerReissue {
    /// There was none (or only half of one).
    Missing,
    /// The configured host names differ from the certificate's.
    HostNames,
    /// It expires within 30 days.
    Expiring,
    /// It is not signed by the server CA, or its key does not match it.
    Mismatch,
}

/// The PKI of a data folder, loaded.
#[derive(Debug)]
pub struct Pki {
    /// The `tls/` folder.
    pub dir: PathBuf,
    /// The server CA.
    pub server_ca: Authority,
    /// The client CA (ours; an external bundle may be configured in its place).
    pub client_ca: Authority,
    /// The server certificate file (the certificate alone; clients hold the CA).
    pub server_cert_path: PathBuf,
    /// The server key file.
    pub server_key_path: PathBuf,
    /// The server certificate.
    pub server_cert: CertInfo,
    /// Files written by this [`ensure_pki`] call, in order.
    pub created: Vec<PathBuf>,
    /// Why the server certificate was issued by this call, if it was.
    pub server_reissued: Option<ServerReissue>,
}

impl Pki {
    /// The record of issued client certificates.
    pub fn issued_path(&self) -> PathBuf {
        self.dir.join(files::ISSUED)
    }
}

/// A certificate authority: its files, its certificate and (inside this crate) its key.
pub struct Authority {
    /// The certificate file (PEM).
    pub cert_path: PathBuf,
    /// The key file (PEM, 0600).
    pub key_path: PathBuf,
    /// The certificate, parsed.
    pub info: CertInfo,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    pub(crate) key: KeyPair,
}

impl fmt::Debug for Authority {
    // The key is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("info", &self.info)
            .field("key", &"***")
            .finish()
    }
}

impl Authority {
    /// An rcgen issuer that signs with this authority.
    pub(crate) fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, TlsError> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }
}

/// Brings `dir` to a complete PKI: creates the folder (0700), each CA whose two files are both
/// missing, and the server certificate when it is missing, names other host names than
/// `settings.hostnames`, expires within 30 days, or no longer matches the server CA. Loads
/// everything else as it is; never overwrites a CA.
pub fn ensure_pki(dir: &Path, settings: &PkiSettings) -> Result<Pki, TlsError> {
    let sans = parse_hostnames(&settings.hostnames)?;
    if settings.server_cert_days == 0 || settings.server_cert_days > MAX_SERVER_DAYS {
        return Err(TlsError::Setting(format!(
            "server_cert_days must be 1 to {MAX_SERVER_DAYS} (clients refuse longer), not {}",
            settings.server_cert_days
        )));
    }
    let mut created = Vec::new();
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
        created.push(dir.to_owned());
    }
    let now = OffsetDateTime::now_utc();
    let server_ca = load_or_create_ca(
        dir,
        files::SERVER_CA_CERT,
        files::SERVER_CA_KEY,
        "Mailroom server CA",
        now,
        &mut created,
    )?;
    let client_ca = load_or_create_ca(
        dir,
        files::CLIENT_CA_CERT,
        files::CLIENT_CA_KEY,
        "Mailroom client CA",
        now,
        &mut created,
    )?;

    let server_cert_path = dir.join(files::SERVER_CERT);
    let server_key_path = dir.join(files::SERVER_KEY);
    let reissue = server_cert_problem(&server_cert_path, &server_key_path, &server_ca, &sans, now)?;
    if reissue.is_some() {
        issue_server(
            &server_ca,
            &sans,
            settings.server_cert_days,
            now,
            &server_cert_path,
            &server_key_path,
        )?;
        created.push(server_key_path.clone());
        created.push(server_cert_path.clone());
    }
    let server_cert = CertInfo::parse(&first_cert(&server_cert_path)?)?;
    Ok(Pki {
        dir: dir.to_owned(),
        server_ca,
        client_ca,
        server_cert_path,
        server_key_path,
        server_cert,
        created,
        server_reissued: reissue,
    })
}

/// Loads the PKI in `dir` as it is, writing nothing: for commands that only read or issue.
/// Refuses a folder where any of the six files is missing.
pub fn load_pki(dir: &Path) -> Result<Pki, TlsError> {
    let path = |name: &str| dir.join(name);
    for name in [
        files::SERVER_CA_CERT,
        files::SERVER_CA_KEY,
        files::SERVER_CERT,
        files::SERVER_KEY,
        files::CLIENT_CA_CERT,
        files::CLIENT_CA_KEY,
    ] {
        if !path(name).exists() {
            return Err(TlsError::Invalid {
                path: path(name),
                reason: "is missing; `mailroom init` or `mailroom serve` creates the PKI"
                    .to_owned(),
            });
        }
    }
    let server_cert_path = path(files::SERVER_CERT);
    Ok(Pki {
        dir: dir.to_owned(),
        server_ca: load_ca(path(files::SERVER_CA_CERT), path(files::SERVER_CA_KEY))?,
        client_ca: load_ca(path(files::CLIENT_CA_CERT), path(files::CLIENT_CA_KEY))?,
        server_cert: CertInfo::parse(&first_cert(&server_cert_path)?)?,
        server_cert_path,
        server_key_path: path(files::SERVER_KEY),
        created: Vec::new(),
        server_reissued: None,
    })
}

/// One configured host name as a SAN: an IP address, or a DNS name.
fn parse_hostnames(hostnames: &[String]) -> Result<Vec<SanType>, TlsError> {
    if hostnames.is_empty() {
        return Err(TlsError::Setting(
            "hostnames is empty; the server certificate must name at least one host".to_owned(),
        ));
    }
    hostnames
        .iter()
        .map(|name| {
            if let Ok(ip) = name.parse::<IpAddr>() {
                return Ok(SanType::IpAddress(ip));
            }
            let valid =
                rustls::pki_types::DnsName::try_from(name.as_str()).is_ok() && !name.ends_with('.');
            match (valid, name.to_ascii_lowercase().try_into()) {
                (true, Ok(dns)) => Ok(SanType::DnsName(dns)),
                _ => Err(TlsError::Setting(format!(
                    "host name {name:?} is neither an IP address nor a DNS name"
                ))),
            }
        })
        .collect()
}

/// The SANs as [`CertInfo::names`] shows them, for comparison.
fn san_strings(sans: &[SanType]) -> BTreeSet<String> {
    sans.iter()
        .filter_map(|san| match san {
            SanType::DnsName(dns) => Some(dns.as_str().to_ascii_lowercase()),
            SanType::IpAddress(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect()
}

fn load_or_create_ca(
    dir: &Path,
    cert_name: &str,
    key_name: &str,
    common_name: &str,
    now: OffsetDateTime,
    created: &mut Vec<PathBuf>,
) -> Result<Authority, TlsError> {
    let cert_path = dir.join(cert_name);
    let key_path = dir.join(key_name);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => load_ca(cert_path, key_path),
        (false, false) => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::OrganizationName, "Mailroom");
            // A random tag keeps the CAs of two installations apart by name as well as by key.
            let tag = hex::encode(random_bytes::<4>()?);
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{common_name} {tag}"));
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.serial_number = Some(random_serial()?);
            params.not_before = now - BACKDATE;
            params.not_after = now + Duration::days(CA_DAYS);
            let cert = params.self_signed(&key)?;
            // Key first: a crash between the two leaves a key without a certificate, which the
            // next run refuses (Incomplete) instead of silently making a second CA.
            disk::write_new(&key_path, key.serialize_pem().as_bytes(), KEY_MODE)?;
            disk::replace_file(&cert_path, cert.pem().as_bytes(), CERT_MODE)?;
            created.push(key_path.clone());
            created.push(cert_path.clone());
            let cert_der = cert.der().clone();
            Ok(Authority {
                info: CertInfo::parse(&cert_der)?,
                cert_path,
                key_path,
                cert_der,
                key,
            })
        }
        (true, false) => Err(TlsError::Incomplete {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(TlsError::Incomplete {
            present: key_path,
            missing: cert_path,
        }),
    }
}

fn load_ca(cert_path: PathBuf, key_path: PathBuf) -> Result<Authority, TlsError> {
    let cert_der = first_cert(&cert_path)?;
    let key = KeyPair::from_pem(&disk::read_text(&key_path)?).map_err(|err| TlsError::Invalid {
        path: key_path.clone(),
        reason: format!("not a usable private key: {err}"),
    })?;
    let x509 = parse_x509(&cert_der)?;
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(TlsError::Invalid {
            path: key_path,
            reason: format!("is not the key of {}", cert_path.display()),
        });
    }
    Ok(Authority {
        info: CertInfo::parse(&cert_der)?,
        cert_path,
        key_path,
        cert_der,
        key,
    })
}

/// Why the server certificate must be issued again, if it must.
fn server_cert_problem(
    cert_path: &Path,
    key_path: &Path,
    ca: &Authority,
    sans: &[SanType],
    now: OffsetDateTime,
) -> Result<Option<ServerReissue>, TlsError> {
    if !cert_path.exists() || !key_path.exists() {
        return Ok(Some(ServerReissue::Missing));
    }
    let cert_der = first_cert(cert_path)?;
    let Ok(x509) = parse_x509(&cert_der) else {
        return Ok(Some(ServerReissue::Mismatch));
    };
    let ca_x509 = parse_x509(&ca.cert_der)?;
    let signed_by_ca = x509.issuer().as_raw() == ca_x509.subject().as_raw()
        && x509.verify_signature(Some(ca_x509.public_key())).is_ok();
    let key_matches = KeyPair::from_pem(&disk::read_text(key_path)?).is_ok_and(|key| {
        key.public_key_raw() == x509.public_key().subject_public_key.data.as_ref()
    });
    if !signed_by_ca || !key_matches {
        return Ok(Some(ServerReissue::Mismatch));
    }
    let info = CertInfo::parse(&cert_der)?;
    let names: BTreeSet<String> = info
        .names
        .iter()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    if names != san_strings(sans) {
        return Ok(Some(ServerReissue::HostNames));
    }
    if info.not_after - now < RENEW_BEFORE {
        return Ok(Some(ServerReissue::Expiring));
    }
    Ok(None)
}

fn issue_server(
    ca: &Authority,
    sans: &[SanType],
    days: u32,
    now: OffsetDateTime,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Mailroom");
    let first = san_strings(&sans[..1])
        .into_iter()
        .next()
        .unwrap_or_default();
    params.distinguished_name.push(DnType::CommonName, first);
    params.subject_alt_names = sans.to_vec();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = now - BACKDATE;
    params.not_after = (now + Duration::days(i64::from(days))).min(ca.info.not_after);
    let cert = params.signed_by(&key, &ca.issuer()?)?;
    // Key, then certificate, each replaced atomically; a crash between them leaves a pair that
    // does not match, which the next run detects (Mismatch) and issues again.
    disk::replace_file(key_path, key.serialize_pem().as_bytes(), KEY_MODE)?;
    disk::replace_file(cert_path, cert.pem().as_bytes(), CERT_MODE)?;
    Ok(())
}

/// The first certificate of a PEM file.
pub(crate) fn first_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let mut certs = disk::read_certs(path)?;
    Ok(certs.swap_remove(0))
}

/// A random positive 128-bit serial number (RFC 5280 allows up to 20 octets).
pub(crate) fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = random_bytes::<16>()?;
    // Positive, and with no leading zero octet, so the encoding keeps all 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Random bytes from the provider's generator (aws-lc-rs).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], TlsError> {
    let mut bytes = [0u8; N];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Setting("the random number generator failed".to_owned()))?;
    Ok(bytes)
}

/// Checks that `path` exists with `mode`; for tests.
#[cfg(test)]
pub(crate) fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    fn settings(hostnames: &[&str]) -> PkiSettings {
        PkiSettings {
            hostnames: hostnames.iter().map(|s| (*s).to_owned()).collect(),
            ..PkiSettings::default()
        }
    }

    fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// Verifies the server certificate for `name` the way a rustls client does.
    fn server_verifies(pki: &Pki, name: &str) -> Result<(), rustls::Error> {
        verifies_against(pki.server_ca.cert_der.clone(), pki, name)
    }

    /// Verifies the server certificate for `name` trusting only `ca`.
    fn verifies_against(
        ca: rustls::pki_types::CertificateDer<'static>,
        pki: &Pki,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            crate::provider(),
        )
        .build()
        .unwrap();
        let leaf = first_cert(&pki.server_cert_path).unwrap();
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn creates_everything_once_with_private_modes() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("tls");
        let pki = ensure_pki(&dir, &PkiSettings::default()).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        for (name, mode) in [
            (files::SERVER_CA_KEY, 0o600),
            (files::SERVER_CA_CERT, 0o644),
            (files::CLIENT_CA_KEY, 0o600),
            (files::CLIENT_CA_CERT, 0o644),
            (files::SERVER_KEY, 0o600),
            (files::SERVER_CERT, 0o644),
        ] {
            assert_eq!(mode_of(&dir.join(name)), mode, "{name}");
            assert!(pki.created.contains(&dir.join(name)), "{name} reported");
        }
        assert_eq!(pki.server_reissued, Some(ServerReissue::Missing));
        assert_ne!(
            pki.server_ca.info.fingerprint_sha256, pki.client_ca.info.fingerprint_sha256,
            "two separate authorities"
        );

        // Idempotent: a second run writes nothing and loads the same material.
        let before = contents(&dir);
        let again = ensure_pki(&dir, &PkiSettings::default()).unwrap();
        assert!(again.created.is_empty(), "{:?}", again.created);
        assert_eq!(again.server_reissued, None);
        assert_eq!(contents(&dir), before);
        assert_eq!(again.server_ca.info, pki.server_ca.info);
        assert_eq!(again.server_cert, pki.server_cert);
        let loaded = load_pki(&dir).unwrap();
        assert_eq!(loaded.client_ca.info, pki.client_ca.info);
        assert_eq!(contents(&dir), before);
        std::fs::remove_file(dir.join(files::SERVER_KEY)).unwrap();
        let err = load_pki(&dir).unwrap_err().to_string();
        assert!(err.contains("server.key: is missing"), "{err}");
    }

    #[test]
    fn the_server_certificate_chains_to_the_server_ca_with_the_sans() {
        let temp = tempfile::tempdir().unwrap();
        let pki = ensure_pki(&temp.path().join("tls"), &PkiSettings::default()).unwrap();
        assert_eq!(pki.server_cert.names, ["localhost", "127.0.0.1", "::1"]);
        assert_eq!(pki.server_cert.issuer, pki.server_ca.info.subject);
        for name in ["localhost", "127.0.0.1", "::1"] {
            server_verifies(&pki, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(server_verifies(&pki, "example.com").is_err());
        let days = (pki.server_cert.not_after - OffsetDateTime::now_utc()).whole_days();
        assert!((364..=365).contains(&days), "{days}");
        let ca_years = (pki.server_ca.info.not_after - OffsetDateTime::now_utc()).whole_days();
        assert!(ca_years >= 3649, "{ca_years}");

        // The client CA does not vouch for the server.
        assert!(verifies_against(pki.client_ca.cert_der.clone(), &pki, "localhost").is_err());
    }

    #[test]
    fn a_host_name_change_reissues_the_server_certificate_and_keeps_the_cas() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("tls");
        let first = ensure_pki(&dir, &PkiSettings::default()).unwrap();
        let ca_files = |dir: &Path| {
            [
                files::SERVER_CA_CERT,
                files::SERVER_CA_KEY,
                files::CLIENT_CA_CERT,
                files::CLIENT_CA_KEY,
            ]
            .map(|name| std::fs::read(dir.join(name)).unwrap())
        };
        let cas = ca_files(&dir);
        let second = ensure_pki(&dir, &settings(&["files.example.com", "192.0.2.7"])).unwrap();
        assert_eq!(second.server_reissued, Some(ServerReissue::HostNames));
        assert_eq!(second.server_cert.names, ["files.example.com", "192.0.2.7"]);
        assert_ne!(
            second.server_cert.fingerprint_sha256,
            first.server_cert.fingerprint_sha256
        );
        assert_eq!(ca_files(&dir), cas, "the CAs are kept");
        server_verifies(&second, "files.example.com").unwrap();
        assert!(server_verifies(&second, "localhost").is_err());
        // Order and case do not count as a change.
        let third = ensure_pki(&dir, &settings(&["192.0.2.7", "Files.Example.com"])).unwrap();
        assert_eq!(third.server_reissued, None);
    }

    #[test]
    fn an_expiring_or_foreign_server_certificate_is_reissued() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("tls");
        let pki = ensure_pki(&dir, &PkiSettings::default()).unwrap();
        // A certificate for the right names that expires in 10 days.
        let sans = parse_hostnames(&PkiSettings::default().hostnames).unwrap();
        let now = OffsetDateTime::now_utc();
        issue_server(
            &pki.server_ca,
            &sans,
            10,
            now,
            &pki.server_cert_path,
            &pki.server_key_path,
        )
        .unwrap();
        let again = ensure_pki(&dir, &PkiSettings::default()).unwrap();
        assert_eq!(again.server_reissued, Some(ServerReissue::Expiring));
        // One signed by the client CA instead.
        issue_server(
            &pki.client_ca,
            &sans,
            100,
            now,
            &pki.server_cert_path,
            &pki.server_key_path,
        )
        .unwrap();
        let again = ensure_pki(&dir, &PkiSettings::default()).unwrap();
        assert_eq!(again.server_reissued, Some(ServerReissue::Mismatch));
        server_verifies(&again, "localhost").unwrap();
    }

    #[test]
    fn half_a_ca_is_refused_and_nothing_is_written() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("tls");
        ensure_pki(&dir, &PkiSettings::default()).unwrap();
        std::fs::remove_file(dir.join(files::CLIENT_CA_KEY)).unwrap();
        let before = contents(&dir);
        let err = ensure_pki(&dir, &PkiSettings::default()).unwrap_err();
        assert!(matches!(err, TlsError::Incomplete { .. }), "{err}");
        assert!(
            err.to_string().contains("client-ca.key is missing"),
            "{err}"
        );
        assert_eq!(contents(&dir), before);
    }

    #[test]
    fn bad_settings_are_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("tls");
        for (hostnames, days, expect) in [
            (vec![], 397, "hostnames is empty"),
            (vec!["bad name"], 397, "\"bad name\" is neither"),
            (vec!["localhost"], 0, "server_cert_days"),
            (vec!["localhost"], 800, "server_cert_days"),
        ] {
            let mut s = settings(&hostnames);
            s.server_cert_days = days;
            let err = ensure_pki(&dir, &s).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
            assert!(!dir.exists(), "nothing written for {hostnames:?}");
        }
    }

    #[test]
    fn serials_are_random_and_positive() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert_eq!(a[0] & 0x80, 0);
    }
}
