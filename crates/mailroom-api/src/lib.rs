//! The wire types shared by the HTTPS API, the web UI and the CLI's `--json`: account, event,
//! delivery, ban, session, group, route, and the audit chain's verdict.
//!
//! Domain types do not derive `Serialize`: each object that leaves the process is
//! built here from its core type with `From<&core type>`, once, so `GET
//! /api/v1/admin/accounts/alice` and `mailroom --json account show alice` print the same
//! object, and the API's OpenAPI document (utoipa's `ToSchema`) describes what the CLI prints
//! too. Only what one front end alone writes stays with it: token and upload bodies in
//! `mailroom_https::wire`, `status`, `init`, `ca` and `audit abuse` in the CLI's `output.rs`.
//!
//! # One shape per object, and why
//!
//! Before this crate the API and the CLI wrote the same objects differently. Each choice below
//! takes the shape a program reads most easily and that cannot be misread:
//!
//! - **Booleans are named for the question.** `has_password` (not `password_set`), `disabled`,
//!   `active`, `intact`: a property, not an action.
//! - **Factor sets are lists.** `require: ["password", "totp"]`, every factor a login must
//!   present; `[]` is the default (a password or a key, either one). A list needs no splitting
//!   and no special word (the old `"any"`), and is what the core's `FactorSet` is.
//! - **Rights are one object of four booleans.** `rights: {"send": true, "receive": true,
//!   "delete": false, "recall": false}`: every right is always present, so a missing right is
//!   never mistaken for a denied one, `.rights.send` is a plain lookup, and the schema names
//!   each right. (A comma-separated string needs parsing; a list hides the denied rights.)
//! - **Access fields sit on the account; limits are one object.** `require`, `networks`,
//!   `certificate_subject` and `rights` are top-level fields of an account; `limits` holds the
//!   sizes, quotas, retention, sessions and file-name globs, the same object the API's
//!   `PATCH /api/v1/admin/accounts/{name}` takes as `limits`, so what is read can be sent back.
//!   Limit fields have one name everywhere: `max_file_size`, `quota_bytes`, `quota_files`,
//!   `retention_days`, `max_sessions`, `allow_names`, `deny_names`.
//! - **Keys are objects.** `{"algorithm", "fingerprint", "comment", "line"}`: the fingerprint to
//!   compare with `ssh-keygen -lf`, and the `authorized_keys` line the API's key removal takes.
//! - **End-to-end keys are objects.** `{"recipient", "fingerprint", "comment", "added"}`: the
//!   `age1…` recipient an agent encrypts to, and its 16-hex-digit fingerprint to compare and
//!   to remove it by. An account's are its `e2e_keys`; a sender asking for a recipient's gets
//!   `[{"account", "keys"}]`, one entry per account its file would reach.
//! - **TOTP is an object.** `totp: {"enrolled": bool, "recovery_codes_left": n}`, never the
//!   secret.
//! - **Times are RFC 3339 strings in UTC** (`2030-01-31T12:00:00Z`, fractions of a second when
//!   the store kept them), from [`rfc3339`], marked `format: date-time` in the schema.
//! - **Nothing is left out: a field with no value is `null`.** Every field of an answer is always
//!   written, so a script tells "none" from "not asked" without knowing which fields may go
//!   missing, and the schema marks them required (but in `limits`, which the account change
//!   also takes with fields left out). Empty lists are `[]`, not `null`.
//! - **Names and states are plain strings** (`kind`, `state`, `effect`, `protocol`,
//!   `outcome`), the labels the CLI's options and the API's filters take.
//! - **One's own account reads as an administrator's view of it.** Quota use is `{"inbox_bytes",
//!   "inbox_files", "limits"}` with the account's `limits` object; one's own sessions are the
//!   admin list's session objects with `current: true` on the asking one.
//! - **API keys never show their secret**, but once, when made (`NewApiKeyView`: the key and
//!   `secret`); listed, a key is `{"id", "account", "label", "scopes", "created", "expires",
//!   "last_used"}`, its scopes a list of labels as factor sets are.
//! - **The audit verdict is structured.** `head` is an object with the `checkpoint` string to
//!   note down, `broken` names the first bad event with a stable `problem` code and a sentence,
//!   and `checkpoints` lists every expected checkpoint with its status.
#![warn(unreachable_pub)]

mod account;
mod api_key;
mod audit;
mod delivery;
mod e2e;
mod jobs;
mod me;
mod policy;
mod security;

pub use account::{AccountView, KeyView, LimitsView, NoticesView, RightsView, TotpView};
pub use api_key::{ApiKeyView, NewApiKeyView};
pub use audit::{BrokenView, CheckpointView, EventView, HeadView, VerifyView, checkpoint_status};
pub use delivery::DeliveryView;
pub use e2e::{E2eKeyView, RecipientKeysView};
pub use jobs::{JobDetailView, JobView};
pub use me::{OwnSessionView, UsageView};
pub use policy::{GroupView, RouteView};
pub use security::{BanView, SessionView};

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A time as every answer writes it: RFC 3339 in UTC (`2030-01-31T12:00:00Z`).
pub fn rfc3339(time: OffsetDateTime) -> String {
    // Formatting fails only for years outside 0..=9999, which no clock gives.
    time.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
