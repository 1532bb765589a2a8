//! [`LocalBlobStore`]: the folder layout, opening it at start, and the [`BlobStore`] methods
//! that are not a writer's or a reader's.
//!
//! Writing lives in `writer.rs`, reading in `reader.rs`, the orphan sweep in `sweep.rs`.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use mailroom_core::{
    AccountName, BlobId, BlobReader, BlobStore, BlobWriter, CoreError, ListedBlob, Result,
    SweepReport,
};
use tracing::{error, warn};

use crate::fsio::{self, blocking, storage_error};
use crate::reader::LocalBlobReader;
use crate::writer::LocalBlobWriter;

/// The folder of uploads in progress, under the root.
const STAGING_DIR: &str = "staging";

/// The folder of committed blobs, under the root.
const OBJECTS_DIR: &str = "objects";

/// The suffix of a staging file, so one is never mistaken for a committed blob.
pub(crate) const STAGING_SUFFIX: &str = ".part";

/// Blobs in a local folder: `root/staging/` for uploads in progress and
/// `root/objects/<aa>/<id>` for committed blobs.
///
/// Cheap to share behind an `Arc`; every method moves its file work to the blocking pool.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    layout: Arc<Layout>,
    inline_limit: usize,
    /// Whether commits hash the content (see [`LocalBlobStore::without_content_hash`]).
    hash: bool,
}

/// Blobs up to this size, written in order, are kept in the metadata store by default.
pub const DEFAULT_INLINE_LIMIT: usize = 64 * 1024;

impl LocalBlobStore {
    /// Opens the store at `root`, creating `root`, `staging/`, `objects/` and the 256 shard
    /// folders `objects/00` to `objects/ff` where missing (mode 0700, each new entry synced to
    /// disk).
    ///
    /// Folders the store owns are set to 0700 if they have another mode; a `root` readable by
    /// others is only warned about, since the operator chose it.
    pub async fn open(root: &Path) -> io::Result<LocalBlobStore> {
        let root = root.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(root))
            .await
            .map_err(io::Error::other)?
    }

    /// The folder the store was opened at.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    fn open_blocking(root: PathBuf) -> io::Result<LocalBlobStore> {
        fsio::ensure_dir(&root)?;
        let root_mode = std::fs::metadata(&root)?.permissions().mode();
        if root_mode & 0o077 != 0 {
            warn!(
                path = %root.display(),
                mode = format!("{:o}", root_mode & 0o7777),
                "blob root is accessible to other users; 0700 is recommended"
            );
        }
        let layout = Layout {
            staging: root.join(STAGING_DIR),
            objects: root.join(OBJECTS_DIR),
            root,
        };
        for dir in [&layout.staging, &layout.objects] {
            fsio::ensure_dir(dir)?;
            fsio::make_private(dir)?;
        }
        // Creating every shard now, and syncing `objects/` once, means a commit never has to
        // create one in the normal case, so two commits never race on a shard's creation.
        for shard in 0..=u8::MAX {
            let dir = layout.objects.join(format!("{shard:02x}"));
            fsio::create_private_dir(&dir)?;
            fsio::make_private(&dir)?;
        }
        fsio::sync_dir(&layout.objects)?;
        Ok(LocalBlobStore {
            inline_limit: DEFAULT_INLINE_LIMIT,
            layout: Arc::new(layout),
            hash: true,
        })
    }
}

impl LocalBlobStore {
    /// Sets the inline limit: blobs up to `bytes`, written in order, are returned inline by
    /// `commit` for the metadata store to keep; 0 stores every blob as a file.
    pub fn with_inline_limit(mut self, bytes: usize) -> Self {
        self.inline_limit = bytes;
        self
    }

    /// Stops hashing what is written: commits report an empty SHA-256. Only for a layer
    /// above that hashes the content it means (the sealing store of encryption at rest hashes
    /// the plaintext, and the ciphertext's hash would be work thrown away).
    pub fn without_content_hash(mut self) -> Self {
        self.hash = false;
        self
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn create(&self, _owner: &AccountName) -> Result<Box<dyn BlobWriter>> {
        // No I/O yet: the staging file is made when data first has to go to disk.
        let id = BlobId::new();
        let paths = self.layout.paths(&id);
        Ok(Box::new(LocalBlobWriter::new(
            id,
            paths,
            self.inline_limit,
            self.hash,
        )))
    }

    async fn resume(
        &self,
        staging: &BlobId,
        _owner: &AccountName,
    ) -> Result<Option<Box<dyn BlobWriter>>> {
        let (id, paths, limit, hash) = (
            staging.clone(),
            self.layout.paths(staging),
            self.inline_limit,
            self.hash,
        );
        let writer = blocking("resume", move || {
            LocalBlobWriter::resumed(id, paths, limit, hash)
        })
        .await?;
        Ok(Some(Box::new(writer)))
    }

    async fn open(&self, id: &BlobId) -> Result<Arc<dyn BlobReader>> {
        let path = self.layout.object_path(id);
        blocking("open", move || {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(CoreError::not_found("no such blob"));
                }
                Err(err) => return Err(storage_error("open blob", &path, &err)),
            };
            let meta = file
                .metadata()
                .map_err(|err| storage_error("stat blob", &path, &err))?;
            if !meta.is_file() {
                error!(path = %path.display(), "blob is not a regular file");
                return Err(CoreError::internal("storage failure"));
            }
            let reader = LocalBlobReader::new(file, meta.len(), path);
            Ok(Arc::new(reader) as Arc<dyn BlobReader>)
        })
        .await
    }

    async fn delete(&self, id: &BlobId) -> Result<()> {
        let path = self.layout.object_path(id);
        blocking("delete", move || {
            fsio::remove_if_present(&path).map_err(|err| storage_error("delete blob", &path, &err))
        })
        .await
    }

    async fn sweep(&self, live: &HashSet<BlobId>) -> Result<SweepReport> {
        let layout = Arc::clone(&self.layout);
        let live = live.clone();
        blocking("sweep", move || crate::sweep::sweep(&layout, &live)).await
    }

    /// Every regular file of `objects/<aa>/` named by a blob id (a misplaced one too: a
    /// check reports it rather than miss it). Symbolic links are not followed or listed.
    async fn list(&self) -> Result<Vec<ListedBlob>> {
        let objects = self.layout.objects.clone();
        blocking("list", move || list_objects(&objects)).await
    }

    /// Renames the blob's file to `set-aside/<id>` beside `objects/` and syncs both folders.
    async fn set_aside(&self, id: &BlobId) -> Result<String> {
        let from = self.layout.object_path(id);
        let aside = self.layout.root.join(SET_ASIDE);
        let to = aside.join(id.as_str());
        blocking("set aside", move || {
            fsio::ensure_dir(&aside).map_err(|err| storage_error("create", &aside, &err))?;
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(CoreError::not_found("no such blob"));
                }
                Err(err) => return Err(storage_error("set aside blob", &from, &err)),
            }
            for dir in [from.parent(), Some(aside.as_path())].into_iter().flatten() {
                fsio::sync_dir(dir).map_err(|err| storage_error("sync", dir, &err))?;
            }
            Ok(to.display().to_string())
        })
        .await
    }
}

/// The folder beside `staging/` and `objects/` where blobs set aside go.
pub const SET_ASIDE: &str = "set-aside";

/// The blob files under `objects`. Blocking.
fn list_objects(objects: &Path) -> Result<Vec<ListedBlob>> {
    let read = |dir: &Path| std::fs::read_dir(dir).map_err(|err| storage_error("list", dir, &err));
    let mut listed = Vec::new();
    for shard in read(objects)? {
        let shard = shard.map_err(|err| storage_error("list", objects, &err))?;
        let shard_path = shard.path();
        if !shard.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        for entry in read(&shard_path)? {
            let entry = entry.map_err(|err| storage_error("list", &shard_path, &err))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| BlobId::parse(name).ok())
            else {
                continue;
            };
            let path = entry.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => continue,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(storage_error("stat", &path, &err)),
            };
            let modified = meta
                .modified()
                .map(time::OffsetDateTime::from)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            listed.push(ListedBlob {
                id,
                size: meta.len(),
                modified,
            });
        }
    }
    Ok(listed)
}

/// Where things are under the root.
#[derive(Debug)]
pub(crate) struct Layout {
    /// The folder the operator chose.
    pub(crate) root: PathBuf,
    /// `root/staging`.
    pub(crate) staging: PathBuf,
    /// `root/objects`.
    pub(crate) objects: PathBuf,
}

impl Layout {
    /// `objects/<aa>/<id>`.
    pub(crate) fn object_path(&self, id: &BlobId) -> PathBuf {
        self.objects.join(shard_name(id)).join(id.as_str())
    }

    /// Every path a writer of `id` needs.
    pub(crate) fn paths(&self, id: &BlobId) -> BlobPaths {
        let shard = self.objects.join(shard_name(id));
        BlobPaths {
            staging: self
                .staging
                .join(format!("{}{STAGING_SUFFIX}", id.as_str())),
            object: shard.join(id.as_str()),
            shard,
            objects: self.objects.clone(),
        }
    }
}

/// The paths of one blob from staging to its final place.
#[derive(Debug)]
pub(crate) struct BlobPaths {
    /// `staging/<id>.part`.
    pub(crate) staging: PathBuf,
    /// `objects/<aa>/<id>`.
    pub(crate) object: PathBuf,
    /// `objects/<aa>`.
    pub(crate) shard: PathBuf,
    /// `objects`.
    pub(crate) objects: PathBuf,
}

/// The shard folder of a blob: the first two hex digits of its id.
pub(crate) fn shard_name(id: &BlobId) -> &str {
    // Invariant: a BlobId is exactly 32 ASCII hex digits (BlobId::new and BlobId::parse make
    // nothing else), so the first two bytes are a character boundary.
    &id.as_str()[..2]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// The account the test blobs come from.
    fn owner() -> mailroom_core::AccountName {
        mailroom_core::AccountName::parse("alice").unwrap()
    }

    use mailroom_core::ErrorKind;
    use sha2::{Digest, Sha256};

    use crate::MAX_READ_LEN;

    /// A store that writes every blob as a file (inline blobs have their own tests).
    async fn fresh() -> (LocalBlobStore, tempfile::TempDir) {
        let temp = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(&temp.path().join("blobs"))
            .await
            .unwrap()
            .with_inline_limit(0);
        (store, temp)
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    async fn commit_bytes(store: &LocalBlobStore, content: &[u8]) -> BlobId {
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, content).await.unwrap();
        writer.commit().await.unwrap().id
    }

    #[tokio::test]
    async fn open_creates_private_layout() {
        let (store, _temp) = fresh().await;
        let root = store.root();
        assert_eq!(names(root), ["objects", "staging"]);
        assert_eq!(names(&root.join("objects")).len(), 256);
        for dir in [
            root.to_path_buf(),
            root.join("staging"),
            root.join("objects"),
        ] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        for shard in ["00", "7f", "ff"] {
            assert_eq!(mode(&root.join("objects").join(shard)), 0o700, "{shard}");
        }
        // Opening again is fine and tightens a loosened folder.
        fs::set_permissions(root.join("staging"), fs::Permissions::from_mode(0o755)).unwrap();
        let again = LocalBlobStore::open(root).await.unwrap();
        assert_eq!(mode(&again.root().join("staging")), 0o700);
    }

    #[tokio::test]
    async fn open_refuses_a_file_as_root() {
        let temp = tempfile::tempdir().unwrap();
        let file = temp.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(LocalBlobStore::open(&file).await.is_err());
    }

    #[tokio::test]
    async fn commit_moves_the_blob_under_objects() {
        let (store, _temp) = fresh().await;
        let root = store.root();
        // Two runs past the flush threshold: the second waits for the first, so the staging
        // file exists before the commit (smaller blobs stay in memory until then).
        let content = vec![b'c'; 4 * 1024 * 1024];
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, &content[..2 << 20]).await.unwrap();
        writer.write_at(2 << 20, &content[2 << 20..]).await.unwrap();
        let staged = names(&root.join("staging"));
        assert_eq!(staged.len(), 1);
        assert!(staged[0].ends_with(".part"));
        assert_eq!(mode(&root.join("staging").join(&staged[0])), 0o600);

        let stored = writer.commit().await.unwrap();
        let id = stored.id.as_str();
        assert_eq!(staged[0], format!("{id}.part"));
        let object = root.join("objects").join(&id[..2]).join(id);
        assert_eq!(fs::read(&object).unwrap(), content);
        assert_eq!(mode(&object), 0o600);
        assert!(names(&root.join("staging")).is_empty());
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&content)));
    }

    #[tokio::test]
    async fn abort_removes_the_staging_file() {
        let (store, _temp) = fresh().await;
        let mut writer = store.create(&owner()).await.unwrap();
        writer
            .write_at(0, &vec![1u8; 3 * 1024 * 1024])
            .await
            .unwrap();
        writer.abort().await;
        assert!(names(&store.root().join("staging")).is_empty());
    }

    #[tokio::test]
    async fn dropped_writer_leaves_staging_for_the_sweep() {
        let (store, _temp) = fresh().await;
        let mut writer = store.create(&owner()).await.unwrap();
        // Two runs: the second waits for the first, which created the staging file.
        for run in 0..2u64 {
            writer
                .write_at(run << 21, &vec![b'u'; 2 * 1024 * 1024])
                .await
                .unwrap();
        }
        drop(writer);
        assert_eq!(names(&store.root().join("staging")).len(), 1);
        let report = store.sweep(&HashSet::new()).await.unwrap();
        assert_eq!(report.staging_removed, 1);
        assert!(names(&store.root().join("staging")).is_empty());
    }

    #[tokio::test]
    async fn sweep_removes_junk_without_following_links() {
        let (store, temp) = fresh().await;
        let root = store.root();
        let objects = root.join("objects");
        let live = commit_bytes(&store, b"live").await;
        let orphan = commit_bytes(&store, b"orphan").await;

        // Something outside the store that links must not reach.
        let outside = temp.path().join("precious");
        fs::write(&outside, b"not ours").unwrap();

        // Junk in staging: a stray name, a link, and a directory (left alone).
        fs::write(root.join("staging/notes.txt"), b"x").unwrap();
        symlink(&outside, root.join("staging/link.part")).unwrap();
        fs::create_dir(root.join("staging/subdir")).unwrap();

        // Junk in objects: a file beside the shards, a bad name and a link in a shard, a
        // blob id in the wrong shard, and a link named like a live blob in another shard.
        fs::write(objects.join("stray"), b"x").unwrap();
        fs::write(objects.join("ab/not-a-blob-id"), b"x").unwrap();
        symlink(&outside, objects.join("ab/link")).unwrap();
        let misplaced = BlobId::new();
        let wrong_shard = if shard_name(&misplaced) == "00" {
            "01"
        } else {
            "00"
        };
        fs::write(objects.join(wrong_shard).join(misplaced.as_str()), b"x").unwrap();
        let live_link_id = BlobId::new();
        symlink(
            &outside,
            objects
                .join(shard_name(&live_link_id))
                .join(live_link_id.as_str()),
        )
        .unwrap();
        // A misplaced file that a live delivery names is kept: never delete data in use.
        let misplaced_live = BlobId::new();
        let other_shard = if shard_name(&misplaced_live) == "fe" {
            "ff"
        } else {
            "fe"
        };
        fs::write(
            objects.join(other_shard).join(misplaced_live.as_str()),
            b"x",
        )
        .unwrap();

        let live_set = HashSet::from([live.clone(), live_link_id.clone(), misplaced_live.clone()]);
        let report = store.sweep(&live_set).await.unwrap();
        assert_eq!(report.staging_removed, 2);
        // orphan, stray, not-a-blob-id, link, misplaced, live-named link.
        assert_eq!(report.orphans_removed, 6);

        assert_eq!(fs::read(&outside).unwrap(), b"not ours");
        assert_eq!(names(&root.join("staging")), ["subdir"]);
        assert_eq!(names(&objects).len(), 256);
        assert!(
            names(&objects.join("ab"))
                .iter()
                .all(|name| BlobId::parse(name).is_ok())
        );
        assert!(
            objects
                .join(other_shard)
                .join(misplaced_live.as_str())
                .exists()
        );
        assert!(store.open(&live).await.is_ok());
        assert_eq!(
            store.open(&orphan).await.err().map(|err| err.kind()),
            Some(ErrorKind::NotFound)
        );
    }

    #[tokio::test]
    async fn reads_are_capped() {
        let (store, _temp) = fresh().await;
        let id = commit_bytes(&store, &vec![9u8; MAX_READ_LEN + 100]).await;
        let reader = store.open(&id).await.unwrap();
        assert_eq!(
            reader.read_at(0, usize::MAX).await.unwrap().len(),
            MAX_READ_LEN
        );
        assert_eq!(
            reader
                .read_at(MAX_READ_LEN as u64, usize::MAX)
                .await
                .unwrap()
                .len(),
            100
        );
    }

    #[tokio::test]
    async fn commit_recreates_a_missing_shard() {
        let (store, _temp) = fresh().await;
        let objects = store.root().join("objects");
        let mut writer = store.create(&owner()).await.unwrap();
        writer.write_at(0, b"x").await.unwrap();
        // The id is unknown until commit, so remove every (empty) shard.
        for shard in names(&objects) {
            fs::remove_dir(objects.join(shard)).unwrap();
        }
        let stored = writer.commit().await.unwrap();
        let reader = store.open(&stored.id).await.unwrap();
        assert_eq!(reader.read_at(0, 10).await.unwrap(), b"x");
        assert_eq!(mode(&objects.join(shard_name(&stored.id))), 0o700);
    }

    #[tokio::test]
    async fn open_of_a_directory_is_internal() {
        let (store, _temp) = fresh().await;
        let id = BlobId::new();
        fs::create_dir(store.layout.object_path(&id)).unwrap();
        let err = store.open(&id).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert!(!err.message().contains('/'));
    }
}
