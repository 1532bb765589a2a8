//! The one error type of the crate. Messages name the file concerned and never carry key
//! material.

use std::path::PathBuf;

/// Why a PKI, certificate or TLS configuration operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or folder could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: `read`, `write`, `create`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A file holds no usable certificate, key or CRL.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// One file of a certificate authority exists and its partner does not; nothing is
    /// generated over it, since a new CA would silently invalidate every certificate it signed.
    #[error(
        "{} exists but {} is missing; restore it, or remove both to make a new certificate authority",
        present.display(),
        missing.display()
    )]
    Incomplete {
        /// The file that is there.
        present: PathBuf,
        /// The file that is not.
        missing: PathBuf,
    },
    /// An output file already exists; it is not overwritten.
    #[error("{} already exists; not overwriting it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A setting or argument was refused: a host name, an account name, a validity.
    #[error("{0}")]
    Setting(String),
    /// The listener's TLS versions or suites cannot be offered.
    #[error("the TLS methods are refused: {0}")]
    Methods(String),
    /// rcgen could not make a key, certificate or CRL.
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration (key and certificate do not match, …).
    #[error("the TLS configuration is refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built (no usable CA, bad CRL).
    #[error("the client certificate verifier is refused: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A peer's certificate could not be read.
    #[error("the certificate cannot be read: {0}")]
    Certificate(String),
}

/// Shorthand for an [`TlsError::Io`] maker.
pub(crate) fn io(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> TlsError {
    let path = path.to_owned();
    move |source| TlsError::Io {
        action,
        path,
        source,
    }
}
