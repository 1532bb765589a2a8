//! Nodes on the cluster engines, for the binary's cluster tests: a fresh PostgreSQL database
//! and S3 prefix per test ([`Engines`], from what scripts/services starts), a node's data
//! folder and process ([`Node`]), and the clients the tests drive through them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mailroom_test_support::{have, skip, ssh_options, text};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mailroom");

/// Where the shared engines are: a fresh database and a fresh bucket prefix for one test.
pub struct Engines {
    /// The server's URL (a role that may create databases), to drop ours at the end.
    pub admin_url: String,
    /// The test's own database.
    pub database: String,
    /// Its URL: what `[meta] url` gets.
    pub meta_url: String,
    /// The test's own prefix in the test bucket: what `[blob] url` gets.
    pub blob_url: String,
    /// The S3 server.
    pub endpoint: String,
    /// Its access key id.
    pub key: String,
    /// Its secret key.
    pub secret: String,
}

impl Engines {
    /// A new empty database and prefix, or `None` (skipped, or failed under CI) when the
    /// engines are not there.
    pub fn fresh() -> Option<Engines> {
        let vars = [
            "MAILROOM_TEST_PG_URL",
            "MAILROOM_TEST_S3_URL",
            "MAILROOM_TEST_S3_ENDPOINT",
            "MAILROOM_TEST_S3_KEY",
            "MAILROOM_TEST_S3_SECRET",
        ];
        let values: Vec<String> = vars
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .collect();
        if values.len() != vars.len() || !have("psql") || !have("sftp") {
            skip(
                "the cluster engines (scripts/services sets MAILROOM_TEST_PG_URL and MAILROOM_TEST_S3_*), psql or sftp are missing",
            );
            return None;
        }
        let database = format!("mr_cluster_{}", uuid::Uuid::new_v4().simple());
        let created = std::process::Command::new("psql")
            .arg(&values[0])
            .args(["-v", "ON_ERROR_STOP=1", "-qc"])
            .arg(format!("CREATE DATABASE {database}"))
            .output()
            .unwrap();
        assert!(created.status.success(), "{}", text(&created));
        let (base, _) = values[0].rsplit_once('/').unwrap();
        Some(Engines {
            admin_url: values[0].clone(),
            meta_url: format!("{base}/{database}"),
            database,
            blob_url: format!("{}/{}", values[1], uuid::Uuid::new_v4().simple()),
            endpoint: values[2].clone(),
            key: values[3].clone(),
            secret: values[4].clone(),
        })
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .arg(&self.admin_url)
            .arg("-qc")
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .output();
    }
}

/// One node: a data folder of its own on the shared engines.
pub struct Node {
    /// Its data folder.
    pub data: PathBuf,
    /// Whether it runs on the shared engines (else on the embedded ones, with the bucket's
    /// settings at hand for `migrate`).
    pub cluster: bool,
}

impl Node {
    /// `mailroom init` of a node's folder on the shared engines.
    pub async fn init(root: &Path, name: &str, engines: &Engines) -> Node {
        Node::init_as(root, name, engines, true).await
    }

    /// `mailroom init` of an embedded install (SQLite, blobs/), the bucket's endpoint and
    /// credentials configured but not used.
    pub async fn init_embedded(root: &Path, name: &str, engines: &Engines) -> Node {
        Node::init_as(root, name, engines, false).await
    }

    async fn init_as(root: &Path, name: &str, engines: &Engines, cluster: bool) -> Node {
        let node = Node {
            data: root.join(name),
            cluster,
        };
        std::fs::create_dir_all(&node.data).unwrap();
        std::fs::write(node.data.join("s3-secret"), &engines.secret).unwrap();
        node.run(&["init"], engines).await;
        node
    }

    /// `mailroom ARGS` on this node's folder with the engines in its environment (the
    /// bucket's settings always, the engines' URLs on a cluster node).
    pub fn command(&self, args: &[&str], engines: &Engines) -> Command {
        let mut command = Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("MAILROOM_") {
                command.env_remove(name);
            }
        }
        if self.cluster {
            command
                .env("MAILROOM_META_URL", &engines.meta_url)
                .env("MAILROOM_BLOB_URL", &engines.blob_url);
        }
        command
            .args(args)
            .env("MAILROOM_DATA", &self.data)
            .env("MAILROOM_BLOB_ENDPOINT", &engines.endpoint)
            .env("MAILROOM_BLOB_REGION", "us-east-1")
            .env("MAILROOM_BLOB_ACCESS_KEY_ID", &engines.key)
            .env("MAILROOM_BLOB_SECRET_ACCESS_KEY_FILE", "s3-secret")
            .env("MAILROOM_BLOB_ALLOW_HTTP", "true")
            .env("MAILROOM_SFTP_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_HTTPS_LISTEN", "127.0.0.1:0")
            .env("MAILROOM_OPS_LISTEN", "127.0.0.1:0")
            .env("USER", "tester")
            .stdin(Stdio::null());
        command
    }

    /// Runs an admin command to its end; panics with its output if it fails.
    pub async fn run(&self, args: &[&str], engines: &Engines) -> String {
        let out = self.command(args, engines).output().await.unwrap();
        assert!(out.status.success(), "mailroom {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `mailroom serve`; returns the child and the address of each listener.
    pub async fn serve(&self, engines: &Engines) -> (Child, HashMap<String, String>) {
        self.serve_with(engines, &[]).await
    }

    /// [`Node::serve`] with more settings in the environment (`MAILROOM_…` overrides).
    pub async fn serve_with(
        &self,
        engines: &Engines,
        settings: &[(&str, &str)],
    ) -> (Child, HashMap<String, String>) {
        let log = self.data.with_extension("log");
        let mut command = self.command(&["serve"], engines);
        command.envs(settings.iter().copied());
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut listening = HashMap::new();
        tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("mailroom: ")
                    && let Some((protocol, address)) = rest.split_once(" listening on ")
                {
                    listening.insert(protocol.to_owned(), address.to_owned());
                    if protocol == "https" {
                        return;
                    }
                }
            }
            panic!(
                "the node exited before listening: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        })
        .await
        .expect("the node did not start listening");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, listening)
    }
}

/// Makes a client account with an ed25519 key through `node`; returns the private key.
pub async fn client(node: &Node, engines: &Engines, root: &Path, name: &str) -> PathBuf {
    let key = root.join(format!("{name}_key"));
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = key.with_extension("pub");
    node.run(
        &[
            "account",
            "add",
            name,
            "--authorized-key",
            public.to_str().unwrap(),
        ],
        engines,
    )
    .await;
    key
}

/// OpenSSH sftp in batch mode as `user` against `address`.
pub async fn sftp(root: &Path, address: &str, user: &str, key: &Path, commands: &str) -> String {
    let batch = root.join(format!("batch-{user}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&batch, commands).unwrap();
    let (host, port) = address.rsplit_once(':').unwrap();
    let out = Command::new("sftp")
        .args(ssh_options())
        .arg("-i")
        .arg(key)
        .arg("-P")
        .arg(port)
        .arg("-b")
        .arg(&batch)
        .arg(format!("{user}@{host}"))
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "sftp {commands}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts OpenSSH sftp putting `local` to `remote` as `user` at most `kbit` kbit/s (`-l`), so
/// that the upload is under way for as long as the test needs; killed on drop.
pub fn slow_put(
    root: &Path,
    address: &str,
    user: &str,
    key: &Path,
    (local, remote): (&Path, &str),
    kbit: u32,
) -> Child {
    let batch = root.join(format!("slow-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&batch, format!("put {} {remote}\n", local.display())).unwrap();
    let (host, port) = address.rsplit_once(':').unwrap();
    Command::new("sftp")
        .args(ssh_options())
        .args(["-l", &kbit.to_string(), "-i"])
        .arg(key)
        .args(["-P", port, "-b"])
        .arg(&batch)
        .arg(format!("{user}@{host}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A GET on the operations listener: status code and body.
pub async fn probe(address: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{address}{path}"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Adds a client account through `node` that logs in with `password`.
pub async fn with_password(node: &Node, engines: &Engines, name: &str, password: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = node
        .command(&["account", "add", name, "--password-stdin"], engines)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "account add {name}: {}", text(&out));
}

/// SIGTERM to a node, which must exit 0 within a minute.
pub async fn stop(child: &mut Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "a node did not stop cleanly: {exit:?}");
}

/// `psql -tAc SQL` on the test's database: the answer, trimmed.
pub fn psql(engines: &Engines, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .arg(&engines.meta_url)
        .args(["-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql {sql}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
