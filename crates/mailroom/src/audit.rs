//! The `mailroom audit …` commands: list with filters, verify the hash chain (optionally
//! against a recorded checkpoint), print the head, export as JSON lines, and summarise
//! refused logins.
//!
//! Reading is paged by `seq` (export, abuse) or done by the store in pages (verify), so a
//! trail of millions of events never sits in memory at once. This module parses arguments and
//! aggregates; it never prints (that is [`Output`]'s) and holds no chain logic (that is
//! `mailroom_core::audit`'s).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail};
use mailroom_core::{
    AuditRecord, ChainReport, Checkpoint, CheckpointStatus, EventKind, EventQuery, Outcome,
};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::admin::with_hub;
use crate::cli::{AuditCommand, AuditFilter, ExportFormat};
use crate::data::DataDir;
use crate::output::{AbuseReport, AbuseRow, Output};

/// Events read per page by export and abuse.
const PAGE: u32 = 1000;

/// `mailroom audit …`.
pub async fn run(data: &DataDir, out: &Output, command: AuditCommand) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    match command {
        AuditCommand::List { limit, filter } => {
            let query = EventQuery {
                limit: Some(limit),
                ..event_query(&filter, now)?
            };
            let events = with_hub(data, async |hub| {
                hub.events(&query)
                    .await
                    .context("cannot read the audit trail")
            })
            .await?;
            out.events(&events)
        }
        AuditCommand::Verify { expect } => verify(data, out, &expect).await,
        AuditCommand::Head => {
            let head = with_hub(data, async |hub| {
                hub.audit_head()
                    .await
                    .context("cannot read the audit trail")
            })
            .await?;
            let head = head.ok_or_else(|| anyhow!("the audit trail has no chained events yet"))?;
            out.audit_head(&head)
        }
        AuditCommand::Export { format, filter } => {
            let ExportFormat::Jsonl = format;
            let query = event_query(&filter, now)?;
            with_hub(data, async |hub| {
                each_page(hub, &query, |page| out.audit_lines(page)).await
            })
            .await
        }
        AuditCommand::Abuse { since, limit } => {
            let query = EventQuery {
                kind: Some(EventKind::Login),
                outcome: Some(Outcome::Refused),
                since: Some(parse_time(&since, now).context("--since")?),
                ..EventQuery::default()
            };
            let mut tally = AbuseTally::default();
            with_hub(data, async |hub| {
                each_page(hub, &query, |page| {
                    page.iter().for_each(|record| tally.add(record));
                    Ok(())
                })
                .await
            })
            .await?;
            out.abuse(&tally.report(limit))
        }
    }
}

/// `audit verify [--expect SEQ:HASH]…`: prints the report, then fails naming the first
/// problem, if any.
async fn verify(data: &DataDir, out: &Output, expect: &[String]) -> Result<()> {
    let checkpoints = expect
        .iter()
        .map(|text| Checkpoint::parse(text).context("--expect"))
        .collect::<Result<Vec<_>>>()?;
    // One walk checks one checkpoint; more than one is rare enough to walk again for each.
    let reports = with_hub(data, async |hub| {
        let mut reports = Vec::new();
        let mut expected = checkpoints.iter().cloned().map(Some).collect::<Vec<_>>();
        if expected.is_empty() {
            expected.push(None);
        }
        for expect in expected {
            reports.push(
                hub.verify_audit(expect)
                    .await
                    .context("cannot read the audit trail")?,
            );
        }
        Ok(reports)
    })
    .await?;
    // Invariant: at least one report, pushed above.
    let Some(first) = reports.first() else {
        bail!("no report");
    };
    let checked: Vec<(Checkpoint, CheckpointStatus)> = reports
        .iter()
        .filter_map(|report| report.checkpoint.clone())
        .collect();
    let verdict = check_report(first).and_then(|()| {
        checked
            .iter()
            .try_for_each(|(checkpoint, status)| check_checkpoint(checkpoint, *status))
    });
    out.audit_verify(first, &checked, verdict.is_ok())?;
    verdict
}

/// The one sentence for a broken chain.
fn check_report(report: &ChainReport) -> Result<()> {
    if let Some(broken) = &report.broken {
        bail!(
            "the audit trail is broken at event seq {} (id {}): {}; the {} events before it are intact",
            broken.seq,
            broken.id,
            broken.problem.describe(),
            report.checked
        );
    }
    Ok(())
}

/// The one sentence for a checkpoint that is not on the chain.
fn check_checkpoint(checkpoint: &Checkpoint, status: CheckpointStatus) -> Result<()> {
    match status {
        CheckpointStatus::Found => Ok(()),
        CheckpointStatus::Missing => bail!(
            "checkpoint {checkpoint} is not on the audit chain: no event has seq {} any more (the trail was truncated)",
            checkpoint.seq
        ),
        CheckpointStatus::Mismatch => bail!(
            "checkpoint {checkpoint} is not on the audit chain: the event at seq {} has another hash (the chain was rewritten)",
            checkpoint.seq
        ),
        CheckpointStatus::Unchecked => {
            bail!("checkpoint {checkpoint} could not be checked: the chain breaks before it")
        }
    }
}

/// The store query for the filter arguments, each parsed with the core's parsers.
fn event_query(filter: &AuditFilter, now: OffsetDateTime) -> Result<EventQuery> {
    Ok(EventQuery {
        actor: filter.actor.clone(),
        kind: filter
            .kind
            .as_deref()
            .map(EventKind::parse)
            .transpose()
            .context("--type")?,
        outcome: filter
            .outcome
            .as_deref()
            .map(Outcome::parse)
            .transpose()
            .context("--outcome")?,
        source: filter.source.clone(),
        since: filter
            .since
            .as_deref()
            .map(|text| parse_time(text, now))
            .transpose()
            .context("--since")?,
        until: filter
            .until
            .as_deref()
            .map(|text| parse_time(text, now))
            .transpose()
            .context("--until")?,
        limit: None,
        offset: 0,
    })
}

/// A point in time: RFC 3339 (`2025-01-31T12:00:00Z`), or an age before `now`: a whole
/// number followed by `s`, `m`, `h`, `d` or `w` (`90s`, `30m`, `1h`, `2d`, `1w`).
fn parse_time(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time);
    }
    let bad = || {
        anyhow!(
            "{text:?} is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor an age such as 30m, 1h or 2d"
        )
    };
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at_checked(split).ok_or_else(bad)?;
    let number: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    let age = number
        .checked_mul(seconds)
        .filter(|age| *age >= 0)
        .ok_or_else(bad)?;
    now.checked_sub(Duration::seconds(age)).ok_or_else(bad)
}

/// Refused logins counted by source address and by account name.
#[derive(Debug, Default)]
struct AbuseTally {
    by_source: HashMap<String, Tally>,
    by_account: HashMap<String, Tally>,
}

/// The counts of one source or one account.
#[derive(Debug)]
struct Tally {
    attempts: u64,
    /// The accounts a source tried, or the sources an account was tried from.
    others: BTreeSet<String>,
    first: OffsetDateTime,
    last: OffsetDateTime,
}

impl AbuseTally {
    fn add(&mut self, record: &AuditRecord) {
        let event = &record.event;
        let source = event
            .source
            .as_deref()
            .map_or_else(|| "-".to_owned(), address_of);
        for (map, key, other) in [
            (&mut self.by_source, &source, &event.actor),
            (&mut self.by_account, &event.actor, &source),
        ] {
            let tally = map.entry(key.clone()).or_insert_with(|| Tally {
                attempts: 0,
                others: BTreeSet::new(),
                first: event.time,
                last: event.time,
            });
            tally.attempts += 1;
            tally.others.insert(other.clone());
            tally.first = tally.first.min(event.time);
            tally.last = tally.last.max(event.time);
        }
    }

    /// The tables, most attempts first (ties by name), at most `limit` rows each.
    fn report(self, limit: usize) -> AbuseReport {
        let rows = |map: HashMap<String, Tally>| {
            let mut rows: Vec<AbuseRow> = map
                .into_iter()
                .map(|(key, tally)| AbuseRow {
                    key,
                    attempts: tally.attempts,
                    distinct: tally.others.len() as u64,
                    first: tally.first,
                    last: tally.last,
                })
                .collect();
            rows.sort_by(|a, b| b.attempts.cmp(&a.attempts).then_with(|| a.key.cmp(&b.key)));
            rows.truncate(limit);
            rows
        };
        AbuseReport {
            by_source: rows(self.by_source),
            by_account: rows(self.by_account),
        }
    }
}

/// The address of a recorded source without its port (each connection has its own port).
fn address_of(source: &str) -> String {
    source
        .parse::<SocketAddr>()
        .map_or_else(|_| source.to_owned(), |addr| addr.ip().to_string())
}

/// Walks the audit records matching `query` in pages of [`PAGE`], oldest first, so an export
/// of any size holds one page in memory.
async fn each_page(
    hub: &mailroom_core::Hub,
    query: &EventQuery,
    mut visit: impl FnMut(&[AuditRecord]) -> Result<()>,
) -> Result<()> {
    let mut after = 0;
    loop {
        let page = hub
            .audit_records(query, after, PAGE)
            .await
            .context("cannot read the audit trail")?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.seq;
        visit(&page)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;
    use mailroom_core::{Event, Protocol};
    use time::macros::datetime;

    #[test]
    fn times_parse() {
        let now = datetime!(2025-01-31 12:00 UTC);
        for (text, expect) in [
            ("2025-01-01T00:00:00Z", datetime!(2025-01-01 0:00 UTC)),
            ("2025-01-01T02:00:00+02:00", datetime!(2025-01-01 0:00 UTC)),
            ("90s", datetime!(2025-01-31 11:58:30 UTC)),
            ("30m", datetime!(2025-01-31 11:30 UTC)),
            ("1h", datetime!(2025-01-31 11:00 UTC)),
            ("2d", datetime!(2025-01-29 12:00 UTC)),
            ("1w", datetime!(2025-01-24 12:00 UTC)),
            ("0s", now),
        ] {
            assert_eq!(parse_time(text, now).unwrap(), expect, "{text}");
        }
        for bad in [
            "",
            "h",
            "1",
            "1y",
            "-1h",
            "1.5h",
            "2025-01-01",
            "99999999999999999w",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn abuse_groups_by_address_and_account() {
        let mut tally = AbuseTally::default();
        let attempts = [
            ("root", "203.0.113.9:40001", 1),
            ("admin", "203.0.113.9:40002", 2),
            ("root", "203.0.113.9:40003", 3),
            ("root", "[2001:db8::1]:22", 4),
            ("alice", "198.51.100.1:5000", 5),
        ];
        for (seq, (actor, source, minute)) in (1..).zip(attempts) {
            tally.add(&AuditRecord {
                seq,
                event: Event {
                    id: uuid::Uuid::now_v7(),
                    time: datetime!(2025-01-31 12:00 UTC) + Duration::minutes(minute),
                    kind: EventKind::Login,
                    actor: actor.to_owned(),
                    source: Some(source.to_owned()),
                    protocol: Protocol::Ssh,
                    object: actor.to_owned(),
                    outcome: Outcome::Refused,
                    detail: "wrong password".to_owned(),
                },
                prev_hash: None,
                hash: None,
            });
        }
        let report = tally.report(10);
        let sources: Vec<(&str, u64, u64)> = report
            .by_source
            .iter()
            .map(|row| (row.key.as_str(), row.attempts, row.distinct))
            .collect();
        assert_eq!(
            sources,
            [
                ("203.0.113.9", 3, 2),
                ("198.51.100.1", 1, 1),
                ("2001:db8::1", 1, 1)
            ]
        );
        let first = &report.by_source[0];
        assert_eq!(first.first, datetime!(2025-01-31 12:01 UTC));
        assert_eq!(first.last, datetime!(2025-01-31 12:03 UTC));
        let accounts: Vec<(&str, u64, u64)> = report
            .by_account
            .iter()
            .map(|row| (row.key.as_str(), row.attempts, row.distinct))
            .collect();
        assert_eq!(accounts, [("root", 3, 2), ("admin", 1, 1), ("alice", 1, 1)]);
        assert_eq!(AbuseTally::default().report(10).by_source.len(), 0);
    }
}
