//! The virtual tree a client sees: describing a path and listing a folder. The tree is
//! fixed: folders cannot be made and links do not exist.

use std::collections::BTreeSet;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ClientSession, Hub};
use crate::error::{CoreError, ErrorKind, Result};
use crate::model::{Delivery, DeliveryState};
use crate::names::{AccountName, FileName};
use crate::path::{Area, VirtualPath};
use crate::ports::DeliveryQuery;

/// One entry of a listing or the answer to a stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The last path component (`/` for the root).
    pub name: String,
    /// Folder or file.
    pub is_dir: bool,
    /// Size in bytes (0 for folders).
    pub size: u64,
    /// Last change.
    pub modified: OffsetDateTime,
    /// Whether the client may write here (an outbox folder).
    pub writable: bool,
}

impl Hub {
    // ----- the tree --------------------------------------------------------------------------

    /// Describes one path.
    pub async fn stat(&self, session: &ClientSession, path: &VirtualPath) -> Result<Entry> {
        let now = self.clock.now();
        let dir = |name: &str, writable: bool| Entry {
            name: name.to_owned(),
            is_dir: true,
            size: 0,
            modified: now,
            writable,
        };
        match path {
            VirtualPath::Root => Ok(dir("/", false)),
            VirtualPath::Area(area) => Ok(dir(area.as_str(), false)),
            VirtualPath::Folder(area, name) => Ok(dir(name.as_str(), *area == Area::Outbox)),
            VirtualPath::File(Area::Sent, recipient, entry) => {
                let delivery = self.receipt(session, recipient, entry).await?;
                Ok(file_entry(
                    entry.as_str(),
                    receipt_text(&delivery).len() as u64,
                    delivery.updated,
                    false,
                ))
            }
            VirtualPath::File(area, folder, name) => {
                let delivery = self.visible_file(session, *area, folder, name).await?;
                Ok(file_entry(
                    name.as_str(),
                    delivery.size,
                    delivery.created,
                    *area == Area::Outbox,
                ))
            }
        }
    }

    /// Lists a folder. Files have no children: listing one is refused.
    pub async fn list(&self, session: &ClientSession, path: &VirtualPath) -> Result<Vec<Entry>> {
        let me = &session.account;
        let now = self.clock.now();
        let dir = |name: &str, writable: bool| Entry {
            name: name.to_owned(),
            is_dir: true,
            size: 0,
            modified: now,
            writable,
        };
        match path {
            VirtualPath::Root => Ok(Area::ALL
                .iter()
                .map(|area| dir(area.as_str(), false))
                .collect()),
            VirtualPath::Area(Area::Inbox) => {
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        recipient: Some(me.clone()),
                        states: DeliveryState::VISIBLE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                let senders: BTreeSet<_> = deliveries.into_iter().map(|d| d.sender).collect();
                Ok(senders.iter().map(|s| dir(s.as_str(), false)).collect())
            }
            VirtualPath::Area(Area::Outbox) => {
                let mut targets = self.allowed_targets(me).await?;
                let pending = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(me.clone()),
                        states: DeliveryState::RECALLABLE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                targets.extend(pending.into_iter().map(|d| d.target));
                Ok(targets.iter().map(|t| dir(t.as_str(), true)).collect())
            }
            VirtualPath::Area(Area::Sent) => {
                let sent = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(me.clone()),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                let recipients: BTreeSet<_> = sent.into_iter().map(|d| d.recipient).collect();
                Ok(recipients.iter().map(|r| dir(r.as_str(), false)).collect())
            }
            VirtualPath::Folder(Area::Inbox, sender) => {
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        recipient: Some(me.clone()),
                        sender: Some(sender.clone()),
                        states: DeliveryState::VISIBLE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                Ok(deliveries
                    .iter()
                    .map(|d| file_entry(d.name.as_str(), d.size, d.created, false))
                    .collect())
            }
            VirtualPath::Folder(Area::Outbox, target) => {
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(me.clone()),
                        target: Some(target.clone()),
                        states: DeliveryState::RECALLABLE.to_vec(),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                // A group fan-out is one entry: its deliveries share a name and a blob.
                let mut seen = BTreeSet::new();
                Ok(deliveries
                    .iter()
                    .filter(|d| seen.insert(d.batch_id))
                    .map(|d| file_entry(d.name.as_str(), d.size, d.created, true))
                    .collect())
            }
            VirtualPath::Folder(Area::Sent, recipient) => {
                let deliveries = self
                    .meta
                    .deliveries(&DeliveryQuery {
                        sender: Some(me.clone()),
                        recipient: Some(recipient.clone()),
                        ..DeliveryQuery::default()
                    })
                    .await?;
                Ok(deliveries
                    .iter()
                    .map(|d| {
                        file_entry(
                            &receipt_name(d),
                            receipt_text(d).len() as u64,
                            d.updated,
                            false,
                        )
                    })
                    .collect())
            }
            VirtualPath::File(..) => Err(CoreError::new(
                ErrorKind::NotFound,
                "not a folder: this is a file",
            )),
        }
    }

    /// Folders cannot be created: the tree is fixed.
    pub fn make_dir(&self, path: &VirtualPath) -> Result<()> {
        Err(CoreError::denied(format!(
            "cannot create {path}: the tree is fixed (write files into /outbox/<recipient>/)"
        )))
    }

    /// Links cannot be created: the tree has no links.
    pub fn make_link(&self, path: &VirtualPath) -> Result<()> {
        Err(CoreError::denied(format!(
            "cannot create a link at {path}: links are not supported"
        )))
    }

    /// A delivery the client sees at `/<area>/<folder>/<name>`.
    pub(super) async fn visible_file(
        &self,
        session: &ClientSession,
        area: Area,
        folder: &AccountName,
        name: &FileName,
    ) -> Result<Delivery> {
        let query = visible_query(session, area, folder, name)?;
        self.meta
            .deliveries(&query)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| no_such_file(area, folder, name))
    }

    /// The delivery behind a receipt entry `<name>@<short id>`.
    pub(super) async fn receipt(
        &self,
        session: &ClientSession,
        recipient: &AccountName,
        entry: &FileName,
    ) -> Result<Delivery> {
        let not_found =
            || CoreError::not_found(format!("/sent/{recipient}/{entry}: no such receipt"));
        let (name, short) = entry.as_str().rsplit_once('@').ok_or_else(not_found)?;
        let name = FileName::parse(name).map_err(|_| not_found())?;
        self.meta
            .deliveries(&DeliveryQuery {
                sender: Some(session.account.clone()),
                recipient: Some(recipient.clone()),
                name: Some(name),
                ..DeliveryQuery::default()
            })
            .await?
            .into_iter()
            .find(|d| d.id.short() == short)
            .ok_or_else(not_found)
    }
}

fn file_entry(name: &str, size: u64, modified: OffsetDateTime, writable: bool) -> Entry {
    Entry {
        name: name.to_owned(),
        is_dir: false,
        size,
        modified,
        writable,
    }
}

/// The entry name of a receipt: `<name>@<short id>`.
fn receipt_name(delivery: &Delivery) -> String {
    format!("{}@{}", delivery.name, delivery.id.short())
}

/// The text of a receipt, one `key: value` per line.
pub(super) fn receipt_text(delivery: &Delivery) -> String {
    let time = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    format!(
        "delivery: {}\nsender: {}\nrecipient: {}\nvia: {}\nname: {}\nsize: {}\nsha256: {}\nstate: {}\ncreated: {}\nupdated: {}\n",
        delivery.id,
        delivery.sender,
        delivery.recipient,
        delivery.target,
        delivery.name,
        delivery.size,
        delivery.sha256,
        delivery.state.as_str(),
        time(delivery.created),
        time(delivery.updated),
    )
}

/// The query for the file `/<area>/<folder>/<name>` as `session`'s account sees it: in its
/// inbox, a visible delivery from `folder`; in its outbox, a recallable one to `folder`.
pub(super) fn visible_query(
    session: &ClientSession,
    area: Area,
    folder: &AccountName,
    name: &FileName,
) -> Result<DeliveryQuery> {
    let me = session.account.clone();
    match area {
        Area::Inbox => Ok(DeliveryQuery {
            recipient: Some(me),
            sender: Some(folder.clone()),
            name: Some(name.clone()),
            states: DeliveryState::VISIBLE.to_vec(),
            ..DeliveryQuery::default()
        }),
        Area::Outbox => Ok(DeliveryQuery {
            sender: Some(me),
            target: Some(folder.clone()),
            name: Some(name.clone()),
            states: DeliveryState::RECALLABLE.to_vec(),
            ..DeliveryQuery::default()
        }),
        Area::Sent => Err(CoreError::internal("receipts are not deliveries")),
    }
}

/// The NotFound for a file path that names no delivery.
pub(super) fn no_such_file(area: Area, folder: &AccountName, name: &FileName) -> CoreError {
    CoreError::not_found(format!("/{}/{folder}/{name}: no such file", area.as_str()))
}
