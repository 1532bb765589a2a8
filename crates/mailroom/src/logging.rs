//! The tracing subscriber: the one place that decides where log lines go and how they look.
//!
//! Logs go to standard error, so standard output stays for command results and the
//! machine-readable lines of `serve`. `MAILROOM_LOG` (a tracing filter) wins over the
//! configured level. Libraries only emit events; they never install a subscriber.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, ServerConfig};

/// The environment variable that overrides the log filter.
const LOG_ENV: &str = "MAILROOM_LOG";

/// Installs the subscriber for `serve`, as the `[server]` section asks.
pub fn install_for_server(server: &ServerConfig) -> Result<()> {
    install(server.log_format, filter(server.log_level.as_str())?)
}

/// Installs a quiet subscriber for the admin commands: warnings and errors only, unless
/// `MAILROOM_LOG` says otherwise.
pub fn install_for_cli() -> Result<()> {
    install(LogFormat::Text, filter("warn")?)
}

fn filter(configured: &str) -> Result<EnvFilter> {
    match std::env::var(LOG_ENV) {
        Ok(directives) => EnvFilter::builder()
            .parse(&directives)
            .with_context(|| format!("environment variable {LOG_ENV} is not a log filter")),
        Err(std::env::VarError::NotPresent) => EnvFilter::builder()
            .parse(configured)
            .context("[server] log_level is not a log filter"),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("environment variable {LOG_ENV} is not valid UTF-8")
        }
    }
}

fn install(format: LogFormat, filter: EnvFilter) -> Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|err| anyhow::anyhow!("cannot install the log subscriber: {err}"))
}
