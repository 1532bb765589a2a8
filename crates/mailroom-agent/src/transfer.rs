//! Sending and fetching files: resumable uploads in parts (compressed as the session agreed),
//! each file's SHA-256 checked by the hub before it is delivered; downloads written under a
//! temporary name, checked against the delivery's SHA-256, synced and only then renamed, and
//! resumed from what a temporary file already holds.

use std::io::{Read as _, Seek as _, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mailroom_ace::BodyCoding;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::hub::{Hub, backoff, exit, fail, tracing_line};

/// Failures in a row, of a kind that may pass (the network, a busy hub's 5xx), before a
/// transfer gives up and asks to be run again: with the backoff (0.5 s, doubling to 8 s),
/// about 40 s of patience, enough for a hub under load to let go of a dead connection's
/// upload.
const MAX_RETRIES: u32 = 8;

/// Bytes sent per PATCH: one part is read, compressed and sent at a time, so memory stays
/// at about two parts whatever the file size.
const PART: usize = 8 << 20;

/// An inbox entry, as the API writes it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Delivery {
    /// Its id.
    pub id: String,
    /// Who sent it.
    pub sender: String,
    /// The file name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// Its state.
    pub state: String,
    /// When it was made (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
    /// Whether it is encrypted end to end (the hub holds only ciphertext).
    #[serde(default)]
    pub e2e: bool,
}

impl Delivery {
    /// When it was made, in seconds since the epoch, when the hub said.
    pub fn created_unix(&self) -> Option<u64> {
        let text = self.created.as_deref()?;
        let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()?;
        u64::try_from(at.unix_timestamp()).ok()
    }
}

fn bar(len: u64, label: &str) -> ProgressBar {
    use std::io::IsTerminal as _;
    let bar = ProgressBar::new(len);
    if std::io::stderr().is_terminal() {
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_message(label.to_owned());
    bar
}

/// The SHA-256 of a file, read in parts.
fn file_sha256(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What one sent file became.
#[derive(Debug, serde::Serialize)]
pub struct Sent {
    /// The local file.
    pub file: PathBuf,
    /// The name it was sent as.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, as the hub checked it.
    pub sha256: String,
    /// The accounts it was delivered to.
    pub delivered_to: Vec<String>,
}

/// A file about to be sent: its name, size and SHA-256.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Outgoing {
    /// The local file.
    pub path: PathBuf,
    /// The name it is sent as.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: String,
}

impl Outgoing {
    /// Reads `path`'s name, size and SHA-256.
    pub fn read(path: &Path) -> Result<Outgoing> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                fail(
                    exit::LOCAL,
                    format!("{} has no usable file name", path.display()),
                )
            })?
            .to_owned();
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let sha256 = file_sha256(path)?;
        Ok(Outgoing {
            path: path.to_owned(),
            name,
            size,
            sha256,
        })
    }
}

/// Sends `path` to `recipients` and returns once the hub has confirmed it durable.
pub async fn send(hub: &mut Hub, path: &Path, recipients: &[String]) -> Result<Sent> {
    let file = Outgoing::read(path)?;
    let id = begin(hub, &file, recipients, false).await?;
    upload(hub, &id, &file).await?;
    finish(hub, &id, &file).await
}

/// Sends `path` to `recipients` end to end: compressed and encrypted to every recipient's
/// keys into a spool file first (so a resume sends the same ciphertext), which is removed
/// once the hub has confirmed the delivery.
pub async fn send_e2e(hub: &mut Hub, path: &Path, recipients: &[String]) -> Result<Sent> {
    let keys = crate::e2e::recipient_keys(hub, recipients).await?;
    let spool_dir = crate::session::folder()?.join("spool");
    std::fs::create_dir_all(&spool_dir)?;
    let plain = Outgoing::read(path)?;
    let spool = spool_dir.join(format!("{}.age", plain.sha256));
    crate::e2e::encrypt(path, &keys, &spool)?;
    let mut file = Outgoing::read(&spool)?;
    file.name = plain.name.clone();
    let id = begin(hub, &file, recipients, true).await?;
    upload(hub, &id, &file).await?;
    let mut sent = finish(hub, &id, &file).await?;
    std::fs::remove_file(&spool)?;
    sent.file = path.to_owned();
    Ok(sent)
}

/// Opens an upload of `file` to `recipients` on the hub (`e2e`: it is ciphertext to the
/// recipients' keys): its id.
pub async fn begin(
    hub: &mut Hub,
    file: &Outgoing,
    recipients: &[String],
    e2e: bool,
) -> Result<String> {
    let (name, size) = (&file.name, file.size);
    let mut body = json!({"recipients": recipients, "name": name, "size": size});
    if e2e {
        body["e2e"] = serde_json::Value::Bool(true);
    }
    let created: serde_json::Value = hub
        .expect(Method::POST, "/api/v1/uploads", |r| Ok(r.json(&body)))
        .await?
        .json()
        .await?;
    Ok(created["id"]
        .as_str()
        .ok_or_else(|| fail(exit::REFUSED, "the hub did not name the upload"))?
        .to_owned())
}

/// Sends what the hub does not have yet of upload `id`, part by part, resuming from the
/// hub's offset after any failure.
pub async fn upload(hub: &mut Hub, id: &str, file: &Outgoing) -> Result<()> {
    let (name, size) = (&file.name, file.size);
    let coding = hub.session.ace.as_ref().and_then(|ace| ace.body_coding());
    let progress = bar(size, name);
    let mut local = std::fs::File::open(&file.path)
        .with_context(|| format!("cannot read {}", file.path.display()))?;
    let mut failures = 0;
    loop {
        // Where the hub is: the truth after any interruption.
        let offset = upload_offset(hub, id).await?;
        progress.set_position(offset);
        if offset >= size {
            break;
        }
        local.seek(SeekFrom::Start(offset))?;
        let mut part = vec![0u8; PART.min((size - offset) as usize)];
        local
            .read_exact(&mut part)
            .with_context(|| format!("{} changed while it was sent", file.path.display()))?;
        let body = match coding {
            Some(BodyCoding::Zstd) => zstd::encode_all(&part[..], 3)?,
            _ => part,
        };
        let sent = hub
            .request(Method::PATCH, &format!("/api/v1/uploads/{id}"), |r| {
                let r = r
                    .header("Upload-Offset", offset.to_string())
                    .header("Content-Type", "application/offset+octet-stream");
                let r = match coding {
                    Some(coding) => r.header("Content-Encoding", coding.as_str()),
                    None => r,
                };
                Ok(r.body(body.clone()))
            })
            .await;
        match sent {
            Ok(response) if response.status() == StatusCode::NO_CONTENT => failures = 0,
            Ok(response) if response.status().is_client_error() => {
                let detail = crate::hub::refusal(response).await;
                return Err(fail(exit::REFUSED, format!("{name}: {detail}")));
            }
            other => {
                failures += 1;
                if failures > MAX_RETRIES {
                    return Err(fail(
                        exit::UNREACHABLE,
                        format!(
                            "{name}: the upload keeps failing; run the same send again to resume"
                        ),
                    ));
                }
                if let Err(err) = other {
                    tracing_line(&format!("{name}: {err}; resuming"));
                }
                backoff(failures).await;
            }
        }
    }
    progress.finish_and_clear();
    Ok(())
}

/// Finishes upload `id` with the file's SHA-256: the hub delivers it, durably, or refuses.
pub async fn finish(hub: &mut Hub, id: &str, file: &Outgoing) -> Result<Sent> {
    let sha256 = &file.sha256;
    let finished: serde_json::Value = hub
        .expect(Method::POST, &format!("/api/v1/uploads/{id}/finish"), |r| {
            Ok(r.json(&json!({"sha256": sha256})))
        })
        .await?
        .json()
        .await?;
    Ok(sent(file, &finished))
}

/// Opens the connection to the hub (one cheap request), so that requests made at once by
/// several handles share it rather than each opening its own.
pub async fn warm(hub: &mut Hub) -> Result<()> {
    hub.expect(Method::GET, "/api/v1/ace", Ok).await?;
    Ok(())
}

/// What a sync journal records for a file sent in one request ([`send_direct`]): there is no
/// upload to resume, so after an interruption the receipts say whether it arrived.
pub const DIRECT: &str = "direct";

/// Whether a file is small enough to go in one request ([`send_direct`]).
pub fn direct(file: &Outgoing) -> bool {
    file.size <= PART as u64
}

/// Sends a small `file` to `target` in one request (`PUT /api/v1/outbox/{target}/{name}`,
/// compressed when agreed), as ciphertext for `e2e`. Sent once: after a network error it may
/// or may not have arrived, which only the receipts can tell (the sync journal looks there).
pub async fn send_direct(hub: &mut Hub, file: &Outgoing, target: &str, e2e: bool) -> Result<Sent> {
    let data = std::fs::read(&file.path)
        .with_context(|| format!("cannot read {}", file.path.display()))?;
    if data.len() as u64 != file.size {
        return Err(fail(
            exit::LOCAL,
            format!("{} changed while it was sent", file.path.display()),
        ));
    }
    let coding = hub.session.ace.as_ref().and_then(|ace| ace.body_coding());
    let body = match coding {
        Some(BodyCoding::Zstd) => zstd::encode_all(&data[..], 3)?,
        _ => data,
    };
    let mut url = reqwest::Url::parse("https://hub/api/v1/outbox")?;
    url.path_segments_mut()
        .map_err(|()| fail(exit::LOCAL, "cannot build the request's path"))?
        .push(target)
        .push(&file.name);
    let path = format!(
        "{}?sha256={}{}",
        url.path(),
        file.sha256,
        if e2e { "&e2e=true" } else { "" }
    );
    let response = hub
        .request_once(Method::PUT, &path, |r| {
            let r = r.header("Content-Type", "application/octet-stream");
            let r = match coding {
                Some(coding) => r.header("Content-Encoding", coding.as_str()),
                None => r,
            };
            Ok(r.body(body.clone()))
        })
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let detail = crate::hub::refusal(response).await;
        return Err(fail(
            exit::REFUSED,
            format!("{}: {detail} ({status})", file.name),
        ));
    }
    let delivered: serde_json::Value = response.json().await?;
    Ok(sent(file, &delivered))
}

/// What a finished send answers: the file and who it went to.
fn sent(file: &Outgoing, delivered: &serde_json::Value) -> Sent {
    let delivered_to = delivered["deliveries"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|d| d["recipient"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Sent {
        file: file.path.clone(),
        name: file.name.clone(),
        size: file.size,
        sha256: file.sha256.clone(),
        delivered_to,
    }
}

/// Whether upload `id` is still open on the hub (a restart of the hub, or its expiry, ends
/// an unfinished one).
pub async fn upload_open(hub: &mut Hub, id: &str) -> Result<bool> {
    let response = hub
        .request(Method::HEAD, &format!("/api/v1/uploads/{id}"), Ok)
        .await?;
    Ok(response.status().is_success())
}

/// Your receipts: every delivery you sent.
pub async fn sent_list(hub: &mut Hub) -> Result<Vec<Delivery>> {
    Ok(hub
        .expect(Method::GET, "/api/v1/sent", Ok)
        .await?
        .json()
        .await?)
}

async fn upload_offset(hub: &mut Hub, id: &str) -> Result<u64> {
    let response = hub
        .expect(Method::HEAD, &format!("/api/v1/uploads/{id}"), Ok)
        .await?;
    response
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| fail(exit::REFUSED, "the hub did not say the upload's offset"))
}

/// The inbox.
pub async fn inbox(hub: &mut Hub) -> Result<Vec<Delivery>> {
    Ok(hub
        .expect(Method::GET, "/api/v1/inbox", Ok)
        .await?
        .json()
        .await?)
}

/// What one fetched file became.
#[derive(Debug, serde::Serialize)]
pub struct Fetched {
    /// The delivery.
    pub id: String,
    /// Where it was written.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, checked.
    pub sha256: String,
    /// Whether it was acknowledged.
    pub acknowledged: bool,
}

/// A file name from the hub, made safe for a local folder: no separators, no leading dot
/// (the hub's names are checked already; the agent does not trust that).
fn local_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        "unnamed".to_owned()
    } else {
        cleaned
    }
}

/// Writes decoded bytes to the file and the hash.
struct Sink {
    file: std::fs::File,
    hasher: Sha256,
    written: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Downloads `delivery` into `dir`: under a temporary name, resumed from what it holds,
/// checked, synced, renamed; then acknowledged when `ack`. An end-to-end encrypted delivery is
/// decrypted with `identities` (refused without them) once its ciphertext checked.
pub async fn fetch(
    hub: &mut Hub,
    delivery: &Delivery,
    dir: &Path,
    ack: bool,
    identities: Option<&[age::x25519::Identity]>,
) -> Result<Fetched> {
    if delivery.e2e && identities.is_none() {
        return Err(fail(
            exit::LOCAL,
            format!(
                "{} is encrypted end to end: give the identity that decrypts it (--identity, or `mailroom-agent key generate` before it was sent)",
                delivery.name
            ),
        ));
    }
    let name = local_name(&delivery.name);
    let target = unused(dir, &name, &delivery.id);
    let partial = dir.join(format!(".{name}.{}.part", delivery.id));
    let mut failures = 0;
    loop {
        match fetch_once(hub, delivery, &partial).await {
            Ok(()) => break,
            Err(err) if err.downcast_ref::<crate::hub::Failure>().is_some() => return Err(err),
            Err(err) => {
                failures += 1;
                if failures > MAX_RETRIES {
                    return Err(fail(
                        exit::UNREACHABLE,
                        format!(
                            "{name}: the download keeps failing ({err}); run fetch again to resume"
                        ),
                    ));
                }
                tracing_line(&format!("{name}: {err}; resuming"));
                backoff(failures).await;
            }
        }
    }
    // The whole file is here: check it before it takes its name.
    let sha256 = file_sha256(&partial)?;
    if sha256 != delivery.sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(
            exit::INTEGRITY,
            format!(
                "{name}: SHA-256 {sha256} is not the delivery's {}; nothing was kept",
                delivery.sha256
            ),
        ));
    }
    std::fs::File::open(&partial)?.sync_all()?;
    match identities.filter(|_| delivery.e2e) {
        Some(identities) => {
            let plain = dir.join(format!(".{name}.{}.plain", delivery.id));
            if let Err(err) = crate::e2e::decrypt(&partial, identities, &plain) {
                let _ = std::fs::remove_file(&plain);
                return Err(err);
            }
            std::fs::rename(&plain, &target)
                .with_context(|| format!("cannot write {}", target.display()))?;
            std::fs::remove_file(&partial)?;
        }
        None => std::fs::rename(&partial, &target)
            .with_context(|| format!("cannot write {}", target.display()))?,
    }
    std::fs::File::open(dir)?.sync_all()?;
    if ack {
        acknowledge(hub, &delivery.id).await?;
    }
    Ok(Fetched {
        id: delivery.id.clone(),
        path: target,
        size: delivery.size,
        sha256,
        acknowledged: ack,
    })
}

/// Acknowledges delivery `id`: the hub may drop it.
pub async fn acknowledge(hub: &mut Hub, id: &str) -> Result<()> {
    hub.expect(Method::POST, &format!("/api/v1/inbox/{id}/ack"), Ok)
        .await?;
    Ok(())
}

/// `dir/name`, or `dir/name.ID` when a different file already has that name.
fn unused(dir: &Path, name: &str, id: &str) -> PathBuf {
    let plain = dir.join(name);
    if plain.exists() {
        dir.join(format!("{name}.{id}"))
    } else {
        plain
    }
}

/// One attempt: appends the rest of the delivery to `partial`.
async fn fetch_once(hub: &mut Hub, delivery: &Delivery, partial: &Path) -> Result<()> {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    if have >= delivery.size && delivery.size > 0 {
        return Ok(());
    }
    let coding = hub.session.ace.as_ref().and_then(|ace| ace.body_coding());
    let path = format!("/api/v1/inbox/{}/content", delivery.id);
    let response = hub
        .expect(Method::GET, &path, |r| {
            Ok(if have > 0 {
                r.header("Range", format!("bytes={have}-"))
            } else if let Some(coding) = coding {
                r.header("Accept-Encoding", coding.as_str())
            } else {
                r
            })
        })
        .await?;
    let compressed = response
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let sink = Sink {
        file,
        hasher: Sha256::new(),
        written: 0,
    };
    let progress = bar(delivery.size, &delivery.name);
    progress.set_position(have);
    let mut stream = response.bytes_stream();
    match compressed.as_deref() {
        Some("zstd") => {
            let mut decoder = zstd::stream::write::Decoder::new(sink)?;
            while let Some(chunk) = stream.next().await {
                decoder.write_all(&chunk?)?;
                progress.set_position(have + decoder.get_ref().written);
            }
            decoder.flush()?;
        }
        None => {
            let mut sink = sink;
            while let Some(chunk) = stream.next().await {
                sink.write_all(&chunk?)?;
                progress.set_position(have + sink.written);
            }
            sink.flush()?;
        }
        Some(other) => {
            return Err(fail(
                exit::REFUSED,
                format!("the hub answered with Content-Encoding {other}, which was not asked for"),
            ));
        }
    }
    progress.finish_and_clear();
    Ok(())
}
