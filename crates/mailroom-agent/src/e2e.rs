//! End-to-end encryption: files encrypted by the sender's agent to every recipient's age
//! X25519 keys, so the hub only ever stores and delivers ciphertext.
//!
//! The format (documented as "Mailroom e2e v1"): an age v1 file whose plaintext is one zstd
//! frame of the file. A file is compressed, then encrypted, as a stream, into a spool file in
//! the agent's config folder, and that spool file is what is uploaded: the same ciphertext on
//! every resume (age encryption is randomised, so re-encrypting would not resume). The
//! recipient's agent checks the ciphertext's SHA-256, decrypts with its identity file (age's
//! own authentication covers every chunk) and decompresses under a temporary name.
//!
//! `key generate` makes the identity (`identity.txt`, 0600, in the config folder) and
//! registers its public recipient with the hub.

use std::io::{BufReader, BufWriter, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use age::secrecy::ExposeSecret as _;
use anyhow::{Context, Result};
use reqwest::Method;
use serde::Deserialize;

use crate::hub::{Hub, exit, fail};

/// The identity file in the config folder.
pub fn default_identity() -> Result<PathBuf> {
    Ok(crate::session::folder()?.join("identity.txt"))
}

/// Makes a new identity at `path` (refusing to overwrite one) and returns its recipient.
pub fn generate(path: &Path) -> Result<String> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| {
            fail(
                exit::LOCAL,
                format!(
                    "cannot create {}: {err} (an identity is never overwritten)",
                    path.display()
                ),
            )
        })?;
    writeln!(file, "# public key: {recipient}")?;
    writeln!(file, "{}", identity.to_string().expose_secret())?;
    file.sync_all()?;
    Ok(recipient)
}

/// The identities of an identity file (`AGE-SECRET-KEY-1…` lines; `#` comments).
pub fn identities(path: &Path) -> Result<Vec<age::x25519::Identity>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        fail(
            exit::LOCAL,
            format!(
                "cannot read the identity {}: {err}; make one with `mailroom-agent key generate` or give --identity",
                path.display()
            ),
        )
    })?;
    let found: Vec<age::x25519::Identity> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            age::x25519::Identity::from_str(line).map_err(|_| {
                fail(
                    exit::LOCAL,
                    format!(
                        "{} holds a line that is not an age identity",
                        path.display()
                    ),
                )
            })
        })
        .collect::<Result<_>>()?;
    if found.is_empty() {
        return Err(fail(
            exit::LOCAL,
            format!("{} holds no identity", path.display()),
        ));
    }
    Ok(found)
}

/// One account's keys, as `GET /api/v1/recipients/{name}/e2e-keys` lists them.
#[derive(Debug, Deserialize)]
struct AccountKeys {
    account: String,
    keys: Vec<Key>,
}

#[derive(Debug, Deserialize)]
struct Key {
    recipient: String,
}

/// Every key of every account the files will reach (a group's members each), refused when an
/// account has none.
pub async fn recipient_keys(hub: &mut Hub, to: &[String]) -> Result<Vec<age::x25519::Recipient>> {
    let mut keys = Vec::new();
    let mut without = Vec::new();
    for name in to {
        let accounts: Vec<AccountKeys> = hub
            .expect(
                Method::GET,
                &format!("/api/v1/recipients/{name}/e2e-keys"),
                Ok,
            )
            .await?
            .json()
            .await?;
        for account in accounts {
            if account.keys.is_empty() {
                without.push(account.account);
                continue;
            }
            for key in account.keys {
                keys.push(
                    age::x25519::Recipient::from_str(&key.recipient).map_err(|_| {
                        fail(
                            exit::REFUSED,
                            format!(
                                "the hub gave a key for {} that is not an age recipient",
                                account.account
                            ),
                        )
                    })?,
                );
            }
        }
    }
    if !without.is_empty() {
        return Err(fail(
            exit::REFUSED,
            format!(
                "cannot send end-to-end encrypted: {} {} no end-to-end key (they add one with `mailroom-agent key generate`)",
                without.join(", "),
                if without.len() == 1 { "has" } else { "have" }
            ),
        ));
    }
    Ok(keys)
}

/// Compresses then encrypts `source` to `recipients`, as a stream, into `spool`.
pub fn encrypt(source: &Path, recipients: &[age::x25519::Recipient], spool: &Path) -> Result<()> {
    let input =
        std::fs::File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
    let output = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(spool)
        .with_context(|| format!("cannot write {}", spool.display()))?;
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|err| fail(exit::LOCAL, format!("cannot encrypt: {err}")))?;
    let sealed = encryptor.wrap_output(BufWriter::new(output))?;
    let mut compressor = zstd::stream::write::Encoder::new(sealed, 3)?;
    std::io::copy(&mut BufReader::new(input), &mut compressor)?;
    let sealed = compressor.finish()?;
    let output = sealed.finish()?;
    output
        .into_inner()
        .map_err(|err| err.into_error())?
        .sync_all()?;
    Ok(())
}

/// Decrypts then decompresses `cipher` with `identities` into `target` (a temporary name;
/// the caller renames it).
pub fn decrypt(cipher: &Path, identities: &[age::x25519::Identity], target: &Path) -> Result<()> {
    let input = std::fs::File::open(cipher)?;
    let decryptor = age::Decryptor::new_buffered(BufReader::new(input))
        .map_err(|err| fail(exit::INTEGRITY, format!("not an age file: {err}")))?;
    let plain = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|err| {
            fail(
                exit::LOCAL,
                format!("cannot decrypt with this identity: {err}"),
            )
        })?;
    let mut decompressor = zstd::stream::read::Decoder::new(plain)?;
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(target)?;
    std::io::copy(&mut decompressor, &mut output).map_err(|err| {
        fail(
            exit::INTEGRITY,
            format!("the encrypted file does not decrypt whole: {err}"),
        )
    })?;
    output.sync_all()?;
    Ok(())
}

/// Registers `recipient` as one of this account's end-to-end keys.
pub async fn register(hub: &mut Hub, recipient: &str, comment: &str) -> Result<()> {
    hub.expect(Method::POST, "/api/v1/e2e-keys", |r| {
        Ok(r.json(&serde_json::json!({"recipient": recipient, "comment": comment})))
    })
    .await?;
    Ok(())
}
