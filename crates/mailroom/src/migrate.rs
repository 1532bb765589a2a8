//! `mailroom migrate --meta postgres://… --blob s3://…`: moves an embedded install (SQLite in
//! `meta.db`, blobs in `blobs/`) to the cluster engines.
//!
//! 1. The folder's serve lock is taken (no server may run on it meanwhile) and both targets
//!    must be empty: a database without accounts, groups or events, and a bucket prefix
//!    without blobs; unless this folder's progress file (`migrate-progress`) says that an
//!    earlier run of the same move copied blobs there already.
//! 2. Every blob a delivery keeps is copied under its own id and its SHA-256 checked against
//!    the metadata while it streams; a blob whose content differs stops the move (its copy is
//!    removed). A hub that encrypts at rest moves its blobs sealed, as they are: each is
//!    opened first with the master key (every chunk's tag checked) against the metadata, and
//!    its copy checked against the bytes read; the data keys go with the rows, so the
//!    cluster's nodes start with the same master key. Each verified copy is appended to the progress file and synced, so a run cut
//!    short resumes where it stopped. Blobs kept inline in the database go with the rows.
//! 3. The rows are copied into PostgreSQL in one transaction (`mailroom_meta::
//!    copy_to_postgres`): the target has all of them or none.
//! 4. The copy's audit chain head must equal the source's.
//!
//! Nothing in the data folder changes but the progress file; the configuration is left for
//! the operator to point at the new engines.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use mailroom_blob::{LocalBlobStore, S3BlobStore};
use mailroom_core::{BlobId, BlobStore, DeliveryQuery, DeliveryState, EventQuery, MetaStoreExt};
use mailroom_meta::{PgStore, SqliteStore};
use sha2::Digest;

use crate::data::DataDir;
use crate::engines::{BlobConfig, MetaConfig};
use crate::output::Output;

/// Bytes copied per read of a blob.
const CHUNK: usize = 8 * 1024 * 1024;

/// The progress file, in the data folder: one verified blob id per line.
const PROGRESS: &str = "migrate-progress";

/// What a move did, for the report.
#[derive(Debug, Default)]
pub struct MigrateReport {
    /// Blobs copied and checked in this run.
    pub blobs_copied: u64,
    /// Their bytes.
    pub bytes_copied: u64,
    /// Blobs an earlier run had copied and checked.
    pub blobs_resumed: u64,
    /// Rows copied, by table.
    pub rows: Vec<(String, u64)>,
    /// The audit chain's head on both sides (`SEQ:HASH`), or empty for an empty trail.
    pub chain_head: String,
}

/// One blob to move: its id, size and SHA-256 as the metadata records them.
struct Blob {
    id: BlobId,
    size: u64,
    sha256: String,
}

/// `mailroom migrate`.
pub async fn run(data: &DataDir, out: &Output, meta_url: &str, blob_url: &str) -> Result<()> {
    let config = crate::config::load(&data.config_file(), &crate::config::env_overrides()?)
        .context("invalid configuration")?;
    if !config.meta.url.is_empty() || !config.blob.url.is_empty() {
        bail!(
            "{} already runs on the cluster engines ([meta] url or [blob] url is set): there is no embedded install to move",
            data.root().display()
        );
    }
    if !data.meta_db().exists() {
        bail!(
            "{} is not an initialised mailroom data folder (no meta.db)",
            data.root().display()
        );
    }
    let _lock = data.lock_for_serve()?;
    let target_meta = MetaConfig {
        url: meta_url.to_owned(),
        ..config.meta.clone()
    };
    let target_blob = BlobConfig {
        url: blob_url.to_owned(),
        ..config.blob.clone()
    };
    let (pg_options, s3_options) =
        crate::engines::cluster_options(data, &target_meta, &target_blob)?;

    let source = SqliteStore::open(&data.meta_db()).await?;
    let result = migrate(data, out, &source, pg_options, s3_options).await;
    source.close().await;
    let report = result?;
    out.migrated(&report)
}

async fn migrate(
    data: &DataDir,
    out: &Output,
    source: &SqliteStore,
    pg_options: mailroom_meta::PgOptions,
    s3_options: mailroom_blob::S3Options,
) -> Result<MigrateReport> {
    let target = PgStore::connect(pg_options.clone())
        .await
        .context("cannot open the target database (--meta)")?;
    let empty = target_is_empty(&target).await;
    target.close().await;
    if !empty? {
        bail!(
            "the target database is not empty (it holds accounts, groups or events): migrate moves an install only into an empty database"
        );
    }
    // Every blob is written as an object, whatever its size: inline content stays with the
    // rows it belongs to.
    let bucket = S3BlobStore::open(s3_options)
        .await
        .context("cannot open the target bucket (--blob)")?
        .with_inline_limit(0);
    let progress_path = data.root().join(PROGRESS);
    let done = read_progress(&progress_path)?;
    if done.is_empty() && !bucket.is_empty().await? {
        bail!(
            "the target bucket prefix already holds blobs, and this folder has no record of copying them ({PROGRESS}): migrate moves an install only into an empty prefix"
        );
    }

    let mut report = MigrateReport::default();
    let blobs = kept_blobs(source).await?;
    let local = LocalBlobStore::open(&data.blobs())
        .await
        .with_context(|| format!("cannot open the blob store {}", data.blobs().display()))?;
    // A hub that encrypts at rest: its blobs move sealed as they are (the cluster opens them
    // with the same master key and the data keys that go with the rows); each is opened here
    // first, every chunk's tag checked, against the SHA-256 the metadata records.
    let records = mailroom_blob::at_rest::Keyring::records(source)
        .await
        .context("cannot read the data keys")?;
    let sealed = if records.is_empty() {
        None
    } else {
        let config = crate::config::load(&data.config_file(), &crate::config::env_overrides()?)
            .context("invalid configuration")?;
        let Some((master, _)) = crate::at_rest::find_key(data, &config.at_rest)? else {
            bail!(
                "this hub encrypts at rest and no master key was found: migrate checks every sealed blob, so it needs the key `serve` uses"
            );
        };
        let keyring = mailroom_blob::at_rest::Keyring::open(
            master,
            std::sync::Arc::new(source.clone()),
            false,
        )
        .await?;
        Some(mailroom_blob::at_rest::SealedBlobStore::new(
            std::sync::Arc::new(
                LocalBlobStore::open(&data.blobs())
                    .await
                    .with_context(|| format!("cannot open {}", data.blobs().display()))?,
            ),
            std::sync::Arc::new(keyring),
        ))
    };
    let mut progress = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&progress_path)
        .with_context(|| format!("cannot write {}", progress_path.display()))?;
    let total = blobs.len();
    for (index, blob) in blobs.iter().enumerate() {
        if done.contains(blob.id.as_str()) {
            report.blobs_resumed += 1;
            continue;
        }
        copy_blob(&local, sealed.as_ref(), &bucket, blob).await?;
        writeln!(progress, "{}", blob.id.as_str())
            .and_then(|()| progress.sync_data())
            .with_context(|| format!("cannot write {}", progress_path.display()))?;
        report.blobs_copied += 1;
        report.bytes_copied += blob.size;
        out.migrate_progress(index + 1, total, report.bytes_copied)?;
    }

    let meta_db = data.meta_db();
    let copied = tokio::task::spawn_blocking(move || {
        mailroom_meta::copy_to_postgres(&meta_db, &pg_options, |_, _| {})
            .map(|copied| (copied, pg_options))
    })
    .await
    .context("the copy task failed")??;
    let (copied, pg_options) = copied;
    report.rows = copied.rows;

    let source_head = source.read_with(|tx| tx.audit_head()).await?;
    let target = PgStore::connect(pg_options)
        .await
        .context("cannot open the target database (--meta)")?;
    let target_head = target.read_with(|tx| tx.audit_head()).await;
    target.close().await;
    let target_head = target_head?;
    let show = |head: &Option<mailroom_core::ChainHead>| {
        head.as_ref()
            .map(|head| format!("{}:{}", head.seq, head.hash))
            .unwrap_or_default()
    };
    if show(&source_head) != show(&target_head) {
        bail!(
            "the copied audit trail ends at {:?}, the source's at {:?}: the copy is not the install",
            show(&target_head),
            show(&source_head)
        );
    }
    report.chain_head = show(&source_head);
    // The move is complete: the progress file has done its work.
    let _ = std::fs::remove_file(&progress_path);
    Ok(report)
}

/// Whether the database holds no account, group or event.
async fn target_is_empty(target: &PgStore) -> Result<bool> {
    Ok(target
        .read_with(|tx| {
            Ok(tx.accounts()?.is_empty()
                && tx.groups()?.is_empty()
                && tx
                    .events(&EventQuery {
                        limit: Some(1),
                        ..EventQuery::default()
                    })?
                    .is_empty())
        })
        .await?)
}

/// The blobs the deliveries keep that live as files (not inline), each once, by id.
async fn kept_blobs(source: &SqliteStore) -> Result<Vec<Blob>> {
    let blobs = source
        .read_with(|tx| {
            let deliveries = tx.deliveries(&DeliveryQuery {
                states: DeliveryState::KEPT.to_vec(),
                ..DeliveryQuery::default()
            })?;
            let mut blobs = BTreeMap::new();
            for delivery in deliveries {
                if blobs.contains_key(delivery.blob_id.as_str()) {
                    continue;
                }
                if tx.inline_blob(&delivery.blob_id)?.is_some() {
                    continue;
                }
                blobs.insert(
                    delivery.blob_id.as_str().to_owned(),
                    Blob {
                        id: delivery.blob_id.clone(),
                        size: delivery.size,
                        sha256: delivery.sha256.clone(),
                    },
                );
            }
            Ok(blobs.into_values().collect())
        })
        .await?;
    Ok(blobs)
}

/// Copies one blob under its id and checks its size and SHA-256; a copy that does not match
/// is removed again. A sealed blob (when `sealed` is given) is opened first, against the
/// metadata; its copy must then hold the bytes read.
async fn copy_blob(
    local: &LocalBlobStore,
    sealed: Option<&mailroom_blob::at_rest::SealedBlobStore>,
    bucket: &S3BlobStore,
    blob: &Blob,
) -> Result<()> {
    let prefix = local
        .open(&blob.id)
        .await
        .with_context(|| format!("blob {} is missing from the data folder", blob.id.as_str()))?
        .read_at(0, mailroom_blob::at_rest::SEAL_MAGIC.len())
        .await?;
    let is_sealed = mailroom_blob::at_rest::is_sealed(&prefix);
    if is_sealed {
        let Some(sealed) = sealed else {
            bail!(
                "blob {} is sealed, and this hub has no data keys: the source is damaged",
                blob.id.as_str()
            );
        };
        let (size, sha256) = match crate::fsck::hash_blob(sealed, &blob.id).await {
            Ok(found) => found,
            Err(err) => bail!(
                "blob {} does not match its metadata ({err:#}): the source is damaged; nothing of it was copied",
                blob.id.as_str()
            ),
        };
        if size != blob.size || sha256 != blob.sha256 {
            bail!(
                "blob {} does not match its metadata ({size} bytes with SHA-256 {sha256}, recorded {} bytes with {}): the source is damaged; nothing of it was copied",
                blob.id.as_str(),
                blob.size,
                blob.sha256
            );
        }
    }
    let mut read = sha2::Sha256::new();
    let reader = local
        .open(&blob.id)
        .await
        .with_context(|| format!("blob {} is missing from the data folder", blob.id.as_str()))?;
    let mut writer = bucket.create_with_id(blob.id.clone());
    let mut offset = 0_u64;
    loop {
        let chunk = match reader.read_at(offset, CHUNK).await {
            Ok(chunk) => chunk,
            Err(err) => {
                writer.abort().await;
                return Err(err).with_context(|| format!("cannot read blob {}", blob.id.as_str()));
            }
        };
        if chunk.is_empty() {
            break;
        }
        read.update(&chunk);
        if let Err(err) = writer.write_at(offset, &chunk).await {
            writer.abort().await;
            return Err(err).with_context(|| format!("cannot write blob {}", blob.id.as_str()));
        }
        offset += chunk.len() as u64;
    }
    let stored = writer
        .commit()
        .await
        .with_context(|| format!("cannot write blob {}", blob.id.as_str()))?;
    // A sealed blob is copied as stored: the copy must hold what was read.
    let (size, sha256) = if is_sealed {
        (offset, hex::encode(read.finalize()))
    } else {
        (blob.size, blob.sha256.clone())
    };
    if stored.size != size || stored.sha256 != sha256 {
        let _ = bucket.delete(&blob.id).await;
        bail!(
            "blob {} does not match its metadata ({} bytes with SHA-256 {}, recorded {} bytes with {}): the source is damaged; nothing of it was kept in the bucket",
            blob.id.as_str(),
            stored.size,
            stored.sha256,
            size,
            sha256
        );
    }
    Ok(())
}

/// The blob ids an earlier run copied and checked.
fn read_progress(path: &Path) -> Result<HashSet<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|line| BlobId::parse(line).is_ok())
            .map(str::to_owned)
            .collect()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}
