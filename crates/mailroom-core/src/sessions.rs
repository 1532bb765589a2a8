//! Live client sessions: who is logged in, from where, over what. The Hub counts them for
//! each account's session limit and closes them when the account is disabled, deleted or no
//! longer allowed from the session's network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::model::Protocol;
use crate::names::AccountName;

/// One live session as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Registry id, unique in this process.
    pub id: u64,
    /// The logged-in account.
    pub account: AccountName,
    /// Peer address.
    pub source: Option<String>,
    /// Protocol of the login.
    pub protocol: Protocol,
    /// When it logged in.
    pub started: OffsetDateTime,
    /// The account's token generation when it logged in: tokens issued for this login must
    /// be of it, so a password change or disable committed after the login revokes them too.
    pub token_epoch: u64,
}

struct Entry {
    info: SessionInfo,
    close: watch::Sender<Option<String>>,
}

/// The registry of live sessions.
#[derive(Default)]
pub(crate) struct Sessions {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    live: HashMap<u64, Entry>,
}

impl Sessions {
    /// Registers a session unless the account already has `max` live ones.
    pub(crate) fn register(
        self: &Arc<Self>,
        info: SessionInfo,
        max: Option<u32>,
    ) -> Option<LiveSession> {
        let mut state = self.lock();
        if let Some(max) = max {
            let open = state
                .live
                .values()
                .filter(|e| e.info.account == info.account)
                .count();
            if open >= max as usize {
                return None;
            }
        }
        state.next += 1;
        let id = state.next;
        metrics::gauge!("mailroom_sessions", "protocol" => info.protocol.as_str()).increment(1);
        let (close, closed) = watch::channel(None);
        let info = SessionInfo { id, ..info };
        state.live.insert(
            id,
            Entry {
                info: info.clone(),
                close,
            },
        );
        Some(LiveSession {
            sessions: self.clone(),
            info,
            closed,
        })
    }

    /// Every live session.
    pub(crate) fn list(&self) -> Vec<SessionInfo> {
        let mut all: Vec<SessionInfo> = self.lock().live.values().map(|e| e.info.clone()).collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// Asks one session to close, with a reason for its client. Returns whether it was live.
    pub(crate) fn close(&self, id: u64, reason: &str) -> bool {
        let state = self.lock();
        match state.live.get(&id) {
            Some(entry) => {
                entry.close.send_replace(Some(reason.to_owned()));
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A registered session. Dropping it removes the session from the registry; the front end
/// keeps it for the life of the connection and closes the connection when [`closed`] fires.
///
/// [`closed`]: LiveSession::closed
pub struct LiveSession {
    sessions: Arc<Sessions>,
    info: SessionInfo,
    closed: watch::Receiver<Option<String>>,
}

impl LiveSession {
    /// The session's registry entry.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Resolves with the reason when the Hub asks this session to close.
    pub async fn closed(&mut self) -> String {
        match self.closed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The registry is gone (the hub is shutting down).
            Err(_) => "the server is shutting down".to_owned(),
        }
    }
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("info", &self.info)
            .finish()
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.sessions.lock().live.remove(&self.info.id);
        metrics::gauge!("mailroom_sessions", "protocol" => self.info.protocol.as_str())
            .decrement(1);
    }
}
