//! The schema's migrations: the SQL files of `migrations/sqlite/`, embedded in the binary and
//! applied in order, each in its own transaction.
//!
//! `schema_migrations` records what was applied with the SHA-256 of its text, so a migration
//! edited after release is refused instead of silently differing between databases, and a
//! database written by a newer build is refused instead of misread. Databases from before
//! this table (the sqlx era, `_sqlx_migrations`) are adopted: the versions sqlx applied are
//! recorded as applied, with the text this build has for them. The record, its checks and the
//! order of application ([`Migration`], [`checksum`], [`apply_pending`]) serve the PostgreSQL
//! store too (`pg/migrate.rs`), whose migrations are a list of their own.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// One migration: its version, a description and its SQL.
pub(crate) struct Migration {
    /// Its number, from 1, in the order of application.
    pub(crate) version: i64,
    /// A few words, recorded in `schema_migrations`.
    pub(crate) description: &'static str,
    /// Its SQL, whose SHA-256 is recorded.
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial",
        sql: include_str!("../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "inline blobs",
        sql: include_str!("../migrations/sqlite/0002_inline_blobs.sql"),
    },
    Migration {
        version: 3,
        description: "delivery name indexes",
        sql: include_str!("../migrations/sqlite/0003_delivery_name_indexes.sql"),
    },
    Migration {
        version: 4,
        description: "delivery state indexes",
        sql: include_str!("../migrations/sqlite/0004_delivery_state_indexes.sql"),
    },
    Migration {
        version: 5,
        description: "audit chain",
        sql: include_str!("../migrations/sqlite/0005_audit_chain.sql"),
    },
    Migration {
        version: 6,
        description: "access",
        sql: include_str!("../migrations/sqlite/0006_access.sql"),
    },
    Migration {
        version: 7,
        description: "tokens",
        sql: include_str!("../migrations/sqlite/0007_tokens.sql"),
    },
    Migration {
        version: 8,
        description: "policy version",
        sql: include_str!("../migrations/sqlite/0008_policy_version.sql"),
    },
    Migration {
        version: 9,
        description: "live indexes",
        sql: include_str!("../migrations/sqlite/0009_live_indexes.sql"),
    },
    Migration {
        version: 10,
        description: "inline blobs without rowid",
        sql: include_str!("../migrations/sqlite/0010_inline_blobs_without_rowid.sql"),
    },
    Migration {
        version: 11,
        description: "job queue",
        sql: include_str!("../migrations/sqlite/0011_jobs.sql"),
    },
    Migration {
        version: 12,
        description: "quarantine",
        sql: include_str!("../migrations/sqlite/0012_quarantine.sql"),
    },
    Migration {
        version: 13,
        description: "nodes",
        sql: include_str!("../migrations/sqlite/0013_nodes.sql"),
    },
    Migration {
        version: 14,
        description: "offences",
        sql: include_str!("../migrations/sqlite/0014_offences.sql"),
    },
    Migration {
        version: 15,
        description: "token methods",
        sql: include_str!("../migrations/sqlite/0015_token_methods.sql"),
    },
    Migration {
        version: 16,
        description: "e2e keys",
        sql: include_str!("../migrations/sqlite/0016_e2e_keys.sql"),
    },
    Migration {
        version: 17,
        description: "api keys",
        sql: include_str!("../migrations/sqlite/0017_api_keys.sql"),
    },
    Migration {
        version: 18,
        description: "e2e deliveries",
        sql: include_str!("../migrations/sqlite/0018_e2e_deliveries.sql"),
    },
    Migration {
        version: 19,
        description: "resumable uploads",
        sql: include_str!("../migrations/sqlite/0019_resumable_uploads.sql"),
    },
    Migration {
        version: 20,
        description: "failed deliveries",
        sql: include_str!("../migrations/sqlite/0020_failed_deliveries.sql"),
    },
    Migration {
        version: 21,
        description: "listing indexes",
        sql: include_str!("../migrations/sqlite/0021_listing_indexes.sql"),
    },
    Migration {
        version: 22,
        description: "data keys",
        sql: include_str!("../migrations/sqlite/0022_data_keys.sql"),
    },
];

/// Brings the schema up to date. The error says which migration failed and why.
pub(crate) fn migrate(conn: &Connection) -> Result<(), String> {
    let sql = |e: rusqlite::Error| e.to_string();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version INTEGER NOT NULL PRIMARY KEY, \
             description TEXT NOT NULL, \
             sha256 TEXT NOT NULL, \
             applied INTEGER NOT NULL\
         ) STRICT",
    )
    .map_err(sql)?;
    adopt_sqlx(conn).map_err(sql)?;
    let applied: Vec<(i64, String)> = {
        let mut statement = conn
            .prepare("SELECT version, sha256 FROM schema_migrations ORDER BY version")
            .map_err(sql)?;
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?
    };
    apply_pending(MIGRATIONS, &applied, |migration| apply(conn, migration))
}

/// Applies one migration and records it, in one transaction.
fn apply(conn: &Connection, migration: &Migration) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = conn.execute_batch(migration.sql).and_then(|()| {
        conn.execute(
            "INSERT INTO schema_migrations (version, description, sha256, applied) \
             VALUES (?1, ?2, ?3, strftime('%s', 'now'))",
            params![
                migration.version,
                migration.description,
                checksum(migration.sql)
            ],
        )
    });
    match result {
        Ok(_) => conn.execute_batch("COMMIT"),
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

/// Records the migrations an sqlx-era build applied, once, when `schema_migrations` is new.
fn adopt_sqlx(conn: &Connection) -> rusqlite::Result<()> {
    let ours: i64 = conn.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))?;
    let theirs: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if ours > 0 || theirs.is_none() {
        return Ok(());
    }
    let versions: Vec<i64> = {
        let mut statement = conn
            .prepare("SELECT version FROM _sqlx_migrations WHERE success = 1 ORDER BY version")?;
        statement
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?
    };
    for version in versions {
        if let Some(migration) = MIGRATIONS.iter().find(|m| m.version == version) {
            conn.execute(
                "INSERT INTO schema_migrations (version, description, sha256, applied) \
                 VALUES (?1, ?2, ?3, strftime('%s', 'now'))",
                params![version, migration.description, checksum(migration.sql)],
            )?;
        }
    }
    Ok(())
}

/// Checks what the database recorded (`applied`: the `(version, sha256)` of every recorded
/// migration) against `migrations` ([`check_applied`]), then applies the migrations it lacks
/// with `apply`, oldest first. The error says which migration failed and why.
pub(crate) fn apply_pending<E: std::fmt::Display>(
    migrations: &[Migration],
    applied: &[(i64, String)],
    mut apply: impl FnMut(&Migration) -> Result<(), E>,
) -> Result<(), String> {
    check_applied(migrations, applied)?;
    for migration in pending(migrations, applied) {
        apply(migration).map_err(|e| {
            format!(
                "migration {} ({}) failed: {e}",
                migration.version, migration.description
            )
        })?;
    }
    Ok(())
}

/// Refuses a database that recorded a migration this build does not have (a newer build wrote
/// it) or one whose text differs from ours (edited after it was applied). `applied` is the
/// `(version, sha256)` of every recorded migration.
fn check_applied(migrations: &[Migration], applied: &[(i64, String)]) -> Result<(), String> {
    for (version, sha256) in applied {
        match migrations.iter().find(|m| m.version == *version) {
            None => {
                return Err(format!(
                    "it was written by a newer Mailroom (schema version {version}); run that version or restore a backup"
                ));
            }
            Some(migration) if checksum(migration.sql) != *sha256 => {
                return Err(format!(
                    "migration {version} ({}) differs from the one applied to this database",
                    migration.description
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The migrations not recorded in `applied`, oldest first.
fn pending<'m>(
    migrations: &'m [Migration],
    applied: &[(i64, String)],
) -> impl Iterator<Item = &'m Migration> {
    migrations
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
}

/// SHA-256 of a migration's text, lower-case hex.
pub(crate) fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}
