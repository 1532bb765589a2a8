//! One delivery on the wire: an inbox entry of its recipient, a receipt of its sender.

use mailroom_core::Delivery;
use serde::Serialize;
use utoipa::ToSchema;

use crate::rfc3339;

/// One delivery: an inbox entry or a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Its id.
    pub id: String,
    /// Who sent it.
    pub sender: String,
    /// Whose inbox it is in.
    pub recipient: String,
    /// The account or group it was addressed to.
    pub target: String,
    /// The file name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
    /// stored, checking, delivered, picked-up, acknowledged, recalled, expired or quarantined.
    pub state: String,
    /// When it was stored (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created: String,
    /// When its state last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub updated: String,
    /// The content is end-to-end encrypted: age ciphertext for the recipient's keys, which
    /// the hub cannot read (and did not scan); decrypt it with the recipient's identity.
    pub e2e: bool,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> DeliveryView {
        DeliveryView {
            id: d.id.to_string(),
            sender: d.sender.to_string(),
            recipient: d.recipient.to_string(),
            target: d.target.to_string(),
            name: d.name.to_string(),
            size: d.size,
            sha256: d.sha256.clone(),
            state: d.state.as_str().to_owned(),
            created: rfc3339(d.created),
            updated: rfc3339(d.updated),
            e2e: d.e2e,
        }
    }
}
