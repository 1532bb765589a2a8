//! Rules and the job queue on the real binary: every bad rule refused at start with the file,
//! the line and the reason (and the data folder left as it was), jobs made by the admin
//! commands' own events, and `mailroom jobs list|show|retry|drop` with their refusals, each
//! checked to change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Output;

mod common;

/// An initialised data folder in a temporary folder.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = site.run(&["init"]);
        assert!(out.status.success(), "{}", common::text(&out));
        site
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config(&self) -> PathBuf {
        self.data().join("mailroom.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(&self.data(), args)
    }

    /// A command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        common::ok(&self.data(), args)
    }

    /// A command that must fail with exit code 1; its one stderr line.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "mailroom {args:?}: {}",
            common::text(&out)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    }

    /// Appends `rules` to the configuration.
    /// Sends the rules' mail to a plain SMTP relay on a free loopback port (none listens
    /// there until a test starts one), retries failed jobs every second, never gives them up,
    /// and adds `jobs` to `[jobs]`; returns the port.
    fn mail_to_loopback(&self, jobs: &str) -> u16 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = std::fs::read_to_string(self.config())
            .unwrap()
            .replace(
                "\n[jobs]\n",
                &format!("\n[jobs]\nbackoff_seconds = 1\nmax_backoff_seconds = 1\nmax_attempts = 1000\n{jobs}"),
            )
            .replace(
                "\n[smtp]\n",
                &format!(
                    "\n[smtp]\nserver = \"127.0.0.1:{port}\"\nsecurity = \"none\"\nfrom = \"mailroom@example.test\"\n"
                ),
            );
        std::fs::write(self.config(), config).unwrap();
        port
    }

    fn with_rules(&self, rules: &str) {
        let mut config = std::fs::read_to_string(self.config()).unwrap();
        config.push_str(rules);
        std::fs::write(self.config(), config).unwrap();
    }

    /// What a refused start must leave alone: the audit trail and the folder's files.
    fn snapshot(&self) -> (String, Vec<String>) {
        (
            self.ok(&["audit", "list", "--json", "--limit", "1000"]),
            common::data_files(&self.data()),
        )
    }
}

/// The line of `needle` in `text`, 1-based.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn every_bad_rule_is_refused_at_start_with_its_line_and_changes_nothing() {
    let site = Site::new();
    site.ok(&["account", "add", "bob"]);
    let template = std::fs::read_to_string(site.config()).unwrap();
    let cases: [(&str, &str, &str); 12] = [
        (
            "a copy to an unknown account",
            "[[rules]]\nname = \"a\"\non = [\"delivery.delivered\"]\ncopy_to = [\"nobody\"]\n",
            "no account or group is named \"nobody\"",
        ),
        (
            "a copy of something that is not a delivery",
            "[[rules]]\nname = \"a\"\non = [\"login\"]\ncopy_to = [\"bob\"]\n",
            "copy_to and export_to dispatch deliveries",
        ),
        (
            "a transfer start selected by file",
            "[[rules]]\nname = \"a\"\non = [\"transfer.started\"]\nfile = \"*.pdf\"\nwebhook = [\"https://hooks.example.test/a\"]\n",
            "comes before any delivery",
        ),
        (
            "an unknown event type",
            "[[rules]]\nname = \"a\"\non = [\"delivery.created\"]\nwebhook = [\"https://hooks.example.test/a\"]\n",
            "unknown event type \"delivery.created\"",
        ),
        (
            "an unknown account",
            "[[rules]]\nname = \"a\"\non = [\"delivery.delivered\"]\nrecipient = \"bobb\"\nwebhook = [\"https://hooks.example.test/a\"]\n",
            "no account or group is named \"bobb\"",
        ),
        (
            "a plain-http webhook",
            "[[rules]]\nname = \"a\"\non = [\"delivery.delivered\"]\nwebhook = [\"http://hooks.example.test/a\"]\n",
            "https only",
        ),
        (
            "a webhook into the hub's own network",
            "[[rules]]\nname = \"a\"\non = [\"delivery.delivered\"]\nwebhook = [\"https://169.254.169.254/latest\"]\n",
            "not a public address",
        ),
        (
            "a rule without a handler",
            "[[rules]]\nname = \"a\"\non = [\"delivery.delivered\"]\n",
            "names no handler",
        ),
        (
            "a name used twice",
            "[[rules]]\nname = \"a\"\non = [\"login\"]\nwebhook = [\"https://hooks.example.test/a\"]\n\n[[rules]]\nname = \"a\"\non = [\"login\"]\nwebhook = [\"https://hooks.example.test/b\"]\n",
            "taken by an earlier rule",
        ),
        (
            "a bad outcome",
            "[[rules]]\nname = \"a\"\non = [\"login\"]\noutcome = \"maybe\"\nwebhook = [\"https://hooks.example.test/a\"]\n",
            "unknown outcome \"maybe\"",
        ),
        (
            "an unknown handler",
            "[[rules]]\nname = \"a\"\non = [\"login\"]\nexec = [\"/bin/sh\"]\n",
            "unknown field `exec`",
        ),
        (
            "e-mail with no server",
            "[[rules]]\nname = \"a\"\non = [\"login\"]\nemail = [\"ops@example.test\"]\n",
            "[smtp] names no server",
        ),
    ];
    for (what, rules, reason) in cases {
        std::fs::write(site.config(), &template).unwrap();
        let before = site.snapshot();
        site.with_rules(rules);
        let config = std::fs::read_to_string(site.config()).unwrap();
        let err = site.refused(&["serve"]);
        let shown = site.config().display().to_string();
        assert!(err.contains(&shown), "{what}: {err}");
        assert!(err.contains(reason), "{what}: {err:?} lacks {reason:?}");
        // The line of the offending rule (the last `[[rules]]`) or of the bad value.
        let table = config.rfind("[[rules]]").unwrap();
        let first_line = config[..table].lines().count() + 1;
        let last_line = config.lines().count();
        let line = common::error_line(&err).unwrap_or_else(|| panic!("{what}: no line in {err:?}"));
        assert!(
            (first_line..=last_line).contains(&line),
            "{what}: line {line} is not in the rule ({first_line}-{last_line}): {err}"
        );
        std::fs::write(site.config(), &template).unwrap();
        assert_eq!(
            site.snapshot(),
            before,
            "{what}: the refused start changed something"
        );
    }
    // The template's own example is a comment, and parses to no rule.
    assert!(template.contains("# [[rules]]"));
    let _ = line_of(&template, "# [[rules]]");
}

#[test]
fn every_bad_check_notice_disk_or_jobs_setting_is_refused_at_start_and_changes_nothing() {
    let site = Site::new();
    let template = std::fs::read_to_string(site.config()).unwrap();
    let cases = [
        (
            "[check]\n",
            "[check]\nclamd = \"clamd.example.test:3310\"\n",
            "clamd.example.test:3310",
        ),
        (
            "[check]\n",
            "[check]\nclamd = \"tcp://127.0.0.1:3310\"\ncommand = \"scan {path}\"\n",
            "either",
        ),
        (
            "[check]\n",
            "[check]\ncommand = \"scan-without-a-path\"\n",
            "{path}",
        ),
        (
            "[notifications]\n",
            "[notifications]\ndigest_minutes = \"hourly\"\n",
            "digest_minutes",
        ),
        (
            "[disk]\n",
            "[disk]\nmin_free_percent = 101\n",
            "min_free_percent",
        ),
        ("[jobs]\n", "[jobs]\nnice = 20\n", "[jobs] nice = 20"),
    ];
    for (section, replacement, reason) in cases {
        let before = site.snapshot();
        std::fs::write(site.config(), template.replacen(section, replacement, 1)).unwrap();
        let err = site.refused(&["serve"]);
        assert!(
            err.contains(reason),
            "{replacement}: {err:?} lacks {reason:?}"
        );
        std::fs::write(site.config(), &template).unwrap();
        assert_eq!(
            site.snapshot(),
            before,
            "{replacement}: the refused start changed something"
        );
    }
}

#[test]
fn admin_commands_queue_jobs_and_operators_list_show_retry_and_drop_them() {
    let site = Site::new();
    site.with_rules(
        "\n[[rules]]\nname = \"accounts\"\non = [\"admin\"]\nwebhook = [\"https://hooks.example.test/accounts\"]\n",
    );
    site.ok(&["account", "add", "carol"]);
    let listed: serde_json::Value =
        serde_json::from_str(&site.ok(&["jobs", "list", "--json"])).unwrap();
    let jobs = listed.as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{listed}");
    let job = &jobs[0];
    assert_eq!(job["rule"], "accounts");
    assert_eq!(job["handler"], "webhook");
    assert_eq!(job["target"], "https://hooks.example.test/accounts");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["attempts"], 0);
    let id = job["id"].as_str().unwrap().to_owned();

    let shown: serde_json::Value =
        serde_json::from_str(&site.ok(&["jobs", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["job"]["id"], id.as_str());
    assert_eq!(shown["event"]["kind"], "admin");
    assert_eq!(shown["event"]["object"], "account carol");
    let table = site.ok(&["jobs", "list"]);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("queued 1, done 0, dead 0, dropped 0"),
        "{table}"
    );

    // Refusals change nothing (the jobs, and the audit trail but for nothing).
    let before = (
        site.ok(&["jobs", "list", "--json"]),
        site.ok(&["audit", "list", "--json"]),
    );
    let err = site.refused(&["jobs", "show", "not-a-uuid"]);
    assert!(err.contains("is not a job id"), "{err}");
    let unknown = "0190f000-0000-7000-8000-000000000000";
    for command in ["show", "retry", "drop"] {
        let err = site.refused(&["jobs", command, unknown]);
        assert!(err.contains("no job"), "{command}: {err}");
    }
    let err = site.refused(&["jobs", "list", "--state", "lost"]);
    assert!(err.contains("unknown job state"), "{err}");
    assert_eq!(
        (
            site.ok(&["jobs", "list", "--json"]),
            site.ok(&["audit", "list", "--json"])
        ),
        before
    );

    // Drop, then retry: each an audited change (which the rule, on admin events, turns into
    // jobs of its own).
    let dropped = site.ok(&["jobs", "drop", &id]);
    assert!(dropped.contains("dropped"), "{dropped}");
    let err = site.refused(&["jobs", "drop", &id]);
    assert!(err.contains("dropped already"), "{err}");
    let retried = site.ok(&["jobs", "retry", &id]);
    assert!(retried.contains("queued to run now"), "{retried}");
    let audit = site.ok(&["audit", "list"]);
    assert!(audit.contains(&format!("job:{id}")), "{audit}");
    let state: serde_json::Value =
        serde_json::from_str(&site.ok(&["jobs", "show", &id, "--json"])).unwrap();
    assert_eq!(state["job"]["state"], "queued");
}

/// The jobs as `jobs list --json` prints them.
fn jobs(site: &Site) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&site.ok(&["jobs", "list", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `serve` in the background, with the lines its job worker logs when it has committed the
/// outcomes of jobs: the signal the test waits on.
struct Server {
    child: std::process::Child,
    recorded: std::sync::mpsc::Receiver<()>,
}

impl Server {
    fn start(site: &Site) -> Server {
        let mut child = common::mailroom(&site.data(), &["serve"])
            .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_LOG", "warn,mailroom_events=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, recorded) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.contains("job outcomes recorded") && tx.send(()).is_err() {
                    return;
                }
            }
        });
        Server { child, recorded }
    }

    /// Waits until `check` holds, checking again each time the worker has recorded job
    /// outcomes; false if it has not held after 60 s without one.
    fn until(&self, mut check: impl FnMut() -> bool) -> bool {
        loop {
            if check() {
                return true;
            }
            if self
                .recorded
                .recv_timeout(std::time::Duration::from_secs(60))
                .is_err()
            {
                return check();
            }
        }
    }

    /// kill -9.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn jobs_queued_when_the_hub_is_killed_complete_after_a_restart_each_mail_keyed_by_its_job() {
    let Some(python) = mailroom_test_support::python_with("aiosmtpd") else {
        return;
    };
    let site = Site::new();
    // Mail to a relay that is not there yet; retries every second; short leases.
    let port = site.mail_to_loopback("lease_seconds = 2\n");
    site.with_rules(
        "\n[[rules]]\nname = \"accounts\"\non = [\"admin\"]\nemail = [\"ops@example.test\"]\n",
    );
    let server = Server::start(&site);
    // Five admin changes by another process: five jobs, which the server's worker takes up.
    for i in 0..5 {
        site.ok(&["account", "add", &format!("user{i}")]);
    }
    assert!(
        server.until(|| {
            let jobs = jobs(&site);
            jobs.len() == 5 && jobs.iter().all(|j| j["attempts"].as_u64().unwrap() >= 1)
        }),
        "the server did not try the jobs: {:?}",
        jobs(&site)
    );
    // kill -9, with every job queued and failing.
    server.kill();
    assert!(jobs(&site).iter().all(|j| j["state"] == "queued"));
    let ids: std::collections::BTreeSet<String> = jobs(&site)
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();

    // The relay comes up, the hub restarts: every job completes.
    let maildir = site.dir.path().join("maildir");
    let mut relay = std::process::Command::new(&python)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = Server::start(&site);
    let all_done = server.until(|| jobs(&site).iter().all(|j| j["state"] == "done"));
    server.kill();
    let _ = relay.kill();
    let _ = relay.wait();
    assert!(all_done, "jobs left: {:?}", jobs(&site));
    // A receiver tells copies apart by Message-ID: each is a job's id, and every job's id is
    // there (a job cut short by the kill may have been mailed twice; never a job lost).
    let mut seen = std::collections::BTreeSet::new();
    for mail in std::fs::read_dir(maildir.join("new")).unwrap() {
        let text = std::fs::read_to_string(mail.unwrap().path()).unwrap();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .and_then(|rest| rest.strip_suffix("@mailroom>"))
            .unwrap_or_else(|| panic!("no Message-ID: {text}"))
            .to_owned();
        seen.insert(id);
    }
    assert_eq!(seen, ids);
}

#[test]
fn a_data_folder_below_its_free_space_floor_raises_one_disk_low_alert() {
    let site = Site::new();
    // A floor of 100 % is never met: the first look records the crossing. The alert's mail
    // goes to a relay that is not there, so its job is tried (and logged) again and again.
    site.mail_to_loopback("");
    let config = std::fs::read_to_string(site.config()).unwrap().replace(
        "\n[disk]\n",
        "\n[disk]\nmin_free_percent = 100\ncheck_seconds = 1\n",
    );
    std::fs::write(site.config(), config).unwrap();
    site.with_rules(
        "\n[[rules]]\nname = \"disk\"\non = [\"disk.low\"]\nemail = [\"ops@example.test\"]\n",
    );
    let disk_low = || -> Vec<serde_json::Value> {
        let out = site.ok(&["audit", "list", "--json", "--limit", "1000"]);
        let events: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        events
            .into_iter()
            .filter(|e| e["kind"] == "disk.low")
            .collect()
    };
    let server = Server::start(&site);
    // Several outcomes recorded means the worker tried the alert's job several times, and
    // the watch looked again meanwhile (every second).
    let mut tries = 0;
    let seen = server.until(|| {
        tries += 1;
        tries > 3 && jobs(&site).iter().any(|j| j["rule"] == "disk")
    });
    server.kill();
    assert!(seen, "no alert job: {:?}", jobs(&site));
    let events = disk_low();
    assert_eq!(events.len(), 1, "one event per crossing: {events:?}");
    assert_eq!(events[0]["outcome"], "failed");
    assert!(
        events[0]["detail"]
            .as_str()
            .unwrap()
            .contains("below the floor of 100 %"),
        "{events:?}"
    );
}

#[test]
fn an_export_rule_writes_each_delivered_file_whole_into_its_folder_and_follows_no_planted_link() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    for account in ["erp", "bob", "carol"] {
        site.ok(&["account", "add", account]);
    }
    site.ok(&["route", "allow", "erp", "bob"]);
    site.ok(&["route", "allow", "erp", "carol"]);
    let (drop, export) = (site.dir.path().join("drop"), site.dir.path().join("export"));
    let outside = site.dir.path().join("outside");
    for dir in [&drop, &export, &outside] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::create_dir(drop.join("bob")).unwrap();
    std::fs::create_dir(drop.join("carol")).unwrap();
    // Whoever may write to the export folder plants a link where carol's folder would be.
    std::os::unix::fs::symlink(&outside, export.join("carol")).unwrap();
    let base = std::fs::read_to_string(site.config()).unwrap();

    // A world-writable export folder is refused at start, naming the rule and the folder.
    std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o777)).unwrap();
    site.with_rules(&format!(
        "\n[[rules]]\nname = \"to-erp-host\"\non = [\"delivery.delivered\"]\nexport_to = [\"{}\"]\n",
        export.display()
    ));
    let before = site.snapshot();
    let err = site.refused(&["serve"]);
    assert!(
        err.contains("rule \"to-erp-host\"") && err.contains("world-writable"),
        "{err}"
    );
    assert_eq!(site.snapshot(), before);
    // So is a relative folder, and an export of anything but deliveries, at read.
    std::fs::write(
        site.config(),
        format!("{base}\n[[rules]]\nname = \"rel\"\non = [\"delivery.delivered\"]\nexport_to = [\"out\"]\n"),
    )
    .unwrap();
    assert!(site.refused(&["serve"]).contains("absolute path"));
    std::fs::write(
        site.config(),
        format!(
            "{base}\n[[rules]]\nname = \"logins\"\non = [\"login\"]\nexport_to = [\"{}\"]\n",
            export.display()
        ),
    )
    .unwrap();
    assert!(site.refused(&["serve"]).contains("delivery.delivered"));

    // Files dropped for bob are delivered, and the rule exports each as bob/<name>.
    std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        site.config(),
        format!(
            "{base}\n[[rules]]\nname = \"to-erp-host\"\non = [\"delivery.delivered\"]\nexport_to = [\"{}\"]\n\n[[drop]]\npath = \"{}\"\nmode = \"private\"\naccount = \"erp\"\nsettle_seconds = 1\n",
            export.display(),
            drop.display()
        ),
    )
    .unwrap();
    let big = mailroom_test_support::write_random(&drop.join("bob").join("big.bin"), 700_000, 7);
    let small = mailroom_test_support::write_random(&drop.join("bob").join("small.csv"), 100, 8);
    mailroom_test_support::write_random(&drop.join("carol").join("lured.csv"), 100, 9);
    let server = Server::start(&site);
    let exported = |name: &str| export.join("bob").join(name);
    let settled = server.until(|| {
        let jobs = jobs(&site);
        let done = jobs.iter().filter(|j| j["state"] == "done").count();
        let refused = jobs
            .iter()
            .filter(|j| j["state"] == "queued" && j["attempts"].as_u64().unwrap() >= 1)
            .filter(|j| {
                j["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("carol"))
            })
            .count();
        jobs.len() == 3 && done == 2 && refused == 1
    });
    server.kill();
    assert!(settled, "{:?}", jobs(&site));
    // The link was not followed: nothing reached the folder it points to.
    assert!(common::data_files(&outside).is_empty());
    assert_eq!(
        mailroom_test_support::sha256_file(&exported("big.bin")),
        big
    );
    assert_eq!(
        mailroom_test_support::sha256_file(&exported("small.csv")),
        small
    );
    let mode = std::fs::metadata(exported("big.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Nothing half-written is left beside them.
    assert_eq!(
        common::data_files(&export.join("bob")).len(),
        2,
        "{:?}",
        common::data_files(&export)
    );
}

#[tokio::test]
async fn jobs_run_on_threads_of_their_own_scheduled_after_the_transfers() {
    let site = Site::new();
    let server = Server::start(&site);
    let pid = server.child.id();
    // The threads named mailroom-jobs, each with its niceness (field 19 of its stat line).
    let jobs_threads = || -> Vec<i64> {
        let mut nices = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let task = task.unwrap().path();
            let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
                continue;
            };
            if !comm.starts_with("mailroom-jobs") {
                continue;
            }
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            nices.push(fields[16].parse().unwrap());
        }
        nices
    };
    // Another process's threads: looked at until they are there (as for any other process).
    let found = mailroom_test_support::eventually(std::time::Duration::from_secs(30), async || {
        jobs_threads().len() == 2
    })
    .await;
    let nices = jobs_threads();
    server.kill();
    assert!(found, "job threads: {nices:?}");
    assert_eq!(nices, [10, 10]);
}
