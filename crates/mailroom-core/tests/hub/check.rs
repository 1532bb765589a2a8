//! Checking before delivery on the Hub: while a check is configured an upload waits in
//! `checking`, hidden from its recipients and never downloadable, with one check job for the
//! whole fan-out; a clean verdict delivers it (and dispatch copies it only then), a finding
//! quarantines it with the signature, a check given up quarantines it fail-closed; operators
//! release or delete quarantined files, stating a reason, and their refusals change nothing.

use mailroom_core::{
    CHECK_RULE, CheckVerdict, DeliveryState, ErrorKind, EventKind, Handler, JobState, Outcome,
    RetryPolicy, Rule, Rules,
};
use time::Duration;

use crate::bed::{Bed, account, admin, client, path};

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        base: Duration::seconds(10),
        cap: Duration::seconds(60),
    }
}

/// alice may send to bob and to `team` (bob, carol); uploads wait for their check; `rules`
/// apply.
async fn bed(rules: Vec<Rule>) -> Bed {
    let bed = Bed::checked(Rules::new(rules, 100).unwrap(), retry());
    bed.clients(&["alice", "bob", "carol", "dave"]).await;
    bed.group("team", &["bob", "carol"]).await;
    bed.allow("alice", "bob").await;
    bed.allow("alice", "team").await;
    bed
}

fn clean() -> CheckVerdict {
    CheckVerdict::Clean {
        by: "clamd".to_owned(),
    }
}

fn found() -> CheckVerdict {
    CheckVerdict::Found {
        by: "clamd".to_owned(),
        signature: "Eicar-Test-Signature".to_owned(),
    }
}

/// The batch of the one check job queued so far.
async fn checked_batch(bed: &Bed) -> mailroom_core::DeliveryId {
    let checks: Vec<_> = bed
        .jobs()
        .await
        .into_iter()
        .filter(|job| job.rule == CHECK_RULE)
        .collect();
    assert_eq!(checks.len(), 1, "{checks:?}");
    match &checks[0].handler {
        Handler::Check(batch) => *batch,
        other => panic!("not a check: {other:?}"),
    }
}

#[tokio::test]
async fn a_group_upload_waits_hidden_for_one_check_and_is_delivered_when_clean() {
    // A dispatch rule copies delivered files to dave: never before the check says clean.
    let copy = Rule {
        name: "copy".to_owned(),
        on: vec![EventKind::DeliveryDelivered],
        account: None,
        sender: None,
        recipient: Some(account("bob")),
        outcome: None,
        file: None,
        handlers: Vec::new(),
        copy_to: vec![account("dave")],
    };
    let bed = bed(vec![copy]).await;
    let sent = bed
        .send("alice", "/outbox/team/report.pdf", b"%PDF-1.7")
        .await;
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|d| d.state == DeliveryState::Checking));
    let batch = checked_batch(&bed).await;
    assert_eq!(batch, sent[0].batch_id);
    assert!(
        bed.events_of(EventKind::DeliveryDelivered, Outcome::Ok)
            .await
            .is_empty()
    );

    // Hidden from the recipients, not downloadable; the sender sees it being checked.
    assert!(bed.listing("bob", "/inbox").await.is_empty());
    let err = bed
        .hub
        .open_read(&client("bob"), &path("/inbox/alice/report.pdf"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = bed
        .hub
        .open_delivery(&client("bob"), &sent[0].id)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(bed.listing("alice", "/outbox/team").await, ["report.pdf"]);
    let receipts = bed.listing("alice", "/sent/bob").await;
    let receipt = bed
        .download("alice", &format!("/sent/bob/{}", receipts[0]))
        .await;
    let receipt = String::from_utf8(receipt).unwrap();
    assert!(
        receipt.contains("state: checking\nnote: being checked"),
        "{receipt}"
    );

    // The check reads the content, once for the fan-out.
    let handle = bed.hub.check_content(batch).await.unwrap().unwrap();
    assert_eq!(handle.read_at(0, 100).await.unwrap(), b"%PDF-1.7");
    assert_eq!(bed.hub.finish_check(batch, clean()).await.unwrap(), 2);
    let delivered = bed
        .events_of(EventKind::DeliveryDelivered, Outcome::Ok)
        .await;
    // bob's and carol's, and dave's copy, made by the rule as bob's was delivered.
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    assert!(delivered[0].detail.ends_with("checked by clamd"));
    assert_eq!(
        bed.download("bob", "/inbox/alice/report.pdf").await,
        b"%PDF-1.7"
    );
    assert_eq!(bed.listing("dave", "/inbox/alice").await, ["report.pdf"]);

    // A job run twice (after a crash) finds nothing left to check and changes nothing.
    let before = bed.snapshot().await;
    assert!(bed.hub.check_content(batch).await.unwrap().is_none());
    assert_eq!(bed.hub.finish_check(batch, found()).await.unwrap(), 0);
    assert_eq!(bed.snapshot().await, before);
}

#[tokio::test]
async fn a_finding_quarantines_the_upload_keeps_its_content_and_an_operator_may_release_it() {
    let bed = bed(Vec::new()).await;
    let sent = bed.send("alice", "/outbox/bob/invoice.pdf", b"EVIL").await;
    let batch = checked_batch(&bed).await;
    assert_eq!(bed.hub.finish_check(batch, found()).await.unwrap(), 1);
    let quarantined = bed
        .events_of(EventKind::DeliveryQuarantined, Outcome::Refused)
        .await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].object, sent[0].id.to_string());
    assert!(
        quarantined[0]
            .detail
            .ends_with("clamd found Eicar-Test-Signature")
    );
    assert!(bed.listing("bob", "/inbox").await.is_empty());
    let listed = bed.hub.quarantine().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0.id, sent[0].id);
    assert_eq!(listed[0].1, "clamd found Eicar-Test-Signature");
    assert!(bed.blobs.ids().contains(&sent[0].blob_id), "content kept");

    // Refusals change nothing: no reason, a delivery that is not quarantined, none at all.
    let id = sent[0].id;
    bed.refused(
        ErrorKind::InvalidName,
        None,
        bed.hub.release_quarantined(&admin(), &id, "  "),
    )
    .await;
    bed.refused(
        ErrorKind::InvalidName,
        None,
        bed.hub.delete_quarantined(&admin(), &id, "line\nbreak"),
    )
    .await;
    let other = bed.send("alice", "/outbox/bob/other.txt", b"x").await;
    bed.refused(
        ErrorKind::NotFound,
        None,
        bed.hub.release_quarantined(&admin(), &other[0].id, "fine"),
    )
    .await;
    bed.refused(
        ErrorKind::NotFound,
        None,
        bed.hub
            .release_quarantined(&admin(), &mailroom_core::DeliveryId::new(), "fine"),
    )
    .await;

    let released = bed
        .hub
        .release_quarantined(&admin(), &id, "false positive, checked by hand")
        .await
        .unwrap();
    assert_eq!(released.state, DeliveryState::Delivered);
    assert_eq!(
        bed.download("bob", "/inbox/alice/invoice.pdf").await,
        b"EVIL"
    );
    let admin_events = bed.events_of(EventKind::Admin, Outcome::Ok).await;
    assert!(
        admin_events
            .last()
            .unwrap()
            .detail
            .contains("released from quarantine: false positive, checked by hand")
    );
    assert!(bed.hub.quarantine().await.unwrap().is_empty());
}

#[tokio::test]
async fn deleting_from_quarantine_removes_the_content() {
    let bed = bed(Vec::new()).await;
    let sent = bed.send("alice", "/outbox/bob/bad.exe", b"MZ-evil").await;
    let batch = checked_batch(&bed).await;
    bed.hub.finish_check(batch, found()).await.unwrap();
    let deleted = bed
        .hub
        .delete_quarantined(&admin(), &sent[0].id, "malware")
        .await
        .unwrap();
    assert_eq!(deleted.state, DeliveryState::Deleted);
    assert!(!bed.blobs.ids().contains(&sent[0].blob_id));
    assert!(bed.hub.quarantine().await.unwrap().is_empty());
    // Deleted is final: neither released nor deleted again.
    bed.refused(
        ErrorKind::NotFound,
        None,
        bed.hub.release_quarantined(&admin(), &sent[0].id, "oops"),
    )
    .await;
}

#[tokio::test]
async fn a_check_that_gets_no_verdict_is_retried_then_quarantines_fail_closed() {
    let bed = bed(Vec::new()).await;
    bed.send("alice", "/outbox/bob/data.csv", b"a,b").await;
    for attempt in 1..=2 {
        let claimed = bed.hub.claim_jobs(10, Duration::seconds(30)).await.unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        let (job, event) = &claimed[0];
        assert_eq!(event.kind, EventKind::Upload);
        bed.hub
            .job_failed(
                job,
                event,
                "clamd at tcp://127.0.0.1:3310: connection refused",
                0.0,
            )
            .await
            .unwrap();
        // Still hidden while it is retried.
        assert!(bed.listing("bob", "/inbox").await.is_empty());
        bed.clock.advance(Duration::minutes(5));
    }
    let jobs = bed.jobs().await;
    assert_eq!(jobs[0].state, JobState::Dead);
    let failed = bed
        .events_of(EventKind::DeliveryQuarantined, Outcome::Failed)
        .await;
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .detail
            .contains("not checked: no verdict after 2 attempt(s): clamd at tcp://127.0.0.1:3310: connection refused"),
        "{}",
        failed[0].detail
    );
    assert_eq!(bed.deliveries().await[0].state, DeliveryState::Quarantined);
}

#[tokio::test]
async fn a_recalled_upload_needs_no_check() {
    let bed = bed(Vec::new()).await;
    let sent = bed.send("alice", "/outbox/bob/oops.txt", b"x").await;
    let batch = checked_batch(&bed).await;
    bed.hub.recall(&client("alice"), &sent[0].id).await.unwrap();
    assert!(bed.hub.check_content(batch).await.unwrap().is_none());
    assert_eq!(bed.hub.finish_check(batch, clean()).await.unwrap(), 0);
    assert_eq!(bed.deliveries().await[0].state, DeliveryState::Recalled);
}
