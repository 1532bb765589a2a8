//! The `[jobs]` and `[webhooks]` sections of `mailroom.toml`: how the queue retries and how
//! far it may grow, and where webhooks may go and how they are signed.

use std::net::IpAddr;
use std::path::PathBuf;

use mailroom_core::{IpNet, RetryPolicy};
use serde::{Deserialize, Serialize};

mailroom_net::config_section! {
    [jobs]
    /// The job queue: the work rules make of events (`[[rules]]`), run beside the transfers
    /// and never in their way. A failed job runs again after a backoff that doubles each time
    /// (with jitter), and is dead after `max_attempts`; `mailroom jobs` lists, retries and
    /// drops jobs.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct JobsConfig {
        /// Attempts before a job is dead (and a `job.dead` event raised).
        pub max_attempts: u32,
        /// Seconds to wait after a job's first failure; each failure doubles it.
        pub backoff_seconds: u64,
        /// The longest wait between two attempts, in seconds.
        pub max_backoff_seconds: u64,
        /// Jobs that may wait at once. A job beyond it is stored dead with the reason, and a
        /// `job.dead` event says so: a dead receiver grows the queue only this far.
        pub max_queued: u64,
        /// Jobs run at once.
        pub concurrency: u32,
        /// Seconds a running job is leased for; a job whose process died runs again after it.
        /// It must exceed the longest a handler may take (`[webhooks] timeout_seconds`).
        pub lease_seconds: u64,
        /// The niceness of the threads that run jobs (0 to 19, as nice(1) counts): jobs run
        /// on two threads of their own, which the kernel schedules after the transfers' when
        /// the CPU is busy, so a burst of uploads is not slowed by the work it causes; an
        /// idle hub runs jobs at once. 0: the same priority as transfers.
        pub nice: u8,
        /// While the hub serves more file operations per second than this (a burst of
        /// transfers), the worker waits before it takes more jobs, so the queue's own
        /// commits stay out of the transfers' way; 0: never wait. A steady trickle of files
        /// is far below it, and its jobs run at once.
        pub busy_operations_per_second: u64,
        /// The longest the worker waits for a burst to end before it takes jobs anyway, in
        /// milliseconds; and it never waits while more than `max_queued / 10` jobs wait, so
        /// a long busy spell delays jobs, never starves them.
        pub max_yield_ms: u64,
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_attempts: 8,
            backoff_seconds: 5,
            max_backoff_seconds: 3600,
            max_queued: mailroom_core::DEFAULT_MAX_QUEUED,
            concurrency: 8,
            lease_seconds: 120,
            nice: 10,
            busy_operations_per_second: 300,
            max_yield_ms: 3000,
        }
    }
}

impl WebhooksConfig {
    /// `allow_networks` parsed; the error names the setting and the bad entry.
    pub fn allowed_networks(&self) -> Result<Vec<IpNet>, String> {
        self.allow_networks
            .iter()
            .map(|net| {
                mailroom_core::parse_network(net)
                    .map_err(|err| format!("[webhooks] allow_networks: {}", err.message()))
            })
            .collect()
    }
}

impl JobsConfig {
    /// The retry policy these settings describe.
    pub fn retry(&self) -> RetryPolicy {
        let seconds = |s: u64| time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            base: seconds(self.backoff_seconds.max(1)),
            cap: seconds(self.max_backoff_seconds.max(self.backoff_seconds).max(1)),
        }
    }
}

mailroom_net::config_section! {
    [webhooks]
    /// Webhooks: an HTTPS POST of the event as JSON to each URL a rule names, signed as the
    /// Standard Webhooks scheme says (headers webhook-id, webhook-timestamp and
    /// webhook-signature, an HMAC-SHA256 over id, timestamp and body). The certificate is
    /// always verified, and addresses inside the hub's own networks are refused unless
    /// listed in `allow_networks`.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct WebhooksConfig {
        /// The signing secret's file, relative to the data folder (`whsec_` and base64, as
        /// receivers of Standard Webhooks expect); `serve` creates it, mode 0600, when
        /// missing. Give receivers its content.
        pub secret_file: PathBuf,
        /// A PEM file of CA certificates to trust besides the system's (a private CA);
        /// empty: the system's only.
        pub ca_file: PathBuf,
        /// Networks a webhook may reach although they are loopback, private, link-local or
        /// otherwise not public, in CIDR form or single addresses, e.g. ["10.20.0.0/16"].
        /// Empty: public addresses only.
        pub allow_networks: Vec<String>,
        /// Seconds a receiver has to answer before the attempt counts as failed.
        pub timeout_seconds: u64,
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            secret_file: PathBuf::from("webhook-secret"),
            ca_file: PathBuf::new(),
            allow_networks: Vec::new(),
            timeout_seconds: 15,
        }
    }
}

/// Whether a webhook may connect to `ip`: a public address, or one inside `allowed`.
/// Loopback, private (RFC 1918, unique local), link-local, shared (CGNAT), unspecified,
/// multicast, broadcast, documentation and benchmarking ranges are refused otherwise, and an
/// IPv4 address inside IPv6 is judged as the IPv4 address it carries.
pub fn webhook_may_reach(ip: IpAddr, allowed: &[IpNet]) -> bool {
    if allowed.iter().any(|net| net.contains(&ip)) {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => allowed.iter().any(|net| net.contains(&IpAddr::V4(v4))) || public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn public_v6(ip: std::net::Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || ip.to_ipv4().is_some_and(|v4| !public_v4(v4)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_reachable_unless_allowed() {
        let refused = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ];
        for ip in refused {
            assert!(!webhook_may_reach(ip.parse().unwrap(), &[]), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34"] {
            assert!(webhook_may_reach(ip.parse().unwrap(), &[]), "{ip}");
        }
        let allowed: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(webhook_may_reach("127.0.0.1".parse().unwrap(), &allowed));
        assert!(webhook_may_reach(
            "::ffff:127.0.0.1".parse().unwrap(),
            &allowed
        ));
        assert!(!webhook_may_reach("10.0.0.1".parse().unwrap(), &allowed));
    }
}

mailroom_net::config_section! {
    [notifications]
    /// Accounts' e-mail notices (`mailroom account set NAME --email ADDRESS --notify
    /// instant|digest|off --receipts on|off`): "you have files" mails to recipients and
    /// receipts to senders, sent through `[smtp]` (none without it).
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct NotificationsConfig {
        /// Minutes a digest gathers: an account set to `digest` gets at most one mail per
        /// period, at its end, listing the files that wait in its inbox.
        pub digest_minutes: u64,
    }
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig { digest_minutes: 60 }
    }
}

impl NotificationsConfig {
    /// The digest period.
    pub fn digest_period(&self) -> time::Duration {
        time::Duration::minutes(
            i64::try_from(self.digest_minutes.clamp(1, 7 * 24 * 60)).unwrap_or(60),
        )
    }
}
