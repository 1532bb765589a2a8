//! PostgreSQL rows read column by column: the driver's side of `convert.rs`.
//!
//! The columns and their representations are SQLite's (times in nanoseconds, ids and labels as
//! text, the access policy as JSON), so the conversions of whole rows are `convert.rs`'s
//! ([`crate::convert::delivery`] and the rest, through [`Columns`]); only reading a column
//! differs, and that is here. This module does not run queries.

use mailroom_core::{AuthorizedKey, Result};
use postgres::Row;
use postgres::types::FromSql;

use crate::convert::{Columns, Stored};
use crate::error::classify_pg;

/// One column of a row, with decoding failures logged as Internal. Any type the driver
/// decodes, borrowed ones and arrays too.
pub(crate) fn column<'r, T: FromSql<'r>>(row: &'r Row, name: &'static str) -> Result<T> {
    row.try_get(name)
        .map_err(|error| classify_pg("decode", &error))
}

impl Columns for Row {
    fn read<T: Stored>(&self, name: &'static str) -> Result<T> {
        column(self, name)
    }

    fn read_text<T>(&self, name: &'static str, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
        parse(column(self, name)?)
    }
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
