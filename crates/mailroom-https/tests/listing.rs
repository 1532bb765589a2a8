//! Paged listings over the API: `GET /api/v1/inbox` and `/api/v1/sent` with `page`,
//! `per_page`, `sort`, `order` and `q` answer one page in the order asked, with `Link`
//! headers to its neighbours; without them, everything as before; and a wrong value is a
//! problem document that changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

mod common;

use common::{client, get, sha256, start, token, url};
use mailroom_test_support::TestHub;
use reqwest::StatusCode;
use serde_json::Value;

/// Sends `name` of `size` bytes from the token's account to bob in one request.
async fn send(hub: &TestHub, bearer: &str, name: &str, size: usize) {
    let body = vec![b'x'; size];
    let response = client(hub)
        .put(url(
            hub,
            &format!("/api/v1/outbox/bob/{name}?sha256={}", sha256(&body)),
        ))
        .bearer_auth(bearer)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{name}: {}",
        response.status()
    );
}

/// The names of a listing's answer, and its Link header.
async fn names(hub: &TestHub, bearer: &str, path: &str) -> (Vec<String>, Option<String>) {
    let response = get(hub, bearer, path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let link = response
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Vec<Value> = response.json().await.unwrap();
    let names = body
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    (names, link)
}

#[tokio::test]
async fn inbox_and_sent_are_paged_sorted_and_filtered() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let carol = hub.client("carol").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    hub.allow("carol", "bob").await;
    let (a, c, b) = (
        token(&hub, &alice, "client").await,
        token(&hub, &carol, "client").await,
        token(&hub, &bob, "client").await,
    );
    // Sent in this order, so date order is this order.
    send(&hub, &a, "Report-1.pdf", 30).await;
    send(&hub, &c, "notes.txt", 10).await;
    send(&hub, &a, "report_2.pdf", 50).await;
    send(&hub, &c, "photo.jpg", 40).await;
    send(&hub, &a, "REPORT3.csv", 20).await;

    // No parameters: everything, oldest first, no Link.
    let (all, link) = names(&hub, &b, "/api/v1/inbox").await;
    assert_eq!(
        all,
        [
            "Report-1.pdf",
            "notes.txt",
            "report_2.pdf",
            "photo.jpg",
            "REPORT3.csv"
        ]
    );
    assert_eq!(link, None);

    // Two per page, newest first: three pages linked to each other.
    let (first, link) = names(&hub, &b, "/api/v1/inbox?per_page=2&order=desc").await;
    assert_eq!(first, ["REPORT3.csv", "photo.jpg"]);
    let link = link.unwrap();
    assert_eq!(
        link,
        "</api/v1/inbox?page=2&per_page=2&sort=date&order=desc>; rel=\"next\""
    );
    let (second, link) = names(
        &hub,
        &b,
        "/api/v1/inbox?page=2&per_page=2&sort=date&order=desc",
    )
    .await;
    assert_eq!(second, ["report_2.pdf", "notes.txt"]);
    let link = link.unwrap();
    assert!(
        link.contains("page=3") && link.contains("rel=\"next\""),
        "{link}"
    );
    assert!(
        link.contains("page=1") && link.contains("rel=\"prev\""),
        "{link}"
    );
    let (third, link) = names(&hub, &b, "/api/v1/inbox?page=3&per_page=2&order=desc").await;
    assert_eq!(third, ["Report-1.pdf"]);
    assert!(!link.unwrap().contains("next"));
    let (past, _) = names(&hub, &b, "/api/v1/inbox?page=9&per_page=2").await;
    assert!(past.is_empty());

    // Each sort.
    let (by_size, _) = names(&hub, &b, "/api/v1/inbox?sort=size").await;
    assert_eq!(
        by_size,
        [
            "notes.txt",
            "REPORT3.csv",
            "Report-1.pdf",
            "photo.jpg",
            "report_2.pdf"
        ]
    );
    let (by_name, _) = names(&hub, &b, "/api/v1/inbox?sort=name&order=desc").await;
    assert_eq!(
        by_name,
        [
            "report_2.pdf",
            "photo.jpg",
            "notes.txt",
            "Report-1.pdf",
            "REPORT3.csv"
        ]
    );
    let (by_sender, _) = names(&hub, &b, "/api/v1/inbox?sort=sender&per_page=3").await;
    assert_eq!(by_sender.len(), 3);
    assert!(
        ["Report-1.pdf", "report_2.pdf", "REPORT3.csv"]
            .iter()
            .all(|n| by_sender.iter().any(|m| m == n)),
        "alice's three first: {by_sender:?}"
    );

    // The filter: a substring in any case, `%` and `_` as text, percent-encoded in the links.
    let (reports, _) = names(&hub, &b, "/api/v1/inbox?q=rePort&sort=name").await;
    assert_eq!(reports, ["REPORT3.csv", "Report-1.pdf", "report_2.pdf"]);
    let (underscore, _) = names(&hub, &b, "/api/v1/inbox?q=_").await;
    assert_eq!(underscore, ["report_2.pdf"]);
    let (one, link) = names(&hub, &b, "/api/v1/inbox?q=report%202&per_page=1").await;
    assert!(one.is_empty());
    assert_eq!(link, None);
    let (one, link) = names(&hub, &b, "/api/v1/inbox?q=.PDF&per_page=1").await;
    assert_eq!(one, ["Report-1.pdf"]);
    assert!(link.unwrap().contains("q=.PDF"));

    // The sent items: alice's, by recipient or name; never anyone else's.
    let (sent, _) = names(&hub, &a, "/api/v1/sent?sort=name").await;
    assert_eq!(sent, ["REPORT3.csv", "Report-1.pdf", "report_2.pdf"]);
    let (sent, _) = names(&hub, &c, "/api/v1/sent?sort=recipient&q=o").await;
    assert_eq!(sent, ["notes.txt", "photo.jpg"]);
    let (none, _) = names(&hub, &b, "/api/v1/sent?page=1").await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn wrong_listing_parameters_are_problems_and_change_nothing() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let (a, b) = (
        token(&hub, &alice, "client").await,
        token(&hub, &bob, "client").await,
    );
    send(&hub, &a, "one.txt", 3).await;
    let before = hub.snapshot().await;
    let long = "x".repeat(256);
    let cases = [
        ("/api/v1/inbox?page=0", "page must be a whole number from 1"),
        ("/api/v1/inbox?page=-2", "page must be"),
        ("/api/v1/inbox?page=two", "page must be"),
        (
            "/api/v1/inbox?per_page=0",
            "per_page must be a whole number from 1 to 500",
        ),
        ("/api/v1/inbox?per_page=501", "per_page must be"),
        ("/api/v1/inbox?per_page=100000000000", "per_page must be"),
        (
            "/api/v1/inbox?sort=recipient",
            "sort must be one of date, name, size, sender",
        ),
        ("/api/v1/inbox?sort=created", "sort must be one of"),
        ("/api/v1/inbox?order=up", "order must be asc or desc"),
        (
            "/api/v1/inbox?page=4294967295&per_page=2",
            "past any listing",
        ),
        (
            "/api/v1/sent?sort=sender",
            "sort must be one of date, name, size, recipient",
        ),
        ("/api/v1/sent?order=DESC", "order must be asc or desc"),
    ];
    let q = format!("/api/v1/inbox?q={long}");
    for (path, expected) in cases
        .iter()
        .copied()
        .chain([(q.as_str(), "q is at most 255 bytes")])
    {
        let bearer = if path.starts_with("/api/v1/sent") {
            &a
        } else {
            &b
        };
        let response = get(&hub, bearer, path).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{path}: {detail}");
    }
    assert_eq!(hub.snapshot().await, before);
    // Without a token, a listing is refused before its parameters are read.
    let response = client(&hub)
        .get(url(&hub, "/api/v1/inbox?page=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
