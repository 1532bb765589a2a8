//! Webhooks: an HTTPS POST of an event as JSON, signed as the Standard Webhooks scheme says.
//!
//! The receiver gets three headers: `webhook-id` (the job's id: the same on every attempt,
//! so a receiver drops a second copy), `webhook-timestamp` (Unix seconds of this attempt, so
//! a receiver refuses stale or replayed requests) and `webhook-signature` (`v1,` and the
//! base64 HMAC-SHA256 of `id.timestamp.body` under the secret). TLS is verified always;
//! plain `http://` is refused. Every address a URL's host resolves to is checked before a
//! connection is made (and an address literal too): loopback, private and link-local ranges
//! are refused unless allowed, so a rule cannot point the hub into its own network. Redirects
//! are not followed.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use mailroom_api::EventView;
use mailroom_core::{Event, IpNet, Job};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Serialize;
use sha2::Sha256;

use crate::config::{WebhooksConfig, webhook_may_reach};

/// The prefix of a Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";

/// Why a webhook could not be set up or sent.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The configuration or the secret file is unusable.
    #[error("{0}")]
    Setup(String),
    /// The URL is not one a webhook may use (not https, no host, a forbidden address).
    #[error("refused: {0}")]
    Refused(String),
    /// The request failed or the receiver did not answer 2xx.
    #[error("{0}")]
    Failed(String),
}

/// The webhook sender: one HTTP client (connection pool, TLS roots, guarded resolver) and
/// the signing key.
#[derive(Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    key: Arc<Vec<u8>>,
    allowed: Arc<Vec<IpNet>>,
}

/// The JSON body of a webhook: the Standard Webhooks envelope around the event.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    /// The event's type, e.g. `delivery.delivered`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// When the event happened (RFC 3339, UTC).
    pub timestamp: String,
    /// The rule that sent it.
    pub rule: &'a str,
    /// The event, as the API shows it.
    pub data: EventView,
}

impl Webhooks {
    /// The sender for `config`, with paths relative to `data_dir`. Creates the secret file
    /// (mode 0600) when it is missing.
    pub fn new(config: &WebhooksConfig, data_dir: &Path) -> Result<Webhooks, WebhookError> {
        let allowed = config.allowed_networks().map_err(WebhookError::Setup)?;
        let key = load_or_create_secret(&data_dir.join(&config.secret_file))?;
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.timeout_seconds.max(1)))
            .connect_timeout(Duration::from_secs(config.timeout_seconds.clamp(1, 10)))
            .user_agent(concat!("Mailroom-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allowed: Arc::new(allowed.clone()),
            }));
        if !config.ca_file.as_os_str().is_empty() {
            let path = data_dir.join(&config.ca_file);
            let pem = std::fs::read(&path).map_err(|err| {
                WebhookError::Setup(format!("[webhooks] ca_file {}: {err}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                WebhookError::Setup(format!(
                    "[webhooks] ca_file {}: no PEM certificates: {err}",
                    path.display()
                ))
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|err| WebhookError::Setup(format!("webhook client: {err}")))?;
        Ok(Webhooks {
            client,
            key: Arc::new(key),
            allowed: Arc::new(allowed),
        })
    }

    /// Checks that `url` is one a webhook may use, without connecting: `https`, a host, no
    /// credentials, and, for an address literal, an address that may be reached (checked only
    /// when `allowed` is given). Rules are checked with it when the configuration is read and
    /// at start; names are checked again each time they resolve.
    pub fn check_url(url: &str, allowed: Option<&[IpNet]>) -> Result<reqwest::Url, WebhookError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|err| WebhookError::Refused(format!("{url:?} is not a URL: {err}")))?;
        if parsed.scheme() != "https" {
            return Err(WebhookError::Refused(format!(
                "{url:?}: webhooks go over https only"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(WebhookError::Refused(format!(
                "{url:?}: credentials in a webhook URL would be logged; use the signature"
            )));
        }
        let literal = match parsed.host() {
            None => return Err(WebhookError::Refused(format!("{url:?} names no host"))),
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
        };
        match (literal, allowed) {
            (Some(ip), Some(allowed)) => reachable(ip, allowed).map(|()| parsed),
            _ => Ok(parsed),
        }
    }

    /// POSTs `event` to `url` for `job`; Ok once the receiver answers 2xx.
    pub async fn send(&self, url: &str, job: &Job, event: &Event) -> Result<(), WebhookError> {
        let parsed = Webhooks::check_url(url, Some(&self.allowed))?;
        let data = EventView::from(event);
        let body = serde_json::to_vec(&Payload {
            kind: event.kind.as_str(),
            timestamp: data.time.clone(),
            rule: &job.rule,
            data,
        })
        .map_err(|err| WebhookError::Failed(format!("event as JSON: {err}")))?;
        let id = job.id.to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = sign(&self.key, &id, timestamp, &body);
        let response = self
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|err| WebhookError::Failed(describe(&err)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(WebhookError::Failed(format!(
                "the receiver answered {status}"
            )))
        }
    }
}

/// The `webhook-signature` header of `body` sent as `id` at `timestamp` (Unix seconds):
/// `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under `key`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // Invariant: HMAC takes a key of any length.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The key of a secret written as `whsec_<base64>`.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.trim().strip_prefix(SECRET_PREFIX)?;
    BASE64.decode(encoded).ok().filter(|key| key.len() >= 24)
}

/// Reads the signing secret, or creates one (32 random bytes) with mode 0600.
fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, WebhookError> {
    match std::fs::read_to_string(path) {
        Ok(text) => secret_key(&text).ok_or_else(|| {
            WebhookError::Setup(format!(
                "{}: not a webhook secret (whsec_ and at least 24 bytes in base64)",
                path.display()
            ))
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0_u8; 32];
            rand::fill(&mut key[..]);
            let text = format!("{SECRET_PREFIX}{}\n", BASE64.encode(&key));
            write_private(path, text.as_bytes()).map_err(|err| {
                WebhookError::Setup(format!("cannot create {}: {err}", path.display()))
            })?;
            tracing::info!(path = %path.display(), "created the webhook signing secret");
            Ok(key)
        }
        Err(err) => Err(WebhookError::Setup(format!(
            "cannot read {}: {err}",
            path.display()
        ))),
    }
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

fn reachable(ip: IpAddr, allowed: &[IpNet]) -> Result<(), WebhookError> {
    if webhook_may_reach(ip, allowed) {
        Ok(())
    } else {
        Err(WebhookError::Refused(format!(
            "{ip} is not a public address ([webhooks] allow_networks may allow it)"
        )))
    }
}

/// A request error in one line, with its causes (reqwest's own message alone says little).
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves a webhook's host and keeps only the addresses a webhook may reach; none left is
/// an error, so the connection is never made.
struct GuardedResolver {
    allowed: Arc<Vec<IpNet>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| webhook_may_reach(addr.ip(), &allowed))
                .collect();
            if permitted.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves to no public address ({}); [webhooks] allow_networks may allow it",
                    resolved
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into();
                return Err(err);
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification's reference libraries.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_webhook_url_must_be_https_with_a_reachable_host() {
        for url in [
            "http://hooks.example.test/x",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://169.254.169.254/latest/meta-data",
            "https://user:pw@hooks.example.test/x",
            "ftp://hooks.example.test/x",
            "not a url",
        ] {
            assert!(
                matches!(
                    Webhooks::check_url(url, Some(&[])),
                    Err(WebhookError::Refused(_))
                ),
                "{url}"
            );
        }
        assert!(Webhooks::check_url("https://hooks.example.test/mailroom", Some(&[])).is_ok());
        let loopback: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(Webhooks::check_url("https://127.0.0.1:8443/x", Some(&loopback)).is_ok());
        // Without the allow list only the form is checked (as the configuration is read).
        assert!(Webhooks::check_url("https://127.0.0.1:8443/x", None).is_ok());
        assert!(Webhooks::check_url("http://hooks.example.test/x", None).is_err());
    }
}
