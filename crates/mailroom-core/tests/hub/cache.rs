//! The policy cache is never stale: every change of routes, groups, members or an account's
//! state and access applies from the very next operation, whether it was made through this
//! Hub's admin calls, by another Hub on the same store (another process: the admin CLI), or
//! by a unit written straight into the store.

use mailroom_core::{
    AccountChange, AccountUpdate, Durability, ErrorKind, MetaStoreExt, Protocol, Route,
    RouteEffect, TokenCheck,
};

use crate::bed::{Bed, account, admin, client, path};
use crate::routes::rights;

/// How the next upload from alice to bob ends: `Ok(())` or the refusal's kind.
async fn attempt(bed: &Bed) -> Result<(), ErrorKind> {
    bed.upload("alice", "/outbox/bob/try.txt", b"try")
        .await
        .map(|_| ())
        .map_err(|e| e.kind())
}

/// One change of policy, made one of three ways.
enum Step {
    Allow,
    Deny,
    NoRule,
    Receive(bool),
    Disabled(bool),
    /// bob joins or leaves the group `blocked`, which alice is denied.
    Blocked(bool),
}

const STEPS: &[(Step, Result<(), ErrorKind>)] = &[
    (Step::Allow, Ok(())),
    (Step::Deny, Err(ErrorKind::RouteDenied)),
    (Step::Allow, Ok(())),
    (Step::NoRule, Err(ErrorKind::RouteDenied)),
    (Step::Allow, Ok(())),
    (Step::Receive(false), Err(ErrorKind::RouteDenied)),
    (Step::Receive(true), Ok(())),
    (Step::Disabled(true), Err(ErrorKind::PermissionDenied)),
    (Step::Disabled(false), Ok(())),
    (Step::Blocked(true), Err(ErrorKind::RouteDenied)),
    (Step::Blocked(false), Ok(())),
];

async fn world() -> Bed {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol"]).await;
    bed.group("blocked", &["carol"]).await;
    bed.deny("alice", "blocked").await;
    // The first attempt loads the cache: from here on, every step changes a cached policy.
    assert_eq!(attempt(&bed).await, Err(ErrorKind::RouteDenied));
    bed
}

#[tokio::test]
async fn a_change_through_the_admin_calls_applies_to_the_next_operation() {
    let bed = world().await;
    let hub = &bed.hub;
    let (alice, bob, blocked) = (account("alice"), account("bob"), account("blocked"));
    for (step, expect) in STEPS {
        match step {
            Step::Allow => bed.allow("alice", "bob").await,
            Step::Deny => bed.deny("alice", "bob").await,
            Step::NoRule => hub.remove_route(&admin(), &alice, &bob).await.unwrap(),
            Step::Receive(on) => bed.change("bob", rights(|r| r.receive = *on)).await,
            Step::Disabled(off) => hub.set_disabled(&admin(), &bob, *off).await.unwrap(),
            Step::Blocked(true) => hub.add_member(&admin(), &blocked, &bob).await.unwrap(),
            Step::Blocked(false) => hub.remove_member(&admin(), &blocked, &bob).await.unwrap(),
        }
        assert_eq!(attempt(&bed).await, *expect);
    }
}

#[tokio::test]
async fn a_change_by_another_process_applies_to_the_next_operation() {
    let bed = world().await;
    let cli = bed.other_process();
    let (alice, bob, blocked) = (account("alice"), account("bob"), account("blocked"));
    for (step, expect) in STEPS {
        match step {
            Step::Allow => cli
                .set_route(&admin(), alice.clone(), bob.clone(), RouteEffect::Allow)
                .await
                .unwrap(),
            Step::Deny => cli
                .set_route(&admin(), alice.clone(), bob.clone(), RouteEffect::Deny)
                .await
                .unwrap(),
            Step::NoRule => cli.remove_route(&admin(), &alice, &bob).await.unwrap(),
            Step::Receive(on) => {
                cli.change_account(&admin(), &bob, rights(|r| r.receive = *on))
                    .await
                    .unwrap();
            }
            Step::Disabled(off) => cli.set_disabled(&admin(), &bob, *off).await.unwrap(),
            Step::Blocked(true) => cli.add_member(&admin(), &blocked, &bob).await.unwrap(),
            Step::Blocked(false) => cli.remove_member(&admin(), &blocked, &bob).await.unwrap(),
        }
        assert_eq!(attempt(&bed).await, *expect);
    }
}

#[tokio::test]
async fn a_change_written_straight_into_the_store_applies_to_the_next_operation() {
    let bed = world().await;
    for (step, expect) in STEPS {
        let current = bed.account("bob").await.access;
        bed.meta
            .write_with(Durability::Flush, move |tx| {
                let (alice, bob) = (account("alice"), account("bob"));
                let route = |effect| Route {
                    from: alice.clone(),
                    to: bob.clone(),
                    effect,
                    require_e2e: false,
                };
                let update = |edit: &dyn Fn(&mut AccountUpdate)| {
                    let mut update = AccountUpdate::default();
                    edit(&mut update);
                    update
                };
                match step {
                    Step::Allow => tx.put_route(&route(RouteEffect::Allow)),
                    Step::Deny => tx.put_route(&route(RouteEffect::Deny)),
                    Step::NoRule => tx.delete_route(&alice, &bob),
                    Step::Receive(on) => {
                        let mut access = current.clone();
                        access.rights.receive = *on;
                        tx.update_account(&bob, &update(&|u| u.access = Some(access.clone())))
                    }
                    Step::Disabled(off) => {
                        tx.update_account(&bob, &update(&|u| u.disabled = Some(*off)))
                    }
                    Step::Blocked(on) => {
                        let members = if *on {
                            vec![account("carol"), bob.clone()]
                        } else {
                            vec![account("carol")]
                        };
                        tx.set_members(&account("blocked"), &members)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(attempt(&bed).await, *expect);
    }
}

#[tokio::test]
async fn write_units_and_token_checks_see_the_change_too() {
    // A rename (a write unit) checks the right to send; a token check reads the account's
    // state and token generation: both through the cache.
    let bed = Bed::new();
    bed.clients(&["alice"]).await;
    bed.clients_with_password(&["bob"]).await;
    bed.allow("alice", "bob").await;
    bed.send("alice", "/outbox/bob/a.txt", b"a").await;
    let tokens = bed.tokens("bob").await;
    let check = || {
        bed.hub
            .check_token(tokens.access.expose(), None, Protocol::Https)
    };
    assert!(matches!(check().await.unwrap(), TokenCheck::Valid(_)));
    let (alice, from, to) = (
        client("alice"),
        path("/outbox/bob/a.txt"),
        path("/outbox/bob/b.txt"),
    );
    let rename = || bed.hub.rename(&alice, &from, &to);

    let cli = bed.other_process();
    cli.change_account(&admin(), &account("alice"), rights(|r| r.send = false))
        .await
        .unwrap();
    assert_eq!(
        rename().await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    cli.set_disabled(&admin(), &account("bob"), true)
        .await
        .unwrap();
    assert!(matches!(check().await.unwrap(), TokenCheck::Refused(_)));

    bed.meta
        .write_with(Durability::Flush, |tx| {
            let alice = account("alice");
            let mut access = tx.account(&alice)?.unwrap().access;
            access.rights.send = true;
            let update = AccountUpdate {
                access: Some(access),
                ..AccountUpdate::default()
            };
            tx.update_account(&alice, &update)
        })
        .await
        .unwrap();
    rename().await.unwrap();
    // A change that no longer revives the token: disabling moved its generation on.
    cli.change_account(
        &admin(),
        &account("bob"),
        AccountChange {
            disabled: Some(false),
            ..AccountChange::default()
        },
    )
    .await
    .unwrap();
    assert!(matches!(check().await.unwrap(), TokenCheck::Refused(_)));
}
