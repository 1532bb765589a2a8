//! Deliveries named by id rather than by path, for protocols that list and address them that
//! way (the HTTPS API): a client's inbox and sent items, download, acknowledge and recall.
//!
//! Each call first checks that the id is the caller's (addressed to it, or sent by it); any
//! other id, whoever's it is, is NotFound, and nothing changes. Then it does what the same
//! action does on the virtual tree: it builds the delivery's own path
//! (`/inbox/<sender>/<name>`, `/outbox/<target>/<name>`) and calls [`Hub::open_read`] or
//! [`Hub::remove`], so rights, states, events and blob release are the tree's, not a copy.

use super::{ClientSession, Hub, ReadHandle};
use crate::error::{CoreError, Result};
use crate::model::{Delivery, DeliveryId, DeliveryState, EventKind};
use crate::path::{Area, VirtualPath};
use crate::ports::DeliveryQuery;

impl Hub {
    /// The deliveries in the session's inbox (delivered or picked up), oldest first.
    pub async fn inbox(&self, session: &ClientSession) -> Result<Vec<Delivery>> {
        self.meta
            .deliveries(&DeliveryQuery {
                recipient: Some(session.account.clone()),
                states: DeliveryState::VISIBLE.to_vec(),
                ..DeliveryQuery::default()
            })
            .await
    }

    /// Every delivery the session's account sent, in any state (its receipts), oldest first.
    pub async fn sent(&self, session: &ClientSession) -> Result<Vec<Delivery>> {
        self.meta
            .deliveries(&DeliveryQuery {
                sender: Some(session.account.clone()),
                ..DeliveryQuery::default()
            })
            .await
    }

    /// One delivery of the session's inbox. NotFound for any other id.
    pub async fn inbox_delivery(
        &self,
        session: &ClientSession,
        id: &DeliveryId,
    ) -> Result<Delivery> {
        match self.meta.delivery(id).await? {
            Some(d)
                if d.recipient == session.account && DeliveryState::VISIBLE.contains(&d.state) =>
            {
                Ok(d)
            }
            _ => Err(CoreError::not_found(format!(
                "no delivery {id} in your inbox"
            ))),
        }
    }

    /// One delivery the session's account sent. NotFound for any other id.
    pub async fn sent_delivery(
        &self,
        session: &ClientSession,
        id: &DeliveryId,
    ) -> Result<Delivery> {
        match self.meta.delivery(id).await? {
            Some(d) if d.sender == session.account => Ok(d),
            _ => Err(CoreError::not_found(format!("you sent no delivery {id}"))),
        }
    }

    /// Opens an inbox delivery for reading, as `/inbox/<sender>/<name>`; close it with
    /// [`Hub::close_read`], which marks it picked up after a complete read.
    pub async fn open_delivery(
        &self,
        session: &ClientSession,
        id: &DeliveryId,
    ) -> Result<ReadHandle> {
        let delivery = self.inbox_delivery(session, id).await?;
        let handle = self.open_read(session, &inbox_path(&delivery)).await?;
        Ok(handle)
    }

    /// Acknowledges (deletes) an inbox delivery, as removing `/inbox/<sender>/<name>` does.
    pub async fn acknowledge(&self, session: &ClientSession, id: &DeliveryId) -> Result<()> {
        let delivery = match self.inbox_delivery(session, id).await {
            Ok(delivery) => delivery,
            Err(err) => {
                self.record_refusal_of(
                    session,
                    EventKind::DeliveryAcknowledged,
                    id.to_string(),
                    &err,
                )
                .await;
                return Err(err);
            }
        };
        self.remove(session, &inbox_path(&delivery)).await
    }

    /// Recalls a delivery the session sent, as removing `/outbox/<target>/<name>` does: a
    /// group fan-out is recalled as a whole. Refused once it was picked up or has ended.
    pub async fn recall(&self, session: &ClientSession, id: &DeliveryId) -> Result<()> {
        let delivery = match self.sent_delivery(session, id).await {
            Ok(delivery) if !delivery.state.is_live() => Err(CoreError::conflict(format!(
                "delivery {id} is {} and can no longer be recalled",
                delivery.state.as_str()
            ))),
            other => other,
        };
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(err) => {
                self.record_refusal_of(session, EventKind::DeliveryRecalled, id.to_string(), &err)
                    .await;
                return Err(err);
            }
        };
        let path = VirtualPath::File(Area::Outbox, delivery.target.clone(), delivery.name.clone());
        self.remove(session, &path).await
    }
}

/// Where a delivery sits in its recipient's tree.
fn inbox_path(delivery: &Delivery) -> VirtualPath {
    VirtualPath::File(Area::Inbox, delivery.sender.clone(), delivery.name.clone())
}
