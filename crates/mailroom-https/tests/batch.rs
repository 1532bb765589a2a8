//! Many inbox deliveries at once over the API: `POST /api/v1/inbox/zip` streams a ZIP that
//! Python's zipfile unpacks, every entry with its delivery's bytes and SHA-256 (listed in the
//! archive comment) and each one counted as a download; `POST /api/v1/inbox/acknowledge`
//! acknowledges all the ids or none. Refusals (an id not in the inbox, too many, none, a key
//! without the receive scope) answer a problem and change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

mod common;

use common::{client, get, post, sha256, start, token, url};
use mailroom_core::{DeliveryState, EventKind, Outcome};
use mailroom_test_support::TestHub;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The bytes of file `i`: sizes from empty to a few hundred KiB (inline and blob-stored).
fn content(i: usize) -> Vec<u8> {
    let size = match i % 5 {
        0 => 0,
        1 => 17,
        2 => 4096 + i,
        3 => 70_000 + i * 31,
        _ => 300_000 + i * 1009,
    };
    (0..size).map(|b| (b * 7 + i * 13) as u8).collect()
}

/// Sends `name` with `body` from the token's account to bob in one request.
async fn send(hub: &TestHub, bearer: &str, name: &str, body: Vec<u8>) {
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

/// bob's inbox: (id, name, sha256) oldest first.
async fn inbox(hub: &TestHub, bearer: &str) -> Vec<(String, String, String)> {
    let response = get(hub, bearer, "/api/v1/inbox").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Vec<Value> = response.json().await.unwrap();
    body.iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["name"].as_str().unwrap().to_owned(),
                d["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Unpacks `zip` with Python's zipfile: the comment and each entry's name, size and SHA-256
/// (of the bytes read back, which zipfile also checks against the entry's CRC-32).
const UNPACK: &str = r#"
import hashlib, json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    entries = []
    for info in z.infolist():
        data = z.read(info)
        entries.append({"name": info.filename, "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "stored": info.compress_type == zipfile.ZIP_STORED})
    print(json.dumps({"bad": bad, "comment": z.comment.decode(), "entries": entries}))
"#;

#[tokio::test]
async fn a_zip_of_fifty_files_unpacks_and_every_entry_matches_its_sha256() {
    let Some(python) = mailroom_test_support::python_with("zipfile") else {
        return;
    };
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
    // 45 from alice, 5 from carol with names alice used too (one in other letter case).
    for i in 0..45 {
        send(&hub, &a, &format!("file-{i:02}.bin"), content(i)).await;
    }
    for (i, name) in [
        (45, "file-00.bin"),
        (46, "FILE-01.BIN"),
        (47, "file-02.bin"),
        (48, "notes.txt"),
        (49, "file-03.bin"),
    ] {
        send(&hub, &c, name, content(i)).await;
    }
    let listed = inbox(&hub, &b).await;
    assert_eq!(listed.len(), 50);
    let downloads_before = hub.events(EventKind::Download, Outcome::Ok).await.len();

    let ids: Vec<&str> = listed.iter().map(|(id, ..)| id.as_str()).collect();
    let response = post(&hub, &b, "/api/v1/inbox/zip", json!({ "ids": ids })).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment"),
    );
    let archive = response.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.zip");
    std::fs::write(&path, &archive).unwrap();
    let out = tokio::process::Command::new(&python)
        .args(["-c", UNPACK])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unpacked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(unpacked["bad"], Value::Null, "every CRC-32 matches");
    let entries = unpacked["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 50);

    // In the order asked; a name an earlier entry has (whatever its case) gets " (2)".
    let mut expected_names: Vec<String> = listed.iter().map(|(_, n, _)| n.clone()).collect();
    for (i, renamed) in [
        (45, "file-00 (2).bin"),
        (46, "FILE-01 (2).BIN"),
        (47, "file-02 (2).bin"),
        (49, "file-03 (2).bin"),
    ] {
        assert_eq!(
            expected_names[i].to_lowercase(),
            renamed.replace(" (2)", "").to_lowercase()
        );
        expected_names[i] = renamed.to_owned();
    }
    let comment = unpacked["comment"].as_str().unwrap();
    for (i, entry) in entries.iter().enumerate() {
        let (_, _, sha) = &listed[i];
        assert_eq!(entry["name"], expected_names[i].as_str());
        assert_eq!(entry["stored"], true, "{}: STOREd", expected_names[i]);
        assert_eq!(entry["sha256"], sha.as_str(), "{}", expected_names[i]);
        assert_eq!(entry["sha256"], sha256(&content(i)).as_str());
        assert_eq!(entry["size"], content(i).len());
        assert!(
            comment
                .lines()
                .any(|line| line == format!("{sha}  {}", expected_names[i])),
            "the comment lists {}: {comment}",
            expected_names[i]
        );
    }
    assert_eq!(
        comment.lines().count(),
        51,
        "a title line and one per entry"
    );

    // Each entry was a complete download: 50 events, every delivery picked up.
    let downloads = hub.events(EventKind::Download, Outcome::Ok).await;
    assert_eq!(downloads.len(), downloads_before + 50);
    let states: Vec<DeliveryState> = hub.deliveries().await.iter().map(|d| d.state).collect();
    assert!(
        states.iter().all(|s| *s == DeliveryState::PickedUp),
        "{states:?}"
    );
}

#[tokio::test]
async fn many_are_acknowledged_at_once_and_a_bad_batch_changes_nothing() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    let carol = hub.client("carol").await;
    hub.allow("alice", "bob").await;
    hub.allow("alice", "carol").await;
    let (a, b) = (
        token(&hub, &alice, "client").await,
        token(&hub, &bob, "client").await,
    );
    for i in 0..6 {
        send(&hub, &a, &format!("f{i}.bin"), content(i)).await;
    }
    // One for carol: its id must never work for bob.
    let body = content(3);
    let response = client(&hub)
        .put(url(
            &hub,
            &format!("/api/v1/outbox/carol/c.bin?sha256={}", sha256(&body)),
        ))
        .bearer_auth(&a)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let carols = inbox(&hub, &token(&hub, &carol, "client").await).await[0]
        .0
        .clone();
    let listed = inbox(&hub, &b).await;
    let mine: Vec<&str> = listed.iter().map(|(id, ..)| id.as_str()).collect();

    let mut with_carols = mine.clone();
    with_carols.insert(3, &carols);
    let too_many = vec![mine[0]; 1001];
    let refusals: [(&str, Value, StatusCode, &str); 8] = [
        (
            "/api/v1/inbox/acknowledge",
            json!({"ids": with_carols}),
            StatusCode::NOT_FOUND,
            &carols,
        ),
        (
            "/api/v1/inbox/zip",
            json!({"ids": with_carols}),
            StatusCode::NOT_FOUND,
            &carols,
        ),
        (
            "/api/v1/inbox/acknowledge",
            json!({"ids": [mine[0], "../etc"]}),
            StatusCode::NOT_FOUND,
            "../etc",
        ),
        (
            "/api/v1/inbox/zip",
            json!({"ids": [mine[0], "../etc"]}),
            StatusCode::NOT_FOUND,
            "../etc",
        ),
        (
            "/api/v1/inbox/acknowledge",
            json!({"ids": too_many}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1001",
        ),
        (
            "/api/v1/inbox/zip",
            json!({"ids": too_many}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1001",
        ),
        (
            "/api/v1/inbox/acknowledge",
            json!({"ids": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1 to 1000",
        ),
        (
            "/api/v1/inbox/zip",
            json!({"ids": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1 to 1000",
        ),
    ];
    for (path, body, status, said) in refusals {
        let before = hub.snapshot().await;
        let downloads = hub.events(EventKind::Download, Outcome::Ok).await.len();
        let response = post(&hub, &b, path, body).await;
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(said),
            "{path}: {problem}"
        );
        assert_eq!(hub.snapshot().await, before, "{path} changed something");
        assert_eq!(
            hub.events(EventKind::Download, Outcome::Ok).await.len(),
            downloads
        );
    }
    // The sender's token names ids she sent, not ids of her inbox.
    let before = hub.snapshot().await;
    let response = post(&hub, &a, "/api/v1/inbox/acknowledge", json!({"ids": mine})).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(hub.snapshot().await, before);

    // Four of six, one named twice: one answer, four acknowledged, four events.
    let acked_before = hub
        .events(EventKind::DeliveryAcknowledged, Outcome::Ok)
        .await
        .len();
    let chosen = [mine[0], mine[2], mine[2], mine[4], mine[5]];
    let response = post(
        &hub,
        &b,
        "/api/v1/inbox/acknowledge",
        json!({"ids": chosen}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["acknowledged"], 4);
    let left: Vec<String> = inbox(&hub, &b)
        .await
        .into_iter()
        .map(|(_, n, _)| n)
        .collect();
    assert_eq!(left, ["f1.bin", "f3.bin"]);
    assert_eq!(
        hub.events(EventKind::DeliveryAcknowledged, Outcome::Ok)
            .await
            .len(),
        acked_before + 4
    );
}

#[tokio::test]
async fn an_api_key_without_the_receive_scope_takes_no_batch() {
    let hub = start().await;
    let bob = hub.client("bob").await;
    let alice = hub.client("alice").await;
    hub.allow("alice", "bob").await;
    send(
        &hub,
        &token(&hub, &alice, "client").await,
        "x.bin",
        content(2),
    )
    .await;
    let b = token(&hub, &bob, "client").await;
    let id = inbox(&hub, &b).await[0].0.clone();
    let response = post(
        &hub,
        &b,
        "/api/v1/api-keys",
        json!({"label": "sender only", "scopes": ["send"]}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let key: Value = response.json().await.unwrap();
    let key = key["secret"].as_str().unwrap();
    for path in ["/api/v1/inbox/zip", "/api/v1/inbox/acknowledge"] {
        let before = hub.snapshot().await;
        let response = post(&hub, key, path, json!({"ids": [id]})).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains("receive"),
            "{problem}"
        );
        assert_eq!(hub.snapshot().await, before);
    }
}
