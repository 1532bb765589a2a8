//! The `[auth]` section of the configuration: the defender's scores, thresholds and ban
//! lengths, the safe and deny lists, and the Argon2 job limit. Parsed here, handed to the
//! core as [`AuthConfig`].

use std::time::Duration;

use ipnet::IpNet;
use mailroom_core::{AuthConfig, DefenderConfig};
use serde::{Deserialize, Serialize};

mailroom_net::config_section! {
    [auth]
    /// Authentication and defence: scores of failed logins, bans (kept in the database), safe
    /// and deny lists.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct AuthSection {
        /// Whether failed logins are scored and sources banned.
        pub defender: bool,
        /// Points within `window_minutes` that ban a source address (or lock an account).
        pub ban_threshold: u32,
        /// Minutes points count for.
        pub window_minutes: u64,
        /// Minutes the first ban lasts.
        pub ban_minutes: u64,
        /// Percent each repeat ban of the same subject grows by.
        pub ban_growth_percent: u32,
        /// Days the longest ban lasts.
        pub max_ban_days: u64,
        /// Points for a login naming an unknown account.
        pub score_unknown_account: u32,
        /// Points for a wrong password, key or code.
        pub score_bad_credentials: u32,
        /// Points for a connection that never authenticated (including timeouts).
        pub score_no_authentication: u32,
        /// Points for a protocol error before authentication.
        pub score_protocol_error: u32,
        /// Networks never scored or banned, nor counted or dropped by the startup limits
        /// (`max_startups`), e.g. `["10.0.0.0/8", "192.0.2.7"]`.
        pub safe_networks: Networks,
        /// Networks refused before any protocol exchange.
        pub deny_networks: Networks,
        /// Argon2 password checks that may run at once (each takes 19 MiB); more logins wait.
        pub hash_jobs: u32,
        /// The issuer name authenticator apps show for TOTP.
        pub totp_issuer: String,
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        let core = AuthConfig::default();
        let defender = &core.defender;
        AuthSection {
            defender: defender.enabled,
            ban_threshold: defender.threshold,
            window_minutes: defender.window.as_secs() / 60,
            ban_minutes: defender.ban.as_secs() / 60,
            ban_growth_percent: defender.growth_percent,
            max_ban_days: defender.max_ban.as_secs() / 86_400,
            score_unknown_account: defender.score_unknown_account,
            score_bad_credentials: defender.score_bad_credentials,
            score_no_authentication: defender.score_no_authentication,
            score_protocol_error: defender.score_protocol_error,
            safe_networks: Networks::default(),
            deny_networks: Networks::default(),
            hash_jobs: u32::try_from(core.hash_jobs).unwrap_or(4),
            totp_issuer: core.totp_issuer,
        }
    }
}

impl AuthSection {
    /// The core's settings.
    pub fn to_core(&self) -> AuthConfig {
        AuthConfig {
            defender: DefenderConfig {
                enabled: self.defender,
                threshold: self.ban_threshold.max(1),
                window: Duration::from_secs(self.window_minutes.max(1) * 60),
                ban: Duration::from_secs(self.ban_minutes.max(1) * 60),
                growth_percent: self.ban_growth_percent,
                max_ban: Duration::from_secs(self.max_ban_days.max(1) * 86_400),
                score_unknown_account: self.score_unknown_account,
                score_bad_credentials: self.score_bad_credentials,
                score_no_authentication: self.score_no_authentication,
                score_protocol_error: self.score_protocol_error,
                safe: self.safe_networks.0.clone(),
                deny: self.deny_networks.0.clone(),
                ..DefenderConfig::default()
            },
            hash_jobs: self.hash_jobs.max(1) as usize,
            totp_issuer: self.totp_issuer.clone(),
        }
    }
}

/// A list of networks in CIDR form (a bare address is a network of one), checked on load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Networks(pub Vec<IpNet>);

impl TryFrom<Vec<String>> for Networks {
    type Error = String;

    fn try_from(value: Vec<String>) -> Result<Self, Self::Error> {
        value
            .iter()
            .map(|n| mailroom_core::parse_network(n).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(Networks)
    }
}

impl From<Networks> for Vec<String> {
    fn from(networks: Networks) -> Vec<String> {
        networks.0.iter().map(ToString::to_string).collect()
    }
}
