//! Deliveries named by id rather than by path, for protocols that list and address them that
//! way (the HTTPS API): a client's inbox and sent items, download, acknowledge and recall,
//! and the batch calls behind the web inbox's selection (several deliveries read at once for
//! one ZIP, several acknowledged in one transaction, at most [`MAX_BATCH`]).
//!
//! Each call first checks that the id is the caller's (addressed to it, or sent by it); any
//! other id, whoever's it is, is NotFound, and nothing changes. Then, in the same unit of
//! work, it does what the same action does on the virtual tree at the delivery's own path
//! (`/inbox/<sender>/<name>`, `/outbox/<target>/<name>`), through the same functions, so
//! rights, states, events and blob release are the tree's, not a copy.

use super::remove::{acknowledge_all_in, acknowledge_in, recall_in};
use super::{ClientSession, Hub, ReadHandle};
use crate::error::{CoreError, Result};
use crate::model::{Delivery, DeliveryId, DeliveryState, EventKind};
use crate::names::AccountName;
use crate::path::{Area, VirtualPath};
use crate::ports::{DeliveryOrder, DeliveryQuery, DeliverySort, Durability, Tx};

/// The most deliveries one page of a listing holds.
pub const MAX_PAGE_SIZE: u32 = 500;
/// The longest name filter a listing takes, in bytes (a file name's own limit).
pub const MAX_NAME_FILTER: usize = 255;
/// The most deliveries one call of [`Hub::inbox_deliveries`] or [`Hub::acknowledge_many`]
/// names.
pub const MAX_BATCH: usize = 1000;

/// Which page of a listing to show: its order, a filter on the name, and where it starts.
/// Front ends build it from their parameters; [`Hub::inbox_page`] and [`Hub::sent_page`]
/// refuse one out of bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The order; the inbox cannot sort by recipient, nor the sent items by sender.
    pub order: DeliveryOrder,
    /// Only names that contain this text (ASCII letters without regard to case).
    pub name_contains: Option<String>,
    /// How many to skip: the page's first row.
    pub offset: u32,
    /// How many to show, 1 to [`MAX_PAGE_SIZE`].
    pub limit: u32,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct ListedPage {
    /// The page's deliveries, in the listing's order.
    pub deliveries: Vec<Delivery>,
    /// Whether another page follows.
    pub more: bool,
}

impl Hub {
    /// The deliveries in the session's inbox (delivered or picked up), oldest first.
    pub async fn inbox(&self, session: &ClientSession) -> Result<Vec<Delivery>> {
        self.file_operation();
        let query = DeliveryQuery {
            recipient: Some(session.account.clone()),
            states: DeliveryState::VISIBLE.to_vec(),
            ..DeliveryQuery::default()
        };
        self.read_as(session, move |tx| tx.deliveries(&query)).await
    }

    /// Every delivery the session's account sent, in any state (its receipts), oldest first.
    pub async fn sent(&self, session: &ClientSession) -> Result<Vec<Delivery>> {
        self.file_operation();
        let query = DeliveryQuery {
            sender: Some(session.account.clone()),
            ..DeliveryQuery::default()
        };
        self.read_as(session, move |tx| tx.deliveries(&query)).await
    }

    /// One page of the session's inbox (delivered or picked up), in the listing's order. The
    /// store does the paging: one query for the page and one row more, to tell whether
    /// another follows. InvalidName for a listing out of bounds, before anything is read.
    pub async fn inbox_page(
        &self,
        session: &ClientSession,
        listing: &Listing,
    ) -> Result<ListedPage> {
        check_listing(listing, DeliverySort::Recipient)?;
        self.file_operation();
        let query = DeliveryQuery {
            recipient: Some(session.account.clone()),
            states: DeliveryState::VISIBLE.to_vec(),
            ..page_query(listing)
        };
        let deliveries = self
            .read_as(session, move |tx| tx.deliveries(&query))
            .await?;
        Ok(page_of(deliveries, listing.limit))
    }

    /// One page of what the session's account sent, in any state, in the listing's order;
    /// as [`Hub::inbox_page`].
    pub async fn sent_page(
        &self,
        session: &ClientSession,
        listing: &Listing,
    ) -> Result<ListedPage> {
        check_listing(listing, DeliverySort::Sender)?;
        self.file_operation();
        let query = DeliveryQuery {
            sender: Some(session.account.clone()),
            ..page_query(listing)
        };
        let deliveries = self
            .read_as(session, move |tx| tx.deliveries(&query))
            .await?;
        Ok(page_of(deliveries, listing.limit))
    }

    /// One delivery of the session's inbox. NotFound for any other id.
    pub async fn inbox_delivery(
        &self,
        session: &ClientSession,
        id: &DeliveryId,
    ) -> Result<Delivery> {
        self.file_operation();
        let (me, id) = (session.account.clone(), *id);
        self.read_short_as(session, move |tx| inbox_delivery_in(tx, &me, &id))
            .await
    }

    /// One delivery the session's account sent. NotFound for any other id.
    pub async fn sent_delivery(
        &self,
        session: &ClientSession,
        id: &DeliveryId,
    ) -> Result<Delivery> {
        self.file_operation();
        let (me, id) = (session.account.clone(), *id);
        self.read_short_as(session, move |tx| sent_delivery_in(tx, &me, &id))
            .await
    }

    /// Opens an inbox delivery for reading, as `/inbox/<sender>/<name>`; close it with
    /// [`Hub::close_read`], which marks it picked up after a complete read.
    pub async fn open_delivery(
        &self,
        session: &ClientSession,
        id: &DeliveryId,
    ) -> Result<ReadHandle> {
        self.file_operation();
        let (me, id) = (session.account.clone(), *id);
        let (delivery, inline) = self
            .read_short_as(session, move |tx| {
                let delivery = inbox_delivery_in(tx, &me, &id)?;
                let inline = tx.inline_blob(&delivery.blob_id)?;
                Ok((delivery, inline))
            })
            .await?;
        self.read_handle(inbox_path(&delivery), delivery, inline)
            .await
    }

    /// Acknowledges (deletes) an inbox delivery, as removing `/inbox/<sender>/<name>` does,
    /// in one unit.
    pub async fn acknowledge(&self, session: &ClientSession, id: &DeliveryId) -> Result<()> {
        self.file_operation();
        let (cache, stamp, session_c, id_c) = (
            self.policy.clone(),
            self.stamp.clone(),
            session.clone(),
            *id,
        );
        let result = self
            .write(Durability::Flush, move |tx| {
                let delivery = inbox_delivery_in(tx, &session_c.account, &id_c)?;
                acknowledge_in(tx, &cache, &stamp, &session_c, |_| Ok(delivery))
            })
            .await;
        match result {
            Ok(released) => {
                self.delete_blobs(&released).await;
                Ok(())
            }
            Err(err) => {
                self.record_refusal_of(
                    session,
                    EventKind::DeliveryAcknowledged,
                    id.to_string(),
                    &err,
                )
                .await;
                Err(err)
            }
        }
    }

    /// Several deliveries of the session's inbox, in the order of `ids` (an id named twice
    /// counts once), read in one unit. NotFound if any id is not in the inbox (the sentence
    /// names the first such id), InvalidName for no id or more than [`MAX_BATCH`]; either way
    /// nothing is returned.
    pub async fn inbox_deliveries(
        &self,
        session: &ClientSession,
        ids: &[DeliveryId],
    ) -> Result<Vec<Delivery>> {
        let ids = batch_of(ids)?;
        self.file_operation();
        let me = session.account.clone();
        self.read_as(session, move |tx| {
            ids.iter()
                .map(|id| inbox_delivery_in(tx, &me, id))
                .collect()
        })
        .await
    }

    /// Acknowledges (deletes) several inbox deliveries as one unit, as [`Hub::acknowledge`]
    /// does each: one write transaction with an event per delivery, all of them or none. An
    /// id that is not in the inbox refuses the whole call with NotFound (no delivery
    /// acknowledged); no id, or more than [`MAX_BATCH`], is InvalidName. An id named twice
    /// counts once. Returns how many were acknowledged.
    pub async fn acknowledge_many(
        &self,
        session: &ClientSession,
        ids: &[DeliveryId],
    ) -> Result<usize> {
        self.file_operation();
        let result = match batch_of(ids) {
            Ok(ids) => {
                let (cache, stamp, session_c) =
                    (self.policy.clone(), self.stamp.clone(), session.clone());
                self.write(Durability::Flush, move |tx| {
                    let count = ids.len();
                    let released = acknowledge_all_in(tx, &cache, &stamp, &session_c, |tx| {
                        ids.iter()
                            .map(|id| inbox_delivery_in(tx, &session_c.account, id))
                            .collect()
                    })?;
                    Ok((count, released))
                })
                .await
            }
            Err(err) => Err(err),
        };
        match result {
            Ok((count, released)) => {
                self.delete_blobs(&released).await;
                Ok(count)
            }
            Err(err) => {
                self.record_refusal_of(
                    session,
                    EventKind::DeliveryAcknowledged,
                    format!("{} deliveries", ids.len()),
                    &err,
                )
                .await;
                Err(err)
            }
        }
    }

    /// Recalls a delivery the session sent, as removing `/outbox/<target>/<name>` does, in one
    /// unit: the pending deliveries of its group fan-out are recalled with it. Refused once this
    /// delivery was picked up or has ended.
    pub async fn recall(&self, session: &ClientSession, id: &DeliveryId) -> Result<()> {
        self.file_operation();
        let (cache, stamp, session_c, id_c) = (
            self.policy.clone(),
            self.stamp.clone(),
            session.clone(),
            *id,
        );
        let result = self
            .write(Durability::Flush, move |tx| {
                let delivery = sent_delivery_in(tx, &session_c.account, &id_c)?;
                // Picked up, or ended: the recipient has it (or it is gone), whatever the rest
                // of its fan-out.
                if !DeliveryState::RECALLABLE.contains(&delivery.state) {
                    return Err(CoreError::conflict(format!(
                        "delivery {id_c} is {} and can no longer be recalled",
                        delivery.state.as_str()
                    )));
                }
                recall_in(
                    tx,
                    &cache,
                    &stamp,
                    &session_c,
                    &delivery.target,
                    &delivery.name,
                )
            })
            .await;
        match result {
            Ok(released) => {
                self.delete_blobs(&released).await;
                Ok(())
            }
            Err(err) => {
                self.record_refusal_of(session, EventKind::DeliveryRecalled, id.to_string(), &err)
                    .await;
                Err(err)
            }
        }
    }
}

/// The ids of a batch call, each once in the order given; InvalidName for none or more than
/// [`MAX_BATCH`].
fn batch_of(ids: &[DeliveryId]) -> Result<Vec<DeliveryId>> {
    if ids.is_empty() {
        return Err(CoreError::invalid("name at least one delivery"));
    }
    if ids.len() > MAX_BATCH {
        return Err(CoreError::invalid(format!(
            "at most {MAX_BATCH} deliveries at once, not {}",
            ids.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    Ok(ids.iter().copied().filter(|id| seen.insert(*id)).collect())
}

/// Refuses a listing out of bounds, or sorted on the column every row shares (`same`).
fn check_listing(listing: &Listing, same: DeliverySort) -> Result<()> {
    if listing.limit == 0 || listing.limit > MAX_PAGE_SIZE {
        return Err(CoreError::invalid(format!(
            "a page holds 1 to {MAX_PAGE_SIZE} files, not {}",
            listing.limit
        )));
    }
    if listing.order.sort == same {
        return Err(CoreError::invalid(format!(
            "this listing cannot be sorted by {}",
            listing.order.sort.as_str()
        )));
    }
    if let Some(needle) = &listing.name_contains
        && needle.len() > MAX_NAME_FILTER
    {
        return Err(CoreError::invalid(format!(
            "a name filter is at most {MAX_NAME_FILTER} bytes"
        )));
    }
    Ok(())
}

/// The query of a listing's page, with one row more than the page to tell whether another
/// follows. An empty filter filters nothing.
fn page_query(listing: &Listing) -> DeliveryQuery {
    DeliveryQuery {
        name_contains: listing.name_contains.clone().filter(|n| !n.is_empty()),
        order: listing.order,
        offset: listing.offset,
        limit: Some(listing.limit.saturating_add(1)),
        ..DeliveryQuery::default()
    }
}

/// The page, without the extra row that says another follows.
fn page_of(mut deliveries: Vec<Delivery>, limit: u32) -> ListedPage {
    let more = deliveries.len() > limit as usize;
    deliveries.truncate(limit as usize);
    ListedPage { deliveries, more }
}

/// The delivery `id` if it is in `account`'s inbox; NotFound for any other id.
fn inbox_delivery_in(tx: &mut dyn Tx, account: &AccountName, id: &DeliveryId) -> Result<Delivery> {
    match tx.delivery(id)? {
        Some(d) if d.recipient == *account && DeliveryState::VISIBLE.contains(&d.state) => Ok(d),
        _ => Err(CoreError::not_found(format!(
            "no delivery {id} in your inbox"
        ))),
    }
}

/// The delivery `id` if `account` sent it; NotFound for any other id.
fn sent_delivery_in(tx: &mut dyn Tx, account: &AccountName, id: &DeliveryId) -> Result<Delivery> {
    match tx.delivery(id)? {
        Some(d) if d.sender == *account => Ok(d),
        _ => Err(CoreError::not_found(format!("you sent no delivery {id}"))),
    }
}

/// Where a delivery sits in its recipient's tree.
fn inbox_path(delivery: &Delivery) -> VirtualPath {
    VirtualPath::File(Area::Inbox, delivery.sender.clone(), delivery.name.clone())
}
