//! Files on disk: atomic writes with explicit modes (keys 0600, certificates 0644) and PEM or
//! DER loading of certificates, keys and CRLs. Nothing here decides what a file means.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::{TlsError, io};

/// Mode of private key files.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificate files.
pub(crate) const CERT_MODE: u32 = 0o644;
/// Mode of the issued-certificate record.
pub(crate) const RECORD_MODE: u32 = 0o600;

/// Writes `contents` to `path` with `mode` through a temporary name, synced, then renamed
/// over any previous file, so a crash leaves the old file or the whole new one.
pub(crate) fn replace_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(".tmp");
    let temp = std::path::PathBuf::from(temp_name);
    let _ = std::fs::remove_file(&temp);
    write_new(&temp, contents, mode)?;
    std::fs::rename(&temp, path).map_err(io("write", path))?;
    sync_parent(path)
}

/// Creates `path` with `mode`, refusing if it exists, and writes and syncs `contents`.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => TlsError::Exists {
                path: path.to_owned(),
            },
            _ => TlsError::Io {
                action: "create",
                path: path.to_owned(),
                source,
            },
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io("write", path))
}

/// Syncs the folder holding `path`, so a rename or a new file survives a crash.
pub(crate) fn sync_parent(path: &Path) -> Result<(), TlsError> {
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io("sync", parent))?;
    }
    Ok(())
}

/// Every certificate in a PEM file, in order; refuses a file with none.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| pem_error(path, err))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_owned(),
            reason: "holds no PEM certificate".to_owned(),
        });
    }
    Ok(certs)
}

/// The one private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| pem_error(path, err))
}

/// The text of a PEM file (for rcgen's `KeyPair::from_pem`).
pub(crate) fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(io("read", path))
}

/// The CRLs in a file: PEM (any number of `X509 CRL` blocks) or one DER CRL.
pub(crate) fn read_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    if !bytes.starts_with(b"-----BEGIN") && !bytes.starts_with(b"\n") {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, err))?;
    if crls.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_owned(),
            reason: "holds no PEM CRL (\"-----BEGIN X509 CRL-----\")".to_owned(),
        });
    }
    Ok(crls)
}

fn pem_error(path: &Path, err: rustls::pki_types::pem::Error) -> TlsError {
    match err {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        },
        other => TlsError::Invalid {
            path: path.to_owned(),
            reason: format!("not a valid PEM file: {other}"),
        },
    }
}
