//! A trusted reverse proxy vouching for a user (the web authentication plug-in of the original
//! design, docs/design.md): a front that authenticated the user itself (single sign-on, a
//! corporate portal) tells the hub who it is with three signed headers, and
//! `POST /api/v1/token/proxy` turns that into a token pair without the account's own factors.
//! Off unless `[https] trusted_proxy_key_file` is set.
//!
//! ```text
//! Mailroom-Proxy-User: alice
//! Mailroom-Proxy-Time: 1795000000                      (Unix seconds, within ±60 s)
//! Mailroom-Proxy-Signature: hex(HMAC-SHA256(key, "mailroom-proxy-v1\nalice\n1795000000\nPOST\n/api/v1/token/proxy"))
//! ```
//!
//! The signature covers the user, the time, the method and the path, so a captured header is
//! good for one minute on one endpoint only. The headers are believed only from the
//! configured proxy networks; the key (at least 32 bytes, in a file of its own) is compared
//! through the HMAC's constant-time verification. The hub still checks the account's
//! standing (disabled, banned, locked, networks), and only client accounts can be vouched
//! for: an administrator always logs in with their own factors.

use std::net::IpAddr;
use std::path::Path;

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use sha2::Sha256;

/// The header naming the user.
pub const USER_HEADER: &str = "mailroom-proxy-user";
/// The header with the signing time, Unix seconds.
pub const TIME_HEADER: &str = "mailroom-proxy-time";
/// The header with the hex HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "mailroom-proxy-signature";
/// Seconds a signature is good for on either side of the hub's clock.
pub const MAX_SKEW_SECONDS: i64 = 60;
/// Shortest key accepted.
const MIN_KEY_BYTES: usize = 32;

/// The trusted proxy: its key and the networks it connects from.
pub struct TrustedProxy {
    key: Vec<u8>,
    networks: Vec<IpNet>,
}

impl std::fmt::Debug for TrustedProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedProxy")
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

/// Why a vouching request is not believed. The client gets one 401 whatever it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No trusted proxy is configured.
    #[error("no trusted proxy is configured")]
    NotConfigured,
    /// The request did not come from a proxy network.
    #[error("{0} is not in [https] trusted_proxy_networks")]
    Untrusted(IpAddr),
    /// A header is missing or malformed.
    #[error("missing or malformed {0} header")]
    Malformed(&'static str),
    /// The time is too far from the hub's clock.
    #[error("signed {0} s from the hub's clock (limit {MAX_SKEW_SECONDS} s)")]
    Stale(i64),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

impl TrustedProxy {
    /// The proxy of `[https] trusted_proxy_key_file` and `trusted_proxy_networks`; `None`
    /// when no key file is set. A key file that is unreadable or too short, or a key without
    /// networks, is a start-up error.
    pub fn from_settings(
        key_file: &Path,
        networks: &[String],
    ) -> Result<Option<TrustedProxy>, String> {
        if key_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(key_file).map_err(|err| {
            format!(
                "cannot read [https] trusted_proxy_key_file {}: {err}",
                key_file.display()
            )
        })?;
        let key = text.trim().as_bytes().to_vec();
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "[https] trusted_proxy_key_file {}: the key has {} bytes; at least {MIN_KEY_BYTES} are needed",
                key_file.display(),
                key.len()
            ));
        }
        if networks.is_empty() {
            return Err(
                "[https] trusted_proxy_key_file is set but trusted_proxy_networks is empty: name the proxy's addresses"
                    .to_owned(),
            );
        }
        let networks = networks
            .iter()
            .map(|text| {
                mailroom_core::parse_network(text)
                    .map_err(|err| format!("[https] trusted_proxy_networks: {err}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(TrustedProxy { key, networks }))
    }

    /// The user a request from `peer` is vouched for, if its headers verify at `now` (Unix
    /// seconds) for `method` and `path`.
    pub fn vouched_user(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        now: i64,
    ) -> Result<String, Refusal> {
        if !self.networks.iter().any(|net| net.contains(&peer)) {
            return Err(Refusal::Untrusted(peer));
        }
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .filter(|value| !value.is_empty() && value.len() <= 256)
                .ok_or(Refusal::Malformed(name))
        };
        let user = header(USER_HEADER)?;
        let time_text = header(TIME_HEADER)?;
        let time: i64 = time_text
            .parse()
            .map_err(|_| Refusal::Malformed(TIME_HEADER))?;
        let signature = hex::decode(header(SIGNATURE_HEADER)?)
            .map_err(|_| Refusal::Malformed(SIGNATURE_HEADER))?;
        let skew = time.saturating_sub(now);
        if skew.abs() > MAX_SKEW_SECONDS {
            return Err(Refusal::Stale(skew));
        }
        let mut mac = self.mac();
        mac.update(&signed_text(user, time_text, method, path));
        mac.verify_slice(&signature)
            .map_err(|_| Refusal::BadSignature)?;
        Ok(user.to_owned())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; the error is unreachable.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
    }

    /// The signature a proxy sends (for its tests and its documentation).
    pub fn sign(&self, user: &str, time: &str, method: &str, path: &str) -> String {
        let mut mac = self.mac();
        mac.update(&signed_text(user, time, method, path));
        hex::encode(mac.finalize().into_bytes())
    }
}

/// What the signature covers.
fn signed_text(user: &str, time: &str, method: &str, path: &str) -> Vec<u8> {
    format!("mailroom-proxy-v1\n{user}\n{time}\n{method}\n{path}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxy() -> TrustedProxy {
        TrustedProxy {
            key: b"0123456789abcdef0123456789abcdef".to_vec(),
            networks: vec!["10.0.0.0/8".parse().unwrap()],
        }
    }

    fn headers(user: &str, time: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(USER_HEADER, HeaderValue::from_str(user).unwrap());
        headers.insert(TIME_HEADER, HeaderValue::from_str(time).unwrap());
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
        headers
    }

    const PATH: &str = "/api/v1/token/proxy";

    #[test]
    fn a_signed_request_from_the_proxy_is_believed() {
        let proxy = proxy();
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let good = proxy.sign("alice", "1000", "POST", PATH);
        let vouched =
            proxy.vouched_user(peer, &headers("alice", "1000", &good), "POST", PATH, 1030);
        assert_eq!(vouched, Ok("alice".to_owned()));
    }

    #[test]
    fn everything_else_is_refused() {
        let proxy = proxy();
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let good = proxy.sign("alice", "1000", "POST", PATH);
        let check = |peer: IpAddr, h: HeaderMap, method: &str, path: &str, now: i64| {
            proxy.vouched_user(peer, &h, method, path, now)
        };
        let outsider: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            check(
                outsider,
                headers("alice", "1000", &good),
                "POST",
                PATH,
                1000
            ),
            Err(Refusal::Untrusted(outsider))
        );
        assert_eq!(
            check(peer, headers("bob", "1000", &good), "POST", PATH, 1000),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(peer, headers("alice", "1000", &good), "GET", PATH, 1000),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(
                peer,
                headers("alice", "1000", &good),
                "POST",
                "/api/v1/inbox",
                1000
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(peer, headers("alice", "1000", &good), "POST", PATH, 1061),
            Err(Refusal::Stale(-61))
        );
        assert_eq!(
            check(peer, headers("alice", "1000", "zz"), "POST", PATH, 1000),
            Err(Refusal::Malformed(SIGNATURE_HEADER))
        );
        assert_eq!(
            check(peer, headers("alice", "soon", &good), "POST", PATH, 1000),
            Err(Refusal::Malformed(TIME_HEADER))
        );
        let other_key = TrustedProxy {
            key: b"another key of thirty-two bytes!".to_vec(),
            networks: vec!["10.0.0.0/8".parse().unwrap()],
        };
        let forged = other_key.sign("alice", "1000", "POST", PATH);
        assert_eq!(
            check(peer, headers("alice", "1000", &forged), "POST", PATH, 1000),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn settings_are_checked_at_start() {
        assert!(matches!(
            TrustedProxy::from_settings(Path::new(""), &[]),
            Ok(None)
        ));
        let dir = std::env::temp_dir().join(format!("mailroom-proxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "too short\n").unwrap();
        let err = TrustedProxy::from_settings(&short, &["10.0.0.0/8".to_owned()]).unwrap_err();
        assert!(err.contains("at least 32"), "{err}");
        let good = dir.join("good");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").unwrap();
        let err = TrustedProxy::from_settings(&good, &[]).unwrap_err();
        assert!(err.contains("trusted_proxy_networks"), "{err}");
        assert!(TrustedProxy::from_settings(&good, &["not a net".to_owned()]).is_err());
        let proxy = TrustedProxy::from_settings(&good, &["127.0.0.1/32".to_owned()])
            .unwrap()
            .unwrap();
        assert_eq!(proxy.key, b"0123456789abcdef0123456789abcdef");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
