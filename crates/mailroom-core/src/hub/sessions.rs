//! Live sessions as the Hub manages them: listing them, closing those whose account may no
//! longer act, and closing one at an administrator's request; and, on a node of a cluster,
//! the node's registration and heartbeat.
//!
//! A Hub built [`Hub::with_node`] (every `mailroom serve`; the embedded engines are a cluster
//! of one) keeps each session's row in the metadata store beside its own registry: the login's
//! unit inserts it under the account's `max_sessions` counted over every live node, and the
//! session's drop deletes it. Its check ([`Hub::enforce_sessions`], every second, and at once
//! when the store tells of a change) writes the node's heartbeat and closes its sessions that
//! another process asked to close. A Hub without a node (tests, the admin CLI) keeps its
//! sessions in its registry alone, and reads the nodes' sessions from the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::login::source_ip;
use super::{Actor, Hub};
use crate::access::{BanSubject, in_networks};
use crate::error::{CoreError, Result};
use crate::model::{Event, EventKind, Outcome};
use crate::ports::Durability;
use crate::sessions::{
    LiveSessionRecord, NODE_FORGOTTEN_AFTER, NodeId, NodeInfo, NodeRecord, SessionInfo, SessionRef,
    Sessions,
};

/// The reason a session kicked by an administrator is given, on any node.
const KICKED: &str = "closed by an administrator";

/// Every this many checks, a node also deletes the rows of sessions it no longer holds (a
/// login cut short after its unit committed, a row whose delete failed): about every 15 s.
const SWEEP_ROWS_EVERY: u64 = 15;

impl Hub {
    // ----- the node --------------------------------------------------------------------------

    /// Makes this Hub node `node` of a cluster: its sessions are kept in the metadata store
    /// too, counted and listed by every node, and closed when another process asks. Call
    /// before serving, then [`Hub::join_cluster`].
    pub fn with_node(mut self, node: NodeInfo) -> Hub {
        self.auth.sessions = Arc::new(Sessions::on_node(node.id, self.meta.clone()));
        self.node = Some(node);
        self
    }

    /// This Hub's node, if it is one.
    pub fn node(&self) -> Option<&NodeInfo> {
        self.node.as_ref()
    }

    /// The session registry of a fresh authentication state: the node's, if this Hub is one.
    pub(super) fn session_registry(&self) -> Arc<Sessions> {
        Arc::new(match &self.node {
            Some(node) => Sessions::on_node(node.id, self.meta.clone()),
            None => Sessions::default(),
        })
    }

    /// Registers this node (its first heartbeat) and forgets, with their sessions, the nodes
    /// dead for more than [`NODE_FORGOTTEN_AFTER`]; returns how many it forgot. One write
    /// unit; nothing for a Hub that is no node.
    pub async fn join_cluster(&self) -> Result<usize> {
        let Some(node) = self.node.clone() else {
            return Ok(0);
        };
        let now = self.clock.now();
        self.write(Durability::Flush, move |tx| {
            tx.put_node(&node, now)?;
            let mut forgotten = 0;
            for old in tx.nodes()? {
                if old.heartbeat < now - NODE_FORGOTTEN_AFTER {
                    tx.delete_node(&old.node.id)?;
                    forgotten += 1;
                }
            }
            Ok(forgotten)
        })
        .await
    }

    /// Removes this node and the rows of its sessions: a clean stop, once its front ends have
    /// ended. Nothing for a Hub that is no node.
    pub async fn leave_cluster(&self) -> Result<()> {
        let Some(node) = self.node.as_ref().map(|n| n.id) else {
            return Ok(());
        };
        self.write(Durability::Flush, move |tx| {
            tx.delete_node(&node).map(|_| ())
        })
        .await
    }

    /// Every registered node, alive or dead ([`NodeRecord::alive`]), by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.read(|tx| tx.nodes()).await
    }

    /// Woken when another process may have asked this one to act (a session to close, a
    /// change of accounts or bans): run [`Hub::enforce_sessions`] then. `None` when the store
    /// cannot tell; poll instead.
    pub fn store_changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.meta.changes()
    }

    // ----- sessions --------------------------------------------------------------------------

    /// The live sessions: on a node, every live node's, from the store; otherwise this
    /// process's own and those of the live nodes. One read.
    pub async fn live_sessions(&self) -> Result<Vec<SessionInfo>> {
        let now = self.clock.now();
        let own = self.node.as_ref().map(|n| n.id);
        let stored = self
            .read(move |tx| {
                let alive: HashSet<NodeId> = tx
                    .nodes()?
                    .into_iter()
                    .filter(|n| n.alive(now))
                    .map(|n| n.node.id)
                    .collect();
                Ok(tx
                    .live_session_list()?
                    .into_iter()
                    .filter(|s| Some(s.node) == own || alive.contains(&s.node))
                    .collect::<Vec<_>>())
            })
            .await?;
        let mut all = match own {
            Some(_) => Vec::new(),
            None => self.auth.sessions.list(),
        };
        all.extend(stored.into_iter().map(|s| SessionInfo {
            node: Some(s.node),
            id: s.id,
            account: s.account,
            source: s.source,
            protocol: s.protocol,
            started: s.started,
            token_epoch: 0,
        }));
        all.sort_by_key(|s| (s.node, s.id));
        Ok(all)
    }

    /// Closes every live session of this process whose account was disabled, deleted, locked
    /// or moved out of the session's network, and re-reads the bans. On a node it also writes
    /// the heartbeat, closes the sessions another process asked to close (with the reason
    /// given), and deletes the rows of sessions it no longer holds. Front ends close the
    /// connection when the session's guard fires. Run it every second, and whenever
    /// [`Hub::store_changes`] wakes. Returns how many sessions it closed.
    pub async fn enforce_sessions(&self) -> Result<usize> {
        // The bans, the policy and the node's closing sessions in one read.
        let cache = self.policy.clone();
        let own = self.node.as_ref().map(|n| n.id);
        let sweep = own.is_some()
            && self
                .enforced
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(SWEEP_ROWS_EVERY);
        let (bans, policy, asked, stored) = self
            .read(move |tx| {
                let (asked, stored) = match own {
                    Some(node) => {
                        let stored = match sweep {
                            true => Some(
                                tx.live_session_list()?
                                    .into_iter()
                                    .filter(|s| s.node == node)
                                    .map(|s| s.id)
                                    .collect::<Vec<_>>(),
                            ),
                            false => None,
                        };
                        (tx.closing_sessions(&node)?, stored)
                    }
                    None => (Vec::new(), None),
                };
                Ok((tx.bans()?, cache.get(tx)?, asked, stored))
            })
            .await?;
        self.cache_bans(bans);
        // The registry is read after the store: a row read above whose session is not here
        // any more was dropped (a session registers here before its row is inserted).
        let held: HashSet<u64> = self.auth.sessions.list().iter().map(|s| s.id).collect();
        let asked: HashMap<u64, String> = asked.into_iter().collect();
        let mut closing: Vec<(SessionInfo, String)> = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        for session in self.auth.sessions.open() {
            let ip = source_ip(session.source.as_deref());
            let reason = match policy.account(&session.account) {
                None => Some("account deleted".to_owned()),
                Some(account) if account.disabled => Some("account disabled".to_owned()),
                Some(account)
                    if !account.access.networks.is_empty()
                        && !ip.is_some_and(|ip| in_networks(&account.access.networks, ip)) =>
                {
                    Some("source address no longer in the account's networks".to_owned())
                }
                Some(_) => {
                    let safe = ip.is_some_and(|ip| self.auth.defender.config().is_safe(ip));
                    let banned = !safe
                        && (self
                            .active_ban(&BanSubject::Account(session.account.clone()))
                            .await?
                            .is_some()
                            || match ip {
                                Some(ip) => {
                                    self.active_ban(&BanSubject::Address(ip)).await?.is_some()
                                }
                                None => false,
                            });
                    banned.then(|| "banned".to_owned())
                }
            };
            if let Some(reason) = reason {
                let actor = Actor {
                    name: session.account.to_string(),
                    source: session.source.clone(),
                    protocol: session.protocol,
                };
                events.push(self.stamp.event(
                    &actor,
                    EventKind::SessionClosed,
                    session.account.to_string(),
                    Outcome::Ok,
                    format!("closed by the hub: {reason}"),
                ));
                tracing::info!(account = %session.account, reason = %reason, "closing session");
                closing.push((session, reason));
            } else if let Some(reason) = asked.get(&session.id) {
                // Whoever asked recorded the close (an administrator's kick is audited there).
                tracing::info!(account = %session.account, reason = %reason, "closing session as asked");
                closing.push((session, reason.clone()));
            }
        }
        // Accounted first, so the event exists by the time the client sees the close.
        match &self.node {
            Some(node) => {
                let mut gone = self.auth.sessions.take_departed();
                gone.extend(
                    stored
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|id| !held.contains(id)),
                );
                let (node, now, stamp) = (node.clone(), self.clock.now(), self.stamp.clone());
                self.write(Durability::Relaxed, move |tx| {
                    tx.put_node(&node, now)?;
                    for id in gone {
                        tx.delete_live_session(&node.id, id)?;
                    }
                    stamp.record(tx, &events)
                })
                .await?;
            }
            None if !events.is_empty() => self.record(events, Durability::Relaxed).await?,
            None => {}
        }
        let mut closed = 0;
        for (session, reason) in closing {
            if self.auth.sessions.close(session.id, &reason) {
                closed += 1;
            }
            // A token login has no connection to close: its tokens go instead.
            self.end_token_session_of(session.id).await?;
        }
        Ok(closed)
    }

    /// Closes one live session (any protocol) as an administrator: `NODE:ID` names any live
    /// node's session, a plain `ID` one of this process (its node's, on a node). The close is
    /// recorded as a `session.closed` event naming `actor`. A session of this process is
    /// closed at once (the front end disconnects it, a token login's tokens are deleted); one
    /// of another node is asked to close, in the same unit as the event, and that node closes
    /// it at its next check (within a second or two). NotFound, changing nothing, when no such
    /// session is live (a dead node's sessions are not).
    pub async fn kick_session(&self, actor: &Actor, target: &SessionRef) -> Result<()> {
        let own = self.node.as_ref().map(|n| n.id);
        match target.node {
            Some(node) if Some(node) != own => self.ask_to_close(actor, node, target.id).await,
            _ => self.close_own(actor, target).await,
        }
    }

    /// [`Hub::kick_session`] of a session of this process.
    async fn close_own(&self, actor: &Actor, target: &SessionRef) -> Result<()> {
        let id = target.id;
        let Some(info) = self.auth.sessions.list().into_iter().find(|s| s.id == id) else {
            return Err(CoreError::not_found(format!("no live session {target}")));
        };
        let event = self.stamp.event(
            actor,
            EventKind::SessionClosed,
            info.account.to_string(),
            Outcome::Ok,
            format!(
                "session {} ({} from {}) closed by {}",
                info.reference(),
                info.protocol.as_str(),
                info.source.as_deref().unwrap_or("-"),
                actor.name
            ),
        );
        self.record(vec![event], Durability::Flush).await?;
        self.auth.sessions.close(id, KICKED);
        self.end_token_session_of(id).await
    }

    /// [`Hub::kick_session`] of another node's session: one unit marks it closing and records
    /// the event, or changes nothing if the session or its node is gone.
    async fn ask_to_close(&self, actor: &Actor, node: NodeId, id: u64) -> Result<()> {
        let (now, stamp, actor) = (self.clock.now(), self.stamp.clone(), actor.clone());
        self.write(Durability::Flush, move |tx| {
            let alive = tx
                .nodes()?
                .iter()
                .any(|n| n.node.id == node && n.alive(now));
            let session: Option<LiveSessionRecord> = match alive {
                true => tx
                    .live_session_list()?
                    .into_iter()
                    .find(|s| s.node == node && s.id == id),
                false => None,
            };
            let Some(session) = session else {
                return Err(CoreError::not_found(format!("no live session {node}:{id}")));
            };
            tx.close_live_session(&node, id, KICKED)?;
            let event = stamp.event(
                &actor,
                EventKind::SessionClosed,
                session.account.to_string(),
                Outcome::Ok,
                format!(
                    "session {node}:{id} ({} from {}) closed by {}",
                    session.protocol.as_str(),
                    session.source.as_deref().unwrap_or("-"),
                    actor.name
                ),
            );
            stamp.record(tx, &[event])
        })
        .await
    }
}
