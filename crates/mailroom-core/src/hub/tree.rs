//! The virtual tree a client sees: describing a path and listing a folder. The tree is
//! fixed: folders cannot be made and links do not exist.

use std::collections::BTreeSet;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::upload::allowed_targets;
use super::{ClientSession, Hub};
use crate::error::{CoreError, Result};
use crate::model::{Delivery, DeliveryState};
use crate::names::{AccountName, FileName};
use crate::path::{Area, VirtualPath};
use crate::ports::{DeliveryQuery, Tx};

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
    /// Describes one path. A file costs one read of the store; the fixed folders none.
    pub async fn stat(&self, session: &ClientSession, path: &VirtualPath) -> Result<Entry> {
        if matches!(path, VirtualPath::File(..)) {
            self.file_operation();
        }
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
                let (me, recipient, entry) =
                    (session.account.clone(), recipient.clone(), entry.clone());
                self.read_short_as(session, move |tx| {
                    let delivery = receipt(tx, &me, &recipient, &entry)?;
                    Ok(file_entry(
                        entry.as_str(),
                        receipt_text(&delivery).len() as u64,
                        delivery.updated,
                        false,
                    ))
                })
                .await
            }
            VirtualPath::File(area, folder, name) => {
                let query = visible_query(session, *area, folder, name)?;
                let (area, folder, name) = (*area, folder.clone(), name.clone());
                self.read_short_as(session, move |tx| {
                    let delivery = tx
                        .deliveries(&query)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| no_such_file(area, &folder, &name))?;
                    Ok(file_entry(
                        name.as_str(),
                        delivery.size,
                        delivery.created,
                        area == Area::Outbox,
                    ))
                })
                .await
            }
        }
    }

    /// Lists a folder, in one read of the store. Files have no children: listing one is
    /// refused. The folder of one sender in an inbox, or of one target in an outbox, holds
    /// only live deliveries (read from the partial index of live ones), so it is a short read
    /// (a client polling its inbox lists it again and again); the areas and receipts, which
    /// grow with history, are not.
    pub async fn list(&self, session: &ClientSession, path: &VirtualPath) -> Result<Vec<Entry>> {
        if !matches!(path, VirtualPath::Root | VirtualPath::File(..)) {
            self.file_operation();
        }
        let now = self.clock.now();
        let dir = move |name: &str, writable: bool| Entry {
            name: name.to_owned(),
            is_dir: true,
            size: 0,
            modified: now,
            writable,
        };
        let me = session.account.clone();
        match path.clone() {
            VirtualPath::Root => Ok(Area::ALL
                .iter()
                .map(|area| dir(area.as_str(), false))
                .collect()),
            VirtualPath::Area(Area::Inbox) => {
                self.read_as(session, move |tx| {
                    let deliveries = tx.deliveries(&DeliveryQuery {
                        recipient: Some(me),
                        states: DeliveryState::VISIBLE.to_vec(),
                        ..DeliveryQuery::default()
                    })?;
                    let senders: BTreeSet<_> = deliveries.into_iter().map(|d| d.sender).collect();
                    Ok(senders.iter().map(|s| dir(s.as_str(), false)).collect())
                })
                .await
            }
            VirtualPath::Area(Area::Outbox) => {
                let cache = self.policy.clone();
                self.read_as(session, move |tx| {
                    let policy = cache.get(tx)?;
                    let mut targets = allowed_targets(&policy, &me);
                    let pending = tx.deliveries(&DeliveryQuery {
                        sender: Some(me),
                        states: DeliveryState::RECALLABLE.to_vec(),
                        ..DeliveryQuery::default()
                    })?;
                    targets.extend(pending.into_iter().map(|d| d.target));
                    Ok(targets.iter().map(|t| dir(t.as_str(), true)).collect())
                })
                .await
            }
            VirtualPath::Area(Area::Sent) => {
                self.read_as(session, move |tx| {
                    let sent = tx.deliveries(&DeliveryQuery {
                        sender: Some(me),
                        ..DeliveryQuery::default()
                    })?;
                    let recipients: BTreeSet<_> = sent.into_iter().map(|d| d.recipient).collect();
                    Ok(recipients.iter().map(|r| dir(r.as_str(), false)).collect())
                })
                .await
            }
            VirtualPath::Folder(Area::Inbox, sender) => {
                self.read_short_as(session, move |tx| {
                    let deliveries = tx.deliveries(&DeliveryQuery {
                        recipient: Some(me),
                        sender: Some(sender),
                        states: DeliveryState::VISIBLE.to_vec(),
                        ..DeliveryQuery::default()
                    })?;
                    Ok(deliveries
                        .iter()
                        .map(|d| file_entry(d.name.as_str(), d.size, d.created, false))
                        .collect())
                })
                .await
            }
            VirtualPath::Folder(Area::Outbox, target) => {
                self.read_short_as(session, move |tx| {
                    let deliveries = tx.deliveries(&DeliveryQuery {
                        sender: Some(me),
                        target: Some(target),
                        states: DeliveryState::RECALLABLE.to_vec(),
                        ..DeliveryQuery::default()
                    })?;
                    // A group fan-out is one entry: its deliveries share a name and a blob.
                    let mut seen = BTreeSet::new();
                    Ok(deliveries
                        .iter()
                        .filter(|d| seen.insert(d.batch_id))
                        .map(|d| file_entry(d.name.as_str(), d.size, d.created, true))
                        .collect())
                })
                .await
            }
            VirtualPath::Folder(Area::Sent, recipient) => {
                self.read_as(session, move |tx| {
                    let deliveries = tx.deliveries(&DeliveryQuery {
                        sender: Some(me),
                        recipient: Some(recipient),
                        ..DeliveryQuery::default()
                    })?;
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
                })
                .await
            }
            VirtualPath::File(..) => path.require_folder().map(|()| Vec::new()),
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
}

/// The delivery a client sees at `/<area>/<folder>/<name>`.
pub(super) fn visible_file(
    tx: &mut dyn Tx,
    session: &ClientSession,
    area: Area,
    folder: &AccountName,
    name: &FileName,
) -> Result<Delivery> {
    let query = visible_query(session, area, folder, name)?;
    tx.deliveries(&query)?
        .into_iter()
        .next()
        .ok_or_else(|| no_such_file(area, folder, name))
}

/// The delivery behind a receipt entry `<name>@<short id>` of `sender`'s `/sent/<recipient>/`.
pub(super) fn receipt(
    tx: &mut dyn Tx,
    sender: &AccountName,
    recipient: &AccountName,
    entry: &FileName,
) -> Result<Delivery> {
    let not_found = || CoreError::not_found(format!("/sent/{recipient}/{entry}: no such receipt"));
    let (name, short) = entry.as_str().rsplit_once('@').ok_or_else(not_found)?;
    let name = FileName::parse(name).map_err(|_| not_found())?;
    tx.deliveries(&DeliveryQuery {
        sender: Some(sender.clone()),
        recipient: Some(recipient.clone()),
        name: Some(name),
        ..DeliveryQuery::default()
    })?
    .into_iter()
    .find(|d| d.id.short() == short)
    .ok_or_else(not_found)
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

/// The text of a receipt, one `key: value` per line; the `note` line says in words what a
/// state means to the sender, for the states that hold a file back.
pub(super) fn receipt_text(delivery: &Delivery) -> String {
    let time = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let note = match delivery.state {
        DeliveryState::Checking => {
            "note: being checked; the recipient sees it once it is found clean\n"
        }
        DeliveryState::Quarantined => {
            "note: quarantined by the check; the recipient does not see it, and an operator decides\n"
        }
        DeliveryState::Deleted => "note: deleted from quarantine by an operator\n",
        _ => "",
    };
    format!(
        "delivery: {}\nsender: {}\nrecipient: {}\nvia: {}\nname: {}\nsize: {}\nsha256: {}\nstate: {}\n{note}created: {}\nupdated: {}\n",
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
