//! The defender: scores failed logins and protocol abuse per source address and per account,
//! and decides when a subject has earned a ban and for how long.
//!
//! The scores live in the metadata store, one row per offence, so that a brute force spread
//! over several nodes is summed as one: the unit that records a refusal adds its offences,
//! sums each subject's score over the sliding window, and bans a subject that reached the
//! threshold, all in one transaction. What an offence is worth, the window, the threshold and
//! the length of a ban are decided here; the bans too live in the metadata store, so they
//! survive restarts and hold on every node.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use time::OffsetDateTime;

use crate::access::{BanSubject, in_networks};
use crate::names::AccountName;

/// What a client did wrong, and so how many points it scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// A login named an account that does not exist.
    UnknownAccount,
    /// A wrong password, code or key for an existing account.
    BadCredentials,
    /// A connection that ended or timed out without authenticating.
    NoAuthentication,
    /// A malformed or hostile protocol exchange before authentication.
    ProtocolError,
}

/// The defender's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefenderConfig {
    /// Whether scoring and automatic bans are on.
    pub enabled: bool,
    /// Points within `window` that earn a ban.
    pub threshold: u32,
    /// How long points count.
    pub window: Duration,
    /// The first ban's length.
    pub ban: Duration,
    /// How much longer each repeat ban lasts, in percent (50: ×1.5 each time).
    pub growth_percent: u32,
    /// The longest ban.
    pub max_ban: Duration,
    /// Points for a login naming an unknown account.
    pub score_unknown_account: u32,
    /// Points for wrong credentials.
    pub score_bad_credentials: u32,
    /// Points for a connection that never authenticated.
    pub score_no_authentication: u32,
    /// Points for a protocol error before authentication.
    pub score_protocol_error: u32,
    /// Networks that are never scored or banned (monitoring, the office).
    pub safe: Vec<IpNet>,
    /// Networks refused outright, before any protocol exchange.
    pub deny: Vec<IpNet>,
    /// Most offences kept in the metadata store, across the cluster: past it the oldest are
    /// pruned (a few by each unit that adds one), so a flood of addresses cannot grow the
    /// table without bound. Offences older than `window` are pruned the same way, and a
    /// subject never keeps more than `threshold` of them (reaching it bans and forgets them).
    pub max_tracked: usize,
}

impl Default for DefenderConfig {
    fn default() -> Self {
        DefenderConfig {
            enabled: true,
            threshold: 15,
            window: Duration::from_secs(30 * 60),
            ban: Duration::from_secs(30 * 60),
            growth_percent: 50,
            max_ban: Duration::from_secs(30 * 24 * 3600),
            score_unknown_account: 2,
            score_bad_credentials: 1,
            score_no_authentication: 1,
            score_protocol_error: 1,
            safe: Vec::new(),
            deny: Vec::new(),
            max_tracked: 100_000,
        }
    }
}

impl DefenderConfig {
    /// The points an offence scores.
    pub fn points(&self, offence: Offence) -> u32 {
        match offence {
            Offence::UnknownAccount => self.score_unknown_account,
            Offence::BadCredentials => self.score_bad_credentials,
            Offence::NoAuthentication => self.score_no_authentication,
            Offence::ProtocolError => self.score_protocol_error,
        }
    }

    /// How long the ban at `level` (1 for the first) lasts: the base length grown by
    /// `growth_percent` for each earlier ban, at most `max_ban`.
    pub fn ban_length(&self, level: u32) -> Duration {
        let factor = 1.0 + f64::from(self.growth_percent) / 100.0;
        let exponent = i32::try_from(level.saturating_sub(1).min(64)).unwrap_or(64);
        let seconds = self.ban.as_secs_f64() * factor.powi(exponent);
        if !seconds.is_finite() || seconds >= self.max_ban.as_secs_f64() {
            self.max_ban
        } else {
            Duration::from_secs_f64(seconds)
        }
    }

    /// Whether an address is on the safe list.
    pub fn is_safe(&self, address: IpAddr) -> bool {
        in_networks(&self.safe, address)
    }

    /// Whether an address is on the deny list.
    pub fn is_denied(&self, address: IpAddr) -> bool {
        in_networks(&self.deny, address)
    }
}

/// Offences the unit that adds some prunes at most, of each kind (older than the window,
/// beyond `max_tracked`): more than a unit adds (two at most), so the table never grows past
/// its bounds for long.
pub(crate) const PRUNE_PER_UNIT: u32 = 8;

/// The defender's decisions: which subjects an offence scores and how many points, the window
/// a score is summed over, and when a score bans. The scores themselves live in the metadata
/// store ([`crate::Tx::add_offence`], [`crate::Tx::offence_score`]), so that every node adds
/// to and sums the same offences; the Hub adds them, sums them and places the ban in one unit
/// (`hub/bans.rs`).
#[derive(Debug, Clone)]
pub(crate) struct Defender {
    config: DefenderConfig,
}

impl Defender {
    /// A defender with these settings.
    pub(crate) fn new(config: DefenderConfig) -> Self {
        Defender { config }
    }

    /// Its settings.
    pub(crate) fn config(&self) -> &DefenderConfig {
        &self.config
    }

    /// The subjects an offence from `ip` scores, with its points: the address and, for an
    /// existing account, the account. None when the defender is off, the offence is worth
    /// nothing, or the address is on the safe list.
    pub(crate) fn offences(
        &self,
        ip: IpAddr,
        account: Option<AccountName>,
        offence: Offence,
    ) -> Vec<(BanSubject, u32)> {
        let points = self.config.points(offence);
        if !self.config.enabled || points == 0 || self.config.is_safe(ip) {
            return Vec::new();
        }
        let mut subjects = vec![(BanSubject::Address(ip), points)];
        if let Some(name) = account {
            subjects.push((BanSubject::Account(name), points));
        }
        subjects
    }

    /// Where the window of a score ends at `now`: offences dated at or after it count.
    pub(crate) fn window_start(&self, now: OffsetDateTime) -> OffsetDateTime {
        let window = time::Duration::try_from(self.config.window).unwrap_or(time::Duration::DAY);
        now.checked_sub(window).unwrap_or(now)
    }

    /// Whether a score (summed over the window) earns a ban.
    pub(crate) fn reached(&self, score: u64) -> bool {
        score >= u64::from(self.config.threshold.max(1))
    }

    /// The reason a ban by the defender gives.
    pub(crate) fn ban_reason(&self) -> String {
        format!(
            "{} points in {} min",
            self.config.threshold,
            self.config.window.as_secs() / 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| unreachable!())
    }

    fn name(text: &str) -> AccountName {
        AccountName::parse(text).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn an_offence_scores_the_address_and_an_existing_account() {
        let defender = Defender::new(DefenderConfig::default());
        assert_eq!(
            defender.offences(ip("192.0.2.1"), None, Offence::UnknownAccount),
            vec![(BanSubject::Address(ip("192.0.2.1")), 2)]
        );
        assert_eq!(
            defender.offences(
                ip("192.0.2.1"),
                Some(name("alice")),
                Offence::BadCredentials
            ),
            vec![
                (BanSubject::Address(ip("192.0.2.1")), 1),
                (BanSubject::Account(name("alice")), 1)
            ]
        );
    }

    #[test]
    fn nothing_is_scored_when_off_worthless_or_safe() {
        let off = Defender::new(DefenderConfig {
            enabled: false,
            ..DefenderConfig::default()
        });
        assert!(
            off.offences(ip("192.0.2.1"), None, Offence::ProtocolError)
                .is_empty()
        );
        let worthless = Defender::new(DefenderConfig {
            score_no_authentication: 0,
            ..DefenderConfig::default()
        });
        assert!(
            worthless
                .offences(ip("192.0.2.1"), None, Offence::NoAuthentication)
                .is_empty()
        );
        let safe = Defender::new(DefenderConfig {
            safe: vec!["192.0.2.0/24".parse().unwrap_or_else(|_| unreachable!())],
            ..DefenderConfig::default()
        });
        assert!(
            safe.offences(
                ip("192.0.2.1"),
                Some(name("alice")),
                Offence::BadCredentials
            )
            .is_empty()
        );
    }

    #[test]
    fn the_threshold_and_the_window() {
        let defender = Defender::new(DefenderConfig::default());
        assert!(!defender.reached(14));
        assert!(defender.reached(15));
        let now = datetime!(2026-01-01 00:30 UTC);
        assert_eq!(defender.window_start(now), datetime!(2026-01-01 00:00 UTC));
        assert_eq!(defender.ban_reason(), "15 points in 30 min");
    }

    #[test]
    fn bans_grow_by_half_and_stop_at_the_maximum() {
        let config = DefenderConfig::default();
        assert_eq!(config.ban_length(1), Duration::from_secs(1800));
        assert_eq!(config.ban_length(2), Duration::from_secs(2700));
        assert_eq!(config.ban_length(3), Duration::from_secs(4050));
        assert_eq!(config.ban_length(1000), config.max_ban);
    }
}
