//! The domain model: accounts, keys, groups, routes, deliveries and audit events.
//!
//! Plain data with no behaviour that needs I/O. Storage rows and wire formats live in other
//! crates; nothing here derives `Serialize` (CONTRIBUTING.md, "Dependency direction").

use std::fmt;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access::{AccessPolicy, TotpEnrolment};
use crate::error::{CoreError, Result};
use crate::names::{AccountName, FileName};

/// Whether an account is a client (owns a mailbox) or an administrator (owns none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// Sends and receives files; owns one mailbox.
    Client,
    /// Manages accounts and policy; owns no mailbox and can read none.
    Admin,
}

impl AccountKind {
    /// Stable label for storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Client => "client",
            AccountKind::Admin => "admin",
        }
    }

    /// Parses the label written by [`AccountKind::as_str`].
    pub fn parse(input: &str) -> Result<Self> {
        match input {
            "client" => Ok(AccountKind::Client),
            "admin" => Ok(AccountKind::Admin),
            other => Err(CoreError::invalid(format!(
                "unknown account kind {other:?}"
            ))),
        }
    }
}

/// A virtual user. Never an OS account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Unique across accounts and groups.
    pub name: AccountName,
    /// Client or admin.
    pub kind: AccountKind,
    /// A disabled account cannot log in.
    pub disabled: bool,
    /// Argon2id PHC string, or `None` when password login is off for this account.
    pub password_hash: Option<String>,
    /// SSH public keys that may log in as this account.
    pub keys: Vec<AuthorizedKey>,
    /// End-to-end encryption keys: the age recipients senders' agents encrypt files for this
    /// account to, in the order added.
    pub e2e_keys: Vec<E2eKey>,
    /// When the account was created.
    pub created: OffsetDateTime,
    /// Required factors, source networks, rights and limits.
    pub access: AccessPolicy,
    /// The TOTP enrolment, when the account has one.
    pub totp: Option<TotpEnrolment>,
    /// Generation of the account's bearer tokens: a token issued under an older generation
    /// is refused. [`crate::Hub::set_password`] and [`crate::Hub::set_disabled`] move it on,
    /// which revokes every token of the account in the same commit as the change.
    pub token_epoch: u64,
}

/// One SSH public key in OpenSSH `authorized_keys` form (`type base64 [comment]`).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// The key type, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// The key in SSH wire encoding (the decoded base64 field).
    pub blob: Vec<u8>,
    /// The free-text comment, possibly empty.
    pub comment: String,
}

/// Key types accepted in `authorized_keys` lines.
/// NIST-curve ECDSA keys are not accepted: the SSH front end offers no NIST-curve algorithms.
const KEY_TYPES: &[&str] = &["ssh-ed25519", "ssh-rsa"];

impl AuthorizedKey {
    /// Parses one `authorized_keys` line. Options before the key type are refused, because the
    /// hub has no shell and no forwarding for them to restrict.
    pub fn parse(line: &str) -> Result<Self> {
        let line = line.trim();
        let mut fields = line.split_whitespace();
        let (Some(algorithm), Some(encoded)) = (fields.next(), fields.next()) else {
            return Err(CoreError::invalid(
                "not an OpenSSH public key: expected \"<type> <base64> [comment]\"",
            ));
        };
        if !KEY_TYPES.contains(&algorithm) {
            return Err(CoreError::invalid(format!(
                "unsupported key type {:?} (authorized_keys options are not supported either)",
                algorithm.chars().take(40).collect::<String>()
            )));
        }
        let blob = base64_decode(encoded)
            .ok_or_else(|| CoreError::invalid("the key's base64 field is malformed"))?;
        // The blob starts with the key type as an SSH string; it must agree with the label.
        let inner = blob
            .get(..4)
            .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
            .and_then(|len| blob.get(4..4 + len));
        if inner != Some(algorithm.as_bytes()) || blob.len() < 4 + algorithm.len() + 8 {
            return Err(CoreError::invalid(
                "the key's data does not match its type: the key is malformed",
            ));
        }
        let comment = fields.collect::<Vec<_>>().join(" ");
        Ok(AuthorizedKey {
            algorithm: algorithm.to_owned(),
            blob,
            comment,
        })
    }

    /// The OpenSSH SHA-256 fingerprint, `SHA256:<base64 without padding>`.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.blob);
        format!("SHA256:{}", base64_encode(&digest).trim_end_matches('='))
    }

    /// The key as one `authorized_keys` line.
    pub fn to_line(&self) -> String {
        let mut line = format!("{} {}", self.algorithm, base64_encode(&self.blob));
        if !self.comment.is_empty() {
            line.push(' ');
            line.push_str(&self.comment);
        }
        line
    }
}

impl fmt::Debug for AuthorizedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AuthorizedKey({} {})",
            self.algorithm,
            self.fingerprint()
        )
    }
}

/// Most end-to-end encryption keys one account may hold.
pub const MAX_E2E_KEYS: usize = 16;

/// Longest comment of an end-to-end encryption key, in characters.
pub const MAX_E2E_COMMENT: usize = 200;

/// The length of a recipient's fingerprint ([`E2eKey::fingerprint`]), in hex digits.
pub const E2E_FINGERPRINT_LEN: usize = 16;

/// One end-to-end encryption key of an account: an age X25519 recipient (`age1…`) that a
/// sender's agent encrypts files to, so that the hub only ever stores ciphertext. The hub
/// holds the public half only; it never sees an identity (a private key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2eKey {
    /// The recipient in its canonical form: lower-case `age1` and 58 bech32 characters.
    pub recipient: String,
    /// The free-text comment, possibly empty: at most [`MAX_E2E_COMMENT`] characters, no
    /// control characters.
    pub comment: String,
    /// When it was added.
    pub added: OffsetDateTime,
}

impl E2eKey {
    /// A key of `recipient` (see [`E2eKey::parse_recipient`]) with `comment` (see
    /// [`E2eKey::check_comment`]), added at `added`. Refused (InvalidName) when either is.
    pub fn new(recipient: &str, comment: &str, added: OffsetDateTime) -> Result<E2eKey> {
        let recipient = E2eKey::parse_recipient(recipient)?;
        E2eKey::check_comment(comment)?;
        Ok(E2eKey {
            recipient,
            comment: comment.to_owned(),
            added,
        })
    }

    /// Checks an age X25519 recipient string by parsing it (surrounding white space is
    /// ignored) and returns its canonical form. Anything else (an SSH key, a plugin recipient,
    /// an identity `AGE-SECRET-KEY-1…`, a bad checksum) is refused, and the refusal does not
    /// echo the input: a pasted identity must not end up in a log.
    pub fn parse_recipient(input: &str) -> Result<String> {
        let input = input.trim();
        // A recipient is 62 characters; longer input is refused before parsing.
        if input.len() > 100 {
            return Err(not_a_recipient());
        }
        let recipient = input
            .parse::<age::x25519::Recipient>()
            .map_err(|_| not_a_recipient())?;
        Ok(recipient.to_string())
    }

    /// Checks a comment: at most [`MAX_E2E_COMMENT`] characters and no control characters.
    pub fn check_comment(comment: &str) -> Result<()> {
        if comment.chars().count() > MAX_E2E_COMMENT {
            return Err(CoreError::invalid(format!(
                "the comment is longer than {MAX_E2E_COMMENT} characters"
            )));
        }
        if comment.chars().any(char::is_control) {
            return Err(CoreError::invalid(
                "the comment holds a control character (a line break, a tab…)",
            ));
        }
        Ok(())
    }

    /// The fingerprint shown for this key: the first [`E2E_FINGERPRINT_LEN`] hex digits of
    /// the SHA-256 of its recipient string.
    pub fn fingerprint(&self) -> String {
        e2e_fingerprint(&self.recipient)
    }

    /// Whether `wanted` names this key: its recipient (in any case, white space around it
    /// ignored) or its fingerprint (in either case).
    pub fn is_named_by(&self, wanted: &str) -> bool {
        let wanted = wanted.trim();
        self.recipient.eq_ignore_ascii_case(wanted)
            || self.fingerprint().eq_ignore_ascii_case(wanted)
    }
}

/// The fingerprint of a canonical recipient string ([`E2eKey::fingerprint`]).
fn e2e_fingerprint(recipient: &str) -> String {
    let mut hex = hex::encode(Sha256::digest(recipient.as_bytes()));
    hex.truncate(E2E_FINGERPRINT_LEN);
    hex
}

/// InvalidName for input that is no age X25519 recipient.
fn not_a_recipient() -> CoreError {
    CoreError::invalid(
        "not an age X25519 recipient: expected \"age1\" followed by 58 characters (what `age-keygen -y` prints)",
    )
}

/// A named set of accounts; sending to a group fans out to each member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Unique across accounts and groups.
    pub name: AccountName,
    /// Member accounts, sorted.
    pub members: Vec<AccountName>,
}

/// Whether a route rule lets files through or stops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteEffect {
    /// Sending is allowed.
    Allow,
    /// Sending is refused, whatever allow rules say.
    Deny,
}

impl RouteEffect {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteEffect::Allow => "allow",
            RouteEffect::Deny => "deny",
        }
    }

    /// Parses the label written by [`RouteEffect::as_str`].
    pub fn parse(input: &str) -> Result<Self> {
        match input {
            "allow" => Ok(RouteEffect::Allow),
            "deny" => Ok(RouteEffect::Deny),
            other => Err(CoreError::invalid(format!(
                "unknown route effect {other:?}"
            ))),
        }
    }
}

/// One route rule: `from` (an account or a group) may or may not send to `to` (an account or a
/// group). Between clients everything not allowed is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The sending account or group.
    pub from: AccountName,
    /// The receiving account or group.
    pub to: AccountName,
    /// Allow or deny.
    pub effect: RouteEffect,
    /// An allow rule that admits only end-to-end encrypted uploads: plaintext sent along it
    /// (by any protocol) is refused.
    pub require_e2e: bool,
}

/// Identifies a delivery (UUID v7: sortable by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryId(Uuid);

impl DeliveryId {
    /// A fresh id.
    pub fn new() -> Self {
        DeliveryId(Uuid::now_v7())
    }

    /// Parses the hyphenated form.
    pub fn parse(input: &str) -> Result<Self> {
        Uuid::parse_str(input)
            .map(DeliveryId)
            .map_err(|_| CoreError::invalid("not a delivery id"))
    }

    /// The last 8 hex digits, from the random part of the id: a short handle that tells apart
    /// deliveries of the same name in receipts.
    pub fn short(&self) -> String {
        let simple = self.0.simple().to_string();
        simple[simple.len() - 8..].to_owned()
    }
}

impl Default for DeliveryId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// Identifies a stored blob. Made by the server (32 lower-case hex digits), never by a client,
/// so it is safe as a file name in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId(String);

impl BlobId {
    /// A fresh random id.
    pub fn new() -> Self {
        BlobId(Uuid::new_v4().simple().to_string())
    }

    /// Parses an id as written by [`BlobId::new`]; anything else is refused.
    pub fn parse(input: &str) -> Result<Self> {
        if input.len() == 32
            && input
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(BlobId(input.to_owned()))
        } else {
            Err(CoreError::invalid("not a blob id"))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for BlobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a delivery is in its lifecycle (docs/design.md, "Lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Durable, not yet visible to the recipient.
    Stored,
    /// Being checked by post-processing (e.g. a virus scan).
    Checking,
    /// Visible in the recipient's inbox.
    Delivered,
    /// Downloaded completely at least once.
    PickedUp,
    /// Deleted by the recipient. Terminal.
    Acknowledged,
    /// Withdrawn by the sender before pick-up. Terminal.
    Recalled,
    /// Removed by retention. Terminal.
    Expired,
    /// Failed a check (or could not be checked): hidden from the recipient, its content kept
    /// until an operator releases or deletes it.
    Quarantined,
    /// Deleted from quarantine by an operator. Terminal.
    Deleted,
    /// Its content was found missing or damaged (`mailroom fsck --repair`). Terminal.
    Failed,
}

impl DeliveryState {
    /// States in which the delivery's blob must be kept.
    pub const LIVE: [DeliveryState; 4] = [
        DeliveryState::Stored,
        DeliveryState::Checking,
        DeliveryState::Delivered,
        DeliveryState::PickedUp,
    ];

    /// States in which the delivery's blob is kept: the live ones, and quarantine (an
    /// operator may release a quarantined file).
    pub const KEPT: [DeliveryState; 5] = [
        DeliveryState::Stored,
        DeliveryState::Checking,
        DeliveryState::Delivered,
        DeliveryState::PickedUp,
        DeliveryState::Quarantined,
    ];

    /// States in which the recipient sees the delivery in its inbox.
    pub const VISIBLE: [DeliveryState; 2] = [DeliveryState::Delivered, DeliveryState::PickedUp];

    /// States from which the sender may still recall.
    pub const RECALLABLE: [DeliveryState; 3] = [
        DeliveryState::Stored,
        DeliveryState::Checking,
        DeliveryState::Delivered,
    ];

    /// Stable label for storage, events and output.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Stored => "stored",
            DeliveryState::Checking => "checking",
            DeliveryState::Delivered => "delivered",
            DeliveryState::PickedUp => "picked-up",
            DeliveryState::Acknowledged => "acknowledged",
            DeliveryState::Recalled => "recalled",
            DeliveryState::Expired => "expired",
            DeliveryState::Quarantined => "quarantined",
            DeliveryState::Deleted => "deleted",
            DeliveryState::Failed => "failed",
        }
    }

    /// Parses the label written by [`DeliveryState::as_str`].
    pub fn parse(input: &str) -> Result<Self> {
        Ok(match input {
            "stored" => DeliveryState::Stored,
            "checking" => DeliveryState::Checking,
            "delivered" => DeliveryState::Delivered,
            "picked-up" => DeliveryState::PickedUp,
            "acknowledged" => DeliveryState::Acknowledged,
            "recalled" => DeliveryState::Recalled,
            "expired" => DeliveryState::Expired,
            "quarantined" => DeliveryState::Quarantined,
            "deleted" => DeliveryState::Deleted,
            "failed" => DeliveryState::Failed,
            other => {
                return Err(CoreError::invalid(format!(
                    "unknown delivery state {other:?}"
                )));
            }
        })
    }

    /// Whether the delivery is live: pending, its name taken, counted in its inbox.
    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }

    /// Whether the blob must be kept for this state ([`DeliveryState::KEPT`]).
    pub fn is_kept(self) -> bool {
        Self::KEPT.contains(&self)
    }
}

/// One file from one sender to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Unique id.
    pub id: DeliveryId,
    /// The upload this delivery came from; deliveries of one group fan-out share it.
    pub batch_id: DeliveryId,
    /// Who sent it.
    pub sender: AccountName,
    /// Whose inbox it is in.
    pub recipient: AccountName,
    /// The outbox folder it was written to: the recipient, or the group it fanned out from.
    pub target: AccountName,
    /// The visible name, unique among the live deliveries from `sender` to `recipient`.
    pub name: FileName,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
    /// The stored content, shared by a fan-out.
    pub blob_id: BlobId,
    /// Lifecycle state.
    pub state: DeliveryState,
    /// When the upload was committed.
    pub created: OffsetDateTime,
    /// When the state last changed.
    pub updated: OffsetDateTime,
    /// The content is end-to-end encrypted (age ciphertext the sender's agent made for the
    /// recipients' keys): the hub cannot read it, so it was not scanned.
    pub e2e: bool,
}

/// The protocol or channel an action came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SFTP over SSH.
    Sftp,
    /// Legacy SCP (`scp -O`) over SSH.
    Scp,
    /// SSH before a subsystem is chosen (logins).
    Ssh,
    /// FTP over explicit TLS (RFC 4217).
    Ftps,
    /// The HTTPS API and the web pages built on it.
    Https,
    /// The admin command line.
    Cli,
    /// The hub itself (start-up sweeps, schedules).
    System,
    /// A drop folder on the hub's host (files a local system put there).
    Drop,
}

impl Protocol {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sftp => "sftp",
            Protocol::Scp => "scp",
            Protocol::Ssh => "ssh",
            Protocol::Ftps => "ftps",
            Protocol::Https => "https",
            Protocol::Cli => "cli",
            Protocol::System => "system",
            Protocol::Drop => "drop",
        }
    }

    /// Parses the label written by [`Protocol::as_str`].
    pub fn parse(input: &str) -> Result<Self> {
        Ok(match input {
            "sftp" => Protocol::Sftp,
            "scp" => Protocol::Scp,
            "ssh" => Protocol::Ssh,
            "ftps" => Protocol::Ftps,
            "https" => Protocol::Https,
            "cli" => Protocol::Cli,
            "system" => Protocol::System,
            "drop" => Protocol::Drop,
            other => return Err(CoreError::invalid(format!("unknown protocol {other:?}"))),
        })
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Ok,
    /// Policy or input refused it; nothing changed.
    Refused,
    /// It broke (connection dropped, storage error); nothing changed.
    Failed,
}

impl Outcome {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }

    /// Parses the label written by [`Outcome::as_str`].
    pub fn parse(input: &str) -> Result<Self> {
        Ok(match input {
            "ok" => Outcome::Ok,
            "refused" => Outcome::Refused,
            "failed" => Outcome::Failed,
            other => return Err(CoreError::invalid(format!("unknown outcome {other:?}"))),
        })
    }
}

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A login attempt (ok or refused, with the reason in the detail).
    Login,
    /// An upload began: its route, rights and name were accepted and its first byte may
    /// come. Recorded only while a rule selects it (it would otherwise cost every upload a
    /// commit); it names the path, not yet a delivery.
    TransferStarted,
    /// An upload attempt; on success it is followed by the state events of its deliveries.
    Upload,
    /// A download (complete or not, with the byte count in the detail).
    Download,
    /// A delivery became durable.
    DeliveryStored,
    /// A delivery became visible in its recipient's inbox.
    DeliveryDelivered,
    /// A delivery was downloaded completely for the first time.
    DeliveryPickedUp,
    /// The recipient deleted a delivery.
    DeliveryAcknowledged,
    /// The sender withdrew a delivery.
    DeliveryRecalled,
    /// The sender renamed a pending delivery.
    DeliveryRenamed,
    /// Retention removed a delivery nobody acknowledged in time.
    DeliveryExpired,
    /// A check found something in a delivery (the signature is in the detail), or could not
    /// check it; the delivery is hidden until an operator releases it.
    DeliveryQuarantined,
    /// The defender or an administrator banned or unbanned an address or an account.
    Ban,
    /// The hub closed a live session (account disabled, deleted or moved out of its networks).
    SessionClosed,
    /// An administrator changed accounts, groups or routes.
    Admin,
    /// The hub removed unreferenced blobs or staging files.
    Sweep,
    /// A job of the queue failed as often as its retry policy allows, or found the queue
    /// full; it waits for an operator.
    JobDead,
    /// A delivery took an inbox across 90 % of its byte or file quota.
    QuotaWarning,
    /// The data folder's file system fell below its free-space floor (`[disk]`).
    DiskLow,
    /// The host's clock stopped being synchronised (the kernel's NTP status): times in the
    /// audit trail, tokens and one-time codes may drift.
    ClockUnsynchronised,
}

impl EventKind {
    /// Every kind, in the order of the list above.
    pub const ALL: [EventKind; 20] = [
        EventKind::Login,
        EventKind::TransferStarted,
        EventKind::Upload,
        EventKind::Download,
        EventKind::DeliveryStored,
        EventKind::DeliveryDelivered,
        EventKind::DeliveryPickedUp,
        EventKind::DeliveryAcknowledged,
        EventKind::DeliveryRecalled,
        EventKind::DeliveryRenamed,
        EventKind::DeliveryExpired,
        EventKind::DeliveryQuarantined,
        EventKind::Ban,
        EventKind::SessionClosed,
        EventKind::Admin,
        EventKind::Sweep,
        EventKind::JobDead,
        EventKind::QuotaWarning,
        EventKind::DiskLow,
        EventKind::ClockUnsynchronised,
    ];

    /// Stable dotted label.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Login => "login",
            EventKind::TransferStarted => "transfer.started",
            EventKind::Upload => "upload",
            EventKind::Download => "download",
            EventKind::DeliveryStored => "delivery.stored",
            EventKind::DeliveryDelivered => "delivery.delivered",
            EventKind::DeliveryPickedUp => "delivery.picked-up",
            EventKind::DeliveryAcknowledged => "delivery.acknowledged",
            EventKind::DeliveryRecalled => "delivery.recalled",
            EventKind::DeliveryRenamed => "delivery.renamed",
            EventKind::DeliveryExpired => "delivery.expired",
            EventKind::DeliveryQuarantined => "delivery.quarantined",
            EventKind::Ban => "ban",
            EventKind::SessionClosed => "session.closed",
            EventKind::Admin => "admin",
            EventKind::Sweep => "sweep",
            EventKind::JobDead => "job.dead",
            EventKind::QuotaWarning => "quota.warning",
            EventKind::DiskLow => "disk.low",
            EventKind::ClockUnsynchronised => "clock.unsynchronised",
        }
    }

    /// Parses the label written by [`EventKind::as_str`].
    pub fn parse(input: &str) -> Result<Self> {
        Ok(match input {
            "login" => EventKind::Login,
            "transfer.started" => EventKind::TransferStarted,
            "upload" => EventKind::Upload,
            "download" => EventKind::Download,
            "delivery.stored" => EventKind::DeliveryStored,
            "delivery.delivered" => EventKind::DeliveryDelivered,
            "delivery.picked-up" => EventKind::DeliveryPickedUp,
            "delivery.acknowledged" => EventKind::DeliveryAcknowledged,
            "delivery.recalled" => EventKind::DeliveryRecalled,
            "delivery.renamed" => EventKind::DeliveryRenamed,
            "delivery.expired" => EventKind::DeliveryExpired,
            "delivery.quarantined" => EventKind::DeliveryQuarantined,
            "ban" => EventKind::Ban,
            "session.closed" => EventKind::SessionClosed,
            "admin" => EventKind::Admin,
            "sweep" => EventKind::Sweep,
            "job.dead" => EventKind::JobDead,
            "quota.warning" => EventKind::QuotaWarning,
            "disk.low" => EventKind::DiskLow,
            "clock.unsynchronised" => EventKind::ClockUnsynchronised,
            other => return Err(CoreError::invalid(format!("unknown event kind {other:?}"))),
        })
    }
}

/// One accounted action. Events are data, not logs: the service returns them and the store
/// commits them in the same transaction as the change they describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id (UUID v7), also written to the log line so the two join.
    pub id: Uuid,
    /// When it happened.
    pub time: OffsetDateTime,
    /// What happened.
    pub kind: EventKind,
    /// Who did it: an account name, `cli:<os user>`, or `system`. May be a name that does not
    /// exist (a failed login).
    pub actor: String,
    /// The peer address, when the action came over the network.
    pub source: Option<String>,
    /// The channel it came through.
    pub protocol: Protocol,
    /// What it was done to: a path, an account, a delivery id.
    pub object: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Free text for the operator: the reason of a refusal, a byte count. Never a secret.
    pub detail: String,
}

/// Standard base64 with padding (RFC 4648), as used by `authorized_keys`.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with optional padding; `None` on any malformed input.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of a well-formed encoding.
    if bits >= 6 || acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";

    #[test]
    fn parses_openssh_keys() {
        let key = AuthorizedKey::parse(ED25519).unwrap();
        assert_eq!(key.algorithm, "ssh-ed25519");
        assert_eq!(key.comment, "alice@laptop");
        assert_eq!(key.to_line(), ED25519);
        assert!(key.fingerprint().starts_with("SHA256:"));
    }

    #[test]
    fn refuses_malformed_keys() {
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA==",
            "command=\"/bin/sh\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            "ssh-ed25519 !!!notbase64",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
        ] {
            assert!(AuthorizedKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn e2e_recipients_are_parsed_and_made_canonical() {
        use age::secrecy::ExposeSecret;
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let added = OffsetDateTime::UNIX_EPOCH;
        let key = E2eKey::new(&recipient, "laptop", added).unwrap();
        assert_eq!(key.recipient, recipient);
        assert_eq!(key.recipient.len(), 62);
        // Upper case and white space around it name the same recipient.
        let shouted = format!("  {}\n", recipient.to_uppercase());
        assert_eq!(E2eKey::parse_recipient(&shouted).unwrap(), recipient);
        // The fingerprint: 16 hex digits of SHA-256 of the recipient string.
        let fingerprint = key.fingerprint();
        assert_eq!(fingerprint.len(), E2E_FINGERPRINT_LEN);
        assert_eq!(
            fingerprint,
            hex::encode(Sha256::digest(recipient.as_bytes()))[..16]
        );
        assert!(key.is_named_by(&recipient));
        assert!(key.is_named_by(&fingerprint.to_uppercase()));
        assert!(!key.is_named_by(&fingerprint[..15]));
        assert!(!key.is_named_by(""));

        let secret = identity.to_string();
        let mut bad_checksum = recipient.clone();
        let last = if bad_checksum.ends_with('q') {
            "p"
        } else {
            "q"
        };
        bad_checksum.replace_range(61.., last);
        for bad in [
            "",
            "age1",
            recipient[..61].to_owned().as_str(),
            bad_checksum.as_str(),
            secret.expose_secret(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            "age1yubikey1q2w6cuhmhfqvazx6wmnrmvfsvy4s8hd0r3sqlcmn5dhg2svsdtunvwnlzml",
            &format!("{recipient}{}", "q".repeat(100)),
        ] {
            let err = E2eKey::parse_recipient(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidName, "{bad:?}");
            assert!(!err.message().contains("AGE-SECRET-KEY"), "{err}");
        }
    }

    #[test]
    fn e2e_comments_are_bounded_and_printable() {
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let added = OffsetDateTime::UNIX_EPOCH;
        let longest = "é".repeat(MAX_E2E_COMMENT);
        assert!(E2eKey::new(&recipient, &longest, added).is_ok());
        assert!(E2eKey::new(&recipient, "", added).is_ok());
        for bad in [
            format!("{longest}x"),
            "two\nlines".to_owned(),
            "tab\there".to_owned(),
            "bell\u{7}".to_owned(),
            "del\u{7f}".to_owned(),
        ] {
            let err = E2eKey::new(&recipient, &bad, added).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidName, "{bad:?}");
        }
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
    }

    #[test]
    fn labels_round_trip() {
        for state in [
            DeliveryState::Stored,
            DeliveryState::Checking,
            DeliveryState::Delivered,
            DeliveryState::PickedUp,
            DeliveryState::Acknowledged,
            DeliveryState::Recalled,
            DeliveryState::Expired,
            DeliveryState::Quarantined,
        ] {
            assert_eq!(DeliveryState::parse(state.as_str()).unwrap(), state);
        }
        let id = DeliveryId::new();
        assert_eq!(DeliveryId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(id.short().len(), 8);
        let blob = BlobId::new();
        assert_eq!(BlobId::parse(blob.as_str()).unwrap(), blob);
        assert!(BlobId::parse("../etc/passwd").is_err());
    }

    #[test]
    fn protocol_labels_round_trip() {
        for protocol in [
            Protocol::Sftp,
            Protocol::Scp,
            Protocol::Ssh,
            Protocol::Ftps,
            Protocol::Https,
            Protocol::Cli,
            Protocol::System,
        ] {
            assert_eq!(Protocol::parse(protocol.as_str()).unwrap(), protocol);
        }
        assert_eq!(Protocol::Ftps.as_str(), "ftps");
        assert!(Protocol::parse("ftp").is_err());
    }
}
