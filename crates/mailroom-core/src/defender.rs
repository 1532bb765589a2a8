//! The defender: scores failed logins and protocol abuse per source address and per account,
//! and decides when a subject has earned a ban and for how long.
//!
//! Scores are kept in memory over a sliding window (they are cheap to lose: a restart forgives
//! at most one window); bans are decided here and stored by the Hub in the metadata store, so
//! they survive restarts and, later, are shared by every node.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use time::OffsetDateTime;

use crate::access::{BanSubject, in_networks};

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
    /// Most subjects scored at once; the oldest are forgotten past it, so a flood of
    /// addresses cannot grow memory without bound.
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

/// Points one subject scored, oldest first.
#[derive(Debug, Default)]
struct Score {
    points: VecDeque<(OffsetDateTime, u32)>,
    total: u32,
}

/// The in-memory scores.
#[derive(Debug)]
pub(crate) struct Defender {
    config: DefenderConfig,
    scores: Mutex<HashMap<BanSubject, Score>>,
}

impl Defender {
    /// A defender with these settings and no scores.
    pub(crate) fn new(config: DefenderConfig) -> Self {
        Defender {
            config,
            scores: Mutex::new(HashMap::new()),
        }
    }

    /// Its settings.
    pub(crate) fn config(&self) -> &DefenderConfig {
        &self.config
    }

    /// Scores an offence against each subject; returns the subjects that reached the
    /// threshold with it (their scores start again from zero).
    pub(crate) fn score(
        &self,
        subjects: &[BanSubject],
        offence: Offence,
        now: OffsetDateTime,
    ) -> Vec<BanSubject> {
        let points = self.config.points(offence);
        if !self.config.enabled || points == 0 {
            return Vec::new();
        }
        let window = time::Duration::try_from(self.config.window).unwrap_or(time::Duration::DAY);
        let mut scores = self
            .scores
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if scores.len() >= self.config.max_tracked {
            // Forget subjects whose points have all aged out; if that is not enough, forget
            // everything rather than grow: a flood of addresses is not worth the memory.
            scores.retain(|_, score| {
                score
                    .points
                    .back()
                    .is_some_and(|(time, _)| *time + window > now)
            });
            if scores.len() >= self.config.max_tracked {
                scores.clear();
            }
        }
        let mut reached = Vec::new();
        for subject in subjects {
            let score = scores.entry(subject.clone()).or_default();
            while let Some(&(time, old)) = score.points.front() {
                if time + window > now {
                    break;
                }
                score.points.pop_front();
                score.total -= old;
            }
            score.points.push_back((now, points));
            score.total += points;
            if score.total >= self.config.threshold {
                reached.push(subject.clone());
                scores.remove(subject);
            }
        }
        reached
    }

    /// The current score of a subject, for status output and tests.
    #[cfg(test)]
    pub(crate) fn score_of(&self, subject: &BanSubject, now: OffsetDateTime) -> u32 {
        let window = time::Duration::try_from(self.config.window).unwrap_or(time::Duration::DAY);
        let scores = self
            .scores
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        scores.get(subject).map_or(0, |score| {
            score
                .points
                .iter()
                .filter(|(time, _)| *time + window > now)
                .map(|(_, p)| p)
                .sum()
        })
    }

    /// Forgets a subject's score (after an administrator lifts its ban).
    pub(crate) fn forgive(&self, subject: &BanSubject) {
        self.scores
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn address(text: &str) -> BanSubject {
        BanSubject::parse(text).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn threshold_within_the_window() {
        let defender = Defender::new(DefenderConfig::default());
        let ip = address("192.0.2.1");
        let start = datetime!(2026-01-01 00:00 UTC);
        // Seven unknown-account attempts: 14 points, no ban.
        for i in 0..7 {
            let now = start + time::Duration::seconds(i);
            assert!(
                defender
                    .score(std::slice::from_ref(&ip), Offence::UnknownAccount, now)
                    .is_empty()
            );
        }
        assert_eq!(defender.score_of(&ip, start), 14);
        // The fifteenth point bans.
        let reached = defender.score(std::slice::from_ref(&ip), Offence::BadCredentials, start);
        assert_eq!(reached, vec![ip.clone()]);
        assert_eq!(defender.score_of(&ip, start), 0);
    }

    #[test]
    fn old_points_age_out() {
        let defender = Defender::new(DefenderConfig::default());
        let ip = address("192.0.2.2");
        let start = datetime!(2026-01-01 00:00 UTC);
        for i in 0..14 {
            let now = start + time::Duration::minutes(i * 3);
            assert!(
                defender
                    .score(std::slice::from_ref(&ip), Offence::BadCredentials, now)
                    .is_empty(),
                "{i}"
            );
        }
        // 14 points spread over 39 minutes: only those of the last 30 minutes count.
        let now = start + time::Duration::minutes(42);
        assert!(
            defender
                .score(std::slice::from_ref(&ip), Offence::BadCredentials, now)
                .is_empty()
        );
        assert!(defender.score_of(&ip, now) < 15);
    }

    #[test]
    fn bans_grow_by_half_and_stop_at_the_maximum() {
        let config = DefenderConfig::default();
        assert_eq!(config.ban_length(1), Duration::from_secs(1800));
        assert_eq!(config.ban_length(2), Duration::from_secs(2700));
        assert_eq!(config.ban_length(3), Duration::from_secs(4050));
        assert_eq!(config.ban_length(1000), config.max_ban);
    }

    #[test]
    fn memory_is_bounded() {
        let defender = Defender::new(DefenderConfig {
            max_tracked: 100,
            ..DefenderConfig::default()
        });
        let now = datetime!(2026-01-01 00:00 UTC);
        for i in 0..1000u32 {
            let ip = BanSubject::Address(IpAddr::from(i.to_be_bytes()));
            defender.score(&[ip], Offence::BadCredentials, now);
        }
        let tracked = defender
            .scores
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len();
        assert!(tracked <= 100, "{tracked}");
    }
}
