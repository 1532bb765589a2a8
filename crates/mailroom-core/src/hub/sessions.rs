//! Live sessions as the Hub manages them: listing them, closing those whose account may no
//! longer act, and closing one at an administrator's request.

use super::login::source_ip;
use super::{Actor, Hub};
use crate::access::{BanSubject, in_networks};
use crate::error::{CoreError, Result};
use crate::model::{EventKind, Outcome};
use crate::ports::Durability;
use crate::sessions::SessionInfo;

impl Hub {
    // ----- sessions --------------------------------------------------------------------------

    /// The live sessions of this process.
    pub fn live_sessions(&self) -> Vec<SessionInfo> {
        self.auth.sessions.list()
    }

    /// Closes every live session whose account was disabled, deleted, locked or moved out of
    /// the session's network, and re-reads the bans. Front ends close the connection when the
    /// session's guard fires. Run it every few seconds.
    pub async fn enforce_sessions(&self) -> Result<usize> {
        // The bans and the policy in one read: one hop every few seconds.
        let cache = self.policy.clone();
        let (bans, policy) = self
            .read(move |tx| Ok((tx.bans()?, cache.get(tx)?)))
            .await?;
        self.cache_bans(bans);
        let live = self.auth.sessions.list();
        if live.is_empty() {
            return Ok(0);
        }
        let mut closed = 0;
        for session in live {
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
                let event = self.stamp.event(
                    &actor,
                    EventKind::SessionClosed,
                    session.account.to_string(),
                    Outcome::Ok,
                    format!("closed by the hub: {reason}"),
                );
                tracing::info!(account = %session.account, reason = %reason, "closing session");
                // Accounted first, so the event exists by the time the client sees the close.
                self.record(vec![event], Durability::Relaxed).await?;
                if self.auth.sessions.close(session.id, &reason) {
                    closed += 1;
                }
                // A token login has no connection to close: its tokens go instead.
                self.end_token_session_of(session.id).await?;
            }
        }
        Ok(closed)
    }

    /// Closes one live session (any protocol) by its registry id, as an administrator: the
    /// close is recorded as a `session.closed` event naming `actor`, the front end disconnects
    /// it, and a token login's tokens are deleted. NotFound when no such session is live.
    pub async fn kick_session(&self, actor: &Actor, id: u64) -> Result<()> {
        let Some(info) = self.live_sessions().into_iter().find(|s| s.id == id) else {
            return Err(CoreError::not_found(format!("no live session {id}")));
        };
        let event = self.stamp.event(
            actor,
            EventKind::SessionClosed,
            info.account.to_string(),
            Outcome::Ok,
            format!(
                "session {id} ({} from {}) closed by {}",
                info.protocol.as_str(),
                info.source.as_deref().unwrap_or("-"),
                actor.name
            ),
        );
        self.record(vec![event], Durability::Flush).await?;
        self.auth.sessions.close(id, "closed by an administrator");
        self.end_token_session_of(id).await
    }
}
