//! End-to-end encryption keys on the wire: an account's age recipients, as the account itself,
//! an administrator (inside [`crate::AccountView`]) and the CLI's `--json` see them, and the
//! keys a sender's agent encrypts to, each list labelled by the account it belongs to.

use mailroom_core::{E2eKey, RecipientE2eKeys};
use serde::Serialize;
use utoipa::ToSchema;

use crate::rfc3339;

/// One end-to-end encryption key: an age X25519 recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct E2eKeyView {
    /// The age X25519 recipient, "age1…" (what `age -r` takes).
    pub recipient: String,
    /// 16 hex digits: the start of the SHA-256 of the recipient string (what removing a key
    /// may take instead of the recipient).
    pub fingerprint: String,
    /// The key's comment, possibly empty.
    pub comment: String,
    /// When it was added (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub added: String,
}

impl From<&E2eKey> for E2eKeyView {
    fn from(key: &E2eKey) -> E2eKeyView {
        E2eKeyView {
            recipient: key.recipient.clone(),
            fingerprint: key.fingerprint(),
            comment: key.comment.clone(),
            added: rfc3339(key.added),
        }
    }
}

/// The end-to-end keys of one account a sender's file would reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RecipientKeysView {
    /// The account: the recipient named, or a member of the group named.
    pub account: String,
    /// Its keys, in the order added; empty when it registered none.
    pub keys: Vec<E2eKeyView>,
}

impl From<&RecipientE2eKeys> for RecipientKeysView {
    fn from(recipient: &RecipientE2eKeys) -> RecipientKeysView {
        RecipientKeysView {
            account: recipient.account.to_string(),
            keys: recipient.keys.iter().map(E2eKeyView::from).collect(),
        }
    }
}
