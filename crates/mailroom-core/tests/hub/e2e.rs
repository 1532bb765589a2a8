//! End-to-end encryption keys: an account's age X25519 recipients added, listed and removed
//! (each change one unit with its `admin` event), every refusal with its error and nothing
//! changed (no event either), and what a sender learns of a recipient's keys: for an account
//! its own, for a group every member an upload would reach, each labelled, and for a
//! recipient it may not send to exactly the refusal that upload would get. Then the uploads
//! that use them: end-to-end content goes only to recipients with keys, must look like an
//! age file, is delivered unscanned and marked so; a route may require it.

use age::secrecy::ExposeSecret;
use mailroom_core::{
    AccountChange, Content, DeliveryState, E2eKey, ErrorKind, EventKind, MAX_E2E_COMMENT,
    MAX_E2E_KEYS, Outcome, RecipientE2eKeys, RetryPolicy, Rights, Route, RouteEffect, Rules,
};

use crate::bed::{Bed, T0, account, admin, client, file};

/// A fresh age X25519 recipient, `age1…`.
fn recipient() -> String {
    age::x25519::Identity::generate().to_public().to_string()
}

/// The detail of every `admin` event so far, in order.
async fn admin_details(bed: &Bed) -> Vec<(String, String)> {
    bed.events_of(EventKind::Admin, Outcome::Ok)
        .await
        .into_iter()
        .map(|e| (e.object, e.detail))
        .collect()
}

#[tokio::test]
async fn keys_are_added_listed_and_removed_with_their_events() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    let (laptop, desk) = (recipient(), recipient());

    let added = bed
        .hub
        .add_e2e_key(&admin(), &account("alice"), &laptop, "laptop")
        .await
        .unwrap();
    assert_eq!(
        added,
        E2eKey {
            recipient: laptop.clone(),
            comment: "laptop".to_owned(),
            added: T0,
        }
    );
    assert_eq!(added.fingerprint().len(), 16);
    bed.clock.advance(time::Duration::seconds(5));
    // White space around it and upper case are the same recipient, stored canonically.
    let second = bed
        .hub
        .add_e2e_key(
            &admin(),
            &account("alice"),
            &format!(" {}\n", desk.to_uppercase()),
            "",
        )
        .await
        .unwrap();
    assert_eq!(second.recipient, desk);
    assert_eq!(second.added, T0 + time::Duration::seconds(5));

    // In the order added; the account as stored holds them, beside its SSH keys.
    let listed = bed.hub.e2e_keys(&account("alice")).await.unwrap();
    assert_eq!(listed, vec![added.clone(), second.clone()]);
    assert_eq!(bed.account("alice").await.e2e_keys, listed);
    assert!(bed.account("alice").await.keys.is_empty());
    assert!(bed.hub.e2e_keys(&account("bob")).await.unwrap().is_empty());

    // Removed by fingerprint (either case), then by recipient.
    let removed = bed
        .hub
        .remove_e2e_key(
            &admin(),
            &account("alice"),
            &added.fingerprint().to_uppercase(),
        )
        .await
        .unwrap();
    assert_eq!(removed, added);
    assert_eq!(
        bed.hub.e2e_keys(&account("alice")).await.unwrap(),
        vec![second.clone()]
    );
    let removed = bed
        .hub
        .remove_e2e_key(&admin(), &account("alice"), &desk)
        .await
        .unwrap();
    assert_eq!(removed, second);
    assert!(
        bed.hub
            .e2e_keys(&account("alice"))
            .await
            .unwrap()
            .is_empty()
    );

    // One event per change, by the actor, naming the account and the fingerprint.
    let details = admin_details(&bed).await;
    let ours: Vec<_> = details
        .iter()
        .filter(|(_, detail)| detail.contains("e2e key"))
        .cloned()
        .collect();
    let object = "account alice".to_owned();
    assert_eq!(
        ours,
        vec![
            (
                object.clone(),
                format!("add e2e key {}", added.fingerprint())
            ),
            (
                object.clone(),
                format!("add e2e key {}", second.fingerprint())
            ),
            (
                object.clone(),
                format!("remove e2e key {}", added.fingerprint())
            ),
            (object, format!("remove e2e key {}", second.fingerprint())),
        ]
    );
    let events = bed.events().await;
    let last = events.last().unwrap();
    assert_eq!(last.actor, admin().name);
}

#[tokio::test]
async fn a_client_manages_its_own_keys_as_itself() {
    let bed = Bed::new();
    bed.clients(&["alice"]).await;
    let me = client("alice");
    let actor = mailroom_core::Actor {
        name: me.account.to_string(),
        source: Some("192.0.2.7:50000".to_owned()),
        protocol: mailroom_core::Protocol::Https,
    };
    let key = bed
        .hub
        .add_e2e_key(&actor, &me.account, &recipient(), "phone")
        .await
        .unwrap();
    let event = bed.events().await.pop().unwrap();
    assert_eq!(
        (event.actor.as_str(), event.source.as_deref(), event.detail),
        (
            "alice",
            Some("192.0.2.7:50000"),
            format!("add e2e key {}", key.fingerprint())
        )
    );
}

#[tokio::test]
async fn refusals_change_nothing_and_record_nothing() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.admins(&["root"]).await;
    let held = recipient();
    bed.hub
        .add_e2e_key(&admin(), &account("alice"), &held, "laptop")
        .await
        .unwrap();
    let identity = age::x25519::Identity::generate();
    let secret = identity.to_string().expose_secret().to_owned();
    let fresh = recipient();
    let cases: Vec<(&str, &str, String, String, ErrorKind)> = vec![
        (
            "an empty recipient",
            "alice",
            String::new(),
            String::new(),
            ErrorKind::InvalidName,
        ),
        (
            "a recipient cut short",
            "alice",
            fresh[..40].to_owned(),
            String::new(),
            ErrorKind::InvalidName,
        ),
        (
            "an identity (the private key) instead of a recipient",
            "alice",
            secret.clone(),
            String::new(),
            ErrorKind::InvalidName,
        ),
        (
            "an SSH key",
            "alice",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                .to_owned(),
            String::new(),
            ErrorKind::InvalidName,
        ),
        (
            "a comment too long",
            "alice",
            fresh.clone(),
            "x".repeat(MAX_E2E_COMMENT + 1),
            ErrorKind::InvalidName,
        ),
        (
            "a comment with a line break",
            "alice",
            fresh.clone(),
            "laptop\nadmin: yes".to_owned(),
            ErrorKind::InvalidName,
        ),
        (
            "a recipient it already has",
            "alice",
            held.clone(),
            "again".to_owned(),
            ErrorKind::Conflict,
        ),
        (
            "a recipient it already has, in upper case",
            "alice",
            held.to_uppercase(),
            String::new(),
            ErrorKind::Conflict,
        ),
        (
            "an unknown account",
            "ghost",
            fresh.clone(),
            String::new(),
            ErrorKind::NotFound,
        ),
        (
            "an admin account",
            "root",
            fresh.clone(),
            String::new(),
            ErrorKind::PermissionDenied,
        ),
    ];
    for (what, who, recipient, comment, kind) in cases {
        let err = bed
            .refused(
                kind,
                None,
                bed.hub
                    .add_e2e_key(&admin(), &account(who), &recipient, &comment),
            )
            .await;
        // A pasted identity is never echoed back (nor logged with the error).
        assert!(!err.message().contains(&secret), "{what}: {err}");
        assert!(!err.message().contains("AGE-SECRET-KEY"), "{what}: {err}");
    }

    let fingerprint = E2eKey::new(&fresh, "", T0).unwrap().fingerprint();
    for (who, wanted, kind) in [
        ("alice", fresh.as_str(), ErrorKind::NotFound),
        ("alice", fingerprint.as_str(), ErrorKind::NotFound),
        ("alice", "", ErrorKind::NotFound),
        ("alice", secret.as_str(), ErrorKind::NotFound),
        ("bob", held.as_str(), ErrorKind::NotFound),
        ("ghost", held.as_str(), ErrorKind::NotFound),
        ("root", held.as_str(), ErrorKind::PermissionDenied),
    ] {
        let err = bed
            .refused(
                kind,
                None,
                bed.hub.remove_e2e_key(&admin(), &account(who), wanted),
            )
            .await;
        assert!(!err.message().contains("AGE-SECRET-KEY"), "{err}");
    }
    bed.refused(
        ErrorKind::NotFound,
        None,
        bed.hub.e2e_keys(&account("ghost")),
    )
    .await;
    assert_eq!(
        bed.hub.e2e_keys(&account("alice")).await.unwrap().len(),
        1,
        "the key held before is still there"
    );
}

#[tokio::test]
async fn an_account_holds_at_most_sixteen_keys() {
    let bed = Bed::new();
    bed.clients(&["alice"]).await;
    for n in 0..MAX_E2E_KEYS {
        bed.hub
            .add_e2e_key(
                &admin(),
                &account("alice"),
                &recipient(),
                &format!("key {n}"),
            )
            .await
            .unwrap();
    }
    let err = bed
        .refused(
            ErrorKind::QuotaExceeded,
            None,
            bed.hub
                .add_e2e_key(&admin(), &account("alice"), &recipient(), "one more"),
        )
        .await;
    assert!(err.message().contains("16"), "{err}");
    // A duplicate is still a duplicate when the list is full.
    let first = bed.hub.e2e_keys(&account("alice")).await.unwrap()[0].clone();
    bed.refused(
        ErrorKind::Conflict,
        None,
        bed.hub
            .add_e2e_key(&admin(), &account("alice"), &first.recipient, ""),
    )
    .await;
    // Room again once one goes.
    bed.hub
        .remove_e2e_key(&admin(), &account("alice"), &first.fingerprint())
        .await
        .unwrap();
    bed.hub
        .add_e2e_key(&admin(), &account("alice"), &recipient(), "replacement")
        .await
        .unwrap();
    assert_eq!(
        bed.hub.e2e_keys(&account("alice")).await.unwrap().len(),
        MAX_E2E_KEYS
    );
}

/// Adds `count` fresh keys to `who` and returns them.
async fn keys_of(bed: &Bed, who: &str, count: usize) -> Vec<E2eKey> {
    let mut keys = Vec::new();
    for n in 0..count {
        keys.push(
            bed.hub
                .add_e2e_key(&admin(), &account(who), &recipient(), &format!("{who} {n}"))
                .await
                .unwrap(),
        );
    }
    keys
}

fn labelled(who: &str, keys: &[E2eKey]) -> RecipientE2eKeys {
    RecipientE2eKeys {
        account: account(who),
        keys: keys.to_vec(),
    }
}

#[tokio::test]
async fn a_sender_gets_the_keys_of_whoever_its_upload_would_reach() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol", "dave", "erin", "sam"])
        .await;
    bed.group("team", &["alice", "bob", "carol", "dave", "sam"])
        .await;
    let alice = keys_of(&bed, "alice", 2).await;
    let bob = keys_of(&bed, "bob", 1).await;
    keys_of(&bed, "dave", 1).await;
    let sam = keys_of(&bed, "sam", 1).await;
    bed.allow("sam", "team").await;
    bed.allow("sam", "alice").await;
    // A member the sender is denied, and a disabled member, get nothing of an upload to the
    // group: nor are their keys listed. carol registered none: listed with none.
    bed.deny("sam", "dave").await;
    bed.change(
        "erin",
        AccountChange {
            disabled: Some(true),
            ..AccountChange::default()
        },
    )
    .await;
    bed.hub
        .add_member(&admin(), &account("team"), &account("erin"))
        .await
        .unwrap();

    let to_account = bed
        .hub
        .recipient_e2e_keys(&client("sam"), &account("alice"))
        .await
        .unwrap();
    assert_eq!(to_account, vec![labelled("alice", &alice)]);

    let to_group = bed
        .hub
        .recipient_e2e_keys(&client("sam"), &account("team"))
        .await
        .unwrap();
    assert_eq!(
        to_group,
        vec![
            labelled("alice", &alice),
            labelled("bob", &bob),
            labelled("carol", &[]),
        ]
    );
    // The same accounts an upload to the group reaches (the sender is no recipient of its
    // own upload to a group it is in: sam's keys are not listed).
    let reached = crate::bed::recipients(&bed.send("sam", "/outbox/team/x.bin", b"x").await);
    let listed: Vec<String> = to_group.iter().map(|r| r.account.to_string()).collect();
    assert_eq!(listed, reached);
    assert!(!to_group.iter().any(|r| r.keys == sam));

    // Reads record nothing.
    let before = bed.events().await.len();
    bed.hub
        .recipient_e2e_keys(&client("sam"), &account("team"))
        .await
        .unwrap();
    assert_eq!(bed.events().await.len(), before);
}

#[tokio::test]
async fn a_recipient_out_of_reach_is_refused_as_an_upload_would_be() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol", "mute", "idle", "gone", "quiet"])
        .await;
    bed.admins(&["root"]).await;
    for who in ["bob", "carol", "mute", "idle", "gone"] {
        keys_of(&bed, who, 1).await;
    }
    bed.group("team", &["bob", "mute"]).await;
    bed.group("empty", &[]).await;
    let receive_only = Rights::parse("receive").unwrap();
    let send_only = Rights::parse("send").unwrap();
    bed.change(
        "mute",
        AccountChange {
            rights: Some(send_only),
            ..AccountChange::default()
        },
    )
    .await;
    bed.change(
        "idle",
        AccountChange {
            rights: Some(receive_only),
            ..AccountChange::default()
        },
    )
    .await;
    bed.change(
        "gone",
        AccountChange {
            disabled: Some(true),
            ..AccountChange::default()
        },
    )
    .await;
    for to in ["team", "empty", "mute", "gone"] {
        bed.allow("alice", to).await;
    }
    bed.allow("idle", "bob").await;
    bed.allow("quiet", "bob").await;
    bed.deny("alice", "carol").await;
    bed.change(
        "quiet",
        AccountChange {
            disabled: Some(true),
            ..AccountChange::default()
        },
    )
    .await;

    let cases: &[(&str, &str, &str, ErrorKind)] = &[
        ("no route", "alice", "idle", ErrorKind::RouteDenied),
        ("a denied route", "alice", "carol", ErrorKind::RouteDenied),
        (
            "no such account or group",
            "alice",
            "nobody",
            ErrorKind::NotFound,
        ),
        ("an admin account", "alice", "root", ErrorKind::NotFound),
        (
            "a recipient that may not receive",
            "alice",
            "mute",
            ErrorKind::RouteDenied,
        ),
        (
            "a group with a member that may not receive",
            "alice",
            "team",
            ErrorKind::RouteDenied,
        ),
        (
            "a group no member of which can receive",
            "alice",
            "empty",
            ErrorKind::NotFound,
        ),
        (
            "a disabled recipient",
            "alice",
            "gone",
            ErrorKind::PermissionDenied,
        ),
        (
            "a sender that may not send",
            "idle",
            "bob",
            ErrorKind::PermissionDenied,
        ),
        (
            "a disabled sender",
            "quiet",
            "bob",
            ErrorKind::PermissionDenied,
        ),
    ];
    for (what, from, to, kind) in cases {
        let err = bed
            .refused(
                *kind,
                None,
                bed.hub.recipient_e2e_keys(&client(from), &account(to)),
            )
            .await;
        // The very refusal an upload gets (which records its `upload` refusal).
        let upload = bed
            .refused(
                *kind,
                Some(EventKind::Upload),
                bed.upload(from, &format!("/outbox/{to}/secret.bin"), b"secret"),
            )
            .await;
        assert_eq!(err, upload, "{what}");
        // No key of anyone leaks into the sentence.
        for account in bed.hub.accounts().await.unwrap() {
            for key in account.e2e_keys {
                assert!(!err.message().contains(&key.recipient), "{what}: {err}");
                assert!(!err.message().contains(&key.fingerprint()), "{what}: {err}");
            }
        }
    }
}

// ----- end-to-end encrypted uploads ------------------------------------------------------------

/// What an age file looks like to the hub: its header line, then bytes it cannot read.
fn ciphertext(len: usize) -> Vec<u8> {
    let mut bytes = b"age-encryption.org/v1\n".to_vec();
    bytes.extend(crate::bed::data(len, 7));
    bytes
}

/// Sends `bytes` from `from` to `targets` through the API's path, as `content`.
async fn send_as(
    bed: &Bed,
    from: &str,
    targets: &[&str],
    bytes: &[u8],
    content: Content,
) -> mailroom_core::Result<Vec<mailroom_core::Delivery>> {
    let targets: Vec<_> = targets.iter().map(|t| account(t)).collect();
    let mut upload = bed
        .hub
        .begin_send(&client(from), &targets, &file("f.bin"), content)
        .await?;
    // In two writes, the first shorter than the age header, as a client may cut them.
    let cut = bytes.len().min(5);
    upload.write_at(0, &bytes[..cut]).await?;
    upload.write_at(cut as u64, &bytes[cut..]).await?;
    bed.hub.finish_upload(upload).await
}

/// alice may send to bob and to `team` (bob, carol); bob and carol have keys, dave none.
async fn keyed(bed: &Bed) {
    bed.clients(&["alice", "bob", "carol", "dave"]).await;
    bed.group("team", &["bob", "carol"]).await;
    for to in ["bob", "team", "dave"] {
        bed.allow("alice", to).await;
    }
    for who in ["bob", "carol"] {
        bed.hub
            .add_e2e_key(&admin(), &account(who), &recipient(), "")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_end_to_end_upload_is_delivered_unscanned_and_marked() {
    // A hub that checks every upload before delivery: ciphertext is not held for it.
    let bed = Bed::checked(
        Rules::new(vec![], 100).unwrap(),
        RetryPolicy {
            max_attempts: 2,
            base: time::Duration::seconds(10),
            cap: time::Duration::seconds(60),
        },
    );
    keyed(&bed).await;
    let bytes = ciphertext(5000);
    let deliveries = send_as(&bed, "alice", &["team"], &bytes, Content::EndToEnd)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 2);
    for delivery in &deliveries {
        assert!(delivery.e2e);
        assert_eq!(delivery.state, DeliveryState::Delivered);
    }
    assert!(bed.jobs().await.is_empty(), "no check was queued");
    assert_eq!(bed.download("bob", "/inbox/alice/f.bin").await, bytes);
    let upload = bed.events_of(EventKind::Upload, Outcome::Ok).await;
    assert!(
        upload[0]
            .detail
            .ends_with("; end-to-end encrypted, so not scanned"),
        "{}",
        upload[0].detail
    );
    let delivered = bed
        .events_of(EventKind::DeliveryDelivered, Outcome::Ok)
        .await;
    assert_eq!(delivered.len(), 2);
    assert!(
        delivered
            .iter()
            .all(|e| e.detail.contains("end-to-end encrypted"))
    );

    // A plain upload on the same hub still waits for its check, unmarked.
    let plain = send_as(&bed, "alice", &["bob"], b"hello", Content::Plain)
        .await
        .unwrap();
    assert!(!plain[0].e2e);
    assert_eq!(plain[0].state, DeliveryState::Checking);
}

#[tokio::test]
async fn a_recipient_without_a_key_cannot_be_sent_end_to_end() {
    let bed = Bed::new();
    keyed(&bed).await;
    let err = bed
        .refused(
            ErrorKind::RouteDenied,
            Some(EventKind::Upload),
            send_as(
                &bed,
                "alice",
                &["bob", "dave"],
                &ciphertext(10),
                Content::EndToEnd,
            ),
        )
        .await;
    assert_eq!(
        err.message(),
        "cannot send end-to-end encrypted: dave has no end-to-end key"
    );
    // A group whose members all have keys is fine; adding a keyless member is not.
    bed.hub
        .add_member(&admin(), &account("team"), &account("dave"))
        .await
        .unwrap();
    let err = bed
        .refused(
            ErrorKind::RouteDenied,
            Some(EventKind::Upload),
            send_as(&bed, "alice", &["team"], &ciphertext(10), Content::EndToEnd),
        )
        .await;
    assert!(
        err.message().contains("dave has no end-to-end key"),
        "{err}"
    );
}

#[tokio::test]
async fn end_to_end_content_that_is_not_an_age_file_is_refused() {
    let bed = Bed::new();
    keyed(&bed).await;
    for bytes in [b"hello, plain world".to_vec(), b"age".to_vec(), Vec::new()] {
        let err = bed
            .refused(
                ErrorKind::InvalidName,
                Some(EventKind::Upload),
                send_as(&bed, "alice", &["bob"], &bytes, Content::EndToEnd),
            )
            .await;
        assert!(err.message().contains("must be an age file"), "{err}");
    }
}

#[tokio::test]
async fn a_route_requiring_end_to_end_encryption_refuses_plain_files() {
    let bed = Bed::new();
    keyed(&bed).await;
    bed.allow("carol", "bob").await;
    bed.hub
        .set_route_rule(
            &admin(),
            Route {
                from: account("alice"),
                to: account("bob"),
                effect: RouteEffect::Allow,
                require_e2e: true,
            },
        )
        .await
        .unwrap();
    assert!(bed.snapshot().await.routes.iter().any(|r| r.require_e2e));

    // Plain to bob, by the file protocols' path or the API's, directly or through a group
    // that holds him: refused, naming the rule.
    let message = "the route from alice to bob requires end-to-end encryption: \
                   send with the client agent's --e2e (plain content is refused)";
    let err = bed
        .refused(
            ErrorKind::RouteDenied,
            Some(EventKind::Upload),
            bed.upload("alice", "/outbox/bob/plain.txt", b"plain"),
        )
        .await;
    assert_eq!(err.message(), message);
    for targets in [&["bob"][..], &["team"][..]] {
        let err = bed
            .refused(
                ErrorKind::RouteDenied,
                Some(EventKind::Upload),
                send_as(&bed, "alice", targets, b"plain", Content::Plain),
            )
            .await;
        assert_eq!(err.message(), message);
    }
    // Encrypted, it goes; other routes are untouched.
    let sent = send_as(&bed, "alice", &["bob"], &ciphertext(64), Content::EndToEnd)
        .await
        .unwrap();
    assert!(sent[0].e2e);
    bed.send("carol", "/outbox/bob/carol.txt", b"plain from carol")
        .await;

    // Allowing it again without the flag lifts the requirement.
    bed.allow("alice", "bob").await;
    bed.send("alice", "/outbox/bob/again.txt", b"plain again")
        .await;
}

#[tokio::test]
async fn only_an_allow_rule_can_require_end_to_end_encryption() {
    let bed = Bed::new();
    keyed(&bed).await;
    let err = bed
        .refused(
            ErrorKind::InvalidName,
            None,
            bed.hub.set_route_rule(
                &admin(),
                Route {
                    from: account("alice"),
                    to: account("carol"),
                    effect: RouteEffect::Deny,
                    require_e2e: true,
                },
            ),
        )
        .await;
    assert_eq!(
        err.message(),
        "only an allow rule can require end-to-end encryption"
    );
}
