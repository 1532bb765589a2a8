//! The configuration file `mailroom.toml`: its sections, the commented template `init` writes,
//! and loading with `MAILROOM_<SECTION>_<KEY>` environment overrides.
//!
//! Each crate owns its section as plain data (`[sftp]` is [`mailroom_sftp::Config`]), declared
//! with [`mailroom_net::config_section!`]: the section's name, its doc comment and each field's
//! doc comment make up its [`ConfigSection`] description, and its `Default` gives the values.
//! This module owns only `[server]` and `[retention]`, the binary's own settings, and the
//! assembly: the template and the names the overrides may use both come from
//! [`SECTIONS`], the sections' own descriptions, so a new setting is written once, beside its
//! field. Loading parses the file, applies each override to the parsed TOML value, then
//! deserialises, so that every refusal names where it came from: the file with its line and
//! key, or the environment variable. It deliberately does not validate values by hand: the
//! section types parse them.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::{Path, PathBuf};

use mailroom_net::{ConfigSection, SettingDoc};
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

/// Prefix of every environment override.
const ENV_PREFIX: &str = "MAILROOM_";

/// `MAILROOM_*` variables that are not config overrides: the data folder, the log filter, the
/// master key of encryption at rest, and the `MAILROOM_TEST_*` family that belongs to the
/// test harness (e.g. `MAILROOM_TEST_PYTHON`).
const ENV_NOT_OVERRIDES: &[&str] = &[
    "MAILROOM_DATA",
    "MAILROOM_LOG",
    crate::at_rest::MASTER_KEY_ENV,
];
const ENV_TEST_PREFIX: &str = "MAILROOM_TEST_";

/// The whole configuration: one section per crate that has settings. Each field is listed in
/// [`SECTIONS`] too (a test checks it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
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
    /// Negotiated methods: `[ace.authentication]`, `[ace.compression]`, `[ace.encryption]`.
    pub ace: crate::ace::AceConfig,
    /// Copies of the audit trail sent elsewhere (syslog).
    pub audit: crate::syslog::AuditConfig,
    /// When `serve` expires deliveries past their recipient's retention.
    pub retention: RetentionConfig,
    /// The free-space floor of the data folder's file system.
    pub disk: DiskConfig,
    /// Where the metadata lives: SQLite in the data folder or PostgreSQL.
    pub meta: crate::engines::MetaConfig,
    /// Where file content lives: the data folder or an S3-compatible bucket.
    pub blob: crate::engines::BlobConfig,
    /// Encryption at rest: whether new folders encrypt, and the master key file.
    pub at_rest: crate::at_rest::AtRestConfig,
    /// The operations listener: probes and metrics.
    pub ops: crate::ops::OpsConfig,
    /// The local PKI of the TLS front ends.
    pub tls: crate::ca::TlsConfig,
    /// The job queue: retries, bound, concurrency.
    pub jobs: mailroom_events::JobsConfig,
    /// Webhooks: signing secret, trusted CAs, reachable networks.
    pub webhooks: mailroom_events::WebhooksConfig,
    /// E-mail: the SMTP server of the rules' mails and of accounts' notices.
    pub smtp: mailroom_events::SmtpConfig,
    /// Accounts' notices: the digest period.
    pub notifications: mailroom_events::NotificationsConfig,
    /// The check of uploads before delivery: the scanner.
    pub check: mailroom_events::CheckConfig,
    /// The rules that turn events into jobs (`[[rules]]`, an array of tables, not a section).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::rules::RuleConfig>,
    /// The drop folders (`[[drop]]`, an array of tables, not a section).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<crate::drop::DropConfig>,
}

mailroom_net::config_section! {
    [retention]
    /// Retention: expiring deliveries kept longer than their recipient's `retention_days`
    /// (`mailroom account set --retention-days`); this section says how often `serve` looks.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RetentionConfig {
        /// Seconds between retention passes (at least 1); one also runs at start.
        pub interval_seconds: NonZeroU64,
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            // One hour (1 + 3599 s), built without a fallible constructor.
            interval_seconds: NonZeroU64::MIN.saturating_add(3599),
        }
    }
}

mailroom_net::config_section! {
    [disk]
    /// The data folder's free space: `serve` looks every `check_seconds`, and when the file
    /// system holding it falls below `min_free_percent` it records a `disk.low` event (once
    /// per crossing), which rules turn into alerts (`on = ["disk.low"]`).
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct DiskConfig {
        /// The floor, in percent of the file system's size (0 to 100; 0: never alert).
        pub min_free_percent: u8,
        /// Seconds between looks (at least 1).
        pub check_seconds: NonZeroU64,
    }
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            min_free_percent: 5,
            // One minute (1 + 59 s), built without a fallible constructor.
            check_seconds: NonZeroU64::MIN.saturating_add(59),
        }
    }
}

mailroom_net::config_section! {
    [server]
    /// The process: shutdown and logging, whatever front ends it serves.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct ServerConfig {
        /// Seconds that running sessions get to finish after SIGTERM or Ctrl-C before the
        /// process exits anyway.
        pub shutdown_grace_seconds: u64,
        /// Log line format on standard error: "text" or "json".
        pub log_format: LogFormat,
        /// Log filter when `MAILROOM_LOG` is not set: a level (error, warn, info, debug,
        /// trace) or tracing directives such as "info,mailroom_sftp=debug".
        pub log_level: LogFilter,
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A tracing filter (`info`, or directives such as `info,mailroom_sftp=debug`), checked when
/// the configuration is read rather than when logging starts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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

/// One section of the file as its type describes itself ([`ConfigSection`]).
#[derive(Debug, Clone, Copy)]
struct Section {
    /// The name in the file, `sftp` for `[sftp]`; also the field of [`Config`].
    name: &'static str,
    /// The type's doc comment, the section's heading in the template.
    doc: &'static [&'static str],
    /// The settings in file order, each with its field's doc comment.
    settings: &'static [SettingDoc],
}

impl Section {
    const fn of<T: ConfigSection>() -> Section {
        Section {
            name: T::NAME,
            doc: T::DOC,
            settings: T::SETTINGS,
        }
    }
}

/// Every section in file order, as its owner declared it: the template and the names of the
/// environment overrides come from here. A unit test checks that it lists exactly the fields
/// of [`Config`] and, for each, exactly the fields serde knows.
const SECTIONS: [Section; 21] = [
    Section::of::<ServerConfig>(),
    Section::of::<mailroom_sftp::Config>(),
    Section::of::<mailroom_ftps::Config>(),
    Section::of::<mailroom_https::Config>(),
    Section::of::<crate::auth::AuthSection>(),
    Section::of::<crate::ace::AuthenticationSection>(),
    Section::of::<crate::ace::CompressionSection>(),
    Section::of::<crate::ace::EncryptionSection>(),
    Section::of::<crate::syslog::AuditConfig>(),
    Section::of::<RetentionConfig>(),
    Section::of::<DiskConfig>(),
    Section::of::<crate::engines::MetaConfig>(),
    Section::of::<crate::engines::BlobConfig>(),
    Section::of::<crate::at_rest::AtRestConfig>(),
    Section::of::<crate::ops::OpsConfig>(),
    Section::of::<crate::ca::TlsConfig>(),
    Section::of::<mailroom_events::JobsConfig>(),
    Section::of::<mailroom_events::WebhooksConfig>(),
    Section::of::<mailroom_events::SmtpConfig>(),
    Section::of::<mailroom_events::NotificationsConfig>(),
    Section::of::<mailroom_events::CheckConfig>(),
];

/// The commented example of `[[rules]]` that closes the template.
const RULES_EXAMPLE: &str = "
# Rules turn events into jobs: each event a rule selects queues one job per handler, in the
# same commit as the event, and `mailroom jobs` shows them. A rule selects by event type
# (on), account (actor or party), sender, recipient (an account, or a group it fanned out
# from), outcome (ok, refused, failed) and file name (a glob); its handlers are webhook URLs
# (https only, signed) and e-mail addresses, and copy_to = [accounts or groups] gives each
# delivered file a copy of its own (dispatch; on = [\"delivery.delivered\"] only).
# Event types: login, transfer.started, upload, download, delivery.stored,
# delivery.delivered, delivery.picked-up, delivery.acknowledged, delivery.recalled,
# delivery.renamed, delivery.expired, delivery.quarantined, ban, session.closed, admin,
# sweep, job.dead, quota.warning, disk.low, clock.unsynchronised.
#
# [[rules]]
# name = \"pdf-alert\"
# on = [\"delivery.delivered\"]
# recipient = \"bob\"
# file = \"*.pdf\"
# webhook = [\"https://hooks.example.test/mailroom\"]
";

/// The commented template `init` writes: every section and every setting with its doc comment,
/// each commented out and showing its default, so the file parses to the defaults as it is.
/// The values are the sections' `Default`s, serialised.
pub fn template() -> String {
    // Invariant: the defaults serialise (a unit test checks it); if one ever did not, its
    // settings would show no value rather than `init` failing.
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut out = String::from(
        "# Mailroom configuration.\n\
         #\n\
         # Every setting is listed with its default value, commented out: uncomment a line to\n\
         # change it. Any setting can also be overridden by an environment variable\n\
         # MAILROOM_<SECTION>_<KEY>, e.g. MAILROOM_SFTP_LISTEN=127.0.0.1:2345.\n\
         # The log filter can be overridden with MAILROOM_LOG.\n",
    );
    for section in SECTIONS {
        let values = table_at(&defaults, section.name);
        out.push('\n');
        write_comment(&mut out, section.doc);
        let _ = writeln!(out, "[{}]", section.name);
        for (i, setting) in section.settings.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            write_comment(&mut out, setting.doc);
            match values.and_then(|values| values.get(setting.key)) {
                Some(value) => {
                    let _ = writeln!(out, "# {} = {value}", setting.key);
                }
                None => {
                    let _ = writeln!(out, "# {} has no default", setting.key);
                }
            }
        }
    }
    out.push_str(RULES_EXAMPLE);
    out.push_str(crate::drop::TEMPLATE_EXAMPLE);
    out
}

/// Writes a doc comment as `#` lines: the leading space of `/// text` becomes the space after
/// `#`, and Markdown code marks are dropped (the file is plain text).
fn write_comment(out: &mut String, doc: &[&str]) {
    for line in doc {
        let line = line.replace('`', "");
        let line = line.trim_end();
        let line = line.strip_prefix(' ').unwrap_or(line);
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
}

/// Splits `MAILROOM_SFTP_HOST_KEY` into `("sftp", "host_key")`, refusing names that match no
/// section or no setting.
fn split_variable(variable: &str) -> Result<(String, String), ConfigError> {
    let rest = variable
        .strip_prefix(ENV_PREFIX)
        .unwrap_or(variable)
        .to_ascii_lowercase();
    // The longest section name first, so a later section whose name extends another's wins.
    let mut sections = SECTIONS;
    sections.sort_by_key(|section| std::cmp::Reverse(section.name.len()));
    let Some((section, key)) = sections.iter().find_map(|section| {
        rest.strip_prefix(&section.name.replace('.', "_"))
            .and_then(|tail| tail.strip_prefix('_'))
            .map(|key| (section, key))
    }) else {
        return Err(ConfigError::UnknownSection {
            variable: variable.to_owned(),
            sections: SECTIONS.map(|section| section.name).join(", "),
        });
    };
    if !section.settings.iter().any(|setting| setting.key == key) {
        return Err(ConfigError::UnknownKey {
            variable: variable.to_owned(),
            section: section.name.to_owned(),
            key: key.to_owned(),
            keys: section
                .settings
                .iter()
                .map(|setting| setting.key)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok((section.name.to_owned(), key.to_owned()))
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
    let mut table = table;
    // A sub-table's name holds its path: `ace.compression`.
    for part in section.split('.') {
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            // The file's own check refuses a non-table section before overrides are applied.
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(inner) = entry else {
            return;
        };
        table = inner;
    }
    table.insert(key.to_owned(), value);
}

/// The table at a section's dotted name (`ace.compression`) in `table`, if there is one.
fn table_at<'a>(table: &'a toml::Table, section: &str) -> Option<&'a toml::Table> {
    section
        .split('.')
        .try_fold(table, |table, part| table.get(part)?.as_table())
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::de::{self, Deserializer, Visitor};

    use super::*;

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
        for section in SECTIONS {
            let listed = table_at(&table, section.name).unwrap();
            let keys: BTreeSet<&str> = listed.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                section.settings.iter().map(|s| s.key).collect(),
                "[{}] in the template",
                section.name
            );
        }
        assert!(!template.contains("has no default"), "{template}");
    }

    fn is_setting(line: &str) -> bool {
        line.split_once(" = ").is_some_and(|(key, _)| {
            SECTIONS
                .iter()
                .any(|section| section.settings.iter().any(|s| s.key == key))
        })
    }

    /// A section's name and the fields serde knows of its type.
    fn serde_fields<T: ConfigSection>() -> (&'static str, &'static [&'static str]) {
        (T::NAME, field_names::<T>())
    }

    #[test]
    fn template_lists_exactly_the_fields_serde_knows() {
        // A sub-table (`ace.compression`) is a field of its parent (`ace`), listed once.
        let mut names: Vec<&str> = SECTIONS
            .iter()
            .map(|section| section.name.split('.').next().unwrap())
            .collect();
        names.dedup();
        // `[[rules]]` and `[[drop]]` are arrays of tables, shown as the template's closing
        // examples.
        let sections: Vec<&str> = field_names::<Config>()
            .iter()
            .copied()
            .filter(|name| *name != "rules" && *name != "drop")
            .collect();
        assert_eq!(
            sections, names,
            "every field of Config needs its place in SECTIONS, in the same order"
        );
        let serde_fields = [
            serde_fields::<ServerConfig>(),
            serde_fields::<mailroom_sftp::Config>(),
            serde_fields::<mailroom_ftps::Config>(),
            serde_fields::<mailroom_https::Config>(),
            serde_fields::<crate::auth::AuthSection>(),
            serde_fields::<crate::ace::AuthenticationSection>(),
            serde_fields::<crate::ace::CompressionSection>(),
            serde_fields::<crate::ace::EncryptionSection>(),
            serde_fields::<crate::syslog::AuditConfig>(),
            serde_fields::<RetentionConfig>(),
            serde_fields::<DiskConfig>(),
            serde_fields::<crate::engines::MetaConfig>(),
            serde_fields::<crate::engines::BlobConfig>(),
            serde_fields::<crate::at_rest::AtRestConfig>(),
            serde_fields::<crate::ops::OpsConfig>(),
            serde_fields::<crate::ca::TlsConfig>(),
            serde_fields::<mailroom_events::JobsConfig>(),
            serde_fields::<mailroom_events::WebhooksConfig>(),
            serde_fields::<mailroom_events::SmtpConfig>(),
            serde_fields::<mailroom_events::NotificationsConfig>(),
            serde_fields::<mailroom_events::CheckConfig>(),
        ];
        assert_eq!(serde_fields.map(|(name, _)| name), SECTIONS.map(|s| s.name));
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for (section, (_, fields)) in SECTIONS.iter().zip(serde_fields) {
            let listed: Vec<&str> = section.settings.iter().map(|s| s.key).collect();
            assert_eq!(listed, fields, "[{}]", section.name);
            // Every setting has a default value, so the template can show it.
            let values: BTreeSet<&str> = table_at(&defaults, section.name)
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                values,
                fields.iter().copied().collect(),
                "[{}] defaults",
                section.name
            );
            assert!(section.doc.iter().any(|line| !line.trim().is_empty()));
            for setting in section.settings {
                assert!(
                    setting.doc.iter().any(|line| !line.trim().is_empty()),
                    "{}.{} has no doc",
                    section.name,
                    setting.key
                );
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
        check_ok(
            "[ftps]\nclient_certificates = \"required\"\n",
            &[("MAILROOM_HTTPS_CLIENT_CERTIFICATES", "optional")],
            |c| {
                c.ftps.client_certificates = mailroom_tls::ClientAuth::Required;
                c.https.client_certificates = mailroom_tls::ClientAuth::Optional;
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
    fn ace_sub_tables_in_the_file_and_the_environment() {
        let zstd: mailroom_ace::Method = "zstd".parse().unwrap();
        check_ok("[ace.compression]\ndefault = [\"zstd\"]\n", &[], |c| {
            c.ace.compression.default = vec![zstd.clone()]
        });
        check_ok(
            "",
            &[("MAILROOM_ACE_COMPRESSION_DEFAULT", "[\"zstd\"]")],
            |c| c.ace.compression.default = vec![zstd.clone()],
        );
        check_ok(
            "[ace.encryption]\nsupported = [\"tls\"]\n",
            &[("MAILROOM_ACE_ENCRYPTION_DEFAULT", "[]")],
            |c| {
                c.ace.encryption.supported = vec!["tls".parse().unwrap()];
                c.ace.encryption.default = Vec::new();
            },
        );
        check_err(
            "[ace.compression]\nsupported = [\"Zstd\"]\n",
            &[],
            &["line 2", "\"Zstd\" is not a method keyword"],
        );
        check_err(
            "[ace.authentication]\nservice_default = []\n",
            &[],
            &["line 2", "service_default"],
        );
        check_err(
            "",
            &[("MAILROOM_ACE_COMPRESSION_LEVEL", "3")],
            &["MAILROOM_ACE_COMPRESSION_LEVEL", "supported"],
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
        check_err(
            "[https]\nclient_certificates = \"yes\"\n",
            &[],
            &[
                "line 2",
                "key https.client_certificates",
                "`off`, `optional`, `required`",
            ],
        );
        // Listeners that are off until given an address (`mailroom_net::serde_optional_address`).
        check_err(
            "[ops]\nlisten = \"9180\"\n",
            &[],
            &["line 2", "key ops.listen", "\"9180\" is not an address"],
        );
        check_err(
            "[ftps]\nimplicit_listen = \"localhost\"\n",
            &[],
            &["line 2", "key ftps.implicit_listen", "\"localhost\" is not"],
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
            &[("MAILROOM_OPS_LISTEN", "nope")],
            &[
                "MAILROOM_OPS_LISTEN",
                "ops.listen",
                "\"nope\" is not an address",
            ],
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
        check_err(
            "",
            &[("MAILROOM_FTPS_CLIENT_CERTIFICATES", "on")],
            &[
                "MAILROOM_FTPS_CLIENT_CERTIFICATES",
                "ftps.client_certificates",
                "`off`, `optional`, `required`",
            ],
        );
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
