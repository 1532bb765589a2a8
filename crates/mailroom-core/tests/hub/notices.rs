//! Accounts' notices on the Hub: a recipient set to `instant` gets a notice job per file
//! delivered, one set to `digest` one job per period however many files come, a sender with
//! receipts one per pick-up and acknowledgement; nothing is queued for an account without
//! them or while notices cannot be sent; and a setting that cannot work is refused, changing
//! nothing.

use mailroom_core::{
    AccountChange, DIGEST_RULE, ErrorKind, EventKind, Handler, NOTIFY_RULE, NotifyMode, Outcome,
    RECEIPT_RULE,
};
use time::Duration;

use crate::bed::{Bed, account, admin, client};

fn notify(email: &str, mode: NotifyMode, receipts: bool) -> AccountChange {
    AccountChange {
        email: Some(Some(email.to_owned())),
        notify: Some(mode),
        receipts: Some(receipts),
        ..AccountChange::default()
    }
}

/// alice may send to bob, carol and dave; bob is told at once, carol by digest, dave never;
/// alice wants receipts.
async fn bed() -> Bed {
    let bed = Bed::noticed(Duration::hours(1));
    bed.clients(&["alice", "bob", "carol", "dave"]).await;
    for to in ["bob", "carol", "dave"] {
        bed.allow("alice", to).await;
    }
    bed.change(
        "bob",
        notify("bob@example.test", NotifyMode::Instant, false),
    )
    .await;
    bed.change(
        "carol",
        notify("carol@example.test", NotifyMode::Digest, false),
    )
    .await;
    bed.change("alice", notify("alice@example.test", NotifyMode::Off, true))
        .await;
    bed
}

fn jobs_of(jobs: &[mailroom_core::Job], rule: &str) -> Vec<mailroom_core::Job> {
    jobs.iter().filter(|j| j.rule == rule).cloned().collect()
}

#[tokio::test]
async fn an_instant_recipient_gets_a_notice_per_file_and_a_digest_one_per_period() {
    let bed = bed().await;
    bed.send("alice", "/outbox/bob/a.txt", b"a").await;
    bed.send("alice", "/outbox/bob/b.txt", b"b").await;
    bed.send("alice", "/outbox/dave/quiet.txt", b"q").await;
    let jobs = bed.jobs().await;
    let notify = jobs_of(&jobs, NOTIFY_RULE);
    assert_eq!(notify.len(), 2, "{jobs:?}");
    assert!(
        notify
            .iter()
            .all(|j| j.handler == Handler::Email("bob@example.test".into()))
    );
    let delivered = bed
        .events_of(EventKind::DeliveryDelivered, Outcome::Ok)
        .await;
    assert!(notify.iter().any(|j| j.event == delivered[0].id));
    assert_eq!(jobs.len(), 2, "dave asked for nothing");

    // carol: three files in one period make one digest, due at the period's end.
    let start = mailroom_core::Clock::now(bed.clock.as_ref());
    for name in ["1.txt", "2.txt", "3.txt"] {
        bed.send("alice", &format!("/outbox/carol/{name}"), b"x")
            .await;
    }
    let digests = jobs_of(&bed.jobs().await, DIGEST_RULE);
    assert_eq!(digests.len(), 1);
    assert_eq!(
        digests[0].handler,
        Handler::Email("carol@example.test".into())
    );
    assert!(digests[0].due > start && digests[0].due <= start + Duration::hours(1));
    // The next period's first file makes the next digest.
    bed.clock.advance(Duration::hours(1));
    bed.send("alice", "/outbox/carol/4.txt", b"x").await;
    assert_eq!(jobs_of(&bed.jobs().await, DIGEST_RULE).len(), 2);
    // What a digest lists: the files waiting.
    let waiting = bed.hub.waiting_files(&account("carol")).await.unwrap();
    assert_eq!(waiting.len(), 4);
}

#[tokio::test]
async fn a_sender_with_receipts_hears_of_pick_up_and_acknowledgement() {
    let bed = bed().await;
    let sent = bed.send("alice", "/outbox/dave/report.pdf", b"%PDF").await;
    assert!(bed.jobs().await.is_empty());
    bed.download("dave", "/inbox/alice/report.pdf").await;
    bed.hub
        .acknowledge(&client("dave"), &sent[0].id)
        .await
        .unwrap();
    let receipts = jobs_of(&bed.jobs().await, RECEIPT_RULE);
    assert_eq!(receipts.len(), 2);
    assert!(
        receipts
            .iter()
            .all(|j| j.handler == Handler::Email("alice@example.test".into()))
    );
    let picked = bed
        .events_of(EventKind::DeliveryPickedUp, Outcome::Ok)
        .await;
    assert!(receipts.iter().any(|j| j.event == picked[0].id));
    let delivery = bed.hub.event_delivery(&picked[0]).await.unwrap().unwrap();
    assert_eq!(delivery.id, sent[0].id);
}

#[tokio::test]
async fn without_a_way_to_send_mail_nothing_is_queued() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    bed.change("bob", notify("bob@example.test", NotifyMode::Instant, true))
        .await;
    bed.send("alice", "/outbox/bob/a.txt", b"a").await;
    assert!(bed.jobs().await.is_empty());
}

#[tokio::test]
async fn a_setting_that_cannot_work_is_refused_and_changes_nothing() {
    let bed = bed().await;
    let no_address = AccountChange {
        notify: Some(NotifyMode::Instant),
        ..AccountChange::default()
    };
    let err = bed
        .refused(
            ErrorKind::InvalidName,
            None,
            bed.hub
                .change_account(&admin(), &account("dave"), no_address),
        )
        .await;
    assert!(err.message().contains("no e-mail address"), "{err}");
    for bad in [
        "bob",
        "bob@",
        "@example.test",
        "Bob <bob@example.test>",
        "a b@example.test",
    ] {
        bed.refused(
            ErrorKind::InvalidName,
            None,
            bed.hub.change_account(
                &admin(),
                &account("dave"),
                notify(bad, NotifyMode::Instant, false),
            ),
        )
        .await;
    }
    // Taking the address away while notices are on is refused too.
    let clear = AccountChange {
        email: Some(None),
        ..AccountChange::default()
    };
    bed.refused(
        ErrorKind::InvalidName,
        None,
        bed.hub.change_account(&admin(), &account("bob"), clear),
    )
    .await;
    let bob = bed.account("bob").await;
    assert_eq!(bob.access.notices.mode, NotifyMode::Instant);
}
