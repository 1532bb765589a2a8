//! [`PgTx`]: a unit of work's view of the PostgreSQL database, inside the transaction the
//! store opened for it. It answers exactly as `SqliteTx` does (SQLite is the reference): the
//! same errors, orderings and rules for live states, inline blobs, the policy version, the job
//! queue's depth and the audit chain. What the two say and decide alike (the words of
//! refusals, the principal kinds, the audit chain's next records) is `shared.rs`'s; this file
//! holds the PostgreSQL statements.
//!
//! Every statement is prepared once per connection and cached, and every value is bound; the
//! only SQL built at run time joins fixed fragments (the filters of delivery and event
//! queries). Each call is as few round trips as the driver allows: rows of one call go in one
//! statement (`unnest` of arrays), and checks that SQLite makes with a second statement ride
//! along in a common table expression where that is simple.
//!
//! **A refused call changes nothing and leaves the transaction usable.** In PostgreSQL a failed
//! statement aborts the whole transaction, so no call here relies on a statement failing:
//! names and members are checked before anything is written (as on SQLite); inserts that may
//! meet a taken key use `ON CONFLICT DO NOTHING`, and when a row was refused the rows the same
//! statement did insert are deleted again before the call answers Conflict; a transition or a
//! rename that would take a live name checks for the clash in the same statement and moves
//! nothing. These checks are exact because every write unit holds the store's advisory lock
//! (see the module above): no other writer runs between a check and its write. Should a
//! statement fail all the same, the transaction is marked failed: later calls answer the same
//! error without sending anything, and the unit cannot commit.
//!
//! Policy is not decided here: which transitions are allowed, who may rename, and which events
//! to write all come from the unit.

use std::borrow::Cow;
use std::collections::HashSet;

use mailroom_core::{
    Account, AccountName, AccountUpdate, AuditRecord, AuthorizedKey, Ban, BanSubject, BlobId,
    ChainHead, CoreError, DataKeyRecord, Delivery, DeliveryId, DeliveryQuery, DeliveryState, Event,
    EventQuery, FileName, Group, InboxUsage, Job, JobCounts, JobQuery, JobState, Result, Route,
    RouteEffect, TokenRecord, Tx,
};
use mailroom_core::{
    ApiKeyRecord, LiveSessionRecord, NodeId, NodeInfo, NodeRecord, ResumableRecord,
};
use postgres::Row;
use postgres::types::ToSql;
use time::OffsetDateTime;
use uuid::Uuid;

use super::conn::Conn;
use super::convert::{column, joined_key};
use crate::convert::{
    self, access_to_json, account_columns, account_name, audit_columns, delivery_columns,
    epoch_to_db, event_columns, job_columns, nanos, nanos_saturating, parsed, seq_from_db,
    seq_to_db, size_to_db, time_from_nanos, token_columns, totp_to_db, unsigned,
};
use crate::convert::{api_key_columns, live_session_columns, node_columns, resumable_columns};
use crate::error::{classify_pg, corrupt};
use crate::shared::{self, Principal, live_states, no_account, no_group, order_by};

/// A bound parameter.
type Param<'a> = &'a (dyn ToSql + Sync);

/// A unit's transaction on one connection.
pub(crate) struct PgTx<'c> {
    conn: &'c mut Conn,
    writable: bool,
    /// The audit records this unit wrote, for the event tap once the commit holding them is
    /// done.
    pub(crate) recorded: Vec<AuditRecord>,
    /// The error of the first statement that failed: PostgreSQL has aborted the transaction,
    /// so nothing more is sent and the unit must not commit.
    pub(crate) failed: Option<CoreError>,
}

impl<'c> PgTx<'c> {
    /// The view of a unit on `conn`, inside a transaction the caller began.
    pub(crate) fn new(conn: &'c mut Conn, writable: bool) -> PgTx<'c> {
        PgTx {
            conn,
            writable,
            recorded: Vec::new(),
            failed: None,
        }
    }

    fn writing(&self) -> Result<()> {
        shared::writing(self.writable)
    }

    /// Sends one statement, unless an earlier one failed; a failure is classified, logged and
    /// kept.
    fn send<T>(
        &mut self,
        operation: &'static str,
        work: impl FnOnce(&mut Conn) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        work(self.conn).map_err(|error| {
            let error = classify_pg(operation, &error);
            self.failed = Some(error.clone());
            error
        })
    }

    /// Runs a statement and returns its rows.
    fn query(
        &mut self,
        operation: &'static str,
        sql: impl Into<Cow<'static, str>>,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>> {
        self.send(operation, |conn| conn.query(sql, params))
    }

    /// Runs a statement that changes rows; returns how many.
    fn execute(
        &mut self,
        operation: &'static str,
        sql: impl Into<Cow<'static, str>>,
        params: &[Param<'_>],
    ) -> Result<u64> {
        self.send(operation, |conn| conn.execute(sql, params))
    }

    /// Runs a query and converts each row.
    fn rows<T>(
        &mut self,
        operation: &'static str,
        sql: impl Into<Cow<'static, str>>,
        params: &[Param<'_>],
        convert: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.query(operation, sql, params)?
            .iter()
            .map(convert)
            .collect()
    }

    /// Runs a query for at most one row and converts it.
    fn row<T>(
        &mut self,
        operation: &'static str,
        sql: impl Into<Cow<'static, str>>,
        params: &[Param<'_>],
        convert: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.query(operation, sql, params)?
            .first()
            .map(convert)
            .transpose()
    }

    /// Runs a query that always returns one row (an aggregate) and converts it.
    fn one<T>(
        &mut self,
        operation: &'static str,
        sql: &'static str,
        params: &[Param<'_>],
        convert: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        self.row(operation, sql, params, convert)?.ok_or_else(|| {
            tracing::error!(
                operation,
                "a query that always answers one row answered none"
            );
            CoreError::internal("metadata store error")
        })
    }

    /// Whether a row matches (`SELECT 1 …`).
    fn exists(
        &mut self,
        operation: &'static str,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<bool> {
        Ok(!self.query(operation, sql, params)?.is_empty())
    }

    /// What holds `name` in the shared namespace, if anything.
    fn name_kind(
        &mut self,
        name: &AccountName,
        operation: &'static str,
    ) -> Result<Option<Principal>> {
        let kind = self.row(
            operation,
            "SELECT kind FROM principals WHERE name = $1",
            &[&name.as_str()],
            |row| column::<String>(row, "kind"),
        )?;
        kind.map(|kind| Principal::parse(&kind)).transpose()
    }

    /// Fails with Conflict naming what holds `name` in the shared namespace, if anything.
    fn name_free(&mut self, name: &AccountName, operation: &'static str) -> Result<()> {
        if let Some(holder) = self.name_kind(name, operation)? {
            return Err(shared::name_held(name, holder));
        }
        Ok(())
    }

    /// Takes `name` in the shared namespace of accounts and groups, or fails with Conflict
    /// naming what holds it; the primary key of `principals` backs the check up.
    fn claim_name(
        &mut self,
        name: &AccountName,
        kind: Principal,
        operation: &'static str,
    ) -> Result<()> {
        self.name_free(name, operation)?;
        let claimed = self.execute(
            operation,
            "INSERT INTO principals (name, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&name.as_str(), &kind.as_str()],
        )?;
        if claimed == 0 {
            return Err(shared::name_taken(name));
        }
        Ok(())
    }

    /// Deletes an account or a group: if `name` is a principal of `kind`, runs `deletes` in
    /// order, each bound to `name` (the rows that name it, then the principal's own row, last),
    /// and frees the name when that last delete found the row. Returns whether it did. The
    /// kind is checked first, so a name of the other kind (or none) loses nothing.
    fn delete_principal(
        &mut self,
        name: &AccountName,
        deletes: &[&'static str],
        kind: Principal,
        operation: &'static str,
    ) -> Result<bool> {
        if self.name_kind(name, operation)? != Some(kind) {
            return Ok(false);
        }
        let mut last = 0;
        for &sql in deletes {
            last = self.execute(operation, sql, &[&name.as_str()])?;
        }
        if last == 0 {
            return Ok(false);
        }
        self.execute(
            operation,
            "DELETE FROM principals WHERE name = $1 AND kind = $2",
            &[&name.as_str(), &kind.as_str()],
        )?;
        Ok(true)
    }

    /// Writes an account's keys in their order, in one statement.
    fn insert_keys(&mut self, account: &AccountName, keys: &[AuthorizedKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let algorithms: Vec<&str> = keys.iter().map(|k| k.algorithm.as_str()).collect();
        let blobs: Vec<&[u8]> = keys.iter().map(|k| k.blob.as_slice()).collect();
        let comments: Vec<&str> = keys.iter().map(|k| k.comment.as_str()).collect();
        self.execute(
            "insert_keys",
            "INSERT INTO account_keys (account, position, algorithm, blob, comment) \
             SELECT $1, k.position - 1, k.algorithm, k.blob, k.comment \
             FROM unnest($2::text[], $3::bytea[], $4::text[]) WITH ORDINALITY \
             AS k (algorithm, blob, comment, position)",
            &[&account.as_str(), &algorithms, &blobs, &comments],
        )?;
        Ok(())
    }

    /// Fails with NotFound naming the first of `members` that is no account (groups do not
    /// nest). Called before a group's rows are written, so a refusal writes nothing.
    fn check_members(&mut self, group: &AccountName, members: &[AccountName]) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = members.iter().map(AccountName::as_str).collect();
        let accounts: HashSet<String> = self
            .rows(
                "check_members",
                "SELECT name FROM principals WHERE name = ANY($1::text[]) AND kind = 'account'",
                &[&names],
                |row| column(row, "name"),
            )?
            .into_iter()
            .collect();
        match members.iter().find(|m| !accounts.contains(m.as_str())) {
            Some(member) => Err(shared::no_member(group, member)),
            None => Ok(()),
        }
    }

    /// Writes a group's members, checked already by [`PgTx::check_members`]; a member listed
    /// twice is stored once.
    fn insert_members(&mut self, group: &AccountName, members: &[AccountName]) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = members.iter().map(AccountName::as_str).collect();
        self.execute(
            "insert_members",
            "INSERT INTO group_members (group_name, member) \
             SELECT $1, m.member FROM unnest($2::text[]) AS m (member) \
             ON CONFLICT (group_name, member) DO NOTHING",
            &[&group.as_str(), &names],
        )?;
        Ok(())
    }

    /// Deletes the rows an all-or-nothing insert did insert (`undo`, bound to their keys),
    /// after another row of the same call was refused.
    fn undo(&mut self, operation: &'static str, undo: &'static str, keys: &[String]) -> Result<()> {
        if !keys.is_empty() {
            self.execute(operation, undo, &[&keys])?;
        }
        Ok(())
    }

    /// Why `delivery` was refused by `insert_deliveries`: its id is taken, or its live name.
    fn delivery_conflict(&mut self, delivery: &Delivery) -> Result<CoreError> {
        let id_taken = self.exists(
            "insert_deliveries",
            "SELECT 1 FROM deliveries WHERE id = $1",
            &[&delivery.id.to_string()],
        )?;
        Ok(if id_taken {
            shared::delivery_exists(&delivery.id)
        } else {
            shared::live_name_taken(delivery)
        })
    }
}

/// The position of the first key that an `INSERT … ON CONFLICT DO NOTHING RETURNING key`
/// refused, given the keys it returned (each returned key stands for one row, in the order
/// given: a key given twice was inserted at most once).
fn first_refused<'k>(
    keys: impl IntoIterator<Item = &'k str>,
    inserted: &[String],
) -> Option<usize> {
    let mut left: HashSet<&str> = inserted.iter().map(String::as_str).collect();
    keys.into_iter().position(|key| !left.remove(key))
}

/// Accounts from rows of accounts joined with their keys, ordered by name and key position.
fn accounts_from_rows(rows: &[Row]) -> Result<Vec<Account>> {
    let mut accounts: Vec<Account> = Vec::new();
    for row in rows {
        let name: &str = column(row, "name")?;
        if accounts
            .last()
            .is_none_or(|last| last.name.as_str() != name)
        {
            accounts.push(convert::account(row, Vec::new())?);
        }
        if let (Some(key), Some(last)) = (joined_key(row)?, accounts.last_mut()) {
            last.keys.push(key);
        }
    }
    Ok(accounts)
}

/// Groups from rows of groups joined with their members, ordered by name and member.
fn groups_from_rows(rows: &[Row]) -> Result<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    for row in rows {
        let name = account_name(row, "name")?;
        if groups.last().is_none_or(|last| last.name != name) {
            groups.push(Group {
                name,
                members: Vec::new(),
            });
        }
        let member: Option<&str> = column(row, "member")?;
        if let (Some(member), Some(last)) = (member, groups.last_mut()) {
            let member = AccountName::parse(member).map_err(|e| corrupt("member", &e))?;
            last.members.push(member);
        }
    }
    Ok(groups)
}

/// One row of each delivery, column by column, as `unnest` takes them.
struct DeliveryColumns<'d> {
    id: Vec<String>,
    batch_id: Vec<String>,
    sender: Vec<&'d str>,
    recipient: Vec<&'d str>,
    target: Vec<&'d str>,
    name: Vec<&'d str>,
    size: Vec<i64>,
    sha256: Vec<&'d str>,
    blob_id: Vec<&'d str>,
    state: Vec<&'static str>,
    created: Vec<i64>,
    updated: Vec<i64>,
    e2e: Vec<bool>,
}

impl<'d> DeliveryColumns<'d> {
    fn of(deliveries: &'d [Delivery]) -> Result<Self> {
        let mut columns = DeliveryColumns {
            id: Vec::with_capacity(deliveries.len()),
            batch_id: Vec::with_capacity(deliveries.len()),
            sender: Vec::with_capacity(deliveries.len()),
            recipient: Vec::with_capacity(deliveries.len()),
            target: Vec::with_capacity(deliveries.len()),
            name: Vec::with_capacity(deliveries.len()),
            size: Vec::with_capacity(deliveries.len()),
            sha256: Vec::with_capacity(deliveries.len()),
            blob_id: Vec::with_capacity(deliveries.len()),
            state: Vec::with_capacity(deliveries.len()),
            created: Vec::with_capacity(deliveries.len()),
            updated: Vec::with_capacity(deliveries.len()),
            e2e: Vec::with_capacity(deliveries.len()),
        };
        for delivery in deliveries {
            columns.id.push(delivery.id.to_string());
            columns.batch_id.push(delivery.batch_id.to_string());
            columns.sender.push(delivery.sender.as_str());
            columns.recipient.push(delivery.recipient.as_str());
            columns.target.push(delivery.target.as_str());
            columns.name.push(delivery.name.as_str());
            columns.size.push(size_to_db(delivery.size)?);
            columns.sha256.push(delivery.sha256.as_str());
            columns.blob_id.push(delivery.blob_id.as_str());
            columns.state.push(delivery.state.as_str());
            columns.created.push(nanos(delivery.created)?);
            columns.updated.push(nanos(delivery.updated)?);
            columns.e2e.push(delivery.e2e);
        }
        Ok(columns)
    }
}

/// Inserts deliveries, skipping any whose id or live name is taken, and the inline blob when
/// every delivery went in; answers the ids inserted and whether the blob was.
const INSERT_DELIVERIES: &str = concat!(
    "WITH added AS (INSERT INTO deliveries (",
    delivery_columns!(),
    ") SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::bigint[], \
     $12::bigint[], $13::boolean[]) ON CONFLICT DO NOTHING RETURNING id), \
     kept AS (INSERT INTO inline_blobs (blob_id, content) SELECT $14::text, $15::bytea \
     WHERE $14::text IS NOT NULL AND (SELECT count(*) FROM added) = $16::bigint \
     ON CONFLICT DO NOTHING RETURNING blob_id) \
     SELECT ARRAY(SELECT id FROM added) AS added, (SELECT count(*) FROM kept) AS kept"
);

/// Moves a delivery if it is in one of the states `$4`, unless the move would take a live name
/// (`$5`: the target state is live); when `$6` (the target state keeps no content) removes the
/// inline blob no other kept delivery references. Answers the rows moved and whether a live
/// name was in the way.
const TRANSITION: &str = concat!(
    "WITH target AS (SELECT id, recipient, sender, name FROM deliveries ",
    "WHERE id = $3 AND state = ANY($4::text[])), ",
    "clash AS (SELECT 1 FROM deliveries o JOIN target t ON o.recipient = t.recipient ",
    "AND o.sender = t.sender AND o.name = t.name AND o.id <> t.id ",
    "WHERE $5::boolean AND o.state IN ",
    live_states!(),
    " LIMIT 1), ",
    "moved AS (UPDATE deliveries d SET state = $1, updated = $2 FROM target t ",
    "WHERE d.id = t.id AND NOT EXISTS (SELECT 1 FROM clash) RETURNING d.id, d.blob_id), ",
    "gone AS (DELETE FROM inline_blobs b USING moved m WHERE $6::boolean ",
    "AND b.blob_id = m.blob_id AND NOT EXISTS (SELECT 1 FROM deliveries x ",
    "WHERE x.blob_id = b.blob_id AND x.id <> m.id AND (x.state IN ",
    live_states!(),
    " OR x.state = 'quarantined'))) ",
    "SELECT (SELECT count(*) FROM moved) AS moved, EXISTS (SELECT 1 FROM clash) AS clash"
);

/// Renames a live delivery unless the name is live between the same sender and recipient;
/// answers whether the delivery is live and whether the name was in the way.
const RENAME: &str = concat!(
    "WITH target AS (SELECT id, recipient, sender FROM deliveries WHERE id = $2 AND state IN ",
    live_states!(),
    "), clash AS (SELECT 1 FROM deliveries o JOIN target t ON o.recipient = t.recipient ",
    "AND o.sender = t.sender AND o.id <> t.id WHERE o.name = $1 AND o.state IN ",
    live_states!(),
    " LIMIT 1), ",
    "renamed AS (UPDATE deliveries d SET name = $1 FROM target t ",
    "WHERE d.id = t.id AND NOT EXISTS (SELECT 1 FROM clash) RETURNING d.id) ",
    "SELECT (SELECT count(*) FROM target) AS found, EXISTS (SELECT 1 FROM clash) AS clash"
);

/// The chain's head, read inside the write transaction, which holds the store's advisory lock:
/// the newest row's seq and hash, the highest seq ever used, and whether any of the ids `$1`
/// is recorded already.
const CHAIN_HEAD: &str = "SELECT (SELECT seq FROM events ORDER BY seq DESC LIMIT 1) AS last_seq, \
     (SELECT hash FROM events ORDER BY seq DESC LIMIT 1) AS last_hash, \
     (SELECT last_seq FROM audit_chain WHERE id = 1) AS used_seq, \
     EXISTS (SELECT 1 FROM events WHERE id = ANY($1::text[])) AS taken";

/// Appends chained events and moves the highest seq ever used to `$13`, in one statement.
const INSERT_EVENTS: &str = concat!(
    "WITH added AS (INSERT INTO events (",
    audit_columns!(),
    ") SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]) \
     RETURNING seq) \
     UPDATE audit_chain SET last_seq = $13 WHERE id = 1"
);

/// Queues jobs, skipping any whose id is taken; answers the ids queued.
const INSERT_JOBS: &str = concat!(
    "INSERT INTO jobs (",
    job_columns!(),
    ") SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[]) \
     ON CONFLICT DO NOTHING RETURNING id"
);

/// Stores tokens, skipping any whose hash is taken; answers the hashes stored.
const INSERT_TOKENS: &str = concat!(
    "INSERT INTO tokens (",
    token_columns!(),
    ") SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::bigint[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[]) \
     ON CONFLICT DO NOTHING RETURNING hash"
);

/// Stores an API key when its account exists and its id is free; answers its id if stored.
const INSERT_API_KEY: &str = concat!(
    "INSERT INTO api_keys (",
    api_key_columns!(),
    ") SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::bigint, \
     $8::bigint WHERE EXISTS (SELECT 1 FROM accounts WHERE name = $2::text) \
     ON CONFLICT DO NOTHING RETURNING id"
);

/// Deletes the tokens expired at `$1`; answers how many, and the logins left with none (the
/// statement sees the tokens as they were, so the ones left are those expiring later).
const DELETE_EXPIRED_TOKENS: &str = "WITH gone AS (DELETE FROM tokens WHERE expires <= $1 \
     RETURNING session) \
     SELECT (SELECT count(*) FROM gone) AS deleted, \
     ARRAY(SELECT DISTINCT g.session FROM gone g WHERE NOT EXISTS \
     (SELECT 1 FROM tokens t WHERE t.session = g.session AND t.expires > $1) \
     ORDER BY 1) AS ended";

impl Tx for PgTx<'_> {
    fn writable(&self) -> bool {
        self.writable
    }

    fn policy_version(&mut self) -> Result<u64> {
        let version: i64 = self.one(
            "policy_version",
            "SELECT version FROM policy_version WHERE id = 1",
            &[],
            |row| column(row, "version"),
        )?;
        u64::try_from(version)
            .map_err(|_| corrupt("policy_version", &CoreError::invalid("negative")))
    }

    fn account(&mut self, name: &AccountName) -> Result<Option<Account>> {
        let rows = self.query(
            "account",
            concat!(
                "SELECT ",
                account_columns!(),
                ", algorithm, blob, comment FROM accounts ",
                "LEFT JOIN account_keys ON account = name WHERE name = $1 ORDER BY position"
            ),
            &[&name.as_str()],
        )?;
        Ok(accounts_from_rows(&rows)?.pop())
    }

    fn accounts(&mut self) -> Result<Vec<Account>> {
        let rows = self.query(
            "accounts",
            concat!(
                "SELECT ",
                account_columns!(),
                ", algorithm, blob, comment FROM accounts ",
                "LEFT JOIN account_keys ON account = name ORDER BY name, position"
            ),
            &[],
        )?;
        accounts_from_rows(&rows)
    }

    fn insert_account(&mut self, account: &Account) -> Result<()> {
        const OP: &str = "insert_account";
        self.writing()?;
        self.claim_name(&account.name, Principal::Account, OP)?;
        let (created, epoch) = (nanos(account.created)?, epoch_to_db(account.token_epoch)?);
        let access = access_to_json(&account.access);
        let totp = totp_to_db(account.totp.as_ref());
        let e2e_keys = convert::e2e_keys_to_json(&account.e2e_keys)?;
        self.execute(
            OP,
            "INSERT INTO accounts (name, kind, disabled, password_hash, created, access, \
             totp_secret, totp_last_step, totp_recovery, token_epoch, e2e_keys) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &account.name.as_str(),
                &account.kind.as_str(),
                &account.disabled,
                &account.password_hash.as_deref(),
                &created,
                &access,
                &totp.secret,
                &totp.last_step,
                &totp.recovery,
                &epoch,
                &e2e_keys,
            ],
        )?;
        self.insert_keys(&account.name, &account.keys)
    }

    fn update_account(&mut self, name: &AccountName, update: &AccountUpdate) -> Result<()> {
        const OP: &str = "update_account";
        self.writing()?;
        // One statement per field that is set: a field the update leaves alone is never
        // written, so nothing is rewritten from a copy read earlier.
        if !self.exists(
            OP,
            "SELECT 1 FROM accounts WHERE name = $1",
            &[&name.as_str()],
        )? {
            return Err(no_account(name));
        }
        if let Some(disabled) = update.disabled {
            self.execute(
                OP,
                "UPDATE accounts SET disabled = $1 WHERE name = $2 AND disabled <> $1",
                &[&disabled, &name.as_str()],
            )?;
        }
        if let Some(hash) = &update.password_hash {
            self.execute(
                OP,
                "UPDATE accounts SET password_hash = $1 WHERE name = $2",
                &[&hash.as_deref(), &name.as_str()],
            )?;
        }
        if let Some(access) = &update.access {
            self.execute(
                OP,
                "UPDATE accounts SET access = $1 WHERE name = $2 AND access <> $1",
                &[&access_to_json(access), &name.as_str()],
            )?;
        }
        if let Some(keys) = &update.keys {
            self.execute(
                OP,
                "DELETE FROM account_keys WHERE account = $1",
                &[&name.as_str()],
            )?;
            self.insert_keys(name, keys)?;
        }
        if let Some(keys) = &update.e2e_keys {
            self.execute(
                OP,
                "UPDATE accounts SET e2e_keys = $1 WHERE name = $2",
                &[&convert::e2e_keys_to_json(keys)?, &name.as_str()],
            )?;
        }
        if let Some(totp) = &update.totp {
            // A new enrolment starts with no step used; its secret and codes replace the old.
            let totp = totp_to_db(totp.as_ref());
            self.execute(
                OP,
                "UPDATE accounts SET totp_secret = $1, totp_recovery = $2, totp_last_step = NULL \
                 WHERE name = $3",
                &[&totp.secret, &totp.recovery, &name.as_str()],
            )?;
        }
        if update.revoke_tokens {
            self.execute(
                OP,
                "UPDATE accounts SET token_epoch = token_epoch + 1 WHERE name = $1",
                &[&name.as_str()],
            )?;
        }
        Ok(())
    }

    fn delete_account(&mut self, name: &AccountName) -> Result<()> {
        const OP: &str = "delete_account";
        self.writing()?;
        // Checked inside the write transaction, under the store's lock, so no upload can land
        // between the check and the delete.
        let live: i64 = self.one(
            OP,
            concat!(
                "SELECT COUNT(*) AS n FROM deliveries WHERE (recipient = $1 OR sender = $1) ",
                "AND state IN ",
                live_states!()
            ),
            &[&name.as_str()],
            |row| column(row, "n"),
        )?;
        if live > 0 {
            return Err(shared::deliveries_live(name, live));
        }
        let deleted = self.delete_principal(
            name,
            &[
                "DELETE FROM routes WHERE from_name = $1 OR to_name = $1",
                "DELETE FROM group_members WHERE member = $1",
                "DELETE FROM account_keys WHERE account = $1",
                // A later account of the same name must not inherit a token.
                "DELETE FROM tokens WHERE account = $1",
                "DELETE FROM api_keys WHERE account = $1",
                "DELETE FROM accounts WHERE name = $1",
            ],
            Principal::Account,
            OP,
        )?;
        if !deleted {
            return Err(no_account(name));
        }
        Ok(())
    }

    fn group(&mut self, name: &AccountName) -> Result<Option<Group>> {
        let rows = self.query(
            "group",
            "SELECT g.name AS name, m.member AS member FROM groups g \
             LEFT JOIN group_members m ON m.group_name = g.name WHERE g.name = $1 \
             ORDER BY m.member",
            &[&name.as_str()],
        )?;
        Ok(groups_from_rows(&rows)?.pop())
    }

    fn groups(&mut self) -> Result<Vec<Group>> {
        let rows = self.query(
            "groups",
            "SELECT g.name AS name, m.member AS member FROM groups g \
             LEFT JOIN group_members m ON m.group_name = g.name ORDER BY g.name, m.member",
            &[],
        )?;
        groups_from_rows(&rows)
    }

    fn insert_group(&mut self, group: &Group) -> Result<()> {
        const OP: &str = "insert_group";
        self.writing()?;
        // Every check before the first write, so a refusal leaves nothing behind even in a
        // unit that goes on.
        self.name_free(&group.name, OP)?;
        self.check_members(&group.name, &group.members)?;
        self.claim_name(&group.name, Principal::Group, OP)?;
        self.execute(
            OP,
            "INSERT INTO groups (name) VALUES ($1)",
            &[&group.name.as_str()],
        )?;
        self.insert_members(&group.name, &group.members)
    }

    fn set_members(&mut self, group: &AccountName, members: &[AccountName]) -> Result<()> {
        const OP: &str = "set_members";
        self.writing()?;
        if !self.exists(
            OP,
            "SELECT 1 FROM groups WHERE name = $1",
            &[&group.as_str()],
        )? {
            return Err(no_group(group));
        }
        // Only the difference is written, so the policy version moves once per real change.
        let current: HashSet<AccountName> = self
            .rows(
                OP,
                "SELECT member FROM group_members WHERE group_name = $1",
                &[&group.as_str()],
                |row| account_name(row, "member"),
            )?
            .into_iter()
            .collect();
        let wanted: HashSet<&AccountName> = members.iter().collect();
        let added: Vec<AccountName> = members
            .iter()
            .filter(|m| !current.contains(*m))
            .cloned()
            .collect();
        // Checked before the first write, so a refusal removes no member either.
        self.check_members(group, &added)?;
        let gone: Vec<&str> = current
            .iter()
            .filter(|m| !wanted.contains(m))
            .map(AccountName::as_str)
            .collect();
        if !gone.is_empty() {
            self.execute(
                OP,
                "DELETE FROM group_members WHERE group_name = $1 AND member = ANY($2::text[])",
                &[&group.as_str(), &gone],
            )?;
        }
        self.insert_members(group, &added)
    }

    fn delete_group(&mut self, name: &AccountName) -> Result<()> {
        self.writing()?;
        let deleted = self.delete_principal(
            name,
            &[
                "DELETE FROM routes WHERE from_name = $1 OR to_name = $1",
                "DELETE FROM group_members WHERE group_name = $1",
                "DELETE FROM groups WHERE name = $1",
            ],
            Principal::Group,
            "delete_group",
        )?;
        if !deleted {
            return Err(no_group(name));
        }
        Ok(())
    }

    fn routes(&mut self) -> Result<Vec<Route>> {
        self.rows(
            "routes",
            "SELECT from_name, to_name, effect, require_e2e FROM routes ORDER BY from_name, to_name",
            &[],
            |row| {
                Ok(Route {
                    from: account_name(row, "from_name")?,
                    to: account_name(row, "to_name")?,
                    effect: parsed(row, "effect", RouteEffect::parse)?,
                    require_e2e: column(row, "require_e2e")?,
                })
            },
        )
    }

    fn put_route(&mut self, route: &Route) -> Result<()> {
        const OP: &str = "put_route";
        self.writing()?;
        for name in [&route.from, &route.to] {
            if self.name_kind(name, OP)?.is_none() {
                return Err(shared::no_principal(name));
            }
        }
        self.execute(
            OP,
            "INSERT INTO routes (from_name, to_name, effect, require_e2e) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (from_name, to_name) DO UPDATE SET effect = excluded.effect, \
             require_e2e = excluded.require_e2e \
             WHERE routes.effect <> excluded.effect OR routes.require_e2e <> excluded.require_e2e",
            &[
                &route.from.as_str(),
                &route.to.as_str(),
                &route.effect.as_str(),
                &route.require_e2e,
            ],
        )?;
        Ok(())
    }

    fn delete_route(&mut self, from: &AccountName, to: &AccountName) -> Result<()> {
        self.writing()?;
        let deleted = self.execute(
            "delete_route",
            "DELETE FROM routes WHERE from_name = $1 AND to_name = $2",
            &[&from.as_str(), &to.as_str()],
        )?;
        if deleted == 0 {
            return Err(shared::no_route(from, to));
        }
        Ok(())
    }

    fn insert_deliveries(
        &mut self,
        deliveries: &[Delivery],
        inline: Option<(&BlobId, &[u8])>,
    ) -> Result<()> {
        const OP: &str = "insert_deliveries";
        self.writing()?;
        if deliveries.is_empty() && inline.is_none() {
            return Ok(());
        }
        let c = DeliveryColumns::of(deliveries)?;
        let (blob_id, content) = (inline.map(|(id, _)| id.as_str()), inline.map(|(_, c)| c));
        let count = i64::try_from(deliveries.len()).map_err(|_| CoreError::invalid("too many"))?;
        let (added, kept): (Vec<String>, i64) = self.one(
            OP,
            INSERT_DELIVERIES,
            &[
                &c.id,
                &c.batch_id,
                &c.sender,
                &c.recipient,
                &c.target,
                &c.name,
                &c.size,
                &c.sha256,
                &c.blob_id,
                &c.state,
                &c.created,
                &c.updated,
                &c.e2e,
                &blob_id,
                &content,
                &count,
            ],
            |row| Ok((column(row, "added")?, column(row, "kept")?)),
        )?;
        let refused = first_refused(c.id.iter().map(String::as_str), &added);
        if refused.is_none() && (inline.is_none() || kept == 1) {
            return Ok(());
        }
        let error = match refused.and_then(|i| deliveries.get(i)) {
            Some(delivery) => self.delivery_conflict(delivery)?,
            // Every delivery went in, but the blob id was taken.
            None => CoreError::conflict("the change conflicts with data stored meanwhile"),
        };
        self.undo(
            OP,
            "DELETE FROM deliveries WHERE id = ANY($1::text[])",
            &added,
        )?;
        Err(error)
    }

    fn delivery(&mut self, id: &DeliveryId) -> Result<Option<Delivery>> {
        self.row(
            "delivery",
            concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM deliveries WHERE id = $1"
            ),
            &[&id.to_string()],
            convert::delivery,
        )
    }

    fn deliveries(&mut self, query: &DeliveryQuery) -> Result<Vec<Delivery>> {
        let Select { sql, values } = delivery_select(
            concat!("SELECT ", delivery_columns!(), " FROM deliveries"),
            query,
        )?;
        self.rows("deliveries", sql, &params(&values), convert::delivery)
    }

    fn first_delivery_with_content(
        &mut self,
        query: &DeliveryQuery,
    ) -> Result<Option<(Delivery, Option<Vec<u8>>)>> {
        let query = DeliveryQuery {
            limit: Some(1),
            ..query.clone()
        };
        let Select { sql, values } = delivery_select(
            concat!(
                "SELECT ",
                delivery_columns!(),
                ", (SELECT content FROM inline_blobs WHERE inline_blobs.blob_id = deliveries.blob_id) \
                 AS inline_content FROM deliveries"
            ),
            &query,
        )?;
        self.row(
            "first_delivery_with_content",
            sql,
            &params(&values),
            |row| Ok((convert::delivery(row)?, column(row, "inline_content")?)),
        )
    }

    fn inline_blob(&mut self, blob_id: &BlobId) -> Result<Option<Vec<u8>>> {
        self.row(
            "inline_blob",
            "SELECT content FROM inline_blobs WHERE blob_id = $1",
            &[&blob_id.as_str()],
            |row| column(row, "content"),
        )
    }

    fn transition(
        &mut self,
        id: &DeliveryId,
        from: &[DeliveryState],
        to: DeliveryState,
        at: OffsetDateTime,
    ) -> Result<bool> {
        self.writing()?;
        if from.is_empty() {
            return Ok(false);
        }
        let from: Vec<&str> = from.iter().map(|state| state.as_str()).collect();
        let (moved, clash): (i64, bool) = self.one(
            "transition",
            TRANSITION,
            &[
                &to.as_str(),
                &nanos(at)?,
                &id.to_string(),
                &from,
                &to.is_live(),
                &!to.is_kept(),
            ],
            |row| Ok((column(row, "moved")?, column(row, "clash")?)),
        )?;
        if clash {
            return Err(shared::transition_clash());
        }
        Ok(moved > 0)
    }

    fn rename_delivery(&mut self, id: &DeliveryId, name: &FileName) -> Result<()> {
        self.writing()?;
        let (found, clash): (i64, bool) = self.one(
            "rename_delivery",
            RENAME,
            &[&name.as_str(), &id.to_string()],
            |row| Ok((column(row, "found")?, column(row, "clash")?)),
        )?;
        if found == 0 {
            return Err(shared::no_pending_delivery(id));
        }
        if clash {
            return Err(shared::rename_clash(name));
        }
        Ok(())
    }

    fn live_blobs(&mut self) -> Result<HashSet<BlobId>> {
        Ok(self
            .rows(
                "live_blobs",
                concat!(
                    "SELECT blob_id FROM deliveries WHERE state IN ",
                    live_states!(),
                    " UNION SELECT blob_id FROM deliveries WHERE state = 'quarantined'"
                ),
                &[],
                |row| parsed(row, "blob_id", BlobId::parse),
            )?
            .into_iter()
            .collect())
    }

    fn blob_in_use(&mut self, blob_id: &BlobId) -> Result<bool> {
        self.exists(
            "blob_in_use",
            concat!(
                "SELECT 1 FROM deliveries WHERE blob_id = $1 AND state IN ",
                live_states!(),
                " UNION ALL SELECT 1 FROM deliveries WHERE blob_id = $1 AND state = 'quarantined'",
                " LIMIT 1"
            ),
            &[&blob_id.as_str()],
        )
    }

    fn inbox_usage(&mut self, recipient: &AccountName) -> Result<InboxUsage> {
        let (bytes, files): (i64, i64) = self.one(
            "inbox_usage",
            concat!(
                "SELECT COALESCE(SUM(size), 0)::bigint AS bytes, COUNT(*) AS files ",
                "FROM deliveries WHERE recipient = $1 AND state IN ",
                live_states!()
            ),
            &[&recipient.as_str()],
            |row| Ok((column(row, "bytes")?, column(row, "files")?)),
        )?;
        Ok(InboxUsage {
            bytes: u64::try_from(bytes).unwrap_or(0),
            files: u64::try_from(files).unwrap_or(0),
        })
    }

    fn use_totp_step(&mut self, name: &AccountName, step: u64) -> Result<bool> {
        self.writing()?;
        let step = shared::step_to_db(step)?;
        // One statement: two logins racing with the same code cannot both pass.
        let updated = self.execute(
            "use_totp_step",
            "UPDATE accounts SET totp_last_step = $1 WHERE name = $2 \
             AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < $1)",
            &[&step, &name.as_str()],
        )?;
        Ok(updated == 1)
    }

    fn use_recovery_code(&mut self, name: &AccountName, code_hash: &str) -> Result<bool> {
        const OP: &str = "use_recovery_code";
        self.writing()?;
        let Some(text) = self.row(
            OP,
            "SELECT totp_recovery FROM accounts WHERE name = $1 AND totp_secret IS NOT NULL",
            &[&name.as_str()],
            |row| column::<String>(row, "totp_recovery"),
        )?
        else {
            return Ok(false);
        };
        let Some(left) = shared::spend_recovery_code(&text, code_hash)? else {
            return Ok(false);
        };
        self.execute(
            OP,
            "UPDATE accounts SET totp_recovery = $1 WHERE name = $2",
            &[&left, &name.as_str()],
        )?;
        Ok(true)
    }

    fn bans(&mut self) -> Result<Vec<Ban>> {
        self.rows(
            "bans",
            "SELECT subject, until, level, reason, created FROM bans ORDER BY subject",
            &[],
            convert::ban,
        )
    }

    fn ban(&mut self, subject: &BanSubject) -> Result<Option<Ban>> {
        self.row(
            "ban",
            "SELECT subject, until, level, reason, created FROM bans WHERE subject = $1",
            &[&subject.key()],
            convert::ban,
        )
    }

    fn put_ban(&mut self, ban: &Ban) -> Result<()> {
        self.writing()?;
        self.execute(
            "put_ban",
            "INSERT INTO bans (subject, until, level, reason, created) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (subject) DO UPDATE SET until = excluded.until, level = excluded.level, \
             reason = excluded.reason, created = excluded.created",
            &[
                &ban.subject.key(),
                &nanos(ban.until)?,
                &i64::from(ban.level.max(1)),
                &ban.reason,
                &nanos(ban.created)?,
            ],
        )?;
        Ok(())
    }

    fn delete_ban(&mut self, subject: &BanSubject) -> Result<()> {
        self.writing()?;
        let deleted = self.execute(
            "delete_ban",
            "DELETE FROM bans WHERE subject = $1",
            &[&subject.key()],
        )?;
        if deleted == 0 {
            return Err(shared::not_banned(subject));
        }
        Ok(())
    }

    fn add_offence(&mut self, subject: &BanSubject, at: OffsetDateTime, weight: u32) -> Result<()> {
        self.writing()?;
        if weight == 0 {
            return Ok(());
        }
        self.execute(
            "add_offence",
            "INSERT INTO offences (subject, at, weight) VALUES ($1, $2, $3)",
            &[&subject.key(), &nanos(at)?, &i64::from(weight)],
        )?;
        Ok(())
    }

    fn offence_score(&mut self, subject: &BanSubject, since: OffsetDateTime) -> Result<u64> {
        let score: i64 = self.one(
            "offence_score",
            "SELECT COALESCE(SUM(weight), 0)::bigint AS score FROM offences \
             WHERE subject = $1 AND at >= $2",
            &[&subject.key(), &nanos(since)?],
            |row| column(row, "score"),
        )?;
        Ok(u64::try_from(score).unwrap_or(0))
    }

    fn forget_offences(&mut self, subject: &BanSubject) -> Result<u64> {
        self.writing()?;
        self.execute(
            "forget_offences",
            "DELETE FROM offences WHERE subject = $1",
            &[&subject.key()],
        )
    }

    fn prune_offences(&mut self, before: OffsetDateTime, keep: u64, limit: u32) -> Result<u64> {
        self.writing()?;
        // Two bounded lookups, each on an index: by time, and by the order of addition (the
        // identity's order; writers are serialised, so it is the order of commits too).
        self.execute(
            "prune_offences",
            "DELETE FROM offences WHERE id IN \
             (SELECT id FROM offences WHERE at < $1 ORDER BY at, id LIMIT $3) \
             OR id IN (SELECT id FROM offences \
             WHERE id <= (SELECT MAX(id) FROM offences) - $2 ORDER BY id LIMIT $3)",
            &[
                &nanos(before)?,
                &i64::try_from(keep).unwrap_or(i64::MAX),
                &i64::from(limit),
            ],
        )
    }

    fn record(&mut self, events: &[Event]) -> Result<()> {
        const OP: &str = "record";
        self.writing()?;
        if events.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = events
            .iter()
            .map(|e| e.id.hyphenated().to_string())
            .collect();
        let taken_twice = ids.iter().collect::<HashSet<_>>().len() < ids.len();
        // The head, read inside the write transaction, which holds the store's advisory lock:
        // it is still the head when the rows go in, whichever node writes. `audit_chain`
        // holds the highest seq ever used (the newest row may have gone); `shared::chain`
        // numbers and chains the records after it.
        let (last_seq, last_hash, used_seq, taken): (
            Option<i64>,
            Option<String>,
            Option<i64>,
            bool,
        ) = self.one(OP, CHAIN_HEAD, &[&ids], |row| {
            Ok((
                column(row, "last_seq")?,
                column(row, "last_hash")?,
                column(row, "used_seq")?,
                column(row, "taken")?,
            ))
        })?;
        if taken || taken_twice {
            return Err(shared::event_recorded());
        }
        let records = shared::chain(events, last_seq, last_hash, used_seq)?;
        let mut rows = EventColumns::with_capacity(records.len());
        for (record, id) in records.iter().zip(ids) {
            rows.push(record, id)?;
        }
        let seq = records.last().map_or(0, |record| record.seq);
        self.execute(
            OP,
            INSERT_EVENTS,
            &[
                &rows.seq,
                &rows.id,
                &rows.time,
                &rows.kind,
                &rows.actor,
                &rows.source,
                &rows.protocol,
                &rows.object,
                &rows.outcome,
                &rows.detail,
                &rows.prev_hash,
                &rows.hash,
                &seq_to_db(seq)?,
            ],
        )?;
        // Kept only once written: a failed statement writes nothing of this call.
        self.recorded.extend(records);
        Ok(())
    }

    fn events(&mut self, query: &EventQuery) -> Result<Vec<Event>> {
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut select = Select::new(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE true"
        ));
        event_filters(&mut select, query);
        let backwards = query.limit.is_some() || query.offset > 0;
        if backwards {
            // The newest `limit` after the newest `offset`, read backwards from the end and
            // turned round below.
            select.push(" ORDER BY seq DESC");
            if let Some(limit) = query.limit {
                select.push(" LIMIT ");
                select.bind(i64::from(limit));
            }
            select.push(" OFFSET ");
            select.bind(i64::from(query.offset));
        } else {
            select.push(" ORDER BY seq");
        }
        let Select { sql, values } = select;
        let mut events = self.rows("events", sql, &params(&values), convert::event)?;
        if backwards {
            events.reverse();
        }
        Ok(events)
    }

    fn audit_records(
        &mut self,
        query: &EventQuery,
        after_seq: u64,
        page: u32,
    ) -> Result<Vec<AuditRecord>> {
        let mut select = Select::new(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM events WHERE seq > "
        ));
        // A `seq` beyond i64 matches nothing; clamp rather than fail.
        select.bind(i64::try_from(after_seq).unwrap_or(i64::MAX));
        event_filters(&mut select, query);
        select.push(" ORDER BY seq LIMIT ");
        select.bind(i64::from(page));
        let Select { sql, values } = select;
        self.rows(
            "audit_records",
            sql,
            &params(&values),
            convert::audit_record,
        )
    }

    fn audit_head(&mut self) -> Result<Option<ChainHead>> {
        self.row(
            "audit_head",
            "SELECT seq, hash, time, (SELECT COUNT(*) FROM events) AS events FROM events \
             WHERE hash IS NOT NULL ORDER BY seq DESC LIMIT 1",
            &[],
            |row| {
                let events: i64 = column(row, "events")?;
                Ok(ChainHead {
                    seq: seq_from_db(column(row, "seq")?)?,
                    hash: column(row, "hash")?,
                    time: time_from_nanos("time", column(row, "time")?)?,
                    events: u64::try_from(events).unwrap_or(0),
                })
            },
        )
    }

    fn audit_legacy_through(&mut self) -> Result<u64> {
        let legacy: Option<i64> = self.row(
            "audit_legacy_through",
            "SELECT legacy_through FROM audit_chain WHERE id = 1",
            &[],
            |row| column(row, "legacy_through"),
        )?;
        // Without the row (deleted by hand), every event must be chained.
        seq_from_db(legacy.unwrap_or(0))
    }

    fn event(&mut self, id: &Uuid) -> Result<Option<Event>> {
        self.row(
            "event",
            concat!("SELECT ", event_columns!(), " FROM events WHERE id = $1"),
            &[&id.to_string()],
            convert::event,
        )
    }

    fn insert_jobs(&mut self, jobs: &[Job]) -> Result<()> {
        const OP: &str = "insert_jobs";
        self.writing()?;
        if jobs.is_empty() {
            return Ok(());
        }
        let c = JobColumns::of(jobs)?;
        let added: Vec<String> = self.rows(
            OP,
            INSERT_JOBS,
            &[
                &c.id,
                &c.rule,
                &c.handler,
                &c.event,
                &c.state,
                &c.attempts,
                &c.due,
                &c.created,
                &c.updated,
                &c.last_error,
            ],
            |row| column(row, "id"),
        )?;
        let Some(refused) = first_refused(c.id.iter().map(String::as_str), &added) else {
            return Ok(());
        };
        self.undo(OP, "DELETE FROM jobs WHERE id = ANY($1::text[])", &added)?;
        let id = jobs
            .get(refused)
            .map(|job| job.id.to_string())
            .unwrap_or_default();
        Err(shared::job_exists(id))
    }

    fn job(&mut self, id: &Uuid) -> Result<Option<Job>> {
        self.row(
            "job",
            concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1"),
            &[&id.to_string()],
            convert::job,
        )
    }

    fn jobs(&mut self, query: &JobQuery) -> Result<Vec<Job>> {
        let limit = i64::from(query.limit);
        match query.state {
            Some(state) => self.rows(
                "jobs",
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE state = $1 ORDER BY created DESC, id DESC LIMIT $2"
                ),
                &[&state.as_str(), &limit],
                convert::job,
            ),
            None => self.rows(
                "jobs",
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs ORDER BY created DESC, id DESC LIMIT $1"
                ),
                &[&limit],
                convert::job,
            ),
        }
    }

    fn due_jobs(&mut self, now: OffsetDateTime, limit: u32) -> Result<Vec<Job>> {
        // In a write unit this is the worker's claim: the rows are locked until the unit
        // commits the lease, and rows another transaction holds are skipped, so two nodes
        // never claim one job even were writers not serialised by the advisory lock. A read
        // unit (listings, a snapshot) locks nothing.
        let sql = if self.writable {
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE state = 'queued' AND due <= $1 ORDER BY due, id LIMIT $2 \
                 FOR UPDATE SKIP LOCKED"
            )
        } else {
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE state = 'queued' AND due <= $1 ORDER BY due, id LIMIT $2"
            )
        };
        self.rows(
            "due_jobs",
            sql,
            &[&nanos(now)?, &i64::from(limit)],
            convert::job,
        )
    }

    fn update_job(&mut self, job: &Job, from: &[JobState]) -> Result<bool> {
        self.writing()?;
        if from.is_empty() {
            return Ok(false);
        }
        let from: Vec<&str> = from.iter().map(|state| state.as_str()).collect();
        let changed = self.execute(
            "update_job",
            "UPDATE jobs SET state = $2, attempts = $3, due = $4, updated = $5, \
             last_error = $6 WHERE id = $1 AND state = ANY($7::text[])",
            &[
                &job.id.to_string(),
                &job.state.as_str(),
                &i64::from(job.attempts),
                &nanos(job.due)?,
                &nanos(job.updated)?,
                &job.last_error.as_deref(),
                &from,
            ],
        )?;
        Ok(changed > 0)
    }

    fn job_counts(&mut self) -> Result<JobCounts> {
        let rows: Vec<(String, i64)> = self.rows(
            "job_counts",
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state",
            &[],
            |row| Ok((column(row, "state")?, column(row, "n")?)),
        )?;
        shared::job_counts(rows)
    }

    fn queued_jobs(&mut self) -> Result<u64> {
        let queued: Option<i64> = self.row(
            "queued_jobs",
            "SELECT queued FROM job_depth WHERE id = 1",
            &[],
            |row| column(row, "queued"),
        )?;
        Ok(queued.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    fn insert_tokens(&mut self, tokens: &[TokenRecord]) -> Result<()> {
        const OP: &str = "insert_tokens";
        self.writing()?;
        if tokens.is_empty() {
            return Ok(());
        }
        let c = TokenColumns::of(tokens)?;
        let added: Vec<String> = self.rows(
            OP,
            INSERT_TOKENS,
            &[
                &c.hash,
                &c.kind,
                &c.session,
                &c.account,
                &c.scope,
                &c.epoch,
                &c.source,
                &c.protocol,
                &c.created,
                &c.expires,
                &c.methods,
            ],
            |row| column(row, "hash"),
        )?;
        if first_refused(c.hash.iter().copied(), &added).is_none() {
            return Ok(());
        }
        self.undo(
            OP,
            "DELETE FROM tokens WHERE hash = ANY($1::text[])",
            &added,
        )?;
        Err(shared::token_stored())
    }

    fn token(&mut self, hash: &str) -> Result<Option<TokenRecord>> {
        self.row(
            "token",
            concat!("SELECT ", token_columns!(), " FROM tokens WHERE hash = $1"),
            &[&hash],
            convert::token,
        )
    }

    fn take_token(&mut self, hash: &str) -> Result<Option<TokenRecord>> {
        self.writing()?;
        self.row(
            "take_token",
            concat!(
                "DELETE FROM tokens WHERE hash = $1 RETURNING ",
                token_columns!()
            ),
            &[&hash],
            convert::token,
        )
    }

    fn delete_token_session(&mut self, session: &str) -> Result<u64> {
        self.writing()?;
        self.execute(
            "delete_token_session",
            "DELETE FROM tokens WHERE session = $1",
            &[&session],
        )
    }

    fn delete_expired_tokens(&mut self, now: OffsetDateTime) -> Result<(u64, Vec<String>)> {
        self.writing()?;
        let (deleted, ended): (i64, Vec<String>) = self.one(
            "delete_expired_tokens",
            DELETE_EXPIRED_TOKENS,
            &[&nanos(now)?],
            |row| Ok((column(row, "deleted")?, column(row, "ended")?)),
        )?;
        Ok((u64::try_from(deleted).unwrap_or(0), ended))
    }

    fn insert_api_key(&mut self, key: &ApiKeyRecord) -> Result<()> {
        const OP: &str = "insert_api_key";
        self.writing()?;
        let (created, expires, last_used) = (
            nanos(key.created)?,
            key.expires.map(nanos).transpose()?,
            key.last_used.map(nanos).transpose()?,
        );
        let stored: Option<String> = self.row(
            OP,
            INSERT_API_KEY,
            &[
                &key.id,
                &key.account.as_str(),
                &key.label,
                &key.hash,
                &key.scopes.to_string(),
                &created,
                &expires,
                &last_used,
            ],
            |row| column(row, "id"),
        )?;
        if stored.is_some() {
            return Ok(());
        }
        // Nothing was written: the account is missing, or the id is taken.
        if !self.exists(
            OP,
            "SELECT 1 FROM accounts WHERE name = $1",
            &[&key.account.as_str()],
        )? {
            return Err(no_account(&key.account));
        }
        Err(shared::api_key_stored())
    }

    fn api_key(&mut self, id: &str) -> Result<Option<ApiKeyRecord>> {
        self.row(
            "api_key",
            concat!(
                "SELECT ",
                api_key_columns!(),
                " FROM api_keys WHERE id = $1"
            ),
            &[&id],
            convert::api_key,
        )
    }

    fn api_keys(&mut self, account: &AccountName) -> Result<Vec<ApiKeyRecord>> {
        self.rows(
            "api_keys",
            concat!(
                "SELECT ",
                api_key_columns!(),
                " FROM api_keys WHERE account = $1 ORDER BY created, id"
            ),
            &[&account.as_str()],
            convert::api_key,
        )
    }

    fn delete_api_key(&mut self, account: &AccountName, id: &str) -> Result<bool> {
        self.writing()?;
        let deleted = self.execute(
            "delete_api_key",
            "DELETE FROM api_keys WHERE id = $1 AND account = $2",
            &[&id, &account.as_str()],
        )?;
        Ok(deleted > 0)
    }

    fn touch_api_key(&mut self, id: &str, at: OffsetDateTime) -> Result<bool> {
        self.writing()?;
        let touched = self.execute(
            "touch_api_key",
            "UPDATE api_keys SET last_used = $2 WHERE id = $1",
            &[&id, &nanos(at)?],
        )?;
        Ok(touched > 0)
    }

    fn insert_resumable(&mut self, upload: &ResumableRecord) -> Result<()> {
        const OP: &str = "insert_resumable";
        self.writing()?;
        let size = size_to_db(upload.size)?;
        let targets = convert::targets_to_db(&upload.targets);
        let (created, expires) = (nanos(upload.created)?, nanos(upload.expires)?);
        let stored: Option<String> = self.row(
            OP,
            concat!(
                "INSERT INTO resumable_uploads (",
                resumable_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            &[
                &upload.id,
                &upload.owner.as_str(),
                &targets,
                &upload.name.as_str(),
                &size,
                &upload.sha256,
                &upload.e2e,
                &upload.staging.as_str(),
                &created,
                &expires,
            ],
            |row| column(row, "id"),
        )?;
        match stored {
            Some(_) => Ok(()),
            None => Err(shared::resumable_stored()),
        }
    }

    fn resumable(&mut self, id: &str) -> Result<Option<ResumableRecord>> {
        self.row(
            "resumable",
            concat!(
                "SELECT ",
                resumable_columns!(),
                " FROM resumable_uploads WHERE id = $1"
            ),
            &[&id],
            convert::resumable,
        )
    }

    fn resumables(&mut self) -> Result<Vec<ResumableRecord>> {
        self.rows(
            "resumables",
            concat!(
                "SELECT ",
                resumable_columns!(),
                " FROM resumable_uploads ORDER BY id"
            ),
            &[],
            convert::resumable,
        )
    }

    fn delete_resumable(&mut self, id: &str) -> Result<bool> {
        self.writing()?;
        let deleted = self.execute(
            "delete_resumable",
            "DELETE FROM resumable_uploads WHERE id = $1",
            &[&id],
        )?;
        Ok(deleted > 0)
    }

    fn put_node(&mut self, node: &NodeInfo, heartbeat: OffsetDateTime) -> Result<()> {
        self.writing()?;
        self.execute(
            "put_node",
            "INSERT INTO nodes (id, host, pid, started, heartbeat) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
             started = excluded.started, heartbeat = excluded.heartbeat",
            &[
                &node.id.to_string(),
                &node.host,
                &i64::from(node.pid),
                &nanos(node.started)?,
                &nanos(heartbeat)?,
            ],
        )?;
        Ok(())
    }

    fn nodes(&mut self) -> Result<Vec<NodeRecord>> {
        self.rows(
            "nodes",
            concat!("SELECT ", node_columns!(), " FROM nodes ORDER BY id"),
            &[],
            convert::node,
        )
    }

    fn delete_node(&mut self, node: &NodeId) -> Result<bool> {
        self.writing()?;
        let deleted = self.execute(
            "delete_node",
            "WITH sessions AS (DELETE FROM live_sessions WHERE node = $1) \
             DELETE FROM nodes WHERE id = $1",
            &[&node.to_string()],
        )?;
        Ok(deleted > 0)
    }

    fn insert_live_session(
        &mut self,
        session: &LiveSessionRecord,
        max: Option<u32>,
        alive_since: OffsetDateTime,
    ) -> Result<bool> {
        self.writing()?;
        let (taken, added): (bool, i64) = self.one(
            "insert_live_session",
            INSERT_LIVE_SESSION,
            &[
                &session.node.to_string(),
                &size_to_db(session.id)?,
                &session.account.as_str(),
                &session.protocol.as_str(),
                &session.source,
                &nanos(session.started)?,
                &session.closing,
                &nanos_saturating(alive_since),
                &max.map(i64::from),
            ],
            |row| Ok((column(row, "taken")?, column(row, "added")?)),
        )?;
        if taken {
            return Err(shared::session_taken(session));
        }
        Ok(added > 0)
    }

    fn delete_live_session(&mut self, node: &NodeId, id: u64) -> Result<bool> {
        self.writing()?;
        let deleted = self.execute(
            "delete_live_session",
            "DELETE FROM live_sessions WHERE node = $1 AND id = $2",
            &[&node.to_string(), &size_to_db(id)?],
        )?;
        Ok(deleted > 0)
    }

    fn live_session_list(&mut self) -> Result<Vec<LiveSessionRecord>> {
        self.rows(
            "live_session_list",
            concat!(
                "SELECT ",
                live_session_columns!(),
                " FROM live_sessions ORDER BY node, id"
            ),
            &[],
            convert::live_session,
        )
    }

    fn close_live_session(&mut self, node: &NodeId, id: u64, reason: &str) -> Result<bool> {
        self.writing()?;
        // A trigger tells the node (NOTIFY mailroom_sessions) when this commits.
        let found = self.execute(
            "close_live_session",
            "UPDATE live_sessions SET closing = coalesce(closing, $3) WHERE node = $1 AND id = $2",
            &[&node.to_string(), &size_to_db(id)?, &reason],
        )?;
        Ok(found > 0)
    }

    fn closing_sessions(&mut self, node: &NodeId) -> Result<Vec<(u64, String)>> {
        self.rows(
            "closing_sessions",
            "SELECT id, closing FROM live_sessions WHERE node = $1 AND closing IS NOT NULL \
             ORDER BY id",
            &[&node.to_string()],
            |row| Ok((unsigned(row, "id")?, column(row, "closing")?)),
        )
    }

    fn data_keys(&mut self) -> Result<Vec<DataKeyRecord>> {
        self.rows(
            "data_keys",
            "SELECT id, owner, wrapped, master, created FROM data_keys ORDER BY id",
            &[],
            |row| {
                Ok(DataKeyRecord {
                    id: column(row, "id")?,
                    owner: column(row, "owner")?,
                    wrapped: column(row, "wrapped")?,
                    master: column(row, "master")?,
                    created: time_from_nanos("created", column(row, "created")?)?,
                })
            },
        )
    }

    fn insert_data_key(&mut self, key: &DataKeyRecord) -> Result<bool> {
        self.writing()?;
        let created = nanos(key.created)?;
        let inserted = self.execute(
            "insert_data_key",
            "INSERT INTO data_keys (id, owner, wrapped, master, created) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&key.id, &key.owner, &key.wrapped, &key.master, &created],
        )?;
        Ok(inserted == 1)
    }

    fn rewrap_data_key(&mut self, id: &str, wrapped: &[u8], master: &str) -> Result<bool> {
        self.writing()?;
        let changed = self.execute(
            "rewrap_data_key",
            "UPDATE data_keys SET wrapped = $2, master = $3 WHERE id = $1",
            &[&id, &wrapped, &master],
        )?;
        Ok(changed == 1)
    }
}

/// Inserts a live session ($1 to $7: its columns) unless its node already has one of its id
/// (`taken`) or its account has `$9` sessions (NULL: no limit) on its own node and the nodes
/// whose heartbeat is at or after `$8`: one round trip, exact under the write lock.
const INSERT_LIVE_SESSION: &str = concat!(
    "WITH open AS (SELECT count(*) AS n FROM live_sessions AS s WHERE s.account = $3 AND ",
    "(s.node = $1 OR EXISTS (SELECT 1 FROM nodes AS n WHERE n.id = s.node AND n.heartbeat >= $8))), ",
    "taken AS (SELECT EXISTS (SELECT 1 FROM live_sessions WHERE node = $1 AND id = $2) AS t), ",
    "added AS (INSERT INTO live_sessions (",
    live_session_columns!(),
    ") SELECT $1, $2, $3, $4, $5, $6, $7 FROM open, taken ",
    "WHERE NOT taken.t AND ($9::bigint IS NULL OR open.n < $9::bigint) RETURNING 1) ",
    "SELECT (SELECT t FROM taken) AS taken, (SELECT count(*) FROM added) AS added"
);

/// The rows of one `record` call, column by column, as `unnest` takes them.
struct EventColumns<'e> {
    seq: Vec<i64>,
    id: Vec<String>,
    time: Vec<i64>,
    kind: Vec<&'static str>,
    actor: Vec<&'e str>,
    source: Vec<Option<&'e str>>,
    protocol: Vec<&'static str>,
    object: Vec<&'e str>,
    outcome: Vec<&'static str>,
    detail: Vec<&'e str>,
    prev_hash: Vec<Option<&'e str>>,
    hash: Vec<Option<&'e str>>,
}

impl<'e> EventColumns<'e> {
    fn with_capacity(n: usize) -> Self {
        EventColumns {
            seq: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            time: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            protocol: Vec::with_capacity(n),
            object: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            detail: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
        }
    }

    /// Adds the row of `record`, whose event id is `id` as text.
    fn push(&mut self, record: &'e AuditRecord, id: String) -> Result<()> {
        let event = &record.event;
        self.seq.push(seq_to_db(record.seq)?);
        self.id.push(id);
        self.time.push(nanos(event.time)?);
        self.kind.push(event.kind.as_str());
        self.actor.push(&event.actor);
        self.source.push(event.source.as_deref());
        self.protocol.push(event.protocol.as_str());
        self.object.push(&event.object);
        self.outcome.push(event.outcome.as_str());
        self.detail.push(&event.detail);
        self.prev_hash.push(record.prev_hash.as_deref());
        self.hash.push(record.hash.as_deref());
        Ok(())
    }
}

/// The rows of one `insert_jobs` call, column by column.
struct JobColumns<'j> {
    id: Vec<String>,
    rule: Vec<&'j str>,
    handler: Vec<String>,
    event: Vec<String>,
    state: Vec<&'static str>,
    attempts: Vec<i64>,
    due: Vec<i64>,
    created: Vec<i64>,
    updated: Vec<i64>,
    last_error: Vec<Option<&'j str>>,
}

impl<'j> JobColumns<'j> {
    fn of(jobs: &'j [Job]) -> Result<Self> {
        let mut c = JobColumns {
            id: Vec::with_capacity(jobs.len()),
            rule: Vec::with_capacity(jobs.len()),
            handler: Vec::with_capacity(jobs.len()),
            event: Vec::with_capacity(jobs.len()),
            state: Vec::with_capacity(jobs.len()),
            attempts: Vec::with_capacity(jobs.len()),
            due: Vec::with_capacity(jobs.len()),
            created: Vec::with_capacity(jobs.len()),
            updated: Vec::with_capacity(jobs.len()),
            last_error: Vec::with_capacity(jobs.len()),
        };
        for job in jobs {
            c.id.push(job.id.to_string());
            c.rule.push(&job.rule);
            c.handler.push(job.handler.target());
            c.event.push(job.event.to_string());
            c.state.push(job.state.as_str());
            c.attempts.push(i64::from(job.attempts));
            c.due.push(nanos(job.due)?);
            c.created.push(nanos(job.created)?);
            c.updated.push(nanos(job.updated)?);
            c.last_error.push(job.last_error.as_deref());
        }
        Ok(c)
    }
}

/// The rows of one `insert_tokens` call, column by column.
struct TokenColumns<'t> {
    hash: Vec<&'t str>,
    kind: Vec<&'static str>,
    session: Vec<&'t str>,
    account: Vec<&'t str>,
    scope: Vec<&'static str>,
    epoch: Vec<i64>,
    source: Vec<Option<&'t str>>,
    protocol: Vec<&'static str>,
    created: Vec<i64>,
    expires: Vec<i64>,
    methods: Vec<Option<&'t str>>,
}

impl<'t> TokenColumns<'t> {
    fn of(tokens: &'t [TokenRecord]) -> Result<Self> {
        let mut c = TokenColumns {
            hash: Vec::with_capacity(tokens.len()),
            kind: Vec::with_capacity(tokens.len()),
            session: Vec::with_capacity(tokens.len()),
            account: Vec::with_capacity(tokens.len()),
            scope: Vec::with_capacity(tokens.len()),
            epoch: Vec::with_capacity(tokens.len()),
            source: Vec::with_capacity(tokens.len()),
            protocol: Vec::with_capacity(tokens.len()),
            created: Vec::with_capacity(tokens.len()),
            expires: Vec::with_capacity(tokens.len()),
            methods: Vec::with_capacity(tokens.len()),
        };
        for token in tokens {
            c.hash.push(&token.hash);
            c.kind.push(token.kind.as_str());
            c.session.push(&token.session);
            c.account.push(token.account.as_str());
            c.scope.push(token.scope.as_str());
            c.epoch.push(epoch_to_db(token.epoch)?);
            c.source.push(token.source.as_deref());
            c.protocol.push(token.protocol.as_str());
            c.created.push(nanos(token.created)?);
            c.expires.push(nanos(token.expires)?);
            c.methods.push(token.methods.as_deref());
        }
        Ok(c)
    }
}

/// A query built from fixed fragments and numbered parameters.
struct Select {
    sql: String,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Select {
    fn new(start: &str) -> Self {
        Select {
            sql: start.to_owned(),
            values: Vec::new(),
        }
    }

    /// Appends a fixed fragment.
    fn push(&mut self, fragment: &str) {
        self.sql.push_str(fragment);
    }

    /// Appends the placeholder of a new parameter bound to `value`.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) {
        self.values.push(Box::new(value));
        self.sql.push('$');
        self.sql.push_str(&self.values.len().to_string());
    }

    /// Appends ` AND column = $n`.
    fn equal(&mut self, column: &str, value: String) {
        self.push(" AND ");
        self.push(column);
        self.push(" = ");
        self.bind(value);
    }
}

/// Bound values in the form a query takes them.
fn params(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<Param<'_>> {
    values
        .iter()
        .map(|value| value.as_ref() as Param<'_>)
        .collect()
}

/// `select` (which must read `FROM deliveries`) with the query's conditions, oldest first.
fn delivery_select(select: &'static str, query: &DeliveryQuery) -> Result<Select> {
    let mut s = Select::new(select);
    s.push(" WHERE true");
    if let Some(sender) = &query.sender {
        s.equal("sender", sender.as_str().to_owned());
    }
    if let Some(recipient) = &query.recipient {
        s.equal("recipient", recipient.as_str().to_owned());
    }
    if let Some(target) = &query.target {
        s.equal("target", target.as_str().to_owned());
    }
    if let Some(name) = &query.name {
        s.equal("name", name.as_str().to_owned());
    }
    if let Some(batch) = &query.batch {
        s.equal("batch_id", batch.to_string());
    }
    if !query.states.is_empty() {
        let states: Vec<String> = query.states.iter().map(|s| s.as_str().to_owned()).collect();
        s.push(" AND state = ANY(");
        s.bind(states);
        s.push("::text[])");
    }
    // The partial indexes hold live, checking or quarantined deliveries only; a plan prepared
    // once (a generic plan) may use one only when the query names its condition literally.
    if query.states == [DeliveryState::Checking] {
        s.push(" AND state = 'checking'");
    } else if query.states == [DeliveryState::Quarantined] {
        s.push(" AND state = 'quarantined'");
    }
    if !query.states.is_empty() && query.states.iter().all(|state| state.is_live()) {
        s.push(concat!(" AND state IN ", live_states!()));
    }
    if let Some(before) = query.created_before {
        s.push(" AND created < ");
        s.bind(nanos(before)?);
    }
    if let Some(needle) = &query.name_contains {
        // strpos, not LIKE: the text is matched as it is, wildcards and all. Under the "C"
        // collation lower() folds ASCII letters only, as the other stores do.
        s.push(" AND strpos(lower(name COLLATE \"C\"), ");
        s.bind(needle.to_ascii_lowercase());
        s.push(") > 0");
    }
    s.push(&order_by(query.order));
    if let Some(limit) = query.limit {
        s.push(" LIMIT ");
        s.bind(i64::from(limit));
    }
    if query.offset > 0 {
        s.push(" OFFSET ");
        s.bind(i64::from(query.offset));
    }
    Ok(s)
}

/// Appends the filters of an event query (all but `limit`) as bound parameters.
fn event_filters(s: &mut Select, query: &EventQuery) {
    if let Some(actor) = &query.actor {
        s.equal("actor", actor.clone());
    }
    if let Some(kind) = query.kind {
        s.equal("kind", kind.as_str().to_owned());
    }
    if let Some(outcome) = query.outcome {
        s.equal("outcome", outcome.as_str().to_owned());
    }
    if let Some(source) = &query.source {
        // Sources are recorded with their port; an IP address alone matches any port.
        s.push(" AND (source = ");
        s.bind(source.clone());
        if let Some(prefix) = EventQuery::any_port_prefix(source) {
            // A prefix match without LIKE's wildcards.
            s.push(" OR starts_with(source, ");
            s.bind(prefix);
            s.push(")");
        }
        s.push(")");
    }
    if let Some(since) = query.since {
        s.push(" AND time >= ");
        s.bind(nanos_saturating(since));
    }
    if let Some(until) = query.until {
        s.push(" AND time < ");
        s.bind(nanos_saturating(until));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use super::*;

    #[test]
    fn refused_rows_are_found_in_order() {
        let keys = ["a", "b", "a", "c"];
        let inserted = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(first_refused(keys, &inserted(&["a", "b", "c"])), Some(2));
        assert_eq!(first_refused(keys, &inserted(&["a", "c"])), Some(1));
        assert_eq!(first_refused(["a", "b"], &inserted(&["b", "a"])), None);
    }

    #[test]
    fn delivery_queries_bind_every_value() {
        let query = DeliveryQuery {
            sender: Some(AccountName::parse("alice").unwrap()),
            states: DeliveryState::LIVE.to_vec(),
            limit: Some(3),
            ..DeliveryQuery::default()
        };
        let select =
            delivery_select("SELECT id FROM deliveries", &query).unwrap_or_else(|_| unreachable!());
        assert!(!select.sql.contains("alice"), "{}", select.sql);
        assert_eq!(select.values.len(), 3);
        assert!(
            select.sql.ends_with("ORDER BY created, id LIMIT $3"),
            "{}",
            select.sql
        );
    }
}
