//! Listener plumbing shared by the front ends: the accept step ([`Acceptor`]) with the PROXY
//! protocol from configured load balancers (`proxy`), connection limits per listener and per
//! source address, the front end's screen (bans, safe networks) and then the limits on
//! unauthenticated connections (`startup`, after OpenSSH's `MaxStartups`), and session ids for log spans. It also holds the small mechanism by which
//! each crate describes its section of the configuration ([`config_section!`],
//! [`ConfigSection`]) and the serde form of settings several sections share
//! ([`serde_optional_address`]), since every crate that owns a section depends on this one.
//!
//! It knows sockets and counts, nothing of protocols or of the mailbox service.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

mod accept;
mod activity;
pub mod proxy;
mod section;
pub mod serde_optional_address;
mod startup;

pub use accept::{Acceptor, Admitted, MAX_PENDING_HEADERS, Screening};
pub use activity::{Activity, Transfer};
pub use proxy::{Networks, ProxyProtocol};
pub use section::{ConfigSection, SettingDoc};
pub use startup::{
    MaxStartups, MaxStartupsError, StartupLimits, StartupPermit, StartupRefusals, StartupRefused,
};

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    /// The listener has as many connections as it allows.
    Global,
    /// This source address has as many connections as it allows.
    PerAddress,
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitExceeded::Global => "too many connections",
            LimitExceeded::PerAddress => "too many connections from this address",
        })
    }
}

/// Counts open connections, globally and per source address, and reports how many are open
/// as the gauge `mailroom_connections{listener}`.
#[derive(Debug)]
pub struct ConnectionLimits {
    listener: &'static str,
    max_total: u32,
    max_per_address: u32,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_address: HashMap<IpAddr, u32>,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections, at most `max_per_address` from one address.
    pub fn new(max_total: u32, max_per_address: u32) -> Arc<Self> {
        ConnectionLimits::for_listener("unnamed", max_total, max_per_address)
    }

    /// [`ConnectionLimits::new`] of the listener the metrics call `listener` (`sftp`,
    /// `ftps`, `https`).
    pub fn for_listener(listener: &'static str, max_total: u32, max_per_address: u32) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            listener,
            max_total,
            max_per_address,
            state: Mutex::new(Counts::default()),
        })
    }

    /// Admits a connection from `address`, or says which limit it hit. The permit releases
    /// its place when dropped.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<ConnectionPermit, LimitExceeded> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.total >= self.max_total {
            return Err(LimitExceeded::Global);
        }
        let count = state.per_address.entry(address).or_insert(0);
        if *count >= self.max_per_address {
            return Err(LimitExceeded::PerAddress);
        }
        *count += 1;
        state.total += 1;
        metrics::gauge!("mailroom_connections", "listener" => self.listener).increment(1);
        Ok(ConnectionPermit {
            limits: self.clone(),
            address,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .total
    }
}

/// One admitted connection's place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut state = self
            .limits
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.total = state.total.saturating_sub(1);
        metrics::gauge!("mailroom_connections", "listener" => self.limits.listener).decrement(1);
        if let Some(count) = state.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                state.per_address.remove(&self.address);
            }
        }
    }
}

/// A short random id that names one session in logs.
pub fn session_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_and_release() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = limits.admit(a).unwrap();
        let _p2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), LimitExceeded::PerAddress);
        let _p3 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), LimitExceeded::Global);
        drop(p1);
        assert_eq!(limits.open(), 2);
        assert!(limits.admit(a).is_ok());
    }
}
