//! The query parameters of a paged listing (`page`, `per_page`, `sort`, `order`, `q`), read
//! into the core's [`Listing`], for the API's inbox and sent items and for the web UI's
//! pages of the same. Every value is checked here, with a sentence for the person who sent
//! it; the store does the paging itself. What a page is, and its bounds, are the core's.

use mailroom_core::{
    DeliveryOrder, DeliverySort, Listing, MAX_NAME_FILTER, MAX_PAGE_SIZE, SortDirection,
};
use serde::Deserialize;
use utoipa::IntoParams;

/// Rows per page when `per_page` is not given.
pub const DEFAULT_PER_PAGE: u32 = 50;

/// The parameters of a paged listing, as they came: text, so that a wrong value gets our
/// sentence rather than a deserializer's.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListingParams {
    /// The page, from 1 (default 1).
    pub page: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    pub per_page: Option<String>,
    /// `date`, `name`, `size`, and `sender` (inbox) or `recipient` (sent); default `date`.
    pub sort: Option<String>,
    /// `asc` or `desc`; default `asc` in the API, `desc` on the web pages.
    pub order: Option<String>,
    /// Only files whose name contains this text; ASCII letters match in either case.
    pub q: Option<String>,
}

/// Which listing the parameters are for: the column every row shares is not a sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingOf {
    /// The inbox: every row is to the same recipient.
    Inbox,
    /// The sent items: every row is from the same sender.
    Sent,
}

impl ListingOf {
    /// The sorts this listing offers, in the order a page shows them.
    pub fn sorts(self) -> [DeliverySort; 4] {
        let party = match self {
            ListingOf::Inbox => DeliverySort::Sender,
            ListingOf::Sent => DeliverySort::Recipient,
        };
        [
            DeliverySort::Created,
            DeliverySort::Name,
            DeliverySort::Size,
            party,
        ]
    }
}

impl ListingParams {
    /// Whether no parameter was given at all.
    pub fn is_empty(&self) -> bool {
        self.page.is_none()
            && self.per_page.is_none()
            && self.sort.is_none()
            && self.order.is_none()
            && self.q.is_none()
    }

    /// The listing these parameters ask for, with `direction` when `order` is absent; the
    /// error is a sentence naming the parameter and what it takes.
    pub fn listing(&self, of: ListingOf, direction: SortDirection) -> Result<Listing, String> {
        let page = number(self.page.as_deref(), "page", 1, u32::MAX, 1)?;
        let per_page = number(
            self.per_page.as_deref(),
            "per_page",
            1,
            MAX_PAGE_SIZE,
            DEFAULT_PER_PAGE,
        )?;
        let sort = match self.sort.as_deref() {
            None | Some("") => DeliverySort::Created,
            Some(text) => DeliverySort::parse(text)
                .filter(|sort| of.sorts().contains(sort))
                .ok_or_else(|| {
                    let names: Vec<&str> = of.sorts().iter().map(|s| s.as_str()).collect();
                    format!("sort must be one of {}", names.join(", "))
                })?,
        };
        let direction = match self.order.as_deref() {
            None | Some("") => direction,
            Some(text) => {
                SortDirection::parse(text).ok_or_else(|| "order must be asc or desc".to_owned())?
            }
        };
        let name_contains = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        if name_contains.is_some_and(|q| q.len() > MAX_NAME_FILTER) {
            return Err(format!("q is at most {MAX_NAME_FILTER} bytes"));
        }
        let offset = (page - 1)
            .checked_mul(per_page)
            .ok_or_else(|| format!("page {page} is past any listing"))?;
        Ok(Listing {
            order: DeliveryOrder { sort, direction },
            name_contains: name_contains.map(str::to_owned),
            offset,
            limit: per_page,
        })
    }
}

/// The page a listing shows, from 1.
pub fn page_number(listing: &Listing) -> u32 {
    listing.offset / listing.limit.max(1) + 1
}

/// The query string of `listing` at page `page`: every parameter spelled out, the filter
/// percent-encoded, so a link repeats the listing exactly.
pub fn query_string(listing: &Listing, page: u32) -> String {
    let mut query = format!(
        "page={page}&per_page={}&sort={}&order={}",
        listing.limit,
        listing.order.sort.as_str(),
        listing.order.direction.as_str()
    );
    if let Some(q) = &listing.name_contains {
        query.push_str("&q=");
        query.push_str(&percent_encode(q));
    }
    query
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A whole number from `min` to `max`, `default` when absent or empty.
fn number(text: Option<&str>, name: &str, min: u32, max: u32, default: u32) -> Result<u32, String> {
    match text {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("{name} must be a whole number from {min} to {max}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> ListingParams {
        let mut p = ListingParams::default();
        for (key, value) in pairs {
            let value = Some((*value).to_owned());
            match *key {
                "page" => p.page = value,
                "per_page" => p.per_page = value,
                "sort" => p.sort = value,
                "order" => p.order = value,
                "q" => p.q = value,
                _ => unreachable!(),
            }
        }
        p
    }

    fn check(pairs: &[(&str, &str)], of: ListingOf, expect: Result<(u32, u32, &str, &str), &str>) {
        let got = params(pairs)
            .listing(of, SortDirection::Ascending)
            .map(|l| {
                (
                    l.offset,
                    l.limit,
                    l.order.sort.as_str(),
                    l.order.direction.as_str(),
                )
            });
        match expect {
            Ok(want) => assert_eq!(got, Ok(want), "{pairs:?}"),
            Err(part) => {
                let err = got.unwrap_err();
                assert!(err.contains(part), "{pairs:?}: {err}");
            }
        }
    }

    #[test]
    fn parameters_become_a_listing_or_a_sentence() {
        use ListingOf::{Inbox, Sent};
        check(&[], Inbox, Ok((0, 50, "date", "asc")));
        check(
            &[("page", "3"), ("per_page", "20")],
            Inbox,
            Ok((40, 20, "date", "asc")),
        );
        check(
            &[("sort", "sender"), ("order", "desc")],
            Inbox,
            Ok((0, 50, "sender", "desc")),
        );
        check(
            &[("sort", "recipient")],
            Sent,
            Ok((0, 50, "recipient", "asc")),
        );
        check(&[("per_page", "500")], Sent, Ok((0, 500, "date", "asc")));
        check(
            &[("sort", "recipient")],
            Inbox,
            Err("sort must be one of date, name, size, sender"),
        );
        check(
            &[("sort", "sender")],
            Sent,
            Err("sort must be one of date, name, size, recipient"),
        );
        check(&[("sort", "created")], Inbox, Err("sort must be"));
        check(&[("order", "up")], Inbox, Err("order must be asc or desc"));
        check(
            &[("page", "0")],
            Inbox,
            Err("page must be a whole number from 1"),
        );
        check(&[("page", "-1")], Inbox, Err("page must be"));
        check(&[("page", "x")], Inbox, Err("page must be"));
        check(
            &[("per_page", "0")],
            Inbox,
            Err("per_page must be a whole number from 1 to 500"),
        );
        check(&[("per_page", "501")], Inbox, Err("per_page must be"));
        check(
            &[("page", "4294967295"), ("per_page", "2")],
            Inbox,
            Err("past any listing"),
        );
        check(
            &[("q", &"x".repeat(256))],
            Inbox,
            Err("q is at most 255 bytes"),
        );
        let filtered = params(&[("q", "  Report ")])
            .listing(Inbox, SortDirection::Descending)
            .unwrap();
        assert_eq!(filtered.name_contains.as_deref(), Some("Report"));
        assert_eq!(filtered.order.direction, SortDirection::Descending);
        let blank = params(&[("q", "  ")])
            .listing(Inbox, SortDirection::Ascending)
            .unwrap();
        assert_eq!(blank.name_contains, None);
    }

    #[test]
    fn a_query_string_repeats_the_listing() {
        let listing = params(&[
            ("page", "3"),
            ("per_page", "10"),
            ("sort", "size"),
            ("q", "a b&c=%é"),
        ])
        .listing(ListingOf::Inbox, SortDirection::Descending)
        .unwrap();
        assert_eq!(page_number(&listing), 3);
        assert_eq!(
            query_string(&listing, 4),
            "page=4&per_page=10&sort=size&order=desc&q=a%20b%26c%3D%25%C3%A9"
        );
    }
}
