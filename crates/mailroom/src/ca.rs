//! The `[tls]` section and the `mailroom ca …` commands: the local PKI of the data folder
//! (`mailroom_tls`), which `init` and `serve` bring up to date, and client certificates issued
//! for client accounts.
//!
//! This module decides who may get a client certificate (an existing client account, and
//! only while the client CA is ours); the certificates themselves are made by
//! `mailroom_tls`. It prints nothing: results go through [`Output`].

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mailroom_core::AccountKind;
use serde::{Deserialize, Serialize};

use crate::admin::{parse_name, with_hub};
use crate::cli::CaCommand;
use crate::config::Config;
use crate::data::DataDir;
use crate::output::Output;

mailroom_net::config_section! {
    [tls]
    /// The certificates of the TLS front ends (FTPS, HTTPS): a server CA and server
    /// certificate, and a client CA (in `dir`).
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct TlsConfig {
        /// Host names and IP addresses the server certificate names; a change re-issues it
        /// (the CA is kept).
        pub hostnames: Vec<String>,
        /// The PKI folder, relative to the data folder unless absolute.
        pub dir: PathBuf,
        /// An external CA bundle (PEM) to verify client certificates against instead of our
        /// client CA; empty for ours.
        pub client_ca_bundle: PathBuf,
        /// A CRL file (PEM or DER) of the client CA; listed client certificates are refused.
        /// Empty for none.
        pub crl: PathBuf,
        /// Days a newly issued server certificate is valid (1 to 398; Mozilla's intermediate
        /// profile allows at most 365).
        pub server_cert_days: u32,
        /// A server certificate chain (PEM, the server's certificate first) issued by a CA
        /// your clients already trust, served instead of ours; set with `key_file`. Every
        /// node of a cluster serves the same one. Empty for the local PKI's.
        pub cert_file: PathBuf,
        /// The private key (PEM) of `cert_file`; readable by the hub's user only.
        pub key_file: PathBuf,
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        let pki = mailroom_tls::PkiSettings::default();
        TlsConfig {
            hostnames: pki.hostnames,
            dir: PathBuf::from("tls"),
            client_ca_bundle: PathBuf::new(),
            crl: PathBuf::new(),
            server_cert_days: pki.server_cert_days,
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
        }
    }
}

impl TlsConfig {
    /// What `ensure_pki` needs.
    pub fn pki_settings(&self) -> mailroom_tls::PkiSettings {
        mailroom_tls::PkiSettings {
            hostnames: self.hostnames.clone(),
            server_cert_days: self.server_cert_days,
        }
    }

    /// Refuses `cert_file` without `key_file` or the other way round.
    pub fn check_server_files(&self) -> Result<()> {
        if self.cert_file.as_os_str().is_empty() != self.key_file.as_os_str().is_empty() {
            bail!(
                "invalid configuration: [tls] cert_file and key_file are set together (a certificate from your CA and its key) or not at all"
            );
        }
        Ok(())
    }

    /// Whether client certificates are verified against an external CA bundle.
    pub fn external_client_ca(&self) -> bool {
        !self.client_ca_bundle.as_os_str().is_empty()
    }

    /// What a TLS front end serves with, client authentication off; the front end sets its
    /// ALPN list and client authentication mode.
    /// A server certificate set in `cert_file` and `key_file` replaces the PKI's (both or
    /// neither: `check_server_files`).
    pub fn settings(&self, data: &DataDir, pki: &mailroom_tls::Pki) -> mailroom_tls::TlsSettings {
        let mut settings = mailroom_tls::TlsSettings::from_pki(pki);
        if !self.cert_file.as_os_str().is_empty() {
            settings.cert_chain = data.resolve(&self.cert_file);
            settings.key = data.resolve(&self.key_file);
        }
        if self.external_client_ca() {
            settings.client_ca = data.resolve(&self.client_ca_bundle);
        }
        if !self.crl.as_os_str().is_empty() {
            settings.crl = Some(data.resolve(&self.crl));
        }
        settings
    }
}

/// Creates or updates the PKI of the data folder (see `mailroom_tls::ensure_pki`) on the
/// blocking pool, and returns it.
pub async fn ensure(data: &DataDir, config: &Config) -> Result<mailroom_tls::Pki> {
    let dir = data.resolve(&config.tls.dir);
    let settings = config.tls.pki_settings();
    let shown = dir.clone();
    let pki = tokio::task::spawn_blocking(move || mailroom_tls::ensure_pki(&dir, &settings))
        .await
        .context("the PKI task failed")?
        .with_context(|| format!("cannot prepare the TLS certificates in {}", shown.display()))?;
    if let Some(reason) = pki.server_reissued {
        tracing::info!(
            reason = ?reason,
            fingerprint = %pki.server_cert.fingerprint_sha256,
            not_after = %pki.server_cert.not_after,
            "issued the server certificate"
        );
    }
    Ok(pki)
}

/// `mailroom ca …`.
pub async fn run(data: &DataDir, out: &Output, command: CaCommand) -> Result<()> {
    let config = crate::config::load(&data.config_file(), &crate::config::env_overrides()?)
        .context("invalid configuration")?;
    match command {
        CaCommand::IssueClient {
            name,
            out: dir,
            days,
        } => {
            let name = parse_name(&name)?;
            if config.tls.external_client_ca() {
                bail!("the client CA is external; issue client certificates there");
            }
            let account = with_hub(data, async |hub| Ok(hub.account(&name).await?)).await?;
            if account.kind != AccountKind::Client {
                bail!(
                    "{name} is an admin account; client certificates are only for client accounts"
                );
            }
            let pki = load(data, &config)?;
            let made_dir = create_out_dir(&dir)?;
            let issued = mailroom_tls::issue_client(&pki, name.as_str(), days, &dir)
                .inspect_err(|_| {
                    if made_dir {
                        // Only the empty folder this command made; a refusal leaves no trace.
                        let _ = std::fs::remove_dir(&dir);
                    }
                })
                .with_context(|| format!("cannot issue a client certificate for {name}"))?;
            tracing::info!(
                account = %name,
                serial = %issued.info.serial_hex,
                fingerprint = %issued.info.fingerprint_sha256,
                "issued a client certificate"
            );
            out.client_issued(&issued)
        }
        CaCommand::Show => {
            let pki = load(data, &config)?;
            let external = if config.tls.external_client_ca() {
                let path = data.resolve(&config.tls.client_ca_bundle);
                Some((path.clone(), read_bundle(&path)?))
            } else {
                None
            };
            out.ca_show(&pki, external.as_ref())
        }
    }
}

/// The PKI as it is on disk (nothing is created or re-issued by a `ca` command).
fn load(data: &DataDir, config: &Config) -> Result<mailroom_tls::Pki> {
    let dir = data.resolve(&config.tls.dir);
    mailroom_tls::load_pki(&dir).with_context(|| {
        format!(
            "cannot read the TLS certificates in {}; run `mailroom init` first",
            dir.display()
        )
    })
}

/// The certificates of an external CA bundle, parsed for `ca show`.
fn read_bundle(path: &Path) -> Result<Vec<mailroom_tls::CertInfo>> {
    mailroom_tls::read_cert_infos(path)
        .with_context(|| format!("cannot read the client CA bundle {}", path.display()))
}

/// Creates the output folder (0700: it is about to hold a private key) if missing; returns
/// whether it did.
fn create_out_dir(dir: &Path) -> Result<bool> {
    if dir.exists() {
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(true)
}
