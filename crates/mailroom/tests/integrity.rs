//! Install integrity with the real binary: `verify-install` against the manifest the release
//! build writes (a copy with one byte flipped is caught), and `serve`'s refusal of a data
//! folder, configuration or key file that group or others may write, each refusal naming the
//! file and its fix and changing nothing; a folder `init` made under a loose umask passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};

mod common;

/// The manifest's name for this version, as `scripts/release` writes it.
fn manifest_name() -> String {
    format!("mailroom-{}.sha256", env!("CARGO_PKG_VERSION"))
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A copy of the binary under test in `dir`, named `mailroom`, executable.
fn copy_binary(dir: &Path) -> PathBuf {
    let copy = dir.join("mailroom");
    std::fs::copy(common::BIN, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// Runs `binary ARGS…`. A copy just written may be briefly busy for exec (another test's fork
/// inherited its descriptor until its own exec): that one error is tried again, nothing else.
fn run_binary(binary: &Path, args: &[&str]) -> Output {
    for _ in 0..100 {
        match Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Err(err) if err.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::yield_now();
            }
            result => return result.unwrap(),
        }
    }
    panic!("{} stayed busy", binary.display());
}

#[test]
fn verify_install_passes_on_the_built_binary_and_fails_on_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::create_dir(&good).unwrap();
    std::fs::create_dir(&bad).unwrap();

    // The manifest as the release step writes it, and sha256sum itself agrees with it.
    let binary = copy_binary(&good);
    let hash = sha256_hex(&binary);
    let manifest = good.join(manifest_name());
    std::fs::write(&manifest, format!("{hash}  mailroom\n")).unwrap();
    let checked = Command::new("sha256sum")
        .args(["--check", "--strict", &manifest_name()])
        .current_dir(&good)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", common::text(&checked));

    // The manifest beside the binary is found and matches.
    let out = run_binary(&binary, &["verify-install"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with(&format!("{hash}  ")), "{stdout}");
    assert!(stdout.contains("matches"), "{stdout}");
    let out = run_binary(&binary, &["--json", "verify-install"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["sha256"], hash.as_str(), "{json}");

    // The binary the build left in its own folder, told where the manifest is.
    let out = run_binary(
        Path::new(common::BIN),
        &["verify-install", "--manifest", manifest.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));

    // One byte flipped (the last: the section headers, which running never reads), with the
    // good manifest beside it: refused, naming both hashes.
    let flipped = copy_binary(&bad);
    let mut bytes = std::fs::read(&flipped).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&flipped, &bytes).unwrap();
    std::fs::copy(&manifest, bad.join(manifest_name())).unwrap();
    let flipped_hash = sha256_hex(&flipped);
    assert_ne!(flipped_hash, hash);
    let out = run_binary(&flipped, &["verify-install"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not match its manifest"), "{err}");
    assert!(err.contains(&flipped_hash), "{err}");
    assert!(err.contains(&hash), "{err}");
    assert!(out.stdout.is_empty());

    // No manifest: refused, with the binary's hash to compare by hand.
    std::fs::remove_file(bad.join(manifest_name())).unwrap();
    let out = run_binary(&flipped, &["verify-install"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no manifest at"), "{err}");
    assert!(err.contains(&manifest_name()), "{err}");
    assert!(err.contains(&flipped_hash), "{err}");

    // A manifest without a line for mailroom.
    let other = dir.path().join("other.sha256");
    std::fs::write(&other, format!("{hash}  mailroom-agent\n")).unwrap();
    let out = run_binary(
        &binary,
        &["verify-install", "--manifest", other.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no line for mailroom"),
        "{}",
        common::text(&out)
    );
}

/// Every path under `dir` (the folder too) with its mode, size and modification time, and
/// each file's content hash: what a refused start must leave exactly as it was.
fn folder_state(dir: &Path) -> Vec<(PathBuf, u32, u64, std::time::SystemTime, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() {
            sha256_hex(&path)
        } else {
            String::new()
        };
        out.push((
            path.clone(),
            meta.permissions().mode(),
            meta.len(),
            meta.modified().unwrap(),
            content,
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// Paths under `dir` that group or others may write.
fn loose_paths(dir: &Path) -> Vec<(PathBuf, u32)> {
    folder_state(dir)
        .into_iter()
        .filter(|(path, mode, ..)| {
            mode & 0o022 != 0 && !std::fs::symlink_metadata(path).unwrap().is_symlink()
        })
        .map(|(path, mode, ..)| (path, mode & 0o7777))
        .collect()
}

/// `mailroom serve` on `data`, every listener on a free port.
fn serve_command(data: &Path) -> Command {
    let mut command = common::mailroom(data, &["serve"]);
    command
        .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
        .env("MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS", "5");
    command
}

#[test]
fn serve_refuses_loose_modes_by_name_and_changes_nothing() {
    let site = tempfile::tempdir().unwrap();
    let data = site.path().join("data");
    // init under a umask that would leave group-writable files behind.
    let out = Command::new("sh")
        .args(["-c", "umask 002 && exec \"$0\" \"$@\""])
        .arg(common::BIN)
        .arg("--data")
        .arg(&data)
        .arg("init")
        .env("USER", "tester")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(loose_paths(&data), Vec::new(), "init left loose modes");

    let tls_key = data.join("tls/server.key");
    for (path, mode, what) in [
        (data.clone(), 0o770, "the data folder"),
        (data.join("mailroom.toml"), 0o664, "the configuration"),
        (data.join("ssh_host_ed25519_key"), 0o620, "the SSH host key"),
        (tls_key.clone(), 0o602, "a TLS file"),
        (data.join("meta.db"), 0o660, "a file of the data folder"),
    ] {
        let before_mode = std::fs::metadata(&path).unwrap().permissions().mode();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let before = folder_state(&data);
        let out = serve_command(&data).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
        let err = String::from_utf8(out.stderr.clone()).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        let shown = path.display();
        assert!(
            err.starts_with(&format!("mailroom: error: {shown} ({what}) is writable by")),
            "{err}"
        );
        assert!(err.contains(&format!("(mode 0{mode:o})")), "{err}");
        assert!(err.contains(&format!("chmod go-w {shown}")), "{err}");
        assert!(out.stdout.is_empty(), "{}", common::text(&out));
        // Nothing changed: no lock taken, no file created, written or re-moded.
        assert_eq!(folder_state(&data), before, "{shown}");
        assert!(!data.join("serve.lock").exists());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(before_mode)).unwrap();
    }

    // Fixed, the folder serves.
    let mut command = serve_command(&data);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let listening = lines_rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("no listening line: {:?}", child.try_wait()));
    assert!(listening.contains("listening on"), "{listening}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "{}", log.join().unwrap());
    assert_eq!(loose_paths(&data), Vec::new(), "serve left loose modes");
}
