//! Recording the refusals a front end makes before a login (connection and startup limits,
//! the login deadline, protocol errors) as refused login events, off the connection's task
//! and bounded, so that a flood costs the database a bounded rate of small writes rather than
//! one per connection without limit. Every front end uses this one recorder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::model::Protocol;

/// Records pre-login refusals as login events (user `-`, outcome refused, scored by the
/// defender), each in a task of `tracker` so that the accept loop never waits for the
/// database and a drain waits for them. Each is one relaxed-durability insert; at most
/// [`RefusalRecorder::MAX_IN_FLIGHT`] run at once and the rest are only logged and counted.
#[derive(Clone)]
pub struct RefusalRecorder {
    hub: Arc<Hub>,
    protocol: Protocol,
    tracker: TaskTracker,
    in_flight: Arc<Semaphore>,
    skipped: Arc<AtomicU64>,
}

impl RefusalRecorder {
    /// Recordings running at once.
    pub const MAX_IN_FLIGHT: usize = 16;

    /// A recorder for one front end's `protocol`, spawning on `tracker`.
    pub fn new(hub: Arc<Hub>, protocol: Protocol, tracker: TaskTracker) -> RefusalRecorder {
        RefusalRecorder {
            hub,
            protocol,
            tracker,
            in_flight: Arc::new(Semaphore::new(Self::MAX_IN_FLIGHT)),
            skipped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records that `peer` was refused before logging in, for `reason`; returns whether the
    /// event will be written (false while the recorder is saturated).
    pub fn record(&self, peer: SocketAddr, reason: String) -> bool {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let hub = self.hub.clone();
        let protocol = self.protocol;
        self.tracker.spawn(async move {
            let recorded = hub
                .record_login_refusal("-", &reason, Some(peer.to_string()), protocol)
                .await;
            if let Err(err) = recorded {
                tracing::error!(peer = %peer, error = %err, "refusal could not be recorded");
            }
            drop(permit);
        });
        true
    }

    /// Refusals not recorded because the recorder was saturated.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}
