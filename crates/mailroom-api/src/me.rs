//! A client's own account on the wire, as the account itself reads it through the API and
//! the web UI: its quota use against its limits, and its live sessions with the asking one
//! marked. Changes of one's own account take request bodies that only the API reads; they
//! stay in `mailroom_https::wire`.

use mailroom_core::{OwnSession, OwnUsage};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{LimitsView, SessionView};

/// A client's quota use against its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsageView {
    /// Bytes of the files waiting in its inbox (what `quota_bytes` counts).
    pub inbox_bytes: u64,
    /// Files waiting in its inbox (what `quota_files` counts).
    pub inbox_files: u64,
    /// Its limits; null fields are no limit.
    pub limits: LimitsView,
}

impl From<&OwnUsage> for UsageView {
    fn from(usage: &OwnUsage) -> UsageView {
        UsageView {
            inbox_bytes: usage.inbox.bytes,
            inbox_files: usage.inbox.files,
            limits: LimitsView::from(&usage.limits),
        }
    }
}

/// One of a client's own live sessions: the fields of an administrator's [`SessionView`],
/// and whether it is the session asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OwnSessionView {
    /// Its id, `NODE:NUMBER` (a session of a process that is no node: `NUMBER`).
    pub id: String,
    /// The id of the node that holds it; null for a process that is no node.
    #[schema(required = true)]
    pub node: Option<String>,
    /// The account (always the caller's).
    pub account: String,
    /// The peer address; null when not known.
    #[schema(required = true)]
    pub source: Option<String>,
    /// sftp, scp, ssh, ftps or https.
    pub protocol: String,
    /// When it logged in (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub started: String,
    /// Whether it is the session asking.
    pub current: bool,
}

impl From<&OwnSession> for OwnSessionView {
    fn from(own: &OwnSession) -> OwnSessionView {
        let SessionView {
            id,
            node,
            account,
            source,
            protocol,
            started,
        } = SessionView::from(&own.info);
        OwnSessionView {
            id,
            node,
            account,
            source,
            protocol,
            started,
            current: own.current,
        }
    }
}
