//! The defender across nodes: two Hubs on one `MemoryMeta` are two nodes of one cluster. The
//! scores live in the store, so offences seen by either node add up to one score; the unit
//! that records a refusal adds its offences, sums them and bans at the threshold; the ban
//! holds on the other node once its ban cache is refreshed (at most 2 s). Refusals for a ban, a
//! lock or the session limit, and anything from the safe list, score nothing; an unban
//! forgets the score; old offences stop counting and go, and the offences kept are bounded.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mailroom_core::{
    AccountChange, AuthConfig, Ban, BanSubject, Clock, Credential, DefenderConfig, ErrorKind,
    EventKind, Hub, LoginProgress, LoginStep, MetaStore, MetaStoreExt, Outcome, Protocol,
    StoreStats,
};
use time::Duration;

use crate::bed::{Bed, PASSWORD, T0, account, admin, secret};

/// The attacker's address.
const ATTACKER: &str = "203.0.113.9";

/// A threshold small enough to count by hand.
const THRESHOLD: u32 = 4;

/// The defender's settings of both nodes: a ban at [`THRESHOLD`] points in 30 minutes.
fn auth(configure: impl Fn(&mut DefenderConfig)) -> AuthConfig {
    let mut defender = DefenderConfig {
        threshold: THRESHOLD,
        ..DefenderConfig::default()
    };
    configure(&mut defender);
    AuthConfig {
        defender,
        ..AuthConfig::default()
    }
}

/// A bed whose Hub is node A, and node B on the same stores and clock, both with `config`.
fn two_nodes(config: &AuthConfig) -> (Bed, Hub) {
    let bed = Bed::new();
    let a =
        Hub::new(bed.meta.clone(), bed.blobs.clone(), bed.clock.clone()).with_auth(config.clone());
    let b = bed.other_process().with_auth(config.clone());
    (
        Bed {
            hub: Arc::new(a),
            ..bed
        },
        b,
    )
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn address(text: &str) -> BanSubject {
    BanSubject::Address(ip(text))
}

fn locked(name: &str) -> BanSubject {
    BanSubject::Account(account(name))
}

fn peer(from: &str) -> SocketAddr {
    SocketAddr::new(ip(from), 50022)
}

/// One password login step of `user` from `from` over SFTP.
async fn login(node: &Hub, user: &str, password: &str, from: &str) -> LoginStep {
    node.login(
        &mut LoginProgress::default(),
        user,
        Credential::Password(secret(password)),
        Some(peer(from).to_string()),
        Protocol::Sftp,
    )
    .await
    .unwrap()
}

/// A wrong password for `user` from `from`, which must be refused.
async fn wrong(node: &Hub, user: &str, from: &str) {
    let step = login(node, user, "not-the-password-at-all", from).await;
    assert!(matches!(step, LoginStep::Refused), "{step:?}");
}

/// `subject`'s score in the store over the last 30 minutes.
async fn score(bed: &Bed, subject: &BanSubject) -> u64 {
    let (subject, since) = (subject.clone(), bed.clock.now() - Duration::minutes(30));
    bed.meta
        .read_with(move |tx| tx.offence_score(&subject, since))
        .await
        .unwrap()
}

/// Every ban in the store, by subject.
async fn bans(bed: &Bed) -> Vec<Ban> {
    bed.hub.bans().await.unwrap()
}

/// What the store did between two readings: (reads, writes, flushes).
fn cost(before: StoreStats, after: StoreStats) -> (u64, u64, u64) {
    (
        after.reads - before.reads,
        after.writes - before.writes,
        after.flushes - before.flushes,
    )
}

#[tokio::test]
async fn wrong_passwords_split_over_two_nodes_ban_on_both() {
    let (bed, b) = two_nodes(&auth(|_| {}));
    let a = bed.hub.clone();
    bed.clients_with_password(&["alice", "bob"]).await;
    // Both nodes have read the bans (none) at T0: their caches are fresh until T0 + 2 s.
    a.admit(peer(ATTACKER), Protocol::Sftp).await.unwrap();
    b.admit(peer(ATTACKER), Protocol::Sftp).await.unwrap();

    // Three wrong passwords, A, B, A: each node has seen two at most, below the threshold
    // of either, and the store has counted three against the address and the account.
    for node in [&*a, &b, &*a] {
        wrong(node, "alice", ATTACKER).await;
    }
    assert_eq!(bans(&bed).await, Vec::<Ban>::new());
    assert_eq!(score(&bed, &address(ATTACKER)).await, 3);
    assert_eq!(score(&bed, &locked("alice")).await, 3);

    // The fourth, on B (which has seen two), reaches the threshold over both nodes: the
    // refusal, both offences and both bans are one relaxed unit after the login's read.
    let events_before = bed.events().await.len();
    let before = bed.meta.stats();
    wrong(&b, "alice", ATTACKER).await;
    assert_eq!(cost(before, bed.meta.stats()), (1, 1, 0));
    let placed = bans(&bed).await;
    assert_eq!(
        placed.iter().map(|b| b.subject.clone()).collect::<Vec<_>>(),
        [address(ATTACKER), locked("alice")]
    );
    for ban in &placed {
        assert_eq!(ban.level, 1);
        assert_eq!(ban.reason, "4 points in 30 min");
        assert_eq!(ban.until, T0 + Duration::minutes(30));
    }
    let events = bed.events().await;
    let new: Vec<_> = events[events_before..]
        .iter()
        .map(|e| (e.kind, e.outcome, e.actor.as_str(), e.object.as_str()))
        .collect();
    assert_eq!(
        new,
        [
            (EventKind::Login, Outcome::Refused, "alice", "alice"),
            (EventKind::Ban, Outcome::Ok, "system", ATTACKER),
            (EventKind::Ban, Outcome::Ok, "system", "account:alice"),
        ]
    );
    // Banned, the subjects' scores start again from nothing.
    assert_eq!(score(&bed, &address(ATTACKER)).await, 0);
    assert_eq!(score(&bed, &locked("alice")).await, 0);

    // B, which placed the ban, refuses the address at once; A's cache is at most 2 s old,
    // so A refuses it 2 s later, without a query per connection.
    let refused = b.admit(peer(ATTACKER), Protocol::Sftp).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied);
    assert!(
        refused.message().starts_with("address banned until "),
        "{refused}"
    );
    bed.clock.advance(Duration::seconds(2));
    let refused = a.admit(peer(ATTACKER), Protocol::Sftp).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied);
    // The account is locked on both nodes, from any address; bob is not.
    for node in [&*a, &b] {
        let step = login(node, "alice", PASSWORD, "198.51.100.1").await;
        assert!(matches!(step, LoginStep::Refused), "{step:?}");
        let step = login(node, "bob", PASSWORD, "198.51.100.1").await;
        assert!(matches!(step, LoginStep::Accepted(..)), "{step:?}");
    }
    // Refusals for a lock score nothing.
    assert_eq!(score(&bed, &address("198.51.100.1")).await, 0);
    assert_eq!(bans(&bed).await, placed);
}

#[tokio::test]
async fn connections_that_never_log_in_and_protocol_errors_count_over_both_nodes() {
    let (bed, b) = two_nodes(&auth(|_| {}));
    let a = bed.hub.clone();
    let source = Some(peer(ATTACKER).to_string());
    // Each is one relaxed unit: no flush, and the refusal's event in the same unit.
    let before = bed.meta.stats();
    a.score_unauthenticated(source.clone()).await.unwrap();
    assert_eq!(cost(before, bed.meta.stats()), (0, 1, 0));
    let before = bed.meta.stats();
    b.record_login_refusal(
        "-",
        "protocol error: bad packet",
        source.clone(),
        Protocol::Sftp,
    )
    .await
    .unwrap();
    assert_eq!(cost(before, bed.meta.stats()), (0, 1, 0));
    a.score_unauthenticated(source.clone()).await.unwrap();
    assert_eq!(bans(&bed).await, Vec::<Ban>::new());
    assert_eq!(score(&bed, &address(ATTACKER)).await, 3);
    b.score_unauthenticated(source.clone()).await.unwrap();
    let placed = bans(&bed).await;
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].subject, address(ATTACKER));
    assert!(b.admit(peer(ATTACKER), Protocol::Sftp).await.is_err());
    assert!(a.admit(peer(ATTACKER), Protocol::Sftp).await.is_err());

    // Without an address, nothing is scored and nothing is written.
    let before = bed.meta.stats();
    a.score_unauthenticated(None).await.unwrap();
    a.score_unauthenticated(Some("not an address".to_owned()))
        .await
        .unwrap();
    assert_eq!(cost(before, bed.meta.stats()), (0, 0, 0));
}

#[tokio::test]
async fn the_safe_list_locks_and_the_session_limit_score_nothing() {
    const OFFICE: &str = "192.0.2.10";
    let (bed, b) = two_nodes(&auth(|d| d.safe = vec!["192.0.2.0/24".parse().unwrap()]));
    let a = bed.hub.clone();
    bed.clients_with_password(&["alice", "bob"]).await;

    // From the safe list: neither the address nor the account is scored, on either node.
    for node in [&*a, &b, &*a, &b, &*a, &b] {
        wrong(node, "alice", OFFICE).await;
    }
    let before = bed.meta.stats();
    b.score_unauthenticated(Some(peer(OFFICE).to_string()))
        .await
        .unwrap();
    assert_eq!(cost(before, bed.meta.stats()), (0, 0, 0), "not even a unit");
    assert_eq!(score(&bed, &address(OFFICE)).await, 0);
    assert_eq!(score(&bed, &locked("alice")).await, 0);
    assert_eq!(bans(&bed).await, Vec::<Ban>::new());

    // A locked account: its refusals score nothing (neither the address nor the account).
    a.ban(
        &admin(),
        locked("alice"),
        std::time::Duration::from_secs(600),
        "",
    )
    .await
    .unwrap();
    // B reads it within 2 s.
    bed.clock.advance(Duration::seconds(2));
    for node in [&*a, &b, &*a, &b, &*a] {
        wrong(node, "alice", ATTACKER).await;
    }
    assert_eq!(score(&bed, &address(ATTACKER)).await, 0);
    assert_eq!(score(&bed, &locked("alice")).await, 0);

    // The session limit is not the client's fault: no score.
    bed.change(
        "bob",
        AccountChange {
            max_sessions: Some(Some(1)),
            ..AccountChange::default()
        },
    )
    .await;
    let LoginStep::Accepted(_, _held) = login(&a, "bob", PASSWORD, ATTACKER).await else {
        panic!("bob's first session");
    };
    for node in [&*a, &*a, &*a, &*a] {
        let step = login(node, "bob", PASSWORD, ATTACKER).await;
        assert!(matches!(step, LoginStep::Refused), "{step:?}");
    }
    assert_eq!(score(&bed, &address(ATTACKER)).await, 0);
    assert_eq!(score(&bed, &locked("bob")).await, 0);
    assert_eq!(bans(&bed).await.len(), 1, "alice's lock only");
}

#[tokio::test]
async fn an_unban_forgets_the_score_and_repeat_bans_grow() {
    let (bed, b) = two_nodes(&auth(|_| {}));
    let a = bed.hub.clone();
    // An unknown account scores 2 against the address (and no account).
    wrong(&a, "ghost", ATTACKER).await;
    assert_eq!(score(&bed, &address(ATTACKER)).await, 2);
    // An administrator bans the address by hand and lifts the ban on the other node: the
    // score goes with it, so the next attempt does not ban.
    b.ban(
        &admin(),
        address(ATTACKER),
        std::time::Duration::from_secs(60),
        "",
    )
    .await
    .unwrap();
    assert_eq!(
        score(&bed, &address(ATTACKER)).await,
        2,
        "a manual ban keeps it"
    );
    b.unban(&admin(), &address(ATTACKER)).await.unwrap();
    assert_eq!(score(&bed, &address(ATTACKER)).await, 0);
    bed.clock.advance(Duration::seconds(2));
    wrong(&a, "ghost", ATTACKER).await;
    assert_eq!(bans(&bed).await, Vec::<Ban>::new());

    // Banned (level 1) by the next attempt, on the other node.
    wrong(&b, "ghost", ATTACKER).await;
    let first = bans(&bed).await;
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].level, first[0].until),
        (1, bed.clock.now() + Duration::minutes(30))
    );

    // Once it has ended, two attempts ban it again, half as long again (level 2).
    bed.clock.advance(Duration::minutes(31));
    wrong(&a, "ghost", ATTACKER).await;
    wrong(&b, "ghost", ATTACKER).await;
    let second = bans(&bed).await;
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].level, second[0].until),
        (2, bed.clock.now() + Duration::minutes(45))
    );
}

#[tokio::test]
async fn old_offences_stop_counting_and_go() {
    let (bed, b) = two_nodes(&auth(|_| {}));
    let a = bed.hub.clone();
    let source = Some(peer(ATTACKER).to_string());
    for node in [&*a, &b, &*a] {
        node.score_unauthenticated(source.clone()).await.unwrap();
    }
    // 31 minutes later the three are out of the window: one more does not ban, and the unit
    // that added it pruned them.
    bed.clock.advance(Duration::minutes(31));
    b.score_unauthenticated(source.clone()).await.unwrap();
    assert_eq!(bans(&bed).await, Vec::<Ban>::new());
    assert_eq!(score(&bed, &address(ATTACKER)).await, 1);
    let since = T0 - Duration::days(1);
    let subject = address(ATTACKER);
    let all = bed
        .meta
        .read_with(move |tx| tx.offence_score(&subject, since))
        .await
        .unwrap();
    assert_eq!(all, 1, "the old offences are gone");
}

#[tokio::test]
async fn the_offences_kept_are_bounded() {
    // A flood of addresses, each offending once: the store keeps the newest `max_tracked`.
    let (bed, b) = two_nodes(&auth(|d| d.max_tracked = 10));
    let a = bed.hub.clone();
    let addresses: Vec<String> = (1..=50).map(|i| format!("198.51.100.{i}")).collect();
    for (i, from) in addresses.iter().enumerate() {
        let node = if i % 2 == 0 { &*a } else { &b };
        node.score_unauthenticated(Some(peer(from).to_string()))
            .await
            .unwrap();
    }
    let mut kept = Vec::new();
    for from in &addresses {
        if score(&bed, &address(from)).await > 0 {
            kept.push(from.clone());
        }
    }
    assert_eq!(kept, addresses[40..]);
}
