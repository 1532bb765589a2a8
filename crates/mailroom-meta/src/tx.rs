//! [`SqliteTx`]: a unit of work's view of the SQLite database, inside the transaction the
//! store opened for it.
//!
//! Every statement is prepared once per connection and cached (`prepare_cached`), and every
//! value is a bound parameter; the only SQL built at run time joins fixed fragments. Policy is
//! not decided here: which transitions are allowed, who may rename, and which events to write
//! all come from the unit. What `PgTx` says and decides alike (the words of refusals, the
//! principal kinds, the audit chain's next records) is `shared.rs`'s; this file holds the
//! SQLite statements.

use std::collections::{BTreeMap, HashSet};

use mailroom_core::{
    Account, AccountName, AccountUpdate, AuditRecord, AuthorizedKey, Ban, BanSubject, BlobId,
    ChainHead, CoreError, Delivery, DeliveryId, DeliveryQuery, DeliverySort, DeliveryState, Event,
    EventQuery, FileName, Group, InboxUsage, Job, JobCounts, JobQuery, JobState, Result, Route,
    RouteEffect, TokenRecord, Tx,
};
use mailroom_core::{
    ApiKeyRecord, DataKeyRecord, LiveSessionRecord, NodeId, NodeInfo, NodeRecord, ResumableRecord,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::convert::{
    self, account_columns, account_name, audit_columns, column, delivery_columns, epoch_to_db,
    event_columns, job_columns, nanos, size_to_db, token_columns, totp_to_db, unsigned,
};
use crate::convert::{
    api_key_columns, live_session_columns, nanos_saturating, node_columns, resumable_columns,
};
use crate::error::{corrupt, is_unique_violation, storage, violates};
use crate::shared::{self, Principal, live_states, no_account, no_group, order_by};

/// A unit's transaction on one connection.
pub(crate) struct SqliteTx<'c> {
    conn: &'c Connection,
    writable: bool,
    /// The audit records this unit wrote, for the event tap once the commit holding them is
    /// done.
    pub(crate) recorded: Vec<AuditRecord>,
}

impl<'c> SqliteTx<'c> {
    /// The view of a unit on `conn`, inside a transaction the caller began.
    pub(crate) fn new(conn: &'c Connection, writable: bool) -> SqliteTx<'c> {
        SqliteTx {
            conn,
            writable,
            recorded: Vec::new(),
        }
    }

    fn writing(&self) -> Result<()> {
        shared::writing(self.writable)
    }

    /// Runs one cached statement that changes rows; returns how many.
    fn execute(
        &self,
        operation: &'static str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<usize> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute(params))
            .map_err(storage(operation))
    }

    /// What holds `name` in the shared namespace, if anything.
    fn name_kind(&self, name: &AccountName, operation: &'static str) -> Result<Option<Principal>> {
        let kind: Option<String> = self
            .conn
            .prepare_cached("SELECT kind FROM principals WHERE name = ?1")
            .and_then(|mut s| s.query_row([name.as_str()], |r| r.get(0)).optional())
            .map_err(storage(operation))?;
        kind.map(|kind| Principal::parse(&kind)).transpose()
    }

    /// Fails with Conflict naming what holds `name` in the shared namespace, if anything.
    fn name_free(&self, name: &AccountName, operation: &'static str) -> Result<()> {
        if let Some(holder) = self.name_kind(name, operation)? {
            return Err(shared::name_held(name, holder));
        }
        Ok(())
    }

    /// Takes `name` in the shared namespace of accounts and groups, or fails with Conflict
    /// naming what holds it; the primary key of `principals` backs the check up.
    fn claim_name(
        &self,
        name: &AccountName,
        kind: Principal,
        operation: &'static str,
    ) -> Result<()> {
        self.name_free(name, operation)?;
        self.conn
            .prepare_cached("INSERT INTO principals (name, kind) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute([name.as_str(), kind.as_str()]))
            .map_err(|error| {
                if is_unique_violation(&error) {
                    shared::name_taken(name)
                } else {
                    storage(operation)(error)
                }
            })?;
        Ok(())
    }

    /// Deletes an account or a group: if `name` is a principal of `kind`, runs `deletes` in
    /// order, each bound to `name` (the rows that name it, then the principal's own row, last),
    /// and frees the name when that last delete found the row. Returns whether it did. The
    /// kind is checked first, so a name of the other kind (or none) loses nothing, not even
    /// the routes that name it, when the caller goes on after the NotFound. The foreign keys
    /// would cascade most of this; the explicit deletes say what goes.
    fn delete_principal(
        &self,
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
            last = self.execute(operation, sql, [name.as_str()])?;
        }
        if last == 0 {
            return Ok(false);
        }
        self.execute(
            operation,
            "DELETE FROM principals WHERE name = ?1 AND kind = ?2",
            [name.as_str(), kind.as_str()],
        )?;
        Ok(true)
    }

    /// Writes an account's keys in their order.
    fn insert_keys(&self, account: &AccountName, keys: &[AuthorizedKey]) -> Result<()> {
        for (position, key) in (0_i64..).zip(keys) {
            self.execute(
                "insert_keys",
                "INSERT INTO account_keys (account, position, algorithm, blob, comment) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    account.as_str(),
                    position,
                    key.algorithm,
                    key.blob,
                    key.comment
                ],
            )?;
        }
        Ok(())
    }

    /// Fails with NotFound naming the first of `members` that is no account (groups do not
    /// nest). Called before a group's rows are written, so a refusal writes nothing.
    fn check_members(&self, group: &AccountName, members: &[AccountName]) -> Result<()> {
        for member in members {
            if self.name_kind(member, "check_members")? != Some(Principal::Account) {
                return Err(shared::no_member(group, member));
            }
        }
        Ok(())
    }

    /// Writes a group's members, checked already by [`SqliteTx::check_members`]; a member
    /// listed twice is stored once.
    fn insert_members(&self, group: &AccountName, members: &[AccountName]) -> Result<()> {
        for member in members {
            self.execute(
                "insert_members",
                "INSERT INTO group_members (group_name, member) VALUES (?1, ?2) \
                 ON CONFLICT (group_name, member) DO NOTHING",
                [group.as_str(), member.as_str()],
            )?;
        }
        Ok(())
    }

    /// The keys of one account, in order.
    fn keys(&self, name: &AccountName) -> Result<Vec<AuthorizedKey>> {
        const OP: &str = "keys";
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT algorithm, blob, comment FROM account_keys WHERE account = ?1 \
                 ORDER BY position",
            )
            .map_err(storage(OP))?;
        let mut rows = statement.query([name.as_str()]).map_err(storage(OP))?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next().map_err(storage(OP))? {
            keys.push(convert::key(row)?);
        }
        Ok(keys)
    }

    /// Runs a query and converts each row.
    fn query<T>(
        &self,
        operation: &'static str,
        sql: &str,
        params: impl rusqlite::Params,
        mut convert: impl FnMut(&rusqlite::Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut statement = self.conn.prepare_cached(sql).map_err(storage(operation))?;
        let mut rows = statement.query(params).map_err(storage(operation))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(storage(operation))? {
            out.push(convert(row)?);
        }
        Ok(out)
    }

    /// Runs a query for at most one row and converts it.
    fn query_one<T>(
        &self,
        operation: &'static str,
        sql: &str,
        params: impl rusqlite::Params,
        convert: impl FnOnce(&rusqlite::Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut statement = self.conn.prepare_cached(sql).map_err(storage(operation))?;
        let mut rows = statement.query(params).map_err(storage(operation))?;
        match rows.next().map_err(storage(operation))? {
            Some(row) => convert(row).map(Some),
            None => Ok(None),
        }
    }
}

impl Tx for SqliteTx<'_> {
    fn writable(&self) -> bool {
        self.writable
    }

    fn policy_version(&mut self) -> Result<u64> {
        let version: i64 = self
            .conn
            .prepare_cached("SELECT version FROM policy_version WHERE id = 1")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(storage("policy_version"))?;
        u64::try_from(version)
            .map_err(|_| corrupt("policy_version", &CoreError::invalid("negative")))
    }

    fn account(&mut self, name: &AccountName) -> Result<Option<Account>> {
        let Some(row) = self.query_one(
            "account",
            concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE name = ?1"
            ),
            [name.as_str()],
            |row| convert::account(row, Vec::new()),
        )?
        else {
            return Ok(None);
        };
        let keys = self.keys(name)?;
        Ok(Some(Account { keys, ..row }))
    }

    fn accounts(&mut self) -> Result<Vec<Account>> {
        let mut keys: BTreeMap<String, Vec<AuthorizedKey>> = BTreeMap::new();
        for (account, key) in self.query(
            "accounts",
            "SELECT account, algorithm, blob, comment FROM account_keys ORDER BY account, position",
            [],
            |row| Ok((column::<String>(row, "account")?, convert::key(row)?)),
        )? {
            keys.entry(account).or_default().push(key);
        }
        self.query(
            "accounts",
            concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts ORDER BY name"
            ),
            [],
            |row| {
                let name: String = column(row, "name")?;
                convert::account(row, keys.remove(&name).unwrap_or_default())
            },
        )
    }

    fn insert_account(&mut self, account: &Account) -> Result<()> {
        const OP: &str = "insert_account";
        self.writing()?;
        self.claim_name(&account.name, Principal::Account, OP)?;
        let totp = totp_to_db(account.totp.as_ref());
        self.execute(
            OP,
            "INSERT INTO accounts (name, kind, disabled, password_hash, created, access, \
             totp_secret, totp_last_step, totp_recovery, token_epoch, e2e_keys) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                account.name.as_str(),
                account.kind.as_str(),
                account.disabled,
                account.password_hash.as_deref(),
                nanos(account.created)?,
                convert::access_to_json(&account.access),
                totp.secret,
                totp.last_step,
                totp.recovery,
                epoch_to_db(account.token_epoch)?,
                convert::e2e_keys_to_json(&account.e2e_keys)?,
            ],
        )?;
        self.insert_keys(&account.name, &account.keys)
    }

    fn update_account(&mut self, name: &AccountName, update: &AccountUpdate) -> Result<()> {
        const OP: &str = "update_account";
        self.writing()?;
        // One statement per field that is set: a field the update leaves alone is never
        // written, so nothing is rewritten from a copy read earlier.
        let exists = self
            .query_one(
                OP,
                "SELECT 1 FROM accounts WHERE name = ?1",
                [name.as_str()],
                |_| Ok(()),
            )?
            .is_some();
        if !exists {
            return Err(no_account(name));
        }
        if let Some(disabled) = update.disabled {
            self.execute(
                OP,
                "UPDATE accounts SET disabled = ?1 WHERE name = ?2 AND disabled != ?1",
                params![disabled, name.as_str()],
            )?;
        }
        if let Some(hash) = &update.password_hash {
            self.execute(
                OP,
                "UPDATE accounts SET password_hash = ?1 WHERE name = ?2",
                params![hash.as_deref(), name.as_str()],
            )?;
        }
        if let Some(access) = &update.access {
            self.execute(
                OP,
                "UPDATE accounts SET access = ?1 WHERE name = ?2 AND access != ?1",
                params![convert::access_to_json(access), name.as_str()],
            )?;
        }
        if let Some(keys) = &update.keys {
            self.execute(
                OP,
                "DELETE FROM account_keys WHERE account = ?1",
                [name.as_str()],
            )?;
            self.insert_keys(name, keys)?;
        }
        if let Some(keys) = &update.e2e_keys {
            self.execute(
                OP,
                "UPDATE accounts SET e2e_keys = ?1 WHERE name = ?2",
                params![convert::e2e_keys_to_json(keys)?, name.as_str()],
            )?;
        }
        if let Some(totp) = &update.totp {
            // A new enrolment starts with no step used; its secret and codes replace the old.
            let totp = totp_to_db(totp.as_ref());
            self.execute(
                OP,
                "UPDATE accounts SET totp_secret = ?1, totp_recovery = ?2, totp_last_step = NULL \
                 WHERE name = ?3",
                params![totp.secret, totp.recovery, name.as_str()],
            )?;
        }
        if update.revoke_tokens {
            self.execute(
                OP,
                "UPDATE accounts SET token_epoch = token_epoch + 1 WHERE name = ?1",
                [name.as_str()],
            )?;
        }
        Ok(())
    }

    fn delete_account(&mut self, name: &AccountName) -> Result<()> {
        const OP: &str = "delete_account";
        self.writing()?;
        // Checked inside the write transaction, so no upload can land between the check and
        // the delete. Deliveries outlive accounts; a live one would otherwise pass to a new
        // account that takes the name.
        let live: i64 = self
            .conn
            .prepare_cached(concat!(
                "SELECT COUNT(*) FROM deliveries WHERE (recipient = ?1 OR sender = ?1) ",
                "AND state IN ",
                live_states!()
            ))
            .and_then(|mut s| s.query_row([name.as_str()], |r| r.get(0)))
            .map_err(storage(OP))?;
        if live > 0 {
            return Err(shared::deliveries_live(name, live));
        }
        let deleted = self.delete_principal(
            name,
            &[
                "DELETE FROM routes WHERE from_name = ?1 OR to_name = ?1",
                "DELETE FROM group_members WHERE member = ?1",
                "DELETE FROM account_keys WHERE account = ?1",
                // A later account of the same name must not inherit a token.
                "DELETE FROM tokens WHERE account = ?1",
                "DELETE FROM api_keys WHERE account = ?1",
                "DELETE FROM accounts WHERE name = ?1",
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
        const OP: &str = "group";
        let exists = self
            .query_one(
                OP,
                "SELECT 1 FROM groups WHERE name = ?1",
                [name.as_str()],
                |_| Ok(()),
            )?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let members = self.query(
            OP,
            "SELECT member FROM group_members WHERE group_name = ?1 ORDER BY member",
            [name.as_str()],
            |row| account_name(row, "member"),
        )?;
        Ok(Some(Group {
            name: name.clone(),
            members,
        }))
    }

    fn groups(&mut self) -> Result<Vec<Group>> {
        const OP: &str = "groups";
        let mut members: BTreeMap<String, Vec<AccountName>> = BTreeMap::new();
        for (group, member) in self.query(
            OP,
            "SELECT group_name, member FROM group_members ORDER BY group_name, member",
            [],
            |row| {
                Ok((
                    column::<String>(row, "group_name")?,
                    account_name(row, "member")?,
                ))
            },
        )? {
            members.entry(group).or_default().push(member);
        }
        self.query(OP, "SELECT name FROM groups ORDER BY name", [], |row| {
            let name = account_name(row, "name")?;
            let members = members.remove(name.as_str()).unwrap_or_default();
            Ok(Group { name, members })
        })
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
            "INSERT INTO groups (name) VALUES (?1)",
            [group.name.as_str()],
        )?;
        self.insert_members(&group.name, &group.members)
    }

    fn set_members(&mut self, group: &AccountName, members: &[AccountName]) -> Result<()> {
        const OP: &str = "set_members";
        self.writing()?;
        let exists = self
            .query_one(
                OP,
                "SELECT 1 FROM groups WHERE name = ?1",
                [group.as_str()],
                |_| Ok(()),
            )?
            .is_some();
        if !exists {
            return Err(no_group(group));
        }
        // Only the difference is written, so the policy version moves once per real change.
        let current: HashSet<AccountName> = self
            .query(
                OP,
                "SELECT member FROM group_members WHERE group_name = ?1",
                [group.as_str()],
                |row| account_name(row, "member"),
            )?
            .into_iter()
            .collect();
        let wanted: HashSet<AccountName> = members.iter().cloned().collect();
        let added: Vec<AccountName> = members
            .iter()
            .filter(|m| !current.contains(*m))
            .cloned()
            .collect();
        // Checked before the first write, so a refusal removes no member either.
        self.check_members(group, &added)?;
        for gone in current.difference(&wanted) {
            self.execute(
                OP,
                "DELETE FROM group_members WHERE group_name = ?1 AND member = ?2",
                [group.as_str(), gone.as_str()],
            )?;
        }
        self.insert_members(group, &added)
    }

    fn delete_group(&mut self, name: &AccountName) -> Result<()> {
        self.writing()?;
        let deleted = self.delete_principal(
            name,
            &[
                "DELETE FROM routes WHERE from_name = ?1 OR to_name = ?1",
                "DELETE FROM group_members WHERE group_name = ?1",
                "DELETE FROM groups WHERE name = ?1",
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
        self.query(
            "routes",
            "SELECT from_name, to_name, effect, require_e2e FROM routes ORDER BY from_name, to_name",
            [],
            |row| {
                Ok(Route {
                    from: account_name(row, "from_name")?,
                    to: account_name(row, "to_name")?,
                    effect: convert::parsed(row, "effect", RouteEffect::parse)?,
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
            "INSERT INTO routes (from_name, to_name, effect, require_e2e) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (from_name, to_name) DO UPDATE SET effect = excluded.effect, \
             require_e2e = excluded.require_e2e \
             WHERE effect != excluded.effect OR require_e2e != excluded.require_e2e",
            params![
                route.from.as_str(),
                route.to.as_str(),
                route.effect.as_str(),
                route.require_e2e,
            ],
        )?;
        Ok(())
    }

    fn delete_route(&mut self, from: &AccountName, to: &AccountName) -> Result<()> {
        self.writing()?;
        let deleted = self.execute(
            "delete_route",
            "DELETE FROM routes WHERE from_name = ?1 AND to_name = ?2",
            [from.as_str(), to.as_str()],
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
        for delivery in deliveries {
            let (size, created, updated) = (
                size_to_db(delivery.size)?,
                nanos(delivery.created)?,
                nanos(delivery.updated)?,
            );
            let inserted = self
                .conn
                .prepare_cached(concat!(
                    "INSERT INTO deliveries (",
                    delivery_columns!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        delivery.id.to_string(),
                        delivery.batch_id.to_string(),
                        delivery.sender.as_str(),
                        delivery.recipient.as_str(),
                        delivery.target.as_str(),
                        delivery.name.as_str(),
                        size,
                        delivery.sha256,
                        delivery.blob_id.as_str(),
                        delivery.state.as_str(),
                        created,
                        updated,
                        delivery.e2e,
                    ])
                });
            match inserted {
                Ok(_) => {}
                Err(error) if is_unique_violation(&error) && violates(&error, "deliveries.id") => {
                    return Err(shared::delivery_exists(&delivery.id));
                }
                Err(error) if is_unique_violation(&error) => {
                    return Err(shared::live_name_taken(delivery));
                }
                Err(error) => return Err(storage(OP)(error)),
            }
        }
        if let Some((blob_id, content)) = inline {
            self.execute(
                OP,
                "INSERT INTO inline_blobs (blob_id, content) VALUES (?1, ?2)",
                params![blob_id.as_str(), content],
            )?;
        }
        Ok(())
    }

    fn delivery(&mut self, id: &DeliveryId) -> Result<Option<Delivery>> {
        self.query_one(
            "delivery",
            concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM deliveries WHERE id = ?1"
            ),
            [id.to_string()],
            |row| convert::delivery(row),
        )
    }

    fn deliveries(&mut self, query: &DeliveryQuery) -> Result<Vec<Delivery>> {
        let (sql, values) = delivery_select(
            concat!("SELECT ", delivery_columns!(), " FROM deliveries"),
            query,
        )?;
        self.query("deliveries", &sql, params_from_iter(values.iter()), |row| {
            convert::delivery(row)
        })
    }

    fn first_delivery_with_content(
        &mut self,
        query: &DeliveryQuery,
    ) -> Result<Option<(Delivery, Option<Vec<u8>>)>> {
        let query = DeliveryQuery {
            limit: Some(1),
            ..query.clone()
        };
        let (sql, values) = delivery_select(
            concat!(
                "SELECT ",
                delivery_columns!(),
                ", (SELECT content FROM inline_blobs WHERE inline_blobs.blob_id = deliveries.blob_id) \
                 AS inline_content FROM deliveries"
            ),
            &query,
        )?;
        self.query_one(
            "first_delivery_with_content",
            &sql,
            params_from_iter(values.iter()),
            |row| Ok((convert::delivery(row)?, column(row, "inline_content")?)),
        )
    }

    fn inline_blob(&mut self, blob_id: &BlobId) -> Result<Option<Vec<u8>>> {
        self.query_one(
            "inline_blob",
            "SELECT content FROM inline_blobs WHERE blob_id = ?1",
            [blob_id.as_str()],
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
        const OP: &str = "transition";
        self.writing()?;
        if from.is_empty() {
            return Ok(false);
        }
        let mut sql = String::from("UPDATE deliveries SET state = ?1, updated = ?2 WHERE id = ?3");
        let mut values = vec![
            Value::Text(to.as_str().to_owned()),
            Value::Integer(nanos(at)?),
            Value::Text(id.to_string()),
        ];
        push_states(&mut sql, &mut values, from);
        let moved = match self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut s| s.execute(params_from_iter(values.iter())))
        {
            Ok(rows) => rows > 0,
            // Moving a terminal delivery back to a live state can collide with a newer live
            // delivery of the same name.
            Err(error) if is_unique_violation(&error) => {
                return Err(shared::transition_clash());
            }
            Err(error) => return Err(storage(OP)(error)),
        };
        if moved && !to.is_kept() {
            // The last delivery that keeps an inline blob takes its content with it.
            self.execute(
                OP,
                concat!(
                    "DELETE FROM inline_blobs WHERE blob_id = ",
                    "(SELECT blob_id FROM deliveries WHERE id = ?1) ",
                    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.blob_id = inline_blobs.blob_id ",
                    "AND d.state IN ",
                    live_states!(),
                    ") AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.blob_id = inline_blobs.blob_id ",
                    "AND d.state = 'quarantined')"
                ),
                [id.to_string()],
            )?;
        }
        Ok(moved)
    }

    fn rename_delivery(&mut self, id: &DeliveryId, name: &FileName) -> Result<()> {
        self.writing()?;
        let renamed = self
            .conn
            .prepare_cached(concat!(
                "UPDATE deliveries SET name = ?1 WHERE id = ?2 AND state IN ",
                live_states!()
            ))
            .and_then(|mut s| s.execute([name.as_str().to_owned(), id.to_string()]));
        match renamed {
            Ok(0) => Err(shared::no_pending_delivery(id)),
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(shared::rename_clash(name)),
            Err(error) => Err(storage("rename_delivery")(error)),
        }
    }

    fn live_blobs(&mut self) -> Result<HashSet<BlobId>> {
        Ok(self
            .query(
                "live_blobs",
                concat!(
                    "SELECT blob_id FROM deliveries WHERE state IN ",
                    live_states!(),
                    " UNION SELECT blob_id FROM deliveries WHERE state = 'quarantined'"
                ),
                [],
                |row| convert::parsed(row, "blob_id", BlobId::parse),
            )?
            .into_iter()
            .collect())
    }

    fn blob_in_use(&mut self, blob_id: &BlobId) -> Result<bool> {
        Ok(self
            .query_one(
                "blob_in_use",
                concat!(
                    "SELECT 1 FROM deliveries WHERE blob_id = ?1 AND state IN ",
                    live_states!(),
                    " UNION ALL SELECT 1 FROM deliveries WHERE blob_id = ?1 AND state = 'quarantined'",
                    " LIMIT 1"
                ),
                [blob_id.as_str()],
                |_| Ok(()),
            )?
            .is_some())
    }

    fn inbox_usage(&mut self, recipient: &AccountName) -> Result<InboxUsage> {
        let (bytes, files): (i64, i64) = self
            .conn
            .prepare_cached(concat!(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM deliveries ",
                "WHERE recipient = ?1 AND state IN ",
                live_states!()
            ))
            .and_then(|mut s| s.query_row([recipient.as_str()], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(storage("inbox_usage"))?;
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
            "UPDATE accounts SET totp_last_step = ?1 WHERE name = ?2 \
             AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < ?1)",
            params![step, name.as_str()],
        )?;
        Ok(updated == 1)
    }

    fn use_recovery_code(&mut self, name: &AccountName, code_hash: &str) -> Result<bool> {
        const OP: &str = "use_recovery_code";
        self.writing()?;
        let Some(text) = self.query_one(
            OP,
            "SELECT totp_recovery FROM accounts WHERE name = ?1 AND totp_secret IS NOT NULL",
            [name.as_str()],
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
            "UPDATE accounts SET totp_recovery = ?1 WHERE name = ?2",
            [left, name.as_str().to_owned()],
        )?;
        Ok(true)
    }

    fn bans(&mut self) -> Result<Vec<Ban>> {
        self.query(
            "bans",
            "SELECT subject, until, level, reason, created FROM bans ORDER BY subject",
            [],
            |row| convert::ban(row),
        )
    }

    fn ban(&mut self, subject: &BanSubject) -> Result<Option<Ban>> {
        self.query_one(
            "ban",
            "SELECT subject, until, level, reason, created FROM bans WHERE subject = ?1",
            [subject.key()],
            |row| convert::ban(row),
        )
    }

    fn put_ban(&mut self, ban: &Ban) -> Result<()> {
        self.writing()?;
        self.execute(
            "put_ban",
            "INSERT INTO bans (subject, until, level, reason, created) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (subject) DO UPDATE SET until = excluded.until, level = excluded.level, \
             reason = excluded.reason, created = excluded.created",
            params![
                ban.subject.key(),
                nanos(ban.until)?,
                i64::from(ban.level.max(1)),
                ban.reason,
                nanos(ban.created)?
            ],
        )?;
        Ok(())
    }

    fn delete_ban(&mut self, subject: &BanSubject) -> Result<()> {
        self.writing()?;
        let deleted = self.execute(
            "delete_ban",
            "DELETE FROM bans WHERE subject = ?1",
            [subject.key()],
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
            "INSERT INTO offences (subject, at, weight) VALUES (?1, ?2, ?3)",
            params![subject.key(), nanos(at)?, i64::from(weight)],
        )?;
        Ok(())
    }

    fn offence_score(&mut self, subject: &BanSubject, since: OffsetDateTime) -> Result<u64> {
        let score: Option<i64> = self.query_one(
            "offence_score",
            "SELECT COALESCE(SUM(weight), 0) AS score FROM offences \
             WHERE subject = ?1 AND at >= ?2",
            params![subject.key(), nanos(since)?],
            |row| column(row, "score"),
        )?;
        Ok(score.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    fn forget_offences(&mut self, subject: &BanSubject) -> Result<u64> {
        self.writing()?;
        let deleted = self.execute(
            "forget_offences",
            "DELETE FROM offences WHERE subject = ?1",
            [subject.key()],
        )?;
        Ok(deleted as u64)
    }

    fn prune_offences(&mut self, before: OffsetDateTime, keep: u64, limit: u32) -> Result<u64> {
        self.writing()?;
        // Two bounded lookups, each on an index: by time, and by the order of addition (ids
        // are never reused: AUTOINCREMENT).
        let deleted = self.execute(
            "prune_offences",
            "DELETE FROM offences WHERE id IN \
             (SELECT id FROM offences WHERE at < ?1 ORDER BY at, id LIMIT ?3) \
             OR id IN (SELECT id FROM offences \
             WHERE id <= (SELECT MAX(id) FROM offences) - ?2 ORDER BY id LIMIT ?3)",
            params![
                nanos(before)?,
                i64::try_from(keep).unwrap_or(i64::MAX),
                i64::from(limit)
            ],
        )?;
        Ok(deleted as u64)
    }

    fn record(&mut self, events: &[Event]) -> Result<()> {
        const OP: &str = "record";
        self.writing()?;
        if events.is_empty() {
            return Ok(());
        }
        // The head, read inside the write transaction, which holds SQLite's write lock: it is
        // still the head when the rows go in, even with a second process writing.
        // `sqlite_sequence` holds the highest seq ever used (the newest row may have gone);
        // `shared::chain` numbers and chains the records after it.
        let (last_seq, last_hash, used_seq): (Option<i64>, Option<String>, Option<i64>) = self
            .conn
            .prepare_cached(
                "SELECT (SELECT seq FROM events ORDER BY seq DESC LIMIT 1), \
                        (SELECT hash FROM events ORDER BY seq DESC LIMIT 1), \
                        (SELECT seq FROM sqlite_sequence WHERE name = 'events')",
            )
            .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
            .map_err(storage(OP))?;
        let records = shared::chain(events, last_seq, last_hash, used_seq)?;
        let mut statement = self
            .conn
            .prepare_cached(concat!(
                "INSERT INTO events (",
                audit_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))
            .map_err(storage(OP))?;
        for record in records {
            let event = &record.event;
            statement
                .execute(params![
                    convert::seq_to_db(record.seq)?,
                    event.id.hyphenated().to_string(),
                    nanos(event.time)?,
                    event.kind.as_str(),
                    event.actor,
                    event.source.as_deref(),
                    event.protocol.as_str(),
                    event.object,
                    event.outcome.as_str(),
                    event.detail,
                    record.prev_hash,
                    record.hash,
                ])
                .map_err(|error| {
                    if is_unique_violation(&error) {
                        shared::event_recorded()
                    } else {
                        storage(OP)(error)
                    }
                })?;
            self.recorded.push(record);
        }
        Ok(())
    }

    fn events(&mut self, query: &EventQuery) -> Result<Vec<Event>> {
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut sql = String::from(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE 1 = 1"
        ));
        let mut values = Vec::new();
        push_event_filters(&mut sql, &mut values, query);
        let backwards = query.limit.is_some() || query.offset > 0;
        if backwards {
            // The newest `limit` after the newest `offset`, read backwards from the end and
            // turned round below; -1 is SQLite's "no limit".
            sql.push_str(" ORDER BY seq DESC LIMIT ? OFFSET ?");
            values.push(Value::Integer(query.limit.map_or(-1, i64::from)));
            values.push(Value::Integer(i64::from(query.offset)));
        } else {
            sql.push_str(" ORDER BY seq");
        }
        let mut events = self.query("events", &sql, params_from_iter(values.iter()), |row| {
            convert::event(row)
        })?;
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
        let mut sql = String::from(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM events WHERE seq > ?"
        ));
        // A `seq` beyond i64 matches nothing; clamp rather than fail.
        let mut values = vec![Value::Integer(i64::try_from(after_seq).unwrap_or(i64::MAX))];
        push_event_filters(&mut sql, &mut values, query);
        sql.push_str(" ORDER BY seq LIMIT ?");
        values.push(Value::Integer(i64::from(page)));
        self.query(
            "audit_records",
            &sql,
            params_from_iter(values.iter()),
            |row| convert::audit_record(row),
        )
    }

    fn audit_head(&mut self) -> Result<Option<ChainHead>> {
        self.query_one(
            "audit_head",
            "SELECT seq, hash, time, (SELECT COUNT(*) FROM events) AS events FROM events \
             WHERE hash IS NOT NULL ORDER BY seq DESC LIMIT 1",
            [],
            |row| {
                let events: i64 = column(row, "events")?;
                Ok(ChainHead {
                    seq: convert::seq_from_db(column(row, "seq")?)?,
                    hash: column(row, "hash")?,
                    time: convert::time_from_nanos("time", column(row, "time")?)?,
                    events: u64::try_from(events).unwrap_or(0),
                })
            },
        )
    }

    fn audit_legacy_through(&mut self) -> Result<u64> {
        let legacy: Option<i64> = self.query_one(
            "audit_legacy_through",
            "SELECT legacy_through FROM audit_chain WHERE id = 1",
            [],
            |row| column(row, "legacy_through"),
        )?;
        // Without the row (deleted by hand), every event must be chained.
        convert::seq_from_db(legacy.unwrap_or(0))
    }

    fn event(&mut self, id: &Uuid) -> Result<Option<Event>> {
        self.query_one(
            "event",
            concat!("SELECT ", event_columns!(), " FROM events WHERE id = ?1"),
            [id.to_string()],
            |row| convert::event(row),
        )
    }

    fn insert_jobs(&mut self, jobs: &[Job]) -> Result<()> {
        const OP: &str = "insert_jobs";
        self.writing()?;
        for job in jobs {
            let (due, created, updated) =
                (nanos(job.due)?, nanos(job.created)?, nanos(job.updated)?);
            self.conn
                .prepare_cached(concat!(
                    "INSERT INTO jobs (",
                    job_columns!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        job.id.to_string(),
                        job.rule,
                        job.handler.target(),
                        job.event.to_string(),
                        job.state.as_str(),
                        i64::from(job.attempts),
                        due,
                        created,
                        updated,
                        job.last_error.as_deref(),
                    ])
                })
                .map_err(|error| {
                    if is_unique_violation(&error) {
                        shared::job_exists(job.id)
                    } else {
                        storage(OP)(error)
                    }
                })?;
        }
        Ok(())
    }

    fn job(&mut self, id: &Uuid) -> Result<Option<Job>> {
        self.query_one(
            "job",
            concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1"),
            [id.to_string()],
            |row| convert::job(row),
        )
    }

    fn jobs(&mut self, query: &JobQuery) -> Result<Vec<Job>> {
        let limit = i64::from(query.limit);
        match query.state {
            Some(state) => self.query(
                "jobs",
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE state = ?1 ORDER BY created DESC, id DESC LIMIT ?2"
                ),
                params![state.as_str(), limit],
                |row| convert::job(row),
            ),
            None => self.query(
                "jobs",
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs ORDER BY created DESC, id DESC LIMIT ?1"
                ),
                [limit],
                |row| convert::job(row),
            ),
        }
    }

    fn due_jobs(&mut self, now: OffsetDateTime, limit: u32) -> Result<Vec<Job>> {
        self.query(
            "due_jobs",
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE state = 'queued' AND due <= ?1 ORDER BY due, id LIMIT ?2"
            ),
            params![nanos(now)?, i64::from(limit)],
            |row| convert::job(row),
        )
    }

    fn update_job(&mut self, job: &Job, from: &[JobState]) -> Result<bool> {
        self.writing()?;
        let mut changed = 0;
        // One state at a time keeps the statement static (and cached); `from` is short.
        for state in from {
            changed += self.execute(
                "update_job",
                "UPDATE jobs SET state = ?2, attempts = ?3, due = ?4, updated = ?5, \
                 last_error = ?6 WHERE id = ?1 AND state = ?7",
                params![
                    job.id.to_string(),
                    job.state.as_str(),
                    i64::from(job.attempts),
                    nanos(job.due)?,
                    nanos(job.updated)?,
                    job.last_error.as_deref(),
                    state.as_str(),
                ],
            )?;
            if changed > 0 {
                break;
            }
        }
        Ok(changed > 0)
    }

    fn queued_jobs(&mut self) -> Result<u64> {
        let queued: Option<i64> = self.query_one(
            "queued_jobs",
            "SELECT queued AS n FROM job_depth WHERE id = 1",
            [],
            |row| column(row, "n"),
        )?;
        Ok(queued.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    fn job_counts(&mut self) -> Result<JobCounts> {
        let rows: Vec<(String, i64)> = self.query(
            "job_counts",
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state",
            [],
            |row| Ok((column(row, "state")?, column(row, "n")?)),
        )?;
        shared::job_counts(rows)
    }

    fn insert_tokens(&mut self, tokens: &[TokenRecord]) -> Result<()> {
        const OP: &str = "insert_tokens";
        self.writing()?;
        for token in tokens {
            let (epoch, created, expires) = (
                epoch_to_db(token.epoch)?,
                nanos(token.created)?,
                nanos(token.expires)?,
            );
            self.conn
                .prepare_cached(concat!(
                    "INSERT INTO tokens (",
                    token_columns!(),
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        token.hash,
                        token.kind.as_str(),
                        token.session,
                        token.account.as_str(),
                        token.scope.as_str(),
                        epoch,
                        token.source.as_deref(),
                        token.protocol.as_str(),
                        created,
                        expires,
                        token.methods.as_deref(),
                    ])
                })
                .map_err(|error| {
                    if is_unique_violation(&error) {
                        shared::token_stored()
                    } else {
                        storage(OP)(error)
                    }
                })?;
        }
        Ok(())
    }

    fn token(&mut self, hash: &str) -> Result<Option<TokenRecord>> {
        self.query_one(
            "token",
            concat!("SELECT ", token_columns!(), " FROM tokens WHERE hash = ?1"),
            [hash],
            |row| convert::token(row),
        )
    }

    fn take_token(&mut self, hash: &str) -> Result<Option<TokenRecord>> {
        self.writing()?;
        self.query_one(
            "take_token",
            concat!(
                "DELETE FROM tokens WHERE hash = ?1 RETURNING ",
                token_columns!()
            ),
            [hash],
            |row| convert::token(row),
        )
    }

    fn delete_token_session(&mut self, session: &str) -> Result<u64> {
        self.writing()?;
        let deleted = self.execute(
            "delete_token_session",
            "DELETE FROM tokens WHERE session = ?1",
            [session],
        )?;
        Ok(deleted as u64)
    }

    fn delete_expired_tokens(&mut self, now: OffsetDateTime) -> Result<(u64, Vec<String>)> {
        const OP: &str = "delete_expired_tokens";
        self.writing()?;
        let now = nanos(now)?;
        let sessions: Vec<String> = self.query(
            OP,
            "SELECT DISTINCT session FROM tokens WHERE expires <= ?1",
            [now],
            |row| column(row, "session"),
        )?;
        let deleted = self.execute(OP, "DELETE FROM tokens WHERE expires <= ?1", [now])?;
        let mut ended = Vec::new();
        for session in sessions {
            let left = self
                .query_one(
                    OP,
                    "SELECT 1 FROM tokens WHERE session = ?1 LIMIT 1",
                    [session.as_str()],
                    |_| Ok(()),
                )?
                .is_some();
            if !left {
                ended.push(session);
            }
        }
        Ok((deleted as u64, ended))
    }

    fn insert_api_key(&mut self, key: &ApiKeyRecord) -> Result<()> {
        const OP: &str = "insert_api_key";
        self.writing()?;
        let (created, expires, last_used) = (
            nanos(key.created)?,
            key.expires.map(nanos).transpose()?,
            key.last_used.map(nanos).transpose()?,
        );
        let inserted = self
            .conn
            .prepare_cached(concat!(
                "INSERT INTO api_keys (",
                api_key_columns!(),
                ") SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 ",
                "WHERE EXISTS (SELECT 1 FROM accounts WHERE name = ?2)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    key.id,
                    key.account.as_str(),
                    key.label,
                    key.hash,
                    key.scopes.to_string(),
                    created,
                    expires,
                    last_used,
                ])
            })
            .map_err(|error| {
                if is_unique_violation(&error) {
                    shared::api_key_stored()
                } else {
                    storage(OP)(error)
                }
            })?;
        if inserted == 0 {
            return Err(no_account(&key.account));
        }
        Ok(())
    }

    fn api_key(&mut self, id: &str) -> Result<Option<ApiKeyRecord>> {
        self.query_one(
            "api_key",
            concat!(
                "SELECT ",
                api_key_columns!(),
                " FROM api_keys WHERE id = ?1"
            ),
            [id],
            |row| convert::api_key(row),
        )
    }

    fn api_keys(&mut self, account: &AccountName) -> Result<Vec<ApiKeyRecord>> {
        self.query(
            "api_keys",
            concat!(
                "SELECT ",
                api_key_columns!(),
                " FROM api_keys WHERE account = ?1 ORDER BY created, id"
            ),
            [account.as_str()],
            |row| convert::api_key(row),
        )
    }

    fn delete_api_key(&mut self, account: &AccountName, id: &str) -> Result<bool> {
        self.writing()?;
        let deleted = self.execute(
            "delete_api_key",
            "DELETE FROM api_keys WHERE id = ?1 AND account = ?2",
            [id, account.as_str()],
        )?;
        Ok(deleted > 0)
    }

    fn touch_api_key(&mut self, id: &str, at: OffsetDateTime) -> Result<bool> {
        self.writing()?;
        let touched = self.execute(
            "touch_api_key",
            "UPDATE api_keys SET last_used = ?2 WHERE id = ?1",
            params![id, nanos(at)?],
        )?;
        Ok(touched > 0)
    }

    fn insert_resumable(&mut self, upload: &ResumableRecord) -> Result<()> {
        const OP: &str = "insert_resumable";
        self.writing()?;
        let size = size_to_db(upload.size)?;
        let (created, expires) = (nanos(upload.created)?, nanos(upload.expires)?);
        self.conn
            .prepare_cached(concat!(
                "INSERT INTO resumable_uploads (",
                resumable_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    upload.id,
                    upload.owner.as_str(),
                    convert::targets_to_db(&upload.targets),
                    upload.name.as_str(),
                    size,
                    upload.sha256,
                    upload.e2e,
                    upload.staging.as_str(),
                    created,
                    expires,
                ])
            })
            .map_err(|error| {
                if is_unique_violation(&error) {
                    shared::resumable_stored()
                } else {
                    storage(OP)(error)
                }
            })?;
        Ok(())
    }

    fn resumable(&mut self, id: &str) -> Result<Option<ResumableRecord>> {
        self.query_one(
            "resumable",
            concat!(
                "SELECT ",
                resumable_columns!(),
                " FROM resumable_uploads WHERE id = ?1"
            ),
            [id],
            |row| convert::resumable(row),
        )
    }

    fn resumables(&mut self) -> Result<Vec<ResumableRecord>> {
        self.query(
            "resumables",
            concat!(
                "SELECT ",
                resumable_columns!(),
                " FROM resumable_uploads ORDER BY id"
            ),
            [],
            |row| convert::resumable(row),
        )
    }

    fn delete_resumable(&mut self, id: &str) -> Result<bool> {
        self.writing()?;
        let deleted = self.execute(
            "delete_resumable",
            "DELETE FROM resumable_uploads WHERE id = ?1",
            [id],
        )?;
        Ok(deleted > 0)
    }

    fn put_node(&mut self, node: &NodeInfo, heartbeat: OffsetDateTime) -> Result<()> {
        self.writing()?;
        self.execute(
            "put_node",
            "INSERT INTO nodes (id, host, pid, started, heartbeat) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
             started = excluded.started, heartbeat = excluded.heartbeat",
            params![
                node.id.to_string(),
                node.host,
                i64::from(node.pid),
                nanos(node.started)?,
                nanos(heartbeat)?
            ],
        )?;
        Ok(())
    }

    fn nodes(&mut self) -> Result<Vec<NodeRecord>> {
        self.query(
            "nodes",
            concat!("SELECT ", node_columns!(), " FROM nodes ORDER BY id"),
            [],
            |row| convert::node(row),
        )
    }

    fn delete_node(&mut self, node: &NodeId) -> Result<bool> {
        self.writing()?;
        let id = node.to_string();
        self.execute(
            "delete_node",
            "DELETE FROM live_sessions WHERE node = ?1",
            [id.as_str()],
        )?;
        let deleted = self.execute("delete_node", "DELETE FROM nodes WHERE id = ?1", [id])?;
        Ok(deleted > 0)
    }

    fn insert_live_session(
        &mut self,
        session: &LiveSessionRecord,
        max: Option<u32>,
        alive_since: OffsetDateTime,
    ) -> Result<bool> {
        const OP: &str = "insert_live_session";
        self.writing()?;
        let node = session.node.to_string();
        let (id, started) = (size_to_db(session.id)?, nanos(session.started)?);
        if let Some(max) = max {
            let open: i64 = self
                .conn
                .prepare_cached(
                    "SELECT count(*) FROM live_sessions AS s WHERE s.account = ?1 AND \
                     (s.node = ?2 OR EXISTS (SELECT 1 FROM nodes AS n \
                      WHERE n.id = s.node AND n.heartbeat >= ?3))",
                )
                .and_then(|mut statement| {
                    statement.query_row(
                        params![
                            session.account.as_str(),
                            node,
                            nanos_saturating(alive_since)
                        ],
                        |row| row.get(0),
                    )
                })
                .map_err(storage(OP))?;
            if open >= i64::from(max) {
                return Ok(false);
            }
        }
        self.conn
            .prepare_cached(concat!(
                "INSERT INTO live_sessions (",
                live_session_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .and_then(|mut statement| {
                statement.execute(params![
                    node,
                    id,
                    session.account.as_str(),
                    session.protocol.as_str(),
                    session.source,
                    started,
                    session.closing
                ])
            })
            .map_err(|error| {
                if is_unique_violation(&error) {
                    shared::session_taken(session)
                } else {
                    storage(OP)(error)
                }
            })?;
        Ok(true)
    }

    fn delete_live_session(&mut self, node: &NodeId, id: u64) -> Result<bool> {
        self.writing()?;
        let deleted = self.execute(
            "delete_live_session",
            "DELETE FROM live_sessions WHERE node = ?1 AND id = ?2",
            params![node.to_string(), size_to_db(id)?],
        )?;
        Ok(deleted > 0)
    }

    fn live_session_list(&mut self) -> Result<Vec<LiveSessionRecord>> {
        self.query(
            "live_session_list",
            concat!(
                "SELECT ",
                live_session_columns!(),
                " FROM live_sessions ORDER BY node, id"
            ),
            [],
            |row| convert::live_session(row),
        )
    }

    fn close_live_session(&mut self, node: &NodeId, id: u64, reason: &str) -> Result<bool> {
        self.writing()?;
        let found = self.execute(
            "close_live_session",
            "UPDATE live_sessions SET closing = coalesce(closing, ?3) WHERE node = ?1 AND id = ?2",
            params![node.to_string(), size_to_db(id)?, reason],
        )?;
        Ok(found > 0)
    }

    fn closing_sessions(&mut self, node: &NodeId) -> Result<Vec<(u64, String)>> {
        self.query(
            "closing_sessions",
            "SELECT id, closing FROM live_sessions WHERE node = ?1 AND closing IS NOT NULL \
             ORDER BY id",
            [node.to_string()],
            |row| Ok((unsigned(row, "id")?, column(row, "closing")?)),
        )
    }

    fn data_keys(&mut self) -> Result<Vec<DataKeyRecord>> {
        self.query(
            "data_keys",
            "SELECT id, owner, wrapped, master, created FROM data_keys ORDER BY id",
            [],
            |row| {
                Ok(DataKeyRecord {
                    id: column(row, "id")?,
                    owner: column(row, "owner")?,
                    wrapped: column(row, "wrapped")?,
                    master: column(row, "master")?,
                    created: convert::time_from_nanos("created", column(row, "created")?)?,
                })
            },
        )
    }

    fn insert_data_key(&mut self, key: &DataKeyRecord) -> Result<bool> {
        self.writing()?;
        let inserted = self.execute(
            "insert_data_key",
            "INSERT INTO data_keys (id, owner, wrapped, master, created) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![
                key.id,
                key.owner,
                key.wrapped,
                key.master,
                nanos(key.created)?
            ],
        )?;
        Ok(inserted == 1)
    }

    fn rewrap_data_key(&mut self, id: &str, wrapped: &[u8], master: &str) -> Result<bool> {
        self.writing()?;
        let changed = self.execute(
            "rewrap_data_key",
            "UPDATE data_keys SET wrapped = ?2, master = ?3 WHERE id = ?1",
            params![id, wrapped, master],
        )?;
        Ok(changed == 1)
    }
}

/// `select` (which must read `FROM deliveries`) with the query's conditions, oldest first, as
/// SQL and its bound values. Only fixed fragments are added to the SQL.
fn delivery_select(select: &'static str, query: &DeliveryQuery) -> Result<(String, Vec<Value>)> {
    let mut sql = String::from(select);
    let mut values = Vec::new();
    // A query for live deliveries of one recipient, or of one sender, seeks in the partial
    // index of live deliveries that leads with that column: named, because without
    // statistics the planner may take the sender's whole history instead (the plans are
    // checked by a test below).
    let live = !query.states.is_empty() && query.states.iter().all(|state| state.is_live());
    if let Some(index) = listing_index(query, live) {
        sql.push_str(" INDEXED BY ");
        sql.push_str(index);
    } else if live && query.recipient.is_some() {
        sql.push_str(" INDEXED BY deliveries_live_name");
    } else if live && query.sender.is_some() {
        sql.push_str(" INDEXED BY deliveries_live_outbox");
    } else if query.sender.is_some() && query.recipient.is_some() {
        // A receipt: without statistics the planner would walk the sender's listing index.
        sql.push_str(" INDEXED BY deliveries_sender_history");
    }
    sql.push_str(" WHERE 1 = 1");
    let mut text = |sql: &mut String, column: &str, value: &str| {
        sql.push_str(" AND ");
        sql.push_str(column);
        sql.push_str(" = ?");
        values.push(Value::Text(value.to_owned()));
    };
    if let Some(sender) = &query.sender {
        text(&mut sql, "sender", sender.as_str());
    }
    if let Some(recipient) = &query.recipient {
        text(&mut sql, "recipient", recipient.as_str());
    }
    if let Some(target) = &query.target {
        text(&mut sql, "target", target.as_str());
    }
    if let Some(name) = &query.name {
        text(&mut sql, "name", name.as_str());
    }
    if let Some(batch) = &query.batch {
        text(&mut sql, "batch_id", &batch.to_string());
    }
    push_states(&mut sql, &mut values, &query.states);
    // The partial indexes of the check's queue and of the quarantine, likewise.
    if query.states == [DeliveryState::Checking] {
        sql.push_str(" AND state = 'checking'");
    } else if query.states == [DeliveryState::Quarantined] {
        sql.push_str(" AND state = 'quarantined'");
    }
    // The partial indexes hold live deliveries only; SQLite uses one when the query names
    // their condition literally (a bound list proves nothing to the planner).
    if live {
        sql.push_str(concat!(" AND state IN ", live_states!()));
    }
    if let Some(before) = query.created_before {
        sql.push_str(" AND created < ?");
        values.push(Value::Integer(nanos(before)?));
    }
    if let Some(needle) = &query.name_contains {
        // instr, not LIKE: the text is matched as it is, wildcards and all. SQLite's lower()
        // folds ASCII letters only, as the other stores do.
        sql.push_str(" AND instr(lower(name), ?) > 0");
        values.push(Value::Text(needle.to_ascii_lowercase()));
    }
    sql.push_str(&order_by(query.order));
    if query.limit.is_some() || query.offset > 0 {
        // SQLite wants a LIMIT before an OFFSET; -1 is none.
        sql.push_str(" LIMIT ? OFFSET ?");
        values.push(Value::Integer(query.limit.map_or(-1, i64::from)));
        values.push(Value::Integer(i64::from(query.offset)));
    }
    Ok((sql, values))
}

/// The index that walks a listing (one recipient's live deliveries, or everything one
/// account sent, and nothing narrower) in its order; named for the same reason as the
/// others. `None` for any other query.
fn listing_index(query: &DeliveryQuery, live: bool) -> Option<&'static str> {
    let narrower = query.target.is_some() || query.name.is_some() || query.batch.is_some();
    if narrower {
        return None;
    }
    match (&query.recipient, &query.sender) {
        (Some(_), None) if live => Some(match query.order.sort {
            DeliverySort::Created => "deliveries_live_inbox_created",
            DeliverySort::Name => "deliveries_live_inbox_name",
            DeliverySort::Size => "deliveries_live_inbox_size",
            DeliverySort::Sender | DeliverySort::Recipient => "deliveries_live_name",
        }),
        (None, Some(_)) if query.states.is_empty() => Some(match query.order.sort {
            DeliverySort::Created => "deliveries_sent_created",
            DeliverySort::Name => "deliveries_sent_name",
            DeliverySort::Size => "deliveries_sent_size",
            DeliverySort::Recipient | DeliverySort::Sender => "deliveries_sender_history",
        }),
        _ => None,
    }
}

/// Appends ` AND state IN (?, ...)` for a non-empty list of states.
fn push_states(sql: &mut String, values: &mut Vec<Value>, states: &[DeliveryState]) {
    if states.is_empty() {
        return;
    }
    sql.push_str(" AND state IN (");
    for (i, state) in states.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
        values.push(Value::Text(state.as_str().to_owned()));
    }
    sql.push(')');
}

/// Appends the filters of an event query (all but `limit`) as bound parameters.
fn push_event_filters(sql: &mut String, values: &mut Vec<Value>, query: &EventQuery) {
    if let Some(actor) = &query.actor {
        sql.push_str(" AND actor = ?");
        values.push(Value::Text(actor.clone()));
    }
    if let Some(kind) = query.kind {
        sql.push_str(" AND kind = ?");
        values.push(Value::Text(kind.as_str().to_owned()));
    }
    if let Some(outcome) = query.outcome {
        sql.push_str(" AND outcome = ?");
        values.push(Value::Text(outcome.as_str().to_owned()));
    }
    if let Some(source) = &query.source {
        // Sources are recorded with their port; an IP address alone matches any port.
        let any_port = EventQuery::any_port_prefix(source);
        sql.push_str(" AND (source = ?");
        values.push(Value::Text(source.clone()));
        if let Some(prefix) = any_port {
            // A prefix match without LIKE's wildcards: the address text has none, but `_`
            // could appear in a zone id.
            sql.push_str(" OR substr(source, 1, ?) = ?");
            values.push(Value::Integer(
                i64::try_from(prefix.len()).unwrap_or(i64::MAX),
            ));
            values.push(Value::Text(prefix));
        }
        sql.push(')');
    }
    if let Some(since) = query.since {
        sql.push_str(" AND time >= ?");
        values.push(Value::Integer(convert::nanos_saturating(since)));
    }
    if let Some(until) = query.until {
        sql.push_str(" AND time < ?");
        values.push(Value::Integer(convert::nanos_saturating(until)));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use super::*;
    use mailroom_core::{DeliveryOrder, SortDirection};

    /// The plan SQLite picks for a delivery query: one index seek, never a scan of the table.
    fn plan(query: &DeliveryQuery) -> String {
        let conn = Connection::open_in_memory().unwrap();
        crate::store::configure(&conn).unwrap();
        crate::migrate::migrate(&conn).unwrap();
        let (sql, values) = delivery_select(
            concat!("SELECT ", delivery_columns!(), " FROM deliveries"),
            query,
        )
        .unwrap();
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows: Vec<String> = statement
            .query_map(params_from_iter(values.iter()), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.join("; ")
    }

    /// The delivery queries of a transfer, each with the index it must seek in.
    fn transfer_lookups() -> Vec<(DeliveryQuery, &'static str)> {
        let name = |s: &str| AccountName::parse(s).unwrap();
        let file = FileName::parse("a.txt").unwrap();
        let live = DeliveryState::LIVE.to_vec();
        let visible = DeliveryState::VISIBLE.to_vec();
        let recallable = DeliveryState::RECALLABLE.to_vec();
        [
            // An inbox file (open, stat), a sender's folder, the whole inbox.
            (
                DeliveryQuery {
                    recipient: Some(name("bob")),
                    sender: Some(name("alice")),
                    name: Some(file.clone()),
                    states: visible.clone(),
                    ..DeliveryQuery::default()
                },
                "deliveries_live_name",
            ),
            (
                DeliveryQuery {
                    recipient: Some(name("bob")),
                    states: visible,
                    ..DeliveryQuery::default()
                },
                "deliveries_live_inbox_created",
            ),
            // A free name: the same three columns, live.
            (
                DeliveryQuery {
                    recipient: Some(name("bob")),
                    sender: Some(name("alice")),
                    name: Some(file.clone()),
                    states: live.clone(),
                    limit: Some(1),
                    ..DeliveryQuery::default()
                },
                "deliveries_live_name",
            ),
            // An outbox file, folder and the whole outbox.
            (
                DeliveryQuery {
                    sender: Some(name("alice")),
                    target: Some(name("team")),
                    name: Some(file.clone()),
                    states: live,
                    ..DeliveryQuery::default()
                },
                "deliveries_live_outbox",
            ),
            (
                DeliveryQuery {
                    sender: Some(name("alice")),
                    states: recallable,
                    ..DeliveryQuery::default()
                },
                "deliveries_live_outbox",
            ),
            // Receipts, in every state.
            (
                DeliveryQuery {
                    sender: Some(name("alice")),
                    recipient: Some(name("bob")),
                    name: Some(file),
                    ..DeliveryQuery::default()
                },
                "deliveries_sender_history",
            ),
            // An upload waiting for its check, and the quarantine.
            (
                DeliveryQuery {
                    batch: Some(DeliveryId::new()),
                    states: vec![DeliveryState::Checking],
                    ..DeliveryQuery::default()
                },
                "deliveries_checking_batch",
            ),
        ]
        .into()
    }

    #[test]
    fn the_lookups_of_a_transfer_use_their_index() {
        for (query, index) in transfer_lookups() {
            let plan = plan(&query);
            assert!(plan.contains(index), "{query:?}: {plan}");
            assert!(!plan.contains("SCAN deliveries"), "{query:?}: {plan}");
        }
    }

    /// A page of an inbox or of the sent items walks the index of its order, in either
    /// direction, with no sort of the mailbox; the two orders by the other party walk the
    /// name indexes and sort only what ties on that party (never the whole table).
    #[test]
    fn the_pages_of_a_listing_walk_their_index() {
        let bob = AccountName::parse("bob").unwrap();
        let cases = [
            (
                DeliverySort::Created,
                "deliveries_live_inbox_created",
                "deliveries_sent_created",
            ),
            (
                DeliverySort::Name,
                "deliveries_live_inbox_name",
                "deliveries_sent_name",
            ),
            (
                DeliverySort::Size,
                "deliveries_live_inbox_size",
                "deliveries_sent_size",
            ),
            (
                DeliverySort::Sender,
                "deliveries_live_name",
                "deliveries_sender_history",
            ),
            (
                DeliverySort::Recipient,
                "deliveries_live_name",
                "deliveries_sender_history",
            ),
        ];
        for (sort, inbox_index, sent_index) in cases {
            for direction in [SortDirection::Ascending, SortDirection::Descending] {
                let page = DeliveryQuery {
                    order: DeliveryOrder { sort, direction },
                    name_contains: Some("rep".to_owned()),
                    offset: 50,
                    limit: Some(51),
                    ..DeliveryQuery::default()
                };
                let inbox = DeliveryQuery {
                    recipient: Some(bob.clone()),
                    states: DeliveryState::VISIBLE.to_vec(),
                    ..page.clone()
                };
                let sent = DeliveryQuery {
                    sender: Some(bob.clone()),
                    ..page
                };
                for (query, index) in [(inbox, inbox_index), (sent, sent_index)] {
                    let plan = plan(&query);
                    assert!(plan.contains(index), "{query:?}: {plan}");
                    assert!(!plan.contains("SCAN deliveries"), "{query:?}: {plan}");
                    let indexed = !matches!(sort, DeliverySort::Sender | DeliverySort::Recipient);
                    if indexed {
                        assert!(!plan.contains("TEMP B-TREE"), "{query:?}: {plan}");
                    }
                }
            }
        }
    }

    /// The quarantine's list reads the quarantine's own small index, not the table.
    #[test]
    fn the_quarantine_is_listed_from_its_index() {
        let plan = plan(&DeliveryQuery {
            states: vec![DeliveryState::Quarantined],
            ..DeliveryQuery::default()
        });
        assert!(
            plan.contains("SCAN deliveries USING INDEX deliveries_quarantined_blob"),
            "{plan}"
        );
    }

    /// A delivery query is prepared once per connection and then only bound and run: without
    /// the planner's stability guarantee (`store::configure`), the bound values it looks at
    /// made SQLite prepare the statement again at every use.
    #[test]
    fn delivery_queries_are_not_prepared_again_at_each_use() {
        let conn = Connection::open_in_memory().unwrap();
        crate::store::configure(&conn).unwrap();
        crate::migrate::migrate(&conn).unwrap();
        let other = AccountName::parse("carol").unwrap();
        for (query, _) in transfer_lookups() {
            let (sql, values) = delivery_select(
                concat!("SELECT ", delivery_columns!(), " FROM deliveries"),
                &query,
            )
            .unwrap();
            // The same shape with other values, as the next client's lookup binds them.
            let moved = DeliveryQuery {
                sender: query.sender.as_ref().map(|_| other.clone()),
                recipient: query.recipient.as_ref().map(|_| other.clone()),
                ..query.clone()
            };
            let (moved_sql, moved_values) = delivery_select(
                concat!("SELECT ", delivery_columns!(), " FROM deliveries"),
                &moved,
            )
            .unwrap();
            assert_eq!(sql, moved_sql, "one statement per query shape");
            for values in [&values, &moved_values, &values] {
                let mut statement = conn.prepare_cached(&sql).unwrap();
                let mut rows = statement.query(params_from_iter(values.iter())).unwrap();
                while rows.next().unwrap().is_some() {}
                drop(rows);
                assert_eq!(
                    statement.get_status(rusqlite::StatementStatus::RePrepare),
                    0,
                    "{sql}"
                );
            }
        }
    }
}
