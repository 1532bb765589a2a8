//! Defence and presence on the wire: bans (of an address, or locks of an account) and live
//! sessions.

use mailroom_core::{Ban, SessionInfo};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::rfc3339;

/// A ban, in force or ended (ended bans are kept so the next one lasts longer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BanView {
    /// An IP address, or `account:NAME` for a locked account.
    pub subject: String,
    /// Whether it is in force now.
    pub active: bool,
    /// When it ends (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub until: String,
    /// How many times this subject has been banned (1 for the first ban).
    pub level: u32,
    /// Why, for the operator.
    pub reason: String,
    /// When it was placed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created: String,
}

impl BanView {
    /// The view of `ban` at `now` (whether it is in force depends on the time).
    pub fn new(ban: &Ban, now: OffsetDateTime) -> BanView {
        BanView {
            subject: ban.subject.key(),
            active: ban.active(now),
            until: rfc3339(ban.until),
            level: ban.level,
            reason: ban.reason.clone(),
            created: rfc3339(ban.created),
        }
    }
}

impl From<(&Ban, OffsetDateTime)> for BanView {
    /// [`BanView::new`]: a ban and the time to judge it at.
    fn from((ban, now): (&Ban, OffsetDateTime)) -> BanView {
        BanView::new(ban, now)
    }
}

/// A live session of any node of the hub, any protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SessionView {
    /// Its id, `NODE:NUMBER` (the number is unique on its node only); the API closes it with
    /// `DELETE /api/v1/admin/sessions/{id}`. A session of a process that is no node (a test
    /// hub) is `NUMBER` alone.
    pub id: String,
    /// The id of the node (`mailroom serve` process) that holds it; null for a process that
    /// is no node.
    #[schema(required = true)]
    pub node: Option<String>,
    /// The logged-in account.
    pub account: String,
    /// The peer address; null when not known.
    #[schema(required = true)]
    pub source: Option<String>,
    /// sftp, scp, ssh, ftps or https.
    pub protocol: String,
    /// When it logged in (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub started: String,
}

impl From<&SessionInfo> for SessionView {
    fn from(session: &SessionInfo) -> SessionView {
        SessionView {
            id: session.reference().to_string(),
            node: session.node.map(|node| node.to_string()),
            account: session.account.to_string(),
            source: session.source.clone(),
            protocol: session.protocol.as_str().to_owned(),
            started: rfc3339(session.started),
        }
    }
}
