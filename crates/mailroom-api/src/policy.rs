//! Who may send to whom: groups and route rules on the wire.

use mailroom_core::{Group, Route};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A group: sending to it fans out to each member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// Its member accounts, sorted.
    pub members: Vec<String>,
}

impl From<&Group> for GroupView {
    fn from(group: &Group) -> GroupView {
        GroupView {
            name: group.name.to_string(),
            members: group.members.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A route rule; also the body of the API's `POST /api/v1/admin/routes`, which sets one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteView {
    /// Sending account or group.
    pub from: String,
    /// Receiving account or group.
    pub to: String,
    /// "allow" or "deny".
    pub effect: String,
    /// An allow rule that admits only end-to-end encrypted uploads.
    #[serde(default)]
    pub require_e2e: bool,
}

impl From<&Route> for RouteView {
    fn from(route: &Route) -> RouteView {
        RouteView {
            from: route.from.to_string(),
            to: route.to.to_string(),
            effect: route.effect.as_str().to_owned(),
            require_e2e: route.require_e2e,
        }
    }
}
