//! Bearer tokens and sessions of token logins: issue, check, refresh (a refresh token works
//! once, and ends the login's earlier access token), logout; expiry on the hub's clock; a
//! password change or a disable revokes every token of the account (and enabling again does
//! not revive them); token logins count against `max_sessions`; admin accounts own no
//! mailbox, so a client login refuses them; and the negotiated methods of a login are named
//! in its event and bound to its tokens, refreshes included.

use mailroom_core::{
    AccountChange, Credential, EventKind, IssuedTokens, LoginProgress, LoginStep, Outcome,
    Protocol, Scope, TokenCheck, TokenIdentity, TokenLifetimes,
};
use time::Duration;

use crate::bed::{Bed, NEW_PASSWORD, PASSWORD, account, admin, secret};

/// Checks an access token as the HTTPS front end does.
async fn check(bed: &Bed, token: &str) -> TokenCheck {
    bed.hub
        .check_token(token, Some("192.0.2.10:40000".to_owned()), Protocol::Https)
        .await
        .unwrap()
}

/// The identity of a valid token; panics with the reason of a refused one.
async fn valid(bed: &Bed, tokens: &IssuedTokens) -> TokenIdentity {
    match check(bed, tokens.access.expose()).await {
        TokenCheck::Valid(identity) => identity,
        TokenCheck::Refused(reason) => panic!("token refused: {reason}"),
    }
}

/// The reason a token is refused; panics if it is valid.
async fn refused(bed: &Bed, token: &str) -> String {
    match check(bed, token).await {
        TokenCheck::Valid(identity) => panic!("token still valid for {}", identity.account),
        TokenCheck::Refused(reason) => reason,
    }
}

async fn refresh(bed: &Bed, tokens: &IssuedTokens) -> Option<IssuedTokens> {
    bed.hub
        .refresh_tokens(tokens.refresh.expose(), None, &TokenLifetimes::default())
        .await
        .unwrap()
}

async fn alice_and_bob() -> Bed {
    let bed = Bed::new();
    bed.clients_with_password(&["alice", "bob"]).await;
    bed
}

#[tokio::test]
async fn issue_check_refresh_once_and_logout() {
    let bed = alice_and_bob().await;
    let tokens = bed.tokens("alice").await;
    let identity = valid(&bed, &tokens).await;
    assert_eq!(identity.account, account("alice"));
    assert_eq!(identity.scope, Scope::Client);
    assert_eq!(identity.session, tokens.session);
    assert_eq!(identity.client_session().unwrap().account, account("alice"));

    for (token, reason) in [
        ("", "malformed token"),
        (&*"0".repeat(64), "unknown or revoked token"),
        (&*"x".repeat(300), "malformed token"),
        (
            tokens.refresh.expose().as_str(),
            "a refresh token is not an access token",
        ),
    ] {
        assert_eq!(refused(&bed, token).await, reason);
    }

    // A refresh token works once; the new pair belongs to the same login and ends the old
    // access token.
    let renewed = refresh(&bed, &tokens).await.unwrap();
    assert_eq!(renewed.session, tokens.session);
    assert!(
        refresh(&bed, &tokens).await.is_none(),
        "the refresh token was used"
    );
    assert_eq!(
        refused(&bed, tokens.access.expose()).await,
        "unknown or revoked token"
    );
    let identity = valid(&bed, &renewed).await;

    // Logout ends the login: both tokens, with a session.closed event.
    bed.hub.logout(&identity).await.unwrap();
    assert_eq!(
        refused(&bed, renewed.access.expose()).await,
        "unknown or revoked token"
    );
    assert!(refresh(&bed, &renewed).await.is_none());
    let closed = bed.events_of(EventKind::SessionClosed, Outcome::Ok).await;
    assert!(closed[0].detail.starts_with("logout"), "{closed:?}");
    // An access token presented for a refresh is spent too.
    let other = bed.tokens("alice").await;
    let spent = bed
        .hub
        .refresh_tokens(other.access.expose(), None, &TokenLifetimes::default())
        .await
        .unwrap();
    assert!(spent.is_none());
    assert_eq!(
        refused(&bed, other.access.expose()).await,
        "unknown or revoked token"
    );
}

#[tokio::test]
async fn tokens_expire_on_the_hub_clock() {
    let bed = alice_and_bob().await;
    let tokens = bed.tokens("alice").await;
    valid(&bed, &tokens).await;
    bed.clock.advance(Duration::minutes(16));
    assert_eq!(
        refused(&bed, tokens.access.expose()).await,
        "access token expired"
    );
    // The refresh token lives longer and still trades for a working pair.
    let renewed = refresh(&bed, &tokens).await.unwrap();
    valid(&bed, &renewed).await;
    bed.clock.advance(Duration::hours(13));
    assert!(
        refresh(&bed, &renewed).await.is_none(),
        "the refresh token expired"
    );
    // Swept, they are gone from the store.
    let other = bed.tokens("bob").await;
    bed.clock.advance(Duration::hours(13));
    assert!(bed.hub.sweep_tokens().await.unwrap() >= 2);
    assert_eq!(
        refused(&bed, other.access.expose()).await,
        "unknown or revoked token"
    );
}

#[tokio::test]
async fn a_password_change_or_a_disable_revokes_every_token() {
    let bed = alice_and_bob().await;
    let first = bed.tokens("alice").await;
    let second = bed.tokens("alice").await;
    let bobs = bed.tokens("bob").await;
    bed.hub
        .set_password(&admin(), &account("alice"), secret(NEW_PASSWORD))
        .await
        .unwrap();
    for tokens in [&first, &second] {
        assert_eq!(
            refused(&bed, tokens.access.expose()).await,
            "token revoked (password changed or account disabled)"
        );
        assert!(refresh(&bed, tokens).await.is_none());
    }
    valid(&bed, &bobs).await;
    // Logging in again with the new password works.
    assert!(matches!(
        bed.login("alice", PASSWORD, Scope::Client).await,
        LoginStep::Refused
    ));
    assert!(matches!(
        bed.login("alice", NEW_PASSWORD, Scope::Client).await,
        LoginStep::Accepted(..)
    ));

    // A disable revokes for good: enabling again does not revive the token.
    bed.hub
        .set_disabled(&admin(), &account("bob"), true)
        .await
        .unwrap();
    assert!(
        refused(&bed, bobs.access.expose())
            .await
            .starts_with("token revoked")
    );
    bed.hub
        .set_disabled(&admin(), &account("bob"), false)
        .await
        .unwrap();
    assert!(
        refused(&bed, bobs.access.expose())
            .await
            .starts_with("token revoked")
    );
    assert!(refresh(&bed, &bobs).await.is_none());
    valid(&bed, &bed.tokens("bob").await).await;
}

#[tokio::test]
async fn token_logins_count_against_max_sessions() {
    let bed = alice_and_bob().await;
    bed.change(
        "alice",
        AccountChange {
            max_sessions: Some(Some(1)),
            ..AccountChange::default()
        },
    )
    .await;
    let tokens = bed.tokens("alice").await;
    let live = bed.hub.live_sessions().await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].protocol, Protocol::Https);

    // The hub holds the first login's session: a second login is refused, and says why.
    assert!(matches!(
        bed.login("alice", PASSWORD, Scope::Client).await,
        LoginStep::Refused
    ));
    let refusals = bed.events_of(EventKind::Login, Outcome::Refused).await;
    assert!(
        refusals[0].detail.contains("session limit reached"),
        "{refusals:?}"
    );
    // A refresh continues the same login: no new session.
    let renewed = refresh(&bed, &tokens).await.unwrap();
    assert_eq!(bed.hub.live_sessions().await.unwrap().len(), 1);

    // Logout frees the place.
    let identity = valid(&bed, &renewed).await;
    bed.hub.logout(&identity).await.unwrap();
    assert!(bed.hub.live_sessions().await.unwrap().is_empty());
    bed.tokens("alice").await;

    // An administrator's kick ends a token login too.
    let id = bed.hub.live_sessions().await.unwrap()[0].reference();
    bed.hub.kick_session(&admin(), &id).await.unwrap();
    assert!(bed.hub.live_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn admin_accounts_own_no_mailbox_and_clients_are_not_admins() {
    let bed = alice_and_bob().await;
    bed.admins_with_password(&["root"]).await;
    assert!(matches!(
        bed.login("root", PASSWORD, Scope::Client).await,
        LoginStep::Refused
    ));
    assert!(matches!(
        bed.login("alice", PASSWORD, Scope::Admin).await,
        LoginStep::Refused
    ));
    let refusals = bed.events_of(EventKind::Login, Outcome::Refused).await;
    assert!(
        refusals[0].detail.contains("admin accounts own no mailbox"),
        "{refusals:?}"
    );
    assert!(
        refusals[1].detail.contains("not an admin account"),
        "{refusals:?}"
    );
    // In its own scope an admin logs in; its token carries no client session.
    let LoginStep::Accepted(session, guard) = bed.login("root", PASSWORD, Scope::Admin).await
    else {
        panic!("root could not log in as an admin");
    };
    let tokens = bed
        .hub
        .issue_tokens(
            &session,
            guard,
            Scope::Admin,
            &TokenLifetimes::default(),
            None,
        )
        .await
        .unwrap();
    let identity = valid(&bed, &tokens).await;
    assert_eq!(identity.scope, Scope::Admin);
    assert!(identity.client_session().is_none());
}

/// A password change and a disable revoke "every token issued under the old password" and
/// "for good". A login accepted just before such a change, whose tokens are issued just after
/// it (the HTTPS login handler's two calls), must not end up with tokens that work: either
/// `issue_tokens` refuses, or the tokens it issues are refused (now, and after an enable).
#[tokio::test]
async fn a_login_accepted_before_a_revoking_change_gets_no_working_tokens() {
    let bed = alice_and_bob().await;
    let revoke = [
        (
            "alice",
            AccountChange {
                password: Some(secret(NEW_PASSWORD)),
                ..AccountChange::default()
            },
        ),
        (
            "bob",
            AccountChange {
                disabled: Some(true),
                ..AccountChange::default()
            },
        ),
    ];
    let mut working = Vec::new();
    for (name, change) in revoke {
        let LoginStep::Accepted(session, guard) = bed.login(name, PASSWORD, Scope::Client).await
        else {
            panic!("{name} could not log in");
        };
        bed.change(name, change).await;
        let issued = bed
            .hub
            .issue_tokens(
                &session,
                guard,
                Scope::Client,
                &TokenLifetimes::default(),
                None,
            )
            .await;
        bed.hub
            .set_disabled(&admin(), &account(name), false)
            .await
            .unwrap();
        if let Ok(tokens) = issued
            && let TokenCheck::Valid(_) = check(&bed, tokens.access.expose()).await
        {
            working.push(name);
        }
    }
    assert!(
        working.is_empty(),
        "tokens of logins the change should have revoked work for {working:?}"
    );
}

#[tokio::test]
async fn enforcing_sessions_closes_those_of_a_disabled_account_and_ends_its_token_logins() {
    let bed = alice_and_bob().await;
    let LoginStep::Accepted(_, mut guard) = bed.login("alice", PASSWORD, Scope::Client).await
    else {
        panic!("alice could not log in");
    };
    let tokens = bed.tokens("alice").await;
    bed.tokens("bob").await;
    assert_eq!(bed.hub.live_sessions().await.unwrap().len(), 3);
    assert_eq!(bed.hub.enforce_sessions().await.unwrap(), 0);
    bed.hub
        .set_disabled(&admin(), &account("alice"), true)
        .await
        .unwrap();
    assert_eq!(bed.hub.enforce_sessions().await.unwrap(), 2);
    // The connection's guard fires with the reason; the token login is gone with its tokens.
    assert_eq!(guard.closed().await, "account disabled");
    drop(guard);
    let live = bed.hub.live_sessions().await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].account, account("bob"));
    assert_eq!(
        refused(&bed, tokens.access.expose()).await,
        "unknown or revoked token"
    );
    let closed = bed.events_of(EventKind::SessionClosed, Outcome::Ok).await;
    assert_eq!(closed.len(), 2);
    assert!(
        closed
            .iter()
            .all(|e| e.detail.ends_with("account disabled"))
    );
}

/// One password login step of `user` over HTTPS, on a connection's `progress`.
async fn password_step(
    bed: &Bed,
    progress: &mut LoginProgress,
    user: &str,
    password: &str,
) -> LoginStep {
    bed.hub
        .login(
            progress,
            user,
            Credential::Password(secret(password)),
            None,
            Protocol::Https,
        )
        .await
        .unwrap()
}

/// What an API login that negotiated methods (ACE) writes, as the API writes it.
const METHODS: &str = "authentication=password compression=zstd encryption=tls";

/// The negotiated methods an API login agreed on are named in its accepted login event (not in
/// its refusals), kept when the same connection starts over with another user name, and bound
/// to its tokens: every check of them knows the methods, and so does the pair a refresh gives.
/// A login that did not negotiate has none, and its event names none.
#[tokio::test]
async fn negotiated_methods_are_in_the_login_event_and_bound_to_the_tokens() {
    let bed = alice_and_bob().await;
    let mut progress = LoginProgress::for_scope(Scope::Client);
    progress.set_methods(METHODS.to_owned());
    for user in ["alice", "bob"] {
        let step = password_step(&bed, &mut progress, user, "wrong").await;
        assert!(matches!(step, LoginStep::Refused), "{user}: {step:?}");
    }
    let LoginStep::Accepted(session, guard) =
        password_step(&bed, &mut progress, "alice", PASSWORD).await
    else {
        panic!("alice could not log in");
    };
    assert_eq!(progress.methods(), Some(METHODS));
    let refusals = bed.events_of(EventKind::Login, Outcome::Refused).await;
    let details: Vec<&str> = refusals.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(details, ["password: wrong password"; 2]);
    let accepted = bed.events_of(EventKind::Login, Outcome::Ok).await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].object, "alice");
    assert_eq!(accepted[0].detail, format!("password; methods: {METHODS}"));

    let tokens = bed
        .hub
        .issue_tokens(
            &session,
            guard,
            Scope::Client,
            &TokenLifetimes::default(),
            progress.methods().map(str::to_owned),
        )
        .await
        .unwrap();
    assert_eq!(valid(&bed, &tokens).await.methods.as_deref(), Some(METHODS));
    let renewed = refresh(&bed, &tokens).await.unwrap();
    assert_eq!(
        valid(&bed, &renewed).await.methods.as_deref(),
        Some(METHODS)
    );
    let again = refresh(&bed, &renewed).await.unwrap();
    assert_eq!(valid(&bed, &again).await.methods.as_deref(), Some(METHODS));

    // Without negotiation: no methods, on the tokens or in the event.
    let plain = bed.tokens("bob").await;
    assert_eq!(valid(&bed, &plain).await.methods, None);
    let renewed = refresh(&bed, &plain).await.unwrap();
    assert_eq!(valid(&bed, &renewed).await.methods, None);
    let accepted = bed.events_of(EventKind::Login, Outcome::Ok).await;
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[1].object, "bob");
    assert_eq!(accepted[1].detail, "password");
}
