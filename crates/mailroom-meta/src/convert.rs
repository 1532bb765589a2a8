//! Rows to domain types and back, for both engines: times, sizes, names, labels and the
//! JSON columns, and the conversion of each kind of row.
//!
//! The PostgreSQL schema keeps SQLite's columns and representations (times in nanoseconds,
//! ids and labels as text, the access policy as JSON), so a row converts the same way from
//! either; only reading one column differs, which each driver's row does through
//! [`Columns`] (implemented here for SQLite's rows, in `pg/convert.rs` for PostgreSQL's).
//! Every value read from the database goes through its domain type's `parse`, so a row this
//! version did not write surfaces as a logged Internal error instead of a wrong answer. This
//! module does not run queries.

use mailroom_core::{
    AccessPolicy, Account, AccountKind, AccountName, AuditRecord, AuthorizedKey, Ban, BanSubject,
    BlobId, CoreError, Delivery, DeliveryId, DeliveryState, E2eKey, Event, EventKind, Factor,
    FactorSet, FileName, Handler, Job, JobState, Limits, Notices, NotifyMode, Outcome, Protocol,
    Result, Rights, Scope, Secret, TokenKind, TokenRecord, TotpEnrolment,
};
use mailroom_core::{ApiKeyRecord, KeyScopes, ResumableRecord};
use rusqlite::Row;
use rusqlite::types::FromSql;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{classify, corrupt, unstorable};

/// A value both drivers decode from a column: text, integers, booleans, bytes and their
/// `Option`s (NULL).
pub(crate) trait Stored: FromSql + for<'r> postgres::types::FromSql<'r> {}

impl<T: FromSql + for<'r> postgres::types::FromSql<'r>> Stored for T {}

/// A row of either driver, read column by column: what the conversions below need of it.
pub(crate) trait Columns {
    /// One column, with decoding failures logged as Internal.
    fn read<T: Stored>(&self, name: &'static str) -> Result<T>;

    /// A text column handed to `parse` (borrowed where the driver allows), with decoding
    /// failures logged as Internal.
    fn read_text<T>(&self, name: &'static str, parse: impl FnOnce(&str) -> Result<T>) -> Result<T>;
}

impl Columns for Row<'_> {
    fn read<T: Stored>(&self, name: &'static str) -> Result<T> {
        column(self, name)
    }

    fn read_text<T>(&self, name: &'static str, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
        let text: String = column(self, name)?;
        parse(&text)
    }
}

/// The columns [`delivery`] reads, in a form `concat!` can splice into static SQL.
macro_rules! delivery_columns {
    () => {
        "id, batch_id, sender, recipient, target, name, size, sha256, blob_id, state, created, updated, e2e"
    };
}
pub(crate) use delivery_columns;

/// The columns [`event`] reads.
macro_rules! event_columns {
    () => {
        "id, time, kind, actor, source, protocol, object, outcome, detail"
    };
}
pub(crate) use event_columns;

/// The columns [`audit_record`] reads: an event with its place in the chain.
macro_rules! audit_columns {
    () => {
        concat!("seq, ", event_columns!(), ", prev_hash, hash")
    };
}
pub(crate) use audit_columns;

/// The columns [`job`] reads.
macro_rules! job_columns {
    () => {
        "id, rule, handler, event, state, attempts, due, created, updated, last_error"
    };
}
pub(crate) use job_columns;

/// A time as stored: nanoseconds since the Unix epoch, UTC.
pub(crate) fn nanos(time: OffsetDateTime) -> Result<i64> {
    i64::try_from(time.unix_timestamp_nanos()).map_err(|_| unstorable("time"))
}

/// A time as stored, clamped into the storable range: for bounds of queries, where a time
/// before 1677 or after 2262 means "everything" or "nothing" rather than an error.
pub(crate) fn nanos_saturating(time: OffsetDateTime) -> i64 {
    let nanos = time.unix_timestamp_nanos();
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// A stored time back as a UTC date-time.
pub(crate) fn time_from_nanos(column: &'static str, nanos: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).map_err(|_| {
        corrupt(
            column,
            &CoreError::invalid(format!("{nanos} is not a valid time")),
        )
    })
}

/// A size as stored.
pub(crate) fn size_to_db(size: u64) -> Result<i64> {
    i64::try_from(size).map_err(|_| unstorable("size"))
}

/// One column of a SQLite row, with decoding failures logged as Internal.
pub(crate) fn column<T: FromSql>(row: &Row<'_>, name: &'static str) -> Result<T> {
    row.get(name).map_err(|error| classify("decode", error))
}

/// A text column parsed into its domain type.
pub(crate) fn parsed<T>(
    row: &impl Columns,
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T>,
) -> Result<T> {
    row.read_text(name, |text| {
        parse(text).map_err(|error| corrupt(name, &error))
    })
}

/// An account name column.
pub(crate) fn account_name(row: &impl Columns, name: &'static str) -> Result<AccountName> {
    parsed(row, name, AccountName::parse)
}

/// A time column (nanoseconds).
fn time(row: &impl Columns, name: &'static str) -> Result<OffsetDateTime> {
    time_from_nanos(name, row.read(name)?)
}

/// A column that must hold a non-negative number.
pub(crate) fn unsigned(row: &impl Columns, name: &'static str) -> Result<u64> {
    let value: i64 = row.read(name)?;
    u64::try_from(value).map_err(|_| corrupt(name, &CoreError::invalid("negative")))
}

/// The columns [`token`] reads.
macro_rules! token_columns {
    () => {
        "hash, kind, session, account, scope, epoch, source, protocol, created, expires, methods"
    };
}
pub(crate) use token_columns;

/// A row of `SELECT token_columns!() FROM tokens`.
pub(crate) fn token(row: &impl Columns) -> Result<TokenRecord> {
    Ok(TokenRecord {
        hash: row.read("hash")?,
        kind: parsed(row, "kind", TokenKind::parse)?,
        session: row.read("session")?,
        account: account_name(row, "account")?,
        scope: parsed(row, "scope", Scope::parse)?,
        epoch: unsigned(row, "epoch")?,
        source: row.read("source")?,
        protocol: parsed(row, "protocol", Protocol::parse)?,
        created: time(row, "created")?,
        expires: time(row, "expires")?,
        methods: row.read("methods")?,
    })
}

/// The columns [`api_key`] reads.
macro_rules! api_key_columns {
    () => {
        "id, account, label, hash, scopes, created, expires, last_used"
    };
}
pub(crate) use api_key_columns;

/// A row of `SELECT api_key_columns!() FROM api_keys`.
pub(crate) fn api_key(row: &impl Columns) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.read("id")?,
        account: account_name(row, "account")?,
        label: row.read("label")?,
        hash: row.read("hash")?,
        scopes: parsed(row, "scopes", KeyScopes::parse)?,
        created: time(row, "created")?,
        expires: optional_time(row, "expires")?,
        last_used: optional_time(row, "last_used")?,
    })
}

/// The columns [`resumable`] reads.
macro_rules! resumable_columns {
    () => {
        "id, owner, targets, name, size, sha256, e2e, staging, created, expires"
    };
}
pub(crate) use resumable_columns;

/// A row of `SELECT resumable_columns!() FROM resumable_uploads`.
pub(crate) fn resumable(row: &impl Columns) -> Result<ResumableRecord> {
    let size: i64 = row.read("size")?;
    Ok(ResumableRecord {
        id: row.read("id")?,
        owner: account_name(row, "owner")?,
        targets: parsed(row, "targets", |text| {
            text.split(',').map(AccountName::parse).collect()
        })?,
        name: parsed(row, "name", FileName::parse)?,
        size: u64::try_from(size)
            .map_err(|_| corrupt("size", &CoreError::invalid("negative size")))?,
        sha256: row.read("sha256")?,
        e2e: row.read("e2e")?,
        staging: parsed(row, "staging", BlobId::parse)?,
        created: time(row, "created")?,
        expires: time(row, "expires")?,
    })
}

/// A resumable upload's targets as its `targets` column holds them.
pub(crate) fn targets_to_db(targets: &[AccountName]) -> String {
    targets
        .iter()
        .map(AccountName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// A time column that may be NULL.
fn optional_time(row: &impl Columns, name: &'static str) -> Result<Option<OffsetDateTime>> {
    let nanos: Option<i64> = row.read(name)?;
    nanos.map(|nanos| time_from_nanos(name, nanos)).transpose()
}

/// The columns [`account`] reads.
macro_rules! account_columns {
    () => {
        "name, kind, disabled, password_hash, created, access, totp_secret, totp_last_step, totp_recovery, token_epoch, e2e_keys"
    };
}
pub(crate) use account_columns;

/// A row of `SELECT account_columns!() FROM accounts`, with its keys.
pub(crate) fn account(row: &impl Columns, keys: Vec<AuthorizedKey>) -> Result<Account> {
    let totp_secret: Option<String> = row.read("totp_secret")?;
    let totp = match totp_secret {
        Some(secret) => {
            let last_step: Option<i64> = row.read("totp_last_step")?;
            Some(TotpEnrolment {
                secret: Secret::new(secret),
                last_step: last_step.and_then(|s| u64::try_from(s).ok()),
                recovery: parsed(row, "totp_recovery", recovery_from_json)?,
            })
        }
        None => None,
    };
    Ok(Account {
        name: account_name(row, "name")?,
        kind: parsed(row, "kind", AccountKind::parse)?,
        disabled: row.read("disabled")?,
        password_hash: row.read("password_hash")?,
        keys,
        e2e_keys: parsed(row, "e2e_keys", e2e_keys_from_json)?,
        created: time(row, "created")?,
        access: parsed(row, "access", access_from_json)?,
        totp,
        token_epoch: unsigned(row, "token_epoch")?,
    })
}

/// An account's token generation as stored.
pub(crate) fn epoch_to_db(epoch: u64) -> Result<i64> {
    i64::try_from(epoch).map_err(|_| CoreError::invalid("token generation out of range"))
}

/// An enrolment (or none) as `accounts` holds it.
pub(crate) struct TotpColumns {
    /// `totp_secret`: NULL without an enrolment.
    pub(crate) secret: Option<String>,
    /// `totp_last_step`: NULL until a code is used.
    pub(crate) last_step: Option<i64>,
    /// `totp_recovery`: the recovery-code hashes, an empty list without an enrolment.
    pub(crate) recovery: String,
}

/// Encodes an enrolment (or none) for `accounts`.
pub(crate) fn totp_to_db(totp: Option<&TotpEnrolment>) -> TotpColumns {
    TotpColumns {
        secret: totp.map(|t| t.secret.expose().clone()),
        last_step: totp
            .and_then(|t| t.last_step)
            .and_then(|s| i64::try_from(s).ok()),
        recovery: recovery_json(totp.map(|t| t.recovery.as_slice())),
    }
}

/// The recovery-code hashes of an enrolment, as the JSON list `accounts.totp_recovery` holds.
pub(crate) fn recovery_json(codes: Option<&[String]>) -> String {
    serde_json::to_string(codes.unwrap_or(&[])).unwrap_or_else(|_| "[]".to_owned())
}

/// Decodes `accounts.totp_recovery`.
pub(crate) fn recovery_from_json(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| CoreError::invalid("not a JSON list"))
}

/// One [`E2eKey`] as stored in the list of `accounts.e2e_keys`.
#[derive(Serialize, Deserialize)]
struct E2eKeyJson {
    recipient: String,
    comment: String,
    /// When it was added, in nanoseconds (as every time is stored).
    added: i64,
}

/// Encodes an account's end-to-end keys for `accounts.e2e_keys`.
pub(crate) fn e2e_keys_to_json(keys: &[E2eKey]) -> Result<String> {
    let json = keys
        .iter()
        .map(|key| {
            Ok(E2eKeyJson {
                recipient: key.recipient.clone(),
                comment: key.comment.clone(),
                added: nanos(key.added)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    serde_json::to_string(&json).map_err(|_| unstorable("e2e keys"))
}

/// Decodes `accounts.e2e_keys`; each key goes through [`E2eKey::new`], so a recipient or
/// comment this version would refuse surfaces as corrupt.
pub(crate) fn e2e_keys_from_json(text: &str) -> Result<Vec<E2eKey>> {
    let json: Vec<E2eKeyJson> = serde_json::from_str(text)
        .map_err(|e| CoreError::invalid(format!("e2e keys are not valid JSON: {e}")))?;
    json.into_iter()
        .map(|key| {
            let added = OffsetDateTime::from_unix_timestamp_nanos(i128::from(key.added))
                .map_err(|_| CoreError::invalid(format!("{} is not a valid time", key.added)))?;
            E2eKey::new(&key.recipient, &key.comment, added)
        })
        .collect()
}

/// [`AccessPolicy`] as stored in `accounts.access`. Absent fields take their defaults, so a
/// row written before a field existed still reads.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct AccessJson {
    factors: Vec<String>,
    networks: Vec<String>,
    certificate_subject: Option<String>,
    rights: Option<String>,
    name_allow: Vec<String>,
    name_deny: Vec<String>,
    max_file_size: Option<u64>,
    quota_bytes: Option<u64>,
    quota_files: Option<u64>,
    retention_days: Option<u32>,
    max_sessions: Option<u32>,
    /// The notices' address, mode (absent: off) and receipts.
    email: Option<String>,
    notify: Option<String>,
    receipts: bool,
}

/// Encodes an account's access policy for `accounts.access`.
pub(crate) fn access_to_json(access: &AccessPolicy) -> String {
    let json = AccessJson {
        factors: access
            .factors
            .labels()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        networks: access.networks.iter().map(ToString::to_string).collect(),
        certificate_subject: access.certificate_subject.clone(),
        rights: Some(access.rights.to_string()),
        name_allow: access.limits.name_allow.clone(),
        name_deny: access.limits.name_deny.clone(),
        max_file_size: access.limits.max_file_size,
        quota_bytes: access.limits.quota_bytes,
        quota_files: access.limits.quota_files,
        retention_days: access.limits.retention_days,
        max_sessions: access.limits.max_sessions,
        email: access.notices.email.clone(),
        notify: (access.notices.mode != NotifyMode::Off)
            .then(|| access.notices.mode.as_str().to_owned()),
        receipts: access.notices.receipts,
    };
    serde_json::to_string(&json).unwrap_or_else(|_| "{}".to_owned())
}

/// Decodes `accounts.access`.
pub(crate) fn access_from_json(text: &str) -> Result<AccessPolicy> {
    let json: AccessJson = serde_json::from_str(text)
        .map_err(|e| CoreError::invalid(format!("access policy is not valid JSON: {e}")))?;
    let factors = json
        .factors
        .iter()
        .map(|f| Factor::parse(f))
        .collect::<Result<Vec<_>>>()?;
    let networks = json
        .networks
        .iter()
        .map(|n| {
            n.parse::<ipnet::IpNet>()
                .map_err(|_| CoreError::invalid(format!("{n:?} is not a network")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AccessPolicy {
        factors: FactorSet::new(factors),
        networks,
        certificate_subject: json.certificate_subject,
        rights: match json.rights {
            Some(rights) => Rights::parse(&rights)?,
            None => Rights::default(),
        },
        limits: Limits {
            name_allow: json.name_allow,
            name_deny: json.name_deny,
            max_file_size: json.max_file_size,
            quota_bytes: json.quota_bytes,
            quota_files: json.quota_files,
            retention_days: json.retention_days,
            max_sessions: json.max_sessions,
        },
        notices: Notices {
            email: json.email,
            mode: match json.notify {
                Some(mode) => NotifyMode::parse(&mode)?,
                None => NotifyMode::Off,
            },
            receipts: json.receipts,
        },
    })
}

/// A row of `SELECT subject, until, level, reason, created FROM bans`.
pub(crate) fn ban(row: &impl Columns) -> Result<Ban> {
    let level: i64 = row.read("level")?;
    Ok(Ban {
        subject: parsed(row, "subject", BanSubject::parse)?,
        until: time(row, "until")?,
        level: u32::try_from(level).unwrap_or(u32::MAX),
        reason: row.read("reason")?,
        created: time(row, "created")?,
    })
}

/// A row of `SELECT algorithm, blob, comment FROM account_keys`.
pub(crate) fn key(row: &impl Columns) -> Result<AuthorizedKey> {
    Ok(AuthorizedKey {
        algorithm: row.read("algorithm")?,
        blob: row.read("blob")?,
        comment: row.read("comment")?,
    })
}

/// A row of `SELECT delivery_columns!() FROM deliveries`.
pub(crate) fn delivery(row: &impl Columns) -> Result<Delivery> {
    let size: i64 = row.read("size")?;
    Ok(Delivery {
        id: parsed(row, "id", DeliveryId::parse)?,
        batch_id: parsed(row, "batch_id", DeliveryId::parse)?,
        sender: account_name(row, "sender")?,
        recipient: account_name(row, "recipient")?,
        target: account_name(row, "target")?,
        name: parsed(row, "name", FileName::parse)?,
        size: u64::try_from(size)
            .map_err(|_| corrupt("size", &CoreError::invalid("negative size")))?,
        sha256: row.read("sha256")?,
        blob_id: parsed(row, "blob_id", BlobId::parse)?,
        state: parsed(row, "state", DeliveryState::parse)?,
        created: time(row, "created")?,
        updated: time(row, "updated")?,
        e2e: row.read("e2e")?,
    })
}

/// A row of `SELECT audit_columns!() FROM events`.
pub(crate) fn audit_record(row: &impl Columns) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: seq_from_db(row.read("seq")?)?,
        event: event(row)?,
        prev_hash: row.read("prev_hash")?,
        hash: row.read("hash")?,
    })
}

/// A stored `seq` (always positive) as the core's number.
pub(crate) fn seq_from_db(seq: i64) -> Result<u64> {
    u64::try_from(seq).map_err(|_| {
        corrupt(
            "events.seq",
            &CoreError::invalid(format!("{seq} is not a sequence number")),
        )
    })
}

/// A `seq` as stored.
pub(crate) fn seq_to_db(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| unstorable("seq"))
}

/// A row of `SELECT event_columns!() FROM events`.
pub(crate) fn event(row: &impl Columns) -> Result<Event> {
    Ok(Event {
        id: parsed(row, "id", |text| {
            Uuid::parse_str(text).map_err(|_| CoreError::invalid("not an event id"))
        })?,
        time: time(row, "time")?,
        kind: parsed(row, "kind", EventKind::parse)?,
        actor: row.read("actor")?,
        source: row.read("source")?,
        protocol: parsed(row, "protocol", Protocol::parse)?,
        object: row.read("object")?,
        outcome: parsed(row, "outcome", Outcome::parse)?,
        detail: row.read("detail")?,
    })
}

/// A row of `SELECT job_columns!() FROM jobs`.
pub(crate) fn job(row: &impl Columns) -> Result<Job> {
    let uuid = |what: &'static str| {
        move |text: &str| {
            Uuid::parse_str(text).map_err(|_| CoreError::invalid(format!("not a {what} id")))
        }
    };
    let attempts: i64 = row.read("attempts")?;
    Ok(Job {
        id: parsed(row, "id", uuid("job"))?,
        rule: row.read("rule")?,
        handler: parsed(row, "handler", Handler::parse)?,
        event: parsed(row, "event", uuid("event"))?,
        state: parsed(row, "state", JobState::parse)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        due: time(row, "due")?,
        created: time(row, "created")?,
        updated: time(row, "updated")?,
        last_error: row.read("last_error")?,
    })
}

/// The columns [`node`] reads.
macro_rules! node_columns {
    () => {
        "id, host, pid, started, heartbeat"
    };
}
pub(crate) use node_columns;

/// A row of `SELECT node_columns!() FROM nodes`.
pub(crate) fn node(row: &impl Columns) -> Result<mailroom_core::NodeRecord> {
    let pid: i64 = row.read("pid")?;
    Ok(mailroom_core::NodeRecord {
        node: mailroom_core::NodeInfo {
            id: parsed(row, "id", mailroom_core::NodeId::parse)?,
            host: row.read("host")?,
            pid: u32::try_from(pid).map_err(|_| corrupt("pid", &CoreError::invalid("range")))?,
            started: time(row, "started")?,
        },
        heartbeat: time(row, "heartbeat")?,
    })
}

/// The columns [`live_session`] reads.
macro_rules! live_session_columns {
    () => {
        "node, id, account, protocol, source, started, closing"
    };
}
pub(crate) use live_session_columns;

/// A row of `SELECT live_session_columns!() FROM live_sessions`.
pub(crate) fn live_session(row: &impl Columns) -> Result<mailroom_core::LiveSessionRecord> {
    Ok(mailroom_core::LiveSessionRecord {
        node: parsed(row, "node", mailroom_core::NodeId::parse)?,
        id: unsigned(row, "id")?,
        account: account_name(row, "account")?,
        protocol: parsed(row, "protocol", Protocol::parse)?,
        source: row.read("source")?,
        started: time(row, "started")?,
        closing: row.read("closing")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;
    use time::macros::datetime;

    fn check_time(time: OffsetDateTime) {
        let stored = nanos(time).unwrap();
        assert_eq!(time_from_nanos("time", stored).unwrap(), time);
    }

    #[test]
    fn times_round_trip_exactly() {
        check_time(datetime!(2026-03-01 12:00:00.123456789 UTC));
        check_time(datetime!(1970-01-01 00:00:00 UTC));
        check_time(datetime!(1969-12-31 23:59:59.999999999 UTC));
        check_time(datetime!(2262-04-11 23:47:16.854775807 UTC));
        // Another offset is the same instant, stored in UTC.
        check_time(datetime!(2026-03-01 14:00:00.5 +02:00));
    }

    #[test]
    fn times_outside_the_range_are_refused() {
        assert!(nanos(datetime!(2263-01-01 00:00:00 UTC)).is_err());
        assert!(nanos(datetime!(1600-01-01 00:00:00 UTC)).is_err());
        assert_eq!(
            nanos_saturating(datetime!(1600-01-01 00:00:00 UTC)),
            i64::MIN
        );
        assert_eq!(
            nanos_saturating(datetime!(2263-01-01 00:00:00 UTC)),
            i64::MAX
        );
    }

    #[test]
    fn stored_times_sort_as_numbers() {
        let earlier = nanos(datetime!(2026-03-01 12:00:00 UTC)).unwrap();
        let later = nanos(datetime!(2026-03-01 12:00:00.000001 UTC)).unwrap();
        assert!(earlier < later);
    }
}
