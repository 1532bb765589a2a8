//! TOTP: enrolment with recovery codes, its removal, and checking a code at login (a step or
//! a recovery code works once).

use rand::RngExt;

use super::{Actor, Hub};
use crate::access::{Factor, TotpEnrolment, recovery_code_hash};
use crate::error::{CoreError, ErrorKind, Result};
use crate::model::{Account, AccountKind};
use crate::names::AccountName;
use crate::ports::{AccountUpdate, Durability, Vault};
use crate::secret::Secret;

/// Recovery codes made at enrolment.
const RECOVERY_CODES: usize = 10;

/// What an administrator gets back from a TOTP enrolment, to hand to the user once.
#[derive(Debug, Clone)]
pub struct TotpSetup {
    /// The `otpauth://` URI for authenticator apps (holds the secret).
    pub uri: Secret<String>,
    /// The secret in base32, for manual entry.
    pub secret: Secret<String>,
    /// Single-use recovery codes.
    pub recovery_codes: Vec<Secret<String>>,
}

impl Hub {
    /// Checks a TOTP code (and spends its step) or a recovery code (and spends it).
    pub(super) async fn check_code(
        &self,
        account: &Account,
        code: &Secret<String>,
    ) -> Result<bool> {
        let Some(enrolment) = &account.totp else {
            return Ok(false);
        };
        let code = code.expose().trim();
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            let totp = totp(
                enrolment,
                &account.name,
                &self.auth.config.totp_issuer,
                self.vault.as_deref(),
            )?;
            let now = u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0);
            return match totp.check(code, now) {
                Some(step) => {
                    let name = account.name.clone();
                    self.write(Durability::Flush, move |tx| tx.use_totp_step(&name, step))
                        .await
                }
                None => Ok(false),
            };
        }
        if code.len() > 64 {
            return Ok(false);
        }
        let (name, hash) = (account.name.clone(), recovery_code_hash(code));
        let used = self
            .write(Durability::Flush, move |tx| {
                tx.use_recovery_code(&name, &hash)
            })
            .await?;
        if used {
            tracing::warn!(account = %account.name, "recovery code used");
        }
        Ok(used)
    }

    // ----- TOTP ------------------------------------------------------------------------------

    /// Enrols an account in TOTP with a fresh secret and fresh recovery codes, replacing an
    /// earlier enrolment. The secret and codes are returned once, to hand to the user.
    pub async fn enroll_totp(&self, actor: &Actor, name: &AccountName) -> Result<TotpSetup> {
        let (setup, stored) =
            fresh_enrolment(name, &self.auth.config.totp_issuer, self.vault.as_deref())?;
        let event = self.stamp.admin(
            actor,
            format!("account {name}"),
            format!("enroll totp ({RECOVERY_CODES} recovery codes)"),
        );
        let name = name.clone();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            let account = tx
                .account(&name)?
                .ok_or_else(|| CoreError::not_found(format!("no account named {name}")))?;
            if account.kind == AccountKind::Admin {
                return Err(CoreError::denied(
                    "admin accounts cannot log in over the client protocols; TOTP is for clients",
                ));
            }
            let update = AccountUpdate {
                totp: Some(Some(stored)),
                ..AccountUpdate::default()
            };
            tx.update_account(&name, &update)?;
            stamp.record(tx, &[event])
        })
        .await?;
        Ok(setup)
    }

    /// Seals every TOTP secret still stored in plain with the hub's vault: what turning
    /// encryption at rest on does for enrolments made before. One unit, with one event when
    /// any was sealed; each account's last used step is kept, so no code replays. Returns
    /// how many were sealed (0 without a vault).
    pub async fn seal_totp_secrets(&self, actor: &Actor) -> Result<usize> {
        let Some(vault) = self.vault.clone() else {
            return Ok(0);
        };
        let (actor, stamp) = (actor.clone(), self.stamp.clone());
        self.write(Durability::Flush, move |tx| {
            let mut sealed = 0;
            for account in tx.accounts()? {
                let Some(enrolment) = &account.totp else {
                    continue;
                };
                if enrolment.secret.expose().starts_with(SEALED_PREFIX) {
                    continue;
                }
                let secret = vault.seal(account.name.as_str(), enrolment.secret.expose())?;
                let update = AccountUpdate {
                    totp: Some(Some(TotpEnrolment {
                        secret: Secret::new(format!("{SEALED_PREFIX}{secret}")),
                        ..enrolment.clone()
                    })),
                    ..AccountUpdate::default()
                };
                tx.update_account(&account.name, &update)?;
                if let Some(step) = enrolment.last_step {
                    tx.use_totp_step(&account.name, step)?;
                }
                sealed += 1;
            }
            if sealed > 0 {
                let event = stamp.admin(
                    &actor,
                    "hub".to_owned(),
                    format!("seal totp secrets at rest ({sealed} accounts)"),
                );
                stamp.record(tx, &[event])?;
            }
            Ok(sealed)
        })
        .await
    }

    /// Removes an account's TOTP enrolment. Refused while its required factors include TOTP.
    pub async fn remove_totp(&self, actor: &Actor, name: &AccountName) -> Result<()> {
        let event = self
            .stamp
            .admin(actor, format!("account {name}"), "remove totp".to_owned());
        let name = name.clone();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            let account = tx
                .account(&name)?
                .ok_or_else(|| CoreError::not_found(format!("no account named {name}")))?;
            if account.totp.is_none() {
                return Err(CoreError::not_found(format!(
                    "{name} has no TOTP enrolment"
                )));
            }
            if account.access.factors.factors().contains(&Factor::Totp) {
                return Err(CoreError::new(
                    ErrorKind::Conflict,
                    format!(
                        "{name} requires totp ({}): change that with `mailroom account set {name} --require …` first",
                        account.access.factors
                    ),
                ));
            }
            let update = AccountUpdate {
                totp: Some(None),
                ..AccountUpdate::default()
            };
            tx.update_account(&name, &update)?;
            stamp.record(tx, &[event])
        })
        .await
    }
}

/// A fresh enrolment of `name`: what to hand the user once, and what to store (the recovery
/// codes only as hashes).
pub(super) fn fresh_enrolment(
    name: &AccountName,
    issuer: &str,
    vault: Option<&dyn Vault>,
) -> Result<(TotpSetup, TotpEnrolment)> {
    let mut secret = [0u8; 20];
    rand::rng().fill(&mut secret[..]);
    let enrolment = TotpEnrolment {
        secret: Secret::new(base32(&secret)),
        last_step: None,
        recovery: Vec::new(),
    };
    let uri = totp(&enrolment, name, issuer, None)?
        .to_url()
        .map_err(|_| CoreError::internal("could not build the otpauth URI"))?;
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
    let stored = TotpEnrolment {
        secret: match vault {
            Some(vault) => Secret::new(format!(
                "{SEALED_PREFIX}{}",
                vault.seal(name.as_str(), enrolment.secret.expose())?
            )),
            None => enrolment.secret.clone(),
        },
        recovery: codes.iter().map(|c| recovery_code_hash(c)).collect(),
        ..enrolment.clone()
    };
    let setup = TotpSetup {
        uri: Secret::new(uri),
        secret: enrolment.secret,
        recovery_codes: codes.into_iter().map(Secret::new).collect(),
    };
    Ok((setup, stored))
}

/// What begins a TOTP secret stored sealed by the hub's [`Vault`]; a plain secret is base32,
/// which never holds a `:`.
const SEALED_PREFIX: &str = "sealed1:";

/// The TOTP generator of an enrolment: SHA-1, 6 digits, 30 s steps, one step of skew (what
/// every authenticator app does). A sealed secret is opened with `vault` (bound to `name`).
pub(super) fn totp(
    enrolment: &TotpEnrolment,
    name: &AccountName,
    issuer: &str,
    vault: Option<&dyn Vault>,
) -> Result<totp_rs::Totp> {
    let stored = enrolment.secret.expose();
    let opened;
    let base32 = match stored.strip_prefix(SEALED_PREFIX) {
        Some(sealed) => {
            let vault = vault.ok_or_else(|| {
                CoreError::internal("this TOTP secret is sealed, and the hub has no master key")
            })?;
            opened = Secret::new(vault.open(name.as_str(), sealed)?);
            opened.expose()
        }
        None => stored,
    };
    let secret = totp_rs::Secret::try_from_base32(base32)
        .map_err(|_| CoreError::internal("stored TOTP secret is not base32"))?;
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_account_name(name.as_str())
        .with_issuer(Some(issuer.replace(':', "")))
        .build()
        .map_err(|_| CoreError::internal("stored TOTP secret is not usable"))
}

/// The current TOTP code of a base32 secret at `unix_time`, for tests and tools that play the
/// authenticator app.
pub fn totp_code(secret_base32: &str, unix_time: u64) -> Result<String> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32)
        .map_err(|_| CoreError::invalid("not a base32 TOTP secret"))?;
    let totp = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .map_err(|_| CoreError::invalid("not a usable TOTP secret"))?;
    Ok(totp.generate(unix_time).to_string())
}

/// RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A recovery code: 16 characters from an alphabet without look-alikes (79 bits), in groups
/// of four.
fn recovery_code() -> String {
    const ALPHABET: &[u8; 31] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let chars: Vec<char> = (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn totp_codes_match_rfc6238() {
        // RFC 6238 appendix B, SHA-1, secret "12345678901234567890", 8 digits there; the
        // last 6 digits are the 6-digit code.
        let secret = base32(b"12345678901234567890");
        assert_eq!(totp_code(&secret, 59).unwrap(), "287082");
        assert_eq!(totp_code(&secret, 1_111_111_109).unwrap(), "081804");
    }

    #[test]
    fn recovery_codes_are_random_and_grouped() {
        let a = recovery_code();
        let b = recovery_code();
        assert_ne!(a, b);
        assert_eq!(a.len(), 19);
        assert_eq!(a.matches('-').count(), 3);
    }
}
