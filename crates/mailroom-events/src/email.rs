//! E-mail: the `[smtp]` section and the mailer that sends an event to an address, or an
//! account's notice (a new file, a receipt, a digest) as plain text.
//!
//! A mail carries a readable text part and the event as JSON (the form the API and the
//! webhooks use), and its `Message-ID` is the job's id, so a mail sent twice after a crash
//! is recognisably the same mail. The transport is lettre over rustls (aws-lc-rs):
//! STARTTLS, implicit TLS, or plain text to a relay on loopback only; SMTP authentication
//! when a user is configured, over TLS only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mailroom_api::EventView;
use mailroom_core::{
    AccountName, DIGEST_RULE, Delivery, Event, EventKind, Hub, Job, NOTIFY_RULE, RECEIPT_RULE,
    format_size,
};
use serde::{Deserialize, Serialize};

mailroom_net::config_section! {
    [smtp]
    /// E-mail: where the hub sends the mails of rules (`email = [...]` in `[[rules]]`).
    /// Each mail holds the event as text and as JSON; its Message-ID is the job's id.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct SmtpConfig {
        /// The server, "host:port"; empty: no e-mail (rules that send e-mail refuse to
        /// start).
        pub server: String,
        /// "starttls" (upgrade a plain connection, usually port 587), "tls" (TLS from the
        /// first byte, usually 465) or "none" (plain text, allowed only to a relay on
        /// loopback).
        pub security: SmtpSecurity,
        /// The sender address of every mail.
        pub from: String,
        /// The SMTP user; empty: no authentication.
        pub username: String,
        /// The file holding the SMTP password (one line), relative to the data folder.
        pub password_file: PathBuf,
        /// A PEM file of CA certificates to trust besides the system's; empty: the system's.
        pub ca_file: PathBuf,
        /// Seconds the server has to answer each step before the attempt counts as failed.
        pub timeout_seconds: u64,
    }
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required.
    Starttls,
    /// TLS from the first byte.
    Tls,
    /// No TLS: loopback relays only.
    None,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            server: String::new(),
            security: SmtpSecurity::Starttls,
            from: "mailroom@localhost".to_owned(),
            username: String::new(),
            password_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            timeout_seconds: 30,
        }
    }
}

impl SmtpConfig {
    /// Whether e-mail is configured at all.
    pub fn enabled(&self) -> bool {
        !self.server.trim().is_empty()
    }
}

/// Sends the mails of e-mail jobs.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The mailer `config` describes (paths relative to `data_dir`); `None` when `[smtp]`
    /// names no server. The error names the setting at fault.
    pub fn new(config: &SmtpConfig, data_dir: &Path) -> Result<Option<Mailer>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let (host, port) = split_server(&config.server)?;
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|err| format!("[smtp] from {:?}: {err}", config.from))?;
        let tls = |host: &str| -> Result<TlsParameters, String> {
            let mut builder = TlsParameters::builder(host.to_owned())
                .certificate_store(CertificateStore::WebpkiRoots);
            if !config.ca_file.as_os_str().is_empty() {
                let path = data_dir.join(&config.ca_file);
                let pem = std::fs::read(&path)
                    .map_err(|err| format!("[smtp] ca_file {}: {err}", path.display()))?;
                for cert in pem_certificates(&pem) {
                    let cert = Certificate::from_pem(cert.as_bytes())
                        .map_err(|err| format!("[smtp] ca_file {}: {err}", path.display()))?;
                    builder = builder.add_root_certificate(cert);
                }
            }
            builder
                .build_rustls()
                .map_err(|err| format!("[smtp] TLS for {host}: {err}"))
        };
        let security = match config.security {
            SmtpSecurity::Starttls => Tls::Required(tls(&host)?),
            SmtpSecurity::Tls => Tls::Wrapper(tls(&host)?),
            SmtpSecurity::None => {
                if !is_loopback(&host) {
                    return Err(format!(
                        "[smtp] security = \"none\" sends mail in plain text: allowed only to a relay on loopback, not {host:?}"
                    ));
                }
                Tls::None
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(security)
            .timeout(Some(Duration::from_secs(config.timeout_seconds.max(1))));
        if !config.username.is_empty() {
            if config.security == SmtpSecurity::None {
                return Err(
                    "[smtp] username: a password is never sent in plain text; use starttls or tls"
                        .to_owned(),
                );
            }
            let path = data_dir.join(&config.password_file);
            let password = std::fs::read_to_string(&path)
                .map_err(|err| format!("[smtp] password_file {}: {err}", path.display()))?;
            builder = builder.credentials(Credentials::new(
                config.username.clone(),
                password.trim_end_matches(['\r', '\n']).to_owned(),
            ));
        }
        Ok(Some(Mailer {
            transport: builder.build(),
            from,
        }))
    }

    /// Mails `event` (for `job`) to `to`; Ok once the server accepted it.
    pub async fn send(&self, to: &str, job: &Job, event: &Event) -> Result<(), String> {
        let view = EventView::from(event);
        let json =
            serde_json::to_string_pretty(&view).map_err(|err| format!("event as JSON: {err}"))?;
        let text = format!(
            "Mailroom rule \"{rule}\" selected this event.\n\n\
             What:    {kind} ({outcome})\n\
             When:    {time}\n\
             Who:     {actor}{source}\n\
             Object:  {object}\n\
             Detail:  {detail}\n\n\
             The event is attached as JSON. Job {job} (the same id on every attempt).\n",
            rule = job.rule,
            kind = view.kind,
            outcome = view.outcome,
            time = view.time,
            actor = view.actor,
            source = view
                .source
                .as_deref()
                .map(|s| format!(" from {s}"))
                .unwrap_or_default(),
            object = view.object,
            detail = view.detail,
            job = job.id,
        );
        let message = self
            .envelope(to, job)?
            .subject(format!(
                "[Mailroom] {} {}: {}",
                view.kind,
                view.outcome,
                one_line(&view.object)
            ))
            .multipart(
                MultiPart::mixed()
                    .singlepart(SinglePart::plain(text))
                    .singlepart(
                        SinglePart::builder()
                            .header(
                                ContentType::parse("application/json")
                                    .map_err(|e| e.to_string())?,
                            )
                            .body(json),
                    ),
            )
            .map_err(|err| format!("building the mail: {err}"))?;
        self.deliver(message).await
    }

    /// A mail to `to` from the hub, its Message-ID the job's id.
    fn envelope(&self, to: &str, job: &Job) -> Result<lettre::message::MessageBuilder, String> {
        let to: Mailbox = to
            .parse()
            .map_err(|err| format!("{to:?} is not an address: {err}"))?;
        Ok(Message::builder()
            .from(self.from.clone())
            .to(to)
            .message_id(Some(format!("<{}@mailroom>", job.id))))
    }

    /// Hands a mail to the server; Ok once it accepted it.
    async fn deliver(&self, message: Message) -> Result<(), String> {
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|err| format!("SMTP: {err}"))
    }
}

/// What an account's notice says (see `mailroom_core`'s notices): a new file, a receipt, or
/// a digest of the files waiting.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A file was delivered to the account.
    NewFile(Delivery),
    /// A file the account sent was picked up or acknowledged.
    Receipt(Delivery, EventKind),
    /// The files waiting in the account's inbox.
    Digest(AccountName, Vec<Delivery>),
}

impl Notice {
    /// The notice `job` (about `event`) sends: `None` when the job is a rule's, not a
    /// notice; `Some(None)` when there is nothing left to say (the file is gone, no file
    /// waits).
    pub async fn of(hub: &Hub, job: &Job, event: &Event) -> Result<Option<Option<Notice>>, String> {
        let rule = job.rule.as_str();
        if ![NOTIFY_RULE, RECEIPT_RULE, DIGEST_RULE].contains(&rule) {
            return Ok(None);
        }
        let Some(delivery) = hub
            .event_delivery(event)
            .await
            .map_err(|err| err.to_string())?
        else {
            return Ok(Some(None));
        };
        Ok(Some(match rule {
            NOTIFY_RULE => Some(Notice::NewFile(delivery)),
            RECEIPT_RULE => Some(Notice::Receipt(delivery, event.kind)),
            _ => {
                let files = hub
                    .waiting_files(&delivery.recipient)
                    .await
                    .map_err(|err| err.to_string())?;
                (!files.is_empty()).then_some(Notice::Digest(delivery.recipient, files))
            }
        }))
    }

    /// The subject and the text of its mail.
    fn mail(&self) -> (String, String) {
        let file =
            |d: &Delivery| format!("{} ({}, SHA-256 {})", d.name, format_size(d.size), d.sha256);
        match self {
            Notice::NewFile(d) => (
                format!("New file from {}: {}", d.sender, d.name),
                format!(
                    "{} sent you {}.\n\nIt waits in your inbox at /inbox/{}/{}.\n\nDelivery {}.\n",
                    d.sender,
                    file(d),
                    d.sender,
                    d.name,
                    d.id
                ),
            ),
            Notice::Receipt(d, kind) => {
                let did = if *kind == EventKind::DeliveryAcknowledged {
                    "acknowledged"
                } else {
                    "picked up"
                };
                (
                    format!("{} {did} {}", d.recipient, d.name),
                    format!(
                        "{} {did} {}, which you sent.\n\nDelivery {}.\n",
                        d.recipient,
                        file(d),
                        d.id
                    ),
                )
            }
            Notice::Digest(account, files) => {
                let mut text = format!(
                    "{} file(s) wait in the inbox of {account}:\n\n",
                    files.len()
                );
                for d in files {
                    text.push_str(&format!(
                        "  from {:<16} {:<40} {:>10}  {}\n",
                        d.sender.as_str(),
                        d.name.as_str(),
                        format_size(d.size),
                        mailroom_api::rfc3339(d.created)
                    ));
                }
                (format!("{} file(s) wait in your inbox", files.len()), text)
            }
        }
    }
}

impl Mailer {
    /// Mails an account's notice (for `job`, whose id is its Message-ID) to `to`; Ok once
    /// the server accepted it.
    pub async fn send_notice(&self, to: &str, job: &Job, notice: &Notice) -> Result<(), String> {
        let (subject, text) = notice.mail();
        let message = self
            .envelope(to, job)?
            .subject(format!("[Mailroom] {}", one_line(&subject)))
            .singlepart(SinglePart::plain(text))
            .map_err(|err| format!("building the mail: {err}"))?;
        self.deliver(message).await
    }
}

/// `host:port` (a bracketed IPv6 address too).
fn split_server(server: &str) -> Result<(String, u16), String> {
    let bad = || format!("[smtp] server {server:?}: expected host:port");
    let (host, port) = server.trim().rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The PEM blocks of a bundle, each as its own text.
fn pem_certificates(pem: &[u8]) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    text.split_inclusive(END)
        .filter(|block| block.contains("-----BEGIN CERTIFICATE-----"))
        .map(|block| block.trim().to_owned())
        .collect()
}

/// A subject line's part: control characters out, at most 100 characters.
fn one_line(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(100).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // The transport's connection pool needs a runtime to start in.
    #[tokio::test]
    async fn plain_text_goes_to_loopback_only_and_never_with_a_password() {
        let data = std::path::Path::new("/nonexistent");
        let plain = |server: &str| SmtpConfig {
            server: server.to_owned(),
            security: SmtpSecurity::None,
            ..SmtpConfig::default()
        };
        assert!(
            Mailer::new(&plain("127.0.0.1:2525"), data)
                .unwrap()
                .is_some()
        );
        assert!(Mailer::new(&plain("localhost:25"), data).unwrap().is_some());
        let err = Mailer::new(&plain("mail.example.test:25"), data)
            .err()
            .unwrap();
        assert!(err.contains("loopback"), "{err}");
        let with_user = SmtpConfig {
            username: "hub".to_owned(),
            ..plain("127.0.0.1:2525")
        };
        assert!(
            Mailer::new(&with_user, data)
                .err()
                .unwrap()
                .contains("plain text")
        );
        assert!(Mailer::new(&SmtpConfig::default(), data).unwrap().is_none());
        for bad in ["mail.example.test", ":25", "host:port"] {
            assert!(Mailer::new(&plain(bad), data).is_err(), "{bad}");
        }
    }
}
