//! What the consistency check asks of the Hub: the kept blobs as the metadata records them
//! (inline ones checked on the way), and the repair that marks a lost blob's deliveries
//! failed with an event each, touching no other delivery and refusing without a reason.

use mailroom_core::{DeliveryState, ErrorKind, EventKind};

use crate::bed::{Bed, admin};

#[tokio::test]
async fn kept_blobs_lists_each_blob_once_with_its_deliveries() {
    let bed = Bed::inline();
    bed.clients(&["alice", "bob", "carol"]).await;
    bed.allow("alice", "bob").await;
    bed.allow("alice", "carol").await;
    bed.group("team", &["bob", "carol"]).await;
    bed.allow("alice", "team").await;
    let fanned = bed
        .send("alice", "/outbox/team/report.txt", b"for both")
        .await;
    let alone = bed.send("alice", "/outbox/bob/note.txt", b"for bob").await;

    let kept = bed.hub.kept_blobs().await.unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let shared = kept
        .iter()
        .find(|blob| blob.id == fanned[0].blob_id)
        .unwrap();
    assert_eq!(shared.deliveries.len(), 2);
    assert_eq!(shared.inline, Some(true));
    assert_eq!(shared.size, 8);
    let single = kept
        .iter()
        .find(|blob| blob.id == alone[0].blob_id)
        .unwrap();
    assert_eq!(single.deliveries, vec![alone[0].id]);
}

#[tokio::test]
async fn a_lost_blob_fails_its_deliveries_only_with_an_event_each() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol"]).await;
    bed.group("team", &["bob", "carol"]).await;
    bed.allow("alice", "team").await;
    bed.allow("alice", "bob").await;
    let lost = bed.send("alice", "/outbox/team/lost.bin", b"gone").await;
    let kept = bed
        .send("alice", "/outbox/bob/kept.bin", b"still here")
        .await;

    // Without a reason: refused, nothing changed.
    bed.refused(
        ErrorKind::InvalidName,
        None,
        bed.hub.fail_lost_blob(&admin(), &lost[0].blob_id, "  "),
    )
    .await;

    let failed = bed
        .hub
        .fail_lost_blob(&admin(), &lost[0].blob_id, "fsck: content missing")
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|d| d.state == DeliveryState::Failed));
    let deliveries = bed.deliveries().await;
    for delivery in &deliveries {
        let expected = match delivery.blob_id == lost[0].blob_id {
            true => DeliveryState::Failed,
            false => DeliveryState::Delivered,
        };
        assert_eq!(delivery.state, expected, "{delivery:?}");
    }
    assert!(deliveries.iter().any(|d| d.id == kept[0].id));
    let events = bed.events().await;
    let marked: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Admin && e.detail.contains("marked failed"))
        .collect();
    assert_eq!(marked.len(), 2, "{marked:?}");
    assert!(
        marked
            .iter()
            .all(|e| e.detail.contains("fsck: content missing"))
    );
    // Failed is terminal: the blob is no longer kept, and a second repair finds nothing.
    assert!(
        bed.hub
            .kept_blobs()
            .await
            .unwrap()
            .iter()
            .all(|b| b.id != lost[0].blob_id)
    );
    let again = bed
        .hub
        .fail_lost_blob(&admin(), &lost[0].blob_id, "fsck: content missing")
        .await
        .unwrap();
    assert!(again.is_empty());
}
