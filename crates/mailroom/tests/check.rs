//! The check before delivery and accounts' notices on the real binary, with real parts: a
//! real clamd (the test-support harness, over our own test signatures) scanning what alice
//! uploads with OpenSSH `sftp`, the quarantine commands an operator uses (`mailroom
//! quarantine list|release|delete`, each refusal checked to change nothing), a scanner that
//! is down keeping files hidden until it is back, one scan per group upload, and aiosmtpd as
//! the SMTP server receiving the "new file", receipt and digest mails, each keyed by its job.
//!
//! What the check decides for each verdict is tested in memory in `mailroom-core`, and the
//! scanner client against clamd in `mailroom-events`; here only what users and operators see.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use mailroom_test_support::clamd::MARKER;
use mailroom_test_support::{
    Clamd, EICAR, eventually, have, python_with, sha256_file, ssh_options, write_random,
};
use serde_json::Value;

mod common;

/// How long a state the server reaches on its own (a scan, a retry, a mail) may take.
const LIMIT: Duration = Duration::from_secs(60);

/// An initialised data folder and the local files of one test.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        site.ok(&["init"]);
        site
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(&self.data(), args)
    }

    /// A command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        common::ok(&self.data(), args)
    }

    /// A command with `--json` that must succeed; its output parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = self.ok(&with_json);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} gave bad JSON {out:?}: {e}"))
    }

    /// A command that must be refused: exit 1 with one stderr line containing `expect`, and
    /// `snapshot` the same after it as before.
    fn refused<T: PartialEq + std::fmt::Debug>(
        &self,
        args: &[&str],
        expect: &str,
        snapshot: impl Fn() -> T,
    ) {
        let before = snapshot();
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "mailroom {args:?}: {}",
            common::text(&out)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr for {args:?}: {err:?}");
        assert!(
            lines[0].starts_with("mailroom: error: ") && lines[0].contains(expect),
            "{args:?}: {err:?} does not say {expect:?}"
        );
        assert_eq!(snapshot(), before, "{args:?} changed something");
    }

    /// Makes a client account with a fresh ed25519 key; returns the private key's path.
    fn client(&self, name: &str) -> PathBuf {
        let key = self.path(&format!("{name}_key"));
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(status.success(), "ssh-keygen failed");
        let public = key.with_extension("pub");
        self.ok(&[
            "account",
            "add",
            name,
            "--authorized-key",
            public.to_str().unwrap(),
        ]);
        key
    }

    /// Adds `lines` to section `[section]` of the configuration.
    fn configure(&self, section: &str, lines: &str) {
        let path = self.data().join("mailroom.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        let header = format!("\n[{section}]\n");
        assert!(config.contains(&header), "no {header:?} in the template");
        let config = config.replacen(&header, &format!("{header}{lines}\n"), 1);
        std::fs::write(&path, config).unwrap();
    }

    /// `[check] clamd` set to `clamd`, and failed jobs retried every second, at most
    /// `max_attempts` times.
    fn check_with(&self, clamd: &Clamd, max_attempts: u32) {
        self.configure("check", &format!("clamd = \"{}\"", clamd.tcp_url()));
        self.configure(
            "jobs",
            &format!("backoff_seconds = 1\nmax_backoff_seconds = 1\nmax_attempts = {max_attempts}"),
        );
    }

    /// The jobs as `jobs list --json` prints them.
    fn jobs(&self) -> Vec<Value> {
        self.json(&["jobs", "list", "--limit", "1000"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// The jobs of one rule.
    fn jobs_of(&self, rule: &str) -> Vec<Value> {
        self.jobs()
            .into_iter()
            .filter(|job| job["rule"] == rule)
            .collect()
    }

    /// The audit events of one kind, oldest first.
    fn events(&self, kind: &str) -> Vec<Value> {
        self.json(&["audit", "list", "--type", kind, "--limit", "1000"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// The quarantine as `quarantine list --json` prints it.
    fn quarantine(&self) -> Vec<Value> {
        self.json(&["quarantine", "list"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// What an operator's refused command must leave alone: the quarantine and the audit
    /// trail.
    fn snapshot(&self) -> (Value, Value) {
        (
            self.json(&["quarantine", "list"]),
            self.json(&["audit", "list", "--limit", "100000"]),
        )
    }
}

/// `mailroom serve` in the background with its log in a file; killed on drop.
struct Server {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(site: &Site) -> Server {
        use std::io::BufRead;
        let log = site.path(&format!("serve-{}.log", std::process::id()));
        let mut child = common::mailroom(&site.data(), &["serve"])
            .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        // Keeps draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        let port = loop {
            let line = lines_rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| {
                    panic!(
                        "serve did not start listening: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                });
            if let Some(address) = line.strip_prefix("mailroom: sftp listening on ") {
                break address.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        Server { child, port, log }
    }

    /// What the server logged, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs OpenSSH `sftp` as `user` (key `key`) over the batch `commands`.
    async fn sftp(&self, site: &Site, user: &str, key: &Path, commands: &str) -> Output {
        let batch = site.path(&format!("batch-{user}-{}", unique()));
        std::fs::write(&batch, commands).unwrap();
        let mut command = tokio::process::Command::new("sftp");
        command
            .args(ssh_options())
            .arg("-i")
            .arg(key)
            .arg("-P")
            .arg(self.port.to_string())
            .arg("-b")
            .arg(&batch)
            .arg(format!("{user}@127.0.0.1"));
        mailroom_test_support::run(command).await
    }

    /// Uploads `local` as `user` to `remote`; the upload must succeed.
    async fn put(&self, site: &Site, (user, key): (&str, &Path), local: &Path, remote: &str) {
        let out = self
            .sftp(
                site,
                user,
                key,
                &format!("put {} {remote}\n", local.display()),
            )
            .await;
        assert!(
            out.status.success(),
            "{user} put {remote}: {}",
            common::text(&out)
        );
    }

    /// Downloads `remote` as `user` into `local`; the client's output.
    async fn get(
        &self,
        site: &Site,
        (user, key): (&str, &Path),
        remote: &str,
        local: &Path,
    ) -> Output {
        self.sftp(
            site,
            user,
            key,
            &format!("get {remote} {}\n", local.display()),
        )
        .await
    }

    /// The names `user` sees in `folder` (none when the folder cannot be listed).
    async fn list(&self, site: &Site, (user, key): (&str, &Path), folder: &str) -> Vec<String> {
        let out = self
            .sftp(site, user, key, &format!("-ls -1 {folder}\n"))
            .await;
        assert!(
            out.status.success(),
            "{user} ls {folder}: {}",
            common::text(&out)
        );
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| !line.starts_with("sftp>") && !line.trim().is_empty())
            .map(|line| line.trim().rsplit('/').next().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// The text of the sender's receipt of `name` in `/sent/<recipient>`.
    async fn receipt(
        &self,
        site: &Site,
        sender: (&str, &Path),
        recipient: &str,
        name: &str,
    ) -> String {
        let folder = format!("/sent/{recipient}");
        let entries = self.list(site, sender, &folder).await;
        let prefix = format!("{name}@");
        let entry = entries
            .iter()
            .find(|entry| entry.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no receipt of {name} in {folder}: {entries:?}"));
        let local = site.path(&format!("receipt-{}", unique()));
        let out = self
            .get(site, sender, &format!("{folder}/{entry}"), &local)
            .await;
        assert!(
            out.status.success(),
            "get receipt {entry}: {}",
            common::text(&out)
        );
        std::fs::read_to_string(local).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The value of `key: value` in a receipt's text.
fn field<'a>(receipt: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}: ");
    receipt
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in the receipt {receipt:?}"))
}

/// A site with alice (may send to bob) and bob, and the check on `clamd`.
/// A real clamd, when OpenSSH's sftp (the tests' client) and clamd are both here; `None`
/// after a skip (which fails under CI) otherwise.
async fn sftp_and_clamd() -> Option<Clamd> {
    if !have("sftp") {
        return None;
    }
    Clamd::start().await
}

fn alice_and_bob(clamd: &Clamd, max_attempts: u32) -> (Site, PathBuf, PathBuf) {
    let site = Site::new();
    let alice = site.client("alice");
    let bob = site.client("bob");
    site.ok(&["route", "allow", "alice", "bob"]);
    site.check_with(clamd, max_attempts);
    (site, alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_holds_every_upload_until_checked_quarantines_malware_and_delivers_clean_files() {
    let Some(clamd) = sftp_and_clamd().await else {
        return;
    };
    let (site, alice_key, bob_key) = alice_and_bob(&clamd, 8);
    let (alice, bob) = (("alice", alice_key.as_path()), ("bob", bob_key.as_path()));
    let server = Server::start(&site);

    let clean = site.path("clean.bin");
    let clean_sum = write_random(&clean, 300_000, 7);
    let eicar = site.path("eicar.txt");
    std::fs::write(&eicar, EICAR).unwrap();
    server
        .put(&site, alice, &clean, "/outbox/bob/clean.bin")
        .await;
    server
        .put(&site, alice, &eicar, "/outbox/bob/eicar.txt")
        .await;

    // The clean file arrives, intact; the EICAR file never shows.
    let arrived = eventually(LIMIT, async || {
        server
            .list(&site, bob, "/inbox/alice")
            .await
            .contains(&"clean.bin".to_owned())
    })
    .await;
    assert!(
        arrived,
        "clean.bin never reached bob:\n{}\n{}",
        server.log(),
        clamd.log()
    );
    assert_eq!(
        server.list(&site, bob, "/inbox/alice").await,
        vec!["clean.bin".to_owned()]
    );
    let got = site.path("got-clean.bin");
    let out = server.get(&site, bob, "/inbox/alice/clean.bin", &got).await;
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(sha256_file(&got), clean_sum);
    let delivered = site.events("delivery.delivered");
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let detail = delivered[0]["detail"].as_str().unwrap();
    assert!(
        detail.ends_with(&format!("checked by clamd at {}", clamd.tcp_url())),
        "{detail}"
    );

    let quarantined = eventually(LIMIT, async || {
        !site.events("delivery.quarantined").is_empty()
    })
    .await;
    assert!(
        quarantined,
        "no quarantine event:\n{}\n{}",
        server.log(),
        clamd.log()
    );
    let events = site.events("delivery.quarantined");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "refused");
    let detail = events[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            ": clamd at {} found Hub-Test-EICAR",
            clamd.tcp_url()
        )),
        "{detail}"
    );
    assert_eq!(
        server.list(&site, bob, "/inbox/alice").await,
        vec!["clean.bin".to_owned()],
        "the quarantined file shows in bob's inbox"
    );

    let held = site.quarantine();
    assert_eq!(held.len(), 1, "{held:?}");
    let entry = &held[0];
    assert_eq!(entry["name"], "eicar.txt");
    assert_eq!(entry["sender"], "alice");
    assert_eq!(entry["recipient"], "bob");
    assert_eq!(entry["state"], "quarantined");
    assert_eq!(entry["size"], EICAR.len());
    assert_eq!(entry["id"], events[0]["object"]);
    let reason = entry["reason"].as_str().unwrap();
    assert!(reason.contains("Hub-Test-EICAR"), "{reason}");
    let id = entry["id"].as_str().unwrap().to_owned();

    // Bob cannot fetch it by name.
    let blocked = site.path("got-eicar-before.txt");
    let out = server
        .get(&site, bob, "/inbox/alice/eicar.txt", &blocked)
        .await;
    assert!(
        !out.status.success(),
        "bob downloaded a quarantined file: {}",
        common::text(&out)
    );
    assert!(!blocked.exists());

    // A release needs a reason.
    site.refused(
        &["quarantine", "release", &id, "--reason", ""],
        "reason",
        || site.snapshot(),
    );
    assert_eq!(site.quarantine(), held);

    let why = "a test file, not malware";
    let out = site.ok(&["quarantine", "release", &id, "--reason", why]);
    assert!(out.contains("released"), "{out}");
    assert!(site.quarantine().is_empty());
    let released = site.path("got-eicar.txt");
    let out = server
        .get(&site, bob, "/inbox/alice/eicar.txt", &released)
        .await;
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(std::fs::read_to_string(&released).unwrap(), EICAR);
    let admin = site.events("admin");
    assert!(
        admin.iter().any(|e| {
            e["detail"] == format!("released from quarantine: {why}")
                && e["object"].as_str().unwrap().contains(&id)
        }),
        "{admin:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_scanner_keeps_files_hidden_until_it_is_back() {
    let Some(mut clamd) = sftp_and_clamd().await else {
        return;
    };
    // Enough attempts that the job is never given up while the scanner is down.
    let (site, alice_key, bob_key) = alice_and_bob(&clamd, 1000);
    let (alice, bob) = (("alice", alice_key.as_path()), ("bob", bob_key.as_path()));
    let server = Server::start(&site);
    clamd.stop().await;

    let file = site.path("ledger.csv");
    let sum = write_random(&file, 50_000, 11);
    server
        .put(&site, alice, &file, "/outbox/bob/ledger.csv")
        .await;
    // The sender sees it, waiting for its check.
    assert_eq!(
        server.list(&site, alice, "/outbox/bob").await,
        vec!["ledger.csv".to_owned()]
    );
    let receipt = server.receipt(&site, alice, "bob", "ledger.csv").await;
    assert_eq!(field(&receipt, "state"), "checking", "{receipt}");
    assert_eq!(field(&receipt, "sha256"), sum, "{receipt}");

    // The check fails again and again, naming the scanner; the file stays hidden.
    let retried = eventually(LIMIT, async || {
        site.jobs_of("@check")
            .first()
            .is_some_and(|job| job["attempts"].as_u64().unwrap() >= 2)
    })
    .await;
    assert!(
        retried,
        "the check was not retried: {:?}\n{}",
        site.jobs(),
        server.log()
    );
    let jobs = site.jobs_of("@check");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["handler"], "check");
    assert_eq!(jobs[0]["state"], "queued");
    let error = jobs[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains(&clamd.tcp_url()), "{:?}", jobs[0]);
    assert!(server.list(&site, bob, "/inbox/alice").await.is_empty());
    assert!(server.list(&site, bob, "/inbox").await.is_empty());
    let hidden = site.path("got-early.csv");
    let out = server
        .get(&site, bob, "/inbox/alice/ledger.csv", &hidden)
        .await;
    assert!(
        !out.status.success(),
        "bob downloaded an unchecked file: {}",
        common::text(&out)
    );
    assert!(site.quarantine().is_empty());
    assert!(site.events("delivery.delivered").is_empty());

    // The scanner is back: the next attempt delivers.
    clamd.restart().await;
    let arrived = eventually(LIMIT, async || {
        server.list(&site, bob, "/inbox/alice").await == vec!["ledger.csv".to_owned()]
    })
    .await;
    assert!(
        arrived,
        "ledger.csv never arrived:\n{}\n{}",
        server.log(),
        clamd.log()
    );
    let got = site.path("got-ledger.csv");
    let out = server
        .get(&site, bob, "/inbox/alice/ledger.csv", &got)
        .await;
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(sha256_file(&got), sum);
    let jobs = site.jobs_of("@check");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "done", "{:?}", jobs[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_upload_is_scanned_once() {
    let Some(clamd) = sftp_and_clamd().await else {
        return;
    };
    let site = Site::new();
    let alice_key = site.client("alice");
    let bob_key = site.client("bob");
    let carol_key = site.client("carol");
    site.ok(&["group", "add", "team"]);
    site.ok(&["group", "member", "add", "team", "bob"]);
    site.ok(&["group", "member", "add", "team", "carol"]);
    site.ok(&["route", "allow", "alice", "team"]);
    site.check_with(&clamd, 8);
    let server = Server::start(&site);

    let file = site.path("plan.pdf");
    let sum = write_random(&file, 200_000, 23);
    server
        .put(&site, ("alice", &alice_key), &file, "/outbox/team/plan.pdf")
        .await;
    for (user, key) in [("bob", &bob_key), ("carol", &carol_key)] {
        let arrived = eventually(LIMIT, async || {
            server.list(&site, (user, key), "/inbox/alice").await == vec!["plan.pdf".to_owned()]
        })
        .await;
        assert!(
            arrived,
            "{user} never got plan.pdf:\n{}\n{}",
            server.log(),
            clamd.log()
        );
        let got = site.path(&format!("got-{user}.pdf"));
        let out = server
            .get(&site, (user, key), "/inbox/alice/plan.pdf", &got)
            .await;
        assert!(out.status.success(), "{user}: {}", common::text(&out));
        assert_eq!(sha256_file(&got), sum, "{user}");
    }
    let checks = site.jobs_of("@check");
    assert_eq!(checks.len(), 1, "{:?}", site.jobs());
    assert_eq!(checks[0]["handler"], "check");
    assert_eq!(checks[0]["state"], "done");
    assert_eq!(checks[0]["attempts"], 1);
    // Both deliveries were delivered by that one check.
    let delivered = site.events("delivery.delivered");
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    for event in &delivered {
        let detail = event["detail"].as_str().unwrap();
        assert!(
            detail.ends_with(&format!("checked by clamd at {}", clamd.tcp_url())),
            "{detail}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_delete_removes_the_content_and_refusals_change_nothing() {
    let Some(clamd) = sftp_and_clamd().await else {
        return;
    };
    let (site, alice_key, bob_key) = alice_and_bob(&clamd, 8);
    let (alice, bob) = (("alice", alice_key.as_path()), ("bob", bob_key.as_path()));
    let server = Server::start(&site);

    // Large enough to be kept as a blob file (small ones live in the metadata store), with
    // the marker our test signature finds in the middle.
    let bad = site.path("payload.bin");
    write_random(&bad, 300_000, 31);
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes.splice(150_000..150_000, MARKER.bytes());
    std::fs::write(&bad, &bytes).unwrap();
    let good = site.path("fine.bin");
    write_random(&good, 300_000, 37);
    let objects = || mailroom_test_support::files_under(&site.data().join("blobs/objects"));
    let before_upload = objects().len();
    server
        .put(&site, alice, &bad, "/outbox/bob/payload.bin")
        .await;
    server
        .put(&site, alice, &good, "/outbox/bob/fine.bin")
        .await;

    let settled = eventually(LIMIT, async || {
        site.quarantine().len() == 1 && site.events("delivery.delivered").len() == 1
    })
    .await;
    assert!(
        settled,
        "the checks did not settle:\n{}\n{}",
        server.log(),
        clamd.log()
    );
    let held = site.quarantine();
    assert_eq!(held[0]["name"], "payload.bin");
    let reason = held[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(mailroom_test_support::clamd::MARKER_SIGNATURE),
        "{reason}"
    );
    let id = held[0]["id"].as_str().unwrap().to_owned();
    let delivered_id = site.events("delivery.delivered")[0]["object"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(objects().len(), before_upload + 2, "{:?}", objects());
    assert_eq!(
        server.list(&site, bob, "/inbox/alice").await,
        vec!["fine.bin".to_owned()]
    );

    // Refusals name the problem and change nothing.
    for command in ["delete", "release"] {
        site.refused(
            &["quarantine", command, "nope", "--reason", "spam"],
            "is not a delivery id",
            || site.snapshot(),
        );
        site.refused(
            &["quarantine", command, &delivered_id, "--reason", "spam"],
            "is not quarantined",
            || site.snapshot(),
        );
        site.refused(
            &["quarantine", command, &id, "--reason", ""],
            "reason",
            || site.snapshot(),
        );
        site.refused(
            &["quarantine", command, &id, "--reason", "   "],
            "reason",
            || site.snapshot(),
        );
    }
    assert_eq!(site.quarantine(), held);
    assert_eq!(objects().len(), before_upload + 2);

    let why = "confirmed malware, sender told";
    let out = site.ok(&["quarantine", "delete", &id, "--reason", why]);
    assert!(out.contains("deleted"), "{out}");
    assert!(site.quarantine().is_empty());
    assert_eq!(
        site.ok(&["quarantine", "list"]).trim(),
        "the quarantine is empty"
    );
    // The content is gone, the clean file's is not; the record stays, deleted.
    let left = objects();
    assert_eq!(left.len(), before_upload + 1, "{left:?}");
    let receipt = server.receipt(&site, alice, "bob", "payload.bin").await;
    assert_eq!(field(&receipt, "state"), "deleted", "{receipt}");
    assert_eq!(field(&receipt, "delivery"), id, "{receipt}");
    let admin = site.events("admin");
    assert!(
        admin.iter().any(|e| {
            let detail = e["detail"].as_str().unwrap();
            detail.starts_with("deleted from quarantine") && detail.ends_with(why)
        }),
        "{admin:?}"
    );
    // Once deleted it is no longer in quarantine: neither command takes it again.
    for command in ["delete", "release"] {
        site.refused(
            &["quarantine", command, &id, "--reason", "again"],
            "is not quarantined",
            || site.snapshot(),
        );
    }
    let got = site.path("got-fine.bin");
    let out = server.get(&site, bob, "/inbox/alice/fine.bin", &got).await;
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(sha256_file(&got), sha256_file(&good));
    let gone = site.path("got-payload.bin");
    let out = server
        .get(&site, bob, "/inbox/alice/payload.bin", &gone)
        .await;
    assert!(!out.status.success(), "{}", common::text(&out));
}

/// One mail aiosmtpd stored, decoded by Python's `email` package.
#[derive(Debug, Clone)]
struct Mail {
    to: String,
    subject: String,
    message_id: String,
    body: String,
}

/// Every mail in `maildir`, decoded (the body may be quoted-printable or base64).
fn mails(python: &Path, maildir: &Path) -> Vec<Mail> {
    const READ: &str = r#"
import email, json, os, sys
from email import policy
out = []
new = os.path.join(sys.argv[1], "new")
for name in sorted(os.listdir(new)) if os.path.isdir(new) else []:
    with open(os.path.join(new, name), "rb") as f:
        msg = email.message_from_binary_file(f, policy=policy.default)
    body = msg.get_body(preferencelist=("plain",))
    out.append({
        "to": str(msg["To"]),
        "subject": str(msg["Subject"]),
        "message_id": str(msg["Message-ID"]),
        "body": body.get_content() if body is not None else "",
    })
print(json.dumps(out))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", READ])
        .arg(maildir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reading the maildir: {}",
        common::text(&out)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Mail {
            to: m["to"].as_str().unwrap().to_owned(),
            subject: m["subject"].as_str().unwrap().to_owned(),
            message_id: m["message_id"].as_str().unwrap().to_owned(),
            body: m["body"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// aiosmtpd writing into a maildir; killed on drop.
struct Relay {
    child: std::process::Child,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_recipients_and_senders_over_smtp() {
    if !have("sftp") {
        return;
    }
    let Some(python) = python_with("aiosmtpd") else {
        return;
    };
    let site = Site::new();
    let alice_key = site.client("alice");
    let bob_key = site.client("bob");
    let carol_key = site.client("carol");
    let (alice, bob) = (("alice", alice_key.as_path()), ("bob", bob_key.as_path()));
    site.ok(&["route", "allow", "alice", "bob"]);
    site.ok(&["route", "allow", "alice", "carol"]);

    // Notices need an address: refused without one, and nothing changes.
    site.ok(&["account", "add", "dave"]);
    site.refused(
        &["account", "set", "dave", "--notify", "instant"],
        "no e-mail address",
        || site.json(&["account", "show", "dave"]),
    );
    site.refused(
        &["account", "set", "dave", "--receipts", "on"],
        "no e-mail address",
        || site.json(&["account", "show", "dave"]),
    );

    site.ok(&[
        "account",
        "set",
        "bob",
        "--email",
        "bob@example.test",
        "--notify",
        "instant",
    ]);
    site.ok(&[
        "account",
        "set",
        "carol",
        "--email",
        "carol@example.test",
        "--notify",
        "digest",
    ]);
    site.ok(&[
        "account",
        "set",
        "alice",
        "--email",
        "alice@example.test",
        "--receipts",
        "on",
    ]);
    let shown = site.json(&["account", "show", "carol"]);
    assert!(shown.to_string().contains("carol@example.test"), "{shown}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = site.path("maildir");
    let _relay = Relay {
        child: std::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let listening = eventually(LIMIT, async || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert!(listening, "aiosmtpd did not listen on {port}");
    site.configure(
        "smtp",
        &format!(
            "server = \"127.0.0.1:{port}\"\nsecurity = \"none\"\nfrom = \"mailroom@example.test\""
        ),
    );
    site.configure("notifications", "digest_minutes = 1");
    site.configure("jobs", "backoff_seconds = 1\nmax_backoff_seconds = 1");
    let server = Server::start(&site);

    let report = site.path("report.pdf");
    let report_sum = write_random(&report, 1000, 41);
    let first = site.path("a.txt");
    let first_sum = write_random(&first, 2000, 43);
    let second = site.path("b.txt");
    let second_sum = write_random(&second, 3000, 47);
    // Carol's two files must fall in one digest period (whole minutes from the epoch): start
    // early in a minute, so the two uploads cannot straddle its end.
    let early = eventually(Duration::from_secs(40), async || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 60
            < 30
    })
    .await;
    assert!(early);
    let out = server
        .sftp(
            &site,
            alice.0,
            alice.1,
            &format!(
                "put {} /outbox/bob/report.pdf\nput {} /outbox/carol/a.txt\nput {} /outbox/carol/b.txt\n",
                report.display(),
                first.display(),
                second.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", common::text(&out));
    let got = site.path("got-report.pdf");
    let out = server
        .get(&site, bob, "/inbox/alice/report.pdf", &got)
        .await;
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(sha256_file(&got), report_sum);

    // The digest is due at the end of the minute: wait up to 90 s for all three mails and for
    // every job to be done.
    let all_sent = eventually(Duration::from_secs(90), async || {
        let jobs = site.jobs();
        mails(&python, &maildir).len() >= 3
            && !jobs.is_empty()
            && jobs.iter().all(|job| job["state"] == "done")
    })
    .await;
    let mail = mails(&python, &maildir);
    assert!(
        all_sent,
        "mails: {mail:#?}\njobs: {:#?}\n{}",
        site.jobs(),
        server.log()
    );
    let to = |address: &str| -> Vec<Mail> {
        mail.iter()
            .filter(|m| m.to.contains(address))
            .cloned()
            .collect()
    };
    let jobs = site.jobs();
    let job_of = |mail: &Mail| -> Value {
        let id = mail
            .message_id
            .strip_prefix('<')
            .and_then(|rest| rest.strip_suffix("@mailroom>"))
            .unwrap_or_else(|| panic!("Message-ID {:?} is not <job-id@mailroom>", mail.message_id));
        jobs.iter()
            .find(|job| job["id"] == id)
            .unwrap_or_else(|| panic!("no job {id}: {jobs:#?}"))
            .clone()
    };

    let to_bob = to("bob@example.test");
    assert_eq!(to_bob.len(), 1, "{mail:#?}");
    assert_eq!(
        to_bob[0].subject,
        "[Mailroom] New file from alice: report.pdf"
    );
    for needle in [
        "alice",
        "report.pdf",
        "1000 bytes",
        &report_sum,
        "/inbox/alice/report.pdf",
    ] {
        assert!(
            to_bob[0].body.contains(needle),
            "{needle:?} not in {:?}",
            to_bob[0].body
        );
    }
    let job = job_of(&to_bob[0]);
    assert_eq!(job["rule"], "@notify");
    assert_eq!(job["target"], "bob@example.test");

    let to_alice = to("alice@example.test");
    assert_eq!(to_alice.len(), 1, "{mail:#?}");
    assert_eq!(to_alice[0].subject, "[Mailroom] bob picked up report.pdf");
    assert!(
        to_alice[0].body.contains(&report_sum),
        "{:?}",
        to_alice[0].body
    );
    assert_eq!(job_of(&to_alice[0])["rule"], "@receipt");

    let to_carol = to("carol@example.test");
    assert_eq!(to_carol.len(), 1, "{mail:#?}");
    assert_eq!(
        to_carol[0].subject,
        "[Mailroom] 2 file(s) wait in your inbox"
    );
    for needle in ["a.txt", "b.txt", "alice"] {
        assert!(
            to_carol[0].body.contains(needle),
            "{needle:?} not in {:?}",
            to_carol[0].body
        );
    }
    let job = job_of(&to_carol[0]);
    assert_eq!(job["rule"], "@digest");
    assert_eq!(job["target"], "carol@example.test");
    assert_eq!(mail.len(), 3, "{mail:#?}");
    // Carol's files were never touched by the mails.
    for (name, sum) in [("a.txt", &first_sum), ("b.txt", &second_sum)] {
        let got = site.path(&format!("got-{name}"));
        let out = server
            .get(
                &site,
                ("carol", &carol_key),
                &format!("/inbox/alice/{name}"),
                &got,
            )
            .await;
        assert!(out.status.success(), "{}", common::text(&out));
        assert_eq!(&sha256_file(&got), sum);
    }
}
