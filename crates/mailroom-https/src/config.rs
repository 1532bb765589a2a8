//! The `[https]` section of the configuration: where the HTTPS API listens, how long its tokens
//! and unfinished uploads live, its request limits, and how it treats connections. Plain data
//! with safe defaults; the binary parses the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mailroom_core::TokenLifetimes;
use mailroom_net::Networks;
use serde::{Deserialize, Serialize};

mailroom_net::config_section! {
    [https]
    /// The HTTPS API: bearer tokens, resumable uploads, receipts, administration (OpenAPI at
    /// `/api/v1/openapi.json`), and the web pages.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Config {
        /// Whether the HTTPS API and the web pages run at all (on by default: users reach the
        /// hub with a browser). It serves the server certificate of `[tls]`, which `init` and
        /// `serve` create.
        pub enabled: bool,
        /// Address and port to listen on.
        pub listen: SocketAddr,
        /// Serves plain HTTP instead of HTTPS, for use behind a TLS-terminating proxy only.
        /// Passwords and tokens then cross the network in clear text up to the proxy; a
        /// warning is logged at every start.
        pub allow_plaintext: bool,
        /// Whether clients present an X.509 certificate, verified against the client CA of
        /// `[tls]`; it proves the `certificate` factor at `POST /api/v1/token`. "off": none is
        /// asked for; "optional": asked for, a client without one logs in otherwise;
        /// "required": the TLS handshake fails without one.
        pub client_certificates: mailroom_tls::ClientAuth,
        /// This listener's TLS versions and cipher suites ("tls:1.3", "tls-suite:NAME"), a
        /// subset of [ace.encryption] supported, offered in that list's order. Empty: all of
        /// them.
        pub encryption: Vec<mailroom_ace::Method>,
        /// Seconds an access token works.
        pub access_token_seconds: u64,
        /// Seconds a refresh token works (and so a login, unless refreshed).
        pub refresh_token_seconds: u64,
        /// Seconds an unfinished resumable upload is kept before it is aborted.
        pub upload_expiry_seconds: u64,
        /// Largest JSON request body, in bytes.
        pub max_json_bytes: usize,
        /// Largest body of one `PATCH` of a resumable upload, in bytes (a client sends a
        /// larger file in several).
        pub max_chunk_bytes: u64,
        /// Token requests (`POST /api/v1/token` and `/token/refresh`) allowed per source
        /// address per minute; more are answered 429. Refused logins also feed the defender.
        pub login_attempts_per_minute: u32,
        /// Connections open at once, all addresses together.
        pub max_connections: u32,
        /// Connections open at once from one source address.
        pub max_connections_per_address: u32,
        /// Seconds a new connection may take to complete its TLS handshake.
        pub handshake_timeout_seconds: u64,
        /// Seconds without a request before a kept-alive HTTP/1.1 connection is closed.
        pub idle_timeout_seconds: u64,
        /// A file holding the key (at least 32 bytes) a trusted reverse proxy signs its
        /// `Mailroom-Proxy-*` headers with, vouching for users it authenticated itself
        /// (`POST /api/v1/token/proxy`); empty: off. Relative to the data folder.
        pub trusted_proxy_key_file: PathBuf,
        /// The networks the trusted proxy connects from (CIDR); its headers are believed
        /// from nowhere else.
        pub trusted_proxy_networks: Vec<String>,
        /// Load balancers that send the PROXY protocol (v1 or v2) before TLS (see `[sftp]
        /// proxy_protocol_from`): the client address in the header is the one admission,
        /// bans, the login limit and events see. Empty: off.
        pub proxy_protocol_from: Networks,
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            allow_plaintext: false,
            client_certificates: mailroom_tls::ClientAuth::Off,
            encryption: Vec::new(),
            access_token_seconds: 15 * 60,
            refresh_token_seconds: 12 * 3600,
            upload_expiry_seconds: 24 * 3600,
            max_json_bytes: 64 * 1024,
            max_chunk_bytes: 1 << 30,
            login_attempts_per_minute: 20,
            max_connections: 512,
            max_connections_per_address: 64,
            handshake_timeout_seconds: 10,
            idle_timeout_seconds: 120,
            trusted_proxy_key_file: PathBuf::new(),
            trusted_proxy_networks: Vec::new(),
            proxy_protocol_from: Networks::default(),
        }
    }
}

impl Config {
    /// The token lifetimes as the Hub takes them.
    pub fn token_lifetimes(&self) -> TokenLifetimes {
        TokenLifetimes {
            access: Duration::from_secs(self.access_token_seconds.max(1)),
            refresh: Duration::from_secs(self.refresh_token_seconds.max(1)),
        }
    }

    /// How long an unfinished upload is kept.
    pub fn upload_expiry(&self) -> Duration {
        Duration::from_secs(self.upload_expiry_seconds.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe() {
        let config = Config::default();
        assert!(!config.allow_plaintext);
        assert_eq!(config.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(config.token_lifetimes().access, Duration::from_secs(900));
    }

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let config: Config =
            serde_json::from_str(r#"{"client_certificates": "optional"}"#).unwrap_or_default();
        assert_eq!(
            config.client_certificates,
            mailroom_tls::ClientAuth::Optional
        );
        assert!(serde_json::from_str::<Config>(r#"{"nope": 1}"#).is_err());
        assert!(serde_json::from_str::<Config>(r#"{"client_certificates": "on"}"#).is_err());
    }
}
