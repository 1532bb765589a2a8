//! The web UI end to end in headless Chromium: `web-tests/e2e.js` (playwright-core driving
//! Debian's chromium) against a real server on port 0. A user signs in, sends a file by drag
//! and drop and a larger one with the file picker whose upload is cut off part-way and resumes;
//! the recipient downloads (same SHA-256) and acknowledges; the sender sees the receipts
//! change; the admin sees the events and the verified chain. With `MAILROOM_SCREENSHOTS=DIR`
//! the script saves the screenshots of `docs/screenshots/`. A second test runs
//! `web-tests/account.js`: self-service, and a form that outlives a restart of the hub; a
//! third runs `web-tests/selection.js`: the inbox's ticked files as one ZIP and acknowledged
//! as one action, from the keyboard.
//!
//! Without chromium, node or `web-tests/node_modules` the test is skipped (counted apart by
//! `scripts/test`), unless `CI` or `MAILROOM_TEST_BROWSER` is set, in which case it fails.

// Tests may unwrap (CONTRIBUTING.md): a failed unwrap is a failed check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};

use mailroom_core::{AuthConfig, DeliveryState};
use mailroom_test_support::TestHub;
use sha2::{Digest, Sha256};

/// Size of the file whose upload is interrupted: three 1 MiB parts.
const BIG: usize = 3 << 20;

fn web_tests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-tests")
}

fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// What the browser test needs, or why it cannot run.
fn prerequisites() -> Result<PathBuf, String> {
    let chromium = chromium().ok_or("chromium not installed (apt-get install chromium)")?;
    if !mailroom_test_support::have("node") {
        return Err("node not installed".to_owned());
    }
    if !web_tests().join("node_modules/playwright-core").is_dir() {
        return Err("playwright-core not installed (cd web-tests && npm ci)".to_owned());
    }
    Ok(chromium)
}

/// The bytes e2e.js sends: byte i is (i * 31 + 7) mod 256.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) + 7) as u8).collect()
}

#[tokio::test]
async fn a_file_goes_from_browser_to_browser_with_a_resumed_upload() {
    let chromium = match prerequisites() {
        Ok(chromium) => chromium,
        Err(why) if std::env::var_os("MAILROOM_TEST_BROWSER").is_some() => {
            panic!("MAILROOM_TEST_BROWSER is set but {why}")
        }
        Err(why) => {
            mailroom_test_support::skip(&why);
            return;
        }
    };
    let hub = TestHub::start_https_with(
        mailroom_https::Config::default(),
        AuthConfig::default(),
        mailroom_web::router,
    )
    .await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    let root = hub.admin_account("root").await;
    hub.allow("alice", "bob").await;

    let mut command = tokio::process::Command::new("node");
    command
        .arg("e2e.js")
        .current_dir(web_tests())
        .env("MAILROOM_URL", &hub.https().base)
        .env("MAILROOM_SENDER", &alice.name)
        .env("MAILROOM_SENDER_PASSWORD", &alice.password)
        .env("MAILROOM_RECIPIENT", &bob.name)
        .env("MAILROOM_RECIPIENT_PASSWORD", &bob.password)
        .env("MAILROOM_ADMIN", &root.name)
        .env("MAILROOM_ADMIN_PASSWORD", &root.password)
        .env("MAILROOM_BIG_SIZE", BIG.to_string())
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true);
    // Screenshots go to a folder named from the workspace root (e.g. docs/screenshots).
    if let Some(folder) = std::env::var_os("MAILROOM_SCREENSHOTS") {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(folder);
        std::fs::create_dir_all(&folder).unwrap();
        command.env("MAILROOM_SCREENSHOTS", folder.canonicalize().unwrap());
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), command.output())
        .await
        .expect("the browser test finishes within 5 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "e2e.js failed:\n{stderr}\n{stdout}"
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap())
        .unwrap_or_else(|_| panic!("no JSON from e2e.js:\n{stdout}"));
    eprintln!("e2e: {result}");

    // What the browser did, as the hub recorded it.
    let expected = hex(&Sha256::digest(pattern(BIG)));
    assert_eq!(result["bigSha"], expected.as_str());
    assert_eq!(result["downloadedSha"], expected.as_str());
    assert!(result["cutAt"].as_u64().unwrap() > 0, "cut part-way");
    assert!(
        result["patches"].as_u64().unwrap() >= 4,
        "the cut part was sent again"
    );
    assert!(
        result["refusal"].as_str().unwrap().starts_with("Not sent:"),
        "{result}"
    );
    let deliveries = hub.deliveries().await;
    let big = deliveries
        .iter()
        .find(|d| d.name.as_str() == "big.bin")
        .unwrap();
    assert_eq!(big.sha256, expected);
    assert_eq!(big.size, BIG as u64);
    assert_eq!(big.state, DeliveryState::PickedUp);
    let report = deliveries
        .iter()
        .find(|d| d.name.as_str() == "report.txt")
        .unwrap();
    assert_eq!(report.state, DeliveryState::Acknowledged);
    assert!(
        !deliveries.iter().any(|d| d.name.as_str() == "refused.txt"),
        "a refused send delivers nothing"
    );
    assert_eq!(hub.staged_bytes(), 0, "no upload left half-done");
    hub.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `web-tests/account.js`: self-service in a real browser (SSH keys, sessions, TOTP with a
/// current code, the 404 page, times in the viewer's zone), then a password form opened
/// before a restart of the hub and posted after it. The restart happens when the script asks
/// for it (a `RESTART` line), and the script goes on when told (`restarted`): no sleep.
#[tokio::test]
async fn self_service_in_the_browser_and_a_form_that_outlives_a_restart() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let chromium = match prerequisites() {
        Ok(chromium) => chromium,
        Err(why) if std::env::var_os("MAILROOM_TEST_BROWSER").is_some() => {
            panic!("MAILROOM_TEST_BROWSER is set but {why}")
        }
        Err(why) => {
            mailroom_test_support::skip(&why);
            return;
        }
    };
    // The pages keep their CSRF key in the data folder, as `mailroom serve` does.
    let pages = |state, data: &Path| {
        let key =
            mailroom_web::load_or_create_csrf_key(&data.join(mailroom_web::CSRF_KEY_FILE)).unwrap();
        mailroom_web::router_with_key(state, key)
    };
    let mut hub = TestHub::start_https_in(
        mailroom_https::Config::default(),
        AuthConfig::default(),
        pages,
    )
    .await;
    let carol = hub.client("carol").await;
    let new_password = "Brand-new-passphrase-2031";
    let key_file = hub.dir.path().join(mailroom_web::CSRF_KEY_FILE);
    let key_before = std::fs::read_to_string(&key_file).unwrap();

    let mut child = tokio::process::Command::new("node")
        .arg("account.js")
        .current_dir(web_tests())
        .env("MAILROOM_URL", &hub.https().base)
        .env("MAILROOM_USER", &carol.name)
        .env("MAILROOM_USER_PASSWORD", &carol.password)
        .env("MAILROOM_NEW_PASSWORD", new_password)
        .env(
            "MAILROOM_OTHER_KEY",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl laptop",
        )
        .env("CHROMIUM", &chromium)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut restarted = false;
    let mut last = String::new();
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.trim() == "RESTART" {
                hub.restart_https_in(
                    mailroom_https::Config::default(),
                    AuthConfig::default(),
                    pages,
                )
                .await;
                restarted = true;
                stdin.write_all(b"restarted\n").await.unwrap();
                stdin.flush().await.unwrap();
            } else {
                last = line;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .expect("the browser test finishes within 5 minutes");
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "account.js failed:\n{stderr}\n{last}"
    );
    assert!(restarted, "the script asked for the restart");
    let result: serde_json::Value = serde_json::from_str(last.trim())
        .unwrap_or_else(|_| panic!("no JSON from account.js:\n{last}\n{stderr}"));
    eprintln!("account: {result}");
    assert_eq!(result["formSurvivedRestart"], true);
    assert_eq!(result["signedInWithNewPassword"], true);

    // The key was made once, privately, and read again by the restarted hub.
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key_before);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // What the browser did, as the hub recorded it.
    let details: Vec<String> = hub
        .events(mailroom_core::EventKind::Admin, mailroom_core::Outcome::Ok)
        .await
        .into_iter()
        .filter(|e| e.object == "account carol")
        .map(|e| e.detail)
        .collect();
    for expected in [
        "add own key",
        "remove own key",
        "sign out other sessions (1 closed)",
        "enroll own totp",
        "change own password",
    ] {
        assert!(
            details.iter().any(|d| d.starts_with(expected)),
            "{expected} not in {details:?}"
        );
    }
    assert_eq!(
        hub.account("carol").await.keys.len(),
        1,
        "the added key went again"
    );
    hub.stop().await;
}

/// `web-tests/selection.js`: the inbox's selection from the keyboard. bob has three files; he
/// downloads the first and the last as one ZIP (its comment lists their SHA-256) and
/// acknowledges the two as one action, after a refusal with nothing ticked.
#[tokio::test]
async fn two_ticked_files_download_as_one_zip_and_are_acknowledged_together() {
    let chromium = match prerequisites() {
        Ok(chromium) => chromium,
        Err(why) if std::env::var_os("MAILROOM_TEST_BROWSER").is_some() => {
            panic!("MAILROOM_TEST_BROWSER is set but {why}")
        }
        Err(why) => {
            mailroom_test_support::skip(&why);
            return;
        }
    };
    let hub = TestHub::start_https_with(
        mailroom_https::Config::default(),
        AuthConfig::default(),
        mailroom_web::router,
    )
    .await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let http = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(&std::fs::read(&hub.https().ca).unwrap()).unwrap(),
        ])
        .build()
        .unwrap();
    let login: serde_json::Value = http
        .post(format!("{}/api/v1/token", hub.https().base))
        .json(&serde_json::json!({"username": alice.name, "password": alice.password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap();
    let mut files = Vec::new();
    for (name, body) in [
        ("first.txt", pattern(1000)),
        ("middle.bin", pattern(70_000)),
        ("last.csv", b"a,b\n1,2\n".to_vec()),
    ] {
        let sha256 = hex(&Sha256::digest(&body));
        let response = http
            .put(format!(
                "{}/api/v1/outbox/bob/{name}?sha256={sha256}",
                hub.https().base
            ))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{name}: {}",
            response.status()
        );
        files.push(serde_json::json!({"name": name, "sha256": sha256}));
    }

    let output = tokio::process::Command::new("node")
        .arg("selection.js")
        .current_dir(web_tests())
        .env("MAILROOM_URL", &hub.https().base)
        .env("MAILROOM_USER", &bob.name)
        .env("MAILROOM_USER_PASSWORD", &bob.password)
        .env("MAILROOM_FILES", serde_json::Value::from(files).to_string())
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), output)
        .await
        .expect("the browser test finishes within 5 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "selection.js failed:\n{stderr}\n{stdout}"
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap())
        .unwrap_or_else(|_| panic!("no JSON from selection.js:\n{stdout}"));
    eprintln!("selection: {result}");
    // In the page's order (newest first), which the form's fields follow.
    assert_eq!(
        result["zipNames"],
        serde_json::json!(["last.csv", "first.txt"])
    );
    assert_eq!(result["left"], serde_json::json!(["middle.bin"]));

    // What the browser did, as the hub recorded it: the two were downloaded (in the ZIP) and
    // acknowledged in one action; the third was not touched.
    let state = |name: &str, deliveries: &[mailroom_core::Delivery]| {
        deliveries
            .iter()
            .find(|d| d.name.as_str() == name)
            .unwrap()
            .state
    };
    let deliveries = hub.deliveries().await;
    assert_eq!(state("first.txt", &deliveries), DeliveryState::Acknowledged);
    assert_eq!(state("last.csv", &deliveries), DeliveryState::Acknowledged);
    assert_eq!(state("middle.bin", &deliveries), DeliveryState::Delivered);
    let downloads = hub
        .events(
            mailroom_core::EventKind::Download,
            mailroom_core::Outcome::Ok,
        )
        .await;
    assert_eq!(downloads.len(), 2, "{downloads:?}");
    let acknowledged = hub
        .events(
            mailroom_core::EventKind::DeliveryAcknowledged,
            mailroom_core::Outcome::Ok,
        )
        .await;
    assert_eq!(acknowledged.len(), 2);
    hub.stop().await;
}
