//! The metadata store: [`mailroom_core::MetaStore`] on SQLite ([`SqliteStore`], one hub) or on
//! PostgreSQL ([`PgStore`], several nodes on one database).
//!
//! This crate owns the schemas (`migrations/sqlite/`, `migrations/postgres/`), the rows, the
//! threads that run units of work, and the one translation from database errors to
//! [`mailroom_core::ErrorKind`]s. Every unit commits in one transaction with the audit events
//! it recorded, and the database itself enforces the invariants SQL can state: one namespace
//! for accounts and groups, a live delivery name never taken twice, and the policy version
//! moved by every policy change.
//!
//! It deliberately knows nothing of policy (who may send to whom, which transitions are legal):
//! that is `mailroom-core`'s, in the units. Rows are private; only domain types cross the
//! boundary. [`copy_to_postgres`] moves an embedded install's rows to PostgreSQL.

mod convert;
mod copy;
mod error;
mod migrate;
mod pg;
mod runner;
mod shared;
mod store;
mod tap;
mod tx;

pub use copy::{CopyReport, copy_to_postgres};
pub use error::MetaError;
pub use pg::{PgOptions, PgStore};
pub use store::{SqliteStore, StoreSettings};
