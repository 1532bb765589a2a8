//! A client's mailbox over HTTP: inbox, download with `Range`, acknowledge, receipts, recall,
//! and resumable sends. Each handler is one or two Hub calls on the token's session; ids of
//! other accounts are NotFound in the Hub, so they answer 404 and change nothing. The inbox's
//! handlers take [`Receiving`] and the sending ones [`Sending`], so an API key reaches only
//! what its scopes allow.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mailroom_core::{
    AccountName, ClientSession, Content, DeliveryId, FileName, Hub, ListedPage, Listing,
    ReadHandle, SortDirection,
};

use crate::api::Refusals;
use crate::auth::{ClientAuth, Receiving, Sending};
use crate::listing::{ListingOf, ListingParams, page_number, query_string};
use crate::problem::Problem;
use crate::server::{ApiJson, AppState};
use crate::wire::{Delivered, DeliveryView, FinishUpload, NewUpload, UploadView};

/// Bytes read from the Hub per chunk of a download.
const READ_CHUNK: usize = 256 * 1024;

/// The offset header of resumable uploads (as in the IETF resumable-uploads draft and tus).
pub const UPLOAD_OFFSET: &str = "upload-offset";
/// The total size header of resumable uploads.
pub const UPLOAD_LENGTH: &str = "upload-length";

fn delivery_id(text: &str) -> Result<DeliveryId, Problem> {
    DeliveryId::parse(text)
        .map_err(|_| Problem::new(StatusCode::NOT_FOUND, format!("no delivery {text:.64}")))
}

/// The deliveries waiting in your inbox: all of them, oldest first, or with any of `page`,
/// `per_page`, `sort`, `order` and `q`, one page of at most 500, with a `Link` header (RFC
/// 8288) to the next and previous pages.
#[utoipa::path(get, path = "/api/v1/inbox", tag = "client", security(("bearer" = [])),
    params(ListingParams),
    responses((status = 200, description = "Your inbox, or one page of it", body = [DeliveryView],
        headers(("Link" = String, description = "rel=\"next\" and rel=\"prev\" pages, when paged"))),
        Refusals))]
pub(crate) async fn inbox(
    State(state): State<Arc<AppState>>,
    Receiving(auth): Receiving,
    params: Result<Query<ListingParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|r| Problem::bad_request(r.body_text()))?;
    if params.is_empty() {
        let deliveries = state.hub.inbox(&auth.session).await?;
        return Ok(Json(
            deliveries
                .iter()
                .map(DeliveryView::from)
                .collect::<Vec<_>>(),
        )
        .into_response());
    }
    let listing = listing_of(&params, ListingOf::Inbox)?;
    let page = state.hub.inbox_page(&auth.session, &listing).await?;
    Ok(paged("/api/v1/inbox", &listing, &page))
}

/// The listing the parameters ask for; 422 with the sentence for a wrong value.
fn listing_of(params: &ListingParams, of: ListingOf) -> Result<Listing, Problem> {
    params
        .listing(of, SortDirection::Ascending)
        .map_err(|detail| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail))
}

/// One page as JSON, with a `Link` header to its neighbours.
fn paged(path: &str, listing: &Listing, page: &ListedPage) -> Response {
    let number = page_number(listing);
    let mut links = Vec::new();
    if page.more {
        links.push(format!(
            "<{path}?{}>; rel=\"next\"",
            query_string(listing, number + 1)
        ));
    }
    if number > 1 {
        links.push(format!(
            "<{path}?{}>; rel=\"prev\"",
            query_string(listing, number - 1)
        ));
    }
    let views: Vec<DeliveryView> = page.deliveries.iter().map(DeliveryView::from).collect();
    let mut response = Json(views).into_response();
    // The links are ASCII (the filter is percent-encoded), so the value parses; were it not
    // to, the page would go without its links rather than fail.
    if !links.is_empty()
        && let Ok(value) = HeaderValue::from_str(&links.join(", "))
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// One delivery of your inbox.
#[utoipa::path(get, path = "/api/v1/inbox/{id}", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery", body = DeliveryView), Refusals))]
pub(crate) async fn inbox_item(
    State(state): State<Arc<AppState>>,
    Receiving(auth): Receiving,
    Path(id): Path<String>,
) -> Result<Json<DeliveryView>, Problem> {
    let delivery = state
        .hub
        .inbox_delivery(&auth.session, &delivery_id(&id)?)
        .await?;
    Ok(Json(DeliveryView::from(&delivery)))
}

/// A byte range asked for with `Range: bytes=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// No usable Range header: the whole file.
    All,
    /// `[start, end)`.
    Part(u64, u64),
    /// A range past the end.
    Unsatisfiable,
}

/// Reads one `bytes=` range against a file of `size` bytes. Several ranges, other units and
/// malformed headers are ignored (the whole file is sent), as RFC 9110 §14.2 allows.
fn wanted(headers: &HeaderMap, size: u64) -> Wanted {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::All;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::All;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // The last N bytes.
        return match last.parse::<u64>() {
            Ok(0) => Wanted::Unsatisfiable,
            Ok(n) if size == 0 => {
                let _ = n;
                Wanted::Unsatisfiable
            }
            Ok(n) => Wanted::Part(size.saturating_sub(n), size),
            Err(_) => Wanted::All,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Wanted::All;
    };
    let end = if last.is_empty() {
        size
    } else {
        match last.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(size),
            _ => return Wanted::All,
        }
    };
    if start >= size {
        Wanted::Unsatisfiable
    } else {
        Wanted::Part(start, end)
    }
}

/// Downloads a delivery's content; `Range: bytes=START-END` gives 206 with that part, and a
/// range past the end 416. The first complete download marks the delivery picked up.
#[utoipa::path(get, path = "/api/v1/inbox/{id}/content", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "Delivery id"),
           ("Range" = Option<String>, Header, description = "bytes=START-END")),
    responses(
        (status = 200, description = "The whole file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The range asked for", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 416, description = "Range not satisfiable", content_type = "application/problem+json", body = Problem),
        Refusals))]
pub(crate) async fn content(
    State(state): State<Arc<AppState>>,
    Receiving(auth): Receiving,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let id = delivery_id(&id)?;
    let delivery = state.hub.inbox_delivery(&auth.session, &id).await?;
    let size = delivery.size;
    let (status, start, end) = match wanted(&headers, size) {
        Wanted::All => (StatusCode::OK, 0, size),
        Wanted::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end),
        Wanted::Unsatisfiable => {
            let mut response = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the file has {size} bytes; ask for a range that starts before that"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let handle = state.hub.open_delivery(&auth.session, &id).await?;
    let download = Download {
        hub: state.hub.clone(),
        session: auth.session,
        handle: Some(handle),
        position: start,
        end,
    };
    let stream = futures::stream::unfold(download, |mut download| async move {
        match download.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), download)),
            Ok(None) => None,
            Err(err) => Some((Err(std::io::Error::other(err.to_string())), download)),
        }
    });
    let coding = crate::ace::response_coding(&auth.identity, &headers);
    let mut response = match coding {
        Some(coding) => Response::new(crate::ace::encoded(stream, coding)),
        None => Response::new(Body::from_stream(stream)),
    };
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    match coding {
        // The length of the compressed stream is not known before it is made.
        Some(coding) => {
            headers.insert(header::CONTENT_ENCODING, crate::ace::header_value(coding));
        }
        None => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        }
    }
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", delivery.sha256)) {
        headers.insert(header::ETAG, etag);
    }
    // End-to-end content is age ciphertext: saved as such, and typed so.
    let suffix = if delivery.e2e { ".age" } else { "" };
    if delivery.e2e {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.age"),
        );
    }
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "attachment; filename*=UTF-8''{}{suffix}",
        percent_encode(delivery.name.as_str())
    )) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(range) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1))
    {
        headers.insert(header::CONTENT_RANGE, range);
    }
    Ok(response)
}

/// RFC 8187 value encoding for `filename*`.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A download in progress: reads the Hub's handle chunk by chunk, and closes it (accounting,
/// pick-up) at the end, or when the client goes away.
struct Download {
    hub: Arc<Hub>,
    session: ClientSession,
    handle: Option<ReadHandle>,
    position: u64,
    end: u64,
}

impl Download {
    async fn next_chunk(&mut self) -> mailroom_core::Result<Option<bytes::Bytes>> {
        let Some(handle) = &self.handle else {
            return Ok(None);
        };
        if self.position >= self.end {
            if let Some(handle) = self.handle.take() {
                self.hub.close_read(&self.session, handle).await?;
            }
            return Ok(None);
        }
        let want = usize::try_from(self.end - self.position)
            .unwrap_or(READ_CHUNK)
            .min(READ_CHUNK);
        let data = handle.read_at(self.position, want).await?;
        if data.is_empty() {
            // The blob is shorter than its record says: end here, accounted.
            self.position = self.end;
            return Ok(Some(bytes::Bytes::new()));
        }
        self.position += data.len() as u64;
        Ok(Some(bytes::Bytes::from(data)))
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // The client went away mid-download: still accounted (as incomplete).
        if let Some(handle) = self.handle.take() {
            let hub = self.hub.clone();
            let session = self.session.clone();
            tokio::spawn(async move {
                if let Err(err) = hub.close_read(&session, handle).await {
                    tracing::warn!(error = %err, "could not account an interrupted download");
                }
            });
        }
    }
}

/// Acknowledges (deletes) a delivery of your inbox.
#[utoipa::path(post, path = "/api/v1/inbox/{id}/ack", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 204, description = "Acknowledged"), Refusals))]
pub(crate) async fn acknowledge(
    State(state): State<Arc<AppState>>,
    Receiving(auth): Receiving,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .hub
        .acknowledge(&auth.session, &delivery_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Your receipts: every delivery you sent, with its state, oldest first; or with any of
/// `page`, `per_page`, `sort`, `order` and `q`, one page of at most 500, with a `Link`
/// header, as the inbox.
#[utoipa::path(get, path = "/api/v1/sent", tag = "client", security(("bearer" = [])),
    params(ListingParams),
    responses((status = 200, description = "Your receipts, or one page of them", body = [DeliveryView],
        headers(("Link" = String, description = "rel=\"next\" and rel=\"prev\" pages, when paged"))),
        Refusals))]
pub(crate) async fn sent(
    State(state): State<Arc<AppState>>,
    Sending(auth): Sending,
    params: Result<Query<ListingParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|r| Problem::bad_request(r.body_text()))?;
    if params.is_empty() {
        let deliveries = state.hub.sent(&auth.session).await?;
        return Ok(Json(
            deliveries
                .iter()
                .map(DeliveryView::from)
                .collect::<Vec<_>>(),
        )
        .into_response());
    }
    let listing = listing_of(&params, ListingOf::Sent)?;
    let page = state.hub.sent_page(&auth.session, &listing).await?;
    Ok(paged("/api/v1/sent", &listing, &page))
}

/// Recalls a delivery you sent that is not yet picked up (a group fan-out as a whole).
#[utoipa::path(post, path = "/api/v1/sent/{id}/recall", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 204, description = "Recalled"), Refusals))]
pub(crate) async fn recall(
    State(state): State<Arc<AppState>>,
    Sending(auth): Sending,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state.hub.recall(&auth.session, &delivery_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn problem_422(err: mailroom_core::CoreError) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, err.message())
}

/// Begins a resumable upload to one or more accounts or groups. Routes, rights, name rules
/// and size limits are checked now; send the bytes with `PATCH`, then `finish`.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "client", security(("bearer" = [])),
    request_body = NewUpload,
    responses((status = 201, description = "Begun", body = UploadView,
        headers(("Location" = String, description = "The upload's URL"))), Refusals))]
pub(crate) async fn create_upload(
    State(state): State<Arc<AppState>>,
    Sending(auth): Sending,
    ApiJson(request): ApiJson<NewUpload>,
) -> Result<Response, Problem> {
    let name = FileName::parse(&request.name).map_err(problem_422)?;
    let targets = request
        .recipients
        .iter()
        .map(|r| AccountName::parse(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(problem_422)?;
    let info = state
        .hub
        .open_resumable(
            &auth.session,
            &targets,
            &name,
            request.size,
            request.sha256.as_deref(),
            if request.e2e {
                Content::EndToEnd
            } else {
                Content::Plain
            },
            state.config.upload_expiry(),
        )
        .await?;
    let mut response = (StatusCode::CREATED, Json(UploadView::from(&info))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/uploads/{}", info.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    set_offset(&mut response, info.offset, info.size);
    Ok(response)
}

fn set_offset(response: &mut Response, offset: u64, size: u64) {
    let headers = response.headers_mut();
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    headers.insert(UPLOAD_LENGTH, HeaderValue::from(size));
}

/// One of your unfinished uploads: how many bytes arrived.
#[utoipa::path(get, path = "/api/v1/uploads/{id}", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 200, description = "The upload", body = UploadView), Refusals))]
pub(crate) async fn upload_status(
    State(state): State<Arc<AppState>>,
    Sending(auth): Sending,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let lease = state.hub.lease_resumable(&auth.session, &id).await?;
    let info = lease.info();
    drop(lease);
    let mut response = Json(UploadView::from(&info)).into_response();
    set_offset(&mut response, info.offset, info.size);
    Ok(response)
}

/// The current offset of an unfinished upload, in `Upload-Offset` (after a dropped
/// connection, resume from there).
#[utoipa::path(head, path = "/api/v1/uploads/{id}", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 200, description = "Offset in the Upload-Offset header",
        headers(("Upload-Offset" = u64, description = "Bytes received"),
                ("Upload-Length" = u64, description = "Bytes announced"))), Refusals))]
pub(crate) async fn upload_offset(
    State(state): State<Arc<AppState>>,
    Sending(auth): Sending,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let lease = state.hub.lease_resumable(&auth.session, &id).await?;
    let info = lease.info();
    drop(lease);
    let mut response = StatusCode::OK.into_response();
    set_offset(&mut response, info.offset, info.size);
    Ok(response)
}

/// Appends bytes at `Upload-Offset`, which must be the upload's current offset (else 409 and
/// nothing is written). A connection that drops mid-body keeps the bytes that arrived.
#[utoipa::path(patch, path = "/api/v1/uploads/{id}", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id"),
           ("Upload-Offset" = u64, Header, description = "Where these bytes go")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The bytes; any content type is taken (application/offset+octet-stream as in the resumable-uploads draft)"),
    responses((status = 204, description = "Stored; the new offset is in Upload-Offset",
        headers(("Upload-Offset" = u64, description = "Bytes received"))), Refusals))]
pub(crate) async fn upload_patch(
    State(state): State<Arc<AppState>>,
    Sending(auth): Sending,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let checked = match crate::ace::request_coding(&state.ace, &auth.identity, &headers) {
        Ok(coding) => patch_checks(&state, &auth, &id, &headers)
            .await
            .map(|(lease, offset)| (lease, offset, coding)),
        Err(problem) => Err(problem),
    };
    let (lease, offset, coding) = match checked {
        Ok(checked) => checked,
        Err(problem) => {
            crate::server::drain(body).await;
            return Err(problem);
        }
    };
    let limit = state.config.max_chunk_bytes;
    write_body(lease, &id, offset, limit, crate::ace::decoded(body, coding)).await
}

/// What a PATCH must pass before its body is read: the offset header, the size, the upload
/// (the caller's, not busy) and the offset matching.
async fn patch_checks(
    state: &AppState,
    auth: &ClientAuth,
    id: &str,
    headers: &HeaderMap,
) -> Result<(mailroom_core::ResumableLease, u64), Problem> {
    let offset = headers
        .get(UPLOAD_OFFSET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| Problem::bad_request("send the offset of these bytes in Upload-Offset"))?;
    let limit = state.config.max_chunk_bytes;
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit
    {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("one PATCH may carry at most {limit} bytes; send the file in parts"),
        ));
    }
    let lease = state.hub.lease_resumable(&auth.session, id).await?;
    let current = lease.offset();
    if offset != current {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!(
                "the upload has {current} bytes; send from Upload-Offset {current}, not {offset}"
            ),
        ));
    }
    Ok((lease, offset))
}

/// Streams a PATCH body (decoded, when it came compressed) into the upload, chunk by chunk.
async fn write_body(
    mut lease: mailroom_core::ResumableLease,
    id: &str,
    offset: u64,
    limit: u64,
    mut body: impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
) -> Result<Response, Problem> {
    let mut position = offset;
    while let Some(data) = body.next().await {
        let data = match data {
            Ok(data) => data,
            Err(err) if err.kind() != std::io::ErrorKind::ConnectionAborted => {
                // A compressed body that does not decode: what decoded before stays.
                tracing::info!(upload = %id, received = position - offset, error = %err, "upload body does not decode");
                return Err(Problem::bad_request(
                    "the request body does not decode with its Content-Encoding; resume from the upload's offset",
                ));
            }
            Err(err) => {
                // The client went away: what arrived stays, for a resume from HEAD's offset.
                tracing::info!(upload = %id, received = position - offset, error = %err, "upload body interrupted");
                return Err(Problem::bad_request(
                    "the request body ended early; resume from the upload's offset",
                ));
            }
        };
        if data.is_empty() {
            continue;
        }
        if position - offset + data.len() as u64 > limit {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("one PATCH may carry at most {limit} bytes; send the file in parts"),
            ));
        }
        lease.write(position, data.to_vec()).await?;
        position += data.len() as u64;
    }
    let info = lease.info();
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_offset(&mut response, info.offset, info.size);
    Ok(response)
}

/// Finishes an upload whose bytes have all arrived: with the right SHA-256 it becomes one
/// delivery per recipient; with another, nothing is delivered and the upload is gone.
#[utoipa::path(post, path = "/api/v1/uploads/{id}/finish", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    request_body = FinishUpload,
    responses((status = 201, description = "Delivered", body = Delivered), Refusals))]
pub(crate) async fn finish_upload(
    State(state): State<Arc<AppState>>,
    Sending(auth): Sending,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<FinishUpload>,
) -> Result<Response, Problem> {
    let lease = state.hub.lease_resumable(&auth.session, &id).await?;
    let deliveries = state.hub.finish_resumable(lease, &request.sha256).await?;
    let body = Delivered {
        deliveries: deliveries.iter().map(DeliveryView::from).collect(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// What `PUT /api/v1/outbox/{target}/{name}` is told beside the bytes.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SendParams {
    /// The SHA-256 of the whole file (64 hex digits): anything else is not delivered.
    sha256: String,
    /// The bytes are age ciphertext for the recipients' end-to-end keys.
    #[serde(default)]
    e2e: bool,
}

/// Sends a file in one request, as an SFTP `put` does: the body is the file (in the agreed
/// coding), and it becomes one delivery per recipient of `target` (an account or a group) only
/// when the body ended and its SHA-256 is the one named. Nothing is kept of a request that
/// fails; for large files, or to resume, use `POST /api/v1/uploads`.
#[utoipa::path(put, path = "/api/v1/outbox/{target}/{name}", tag = "client", security(("bearer" = [])),
    params(("target" = String, Path, description = "Account or group"),
           ("name" = String, Path, description = "File name"), SendParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file"),
    responses((status = 201, description = "Delivered", body = Delivered), Refusals))]
pub(crate) async fn send_file(
    State(state): State<Arc<AppState>>,
    Sending(auth): Sending,
    Path((target, name)): Path<(String, String)>,
    query: Result<Query<SendParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let checked = async {
        let Query(params) = query.map_err(|r| Problem::bad_request(r.body_text()))?;
        let sha256 = params.sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "a SHA-256 must be 64 hexadecimal digits",
            ));
        }
        let target = AccountName::parse(&target).map_err(problem_422)?;
        let name = FileName::parse(&name).map_err(problem_422)?;
        let coding = crate::ace::request_coding(&state.ace, &auth.identity, &headers)?;
        let content = if params.e2e {
            Content::EndToEnd
        } else {
            Content::Plain
        };
        let mut upload = state
            .hub
            .begin_send(&auth.session, &[target], &name, content)
            .await?;
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if coding.is_none()
            && let Some(size) = announced
            && let Err(err) = upload.announce_size(size)
        {
            state.hub.abort_upload(upload, "size over the limit").await;
            return Err(Problem::from(err));
        }
        Ok::<_, Problem>((upload, sha256, coding))
    }
    .await;
    let (mut upload, sha256, coding) = match checked {
        Ok(checked) => checked,
        Err(problem) => {
            crate::server::drain(body).await;
            return Err(problem);
        }
    };
    let mut body = crate::ace::decoded(body, coding);
    let mut position = 0u64;
    while let Some(data) = body.next().await {
        let data = match data {
            Ok(data) => data,
            Err(err) => {
                tracing::info!(received = position, error = %err, "file body ended early or did not decode");
                state
                    .hub
                    .abort_upload(upload, "the request body ended early")
                    .await;
                return Err(Problem::bad_request(
                    "the request body ended early or does not decode: nothing was delivered",
                ));
            }
        };
        if let Err(err) = upload.write_at(position, &data).await {
            state.hub.abort_upload(upload, "a write was refused").await;
            return Err(err.into());
        }
        position += data.len() as u64;
    }
    upload.expect_sha256(sha256);
    let deliveries = state.hub.finish_upload(upload).await?;
    let body = Delivered {
        deliveries: deliveries.iter().map(DeliveryView::from).collect(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Aborts an unfinished upload; nothing is delivered.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", tag = "client", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 204, description = "Aborted"), Refusals))]
pub(crate) async fn abort_upload(
    State(state): State<Arc<AppState>>,
    Sending(auth): Sending,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let lease = state.hub.lease_resumable(&auth.session, &id).await?;
    state
        .hub
        .abort_resumable(lease, "aborted by the client")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Wanted {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::RANGE,
            HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
        );
        wanted(&headers, size)
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100), Wanted::Part(0, 10));
        assert_eq!(range("bytes=90-", 100), Wanted::Part(90, 100));
        assert_eq!(range("bytes=-10", 100), Wanted::Part(90, 100));
        assert_eq!(range("bytes=50-500", 100), Wanted::Part(50, 100));
        assert_eq!(range("bytes=100-", 100), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=-0", 100), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=0-1,5-6", 100), Wanted::All);
        assert_eq!(range("items=0-1", 100), Wanted::All);
        assert_eq!(range("bytes=9-1", 100), Wanted::All);
        assert_eq!(wanted(&HeaderMap::new(), 100), Wanted::All);
    }

    #[test]
    fn file_names_are_percent_encoded() {
        assert_eq!(percent_encode("a b\"é.pdf"), "a%20b%22%C3%A9.pdf");
    }
}
