//! Errors of opening the store, and the one mapping from database errors to core error kinds.
//!
//! [`MetaError`] is for the operator who starts the hub: it names the database file, or the
//! PostgreSQL host and database (never the URL, which may hold a password). Errors inside units
//! of work are [`CoreError`]s whose messages reach clients, so they never carry SQL, paths or
//! driver text; the cause is logged here instead. SQLite's errors go through [`classify`],
//! PostgreSQL's through [`classify_pg`], to the same kinds.

use mailroom_core::CoreError;
use postgres::error::SqlState;
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
    /// Copying a database into PostgreSQL failed or was refused; the target is unchanged.
    #[error("cannot copy the metadata into PostgreSQL: {0}")]
    Copy(String),
    /// A thread of the store could not be started.
    #[error("cannot start the metadata store's threads")]
    Thread(#[source] std::io::Error),
    /// The PostgreSQL settings cannot be used: the URL does not parse, or the CA file cannot
    /// be read.
    #[error("unusable PostgreSQL settings for the metadata store: {reason}")]
    Settings {
        /// What is wrong (without the URL's password).
        reason: String,
    },
    /// The PostgreSQL server could not be reached, or refused the connection.
    #[error("cannot connect to the metadata database {location}")]
    Connect {
        /// Host, port and database.
        location: String,
        /// What the driver said.
        #[source]
        source: postgres::Error,
    },
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

/// Maps a PostgreSQL error to a core error, logging the cause. `operation` names the store
/// method for the log line.
pub(crate) fn pg_storage(operation: &'static str) -> impl FnOnce(postgres::Error) -> CoreError {
    move |error| classify_pg(operation, &error)
}

/// Maps a PostgreSQL error to a core error as [`classify`] does SQLite's: unique violations are
/// Conflict; a lost connection, an unreachable server, a serialization failure, a deadlock or
/// a server short of resources Transient; everything else Internal.
pub(crate) fn classify_pg(operation: &'static str, error: &postgres::Error) -> CoreError {
    if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        tracing::warn!(operation, error = %error, "metadata store refused a duplicate");
        return CoreError::conflict("the change conflicts with data stored meanwhile");
    }
    if is_pg_transient(error) {
        tracing::warn!(operation, error = %error, "metadata store unavailable");
        return CoreError::transient("the metadata store is unavailable; try again later");
    }
    tracing::error!(operation, error = %error, "metadata store error");
    CoreError::internal("metadata store error")
}

/// Whether the connection itself is gone (closed, reset, terminated by the server): the
/// connection must be replaced, and trying again on a new one may succeed.
pub(crate) fn is_pg_connection_lost(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        // Class 08: connection exception; 57P01..57P03: the server shut down or terminated us.
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code);
    }
    // No SQLSTATE: an I/O error on the socket, or a connection that never opened.
    std::error::Error::source(error)
        .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some())
}

/// Whether trying again later may succeed.
fn is_pg_transient(error: &postgres::Error) -> bool {
    if is_pg_connection_lost(error) {
        return true;
    }
    error.code().is_some_and(|code| {
        // Class 53: insufficient resources (disk full, too many connections).
        code.code().starts_with("53")
            || [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::LOCK_NOT_AVAILABLE,
                SqlState::QUERY_CANCELED,
            ]
            .contains(code)
    })
}
