//! What the two engines' transactions (`SqliteTx` in `tx.rs`, `PgTx` in `pg/tx.rs`) share
//! besides their SQL: the words of every refusal, the kinds of the shared namespace, the list
//! of live states their queries splice in, and the rules that need no database (the audit
//! chain's next records, a recovery code used once, the job counts).
//!
//! PostgreSQL answers exactly as SQLite does, so what can be said once is said here, and each
//! engine keeps only its statements. Nothing here runs a query or knows a dialect; the SQL
//! fragments, [`live_states!`] and [`order_by`], are the same text in both.

use mailroom_core::{
    AccountName, AuditRecord, BanSubject, CoreError, Delivery, DeliveryId, Event, FileName,
    GENESIS_HASH, JobCounts, JobState, LiveSessionRecord, Result, chain_hash,
};

use crate::convert::{recovery_from_json, recovery_json, seq_from_db};
use crate::error::corrupt;

/// The states of `DeliveryState::LIVE` as an SQL list, for `concat!`. It must be the list of
/// the core and of the partial index `deliveries_live_name` in both schemas, or "live" would
/// mean one thing for names and another for blobs; a unit test checks all of them agree.
macro_rules! live_states {
    () => {
        "('stored', 'checking', 'delivered', 'picked-up')"
    };
}
pub(crate) use live_states;

/// Fails unless the unit may write: a read unit is refused before any SQL is sent.
pub(crate) fn writing(writable: bool) -> Result<()> {
    if writable {
        Ok(())
    } else {
        Err(CoreError::internal("a read unit tried to write"))
    }
}

/// What a name in the shared namespace belongs to: `principals.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Principal {
    /// An account.
    Account,
    /// A group.
    Group,
}

impl Principal {
    /// The label stored in `principals.kind`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Principal::Account => "account",
            Principal::Group => "group",
        }
    }

    /// Parses a stored label.
    pub(crate) fn parse(label: &str) -> Result<Self> {
        match label {
            "account" => Ok(Principal::Account),
            "group" => Ok(Principal::Group),
            other => Err(corrupt(
                "principals.kind",
                &CoreError::invalid(format!("unknown principal kind {other:?}")),
            )),
        }
    }
}

/// Conflict: `name` is held by `holder` in the shared namespace.
pub(crate) fn name_held(name: &AccountName, holder: Principal) -> CoreError {
    let holder = match holder {
        Principal::Account => "an account",
        Principal::Group => "a group",
    };
    CoreError::conflict(format!("the name {name} is already taken by {holder}"))
}

/// Conflict: `name` was taken in the shared namespace as it was claimed.
pub(crate) fn name_taken(name: &AccountName) -> CoreError {
    CoreError::conflict(format!("the name {name} is already taken"))
}

/// NotFound for an account.
pub(crate) fn no_account(name: &AccountName) -> CoreError {
    CoreError::not_found(format!("there is no account named {name}"))
}

/// NotFound for a group.
pub(crate) fn no_group(name: &AccountName) -> CoreError {
    CoreError::not_found(format!("there is no group named {name}"))
}

/// NotFound for a route's end that is neither an account nor a group.
pub(crate) fn no_principal(name: &AccountName) -> CoreError {
    CoreError::not_found(format!("no account or group is named {name}"))
}

/// NotFound for a group member that is no account (groups do not nest).
pub(crate) fn no_member(group: &AccountName, member: &AccountName) -> CoreError {
    CoreError::not_found(format!(
        "cannot add {member} to group {group}: there is no account by that name"
    ))
}

/// Conflict: an account with `live` deliveries waiting to or from it cannot be deleted.
pub(crate) fn deliveries_live(name: &AccountName, live: i64) -> CoreError {
    CoreError::conflict(format!(
        "{name} still has {live} deliveries waiting to or from it; disable the account instead"
    ))
}

/// NotFound for a route rule.
pub(crate) fn no_route(from: &AccountName, to: &AccountName) -> CoreError {
    CoreError::not_found(format!("there is no route rule from {from} to {to}"))
}

/// Conflict: a delivery's id is taken.
pub(crate) fn delivery_exists(id: &DeliveryId) -> CoreError {
    CoreError::conflict(format!("a delivery with id {id} exists already"))
}

/// Conflict: a delivery's name is live already between its sender and recipient.
pub(crate) fn live_name_taken(delivery: &Delivery) -> CoreError {
    CoreError::conflict(format!(
        "{} already has a live delivery named {:?} from {}",
        delivery.recipient,
        delivery.name.as_str(),
        delivery.sender
    ))
}

/// Conflict: moving a terminal delivery back to a live state collides with a newer live
/// delivery of the same name.
pub(crate) fn transition_clash() -> CoreError {
    CoreError::conflict("another live delivery between the same sender and recipient has this name")
}

/// NotFound for a delivery that is not live (renaming).
pub(crate) fn no_pending_delivery(id: &DeliveryId) -> CoreError {
    CoreError::not_found(format!("no pending delivery has the id {id}"))
}

/// Conflict: a rename to a name live between the same sender and recipient.
pub(crate) fn rename_clash(name: &FileName) -> CoreError {
    CoreError::conflict(format!(
        "the name {:?} is taken by another live delivery between the same sender and recipient",
        name.as_str()
    ))
}

/// NotFound for a ban.
pub(crate) fn not_banned(subject: &BanSubject) -> CoreError {
    CoreError::not_found(format!("{subject} is not banned"))
}

/// Conflict: an event id recorded twice.
pub(crate) fn event_recorded() -> CoreError {
    CoreError::conflict("an event of this change is already recorded")
}

/// Conflict: a job id taken.
pub(crate) fn job_exists(id: impl std::fmt::Display) -> CoreError {
    CoreError::conflict(format!("job {id} exists"))
}

/// Conflict: a token hash taken.
pub(crate) fn token_stored() -> CoreError {
    CoreError::conflict("token already stored")
}

/// Conflict: an API key id taken.
pub(crate) fn api_key_stored() -> CoreError {
    CoreError::conflict("API key already stored")
}

/// Conflict: a resumable upload of this id is recorded already.
pub(crate) fn resumable_stored() -> CoreError {
    CoreError::conflict("resumable upload already stored")
}

/// Conflict: a live session's node already has one of its id.
pub(crate) fn session_taken(session: &LiveSessionRecord) -> CoreError {
    CoreError::conflict(format!(
        "node {} already has a session {}",
        session.node, session.id
    ))
}

/// A TOTP step as stored.
pub(crate) fn step_to_db(step: u64) -> Result<i64> {
    i64::try_from(step).map_err(|_| CoreError::invalid("TOTP step out of range"))
}

/// `accounts.totp_recovery` once `code_hash` is used: `None` if it is not among the codes
/// (each code works once).
pub(crate) fn spend_recovery_code(stored: &str, code_hash: &str) -> Result<Option<String>> {
    let mut codes = recovery_from_json(stored).map_err(|error| corrupt("totp_recovery", &error))?;
    let before = codes.len();
    codes.retain(|c| c != code_hash);
    if codes.len() == before {
        return Ok(None);
    }
    Ok(Some(recovery_json(Some(&codes))))
}

/// `events` as they join the audit chain: each with the next seq and chained to the one
/// before, after the head the writer read inside its write transaction (`last_seq` and
/// `last_hash`: the newest row's, if any) and the highest seq ever used (`used_seq`: the
/// newest row may have gone). Seqs are set here so the hash can include them.
pub(crate) fn chain(
    events: &[Event],
    last_seq: Option<i64>,
    last_hash: Option<String>,
    used_seq: Option<i64>,
) -> Result<Vec<AuditRecord>> {
    let mut prev_hash = last_hash.unwrap_or_else(|| GENESIS_HASH.to_owned());
    let mut seq = seq_from_db(last_seq.unwrap_or(0).max(used_seq.unwrap_or(0)))?;
    Ok(events
        .iter()
        .map(|event| {
            seq += 1;
            let hash = chain_hash(&prev_hash, seq, event);
            AuditRecord {
                seq,
                event: event.clone(),
                prev_hash: Some(std::mem::replace(&mut prev_hash, hash.clone())),
                hash: Some(hash),
            }
        })
        .collect())
}

/// The job counts from `(state, count)` rows.
pub(crate) fn job_counts(rows: Vec<(String, i64)>) -> Result<JobCounts> {
    let mut counts = JobCounts::default();
    for (state, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        match JobState::parse(&state) {
            Ok(JobState::Queued) => counts.queued = n,
            Ok(JobState::Done) => counts.done = n,
            Ok(JobState::Dead) => counts.dead = n,
            Ok(JobState::Dropped) => counts.dropped = n,
            Err(err) => return Err(corrupt("jobs.state", &err)),
        }
    }
    Ok(counts)
}

/// ` ORDER BY <column> <direction>, id <direction>`: the order of a delivery query, the same
/// text for SQLite and PostgreSQL. Only fixed fragments.
pub(crate) fn order_by(order: mailroom_core::DeliveryOrder) -> String {
    use mailroom_core::{DeliverySort, SortDirection};
    let column = match order.sort {
        DeliverySort::Created => "created",
        DeliverySort::Name => "name",
        DeliverySort::Size => "size",
        DeliverySort::Sender => "sender",
        DeliverySort::Recipient => "recipient",
    };
    let direction = match order.direction {
        SortDirection::Ascending => "",
        SortDirection::Descending => " DESC",
    };
    format!(" ORDER BY {column}{direction}, id{direction}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use mailroom_core::{DeliveryState, EventKind, Outcome, Protocol};
    use uuid::Uuid;

    use super::*;

    #[test]
    fn live_states_match_the_core_and_both_schemas() {
        let core: Vec<String> = DeliveryState::LIVE
            .iter()
            .map(|state| format!("'{}'", state.as_str()))
            .collect();
        assert_eq!(live_states!(), format!("({})", core.join(", ")));
        for migration in [
            include_str!("../migrations/sqlite/0001_initial.sql"),
            include_str!("../migrations/sqlite/0012_quarantine.sql"),
            include_str!("../migrations/postgres/0001_initial.sql"),
        ] {
            assert!(migration.contains(concat!("WHERE state IN ", live_states!())));
        }
    }

    #[test]
    fn a_recovery_code_is_spent_once() {
        let stored = recovery_json(Some(&["a".to_owned(), "b".to_owned()]));
        let left = spend_recovery_code(&stored, "a").unwrap().unwrap();
        assert_eq!(left, r#"["b"]"#);
        assert_eq!(spend_recovery_code(&left, "a").unwrap(), None);
        assert!(spend_recovery_code("not json", "a").is_err());
    }

    #[test]
    fn chained_records_follow_the_head() {
        let event = |object: &str| Event {
            id: Uuid::now_v7(),
            time: time::OffsetDateTime::UNIX_EPOCH,
            kind: EventKind::Login,
            actor: "alice".to_owned(),
            source: None,
            protocol: Protocol::Sftp,
            object: object.to_owned(),
            outcome: Outcome::Ok,
            detail: String::new(),
        };
        let events = [event("a"), event("b")];
        // The newest row is 4, but 6 was used (and its row has gone).
        let records = chain(&events, Some(4), Some("h4".to_owned()), Some(6)).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(records[0].prev_hash.as_deref(), Some("h4"));
        assert_eq!(records[1].prev_hash, records[0].hash);
        assert_eq!(
            records[1].hash.as_deref(),
            Some(chain_hash(records[0].hash.as_deref().unwrap(), 8, &events[1]).as_str())
        );
        let first = chain(&events[..1], None, None, None).unwrap();
        assert_eq!(first[0].seq, 1);
        assert_eq!(first[0].prev_hash.as_deref(), Some(GENESIS_HASH));
    }
}
