//! An account as an administrator sees it: name, kind, state, access policy, limits, keys
//! (SSH and end-to-end) and TOTP enrolment, never a secret (no password hash, no TOTP secret,
//! no recovery code).

use mailroom_core::{Account, AuthorizedKey, Limits, Notices, Rights, TotpEnrolment};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{E2eKeyView, rfc3339};

/// An account as an administrator sees it (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AccountView {
    /// Its name.
    pub name: String,
    /// "client" or "admin".
    pub kind: String,
    /// Whether it is disabled (a disabled account cannot log in).
    pub disabled: bool,
    /// Whether it has a password (the hash is never shown).
    pub has_password: bool,
    /// When it was created (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created: String,
    /// The factors a login must present, all of them: publickey, password, totp, certificate.
    /// Empty: the default, a password or a key (either one).
    pub require: Vec<String>,
    /// Source networks it may log in from, in CIDR form; empty: any.
    pub networks: Vec<String>,
    /// The subject its client certificate must name; null: its own name.
    #[schema(required = true)]
    pub certificate_subject: Option<String>,
    /// What it may do.
    pub rights: RightsView,
    /// Its limits.
    pub limits: LimitsView,
    /// Its SSH public keys.
    pub keys: Vec<KeyView>,
    /// Its end-to-end encryption keys (age recipients), in the order added.
    pub e2e_keys: Vec<E2eKeyView>,
    /// Its TOTP enrolment.
    pub totp: TotpView,
    /// How it hears of files by e-mail.
    pub notices: NoticesView,
}

impl From<&Account> for AccountView {
    fn from(account: &Account) -> AccountView {
        let access = &account.access;
        AccountView {
            name: account.name.to_string(),
            kind: account.kind.as_str().to_owned(),
            disabled: account.disabled,
            has_password: account.password_hash.is_some(),
            created: rfc3339(account.created),
            require: access
                .factors
                .labels()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            networks: access.networks.iter().map(ToString::to_string).collect(),
            certificate_subject: access.certificate_subject.clone(),
            rights: RightsView::from(&access.rights),
            limits: LimitsView::from(&access.limits),
            keys: account.keys.iter().map(KeyView::from).collect(),
            e2e_keys: account.e2e_keys.iter().map(E2eKeyView::from).collect(),
            totp: TotpView::from(account.totp.as_ref()),
            notices: NoticesView::from(&access.notices),
        }
    }
}

/// What an account may do in the tree, each right always present: in an account, and as the
/// rights an account change sets (all four given, so none is granted by leaving it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RightsView {
    /// May send (write to `/outbox`).
    pub send: bool,
    /// May be sent files.
    pub receive: bool,
    /// May delete (acknowledge) files in its inbox.
    pub delete: bool,
    /// May recall files it sent.
    pub recall: bool,
}

impl From<RightsView> for Rights {
    fn from(view: RightsView) -> Rights {
        Rights {
            send: view.send,
            receive: view.receive,
            delete: view.delete,
            recall: view.recall,
        }
    }
}

impl From<&Rights> for RightsView {
    fn from(rights: &Rights) -> RightsView {
        RightsView {
            send: rights.send,
            receive: rights.receive,
            delete: rights.delete,
            recall: rights.recall,
        }
    }
}

/// An account's limits; null means none of that kind. Also the `limits` of the API's account
/// change, where the object given replaces the current limits (a field left out: none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsView {
    /// Largest file it may send, in bytes.
    #[serde(default)]
    pub max_file_size: Option<u64>,
    /// Bytes its inbox may hold.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// Files its inbox may hold.
    #[serde(default)]
    pub quota_files: Option<u64>,
    /// Days deliveries to it are kept.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Sessions it may have open at once.
    #[serde(default)]
    pub max_sessions: Option<u32>,
    /// File-name globs it may send (`*`, `?`, case-insensitive); empty: any.
    #[serde(default)]
    pub allow_names: Vec<String>,
    /// File-name globs it may not send; deny wins over allow.
    #[serde(default)]
    pub deny_names: Vec<String>,
}

impl From<&Limits> for LimitsView {
    fn from(limits: &Limits) -> LimitsView {
        LimitsView {
            max_file_size: limits.max_file_size,
            quota_bytes: limits.quota_bytes,
            quota_files: limits.quota_files,
            retention_days: limits.retention_days,
            max_sessions: limits.max_sessions,
            allow_names: limits.name_allow.clone(),
            deny_names: limits.name_deny.clone(),
        }
    }
}

/// How an account hears of files by e-mail. Also the `notices` of the API's account change,
/// where the object given replaces the current settings (a field left out: none, off).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticesView {
    /// Where its notices go; null: nowhere (then notify is "off" and receipts false).
    #[serde(default)]
    pub email: Option<String>,
    /// When it is told of new files: "instant", "digest" or "off".
    #[serde(default = "off")]
    pub notify: String,
    /// Whether it is told when a file it sent is picked up or acknowledged.
    #[serde(default)]
    pub receipts: bool,
}

fn off() -> String {
    "off".to_owned()
}

impl From<&Notices> for NoticesView {
    fn from(notices: &Notices) -> NoticesView {
        NoticesView {
            email: notices.email.clone(),
            notify: notices.mode.as_str().to_owned(),
            receipts: notices.receipts,
        }
    }
}

/// One SSH public key of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct KeyView {
    /// The key type, e.g. "ssh-ed25519".
    pub algorithm: String,
    /// The OpenSSH SHA-256 fingerprint, "SHA256:…" (as `ssh-keygen -lf` prints it).
    pub fingerprint: String,
    /// The key's comment, possibly empty.
    pub comment: String,
    /// The key as one `authorized_keys` line (what removing a key takes).
    pub line: String,
}

impl From<&AuthorizedKey> for KeyView {
    fn from(key: &AuthorizedKey) -> KeyView {
        KeyView {
            algorithm: key.algorithm.clone(),
            fingerprint: key.fingerprint(),
            comment: key.comment.clone(),
            line: key.to_line(),
        }
    }
}

/// Whether an account is enrolled in TOTP, and how many recovery codes it has left; never the
/// secret or a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct TotpView {
    /// Whether it is enrolled.
    pub enrolled: bool,
    /// Unused recovery codes (0 when not enrolled).
    pub recovery_codes_left: u64,
}

impl From<Option<&TotpEnrolment>> for TotpView {
    fn from(totp: Option<&TotpEnrolment>) -> TotpView {
        TotpView {
            enrolled: totp.is_some(),
            recovery_codes_left: totp.map_or(0, |t| t.recovery.len() as u64),
        }
    }
}
