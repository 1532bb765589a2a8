//! What the agent's test files share: an agent with a config folder of its own, run as a real
//! process, and its output.

// Each test file uses its own part of this.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Stdio;

use mailroom_test_support::{TestClient, TestHub};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

/// One agent: its own config folder.
pub struct Agent {
    pub config: tempfile::TempDir,
}

/// What one run of the agent did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Agent {
    pub fn new() -> Agent {
        Agent {
            config: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs the agent with `args`, `stdin` on its standard input and `env` set.
    pub async fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailroom-agent"));
        command
            .args(args)
            .env("MAILROOM_AGENT_CONFIG", self.config.path())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        let output = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            child.wait_with_output(),
        )
        .await
        .expect("the agent hung")
        .unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        self.run_with(args, stdin, &[]).await
    }

    /// Logs `who` in with its password, trusting the hub's CA file.
    pub async fn login_ca(&self, hub: &TestHub, who: &TestClient) {
        let ca = hub.https().ca.display().to_string();
        let run = self
            .run(
                &[
                    "login",
                    &hub.https().base,
                    "--user",
                    &who.name,
                    "--password-stdin",
                    "--ca",
                    &ca,
                ],
                Some(&format!("{}\n", who.password)),
            )
            .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout.contains("compression=zstd"),
            "the agent asks for zstd first: {}",
            run.stdout
        );
    }

    pub fn session(&self) -> PathBuf {
        self.config.path().join("session.json")
    }

    /// The saved session, checked to be the user's alone.
    pub fn saved(&self) -> Value {
        let mode = std::fs::metadata(self.session())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        serde_json::from_str(&std::fs::read_to_string(self.session()).unwrap()).unwrap()
    }
}

/// The lines of `--json` output.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}
