//! The audit trail end to end, through the real binary and the real `meta.db`: the hash chain
//! verified, then broken the ways an intruder with write access to the file would break it
//! (edit, delete, insert, reorder, rewrite, truncate), each named by `audit verify`; the
//! filters of `audit list`, `audit export` as JSON lines, `audit abuse`; and the syslog sink
//! against real UDP and Unix datagram listeners, fed by refused SFTP logins from paramiko.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mailroom_core::chain_hash;
use mailroom_core::{Durability, Event, EventKind, MetaStoreExt, Outcome, Protocol};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod common;

/// A temporary data folder.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// An initialised folder with admin changes in its trail: 7 events, seq 1 to 7.
    fn with_events() -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        site.ok(&["init"]);
        for args in [
            &["account", "add", "alice"][..],
            &["account", "add", "bob"],
            &["group", "add", "team"],
            &["group", "member", "add", "team", "alice"],
            &["route", "allow", "alice", "bob"],
            &["account", "disable", "bob"],
        ] {
            site.ok(args);
        }
        site
    }

    /// A fresh folder holding a copy of this one's files.
    fn copy(&self) -> Site {
        let copy = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        copy_dir(&self.data(), &copy.data());
        // The master key of encryption at rest lives beside the folder, not in it.
        std::fs::copy(
            self.dir.path().join("data.master-key"),
            copy.dir.path().join("data.master-key"),
        )
        .unwrap();
        copy
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn db(&self) -> PathBuf {
        self.data().join("meta.db")
    }

    fn command(&self, args: &[&str]) -> Command {
        common::mailroom(&self.data(), args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "mailroom {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = self.ok(&with_json);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON {out:?}: {e}"))
    }

    /// Every exported line, parsed.
    fn export(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["audit", "export", "--format", "jsonl"];
        all.extend_from_slice(args);
        self.ok(&all)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
            .collect()
    }

    /// Runs `audit verify` with `args`, which must fail with one sentence containing every
    /// one of `expect`; checks that verifying changed nothing.
    fn verify_fails(&self, args: &[&str], expect: &[&str]) {
        let before = self.export(&[]);
        let mut all = vec!["audit", "verify"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(out.stdout.is_empty(), "{}", text(&out));
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one sentence: {err:?}");
        assert!(lines[0].starts_with("mailroom: error: "), "{err:?}");
        for part in expect {
            assert!(lines[0].contains(part), "{err:?} does not say {part:?}");
        }
        assert_eq!(self.export(&[]), before, "verify changed the trail");
    }

    /// Runs SQL on the database file, as anyone who can write it could.
    async fn tamper(&self, statements: &[&'static str]) {
        let db = rusqlite::Connection::open(self.db()).unwrap();
        for statement in statements {
            db.execute_batch(statement).unwrap();
        }
    }
}

/// Copies a folder with its files' and folders' permissions (the hub warns about open ones).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `(seq, hash)` of the head, from `audit head --json`.
fn head(site: &Site) -> (u64, String) {
    let head = site.json(&["audit", "head"]);
    let seq = head["seq"].as_u64().unwrap();
    let hash = head["hash"].as_str().unwrap().to_owned();
    assert_eq!(head["checkpoint"], format!("{seq}:{hash}"));
    (seq, hash)
}

#[tokio::test]
async fn verify_names_the_first_tampered_event() {
    let original = Site::with_events();
    let verified = original.ok(&["audit", "verify"]);
    let (seq, hash) = head(&original);
    assert_eq!(seq, 7);
    assert_eq!(
        verified,
        format!("audit trail intact: 7 events, head 7 {hash}\n")
    );
    let text_head = original.ok(&["audit", "head"]);
    assert!(
        text_head.contains(&format!("checkpoint: 7:{hash}")),
        "{text_head}"
    );
    let checkpoint = format!("7:{hash}");
    let with_checkpoint = original.ok(&["audit", "verify", "--expect", &checkpoint]);
    assert!(
        with_checkpoint.contains("is on the chain"),
        "{with_checkpoint}"
    );

    // Edited: a row's detail changed.
    let edited = original.copy();
    edited
        .tamper(&["UPDATE events SET detail = 'nothing happened' WHERE seq = 4"])
        .await;
    edited.verify_fails(
        &[],
        &["seq 4", "content was changed", "the 3 events before it"],
    );

    // Deleted: a middle row removed; the next one has lost its predecessor.
    let deleted = original.copy();
    deleted.tamper(&["DELETE FROM events WHERE seq = 4"]).await;
    deleted.verify_fails(&[], &["seq 5", "missing or was moved"]);

    // Inserted: a copy of row 3 put in as seq 4 with a new id, the rest renumbered.
    let inserted = original.copy();
    inserted
        .tamper(&[
            "UPDATE events SET seq = seq + 1000 WHERE seq >= 4",
            "UPDATE events SET seq = seq - 999 WHERE seq >= 1004",
            "INSERT INTO events (seq, id, time, kind, actor, source, protocol, object, outcome, \
             detail, prev_hash, hash) SELECT 4, '01900000-0000-7000-8000-000000000001', time, \
             kind, actor, source, protocol, object, outcome, detail, prev_hash, hash \
             FROM events WHERE seq = 3",
        ])
        .await;
    inserted.verify_fails(&[], &["seq 4", "inserted"]);

    // Reordered: rows 3 and 5 swap everything but their seq.
    let reordered = original.copy();
    reordered
        .tamper(&[
            "CREATE TEMP TABLE moved AS SELECT * FROM events WHERE seq IN (3, 5)",
            "DELETE FROM events WHERE seq IN (3, 5)",
            "INSERT INTO events (seq, id, time, kind, actor, source, protocol, object, outcome, \
             detail, prev_hash, hash) SELECT CASE seq WHEN 3 THEN 5 ELSE 3 END, id, time, kind, \
             actor, source, protocol, object, outcome, detail, prev_hash, hash FROM moved",
        ])
        .await;
    reordered.verify_fails(&[], &["seq 3", "out of place"]);

    // Rewritten: row 4 edited and every hash from there recomputed with the published
    // encoding. The chain alone looks intact; the checkpoint kept elsewhere does not match.
    let rewritten = original.copy();
    rewritten
        .tamper(&["UPDATE events SET detail = 'nothing happened' WHERE seq = 4"])
        .await;
    rechain(&rewritten.db()).await;
    let fooled = rewritten.ok(&["audit", "verify"]);
    assert!(
        fooled.starts_with("audit trail intact: 7 events"),
        "{fooled}"
    );
    assert!(!fooled.contains(&hash), "{fooled}");
    rewritten.verify_fails(
        &["--expect", &checkpoint],
        &[
            &checkpoint,
            "not on the audit chain",
            "another hash",
            "rewritten",
        ],
    );

    // Truncated: the newest rows gone; what is left is a valid chain, but the checkpoint's
    // seq is missing.
    let truncated = original.copy();
    truncated
        .tamper(&["DELETE FROM events WHERE seq >= 6"])
        .await;
    let fooled = truncated.ok(&["audit", "verify"]);
    assert!(
        fooled.starts_with("audit trail intact: 5 events"),
        "{fooled}"
    );
    truncated.verify_fails(
        &["--expect", &checkpoint],
        &[&checkpoint, "no event has seq 7", "truncated"],
    );

    // A malformed checkpoint is refused by its parser.
    original.verify_fails(&["--expect", "7:abc"], &["--expect", "SEQ:HASH"]);
}

/// Recomputes every `prev_hash` and `hash` in `seq` order, as an intruder who knows the
/// encoding would after editing a row.
async fn rechain(db: &Path) {
    let store = mailroom_meta::SqliteStore::open(db).await.unwrap();
    let records = store
        .read_with(|tx| tx.audit_records(&mailroom_core::EventQuery::default(), 0, 1000))
        .await
        .unwrap();
    store.close().await;
    let connection = rusqlite::Connection::open(db).unwrap();
    let mut prev = mailroom_core::GENESIS_HASH.to_owned();
    for record in records {
        let hash = chain_hash(&prev, record.seq, &record.event);
        connection
            .execute(
                "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                rusqlite::params![prev, hash, i64::try_from(record.seq).unwrap()],
            )
            .unwrap();
        prev = hash;
    }
}

/// A refused login at `time` recorded through the store, as the SSH front end records one.
fn refused_login(actor: &str, source: &str, time: OffsetDateTime) -> Event {
    Event {
        id: uuid::Uuid::now_v7(),
        time,
        kind: EventKind::Login,
        actor: actor.to_owned(),
        source: Some(source.to_owned()),
        protocol: Protocol::Ssh,
        object: actor.to_owned(),
        outcome: Outcome::Refused,
        detail: "wrong password".to_owned(),
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn list_filters_export_and_abuse() {
    let site = Site::with_events();
    let now = OffsetDateTime::now_utc();
    let hours_ago = |hours: i64| now - time::Duration::hours(hours);
    // Refused logins of the past days, through the store as the server would record them.
    let store = mailroom_meta::SqliteStore::open(&site.db()).await.unwrap();
    let logins = [
        refused_login("root", "203.0.113.9:40001", hours_ago(50)),
        refused_login("root", "203.0.113.9:40002", hours_ago(5)),
        refused_login("admin", "203.0.113.9:40003", hours_ago(4)),
        refused_login("root", "[2001:db8::7]:22", hours_ago(3)),
        refused_login("alice", "198.51.100.1:5000", hours_ago(2)),
    ];
    store
        .write_with(Durability::Flush, move |tx| tx.record(&logins))
        .await
        .unwrap();
    store.close().await;

    let list = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["audit", "list"];
        all.extend_from_slice(args);
        site.json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|event| {
                format!(
                    "{} {} {}",
                    event["kind"].as_str().unwrap(),
                    event["actor"].as_str().unwrap(),
                    event["object"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(list(&[]).len(), 12);
    assert_eq!(
        list(&["--actor", "root"]),
        ["login root root"; 3].map(str::to_owned)
    );
    assert_eq!(list(&["--type", "admin"]).len(), 7);
    assert_eq!(list(&["--kind", "login"]).len(), 5);
    assert_eq!(list(&["--outcome", "refused"]).len(), 5);
    assert_eq!(list(&["--outcome", "ok"]).len(), 7);
    assert_eq!(list(&["--source", "203.0.113.9"]).len(), 3);
    assert_eq!(
        list(&["--source", "203.0.113.9:40003"]),
        ["login admin admin".to_owned()]
    );
    assert_eq!(list(&["--source", "2001:db8::7"]).len(), 1);
    assert_eq!(list(&["--source", "203.0.113.99"]).len(), 0);
    // The admin changes are from just now; the logins hours ago.
    assert_eq!(list(&["--since", "1h"]).len(), 7);
    assert_eq!(list(&["--since", "1d", "--type", "login"]).len(), 4);
    assert_eq!(
        list(&[
            "--since",
            &rfc3339(hours_ago(6)),
            "--until",
            &rfc3339(hours_ago(3))
        ]),
        ["login root root", "login admin admin"].map(str::to_owned)
    );
    assert_eq!(list(&["--until", "3d"]).len(), 0);
    assert_eq!(
        list(&[
            "--actor",
            "root",
            "--source",
            "203.0.113.9",
            "--since",
            "2d"
        ]),
        ["login root root".to_owned()]
    );
    // Bad filters are refused with their option named.
    for (args, expect) in [
        (&["audit", "list", "--type", "nope"][..], "--type"),
        (&["audit", "list", "--outcome", "meh"], "--outcome"),
        (&["audit", "list", "--since", "yesterday"], "--since"),
        (&["audit", "export", "--until", "5x"], "--until"),
    ] {
        let out = site.run(args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expect),
            "{}",
            text(&out)
        );
    }

    // Export: every event, in seq order, each linked to the one before.
    let exported = site.export(&[]);
    assert_eq!(exported.len(), 12);
    let mut prev = "0".repeat(64);
    for (seq, line) in (1..).zip(&exported) {
        assert_eq!(line["seq"], seq);
        assert_eq!(line["prev_hash"], prev.as_str());
        let hash = line["hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64);
        for field in [
            "id", "time", "kind", "actor", "protocol", "object", "outcome", "detail",
        ] {
            assert!(line[field].is_string(), "{field} in {line}");
        }
        prev = hash.to_owned();
    }
    assert_eq!(exported[11]["source"], "198.51.100.1:5000");
    assert_eq!(exported[0]["source"], Value::Null);
    let (head_seq, head_hash) = head(&site);
    assert_eq!((head_seq, head_hash.as_str()), (12, prev.as_str()));
    let recent = site.export(&["--since", "1d"]);
    assert_eq!(
        recent
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12]
    );
    let refused = site.export(&["--outcome", "refused", "--source", "203.0.113.9"]);
    assert_eq!(refused.len(), 3);

    // Abuse: the refusals of the last day by address (ports dropped) and by account.
    let abuse = site.json(&["audit", "abuse", "--since", "1d"]);
    let by_source = abuse["by_source"].as_array().unwrap();
    assert_eq!(by_source.len(), 3, "{abuse}");
    assert_eq!(by_source[0]["source"], "203.0.113.9");
    assert_eq!(by_source[0]["attempts"], 2);
    assert_eq!(by_source[0]["accounts"], 2);
    assert_eq!(by_source[0]["first"], rfc3339(hours_ago(5)));
    assert_eq!(by_source[0]["last"], rfc3339(hours_ago(4)));
    let by_account = abuse["by_account"].as_array().unwrap();
    assert_eq!(by_account[0]["account"], "root");
    assert_eq!(by_account[0]["attempts"], 2);
    assert_eq!(by_account[0]["sources"], 2);
    // Over three days, the oldest refusal counts too; tables list the most attempts first.
    let abuse = site.ok(&["audit", "abuse", "--since", "3d"]);
    let lines: Vec<&str> = abuse.lines().collect();
    assert_eq!(lines[0], "Refused logins by source address");
    assert!(
        lines[2].starts_with("203.0.113.9") && lines[2].contains("  3  "),
        "{abuse}"
    );
    assert!(abuse.contains("Refused logins by account name"), "{abuse}");
    assert!(
        abuse
            .lines()
            .any(|l| l.starts_with("root") && l.contains("  3  ")),
        "{abuse}"
    );
    // Reading changed nothing.
    assert_eq!(site.export(&[]), exported);
}

/// A running `mailroom serve`; killed on drop if the test failed before stopping it.
struct Server {
    child: Option<Child>,
    port: u16,
}

impl Server {
    fn start(site: &Site, env: &[(&str, &str)]) -> Server {
        let mut command = site.command(&["serve"]);
        command
            .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_SFTP_AUTH_REJECTION_MS", "0")
            .env("MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS", "5")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let address = loop {
            let line = lines_rx
                .recv_timeout(Duration::from_secs(120))
                .expect("no listening line from serve");
            if let Some(address) = line.strip_prefix("mailroom: sftp listening on ") {
                break address.to_owned();
            }
        };
        let port = address.rsplit(':').next().unwrap().parse().unwrap();
        Server {
            child: Some(child),
            port,
        }
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A refused password login through paramiko.
async fn refused_sftp_login(python: &Path, port: u16, user: &str) {
    let answer = mailroom_test_support::paramiko(
        python,
        &[
            "login",
            "127.0.0.1",
            &port.to_string(),
            user,
            "--password",
            "Wrong-pass-123456",
        ],
    )
    .await;
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
}

/// Receives datagrams until one carries MSGID `login`; fails after 60 s.
fn receive_login(receive: impl Fn(&mut [u8]) -> std::io::Result<usize>) -> String {
    let mut buf = vec![0u8; 65536];
    loop {
        let len = receive(&mut buf).expect("no syslog message within 60 s");
        let message = String::from_utf8(buf[..len].to_vec()).unwrap();
        if message.split(' ').nth(5) == Some("login") {
            return message;
        }
    }
}

/// The SD-PARAMs of a message, unescaped.
fn params(message: &str) -> std::collections::HashMap<String, String> {
    let start = message.find("[mailroom@32473 ").unwrap() + "[mailroom@32473 ".len();
    let mut params = std::collections::HashMap::new();
    let mut chars = message[start..].chars();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap()),
                '"' => break,
                c => {
                    assert!(c != ']', "an unescaped ] inside a value: {message}");
                    value.push(c);
                }
            }
        }
        params.insert(name.trim().to_owned(), value);
        match chars.next() {
            Some(' ') => continue,
            Some(']') => return params,
            other => panic!("unexpected {other:?} in {message}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_reach_syslog_over_udp_and_the_abuse_summary() {
    let Some(python) = mailroom_test_support::paramiko_python() else {
        return;
    };
    let listener = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let target = format!("udp://{}", listener.local_addr().unwrap());
    let site = Site {
        dir: tempfile::tempdir().unwrap(),
    };
    let server = Server::start(
        &site,
        &[
            ("MAILROOM_AUDIT_SYSLOG", target.as_str()),
            ("MAILROOM_AUDIT_SYSLOG_FACILITY", "local3"),
            ("MAILROOM_AUDIT_SYSLOG_APP_NAME", "mailroom-test"),
        ],
    );
    // A name with every character SD-PARAM escaping is about.
    let hostile = r#"ev"il\]x"#;
    refused_sftp_login(&python, server.port, hostile).await;
    let message = receive_login(|buf| listener.recv(buf));
    refused_sftp_login(&python, server.port, "root").await;
    let second = receive_login(|buf| listener.recv(buf));

    // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] BOM MSG
    let fields: Vec<&str> = message.splitn(7, ' ').collect();
    assert_eq!(
        fields[0], "<156>1",
        "local3 (19) * 8 + warning (4): {message}"
    );
    assert!(
        OffsetDateTime::parse(fields[1], &Rfc3339).is_ok(),
        "{message}"
    );
    assert!(fields[1].ends_with('Z'), "{message}");
    assert_eq!(fields[3], "mailroom-test");
    assert!(fields[4].parse::<u32>().is_ok(), "PROCID: {message}");
    assert_eq!(fields[5], "login");
    let sd = params(&message);
    assert_eq!(sd["actor"], hostile, "{message}");
    assert_eq!(sd["object"], hostile, "{message}");
    assert_eq!(sd["outcome"], "refused");
    assert_eq!(sd["protocol"], "ssh");
    assert!(sd["source"].starts_with("127.0.0.1:"), "{message}");
    assert!(
        message.ends_with("\u{feff}password: unknown account"),
        "{message}"
    );

    // The messages carry what the trail holds: the same id, seq and hash.
    let exported = site.export(&["--type", "login"]);
    assert_eq!(exported.len(), 2, "{exported:?}");
    for (line, message) in exported.iter().zip([&message, &second]) {
        let sd = params(message);
        assert_eq!(line["id"], sd["id"].as_str());
        assert_eq!(line["seq"].to_string(), sd["seq"]);
        assert_eq!(line["hash"], sd["hash"].as_str());
    }
    assert_eq!(params(&second)["actor"], "root");

    let abuse = site.json(&["audit", "abuse"]);
    let by_source = abuse["by_source"].as_array().unwrap();
    assert_eq!(by_source.len(), 1, "{abuse}");
    assert_eq!(by_source[0]["source"], "127.0.0.1");
    assert_eq!(by_source[0]["attempts"], 2);
    assert_eq!(by_source[0]["accounts"], 2);
    let accounts: Vec<&str> = abuse["by_account"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["account"].as_str().unwrap())
        .collect();
    assert_eq!(accounts, [hostile, "root"]);

    assert!(server.stop().success());
    assert!(
        site.ok(&["audit", "verify"])
            .starts_with("audit trail intact")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_reach_syslog_over_a_unix_socket() {
    let Some(python) = mailroom_test_support::paramiko_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let site = Site {
        dir: tempfile::tempdir().unwrap(),
    };
    let target = format!("unix://{}", socket_path.display());
    let server = Server::start(&site, &[("MAILROOM_AUDIT_SYSLOG", target.as_str())]);
    refused_sftp_login(&python, server.port, "mallory").await;
    let message = receive_login(|buf| listener.recv(buf));
    // The default facility, authpriv (10): 10 * 8 + warning (4).
    assert!(message.starts_with("<84>1 "), "{message}");
    assert_eq!(message.split(' ').nth(3), Some("mailroom"));
    assert_eq!(params(&message)["actor"], "mallory");
    assert!(server.stop().success());
}

#[test]
fn a_syslog_socket_that_does_not_exist_is_refused_at_start() {
    let site = Site {
        dir: tempfile::tempdir().unwrap(),
    };
    let mut command = site.command(&["serve"]);
    command.env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0").env(
        "MAILROOM_AUDIT_SYSLOG",
        "unix:///nonexistent/mailroom-log.sock",
    );
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mut err = String::new();
    out.stderr.as_slice().read_to_string(&mut err).unwrap();
    assert!(
        err.contains("cannot reach syslog at unix:///nonexistent/mailroom-log.sock"),
        "{err}"
    );
    assert!(err.contains("[audit] syslog"), "{err}");
}
