//! File names: the sender's allow and deny globs, which an upload and a rename meet alike;
//! collision suffixes (`~2` before the last extension, the name freed again once its
//! delivery ends, names per recipient); a group fan-out's one name, free for every member;
//! and renames that would overwrite, move or touch what is not a pending outbox file.

use mailroom_core::{AccountChange, ErrorKind, EventKind};

use crate::bed::{Bed, client, names, path};

/// alice's rules in every case: `*.csv` and `*.exe` allowed, `*.exe` and `secret*` denied
/// (a deny wins, and globs ignore case).
const RULES: &[(&str, Option<&str>)] = &[
    ("prices.csv", None),
    ("PRICES-2.CSV", None),
    (
        "setup.exe",
        Some("the name setup.exe matches the denied pattern *.exe"),
    ),
    (
        "secret.csv",
        Some("the name secret.csv matches the denied pattern secret*"),
    ),
    (
        "notes.txt",
        Some("the name notes.txt matches none of the allowed patterns *.csv, *.exe"),
    ),
];

async fn with_rules() -> Bed {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    bed.change(
        "alice",
        AccountChange {
            name_allow: Some(vec!["*.csv".into(), "*.exe".into()]),
            name_deny: Some(vec!["*.exe".into(), "secret*".into()]),
            ..AccountChange::default()
        },
    )
    .await;
    bed
}

#[tokio::test]
async fn name_rules_apply_to_uploads() {
    for (name, refusal) in RULES {
        let bed = with_rules().await;
        let at = path(&format!("/outbox/bob/{name}"));
        match refusal {
            None => {
                let sent = bed.send("alice", &at.to_string(), b"1,2,3").await;
                assert_eq!(names(&sent), [*name]);
            }
            Some(reason) => {
                let err = bed
                    .refused(
                        ErrorKind::PermissionDenied,
                        Some(EventKind::Upload),
                        bed.hub.begin_upload(&client("alice"), &at),
                    )
                    .await;
                assert_eq!(
                    err.message(),
                    format!("alice may not send this file: {reason}")
                );
            }
        }
    }
}

#[tokio::test]
async fn name_rules_apply_to_renames() {
    for (name, refusal) in RULES {
        let bed = with_rules().await;
        bed.send("alice", "/outbox/bob/draft.csv", b"1,2,3").await;
        let (alice, from, to) = (
            client("alice"),
            path("/outbox/bob/draft.csv"),
            path(&format!("/outbox/bob/{name}")),
        );
        let rename = bed.hub.rename(&alice, &from, &to);
        match refusal {
            None => {
                rename.await.unwrap();
                assert_eq!(names(&bed.deliveries().await), [*name]);
            }
            Some(reason) => {
                let err = bed
                    .refused(
                        ErrorKind::PermissionDenied,
                        Some(EventKind::DeliveryRenamed),
                        rename,
                    )
                    .await;
                assert_eq!(
                    err.message(),
                    format!("alice may not rename to {name}: {reason}")
                );
            }
        }
    }
}

/// Found by fuzzing (fuzz/fuzz_targets/core_names.rs): a taken name whose extension left no
/// room for the suffix made `FileName::with_suffix` loop for ever, so the second upload hung.
/// Now the suffix ends such a name.
#[tokio::test]
async fn a_taken_name_with_an_extension_too_long_for_a_suffix_is_suffixed_at_its_end() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    let name = format!("a.{}", "x".repeat(253));
    let to = format!("/outbox/bob/{name}");
    let first = bed.send("alice", &to, b"one").await;
    assert_eq!(names(&first), [name.as_str()]);
    let second = bed.send("alice", &to, b"two").await;
    let suffixed = format!("a.{}~2", "x".repeat(251));
    assert_eq!(names(&second), [suffixed.as_str()]);
}

#[tokio::test]
async fn a_taken_name_gets_the_next_suffix_and_nothing_is_overwritten() {
    // (upload as alice to this path, the name it is stored under)
    let steps: &[(&str, &str)] = &[
        ("/outbox/bob/data.csv", "data.csv"),
        ("/outbox/bob/data.csv", "data~2.csv"),
        ("/outbox/bob/data.csv", "data~3.csv"),
        ("/outbox/bob/readme", "readme"),
        ("/outbox/bob/readme", "readme~2"),
        ("/outbox/bob/.profile", ".profile"),
        ("/outbox/bob/.profile", ".profile~2"),
        ("/outbox/bob/archive.tar.gz", "archive.tar.gz"),
        ("/outbox/bob/archive.tar.gz", "archive.tar~2.gz"),
        // Names are per recipient: carol has no data.csv yet.
        ("/outbox/carol/data.csv", "data.csv"),
    ];
    for inline in [false, true] {
        let bed = if inline { Bed::inline() } else { Bed::new() };
        bed.clients(&["alice", "bob", "carol"]).await;
        bed.allow("alice", "bob").await;
        bed.allow("alice", "carol").await;
        let mut contents = Vec::new();
        for (i, (to, stored)) in steps.iter().enumerate() {
            let content = format!("content {i}").into_bytes();
            let sent = bed.send("alice", to, &content).await;
            assert_eq!(names(&sent), [*stored], "inline={inline} {to}");
            contents.push((sent[0].recipient.to_string(), *stored, content));
        }
        for (recipient, stored, content) in &contents {
            let got = bed
                .download(recipient, &format!("/inbox/alice/{stored}"))
                .await;
            assert_eq!(
                &got, content,
                "{recipient} {stored}: each name keeps its content"
            );
        }
        // Once the first data.csv has ended, its name is free again.
        bed.hub
            .remove(&client("bob"), &path("/inbox/alice/data.csv"))
            .await
            .unwrap();
        let sent = bed.send("alice", "/outbox/bob/data.csv", b"again").await;
        assert_eq!(names(&sent), ["data.csv"]);
    }
}

#[tokio::test]
async fn a_fan_out_takes_one_name_free_for_every_member() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol"]).await;
    bed.group("team", &["bob", "carol"]).await;
    bed.allow("alice", "bob").await;
    bed.allow("alice", "carol").await;
    bed.allow("alice", "team").await;
    // bob already holds report.pdf from alice; carol does not, but shares the fan-out's name.
    bed.send("alice", "/outbox/bob/report.pdf", b"direct").await;
    let fan_out = bed
        .send("alice", "/outbox/team/report.pdf", b"to all")
        .await;
    assert_eq!(names(&fan_out), ["report~2.pdf", "report~2.pdf"]);
    assert_eq!(fan_out[0].batch_id, fan_out[1].batch_id);
    assert_eq!(
        fan_out[0].blob_id, fan_out[1].blob_id,
        "one blob for the fan-out"
    );
    // The next fan-out of the name takes the next name free for both.
    let next = bed.send("alice", "/outbox/team/report.pdf", b"again").await;
    assert_eq!(names(&next), ["report~3.pdf", "report~3.pdf"]);
    // A direct upload to carol meets only carol's names: report.pdf is hers to take.
    let direct = bed
        .send("alice", "/outbox/carol/report.pdf", b"direct")
        .await;
    assert_eq!(names(&direct), ["report.pdf"]);
    // The group's folder lists each fan-out once.
    assert_eq!(
        bed.listing("alice", "/outbox/team").await,
        ["report~2.pdf", "report~3.pdf"]
    );
    assert_eq!(
        bed.listing("carol", "/inbox/alice").await,
        ["report~2.pdf", "report~3.pdf", "report.pdf"]
    );
}

#[tokio::test]
async fn renames_never_overwrite_move_or_touch_what_is_not_a_pending_outbox_file() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol"]).await;
    bed.allow("alice", "bob").await;
    bed.allow("alice", "carol").await;
    bed.send("alice", "/outbox/bob/final.txt", b"final").await;
    bed.send("alice", "/outbox/bob/other.txt", b"other").await;
    let picked = bed.send("alice", "/outbox/bob/read.txt", b"read").await;
    bed.download("bob", "/inbox/alice/read.txt").await;
    let cases: &[(&str, &str, &str, ErrorKind)] = &[
        (
            "alice",
            "/outbox/bob/final.txt",
            "/outbox/bob/other.txt",
            ErrorKind::Conflict,
        ),
        (
            "alice",
            "/outbox/bob/final.txt",
            "/outbox/carol/final.txt",
            ErrorKind::PermissionDenied,
        ),
        (
            "alice",
            "/outbox/bob/final.txt",
            "/inbox/bob/final.txt",
            ErrorKind::PermissionDenied,
        ),
        (
            "alice",
            "/outbox/bob/missing.txt",
            "/outbox/bob/x.txt",
            ErrorKind::NotFound,
        ),
        // Picked up: no longer the sender's to rename.
        (
            "alice",
            "/outbox/bob/read.txt",
            "/outbox/bob/x.txt",
            ErrorKind::NotFound,
        ),
        (
            "bob",
            "/inbox/alice/final.txt",
            "/inbox/alice/mine.txt",
            ErrorKind::PermissionDenied,
        ),
        (
            "alice",
            "/sent/bob/final.txt",
            "/sent/bob/x.txt",
            ErrorKind::PermissionDenied,
        ),
    ];
    for (who, from, to, kind) in cases {
        bed.refused(
            *kind,
            Some(EventKind::DeliveryRenamed),
            bed.hub.rename(&client(who), &path(from), &path(to)),
        )
        .await;
    }
    // A rename to the same name changes nothing and is no error.
    let before = bed.snapshot().await;
    bed.hub
        .rename(
            &client("alice"),
            &path("/outbox/bob/final.txt"),
            &path("/outbox/bob/final.txt"),
        )
        .await
        .unwrap();
    assert_eq!(bed.snapshot().await, before);
    assert_eq!(
        bed.listing("bob", "/inbox/alice").await,
        ["final.txt", "other.txt", "read.txt"]
    );
    assert_eq!(picked[0].name.as_str(), "read.txt");
}
