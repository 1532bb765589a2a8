//! The `[sftp]` section of the configuration: where the SSH front end listens and how it
//! treats connections. Plain data with safe defaults; the binary parses the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use mailroom_net::{MaxStartups, Networks};
use serde::{Deserialize, Serialize};

mailroom_net::config_section! {
    [sftp]
    /// The SSH front end: SFTP and SCP.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Config {
        /// Whether the SSH front end runs at all.
        pub enabled: bool,
        /// Address and port to listen on.
        pub listen: SocketAddr,
        /// The ed25519 host key in OpenSSH format, relative to the data folder unless
        /// absolute; generated on first start.
        pub host_key: PathBuf,
        /// A refused login is answered after this many milliseconds, whatever the cause, so
        /// that timing tells nothing about which part was wrong.
        pub auth_rejection_ms: u64,
        /// Authentication attempts allowed per connection.
        pub max_auth_attempts: u32,
        /// Seconds a connection may take to log in before it is closed.
        pub login_grace_seconds: u64,
        /// Seconds without traffic before a session is closed.
        pub idle_timeout_seconds: u64,
        /// Connections open at once, all addresses together.
        pub max_connections: u32,
        /// Connections open at once from one source address.
        pub max_connections_per_address: u32,
        /// Connections not yet logged in, as OpenSSH's MaxStartups "start:rate:full": once
        /// "start" are open, a new one is dropped with a probability rising from "rate" % to
        /// 100 % at "full". One number N means a hard cap ("N:100:N"). Connections from
        /// `[auth] safe_networks` are not counted; banned ones are refused before counting.
        pub max_startups: MaxStartups,
        /// Connections not yet logged in from one source address (safe networks not counted).
        pub max_startups_per_address: u32,
        /// Requests one SFTP session may have waiting for an answer; a client past this is
        /// misbehaving and is disconnected. OpenSSH's client keeps at most 64.
        pub max_requests_in_flight: u32,
        /// Load balancers that send the PROXY protocol (v1 or v2, HAProxy's send-proxy-v2):
        /// networks in CIDR form, e.g. ["10.0.0.5/32"]. A connection from one of them must
        /// open with a PROXY header within 5 s, and its client address (for limits, bans,
        /// account networks and events) is the one in the header; one without is dropped.
        /// Connections from elsewhere are never read for a header. Empty: off.
        pub proxy_protocol_from: Networks,
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 2222)),
            host_key: PathBuf::from("ssh_host_ed25519_key"),
            auth_rejection_ms: 500,
            max_auth_attempts: 6,
            login_grace_seconds: 60,
            idle_timeout_seconds: 600,
            max_connections: 512,
            max_connections_per_address: 64,
            max_startups: MaxStartups::default(),
            max_startups_per_address: 10,
            max_requests_in_flight: 256,
            proxy_protocol_from: Networks::default(),
        }
    }
}
