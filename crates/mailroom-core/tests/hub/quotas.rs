//! Sizes and quotas: the sender's largest file, the recipient's quota in bytes and in files,
//! decided when an upload opens and enforced by its writes (the write that crosses the limit
//! fails, poisons the upload, and nothing is delivered); the quota checked again when the
//! upload finishes, for an inbox another upload filled meanwhile; and resumable uploads, whose
//! announced size meets the same limits before a byte is sent.

use mailroom_core::{
    AccountChange, Content, CoreError, ErrorKind, EventKind, MetaStore, Outcome, Upload,
};
use sha2::{Digest, Sha256};

use crate::bed::{Bed, account, client, data, file, path};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Where an upload of the case ends.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Delivered whole.
    Delivered,
    /// Refused when it opens, before a byte, with this message.
    AtOpen(&'static str),
    /// Refused by the write that would cross the limit (after `limit` bytes were accepted),
    /// with this message.
    AtWrite { limit: u64, message: &'static str },
}
use Expect::{AtOpen, AtWrite, Delivered};

struct Case {
    what: &'static str,
    /// alice's largest file.
    max_file_size: Option<u64>,
    /// bob's quotas.
    quota_bytes: Option<u64>,
    quota_files: Option<u64>,
    /// Sizes of the files already waiting in bob's inbox.
    waiting: &'static [u64],
    /// The size of the upload.
    size: u64,
    expect: Expect,
}

const CASES: &[Case] = &[
    Case {
        what: "no limits",
        max_file_size: None,
        quota_bytes: None,
        quota_files: None,
        waiting: &[MIB],
        size: 3 * MIB,
        expect: Delivered,
    },
    Case {
        what: "under the sender's largest file",
        max_file_size: Some(200 * KIB),
        quota_bytes: None,
        quota_files: None,
        waiting: &[],
        size: 100_000,
        expect: Delivered,
    },
    Case {
        what: "exactly the sender's largest file",
        max_file_size: Some(200 * KIB),
        quota_bytes: None,
        quota_files: None,
        waiting: &[],
        size: 200 * KIB,
        expect: Delivered,
    },
    Case {
        what: "over the sender's largest file",
        max_file_size: Some(200 * KIB),
        quota_bytes: None,
        quota_files: None,
        waiting: &[],
        size: 300_000,
        expect: AtWrite {
            limit: 200 * KIB,
            message: "the file is larger than alice's limit of 200.0 KiB per file",
        },
    },
    Case {
        what: "larger than an empty inbox's quota",
        max_file_size: None,
        quota_bytes: Some(MIB),
        quota_files: None,
        waiting: &[],
        size: 2 * MIB,
        expect: AtWrite {
            limit: MIB,
            message: "the file does not fit in bob's mailbox: 0 bytes of 1.0 MiB used",
        },
    },
    Case {
        what: "larger than what the quota has left",
        max_file_size: None,
        quota_bytes: Some(MIB),
        quota_files: None,
        waiting: &[600 * KIB],
        size: 500 * KIB,
        expect: AtWrite {
            limit: 424 * KIB,
            message: "the file does not fit in bob's mailbox: 600.0 KiB of 1.0 MiB used",
        },
    },
    Case {
        what: "filling the quota exactly",
        max_file_size: None,
        quota_bytes: Some(MIB),
        quota_files: None,
        waiting: &[600 * KIB],
        size: 424 * KIB,
        expect: Delivered,
    },
    Case {
        what: "the smaller of the sender's limit and the free quota applies",
        max_file_size: Some(100 * KIB),
        quota_bytes: Some(MIB),
        quota_files: None,
        waiting: &[950 * KIB],
        size: 100 * KIB,
        expect: AtWrite {
            limit: 74 * KIB,
            message: "the file does not fit in bob's mailbox: 950.0 KiB of 1.0 MiB used",
        },
    },
    Case {
        what: "an inbox full by bytes",
        max_file_size: None,
        quota_bytes: Some(MIB),
        quota_files: None,
        waiting: &[MIB],
        size: 1,
        expect: AtOpen("bob's mailbox is full: 1.0 MiB of 1.0 MiB used"),
    },
    Case {
        what: "an inbox full by files",
        max_file_size: None,
        quota_bytes: None,
        quota_files: Some(1),
        waiting: &[10],
        size: 10,
        expect: AtOpen("bob's mailbox is full: 1 of 1 files waiting"),
    },
    Case {
        what: "room for one more file",
        max_file_size: None,
        quota_bytes: None,
        quota_files: Some(2),
        waiting: &[10],
        size: 10,
        expect: Delivered,
    },
];

/// Writes `size` bytes in 64 KiB chunks until one is refused; returns the bytes accepted and
/// the refusal, if any.
async fn write_all(upload: &mut Upload, size: u64) -> (u64, Option<CoreError>) {
    let chunk = data(64 * 1024, 7);
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(chunk.len() as u64);
        if let Err(err) = upload
            .write_at(offset, &chunk[..usize::try_from(len).unwrap()])
            .await
        {
            return (offset, Some(err));
        }
        offset += len;
    }
    (offset, None)
}

#[tokio::test]
async fn limits_are_decided_at_open_and_enforced_by_the_writes() {
    for case in CASES {
        let what = case.what;
        let bed = Bed::new();
        bed.clients(&["alice", "bob"]).await;
        bed.allow("alice", "bob").await;
        for (i, size) in case.waiting.iter().enumerate() {
            let name = format!("/outbox/bob/waiting-{i}.bin");
            bed.send("alice", &name, &data(usize::try_from(*size).unwrap(), 1))
                .await;
        }
        bed.change(
            "alice",
            AccountChange {
                max_file_size: Some(case.max_file_size),
                ..AccountChange::default()
            },
        )
        .await;
        bed.change(
            "bob",
            AccountChange {
                quota_bytes: Some(case.quota_bytes),
                quota_files: Some(case.quota_files),
                ..AccountChange::default()
            },
        )
        .await;
        let alice = client("alice");
        let at = path("/outbox/bob/case.bin");
        match case.expect {
            Delivered => {
                let mut upload = bed.hub.begin_upload(&alice, &at).await.unwrap();
                let (written, refusal) = write_all(&mut upload, case.size).await;
                assert!(refusal.is_none(), "{what}: {refusal:?}");
                let deliveries = bed.hub.finish_upload(upload).await.unwrap();
                assert_eq!(deliveries[0].size, written, "{what}");
            }
            AtOpen(message) => {
                let err = bed
                    .refused(
                        ErrorKind::QuotaExceeded,
                        Some(EventKind::Upload),
                        bed.hub.begin_upload(&alice, &at),
                    )
                    .await;
                assert_eq!(err.message(), message, "{what}");
            }
            AtWrite { limit, message } => {
                let before = bed.snapshot().await;
                let mut upload = bed.hub.begin_upload(&alice, &at).await.unwrap();
                assert_eq!(upload.byte_limit(), Some(limit), "{what}");
                let (written, refusal) = write_all(&mut upload, case.size).await;
                let err = refusal.unwrap_or_else(|| panic!("{what}: every write was accepted"));
                assert_eq!(err.kind(), ErrorKind::QuotaExceeded, "{what}");
                assert_eq!(err.message(), message, "{what}");
                assert!(written <= limit, "{what}: {written} bytes accepted");
                assert_eq!(upload.size(), written, "the refused write wrote nothing");
                // Poisoned: even a write that would fit is refused now, and so is the finish.
                let again = upload.write_at(0, b"x").await.unwrap_err();
                assert_eq!(again, err, "{what}");
                let finish = bed.hub.finish_upload(upload).await.unwrap_err();
                assert_eq!(finish, err, "{what}");
                let mut after = bed.snapshot().await;
                assert_eq!(after.refused.pop(), Some(EventKind::Upload), "{what}");
                assert_eq!(
                    after, before,
                    "{what}: the refused upload changed something"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_announced_size_over_the_limit_is_refused_before_a_byte() {
    // SCP announces the size in its header: the upload is refused and poisoned at once.
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    bed.change(
        "alice",
        AccountChange {
            max_file_size: Some(Some(1000)),
            ..AccountChange::default()
        },
    )
    .await;
    let before = bed.snapshot().await;
    let mut upload = bed
        .hub
        .begin_upload(&client("alice"), &path("/outbox/bob/big.bin"))
        .await
        .unwrap();
    assert!(upload.announce_size(1000).is_ok());
    let err = upload.announce_size(1001).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    assert_eq!(upload.write_at(0, b"small").await.unwrap_err(), err);
    bed.hub
        .abort_upload(upload, "refused by the size header")
        .await;
    let mut after = bed.snapshot().await;
    assert_eq!(after.refused.pop(), Some(EventKind::Upload));
    assert_eq!(after, before);
}

#[tokio::test]
async fn the_quota_is_checked_again_when_an_upload_finishes() {
    // Two uploads open while the inbox is empty, so each may write what fits alone; the
    // second to finish no longer fits and delivers nothing. By bytes, then by files; with the
    // blob kept by the blob store and with it kept inline.
    for inline in [false, true] {
        for (quota, size, message) in [
            (
                AccountChange {
                    quota_bytes: Some(Some(MIB)),
                    ..AccountChange::default()
                },
                600 * KIB,
                "the file does not fit in bob's mailbox: 600.0 KiB of 1.0 MiB used",
            ),
            (
                AccountChange {
                    quota_files: Some(Some(1)),
                    ..AccountChange::default()
                },
                10 * KIB,
                "bob's mailbox is full: 1 of 1 files waiting",
            ),
        ] {
            let bed = if inline { Bed::inline() } else { Bed::new() };
            bed.clients(&["alice", "bob"]).await;
            bed.allow("alice", "bob").await;
            bed.change("bob", quota).await;
            let alice = client("alice");
            let len = usize::try_from(size).unwrap();
            let mut first = bed
                .hub
                .begin_upload(&alice, &path("/outbox/bob/a.bin"))
                .await
                .unwrap();
            let mut second = bed
                .hub
                .begin_upload(&alice, &path("/outbox/bob/b.bin"))
                .await
                .unwrap();
            first.write_at(0, &data(len, 1)).await.unwrap();
            second.write_at(0, &data(len, 2)).await.unwrap();
            bed.hub.finish_upload(first).await.unwrap();
            let err = bed
                .refused(
                    ErrorKind::QuotaExceeded,
                    Some(EventKind::Upload),
                    bed.hub.finish_upload(second),
                )
                .await;
            assert_eq!(err.message(), message, "inline={inline}");
            assert_eq!(bed.deliveries().await.len(), 1);
            let refusal = bed.events_of(EventKind::Upload, Outcome::Refused).await;
            assert!(refusal[0].detail.contains(message), "{refusal:?}");
        }
    }
}

#[tokio::test]
async fn a_group_upload_fits_its_fullest_member() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob", "carol"]).await;
    bed.group("team", &["bob", "carol"]).await;
    bed.allow("alice", "team").await;
    bed.change(
        "carol",
        AccountChange {
            quota_bytes: Some(Some(100 * KIB)),
            ..AccountChange::default()
        },
    )
    .await;
    let mut upload = bed
        .hub
        .begin_upload(&client("alice"), &path("/outbox/team/big.bin"))
        .await
        .unwrap();
    assert_eq!(upload.byte_limit(), Some(100 * KIB));
    let (_, refusal) = write_all(&mut upload, 200 * KIB).await;
    assert!(refusal.unwrap().message().contains("carol's mailbox"));
    assert!(bed.hub.finish_upload(upload).await.is_err());
    assert!(bed.deliveries().await.is_empty(), "bob gets nothing either");
    let sent = bed
        .send("alice", "/outbox/team/small.bin", &data(50 * 1024, 3))
        .await;
    assert_eq!(sent.len(), 2);
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn resumable_uploads_meet_the_same_limits_and_deliver_only_whole_files() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    bed.change(
        "alice",
        AccountChange {
            max_file_size: Some(Some(1000)),
            ..AccountChange::default()
        },
    )
    .await;
    let alice = client("alice");
    let bob = [account("bob")];
    let lifetime = std::time::Duration::from_secs(3600);

    // An announced size over the limit is refused at once, before a byte.
    let err = bed
        .refused(
            ErrorKind::QuotaExceeded,
            Some(EventKind::Upload),
            bed.hub.open_resumable(
                &alice,
                &bob,
                &file("big.bin"),
                5000,
                None,
                Content::Plain,
                lifetime,
            ),
        )
        .await;
    assert!(err.message().contains("alice's limit"), "{err}");
    // Unknown recipients are refused as for any upload.
    bed.refused(
        ErrorKind::NotFound,
        Some(EventKind::Upload),
        bed.hub.open_resumable(
            &alice,
            &[account("nobody")],
            &file("x.bin"),
            1,
            None,
            Content::Plain,
            lifetime,
        ),
    )
    .await;

    let content = data(800, 5);
    let info = bed
        .hub
        .open_resumable(
            &alice,
            &bob,
            &file("doc.bin"),
            800,
            None,
            Content::Plain,
            lifetime,
        )
        .await
        .unwrap();
    let mut lease = bed.hub.lease_resumable(&alice, &info.id).await.unwrap();
    lease.write(0, content[..300].to_vec()).await.unwrap();
    // Only at the current offset, and within the announced size.
    let wrong = lease.write(100, content[300..].to_vec()).await.unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::Conflict);
    let over = lease.write(300, data(600, 1)).await.unwrap_err();
    assert_eq!(over.kind(), ErrorKind::QuotaExceeded);
    // Not complete yet: refused, and kept to be resumed.
    let early = bed
        .hub
        .finish_resumable(lease, &sha256(&content))
        .await
        .unwrap_err();
    assert_eq!(early.kind(), ErrorKind::Conflict);
    // Another account cannot see it.
    assert_eq!(
        bed.hub
            .lease_resumable(&client("bob"), &info.id)
            .await
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    let mut lease = bed.hub.lease_resumable(&alice, &info.id).await.unwrap();
    assert_eq!(lease.offset(), 300);
    lease.write(300, content[300..].to_vec()).await.unwrap();
    let deliveries = bed
        .hub
        .finish_resumable(lease, &sha256(&content))
        .await
        .unwrap();
    assert_eq!(deliveries[0].sha256, sha256(&content));
    assert_eq!(bed.download("bob", "/inbox/alice/doc.bin").await, content);

    // A checksum that does not match delivers nothing.
    let info = bed
        .hub
        .open_resumable(
            &alice,
            &bob,
            &file("bad.bin"),
            10,
            None,
            Content::Plain,
            lifetime,
        )
        .await
        .unwrap();
    let mut lease = bed.hub.lease_resumable(&alice, &info.id).await.unwrap();
    lease.write(0, data(10, 9)).await.unwrap();
    bed.refused(
        ErrorKind::Conflict,
        Some(EventKind::Upload),
        bed.hub.finish_resumable(lease, &sha256(b"something else")),
    )
    .await;
    assert_eq!(bed.deliveries().await.len(), 1);
}

#[tokio::test]
async fn crossing_ninety_percent_of_a_quota_warns_once() {
    let bed = Bed::new();
    bed.clients(&["alice", "bob"]).await;
    bed.allow("alice", "bob").await;
    bed.change(
        "bob",
        AccountChange {
            quota_files: Some(Some(10)),
            quota_bytes: Some(Some(100 * KIB)),
            ..AccountChange::default()
        },
    )
    .await;
    let warnings = async || bed.events_of(EventKind::QuotaWarning, Outcome::Ok).await;
    // Eight small files: 80 % of the file quota, no warning.
    for i in 0..8 {
        bed.send("alice", &format!("/outbox/bob/f{i}"), b"x").await;
    }
    assert!(warnings().await.is_empty());
    // The ninth crosses 90 %: one warning, in the delivery's own commit, by the system.
    let writes = bed.meta.stats().writes;
    bed.send("alice", "/outbox/bob/f8", b"x").await;
    assert_eq!(bed.meta.stats().writes, writes + 1);
    let warned = warnings().await;
    assert_eq!(warned.len(), 1);
    assert_eq!(
        (warned[0].actor.as_str(), warned[0].object.as_str()),
        ("system", "account bob")
    );
    assert_eq!(
        warned[0].detail,
        "bob's inbox is at 90 % of its file quota: 9 of 10 files"
    );
    // Past the mark: no second warning.
    bed.send("alice", "/outbox/bob/f9", b"x").await;
    assert_eq!(warnings().await.len(), 1);

    // By bytes: carol's 100 KiB quota, crossed by one 95 KiB file.
    bed.clients(&["carol"]).await;
    bed.allow("alice", "carol").await;
    bed.change(
        "carol",
        AccountChange {
            quota_bytes: Some(Some(100 * KIB)),
            ..AccountChange::default()
        },
    )
    .await;
    bed.send(
        "alice",
        "/outbox/carol/big",
        &data(usize::try_from(95 * KIB).unwrap(), 3),
    )
    .await;
    let warned = warnings().await;
    assert_eq!(warned.len(), 2);
    assert!(
        warned[1]
            .detail
            .contains("byte quota: 95.0 KiB of 100.0 KiB"),
        "{}",
        warned[1].detail
    );
}
