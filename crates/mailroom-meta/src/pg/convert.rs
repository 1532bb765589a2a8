//! PostgreSQL rows to domain types: the twin of `convert.rs` for the driver's rows.
//!
//! The columns and their representations are SQLite's (times in nanoseconds, ids and labels as
//! text, the access policy as JSON), so the encodings are shared with `convert.rs`
//! ([`nanos`](crate::convert::nanos), [`time_from_nanos`], [`access_from_json`]); only reading
//! a column differs. Every value goes through its domain type's `parse`, so a row this version
//! did not write surfaces as a logged Internal error. This module does not run queries.

use mailroom_core::{
    Account, AccountKind, AccountName, AuditRecord, AuthorizedKey, Ban, BanSubject, BlobId,
    CoreError, Delivery, DeliveryId, DeliveryState, Event, EventKind, FileName, Handler, Job,
    JobState, Outcome, Protocol, Result, Scope, Secret, TokenKind, TokenRecord, TotpEnrolment,
};
use postgres::Row;
use postgres::types::FromSql;
use uuid::Uuid;

use crate::convert::{access_from_json, seq_from_db, time_from_nanos};
use crate::error::{classify_pg, corrupt};

/// One column of a row, with decoding failures logged as Internal.
pub(crate) fn column<'r, T: FromSql<'r>>(row: &'r Row, name: &'static str) -> Result<T> {
    row.try_get(name)
        .map_err(|error| classify_pg("decode", &error))
}

/// A text column parsed into its domain type.
pub(crate) fn parsed<T>(
    row: &Row,
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T>,
) -> Result<T> {
    let text: &str = column(row, name)?;
    parse(text).map_err(|error| corrupt(name, &error))
}

/// An account name column.
pub(crate) fn account_name(row: &Row, name: &'static str) -> Result<AccountName> {
    parsed(row, name, AccountName::parse)
}

/// A time column (nanoseconds).
fn time(row: &Row, name: &'static str) -> Result<time::OffsetDateTime> {
    time_from_nanos(name, column(row, name)?)
}

/// A column that must hold a non-negative number.
fn unsigned(row: &Row, name: &'static str) -> Result<u64> {
    let value: i64 = column(row, name)?;
    u64::try_from(value).map_err(|_| corrupt(name, &CoreError::invalid("negative")))
}

/// A UUID stored as text.
fn uuid(row: &Row, name: &'static str) -> Result<Uuid> {
    parsed(row, name, |text| {
        Uuid::parse_str(text).map_err(|_| CoreError::invalid(format!("not a UUID in {name}")))
    })
}

/// A row of `SELECT token_columns!() FROM tokens`.
pub(crate) fn token(row: &Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        hash: column(row, "hash")?,
        kind: parsed(row, "kind", TokenKind::parse)?,
        session: column(row, "session")?,
        account: account_name(row, "account")?,
        scope: parsed(row, "scope", Scope::parse)?,
        epoch: unsigned(row, "epoch")?,
        source: column(row, "source")?,
        protocol: parsed(row, "protocol", Protocol::parse)?,
        created: time(row, "created")?,
        expires: time(row, "expires")?,
    })
}

/// A row of `SELECT account_columns!() FROM accounts`, with its keys.
pub(crate) fn account(row: &Row, keys: Vec<AuthorizedKey>) -> Result<Account> {
    let totp_secret: Option<String> = column(row, "totp_secret")?;
    let totp = match totp_secret {
        Some(secret) => {
            let last_step: Option<i64> = column(row, "totp_last_step")?;
            let recovery: &str = column(row, "totp_recovery")?;
            Some(TotpEnrolment {
                secret: Secret::new(secret),
                last_step: last_step.and_then(|s| u64::try_from(s).ok()),
                recovery: serde_json::from_str(recovery).map_err(|_| {
                    corrupt("totp_recovery", &CoreError::invalid("not a JSON list"))
                })?,
            })
        }
        None => None,
    };
    Ok(Account {
        name: account_name(row, "name")?,
        kind: parsed(row, "kind", AccountKind::parse)?,
        disabled: column(row, "disabled")?,
        password_hash: column(row, "password_hash")?,
        keys,
        created: time(row, "created")?,
        access: parsed(row, "access", access_from_json)?,
        totp,
        token_epoch: unsigned(row, "token_epoch")?,
    })
}

/// The key of a row of accounts joined with their keys: `None` for an account without keys
/// (the joined columns are NULL).
pub(crate) fn joined_key(row: &Row) -> Result<Option<AuthorizedKey>> {
    let algorithm: Option<String> = column(row, "algorithm")?;
    let Some(algorithm) = algorithm else {
        return Ok(None);
    };
    Ok(Some(AuthorizedKey {
        algorithm,
        blob: column(row, "blob")?,
        comment: column(row, "comment")?,
    }))
}

/// A row of `SELECT subject, until, level, reason, created FROM bans`.
pub(crate) fn ban(row: &Row) -> Result<Ban> {
    let level: i64 = column(row, "level")?;
    Ok(Ban {
        subject: parsed(row, "subject", BanSubject::parse)?,
        until: time(row, "until")?,
        level: u32::try_from(level).unwrap_or(u32::MAX),
        reason: column(row, "reason")?,
        created: time(row, "created")?,
    })
}

/// A row of `SELECT delivery_columns!() FROM deliveries`.
pub(crate) fn delivery(row: &Row) -> Result<Delivery> {
    let size: i64 = column(row, "size")?;
    Ok(Delivery {
        id: parsed(row, "id", DeliveryId::parse)?,
        batch_id: parsed(row, "batch_id", DeliveryId::parse)?,
        sender: account_name(row, "sender")?,
        recipient: account_name(row, "recipient")?,
        target: account_name(row, "target")?,
        name: parsed(row, "name", FileName::parse)?,
        size: u64::try_from(size)
            .map_err(|_| corrupt("size", &CoreError::invalid("negative size")))?,
        sha256: column(row, "sha256")?,
        blob_id: parsed(row, "blob_id", BlobId::parse)?,
        state: parsed(row, "state", DeliveryState::parse)?,
        created: time(row, "created")?,
        updated: time(row, "updated")?,
    })
}

/// A row of `SELECT audit_columns!() FROM events`.
pub(crate) fn audit_record(row: &Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: seq_from_db(column(row, "seq")?)?,
        event: event(row)?,
        prev_hash: column(row, "prev_hash")?,
        hash: column(row, "hash")?,
    })
}

/// A row of `SELECT event_columns!() FROM events`.
pub(crate) fn event(row: &Row) -> Result<Event> {
    Ok(Event {
        id: uuid(row, "id")?,
        time: time(row, "time")?,
        kind: parsed(row, "kind", EventKind::parse)?,
        actor: column(row, "actor")?,
        source: column(row, "source")?,
        protocol: parsed(row, "protocol", Protocol::parse)?,
        object: column(row, "object")?,
        outcome: parsed(row, "outcome", Outcome::parse)?,
        detail: column(row, "detail")?,
    })
}

/// A row of `SELECT job_columns!() FROM jobs`.
pub(crate) fn job(row: &Row) -> Result<Job> {
    let attempts: i64 = column(row, "attempts")?;
    Ok(Job {
        id: uuid(row, "id")?,
        rule: column(row, "rule")?,
        handler: parsed(row, "handler", Handler::parse)?,
        event: uuid(row, "event")?,
        state: parsed(row, "state", JobState::parse)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        due: time(row, "due")?,
        created: time(row, "created")?,
        updated: time(row, "updated")?,
        last_error: column(row, "last_error")?,
    })
}

/// A row of `SELECT node_columns!() FROM nodes`.
pub(crate) fn node(row: &Row) -> Result<mailroom_core::NodeRecord> {
    let pid: i64 = column(row, "pid")?;
    Ok(mailroom_core::NodeRecord {
        node: mailroom_core::NodeInfo {
            id: parsed(row, "id", mailroom_core::NodeId::parse)?,
            host: column(row, "host")?,
            pid: u32::try_from(pid).map_err(|_| corrupt("pid", &CoreError::invalid("range")))?,
            started: time(row, "started")?,
        },
        heartbeat: time(row, "heartbeat")?,
    })
}

/// A row of `SELECT live_session_columns!() FROM live_sessions`.
pub(crate) fn live_session(row: &Row) -> Result<mailroom_core::LiveSessionRecord> {
    Ok(mailroom_core::LiveSessionRecord {
        node: parsed(row, "node", mailroom_core::NodeId::parse)?,
        id: unsigned(row, "id")?,
        account: account_name(row, "account")?,
        protocol: parsed(row, "protocol", Protocol::parse)?,
        source: column(row, "source")?,
        started: time(row, "started")?,
        closing: column(row, "closing")?,
    })
}
