//! The key the pages' CSRF tokens are made with, kept in the data folder so that a form opened
//! before a restart of the hub still posts after it.
//!
//! The key is 32 random bytes, written once as 64 hex digits to a file created with mode 0600
//! (never replaced: a second start reads it), and read at every start. Reading and writing go
//! through [`load_or_create_csrf_key`] alone. A hub that encrypts at rest stores no key: it
//! derives one from its hub data key ([`CsrfKey::from_bytes`]), which every node of a cluster
//! shares. What it does not do: it never logs the key.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngExt;

/// The file name of the key in the data folder.
pub const CSRF_KEY_FILE: &str = "web_csrf_key";

/// The secret key of the CSRF tokens. Its `Debug` prints `***`.
#[derive(Clone)]
pub struct CsrfKey(pub(crate) [u8; 32]);

impl CsrfKey {
    /// A key drawn now, which lives as long as the process (tests, and callers without a data
    /// folder).
    pub fn random() -> CsrfKey {
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key[..]);
        CsrfKey(key)
    }

    /// The key `bytes`: one derived elsewhere, such as from the data key of a hub that
    /// encrypts at rest (then nothing is stored, and every node derives the same key).
    pub fn from_bytes(bytes: [u8; 32]) -> CsrfKey {
        CsrfKey(bytes)
    }
}

impl fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfKey(***)")
    }
}

/// The key stored at `path`, made and stored first when there is none. Refused with an error
/// naming the file: a key file that is not 64 hex digits, or that others than its owner may
/// read (a key that leaked must not be used; make it private or delete it for a new one).
pub fn load_or_create_csrf_key(path: &Path) -> io::Result<CsrfKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} may be read by others (mode {:o}); make it private (chmod 600) or delete it",
                        path.display(),
                        mode & 0o777
                    ),
                ));
            }
            let mut key = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a CSRF key (64 hex digits); delete it for a new one",
                        path.display()
                    ),
                )
            })?;
            Ok(CsrfKey(key))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let key = CsrfKey::random();
            // `create_new`: of two processes starting at once, one writes and the other fails
            // rather than replace a key already handed out.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(format!("{}\n", hex::encode(key.0)).as_bytes())?;
            file.sync_all()?;
            Ok(key)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mailroom-csrf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn made_once_private_then_read() {
        let dir = folder("once");
        let path = dir.join(CSRF_KEY_FILE);
        let first = load_or_create_csrf_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create_csrf_key(&path).unwrap();
        assert_eq!(first.0, second.0, "the stored key is read, not replaced");
        assert_ne!(first.0, CsrfKey::random().0);
        assert_eq!(format!("{first:?}"), "CsrfKey(***)");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_readable_or_malformed_key_is_refused() {
        let dir = folder("refused");
        let path = dir.join(CSRF_KEY_FILE);
        load_or_create_csrf_key(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_csrf_key(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        std::fs::write(&path, "not hex").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_or_create_csrf_key(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "not hex",
            "never replaced"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
