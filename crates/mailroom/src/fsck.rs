//! `mailroom fsck [--repair]`: checks that what the metadata records is what the stores hold.
//!
//! - every blob a kept delivery references is read whole and its size and SHA-256 compared
//!   with the metadata's; blobs kept inline in the metadata store are checked the same way
//!   (by the Hub, inside one read);
//! - a blob the metadata references and the blob store lacks is *missing*, and each delivery
//!   on it is named;
//! - a blob file no kept delivery references is an *orphan*, unless it was written less than
//!   [`ORPHAN_GRACE`] ago (a running hub records a blob just after writing it) or a recorded
//!   resumable upload names it (a finish cut short by a crash; its next request takes it up);
//! - the audit chain is verified from its first event to its head.
//!
//! With `--repair`, orphans and damaged blobs are set aside (moved, never deleted; see
//! `BlobStore::set_aside`) and the deliveries of a damaged or missing blob are marked
//! `failed`, each with an audited event. A broken audit chain is reported, never "repaired".
//! It runs beside a serving hub, on either engine pair, and reads each blob once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mailroom_core::{Actor, BlobId, BlobStore, ChainReport, Hub, KeptBlob, ListedBlob};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::data::DataDir;
use crate::output::Output;

/// Bytes read per request while hashing a blob.
const CHUNK: usize = 8 * 1024 * 1024;

/// A blob file younger than this is not judged an orphan: a serving hub writes a blob, then
/// records the deliveries that reference it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10 * 60);

/// What one problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The content's size or SHA-256 is not what the metadata records.
    Damaged,
    /// An inline blob whose content is not what the metadata records.
    DamagedInline,
    /// The metadata references a blob the blob store lacks.
    Missing,
    /// A blob file no kept delivery references.
    Orphan,
}

/// One problem found, and what the repair did about it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What it is.
    pub kind: ProblemKind,
    /// The blob.
    pub blob: String,
    /// What was found, in words.
    pub detail: String,
    /// The deliveries on the blob (none for an orphan).
    pub deliveries: Vec<String>,
    /// What `--repair` did; `None` without it.
    pub repaired: Option<String>,
}

/// What `fsck` found.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    /// Blob files read and hashed.
    pub blobs_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Blobs kept inline in the metadata store, checked.
    pub inline_checked: u64,
    /// Blob files too recent to judge as orphans.
    pub recent_unreferenced: u64,
    /// Blob files a recorded resumable upload names (committed by a finish that a crash cut
    /// short): taken up again by the upload's next request, swept when its record expires.
    pub unfinished_uploads: u64,
    /// Chained audit events verified.
    pub events_checked: u64,
    /// The audit chain's head (`SEQ:HASH`), empty for an empty trail.
    pub chain_head: String,
    /// The first bad event of the chain, in words, if any.
    pub chain_broken: Option<String>,
    /// Every problem with a blob.
    pub problems: Vec<Problem>,
    /// Seconds the run took.
    pub seconds: f64,
}

impl FsckReport {
    /// Problems no repair took care of (a broken chain counts as one).
    pub fn left(&self) -> usize {
        self.problems
            .iter()
            .filter(|problem| problem.repaired.is_none())
            .count()
            + usize::from(self.chain_broken.is_some())
    }
}

/// `mailroom fsck`.
pub async fn run(data: &DataDir, out: &Output, repair: bool) -> Result<()> {
    let open = data.open_hub().await?;
    let result = check(
        &open.hub,
        &open.blobs,
        out,
        repair.then(crate::admin::cli_actor),
    )
    .await;
    open.meta.close().await;
    let report = result?;
    out.fsck(&report)?;
    match report.left() {
        0 => Ok(()),
        left => bail!(
            "fsck found {left} problem(s){}",
            if repair {
                " that no repair takes care of"
            } else {
                "; `mailroom fsck --repair` sets orphans and damaged blobs aside and marks the deliveries of lost content failed"
            }
        ),
    }
}

/// Checks the Hub's stores; repairs as `actor` when given.
pub async fn check(
    hub: &Hub,
    blobs: &Arc<dyn BlobStore>,
    out: &Output,
    repair: Option<Actor>,
) -> Result<FsckReport> {
    let started = std::time::Instant::now();
    let mut report = FsckReport::default();
    let kept = hub.kept_blobs().await.context("cannot read the metadata")?;
    let listed: HashMap<BlobId, ListedBlob> = blobs
        .list()
        .await
        .context("cannot list the blob store")?
        .into_iter()
        .map(|blob| (blob.id.clone(), blob))
        .collect();

    let unfinished: HashSet<BlobId> = hub
        .unfinished_stagings()
        .await
        .context("cannot read the unfinished uploads")?
        .into_iter()
        .collect();
    let referenced: HashSet<&BlobId> = kept.iter().map(|blob| &blob.id).collect();
    let total: u64 = kept
        .iter()
        .filter(|blob| blob.inline.is_none())
        .filter_map(|blob| listed.get(&blob.id))
        .map(|blob| blob.size)
        .sum();
    for blob in &kept {
        let problem = match blob.inline {
            Some(true) => {
                report.inline_checked += 1;
                None
            }
            Some(false) => {
                report.inline_checked += 1;
                Some(problem(
                    ProblemKind::DamagedInline,
                    blob,
                    "the inline content is not what the metadata records".into(),
                ))
            }
            None if !listed.contains_key(&blob.id) => Some(problem(
                ProblemKind::Missing,
                blob,
                "the blob store has no such blob".into(),
            )),
            None => match hash_blob(blobs.as_ref(), &blob.id).await {
                Ok(found) => {
                    report.blobs_checked += 1;
                    report.bytes_checked += found.0;
                    out.progress("checked", report.bytes_checked, total)?;
                    (found.0 != blob.size || found.1 != blob.sha256).then(|| {
                        problem(
                            ProblemKind::Damaged,
                            blob,
                            format!(
                                "holds {} bytes with SHA-256 {}; the metadata records {} bytes with {}",
                                found.0, found.1, blob.size, blob.sha256
                            ),
                        )
                    })
                }
                // A sealed blob whose chunk fails its tag (or a blob that cannot be read):
                // reported, and the check goes on.
                Err(err) => {
                    report.blobs_checked += 1;
                    Some(problem(
                        ProblemKind::Damaged,
                        blob,
                        format!("does not read back: {err:#}"),
                    ))
                }
            },
        };
        report.problems.extend(problem);
    }
    let cutoff = time::OffsetDateTime::now_utc() - ORPHAN_GRACE;
    let mut orphans: Vec<&ListedBlob> = listed
        .values()
        .filter(|blob| !referenced.contains(&blob.id))
        .collect();
    orphans.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    for orphan in orphans {
        if unfinished.contains(&orphan.id) {
            report.unfinished_uploads += 1;
            continue;
        }
        if orphan.modified > cutoff {
            report.recent_unreferenced += 1;
            continue;
        }
        report.problems.push(Problem {
            kind: ProblemKind::Orphan,
            blob: orphan.id.to_string(),
            detail: format!("{} bytes that no delivery references", orphan.size),
            deliveries: Vec::new(),
            repaired: None,
        });
    }

    let chain = hub
        .verify_audit(None)
        .await
        .context("cannot read the audit trail")?;
    record_chain(&mut report, &chain);

    if let Some(actor) = repair {
        for problem in &mut report.problems {
            problem.repaired = Some(repair_one(hub, blobs.as_ref(), &actor, problem).await?);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A problem with a kept blob.
fn problem(kind: ProblemKind, blob: &KeptBlob, detail: String) -> Problem {
    Problem {
        kind,
        blob: blob.id.to_string(),
        detail,
        deliveries: blob.deliveries.iter().map(ToString::to_string).collect(),
        repaired: None,
    }
}

/// The chain's verdict into the report.
fn record_chain(report: &mut FsckReport, chain: &ChainReport) {
    report.events_checked = chain.checked;
    report.chain_head = chain
        .head
        .as_ref()
        .map(|head| format!("{}:{}", head.seq, head.hash))
        .unwrap_or_default();
    report.chain_broken = chain
        .broken
        .as_ref()
        .map(|broken| format!("event {}: {}", broken.seq, broken.problem.describe()));
}

/// Sets an orphan or a damaged blob aside, and marks the deliveries of lost content failed;
/// says what it did.
async fn repair_one(
    hub: &Hub,
    blobs: &dyn BlobStore,
    actor: &Actor,
    problem: &Problem,
) -> Result<String> {
    let id = BlobId::parse(&problem.blob).map_err(|err| anyhow::anyhow!("{err}"))?;
    let mut done = Vec::new();
    if matches!(problem.kind, ProblemKind::Orphan | ProblemKind::Damaged) {
        let size = match blobs.open(&id).await {
            Ok(reader) => reader.size(),
            Err(_) => 0,
        };
        let place = blobs
            .set_aside(&id)
            .await
            .with_context(|| format!("cannot set blob {id} aside"))?;
        let reason = match problem.kind {
            ProblemKind::Orphan => "fsck: no delivery references it".to_owned(),
            _ => format!("fsck: damaged ({})", problem.detail),
        };
        hub.record_set_aside(actor, &id, size, &place, &reason)
            .await
            .context("cannot record the repair")?;
        done.push(format!("set aside at {place}"));
    }
    if problem.kind != ProblemKind::Orphan {
        let reason = format!(
            "fsck: content {}",
            match problem.kind {
                ProblemKind::Missing => "missing",
                _ => "damaged",
            }
        );
        let failed = hub
            .fail_lost_blob(actor, &id, &reason)
            .await
            .context("cannot mark the deliveries failed")?;
        done.push(format!("{} deliveries marked failed", failed.len()));
    }
    Ok(done.join("; "))
}

/// The size and SHA-256 of a blob, read whole.
pub async fn hash_blob(blobs: &dyn BlobStore, id: &BlobId) -> Result<(u64, String)> {
    let reader = blobs
        .open(id)
        .await
        .with_context(|| format!("cannot open blob {id}"))?;
    let mut hasher = Sha256::new();
    let mut offset = 0_u64;
    loop {
        let chunk = reader
            .read_at(offset, CHUNK)
            .await
            .with_context(|| format!("cannot read blob {id}"))?;
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((offset, hex::encode(hasher.finalize())))
}
