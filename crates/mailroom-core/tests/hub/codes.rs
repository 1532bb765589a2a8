//! Logins with the one-time code appended to the password, `secret:123456`, as FTP sends
//! them ([`Hub::login_password_with_code`]): the string is split at its last colon only for
//! an account that still needs its code and only before exactly six digits; then the
//! ordinary steps run on one read of the account, with the ordinary answers, events and
//! scores. Every refusal is checked for its event and for changing nothing else.

use mailroom_core::{
    AccountChange, AccountKind, BanSubject, Clock, Credential, DefenderConfig, Event, EventKind,
    Factor, FactorSet, Hub, LoginProgress, LoginStep, MetaStoreExt, Outcome, Protocol, Secret,
    totp_code,
};
use time::Duration;

use crate::bed::{Bed, PASSWORD, account, admin, secret};

/// Where the logins come from (scored, unlike a login without an address).
const SOURCE: &str = "198.51.100.7:40021";

/// Enrols `name` in TOTP and requires `factors`; the secret.
async fn enrolled(bed: &Bed, name: &str, factors: &[Factor]) -> Secret<String> {
    let setup = bed.hub.enroll_totp(&admin(), &account(name)).await.unwrap();
    bed.change(
        name,
        AccountChange {
            factors: Some(FactorSet::new(factors.iter().copied())),
            ..AccountChange::default()
        },
    )
    .await;
    setup.secret
}

/// The code of `secret` on the bed's clock, `steps` 30-second steps from now.
fn code(bed: &Bed, secret: &Secret<String>, steps: i64) -> String {
    let at = bed.clock.now() + Duration::seconds(30 * steps);
    totp_code(secret.expose(), u64::try_from(at.unix_timestamp()).unwrap()).unwrap()
}

/// Six digits that are none of the codes the hub would take now (one step of skew).
fn wrong_code(bed: &Bed, secret: &Secret<String>) -> String {
    let valid = [-1, 0, 1].map(|steps| code(bed, secret, steps));
    (0..4)
        .map(|n| format!("{n}{n}{n}{n}{n}{n}"))
        .find(|candidate| !valid.contains(candidate))
        .unwrap()
}

/// One login of `user` with `combined` as FTP's PASS, in a fresh progress.
async fn pass(bed: &Bed, user: &str, combined: &str) -> LoginStep {
    bed.hub
        .login_password_with_code(
            &mut LoginProgress::default(),
            user,
            secret(combined),
            Some(SOURCE.to_owned()),
            Protocol::Ftps,
        )
        .await
        .unwrap()
}

/// [`pass`] that must be accepted; the login event's detail (the factors proved).
async fn accepted(bed: &Bed, user: &str, combined: &str) -> String {
    let step = pass(bed, user, combined).await;
    assert!(matches!(step, LoginStep::Accepted(..)), "{step:?}");
    let logins = bed.events_of(EventKind::Login, Outcome::Ok).await;
    logins.last().unwrap().detail.clone()
}

/// [`pass`] that must be refused having recorded exactly one refused login event and changed
/// nothing else (accounts with their TOTP steps, deliveries, blobs, other events); the event.
async fn refused(bed: &Bed, user: &str, combined: &str) -> Event {
    let before = bed.snapshot().await;
    let step = pass(bed, user, combined).await;
    assert!(matches!(step, LoginStep::Refused), "{step:?}");
    let mut after = bed.snapshot().await;
    let recorded: Vec<EventKind> = after.refused.drain(before.refused.len()..).collect();
    assert_eq!(recorded, [EventKind::Login]);
    assert_eq!(after, before, "the refusal changed something");
    bed.events_of(EventKind::Login, Outcome::Refused)
        .await
        .pop()
        .unwrap()
}

/// `subject`'s score in the store over the defender's window.
async fn score(bed: &Bed, subject: BanSubject) -> u64 {
    let since = bed.clock.now() - Duration::minutes(30);
    bed.meta
        .read_with(move |tx| tx.offence_score(&subject, since))
        .await
        .unwrap()
}

/// The store's (reads, writes, flushes) over `op`.
async fn cost<T>(bed: &Bed, op: impl Future<Output = T>) -> ((u64, u64, u64), T) {
    let before = bed.hub.store_stats();
    let value = op.await;
    let after = bed.hub.store_stats();
    let cost = (
        after.reads - before.reads,
        after.writes - before.writes,
        after.flushes - before.flushes,
    );
    (cost, value)
}

#[tokio::test]
async fn a_password_with_its_code_appended_logs_in_and_the_code_works_once() {
    let bed = Bed::new();
    bed.clients_with_password(&["bob"]).await;
    let totp = enrolled(&bed, "bob", &[Factor::Password, Factor::Totp]).await;
    let now = code(&bed, &totp, 0);

    // One read of the account, the code's step spent (flushed), the login event (relaxed).
    let (hops, step) = cost(&bed, pass(&bed, "bob", &format!("{PASSWORD}:{now}"))).await;
    assert!(matches!(step, LoginStep::Accepted(..)), "{step:?}");
    assert_eq!(hops, (1, 2, 1), "(reads, writes, flushes)");
    let logins = bed.events_of(EventKind::Login, Outcome::Ok).await;
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].detail, "password+totp");
    let spent = bed.account("bob").await.totp.unwrap().last_step;
    assert!(spent.is_some(), "the code's step was not spent");

    // The same code again, even with the right password: refused, recorded, scored.
    let replay = refused(&bed, "bob", &format!("{PASSWORD}:{now}")).await;
    assert_eq!(replay.detail, "totp: wrong or reused code");
    assert_eq!(replay.protocol, Protocol::Ftps);
    assert_eq!(
        score(&bed, BanSubject::Account(account("bob"))).await,
        u64::from(DefenderConfig::default().score_bad_credentials)
    );
    // The next step's code is a new code.
    bed.clock.advance(Duration::seconds(30));
    let next = code(&bed, &totp, 0);
    assert_eq!(
        accepted(&bed, "bob", &format!("{PASSWORD}:{next}")).await,
        "password+totp"
    );
}

#[tokio::test]
async fn a_right_password_without_its_code_proves_only_the_password() {
    let bed = Bed::new();
    bed.clients_with_password(&["bob"]).await;
    let totp = enrolled(&bed, "bob", &[Factor::Password, Factor::Totp]).await;

    let before = bed.snapshot().await;
    let step = pass(&bed, "bob", PASSWORD).await;
    assert!(
        matches!(&step, LoginStep::Continue(remaining) if remaining == &[Factor::Totp]),
        "{step:?}"
    );
    // Nothing recorded, nothing spent: the front end refuses and says why.
    assert_eq!(bed.snapshot().await, before);

    // Five digits are not a code: all of it is the password, which is wrong.
    let short = refused(
        &bed,
        "bob",
        &format!("{PASSWORD}:{}", &code(&bed, &totp, 0)[..5]),
    )
    .await;
    assert_eq!(short.detail, "password: wrong password");
    // Nor is a code before the password.
    let first = refused(&bed, "bob", &format!("{}:{PASSWORD}", code(&bed, &totp, 0))).await;
    assert_eq!(first.detail, "password: wrong password");
    assert!(
        bed.events_of(EventKind::Login, Outcome::Ok)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_wrong_code_is_refused_and_scored_and_spends_nothing() {
    let bed = Bed::new();
    bed.clients_with_password(&["bob"]).await;
    let totp = enrolled(&bed, "bob", &[Factor::Password, Factor::Totp]).await;

    let wrong = refused(
        &bed,
        "bob",
        &format!("{PASSWORD}:{}", wrong_code(&bed, &totp)),
    )
    .await;
    assert_eq!(wrong.detail, "totp: wrong or reused code");
    assert_eq!(
        score(&bed, BanSubject::Account(account("bob"))).await,
        u64::from(DefenderConfig::default().score_bad_credentials)
    );
    assert_eq!(bed.account("bob").await.totp.unwrap().last_step, None);

    // The right code still works, once.
    let now = code(&bed, &totp, 0);
    accepted(&bed, "bob", &format!("{PASSWORD}:{now}")).await;
    let replay = refused(&bed, "bob", &format!("{PASSWORD}:{now}")).await;
    assert_eq!(replay.detail, "totp: wrong or reused code");
}

#[tokio::test]
async fn a_wrong_password_leaves_the_code_unchecked_and_unspent() {
    let bed = Bed::new();
    bed.clients_with_password(&["bob"]).await;
    let totp = enrolled(&bed, "bob", &[Factor::Password, Factor::Totp]).await;
    let now = code(&bed, &totp, 0);

    // One read, the password's Argon2 and the refusal's relaxed unit: no write for the code.
    let (hops, step) = cost(
        &bed,
        pass(&bed, "bob", &format!("Not-the-password-99:{now}")),
    )
    .await;
    assert!(matches!(step, LoginStep::Refused), "{step:?}");
    assert_eq!(hops, (1, 1, 0), "(reads, writes, flushes)");
    let refusals = bed.events_of(EventKind::Login, Outcome::Refused).await;
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].detail, "password: wrong password");
    assert_eq!(bed.account("bob").await.totp.unwrap().last_step, None);
    assert_eq!(
        accepted(&bed, "bob", &format!("{PASSWORD}:{now}")).await,
        "password+totp"
    );
}

#[tokio::test]
async fn an_account_without_totp_keeps_a_password_that_ends_in_six_digits() {
    let bed = Bed::new();
    let odd = format!("{PASSWORD}:123456");
    bed.hub
        .add_account(
            &admin(),
            account("carol"),
            AccountKind::Client,
            Some(secret(&odd)),
            Vec::new(),
        )
        .await
        .unwrap();

    assert_eq!(accepted(&bed, "carol", &odd).await, "password");
    let cut = refused(&bed, "carol", PASSWORD).await;
    assert_eq!(cut.detail, "password: wrong password");

    // With TOTP, such a password takes its code after it: the split is at the last colon.
    let totp = enrolled(&bed, "carol", &[Factor::Password, Factor::Totp]).await;
    let now = code(&bed, &totp, 0);
    assert_eq!(
        accepted(&bed, "carol", &format!("{odd}:{now}")).await,
        "password+totp"
    );
}

#[tokio::test]
async fn an_unknown_account_is_refused_like_a_wrong_password() {
    let bed = Bed::new();
    bed.clients_with_password(&["bob"]).await;
    enrolled(&bed, "bob", &[Factor::Password, Factor::Totp]).await;

    let (unknown_cost, unknown) =
        cost(&bed, pass(&bed, "nobody", &format!("{PASSWORD}:123456"))).await;
    assert!(matches!(unknown, LoginStep::Refused), "{unknown:?}");
    let (known_cost, known) = cost(&bed, pass(&bed, "bob", "Not-the-password-99:123456")).await;
    assert!(matches!(known, LoginStep::Refused), "{known:?}");
    // The same work in the store (one read, one relaxed write of the refusal) for both.
    assert_eq!(unknown_cost, (1, 1, 0));
    assert_eq!(known_cost, unknown_cost);

    let refusals = bed.events_of(EventKind::Login, Outcome::Refused).await;
    assert_eq!(refusals[0].detail, "password: unknown account");
    assert_eq!(refusals[0].actor, "nobody");
    assert_eq!(refusals[1].detail, "password: wrong password");
    // Unknown: scored against the address only.
    assert!(score(&bed, BanSubject::Address("198.51.100.7".parse().unwrap())).await > 0);
    assert_eq!(score(&bed, BanSubject::Account(account("nobody"))).await, 0);

    // And it changes nothing but its event.
    let again = refused(&bed, "nobody", PASSWORD).await;
    assert_eq!(again.detail, "password: unknown account");
}

#[tokio::test]
async fn a_certificate_after_the_password_and_its_code_completes_the_login() {
    let bed = Bed::new();
    bed.clients_with_password(&["eve"]).await;
    let totp = enrolled(
        &bed,
        "eve",
        &[Factor::Password, Factor::Totp, Factor::Certificate],
    )
    .await;

    let mut progress = LoginProgress::default();
    let step = bed
        .hub
        .login_password_with_code(
            &mut progress,
            "eve",
            secret(&format!("{PASSWORD}:{}", code(&bed, &totp, 0))),
            Some(SOURCE.to_owned()),
            Protocol::Ftps,
        )
        .await
        .unwrap();
    assert!(
        matches!(&step, LoginStep::Continue(remaining) if remaining == &[Factor::Certificate]),
        "{step:?}"
    );
    let step = bed
        .hub
        .login(
            &mut progress,
            "eve",
            Credential::Certificate("eve".to_owned()),
            Some(SOURCE.to_owned()),
            Protocol::Ftps,
        )
        .await
        .unwrap();
    assert!(matches!(step, LoginStep::Accepted(..)), "{step:?}");
    let logins = bed.events_of(EventKind::Login, Outcome::Ok).await;
    assert_eq!(logins.last().unwrap().detail, "password+totp+certificate");
}

/// A vault for the tests: seals by reversing the hex of `context` and the text, so what it
/// stores is not the secret, and opens only what it sealed for the same context.
struct TestVault;

impl mailroom_core::Vault for TestVault {
    fn seal(&self, context: &str, plain: &str) -> mailroom_core::Result<String> {
        Ok(hex::encode(
            format!("{context}\0{plain}")
                .bytes()
                .rev()
                .collect::<Vec<u8>>(),
        ))
    }

    fn open(&self, context: &str, sealed: &str) -> mailroom_core::Result<String> {
        let mut bytes = hex::decode(sealed).map_err(|_| mailroom_core::CoreError::internal("x"))?;
        bytes.reverse();
        let text = String::from_utf8(bytes).map_err(|_| mailroom_core::CoreError::internal("x"))?;
        match text.split_once('\0') {
            Some((bound, plain)) if bound == context => Ok(plain.to_owned()),
            _ => Err(mailroom_core::CoreError::internal(
                "sealed for another account",
            )),
        }
    }
}

#[tokio::test]
async fn turning_the_vault_on_seals_plain_secrets_once_and_keeps_their_last_step() {
    let bed = Bed::new();
    bed.clients_with_password(&["bob", "carol"]).await;
    let totp = enrolled(&bed, "bob", &[Factor::Password, Factor::Totp]).await;
    accepted(&bed, "bob", &format!("{PASSWORD}:{}", code(&bed, &totp, 0))).await;
    let before = bed.account("bob").await.totp.unwrap();
    assert_eq!(before.secret.expose(), totp.expose());
    let spent = before.last_step;
    assert!(spent.is_some());

    // Without a vault there is nothing to seal, and nothing changes.
    assert_eq!(bed.hub.seal_totp_secrets(&admin()).await.unwrap(), 0);
    let sealing = Hub::new(bed.meta.clone(), bed.blobs.clone(), bed.clock.clone())
        .with_vault(std::sync::Arc::new(TestVault));
    let events = bed.events().await.len();
    assert_eq!(sealing.seal_totp_secrets(&admin()).await.unwrap(), 1);
    let after = bed.account("bob").await.totp.unwrap();
    assert!(after.secret.expose().starts_with("sealed1:"));
    assert!(!after.secret.expose().contains(totp.expose()));
    assert_eq!(
        after.last_step, spent,
        "the spent step was forgotten: a code could replay"
    );
    assert_eq!(after.recovery, before.recovery);
    let recorded = bed.events().await;
    assert_eq!(recorded.len(), events + 1);
    assert!(
        recorded
            .last()
            .unwrap()
            .detail
            .contains("seal totp secrets")
    );
    // Once only: a second pass finds nothing in plain and records nothing.
    assert_eq!(sealing.seal_totp_secrets(&admin()).await.unwrap(), 0);
    assert_eq!(bed.events().await.len(), events + 1);

    // The sealed secret checks codes on a hub with the vault; the spent code stays spent.
    let login = |code: String| {
        let sealing = &sealing;
        async move {
            sealing
                .login_password_with_code(
                    &mut LoginProgress::default(),
                    "bob",
                    secret(&format!("{PASSWORD}:{code}")),
                    Some(SOURCE.to_owned()),
                    Protocol::Ftps,
                )
                .await
                .unwrap()
        }
    };
    assert!(matches!(
        login(code(&bed, &totp, 0)).await,
        LoginStep::Refused
    ));
    bed.clock.advance(Duration::seconds(30));
    assert!(matches!(
        login(code(&bed, &totp, 0)).await,
        LoginStep::Accepted(..)
    ));
    // A hub without the vault cannot open it: the login fails rather than guess.
    bed.clock.advance(Duration::seconds(30));
    assert!(
        bed.hub
            .login_password_with_code(
                &mut LoginProgress::default(),
                "bob",
                secret(&format!("{PASSWORD}:{}", code(&bed, &totp, 0))),
                Some(SOURCE.to_owned()),
                Protocol::Ftps,
            )
            .await
            .is_err()
    );
}
