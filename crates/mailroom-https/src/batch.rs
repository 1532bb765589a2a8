//! Many inbox deliveries at once: `POST /api/v1/inbox/zip` streams the chosen deliveries as
//! one ZIP archive, `POST /api/v1/inbox/acknowledge` acknowledges them in one transaction.
//! The web inbox's "download selected" calls [`zip_response`] itself.
//!
//! The archive is written while it is sent, and never exists whole on the hub: a task reads
//! each delivery from the Hub in chunks of [`READ_CHUNK`] bytes into [`ZipWriter`], which writes
//! into a pipe of [`PIPE_BYTES`] whose other end is the response body, so the hub's memory is
//! bounded by those buffers whatever the files' sizes. Entries are STOREd (no compression: the
//! fastest, and most exchanged files compress poorly), with CRC-32 and sizes in data
//! descriptors and ZIP64 fields where they are needed, so files above 4 GiB fit. Each entry is a download
//! as `GET /api/v1/inbox/{id}/content` is: opened with `Hub::open_delivery` and closed with
//! `Hub::close_read`, which records the download event and marks the delivery picked up
//! after its complete read; when the client goes away mid-archive, the entry being written is
//! accounted as an incomplete download and the rest are not touched.
//!
//! Entry names are the deliveries' names made safe ([`entry_names`]): never a path, never a
//! control character, unique in the archive. The archive comment lists each entry's SHA-256
//! the way `sha256sum` prints it, so `unzip -z` shows what to check the files against.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use mailroom_core::{ClientSession, Delivery, DeliveryId, Hub, MAX_BATCH, MAX_FILE_NAME};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio_util::io::ReaderStream;

use crate::api::Refusals;
use crate::auth::Receiving;
use crate::problem::Problem;
use crate::server::{ApiJson, AppState};
use crate::wire::{Acknowledged, DeliveryIds};
use crate::zip::ZipWriter;

/// Bytes read from the Hub per chunk of an entry.
pub const READ_CHUNK: usize = 256 * 1024;
/// Bytes the pipe between the archive's writer and the response body holds.
pub const PIPE_BYTES: usize = 256 * 1024;
/// The longest archive comment ZIP allows (its length is a 16-bit field).
pub const MAX_COMMENT: usize = u16::MAX as usize;

/// Your chosen deliveries as one ZIP archive, streamed as it is made. Each entry counts as a
/// download of its delivery (picked up once read completely). The archive comment lists
/// each entry's SHA-256 and name, as `sha256sum` prints them. Any id not in your inbox refuses
/// the whole request (404) before a byte is sent; so do none or more than 1000 ids, or names
/// too long to list in the comment (422).
#[utoipa::path(post, path = "/api/v1/inbox/zip", tag = "client", security(("bearer" = [])),
    request_body = DeliveryIds,
    responses(
        (status = 200, description = "The archive", content_type = "application/zip", body = Vec<u8>),
        Refusals))]
pub(crate) async fn zip(
    State(state): State<Arc<AppState>>,
    Receiving(auth): Receiving,
    ApiJson(request): ApiJson<DeliveryIds>,
) -> Result<Response, Problem> {
    let ids = parse_ids(&request.ids)?;
    zip_response(state.hub.clone(), auth.session, &ids).await
}

/// Acknowledges your chosen deliveries as one action: all of them in one transaction, or
/// none. Any id not in your inbox refuses the whole request (404) with nothing acknowledged;
/// so do none or more than 1000 ids (422).
#[utoipa::path(post, path = "/api/v1/inbox/acknowledge", tag = "client", security(("bearer" = [])),
    request_body = DeliveryIds,
    responses((status = 200, description = "Acknowledged", body = Acknowledged), Refusals))]
pub(crate) async fn acknowledge(
    State(state): State<Arc<AppState>>,
    Receiving(auth): Receiving,
    ApiJson(request): ApiJson<DeliveryIds>,
) -> Result<Json<Acknowledged>, Problem> {
    let ids = parse_ids(&request.ids)?;
    let count = state.hub.acknowledge_many(&auth.session, &ids).await?;
    Ok(Json(Acknowledged {
        acknowledged: count as u64,
    }))
}

/// The ids of a batch request: 422 for none or more than [`MAX_BATCH`] (checked before any is
/// read), 404 naming the first that is no delivery id.
pub fn parse_ids(ids: &[String]) -> Result<Vec<DeliveryId>, Problem> {
    if ids.is_empty() || ids.len() > MAX_BATCH {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("name 1 to {MAX_BATCH} deliveries, not {}", ids.len()),
        ));
    }
    ids.iter()
        .map(|id| {
            DeliveryId::parse(id).map_err(|_| {
                Problem::new(
                    StatusCode::NOT_FOUND,
                    format!("no delivery {id:.64} in your inbox"),
                )
            })
        })
        .collect()
}

/// The ZIP of the deliveries `ids` of `session`'s inbox, as a streamed response. Everything
/// that can refuse the request (an id not in the inbox, the bounds, the comment's length) is
/// checked before the answer begins; the archive is then written by a task of its own while
/// the body is sent.
pub async fn zip_response(
    hub: Arc<Hub>,
    session: ClientSession,
    ids: &[DeliveryId],
) -> Result<Response, Problem> {
    let deliveries = hub.inbox_deliveries(&session, ids).await?;
    let names = entry_names(&deliveries);
    let comment = archive_comment(&deliveries, &names).ok_or_else(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the archive's comment lists each file's SHA-256 and name in at most {MAX_COMMENT} bytes, and these {} do not fit; choose fewer files",
                deliveries.len()
            ),
        )
    })?;
    let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let result = write_archive(&hub, &session, deliveries, names, comment, writer).await;
        if let Err(err) = &result {
            tracing::warn!(account = %session.account, error = %err, "a ZIP of the inbox ended early");
        }
        // Nobody listening means the client went away: nothing more to tell.
        let _ = done_tx.send(result);
    });
    // The pipe's end, then the writer's verdict: an archive that failed part-way ends the
    // body with an error, so the client sees a broken transfer, never a short archive.
    let verdict = futures::stream::once(async move {
        match done_rx.await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(Err(std::io::Error::other(err))),
            Err(_) => Some(Err(std::io::Error::other("the archive's writer stopped"))),
        }
    })
    .filter_map(std::future::ready);
    let body = ReaderStream::with_capacity(reader, READ_CHUNK).chain(verdict);
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"mailroom-inbox.zip\""),
    );
    Ok(response)
}

/// Writes the archive into `pipe`: each delivery as a STOREd entry, read from the Hub chunk by
/// chunk and accounted as a download, then the central directory with `comment`. An error is
/// a sentence for the log and the body's end.
async fn write_archive(
    hub: &Hub,
    session: &ClientSession,
    deliveries: Vec<Delivery>,
    names: Vec<String>,
    comment: String,
    pipe: tokio::io::DuplexStream,
) -> Result<(), String> {
    let mut zip = ZipWriter::new(pipe);
    for (delivery, name) in deliveries.iter().zip(names) {
        let handle = hub
            .open_delivery(session, &delivery.id)
            .await
            .map_err(|err| format!("{name}: {err}"))?;
        // The entry's bytes; whatever happens, the handle is closed, so the download is
        // accounted (complete or not) as a single download's is.
        let written: Result<(), String> = async {
            zip.begin_entry(&name, delivery.size, delivery.created)
                .await
                .map_err(|err| err.to_string())?;
            let mut position = 0u64;
            while position < delivery.size {
                let want = usize::try_from(delivery.size - position)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let data = handle
                    .read_at(position, want)
                    .await
                    .map_err(|err| err.to_string())?;
                if data.is_empty() {
                    return Err("the stored file is shorter than its record".to_owned());
                }
                zip.write(&data).await.map_err(|err| err.to_string())?;
                position += data.len() as u64;
            }
            zip.end_entry().await.map_err(|err| err.to_string())
        }
        .await;
        let closed = hub.close_read(session, handle).await;
        written.map_err(|err| format!("{name}: {err}"))?;
        closed.map_err(|err| format!("{name}: {err}"))?;
    }
    let mut pipe = zip.finish(&comment).await.map_err(|err| err.to_string())?;
    pipe.shutdown().await.map_err(|err| err.to_string())
}

/// The entry name of each delivery, in order: its name made safe (see [`safe_name`]), with
/// `.age` for end-to-end content (as its single download is saved), and a ` (2)`, ` (3)`… before
/// the extension where an earlier entry has the same name, letters compared without case (as
/// the file systems of Windows and macOS compare them).
pub fn entry_names(deliveries: &[Delivery]) -> Vec<String> {
    unique(
        deliveries
            .iter()
            .map(|delivery| {
                let suffix = if delivery.e2e { ".age" } else { "" };
                safe_name(&format!("{}{suffix}", delivery.name.as_str()))
            })
            .collect(),
    )
}

/// `names`, each that repeats an earlier one (letters compared without case) given a ` (2)`,
/// ` (3)`… before its extension, within [`MAX_FILE_NAME`] bytes.
fn unique(names: Vec<String>) -> Vec<String> {
    let mut taken = HashSet::with_capacity(names.len());
    names
        .into_iter()
        .map(|base| {
            let (stem, extension) = split_extension(&base);
            let mut name = base.clone();
            let mut n = 1u32;
            while !taken.insert(name.to_lowercase()) {
                n += 1;
                let tail = format!(" ({n}){extension}");
                let room = MAX_FILE_NAME.saturating_sub(tail.len());
                name = format!("{}{tail}", truncate(stem, room));
            }
            name
        })
        .collect()
}

/// A name that is one plain file name wherever the archive is unpacked, whatever the
/// delivery's name holds: `/` and `\`, control characters, the characters Windows refuses
/// (`: * ? " < > |`) and the invisible ones that reorder text (bidirectional controls)
/// become `_`; a name of nothing but dots (`.`, `..`) or nothing at all becomes `_` plus it;
/// at most [`MAX_FILE_NAME`] bytes.
pub fn safe_name(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_control()
                || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.chars().all(|c| c == '.') {
        name.insert(0, '_');
    }
    truncate(&name, MAX_FILE_NAME).to_owned()
}

/// `name` split before its extension (the last `.` that is not its first character).
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The archive comment: a line, then `SHA-256  name` per entry (as `sha256sum` prints them);
/// `None` when it would not fit in [`MAX_COMMENT`] bytes.
pub fn archive_comment(deliveries: &[Delivery], names: &[String]) -> Option<String> {
    let mut comment = String::from("SHA-256 of each file, as sha256sum prints them:\n");
    for (delivery, name) in deliveries.iter().zip(names) {
        comment.push_str(&delivery.sha256);
        comment.push_str("  ");
        comment.push_str(name);
        comment.push('\n');
    }
    (comment.len() <= MAX_COMMENT).then_some(comment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expect: &str) {
        assert_eq!(safe_name(raw), expect, "{raw:?}");
    }

    #[test]
    fn names_become_one_plain_file_name() {
        check("report.pdf", "report.pdf");
        check("../../etc/passwd", ".._.._etc_passwd");
        check("..", "_..");
        check(".", "_.");
        check("", "_");
        check("a\\b", "a_b");
        check("bell\u{7}\r\nname", "bell___name");
        check("C:evil", "C_evil");
        check("invoice\u{202e}fdp.exe", "invoice_fdp.exe");
        check("Ünïcødé ok.txt", "Ünïcødé ok.txt");
        let long = "é".repeat(200);
        let safe = safe_name(&long);
        assert!(safe.len() <= MAX_FILE_NAME && safe.chars().all(|c| c == 'é'));
    }

    #[test]
    fn repeated_names_get_a_number_before_the_extension() {
        let names = |list: &[&str]| unique(list.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(
            names(&["a.txt", "A.TXT", "a.txt", "a (2).txt", "b", "b"]),
            [
                "a.txt",
                "A (2).TXT",
                "a (3).txt",
                "a (2) (2).txt",
                "b",
                "b (2)"
            ]
        );
        let long = format!("{}.bin", "x".repeat(MAX_FILE_NAME - 4));
        let twice = names(&[&long, &long]);
        assert!(twice[1].ends_with("x (2).bin") && twice[1].len() <= MAX_FILE_NAME);
    }

    #[test]
    fn extensions_split_at_the_last_dot_but_not_a_leading_one() {
        assert_eq!(split_extension("a.tar.gz"), ("a.tar", ".gz"));
        assert_eq!(split_extension(".profile"), (".profile", ""));
        assert_eq!(split_extension("README"), ("README", ""));
    }
}
