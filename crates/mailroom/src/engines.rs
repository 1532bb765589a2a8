//! The storage engines: `[meta]` and `[blob]` say where the metadata and the content live, and
//! [`open`] opens them.
//!
//! Left empty (the default), both are embedded in the data folder: SQLite in `meta.db` and
//! blobs in `blobs/`; one `mailroom serve` runs on the folder (`serve.lock`). Set, they are
//! the cluster engines that several nodes share: PostgreSQL (`[meta] url = "postgres://…"`)
//! and an S3-compatible bucket (`[blob] url = "s3://bucket/prefix"`). A node on both shares
//! nothing on its own disk but its configuration and keys, so no lock is taken; with either
//! engine still embedded the folder's lock stays, since that engine is this folder's alone.
//!
//! Secrets stay out of `mailroom.toml` where they can: the database password belongs in
//! `MAILROOM_META_URL` (or a `.pgpass`-style URL without one, with trust or certificates), and
//! the bucket's secret key in a file (`secret_access_key_file`) or the standard `AWS_*`
//! environment variables.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mailroom_blob::at_rest::Keyring;
use mailroom_blob::{LocalBlobStore, S3BlobStore, S3Options};
use mailroom_core::{AuditRecord, BlobStore, MetaStore};
use mailroom_meta::{PgOptions, PgStore, SqliteStore};
use serde::{Deserialize, Serialize};

mailroom_net::config_section! {
    [meta]
    /// Where the metadata lives (accounts, deliveries, the audit trail, the job queue). Empty
    /// `url`: the embedded SQLite database `meta.db` in the data folder. A `postgres://` URL:
    /// a PostgreSQL server (version 13 or later) that every node of a cluster shares, e.g.
    /// "postgres://mailroom@db.internal:5432/mailroom?sslmode=verify-full". Put a password in
    /// the environment (MAILROOM_META_URL), not in this file.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct MetaConfig {
        /// Empty for SQLite in the data folder, or a postgres:// URL.
        pub url: String,
        /// PEM file of the CAs that sign the PostgreSQL server's certificate (relative to the
        /// data folder); empty for Mozilla's roots. Used when the URL asks for TLS.
        pub ca_file: PathBuf,
        /// Connections this node keeps to PostgreSQL, each run by a store thread of its own.
        pub connections: NonZeroUsize,
    }
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            url: String::new(),
            ca_file: PathBuf::new(),
            connections: NonZeroUsize::MIN.saturating_add(7),
        }
    }
}

mailroom_net::config_section! {
    [blob]
    /// Where file content lives. Empty `url`: the folder `blobs/` in the data folder. An
    /// `s3://bucket/prefix` URL: an S3-compatible bucket that every node of a cluster shares
    /// (multipart uploads, SHA-256 while streaming, range reads). Credentials and region not
    /// set here come from the standard AWS_* environment variables.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct BlobConfig {
        /// Empty for the data folder's blobs/, or s3://bucket/prefix.
        pub url: String,
        /// The S3 endpoint for a server other than AWS, e.g. "https://s3.internal:9000"
        /// (path-style requests); empty for AWS.
        pub endpoint: String,
        /// The bucket's region; empty for AWS_REGION or us-east-1.
        pub region: String,
        /// The access key id; empty for AWS_ACCESS_KEY_ID.
        pub access_key_id: String,
        /// A file holding the secret access key (relative to the data folder); empty for
        /// AWS_SECRET_ACCESS_KEY.
        pub secret_access_key_file: PathBuf,
        /// Allow an http:// endpoint (plain text). Only for a server on loopback or a test.
        pub allow_http: bool,
    }
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            url: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key_file: PathBuf::new(),
            allow_http: false,
        }
    }
}

/// The metadata store a node runs on.
#[derive(Clone)]
pub enum Meta {
    /// SQLite in the data folder.
    Sqlite(SqliteStore),
    /// A PostgreSQL server shared by the nodes.
    Postgres(PgStore),
}

impl Meta {
    /// The store as the Hub takes it.
    pub fn port(&self) -> Arc<dyn MetaStore> {
        match self {
            Meta::Sqlite(store) => Arc::new(store.clone()),
            Meta::Postgres(store) => Arc::new(store.clone()),
        }
    }

    /// Hands committed audit records to `sender` (the syslog sink); false if a tap is set.
    pub fn set_event_tap(&self, sender: tokio::sync::mpsc::Sender<AuditRecord>) -> bool {
        match self {
            Meta::Sqlite(store) => store.set_event_tap(sender),
            Meta::Postgres(store) => store.set_event_tap(sender),
        }
    }

    /// Records the tap dropped because its channel was full.
    pub fn dropped_events(&self) -> u64 {
        match self {
            Meta::Sqlite(store) => store.dropped_events(),
            Meta::Postgres(store) => store.dropped_events(),
        }
    }

    /// Requests sent to PostgreSQL so far (0 on SQLite, which has no server to ask): what
    /// the bench divides by file operations.
    pub fn round_trips(&self) -> u64 {
        match self {
            Meta::Sqlite(_) => 0,
            Meta::Postgres(store) => store.round_trips(),
        }
    }

    /// Finishes what is queued and closes the store.
    pub async fn close(&self) {
        match self {
            Meta::Sqlite(store) => store.close().await,
            Meta::Postgres(store) => store.close().await,
        }
    }
}

/// The opened engines.
pub struct Engines {
    /// The metadata store.
    pub meta: Meta,
    /// The blob store: sealed when the hub encrypts at rest.
    pub blobs: Arc<dyn BlobStore>,
    /// The keyring of encryption at rest, when the hub encrypts.
    pub keyring: Option<Arc<Keyring>>,
}

/// What [`open`] created, for `init`'s report.
#[derive(Debug, Default)]
pub struct Created {
    /// `meta.db` was created.
    pub meta_db: bool,
    /// `blobs/` was created.
    pub blobs: bool,
    /// The master key file written for a new folder.
    pub master_key: Option<PathBuf>,
}

/// The blob store `blob` names, not yet opened as a whole.
enum BlobEngine {
    Local(LocalBlobStore),
    S3(S3BlobStore),
}

/// Opens the engines `config` names, then settles encryption at rest ([`crate::at_rest`]):
/// a wrong or missing master key is refused here, before anything else runs. The embedded
/// engines are created in `data` when missing if `create` is set (init, serve) and refused
/// otherwise (admin commands never create a store).
pub async fn open(
    data: &crate::data::DataDir,
    config: &crate::config::Config,
    create: bool,
) -> Result<(Engines, Created)> {
    let (meta, blob) = (&config.meta, &config.blob);
    let mut created = Created::default();
    let engine = if blob.url.is_empty() {
        let path = data.blobs();
        created.blobs = !path.exists();
        BlobEngine::Local(
            LocalBlobStore::open(&path)
                .await
                .with_context(|| format!("cannot open the blob store {}", path.display()))?,
        )
    } else {
        BlobEngine::S3(
            S3BlobStore::open(s3_options(data.root(), blob)?)
                .await
                .context("cannot open the blob store of [blob] url")?,
        )
    };
    let (meta, meta_created) = open_meta(data, meta, create).await?;
    created.meta_db = meta_created;
    let settled = crate::at_rest::settle(
        data,
        &config.at_rest,
        meta.port(),
        |sealed| match engine {
            // Sealed: the sealing layer hashes the plaintext; a hash of the ciphertext would
            // be work thrown away.
            BlobEngine::Local(store) if sealed => Arc::new(store.without_content_hash()),
            BlobEngine::Local(store) => Arc::new(store),
            BlobEngine::S3(store) => Arc::new(store),
        },
        created.meta_db,
    )
    .await;
    let settled = match settled {
        Ok(settled) => settled,
        Err(err) => {
            meta.close().await;
            return Err(err);
        }
    };
    created.master_key = settled.created_key;
    Ok((
        Engines {
            meta,
            blobs: settled.blobs,
            keyring: settled.keyring,
        },
        created,
    ))
}

/// Opens the metadata store `meta` names (created in `data` when missing if `create` is set),
/// and says whether it was created now.
pub async fn open_meta(
    data: &crate::data::DataDir,
    meta: &MetaConfig,
    create: bool,
) -> Result<(Meta, bool)> {
    if meta.url.is_empty() {
        let path = data.meta_db();
        if !path.exists() && !create {
            bail!(
                "{} is not an initialised mailroom data folder (no meta.db); run `mailroom init` first or pass --data",
                data.root().display()
            );
        }
        let created = !path.exists();
        Ok((Meta::Sqlite(SqliteStore::open(&path).await?), created))
    } else {
        Ok((
            Meta::Postgres(
                PgStore::connect(pg_options(data.root(), meta)?)
                    .await
                    .context("cannot open the metadata store of [meta] url")?,
            ),
            false,
        ))
    }
}

/// The options of both cluster engines as `meta` and `blob` name them (both must be set).
pub fn cluster_options(
    data: &crate::data::DataDir,
    meta: &MetaConfig,
    blob: &BlobConfig,
) -> Result<(PgOptions, S3Options)> {
    if !blob.url.starts_with("s3://") {
        bail!("the blob store must be an s3://bucket/prefix URL");
    }
    Ok((
        pg_options(data.root(), meta)?,
        s3_options(data.root(), blob)?,
    ))
}

/// `[meta]` as the PostgreSQL store takes it.
fn pg_options(data: &Path, meta: &MetaConfig) -> Result<PgOptions> {
    if !meta.url.starts_with("postgres://") && !meta.url.starts_with("postgresql://") {
        bail!("[meta] url must be empty (SQLite in the data folder) or a postgres:// URL");
    }
    Ok(PgOptions {
        url: meta.url.clone(),
        ca_file: (!meta.ca_file.as_os_str().is_empty()).then(|| data.join(&meta.ca_file)),
        connections: meta.connections.get(),
    })
}

/// `[blob]` as the S3 store takes it; the secret is read from its file here.
fn s3_options(data: &Path, blob: &BlobConfig) -> Result<S3Options> {
    let secret_access_key = if blob.secret_access_key_file.as_os_str().is_empty() {
        None
    } else {
        let path = data.join(&blob.secret_access_key_file);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read [blob] secret_access_key_file {}",
                path.display()
            )
        })?;
        Some(text.trim().to_owned())
    };
    let set = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    Ok(S3Options {
        url: blob.url.clone(),
        endpoint: set(&blob.endpoint),
        region: set(&blob.region),
        access_key_id: set(&blob.access_key_id),
        secret_access_key,
        allow_http: blob.allow_http,
    })
}
