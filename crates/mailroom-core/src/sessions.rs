//! Live client sessions: who is logged in, from where, over what. The Hub counts them for
//! each account's session limit and closes them when the account is disabled, deleted or no
//! longer allowed from the session's network, or when an administrator kicks one.
//!
//! A process keeps its own sessions here, each with the channel that closes it. A Hub that runs
//! as a node of a cluster ([`crate::Hub::with_node`]) also keeps one row per session in the
//! metadata store ([`LiveSessionRecord`]), so that every node counts and lists every node's
//! sessions; a session dropped here deletes its row.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{CoreError, Result};
use crate::model::Protocol;
use crate::names::AccountName;
use crate::ports::{Durability, MetaStore, MetaStoreExt};

/// A node whose heartbeat is older than this is dead: its sessions no longer count toward an
/// account's `max_sessions` and are not listed. A live node beats every second or so.
pub const NODE_TIMEOUT: time::Duration = time::Duration::seconds(15);

/// A node dead for longer than this is forgotten, with its sessions, when a node starts.
pub const NODE_FORGOTTEN_AFTER: time::Duration = time::Duration::hours(1);

/// The id of one node: one `mailroom serve` process, new at every start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Uuid);

impl NodeId {
    /// A fresh random id.
    #[allow(clippy::new_without_default, reason = "each call makes a different id")]
    pub fn new() -> NodeId {
        NodeId(Uuid::new_v4())
    }

    /// Parses the hyphenated form [`NodeId`]'s `Display` writes. Invalid otherwise.
    pub fn parse(input: &str) -> Result<NodeId> {
        match Uuid::try_parse(input) {
            Ok(id) if id.hyphenated().to_string() == input => Ok(NodeId(id)),
            _ => Err(CoreError::invalid(format!(
                "{:?} is not a node id",
                crate::hub::printable(input)
            ))),
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// One node as it registers itself: its id, the host and process it runs as, and its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// The host name it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// When it started.
    pub started: OffsetDateTime,
}

/// A node as the store holds it: what it registered and its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node.
    pub node: NodeInfo,
    /// When it last wrote its heartbeat.
    pub heartbeat: OffsetDateTime,
}

impl NodeRecord {
    /// Whether the node counts as alive at `now` (its heartbeat is at most [`NODE_TIMEOUT`]
    /// old).
    pub fn alive(&self, now: OffsetDateTime) -> bool {
        self.heartbeat >= now - NODE_TIMEOUT
    }
}

/// One live session as the metadata store holds it, for every node to count and list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSessionRecord {
    /// The node that holds the session.
    pub node: NodeId,
    /// Its id on that node (unique per node, not across the cluster).
    pub id: u64,
    /// The logged-in account.
    pub account: AccountName,
    /// Protocol of the login.
    pub protocol: Protocol,
    /// Peer address.
    pub source: Option<String>,
    /// When it logged in.
    pub started: OffsetDateTime,
    /// `None` while it may run; the reason an administrator or the hub gave once it was asked
    /// to close (the node that holds it closes it at its next check).
    pub closing: Option<String>,
}

/// Which session an administrator means: `NODE:ID` (any node's), or a plain `ID`, a session
/// of the process asked (its own node's, when it is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef {
    /// The node that holds it; `None` for the process asked.
    pub node: Option<NodeId>,
    /// Its id on that node.
    pub id: u64,
}

impl SessionRef {
    /// Parses `NODE:ID` or `ID`. Invalid for anything else.
    pub fn parse(input: &str) -> Result<SessionRef> {
        let (node, id) = match input.rsplit_once(':') {
            Some((node, id)) => (Some(NodeId::parse(node)?), id),
            None => (None, input),
        };
        // Only the digits `Display` writes: no sign, no leading zero.
        match id.parse::<u64>() {
            Ok(number) if number.to_string() == id => Ok(SessionRef { node, id: number }),
            _ => Err(CoreError::invalid(format!(
                "{:?} is not a session id (NODE:NUMBER or NUMBER)",
                crate::hub::printable(input)
            ))),
        }
    }
}

impl fmt::Display for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(node) => write!(f, "{node}:{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// One live session as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The node that holds it; `None` for a session of a Hub that is no node (tests, a
    /// process on its own).
    pub node: Option<NodeId>,
    /// Registry id, unique on its node (in its process).
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
    /// 0 for a session read from the store (another node's).
    pub token_epoch: u64,
}

impl SessionInfo {
    /// How an administrator names this session: `NODE:ID`, or `ID` without a node.
    pub fn reference(&self) -> SessionRef {
        SessionRef {
            node: self.node,
            id: self.id,
        }
    }
}

struct Entry {
    info: SessionInfo,
    close: watch::Sender<Option<String>>,
}

/// The node a registry belongs to, and the store its rows are in.
struct Cluster {
    node: NodeId,
    meta: Arc<dyn MetaStore>,
}

/// The registry of live sessions.
#[derive(Default)]
pub(crate) struct Sessions {
    state: Mutex<State>,
    /// Set on a node: a session dropped deletes its row from this store.
    cluster: Option<Cluster>,
}

#[derive(Default)]
struct State {
    next: u64,
    live: HashMap<u64, Entry>,
    /// Ids of stored sessions dropped where no runtime could delete their rows at once; the
    /// Hub deletes them at its next check.
    departed: Vec<u64>,
}

impl Sessions {
    /// The registry of node `node`, whose sessions' rows are in `meta`.
    pub(crate) fn on_node(node: NodeId, meta: Arc<dyn MetaStore>) -> Sessions {
        Sessions {
            state: Mutex::default(),
            cluster: Some(Cluster { node, meta }),
        }
    }

    /// Registers a session unless the account already has `max` live ones here.
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
        let info = SessionInfo {
            id,
            node: self.cluster.as_ref().map(|c| c.node),
            ..info
        };
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
            stored: false,
        })
    }

    /// Every live session.
    pub(crate) fn list(&self) -> Vec<SessionInfo> {
        let mut all: Vec<SessionInfo> = self.lock().live.values().map(|e| e.info.clone()).collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// The live sessions not asked to close yet.
    pub(crate) fn open(&self) -> Vec<SessionInfo> {
        let mut open: Vec<SessionInfo> = self
            .lock()
            .live
            .values()
            .filter(|e| e.close.borrow().is_none())
            .map(|e| e.info.clone())
            .collect();
        open.sort_by_key(|s| s.id);
        open
    }

    /// Asks one session to close, with a reason for its client. Returns whether it was live
    /// and not asked already.
    pub(crate) fn close(&self, id: u64, reason: &str) -> bool {
        let state = self.lock();
        match state.live.get(&id) {
            Some(entry) if entry.close.borrow().is_none() => {
                entry.close.send_replace(Some(reason.to_owned()));
                true
            }
            _ => false,
        }
    }

    /// The ids of stored sessions dropped without a runtime to delete their rows.
    pub(crate) fn take_departed(&self) -> Vec<u64> {
        std::mem::take(&mut self.lock().departed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A registered session. Dropping it removes the session from the registry (and, on a node,
/// its row from the store); the front end keeps it for the life of the connection and closes
/// the connection when [`closed`] fires.
///
/// [`closed`]: LiveSession::closed
pub struct LiveSession {
    sessions: Arc<Sessions>,
    info: SessionInfo,
    closed: watch::Receiver<Option<String>>,
    /// Whether its row is in the store (set once the login's unit inserted it).
    stored: bool,
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

    /// Notes that the session's row is in the store, for the drop to delete it.
    pub(crate) fn mark_stored(&mut self) {
        self.stored = true;
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
        let mut state = self.sessions.lock();
        state.live.remove(&self.info.id);
        metrics::gauge!("mailroom_sessions", "protocol" => self.info.protocol.as_str())
            .decrement(1);
        let Some(cluster) = self.sessions.cluster.as_ref().filter(|_| self.stored) else {
            return;
        };
        // Never block here: the row is deleted by a task of the current runtime, or else by
        // the Hub's next check. A delete that fails leaves a row the next sweep removes.
        let (meta, node, id) = (cluster.meta.clone(), cluster.node, self.info.id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let deleted = meta
                        .write_with(Durability::Relaxed, move |tx| {
                            tx.delete_live_session(&node, id)
                        })
                        .await;
                    if let Err(err) = deleted {
                        tracing::debug!(error = %err, session = id, "could not delete a closed session's row");
                    }
                });
            }
            Err(_) => state.departed.push(id),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn session_references_parse_as_written() {
        let node = NodeId::new();
        for reference in [
            SessionRef {
                node: Some(node),
                id: 17,
            },
            SessionRef { node: None, id: 3 },
        ] {
            assert_eq!(
                SessionRef::parse(&reference.to_string()).unwrap(),
                reference
            );
        }
        for bad in [
            "",
            "x",
            "-1",
            "007",
            "+7",
            ":7",
            "node:7",
            &format!("{node}:"),
            &format!("{node}:x"),
            &format!("{}:7", node.to_string().to_uppercase()),
        ] {
            assert!(SessionRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_ids_parse_as_written() {
        let node = NodeId::new();
        assert_eq!(NodeId::parse(&node.to_string()).unwrap(), node);
        assert!(NodeId::parse("nonsense").is_err());
    }
}
