//! The server's SSH host key: an ed25519 key in OpenSSH format, made on first start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

/// Loads the host key at `path`, or creates one (mode 0600) when the file does not exist.
pub fn load_or_generate(path: &Path) -> std::io::Result<PrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not an OpenSSH private key: {e}", path.display()),
            )
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
                .map_err(|e| std::io::Error::other(format!("generating a host key: {e}")))?;
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| std::io::Error::other(format!("encoding the host key: {e}")))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            Ok(key)
        }
        Err(err) => Err(err),
    }
}

/// The public half of a host key as an `authorized_keys`/`known_hosts` line body.
pub fn public_line(key: &PrivateKey) -> String {
    key.public_key().to_openssh().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_loads() {
        let dir = std::env::temp_dir().join(format!("mailroom-hostkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let _ = std::fs::remove_file(&path);
        let made = load_or_generate(&path).unwrap();
        let loaded = load_or_generate(&path).unwrap();
        assert_eq!(public_line(&made), public_line(&loaded));
        assert!(public_line(&made).starts_with("ssh-ed25519 "));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
