//! End to end on the real binary, on the cluster engines: two `mailroom serve` nodes, each
//! with a data folder of its own, share one PostgreSQL database (`[meta] url`) and one S3
//! bucket prefix (`[blob] url`), as scripts/services starts them (PostgreSQL from Debian,
//! s3s-fs from crates.io). A file uploaded with OpenSSH sftp through node A is listed and
//! downloaded intact through node B at once; both nodes' events form one chain; neither node
//! takes the data folder's serve lock; and the operations listener answers the probes and
//! the metrics scrape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mailroom_test_support::{have, sha256_file, skip, ssh_options, text, write_random};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mailroom");

/// Where the shared engines are: a fresh database and a fresh bucket prefix for one test.
struct Engines {
    /// The server's URL (a role that may create databases), to drop ours at the end.
    admin_url: String,
    database: String,
    meta_url: String,
    blob_url: String,
    endpoint: String,
    key: String,
    secret: String,
}

impl Engines {
    /// A new empty database and prefix, or `None` (skipped, or failed under CI) when the
    /// engines are not there.
    fn fresh() -> Option<Engines> {
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
struct Node {
    data: PathBuf,
}

impl Node {
    /// `mailroom init` of a node's folder on the shared engines.
    async fn init(root: &Path, name: &str, engines: &Engines) -> Node {
        let node = Node {
            data: root.join(name),
        };
        std::fs::create_dir_all(&node.data).unwrap();
        std::fs::write(node.data.join("s3-secret"), &engines.secret).unwrap();
        node.run(&["init"], engines).await;
        node
    }

    /// `mailroom ARGS` on this node's folder with the engines in its environment.
    fn command(&self, args: &[&str], engines: &Engines) -> Command {
        let mut command = Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("MAILROOM_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .env("MAILROOM_DATA", &self.data)
            .env("MAILROOM_META_URL", &engines.meta_url)
            .env("MAILROOM_BLOB_URL", &engines.blob_url)
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
    async fn run(&self, args: &[&str], engines: &Engines) -> String {
        let out = self.command(args, engines).output().await.unwrap();
        assert!(out.status.success(), "mailroom {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `mailroom serve`; returns the child and the address of each listener.
    async fn serve(&self, engines: &Engines) -> (Child, HashMap<String, String>) {
        let log = self.data.with_extension("log");
        let mut child = self
            .command(&["serve"], engines)
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
async fn client(node: &Node, engines: &Engines, root: &Path, name: &str) -> PathBuf {
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
async fn sftp(root: &Path, address: &str, user: &str, key: &Path, commands: &str) -> String {
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

/// A GET on the operations listener: status code and body.
async fn probe(address: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{address}{path}"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_file_sent_through_one_node_is_fetched_through_the_other() {
    let Some(engines) = Engines::fresh() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let a = Node::init(root.path(), "node-a", &engines).await;
    let b = Node::init(root.path(), "node-b", &engines).await;
    // Neither folder holds an engine: no meta.db, no blobs/.
    for node in [&a, &b] {
        assert!(!node.data.join("meta.db").exists());
        assert!(!node.data.join("blobs").exists());
    }
    let alice = client(&a, &engines, root.path(), "alice").await;
    let bob = client(&b, &engines, root.path(), "bob").await;
    a.run(&["route", "allow", "alice", "bob"], &engines).await;

    let (mut node_a, a_at) = a.serve(&engines).await;
    let (mut node_b, b_at) = b.serve(&engines).await;
    // A second node on A's own folder starts too: the cluster engines take no lock.
    let (mut node_a2, _) = a.serve(&engines).await;

    // Large enough for several multipart parts, and a small one kept inline in PostgreSQL.
    let big = root.path().join("big.bin");
    let big_sha = write_random(&big, 20 * 1024 * 1024 + 123, 7);
    let small = root.path().join("small.txt");
    let small_sha = write_random(&small, 4096, 8);
    sftp(
        root.path(),
        &a_at["sftp"],
        "alice",
        &alice,
        &format!(
            "put {} /outbox/bob/big.bin\nput {} /outbox/bob/small.txt\n",
            big.display(),
            small.display()
        ),
    )
    .await;

    // Listed and fetched through node B at once: no cache, no replication delay.
    let listing = sftp(
        root.path(),
        &b_at["sftp"],
        "bob",
        &bob,
        "ls -l /inbox/alice\n",
    )
    .await;
    assert!(listing.contains("big.bin"), "{listing}");
    assert!(listing.contains("small.txt"), "{listing}");
    let fetched = root.path().join("fetched");
    std::fs::create_dir(&fetched).unwrap();
    sftp(
        root.path(),
        &b_at["sftp"],
        "bob",
        &bob,
        &format!(
            "get /inbox/alice/big.bin {}\nget /inbox/alice/small.txt {}\n",
            fetched.join("big.bin").display(),
            fetched.join("small.txt").display()
        ),
    )
    .await;
    assert_eq!(sha256_file(&fetched.join("big.bin")), big_sha);
    assert_eq!(sha256_file(&fetched.join("small.txt")), small_sha);

    // The probes: alive and ready on both nodes, and metrics that counted the transfers.
    for at in [&a_at, &b_at] {
        assert_eq!(
            probe(&at["ops"], "/healthz").await,
            (200, "ok\n".to_owned())
        );
        assert_eq!(
            probe(&at["ops"], "/readyz").await,
            (200, "ready\n".to_owned())
        );
    }
    let (status, metrics) = probe(&a_at["ops"], "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("mailroom_transfer_bytes_total{direction=\"upload\",protocol=\"sftp\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mailroom_store_seconds_bucket"),
        "{metrics}"
    );
    let (_, metrics_b) = probe(&b_at["ops"], "/metrics").await;
    assert!(
        metrics_b
            .contains("mailroom_transfer_bytes_total{direction=\"download\",protocol=\"sftp\"}"),
        "{metrics_b}"
    );

    for child in [&mut node_a, &mut node_b, &mut node_a2] {
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
    // Three processes wrote events; the trail is one chain.
    let verdict = b.run(&["audit", "verify"], &engines).await;
    assert!(verdict.starts_with("audit trail intact: "), "{verdict}");
}
