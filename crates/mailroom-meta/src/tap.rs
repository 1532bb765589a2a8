//! The event tap: committed audit records handed to one observer (the binary's syslog sink),
//! only after the transaction that holds them has committed.
//!
//! Handing over never waits: records go into a bounded channel with `try_send`, and a full or
//! closed channel drops them and counts the drop, so a slow observer can never stall a commit.
//! The audit trail in the database stays the record; the tap is a copy for the outside. This
//! module does not format or send anything itself.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use mailroom_core::AuditRecord;
use tokio::sync::mpsc;

/// Where committed records go, once an observer is set.
#[derive(Debug, Default)]
pub(crate) struct EventTap {
    sender: OnceLock<mpsc::Sender<AuditRecord>>,
    dropped: AtomicU64,
}

impl EventTap {
    /// Sets the observer. Returns `false` if one was set already (it stays).
    pub(crate) fn set(&self, sender: mpsc::Sender<AuditRecord>) -> bool {
        self.sender.set(sender).is_ok()
    }

    /// Hands over the records of a transaction that has committed, in commit order.
    pub(crate) fn committed(&self, records: Vec<AuditRecord>) {
        let Some(sender) = self.sender.get() else {
            return;
        };
        for record in records {
            if sender.try_send(record).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped because the observer's channel was full or closed.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
