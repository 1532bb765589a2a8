//! The configuration file `mailroom.toml`: its sections, the commented template `init` writes,
//! and loading with `MAILROOM_<SECTION>_<KEY>` environment overrides.
//!
//! Each crate owns its section as plain data (`[sftp]` is [`mailroom_sftp::Config`]); this
//! module owns only `[server]`, the binary's own settings, and the assembly. Loading parses the
//! file, applies each override to the parsed TOML value, then deserialises, so that every
//! refusal names where it came from: the file with its line and key, or the environment
//! variable. It deliberately does not validate values by hand: the section types parse them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::de::{DeTable, DeValue};

/// Prefix of every environment override.
const ENV_PREFIX: &str = "MAILROOM_";

/// `MAILROOM_*` variables that are not config overrides: the data folder, the log filter, and
/// the `MAILROOM_TEST_*` family that belongs to the test harness (e.g. `MAILROOM_TEST_PYTHON`).
const ENV_NOT_OVERRIDES: &[&str] = &["MAILROOM_DATA", "MAILROOM_LOG"];
const ENV_TEST_PREFIX: &str = "MAILROOM_TEST_";

/// The whole configuration: one section per crate that has settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The binary's own settings: shutdown and logging.
    pub server: ServerConfig,
    /// The SSH front end (SFTP and SCP).
    pub sftp: mailroom_sftp::Config,
    /// The FTPS front end (explicit FTP over TLS).
    pub ftps: mailroom_ftps::Config,
    /// The HTTPS API.
    pub https: mailroom_https::Config,
    /// Authentication and defence: scores, bans, safe and deny lists.
    pub auth: crate::auth::AuthSection,
    /// Copies of the audit trail sent elsewhere (syslog).
    pub audit: crate::syslog::AuditConfig,
    /// When `serve` expires deliveries past their recipient's retention.
    pub retention: RetentionConfig,
    /// The local PKI of the TLS front ends.
    pub tls: crate::ca::TlsConfig,
}

/// The `[retention]` section: how often `serve` runs the retention pass (accounts' own
/// `retention_days` say what expires; `mailroom account set --retention-days`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds between retention passes; one also runs at start.
    pub interval_seconds: NonZeroU64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            // One hour (1 + 3599 s), built without a fallible constructor.
            interval_seconds: NonZeroU64::MIN.saturating_add(3599),
        }
    }
}

/// The `[server]` section: how the process runs, whatever front ends it serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Seconds that running sessions get to finish after SIGTERM or Ctrl-C before the
    /// process exits anyway.
    pub shutdown_grace_seconds: u64,
    /// Log line format on standard error.
    pub log_format: LogFormat,
    /// Log filter when `MAILROOM_LOG` is not set.
    pub log_level: LogFilter,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_grace_seconds: 30,
            log_format: LogFormat::Text,
            log_level: LogFilter("info".to_owned()),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// The label used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// A tracing filter (`info`, or directives such as `info,mailroom_sftp=debug`), checked when
/// the configuration is read rather than when logging starts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct LogFilter(String);

impl LogFilter {
    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LogFilter {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        tracing_subscriber::EnvFilter::builder()
            .parse(&value)
            .map(|_| LogFilter(value))
            .map_err(|err| format!("not a log filter: {err}"))
    }
}

/// Why the configuration was refused. Each message names the file with its line and key, or
/// the environment variable, and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds a bad setting.
    #[error("{}, line {line}, column {column}{}: {reason}", path.display(), key_part(key))]
    File {
        /// The configuration file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The dotted key (`sftp.listen`), when the problem is in a setting.
        key: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// An environment override holds a value its setting does not accept.
    #[error("environment variable {variable} (setting {key}): {reason}")]
    Override {
        /// The variable, e.g. `MAILROOM_SFTP_LISTEN`.
        variable: String,
        /// The dotted key it overrides.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A `MAILROOM_*` variable that names no section.
    #[error(
        "environment variable {variable} names no configuration section (sections: {sections}; overrides are MAILROOM_<SECTION>_<KEY>)"
    )]
    UnknownSection {
        /// The variable.
        variable: String,
        /// The sections there are, comma-separated.
        sections: String,
    },
    /// A `MAILROOM_<SECTION>_*` variable that names no setting of that section.
    #[error(
        "environment variable {variable}: [{section}] has no setting {key:?} (settings: {keys})"
    )]
    UnknownKey {
        /// The variable.
        variable: String,
        /// The section it names.
        section: String,
        /// The key it names.
        key: String,
        /// The settings of the section, comma-separated.
        keys: String,
    },
    /// A `MAILROOM_*` variable whose name or value is not UTF-8.
    #[error("environment variable {variable} is not valid UTF-8")]
    NotUnicode {
        /// The variable, lossily decoded.
        variable: String,
    },
}

fn key_part(key: &Option<String>) -> String {
    key.as_ref()
        .map(|key| format!(", key {key}"))
        .unwrap_or_default()
}

/// One `MAILROOM_<SECTION>_<KEY>=value` from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable name.
    pub variable: String,
    /// The raw value.
    pub value: String,
}

/// The config overrides in the process environment, sorted by name: every `MAILROOM_*`
/// variable except `MAILROOM_DATA`, `MAILROOM_LOG` and `MAILROOM_TEST_*`.
pub fn env_overrides() -> Result<Vec<Override>, ConfigError> {
    overrides_from(std::env::vars_os())
}

fn overrides_from(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut overrides = Vec::new();
    for (name, value) in vars {
        if !name.as_encoded_bytes().starts_with(ENV_PREFIX.as_bytes()) {
            continue;
        }
        let not_unicode = || ConfigError::NotUnicode {
            variable: name.to_string_lossy().into_owned(),
        };
        let variable = name.to_str().ok_or_else(not_unicode)?.to_owned();
        if ENV_NOT_OVERRIDES.contains(&variable.as_str()) || variable.starts_with(ENV_TEST_PREFIX) {
            continue;
        }
        let value = value.into_string().map_err(|_| not_unicode())?;
        overrides.push(Override { variable, value });
    }
    overrides.sort_by(|a, b| a.variable.cmp(&b.variable));
    Ok(overrides)
}

/// Reads the configuration file at `path` and applies `overrides`.
///
/// The file is checked on its own first, so that its errors carry a line; then each override
/// is applied to the file's settings and checked, so that its errors name the variable.
pub fn load(path: &Path, overrides: &[Override]) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, overrides)
}

/// [`load`] on text already read; `path` is for messages only.
pub fn parse(path: &Path, text: &str, overrides: &[Override]) -> Result<Config, ConfigError> {
    let file_config: Config = toml::from_str(text).map_err(|err| file_error(path, text, &err))?;
    if overrides.is_empty() {
        return Ok(file_config);
    }
    // Invariant: the text deserialised into `Config`, so it is a valid TOML table.
    let mut table: toml::Table = text.parse().map_err(|err| file_error(path, text, &err))?;
    for entry in overrides {
        let (section, key) = split_variable(&entry.variable)?;
        let mut candidate = table.clone();
        set(&mut candidate, &section, &key, value_of(&entry.value));
        match candidate.clone().try_into::<Config>() {
            Ok(_) => table = candidate,
            Err(err) => {
                // A value that parsed as TOML (`123`) may be meant as text for a string
                // setting; accept it as text if that fits.
                let mut as_text = table.clone();
                set(
                    &mut as_text,
                    &section,
                    &key,
                    toml::Value::String(entry.value.clone()),
                );
                if as_text.clone().try_into::<Config>().is_err() {
                    return Err(ConfigError::Override {
                        variable: entry.variable.clone(),
                        key: format!("{section}.{key}"),
                        reason: err.message().to_owned(),
                    });
                }
                table = as_text;
            }
        }
    }
    table
        .try_into::<Config>()
        .map_err(|err| ConfigError::Override {
            variable: overrides
                .iter()
                .map(|o| o.variable.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            key: "(several)".to_owned(),
            reason: err.message().to_owned(),
        })
}

/// The commented template `init` writes: every section and every setting with its doc line,
/// each commented out and showing its default, so the file parses to the defaults as it is.
pub fn template() -> String {
    let defaults = Config::default();
    let mut out = String::from(
        "# Mailroom configuration.\n\
         #\n\
         # Every setting is listed with its default value, commented out: uncomment a line to\n\
         # change it. Any setting can also be overridden by an environment variable\n\
         # MAILROOM_<SECTION>_<KEY>, e.g. MAILROOM_SFTP_LISTEN=127.0.0.1:2345.\n\
         # The log filter can be overridden with MAILROOM_LOG.\n",
    );
    for section in sections(&defaults) {
        let _ = write!(out, "\n# {}\n[{}]\n", section.doc, section.name);
        for (i, setting) in section.settings.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            for line in setting.doc.lines() {
                let _ = writeln!(out, "# {line}");
            }
            let _ = writeln!(out, "# {} = {}", setting.key, setting.default);
        }
    }
    out
}

/// One section as the template shows it.
struct Section {
    name: &'static str,
    doc: &'static str,
    settings: Vec<Setting>,
}

/// One setting as the template shows it.
struct Setting {
    key: &'static str,
    doc: &'static str,
    default: toml::Value,
}

fn setting(key: &'static str, doc: &'static str, default: impl Into<toml::Value>) -> Setting {
    Setting {
        key,
        doc,
        default: default.into(),
    }
}

fn integer(value: u64) -> toml::Value {
    // Invariant: defaults are small numbers; saturate rather than fail if one ever is not.
    toml::Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The template's sections, in file order, with values taken from `config`. A unit test
/// checks that every field serde knows is listed here and that the template parses back to
/// the defaults; the doc lines repeat the fields' doc comments.
fn sections(config: &Config) -> Vec<Section> {
    let server = &config.server;
    let sftp = &config.sftp;
    let ftps = &config.ftps;
    let https = &config.https;
    let auth = &config.auth;
    let retention = &config.retention;
    vec![
        Section {
            name: "server",
            doc: "The process: shutdown and logging.",
            settings: vec![
                setting(
                    "shutdown_grace_seconds",
                    "Seconds that running sessions get to finish after SIGTERM or Ctrl-C before the\nprocess exits anyway.",
                    integer(server.shutdown_grace_seconds),
                ),
                setting(
                    "log_format",
                    "Log line format on standard error: \"text\" or \"json\".",
                    server.log_format.as_str(),
                ),
                setting(
                    "log_level",
                    "Log filter when MAILROOM_LOG is not set: a level (error, warn, info, debug, trace)\nor tracing directives such as \"info,mailroom_sftp=debug\".",
                    server.log_level.as_str(),
                ),
            ],
        },
        Section {
            name: "sftp",
            doc: "The SSH front end: SFTP and SCP.",
            settings: vec![
                setting(
                    "enabled",
                    "Whether the SSH front end runs at all.",
                    sftp.enabled,
                ),
                setting(
                    "listen",
                    "Address and port to listen on.",
                    sftp.listen.to_string(),
                ),
                setting(
                    "host_key",
                    "The ed25519 host key in OpenSSH format, relative to the data folder unless absolute;\ngenerated on first start.",
                    sftp.host_key.display().to_string(),
                ),
                setting(
                    "auth_rejection_ms",
                    "A refused login is answered after this many milliseconds, whatever the cause, so that\ntiming tells nothing about which part was wrong.",
                    integer(sftp.auth_rejection_ms),
                ),
                setting(
                    "max_auth_attempts",
                    "Authentication attempts allowed per connection.",
                    integer(u64::from(sftp.max_auth_attempts)),
                ),
                setting(
                    "login_grace_seconds",
                    "Seconds a connection may take to log in before it is closed.",
                    integer(sftp.login_grace_seconds),
                ),
                setting(
                    "idle_timeout_seconds",
                    "Seconds without traffic before a session is closed.",
                    integer(sftp.idle_timeout_seconds),
                ),
                setting(
                    "max_connections",
                    "Connections open at once, all addresses together.",
                    integer(u64::from(sftp.max_connections)),
                ),
                setting(
                    "max_connections_per_address",
                    "Connections open at once from one source address.",
                    integer(u64::from(sftp.max_connections_per_address)),
                ),
                setting(
                    "max_startups",
                    "Connections not yet logged in, as OpenSSH's MaxStartups \"start:rate:full\": from\n`start` on, a new one is dropped with a probability rising from `rate` % to 100 % at\n`full`. One number N means a hard cap (\"N:100:N\").",
                    sftp.max_startups.to_string(),
                ),
                setting(
                    "max_startups_per_address",
                    "Connections not yet logged in from one source address.",
                    integer(u64::from(sftp.max_startups_per_address)),
                ),
                setting(
                    "max_requests_in_flight",
                    "Requests one SFTP session may have waiting for an answer; a client past this is\nmisbehaving and is disconnected. OpenSSH's client keeps at most 64.",
                    integer(u64::from(sftp.max_requests_in_flight)),
                ),
            ],
        },
        Section {
            name: "ftps",
            doc: "The FTPS front end: explicit FTP over TLS (AUTH TLS), TLS required on both channels.",
            settings: vec![
                setting(
                    "enabled",
                    "Whether the FTPS front end runs at all (off by default). It serves the server certificate\nof [tls], which init and serve create.",
                    ftps.enabled,
                ),
                setting(
                    "listen",
                    "Address and port to listen on (explicit TLS: clients send AUTH TLS).",
                    ftps.listen.to_string(),
                ),
                setting(
                    "passive_ports",
                    "Ports offered for passive data connections, \"FIRST-LAST\".",
                    ftps.passive_ports.to_string(),
                ),
                setting(
                    "passive_address",
                    "The IPv4 address announced in PASV replies; empty: the address the client connected to.",
                    ftps.passive_address
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                ),
                setting(
                    "idle_timeout_seconds",
                    "Seconds without a command (and no transfer running) before a session is closed.",
                    integer(ftps.idle_timeout_seconds),
                ),
                setting(
                    "login_grace_seconds",
                    "Seconds a connection may take from accept to a completed login before it is closed,\nwhatever it sends meanwhile (the TLS handshake included).",
                    integer(ftps.login_grace_seconds),
                ),
                setting(
                    "max_connections",
                    "Connections open at once, all addresses together.",
                    integer(u64::from(ftps.max_connections)),
                ),
                setting(
                    "max_connections_per_address",
                    "Connections open at once from one source address.",
                    integer(u64::from(ftps.max_connections_per_address)),
                ),
                setting(
                    "max_startups",
                    "Connections not yet logged in, as OpenSSH's MaxStartups \"start:rate:full\" (see\n[sftp] max_startups).",
                    ftps.max_startups.to_string(),
                ),
                setting(
                    "max_startups_per_address",
                    "Connections not yet logged in from one source address.",
                    integer(u64::from(ftps.max_startups_per_address)),
                ),
                setting(
                    "allow_plaintext",
                    "Allows plain FTP without TLS on the control and data channels. Passwords and files\nthen cross the network in clear text; a warning is logged at every start.",
                    ftps.allow_plaintext,
                ),
                setting(
                    "client_certificates",
                    "Whether clients may present an X.509 certificate: \"off\" or \"optional\" (verified\nagainst the client CA of [tls]; it proves the `certificate` factor of accounts that require it).",
                    ftps.client_certificates.as_str(),
                ),
            ],
        },
        Section {
            name: "https",
            doc: "The HTTPS API: bearer tokens, resumable uploads, receipts, administration (OpenAPI at /api/v1/openapi.json).",
            settings: vec![
                setting(
                    "enabled",
                    "Whether the HTTPS API runs at all (off by default, like FTPS). It serves the server\ncertificate of [tls], which init and serve create.",
                    https.enabled,
                ),
                setting(
                    "listen",
                    "Address and port to listen on.",
                    https.listen.to_string(),
                ),
                setting(
                    "allow_plaintext",
                    "Serves plain HTTP instead of HTTPS, for use behind a TLS-terminating proxy only.\nPasswords and tokens then cross the network in clear text up to the proxy; a warning is\nlogged at every start.",
                    https.allow_plaintext,
                ),
                setting(
                    "client_certificates",
                    "Whether clients may present an X.509 certificate: \"off\" or \"optional\" (verified\nagainst the client CA of [tls]; it proves the `certificate` factor at POST /api/v1/token).",
                    https.client_certificates.as_str(),
                ),
                setting(
                    "access_token_seconds",
                    "Seconds an access token works.",
                    integer(https.access_token_seconds),
                ),
                setting(
                    "refresh_token_seconds",
                    "Seconds a refresh token works (and so a login, unless refreshed).",
                    integer(https.refresh_token_seconds),
                ),
                setting(
                    "upload_expiry_seconds",
                    "Seconds an unfinished resumable upload is kept before it is aborted.",
                    integer(https.upload_expiry_seconds),
                ),
                setting(
                    "max_json_bytes",
                    "Largest JSON request body, in bytes.",
                    integer(https.max_json_bytes as u64),
                ),
                setting(
                    "max_chunk_bytes",
                    "Largest body of one PATCH of a resumable upload, in bytes (a client sends a larger\nfile in several).",
                    integer(https.max_chunk_bytes),
                ),
                setting(
                    "login_attempts_per_minute",
                    "Token requests allowed per source address per minute; more are answered 429. Refused\nlogins also feed the defender.",
                    integer(u64::from(https.login_attempts_per_minute)),
                ),
                setting(
                    "max_connections",
                    "Connections open at once, all addresses together.",
                    integer(u64::from(https.max_connections)),
                ),
                setting(
                    "max_connections_per_address",
                    "Connections open at once from one source address.",
                    integer(u64::from(https.max_connections_per_address)),
                ),
                setting(
                    "handshake_timeout_seconds",
                    "Seconds a new connection may take to complete its TLS handshake.",
                    integer(https.handshake_timeout_seconds),
                ),
                setting(
                    "idle_timeout_seconds",
                    "Seconds without a request before a kept-alive HTTP/1.1 connection is closed.",
                    integer(https.idle_timeout_seconds),
                ),
            ],
        },
        Section {
            name: "auth",
            doc: "Authentication and defence: scores of failed logins, bans (kept in the database), safe and deny lists.",
            settings: vec![
                setting(
                    "defender",
                    "Whether failed logins are scored and sources banned.",
                    auth.defender,
                ),
                setting(
                    "ban_threshold",
                    "Points within window_minutes that ban a source address (or lock an account).",
                    integer(u64::from(auth.ban_threshold)),
                ),
                setting(
                    "window_minutes",
                    "Minutes points count for.",
                    integer(auth.window_minutes),
                ),
                setting(
                    "ban_minutes",
                    "Minutes the first ban lasts.",
                    integer(auth.ban_minutes),
                ),
                setting(
                    "ban_growth_percent",
                    "Percent each repeat ban of the same subject grows by.",
                    integer(u64::from(auth.ban_growth_percent)),
                ),
                setting(
                    "max_ban_days",
                    "Days the longest ban lasts.",
                    integer(auth.max_ban_days),
                ),
                setting(
                    "score_unknown_account",
                    "Points for a login naming an unknown account.",
                    integer(u64::from(auth.score_unknown_account)),
                ),
                setting(
                    "score_bad_credentials",
                    "Points for a wrong password, key or code.",
                    integer(u64::from(auth.score_bad_credentials)),
                ),
                setting(
                    "score_no_authentication",
                    "Points for a connection that never authenticated (including timeouts).",
                    integer(u64::from(auth.score_no_authentication)),
                ),
                setting(
                    "score_protocol_error",
                    "Points for a protocol error before authentication.",
                    integer(u64::from(auth.score_protocol_error)),
                ),
                setting(
                    "safe_networks",
                    "Networks never scored or banned, e.g. [\"10.0.0.0/8\", \"192.0.2.7\"].",
                    auth.safe_networks.to_strings(),
                ),
                setting(
                    "deny_networks",
                    "Networks refused before any protocol exchange.",
                    auth.deny_networks.to_strings(),
                ),
                setting(
                    "hash_jobs",
                    "Argon2 password checks that may run at once (each takes 19 MiB); more logins wait.",
                    integer(u64::from(auth.hash_jobs)),
                ),
                setting(
                    "totp_issuer",
                    "The issuer name authenticator apps show for TOTP.",
                    auth.totp_issuer.as_str(),
                ),
            ],
        },
        // ----- [audit] (syslog sink) -----
        Section {
            name: "audit",
            doc: "Copies of the audit trail: each committed event as an RFC 5424 syslog message.",
            settings: vec![
                setting(
                    "syslog",
                    "Where to send each committed audit event: \"off\", \"udp://IP:PORT\", or\n\"unix:///dev/log\" (a local datagram socket).",
                    config.audit.syslog.to_setting(),
                ),
                setting(
                    "syslog_facility",
                    "The syslog facility: authpriv (kept private by syslog daemons; the messages name\naccounts and addresses), auth, daemon, user, or local0 to local7.",
                    config.audit.syslog_facility.as_str(),
                ),
                setting(
                    "syslog_app_name",
                    "The APP-NAME field of the messages: 1 to 48 printable ASCII characters.",
                    config.audit.syslog_app_name.as_str(),
                ),
            ],
        },
        Section {
            name: "retention",
            doc: "Retention: expiring deliveries kept longer than their recipient's retention_days.",
            settings: vec![setting(
                "interval_seconds",
                "Seconds between retention passes (at least 1); one also runs at start.",
                integer(retention.interval_seconds.get()),
            )],
        },
        Section {
            name: "tls",
            doc: "The certificates of the TLS front ends: a server CA and server certificate, and a client CA (in `dir`).",
            settings: vec![
                setting(
                    "hostnames",
                    "Host names and IP addresses the server certificate names; a change re-issues it\n(the CA is kept).",
                    config.tls.hostnames.clone(),
                ),
                setting(
                    "dir",
                    "The PKI folder, relative to the data folder unless absolute.",
                    config.tls.dir.display().to_string(),
                ),
                setting(
                    "client_ca_bundle",
                    "An external CA bundle (PEM) to verify client certificates against instead of our\nclient CA; empty for ours.",
                    config.tls.client_ca_bundle.display().to_string(),
                ),
                setting(
                    "crl",
                    "A CRL file (PEM or DER) of the client CA; listed client certificates are refused.\nEmpty for none.",
                    config.tls.crl.display().to_string(),
                ),
                setting(
                    "server_cert_days",
                    "Days a newly issued server certificate is valid (1 to 398; Mozilla's intermediate profile allows at most 365).",
                    integer(u64::from(config.tls.server_cert_days)),
                ),
            ],
        },
    ]
}

/// The setting names of each section, as serde sees them.
fn section_keys() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("server", field_names::<ServerConfig>()),
        ("sftp", field_names::<mailroom_sftp::Config>()),
        ("ftps", field_names::<mailroom_ftps::Config>()),
        ("https", field_names::<mailroom_https::Config>()),
        ("auth", field_names::<crate::auth::AuthSection>()),
        ("audit", field_names::<crate::syslog::AuditConfig>()),
        ("retention", field_names::<RetentionConfig>()),
        ("tls", field_names::<crate::ca::TlsConfig>()),
    ])
}

/// Splits `MAILROOM_SFTP_HOST_KEY` into `("sftp", "host_key")`, refusing names that match no
/// section or no setting.
fn split_variable(variable: &str) -> Result<(String, String), ConfigError> {
    let rest = variable
        .strip_prefix(ENV_PREFIX)
        .unwrap_or(variable)
        .to_ascii_lowercase();
    let keys = section_keys();
    // The longest section name first, so a later section whose name extends another's wins.
    let mut names: Vec<&str> = keys.keys().copied().collect();
    names.sort_by_key(|name| std::cmp::Reverse(name.len()));
    let Some((section, key)) = names.iter().find_map(|name| {
        rest.strip_prefix(name)
            .and_then(|tail| tail.strip_prefix('_'))
            .map(|key| (*name, key))
    }) else {
        return Err(ConfigError::UnknownSection {
            variable: variable.to_owned(),
            sections: keys.keys().copied().collect::<Vec<_>>().join(", "),
        });
    };
    let fields = keys.get(section).copied().unwrap_or_default();
    if !fields.contains(&key) {
        return Err(ConfigError::UnknownKey {
            variable: variable.to_owned(),
            section: section.to_owned(),
            key: key.to_owned(),
            keys: fields.join(", "),
        });
    }
    Ok((section.to_owned(), key.to_owned()))
}

/// An override's value as TOML (`30`, `true`, `"x"`) where it reads as one, else as text
/// (`127.0.0.1:2345`).
fn value_of(raw: &str) -> toml::Value {
    format!("value = {raw}")
        .parse::<toml::Table>()
        .ok()
        .filter(|table| table.len() == 1)
        .and_then(|mut table| table.remove("value"))
        // No setting takes a date or time, and `max_startups = 10:30:50` reads as one.
        .filter(|value| !value.is_datetime())
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        // The file's own check refuses a non-table section before overrides are applied.
        *entry = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(section) = entry {
        section.insert(key.to_owned(), value);
    }
}

/// A file error with its line, column and, where the span falls on a setting, its key.
fn file_error(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let span = err.span().unwrap_or(0..0);
    let (line, column) = line_column(text, span.start);
    ConfigError::File {
        path: path.to_owned(),
        line,
        column,
        key: key_at(text, &span),
        reason: err.message().trim().to_owned(),
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(1, |tail| tail.chars().count() + 1);
    (line, column)
}

/// The dotted key whose name or value covers `span`, if the text parses as TOML.
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let table = DeTable::parse(text).ok()?;
    find_key(table.get_ref(), span, "")
}

fn find_key(table: &DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let DeValue::Table(inner) = value.get_ref()
            && let Some(found) = find_key(inner, span, &path)
        {
            return Some(found);
        }
        let value_span = value.span();
        if key.span() == *span || (value_span.start <= span.start && span.end <= value_span.end) {
            return Some(path);
        }
    }
    None
}

/// The field names a `#[derive(Deserialize)]` struct asks for, read by a probe deserialiser
/// that records them and stops.
fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields.unwrap_or_default()
}

struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field probe"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("field probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> Vec<Override> {
        pairs
            .iter()
            .map(|(variable, value)| Override {
                variable: (*variable).to_owned(),
                value: (*value).to_owned(),
            })
            .collect()
    }

    fn check_ok(text: &str, env: &[(&str, &str)], expect: impl FnOnce(&mut Config)) {
        let mut expected = Config::default();
        expect(&mut expected);
        let got = parse(Path::new("/d/mailroom.toml"), text, &overrides(env));
        assert_eq!(got.unwrap(), expected, "text {text:?} env {env:?}");
    }

    fn check_err(text: &str, env: &[(&str, &str)], expect: &[&str]) {
        let err = parse(Path::new("/d/mailroom.toml"), text, &overrides(env)).unwrap_err();
        let message = err.to_string();
        for part in expect {
            assert!(
                message.contains(part),
                "{message:?} lacks {part:?} (text {text:?})"
            );
        }
        assert!(!message.contains('\n'), "one line: {message:?}");
    }

    #[test]
    fn template_parses_back_to_the_defaults() {
        let template = template();
        check_ok(&template, &[], |_| {});
        // And with every setting uncommented: the shown values are the defaults.
        let uncommented: String = template
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if is_setting(rest) => rest.to_owned(),
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(uncommented, template);
        check_ok(&uncommented, &[], |_| {});
        let table: toml::Table = uncommented.parse().unwrap();
        for (section, keys) in section_keys() {
            let listed = table[section].as_table().unwrap();
            for key in keys {
                assert!(listed.contains_key(*key), "template lacks {section}.{key}");
            }
        }
    }

    fn is_setting(line: &str) -> bool {
        line.split_once(" = ")
            .is_some_and(|(key, _)| section_keys().values().any(|keys| keys.contains(&key)))
    }

    #[test]
    fn template_lists_exactly_the_fields_serde_knows() {
        assert_eq!(
            field_names::<Config>(),
            [
                "server",
                "sftp",
                "ftps",
                "https",
                "auth",
                "audit",
                "retention",
                "tls"
            ],
            "a new section needs a place in sections()"
        );
        let defaults = Config::default();
        let keys = section_keys();
        for section in sections(&defaults) {
            let listed: Vec<&str> = section.settings.iter().map(|s| s.key).collect();
            assert_eq!(listed, keys[section.name], "[{}]", section.name);
            for setting in &section.settings {
                assert!(!setting.doc.is_empty());
            }
        }
    }

    #[test]
    fn good_files_and_overrides() {
        check_ok("", &[], |_| {});
        check_ok("[sftp]\nlisten = \"0.0.0.0:22\"\n", &[], |c| {
            c.sftp.listen = "0.0.0.0:22".parse().unwrap();
        });
        check_ok("", &[("MAILROOM_SFTP_LISTEN", "127.0.0.1:2345")], |c| {
            c.sftp.listen = "127.0.0.1:2345".parse().unwrap();
        });
        check_ok("[sftp]\nmax_startups = 50\n", &[], |c| {
            c.sftp.max_startups = "50:100:50".parse().unwrap();
        });
        check_ok(
            "[server]\nshutdown_grace_seconds = 9\n",
            &[("MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS", "5")],
            |c| c.server.shutdown_grace_seconds = 5,
        );
        check_ok(
            "",
            &[
                ("MAILROOM_SERVER_LOG_FORMAT", "json"),
                ("MAILROOM_SERVER_LOG_LEVEL", "info,mailroom_sftp=debug"),
                ("MAILROOM_SFTP_ENABLED", "false"),
                ("MAILROOM_SFTP_HOST_KEY", "1234"),
                ("MAILROOM_SFTP_MAX_STARTUPS", "5:50:20"),
            ],
            |c| {
                c.server.log_format = LogFormat::Json;
                c.server.log_level = LogFilter("info,mailroom_sftp=debug".to_owned());
                c.sftp.enabled = false;
                c.sftp.host_key = PathBuf::from("1234");
                c.sftp.max_startups = "5:50:20".parse().unwrap();
            },
        );
    }

    #[test]
    fn retention_interval() {
        assert_eq!(Config::default().retention.interval_seconds.get(), 3600);
        check_ok("[retention]\ninterval_seconds = 60\n", &[], |c| {
            c.retention.interval_seconds = NonZeroU64::new(60).unwrap();
        });
        check_ok("", &[("MAILROOM_RETENTION_INTERVAL_SECONDS", "5")], |c| {
            c.retention.interval_seconds = NonZeroU64::new(5).unwrap();
        });
        check_err(
            "[retention]\ninterval_seconds = 0\n",
            &[],
            &["line 2", "key retention.interval_seconds"],
        );
        check_err(
            "",
            &[("MAILROOM_RETENTION_INTERVAL_SECONDS", "0")],
            &[
                "MAILROOM_RETENTION_INTERVAL_SECONDS",
                "retention.interval_seconds",
            ],
        );
    }

    #[test]
    fn bad_files_name_the_line_and_key() {
        check_err(
            "[server]\n\n[sftp]\nlisten = 12\n",
            &[],
            &[
                "/d/mailroom.toml",
                "line 4",
                "key sftp.listen",
                "socket address",
            ],
        );
        check_err(
            "[sftp]\nnope = 1\n",
            &[],
            &["line 2", "key sftp.nope", "unknown field `nope`"],
        );
        check_err("[bogus]\n", &[], &["line 1", "key bogus", "unknown field"]);
        check_err(
            "[server]\nshutdown_grace_seconds = -1\n",
            &[],
            &["line 2", "key server.shutdown_grace_seconds", "-1"],
        );
        check_err(
            "[server]\nlog_format = \"xml\"\n",
            &[],
            &["line 2", "key server.log_format", "xml"],
        );
        check_err(
            "[server]\nlog_level = \"info,=[\"\n",
            &[],
            &["line 2", "key server.log_level", "not a log filter"],
        );
        check_err(
            "[sftp]\nmax_startups = \"10:30\"\n",
            &[],
            &[
                "line 2",
                "key sftp.max_startups",
                "start:rate:full",
                "\"10:30\"",
            ],
        );
        check_err(
            "[sftp]\nmax_startups = \"100:30:10\"\n",
            &[],
            &["line 2", "key sftp.max_startups", "start 100 and full 10"],
        );
        check_err(
            "[sftp]\nmax_startups = true\n",
            &[],
            &["line 2", "key sftp.max_startups", "start:rate:full"],
        );
        check_err("[sftp\nlisten = 1", &[], &["line 1", "/d/mailroom.toml"]);
        // The env is not consulted when the file is already wrong.
        check_err(
            "[sftp]\nlisten = 12\n",
            &[("MAILROOM_SFTP_LISTEN", "127.0.0.1:1")],
            &["line 2"],
        );
    }

    #[test]
    fn bad_overrides_name_the_variable() {
        check_err(
            "",
            &[("MAILROOM_SFTP_LISTEN", "nope")],
            &["MAILROOM_SFTP_LISTEN", "sftp.listen", "socket address"],
        );
        check_err(
            "",
            &[("MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS", "soon")],
            &["MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS", "u64"],
        );
        check_err(
            "",
            &[("MAILROOM_SFTP_NOPE", "1")],
            &[
                "MAILROOM_SFTP_NOPE",
                "[sftp] has no setting \"nope\"",
                "listen",
            ],
        );
        check_err(
            "",
            &[("MAILROOM_BOGUS_LISTEN", "1")],
            &["MAILROOM_BOGUS_LISTEN", "no configuration section", "sftp"],
        );
        check_err("", &[("MAILROOM_SFTP", "1")], &["MAILROOM_SFTP"]);
    }

    #[test]
    fn environment_filtering() {
        let vars = [
            ("PATH", "/bin"),
            ("MAILROOM_DATA", "/d"),
            ("MAILROOM_LOG", "debug"),
            ("MAILROOM_TEST_PYTHON", "/p"),
            ("MAILROOM_SFTP_LISTEN", "x"),
            ("MAILROOM_SERVER_LOG_FORMAT", "json"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let got = overrides_from(vars).unwrap();
        assert_eq!(
            got,
            overrides(&[
                ("MAILROOM_SERVER_LOG_FORMAT", "json"),
                ("MAILROOM_SFTP_LISTEN", "x")
            ])
        );
    }

    #[test]
    fn values_read_as_toml_where_they_can() {
        assert_eq!(value_of("30"), toml::Value::Integer(30));
        assert_eq!(value_of("true"), toml::Value::Boolean(true));
        assert_eq!(value_of("\"x y\""), toml::Value::String("x y".into()));
        assert_eq!(
            value_of("127.0.0.1:2222"),
            toml::Value::String("127.0.0.1:2222".into())
        );
        assert_eq!(value_of("10:30:50"), toml::Value::String("10:30:50".into()));
        assert_eq!(
            value_of("1\nother = 2"),
            toml::Value::String("1\nother = 2".into())
        );
    }
}
