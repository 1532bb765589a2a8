//! Live sessions across the nodes of a cluster: two Hubs built `with_node` on one store are two
//! `mailroom serve` processes. An account's `max_sessions` counts every live node's sessions;
//! every node (and a process that is no node, as the admin CLI) lists them all; a kick made on
//! one node closes the session on the node that holds it at that node's next check; a node
//! whose heartbeat is older than 15 s is dead, and its sessions neither count nor show; a node
//! dead for an hour is forgotten when another starts.

use std::time::Duration as StdDuration;

use mailroom_core::{
    AccountChange, Clock, CoreError, ErrorKind, EventKind, Hub, LiveSession, LiveSessionRecord,
    LoginProgress, LoginStep, MetaStoreExt, Outcome, Protocol, SessionInfo, SessionRef,
};
use time::Duration;

use crate::bed::{Bed, PASSWORD, account, admin, secret};

/// A password login of `user` to `hub` from a fixed address, over SFTP.
async fn login(hub: &Hub, user: &str) -> Option<LiveSession> {
    let mut progress = LoginProgress::default();
    match hub
        .login(
            &mut progress,
            user,
            mailroom_core::Credential::Password(secret(PASSWORD)),
            Some("192.0.2.10:50022".to_owned()),
            Protocol::Sftp,
        )
        .await
        .unwrap()
    {
        LoginStep::Accepted(_, guard) => Some(guard),
        LoginStep::Refused => None,
        LoginStep::Continue(_) => panic!("one factor is enough here"),
    }
}

/// The rows of the store's live sessions.
async fn rows(bed: &Bed) -> Vec<LiveSessionRecord> {
    bed.meta
        .read_with(|tx| tx.live_session_list())
        .await
        .unwrap()
}

/// Lets the tasks that delete dropped sessions' rows run, until `count` rows are left.
async fn rows_settle(bed: &Bed, count: usize) -> Vec<LiveSessionRecord> {
    for _ in 0..100 {
        let now = rows(bed).await;
        if now.len() == count {
            return now;
        }
        tokio::task::yield_now().await;
    }
    panic!("{count} rows expected: {:?}", rows(bed).await);
}

/// Whether the session's guard has fired (without waiting for it).
async fn fired(guard: &mut LiveSession) -> Option<String> {
    tokio::time::timeout(StdDuration::from_millis(20), guard.closed())
        .await
        .ok()
}

/// A bed with alice (password logins, at most `max` sessions) and two nodes that joined.
async fn two_nodes(max: u32) -> (Bed, Hub, Hub) {
    let bed = Bed::new();
    bed.clients_with_password(&["alice", "bob"]).await;
    bed.change(
        "alice",
        AccountChange {
            max_sessions: Some(Some(max)),
            ..AccountChange::default()
        },
    )
    .await;
    let (a, b) = (bed.node("a.example"), bed.node("b.example"));
    assert_eq!(a.join_cluster().await.unwrap(), 0);
    assert_eq!(b.join_cluster().await.unwrap(), 0);
    (bed, a, b)
}

/// The references of the sessions `hub` lists.
async fn listed(hub: &Hub) -> Vec<SessionRef> {
    hub.live_sessions()
        .await
        .unwrap()
        .iter()
        .map(SessionInfo::reference)
        .collect()
}

#[tokio::test]
async fn max_sessions_counts_the_sessions_of_every_node() {
    let (bed, a, b) = two_nodes(2).await;
    let on_a = login(&a, "alice").await.expect("first login, on A");
    let mut on_b = login(&b, "alice").await.expect("second login, on B");
    assert_eq!(rows(&bed).await.len(), 2);

    // A third one, on either node, is refused: the limit holds across the cluster, the
    // refusal says why, and no row is left behind.
    let before = rows(&bed).await;
    for node in [&a, &b] {
        assert!(login(node, "alice").await.is_none());
        assert_eq!(rows(&bed).await, before, "a refused login left a row");
    }
    let refusals = bed.events_of(EventKind::Login, Outcome::Refused).await;
    assert_eq!(refusals.len(), 2);
    for refusal in &refusals {
        assert!(
            refusal.detail.contains("session limit reached (2 open)"),
            "{refusal:?}"
        );
    }
    // Another account is not affected.
    let bobs = login(&b, "bob").await.expect("bob logs in");

    // Every node lists every node's sessions as NODE:ID; so does a process that is no node.
    let expect = {
        let mut all = vec![
            on_a.info().reference(),
            on_b.info().reference(),
            bobs.info().reference(),
        ];
        all.sort_by_key(|r| (r.node, r.id));
        all
    };
    assert!(expect.iter().all(|r| r.node.is_some()));
    assert_eq!(listed(&a).await, expect);
    assert_eq!(listed(&b).await, expect);
    assert_eq!(listed(&bed.hub).await, expect);
    let from_a = a.live_sessions().await.unwrap();
    let alice_on_b = from_a
        .iter()
        .find(|s| s.reference() == on_b.info().reference())
        .unwrap();
    assert_eq!(alice_on_b.account, account("alice"));
    assert_eq!(alice_on_b.protocol, Protocol::Sftp);
    assert_eq!(alice_on_b.source.as_deref(), Some("192.0.2.10:50022"));

    // A session that ends frees its place on every node.
    drop(on_b);
    rows_settle(&bed, 2).await;
    on_b = login(&a, "alice")
        .await
        .expect("room again, on A this time");
    assert_eq!(rows(&bed).await.len(), 3);
    drop((on_a, on_b, bobs));
    rows_settle(&bed, 0).await;
}

#[tokio::test]
async fn a_kick_on_one_node_closes_the_session_at_its_node() {
    let (bed, a, b) = two_nodes(5).await;
    let mut guard = login(&a, "alice").await.unwrap();
    let mut other = login(&a, "alice").await.unwrap();
    let target = guard.info().reference();
    assert_eq!(target.node, a.node().map(|n| n.id));

    // Kicked through B: audited there, at once, and the session is asked to close.
    b.kick_session(&admin(), &target).await.unwrap();
    let closed = bed.events_of(EventKind::SessionClosed, Outcome::Ok).await;
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0].actor, "cli:test");
    assert_eq!(closed[0].object, "alice");
    assert!(
        closed[0].detail.contains(&format!(
            "session {target} (sftp from 192.0.2.10:50022) closed by cli:test"
        )),
        "{closed:?}"
    );
    let row = rows(&bed)
        .await
        .into_iter()
        .find(|s| Some(s.node) == target.node && s.id == target.id)
        .unwrap();
    assert_eq!(row.closing.as_deref(), Some("closed by an administrator"));
    // A closes it at its next check, with the reason, and records nothing more.
    assert_eq!(fired(&mut guard).await, None, "closed before A's check");
    assert_eq!(a.enforce_sessions().await.unwrap(), 1);
    assert_eq!(
        fired(&mut guard).await.as_deref(),
        Some("closed by an administrator")
    );
    assert_eq!(fired(&mut other).await, None, "the other session runs on");
    assert_eq!(
        bed.events_of(EventKind::SessionClosed, Outcome::Ok)
            .await
            .len(),
        1
    );
    // Closed once: the next check has nothing to do, until the front end drops it.
    assert_eq!(a.enforce_sessions().await.unwrap(), 0);
    drop(guard);
    rows_settle(&bed, 1).await;

    // Refused, changing nothing: a session that is not live, on A or on no node known, and a
    // plain id on a node that has no such session of its own.
    let node = target.node;
    for (from, missing) in [
        (&b, SessionRef { node, id: 99 }),
        (
            &b,
            SessionRef {
                node: Some(mailroom_core::NodeId::new()),
                id: 1,
            },
        ),
        (&b, SessionRef { node: None, id: 2 }),
        (&bed.hub, SessionRef { node: None, id: 2 }),
    ] {
        let before = rows(&bed).await;
        let err: CoreError = bed
            .refused(
                ErrorKind::NotFound,
                None,
                from.kick_session(&admin(), &missing),
            )
            .await;
        assert!(err.message().contains("no live session"), "{err}");
        assert_eq!(rows(&bed).await, before);
    }

    // On its own node a plain id still names the session, and closes it at once.
    let plain = SessionRef {
        node: None,
        id: other.info().id,
    };
    a.kick_session(&admin(), &plain).await.unwrap();
    assert_eq!(
        fired(&mut other).await.as_deref(),
        Some("closed by an administrator")
    );
    // So does a process that is no node, through the store, given NODE:ID.
    let mut third = login(&a, "alice").await.unwrap();
    bed.hub
        .kick_session(&admin(), &third.info().reference())
        .await
        .unwrap();
    a.enforce_sessions().await.unwrap();
    assert_eq!(
        fired(&mut third).await.as_deref(),
        Some("closed by an administrator")
    );
}

#[tokio::test]
async fn a_disable_made_anywhere_closes_the_session_at_its_node() {
    let (bed, a, b) = two_nodes(5).await;
    let mut guard = login(&a, "alice").await.unwrap();
    b.set_disabled(&admin(), &account("alice"), true)
        .await
        .unwrap();
    assert_eq!(a.enforce_sessions().await.unwrap(), 1);
    assert_eq!(fired(&mut guard).await.as_deref(), Some("account disabled"));
    let closed = bed.events_of(EventKind::SessionClosed, Outcome::Ok).await;
    assert_eq!(closed.len(), 1);
    assert!(
        closed[0]
            .detail
            .contains("closed by the hub: account disabled")
    );
    drop(guard);
    rows_settle(&bed, 0).await;
}

#[tokio::test]
async fn a_dead_nodes_sessions_neither_count_nor_show() {
    let (bed, a, b) = two_nodes(1).await;
    let on_a = login(&a, "alice").await.unwrap();
    assert!(login(&b, "alice").await.is_none(), "the limit is one");

    // A stops beating (a crash, a partition); B beats on.
    bed.clock.advance(Duration::seconds(16));
    b.enforce_sessions().await.unwrap();
    let dead = on_a.info().reference();
    assert!(
        !listed(&b).await.contains(&dead),
        "a dead node's session is listed"
    );
    let on_b = login(&b, "alice")
        .await
        .expect("a dead node's session counted");
    // It cannot be kicked: it is not live.
    bed.refused(ErrorKind::NotFound, None, b.kick_session(&admin(), &dead))
        .await;
    let nodes = bed.hub.nodes().await.unwrap();
    let now = bed.clock.now();
    let alive: Vec<bool> = [a.node(), b.node()]
        .iter()
        .map(|node| {
            nodes
                .iter()
                .find(|n| n.node.id == node.unwrap().id)
                .unwrap()
                .alive(now)
        })
        .collect();
    assert_eq!(alive, [false, true]);

    // A beats again: alive, its session counts and shows again.
    a.enforce_sessions().await.unwrap();
    assert_eq!(listed(&b).await.len(), 2);
    assert!(login(&b, "bob").await.is_some(), "bob has no limit");

    // Dead for more than an hour, both are forgotten with their sessions when a node starts.
    bed.clock.advance(Duration::hours(2));
    let c = bed.node("c.example");
    assert_eq!(c.join_cluster().await.unwrap(), 2);
    let nodes = bed.hub.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(Some(nodes[0].node.id), c.node().map(|n| n.id));
    assert!(rows(&bed).await.is_empty());
    drop((on_a, on_b));
    // A node that stops cleanly leaves with its sessions.
    let _on_c = login(&c, "alice").await.unwrap();
    c.leave_cluster().await.unwrap();
    assert!(bed.hub.nodes().await.unwrap().is_empty());
    assert!(rows(&bed).await.is_empty());
}

#[tokio::test]
async fn a_nodes_check_beats_and_deletes_rows_it_no_longer_holds() {
    let bed = Bed::new();
    bed.clients_with_password(&["alice"]).await;
    let a = bed.node("a.example");
    a.join_cluster().await.unwrap();
    let guard = login(&a, "alice").await.unwrap();
    // A row of A's that A does not hold (a login cut short after its unit committed).
    let node = a.node().unwrap().id;
    let stray = LiveSessionRecord {
        node,
        id: 999,
        account: account("alice"),
        protocol: Protocol::Sftp,
        source: None,
        started: bed.clock.now(),
        closing: None,
    };
    bed.meta
        .write_with(mailroom_core::Durability::Flush, move |tx| {
            tx.insert_live_session(&stray, None, bed_epoch()).map(drop)
        })
        .await
        .unwrap();
    bed.clock.advance(Duration::seconds(5));
    assert_eq!(a.enforce_sessions().await.unwrap(), 0);
    let left = rows(&bed).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, guard.info().id);
    let nodes = bed.hub.nodes().await.unwrap();
    assert_eq!(
        nodes[0].heartbeat,
        bed.clock.now(),
        "the check is the heartbeat"
    );
    // Without a node nothing of this is stored.
    let alone = login(&bed.hub, "alice").await.unwrap();
    assert_eq!(alone.info().node, None);
    assert_eq!(rows(&bed).await.len(), 1);
}

/// A time before anything in the bed.
fn bed_epoch() -> time::OffsetDateTime {
    crate::bed::T0 - Duration::days(1)
}
