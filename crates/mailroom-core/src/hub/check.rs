//! Checking before delivery, and the quarantine.
//!
//! While a scanner is configured ([`Hub::with_check`]), an upload's deliveries are committed
//! in `checking`: the sender's outbox and receipts show them as being checked, the recipient
//! sees nothing and can download nothing. The same unit queues one check job for the upload
//! (a group upload is checked once, whatever its fan-out). The job's verdict moves them on:
//! clean to `delivered` (with the `delivery.delivered` events rules act on, dispatch
//! included), found to `quarantined` (with the signature in a `delivery.quarantined` event).
//! A job that cannot get a verdict is retried with backoff, the deliveries staying hidden
//! (fail closed); once it is given up they are quarantined with the reason. Operators release
//! or delete quarantined deliveries, each an audited admin action that states a reason.

use super::download::ReadHandle;
use super::remove::unused_blobs;
use super::{Actor, Hub, Stamp};
use crate::error::{CoreError, Result};
use crate::model::{Delivery, DeliveryId, DeliveryState, EventKind, Outcome};
use crate::path::{Area, VirtualPath};
use crate::ports::{DeliveryQuery, Durability, EventQuery, Tx};

/// What a check found in an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckVerdict {
    /// Nothing: deliver it.
    Clean {
        /// The scanner, for the events (`clamd`, a command's name).
        by: String,
    },
    /// Something: quarantine it.
    Found {
        /// The scanner.
        by: String,
        /// What it found (the signature name).
        signature: String,
    },
    /// No verdict could be had (the scanner stayed unreachable): quarantine it, fail closed.
    Unchecked {
        /// Why.
        reason: String,
    },
}

impl Hub {
    /// Holds every new upload in `checking` until its check job says what it holds (see the
    /// module). Call it before the Hub is shared, and only with a worker that runs check jobs.
    pub fn with_check(mut self, on: bool) -> Hub {
        self.check = on;
        self
    }

    /// Whether uploads are checked before delivery.
    pub fn checks(&self) -> bool {
        self.check
    }

    /// The content of the upload `batch` for its check, or `None` when none of its deliveries
    /// waits for one any more (recalled, expired, or checked by an earlier run of the job).
    pub async fn check_content(&self, batch: DeliveryId) -> Result<Option<ReadHandle>> {
        let waiting = self
            .read_short(move |tx| {
                let Some(delivery) = waiting_for_check(tx, &batch)?.into_iter().next() else {
                    return Ok(None);
                };
                let inline = tx.inline_blob(&delivery.blob_id)?;
                Ok(Some((delivery, inline)))
            })
            .await?;
        match waiting {
            Some((delivery, inline)) => {
                let path =
                    VirtualPath::File(Area::Outbox, delivery.target.clone(), delivery.name.clone());
                Ok(Some(self.read_handle(path, delivery, inline).await?))
            }
            None => Ok(None),
        }
    }

    /// Records the verdict of the check of upload `batch` and moves its waiting deliveries
    /// on, in one unit (see [`CheckVerdict`]). Returns how many moved; none when the check
    /// ran before (a job run twice after a crash changes nothing the second time).
    pub async fn finish_check(&self, batch: DeliveryId, verdict: CheckVerdict) -> Result<usize> {
        let stamp = self.stamp.clone();
        self.write(Durability::Flush, move |tx| {
            settle_check(tx, &stamp, &batch, &verdict)
        })
        .await
    }

    /// The quarantined deliveries, oldest first, each with why it is there (the detail of
    /// its `delivery.quarantined` event: what was found, or why it could not be checked).
    pub async fn quarantine(&self) -> Result<Vec<(Delivery, String)>> {
        self.read(|tx| {
            let held = tx.deliveries(&DeliveryQuery {
                states: vec![DeliveryState::Quarantined],
                ..DeliveryQuery::default()
            })?;
            let Some(oldest) = held.iter().map(|d| d.updated).min() else {
                return Ok(Vec::new());
            };
            let events = tx.events(&EventQuery {
                kind: Some(EventKind::DeliveryQuarantined),
                since: Some(oldest - time::Duration::seconds(1)),
                ..EventQuery::default()
            })?;
            Ok(held
                .into_iter()
                .map(|delivery| {
                    let id = delivery.id.to_string();
                    let reason = events
                        .iter()
                        .rev()
                        .find(|e| e.object == id)
                        .and_then(|e| {
                            e.detail
                                .split_once(" bytes): ")
                                .map(|(_, why)| why.to_owned())
                        })
                        .unwrap_or_default();
                    (delivery, reason)
                })
                .collect())
        })
        .await
    }

    /// An operator releases a quarantined delivery to its recipient, stating why: it is
    /// delivered, with an admin event and the `delivery.delivered` event rules act on.
    /// NotFound unless it is quarantined; Conflict when its name was taken meanwhile by
    /// another live delivery between the same sender and recipient.
    pub async fn release_quarantined(
        &self,
        actor: &Actor,
        id: &DeliveryId,
        reason: &str,
    ) -> Result<Delivery> {
        self.leave_quarantine(actor, id, reason, DeliveryState::Delivered)
            .await
    }

    /// An operator deletes a quarantined delivery, stating why: it moves to `deleted` with an
    /// admin event, and its content goes once nothing else keeps it. NotFound unless it is
    /// quarantined.
    pub async fn delete_quarantined(
        &self,
        actor: &Actor,
        id: &DeliveryId,
        reason: &str,
    ) -> Result<Delivery> {
        self.leave_quarantine(actor, id, reason, DeliveryState::Deleted)
            .await
    }

    /// Moves a quarantined delivery to `to` (delivered or deleted) with its events in one
    /// unit, then deletes content nothing keeps any more.
    async fn leave_quarantine(
        &self,
        actor: &Actor,
        id: &DeliveryId,
        reason: &str,
        to: DeliveryState,
    ) -> Result<Delivery> {
        let reason = operator_reason(reason)?;
        let (stamp, actor, id) = (self.stamp.clone(), actor.clone(), *id);
        let (delivery, unused) = self
            .write(Durability::Flush, move |tx| {
                let delivery = quarantined(tx, &id)?;
                let now = stamp.now();
                tx.transition(&id, &[DeliveryState::Quarantined], to, now)?;
                let object = format!("delivery:{id}");
                let mut events = Vec::new();
                if to == DeliveryState::Delivered {
                    let detail = format!("released from quarantine: {reason}");
                    events.push(stamp.admin(&actor, object, detail));
                    events.push(stamp.delivery(&actor, EventKind::DeliveryDelivered, &delivery));
                } else {
                    let detail = format!(
                        "deleted from quarantine ({} -> {} {}): {reason}",
                        delivery.sender, delivery.recipient, delivery.name
                    );
                    events.push(stamp.admin(&actor, object, detail));
                }
                stamp.record(tx, &events)?;
                let unused = match to.is_kept() {
                    true => Vec::new(),
                    false => unused_blobs(tx, std::slice::from_ref(&delivery))?,
                };
                let moved = Delivery {
                    state: to,
                    updated: now,
                    ..delivery
                };
                Ok((moved, unused))
            })
            .await?;
        self.delete_blobs(&unused).await;
        Ok(delivery)
    }
}

/// The deliveries of upload `batch` that wait for their check.
fn waiting_for_check(tx: &mut dyn Tx, batch: &DeliveryId) -> Result<Vec<Delivery>> {
    tx.deliveries(&DeliveryQuery {
        batch: Some(*batch),
        states: vec![DeliveryState::Checking],
        ..DeliveryQuery::default()
    })
}

/// Moves the deliveries of `batch` that wait for their check on by `verdict`, with their
/// events, inside the caller's unit; returns how many moved.
pub(super) fn settle_check(
    tx: &mut dyn Tx,
    stamp: &Stamp,
    batch: &DeliveryId,
    verdict: &CheckVerdict,
) -> Result<usize> {
    let waiting = waiting_for_check(tx, batch)?;
    let now = stamp.now();
    let system = Actor::system();
    let mut events = Vec::new();
    for delivery in &waiting {
        let (to, event) = match verdict {
            CheckVerdict::Clean { by } => {
                let mut event = stamp.delivery(&system, EventKind::DeliveryDelivered, delivery);
                event.detail.push_str(&format!(", checked by {by}"));
                (DeliveryState::Delivered, event)
            }
            CheckVerdict::Found { by, signature } => {
                let mut event = stamp.delivery(&system, EventKind::DeliveryQuarantined, delivery);
                event.outcome = Outcome::Refused;
                event.detail.push_str(&format!(": {by} found {signature}"));
                (DeliveryState::Quarantined, event)
            }
            CheckVerdict::Unchecked { reason } => {
                let mut event = stamp.delivery(&system, EventKind::DeliveryQuarantined, delivery);
                event.outcome = Outcome::Failed;
                event.detail.push_str(&format!(": not checked: {reason}"));
                (DeliveryState::Quarantined, event)
            }
        };
        if tx.transition(&delivery.id, &[DeliveryState::Checking], to, now)? {
            events.push(event);
        }
    }
    stamp.record(tx, &events)?;
    Ok(events.len())
}

/// A quarantined delivery by id; NotFound otherwise.
fn quarantined(tx: &mut dyn Tx, id: &DeliveryId) -> Result<Delivery> {
    match tx.delivery(id)? {
        Some(delivery) if delivery.state == DeliveryState::Quarantined => Ok(delivery),
        Some(delivery) => Err(CoreError::not_found(format!(
            "delivery {id} is not quarantined (it is {})",
            delivery.state.as_str()
        ))),
        None => Err(CoreError::not_found(format!("no delivery {id}"))),
    }
}

/// An operator's reason, as stored: required, one line, at most 500 characters.
fn operator_reason(reason: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CoreError::invalid(
            "state a reason (it is kept in the audit trail)",
        ));
    }
    if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            "a reason is one line of at most 500 characters",
        ));
    }
    Ok(reason.to_owned())
}
