//! The S3 sweep: deletes committed blobs that no live delivery names and that are older than
//! a grace period, so a bucket shared by several nodes never loses a blob another node has
//! just committed and not yet recorded.
//!
//! It lists `<prefix>/objects/` and deletes in batches (S3's DeleteObjects where the client
//! uses it). It only ever deletes keys of the form `objects/<aa>/<blob id>`; anything else
//! under the prefix is logged and left for the operator. Failing to delete one key is logged
//! and does not stop the sweep; failing to list does. Unfinished multipart uploads are not
//! visible here (see [`super::S3BlobStore`]'s `sweep`).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, future};
use mailroom_core::{BlobId, Result, SweepReport};
use object_store::ObjectMeta;
use object_store::path::Path;
use tracing::{debug, error, info, warn};

use super::{Shared, s3_error};
use crate::store::shard_name;

/// Keys deleted per request: S3's DeleteObjects takes at most 1000.
const DELETE_BATCH: usize = 1000;

/// Sweeps the objects of `shared`, keeping those in `live` and those modified less than
/// `grace` before the sweep began.
pub(crate) async fn sweep(
    shared: &Shared,
    live: &HashSet<BlobId>,
    grace: Duration,
) -> Result<SweepReport> {
    let cutoff = cutoff_millis(SystemTime::now(), grace);
    let objects = &shared.objects;
    let mut listing = shared.client.list(Some(objects));
    let mut batch = Vec::new();
    let mut orphans_removed = 0;
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|err| s3_error("list blobs", objects, &err))?;
        batch.extend(orphan(objects, &meta, live, cutoff));
        if batch.len() >= DELETE_BATCH {
            orphans_removed += delete(shared, std::mem::take(&mut batch)).await;
        }
    }
    orphans_removed += delete(shared, batch).await;
    let report = SweepReport {
        staging_removed: 0,
        orphans_removed,
    };
    info!(
        orphans_removed = report.orphans_removed,
        "S3 blob sweep finished"
    );
    Ok(report)
}

/// Deletes `keys` (in one DeleteObjects request where the client uses them); returns how
/// many went. A key that could not be deleted is logged and left for the next sweep.
async fn delete(shared: &Shared, keys: Vec<Path>) -> u64 {
    if keys.is_empty() {
        return 0;
    }
    let keys = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
    shared
        .client
        .delete_stream(keys)
        .fold(0, |removed, result| {
            future::ready(match result {
                Ok(key) => {
                    debug!(key = %key, "removed unreferenced blob");
                    removed + 1
                }
                Err(err) => {
                    error!(error = %err, "cannot delete an unreferenced blob; the next sweep will try again");
                    removed
                }
            })
        })
        .await
}

/// The key of `meta` if the sweep should delete it: a blob id under `objects/<aa>/`, not
/// live, last modified at or before `cutoff` (milliseconds since the epoch).
fn orphan(objects: &Path, meta: &ObjectMeta, live: &HashSet<BlobId>, cutoff: i64) -> Option<Path> {
    let parts: Vec<String> = meta
        .location
        .prefix_match(objects)?
        .map(|part| part.as_ref().to_owned())
        .collect();
    let [shard, name] = parts.as_slice() else {
        warn!(key = %meta.location, "unexpected object among the blobs; leaving it");
        return None;
    };
    let Ok(id) = BlobId::parse(name) else {
        warn!(key = %meta.location, "unexpected object among the blobs; leaving it");
        return None;
    };
    if live.contains(&id) {
        if shard_name(&id) != shard {
            warn!(key = %meta.location, "live blob is in the wrong shard; leaving it");
        }
        return None;
    }
    if meta.last_modified.timestamp_millis() > cutoff {
        debug!(key = %meta.location, "unreferenced blob is recent; another node may be about to use it");
        return None;
    }
    Some(meta.location.clone())
}

/// `now - grace` in milliseconds since the epoch.
fn cutoff_millis(now: SystemTime, grace: Duration) -> i64 {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let millis = since_epoch.saturating_sub(grace).as_millis();
    i64::try_from(millis).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use mailroom_core::BlobStore;
    use object_store::{ObjectStore, ObjectStoreExt};

    use super::*;
    use crate::s3::tests::in_memory;

    #[tokio::test]
    async fn sweep_spares_live_recent_and_foreign_objects() {
        let (store, memory) = in_memory();
        let put = |key: String| {
            let memory = memory.clone();
            async move {
                memory
                    .put(&Path::from(key), b"x".to_vec().into())
                    .await
                    .unwrap();
            }
        };
        let live = BlobId::new();
        let orphan = BlobId::new();
        let misplaced = BlobId::new();
        let wrong_shard = if shard_name(&misplaced) == "00" {
            "01"
        } else {
            "00"
        };
        for key in [
            format!("hub/objects/{}/{}", shard_name(&live), live.as_str()),
            format!("hub/objects/{}/{}", shard_name(&orphan), orphan.as_str()),
            format!("hub/objects/{wrong_shard}/{}", misplaced.as_str()),
            "hub/objects/ab/not-a-blob-id".into(),
            "hub/objects/stray".into(),
            "hub/objects/ab/cd/deeper".into(),
            "hub/notes.txt".into(),
            format!("other/objects/00/{}", orphan.as_str()),
        ] {
            put(key).await;
        }
        let live_set = HashSet::from([live.clone()]);

        // Within the grace period nothing goes: another node may have just written it.
        let report = store.sweep(&live_set).await.unwrap();
        assert_eq!(report, SweepReport::default());

        let store = store.with_sweep_grace(Duration::ZERO);
        let report = store.sweep(&live_set).await.unwrap();
        assert_eq!((report.staging_removed, report.orphans_removed), (0, 2));
        let mut left: Vec<String> = memory
            .list(None)
            .map(|meta| meta.unwrap().location.to_string())
            .collect()
            .await;
        left.sort();
        let mut expect = vec![
            format!("hub/objects/{}/{}", shard_name(&live), live.as_str()),
            "hub/objects/ab/not-a-blob-id".into(),
            "hub/objects/ab/cd/deeper".into(),
            "hub/objects/stray".into(),
            "hub/notes.txt".into(),
            format!("other/objects/00/{}", orphan.as_str()),
        ];
        expect.sort();
        assert_eq!(left, expect);
    }

    #[test]
    fn cutoff_is_now_less_the_grace() {
        let now = UNIX_EPOCH + Duration::from_millis(1_000_000);
        assert_eq!(cutoff_millis(now, Duration::ZERO), 1_000_000);
        assert_eq!(cutoff_millis(now, Duration::from_secs(600)), 400_000);
        assert_eq!(cutoff_millis(now, Duration::from_secs(6000)), 0);
        assert_eq!(cutoff_millis(UNIX_EPOCH, Duration::ZERO), 0);
    }
}
