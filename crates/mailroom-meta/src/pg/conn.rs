//! One connection to PostgreSQL as a store thread holds it: the client, its prepared
//! statements, and the count of round trips; and the [`Connector`] that opens such
//! connections (parsed URL, TLS or not), again after one is lost.
//!
//! Every request to the server goes through [`Conn`], which counts it, and every statement is
//! prepared once per connection and then only bound and run: one round trip each. Nothing
//! here builds SQL from values, and nothing here logs the URL (it may carry a password): the
//! store shows [`Connector::location`], host, port and database only.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::MetaError;

/// How long opening a connection may take when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `sslmode` values libpq knows that the driver's parser does not: both verify the server's
/// certificate and name, which is what this store does whenever TLS is on.
const VERIFYING_MODES: [&str; 2] = ["sslmode=verify-full", "sslmode=verify-ca"];

/// How connections are made: TLS (rustls on aws-lc-rs) or none.
#[derive(Clone)]
enum Tls {
    /// Plain TCP or a Unix socket: the URL asked for no TLS.
    None,
    /// TLS, with the server's certificate verified against the CA file or the web PKI roots.
    Rustls(MakeRustlsConnect),
}

/// Opens connections to one database.
#[derive(Clone)]
pub(crate) struct Connector {
    config: postgres::Config,
    tls: Tls,
    location: String,
}

impl Connector {
    /// A connector for `url`, with TLS when the URL asks for it (`sslmode=require`,
    /// `verify-ca` or `verify-full`), trusting the certificates of `ca_file` (PEM) or else the
    /// web PKI roots. Without TLS (`disable`, or `prefer`, the default) the connection is
    /// plain.
    pub(crate) fn new(url: &str, ca_file: Option<&Path>) -> Result<Connector, MetaError> {
        let mut config = parse(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("mailroom");
        }
        config.notice_callback(|notice| {
            tracing::debug!(
                severity = notice.severity(),
                message = notice.message(),
                "postgres notice"
            );
        });
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Tls::Rustls(MakeRustlsConnect::new(client_config(ca_file)?)),
            _ => Tls::None,
        };
        let location = location(&config);
        Ok(Connector {
            config,
            tls,
            location,
        })
    }

    /// Host, port and database: what the store may show of the URL.
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// Opens one connection, counting its round trips in `round_trips`. Must run outside an
    /// async context (the driver blocks on a runtime of its own).
    pub(crate) fn connect(&self, round_trips: Arc<AtomicU64>) -> Result<Conn, postgres::Error> {
        let client = match &self.tls {
            Tls::None => self.config.connect(NoTls)?,
            Tls::Rustls(tls) => self.config.connect(tls.clone())?,
        };
        // The startup exchange.
        round_trips.fetch_add(1, Ordering::Relaxed);
        let mut conn = Conn {
            client,
            statements: HashMap::new(),
            round_trips,
            discarded: false,
        };
        conn.require_durable_commits()?;
        Ok(conn)
    }
}

/// Parses the URL (or key=value string). The parser's message names the option at fault, never
/// a value, so it carries no password.
fn parse(url: &str) -> Result<postgres::Config, MetaError> {
    let mut url = Cow::Borrowed(url);
    for mode in VERIFYING_MODES {
        if url.contains(mode) {
            url = Cow::Owned(url.replace(mode, "sslmode=require"));
        }
    }
    url.parse::<postgres::Config>()
        .map_err(|error| MetaError::Settings {
            reason: format!("the PostgreSQL URL does not parse ({error})"),
        })
}

/// The TLS client settings: aws-lc-rs (never ring), the safe protocol versions, and the roots
/// of `ca_file` or the web PKI.
fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, MetaError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let unreadable = |error: &dyn std::fmt::Display| MetaError::Settings {
                reason: format!("cannot read the CA file {}: {error}", path.display()),
            };
            for certificate in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                roots
                    .add(certificate.map_err(|e| unreadable(&e))?)
                    .map_err(|e| unreadable(&e))?;
            }
            if roots.is_empty() {
                return Err(unreadable(&"it holds no certificate"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| MetaError::Settings {
            reason: format!("TLS cannot be set up: {error}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// `host:port/database` (hosts joined by commas), for messages and `Debug`.
fn location(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default();
    format!("postgres://{}/{database}", hosts.join(","))
}

/// What a URL shows once its user and password are left out, for `Debug` of the options.
pub(crate) fn describe(url: &str) -> String {
    parse(url).map_or_else(
        |_| "<unparsable URL>".to_owned(),
        |config| location(&config),
    )
}

/// One open connection: the client, its prepared statements, and the store's round-trip count.
pub(crate) struct Conn {
    client: Client,
    /// Statements prepared on this connection, by their SQL. Static SQL is kept without a copy;
    /// the few shapes of the dynamic queries (delivery and event filters) are bounded in number.
    statements: HashMap<Cow<'static, str>, Statement>,
    round_trips: Arc<AtomicU64>,
    /// Set when the connection's state is unknown (a rollback failed): it is replaced.
    discarded: bool,
}

impl Conn {
    /// Whether the connection is gone, or must not be used again.
    pub(crate) fn is_closed(&self) -> bool {
        self.discarded || self.client.is_closed()
    }

    /// The client itself, for work outside units (copying a database in).
    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Marks the connection for replacement before the next unit.
    pub(crate) fn discard(&mut self) {
        self.discarded = true;
    }

    /// The notifications (`LISTEN`/`NOTIFY`) this connection receives.
    pub(crate) fn notifications(&mut self) -> postgres::Notifications<'_> {
        self.client.notifications()
    }

    /// Runs one or more statements without parameters in one round trip (the simple query
    /// protocol): transaction control.
    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.count();
        self.client.batch_execute(sql)
    }

    /// Runs a statement and returns its rows.
    pub(crate) fn query(
        &mut self,
        sql: impl Into<Cow<'static, str>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql.into())?;
        self.count();
        self.client.query(&statement, params)
    }

    /// Runs a statement and returns how many rows it changed.
    pub(crate) fn execute(
        &mut self,
        sql: impl Into<Cow<'static, str>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql.into())?;
        self.count();
        self.client.execute(&statement, params)
    }

    /// The prepared statement of `sql`, prepared now (one round trip) if this connection has
    /// not seen it yet.
    fn statement(&mut self, sql: Cow<'static, str>) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql.as_ref()) {
            return Ok(statement.clone());
        }
        self.count();
        let statement = self.client.prepare(&sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn count(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Flushed units rely on the server's default `synchronous_commit`; where a server runs with
    /// it off, this connection turns it back on for itself (relaxed units turn it off per
    /// transaction). A server with `fsync` off cannot be fixed from here: it is logged.
    fn require_durable_commits(&mut self) -> Result<(), postgres::Error> {
        let row = self.query(
            "SELECT current_setting('synchronous_commit') AS synchronous_commit, \
             current_setting('fsync') AS fsync",
            &[],
        )?;
        let setting = |name: &str| -> String {
            row.first()
                .and_then(|row| row.try_get::<_, String>(name).ok())
                .unwrap_or_default()
        };
        if setting("synchronous_commit") == "off" {
            self.batch("SET synchronous_commit = on")?;
        }
        if setting("fsync") == "off" {
            tracing::warn!(
                "the PostgreSQL server runs with fsync = off: a crash of its machine can lose committed changes"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests {
    use super::*;

    #[test]
    fn locations_show_no_credentials() {
        let shown = describe("postgres://mailroom:s3cret@db.example:5433/hub?sslmode=disable");
        assert_eq!(shown, "postgres://db.example:5433/hub");
        assert!(!describe("host=db user=u password=s3cret dbname=x").contains("s3cret"));
        assert_eq!(describe("postgres://u:s3cret@[::1"), "<unparsable URL>");
    }

    #[test]
    fn verifying_modes_turn_tls_on() {
        for url in [
            "postgres://u@db.example/hub?sslmode=verify-full",
            "postgres://u@db.example/hub?sslmode=verify-ca",
            "postgres://u@db.example/hub?sslmode=require",
        ] {
            let connector = Connector::new(url, None).unwrap();
            assert!(matches!(connector.tls, Tls::Rustls(_)), "{url}");
        }
        for url in [
            "postgres://u@db.example/hub",
            "postgres://u@db.example/hub?sslmode=disable",
            "postgres://u@db.example/hub?sslmode=prefer",
        ] {
            let connector = Connector::new(url, None).unwrap();
            assert!(matches!(connector.tls, Tls::None), "{url}");
        }
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let url = "postgres://u@db.example/hub?sslmode=verify-full";
        let error = Connector::new(url, Some(&missing)).err().unwrap();
        assert!(error.to_string().contains("CA file"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = Connector::new(url, Some(&empty)).err().unwrap();
        assert!(error.to_string().contains("no certificate"), "{error}");
    }
}
