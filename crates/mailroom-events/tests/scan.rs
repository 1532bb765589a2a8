//! The malware check against real scanners: a real clamd (Debian's `clamav-daemon`, which
//! `.ci/run` installs) started by the test over our own signature database
//! (`mailroom_test_support::Clamd`), asked over TCP and its Unix socket; stand-ins for clamd
//! where the real one cannot misbehave on demand (silence, an endless or hostile answer); and
//! scanner commands written by the tests as bash scripts. Each verdict is checked, and each way
//! a scan cannot decide must be an error, never `Clean`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mailroom_events::{CheckConfig, Content, Scanner, Verdict};
use mailroom_test_support::clamd::{MARKER, MARKER_SIGNATURE, STREAM_MAX_BYTES};
use mailroom_test_support::{Clamd, EICAR, files_under, have};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Content in memory that remembers the longest piece it was asked for.
struct Bytes {
    data: Vec<u8>,
    /// What `size` claims; longer than `data` to play a file that ends early.
    size: u64,
    largest_read: AtomicUsize,
}

impl Bytes {
    fn new(data: impl Into<Vec<u8>>) -> Bytes {
        let data = data.into();
        Bytes {
            size: data.len() as u64,
            data,
            largest_read: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Content for Bytes {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        self.largest_read.fetch_max(len, Ordering::SeqCst);
        let start = usize::try_from(offset).unwrap().min(self.data.len());
        let end = (start + len).min(self.data.len());
        Ok(self.data[start..end].to_vec())
    }
}

const CHUNK: usize = 64 * 1024;

fn scanner(config: CheckConfig, work_dir: &Path) -> Scanner {
    Scanner::from_config(&config, work_dir)
        .unwrap()
        .expect("a scanner is configured")
}

fn clamd_at(address: &str) -> Scanner {
    let config = CheckConfig {
        clamd: Some(address.to_owned()),
        ..CheckConfig::default()
    };
    scanner(config, Path::new("/nonexistent"))
}

fn found(verdict: Result<Verdict, String>) -> String {
    match verdict {
        Ok(Verdict::Found(name)) => name,
        other => panic!("expected Found, got {other:?}"),
    }
}

/// The verdicts every way of reaching clamd must give.
async fn check_clamd_verdicts(scanner: &Scanner, clamd: &Clamd) {
    let name = found(scanner.scan(&Bytes::new(EICAR)).await);
    assert!(
        name.starts_with("Hub-Test-EICAR-") && name.ends_with(".UNOFFICIAL"),
        "{name}\n{}",
        clamd.log()
    );

    // The marker straddles the boundary of the second and third chunk of a 200 KiB file, and
    // no piece asked for is longer than a chunk.
    let mut data = mailroom_test_support::random_bytes(200 * 1024, 1);
    let at = 2 * CHUNK - MARKER.len() / 2;
    data[at..at + MARKER.len()].copy_from_slice(MARKER.as_bytes());
    let marked = Bytes::new(data);
    let name = found(scanner.scan(&marked).await);
    assert_eq!(name, format!("{MARKER_SIGNATURE}.UNOFFICIAL"));
    assert_eq!(marked.largest_read.load(Ordering::SeqCst), CHUNK);

    let clean = Bytes::new(mailroom_test_support::random_bytes(300 * 1024, 2));
    assert_eq!(scanner.scan(&clean).await, Ok(Verdict::Clean));
    assert_eq!(
        scanner.scan(&Bytes::new(Vec::new())).await,
        Ok(Verdict::Clean)
    );

    // A file that ends before its size is not half-scanned and called clean; the error comes
    // at once, not after clamd's wait for the rest.
    let mut short = Bytes::new(mailroom_test_support::random_bytes(CHUNK + 10, 3));
    short.size = 3 * CHUNK as u64;
    let started = Instant::now();
    let err = scanner.scan(&short).await.unwrap_err();
    assert!(err.contains("ended after 65546 of 196608 bytes"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn clamd_over_tcp_finds_eicar_and_a_marker_across_chunks_and_passes_clean_files() {
    let Some(clamd) = Clamd::start().await else {
        return;
    };
    let scanner = clamd_at(&clamd.tcp_url());
    assert_eq!(scanner.to_string(), format!("clamd at {}", clamd.tcp_url()));
    check_clamd_verdicts(&scanner, &clamd).await;
}

#[tokio::test]
async fn clamd_over_its_unix_socket_gives_the_same_verdicts() {
    let Some(clamd) = Clamd::start().await else {
        return;
    };
    let path = clamd.socket_path().display().to_string();
    check_clamd_verdicts(&clamd_at(&path), &clamd).await;
    check_clamd_verdicts(&clamd_at(&format!("unix:{path}")), &clamd).await;
}

#[tokio::test]
async fn a_stopped_clamd_is_an_error_naming_it_and_a_restarted_one_answers_again() {
    let Some(mut clamd) = Clamd::start().await else {
        return;
    };
    let tcp = clamd_at(&clamd.tcp_url());
    let socket = clamd_at(&clamd.socket_path().display().to_string());
    clamd.stop().await;
    let err = tcp.scan(&Bytes::new(EICAR)).await.unwrap_err();
    assert!(
        err.starts_with(&format!("clamd at {}: ", clamd.tcp_url())),
        "{err}"
    );
    assert!(err.to_lowercase().contains("refused"), "{err}");
    let err = socket.scan(&Bytes::new(EICAR)).await.unwrap_err();
    assert!(
        err.starts_with(&format!("clamd at {}: ", clamd.socket_path().display())),
        "{err}"
    );

    clamd.restart().await;
    assert!(found(tcp.scan(&Bytes::new(EICAR)).await).starts_with("Hub-Test-EICAR-"));
    assert_eq!(
        socket
            .scan(&Bytes::new(mailroom_test_support::random_bytes(1000, 4)))
            .await,
        Ok(Verdict::Clean)
    );
}

#[tokio::test]
async fn a_stream_beyond_clamds_limit_is_an_error_that_says_which_setting() {
    let Some(clamd) = Clamd::start().await else {
        return;
    };
    // Four times the limit: clamd answers and closes long before the end, and the rest of
    // the stream meets a closed socket.
    let big = Bytes::new(mailroom_test_support::random_bytes(
        4 * STREAM_MAX_BYTES as usize,
        5,
    ));
    let err = clamd_at(&clamd.tcp_url()).scan(&big).await.unwrap_err();
    assert!(
        err.contains("INSTREAM size limit exceeded (raise StreamMaxLength in clamd.conf)"),
        "{err}"
    );
}

/// A stand-in for clamd on 127.0.0.1 that reads what it is sent and then answers `reply`
/// (after the whole stream, or at once) or never; returns its `tcp://` address.
async fn fake_clamd(reply: Option<Vec<u8>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("tcp://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let reply = reply.clone();
            tokio::spawn(async move {
                if let Some(reply) = reply {
                    let _ = stream.write_all(&reply).await;
                }
                let mut sink = [0u8; 4096];
                while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    address
}

#[tokio::test]
async fn a_silent_endless_or_hostile_answer_is_never_clean() {
    let data = || Bytes::new(mailroom_test_support::random_bytes(100 * 1024, 6));

    let silent = fake_clamd(None).await;
    let config = CheckConfig {
        clamd: Some(silent.clone()),
        timeout_seconds: 1,
        ..CheckConfig::default()
    };
    let started = Instant::now();
    let err = scanner(config, Path::new("/nonexistent"))
        .scan(&data())
        .await
        .unwrap_err();
    assert_eq!(err, format!("clamd at {silent}: no answer within 1 s"));
    assert!(started.elapsed() < Duration::from_secs(10));

    let endless = fake_clamd(Some(vec![b'A'; 10_000])).await;
    let err = clamd_at(&endless).scan(&data()).await.unwrap_err();
    assert!(err.contains("longer than 4096 bytes"), "{err}");

    let hostile = fake_clamd(Some(b"stream: Evil\x1b[2J\rName FOUND\0".to_vec())).await;
    let name = found(clamd_at(&hostile).scan(&data()).await);
    assert_eq!(name, "Evil?[2J?Name");

    let long = format!("stream: {} FOUND\0", "N".repeat(3000));
    let long = fake_clamd(Some(long.into_bytes())).await;
    assert_eq!(found(clamd_at(&long).scan(&data()).await), "N".repeat(200));

    let confused = fake_clamd(Some(b"UNKNOWN COMMAND\0".to_vec())).await;
    let err = clamd_at(&confused).scan(&data()).await.unwrap_err();
    assert!(
        err.contains("unexpected answer \"UNKNOWN COMMAND\""),
        "{err}"
    );
}

/// A bash script in `dir` that first records its pid, its file's path and mode in `dir`, then
/// runs `body` (with the file as `$1`); returns the `command` setting that runs it. The
/// script is run by bash rather than executed, so that no other test's fork can hold it open
/// for writing (ETXTBSY).
fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    let text = format!(
        "set -u\n\
         echo $$ > {dir}/pid\n\
         echo \"$1\" > {dir}/path\n\
         stat -c %a \"$1\" > {dir}/mode\n\
         env > {dir}/env\n\
         {body}\n",
        dir = dir.display()
    );
    std::fs::write(&path, text).unwrap();
    format!("bash {} {{path}}", path.display())
}

/// What a script recorded: its pid, the path it was given and that file's mode.
fn recorded(dir: &Path) -> (u32, PathBuf, String) {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    (
        read("pid").parse().unwrap(),
        PathBuf::from(read("path")),
        read("mode"),
    )
}

fn command_scanner(command: String, timeout_seconds: u64, work_dir: &Path) -> Scanner {
    let config = CheckConfig {
        command: Some(command),
        timeout_seconds,
        ..CheckConfig::default()
    };
    scanner(config, work_dir)
}

#[tokio::test]
async fn a_scanner_command_judges_a_private_copy_by_its_exit_status() {
    if !have("bash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Created by the scanner: it does not exist yet.
    let work = dir.path().join("data/scan");
    let command = script(
        dir.path(),
        "scan.sh",
        "if grep -q EVIL-BYTES \"$1\"; then echo; echo \"$1: Evil FOUND\"; exit 1; fi\n\
         echo \"$1: OK\"",
    );
    let scanner = command_scanner(command, 60, &work);

    let mut data = mailroom_test_support::random_bytes(150 * 1024, 7);
    data[CHUNK - 3..CHUNK + 7].copy_from_slice(b"EVIL-BYTES");
    let evil = Bytes::new(data);
    assert_eq!(
        scanner.scan(&evil).await,
        Ok(Verdict::Found("Evil".to_owned()))
    );
    assert_eq!(evil.largest_read.load(Ordering::SeqCst), CHUNK);
    let (_, copy, mode) = recorded(dir.path());
    assert!(copy.starts_with(&work), "{}", copy.display());
    assert_eq!(mode, "600");
    assert!(!copy.exists(), "the copy is removed after the scan");
    // The scanner sees a search path, not the hub's environment (cargo sets
    // CARGO_MANIFEST_DIR for this test process, and so for the hub's).
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    assert!(!env.contains("CARGO_MANIFEST_DIR"), "{env}");

    assert_eq!(
        scanner
            .scan(&Bytes::new(mailroom_test_support::random_bytes(1000, 8)))
            .await,
        Ok(Verdict::Clean)
    );
    let (_, copy, mode) = recorded(dir.path());
    assert_eq!(mode, "600");
    assert!(!copy.exists());
    assert_eq!(files_under(&work), Vec::<PathBuf>::new());

    // Exit 1 with nothing said still names who found it.
    let quiet = script(dir.path(), "quiet.sh", "exit 1");
    assert_eq!(
        command_scanner(quiet, 60, &work)
            .scan(&Bytes::new(EICAR))
            .await,
        Ok(Verdict::Found("found by bash".to_owned()))
    );
}

#[tokio::test]
async fn a_failing_scanner_command_is_an_error_naming_its_status() {
    if !have("bash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("scan");
    let command = script(
        dir.path(),
        "broken.sh",
        "echo >&2; echo 'LibClamAV Error: no signatures loaded' >&2; exit 2",
    );
    let err = command_scanner(command, 60, &work)
        .scan(&Bytes::new(EICAR))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "scanner command bash failed, exit status: 2: LibClamAV Error: no signatures loaded"
    );
    let (_, copy, _) = recorded(dir.path());
    assert!(!copy.exists());

    let killed = script(dir.path(), "killed.sh", "kill -KILL $$");
    let err = command_scanner(killed, 60, &work)
        .scan(&Bytes::new(EICAR))
        .await
        .unwrap_err();
    assert!(err.contains("signal: 9"), "{err}");

    let missing = "/nonexistent/scanner {path}".to_owned();
    let err = command_scanner(missing, 60, &work)
        .scan(&Bytes::new(EICAR))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("scanner command /nonexistent/scanner: "),
        "{err}"
    );
    assert_eq!(files_under(&work), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_scanner_command_that_hangs_is_killed_at_the_timeout() {
    if !have("bash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("scan");
    let command = script(dir.path(), "hang.sh", "exec sleep 30");
    let started = Instant::now();
    let err = command_scanner(command, 1, &work)
        .scan(&Bytes::new(EICAR))
        .await
        .unwrap_err();
    assert_eq!(err, "scanner command bash timed out after 1 s");
    assert!(started.elapsed() < Duration::from_secs(10));
    let (pid, copy, _) = recorded(dir.path());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the scanner (pid {pid}) is still running"
    );
    assert!(!copy.exists());
}

#[test]
fn a_section_with_both_scanners_or_a_bad_address_is_refused_by_name() {
    let nowhere = Path::new("/nonexistent");
    assert!(
        Scanner::from_config(&CheckConfig::default(), nowhere)
            .unwrap()
            .is_none()
    );
    let both = CheckConfig {
        clamd: Some("tcp://127.0.0.1:3310".to_owned()),
        command: Some("clamscan {path}".to_owned()),
        ..CheckConfig::default()
    };
    let err = Scanner::from_config(&both, nowhere).unwrap_err();
    assert!(err.contains("set either clamd or command"), "{err}");

    for bad in [
        "localhost:3310",
        "clamd.ctl",
        "tcp://127.0.0.1",
        "http://clamd:3310",
    ] {
        let config = CheckConfig {
            clamd: Some(bad.to_owned()),
            ..CheckConfig::default()
        };
        let err = Scanner::from_config(&config, nowhere).unwrap_err();
        assert!(
            err.starts_with("[check] clamd") && err.contains(&format!("{bad:?}")),
            "{err}"
        );
    }

    let no_path = CheckConfig {
        command: Some("clamscan --infected".to_owned()),
        ..CheckConfig::default()
    };
    let err = Scanner::from_config(&no_path, nowhere).unwrap_err();
    assert!(
        err.contains("[check] command") && err.contains("{path}"),
        "{err}"
    );
}
