//! How many transfers a connection has running, so a graceful shutdown can close idle
//! connections at once and let running transfers finish. Shared by every front end.

use std::sync::Arc;

use tokio::sync::watch;

/// A connection's transfer count (open files, running commands); cheap to clone into the
/// tasks that transfer. The receiver from [`Activity::new`] sees every change.
#[derive(Clone, Debug)]
pub struct Activity(Arc<watch::Sender<usize>>);

impl Activity {
    /// A count at zero, and the receiver that watches it.
    pub fn new() -> (Activity, watch::Receiver<usize>) {
        let (sender, receiver) = watch::channel(0);
        (Activity(Arc::new(sender)), receiver)
    }

    /// Adds `delta` (positive or negative) to the count.
    pub fn add(&self, delta: isize) {
        self.0
            .send_modify(|count| *count = count.saturating_add_signed(delta));
    }

    /// Counts one transfer until the returned guard is dropped.
    pub fn transfer(&self) -> Transfer {
        self.add(1);
        Transfer(self.clone())
    }
}

/// One running transfer; dropping it uncounts it.
#[derive(Debug)]
pub struct Transfer(Activity);

impl Drop for Transfer {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_guards() {
        let (activity, watched) = Activity::new();
        activity.add(2);
        let guard = activity.transfer();
        assert_eq!(*watched.borrow(), 3);
        drop(guard);
        activity.add(-2);
        assert_eq!(*watched.borrow(), 0);
        activity.add(-1);
        assert_eq!(*watched.borrow(), 0, "never below zero");
    }
}
