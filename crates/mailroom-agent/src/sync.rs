//! `sync`: an outbox folder whose files are sent and an inbox folder that receives, safely
//! across a kill of the agent or a restart of the hub, with nothing lost and nothing
//! delivered twice.
//!
//! With end-to-end encryption on, each outbox file is first encrypted to its recipients' keys
//! into a spool file beside its journal entry (`<entry>.age`), and that ciphertext is what is
//! uploaded, resumed and looked for among the receipts, so a resume after a kill sends the
//! very bytes it began with.
//!
//! Outbox: a file in `OUTBOX/<recipient>/` (an account or a group) is sent, then moved to
//! `OUTBOX/.sent/<recipient>/` only once the hub has confirmed it durable. Before its upload
//! opens, a journal entry (`OUTBOX/.mailroom-sync/<entry>.json`: the file, its size, SHA-256
//! and the upload's id) is written; after a kill, the entry says what to do: resume the upload
//! if the hub still has it, else look for the file among the sender's receipts (name and
//! SHA-256, since the journal was written) and only send it again when the hub never
//! delivered it. Hidden files and names ending in `.part` or `.tmp` are left alone: write a
//! file under such a name and rename it into the folder when it is complete.
//!
//! Inbox: each delivery is written under a temporary name, checked against its SHA-256,
//! renamed, and then acknowledged; a journal entry (`INBOX/.mailroom-sync/<id>`) written after
//! the rename and removed after the acknowledgement means a kill between the two only leads
//! to the acknowledgement, never to a second copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::hub::{Hub, tracing_line};
use crate::transfer::{self, Outgoing};

/// The journal folder in a synced folder.
const JOURNAL: &str = ".mailroom-sync";

/// New outbox files sent at the same time, each with a handle of its own on the hub (one
/// HTTP/2 connection carries them).
const IN_FLIGHT: usize = 16;

/// What one pass did.
#[derive(Debug, Default, Serialize)]
pub struct Pass {
    /// Files sent (moved to `.sent`).
    pub sent: Vec<String>,
    /// Files received (written and acknowledged).
    pub received: Vec<String>,
}

/// An outbox file between the opening of its upload and its move to `.sent`.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    file: Outgoing,
    /// The ciphertext sent instead of the file, when sent end to end.
    #[serde(default)]
    sealed: Option<Outgoing>,
    recipient: String,
    upload: Option<String>,
    /// When the entry was written (the hub's receipts at or after it may be this file's).
    since: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Whether a name is one sync leaves alone.
fn ignored(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".part") || name.ends_with(".tmp")
}

/// Runs one pass over both folders (either may be absent).
/// `e2e`: send the outbox's files end to end.
pub async fn pass(
    hub: &mut Hub,
    outbox: Option<&Path>,
    inbox: Option<&Path>,
    identities: Option<&[age::x25519::Identity]>,
    e2e: bool,
) -> Result<Pass> {
    let mut done = Pass::default();
    if let Some(outbox) = outbox {
        send_outbox(hub, outbox, e2e, &mut done).await?;
    }
    if let Some(inbox) = inbox {
        receive_inbox(hub, inbox, identities, &mut done).await?;
    }
    Ok(done)
}

/// Runs passes every `interval` until the process is stopped; `report` is called per pass.
pub async fn watch(
    hub: &mut Hub,
    outbox: Option<&Path>,
    inbox: Option<&Path>,
    identities: Option<&[age::x25519::Identity]>,
    e2e: bool,
    interval: Duration,
    mut report: impl FnMut(&Pass) -> Result<()>,
) -> Result<()> {
    loop {
        match pass(hub, outbox, inbox, identities, e2e).await {
            Ok(done) => report(&done)?,
            // A pass that fails (the hub away) is tried again at the next tick: nothing is
            // lost, the journals say where each file stands.
            Err(err) => tracing_line(&format!("sync pass failed: {err:#}; retrying")),
        }
        tokio::time::sleep(interval).await;
    }
}

async fn send_outbox(hub: &mut Hub, outbox: &Path, e2e: bool, done: &mut Pass) -> Result<()> {
    let journal = outbox.join(JOURNAL);
    std::fs::create_dir_all(&journal)
        .with_context(|| format!("cannot create {}", journal.display()))?;
    // First what a kill interrupted.
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&journal)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for path in entries {
        let entry: Entry = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{} is not a sync journal entry", path.display()))?;
        if let Some(sent) = complete(hub, outbox, &path, entry, e2e, false).await? {
            done.sent.push(sent);
        }
    }
    // Then what is new, several files at a time, on one connection made first.
    transfer::warm(hub).await?;
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut recipients: Vec<PathBuf> = std::fs::read_dir(outbox)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !ignored(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    recipients.sort();
    for folder in recipients {
        let recipient = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| !ignored(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        files.sort();
        for file in files {
            let permit = Arc::clone(&limit).acquire_owned().await?;
            let (mut worker, recipient) = (hub.fork(), recipient.clone());
            let (outbox, journal) = (outbox.to_owned(), journal.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let file = Outgoing::read(&file)?;
                // A small plain file goes in one request: the journal says so at once.
                let upload = (!e2e && transfer::direct(&file)).then(|| transfer::DIRECT.to_owned());
                let entry = Entry {
                    file,
                    sealed: None,
                    recipient,
                    upload,
                    since: now().saturating_sub(1),
                };
                let path = journal.join(entry_name(&entry));
                write_atomically(&path, &serde_json::to_string(&entry)?)?;
                complete(&mut worker, &outbox, &path, entry, e2e, true).await
            });
            while let Some(finished) = tasks.try_join_next() {
                if let Some(sent) = finished?? {
                    done.sent.push(sent);
                }
            }
        }
    }
    while let Some(finished) = tasks.join_next().await {
        if let Some(sent) = finished?? {
            done.sent.push(sent);
        }
    }
    Ok(())
}

/// A journal entry's file name: when it was written, and a digest of its recipient, name and
/// content, so two files never share one.
fn entry_name(entry: &Entry) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!(
        "{}/{}/{}",
        entry.recipient, entry.file.name, entry.file.sha256
    ));
    format!("{}-{}.json", entry.since, &hex::encode(digest)[..24])
}

/// Takes one journalled file to `.sent`: resumes its upload, or finds it delivered, or sends
/// it (again, only when the hub never delivered it). Answers `recipient/name` once moved.
/// `fresh`: the entry was just written, so there is nothing on the hub to look for.
async fn complete(
    hub: &mut Hub,
    outbox: &Path,
    journal: &Path,
    mut entry: Entry,
    e2e: bool,
    fresh: bool,
) -> Result<Option<String>> {
    if !entry.file.path.exists() {
        // Moved to .sent already; only the journal (and a spool) was left.
        remove_spool(&entry)?;
        std::fs::remove_file(journal)?;
        return Ok(None);
    }
    let open = match entry.upload.as_deref() {
        _ if fresh => false,
        Some(transfer::DIRECT) | None => false,
        Some(id) => transfer::upload_open(hub, id).await?,
    };
    if !fresh && !open && entry.upload.is_some() && delivered_already(hub, &entry).await? {
        return moved_to_sent(outbox, journal, &entry).map(Some);
    }
    let id = match (&entry.upload, open) {
        (Some(id), true) => id.clone(),
        _ => {
            // A file begun end to end stays so (its spool is what the hub may hold).
            let spool_lost = entry.sealed.as_ref().is_some_and(|s| !s.path.exists());
            if (e2e && entry.sealed.is_none()) || spool_lost {
                entry.sealed = Some(seal(hub, journal, &entry).await?);
            }
            let wire = entry.sealed.as_ref().unwrap_or(&entry.file);
            if transfer::direct(wire) {
                // One request; the journal says so first, for the receipts to be asked
                // after an interruption.
                if entry.upload.as_deref() != Some(transfer::DIRECT) {
                    entry.upload = Some(transfer::DIRECT.to_owned());
                    write_atomically(journal, &serde_json::to_string(&entry)?)?;
                }
                let wire = entry.sealed.as_ref().unwrap_or(&entry.file);
                transfer::send_direct(hub, wire, &entry.recipient, entry.sealed.is_some()).await?;
                return moved_to_sent(outbox, journal, &entry).map(Some);
            }
            let id = transfer::begin(
                hub,
                entry.sealed.as_ref().unwrap_or(&entry.file),
                std::slice::from_ref(&entry.recipient),
                entry.sealed.is_some(),
            )
            .await?;
            entry.upload = Some(id.clone());
            write_atomically(journal, &serde_json::to_string(&entry)?)?;
            id
        }
    };
    let wire = entry.sealed.as_ref().unwrap_or(&entry.file);
    transfer::upload(hub, &id, wire).await?;
    transfer::finish(hub, &id, wire).await?;
    moved_to_sent(outbox, journal, &entry).map(Some)
}

/// Encrypts an entry's file to its recipient's keys (a group's: every member's) into the
/// spool beside its journal entry: the ciphertext to send, under the file's name.
async fn seal(hub: &mut Hub, journal: &Path, entry: &Entry) -> Result<Outgoing> {
    let keys = crate::e2e::recipient_keys(hub, std::slice::from_ref(&entry.recipient)).await?;
    let spool = journal.with_extension("age");
    crate::e2e::encrypt(&entry.file.path, &keys, &spool)?;
    let mut sealed = Outgoing::read(&spool)?;
    sealed.name = entry.file.name.clone();
    Ok(sealed)
}

fn remove_spool(entry: &Entry) -> Result<()> {
    if let Some(sealed) = &entry.sealed
        && sealed.path.exists()
    {
        std::fs::remove_file(&sealed.path)?;
    }
    Ok(())
}

/// Whether the sender's receipts hold this file (same name and SHA-256) since the entry.
async fn delivered_already(hub: &mut Hub, entry: &Entry) -> Result<bool> {
    let sent = transfer::sent_list(hub).await?;
    let wire = entry.sealed.as_ref().unwrap_or(&entry.file);
    Ok(sent.iter().any(|delivery| {
        delivery.name == wire.name
            && delivery.sha256 == wire.sha256
            && delivery.created_unix().is_none_or(|t| t >= entry.since)
    }))
}

fn moved_to_sent(outbox: &Path, journal: &Path, entry: &Entry) -> Result<String> {
    let sent = outbox.join(".sent").join(&entry.recipient);
    std::fs::create_dir_all(&sent)?;
    let target = sent.join(&entry.file.name);
    let target = if target.exists() {
        sent.join(format!("{}.{}", entry.file.name, now()))
    } else {
        target
    };
    std::fs::rename(&entry.file.path, &target)
        .with_context(|| format!("cannot move {} to .sent", entry.file.path.display()))?;
    if let Some(dir) = entry.file.path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    remove_spool(entry)?;
    std::fs::remove_file(journal)?;
    Ok(format!("{}/{}", entry.recipient, entry.file.name))
}

async fn receive_inbox(
    hub: &mut Hub,
    inbox: &Path,
    identities: Option<&[age::x25519::Identity]>,
    done: &mut Pass,
) -> Result<()> {
    let journal = inbox.join(JOURNAL);
    std::fs::create_dir_all(&journal)
        .with_context(|| format!("cannot create {}", journal.display()))?;
    for delivery in transfer::inbox(hub).await? {
        let mark = journal.join(&delivery.id);
        if !mark.exists() {
            let fetched = transfer::fetch(hub, &delivery, inbox, false, identities).await?;
            write_atomically(&mark, &fetched.path.display().to_string())?;
            done.received.push(delivery.name.clone());
        }
        transfer::acknowledge(hub, &delivery.id).await?;
        std::fs::remove_file(&mark)?;
    }
    Ok(())
}
