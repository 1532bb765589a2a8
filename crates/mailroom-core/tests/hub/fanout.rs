//! A group upload is one file to its sender: renaming it renames every delivery of the
//! fan-out in one commit, or none (a name taken for one member refuses the whole rename);
//! removing it from the outbox recalls every delivery still pending, while what was picked up
//! stays; the shared blob goes with the last live delivery. The by-id calls of the HTTPS API
//! (`recall`, `acknowledge`, `open_delivery`) behave like the tree and refuse ids that are not
//! the caller's with NotFound.

use mailroom_core::{DeliveryState, ErrorKind, EventKind, Outcome};

use crate::bed::{Bed, account, admin, client, data, names, path};

/// alice, and bob, carol and dave in the group `team` she may send to; the blob store keeps
/// blobs itself so their release can be seen.
async fn team() -> Bed {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol", "dave"]).await;
    bed.group("team", &["bob", "carol", "dave"]).await;
    bed.allow("alice", "team").await;
    bed.allow("alice", "bob").await;
    bed
}

/// (recipient, name, state) of every delivery, sorted by recipient then name.
async fn states(bed: &Bed) -> Vec<(String, String, DeliveryState)> {
    let mut all: Vec<_> = bed
        .deliveries()
        .await
        .into_iter()
        .map(|d| (d.recipient.to_string(), d.name.to_string(), d.state))
        .collect();
    all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    all
}

fn row(recipient: &str, name: &str, state: DeliveryState) -> (String, String, DeliveryState) {
    (recipient.to_owned(), name.to_owned(), state)
}

#[tokio::test]
async fn a_rename_renames_every_delivery_of_the_fan_out_in_one_commit() {
    let bed = team().await;
    bed.send("alice", "/outbox/team/draft.txt", b"plan").await;
    let before = bed.hub.store_stats();
    bed.hub
        .rename(
            &client("alice"),
            &path("/outbox/team/draft.txt"),
            &path("/outbox/team/final.txt"),
        )
        .await
        .unwrap();
    let after = bed.hub.store_stats();
    assert_eq!(
        (after.writes - before.writes, after.commits - before.commits),
        (1, 1),
        "one unit, one commit"
    );
    assert_eq!(names(&bed.deliveries().await), ["final.txt"; 3]);
    assert_eq!(
        bed.events_of(EventKind::DeliveryRenamed, Outcome::Ok)
            .await
            .len(),
        3
    );
    assert_eq!(bed.listing("alice", "/outbox/team").await, ["final.txt"]);
    for member in ["bob", "carol", "dave"] {
        assert_eq!(bed.listing(member, "/inbox/alice").await, ["final.txt"]);
    }
}

#[tokio::test]
async fn a_rename_that_one_member_cannot_take_renames_nothing() {
    let bed = team().await;
    bed.send("alice", "/outbox/team/draft.txt", b"plan").await;
    // bob alone already holds a final.txt from alice.
    bed.send("alice", "/outbox/bob/final.txt", b"bob's own")
        .await;
    let err = bed
        .refused(
            ErrorKind::Conflict,
            Some(EventKind::DeliveryRenamed),
            bed.hub.rename(
                &client("alice"),
                &path("/outbox/team/draft.txt"),
                &path("/outbox/team/final.txt"),
            ),
        )
        .await;
    assert!(err.message().contains("final.txt"), "{err}");
    assert_eq!(
        states(&bed).await,
        [
            row("bob", "draft.txt", DeliveryState::Delivered),
            row("bob", "final.txt", DeliveryState::Delivered),
            row("carol", "draft.txt", DeliveryState::Delivered),
            row("dave", "draft.txt", DeliveryState::Delivered),
        ],
        "carol's and dave's deliveries were not renamed either"
    );
}

#[tokio::test]
async fn removing_a_fan_out_recalls_every_pending_delivery_and_releases_the_blob() {
    let bed = team().await;
    bed.send("alice", "/outbox/team/oops.bin", &data(100_000, 1))
        .await;
    assert_eq!(bed.blobs.ids().len(), 1, "the fan-out shares one blob");
    bed.hub
        .remove(&client("alice"), &path("/outbox/team/oops.bin"))
        .await
        .unwrap();
    assert!(
        states(&bed)
            .await
            .iter()
            .all(|(_, _, s)| *s == DeliveryState::Recalled)
    );
    assert_eq!(
        bed.events_of(EventKind::DeliveryRecalled, Outcome::Ok)
            .await
            .len(),
        3
    );
    assert!(
        bed.blobs.ids().is_empty(),
        "the blob went with the last delivery"
    );
    assert!(bed.listing("alice", "/outbox/team").await.is_empty());
    assert!(bed.listing("bob", "/inbox").await.is_empty());
}

#[tokio::test]
async fn what_was_picked_up_stays_and_cannot_be_recalled() {
    let bed = team().await;
    bed.send("alice", "/outbox/team/report.bin", &data(100_000, 2))
        .await;
    bed.download("bob", "/inbox/alice/report.bin").await;
    // The recall takes carol's and dave's; bob's stays, and so does the blob he still holds.
    bed.hub
        .remove(&client("alice"), &path("/outbox/team/report.bin"))
        .await
        .unwrap();
    assert_eq!(
        states(&bed).await,
        [
            row("bob", "report.bin", DeliveryState::PickedUp),
            row("carol", "report.bin", DeliveryState::Recalled),
            row("dave", "report.bin", DeliveryState::Recalled),
        ]
    );
    assert_eq!(bed.blobs.ids().len(), 1);
    // Nothing is left to recall: refused, nothing changes.
    let err = bed
        .refused(
            ErrorKind::Conflict,
            Some(EventKind::DeliveryRecalled),
            bed.hub
                .remove(&client("alice"), &path("/outbox/team/report.bin")),
        )
        .await;
    assert!(err.message().contains("already picked up"), "{err}");
    // A single delivery picked up cannot be recalled either.
    bed.send("alice", "/outbox/bob/single.bin", &data(100_000, 3))
        .await;
    bed.download("bob", "/inbox/alice/single.bin").await;
    bed.refused(
        ErrorKind::Conflict,
        Some(EventKind::DeliveryRecalled),
        bed.hub
            .remove(&client("alice"), &path("/outbox/bob/single.bin")),
    )
    .await;
    // bob's acknowledgements release the blobs.
    for name in ["report.bin", "single.bin"] {
        bed.hub
            .remove(&client("bob"), &path(&format!("/inbox/alice/{name}")))
            .await
            .unwrap();
    }
    assert!(bed.blobs.ids().is_empty());
}

#[tokio::test]
async fn by_id_calls_behave_like_the_tree() {
    let bed = team().await;
    bed.clients(&["eve"]).await;
    let fan_out = bed
        .send("alice", "/outbox/team/a.bin", &data(100_000, 4))
        .await;
    let single = bed
        .send("alice", "/outbox/bob/b.bin", &data(100_000, 5))
        .await;
    let (alice, bob, eve) = (client("alice"), client("bob"), client("eve"));
    let to_bob = fan_out
        .iter()
        .find(|d| d.recipient.as_str() == "bob")
        .unwrap();

    // Ids that are not the caller's are NotFound, whoever's they are, and change nothing.
    for id in [to_bob.id, single[0].id] {
        bed.refused(
            ErrorKind::NotFound,
            Some(EventKind::DeliveryAcknowledged),
            bed.hub.acknowledge(&eve, &id),
        )
        .await;
        bed.refused(
            ErrorKind::NotFound,
            Some(EventKind::DeliveryRecalled),
            bed.hub.recall(&eve, &id),
        )
        .await;
        // The sender cannot acknowledge what she sent; the recipient cannot recall it.
        bed.refused(
            ErrorKind::NotFound,
            Some(EventKind::DeliveryAcknowledged),
            bed.hub.acknowledge(&alice, &id),
        )
        .await;
        bed.refused(
            ErrorKind::NotFound,
            Some(EventKind::DeliveryRecalled),
            bed.hub.recall(&bob, &id),
        )
        .await;
        assert_eq!(
            bed.hub
                .open_delivery(&eve, &id)
                .await
                .err()
                .map(|e| e.kind()),
            Some(ErrorKind::NotFound)
        );
    }
    let inbox: Vec<_> = bed.hub.inbox(&bob).await.unwrap();
    assert_eq!(names(&inbox), ["a.bin", "b.bin"]);

    // Reading by id picks up, as reading the path does; then the id cannot be recalled.
    let handle = bed.hub.open_delivery(&bob, &single[0].id).await.unwrap();
    let content = handle.read_at(0, 200_000).await.unwrap();
    assert_eq!(content, data(100_000, 5));
    bed.hub.close_read(&bob, handle).await.unwrap();
    bed.refused(
        ErrorKind::Conflict,
        Some(EventKind::DeliveryRecalled),
        bed.hub.recall(&alice, &single[0].id),
    )
    .await;

    // Recalling one delivery of a fan-out by id recalls the fan-out, as the tree does.
    bed.hub.recall(&alice, &to_bob.id).await.unwrap();
    assert_eq!(
        states(&bed).await,
        [
            row("bob", "a.bin", DeliveryState::Recalled),
            row("bob", "b.bin", DeliveryState::PickedUp),
            row("carol", "a.bin", DeliveryState::Recalled),
            row("dave", "a.bin", DeliveryState::Recalled),
        ]
    );
    // An ended delivery can be neither recalled again nor acknowledged.
    bed.refused(
        ErrorKind::Conflict,
        Some(EventKind::DeliveryRecalled),
        bed.hub.recall(&alice, &to_bob.id),
    )
    .await;
    bed.refused(
        ErrorKind::NotFound,
        Some(EventKind::DeliveryAcknowledged),
        bed.hub.acknowledge(&bob, &to_bob.id),
    )
    .await;

    // Acknowledging by id ends the delivery and releases its blob, as removing the path does.
    bed.hub.acknowledge(&bob, &single[0].id).await.unwrap();
    assert!(bed.hub.inbox(&bob).await.unwrap().is_empty());
    assert!(bed.blobs.ids().is_empty());
    let sent = bed.hub.sent(&alice).await.unwrap();
    assert_eq!(sent.len(), 4, "the receipts keep every delivery");
}

/// The upload path keeps the names of one outbox folder unique: a new fan-out to a group
/// takes a name free among the sender's pending fan-outs to that group, even when their
/// recipients differ (the group's members changed). A rename must keep the same promise,
/// else the folder lists two files of one name and removing that path recalls both.
#[tokio::test]
async fn a_rename_never_gives_two_files_of_one_outbox_folder_the_same_name() {
    let bed = team().await;
    let team = account("team");
    // The first fan-out reaches bob, carol and dave; then the group becomes eve's alone.
    bed.clients(&["eve"]).await;
    bed.send("alice", "/outbox/team/a.txt", b"first").await;
    for member in ["bob", "carol", "dave"] {
        bed.hub
            .remove_member(&admin(), &team, &account(member))
            .await
            .unwrap();
    }
    bed.hub
        .add_member(&admin(), &team, &account("eve"))
        .await
        .unwrap();
    // An upload of the same name to the group takes the next name, though eve has no a.txt.
    let second = bed.send("alice", "/outbox/team/a.txt", b"second").await;
    assert_eq!(names(&second), ["a~2.txt"]);
    let third = bed.send("alice", "/outbox/team/b.txt", b"third").await;
    assert_eq!(names(&third), ["b.txt"]);
    // A rename to a.txt must be refused the same way, and change nothing.
    bed.refused(
        ErrorKind::Conflict,
        Some(EventKind::DeliveryRenamed),
        bed.hub.rename(
            &client("alice"),
            &path("/outbox/team/b.txt"),
            &path("/outbox/team/a.txt"),
        ),
    )
    .await;
    assert_eq!(
        bed.listing("alice", "/outbox/team").await,
        ["a.txt", "a~2.txt", "b.txt"]
    );
}

/// `Hub::recall` says "Refused once it was picked up or has ended": the id names one
/// delivery, and once that delivery is picked up the call is refused, like a recall by path of
/// a single delivery, and the fan-out's other deliveries stay where they are.
#[tokio::test]
async fn recalling_by_id_a_delivery_that_was_picked_up_is_refused() {
    let bed = team().await;
    let fan_out = bed
        .send("alice", "/outbox/team/a.bin", &data(1000, 6))
        .await;
    bed.download("bob", "/inbox/alice/a.bin").await;
    let to_bob = fan_out
        .iter()
        .find(|d| d.recipient.as_str() == "bob")
        .unwrap();
    let err = bed
        .refused(
            ErrorKind::Conflict,
            Some(EventKind::DeliveryRecalled),
            bed.hub.recall(&client("alice"), &to_bob.id),
        )
        .await;
    assert!(err.message().contains("picked-up"), "{err}");
}

/// Acknowledging many is one unit: every delivery moves with its own event, or, when one id
/// is not the caller's (or the batch is out of bounds), none does and one refusal is recorded.
#[tokio::test]
async fn acknowledge_many_takes_all_or_nothing() {
    let bed = team().await;
    bed.clients(&["eve"]).await;
    bed.allow("alice", "eve").await;
    let mut mine = Vec::new();
    for i in 0..5u8 {
        let sent = bed
            .send("alice", &format!("/outbox/bob/f{i}.bin"), &data(10_000, i))
            .await;
        mine.push(sent[0].id);
    }
    let to_eve = bed
        .send("alice", "/outbox/eve/e.bin", &data(100_000, 9))
        .await;
    let (alice, bob) = (client("alice"), client("bob"));

    // Someone else's id among bob's own refuses them all.
    let mut with_foreign = mine.clone();
    with_foreign.insert(2, to_eve[0].id);
    let err = bed
        .refused(
            ErrorKind::NotFound,
            Some(EventKind::DeliveryAcknowledged),
            bed.hub.acknowledge_many(&bob, &with_foreign),
        )
        .await;
    assert!(err.to_string().contains(&to_eve[0].id.to_string()), "{err}");
    // The sender cannot acknowledge what she sent; none and too many are refused.
    bed.refused(
        ErrorKind::NotFound,
        Some(EventKind::DeliveryAcknowledged),
        bed.hub.acknowledge_many(&alice, &mine),
    )
    .await;
    bed.refused(
        ErrorKind::InvalidName,
        Some(EventKind::DeliveryAcknowledged),
        bed.hub.acknowledge_many(&bob, &[]),
    )
    .await;
    let too_many = vec![mine[0]; mailroom_core::MAX_BATCH + 1];
    bed.refused(
        ErrorKind::InvalidName,
        Some(EventKind::DeliveryAcknowledged),
        bed.hub.acknowledge_many(&bob, &too_many),
    )
    .await;
    assert_eq!(bed.hub.inbox(&bob).await.unwrap().len(), 5);
    assert_eq!(
        bed.hub
            .inbox_deliveries(&bob, &with_foreign)
            .await
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::NotFound),
        "reading many refuses a foreign id as well"
    );

    // Four of the five, one named twice: four acknowledged, four events, one blob each gone.
    let before = bed
        .events_of(EventKind::DeliveryAcknowledged, Outcome::Ok)
        .await
        .len();
    let chosen = [mine[0], mine[1], mine[1], mine[3], mine[4]];
    let read = bed.hub.inbox_deliveries(&bob, &chosen).await.unwrap();
    assert_eq!(
        read.iter().map(|d| d.id).collect::<Vec<_>>(),
        [mine[0], mine[1], mine[3], mine[4]],
        "in the order asked, each once"
    );
    assert_eq!(bed.hub.acknowledge_many(&bob, &chosen).await.unwrap(), 4);
    let after = bed
        .events_of(EventKind::DeliveryAcknowledged, Outcome::Ok)
        .await;
    assert_eq!(after.len(), before + 4);
    let left = bed.hub.inbox(&bob).await.unwrap();
    assert_eq!(names(&left), ["f2.bin"]);
    assert_eq!(bed.blobs.ids().len(), 2, "f2.bin's and eve's blobs remain");
    // Once acknowledged, naming them again is refused with nothing changed.
    bed.refused(
        ErrorKind::NotFound,
        Some(EventKind::DeliveryAcknowledged),
        bed.hub.acknowledge_many(&bob, &[mine[2], mine[0]]),
    )
    .await;
    assert_eq!(names(&bed.hub.inbox(&bob).await.unwrap()), ["f2.bin"]);
}
