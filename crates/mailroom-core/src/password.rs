//! Password hashing and the password rules.
//!
//! Argon2id with the OWASP parameters (19 MiB, 2 passes, 1 lane) in PHC strings. Hashing is
//! CPU- and memory-heavy, so callers run it off the async workers (the [`crate::Hub`] does).
//! Unknown accounts are checked against a dummy hash so a wrong name costs the same as a
//! wrong password.

use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher};

use crate::error::{CoreError, Result};
use crate::secret::Secret;

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password, in bytes; checked before any hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Passwords too common to allow whatever their length.
const COMMON: &[&str] = &[
    "password1234",
    "123456789012",
    "qwertyuiopas",
    "passwordpassword",
    "correcthorsebatterystaple",
    "letmeinletmein",
    "administrator",
    "changemechangeme",
];

/// Checks a new password against the rules, naming the rule it breaks.
pub fn check_strength(password: &Secret<String>, account: &str) -> Result<()> {
    let pw = password.expose();
    let chars = pw.chars().count();
    if chars == 0 {
        return Err(CoreError::invalid("the password is empty"));
    }
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(CoreError::invalid(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if chars < MIN_PASSWORD_CHARS {
        return Err(CoreError::invalid(format!(
            "the password is too short: use at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let lower = pw.to_lowercase();
    let distinct = {
        let mut seen: Vec<char> = lower.chars().collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    if distinct < 5 || COMMON.contains(&lower.as_str()) || lower.contains(&account.to_lowercase()) {
        return Err(CoreError::invalid(
            "the password is too easy to guess: avoid repeats, common words and the account name",
        ));
    }
    Ok(())
}

/// Hashes a password into an Argon2id PHC string. Blocking: run it off the async workers.
pub(crate) fn hash(password: &Secret<String>) -> Result<String> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            CoreError::internal("password hashing failed")
        })
}

/// Verifies a password against a PHC string, or against a dummy hash when `phc` is `None` so
/// that the answer takes the same time. Blocking: run it off the async workers.
pub(crate) fn verify(password: &Secret<String>, phc: Option<&str>) -> bool {
    let candidate = password.expose().as_bytes();
    if candidate.len() > MAX_PASSWORD_BYTES {
        // Still pay the hashing cost so the refusal is not faster than a real check.
        let _ = verify_phc(b"", DUMMY_HASH);
        return false;
    }
    match phc {
        Some(phc) => verify_phc(candidate, phc),
        None => {
            let _ = verify_phc(candidate, DUMMY_HASH);
            false
        }
    }
}

fn verify_phc(candidate: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        // Argon2's verifier compares the digests in constant time.
        Ok(parsed) => Argon2::default()
            .verify_password(candidate, &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The Argon2id hash of a random string nobody knows, with the default parameters.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1Wn0mNcK0hS5tPfvQHcbgqjU8sRn0Rk7mrj9pB5zVjI";

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret<String> {
        Secret::new(s.to_owned())
    }

    #[test]
    fn hashes_and_verifies() {
        let pw = secret("a long enough passphrase");
        let phc = hash(&pw).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("passphrase"));
        assert!(verify(&pw, Some(&phc)));
        assert!(!verify(&secret("a long enough passphrasE"), Some(&phc)));
        assert!(!verify(&pw, None));
        assert!(!verify(&pw, Some("garbage")));
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn strength_rules() {
        assert!(check_strength(&secret("tulip-orbit-7-lantern"), "alice").is_ok());
        for weak in [
            "",
            "short",
            "aaaaaaaaaaaaaaaa",
            "password1234",
            "alice-alice-alice",
        ] {
            assert!(check_strength(&secret(weak), "alice").is_err(), "{weak:?}");
        }
        assert!(check_strength(&secret(&"x1y2z3".repeat(200)), "alice").is_err());
    }
}
