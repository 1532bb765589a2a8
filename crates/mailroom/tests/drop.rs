//! Drop folders on the real binary: files written into a folder on the hub's host are
//! delivered as their account (private mode by sub-folder, shared mode by name) with their
//! content intact and removed; files still being written are left alone; what cannot be
//! delivered goes to `rejected/` with its reason and delivers nothing; and every bad
//! `[[drop]]` is refused at start with the file, the line and the folder, changing nothing.
//!
//! Deliveries are read from the audit trail (`audit list --json`): an upload event names the
//! sender, the protocol, the path and the SHA-256 of what the hub stored. The tests wait on
//! what the server does on its own with `eventually`, or on the line it logs, never on a
//! fixed delay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailroom_test_support::eventually;
use sha2::{Digest, Sha256};

mod common;

/// How long a test waits for the server to reach a state on its own.
const LIMIT: Duration = Duration::from_secs(60);

/// An initialised data folder and a drop folder beside it, in a temporary folder.
struct Site {
    dir: tempfile::TempDir,
    template: String,
}

impl Site {
    /// A site with client accounts `accounts` and the routes `from -> to` allowed.
    fn new(accounts: &[&str], routes: &[(&str, &str)]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let out = common::mailroom(&dir.path().join("data"), &["init"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::text(&out));
        let template = std::fs::read_to_string(dir.path().join("data/mailroom.toml")).unwrap();
        let site = Site { dir, template };
        std::fs::create_dir(site.drop_folder()).unwrap();
        std::fs::set_permissions(site.drop_folder(), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        for account in accounts {
            site.ok(&["account", "add", account]);
        }
        for (from, to) in routes {
            site.ok(&["route", "allow", from, to]);
        }
        site
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config(&self) -> PathBuf {
        self.data().join("mailroom.toml")
    }

    /// The drop folder: `<tmp>/drop`.
    fn drop_folder(&self) -> PathBuf {
        self.dir.path().join("drop")
    }

    /// `path` inside the drop folder.
    fn at(&self, path: &str) -> PathBuf {
        self.drop_folder().join(path)
    }

    /// The configuration: the template `init` wrote, then `tables`, where `DROP` stands for
    /// the drop folder's path.
    fn configure(&self, tables: &str) {
        let tables = tables.replace("DROP", &self.drop_folder().display().to_string());
        std::fs::write(self.config(), format!("{}\n{tables}", self.template)).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(&self.data(), args)
    }

    /// A command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        common::ok(&self.data(), args)
    }

    /// The upload events of the audit trail, oldest first.
    fn uploads(&self) -> Vec<UploadEvent> {
        let listed: serde_json::Value = serde_json::from_str(&self.ok(&[
            "audit", "list", "--json", "--type", "upload", "--limit", "10000",
        ]))
        .unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|event| UploadEvent {
                actor: event["actor"].as_str().unwrap().to_owned(),
                protocol: event["protocol"].as_str().unwrap().to_owned(),
                object: event["object"].as_str().unwrap().to_owned(),
                outcome: event["outcome"].as_str().unwrap().to_owned(),
                detail: event["detail"].as_str().unwrap().to_owned(),
            })
            .collect()
    }

    /// The delivered uploads: `(sender, path, sha256)` of each, oldest first.
    fn delivered(&self) -> Vec<(String, String, String)> {
        self.uploads()
            .into_iter()
            .filter(|u| u.outcome == "ok")
            .map(|u| {
                assert_eq!(u.protocol, "drop", "{u:?}");
                let sha256 = u
                    .detail
                    .split("sha256 ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap_or_else(|| panic!("no sha256 in {u:?}"))
                    .to_owned();
                (u.actor, u.object, sha256)
            })
            .collect()
    }

    /// What a refused start must leave alone: the audit trail, the data folder's files and
    /// the drop folder's.
    fn snapshot(&self) -> (String, Vec<String>, Vec<PathBuf>) {
        (
            self.ok(&["audit", "list", "--json", "--limit", "10000"]),
            common::data_files(&self.data()),
            mailroom_test_support::files_under(&self.drop_folder()),
        )
    }
}

/// One upload event of the audit trail.
#[derive(Debug)]
struct UploadEvent {
    actor: String,
    protocol: String,
    object: String,
    outcome: String,
    detail: String,
}

/// `len` bytes that differ from one seed to the next.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) as u8) ^ seed.wrapping_mul(17) ^ ((i >> 8) as u8))
        .collect()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `serve` in the background, with every line it logs kept (the drop folder's at debug).
struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(site: &Site) -> Server {
        let mut child = common::mailroom(&site.data(), &["serve"])
            .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_LOG", "warn,mailroom::drop=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push(line);
            }
        });
        Server { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until `check` holds; fails the test with `what` and the server's log if it
    /// does not within [`LIMIT`].
    async fn until(&self, what: &str, check: impl Fn() -> bool) {
        let held = eventually(LIMIT, async || check()).await;
        assert!(
            held,
            "{what}: not within {LIMIT:?}; the server logged:\n{}",
            self.log()
        );
    }

    /// Waits until the server has logged a line containing every one of `parts`.
    async fn logged(&self, parts: &[&str]) {
        self.until(&format!("a log line with {parts:?}"), || {
            self.log
                .lock()
                .unwrap()
                .iter()
                .any(|line| parts.iter().all(|part| line.contains(part)))
        })
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `.reason` file of `rejected/<name>`, once it is written whole.
async fn reason_of(site: &Site, server: &Server, name: &str) -> String {
    let path = site.at(&format!("rejected/{name}.reason"));
    server
        .until(&format!("{} written", path.display()), || {
            std::fs::read_to_string(&path).is_ok_and(|text| text.contains("Time: "))
        })
        .await;
    std::fs::read_to_string(&path).unwrap()
}

const PRIVATE: &str = "[[drop]]\npath = \"DROP\"\nmode = \"private\"\naccount = \"erp\"\nsettle_seconds = 1\nrescan_seconds = 600\n";

#[tokio::test]
async fn a_file_in_a_recipients_folder_is_delivered_from_the_account_and_removed() {
    let site = Site::new(&["erp", "bob"], &[("erp", "bob")]);
    site.configure(PRIVATE);
    let server = Server::start(&site);
    // Several chunks' worth, written straight into bob's folder (no temporary name).
    let data = content(700 * 1024 + 13, 1);
    std::fs::create_dir(site.at("bob")).unwrap();
    std::fs::write(site.at("bob/report.csv"), &data).unwrap();
    server
        .until("bob/report.csv taken", || {
            !site.at("bob/report.csv").exists()
        })
        .await;
    assert_eq!(
        site.delivered(),
        [(
            "erp".to_owned(),
            "/outbox/bob/report.csv".to_owned(),
            sha256(&data)
        )]
    );
    // The recipient's folder stays for the next file; nothing was rejected.
    assert!(site.at("bob").is_dir());
    assert!(!site.at("rejected").exists());
    server
        .logged(&[
            "took a dropped file",
            "account=erp",
            "recipient=bob",
            "bytes=716813",
        ])
        .await;
}

#[tokio::test]
async fn a_file_still_being_written_is_not_taken_until_it_is_renamed() {
    let site = Site::new(&["erp", "bob"], &[("erp", "bob")]);
    site.configure(PRIVATE);
    std::fs::create_dir(site.at("bob")).unwrap();
    let server = Server::start(&site);
    let big = content(300 * 1024, 2);
    std::fs::write(site.at("bob/big.dat.part"), &big).unwrap();
    std::fs::write(site.at("bob/.hidden.dat"), b"hidden").unwrap();
    // A complete file dropped after them: once it is taken, a scan has seen the others.
    std::fs::write(site.at("bob/small.csv"), b"a,b\n1,2\n").unwrap();
    server
        .until("bob/small.csv taken", || !site.at("bob/small.csv").exists())
        .await;
    assert!(site.at("bob/big.dat.part").exists());
    assert!(site.at("bob/.hidden.dat").exists());
    let delivered = site.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].1, "/outbox/bob/small.csv");

    // The writer is done: the rename makes it complete.
    std::fs::rename(site.at("bob/big.dat.part"), site.at("bob/big.dat")).unwrap();
    server
        .until("bob/big.dat taken", || !site.at("bob/big.dat").exists())
        .await;
    let delivered = site.delivered();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert_eq!(
        delivered[1],
        (
            "erp".to_owned(),
            "/outbox/bob/big.dat".to_owned(),
            sha256(&big)
        )
    );
    assert!(site.at("bob/.hidden.dat").exists());
}

#[tokio::test]
async fn a_file_written_slowly_is_taken_whole_once_it_has_settled() {
    let site = Site::new(&["erp", "bob"], &[("erp", "bob")]);
    site.configure(&PRIVATE.replace("settle_seconds = 1", "settle_seconds = 2"));
    std::fs::create_dir(site.at("bob")).unwrap();
    let server = Server::start(&site);
    let data = content(512 * 1024, 3);
    let (first, second) = data.split_at(200 * 1024);
    std::fs::write(site.at("bob/slow.dat"), first).unwrap();
    // The hub has seen the first half and waits for it to settle; now the rest arrives.
    server
        .logged(&["a dropped file is settling", "bob/slow.dat", "bytes=204800"])
        .await;
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(site.at("bob/slow.dat"))
            .unwrap();
        file.write_all(second).unwrap();
    }
    server
        .until("bob/slow.dat taken", || !site.at("bob/slow.dat").exists())
        .await;
    assert_eq!(
        site.delivered(),
        [(
            "erp".to_owned(),
            "/outbox/bob/slow.dat".to_owned(),
            sha256(&data)
        )]
    );
    server
        .logged(&["took a dropped file", "bytes=524288"])
        .await;
}

#[tokio::test]
async fn a_shared_folder_routes_by_name_and_rejects_what_it_cannot_deliver() {
    let site = Site::new(
        &["erp", "bank", "scanner", "accounts", "carol"],
        &[("erp", "bank"), ("scanner", "accounts")],
    );
    site.configure(
        "[[drop]]\npath = \"DROP\"\nmode = \"shared\"\nsettle_seconds = 1\nroutes = [\n  { file = \"INV-*.edi\", sender = \"erp\", to = \"bank\" },\n  { file = \"*.pdf\", sender = \"scanner\", to = \"accounts\" },\n  { file = \"*.txt\", sender = \"erp\", to = \"carol\" },\n]\n",
    );
    let invoice = content(10_000, 4);
    let scan = content(20_000, 5);
    let notes = content(300, 6);
    let memo = content(400, 7);
    std::fs::write(site.at("INV-7.edi"), &invoice).unwrap();
    std::fs::write(site.at("scan.pdf"), &scan).unwrap();
    std::fs::write(site.at("notes.csv"), &notes).unwrap();
    std::fs::write(site.at("memo.txt"), &memo).unwrap();
    let server = Server::start(&site);

    // No route matches notes.csv: rejected by the drop folder, with the reason.
    let reason = reason_of(&site, &server, "notes.csv").await;
    assert!(reason.contains("no route"), "{reason}");
    assert!(reason.contains("notes.csv"), "{reason}");
    assert_eq!(std::fs::read(site.at("rejected/notes.csv")).unwrap(), notes);
    // erp may not send to carol: rejected with the hub's own reason.
    let reason = reason_of(&site, &server, "memo.txt").await;
    assert!(reason.contains("erp may not send to carol"), "{reason}");
    assert_eq!(std::fs::read(site.at("rejected/memo.txt")).unwrap(), memo);
    let rejected = std::fs::metadata(site.at("rejected")).unwrap();
    assert_eq!(rejected.permissions().mode() & 0o777, 0o700);

    server
        .until("the routed files taken", || {
            !site.at("INV-7.edi").exists() && !site.at("scan.pdf").exists()
        })
        .await;
    let mut delivered = site.delivered();
    delivered.sort();
    assert_eq!(
        delivered,
        [
            (
                "erp".to_owned(),
                "/outbox/bank/INV-7.edi".to_owned(),
                sha256(&invoice)
            ),
            (
                "scanner".to_owned(),
                "/outbox/accounts/scan.pdf".to_owned(),
                sha256(&scan)
            ),
        ]
    );
    // The refused route is the hub's refusal, recorded as such; nothing reached carol.
    let uploads = site.uploads();
    assert!(
        uploads.iter().any(|u| u.outcome == "refused"
            && u.actor == "erp"
            && u.object == "/outbox/carol/memo.txt"),
        "{uploads:?}"
    );
    let status = site.ok(&["audit", "list", "--json", "--type", "delivery.delivered"]);
    assert!(!status.contains("carol"), "{status}");

    // A second file of a rejected name gets a name of its own in rejected/.
    std::fs::write(site.at("notes.csv"), b"again").unwrap();
    let reason = reason_of(&site, &server, "notes~2.csv").await;
    assert!(reason.contains("no route"), "{reason}");
    assert_eq!(std::fs::read(site.at("rejected/notes.csv")).unwrap(), notes);
    assert_eq!(
        std::fs::read(site.at("rejected/notes~2.csv")).unwrap(),
        b"again"
    );
    assert_eq!(site.delivered().len(), 2);
}

#[tokio::test]
async fn a_sub_folder_that_names_no_account_is_rejected() {
    let site = Site::new(&["erp", "bob"], &[("erp", "bob")]);
    site.configure(PRIVATE);
    std::fs::create_dir(site.at("nobody")).unwrap();
    std::fs::create_dir(site.at("Bob")).unwrap();
    std::fs::write(site.at("nobody/x.csv"), b"x").unwrap();
    std::fs::write(site.at("Bob/y.csv"), b"y").unwrap();
    std::fs::write(site.at("loose.csv"), b"z").unwrap();
    let server = Server::start(&site);

    let reason = reason_of(&site, &server, "x.csv").await;
    assert!(reason.contains("nobody/x.csv"), "{reason}");
    assert!(reason.contains("no recipient named nobody"), "{reason}");
    let reason = reason_of(&site, &server, "y.csv").await;
    assert!(reason.contains("\"Bob\" names no account"), "{reason}");
    let reason = reason_of(&site, &server, "loose.csv").await;
    assert!(reason.contains("has no recipient"), "{reason}");
    assert!(site.delivered().is_empty());
    // The folders stay; the files are gone from them.
    assert!(site.at("nobody").is_dir() && !site.at("nobody/x.csv").exists());
    assert!(!site.at("Bob/y.csv").exists());
}

#[tokio::test]
async fn files_dropped_before_the_start_are_taken_at_start() {
    let site = Site::new(
        &["erp", "bob", "carol"],
        &[("erp", "bob"), ("erp", "carol")],
    );
    site.configure(PRIVATE);
    let one = content(5_000, 8);
    let two = content(6_000, 9);
    std::fs::create_dir(site.at("bob")).unwrap();
    std::fs::create_dir(site.at("carol")).unwrap();
    std::fs::write(site.at("bob/one.bin"), &one).unwrap();
    std::fs::write(site.at("carol/two.bin"), &two).unwrap();
    let server = Server::start(&site);
    server
        .until("both files taken", || {
            !site.at("bob/one.bin").exists() && !site.at("carol/two.bin").exists()
        })
        .await;
    let mut delivered = site.delivered();
    delivered.sort();
    assert_eq!(
        delivered,
        [
            (
                "erp".to_owned(),
                "/outbox/bob/one.bin".to_owned(),
                sha256(&one)
            ),
            (
                "erp".to_owned(),
                "/outbox/carol/two.bin".to_owned(),
                sha256(&two)
            ),
        ]
    );
}

#[test]
fn every_bad_drop_is_refused_at_start_with_its_line_and_changes_nothing() {
    let site = Site::new(&["erp", "bob"], &[("erp", "bob")]);
    std::fs::create_dir(site.at("bob")).unwrap();
    std::fs::create_dir(site.at("inner")).unwrap();
    // A file waiting in the folder: a refused start must not take it.
    std::fs::write(site.at("bob/waiting.csv"), b"waiting").unwrap();
    let folder = site.drop_folder().display().to_string();
    let route = "routes = [{ file = \"*.pdf\", sender = \"erp\", to = \"bob\" }]\n";
    // What, the tables, the reason, and whether the refusal comes from the checks at start
    // (which name the folder) rather than from reading the file (which names the key).
    let cases: Vec<(&str, String, &str, bool)> = vec![
        (
            "a world-writable folder",
            PRIVATE.to_owned(),
            "world-writable",
            true,
        ),
        (
            "an unknown account",
            PRIVATE.replace("\"erp\"", "\"nobody\""),
            "no account is named \"nobody\"",
            true,
        ),
        (
            "a bad mode",
            PRIVATE.replace("\"private\"", "\"public\""),
            "unknown variant `public`",
            false,
        ),
        (
            "a folder that does not exist",
            PRIVATE.replace("DROP", "DROP/missing"),
            "does not exist",
            true,
        ),
        (
            "a settle time too long",
            PRIVATE.replace("settle_seconds = 1", "settle_seconds = 3601"),
            "at most 3600",
            false,
        ),
        (
            "a relative path",
            PRIVATE.replace("DROP", "drop"),
            "not an absolute path",
            false,
        ),
        (
            "a private folder with routes",
            format!("{PRIVATE}{route}"),
            "takes no routes",
            true,
        ),
        (
            "a shared folder without routes",
            "[[drop]]\npath = \"DROP\"\nmode = \"shared\"\n".to_owned(),
            "at least one route",
            true,
        ),
        (
            "a route to an unknown recipient",
            format!(
                "[[drop]]\npath = \"DROP\"\nmode = \"shared\"\n{}",
                route.replace("\"bob\"", "\"nobody\"")
            ),
            "no account or group is named \"nobody\"",
            true,
        ),
        (
            "a route from an admin",
            format!(
                "[[drop]]\npath = \"DROP\"\nmode = \"shared\"\n{}",
                route.replace("\"erp\"", "\"admin\"")
            ),
            "admin account",
            true,
        ),
        (
            "two folders, one inside the other",
            format!("{PRIVATE}\n{}", PRIVATE.replace("DROP", "DROP/inner")),
            "nests with the drop folder",
            true,
        ),
    ];
    let admin = site.ok(&["account", "list", "--json"]);
    assert!(admin.contains("\"admin\""), "{admin}");
    for (what, tables, reason, names_folder) in cases {
        site.configure("");
        let before = site.snapshot();
        site.configure(&tables);
        let world_writable = what == "a world-writable folder";
        if world_writable {
            std::fs::set_permissions(site.drop_folder(), std::fs::Permissions::from_mode(0o777))
                .unwrap();
        }
        let config = std::fs::read_to_string(site.config()).unwrap();
        let out = site.run(&["serve"]);
        if world_writable {
            std::fs::set_permissions(site.drop_folder(), std::fs::Permissions::from_mode(0o750))
                .unwrap();
        }
        assert_eq!(out.status.code(), Some(1), "{what}: {}", common::text(&out));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains(&site.config().display().to_string()),
            "{what}: {err}"
        );
        assert!(err.contains(reason), "{what}: {err:?} lacks {reason:?}");
        if names_folder {
            assert!(
                err.contains(&format!("drop folder {folder}")),
                "{what}: {err}"
            );
        }
        let last_table = config.rfind("[[drop]]").unwrap();
        let first_line = config[..last_table].lines().count() + 1;
        let line = common::error_line(&err).unwrap_or_else(|| panic!("{what}: no line in {err:?}"));
        assert!(
            (first_line..=config.lines().count()).contains(&line),
            "{what}: line {line} is not in the [[drop]] table at {first_line}: {err}"
        );
        site.configure("");
        assert_eq!(
            site.snapshot(),
            before,
            "{what}: the refused start changed something"
        );
    }
    assert_eq!(
        std::fs::read(site.at("bob/waiting.csv")).unwrap(),
        b"waiting"
    );
    assert!(!site.at("rejected").exists());
}
