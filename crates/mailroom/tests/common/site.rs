//! A data folder and its client files, for the tests that drive the real binary from start
//! to finish (`serve`, admin commands, OpenSSH's sftp): crash, backup and fsck tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mailroom_test_support::{ssh_options, text};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::BIN;

/// A data folder and the local files of one test.
pub struct Site {
    /// The test's own folder: the data folder and the client files live in it.
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        Site {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs an admin command; panics with its output if it fails.
    pub async fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .env("MAILROOM_DATA", self.data())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "mailroom {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Makes a client account with an ed25519 key; returns the private key path.
    pub async fn client(&self, name: &str) -> PathBuf {
        let key = self.path(&format!("{name}_key"));
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(status.success());
        let public = key.with_extension("pub");
        self.admin(&[
            "account",
            "add",
            name,
            "--authorized-key",
            public.to_str().unwrap(),
        ])
        .await;
        key
    }

    /// Starts `mailroom serve` on a free port; returns the child, its port and its stderr log.
    pub async fn serve(&self, log: &Path) -> (Child, u16) {
        self.serve_https_on(log, "127.0.0.1:0").await
    }

    /// [`Site::serve`] with the HTTPS API on `https` (kept across a restart).
    pub async fn serve_https_on(&self, log: &Path, https: &str) -> (Child, u16) {
        let mut child = Command::new(BIN)
            .arg("serve")
            .env("MAILROOM_DATA", self.data())
            .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_HTTPS_LISTEN", https)
            .env("MAILROOM_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(address) = line.strip_prefix("mailroom: sftp listening on ") {
                    return address.rsplit(':').next().unwrap().parse::<u16>().unwrap();
                }
            }
            panic!(
                "server exited before listening: {}",
                std::fs::read_to_string(log).unwrap()
            );
        })
        .await
        .expect("server did not start listening");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, port)
    }

    /// Runs OpenSSH sftp in batch mode as `user`.
    pub async fn sftp(
        &self,
        port: u16,
        user: &str,
        key: &Path,
        commands: &str,
    ) -> std::process::Output {
        let batch = self.path(&format!("batch-{user}-{}", commands.len()));
        std::fs::write(&batch, commands).unwrap();
        let out = Command::new("sftp")
            .args(ssh_options())
            .arg("-i")
            .arg(key)
            .arg("-P")
            .arg(port.to_string())
            .arg("-b")
            .arg(&batch)
            .arg(format!("{user}@127.0.0.1"))
            .stdin(Stdio::null())
            .output();
        tokio::time::timeout(Duration::from_secs(300), out)
            .await
            .unwrap()
            .unwrap()
    }

    pub fn files_under(&self, sub: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.data().join(sub)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    stack.push(entry.path());
                } else {
                    out.push(entry.path());
                }
            }
        }
        out
    }
}
