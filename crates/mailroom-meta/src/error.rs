//! Errors of opening the store, and the one mapping from database errors to core error kinds.
//!
//! [`MetaError`] is for the operator who starts the hub: it names the database file. Errors of
//! the [`mailroom_core::MetaStore`] methods are [`CoreError`]s whose messages reach clients, so
//! they never carry SQL, paths or driver text; the cause is logged here instead.

use mailroom_core::CoreError;

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
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date; the database keeps its last good version.
    #[error("cannot bring the metadata database {location} up to the current schema")]
    Migrate {
        /// The database file, or `:memory:`.
        location: String,
        /// What the migrator said.
        #[source]
        source: sqlx::migrate::MigrateError,
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
}

/// SQLite primary result code: the database file is locked by another connection.
const SQLITE_BUSY: i32 = 5;
/// SQLite primary result code: a table is locked within this connection's shared cache.
const SQLITE_LOCKED: i32 = 6;
/// SQLite primary result code: the disk is full.
const SQLITE_FULL: i32 = 13;

/// Maps a database error to a core error, logging the cause. `operation` names the store
/// method for the log line.
pub(crate) fn storage(operation: &'static str) -> impl FnOnce(sqlx::Error) -> CoreError {
    move |error| classify(operation, error)
}

/// Maps a database error to a core error: unique violations are Conflict, busy or full
/// databases Transient, everything else Internal.
pub(crate) fn classify(operation: &'static str, error: sqlx::Error) -> CoreError {
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
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Whether a UNIQUE violation names `table.column` (SQLite's message lists the columns).
pub(crate) fn violates(error: &sqlx::Error, column: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.message().contains(column))
}

/// Whether trying again later may succeed: a busy or locked database, a full disk, or no
/// connection free in time.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            // Extended result codes keep the primary code in the low byte.
            .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED | SQLITE_FULL)),
        _ => false,
    }
}
