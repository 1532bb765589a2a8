//! The PostgreSQL schema's migrations: the SQL files of `migrations/postgres/`, embedded in the
//! binary and applied in order, each in its own transaction, at connect.
//!
//! They are recorded in `schema_migrations` with the SHA-256 of their text, as on SQLite, and
//! checked and applied the same way (`crate::migrate::apply_pending`): a database with a
//! migration this build does not have, or whose text differs from ours, is refused. Several nodes may start
//! at once: the whole check-and-apply runs under a session-level advisory lock, so one node
//! migrates and the others wait, then find nothing left to do. A node that dies while
//! migrating releases the lock with its connection.

use crate::migrate::{Migration, apply_pending, checksum};

use super::conn::Conn;

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "nodes",
        sql: include_str!("../../migrations/postgres/0002_nodes.sql"),
    },
    Migration {
        version: 3,
        description: "offences",
        sql: include_str!("../../migrations/postgres/0003_offences.sql"),
    },
    Migration {
        version: 4,
        description: "token methods",
        sql: include_str!("../../migrations/postgres/0004_token_methods.sql"),
    },
    Migration {
        version: 5,
        description: "e2e keys",
        sql: include_str!("../../migrations/postgres/0005_e2e_keys.sql"),
    },
    Migration {
        version: 6,
        description: "api keys",
        sql: include_str!("../../migrations/postgres/0006_api_keys.sql"),
    },
    Migration {
        version: 7,
        description: "e2e deliveries",
        sql: include_str!("../../migrations/postgres/0007_e2e_deliveries.sql"),
    },
    Migration {
        version: 8,
        description: "resumable uploads",
        sql: include_str!("../../migrations/postgres/0008_resumable_uploads.sql"),
    },
    Migration {
        version: 9,
        description: "failed deliveries",
        sql: include_str!("../../migrations/postgres/0009_failed_deliveries.sql"),
    },
    Migration {
        version: 10,
        description: "listing indexes",
        sql: include_str!("../../migrations/postgres/0010_listing_indexes.sql"),
    },
    Migration {
        version: 11,
        description: "data keys",
        sql: include_str!("../../migrations/postgres/0011_data_keys.sql"),
    },
];

/// Held while migrating: "mailmigr" in ASCII, distinct from the write lock.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_lock(7881696737288087410)";
/// Releases [`MIGRATION_LOCK`].
const MIGRATION_UNLOCK: &str = "SELECT pg_advisory_unlock(7881696737288087410)";

/// Brings the schema up to date. The error says which migration failed and why.
pub(crate) fn migrate(conn: &mut Conn) -> Result<(), String> {
    conn.batch(MIGRATION_LOCK).map_err(|e| e.to_string())?;
    let result = migrate_locked(conn);
    let unlocked = conn.batch(MIGRATION_UNLOCK).map_err(|e| e.to_string());
    result.and(unlocked)
}

fn migrate_locked(conn: &mut Conn) -> Result<(), String> {
    let sql = |e: postgres::Error| e.to_string();
    conn.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version bigint NOT NULL PRIMARY KEY, \
             description text NOT NULL, \
             sha256 text NOT NULL, \
             applied bigint NOT NULL\
         )",
    )
    .map_err(sql)?;
    let applied: Vec<(i64, String)> = conn
        .query(
            "SELECT version, sha256 FROM schema_migrations ORDER BY version",
            &[],
        )
        .map_err(sql)?
        .iter()
        .map(|row| Ok((row.try_get("version")?, row.try_get("sha256")?)))
        .collect::<Result<_, postgres::Error>>()
        .map_err(sql)?;
    apply_pending(MIGRATIONS, &applied, |migration| apply(conn, migration))
}

/// Applies one migration and records it, in one transaction.
fn apply(conn: &mut Conn, migration: &Migration) -> Result<(), postgres::Error> {
    conn.batch("BEGIN")?;
    let result = conn.batch(migration.sql).and_then(|()| {
        conn.execute(
            "INSERT INTO schema_migrations (version, description, sha256, applied) \
             VALUES ($1, $2, $3, EXTRACT(EPOCH FROM now())::bigint)",
            &[
                &migration.version,
                &migration.description,
                &checksum(migration.sql),
            ],
        )
    });
    match result {
        Ok(_) => conn.batch("COMMIT"),
        Err(error) => {
            let _ = conn.batch("ROLLBACK");
            Err(error)
        }
    }
}
