//! One hop per operation: every Hub operation a client or an administrator makes is one unit
//! of work on the metadata store, one read or one write transaction, whatever it touches. The
//! table gives each operation's reads, writes and flushed commits (downloads and pick-ups are
//! relaxed: committed without a flush of their own).
//!
//! The policy cache (routes, groups, account access) is loaded inside the unit that needs it,
//! in the same transaction: an operation right after a policy change reloads it and is still
//! one hop (see the rows after `set_route` and `change_account`).
//!
//! Logins and token checks also read the ban cache, which is re-read from the store once it
//! is 2 seconds old on the hub's clock: here the clock stands still, so after the first login
//! it stays fresh and a token check is one read; in production one check every 2 seconds
//! pays a second read for the refresh.

use std::future::Future;

use mailroom_core::{
    AccountChange, AuthorizedKey, Credential, DeliveryOrder, DeliverySort, ErrorKind, Listing,
    LoginProgress, LoginStep, MAX_PAGE_SIZE, Protocol, Result, RouteEffect, SortDirection,
    TokenCheck,
};

use crate::bed::{Bed, PASSWORD, account, admin, client, data, path, secret};

/// A store's work over one call: (reads, writes, flushed commits).
type Hops = (u64, u64, u64);

const READ: Hops = (1, 0, 0);
const WRITE: Hops = (0, 1, 1);
const RELAXED_WRITE: Hops = (0, 1, 0);
const NONE: Hops = (0, 0, 0);

/// Runs `op` and checks what it cost the store; returns its value.
async fn costs<T>(bed: &Bed, what: &str, expect: Hops, op: impl Future<Output = Result<T>>) -> T {
    let before = bed.hub.store_stats();
    let value = match op.await {
        Ok(value) => value,
        Err(err) => panic!("{what}: {err}"),
    };
    let after = bed.hub.store_stats();
    let cost = (
        after.reads - before.reads,
        after.writes - before.writes,
        after.flushes - before.flushes,
    );
    assert_eq!(cost, expect, "{what}: (reads, writes, flushes)");
    assert_eq!(
        after.hops() - before.hops(),
        expect.0 + expect.1,
        "{what}: hops"
    );
    assert_eq!(
        after.commits - before.commits,
        expect.1,
        "{what}: each write unit commits once"
    );
    value
}

#[tokio::test]
async fn every_operation_is_one_hop() {
    for inline in [false, true] {
        one_hop_each(if inline { Bed::inline() } else { Bed::new() }).await;
    }
}

async fn one_hop_each(bed: Bed) {
    bed.clients(&["alice", "carol", "dave"]).await;
    bed.clients_with_password(&["bob"]).await;
    bed.group("team", &["bob", "carol"]).await;
    for to in ["bob", "carol", "team"] {
        bed.allow("alice", to).await;
    }
    let (alice, bob) = (client("alice"), client("bob"));
    let tokens = bed.tokens("bob").await;
    // Warm-up: the ban cache was loaded by bob's login (and stays fresh: the hub's clock
    // stands still), the policy cache is loaded by a read unit. Neither is needed for one
    // hop: the policy's first load happens inside the unit that needs it (see the rows after
    // policy changes below).
    bed.listing("alice", "/outbox").await;
    bed.hub
        .check_token(tokens.access.expose(), None, Protocol::Https)
        .await
        .unwrap();
    let a = bed
        .send("alice", "/outbox/bob/a.bin", &data(100_000, 1))
        .await;
    bed.send("alice", "/outbox/bob/small.txt", b"small").await;
    bed.send("alice", "/outbox/bob/b.bin", &data(100_000, 2))
        .await;

    // ----- the tree ----------------------------------------------------------------------
    let entry = costs(
        &bed,
        "stat of a file",
        READ,
        bed.hub.stat(&bob, &path("/inbox/alice/a.bin")),
    )
    .await;
    assert_eq!(entry.size, 100_000);
    let receipt = format!("/sent/bob/a.bin@{}", a[0].id.short());
    costs(
        &bed,
        "stat of a receipt",
        READ,
        bed.hub.stat(&alice, &path(&receipt)),
    )
    .await;
    costs(
        &bed,
        "stat of a fixed folder",
        NONE,
        bed.hub.stat(&bob, &path("/inbox/alice")),
    )
    .await;
    costs(
        &bed,
        "list of the root",
        NONE,
        bed.hub.list(&bob, &path("/")),
    )
    .await;
    for folder in [
        "/inbox",
        "/inbox/alice",
        "/outbox",
        "/outbox/team",
        "/sent",
        "/sent/bob",
    ] {
        costs(
            &bed,
            &format!("list of {folder}"),
            READ,
            bed.hub.list(&alice, &path(folder)),
        )
        .await;
    }

    // ----- downloads ---------------------------------------------------------------------
    for name in ["a.bin", "small.txt"] {
        let at = path(&format!("/inbox/alice/{name}"));
        let handle = costs(&bed, "open_read", READ, bed.hub.open_read(&bob, &at)).await;
        let size = usize::try_from(handle.size()).unwrap();
        costs(&bed, "reading the content", NONE, handle.read_at(0, size)).await;
        costs(
            &bed,
            "close_read with the pick-up",
            RELAXED_WRITE,
            bed.hub.close_read(&bob, handle),
        )
        .await;
    }

    // ----- uploads -----------------------------------------------------------------------
    let at = path("/outbox/team/c.bin");
    let mut upload = costs(
        &bed,
        "begin_upload",
        READ,
        bed.hub.begin_upload(&alice, &at),
    )
    .await;
    costs(
        &bed,
        "Upload::write_at",
        NONE,
        upload.write_at(0, &data(100_000, 3)),
    )
    .await;
    costs(
        &bed,
        "finish_upload of a fan-out",
        WRITE,
        bed.hub.finish_upload(upload),
    )
    .await;

    // ----- removal and renames -----------------------------------------------------------
    costs(
        &bed,
        "remove in the inbox (acknowledge)",
        WRITE,
        bed.hub.remove(&bob, &path("/inbox/alice/a.bin")),
    )
    .await;
    costs(
        &bed,
        "rename of a fan-out",
        WRITE,
        bed.hub.rename(
            &alice,
            &path("/outbox/team/c.bin"),
            &path("/outbox/team/d.bin"),
        ),
    )
    .await;
    costs(
        &bed,
        "remove in the outbox (recall of a fan-out)",
        WRITE,
        bed.hub.remove(&alice, &path("/outbox/team/d.bin")),
    )
    .await;

    // ----- by id -------------------------------------------------------------------------
    let inbox = costs(&bed, "inbox", READ, bed.hub.inbox(&bob)).await;
    costs(&bed, "sent", READ, bed.hub.sent(&alice)).await;
    let listing = Listing {
        order: DeliveryOrder {
            sort: DeliverySort::Size,
            direction: SortDirection::Descending,
        },
        name_contains: Some(".BIN".to_owned()),
        offset: 0,
        limit: 1,
    };
    let page = costs(&bed, "inbox_page", READ, bed.hub.inbox_page(&bob, &listing)).await;
    // The largest match first, and `more` exactly when another matches.
    let matching: Vec<_> = inbox
        .iter()
        .filter(|d| d.name.as_str().to_ascii_lowercase().contains(".bin"))
        .collect();
    let largest = matching.iter().map(|d| d.size).max().unwrap();
    assert_eq!(page.deliveries.len(), 1);
    assert_eq!(page.deliveries[0].size, largest);
    assert_eq!(page.more, matching.len() > 1, "{inbox:?}");
    costs(&bed, "sent_page", READ, bed.hub.sent_page(&alice, &listing)).await;
    // A listing out of bounds is refused before the store is asked.
    for wrong in [
        Listing {
            limit: 0,
            ..listing.clone()
        },
        Listing {
            limit: MAX_PAGE_SIZE + 1,
            ..listing.clone()
        },
        Listing {
            name_contains: Some("x".repeat(256)),
            ..listing.clone()
        },
        Listing {
            order: DeliveryOrder {
                sort: DeliverySort::Recipient,
                direction: SortDirection::Ascending,
            },
            ..listing.clone()
        },
    ] {
        let before = bed.hub.store_stats();
        let err = bed.hub.inbox_page(&bob, &wrong).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName, "{wrong:?}");
        assert_eq!(bed.hub.store_stats(), before, "{wrong:?} asked the store");
    }
    let b = inbox
        .iter()
        .find(|d| d.name.as_str() == "b.bin")
        .unwrap()
        .id;
    let handle = costs(&bed, "open_delivery", READ, bed.hub.open_delivery(&bob, &b)).await;
    drop(handle);
    costs(
        &bed,
        "acknowledge by id",
        WRITE,
        bed.hub.acknowledge(&bob, &b),
    )
    .await;
    let e = bed.send("alice", "/outbox/bob/e.bin", b"e").await;
    costs(
        &bed,
        "recall by id",
        WRITE,
        bed.hub.recall(&alice, &e[0].id),
    )
    .await;

    // ----- tokens ------------------------------------------------------------------------
    let check = costs(
        &bed,
        "check_token",
        READ,
        bed.hub
            .check_token(tokens.access.expose(), None, Protocol::Https),
    )
    .await;
    assert!(matches!(check, TokenCheck::Valid(_)));

    // ----- administration, and the first operation after a policy change -----------------
    let admin = admin();
    costs(
        &bed,
        "change_account",
        WRITE,
        bed.hub.change_account(
            &admin,
            &account("dave"),
            AccountChange {
                quota_files: Some(Some(100)),
                ..AccountChange::default()
            },
        ),
    )
    .await;
    costs(
        &bed,
        "list of /outbox right after a policy change",
        READ,
        bed.hub.list(&alice, &path("/outbox")),
    )
    .await;
    costs(
        &bed,
        "add_group",
        WRITE,
        bed.hub.add_group(
            &admin,
            account("pair"),
            vec![account("carol"), account("dave")],
        ),
    )
    .await;
    costs(
        &bed,
        "set_route",
        WRITE,
        bed.hub.set_route(
            &admin,
            account("alice"),
            account("pair"),
            RouteEffect::Allow,
        ),
    )
    .await;
    let upload = costs(
        &bed,
        "begin_upload right after a policy change",
        READ,
        bed.hub.begin_upload(&alice, &path("/outbox/pair/f.txt")),
    )
    .await;
    costs(&bed, "finish_upload", WRITE, bed.hub.finish_upload(upload)).await;
    let key = AuthorizedKey {
        algorithm: "ssh-ed25519".to_owned(),
        blob: [&[0, 0, 0, 11][..], b"ssh-ed25519", &[0, 0, 0, 32], &[9; 32]].concat(),
        comment: String::new(),
    };
    costs(
        &bed,
        "add_key",
        WRITE,
        bed.hub.add_key(&admin, &account("dave"), key),
    )
    .await;
    costs(&bed, "account", READ, bed.hub.account(&account("dave"))).await;
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    costs(
        &bed,
        "add_e2e_key",
        WRITE,
        bed.hub
            .add_e2e_key(&admin, &account("carol"), &recipient, "laptop"),
    )
    .await;
    costs(&bed, "e2e_keys", READ, bed.hub.e2e_keys(&account("carol"))).await;
    costs(
        &bed,
        "recipient_e2e_keys of a group",
        READ,
        bed.hub.recipient_e2e_keys(&alice, &account("team")),
    )
    .await;
    costs(
        &bed,
        "remove_e2e_key",
        WRITE,
        bed.hub
            .remove_e2e_key(&admin, &account("carol"), &recipient),
    )
    .await;

    // ----- self-service --------------------------------------------------------------------
    let own_key = mailroom_core::AuthorizedKey {
        comment: "own".to_owned(),
        blob: [&[0, 0, 0, 11][..], b"ssh-ed25519", &[0, 0, 0, 32], &[9; 32]].concat(),
        algorithm: "ssh-ed25519".to_owned(),
    };
    let fingerprint = own_key.fingerprint();
    costs(
        &bed,
        "add_own_key",
        WRITE,
        bed.hub.add_own_key(&bob, own_key),
    )
    .await;
    costs(&bed, "own_keys", READ, bed.hub.own_keys(&bob)).await;
    costs(
        &bed,
        "remove_own_key",
        WRITE,
        bed.hub.remove_own_key(&bob, &fingerprint),
    )
    .await;
    costs(&bed, "own_usage", READ, bed.hub.own_usage(&bob)).await;
    costs(
        &bed,
        "enroll_own_totp",
        WRITE,
        bed.hub.enroll_own_totp(&bob, None),
    )
    .await;
    let identity = match bed
        .hub
        .check_token(tokens.access.expose(), None, Protocol::Https)
        .await
        .unwrap()
    {
        TokenCheck::Valid(identity) => identity,
        TokenCheck::Refused(why) => panic!("{why}"),
    };
    costs(&bed, "own_sessions", READ, bed.hub.own_sessions(&identity)).await;
    costs(
        &bed,
        "sign_out_other_sessions",
        WRITE,
        bed.hub
            .sign_out_other_sessions(&identity, &mailroom_core::TokenLifetimes::default()),
    )
    .await;
    // A password change is the login's shape: one read for the hash, Argon2 outside any
    // unit, one write that commits only if the hash is still the one checked.
    costs(
        &bed,
        "change_own_password",
        (1, 1, 1),
        bed.hub
            .change_own_password(&bob, secret(PASSWORD), secret("Another-long-passphrase-77")),
    )
    .await;
}

/// A login is one read (the account, and the bans when their cache is due) and one relaxed
/// write (its event). On a node of a cluster the session's row, counted against
/// `max_sessions` over every node, is inserted in that same write: no hop more, whether the
/// login is accepted or refused for the limit. Dropping the session deletes its row in a
/// relaxed write of its own, on a task (not part of the login).
#[tokio::test]
async fn a_login_is_one_read_and_one_relaxed_write_on_a_node_too() {
    for on_node in [false, true] {
        let bed = if on_node {
            Bed::new().into_node("a.example")
        } else {
            Bed::new()
        };
        bed.clients_with_password(&["alice"]).await;
        bed.change(
            "alice",
            AccountChange {
                max_sessions: Some(Some(1)),
                ..AccountChange::default()
            },
        )
        .await;
        bed.hub.join_cluster().await.unwrap();
        let login = || async {
            let mut progress = LoginProgress::default();
            bed.hub
                .login(
                    &mut progress,
                    "alice",
                    Credential::Password(secret(PASSWORD)),
                    None,
                    Protocol::Sftp,
                )
                .await
        };
        let what = if on_node { "on a node" } else { "alone" };
        let first = costs(&bed, &format!("a login {what}"), (1, 1, 0), login()).await;
        assert!(matches!(first, LoginStep::Accepted(..)), "{what}");
        let second = costs(
            &bed,
            &format!("a login over the limit {what}"),
            (1, 1, 0),
            login(),
        )
        .await;
        assert!(matches!(second, LoginStep::Refused), "{what}");
    }
}
