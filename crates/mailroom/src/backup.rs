//! `mailroom backup DIR [--base PREV]` and `mailroom restore DIR`: an online backup of an
//! embedded install (SQLite in `meta.db`, blobs in `blobs/`) and its restore into an empty
//! folder.
//!
//! A backup runs beside a serving hub and takes no lock. Blobs are write-once files under
//! server-made ids, so the order below makes the copy consistent without stopping writers:
//!
//! 1. Every blob file present is hard-linked into `DIR/blobs/` (copied, SHA-256 checked,
//!    where the file system cannot link; linked from `PREV` for an incremental backup). A
//!    blob deleted after this step is still in the backup.
//! 2. `VACUUM INTO` writes a consistent snapshot of the metadata to `DIR/meta.db`.
//! 3. The snapshot names the blobs it needs: one committed between steps 1 and 2 is linked
//!    now; links the snapshot does not need are removed from the backup (they are the
//!    backup's own extra names, never the hub's files).
//! 4. The snapshot's audit chain is verified, and the configuration, the SSH host key and
//!    `tls/` are copied.
//! 5. `manifest.json` is written last (a backup without one is incomplete): every blob file's
//!    size and SHA-256 (as the metadata records them for a plain blob; hashed as stored for
//!    one sealed by encryption at rest, which stays sealed in the backup), the other files'
//!    SHA-256 and the audit chain's head.
//!
//! A restore copies into a folder that does not exist or is empty, checks every blob and
//! file against the manifest while copying, verifies the restored audit chain against the
//! manifest's head and checks that every blob the metadata needs came back. On any failure
//! it removes what it wrote, leaving the folder as it found it.
//!
//! PostgreSQL and S3 have their own tools for this (`pg_dump` or base backups, bucket
//! versioning or replication); `backup` refuses a folder configured for them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mailroom_blob::LocalBlobStore;
use mailroom_core::{BlobStore, Hub, KeptBlob, MetaStoreExt, SystemClock};
use mailroom_meta::SqliteStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::DataDir;
use crate::output::Output;

/// The manifest's file name in a backup.
pub const MANIFEST: &str = "manifest.json";

/// The manifest's format; a restore refuses any other.
const FORMAT: u32 = 1;

/// Names in the data folder a backup never copies: the database (snapshotted instead), its
/// journal, the serve lock and the progress file of a move.
const NOT_COPIED: [&str; 5] = [
    "meta.db",
    "meta.db-wal",
    "meta.db-shm",
    "serve.lock",
    "migrate-progress",
];

/// What a backup holds, written last into it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The version of mailroom that wrote it.
    pub mailroom: String,
    /// When the snapshot was taken (RFC 3339).
    pub created: String,
    /// The backup it was made incremental against, if any.
    pub base: Option<String>,
    /// The metadata snapshot's SHA-256.
    pub meta_sha256: String,
    /// The audit chain's head in the snapshot (`SEQ:HASH`), empty for an empty trail.
    pub chain_head: String,
    /// Every blob file the snapshot's deliveries keep, by id.
    pub blobs: BTreeMap<String, BlobEntry>,
    /// The other files (configuration, keys), by path relative to the data folder.
    pub files: BTreeMap<String, FileEntry>,
}

/// One blob file in a manifest: what the file holds as stored. For a plain blob that is the
/// size and SHA-256 the metadata records; a sealed one (encryption at rest) is larger and
/// hashes otherwise, and a backup and its restore never need the master key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobEntry {
    /// The file's size.
    pub size: u64,
    /// The file's SHA-256, lower-case hex.
    pub sha256: String,
}

/// One other file in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its SHA-256.
    pub sha256: String,
    /// Its permission bits.
    pub mode: u32,
}

/// What a backup or a restore did.
#[derive(Debug, Default, Serialize)]
pub struct BackupReport {
    /// Where.
    pub dir: String,
    /// Blobs in it.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs hard-linked (no data copied).
    pub linked: u64,
    /// Blobs copied, and checked while copying.
    pub copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Of the linked or copied blobs, those taken from the base backup.
    pub from_base: u64,
    /// Other files (configuration, keys).
    pub files: u64,
    /// The audit chain's head.
    pub chain_head: String,
    /// Seconds the run took.
    pub seconds: f64,
}

/// `mailroom backup DIR [--base PREV]`.
pub async fn backup(data: &DataDir, out: &Output, dir: &Path, base: Option<&Path>) -> Result<()> {
    let started = std::time::Instant::now();
    embedded_only(data)?;
    let base = match base {
        Some(base) => Some((base.to_path_buf(), read_manifest(base)?)),
        None => None,
    };
    make_empty_dir(dir)?;
    let result = write_backup(data, out, dir, base.as_ref()).await;
    let mut report = match result {
        Ok(report) => report,
        Err(err) => {
            // Nothing of an incomplete backup is kept: it would look like one.
            let _ = fs::remove_dir_all(dir);
            return Err(err);
        }
    };
    report.seconds = started.elapsed().as_secs_f64();
    out.backup(&report, false)
}

async fn write_backup(
    data: &DataDir,
    out: &Output,
    dir: &Path,
    base: Option<&(PathBuf, Manifest)>,
) -> Result<BackupReport> {
    let mut report = BackupReport {
        dir: dir.display().to_string(),
        ..BackupReport::default()
    };
    // 1. Every blob file present, before the snapshot.
    let live = LocalBlobStore::open(&data.blobs())
        .await
        .with_context(|| format!("cannot open the blob store {}", data.blobs().display()))?;
    let present = live.list().await.context("cannot list the blob store")?;
    let total: u64 = present.iter().map(|blob| blob.size).sum();
    let mut taken = HashSet::new();
    // The stored size and SHA-256 of the blobs copied or found in the base backup.
    let mut known = HashMap::new();
    for blob in &present {
        let id = blob.id.as_str();
        match take_blob(data, dir, base, id, None, &mut report) {
            Ok(entry) => {
                known.extend(entry.map(|entry| (id.to_owned(), entry)));
            }
            // Deleted since the listing: the snapshot will not need it.
            Err(err) if is_not_found(&err) => continue,
            Err(err) => return Err(err),
        }
        taken.insert(id.to_owned());
        out.progress("backed up", report.bytes, total)?;
    }
    // 2. The metadata snapshot.
    let snapshot = dir.join("meta.db");
    vacuum_into(&data.meta_db(), &snapshot)?;
    // 3. What the snapshot needs.
    let (kept, chain) = read_snapshot(&snapshot, &dir.join("blobs")).await?;
    let needed: HashMap<&str, &KeptBlob> = kept
        .iter()
        .filter(|blob| blob.inline.is_none())
        .map(|blob| (blob.id.as_str(), blob))
        .collect();
    for (id, blob) in &needed {
        if !taken.contains(*id) {
            let entry = take_blob(data, dir, base, id, Some(blob.sha256.as_str()), &mut report)
                .with_context(|| {
                    format!("blob {id} went away while the backup ran; run the backup again")
                })?;
            known.extend(entry.map(|entry| ((*id).to_owned(), entry)));
        }
    }
    for id in &taken {
        if !needed.contains_key(id.as_str()) {
            fs::remove_file(blob_path(dir, id))
                .with_context(|| format!("cannot remove the backup's extra link to {id}"))?;
        }
    }
    // What each blob file holds: a plain blob holds what the metadata records; a sealed one
    // (encryption at rest) is hashed as stored, unless it was copied or is in the base.
    let mut blobs = BTreeMap::new();
    for (id, blob) in &needed {
        let path = blob_path(dir, id);
        let entry = match known.remove(*id) {
            Some(entry) => entry,
            None if is_sealed_file(&path)? => {
                let size = fs::metadata(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .len();
                BlobEntry {
                    size,
                    sha256: sha256_file(&path)?,
                }
            }
            None => BlobEntry {
                size: blob.size,
                sha256: blob.sha256.clone(),
            },
        };
        blobs.insert((*id).to_owned(), entry);
    }
    report.blobs = blobs.len() as u64;
    report.bytes = blobs.values().map(|blob| blob.size).sum();
    // 4. The chain, and the other files.
    let chain_head = chain?;
    let files = copy_files(data.root(), dir)?;
    report.files = files.len() as u64;
    sync_tree(dir)?;
    // 5. The manifest, last.
    let manifest = Manifest {
        format: FORMAT,
        mailroom: env!("CARGO_PKG_VERSION").to_owned(),
        created: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        base: base.map(|(path, _)| path.display().to_string()),
        meta_sha256: sha256_file(&snapshot)?,
        chain_head: chain_head.clone(),
        blobs,
        files,
    };
    write_manifest(dir, &manifest)?;
    report.chain_head = chain_head;
    Ok(report)
}

/// `mailroom restore DIR` into the data folder `data`, which must not exist or be empty.
pub async fn restore(data: &DataDir, out: &Output, dir: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let manifest = read_manifest(dir)?;
    let target = data.root();
    let existed = target.exists();
    if existed {
        let mut entries =
            fs::read_dir(target).with_context(|| format!("cannot read {}", target.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty: restore writes only into a new or empty folder, so it never mixes two installs",
                target.display()
            );
        }
    }
    make_empty_dir(target)?;
    let result = write_restore(data, out, dir, &manifest).await;
    match result {
        Ok(mut report) => {
            report.seconds = started.elapsed().as_secs_f64();
            out.backup(&report, true)
        }
        Err(err) => {
            // Leave the folder as it was found: gone, or empty.
            if existed {
                if let Ok(entries) = fs::read_dir(target) {
                    for entry in entries.flatten() {
                        let path = entry.path();
                        let _ = match path.is_dir() {
                            true => fs::remove_dir_all(&path),
                            false => fs::remove_file(&path),
                        };
                    }
                }
            } else {
                let _ = fs::remove_dir_all(target);
            }
            Err(err)
        }
    }
}

async fn write_restore(
    data: &DataDir,
    out: &Output,
    dir: &Path,
    manifest: &Manifest,
) -> Result<BackupReport> {
    let target = data.root();
    let mut report = BackupReport {
        dir: target.display().to_string(),
        ..BackupReport::default()
    };
    let meta = data.meta_db();
    let sum = copy_checked(&dir.join("meta.db"), &meta, 0o600)?;
    if sum.1 != manifest.meta_sha256 {
        bail!(
            "the backup's meta.db has SHA-256 {}, its manifest records {}: the backup is damaged",
            sum.1,
            manifest.meta_sha256
        );
    }
    for (path, entry) in &manifest.files {
        let relative = safe_relative(path)?;
        let to = target.join(relative);
        if let Some(parent) = to.parent() {
            make_dirs(parent)?;
        }
        let (_, sha256) = copy_checked(&dir.join(relative), &to, entry.mode & 0o700)?;
        if sha256 != entry.sha256 {
            bail!("the backup's {path} is not what its manifest records: the backup is damaged");
        }
        report.files += 1;
    }
    let total: u64 = manifest.blobs.values().map(|blob| blob.size).sum();
    for (id, entry) in &manifest.blobs {
        mailroom_core::BlobId::parse(id)
            .map_err(|_| anyhow::anyhow!("the manifest names {id:?}, which is no blob id"))?;
        let to = blob_path(target, id);
        make_dirs(to.parent().unwrap_or(target))?;
        let (size, sha256) = copy_checked(&blob_path(dir, id), &to, 0o600)
            .with_context(|| format!("cannot restore blob {id}"))?;
        if size != entry.size || sha256 != entry.sha256 {
            bail!(
                "blob {id} in the backup holds {size} bytes with SHA-256 {sha256}; the manifest records {} bytes with {}: the backup is damaged",
                entry.size,
                entry.sha256
            );
        }
        report.blobs += 1;
        report.copied += 1;
        report.bytes += size;
        report.bytes_copied += size;
        out.progress("restored", report.bytes, total)?;
    }
    sync_tree(target)?;
    let (kept, chain) = read_snapshot(&meta, &data.blobs()).await?;
    let chain_head = chain?;
    if chain_head != manifest.chain_head {
        bail!(
            "the restored audit chain ends at {chain_head:?}, the manifest's at {:?}",
            manifest.chain_head
        );
    }
    if let Some(lost) = kept
        .iter()
        .find(|blob| blob.inline.is_none() && !manifest.blobs.contains_key(blob.id.as_str()))
    {
        bail!(
            "the restored metadata needs blob {}, which the backup does not hold",
            lost.id
        );
    }
    let unmatched: Vec<_> = kept
        .iter()
        .filter(|blob| blob.inline == Some(false))
        .collect();
    if let Some(bad) = first_plain(&meta, &unmatched).await? {
        bail!("the restored inline blob {bad} is damaged");
    }
    report.chain_head = chain_head;
    Ok(report)
}

/// Refuses a data folder whose engines are not the embedded ones.
fn embedded_only(data: &DataDir) -> Result<()> {
    let config = crate::config::load(&data.config_file(), &crate::config::env_overrides()?)
        .context("invalid configuration")?;
    if !config.meta.url.is_empty() || !config.blob.url.is_empty() {
        bail!(
            "{} runs on PostgreSQL or S3 ([meta] url or [blob] url is set): back those up with their own tools (pg_dump or base backups; bucket versioning or replication); `mailroom backup` covers the embedded engines",
            data.root().display()
        );
    }
    if !data.meta_db().exists() {
        bail!(
            "{} is not an initialised mailroom data folder (no meta.db)",
            data.root().display()
        );
    }
    Ok(())
}

/// Creates `dir` (0700) if it does not exist; refuses one that holds anything.
fn make_empty_dir(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: a backup is written only into a new or empty folder",
                    dir.display()
                );
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot set the mode of {}", dir.display()))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => make_dirs(dir),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Creates `dir` and its missing parents, 0700.
fn make_dirs(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// `root/blobs/objects/<aa>/<id>`.
fn blob_path(root: &Path, id: &str) -> PathBuf {
    root.join("blobs")
        .join("objects")
        .join(id.get(..2).unwrap_or("00"))
        .join(id)
}

/// Puts blob `id` into the backup: a hard link from the base backup when it holds the
/// blob, else from the data folder; a checked copy where linking fails. With `sha256`, a copy
/// must match it.
fn take_blob(
    data: &DataDir,
    dir: &Path,
    base: Option<&(PathBuf, Manifest)>,
    id: &str,
    sha256: Option<&str>,
    report: &mut BackupReport,
) -> Result<Option<BlobEntry>> {
    let to = blob_path(dir, id);
    make_dirs(to.parent().unwrap_or(dir))?;
    let in_base = base
        .filter(|(_, manifest)| manifest.blobs.contains_key(id))
        .map(|(path, _)| blob_path(path, id));
    let from = in_base
        .clone()
        .unwrap_or_else(|| blob_path(data.root(), id));
    let size = fs::metadata(&from)
        .with_context(|| format!("cannot read {}", from.display()))?
        .len();
    let mut entry = base.and_then(|(_, manifest)| manifest.blobs.get(id).cloned());
    match fs::hard_link(&from, &to) {
        Ok(()) => report.linked += 1,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("cannot read {}", from.display()));
        }
        Err(_) => {
            let (_, copied) = copy_checked(&from, &to, 0o600)?;
            // A sealed blob's file is not the plaintext the metadata's SHA-256 is of.
            if let Some(expected) = sha256.filter(|expected| *expected != copied)
                && !is_sealed_file(&to)?
            {
                bail!("blob {id} has SHA-256 {copied}, the metadata records {expected}");
            }
            entry = Some(BlobEntry {
                size,
                sha256: copied,
            });
            report.copied += 1;
            report.bytes_copied += size;
        }
    }
    if in_base.is_some() {
        report.from_base += 1;
    }
    report.blobs += 1;
    report.bytes += size;
    Ok(entry)
}

/// Whether the blob file at `path` is sealed (encryption at rest).
fn is_sealed_file(path: &Path) -> Result<bool> {
    let mut prefix = [0u8; mailroom_blob::at_rest::SEAL_MAGIC.len()];
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut read = 0;
    while read < prefix.len() {
        match file.read(&mut prefix[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", path.display()));
            }
        }
    }
    Ok(mailroom_blob::at_rest::is_sealed(&prefix[..read]))
}

/// Whether an error chain is a file that was not there.
fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|err| err.kind() == io::ErrorKind::NotFound)
    })
}

/// A consistent copy of the database at `db` into the new file `to`, synced.
fn vacuum_into(db: &Path, to: &Path) -> Result<()> {
    let connection = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    connection
        .busy_timeout(std::time::Duration::from_secs(30))
        .context("cannot set a busy timeout")?;
    let target = to
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not a UTF-8 path", to.display()))?;
    connection
        .execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("cannot snapshot {} into {}", db.display(), to.display()))?;
    drop(connection);
    fs::set_permissions(to, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of {}", to.display()))?;
    File::open(to)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("cannot sync {}", to.display()))
}

/// The blobs a metadata snapshot keeps, and its audit chain's head once verified (an error
/// when the chain is broken).
async fn read_snapshot(db: &Path, blobs: &Path) -> Result<(Vec<KeptBlob>, Result<String>)> {
    let store = SqliteStore::open(db)
        .await
        .with_context(|| format!("cannot open the snapshot {}", db.display()))?;
    let store = Arc::new(store);
    let blob_store = LocalBlobStore::open(blobs)
        .await
        .with_context(|| format!("cannot open {}", blobs.display()))?;
    let hub = Hub::new(store.clone(), Arc::new(blob_store), Arc::new(SystemClock));
    let kept = hub.kept_blobs().await;
    let chain = hub.verify_audit(None).await;
    drop(hub);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await;
    }
    let kept = kept.context("cannot read the snapshot's deliveries")?;
    let chain = chain.context("cannot read the snapshot's audit trail").and_then(|chain| {
        if let Some(broken) = &chain.broken {
            bail!(
                "the audit chain is broken at event {} ({}): run `mailroom audit verify` and `mailroom fsck`",
                broken.seq,
                broken.problem.describe()
            );
        }
        Ok(chain
            .head
            .map(|head| format!("{}:{}", head.seq, head.hash))
            .unwrap_or_default())
    });
    Ok((kept, chain))
}

/// The first of `blobs` (inline blobs that did not match their record) whose content is not
/// sealed. A sealed inline blob cannot match without the master key, which a restore never
/// needs: its bytes were checked with the rest of `meta.db` against the manifest, and its
/// tags are checked when it is read (and by `fsck`, which has the key).
async fn first_plain(db: &Path, blobs: &[&KeptBlob]) -> Result<Option<String>> {
    if blobs.is_empty() {
        return Ok(None);
    }
    let store = SqliteStore::open(db)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let ids: Vec<_> = blobs.iter().map(|blob| blob.id.clone()).collect();
    let contents = store
        .read_with(move |tx| {
            ids.iter()
                .map(|id| Ok((id.clone(), tx.inline_blob(id)?)))
                .collect::<mailroom_core::Result<Vec<_>>>()
        })
        .await;
    store.close().await;
    Ok(contents
        .context("cannot read the restored inline blobs")?
        .into_iter()
        .find(|(_, content)| {
            !content
                .as_deref()
                .is_some_and(mailroom_blob::at_rest::is_sealed)
        })
        .map(|(id, _)| id.to_string()))
}

/// Copies the configuration, the keys and `tls/` (every regular file of the data folder's
/// top level but the database and the lock, and everything under `tls/`), keeping their
/// modes; returns their manifest entries.
fn copy_files(root: &Path, dir: &Path) -> Result<BTreeMap<String, FileEntry>> {
    let mut files = BTreeMap::new();
    let mut take = |relative: &Path| -> Result<()> {
        let from = root.join(relative);
        let mode = fs::metadata(&from)
            .with_context(|| format!("cannot read {}", from.display()))?
            .permissions()
            .mode()
            & 0o777;
        let to = dir.join(relative);
        if let Some(parent) = to.parent() {
            make_dirs(parent)?;
        }
        let (_, sha256) = copy_checked(&from, &to, mode & 0o700)?;
        files.insert(relative.display().to_string(), FileEntry { sha256, mode });
        Ok(())
    };
    for entry in fs::read_dir(root).with_context(|| format!("cannot read {}", root.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", root.display()))?;
        let name = entry.file_name();
        let kind = entry.file_type()?;
        if kind.is_file() && !NOT_COPIED.iter().any(|skip| name == *skip) {
            take(Path::new(&name))?;
        }
    }
    let tls = root.join("tls");
    if tls.is_dir() {
        for entry in fs::read_dir(&tls).with_context(|| format!("cannot read {}", tls.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                take(&Path::new("tls").join(entry.file_name()))?;
            }
        }
    }
    Ok(files)
}

/// A path from a manifest: relative, without `..`, so a restore never writes outside its
/// folder.
fn safe_relative(path: &str) -> Result<&Path> {
    let relative = Path::new(path);
    let plain = relative
        .components()
        .all(|part| matches!(part, std::path::Component::Normal(_)));
    if !plain || path.is_empty() {
        bail!("the manifest names {path:?}, which is not a plain relative path");
    }
    Ok(relative)
}

/// Copies `from` to the new file `to` (mode `mode`), synced; returns its size and SHA-256.
fn copy_checked(from: &Path, to: &Path, mode: u32) -> Result<(u64, String)> {
    let mut source = File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut target = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0_u8; 1 << 20];
    let mut size = 0_u64;
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", from.display())),
        };
        let chunk = buffer.get(..read).unwrap_or_default();
        hasher.update(chunk);
        target
            .write_all(chunk)
            .with_context(|| format!("cannot write {}", to.display()))?;
        size += read as u64;
    }
    target
        .sync_all()
        .with_context(|| format!("cannot sync {}", to.display()))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// The SHA-256 of a file.
fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0_u8; 1 << 20];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => hasher.update(buffer.get(..read).unwrap_or_default()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Syncs every directory under `root` (and `root`), so the new entries survive a crash.
fn sync_tree(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
        File::open(&dir)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(())
}

/// Writes the manifest through a temporary name, synced, then renamed.
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_vec_pretty(manifest).context("cannot encode the manifest")?;
    let temporary = dir.join(format!("{MANIFEST}.partial"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::rename(&temporary, dir.join(MANIFEST))
        .with_context(|| format!("cannot write {}", dir.join(MANIFEST).display()))?;
    File::open(dir)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// A backup's manifest; refuses a folder without one (an incomplete backup) or of another
/// format.
fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = fs::read(&path).with_context(|| {
        format!(
            "{} holds no {MANIFEST}: it is not a complete mailroom backup",
            dir.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a mailroom backup manifest", path.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{} is a backup of format {}; this mailroom reads format {FORMAT}",
            dir.display(),
            manifest.format
        );
    }
    Ok(manifest)
}
