//! The in-memory test bed: a metadata store, a blob store and a clock that tests hold, so the
//! Hub can be tested without sockets, disks or databases (feature `testing`, and this crate's
//! own tests).
//!
//! [`MemoryMeta`] keeps the same invariants as the SQLite store, and the conformance suite of
//! `mailroom-meta` runs every scenario on both.

mod memory_blobs;
mod memory_meta;

use std::sync::Mutex;

use time::OffsetDateTime;

use crate::ports::Clock;

pub use memory_blobs::MemoryBlobs;
pub use memory_meta::MemoryMeta;

/// A clock that stands still until the test moves it.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: OffsetDateTime) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock on by `by`.
    pub fn advance(&self, by: time::Duration) {
        let mut now = self.lock();
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: OffsetDateTime) {
        *self.lock() = to;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffsetDateTime> {
        self.now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.lock()
    }
}
