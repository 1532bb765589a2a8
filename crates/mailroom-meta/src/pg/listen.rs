//! The store's listener: a thread with a connection of its own that `LISTEN`s on the channel
//! `mailroom_sessions` and wakes a [`Notify`] for each notification, which is what
//! [`MetaStore::changes`](mailroom_core::MetaStore::changes) hands a serving node.
//!
//! The triggers of migration 0002 send on that channel when a live session is asked to close
//! and when accounts, groups, members, routes or bans change, each when its transaction
//! commits. A lost connection is opened again (after a pause, while the server is away), and
//! the node is woken once it is back, since notifications sent meanwhile were lost: the node's
//! own poll covers the gap. The thread ends when the store closes or is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tokio::sync::Notify;

use super::conn::Conn;
use super::{Inner, Shared};

/// The channel the triggers send on.
const LISTEN: &str = "LISTEN mailroom_sessions";

/// How long one wait for notifications lasts before the thread looks whether the store is
/// closing.
const WAIT: Duration = Duration::from_millis(250);

/// The pause before connecting again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the listener thread of the store `inner`, waking `changes`.
pub(super) fn start(
    inner: &Arc<Inner>,
    changes: Arc<Notify>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (shared, store) = (inner.shared.clone(), Arc::downgrade(inner));
    std::thread::Builder::new()
        .name("meta-pg-listen".to_owned())
        .spawn(move || run(&shared, &store, &changes))
}

/// Whether the thread should stop: the store is closing or gone.
fn stopping(shared: &Shared, store: &Weak<Inner>) -> bool {
    shared.closing.load(Ordering::Acquire) || store.strong_count() == 0
}

fn run(shared: &Shared, store: &Weak<Inner>, changes: &Notify) {
    // Its own count: the listener's requests are not the units' round trips.
    let round_trips = Arc::new(AtomicU64::new(0));
    let mut conn: Option<Conn> = None;
    let mut failing = false;
    while !stopping(shared, store) {
        let listening = match conn.as_mut().filter(|c| !c.is_closed()) {
            Some(listening) => listening,
            None => {
                conn = None;
                match shared
                    .connector
                    .connect(round_trips.clone())
                    .and_then(|mut c| c.batch(LISTEN).map(|()| c))
                {
                    Ok(opened) => {
                        if failing {
                            tracing::info!("listening for the other nodes' changes again");
                        }
                        failing = false;
                        conn = Some(opened);
                        // Whatever was sent while nobody listened.
                        changes.notify_one();
                    }
                    Err(error) => {
                        if !failing {
                            tracing::warn!(
                                location = shared.connector.location(),
                                error = %error,
                                "cannot listen for the other nodes' changes; polling meanwhile"
                            );
                        }
                        failing = true;
                        pause(shared, store);
                    }
                }
                continue;
            }
        };
        let lost = {
            let mut waiting = listening.notifications();
            let mut received = waiting.timeout_iter(WAIT);
            loop {
                match received.next() {
                    Ok(Some(_)) => changes.notify_one(),
                    Ok(None) => break false,
                    Err(error) => {
                        tracing::warn!(error = %error, "lost the connection listening for changes");
                        break true;
                    }
                }
            }
        };
        if lost {
            failing = true;
            conn = None;
        }
    }
}

/// Waits [`RETRY`], looking in between whether the store is closing.
fn pause(shared: &Shared, store: &Weak<Inner>) {
    let mut waited = Duration::ZERO;
    while waited < RETRY && !stopping(shared, store) {
        std::thread::sleep(WAIT);
        waited += WAIT;
    }
}
