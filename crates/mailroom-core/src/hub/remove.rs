//! Removal and renames: acknowledging an inbox file, recalling a sent one, renaming a
//! pending one, and releasing a blob no live delivery needs.

use super::policy_cache::PolicyCache;
use super::tree::{no_such_file, visible_file};
use super::upload::{may_send, session_policy};
use super::{ClientSession, Hub, Stamp};
use crate::error::{CoreError, Result};
use crate::model::{BlobId, Delivery, DeliveryState, EventKind, Outcome};
use crate::names::{AccountName, FileName};
use crate::path::{Area, VirtualPath};
use crate::ports::{DeliveryQuery, Durability, Tx};

impl Hub {
    // ----- removal and renames ---------------------------------------------------------------

    /// Deletes a file: in the inbox it acknowledges the delivery; in the outbox it recalls a
    /// delivery that is not yet picked up (every pending one of a group fan-out).
    pub async fn remove(&self, session: &ClientSession, path: &VirtualPath) -> Result<()> {
        self.file_operation();
        let result = self.remove_inner(session, path).await;
        if let Err(err) = &result {
            let kind = match path {
                VirtualPath::File(Area::Outbox, ..) => EventKind::DeliveryRecalled,
                _ => EventKind::DeliveryAcknowledged,
            };
            self.record_refusal(session, kind, path, err).await;
        }
        result
    }

    async fn remove_inner(&self, session: &ClientSession, path: &VirtualPath) -> Result<()> {
        let (cache, stamp, session_c) = (self.policy.clone(), self.stamp.clone(), session.clone());
        let released = match path.clone() {
            VirtualPath::File(Area::Inbox, sender, name) => {
                self.write(Durability::Flush, move |tx| {
                    acknowledge_in(tx, &cache, &stamp, &session_c, |tx| {
                        visible_file(tx, &session_c, Area::Inbox, &sender, &name)
                    })
                })
                .await?
            }
            VirtualPath::File(Area::Outbox, target, name) => {
                self.write(Durability::Flush, move |tx| {
                    recall_in(tx, &cache, &stamp, &session_c, &target, &name)
                })
                .await?
            }
            VirtualPath::File(Area::Sent, ..) => {
                return Err(CoreError::denied("receipts are read-only"));
            }
            _ => {
                return Err(CoreError::denied(format!(
                    "cannot remove {path}: the tree's folders are fixed"
                )));
            }
        };
        self.delete_blobs(&released).await;
        Ok(())
    }

    /// Renames a pending delivery within one outbox folder. Nothing is ever overwritten: a
    /// taken name is refused. Renaming is sending under a new name: it needs the right to
    /// send, and the new name must pass the sender's file-name rules.
    pub async fn rename(
        &self,
        session: &ClientSession,
        from: &VirtualPath,
        to: &VirtualPath,
    ) -> Result<()> {
        self.file_operation();
        let result = self.rename_inner(session, from, to).await;
        if let Err(err) = &result {
            self.record_refusal(session, EventKind::DeliveryRenamed, from, err)
                .await;
        }
        result
    }

    async fn rename_inner(
        &self,
        session: &ClientSession,
        from: &VirtualPath,
        to: &VirtualPath,
    ) -> Result<()> {
        let (
            VirtualPath::File(Area::Outbox, from_target, from_name),
            VirtualPath::File(Area::Outbox, to_target, to_name),
        ) = (from, to)
        else {
            return Err(CoreError::denied(
                "only files in an outbox folder can be renamed, within that folder",
            ));
        };
        if from_target != to_target {
            return Err(CoreError::denied(
                "a file cannot move between outbox folders: recall it and send it again",
            ));
        }
        if from_name == to_name {
            return Ok(());
        }
        let (cache, stamp, session) = (self.policy.clone(), self.stamp.clone(), session.clone());
        let (target, from_name, to_name) =
            (from_target.clone(), from_name.clone(), to_name.clone());
        // Every delivery of a group fan-out is renamed in the one transaction, or none is.
        self.write(Durability::Flush, move |tx| {
            let policy = cache.get(tx)?;
            let sender = may_send(&policy, &session.account)?;
            if let Some(reason) = sender.access.limits.name_refusal(to_name.as_str()) {
                return Err(CoreError::denied(format!(
                    "{} may not rename to {to_name}: {reason}",
                    session.account
                )));
            }
            let deliveries = tx.deliveries(&DeliveryQuery {
                sender: Some(session.account.clone()),
                target: Some(target.clone()),
                name: Some(from_name.clone()),
                states: DeliveryState::RECALLABLE.to_vec(),
                ..DeliveryQuery::default()
            })?;
            if deliveries.is_empty() {
                return Err(no_such_file(Area::Outbox, &target, &from_name));
            }
            // Uploads take a name free in the whole outbox folder (a group's earlier fan-outs
            // may reach other members); a rename must keep that, not only what the store's
            // per-recipient uniqueness checks.
            let taken = tx.deliveries(&DeliveryQuery {
                sender: Some(session.account.clone()),
                target: Some(target.clone()),
                name: Some(to_name.clone()),
                states: DeliveryState::LIVE.to_vec(),
                limit: Some(1),
                ..DeliveryQuery::default()
            })?;
            if !taken.is_empty() {
                return Err(CoreError::conflict(format!(
                    "/outbox/{target}/{to_name} exists already; nothing is ever overwritten"
                )));
            }
            let actor = session.actor();
            let mut events = Vec::with_capacity(deliveries.len());
            for delivery in &deliveries {
                tx.rename_delivery(&delivery.id, &to_name)?;
                events.push(stamp.event(
                    &actor,
                    EventKind::DeliveryRenamed,
                    delivery.id.to_string(),
                    Outcome::Ok,
                    format!("{from_name} -> {to_name}"),
                ));
            }
            stamp.record(tx, &events)
        })
        .await
    }

    /// Deletes blobs that no live delivery references any more; a failure is left to the
    /// next sweep.
    pub(super) async fn delete_blobs(&self, blobs: &[BlobId]) {
        for blob in blobs {
            if let Err(err) = self.blobs.delete(blob).await {
                tracing::warn!(error = %err, blob = %blob, "blob not deleted; the next sweep will");
            }
        }
    }
}

/// The blobs of `deliveries`, which just left the live states, that no live delivery
/// references any more, each once: what the caller deletes after the commit. (Inline blobs
/// went with their last delivery in the same transaction.)
pub(super) fn unused_blobs(tx: &mut dyn Tx, deliveries: &[Delivery]) -> Result<Vec<BlobId>> {
    let mut unused: Vec<BlobId> = Vec::new();
    for delivery in deliveries {
        if !unused.contains(&delivery.blob_id) && !tx.blob_in_use(&delivery.blob_id)? {
            unused.push(delivery.blob_id.clone());
        }
    }
    Ok(unused)
}

/// Acknowledges the inbox delivery that `find` names, for `session`'s account: the right to
/// delete, then the move to `acknowledged` with its event. Returns the blobs left unused.
pub(super) fn acknowledge_in(
    tx: &mut dyn Tx,
    cache: &PolicyCache,
    stamp: &Stamp,
    session: &ClientSession,
    find: impl FnOnce(&mut dyn Tx) -> Result<Delivery>,
) -> Result<Vec<BlobId>> {
    acknowledge_all_in(tx, cache, stamp, session, |tx| find(tx).map(|d| vec![d]))
}

/// Acknowledges every inbox delivery that `find` names, for `session`'s account, in the
/// caller's unit: the right to delete (checked once, before `find` looks anything up), then
/// each move to `acknowledged` with its event. One delivery that cannot move fails the whole
/// unit, so the caller's transaction keeps none of the moves. Returns the blobs left unused.
pub(super) fn acknowledge_all_in(
    tx: &mut dyn Tx,
    cache: &PolicyCache,
    stamp: &Stamp,
    session: &ClientSession,
    find: impl FnOnce(&mut dyn Tx) -> Result<Vec<Delivery>>,
) -> Result<Vec<BlobId>> {
    let policy = cache.get(tx)?;
    let account = session_policy(&policy, &session.account)?;
    if !account.access.rights.delete {
        return Err(CoreError::denied(format!(
            "{} may not delete files from the inbox",
            session.account
        )));
    }
    let deliveries = find(tx)?;
    let actor = session.actor();
    let mut events = Vec::with_capacity(deliveries.len());
    for delivery in &deliveries {
        let event = stamp.delivery(&actor, EventKind::DeliveryAcknowledged, delivery);
        let moved = tx.transition(
            &delivery.id,
            &DeliveryState::VISIBLE,
            DeliveryState::Acknowledged,
            event.time,
        )?;
        if !moved {
            return Err(no_such_file(Area::Inbox, &delivery.sender, &delivery.name));
        }
        events.push(event);
    }
    stamp.record(tx, &events)?;
    unused_blobs(tx, &deliveries)
}

/// Recalls what `session`'s account sent to `/outbox/<target>/<name>` and nobody picked up
/// yet (every pending delivery of a group fan-out): the right to recall, then the moves to
/// `recalled` with their events. Returns the blobs left unused.
pub(super) fn recall_in(
    tx: &mut dyn Tx,
    cache: &PolicyCache,
    stamp: &Stamp,
    session: &ClientSession,
    target: &AccountName,
    name: &FileName,
) -> Result<Vec<BlobId>> {
    let policy = cache.get(tx)?;
    let account = session_policy(&policy, &session.account)?;
    if !account.access.rights.recall {
        return Err(CoreError::denied(format!(
            "{} may not recall files it sent",
            session.account
        )));
    }
    let deliveries = tx.deliveries(&DeliveryQuery {
        sender: Some(session.account.clone()),
        target: Some(target.clone()),
        name: Some(name.clone()),
        states: DeliveryState::LIVE.to_vec(),
        ..DeliveryQuery::default()
    })?;
    if deliveries.is_empty() {
        return Err(no_such_file(Area::Outbox, target, name));
    }
    let actor = session.actor();
    let mut recalled = Vec::new();
    let mut events = Vec::new();
    for delivery in deliveries {
        let event = stamp.delivery(&actor, EventKind::DeliveryRecalled, &delivery);
        if tx.transition(
            &delivery.id,
            &DeliveryState::RECALLABLE,
            DeliveryState::Recalled,
            event.time,
        )? {
            events.push(event);
            recalled.push(delivery);
        }
    }
    if recalled.is_empty() {
        return Err(CoreError::conflict(format!(
            "/outbox/{target}/{name} was already picked up and can no longer be recalled"
        )));
    }
    stamp.record(tx, &events)?;
    unused_blobs(tx, &recalled)
}
