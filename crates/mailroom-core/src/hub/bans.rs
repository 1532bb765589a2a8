//! Bans: scoring offences in the metadata store (so every node's count), placing bans when a
//! score reaches the threshold or an administrator asks, and the cache of bans in force that
//! every admission reads.

use std::collections::HashMap;
use std::net::IpAddr;

use time::OffsetDateTime;

use super::login::rfc3339;
use super::{Actor, Hub, Stamp, printable};
use crate::access::{Ban, BanSubject};
use crate::defender::{Offence, PRUNE_PER_UNIT};
use crate::error::{CoreError, Result};
use crate::model::{Event, EventKind, Outcome, Protocol};
use crate::names::AccountName;
use crate::ports::{Durability, Tx};

/// How often the ban list is re-read from the metadata store, so bans placed by another
/// process (the admin CLI, another node) take effect.
const BAN_REFRESH: time::Duration = time::Duration::seconds(2);

/// When a ban too long for the calendar ends (within what the metadata store keeps).
const MAX_BAN_END: OffsetDateTime = time::macros::datetime!(2200-01-01 00:00 UTC);

/// The longest ban an administrator may place: ten years.
const MAX_MANUAL_BAN: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

#[derive(Default)]
pub(super) struct BanCache {
    loaded: Option<OffsetDateTime>,
    active: HashMap<BanSubject, OffsetDateTime>,
}

impl Hub {
    // ----- defence ---------------------------------------------------------------------------

    /// Records `events` (a refusal's; may be none) and scores `offence` from `ip` (and against
    /// `account`), in one relaxed unit: each subject's offence is added to the store and its
    /// score summed over the window, counting every node's offences; a subject that reaches
    /// the threshold is banned in the same unit (the ban and its `ban` event; its offences go,
    /// so its score starts again). The unit also prunes a few old offences. Nothing is scored
    /// from the safe list, without an address, or when the defender is off.
    ///
    /// The ban commits with the refusal's relaxed durability: should the machine crash before
    /// the next flushed commit, the ban is lost only together with the offences that earned it.
    pub(super) async fn record_and_score(
        &self,
        events: Vec<Event>,
        ip: Option<IpAddr>,
        account: Option<AccountName>,
        offence: Offence,
    ) -> Result<()> {
        let scored = match ip {
            Some(ip) => self.auth.defender.offences(ip, account, offence),
            None => Vec::new(),
        };
        if scored.is_empty() {
            return if events.is_empty() {
                Ok(())
            } else {
                self.record(events, Durability::Relaxed).await
            };
        }
        let defender = self.auth.defender.clone();
        let now = self.clock.now();
        let since = defender.window_start(now);
        let keep = u64::try_from(defender.config().max_tracked).unwrap_or(u64::MAX);
        let stamp = self.stamp.clone();
        let actor = Actor::system();
        let bans = self
            .write(Durability::Relaxed, move |tx| {
                stamp.record(tx, &events)?;
                let mut bans = Vec::new();
                for (subject, points) in scored {
                    tx.add_offence(&subject, now, points)?;
                    if !defender.reached(tx.offence_score(&subject, since)?) {
                        continue;
                    }
                    // Banned: the score starts again from nothing.
                    tx.forget_offences(&subject)?;
                    bans.push(ban_in_unit(
                        tx,
                        &stamp,
                        &actor,
                        subject,
                        |level| defender.config().ban_length(level),
                        defender.ban_reason(),
                    )?);
                }
                tx.prune_offences(since, keep, PRUNE_PER_UNIT)?;
                Ok(bans)
            })
            .await?;
        for ban in bans {
            self.banned(&Actor::system(), ban);
        }
        Ok(())
    }

    /// Places the next ban of `subject`, in one unit with its event: its level is one more
    /// than the subject's last ban, and `length` says how long a ban of that level lasts.
    async fn place_ban(
        &self,
        actor: &Actor,
        subject: BanSubject,
        length: impl FnOnce(u32) -> std::time::Duration + Send + 'static,
        reason: String,
    ) -> Result<Ban> {
        let (stamp, unit_actor) = (self.stamp.clone(), actor.clone());
        let ban = self
            .write(Durability::Flush, move |tx| {
                ban_in_unit(tx, &stamp, &unit_actor, subject, length, reason)
            })
            .await?;
        self.banned(actor, ban.clone());
        Ok(ban)
    }

    /// After a ban committed: logs one the defender placed, and puts it in this node's cache
    /// at once (other nodes read it within [`BAN_REFRESH`]).
    fn banned(&self, actor: &Actor, ban: Ban) {
        if actor.protocol == Protocol::System {
            tracing::warn!(subject = %ban.subject, until = %rfc3339(ban.until), level = ban.level, reason = %ban.reason, "ban");
        }
        self.auth
            .bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .active
            .insert(ban.subject, ban.until);
    }

    /// When the ban of `subject` ends, if one is in force. Reads a cache refreshed from the
    /// metadata store every two seconds.
    pub(super) async fn active_ban(&self, subject: &BanSubject) -> Result<Option<OffsetDateTime>> {
        let now = self.clock.now();
        if self.bans_stale() {
            self.refresh_bans().await?;
        }
        let cache = self
            .auth
            .bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(cache
            .active
            .get(subject)
            .copied()
            .filter(|until| *until > now))
    }

    /// Whether the cache of bans is due to be read again. A unit that runs anyway may read the
    /// bans with its other work and hand them to [`Hub::cache_bans`], saving the hop.
    pub(super) fn bans_stale(&self) -> bool {
        let now = self.clock.now();
        let cache = self
            .auth
            .bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .loaded
            .is_none_or(|at| at + BAN_REFRESH <= now || at > now)
    }

    /// Finds a bearer credential with `find` and its account's policy (named by `account`) in
    /// one short read, the bans riding along when their cache is due: still one hop per
    /// request. `None` when `find` found nothing.
    pub(super) async fn credential_with_account<R: Send + 'static>(
        &self,
        find: impl FnOnce(&mut dyn crate::ports::Tx) -> Result<Option<R>> + Send + 'static,
        account: fn(&R) -> &crate::names::AccountName,
    ) -> Result<Option<(R, Option<super::policy_cache::AccountPolicy>)>> {
        let cache = self.policy.clone();
        let stale = self.bans_stale();
        let (found, bans) = self
            .read_short(move |tx| {
                let bans = if stale { Some(tx.bans()?) } else { None };
                let Some(record) = find(tx)? else {
                    return Ok((None, bans));
                };
                let policy = cache.get(tx)?.account(account(&record)).cloned();
                Ok((Some((record, policy)), bans))
            })
            .await?;
        if let Some(bans) = bans {
            self.cache_bans(bans);
        }
        Ok(found)
    }

    /// Re-reads the bans in force from the metadata store.
    pub async fn refresh_bans(&self) -> Result<()> {
        let bans = self.read(|tx| tx.bans()).await?;
        self.cache_bans(bans);
        Ok(())
    }

    /// Replaces the cache of bans in force with those of `bans` (all bans, as read).
    pub(super) fn cache_bans(&self, bans: Vec<Ban>) {
        let now = self.clock.now();
        let active: HashMap<BanSubject, OffsetDateTime> = bans
            .into_iter()
            .filter(|b| b.active(now))
            .map(|b| (b.subject, b.until))
            .collect();
        let mut cache = self
            .auth
            .bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.active = active;
        cache.loaded = Some(now);
    }

    /// Every ban, in force or ended (kept for the growth of the next one).
    pub async fn bans(&self) -> Result<Vec<Ban>> {
        self.read(|tx| tx.bans()).await
    }

    /// Bans an address or an account for `length`, by hand. The safe list cannot be banned.
    pub async fn ban(
        &self,
        actor: &Actor,
        subject: BanSubject,
        length: std::time::Duration,
        reason: &str,
    ) -> Result<Ban> {
        if let BanSubject::Address(ip) = &subject
            && self.auth.defender.config().is_safe(*ip)
        {
            return Err(CoreError::denied(format!(
                "{ip} is on the safe list and is never banned"
            )));
        }
        if length.is_zero() {
            return Err(CoreError::invalid("a ban must last longer than zero"));
        }
        if length > MAX_MANUAL_BAN {
            return Err(CoreError::invalid("a ban lasts at most 3650 days"));
        }
        let reason = if reason.trim().is_empty() {
            "banned by an administrator".to_owned()
        } else {
            printable(reason)
        };
        self.place_ban(actor, subject, move |_| length, reason)
            .await
    }

    /// Lifts a ban and forgets its history and score.
    pub async fn unban(&self, actor: &Actor, subject: &BanSubject) -> Result<()> {
        let event = self.stamp.event(
            actor,
            EventKind::Ban,
            subject.key(),
            Outcome::Ok,
            "ban lifted".to_owned(),
        );
        let unit_subject = subject.clone();
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            tx.delete_ban(&unit_subject)?;
            tx.forget_offences(&unit_subject)?;
            stamp.record(tx, &[event])
        })
        .await?;
        self.auth
            .bans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .active
            .remove(subject);
        Ok(())
    }
}

/// Places the next ban of `subject` inside a unit, with its `ban` event: its level is one more
/// than the subject's last ban (so repeat bans grow), and `length` says how long a ban of that
/// level lasts.
fn ban_in_unit(
    tx: &mut dyn Tx,
    stamp: &Stamp,
    actor: &Actor,
    subject: BanSubject,
    length: impl FnOnce(u32) -> std::time::Duration,
    reason: String,
) -> Result<Ban> {
    let level = tx.ban(&subject)?.map_or(1, |b| b.level.saturating_add(1));
    let length = length(level);
    let now = stamp.now();
    // A length past the calendar's end (a typo of many zeros) bans until its end.
    let until = time::Duration::try_from(length)
        .ok()
        .and_then(|length| now.checked_add(length))
        .unwrap_or(MAX_BAN_END);
    let event = stamp.event(
        actor,
        EventKind::Ban,
        subject.key(),
        Outcome::Ok,
        format!(
            "banned until {} (ban #{level}, {} min): {reason}",
            rfc3339(until),
            length.as_secs() / 60
        ),
    );
    let ban = Ban {
        subject,
        until,
        level,
        reason,
        created: now,
    };
    tx.put_ban(&ban)?;
    stamp.record(tx, &[event])?;
    Ok(ban)
}
