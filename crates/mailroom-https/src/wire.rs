//! The JSON bodies of the API: requests and answers, with their OpenAPI schemas. Domain types
//! never cross the wire themselves (STYLE.md): each answer is built here from them, and times
//! are RFC 3339 strings in UTC.

use mailroom_core::{
    Account, Ban, ChainReport, Delivery, Event, Group, IssuedTokens, ResumableInfo, Route,
    SessionInfo,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// A time as the API writes it.
pub fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

/// `POST /api/v1/token`: a login. Give the password, and the TOTP code when the account
/// requires one; a client certificate presented in the TLS handshake proves the
/// `certificate` factor (it may then be the only one).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The account name.
    pub username: String,
    /// The account's password.
    #[serde(default)]
    pub password: Option<String>,
    /// A 6-digit TOTP code or a recovery code.
    #[serde(default)]
    pub totp: Option<String>,
    /// "client" (the default) or "admin".
    #[serde(default)]
    pub scope: Option<ScopeName>,
}

/// The kind of account a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScopeName {
    /// A client account: mailbox endpoints.
    Client,
    /// An admin account: admin endpoints.
    Admin,
}

impl From<ScopeName> for mailroom_core::Scope {
    fn from(scope: ScopeName) -> mailroom_core::Scope {
        match scope {
            ScopeName::Client => mailroom_core::Scope::Client,
            ScopeName::Admin => mailroom_core::Scope::Admin,
        }
    }
}

/// `POST /api/v1/token/refresh`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token of the last answer; it works once.
    pub refresh_token: String,
}

/// A token pair.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Send it as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always "Bearer".
    pub token_type: String,
    /// Seconds the access token works.
    pub expires_in: i64,
    /// Trade it at `POST /api/v1/token/refresh` for a new pair.
    pub refresh_token: String,
    /// Seconds the refresh token works.
    pub refresh_expires_in: i64,
    /// "client" or "admin".
    pub scope: String,
    /// The account logged in.
    pub account: String,
    /// The login's id (also in the admin session list).
    pub session: String,
}

impl TokenResponse {
    /// The answer for freshly issued tokens at `now`.
    pub fn new(issued: IssuedTokens, now: OffsetDateTime) -> TokenResponse {
        TokenResponse {
            access_token: issued.access.expose().clone(),
            token_type: "Bearer".to_owned(),
            expires_in: seconds(issued.access_expires - now),
            refresh_token: issued.refresh.expose().clone(),
            refresh_expires_in: seconds(issued.refresh_expires - now),
            scope: issued.scope.as_str().to_owned(),
            account: issued.account.to_string(),
            session: issued.session,
        }
    }
}

/// A duration in whole seconds, rounded (a token issued a moment ago still has its full
/// lifetime), never negative.
fn seconds(duration: time::Duration) -> i64 {
    (duration.as_seconds_f64().round() as i64).max(0)
}

/// One delivery: an inbox entry or a receipt.
#[derive(Debug, Clone, Serialize, ToSchema)]
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
    /// delivered, picked-up, acknowledged, recalled, expired, …
    pub state: String,
    /// When it was stored.
    pub created: String,
    /// When its state last changed.
    pub updated: String,
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
        }
    }
}

/// `POST /api/v1/uploads`: begins a resumable upload.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    /// Accounts or groups to send to.
    #[schema(min_items = 1, max_items = 64)]
    pub recipients: Vec<String>,
    /// The file name.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The file's SHA-256 (64 hex digits), if known now; it must match at the end.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: Option<String>,
}

/// A resumable upload.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UploadView {
    /// Its id.
    pub id: String,
    /// The file name.
    pub name: String,
    /// The accounts and groups it is addressed to.
    pub recipients: Vec<String>,
    /// The accounts that will receive it.
    pub delivered_to: Vec<String>,
    /// The size announced.
    pub size: u64,
    /// Bytes received: send the next at this offset.
    pub offset: u64,
    /// When it is aborted unless finished.
    pub expires: String,
}

impl From<&ResumableInfo> for UploadView {
    fn from(info: &ResumableInfo) -> UploadView {
        UploadView {
            id: info.id.clone(),
            name: info.name.to_string(),
            recipients: info.targets.iter().map(ToString::to_string).collect(),
            delivered_to: info.recipients.iter().map(ToString::to_string).collect(),
            size: info.size,
            offset: info.offset,
            expires: rfc3339(info.expires),
        }
    }
}

/// `POST /api/v1/uploads/{id}/finish`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishUpload {
    /// The SHA-256 of the whole file, 64 hex digits.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: String,
}

/// The deliveries a finished upload made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivered {
    /// One per recipient.
    pub deliveries: Vec<DeliveryView>,
}

/// An account as an administrator sees it (never a secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    /// Its name.
    pub name: String,
    /// "client" or "admin".
    pub kind: String,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Whether it has a password.
    pub has_password: bool,
    /// When it was created.
    pub created: String,
    /// Required factors, e.g. "password,totp", or "any" (a password or a key).
    pub require: String,
    /// Source networks it may log in from; empty: any.
    pub networks: Vec<String>,
    /// The subject its client certificate must name, when not its name.
    pub certificate_subject: Option<String>,
    /// Rights, e.g. "send,receive,delete,recall".
    pub rights: String,
    /// Limits.
    pub limits: LimitsView,
    /// SSH keys as `authorized_keys` lines.
    pub keys: Vec<String>,
    /// Whether it is enrolled in TOTP.
    pub totp_enrolled: bool,
}

/// An account's limits; absent means none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsView {
    /// Largest file it may send, bytes.
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
    /// Sessions open at once.
    #[serde(default)]
    pub max_sessions: Option<u32>,
    /// File-name globs it may send; empty: any.
    #[serde(default)]
    pub allow_names: Vec<String>,
    /// File-name globs it may not send.
    #[serde(default)]
    pub deny_names: Vec<String>,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> AccountView {
        let l = &a.access.limits;
        AccountView {
            name: a.name.to_string(),
            kind: a.kind.as_str().to_owned(),
            disabled: a.disabled,
            has_password: a.password_hash.is_some(),
            created: rfc3339(a.created),
            require: if a.access.factors.is_default() {
                "any".to_owned()
            } else {
                a.access.factors.labels().join(",")
            },
            networks: a.access.networks.iter().map(ToString::to_string).collect(),
            certificate_subject: a.access.certificate_subject.clone(),
            rights: a.access.rights.to_string(),
            limits: LimitsView {
                max_file_size: l.max_file_size,
                quota_bytes: l.quota_bytes,
                quota_files: l.quota_files,
                retention_days: l.retention_days,
                max_sessions: l.max_sessions,
                allow_names: l.name_allow.clone(),
                deny_names: l.name_deny.clone(),
            },
            keys: a.keys.iter().map(|k| k.to_line()).collect(),
            totp_enrolled: a.totp.is_some(),
        }
    }
}

/// `POST /api/v1/admin/accounts`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Its name.
    pub name: String,
    /// "client" (default) or "admin".
    #[serde(default)]
    pub kind: Option<String>,
    /// Its password (must pass the strength rules).
    #[serde(default)]
    pub password: Option<String>,
    /// SSH public keys, `authorized_keys` lines.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// `PATCH /api/v1/admin/accounts/{name}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    /// Disable (true) or enable (false); disabling revokes its tokens and closes its sessions.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// A new password; its tokens are revoked.
    #[serde(default)]
    pub password: Option<String>,
    /// Required factors, e.g. "password,totp", or "any".
    #[serde(default)]
    pub require: Option<String>,
    /// Source networks, e.g. ["10.0.0.0/8"]; empty: any.
    #[serde(default)]
    pub networks: Option<Vec<String>>,
    /// Rights, e.g. "send,receive", "all" or "none".
    #[serde(default)]
    pub rights: Option<String>,
    /// The subject a client certificate must name; "" for the account name.
    #[serde(default)]
    pub certificate_subject: Option<String>,
    /// Limits, replacing the current ones when given.
    #[serde(default, deserialize_with = "object")]
    #[schema(value_type = Option<LimitsView>)]
    pub limits: Option<LimitsView>,
}

/// An optional JSON object as `T`: serde would also take an array for a struct, which the
/// schema does not allow.
fn object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match Option::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)? {
        None => Ok(None),
        Some(map) => serde_json::from_value(serde_json::Value::Object(map))
            .map(Some)
            .map_err(D::Error::custom),
    }
}

/// `POST /api/v1/admin/accounts/{name}/keys`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// One `authorized_keys` line.
    pub key: String,
}

/// A group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// Its members.
    pub members: Vec<String>,
}

impl From<&Group> for GroupView {
    fn from(g: &Group) -> GroupView {
        GroupView {
            name: g.name.to_string(),
            members: g.members.iter().map(ToString::to_string).collect(),
        }
    }
}

/// `POST /api/v1/admin/groups`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Its name.
    pub name: String,
    /// Initial members.
    #[serde(default)]
    pub members: Vec<String>,
}

/// `POST /api/v1/admin/groups/{name}/members`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    /// The client account to add.
    pub member: String,
}

/// A route rule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteView {
    /// Sending account or group.
    pub from: String,
    /// Receiving account or group.
    pub to: String,
    /// "allow" or "deny".
    pub effect: String,
}

impl From<&Route> for RouteView {
    fn from(r: &Route) -> RouteView {
        RouteView {
            from: r.from.to_string(),
            to: r.to.to_string(),
            effect: r.effect.as_str().to_owned(),
        }
    }
}

/// A ban.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BanView {
    /// An IP address, or `account:NAME`.
    pub subject: String,
    /// When it ends.
    pub until: String,
    /// Whether it is in force now.
    pub active: bool,
    /// How many bans this subject has had.
    pub level: u32,
    /// Why.
    pub reason: String,
}

impl BanView {
    /// The view of `ban` at `now`.
    pub fn new(ban: &Ban, now: OffsetDateTime) -> BanView {
        BanView {
            subject: ban.subject.key(),
            until: rfc3339(ban.until),
            active: ban.active(now),
            level: ban.level,
            reason: ban.reason.clone(),
        }
    }
}

/// `POST /api/v1/admin/bans`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBan {
    /// An IP address, or `account:NAME`.
    pub subject: String,
    /// Minutes it lasts (default 60).
    #[serde(default)]
    pub minutes: Option<u32>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A live session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionView {
    /// Its id (kick it with `DELETE /api/v1/admin/sessions/{id}`).
    pub id: u64,
    /// The account.
    pub account: String,
    /// The peer address.
    pub source: Option<String>,
    /// sftp, scp, ssh, ftps or https.
    pub protocol: String,
    /// When it logged in.
    pub started: String,
}

impl From<&SessionInfo> for SessionView {
    fn from(s: &SessionInfo) -> SessionView {
        SessionView {
            id: s.id,
            account: s.account.to_string(),
            source: s.source.clone(),
            protocol: s.protocol.as_str().to_owned(),
            started: rfc3339(s.started),
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Its id.
    pub id: String,
    /// When.
    pub time: String,
    /// login, upload, download, delivery.*, ban, session.closed, admin, sweep.
    pub kind: String,
    /// Who.
    pub actor: String,
    /// From where.
    pub source: Option<String>,
    /// Over what.
    pub protocol: String,
    /// On what.
    pub object: String,
    /// ok, refused or failed.
    pub outcome: String,
    /// Details for the operator.
    pub detail: String,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> EventView {
        EventView {
            id: e.id.to_string(),
            time: rfc3339(e.time),
            kind: e.kind.as_str().to_owned(),
            actor: e.actor.clone(),
            source: e.source.clone(),
            protocol: e.protocol.as_str().to_owned(),
            object: e.object.clone(),
            outcome: e.outcome.as_str().to_owned(),
            detail: e.detail.clone(),
        }
    }
}

/// `GET /api/v1/admin/audit/verify`: what a walk of the hash chain found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerifyView {
    /// Whether the chain is intact (and passes the expected checkpoint, if one was given).
    pub intact: bool,
    /// Chained events checked.
    pub checked: u64,
    /// Events from before the chain existed.
    pub legacy: u64,
    /// The newest intact event, `SEQ:HASH`.
    pub head: Option<String>,
    /// The first bad event's seq, if any.
    pub broken_seq: Option<u64>,
    /// What is wrong with it.
    pub problem: Option<String>,
    /// What became of the expected checkpoint: found, missing, mismatch, unchecked.
    pub checkpoint: Option<String>,
}

impl From<&ChainReport> for VerifyView {
    fn from(r: &ChainReport) -> VerifyView {
        VerifyView {
            intact: r.is_intact(),
            checked: r.checked,
            legacy: r.legacy,
            head: r.head.as_ref().map(|h| format!("{}:{}", h.seq, h.hash)),
            broken_seq: r.broken.as_ref().map(|b| b.seq),
            problem: r.broken.as_ref().map(|b| b.problem.describe().to_owned()),
            checkpoint: r
                .checkpoint
                .as_ref()
                .map(|(_, status)| format!("{status:?}").to_ascii_lowercase()),
        }
    }
}
