//! The tamper-evident audit trail: the canonical encoding of an event, the hash chain over
//! the events in commit order, and the check that walks it.
//!
//! Every event committed by a metadata store carries `hash = SHA-256(prev_hash ||
//! canonical(seq, event))`, where `prev_hash` is the hash of the event before it (64 zeros for
//! the first). Editing, deleting, inserting or reordering events breaks the chain at the first
//! event touched, and [`ChainVerifier`] names it. Rewriting the whole chain from some point on
//! cannot be seen from the chain alone: that is what an operator's recorded [`Checkpoint`]s
//! are for.
//!
//! This module does no I/O: stores feed it records, and the CLI prints what it reports. It
//! deliberately knows nothing of SQL, syslog or JSON.

use std::fmt;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{CoreError, Result};
use crate::model::Event;

/// The `prev_hash` of the first event of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Tag that opens the canonical encoding, so that a future encoding can never collide with
/// this one.
const ENCODING_TAG: &[u8] = b"mailroom-audit-v1";

/// An event as committed: its place in the trail and its links in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The commit order, starting at 1; never reused.
    pub seq: u64,
    /// The event.
    pub event: Event,
    /// The hash of the event before it, or [`GENESIS_HASH`]; `None` for an event recorded
    /// before the chain existed (a database older than the chain).
    pub prev_hash: Option<String>,
    /// This event's hash ([`chain_hash`]); `None` as for `prev_hash`.
    pub hash: Option<String>,
}

/// The canonical bytes of an event at position `seq`, the input of its hash.
///
/// The encoding is unambiguous: the tag `mailroom-audit-v1`, then `seq` as 8 bytes big-endian,
/// the 16 bytes of the UUID, the time as nanoseconds since the Unix epoch in 16 bytes
/// big-endian two's complement, then each text field (kind, actor, source, protocol, object,
/// outcome, detail; labels as their stable `as_str` forms) as a 4-byte big-endian length
/// followed by its UTF-8 bytes. `source` is preceded by one byte: 0 when absent (and nothing
/// follows), 1 when present. Every field is included, so changing any of them, or moving the
/// event to another `seq`, changes the hash.
pub fn canonical_bytes(seq: u64, event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        ENCODING_TAG.len()
            + 8
            + 16
            + 16
            + 7 * 4
            + 1
            + event.actor.len()
            + event.source.as_ref().map_or(0, String::len)
            + event.object.len()
            + event.detail.len()
            + 64,
    );
    out.extend_from_slice(ENCODING_TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(&event.time.unix_timestamp_nanos().to_be_bytes());
    push_text(&mut out, event.kind.as_str());
    push_text(&mut out, &event.actor);
    match &event.source {
        None => out.push(0),
        Some(source) => {
            out.push(1);
            push_text(&mut out, source);
        }
    }
    push_text(&mut out, event.protocol.as_str());
    push_text(&mut out, &event.object);
    push_text(&mut out, event.outcome.as_str());
    push_text(&mut out, &event.detail);
    out
}

/// The hash of an event: SHA-256 over the 64 ASCII hex digits of `prev_hash` followed by
/// [`canonical_bytes`], as 64 lower-case hex digits.
pub fn chain_hash(prev_hash: &str, seq: u64, event: &Event) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical_bytes(seq, event));
    hex::encode(hasher.finalize())
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    // Invariant: fields come from rows of at most SQLite's 1 GB string limit, so the length
    // fits in 32 bits; saturating would still leave the encoding deterministic.
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A point of the chain an operator wrote down (`mailroom audit head`), to check later that
/// the chain still passes through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The event's `seq`.
    pub seq: u64,
    /// The event's hash.
    pub hash: String,
}

impl Checkpoint {
    /// Parses `SEQ:HASH` (the hash as 64 hex digits, either case).
    pub fn parse(input: &str) -> Result<Checkpoint> {
        let bad = || {
            CoreError::invalid(format!(
                "{input:?} is not a checkpoint of the form SEQ:HASH (a number, a colon, 64 hex digits)"
            ))
        };
        let (seq, hash) = input.split_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Checkpoint {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// The newest event of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Its `seq`.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// When it happened.
    pub time: OffsetDateTime,
    /// Events in the trail up to and including it, legacy ones too.
    pub events: u64,
}

/// What is wrong with the first bad event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainProblem {
    /// It links to the event before it, but its fields no longer match its hash: it was edited.
    ContentChanged,
    /// It is intact, but the event before it is not the one it was chained to: an event
    /// before it was deleted, or the order was changed.
    PredecessorMissing,
    /// It is not part of the chain: neither its fields nor its link match, and the event after
    /// it links to the event before it.
    Inserted,
    /// Neither its fields nor its link match, and the chain does not continue around it: it
    /// was moved from elsewhere (reordered) or forged.
    OutOfPlace,
    /// It has no hash although it was recorded after the chain began.
    Unhashed,
}

impl ChainProblem {
    /// One phrase for people.
    pub fn describe(self) -> &'static str {
        match self {
            ChainProblem::ContentChanged => "its content was changed after it was recorded",
            ChainProblem::PredecessorMissing => {
                "the event chained before it is missing or was moved (deleted or reordered)"
            }
            ChainProblem::Inserted => "it was inserted into the chain",
            ChainProblem::OutOfPlace => "it is out of place (reordered or forged)",
            ChainProblem::Unhashed => "it has no hash although the chain had begun",
        }
    }

    /// A stable label for scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            ChainProblem::ContentChanged => "content-changed",
            ChainProblem::PredecessorMissing => "predecessor-missing",
            ChainProblem::Inserted => "inserted",
            ChainProblem::OutOfPlace => "out-of-place",
            ChainProblem::Unhashed => "unhashed",
        }
    }
}

/// The first event where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// Its `seq`.
    pub seq: u64,
    /// Its id.
    pub id: Uuid,
    /// What is wrong.
    pub problem: ChainProblem,
}

/// Whether an expected checkpoint is on the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// The event at its `seq` has its hash, and the chain up to it is intact.
    Found,
    /// No event has its `seq` any more: the trail was truncated.
    Missing,
    /// The event at its `seq` has another hash: the chain was rewritten.
    Mismatch,
    /// The chain broke before reaching it, so it could not be checked.
    Unchecked,
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events recorded before the chain existed, skipped.
    pub legacy: u64,
    /// Chained events checked and found intact.
    pub checked: u64,
    /// The newest intact event, if any.
    pub head: Option<ChainHead>,
    /// The first bad event, if any.
    pub broken: Option<ChainBreak>,
    /// The expected checkpoint and what became of it, if one was given.
    pub checkpoint: Option<(Checkpoint, CheckpointStatus)>,
}

impl ChainReport {
    /// Whether the chain is intact and passes through the expected checkpoint, if any.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
            && self
                .checkpoint
                .as_ref()
                .is_none_or(|(_, status)| *status == CheckpointStatus::Found)
    }
}

/// Walks a chain one record at a time, in `seq` order, so a store can stream its events
/// through it in pages. Feed records with [`ChainVerifier::push`] until it returns `false`
/// (the chain broke; later records are not needed), then call [`ChainVerifier::finish`].
#[derive(Debug)]
pub struct ChainVerifier {
    legacy_through: u64,
    expect: Option<Checkpoint>,
    checkpoint: Option<CheckpointStatus>,
    expected_prev: String,
    legacy: u64,
    checked: u64,
    head: Option<ChainHead>,
    broken: Option<ChainBreak>,
    /// A record whose fields and link both failed, waiting for the next record to tell an
    /// insertion from a move.
    suspect: Option<(u64, Uuid)>,
}

impl ChainVerifier {
    /// A verifier for a trail whose events up to `legacy_through` (0 for none) were recorded
    /// before the chain existed, checking `expect` on the way if given.
    pub fn new(legacy_through: u64, expect: Option<Checkpoint>) -> ChainVerifier {
        ChainVerifier {
            legacy_through,
            expect,
            checkpoint: None,
            expected_prev: GENESIS_HASH.to_owned(),
            legacy: 0,
            checked: 0,
            head: None,
            broken: None,
            suspect: None,
        }
    }

    /// Checks the next record. Returns whether more records are wanted.
    pub fn push(&mut self, record: &AuditRecord) -> bool {
        if self.broken.is_some() {
            return false;
        }
        if let Some((seq, id)) = self.suspect.take() {
            let problem = if record.prev_hash.as_deref() == Some(self.expected_prev.as_str()) {
                ChainProblem::Inserted
            } else {
                ChainProblem::OutOfPlace
            };
            self.broken = Some(ChainBreak { seq, id, problem });
            return false;
        }
        if record.seq <= self.legacy_through {
            self.legacy += 1;
            return true;
        }
        self.pass_checkpoint_before(record.seq);
        let (Some(prev_hash), Some(hash)) = (&record.prev_hash, &record.hash) else {
            return self.break_at(record, ChainProblem::Unhashed);
        };
        let fields_ok = chain_hash(prev_hash, record.seq, &record.event) == *hash;
        let link_ok = *prev_hash == self.expected_prev;
        match (fields_ok, link_ok) {
            (true, true) => {}
            (false, true) => return self.break_at(record, ChainProblem::ContentChanged),
            (true, false) => return self.break_at(record, ChainProblem::PredecessorMissing),
            (false, false) => {
                self.suspect = Some((record.seq, record.event.id));
                return true;
            }
        }
        self.checked += 1;
        self.expected_prev.clone_from(hash);
        self.head = Some(ChainHead {
            seq: record.seq,
            hash: hash.clone(),
            time: record.event.time,
            events: self.legacy + self.checked,
        });
        if let Some(expect) = &self.expect
            && self.checkpoint.is_none()
            && expect.seq == record.seq
        {
            self.checkpoint = Some(if expect.hash == *hash {
                CheckpointStatus::Found
            } else {
                CheckpointStatus::Mismatch
            });
        }
        true
    }

    /// The report, once every record was pushed (or `push` returned `false`).
    pub fn finish(mut self) -> ChainReport {
        if let Some((seq, id)) = self.suspect.take() {
            // The last record, and neither its fields nor its link hold.
            self.broken = Some(ChainBreak {
                seq,
                id,
                problem: ChainProblem::OutOfPlace,
            });
        }
        let checkpoint = self.expect.map(|expect| {
            let status = match self.checkpoint {
                Some(status) => status,
                None if self.broken.is_some() => CheckpointStatus::Unchecked,
                None => CheckpointStatus::Missing,
            };
            (expect, status)
        });
        ChainReport {
            legacy: self.legacy,
            checked: self.checked,
            head: self.head,
            broken: self.broken,
            checkpoint,
        }
    }

    /// Marks the expected checkpoint missing once the walk is past its `seq` without seeing it.
    fn pass_checkpoint_before(&mut self, seq: u64) {
        if let Some(expect) = &self.expect
            && self.checkpoint.is_none()
            && expect.seq < seq
        {
            self.checkpoint = Some(CheckpointStatus::Missing);
        }
    }

    fn break_at(&mut self, record: &AuditRecord, problem: ChainProblem) -> bool {
        self.broken = Some(ChainBreak {
            seq: record.seq,
            id: record.event.id,
            problem,
        });
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;
    use crate::model::{EventKind, Outcome, Protocol};

    fn event(n: u32) -> Event {
        Event {
            id: Uuid::from_u128(u128::from(n) + 1000),
            time: OffsetDateTime::from_unix_timestamp(1_700_000_000 + i64::from(n)).unwrap(),
            kind: EventKind::Admin,
            actor: "cli:root".to_owned(),
            source: None,
            protocol: Protocol::Cli,
            object: format!("account a{n}"),
            outcome: Outcome::Ok,
            detail: String::new(),
        }
    }

    /// A well-formed chain of `n` events with seqs 1..=n.
    fn chain(n: u32) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|i| {
                let seq = u64::from(i);
                let event = event(i);
                let hash = chain_hash(&prev, seq, &event);
                let record = AuditRecord {
                    seq,
                    event,
                    prev_hash: Some(prev.clone()),
                    hash: Some(hash.clone()),
                };
                prev = hash;
                record
            })
            .collect()
    }

    fn verify(records: &[AuditRecord], expect: Option<Checkpoint>) -> ChainReport {
        let mut verifier = ChainVerifier::new(0, expect);
        for record in records {
            if !verifier.push(record) {
                break;
            }
        }
        verifier.finish()
    }

    fn check(records: &[AuditRecord], seq: u64, problem: ChainProblem) {
        let report = verify(records, None);
        assert!(!report.is_intact());
        let broken = report.broken.unwrap();
        assert_eq!((broken.seq, broken.problem), (seq, problem));
    }

    #[test]
    fn an_intact_chain_verifies() {
        let records = chain(5);
        let report = verify(&records, None);
        assert!(report.is_intact());
        assert_eq!(report.checked, 5);
        let head = report.head.unwrap();
        assert_eq!((head.seq, head.events), (5, 5));
        assert_eq!(Some(head.hash), records[4].hash.clone());
    }

    #[test]
    fn the_encoding_separates_fields() {
        // Moving text between adjacent fields must change the bytes.
        let mut a = event(1);
        let mut b = event(1);
        a.actor = "ab".to_owned();
        a.object = "c".to_owned();
        b.actor = "a".to_owned();
        b.object = "bc".to_owned();
        assert_ne!(canonical_bytes(1, &a), canonical_bytes(1, &b));
        let mut c = event(1);
        c.source = Some(String::new());
        assert_ne!(canonical_bytes(1, &event(1)), canonical_bytes(1, &c));
        assert_ne!(canonical_bytes(1, &event(1)), canonical_bytes(2, &event(1)));
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let mut edited = chain(5);
        edited[2].event.detail = "changed".to_owned();
        check(&edited, 3, ChainProblem::ContentChanged);

        let mut deleted = chain(5);
        deleted.remove(2);
        check(&deleted, 4, ChainProblem::PredecessorMissing);

        // A copy of event 2 put in as seq 3, the rest renumbered.
        let mut inserted = chain(5);
        let mut copy = inserted[1].clone();
        copy.event.id = Uuid::from_u128(7);
        inserted.insert(2, copy);
        for (seq, record) in (1..).zip(inserted.iter_mut()) {
            record.seq = seq;
        }
        check(&inserted, 3, ChainProblem::Inserted);

        // Rows 2 and 4 swap everything but their seq.
        let mut swapped = chain(5);
        let (two, four) = (swapped[1].clone(), swapped[3].clone());
        swapped[1] = AuditRecord { seq: 2, ..four };
        swapped[3] = AuditRecord { seq: 4, ..two };
        check(&swapped, 2, ChainProblem::OutOfPlace);

        let mut unhashed = chain(3);
        unhashed[1].hash = None;
        check(&unhashed, 2, ChainProblem::Unhashed);
    }

    #[test]
    fn legacy_events_are_skipped() {
        let mut records = vec![AuditRecord {
            seq: 1,
            event: event(0),
            prev_hash: None,
            hash: None,
        }];
        // The chain starts at seq 2 from the genesis hash.
        let mut tail = chain(2);
        let mut prev = GENESIS_HASH.to_owned();
        for record in &mut tail {
            record.seq += 1;
            record.prev_hash = Some(prev.clone());
            let hash = chain_hash(&prev, record.seq, &record.event);
            record.hash = Some(hash.clone());
            prev = hash;
        }
        records.extend(tail);
        let mut verifier = ChainVerifier::new(1, None);
        for record in &records {
            assert!(verifier.push(record));
        }
        let report = verifier.finish();
        assert!(report.is_intact());
        assert_eq!((report.legacy, report.checked), (1, 2));
        assert_eq!(report.head.unwrap().events, 3);
    }

    #[test]
    fn checkpoints() {
        let records = chain(5);
        let at = |seq: u64| Checkpoint {
            seq,
            hash: records[usize::try_from(seq).unwrap() - 1]
                .hash
                .clone()
                .unwrap(),
        };
        let report = verify(&records, Some(at(3)));
        assert!(report.is_intact());
        assert_eq!(report.checkpoint.unwrap().1, CheckpointStatus::Found);

        let truncated = verify(&records[..2], Some(at(3)));
        assert!(!truncated.is_intact());
        assert_eq!(truncated.checkpoint.unwrap().1, CheckpointStatus::Missing);

        let wrong = Checkpoint {
            seq: 3,
            hash: GENESIS_HASH.to_owned(),
        };
        let rewritten = verify(&records, Some(wrong));
        assert!(!rewritten.is_intact());
        assert_eq!(rewritten.checkpoint.unwrap().1, CheckpointStatus::Mismatch);
    }

    #[test]
    fn checkpoints_parse() {
        let hash = "AB".repeat(32);
        let parsed = Checkpoint::parse(&format!("12:{hash}")).unwrap();
        assert_eq!(parsed.seq, 12);
        assert_eq!(parsed.hash, "ab".repeat(32));
        assert_eq!(Checkpoint::parse(&parsed.to_string()).unwrap(), parsed);
        let bad = [
            String::new(),
            "12".to_owned(),
            "12:abc".to_owned(),
            format!("x:{hash}"),
            format!("12:{hash}0"),
            format!("-1:{hash}"),
        ];
        for input in &bad {
            assert!(Checkpoint::parse(input).is_err(), "{input:?}");
        }
    }
}
