//! The job queue on the Hub: rules select events by type, account, sender, recipient (an
//! account or the group a file fanned out from), outcome and file name, and each selected
//! event queues one job per handler in the unit that records it (a refused operation queues
//! none); a claimed job is leased; a failure backs off and the last one makes the job dead
//! with a `job.dead` event, which rules may turn into an alert (but a dead alert makes no
//! further alert); the queue's bound turns the overflow dead at once; operators retry and
//! drop jobs, each an audited change, and their refusals change nothing.

use mailroom_core::{
    Clock, ErrorKind, EventKind, Handler, JobState, MetaStore, Outcome, RetryPolicy, Rule, Rules,
};
use time::Duration;

use crate::bed::{Bed, account, admin};

fn rule(name: &str, on: &[EventKind], handlers: &[&str]) -> Rule {
    Rule {
        name: name.to_owned(),
        on: on.to_vec(),
        account: None,
        sender: None,
        recipient: None,
        outcome: None,
        file: None,
        copy_to: Vec::new(),
        handlers: handlers
            .iter()
            .map(|h| Handler::parse(h).unwrap())
            .collect(),
    }
}

const HOOK: &str = "webhook:https://hooks.example.test/mailroom";
const OPS: &str = "email:ops@example.test";

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base: Duration::seconds(10),
        cap: Duration::seconds(60),
    }
}

/// alice may send to bob and to the group `team` (bob, carol), not to dave; `rules` apply.
async fn bed(rules: Vec<Rule>, max_queued: u64) -> Bed {
    let bed = Bed::with_jobs(Rules::new(rules, max_queued).unwrap(), retry());
    bed.clients(&["alice", "bob", "carol", "dave"]).await;
    bed.group("team", &["bob", "carol"]).await;
    bed.allow("alice", "bob").await;
    bed.allow("alice", "team").await;
    bed
}

/// A bed whose one rule sends every delivery to [`HOOK`], the queue bounded at `max_queued`.
async fn hooked(max_queued: u64) -> Bed {
    bed(
        vec![rule("files", &[EventKind::DeliveryDelivered], &[HOOK])],
        max_queued,
    )
    .await
}

#[tokio::test]
async fn a_selected_event_queues_a_job_per_handler_in_its_own_unit() {
    let pdf = Rule {
        recipient: Some(account("bob")),
        file: Some("*.pdf".to_owned()),
        ..rule("pdf-alert", &[EventKind::DeliveryDelivered], &[HOOK, OPS])
    };
    let bed = bed(vec![pdf], 100).await;
    let writes = bed.meta.stats().writes;
    let delivered = bed.send("alice", "/outbox/bob/report.pdf", b"%PDF").await;
    // The jobs came with the upload's own commit: no unit more.
    assert_eq!(bed.meta.stats().writes, writes + 1);
    let jobs = bed.jobs().await;
    assert_eq!(jobs.len(), 2);
    let event = bed
        .events_of(EventKind::DeliveryDelivered, Outcome::Ok)
        .await
        .pop()
        .unwrap();
    assert_eq!(event.object, delivered[0].id.to_string());
    for job in &jobs {
        assert_eq!(
            (job.event, job.state, job.attempts),
            (event.id, JobState::Queued, 0)
        );
        assert_eq!(job.rule, "pdf-alert");
    }
    let mut handlers: Vec<String> = jobs.iter().map(|j| j.handler.target()).collect();
    handlers.sort();
    assert_eq!(handlers, [OPS, HOOK]);
    // Another name, another recipient: not selected.
    bed.send("alice", "/outbox/bob/notes.txt", b"x").await;
    bed.send("alice", "/outbox/team/other.pdf", b"x").await;
    assert_eq!(
        bed.jobs().await.len(),
        2 + 2,
        "bob's copy of the group upload is selected"
    );
}

#[tokio::test]
async fn a_group_selects_the_files_fanned_out_from_it_and_an_account_its_own_events() {
    let team = Rule {
        recipient: Some(account("team")),
        ..rule("team-files", &[EventKind::DeliveryDelivered], &[HOOK])
    };
    let alice = Rule {
        account: Some(account("alice")),
        outcome: Some(Outcome::Refused),
        ..rule("alice-refused", &[EventKind::Upload], &[OPS])
    };
    let bed = bed(vec![team, alice], 100).await;
    bed.send("alice", "/outbox/bob/direct.txt", b"x").await;
    assert!(
        bed.jobs().await.is_empty(),
        "a direct file is not the group's"
    );
    bed.send("alice", "/outbox/team/shared.txt", b"x").await;
    assert_eq!(bed.jobs().await.len(), 2, "one per member's delivery");
    // A refused upload records its refusal, which the second rule selects; it stores no
    // delivery and its refusal makes the only new job.
    let refused = bed.upload("alice", "/outbox/dave/no-route.txt", b"x").await;
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::RouteDenied);
    let jobs = bed.jobs().await;
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[0].rule, "alice-refused");
}

#[tokio::test]
async fn a_failed_job_backs_off_then_dies_with_an_alert_that_cannot_feed_itself() {
    let files = rule("files", &[EventKind::DeliveryDelivered], &[HOOK]);
    let dead = rule("dead-letters", &[EventKind::JobDead], &[OPS]);
    let bed = bed(vec![files, dead], 100).await;
    bed.send("alice", "/outbox/bob/a.txt", b"x").await;
    let lease = Duration::seconds(120);
    let mut attempts = Vec::new();
    for attempt in 1..=3 {
        let claimed = bed.hub.claim_jobs(10, lease).await.unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        let (job, event) = &claimed[0];
        assert_eq!(job.attempts, attempt);
        // Leased: not claimed again meanwhile.
        assert!(bed.hub.claim_jobs(10, lease).await.unwrap().is_empty());
        bed.hub
            .job_failed(job, event, "the receiver answered 500", 0.0)
            .await
            .unwrap();
        let stored = bed.hub.job(job.id).await.unwrap().0;
        attempts.push((stored.state, stored.due - bed.clock.now()));
        bed.clock.advance(Duration::hours(1));
    }
    // Backoff of half the doubling step at jitter 0 (10 s, 20 s), then dead.
    assert_eq!(attempts[0], (JobState::Queued, Duration::seconds(5)));
    assert_eq!(attempts[1], (JobState::Queued, Duration::seconds(10)));
    assert_eq!(attempts[2].0, JobState::Dead);
    let dead_events = bed.events_of(EventKind::JobDead, Outcome::Failed).await;
    assert_eq!(dead_events.len(), 1);
    assert!(
        dead_events[0].detail.contains("the receiver answered 500"),
        "{}",
        dead_events[0].detail
    );
    // The dead letter made one alert job; when it dies too, no alert follows it.
    let (alert, event) = bed.hub.claim_jobs(10, lease).await.unwrap().pop().unwrap();
    assert_eq!(
        (alert.rule.as_str(), event.kind),
        ("dead-letters", EventKind::JobDead)
    );
    let mut current = (alert.clone(), event);
    for _ in 0..3 {
        let (job, event) = &current;
        bed.hub
            .job_failed(job, event, "no mail server", 0.0)
            .await
            .unwrap();
        bed.clock.advance(Duration::hours(1));
        let Some(next) = bed.hub.claim_jobs(10, lease).await.unwrap().pop() else {
            break;
        };
        assert_eq!(next.0.id, alert.id);
        current = next;
    }
    assert_eq!(bed.hub.job(alert.id).await.unwrap().0.state, JobState::Dead);
    assert_eq!(
        bed.events_of(EventKind::JobDead, Outcome::Failed)
            .await
            .len(),
        2
    );
    assert_eq!(bed.jobs().await.len(), 2, "no alert about the dead alert");
}

#[tokio::test]
async fn a_lease_that_runs_out_lets_the_job_run_again_with_its_id() {
    let bed = hooked(100).await;
    bed.send("alice", "/outbox/bob/a.txt", b"x").await;
    let (first, _) = bed
        .hub
        .claim_jobs(1, Duration::seconds(60))
        .await
        .unwrap()
        .pop()
        .unwrap();
    // The worker died: nothing reported. Within the lease nobody takes the job ...
    bed.clock.advance(Duration::seconds(59));
    assert!(
        bed.hub
            .claim_jobs(1, Duration::seconds(60))
            .await
            .unwrap()
            .is_empty()
    );
    // ... after it, the job runs again, the same job (the receiver's idempotency key).
    bed.clock.advance(Duration::seconds(1));
    let (second, _) = bed
        .hub
        .claim_jobs(1, Duration::seconds(60))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!((second.id, second.attempts), (first.id, 2));
    bed.hub.job_done(&second).await.unwrap();
    assert_eq!(bed.hub.job(first.id).await.unwrap().0.state, JobState::Done);
    assert!(
        bed.hub
            .claim_jobs(1, Duration::seconds(60))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_lease_that_runs_out_on_one_node_is_taken_over_by_another() {
    // Two nodes (two Hubs on one store) claim from one queue: a job claimed by A is not
    // claimed by B while A's lease lasts; once it runs out (A died), B takes the same job
    // over, its attempt counted again, and reports it done.
    let bed = hooked(100).await;
    let b = bed.other_process();
    bed.send("alice", "/outbox/bob/a.txt", b"x").await;
    bed.send("alice", "/outbox/bob/b.txt", b"y").await;
    let lease = Duration::seconds(60);
    let (on_a, _) = bed.hub.claim_jobs(1, lease).await.unwrap().pop().unwrap();
    let (other, _) = b.claim_jobs(10, lease).await.unwrap().pop().unwrap();
    assert_ne!(other.id, on_a.id, "B claims the job A does not hold");
    b.job_done(&other).await.unwrap();
    bed.clock.advance(Duration::seconds(59));
    assert!(b.claim_jobs(10, lease).await.unwrap().is_empty());
    bed.clock.advance(Duration::seconds(1));
    let (taken, event) = b.claim_jobs(10, lease).await.unwrap().pop().unwrap();
    assert_eq!((taken.id, taken.attempts), (on_a.id, 2));
    assert_eq!(event.kind, EventKind::DeliveryDelivered);
    assert!(bed.hub.claim_jobs(10, lease).await.unwrap().is_empty());
    b.job_done(&taken).await.unwrap();
    for job in bed.jobs().await {
        assert_eq!(job.state, JobState::Done, "{job:?}");
    }
}

#[tokio::test]
async fn beyond_the_queue_bound_jobs_are_dead_on_arrival_and_say_so() {
    let bed = hooked(2).await;
    for name in ["a", "b", "c"] {
        bed.send("alice", &format!("/outbox/bob/{name}.txt"), b"x")
            .await;
    }
    let counts = bed.hub.job_counts().await.unwrap();
    assert_eq!((counts.queued, counts.dead), (2, 1));
    let dead = bed
        .hub
        .jobs(mailroom_core::JobQuery {
            state: Some(JobState::Dead),
            limit: 10,
        })
        .await
        .unwrap();
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("queue was full")
    );
    assert_eq!(
        bed.events_of(EventKind::JobDead, Outcome::Failed)
            .await
            .len(),
        1
    );
    // The transfers themselves were not refused.
    assert_eq!(bed.deliveries().await.len(), 3);
}

#[tokio::test]
async fn operators_retry_and_drop_jobs_and_their_refusals_change_nothing() {
    let bed = hooked(100).await;
    bed.send("alice", "/outbox/bob/a.txt", b"x").await;
    let lease = Duration::seconds(60);
    let mut claimed = None;
    for _ in 0..3 {
        let (job, event) = bed.hub.claim_jobs(1, lease).await.unwrap().pop().unwrap();
        bed.hub
            .job_failed(&job, &event, "timeout", 0.5)
            .await
            .unwrap();
        bed.clock.advance(Duration::hours(1));
        claimed = Some(job);
    }
    let job = claimed.unwrap();
    assert_eq!(bed.hub.job(job.id).await.unwrap().0.state, JobState::Dead);
    // Retry: queued now, from the first attempt, with an admin event.
    let retried = bed.hub.retry_job(&admin(), job.id).await.unwrap();
    assert_eq!(
        (retried.state, retried.attempts, retried.due),
        (JobState::Queued, 0, bed.clock.now())
    );
    let admin_events = bed.events_of(EventKind::Admin, Outcome::Ok).await;
    assert!(admin_events.last().unwrap().detail.starts_with("retried"));
    let (again, _) = bed.hub.claim_jobs(1, lease).await.unwrap().pop().unwrap();
    assert_eq!(again.id, job.id);
    // Drop: the claimed job is dropped, and its late success does not undo that.
    let dropped = bed.hub.drop_job(&admin(), job.id).await.unwrap();
    assert_eq!(dropped.state, JobState::Dropped);
    bed.hub.job_done(&again).await.unwrap();
    assert_eq!(
        bed.hub.job(job.id).await.unwrap().0.state,
        JobState::Dropped
    );
    // Refusals: dropping twice, retrying a done job, unknown ids.
    bed.refused(
        ErrorKind::Conflict,
        None,
        bed.hub.drop_job(&admin(), job.id),
    )
    .await;
    let unknown = uuid::Uuid::now_v7();
    bed.refused(
        ErrorKind::NotFound,
        None,
        bed.hub.retry_job(&admin(), unknown),
    )
    .await;
    bed.refused(
        ErrorKind::NotFound,
        None,
        bed.hub.drop_job(&admin(), unknown),
    )
    .await;
    bed.send("alice", "/outbox/bob/b.txt", b"x").await;
    let (next, _) = bed.hub.claim_jobs(1, lease).await.unwrap().pop().unwrap();
    bed.hub.job_done(&next).await.unwrap();
    bed.refused(
        ErrorKind::Conflict,
        None,
        bed.hub.retry_job(&admin(), next.id),
    )
    .await;
}

/// alice begins an upload to `to`.
async fn begin(bed: &Bed, to: &str) -> mailroom_core::Result<mailroom_core::Upload> {
    bed.hub
        .begin_upload(&crate::bed::client("alice"), &crate::bed::path(to))
        .await
}

#[tokio::test]
async fn a_transfer_start_is_recorded_only_while_a_rule_selects_it() {
    // No rule on it: an upload's start writes nothing (its begin stays a read).
    let quiet = bed(
        vec![rule("files", &[EventKind::DeliveryDelivered], &[HOOK])],
        100,
    )
    .await;
    let writes = quiet.meta.stats().writes;
    let upload = begin(&quiet, "/outbox/bob/a.txt").await.unwrap();
    assert_eq!(quiet.meta.stats().writes, writes);
    quiet.hub.abort_upload(upload, "test").await;
    assert!(
        quiet
            .events_of(EventKind::TransferStarted, Outcome::Ok)
            .await
            .is_empty()
    );

    // A rule on it: the start is an event with its job, before a byte is stored.
    let watched = bed(
        vec![rule("starts", &[EventKind::TransferStarted], &[OPS])],
        100,
    )
    .await;
    let upload = begin(&watched, "/outbox/team/b.txt").await.unwrap();
    let started = watched
        .events_of(EventKind::TransferStarted, Outcome::Ok)
        .await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].object, "/outbox/team/b.txt");
    assert_eq!(started[0].detail, "alice -> team b.txt");
    let jobs = watched.jobs().await;
    assert_eq!((jobs.len(), jobs[0].event), (1, started[0].id));
    watched.hub.abort_upload(upload, "test").await;
    // A refused start records its refusal, not a start.
    let refused = begin(&watched, "/outbox/dave/c.txt").await;
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(ErrorKind::RouteDenied)
    );
    assert_eq!(
        watched
            .events_of(EventKind::TransferStarted, Outcome::Ok)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_dispatch_rule_copies_a_delivery_in_its_own_commit_and_never_loops() {
    // alice's PDFs to bob are copied to the group team (bob, carol) and to dave; dave's own
    // copy matches a second rule that would copy back to bob, which must not run on a copy.
    let pdfs = Rule {
        sender: Some(account("alice")),
        recipient: Some(account("bob")),
        file: Some("*.pdf".to_owned()),
        copy_to: vec![account("team"), account("dave")],
        ..rule("pdf-copies", &[EventKind::DeliveryDelivered], &[])
    };
    let back = Rule {
        recipient: Some(account("dave")),
        copy_to: vec![account("bob")],
        ..rule("dave-to-bob", &[EventKind::DeliveryDelivered], &[])
    };
    let alerts = rule("every-delivery", &[EventKind::DeliveryDelivered], &[HOOK]);
    let bed = bed(vec![pdfs, back, alerts], 100).await;
    let writes = bed.meta.stats().writes;
    let original = bed
        .send("alice", "/outbox/bob/report.pdf", b"%PDF-1.7")
        .await;
    assert_eq!(
        bed.meta.stats().writes,
        writes + 1,
        "copies ride the upload's commit"
    );
    let mut all: Vec<(String, String, String)> = bed
        .deliveries()
        .await
        .into_iter()
        .map(|d| {
            (
                d.recipient.to_string(),
                d.target.to_string(),
                d.sender.to_string(),
            )
        })
        .collect();
    all.sort();
    // bob has the original (not a second copy through team); carol through team; dave.
    assert_eq!(
        all,
        [
            ("bob".to_owned(), "bob".to_owned(), "alice".to_owned()),
            ("carol".to_owned(), "team".to_owned(), "alice".to_owned()),
            ("dave".to_owned(), "dave".to_owned(), "alice".to_owned()),
        ]
    );
    // Same content: carol downloads the bytes alice sent.
    assert_eq!(
        bed.download("carol", "/inbox/alice/report.pdf").await,
        b"%PDF-1.7"
    );
    // Each copy has its own events, naming the rule and the original, by the system.
    let delivered = bed
        .events_of(EventKind::DeliveryDelivered, Outcome::Ok)
        .await;
    assert_eq!(delivered.len(), 3);
    let copies: Vec<_> = delivered.iter().filter(|e| e.actor == "system").collect();
    assert_eq!(copies.len(), 2);
    for copy in copies {
        let detail = &copy.detail;
        assert!(detail.contains("copied by rule pdf-copies"), "{detail}");
        assert!(detail.contains(&original[0].id.to_string()), "{detail}");
    }
    // Every delivery, copies included, made its job.
    assert_eq!(bed.jobs().await.len(), 3);
    // Not a PDF: no copies.
    bed.send("alice", "/outbox/bob/notes.txt", b"x").await;
    assert_eq!(bed.deliveries().await.len(), 4);
}
