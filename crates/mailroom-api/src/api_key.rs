//! API keys on the wire: what may be shown of a key ([`ApiKeyView`], never its secret or its
//! hash), and a new key with its secret, shown once ([`NewApiKeyView`]).

use mailroom_core::{ApiKeyInfo, Secret};
use serde::Serialize;
use utoipa::ToSchema;

use crate::rfc3339;

/// An API key of a client account, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// The key's id (32 hex digits; the secret carries it, so a key in use can be told).
    pub id: String,
    /// The client account it acts for.
    pub account: String,
    /// What its owner called it.
    pub label: String,
    /// What it may do: `send` (uploads, the sent list, recalls), `receive` (the inbox,
    /// downloads, acknowledgements), or both.
    pub scopes: Vec<String>,
    /// When it was made (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created: String,
    /// When it stops working (RFC 3339, UTC); `null`: never.
    #[schema(format = DateTime, required = true)]
    pub expires: Option<String>,
    /// When it was last used, to the minute (RFC 3339, UTC); `null`: never.
    #[schema(format = DateTime, required = true)]
    pub last_used: Option<String>,
}

impl From<&ApiKeyInfo> for ApiKeyView {
    fn from(key: &ApiKeyInfo) -> ApiKeyView {
        ApiKeyView {
            id: key.id.clone(),
            account: key.account.to_string(),
            label: key.label.clone(),
            scopes: key.scopes.labels().into_iter().map(str::to_owned).collect(),
            created: rfc3339(key.created),
            expires: key.expires.map(rfc3339),
            last_used: key.last_used.map(rfc3339),
        }
    }
}

/// A key just made, with its secret: shown this once, never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NewApiKeyView {
    /// The key.
    pub key: ApiKeyView,
    /// The secret to present as `Authorization: Bearer mrk_…`. Keep it: it is not shown again
    /// (only its SHA-256 is stored).
    pub secret: String,
}

impl NewApiKeyView {
    /// The view of a key just made, with its secret.
    pub fn new(key: &ApiKeyInfo, secret: &Secret<String>) -> NewApiKeyView {
        NewApiKeyView {
            key: ApiKeyView::from(key),
            secret: secret.expose().clone(),
        }
    }
}
