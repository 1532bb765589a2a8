//! Resumable uploads across a restart: an upload begun on one Hub is taken up by the next Hub
//! on the same stores (its staging spared by the start-up sweep) at the offset its staging
//! holds, for its owner only, checked again against today's routes; finished, it is gone for
//! good (never taken up and sent twice); expired or refused, its record and staging go.

use std::time::Duration;

use mailroom_core::{Content, DeliveryState, ErrorKind, Hub, MetaStoreExt};
use time::Duration as Span;

use crate::bed::{Bed, account, admin, client, data, file};

const DAY: Duration = Duration::from_secs(86_400);

/// alice may send to bob; she begins a 3000-byte upload to him and sends its first 1000.
async fn begun(bed: &Bed) -> (String, Vec<u8>) {
    bed.clients(&["alice", "bob", "carol"]).await;
    bed.allow("alice", "bob").await;
    let bytes = data(3000, 5);
    let info = bed
        .hub
        .open_resumable(
            &client("alice"),
            &[account("bob")],
            &file("big.bin"),
            3000,
            None,
            Content::Plain,
            DAY,
        )
        .await
        .unwrap();
    let mut lease = bed
        .hub
        .lease_resumable(&client("alice"), &info.id)
        .await
        .unwrap();
    lease.write(0, bytes[..1000].to_vec()).await.unwrap();
    drop(lease);
    (info.id, bytes)
}

async fn recorded(bed: &Bed) -> usize {
    bed.meta
        .read_with(|tx| tx.resumables())
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn an_upload_outlives_a_restart_and_is_delivered_once() {
    let bed = Bed::new();
    let (id, bytes) = begun(&bed).await;
    assert_eq!(recorded(&bed).await, 1);

    // The restart: a new Hub on the same stores; its start-up sweep spares the staging.
    let hub: Hub = bed.other_process();
    let swept = hub.sweep().await.unwrap();
    assert_eq!(swept.staging_removed, 0);
    // Another account never sees it, even now.
    let err = hub
        .lease_resumable(&client("carol"), &id)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let mut lease = hub.lease_resumable(&client("alice"), &id).await.unwrap();
    assert_eq!(lease.offset(), 1000);
    assert_eq!(lease.info().size, 3000);
    // Only at its offset.
    let err = lease.write(0, bytes[..10].to_vec()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    lease.write(1000, bytes[1000..].to_vec()).await.unwrap();
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let deliveries = hub.finish_resumable(lease, &sha).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].state, DeliveryState::Delivered);
    assert_eq!(bed.download("bob", "/inbox/alice/big.bin").await, bytes);
    // Finished: its record went with the delivery, so no Hub takes it up again.
    assert_eq!(recorded(&bed).await, 0);
    let again: Hub = bed.other_process();
    let err = again
        .lease_resumable(&client("alice"), &id)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_route_removed_before_the_take_up_refuses_it_and_it_is_gone() {
    let bed = Bed::new();
    let (id, _) = begun(&bed).await;
    bed.hub
        .remove_route(&admin(), &account("alice"), &account("bob"))
        .await
        .unwrap();
    let hub: Hub = bed.other_process();
    let err = hub
        .lease_resumable(&client("alice"), &id)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::RouteDenied);
    assert_eq!(recorded(&bed).await, 0);
    assert!(bed.blobs.staged().is_empty(), "the staging is gone");
    assert!(bed.deliveries().await.is_empty());
}

#[tokio::test]
async fn a_recorded_upload_expires_even_if_never_taken_up() {
    let bed = Bed::new();
    let (id, _) = begun(&bed).await;
    let hub: Hub = bed.other_process();
    // Not yet due: kept.
    assert_eq!(hub.expire_resumable().await, 0);
    assert_eq!(recorded(&bed).await, 1);
    bed.clock.advance(Span::days(2));
    assert_eq!(hub.expire_resumable().await, 1);
    assert_eq!(recorded(&bed).await, 0);
    assert!(bed.blobs.staged().is_empty());
    let err = hub
        .lease_resumable(&client("alice"), &id)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn an_aborted_upload_leaves_no_record() {
    let bed = Bed::new();
    let (id, _) = begun(&bed).await;
    let lease = bed
        .hub
        .lease_resumable(&client("alice"), &id)
        .await
        .unwrap();
    bed.hub.abort_resumable(lease, "client asked").await;
    assert_eq!(recorded(&bed).await, 0);
    assert!(bed.blobs.staged().is_empty());
    let hub: Hub = bed.other_process();
    assert_eq!(hub.sweep().await.unwrap().staging_removed, 0);
}
