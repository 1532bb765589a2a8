//! `mailroom`, the one binary of the hub: command line, configuration, wiring of the storage
//! engines into the mailbox service, the front ends, and signals.
//!
//! This file only parses the command line, runs the chosen command on a Tokio runtime and
//! turns its result into an exit code: 0 on success, 1 with one sentence on standard error
//! when a command is refused or fails, 2 for a malformed command line (clap's own).

mod ace;
mod admin;
mod at_rest;
mod audit;
mod auth;
mod backup;
mod ca;
mod cli;
mod clock;
mod config;
mod data;
mod drop;
mod e2e;
mod engines;
mod fsck;
mod init;
mod install;
mod jobs;
mod logging;
mod migrate;
mod ops;
mod output;
mod quarantine;
mod rules;
mod security;
mod serve;
mod session;
mod strict;
mod syslog;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::data::DataDir;
use crate::output::Output;

/// How long the runtime waits at exit for blocking work (a file sync, a hash) still running.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for every TLS config in the process: aws-lc-rs (CONTRIBUTING.md,
    // "Dependencies").
    mailroom_tls::install_provider();
    let out = Output::new(cli.json);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            let result = runtime.block_on(run(cli, &out));
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `mailroom audit list | head`: the reader left; the command itself did its work.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            output::error(&err);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, out: &Output) -> Result<()> {
    let data = DataDir::new(cli.data);
    match cli.command {
        Command::Serve => serve::run(&data, out).await,
        Command::VerifyInstall { manifest } => {
            let check = install::verify(manifest.as_deref())?;
            out.install_verified(&check)
        }
        Command::Init => {
            logging::install_for_cli()?;
            let report = init::run(&data, &admin::cli_actor()).await?;
            out.init(&report)
        }
        Command::Account(command) => {
            logging::install_for_cli()?;
            admin::account(&data, out, command).await
        }
        Command::Group(command) => {
            logging::install_for_cli()?;
            admin::group(&data, out, command).await
        }
        Command::Route(command) => {
            logging::install_for_cli()?;
            admin::route(&data, out, command).await
        }
        Command::Audit(command) => {
            logging::install_for_cli()?;
            audit::run(&data, out, command).await
        }
        Command::Ban(command) => {
            logging::install_for_cli()?;
            security::ban(&data, out, command).await
        }
        Command::Retention(command) => {
            logging::install_for_cli()?;
            admin::retention(&data, out, command).await
        }
        Command::Status => {
            logging::install_for_cli()?;
            admin::status(&data, out).await
        }
        Command::Ca(command) => {
            logging::install_for_cli()?;
            ca::run(&data, out, command).await
        }
        Command::Keys(command) => {
            logging::install_for_cli()?;
            at_rest::run(&data, out, command).await
        }
        Command::Jobs(command) => {
            logging::install_for_cli()?;
            jobs::run(&data, out, command).await
        }
        Command::Quarantine(command) => {
            logging::install_for_cli()?;
            quarantine::run(&data, out, command).await
        }
        Command::Session(command) => {
            logging::install_for_cli()?;
            session::run(&data, out, command).await
        }
        Command::Backup { dir, base } => {
            logging::install_for_cli()?;
            backup::backup(&data, out, &dir, base.as_deref()).await
        }
        Command::Restore { dir } => {
            logging::install_for_cli()?;
            backup::restore(&data, out, &dir).await
        }
        Command::Fsck { repair } => {
            logging::install_for_cli()?;
            fsck::run(&data, out, repair).await
        }
        Command::Migrate { meta, blob } => {
            logging::install_for_cli()?;
            migrate::run(&data, out, &meta, &blob).await
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
