//! The pages of a client: sign-in and sign-out, the inbox (download, acknowledge, and the
//! same for the ticked files at once: one ZIP, one acknowledgement), sending
//! (the page; the bytes go through [`crate::bridge`]), sent items with their receipts
//! (recall), and TOTP enrolment. Each handler is one or two Hub calls on the session's
//! mailbox; a Hub refusal is shown with the Hub's own sentence and changes nothing.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use mailroom_core::{
    AccountKind, AccountName, Delivery, DeliveryId, DeliveryOrder, DeliverySort, DeliveryState,
    Listing, MAX_BATCH, Scope, Secret, SortDirection,
};
use mailroom_https::ConnInfo;
use mailroom_https::auth::LoginForm;
use mailroom_https::listing::{
    DEFAULT_PER_PAGE, ListingOf, ListingParams, page_number, query_string,
};
use rand::RngExt;
use serde::Deserialize;

use crate::pages::{self, Flash, Page, render};
use crate::qr;
use crate::session::{
    self, LOGIN_COOKIE, MaybeSession, User, Web, clear_cookie, clear_session_cookies, cookie,
    set_cookie,
};

/// The code of a notice after a redirect (`?done=…`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
}

impl Done {
    fn flash(&self) -> Option<Flash> {
        let text = match self.done.as_deref()? {
            "signed-out" => "You have signed out.",
            "password-changed" => {
                "Your password is changed and every session of yours signed out. Sign in with the new password."
            }
            "acknowledged" => {
                "Acknowledged: the file is gone from your inbox and the sender's receipt says so."
            }
            "acknowledged-selected" => {
                "Acknowledged: the selected files are gone from your inbox and their senders' receipts say so."
            }
            "recalled" => "Recalled: the recipient will not see this file.",
            _ => return None,
        };
        Some(Flash::ok(text))
    }
}

/// `/`: the inbox for a client, the accounts for an administrator, else the sign-in page.
pub(crate) async fn home(MaybeSession(session): MaybeSession) -> Redirect {
    match session.map(|s| s.identity.scope) {
        Some(Scope::Client) => Redirect::to("/inbox"),
        Some(Scope::Admin) => Redirect::to("/admin/accounts"),
        None => Redirect::to("/login"),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: Page,
    nonce: String,
    username: String,
    need_code: bool,
}

/// The sign-in form. Its anti-forgery nonce goes into a cookie and a hidden field.
pub(crate) async fn login_page(
    MaybeSession(session): MaybeSession,
    Query(done): Query<Done>,
    headers: HeaderMap,
) -> Response {
    if session.is_some() {
        return Redirect::to("/").into_response();
    }
    let nonce = match cookie(&headers, LOGIN_COOKIE) {
        Some(nonce) if nonce.len() == 32 => nonce.to_owned(),
        _ => {
            let mut bytes = [0u8; 16];
            rand::rng().fill(&mut bytes[..]);
            hex::encode(bytes)
        }
    };
    let page = LoginPage {
        page: Page::new("Sign in", None, "").with_flash(done.flash()),
        nonce: nonce.clone(),
        username: String::new(),
        need_code: false,
    };
    let mut response = render(StatusCode::OK, &page);
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &nonce, 3600));
    response
}

/// The fields of the sign-in form.
#[derive(Deserialize)]
pub(crate) struct LoginFields {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    csrf: String,
}

/// Signs in through the API's login (the Hub's steps, defender and events): on success the
/// token pair goes into the session cookies. Every failure reads the same, whatever the cause.
pub(crate) async fn login_submit(
    State(web): State<Arc<Web>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    Form(fields): Form<LoginFields>,
) -> Response {
    let username = fields.username.trim().to_owned();
    let again = |status: StatusCode, flash: Flash, need_code: bool| {
        let page = LoginPage {
            page: Page::new("Sign in", None, "").with_flash(Some(flash)),
            nonce: fields.csrf.clone(),
            username: username.clone(),
            need_code,
        };
        render(status, &page)
    };
    if let Err(wait) = web.app.admit_login(conn.peer.ip()) {
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            Flash::error(format!(
                "Too many sign-in attempts from your address. Try again in {wait} seconds."
            )),
            false,
        );
    }
    // Administrators sign in on the same form: the account's kind picks the scope. Unknown
    // names take the client path, which costs the same and answers the same.
    let scope = match AccountName::parse(&username) {
        Ok(name) => match web.app.hub.account(&name).await {
            Ok(account) if account.kind == AccountKind::Admin => Scope::Admin,
            _ => Scope::Client,
        },
        Err(_) => Scope::Client,
    };
    let form = LoginForm {
        username: username.clone(),
        password: (!fields.password.is_empty()).then(|| Secret::new(fields.password.clone())),
        code: (!fields.code.trim().is_empty()).then(|| Secret::new(fields.code.trim().to_owned())),
        scope,
        methods: None,
    };
    let lifetimes = web.app.config.token_lifetimes();
    match mailroom_https::auth::login(
        &web.app.hub,
        form,
        conn.peer,
        conn.certificate_cn.as_deref(),
        &lifetimes,
    )
    .await
    {
        Ok(issued) => {
            let mut response = Redirect::to("/").into_response();
            for value in session::session_cookies(&web, &issued) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
                .headers_mut()
                .append(header::SET_COOKIE, clear_cookie(LOGIN_COOKIE));
            response
        }
        Err(problem) if problem.detail.starts_with("this account also requires") => {
            let text = if problem.detail.contains("totp") {
                "Your password was right. This account also needs the 6-digit code from your authenticator app (or a recovery code): enter your password and the code."
            } else {
                "This account also requires an SSH key or a client certificate, which a browser sign-in cannot provide. Use the file protocols or ask your administrator."
            };
            again(StatusCode::UNAUTHORIZED, Flash::error(text), true)
        }
        Err(problem) if problem.status() == StatusCode::UNAUTHORIZED => again(
            StatusCode::UNAUTHORIZED,
            Flash::error(
                "Sign-in failed. Check the account name, the password and, if your account uses one, the authentication code.",
            ),
            !fields.code.trim().is_empty(),
        ),
        Err(problem) => again(
            problem.status(),
            Flash::error(pages::capitalise(&problem.detail)),
            false,
        ),
    }
}

/// Signs out: the login's tokens are deleted in the Hub (with a `session.closed` event) and the
/// cookies cleared.
pub(crate) async fn logout(
    State(web): State<Arc<Web>>,
    MaybeSession(session): MaybeSession,
) -> Response {
    if let Some(session) = session
        && let Err(err) = web.app.hub.logout(&session.identity).await
    {
        tracing::warn!(error = %err, "logout failed");
    }
    let mut response = Redirect::to("/login?done=signed-out").into_response();
    for value in clear_session_cookies() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// One delivery as the inbox and sent pages show it.
pub(crate) struct Row {
    id: String,
    sender: String,
    recipient: String,
    target: String,
    name: String,
    size: String,
    bytes: u64,
    sha256: String,
    created: pages::Time,
    updated: pages::Time,
    state: &'static str,
    state_label: &'static str,
    recallable: bool,
    /// End-to-end encrypted: the hub holds only ciphertext, which the page offers as is.
    e2e: bool,
}

impl Row {
    fn new(d: &Delivery) -> Row {
        Row {
            id: d.id.to_string(),
            sender: d.sender.to_string(),
            recipient: d.recipient.to_string(),
            target: d.target.to_string(),
            name: d.name.to_string(),
            size: pages::size(d.size),
            bytes: d.size,
            sha256: d.sha256.clone(),
            created: pages::time(d.created),
            updated: pages::time(d.updated),
            state: d.state.as_str(),
            state_label: state_label(d.state),
            recallable: DeliveryState::RECALLABLE.contains(&d.state),
            e2e: d.e2e,
        }
    }

    fn short_sha(&self) -> &str {
        self.sha256.get(..12).unwrap_or(&self.sha256)
    }

    fn via_group(&self) -> bool {
        self.target != self.recipient
    }
}

/// A delivery state in words.
fn state_label(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Stored => "Stored",
        DeliveryState::Checking => "Being checked",
        DeliveryState::Delivered => "Delivered",
        DeliveryState::PickedUp => "Picked up",
        DeliveryState::Acknowledged => "Acknowledged",
        DeliveryState::Recalled => "Recalled",
        DeliveryState::Expired => "Expired",
        DeliveryState::Quarantined => "Quarantined",
        DeliveryState::Deleted => "Deleted from quarantine",
        DeliveryState::Failed => "Lost (content missing or damaged)",
    }
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    page: Page,
    csrf: String,
    rows: Vec<Row>,
    total: String,
    pager: Pager,
}

/// The inbox: what was delivered to this account, one page at a time, newest first unless
/// the page's parameters (`page`, `per_page`, `sort`, `order`, `q`) say otherwise.
pub(crate) async fn inbox(
    State(web): State<Arc<Web>>,
    user: User,
    Query(done): Query<Done>,
    Query(params): Query<ListingParams>,
) -> Response {
    let (status, flash, listing) = read_listing(&params, ListingOf::Inbox, done.flash());
    inbox_with(&web, &user, status, flash, &listing).await
}

async fn inbox_with(
    web: &Web,
    user: &User,
    status: StatusCode,
    flash: Option<Flash>,
    listing: &Listing,
) -> Response {
    let (status, flash, deliveries, more) =
        match web.app.hub.inbox_page(&user.client, listing).await {
            Ok(page) => (status, flash, page.deliveries, page.more),
            Err(err) => {
                let (status, flash) = pages::hub_error(&err);
                (status, Some(flash), Vec::new(), false)
            }
        };
    let rows: Vec<Row> = deliveries.iter().map(Row::new).collect();
    let total = pages::size(rows.iter().map(|r| r.bytes).sum());
    let page = InboxPage {
        page: Page::new("Inbox", Some(&user.session), "/inbox").with_flash(flash),
        csrf: user.session.csrf.clone(),
        rows,
        total,
        pager: Pager::new("/inbox", ListingOf::Inbox, listing, more),
    };
    render(status, &page)
}

/// The listing a page's parameters ask for; a wrong value shows the first page with the
/// sentence that says what it takes (422), rather than guessing.
fn read_listing(
    params: &ListingParams,
    of: ListingOf,
    flash: Option<Flash>,
) -> (StatusCode, Option<Flash>, Listing) {
    match params.listing(of, SortDirection::Descending) {
        Ok(listing) => (StatusCode::OK, flash, listing),
        Err(sentence) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(Flash::error(pages::capitalise(&sentence) + ".")),
            default_listing(),
        ),
    }
}

/// The first page, newest first: what a page shows after an action.
fn default_listing() -> Listing {
    Listing {
        order: DeliveryOrder {
            sort: DeliverySort::Created,
            direction: SortDirection::Descending,
        },
        name_contains: None,
        offset: 0,
        limit: DEFAULT_PER_PAGE,
    }
}

/// What a listing page shows around its rows: the filter form's values, a link per column
/// that sorts by it, and the links to the neighbouring pages. Every link spells out the
/// whole listing, so it works without script and from the keyboard.
struct Pager {
    /// The page's own path (`/inbox`, `/sent`).
    path: &'static str,
    /// The filter as typed.
    q: String,
    /// The sort and direction shown.
    sort: &'static str,
    order: &'static str,
    per_page: u32,
    /// The page shown, from 1.
    number: u32,
    /// The sorts this listing offers.
    sorts: Vec<&'static str>,
    listing: Listing,
    /// The previous and next pages, if any.
    prev: Option<String>,
    next: Option<String>,
}

impl Pager {
    fn new(path: &'static str, of: ListingOf, listing: &Listing, more: bool) -> Pager {
        let number = page_number(listing);
        let link = |page: u32| format!("{path}?{}", query_string(listing, page));
        Pager {
            path,
            q: listing.name_contains.clone().unwrap_or_default(),
            sort: listing.order.sort.as_str(),
            order: listing.order.direction.as_str(),
            per_page: listing.limit,
            number,
            sorts: of.sorts().iter().map(|s| s.as_str()).collect(),
            listing: listing.clone(),
            prev: (number > 1).then(|| link(number - 1)),
            next: more.then(|| link(number + 1)),
        }
    }

    /// Whether the rows are filtered or not the first page: then an empty page is no empty
    /// mailbox.
    fn narrowed(&self) -> bool {
        !self.q.is_empty() || self.number > 1
    }

    /// The link that sorts by `sort`: the other way round if it is the sort shown, else
    /// dates and sizes largest first and names in alphabetical order. Back to page 1.
    fn sort_href(&self, sort: &str) -> String {
        let Some(wanted) = DeliverySort::parse(sort) else {
            return self.path.to_owned();
        };
        let direction = if wanted == self.listing.order.sort {
            match self.listing.order.direction {
                SortDirection::Ascending => SortDirection::Descending,
                SortDirection::Descending => SortDirection::Ascending,
            }
        } else if matches!(wanted, DeliverySort::Created | DeliverySort::Size) {
            SortDirection::Descending
        } else {
            SortDirection::Ascending
        };
        let listing = Listing {
            order: DeliveryOrder {
                sort: wanted,
                direction,
            },
            offset: 0,
            ..self.listing.clone()
        };
        format!("{}?{}", self.path, query_string(&listing, 1))
    }

    /// `aria-sort` of a column: `ascending`, `descending` or `none`.
    fn aria_sort(&self, sort: &str) -> &'static str {
        match (sort == self.sort, self.listing.order.direction) {
            (false, _) => "none",
            (true, SortDirection::Ascending) => "ascending",
            (true, SortDirection::Descending) => "descending",
        }
    }

    /// The arrow after a column's name: ▲, ▼ or nothing.
    fn arrow(&self, sort: &str) -> &'static str {
        match self.aria_sort(sort) {
            "ascending" => " ▲",
            "descending" => " ▼",
            _ => "",
        }
    }

    /// A sort's label in the form.
    fn label(&self, sort: &str) -> &'static str {
        match sort {
            "date" => "Date",
            "name" => "Name",
            "size" => "Size",
            "sender" => "Sender",
            "recipient" => "Recipient",
            _ => "",
        }
    }
}

/// Acknowledges a delivery of the inbox (deletes it).
pub(crate) async fn acknowledge(
    State(web): State<Arc<Web>>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    let result = match DeliveryId::parse(&id) {
        Ok(id) => web.app.hub.acknowledge(&user.client, &id).await,
        Err(_) => Err(mailroom_core::CoreError::not_found(
            "no such delivery in your inbox",
        )),
    };
    match result {
        Ok(()) => Redirect::to("/inbox?done=acknowledged").into_response(),
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            inbox_with(&web, &user, status, Some(flash), &default_listing()).await
        }
    }
}

/// The deliveries ticked in the inbox's selection form: every `id` field of its url-encoded
/// body (a checkbox each). None ticked, more than the Hub takes at once, or an id that is no
/// delivery id is a sentence for the page; the Hub checks the rest (each must be in the inbox).
fn selected_ids(body: &[u8]) -> Result<Vec<DeliveryId>, Flash> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| Flash::error("The form could not be read. Reload the page and try again."))?;
    let ids: Vec<&str> = fields
        .iter()
        .filter(|(name, _)| name == "id")
        .map(|(_, value)| value.as_str())
        .collect();
    if ids.is_empty() {
        return Err(Flash::error(
            "No file is selected: tick the files first, then choose what to do with them.",
        ));
    }
    if ids.len() > MAX_BATCH {
        return Err(Flash::error(format!(
            "At most {MAX_BATCH} files at once, not {}.",
            ids.len()
        )));
    }
    ids.iter()
        .map(|id| {
            DeliveryId::parse(id)
                .map_err(|_| Flash::error("A selected file is no longer in your inbox."))
        })
        .collect()
}

/// Downloads the ticked deliveries as one ZIP, streamed as the API's `POST /api/v1/inbox/zip`
/// makes it (the same function): each entry counts as a download, and the archive comment
/// lists the SHA-256 of each. A refusal shows the inbox with the sentence; nothing is sent.
pub(crate) async fn zip_selected(State(web): State<Arc<Web>>, user: User, body: Bytes) -> Response {
    let result = match selected_ids(&body) {
        Ok(ids) => {
            mailroom_https::batch::zip_response(web.app.hub.clone(), user.client.clone(), &ids)
                .await
                .map_err(|problem| {
                    let flash = Flash::error(pages::capitalise(&problem.detail));
                    (problem.status(), flash)
                })
        }
        Err(flash) => Err((StatusCode::UNPROCESSABLE_ENTITY, flash)),
    };
    match result {
        Ok(response) => response,
        Err((status, flash)) => {
            inbox_with(&web, &user, status, Some(flash), &default_listing()).await
        }
    }
}

/// Acknowledges the ticked deliveries as one action: all of them, or (when any is no longer
/// in the inbox) none.
pub(crate) async fn acknowledge_selected(
    State(web): State<Arc<Web>>,
    user: User,
    body: Bytes,
) -> Response {
    let result = match selected_ids(&body) {
        Ok(ids) => web
            .app
            .hub
            .acknowledge_many(&user.client, &ids)
            .await
            .map_err(|err| pages::hub_error(&err)),
        Err(flash) => Err((StatusCode::UNPROCESSABLE_ENTITY, flash)),
    };
    match result {
        Ok(_) => Redirect::to("/inbox?done=acknowledged-selected").into_response(),
        Err((status, flash)) => {
            inbox_with(&web, &user, status, Some(flash), &default_listing()).await
        }
    }
}

#[derive(Template)]
#[template(path = "send.html")]
struct SendPage {
    page: Page,
    csrf: String,
    chunk: u64,
}

/// The send page: recipients, a drop zone and a file picker; the script uploads each file with
/// the API's resumable uploads.
pub(crate) async fn send(State(web): State<Arc<Web>>, user: User) -> Response {
    let page = SendPage {
        page: Page::new("Send files", Some(&user.session), "/send"),
        csrf: user.session.csrf.clone(),
        chunk: web.app.config.max_chunk_bytes.clamp(64 * 1024, 1 << 20),
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "sent.html")]
struct SentPage {
    page: Page,
    csrf: String,
    rows: Vec<Row>,
    pager: Pager,
}

/// Sent items with their receipts: what this account sent and its state, one page at a
/// time, as the inbox.
pub(crate) async fn sent(
    State(web): State<Arc<Web>>,
    user: User,
    Query(done): Query<Done>,
    Query(params): Query<ListingParams>,
) -> Response {
    let (status, flash, listing) = read_listing(&params, ListingOf::Sent, done.flash());
    sent_with(&web, &user, status, flash, &listing).await
}

async fn sent_with(
    web: &Web,
    user: &User,
    status: StatusCode,
    flash: Option<Flash>,
    listing: &Listing,
) -> Response {
    let (status, flash, deliveries, more) = match web.app.hub.sent_page(&user.client, listing).await
    {
        Ok(page) => (status, flash, page.deliveries, page.more),
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            (status, Some(flash), Vec::new(), false)
        }
    };
    let page = SentPage {
        page: Page::new("Sent", Some(&user.session), "/sent").with_flash(flash),
        csrf: user.session.csrf.clone(),
        rows: deliveries.iter().map(Row::new).collect(),
        pager: Pager::new("/sent", ListingOf::Sent, listing, more),
    };
    render(status, &page)
}

/// Recalls a delivery this account sent, if it is not yet picked up.
pub(crate) async fn recall(
    State(web): State<Arc<Web>>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    let result = match DeliveryId::parse(&id) {
        Ok(id) => web.app.hub.recall(&user.client, &id).await,
        Err(_) => Err(mailroom_core::CoreError::not_found(
            "no such delivery among your sent items",
        )),
    };
    match result {
        Ok(()) => Redirect::to("/sent?done=recalled").into_response(),
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            sent_with(&web, &user, status, Some(flash), &default_listing()).await
        }
    }
}

#[derive(Template)]
#[template(path = "security.html")]
struct SecurityPage {
    page: Page,
    csrf: String,
    enrolled: bool,
    require: String,
    setup: Option<TotpView>,
}

/// A fresh TOTP enrolment, shown once.
struct TotpView {
    qr_svg: String,
    secret: String,
    uri: String,
    codes: Vec<String>,
}

/// The security page: whether the account has TOTP and which factors it requires.
pub(crate) async fn security(State(web): State<Arc<Web>>, user: User) -> Response {
    security_with(&web, &user, StatusCode::OK, None, None).await
}

async fn security_with(
    web: &Web,
    user: &User,
    status: StatusCode,
    flash: Option<Flash>,
    setup: Option<TotpView>,
) -> Response {
    let (enrolled, require) = match web.app.hub.account(&user.client.account).await {
        Ok(account) => {
            let require = if account.access.factors.is_default() {
                "any one of password, key or certificate".to_owned()
            } else {
                account.access.factors.labels().join(" + ")
            };
            (account.totp.is_some(), require)
        }
        Err(_) => (false, "unknown".to_owned()),
    };
    let page = SecurityPage {
        page: Page::new("Security", Some(&user.session), "/security").with_flash(flash),
        csrf: user.session.csrf.clone(),
        enrolled,
        require,
        setup,
    };
    render(status, &page)
}

/// The field of the enrolment form: while enrolled, a current code or a recovery code.
#[derive(Deserialize)]
pub(crate) struct TotpFields {
    #[serde(default)]
    code: String,
}

/// Enrols this account in TOTP, or replaces its enrolment given a current code of the
/// authenticator or a recovery code: the page shows the QR code, the secret and the recovery
/// codes once.
pub(crate) async fn enroll_totp(
    State(web): State<Arc<Web>>,
    user: User,
    Form(fields): Form<TotpFields>,
) -> Response {
    let code = Some(fields.code.trim().to_owned())
        .filter(|c| !c.is_empty())
        .map(Secret::new);
    match web.app.hub.enroll_own_totp(&user.client, code).await {
        Ok(setup) => {
            let uri = setup.uri.expose().clone();
            let view = TotpView {
                qr_svg: qr::svg(&uri).unwrap_or_default(),
                secret: setup.secret.expose().clone(),
                uri,
                codes: setup
                    .recovery_codes
                    .iter()
                    .map(|c| c.expose().clone())
                    .collect(),
            };
            let flash = Flash::ok(
                "Authenticator enrolled. Scan the code now and keep the recovery codes somewhere safe: they are shown only once.",
            );
            security_with(&web, &user, StatusCode::OK, Some(flash), Some(view)).await
        }
        Err(err) => {
            let (status, flash) = pages::hub_error(&err);
            security_with(&web, &user, status, Some(flash), None).await
        }
    }
}
