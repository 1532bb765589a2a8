//! What every page has in common: the layout's data ([`Page`]: title, navigation, the notice
//! at the top), rendering a template into a response, the refusal page, and the small
//! formatting helpers the templates use. Notices after a redirect are fixed sentences chosen
//! by a code in the query (`?done=…`), so nothing a link carries is echoed into a page.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use mailroom_core::{CoreError, Scope};
use mailroom_https::Problem;
use time::OffsetDateTime;

use crate::session::WebSession;

/// The layout's data.
pub(crate) struct Page {
    /// The page's title (also the `<h1>`).
    pub(crate) title: String,
    /// The navigation, for a signed-in session.
    pub(crate) nav: Option<Nav>,
    /// The notice at the top of the page.
    pub(crate) flash: Option<Flash>,
}

/// The navigation bar of a signed-in session.
pub(crate) struct Nav {
    /// The account's name.
    pub(crate) account: String,
    /// "Client" or "Administrator".
    pub(crate) role: &'static str,
    /// The session's CSRF token (for the sign-out form).
    pub(crate) csrf: String,
    /// The links.
    pub(crate) items: Vec<NavItem>,
}

/// One link of the navigation.
pub(crate) struct NavItem {
    /// Where it goes.
    pub(crate) href: &'static str,
    /// What it says.
    pub(crate) label: &'static str,
    /// Whether it is the current page.
    pub(crate) current: bool,
}

/// A notice: success or error.
#[derive(Debug, Clone)]
pub(crate) struct Flash {
    /// "ok" or "error" (a CSS class).
    pub(crate) kind: &'static str,
    /// The sentence.
    pub(crate) text: String,
}

impl Flash {
    /// A success notice.
    pub(crate) fn ok(text: impl Into<String>) -> Flash {
        Flash {
            kind: "ok",
            text: text.into(),
        }
    }

    /// An error notice.
    pub(crate) fn error(text: impl Into<String>) -> Flash {
        Flash {
            kind: "error",
            text: text.into(),
        }
    }

    /// The ARIA role: errors interrupt, successes are polite.
    pub(crate) fn role(&self) -> &'static str {
        if self.kind == "error" {
            "alert"
        } else {
            "status"
        }
    }
}

const CLIENT_NAV: [(&str, &str); 6] = [
    ("/inbox", "Inbox"),
    ("/send", "Send"),
    ("/sent", "Sent"),
    ("/keys", "Keys"),
    ("/security", "Security"),
    ("/account", "Account"),
];

const ADMIN_NAV: [(&str, &str); 7] = [
    ("/admin/accounts", "Accounts"),
    ("/admin/groups", "Groups"),
    ("/admin/routes", "Routes"),
    ("/admin/bans", "Bans"),
    ("/admin/sessions", "Sessions"),
    ("/admin/jobs", "Jobs"),
    ("/admin/audit", "Audit"),
];

impl Page {
    /// A page titled `title` for `session` (navigation when signed in), `current` being the
    /// path of its navigation entry.
    pub(crate) fn new(
        title: impl Into<String>,
        session: Option<&WebSession>,
        current: &str,
    ) -> Page {
        let nav = session.map(|s| {
            let (role, links) = match s.identity.scope {
                Scope::Client => ("Client", &CLIENT_NAV[..]),
                Scope::Admin => ("Administrator", &ADMIN_NAV[..]),
            };
            Nav {
                account: s.identity.account.to_string(),
                role,
                csrf: s.csrf.clone(),
                items: links
                    .iter()
                    .map(|(href, label)| NavItem {
                        href,
                        label,
                        current: *href == current,
                    })
                    .collect(),
            }
        });
        Page {
            title: title.into(),
            nav,
            flash: None,
        }
    }

    /// The same page with a notice.
    pub(crate) fn with_flash(mut self, flash: Option<Flash>) -> Page {
        self.flash = flash;
        self
    }
}

/// Renders `template` with `status`.
pub(crate) fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; the operator has the details",
            )
                .into_response()
        }
    }
}

/// A page that says why a request was refused.
#[derive(Template)]
#[template(path = "refusal.html")]
struct Refusal {
    page: Page,
    message: String,
}

/// A refusal page with `status`, a heading and a sentence.
pub(crate) fn refusal(
    session: Option<&WebSession>,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    render(
        status,
        &Refusal {
            page: Page::new(title, session, ""),
            message: message.to_owned(),
        },
    )
}

/// The answer to a path nothing serves: under `/api/` the API's problem document (the API
/// answers in JSON whatever the path), elsewhere a page that says so with a way back.
pub(crate) async fn not_found(
    crate::session::MaybeSession(session): crate::session::MaybeSession,
    uri: axum::http::Uri,
) -> Response {
    if uri.path().starts_with("/api/") {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "no such endpoint; the API is described at /api/v1/openapi.json",
        )
        .into_response();
    }
    refusal(
        session.as_ref(),
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address. It may have moved, or the link may be mistyped.",
    )
}

/// The answer to a page asked with a method it does not take (a form posted to a page that
/// only shows, or the like).
pub(crate) async fn method_not_allowed(
    crate::session::MaybeSession(session): crate::session::MaybeSession,
) -> Response {
    refusal(
        session.as_ref(),
        StatusCode::METHOD_NOT_ALLOWED,
        "Not possible here",
        "This page does not take that kind of request. Go back and use the page's own buttons.",
    )
}

/// The status and the sentence of a Hub refusal (the API's mapping; internal errors say
/// only that something failed).
pub(crate) fn hub_error(err: &CoreError) -> (StatusCode, Flash) {
    let problem = Problem::from_core(err);
    (problem.status(), Flash::error(capitalise(&problem.detail)))
}

/// What a list page shows: the rows the Hub returned with the page's status and flash, or,
/// when the Hub refused, no rows with the refusal's status and message.
pub(crate) fn listed<T>(
    rows: Result<Vec<T>, CoreError>,
    status: StatusCode,
    flash: Option<Flash>,
) -> (StatusCode, Option<Flash>, Vec<T>) {
    match rows {
        Ok(rows) => (status, flash, rows),
        Err(err) => {
            let (status, flash) = hub_error(&err);
            (status, Some(flash), Vec::new())
        }
    }
}

/// The first letter in upper case, for sentences built from the core's messages.
pub(crate) fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A moment as every page shows it: a `<time>` element whose `datetime` is RFC 3339 in UTC to
/// the second (no fractions) and whose text and `title` are `2030-01-31 12:00 UTC`. The
/// `time.js` asset rewrites the text in the viewer's time zone and keeps UTC in the title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Time {
    /// `2030-01-31T12:00:00Z`, for the `datetime` attribute.
    pub(crate) machine: String,
    /// `2030-01-31 12:00 UTC`, the text without script and the title.
    pub(crate) text: String,
}

/// The page form of `time`.
pub(crate) fn time(time: OffsetDateTime) -> Time {
    Time {
        machine: machine_time(time),
        text: when(time),
    }
}

/// The page form of an RFC 3339 time a wire view carries; a string that is none is shown as
/// it is (escaped, like everything).
pub(crate) fn time_of(rfc3339: &str) -> Time {
    match OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(parsed) => time(parsed),
        Err(_) => Time {
            machine: String::new(),
            text: rfc3339.to_owned(),
        },
    }
}

/// A time as the pages show it: `2030-01-31 12:00 UTC`.
pub(crate) fn when(time: OffsetDateTime) -> String {
    let t = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// A time in RFC 3339, in UTC to the second (for `<time datetime>`): no fractions, whatever
/// the store kept.
pub(crate) fn machine_time(time: OffsetDateTime) -> String {
    let t = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A byte count for people.
pub(crate) fn size(bytes: u64) -> String {
    mailroom_core::format_size(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sentences() {
        assert_eq!(when(OffsetDateTime::UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let precise = OffsetDateTime::UNIX_EPOCH + time::Duration::nanoseconds(90_123_456_789);
        assert_eq!(
            machine_time(precise),
            "1970-01-01T00:01:30Z",
            "no fractions"
        );
        let parsed = time_of("2030-01-31T13:00:00.123456789+01:00");
        assert_eq!(parsed.machine, "2030-01-31T12:00:00Z");
        assert_eq!(parsed.text, "2030-01-31 12:00 UTC");
        assert_eq!(time_of("soon").text, "soon");
        assert_eq!(capitalise("no such delivery"), "No such delivery");
        assert_eq!(capitalise(""), "");
    }
}
