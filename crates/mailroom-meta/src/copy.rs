//! Moving an embedded install's metadata to PostgreSQL: [`copy_to_postgres`] copies every
//! kept row of a SQLite database into an empty PostgreSQL database in ONE transaction, so the
//! target is either untouched or complete, and an interrupted copy is simply run again.
//!
//! Rows are copied as they are, column by column (the PostgreSQL schema keeps SQLite's columns
//! and representations), events with their `seq`, `prev_hash` and `hash`, so the audit chain
//! and its checkpoints stay valid across the move. What the engines keep for themselves is
//! not copied but set: the policy version and the job queue's depth are moved on by
//! PostgreSQL's own triggers as the rows go in, the chain's last `seq` and legacy boundary are
//! written from the source, and a node's runtime state (heartbeats, live sessions, defender
//! scores) starts afresh on the cluster.

use std::collections::HashMap;
use std::path::Path;

use postgres::types::{ToSql, Type};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use crate::error::MetaError;
use crate::pg::PgOptions;

/// The tables copied, parents before children (foreign keys).
const TABLES: [&str; 14] = [
    "principals",
    "accounts",
    "account_keys",
    "groups",
    "group_members",
    "routes",
    "deliveries",
    "inline_blobs",
    "events",
    "bans",
    "tokens",
    "api_keys",
    "jobs",
    "data_keys",
];

/// Rows sent per INSERT.
const BATCH: usize = 500;

/// What a copy moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows copied, by table, in copy order.
    pub rows: Vec<(String, u64)>,
}

/// Copies the SQLite database at `source` into the PostgreSQL database of `target`, whose
/// schema is brought up to date first. Refuses (changing nothing) a target that holds any
/// account, group or event: a copy goes only into an empty database. `progress` hears each
/// table's name and row count as it is copied.
pub fn copy_to_postgres(
    source: &Path,
    target: &PgOptions,
    mut progress: impl FnMut(&str, u64),
) -> Result<CopyReport, MetaError> {
    let sqlite = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| MetaError::Open {
        location: source.display().to_string(),
        source: error,
    })?;
    // One snapshot of the source for the whole copy.
    sqlite
        .execute_batch("BEGIN")
        .map_err(|error| copy_error("begin reading the source", &error))?;
    let mut conn = crate::pg::connect_for_copy(target)?;
    let mut tx = conn
        .client()
        .transaction()
        .map_err(|error| copy_error("begin the copy", &error))?;
    let occupied: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM principals) + (SELECT count(*) FROM events)",
            &[],
        )
        .map_err(|error| copy_error("look at the target", &error))?
        .get(0);
    if occupied > 0 {
        return Err(MetaError::Copy(
            "the target database is not empty (it holds accounts, groups or events): a copy goes only into an empty database"
                .to_owned(),
        ));
    }
    let mut report = CopyReport::default();
    for table in TABLES {
        let rows = copy_table(&sqlite, &mut tx, table)?;
        progress(table, rows);
        report.rows.push((table.to_owned(), rows));
    }
    let (legacy_through, last_seq) = chain_position(&sqlite)?;
    tx.execute(
        "UPDATE audit_chain SET legacy_through = $1, last_seq = $2 WHERE id = 1",
        &[&legacy_through, &last_seq],
    )
    .map_err(|error| copy_error("set the chain's position", &error))?;
    tx.commit()
        .map_err(|error| copy_error("commit the copy", &error))?;
    Ok(report)
}

/// Copies one table's rows in batches; returns how many.
fn copy_table(
    sqlite: &Connection,
    tx: &mut postgres::Transaction<'_>,
    table: &str,
) -> Result<u64, MetaError> {
    let columns = target_columns(tx, table)?;
    let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
    let select = format!("SELECT {} FROM {table}", names.join(", "));
    let mut statement = sqlite
        .prepare(&select)
        .map_err(|error| copy_error(&format!("read {table}"), &error))?;
    let mut rows = statement
        .query([])
        .map_err(|error| copy_error(&format!("read {table}"), &error))?;
    let mut batch: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut in_batch = 0_usize;
    let mut copied = 0_u64;
    while let Some(row) = rows
        .next()
        .map_err(|error| copy_error(&format!("read {table}"), &error))?
    {
        for (index, (name, kind)) in columns.iter().enumerate() {
            let value: Value = row
                .get(index)
                .map_err(|error| copy_error(&format!("read {table}.{name}"), &error))?;
            batch.push(convert(value, kind, table, name)?);
        }
        in_batch += 1;
        if in_batch == BATCH {
            copied += insert(tx, table, &names, &batch, in_batch)?;
            batch.clear();
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        copied += insert(tx, table, &names, &batch, in_batch)?;
    }
    Ok(copied)
}

/// The target table's columns and their types, in order.
fn target_columns(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
) -> Result<Vec<(String, Type)>, MetaError> {
    // A statement that returns no row still describes its columns.
    let statement = tx
        .prepare(&format!("SELECT * FROM {table} WHERE false"))
        .map_err(|error| copy_error(&format!("describe {table}"), &error))?;
    Ok(statement
        .columns()
        .iter()
        .map(|column| (column.name().to_owned(), column.type_().clone()))
        .collect())
}

/// Inserts `count` rows whose values are `values`, row after row.
fn insert(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    names: &[&str],
    values: &[Box<dyn ToSql + Sync>],
    count: usize,
) -> Result<u64, MetaError> {
    let width = names.len();
    let rows: Vec<String> = (0..count)
        .map(|row| {
            let cells: Vec<String> = (1..=width)
                .map(|column| format!("${}", row * width + column))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        names.join(", "),
        rows.join(", ")
    );
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|value| value.as_ref()).collect();
    tx.execute(&sql, &params)
        .map_err(|error| copy_error(&format!("write {table}"), &error))
}

/// A SQLite value as the PostgreSQL column of type `kind` takes it.
fn convert(
    value: Value,
    kind: &Type,
    table: &str,
    column: &str,
) -> Result<Box<dyn ToSql + Sync>, MetaError> {
    let mismatch = || {
        MetaError::Copy(format!(
            "{table}.{column}: a value of the source does not fit the target's type {kind}"
        ))
    };
    Ok(match (kind, value) {
        (&Type::INT8, Value::Integer(n)) => Box::new(n),
        (&Type::INT8, Value::Null) => Box::new(None::<i64>),
        (&Type::INT4, Value::Integer(n)) => Box::new(i32::try_from(n).map_err(|_| mismatch())?),
        (&Type::INT4, Value::Null) => Box::new(None::<i32>),
        (&Type::BOOL, Value::Integer(n)) => Box::new(n != 0),
        (&Type::BOOL, Value::Null) => Box::new(None::<bool>),
        (&Type::TEXT | &Type::VARCHAR, Value::Text(text)) => Box::new(text),
        (&Type::TEXT | &Type::VARCHAR, Value::Null) => Box::new(None::<String>),
        (&Type::BYTEA, Value::Blob(bytes)) => Box::new(bytes),
        (&Type::BYTEA, Value::Text(text)) => Box::new(text.into_bytes()),
        (&Type::BYTEA, Value::Null) => Box::new(None::<Vec<u8>>),
        _ => return Err(mismatch()),
    })
}

/// Where the source's chain stands: the end of its legacy events, and the highest `seq` ever
/// used (which may be above the newest row's).
fn chain_position(sqlite: &Connection) -> Result<(i64, i64), MetaError> {
    let legacy: i64 = sqlite
        .query_row(
            "SELECT legacy_through FROM audit_chain WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .map_err(|error| copy_error("read the chain's position", &error))?;
    let sequences: HashMap<String, i64> = sqlite
        .prepare("SELECT name, seq FROM sqlite_sequence")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(|error| copy_error("read the chain's position", &error))?;
    let newest: i64 = sqlite
        .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |row| {
            row.get(0)
        })
        .map_err(|error| copy_error("read the chain's position", &error))?;
    let last = sequences.get("events").copied().unwrap_or(0).max(newest);
    Ok((legacy, last))
}

/// A failure of the copy, naming the step.
fn copy_error(step: &str, error: &dyn std::fmt::Display) -> MetaError {
    MetaError::Copy(format!("cannot {step}: {error}"))
}
