//! Who may send to whom, and what each account may do: route policy (default deny, allows
//! through groups on either side, a deny beats an allow), the recipient's state and right to
//! receive, group fan-out (which members it skips, when it refuses the whole group), the
//! `/outbox` listing, uploads to several targets at once, the send/delete/recall rights, a
//! disabled account's session, and the parts of the tree that are never written. Covers the
//! route and rights scenarios that reached the Hub only through OpenSSH and paramiko.

use mailroom_core::RouteEffect::{self, Allow, Deny};
use mailroom_core::{
    AccountChange, Content, Durability, ErrorKind, EventKind, Group, MAX_TARGETS, MetaStoreExt,
    Outcome, Rights,
};

use crate::bed::{Bed, account, admin, client, data, file, path, recipients};

/// What an upload from alice to the case's target comes to.
#[derive(Debug)]
enum Expect {
    /// Delivered to exactly these accounts.
    Sent(&'static [&'static str]),
    /// Refused with this kind and a message holding this sentence.
    Refused(ErrorKind, &'static str),
}
use Expect::{Refused, Sent};

struct Case {
    what: &'static str,
    groups: &'static [(&'static str, &'static [&'static str])],
    routes: &'static [(&'static str, &'static str, RouteEffect)],
    target: &'static str,
    expect: Expect,
    /// Whether alice's `/outbox` lists the target as a folder she may write to.
    listed: bool,
}

const CASES: &[Case] = &[
    Case {
        what: "no rule: denied by default",
        groups: &[],
        routes: &[],
        target: "bob",
        expect: Refused(
            ErrorKind::RouteDenied,
            "alice may not send to bob: no route allows it",
        ),
        listed: false,
    },
    Case {
        what: "a rule allows the pair",
        groups: &[],
        routes: &[("alice", "bob", Allow)],
        target: "bob",
        expect: Sent(&["bob"]),
        listed: true,
    },
    Case {
        what: "a rule from a group the sender is in",
        groups: &[("senders", &["alice"])],
        routes: &[("senders", "bob", Allow)],
        target: "bob",
        expect: Sent(&["bob"]),
        listed: true,
    },
    Case {
        what: "a rule to a group the target is in",
        groups: &[("team", &["bob", "carol"])],
        routes: &[("alice", "team", Allow)],
        target: "bob",
        expect: Sent(&["bob"]),
        listed: true,
    },
    Case {
        what: "a deny through the sender's group beats an allow",
        groups: &[("senders", &["alice"])],
        routes: &[("alice", "bob", Allow), ("senders", "bob", Deny)],
        target: "bob",
        expect: Refused(ErrorKind::RouteDenied, "no route allows it"),
        listed: false,
    },
    Case {
        what: "a deny through the target's group beats an allow",
        groups: &[("team", &["bob"])],
        routes: &[("alice", "bob", Allow), ("alice", "team", Deny)],
        target: "bob",
        expect: Refused(ErrorKind::RouteDenied, "no route allows it"),
        listed: false,
    },
    Case {
        what: "a disabled recipient",
        groups: &[],
        routes: &[("alice", "erin", Allow)],
        target: "erin",
        expect: Refused(ErrorKind::PermissionDenied, "erin is disabled"),
        listed: false,
    },
    Case {
        what: "a recipient without the right to receive",
        groups: &[],
        routes: &[("alice", "mute", Allow)],
        target: "mute",
        expect: Refused(ErrorKind::RouteDenied, "mute may not receive files"),
        listed: false,
    },
    Case {
        what: "no such account or group",
        groups: &[],
        routes: &[],
        target: "nobody",
        expect: Refused(ErrorKind::NotFound, "no recipient named nobody"),
        listed: false,
    },
    Case {
        what: "an admin account owns no mailbox",
        groups: &[],
        routes: &[],
        target: "root",
        expect: Refused(ErrorKind::NotFound, "no recipient named root"),
        listed: false,
    },
    Case {
        what: "a group reaches every member, though none has a rule of its own",
        groups: &[("team", &["bob", "carol", "dave"])],
        routes: &[("alice", "team", Allow)],
        target: "team",
        expect: Sent(&["bob", "carol", "dave"]),
        listed: true,
    },
    Case {
        what: "a group skips a member denied explicitly",
        groups: &[("team", &["bob", "carol", "dave"])],
        routes: &[("alice", "team", Allow), ("alice", "dave", Deny)],
        target: "team",
        expect: Sent(&["bob", "carol"]),
        listed: true,
    },
    Case {
        what: "a group skips a disabled member",
        groups: &[("team", &["bob", "carol", "erin"])],
        routes: &[("alice", "team", Allow)],
        target: "team",
        expect: Sent(&["bob", "carol"]),
        listed: true,
    },
    Case {
        what: "a group skips an admin member",
        groups: &[("team", &["bob", "root"])],
        routes: &[("alice", "team", Allow)],
        target: "team",
        expect: Sent(&["bob"]),
        listed: true,
    },
    Case {
        what: "a group skips the sender",
        groups: &[("team", &["alice", "bob"])],
        routes: &[("alice", "team", Allow)],
        target: "team",
        expect: Sent(&["bob"]),
        listed: true,
    },
    Case {
        what: "a member without the right to receive refuses the whole group",
        groups: &[("team", &["bob", "carol", "mute"])],
        routes: &[("alice", "team", Allow)],
        target: "team",
        expect: Refused(
            ErrorKind::RouteDenied,
            "mute in group team may not receive files; nothing was sent to the group",
        ),
        listed: true,
    },
    Case {
        what: "a group with nobody left to receive",
        groups: &[("team", &["dave", "erin"])],
        routes: &[("alice", "team", Allow), ("alice", "dave", Deny)],
        target: "team",
        expect: Refused(
            ErrorKind::NotFound,
            "group team has no member who can receive from you",
        ),
        listed: true,
    },
    Case {
        what: "a group needs its own rule, though each member is allowed",
        groups: &[("team", &["bob", "carol"])],
        routes: &[("alice", "bob", Allow), ("alice", "carol", Allow)],
        target: "team",
        expect: Refused(ErrorKind::RouteDenied, "alice may not send to team"),
        listed: false,
    },
    Case {
        what: "a group denied",
        groups: &[("team", &["bob"])],
        routes: &[("alice", "bob", Allow), ("alice", "team", Deny)],
        target: "team",
        expect: Refused(ErrorKind::RouteDenied, "alice may not send to team"),
        listed: false,
    },
];

/// The accounts of every case: clients alice to dave, erin (disabled), mute (may not
/// receive) and root (an admin), then the case's groups and routes.
async fn world(case: &Case) -> Bed {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol", "dave", "erin", "mute"])
        .await;
    bed.admins(&["root"]).await;
    bed.change("erin", disable()).await;
    bed.change("mute", rights(|r| r.receive = false)).await;
    for (name, members) in case.groups {
        if members.contains(&"root") {
            // `add_group` refuses admin members (see the admin tests); a group holding one
            // can only come from the store itself (older data, another tool).
            let group = Group {
                name: account(name),
                members: members.iter().map(|m| account(m)).collect(),
            };
            bed.meta
                .write_with(Durability::Flush, move |tx| tx.insert_group(&group))
                .await
                .unwrap();
        } else {
            bed.group(name, members).await;
        }
    }
    for (from, to, effect) in case.routes {
        bed.route(from, to, *effect).await;
    }
    bed
}

#[tokio::test]
async fn route_policy_decides_who_receives_an_upload() {
    for case in CASES {
        let bed = world(case).await;
        let what = case.what;
        let outbox = bed.listing("alice", "/outbox").await;
        assert_eq!(
            outbox.iter().any(|t| t == case.target),
            case.listed,
            "{what}: /outbox lists {outbox:?}"
        );
        let at = path(&format!("/outbox/{}/case.txt", case.target));
        match case.expect {
            Sent(expected) => {
                let mut upload = bed.hub.begin_upload(&client("alice"), &at).await.unwrap();
                let mut planned: Vec<String> =
                    upload.recipients().iter().map(|r| r.to_string()).collect();
                planned.sort();
                assert_eq!(planned, expected, "{what}: recipients planned at open");
                upload.write_at(0, &data(100, 1)).await.unwrap();
                let deliveries = bed.hub.finish_upload(upload).await.unwrap();
                assert_eq!(recipients(&deliveries), expected, "{what}");
                assert!(
                    deliveries.iter().all(|d| d.target.as_str() == case.target),
                    "{what}: every delivery remembers the folder it was written to"
                );
                assert_eq!(bed.deliveries().await, deliveries, "{what}");
            }
            Refused(kind, message) => {
                let err = bed
                    .refused(
                        kind,
                        Some(EventKind::Upload),
                        bed.hub.begin_upload(&client("alice"), &at),
                    )
                    .await;
                assert!(err.message().contains(message), "{what}: {err}");
                assert!(bed.deliveries().await.is_empty(), "{what}");
            }
        }
    }
}

#[tokio::test]
async fn the_outbox_lists_exactly_the_allowed_targets_and_what_is_pending() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol", "dave", "erin", "mute", "zoe"])
        .await;
    bed.admins(&["root"]).await;
    bed.group("team", &["bob", "carol"]).await;
    bed.group("others", &["dave"]).await;
    bed.change("erin", disable()).await;
    bed.change("mute", rights(|r| r.receive = false)).await;
    for to in ["bob", "team", "erin", "mute", "zoe"] {
        bed.allow("alice", to).await;
    }
    bed.deny("alice", "dave").await;
    // Enabled clients that may receive, and groups, each with an allowing rule: carol through
    // the rule to her group; not erin (disabled), mute (may not receive), dave (denied), the
    // group others (no rule) or root (an admin).
    assert_eq!(
        bed.listing("alice", "/outbox").await,
        ["bob", "carol", "team", "zoe"]
    );
    // Others see their own routes only.
    assert!(bed.listing("bob", "/outbox").await.is_empty());

    // A pending delivery keeps its folder listed after the route goes, so it can be recalled.
    bed.send("alice", "/outbox/zoe/a.txt", b"pending").await;
    bed.hub
        .remove_route(&admin(), &account("alice"), &account("zoe"))
        .await
        .unwrap();
    assert_eq!(
        bed.listing("alice", "/outbox").await,
        ["bob", "carol", "team", "zoe"]
    );
    bed.hub
        .remove(&client("alice"), &path("/outbox/zoe/a.txt"))
        .await
        .unwrap();
    assert_eq!(
        bed.listing("alice", "/outbox").await,
        ["bob", "carol", "team"]
    );
}

#[tokio::test]
async fn each_right_guards_its_own_action_and_a_refusal_changes_nothing() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    bed.allow("bob", "alice").await;
    let first = bed.send("alice", "/outbox/bob/first.txt", b"one").await;
    bed.send("alice", "/outbox/bob/second.txt", b"two").await;
    let (alice, bob) = (client("alice"), client("bob"));

    bed.change("alice", rights(|r| r.send = false)).await;
    let err = bed
        .refused(
            ErrorKind::PermissionDenied,
            Some(EventKind::Upload),
            bed.hub.begin_upload(&alice, &path("/outbox/bob/third.txt")),
        )
        .await;
    assert_eq!(err.message(), "alice may not send files");
    // Renaming is sending under a new name.
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::DeliveryRenamed),
        bed.hub.rename(
            &alice,
            &path("/outbox/bob/first.txt"),
            &path("/outbox/bob/renamed.txt"),
        ),
    )
    .await;
    // Receiving needs no right to send.
    bed.send("bob", "/outbox/alice/back.txt", b"reply").await;

    bed.change("bob", rights(|r| r.delete = false)).await;
    let err = bed
        .refused(
            ErrorKind::PermissionDenied,
            Some(EventKind::DeliveryAcknowledged),
            bed.hub.remove(&bob, &path("/inbox/alice/first.txt")),
        )
        .await;
    assert_eq!(err.message(), "bob may not delete files from the inbox");
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::DeliveryAcknowledged),
        bed.hub.acknowledge(&bob, &first[0].id),
    )
    .await;

    bed.change("alice", rights(|r| r.recall = false)).await;
    let err = bed
        .refused(
            ErrorKind::PermissionDenied,
            Some(EventKind::DeliveryRecalled),
            bed.hub.remove(&alice, &path("/outbox/bob/second.txt")),
        )
        .await;
    assert_eq!(err.message(), "alice may not recall files it sent");
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::DeliveryRecalled),
        bed.hub.recall(&alice, &first[0].id),
    )
    .await;

    // Each right is the account's own: bob, with every right back, acknowledges what alice
    // (who still may not recall) sent him.
    bed.change("bob", rights(|_| ())).await;
    bed.hub
        .remove(&bob, &path("/inbox/alice/first.txt"))
        .await
        .unwrap();
}

/// A disabled account "may do nothing" (the policy cache's own definition), and the Hub
/// refuses a deleted account's session at once: a session of a disabled account, still live
/// until the housekeeping loop closes it, must not send, rename, acknowledge or recall either.
/// (Each of these calls reads the account's policy in its own unit already.)
#[tokio::test]
async fn a_disabled_account_may_do_nothing_more_in_a_session_still_open() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    bed.allow("bob", "alice").await;
    let to_bob = bed
        .send("alice", "/outbox/bob/pending.txt", b"pending")
        .await;
    let to_alice = bed
        .send("bob", "/outbox/alice/inbox.txt", b"for alice")
        .await;
    bed.change("alice", disable()).await;
    let alice = client("alice");
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::Upload),
        bed.hub.begin_upload(&alice, &path("/outbox/bob/new.txt")),
    )
    .await;
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::DeliveryRenamed),
        bed.hub.rename(
            &alice,
            &path("/outbox/bob/pending.txt"),
            &path("/outbox/bob/renamed.txt"),
        ),
    )
    .await;
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::DeliveryAcknowledged),
        bed.hub.remove(&alice, &path("/inbox/bob/inbox.txt")),
    )
    .await;
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::DeliveryAcknowledged),
        bed.hub.acknowledge(&alice, &to_alice[0].id),
    )
    .await;
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::DeliveryRecalled),
        bed.hub.remove(&alice, &path("/outbox/bob/pending.txt")),
    )
    .await;
    bed.refused(
        ErrorKind::PermissionDenied,
        Some(EventKind::DeliveryRecalled),
        bed.hub.recall(&alice, &to_bob[0].id),
    )
    .await;
}

#[tokio::test]
async fn one_upload_to_several_targets_is_checked_target_by_target() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol", "dave"]).await;
    bed.group("team", &["bob", "carol"]).await;
    bed.allow("alice", "bob").await;
    bed.allow("alice", "team").await;
    let alice = client("alice");
    let targets = |names: &[&str]| names.iter().map(|n| account(n)).collect::<Vec<_>>();
    let name = file("report.pdf");
    // One refused target refuses the whole upload.
    bed.refused(
        ErrorKind::RouteDenied,
        Some(EventKind::Upload),
        bed.hub
            .begin_send(&alice, &targets(&["bob", "dave"]), &name, Content::Plain),
    )
    .await;
    // With no target named there is no upload to account for: refused, nothing recorded.
    bed.refused(
        ErrorKind::InvalidName,
        None,
        bed.hub.begin_send(&alice, &[], &name, Content::Plain),
    )
    .await;
    let many = vec![account("bob"); MAX_TARGETS + 1];
    bed.refused(
        ErrorKind::InvalidName,
        Some(EventKind::Upload),
        bed.hub.begin_send(&alice, &many, &name, Content::Plain),
    )
    .await;
    // bob, named alone and through the group, receives one delivery.
    let mut upload = bed
        .hub
        .begin_send(&alice, &targets(&["bob", "team"]), &name, Content::Plain)
        .await
        .unwrap();
    upload.write_at(0, b"%PDF").await.unwrap();
    let sent = bed.hub.finish_upload(upload).await.unwrap();
    let via: Vec<(String, String)> = sent
        .iter()
        .map(|d| (d.recipient.to_string(), d.target.to_string()))
        .collect();
    assert_eq!(
        via,
        [
            ("bob".to_owned(), "bob".to_owned()),
            ("carol".to_owned(), "team".to_owned())
        ]
    );
    let uploads = bed.events_of(EventKind::Upload, Outcome::Ok).await;
    assert_eq!(uploads[0].object, "/outbox/{bob,team}/report.pdf");
}

#[tokio::test]
async fn the_inbox_the_receipts_and_the_folders_are_never_written() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    bed.allow("bob", "alice").await;
    let sent = bed.send("bob", "/outbox/alice/in.txt", b"for alice").await;
    let receipt = format!("/sent/alice/in.txt@{}", sent[0].id.short());
    let alice = client("alice");

    for (at, kind) in [
        ("/inbox/bob/x.txt", ErrorKind::PermissionDenied),
        ("/sent/bob/x.txt", ErrorKind::PermissionDenied),
        ("/outbox/bob", ErrorKind::PermissionDenied),
        ("/outbox", ErrorKind::PermissionDenied),
        ("/", ErrorKind::PermissionDenied),
    ] {
        bed.refused(
            kind,
            Some(EventKind::Upload),
            bed.hub.begin_upload(&alice, &path(at)),
        )
        .await;
    }
    let bob = client("bob");
    for (at, kind, event) in [
        (
            receipt.as_str(),
            ErrorKind::PermissionDenied,
            EventKind::DeliveryAcknowledged,
        ),
        (
            "/inbox/bob",
            ErrorKind::PermissionDenied,
            EventKind::DeliveryAcknowledged,
        ),
        (
            "/inbox/alice/in.txt",
            ErrorKind::NotFound,
            EventKind::DeliveryAcknowledged,
        ),
        (
            "/outbox/alice/nothing.txt",
            ErrorKind::NotFound,
            EventKind::DeliveryRecalled,
        ),
    ] {
        bed.refused(kind, Some(event), bed.hub.remove(&bob, &path(at)))
            .await;
    }
    // The outbox is write-only: the copy is the recipient's.
    let err = bed
        .refused(
            ErrorKind::PermissionDenied,
            None,
            bed.hub.open_read(&bob, &path("/outbox/alice/in.txt")),
        )
        .await;
    assert!(err.message().contains("write-only"), "{err}");
    // A receipt reads as text and is no delivery.
    let text = bed.download("bob", &receipt).await;
    assert!(
        String::from_utf8(text)
            .unwrap()
            .contains("state: delivered")
    );
    for result in [
        bed.hub.make_dir(&path("/outbox/newfolder")),
        bed.hub.make_link(&path("/outbox/alice/link")),
    ] {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::PermissionDenied);
    }
}

/// A change that disables the account.
pub fn disable() -> AccountChange {
    AccountChange {
        disabled: Some(true),
        ..AccountChange::default()
    }
}

/// A change of rights: every right, then `edit`.
pub fn rights(edit: impl FnOnce(&mut Rights)) -> AccountChange {
    let mut rights = Rights::default();
    edit(&mut rights);
    AccountChange {
        rights: Some(rights),
        ..AccountChange::default()
    }
}
