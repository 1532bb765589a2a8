//! The JSON bodies only the API takes or writes (token logins, resumable uploads, admin
//! requests), with their OpenAPI schemas. The objects the web UI and the CLI's `--json` show
//! too (accounts, deliveries, groups, routes, bans, sessions, events, the chain's verdict) are
//! [`mailroom_api`]'s, re-exported here: one shape per object wherever it is written. Domain
//! types never cross the wire themselves, and times are RFC 3339 strings in UTC.

use mailroom_core::{Content, IssuedTokens, ResumableInfo};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

pub use mailroom_api::{
    AccountView, BanView, BrokenView, CheckpointView, DeliveryView, EventView, GroupView, HeadView,
    JobDetailView, JobView, KeyView, LimitsView, NoticesView, RightsView, RouteView, SessionView,
    TotpView, VerifyView, rfc3339,
};
pub use mailroom_api::{ApiKeyView, NewApiKeyView};
pub use mailroom_api::{E2eKeyView, RecipientKeysView};
pub use mailroom_api::{OwnSessionView, UsageView};

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
    /// The methods this session wants, per category in order of preference (see `GET
    /// /api/v1/ace`); the hub agrees on one each or answers 400 naming both lists. Absent: no
    /// negotiation, the HTTPS link's defaults.
    #[serde(default)]
    pub ace: Option<mailroom_ace::Wanted>,
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
    /// The methods the login agreed on, when it negotiated (`null` otherwise); they hold
    /// for every request made with these tokens.
    pub ace: Option<mailroom_ace::Agreed>,
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
            ace: issued.methods.and_then(|methods| methods.parse().ok()),
        }
    }
}

/// A duration in whole seconds, rounded (a token issued a moment ago still has its full
/// lifetime), never negative.
fn seconds(duration: time::Duration) -> i64 {
    (duration.as_seconds_f64().round() as i64).max(0)
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
    /// The bytes are age ciphertext for every recipient's end-to-end keys (the client agent's
    /// `--e2e`): each recipient must have a key, and the content must begin as an age file.
    #[serde(default)]
    pub e2e: bool,
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
    /// Whether it is end-to-end encrypted.
    pub e2e: bool,
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
            e2e: info.content == Content::EndToEnd,
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

/// `POST /api/v1/inbox/zip` and `POST /api/v1/inbox/acknowledge`: the deliveries of your
/// inbox to take or acknowledge together.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryIds {
    /// Delivery ids, 1 to 1000; an id named twice counts once.
    #[schema(min_items = 1, max_items = 1000)]
    pub ids: Vec<String>,
}

/// The answer to `POST /api/v1/inbox/acknowledge`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Acknowledged {
    /// How many deliveries were acknowledged (each id once).
    pub acknowledged: u64,
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
    /// Required factors, as an account lists them in `require`: e.g. ["password", "totp"];
    /// [] for the default (a password or a key, either one).
    #[serde(default)]
    pub require: Option<Vec<String>>,
    /// Source networks, e.g. ["10.0.0.0/8"]; empty: any.
    #[serde(default)]
    pub networks: Option<Vec<String>>,
    /// Rights, the same object an account shows: all four given.
    #[serde(default)]
    pub rights: Option<RightsView>,
    /// The subject a client certificate must name; "" for the account name.
    #[serde(default)]
    pub certificate_subject: Option<String>,
    /// Limits, replacing the current ones when given.
    #[serde(default, deserialize_with = "object")]
    #[schema(value_type = Option<LimitsView>)]
    pub limits: Option<LimitsView>,
    /// E-mail notices, replacing the current settings when given.
    #[serde(default, deserialize_with = "object")]
    #[schema(value_type = Option<NoticesView>)]
    pub notices: Option<NoticesView>,
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

/// `POST /api/v1/me/password`: a new password for the caller's own account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The account's current password.
    pub current_password: String,
    /// The new password (the strength rules apply).
    pub new_password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange { *** }")
    }
}

/// `POST /api/v1/me/totp`: enrols the caller's own account in TOTP anew.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpEnrolRequest {
    /// While enrolled: a current 6-digit code of the authenticator, or one of the recovery
    /// codes (spent). Not needed for a first enrolment.
    #[serde(default)]
    pub code: Option<String>,
}

impl std::fmt::Debug for TotpEnrolRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolRequest { *** }")
    }
}

/// A fresh TOTP enrolment, answered once: the secret and the recovery codes are never shown
/// again.
#[derive(Serialize, ToSchema)]
pub struct TotpSetupView {
    /// The `otpauth://` URI for authenticator apps (it holds the secret).
    pub uri: String,
    /// The secret in base32, for typing into an app.
    pub secret: String,
    /// Single-use recovery codes.
    pub recovery_codes: Vec<String>,
}

impl std::fmt::Debug for TotpSetupView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSetupView { *** }")
    }
}

/// `POST /api/v1/e2e-keys`: an end-to-end encryption key of the caller's account.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct E2eKeyRequest {
    /// An age X25519 recipient, "age1…" (what `age-keygen -y` prints).
    pub recipient: String,
    /// A comment (at most 200 characters, no control characters); empty when left out.
    #[serde(default)]
    pub comment: String,
}

/// `POST /api/v1/api-keys` and `POST /api/v1/admin/accounts/{name}/api-keys`: a new API key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// What to call it: 1 to 64 printable characters.
    pub label: String,
    /// What it may do: "send" (uploads, the sent list, recalls), "receive" (the inbox,
    /// downloads, acknowledgements), or both.
    pub scopes: Vec<String>,
    /// Days until it stops working (1 to 3650); absent or null: never.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
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
