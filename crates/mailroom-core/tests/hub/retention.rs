//! Retention on the hub's clock: a delivery older than its recipient's `retention_days`
//! expires (state `expired`, a `delivery.expired` event by `system`, the sender's receipt
//! says so), its blob is released once no live delivery uses it (in the blob store, or inline
//! in the metadata store), and younger deliveries and recipients without retention keep
//! theirs. The host's alerts (disk low, clock unsynchronised) are system events.

use mailroom_core::{AccountChange, DeliveryState, EventKind, MetaStoreExt, Outcome};
use time::Duration;

use crate::bed::{Bed, T0, client, data, path};

#[tokio::test]
async fn old_deliveries_expire_and_release_their_blobs() {
    for inline in [false, true] {
        let bed = if inline { Bed::inline() } else { Bed::new() };
        bed.clients(&["alice", "bob", "carol"]).await;
        bed.allow("alice", "bob").await;
        bed.allow("alice", "carol").await;
        bed.change(
            "bob",
            AccountChange {
                retention_days: Some(Some(7)),
                ..AccountChange::default()
            },
        )
        .await;
        // Over 64 KiB the blob store keeps the content; under it, an inline bed hands it to
        // the metadata store.
        let size = if inline { 1000 } else { 200_000 };
        let old = bed
            .send("alice", "/outbox/bob/old.bin", &data(size, 1))
            .await;
        let kept = bed
            .send("alice", "/outbox/carol/old.bin", &data(size, 1))
            .await;
        bed.clock.advance(Duration::days(5));
        let young = bed
            .send("alice", "/outbox/bob/young.bin", &data(size, 2))
            .await;
        let stored = bed.blobs.ids().len();
        assert_eq!(stored, if inline { 0 } else { 3 });

        // Day 6: nothing is older than 7 days.
        assert_eq!(bed.hub.expire(T0 + Duration::days(6)).await.unwrap(), 0);
        // Day 8: bob's old delivery expires; carol keeps hers (no retention), and bob's young
        // one is 3 days old.
        bed.clock.set(T0 + Duration::days(8));
        assert_eq!(bed.hub.expire_due().await.unwrap(), 1);
        assert_eq!(
            bed.hub.expire_due().await.unwrap(),
            0,
            "nothing more on a second run"
        );
        let states: Vec<_> = bed
            .deliveries()
            .await
            .into_iter()
            .map(|d| (d.id, d.state))
            .collect();
        assert_eq!(
            states,
            [
                (old[0].id, DeliveryState::Expired),
                (kept[0].id, DeliveryState::Delivered),
                (young[0].id, DeliveryState::Delivered),
            ]
        );
        let expired = bed.events_of(EventKind::DeliveryExpired, Outcome::Ok).await;
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].actor, "system");
        assert_eq!(expired[0].object, old[0].id.to_string());
        assert!(expired[0].detail.contains("kept 7 days by bob's retention"));

        // The blob is released: from the blob store, or with its inline content.
        if inline {
            let blob = old[0].blob_id.clone();
            let content = bed
                .meta
                .read_with(move |tx| tx.inline_blob(&blob))
                .await
                .unwrap();
            assert_eq!(content, None, "the inline content went with the delivery");
        } else {
            assert_eq!(bed.blobs.ids().len(), stored - 1);
            assert!(!bed.blobs.ids().contains(&old[0].blob_id));
        }

        // bob no longer sees it; alice's receipt says it expired.
        assert_eq!(bed.listing("bob", "/inbox/alice").await, ["young.bin"]);
        let receipt = format!("/sent/bob/old.bin@{}", old[0].id.short());
        let text = String::from_utf8(bed.download("alice", &receipt).await).unwrap();
        assert!(text.contains("state: expired"), "{text}");
        let sent = bed.hub.sent(&client("alice")).await.unwrap();
        assert_eq!(sent[0].state, DeliveryState::Expired);

        // Day 11: the young one is 6 days old and stays; day 13 it goes too.
        assert_eq!(bed.hub.expire(T0 + Duration::days(11)).await.unwrap(), 0);
        assert_eq!(bed.hub.expire(T0 + Duration::days(13)).await.unwrap(), 1);
        assert!(bed.listing("bob", "/inbox").await.is_empty());
        assert_eq!(
            bed.listing("carol", "/inbox/alice").await,
            ["old.bin"],
            "carol has no retention"
        );
    }
}

#[tokio::test]
async fn a_shared_blob_stays_while_a_member_without_retention_holds_it() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol"]).await;
    bed.group("team", &["bob", "carol"]).await;
    bed.allow("alice", "team").await;
    bed.change(
        "bob",
        AccountChange {
            retention_days: Some(Some(1)),
            ..AccountChange::default()
        },
    )
    .await;
    bed.send("alice", "/outbox/team/shared.bin", &data(100_000, 3))
        .await;
    assert_eq!(bed.hub.expire(T0 + Duration::days(2)).await.unwrap(), 1);
    assert_eq!(
        bed.blobs.ids().len(),
        1,
        "carol's delivery still uses the blob"
    );
    assert_eq!(
        bed.download("carol", "/inbox/alice/shared.bin").await,
        data(100_000, 3)
    );
    bed.hub
        .remove(&client("carol"), &path("/inbox/alice/shared.bin"))
        .await
        .unwrap();
    assert!(bed.blobs.ids().is_empty());
}

#[tokio::test]
async fn the_host_alerts_are_recorded_as_failed_system_events_with_their_labels() {
    for (kind, object) in [
        (EventKind::DiskLow, "data folder"),
        (EventKind::ClockUnsynchronised, "clock"),
    ] {
        let bed = Bed::new();
        let before = bed.events().await.len();
        let detail = format!("detail of {}", kind.as_str());
        match kind {
            EventKind::DiskLow => bed.hub.record_disk_low(detail.clone()).await.unwrap(),
            _ => bed
                .hub
                .record_clock_unsynchronised(detail.clone())
                .await
                .unwrap(),
        }
        let events = bed.events().await;
        assert_eq!(events.len(), before + 1, "{kind:?}");
        let event = events.last().unwrap();
        assert_eq!(event.kind, kind);
        assert_eq!(event.outcome, Outcome::Failed);
        assert_eq!(event.object, object);
        assert_eq!(event.detail, detail);
        assert_eq!(event.actor, "system");
        assert_eq!(EventKind::parse(kind.as_str()).unwrap(), kind);
    }
}
