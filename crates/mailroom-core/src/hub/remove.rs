//! Removal and renames: acknowledging an inbox file, recalling a sent one, renaming a
//! pending one, and releasing a blob no live delivery needs.

use super::{ClientSession, Hub};
use crate::error::{CoreError, Result};
use crate::model::{Delivery, DeliveryState, EventKind, Outcome};
use crate::path::{Area, VirtualPath};
use crate::ports::{DeliveryQuery, Durability};

impl Hub {
    // ----- removal and renames ---------------------------------------------------------------

    /// Deletes a file: in the inbox it acknowledges the delivery; in the outbox it recalls a
    /// delivery that is not yet picked up (every pending one of a group fan-out).
    pub async fn remove(&self, session: &ClientSession, path: &VirtualPath) -> Result<()> {
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
        let actor = session.actor();
        match path {
            VirtualPath::File(Area::Inbox, sender, name) => {
                let account = self.session_account(session).await?;
                if !account.access.rights.delete {
                    return Err(CoreError::denied(format!(
                        "{} may not delete files from the inbox",
                        account.name
                    )));
                }
                let delivery = self
                    .visible_file(session, Area::Inbox, sender, name)
                    .await?;
                let event = self.delivery_event(&actor, EventKind::DeliveryAcknowledged, &delivery);
                let moved = self
                    .meta
                    .transition(
                        &delivery.id,
                        &DeliveryState::VISIBLE,
                        DeliveryState::Acknowledged,
                        std::slice::from_ref(&event),
                        Durability::Flush,
                    )
                    .await?;
                if !moved {
                    return Err(CoreError::not_found(format!("{path}: no such file")));
                }
                self.release_blob(&delivery).await;
                Ok(())
            }
            VirtualPath::File(Area::Outbox, target, name) => {
                let account = self.session_account(session).await?;
                if !account.access.rights.recall {
                    return Err(CoreError::denied(format!(
                        "{} may not recall files it sent",
                        account.name
                    )));
                }
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(session.account.clone()),
                        target: Some(target.clone()),
                        name: Some(name.clone()),
                        states: DeliveryState::LIVE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                if deliveries.is_empty() {
                    return Err(CoreError::not_found(format!("{path}: no such file")));
                }
                let mut recalled = 0;
                for delivery in &deliveries {
                    let event = self.delivery_event(&actor, EventKind::DeliveryRecalled, delivery);
                    if self
                        .meta
                        .transition(
                            &delivery.id,
                            &DeliveryState::RECALLABLE,
                            DeliveryState::Recalled,
                            std::slice::from_ref(&event),
                            Durability::Flush,
                        )
                        .await?
                    {
                        recalled += 1;
                        self.release_blob(delivery).await;
                    }
                }
                if recalled == 0 {
                    return Err(CoreError::conflict(format!(
                        "{path} was already picked up and can no longer be recalled"
                    )));
                }
                Ok(())
            }
            VirtualPath::File(Area::Sent, ..) => Err(CoreError::denied("receipts are read-only")),
            _ => Err(CoreError::denied(format!(
                "cannot remove {path}: the tree's folders are fixed"
            ))),
        }
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
        let sender = self.sender(session).await?;
        if let Some(reason) = sender.access.limits.name_refusal(to_name.as_str()) {
            return Err(CoreError::denied(format!(
                "{} may not rename to {to_name}: {reason}",
                sender.name
            )));
        }
        let deliveries = self
            .meta
            .deliveries(&DeliveryQuery {
                sender: Some(session.account.clone()),
                target: Some(from_target.clone()),
                name: Some(from_name.clone()),
                states: DeliveryState::RECALLABLE.to_vec(),
                ..DeliveryQuery::default()
            })
            .await?;
        if deliveries.is_empty() {
            return Err(CoreError::not_found(format!("{from}: no such file")));
        }
        let actor = session.actor();
        for delivery in &deliveries {
            let event = self.event(
                &actor,
                EventKind::DeliveryRenamed,
                delivery.id.to_string(),
                Outcome::Ok,
                format!("{from_name} -> {to_name}"),
            );
            self.meta
                .rename_delivery(&delivery.id, to_name, &event)
                .await?;
        }
        Ok(())
    }

    /// Deletes a delivery's blob when no live delivery references it any more.
    pub(super) async fn release_blob(&self, delivery: &Delivery) {
        match self.meta.blob_in_use(&delivery.blob_id).await {
            Ok(false) => {
                if let Err(err) = self.blobs.delete(&delivery.blob_id).await {
                    tracing::warn!(error = %err, blob = %delivery.blob_id, "blob not deleted; the next sweep will");
                }
            }
            Ok(true) => {}
            Err(err) => {
                tracing::warn!(error = %err, blob = %delivery.blob_id, "blob use unknown; the next sweep will decide");
            }
        }
    }
}
