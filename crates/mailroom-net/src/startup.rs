//! Limits on unauthenticated connections, after OpenSSH's `MaxStartups start:rate:full` and
//! `PerSourceMaxStartups`: a cap on connections that have not logged in yet, globally and per
//! source address, with random early drop between `start` and `full`.
//!
//! A [`StartupPermit`] holds one place from accept until the connection authenticates
//! ([`StartupPermit::authenticated`]) or closes (drop). It counts and decides; it does not
//! close sockets, log or record anything: the front end does that with the refusal it gets.
//! Which connections are counted at all (not those from the safe networks, not those a ban
//! refuses) is the accept step's decision (`accept`), made before it asks these limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// `MaxStartups start:rate:full`: below `start` unauthenticated connections every new one is
/// admitted; from `start` on a new one is dropped with a probability rising linearly from
/// `rate` percent to 100 % at `full`; at `full` every new one is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    /// Unauthenticated connections below which nothing is dropped.
    pub start: u32,
    /// Drop probability in percent (1 to 100) at `start`.
    pub rate: u32,
    /// Unauthenticated connections at which every new one is dropped.
    pub full: u32,
}

impl Default for MaxStartups {
    /// OpenSSH's default, `10:30:100`.
    fn default() -> Self {
        MaxStartups {
            start: 10,
            rate: 30,
            full: 100,
        }
    }
}

/// Why a `MaxStartups` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaxStartupsError {
    /// Not `N` or `start:rate:full` with whole numbers.
    #[error(
        "max_startups must be \"start:rate:full\" (e.g. \"10:30:100\") or one number, not {0:?}"
    )]
    Syntax(String),
    /// `rate` is not between 1 and 100.
    #[error("max_startups rate must be a percentage from 1 to 100, not {0}")]
    Rate(u32),
    /// `full` is zero or smaller than `start`.
    #[error("max_startups needs start <= full and full >= 1, got start {start} and full {full}")]
    Range {
        /// The `start` given.
        start: u32,
        /// The `full` given.
        full: u32,
    },
}

impl std::str::FromStr for MaxStartups {
    type Err = MaxStartupsError;

    /// Parses `start:rate:full`, or a single `N` meaning `N:100:N` (a hard cap), as OpenSSH's
    /// `servconf.c` does: `rate` within 1..=100, `start <= full` and `full >= 1`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || MaxStartupsError::Syntax(text.to_owned());
        let numbers = text
            .split(':')
            .map(|part| part.trim().parse::<u32>().map_err(|_| syntax()))
            .collect::<Result<Vec<u32>, _>>()?;
        let value = match numbers[..] {
            [full] => MaxStartups {
                start: full,
                rate: 100,
                full,
            },
            [start, rate, full] => MaxStartups { start, rate, full },
            _ => return Err(syntax()),
        };
        if !(1..=100).contains(&value.rate) {
            return Err(MaxStartupsError::Rate(value.rate));
        }
        if value.full == 0 || value.start > value.full {
            return Err(MaxStartupsError::Range {
                start: value.start,
                full: value.full,
            });
        }
        Ok(value)
    }
}

impl std::fmt::Display for MaxStartups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.start, self.rate, self.full)
    }
}

/// In the configuration, `max_startups` is written as OpenSSH writes it, `"10:30:100"`; a bare
/// number (`50`, as an environment override reads) is the one-number form.
impl<'de> serde::Deserialize<'de> for MaxStartups {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;

        impl serde::de::Visitor<'_> for Text {
            type Value = MaxStartups;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"start:rate:full\" such as \"10:30:100\", or one number")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MaxStartups, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<MaxStartups, E> {
                self.visit_str(&number.to_string())
            }

            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<MaxStartups, E> {
                self.visit_str(&number.to_string())
            }
        }

        deserializer.deserialize_any(Text)
    }
}

/// Written as `"start:rate:full"`.
impl serde::Serialize for MaxStartups {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl MaxStartups {
    /// Drop probability in percent for a new connection while `unauthenticated` are open:
    /// OpenSSH's `should_drop_connection`, in integer arithmetic like the original.
    fn drop_percent(&self, unauthenticated: u32) -> u32 {
        if unauthenticated < self.start {
            return 0;
        }
        if unauthenticated >= self.full || self.rate >= 100 {
            return 100;
        }
        // Invariant: start <= unauthenticated < full here, so the divisor is not zero.
        let span = u64::from(self.full - self.start);
        let climbed = u64::from(100 - self.rate) * u64::from(unauthenticated - self.start) / span;
        self.rate + u32::try_from(climbed).unwrap_or(100)
    }
}

/// Why an unauthenticated connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupRefused {
    /// `full` unauthenticated connections are open.
    Full,
    /// This source address has as many unauthenticated connections as it may.
    PerAddress,
    /// Random early drop between `start` and `full`.
    EarlyDrop,
}

impl StartupRefused {
    /// A short fixed reason for logs and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            StartupRefused::Full => "too many unauthenticated connections",
            StartupRefused::PerAddress => "too many unauthenticated connections from this address",
            StartupRefused::EarlyDrop => {
                "random early drop: many unauthenticated connections (max_startups)"
            }
        }
    }
}

impl std::fmt::Display for StartupRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refusals so far, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupRefusals {
    /// Refused because `full` was reached.
    pub full: u64,
    /// Refused by the per-address cap.
    pub per_address: u64,
    /// Dropped at random between `start` and `full`.
    pub early_drop: u64,
}

/// Counts unauthenticated connections, globally and per source address, and decides whether
/// a new one may start.
#[derive(Debug)]
pub struct StartupLimits {
    max_startups: MaxStartups,
    max_per_address: u32,
    state: Mutex<Startups>,
    refused_full: AtomicU64,
    refused_per_address: AtomicU64,
    refused_early: AtomicU64,
}

#[derive(Debug, Default)]
struct Startups {
    total: u32,
    per_address: HashMap<IpAddr, u32>,
}

impl StartupLimits {
    /// Limits after `max_startups`, at most `max_per_address` unauthenticated connections
    /// from one address.
    pub fn new(max_startups: MaxStartups, max_per_address: u32) -> Arc<Self> {
        Arc::new(StartupLimits {
            max_startups,
            max_per_address,
            state: Mutex::new(Startups::default()),
            refused_full: AtomicU64::new(0),
            refused_per_address: AtomicU64::new(0),
            refused_early: AtomicU64::new(0),
        })
    }

    /// Admits a new connection from `address` or says why not. The permit holds its place
    /// until it is dropped or [`StartupPermit::authenticated`] is called.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<StartupPermit, StartupRefused> {
        self.admit_with_roll(address, rand::random_range(0..100))
    }

    /// [`StartupLimits::admit`] with the random draw (0 to 99) given, for tests.
    fn admit_with_roll(
        self: &Arc<Self>,
        address: IpAddr,
        roll: u32,
    ) -> Result<StartupPermit, StartupRefused> {
        let refusal = {
            let mut state = self.lock();
            let from_address = state.per_address.get(&address).copied().unwrap_or(0);
            if from_address >= self.max_per_address {
                Err(StartupRefused::PerAddress)
            } else if state.total >= self.max_startups.full {
                Err(StartupRefused::Full)
            } else if roll < self.max_startups.drop_percent(state.total) {
                Err(StartupRefused::EarlyDrop)
            } else {
                *state.per_address.entry(address).or_insert(0) += 1;
                state.total += 1;
                Ok(())
            }
        };
        match refusal {
            Ok(()) => Ok(StartupPermit {
                limits: Some(self.clone()),
                address,
            }),
            Err(refused) => {
                let counter = match refused {
                    StartupRefused::Full => &self.refused_full,
                    StartupRefused::PerAddress => &self.refused_per_address,
                    StartupRefused::EarlyDrop => &self.refused_early,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Err(refused)
            }
        }
    }

    /// Unauthenticated connections open now.
    pub fn unauthenticated(&self) -> u32 {
        self.lock().total
    }

    /// Refusals since these limits were made.
    pub fn refusals(&self) -> StartupRefusals {
        StartupRefusals {
            full: self.refused_full.load(Ordering::Relaxed),
            per_address: self.refused_per_address.load(Ordering::Relaxed),
            early_drop: self.refused_early.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Startups> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn release(&self, address: IpAddr) {
        let mut state = self.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(count) = state.per_address.get_mut(&address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.per_address.remove(&address);
            }
        }
    }
}

/// One unauthenticated connection's place. Dropping it, or calling
/// [`StartupPermit::authenticated`], gives the place back.
#[derive(Debug)]
pub struct StartupPermit {
    limits: Option<Arc<StartupLimits>>,
    address: IpAddr,
}

impl StartupPermit {
    /// A permit that holds no place: for a connection the limits do not count (one from the
    /// safe networks). Dropping it or logging in changes nothing.
    pub fn uncounted(address: IpAddr) -> StartupPermit {
        StartupPermit {
            limits: None,
            address,
        }
    }

    /// The connection has logged in: it no longer counts as unauthenticated.
    pub fn authenticated(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if let Some(limits) = self.limits.take() {
            limits.release(self.address);
        }
    }
}

impl Drop for StartupPermit {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn check_parse(text: &str, expect: Result<(u32, u32, u32), &str>) {
        let got = text.parse::<MaxStartups>();
        match expect {
            Ok((start, rate, full)) => {
                assert_eq!(got, Ok(MaxStartups { start, rate, full }), "{text:?}");
                let value = got.unwrap();
                assert_eq!(value.to_string().parse::<MaxStartups>(), Ok(value));
            }
            Err(part) => {
                let message = got.unwrap_err().to_string();
                assert!(
                    message.contains(part),
                    "{text:?}: {message:?} lacks {part:?}"
                );
            }
        }
    }

    #[test]
    fn max_startups_parses_like_openssh() {
        check_parse("10:30:100", Ok((10, 30, 100)));
        check_parse(" 1 : 100 : 1 ", Ok((1, 100, 1)));
        check_parse("50", Ok((50, 100, 50)));
        check_parse("5:1:5", Ok((5, 1, 5)));
        check_parse("", Err("start:rate:full"));
        check_parse("10:30", Err("\"10:30\""));
        check_parse("10:30:100:1", Err("start:rate:full"));
        check_parse("a:b:c", Err("start:rate:full"));
        check_parse("-1:30:100", Err("start:rate:full"));
        check_parse(
            "10:0:100",
            Err("rate must be a percentage from 1 to 100, not 0"),
        );
        check_parse("10:101:100", Err("not 101"));
        check_parse("20:30:10", Err("start 20 and full 10"));
        check_parse("0", Err("start 0 and full 0"));
        check_parse("0:30:10", Ok((0, 30, 10)));
        assert_eq!(MaxStartups::default().to_string(), "10:30:100");
    }

    #[test]
    fn drop_probability_rises_linearly_from_rate_to_full() {
        let max = MaxStartups::default();
        for (open, percent) in [
            (0, 0),
            (9, 0),
            (10, 30),
            (11, 30),
            (55, 65),
            (99, 99),
            (100, 100),
            (500, 100),
        ] {
            assert_eq!(max.drop_percent(open), percent, "{open} open");
        }
        let hard = MaxStartups {
            start: 3,
            rate: 100,
            full: 3,
        };
        assert_eq!(hard.drop_percent(2), 0);
        assert_eq!(hard.drop_percent(3), 100);
    }

    #[test]
    fn per_address_and_full_caps_count_and_release() {
        let limits = StartupLimits::new(
            MaxStartups {
                start: 3,
                rate: 100,
                full: 3,
            },
            2,
        );
        let (a, b, c) = (ip("127.0.0.1"), ip("127.0.0.2"), ip("::1"));
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), StartupRefused::PerAddress);
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(c).unwrap_err(), StartupRefused::Full);
        assert_eq!(limits.unauthenticated(), 3);
        // Logging in gives the place back at once, as closing does.
        a1.authenticated();
        assert_eq!(limits.unauthenticated(), 2);
        let c1 = limits.admit(c).unwrap();
        drop(c1);
        assert_eq!(limits.unauthenticated(), 2);
        assert_eq!(
            limits.refusals(),
            StartupRefusals {
                full: 1,
                per_address: 1,
                early_drop: 0
            }
        );
    }

    #[test]
    fn an_uncounted_permit_holds_no_place() {
        let limits = StartupLimits::new(
            MaxStartups {
                start: 1,
                rate: 100,
                full: 1,
            },
            1,
        );
        let address = ip("127.0.0.1");
        let counted = limits.admit(address).unwrap();
        let free = StartupPermit::uncounted(address);
        drop(free);
        // Dropping the uncounted permit gave back nothing: the counted place is still held.
        assert_eq!(limits.unauthenticated(), 1);
        assert_eq!(
            limits.admit(address).unwrap_err(),
            StartupRefused::PerAddress
        );
        StartupPermit::uncounted(address).authenticated();
        assert_eq!(limits.unauthenticated(), 1);
        drop(counted);
        assert_eq!(limits.unauthenticated(), 0);
    }

    #[test]
    fn early_drop_follows_the_roll() {
        let limits = StartupLimits::new(
            MaxStartups {
                start: 2,
                rate: 50,
                full: 4,
            },
            100,
        );
        let address = ip("10.0.0.1");
        // Below start nothing is dropped, whatever the roll.
        let _p1 = limits.admit_with_roll(address, 0).unwrap();
        let _p2 = limits.admit_with_roll(address, 0).unwrap();
        // At start (2 open) the drop chance is 50 %: rolls 0..=49 drop, 50..=99 pass.
        assert_eq!(
            limits.admit_with_roll(address, 49).unwrap_err(),
            StartupRefused::EarlyDrop
        );
        let _p3 = limits.admit_with_roll(address, 50).unwrap();
        // At 3 open: 50 + 50 * 1 / 2 = 75 %.
        assert_eq!(
            limits.admit_with_roll(address, 74).unwrap_err(),
            StartupRefused::EarlyDrop
        );
        let _p4 = limits.admit_with_roll(address, 75).unwrap();
        // Full: even the luckiest roll is refused, as Full rather than a drop.
        assert_eq!(
            limits.admit_with_roll(address, 99).unwrap_err(),
            StartupRefused::Full
        );
        assert_eq!(limits.refusals().early_drop, 2);
        assert_eq!(limits.refusals().full, 1);
    }

    #[test]
    fn random_early_drop_rate_is_roughly_right() {
        // 10:30:100 with 55 open drops 65 % of newcomers; the real random source should
        // land near that over many draws (a loose bound: this checks wiring, not the RNG).
        let limits = StartupLimits::new(MaxStartups::default(), 1000);
        let address = ip("10.0.0.2");
        let held: Vec<StartupPermit> = (0..55).flat_map(|_| limits.admit(address)).collect();
        assert!(held.len() >= 10, "the first ten always pass");
        let open = limits.unauthenticated();
        let expect = f64::from(MaxStartups::default().drop_percent(open)) / 100.0;
        let trials = 4000;
        let dropped = (0..trials)
            .filter(|_| limits.admit(address).is_err())
            .count();
        let rate = dropped as f64 / f64::from(trials);
        assert!(
            (rate - expect).abs() < 0.05,
            "dropped {rate:.3}, expected {expect:.3} at {open} open"
        );
    }
}
