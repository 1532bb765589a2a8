//! The metadata store: [`mailroom_core::MetaStore`] on SQLite.
//!
//! This crate owns the schema (`migrations/sqlite/`), the rows, and the one translation from
//! database errors to [`mailroom_core::ErrorKind`]s. Every change commits in the same
//! transaction as the audit events that describe it, and the database itself enforces the
//! invariants SQL can state: one namespace for accounts and groups, and a live delivery name
//! never taken twice.
//!
//! It deliberately knows nothing of policy (who may send to whom, which transitions are legal):
//! that is `mailroom-core`'s. Rows are private; only domain types cross the boundary.

mod batch;
mod convert;
mod error;
mod sqlite;
mod tap;

pub use error::MetaError;
pub use sqlite::{SqliteStore, StoreSettings};
