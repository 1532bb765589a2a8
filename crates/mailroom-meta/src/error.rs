//! Errors of opening the store, and the one mapping from database errors to core error kinds.
//!
//! [`MetaError`] is for the operator who starts the hub: it names the database file. Errors
//! inside units of work are [`CoreError`]s whose messages reach clients, so they never carry
//! SQL, paths or driver text; the cause is logged here instead.

use mailroom_core::CoreError;
use rusqlite::ErrorCode;

/// Opening or migrating the metadata database failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database file could not be created with owner-only permissions.
    #[error("cannot create the metadata database {location}")]
    Create {
        /// The database file.
        location: String,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or configured.
    #[error("cannot open the metadata database {location}")]
    Open {
        /// The database file, or `:memory:`.
        location: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The schema could not be brought up to date; the database keeps its last good version.
    #[error("cannot bring the metadata database {location} up to the current schema: {reason}")]
    Migrate {
        /// The database file, or `:memory:`.
        location: String,
        /// Which migration, and why.
        reason: String,
    },
    /// SQLite did not accept a setting the hub needs for durability (WAL does not work on
    /// network file systems, for example).
    #[error(
        "the metadata database {location} runs with {setting} = {actual}, but the hub needs {expected}"
    )]
    Setting {
        /// The database file.
        location: String,
        /// The PRAGMA name.
        setting: &'static str,
        /// The value the hub needs.
        expected: &'static str,
        /// The value SQLite reported.
        actual: String,
    },
    /// A thread of the store could not be started.
    #[error("cannot start the metadata store's threads")]
    Thread(#[source] std::io::Error),
}

/// SQLite extended result code of a UNIQUE constraint violation.
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;
/// SQLite extended result code of a PRIMARY KEY constraint violation.
const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;

/// Maps a database error to a core error, logging the cause. `operation` names the store
/// method for the log line.
pub(crate) fn storage(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> CoreError {
    move |error| classify(operation, error)
}

/// Maps a database error to a core error: unique violations are Conflict, busy or full
/// databases Transient, everything else Internal.
pub(crate) fn classify(operation: &'static str, error: rusqlite::Error) -> CoreError {
    if is_unique_violation(&error) {
        // Call sites that expect a particular violation catch it first with a better sentence;
        // this is the fallback for the ones nobody expected.
        tracing::warn!(operation, error = %error, "metadata store refused a duplicate");
        return CoreError::conflict("the change conflicts with data stored meanwhile");
    }
    if is_transient(&error) {
        tracing::warn!(operation, error = %error, "metadata store busy");
        return CoreError::transient("the metadata store is busy; try again later");
    }
    tracing::error!(operation, error = %error, "metadata store error");
    CoreError::internal("metadata store error")
}

/// A stored value that does not parse back into its domain type: the database holds something
/// this version did not write. Logged, and Internal to the caller.
pub(crate) fn corrupt(column: &'static str, error: &CoreError) -> CoreError {
    tracing::error!(column, error = %error, "metadata store holds a value that does not parse");
    CoreError::internal("metadata store error")
}

/// A domain value that cannot be stored (a time outside 1677..2262, a size above 2^63).
pub(crate) fn unstorable(what: &'static str) -> CoreError {
    tracing::error!(what, "value out of the range the metadata store can hold");
    CoreError::internal("metadata store error")
}

/// Whether the error is a UNIQUE or PRIMARY KEY violation.
pub(crate) fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Whether a UNIQUE violation names `table.column` (SQLite's message lists the columns).
pub(crate) fn violates(error: &rusqlite::Error, column: &str) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(_, Some(message)) if message.contains(column))
}

/// Whether trying again later may succeed: a busy or locked database, or a full disk.
fn is_transient(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.code,
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull
            )
    )
}
