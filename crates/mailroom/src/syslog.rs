//! The syslog sink: every committed audit event sent as one RFC 5424 message over UDP
//! (RFC 5426) or a local Unix datagram socket (`/dev/log`), and the `[audit]` section that
//! configures it.
//!
//! The metadata store hands committed records to a bounded channel without ever waiting
//! (its event tap, shared out by `ops::fan_out`); one task here formats and sends them. A
//! message that cannot be sent is logged and dropped: the database stays the audit record, syslog is a
//! copy for a collector elsewhere. The formatter is written by hand (it is small) so that the
//! structured data carries every field of the event, escaped as RFC 5424 §6.3.3 says.
//! Events of admin commands run as separate processes are not sent (they have no sink);
//! `mailroom audit export` covers them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use mailroom_core::{AuditRecord, Outcome};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Records waiting for the sender before new ones are dropped (and counted).
const QUEUE: usize = 4096;

/// Largest message sent; the free text is cut to fit. rsyslog's default limit is 8 KiB.
const MAX_MESSAGE: usize = 8192;

/// The SD-ID of the structured data: `mailroom` at the private enterprise number 32473, the
/// one RFC 5612 reserves for documentation and examples, until the project has its own.
const SD_ID: &str = "mailroom@32473";

mailroom_net::config_section! {
    [audit]
    /// Copies of the audit trail: each committed event as an RFC 5424 syslog message.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct AuditConfig {
        /// Where to send each committed audit event: "off", "udp://IP:PORT", or
        /// "unix:///dev/log" (a local datagram socket).
        pub syslog: SyslogTarget,
        /// The syslog facility: authpriv (kept private by syslog daemons; the messages name
        /// accounts and addresses), auth, daemon, user, or local0 to local7.
        pub syslog_facility: Facility,
        /// The APP-NAME field of the messages: 1 to 48 printable ASCII characters.
        pub syslog_app_name: AppName,
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            syslog: SyslogTarget::Off,
            syslog_facility: Facility::Authpriv,
            syslog_app_name: AppName("mailroom".to_owned()),
        }
    }
}

/// Where syslog messages go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SyslogTarget {
    /// Nowhere: the sink is off.
    Off,
    /// A collector over UDP.
    Udp(SocketAddr),
    /// A local datagram socket, usually `/dev/log`.
    Unix(PathBuf),
}

impl SyslogTarget {
    /// The form written in the file.
    pub fn to_setting(&self) -> String {
        match self {
            SyslogTarget::Off => "off".to_owned(),
            SyslogTarget::Udp(address) => format!("udp://{address}"),
            SyslogTarget::Unix(path) => format!("unix://{}", path.display()),
        }
    }
}

/// Written as in the file: `"off"`, `"udp://IP:PORT"`, `"unix:///PATH"`.
impl Serialize for SyslogTarget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_setting())
    }
}

impl TryFrom<String> for SyslogTarget {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value == "off" {
            return Ok(SyslogTarget::Off);
        }
        if let Some(address) = value.strip_prefix("udp://") {
            return address.parse().map(SyslogTarget::Udp).map_err(|_| {
                format!("{address:?} is not an IP address and port (udp://127.0.0.1:514)")
            });
        }
        if let Some(path) = value.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{path:?} is not an absolute socket path (unix:///dev/log)"
                ));
            }
            return Ok(SyslogTarget::Unix(PathBuf::from(path)));
        }
        Err(format!(
            "{value:?} is not \"off\", \"udp://IP:PORT\" or \"unix:///PATH\""
        ))
    }
}

/// A syslog facility (RFC 5424 §6.2.1). The default, `authpriv`, is the one meant for
/// security records kept private: the messages name accounts and addresses of refused
/// logins, and syslog daemons write `authpriv` to a file only root can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)] // The names are the standard facility names.
pub enum Facility {
    User,
    Daemon,
    Auth,
    Authpriv,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The facility's number.
    pub fn code(self) -> u8 {
        match self {
            Facility::User => 1,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Authpriv => 10,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }

    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Facility::User => "user",
            Facility::Daemon => "daemon",
            Facility::Auth => "auth",
            Facility::Authpriv => "authpriv",
            Facility::Local0 => "local0",
            Facility::Local1 => "local1",
            Facility::Local2 => "local2",
            Facility::Local3 => "local3",
            Facility::Local4 => "local4",
            Facility::Local5 => "local5",
            Facility::Local6 => "local6",
            Facility::Local7 => "local7",
        }
    }
}

/// An RFC 5424 APP-NAME: 1 to 48 printable ASCII characters, no space.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct AppName(String);

impl AppName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if (1..=48).contains(&value.len()) && value.bytes().all(|b| (33..=126).contains(&b)) {
            Ok(AppName(value))
        } else {
            Err(format!(
                "{value:?} is not 1 to 48 printable ASCII characters without spaces"
            ))
        }
    }
}

/// The running sink: stop it after the store has closed, so every committed event is sent.
pub struct Sink {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Sink {
    /// Sends what is queued, then ends the task.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts the sink if `[audit] syslog` is set: opens the socket (so a wrong path fails at
/// start, naming the setting) and spawns the sending task; committed records go to the
/// returned sender (the store's tap, through `ops::fan_out`).
pub async fn start(config: &AuditConfig) -> Result<Option<(Sink, mpsc::Sender<AuditRecord>)>> {
    let transport = match &config.syslog {
        SyslogTarget::Off => return Ok(None),
        SyslogTarget::Udp(address) => {
            let local: SocketAddr = if address.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0_u16; 8], 0).into()
            };
            let socket = UdpSocket::bind(local)
                .await
                .context("cannot open a UDP socket for syslog ([audit] syslog)")?;
            socket.connect(address).await.with_context(|| {
                format!("cannot reach syslog at udp://{address} ([audit] syslog)")
            })?;
            Transport::Udp(socket)
        }
        SyslogTarget::Unix(path) => {
            let socket = UnixDatagram::unbound()
                .context("cannot open a Unix socket for syslog ([audit] syslog)")?;
            socket.connect(path).with_context(|| {
                format!(
                    "cannot reach syslog at unix://{} ([audit] syslog)",
                    path.display()
                )
            })?;
            Transport::Unix(socket)
        }
    };
    let header = Header {
        facility: config.syslog_facility,
        hostname: hostname(),
        app_name: config.syslog_app_name.as_str().to_owned(),
        procid: std::process::id(),
    };
    let (sender, receiver) = mpsc::channel(QUEUE);
    let stop = CancellationToken::new();
    let task = tokio::spawn(send_all(receiver, transport, header, stop.clone()));
    info!(target = %config.syslog.to_setting(), facility = config.syslog_facility.as_str(), "sending audit events to syslog");
    Ok(Some((Sink { stop, task }, sender)))
}

/// The fixed fields of every message.
#[derive(Debug, Clone)]
struct Header {
    facility: Facility,
    hostname: String,
    app_name: String,
    procid: u32,
}

enum Transport {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Transport {
    async fn send(&self, message: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Udp(socket) => socket.send(message).await,
            Transport::Unix(socket) => socket.send(message).await,
        }
    }
}

/// Sends records until stopped, then sends what is still queued and ends.
async fn send_all(
    mut receiver: mpsc::Receiver<AuditRecord>,
    transport: Transport,
    header: Header,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let record = tokio::select! {
            record = receiver.recv() => record,
            () = stop.cancelled() => break,
        };
        let Some(record) = record else { return };
        send_one(&transport, &header, &record, &mut failing).await;
    }
    while let Ok(record) = receiver.try_recv() {
        send_one(&transport, &header, &record, &mut failing).await;
    }
}

/// Sends one message; logs the first failure of a run of failures, and the recovery.
async fn send_one(
    transport: &Transport,
    header: &Header,
    record: &AuditRecord,
    failing: &mut bool,
) {
    let message = format_message(header, record);
    match transport.send(&message).await {
        Ok(_) if *failing => {
            *failing = false;
            info!("syslog reachable again");
        }
        Ok(_) => {}
        Err(err) if !*failing => {
            *failing = true;
            warn!(error = %err, event_id = %record.event.id, "cannot send audit events to syslog; dropping them until it works again");
        }
        Err(_) => {}
    }
}

/// One RFC 5424 message:
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [mailroom@32473 id="…" seq="…" actor="…"
/// source="…" protocol="…" object="…" outcome="…" hash="…"] BOM detail`.
///
/// PRI is facility × 8 + severity: info for ok, warning for refused, error for failed. MSGID
/// is the event kind. `source` is left out when the event has none, and the message part when
/// the detail is empty; the detail is cut (at a character boundary) to keep the message
/// within 8 KiB.
fn format_message(header: &Header, record: &AuditRecord) -> Vec<u8> {
    let event = &record.event;
    let severity: u8 = match event.outcome {
        Outcome::Ok => 6,
        Outcome::Refused => 4,
        Outcome::Failed => 3,
    };
    let pri = u16::from(header.facility.code()) * 8 + u16::from(severity);
    let mut text = format!(
        "<{pri}>1 {} {} {} {} {} [{SD_ID}",
        timestamp(event.time),
        header.hostname,
        header.app_name,
        header.procid,
        event.kind.as_str(),
    );
    let mut param = |name: &str, value: &str| {
        let _ = write!(text, " {name}=\"{}\"", escape_param(value));
    };
    param("id", &event.id.to_string());
    param("seq", &record.seq.to_string());
    param("actor", &event.actor);
    if let Some(source) = &event.source {
        param("source", source);
    }
    param("protocol", event.protocol.as_str());
    param("object", &event.object);
    param("outcome", event.outcome.as_str());
    if let Some(hash) = &record.hash {
        param("hash", hash);
    }
    text.push(']');
    let mut message = text.into_bytes();
    if !event.detail.is_empty() {
        message.extend_from_slice(" \u{feff}".as_bytes());
        let room = MAX_MESSAGE.saturating_sub(message.len());
        message.extend_from_slice(cut(&event.detail, room).as_bytes());
    }
    message
}

/// A PARAM-VALUE with `"`, `\` and `]` escaped by a backslash (RFC 5424 §6.3.3).
fn escape_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// RFC 5424 TIMESTAMP in UTC with microseconds (at most 6 fraction digits are allowed).
fn timestamp(time: OffsetDateTime) -> String {
    time.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .unwrap_or_else(|_| "-".to_owned())
}

/// This machine's name as the kernel knows it, reduced to what HOSTNAME allows
/// (printable ASCII, at most 255), or `-` (the NILVALUE) if there is none. The node's
/// registration names its host with it too.
pub(crate) fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() {
        "-".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;
    use mailroom_core::{Event, EventKind, Protocol};
    use time::macros::datetime;

    fn header() -> Header {
        Header {
            facility: Facility::Local0,
            hostname: "hub1".to_owned(),
            app_name: "mailroom".to_owned(),
            procid: 42,
        }
    }

    fn record(outcome: Outcome, actor: &str, detail: &str) -> AuditRecord {
        AuditRecord {
            seq: 7,
            event: Event {
                id: uuid::Uuid::from_u128(1),
                time: datetime!(2025-01-31 12:00:00.123456789 UTC),
                kind: EventKind::Login,
                actor: actor.to_owned(),
                source: Some("192.0.2.1:5000".to_owned()),
                protocol: Protocol::Ssh,
                object: actor.to_owned(),
                outcome,
                detail: detail.to_owned(),
            },
            prev_hash: Some("0".repeat(64)),
            hash: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn messages_follow_rfc_5424() {
        let message = format_message(
            &header(),
            &record(Outcome::Refused, "root", "wrong password"),
        );
        let text = String::from_utf8(message).unwrap();
        assert_eq!(
            text,
            format!(
                "<132>1 2025-01-31T12:00:00.123456Z hub1 mailroom 42 login [mailroom@32473 \
                 id=\"00000000-0000-0000-0000-000000000001\" seq=\"7\" actor=\"root\" \
                 source=\"192.0.2.1:5000\" protocol=\"ssh\" object=\"root\" outcome=\"refused\" \
                 hash=\"{}\"] \u{feff}wrong password",
                "ab".repeat(32)
            )
        );
        let ok =
            String::from_utf8(format_message(&header(), &record(Outcome::Ok, "a", ""))).unwrap();
        assert!(ok.starts_with("<134>1 "), "{ok}");
        assert!(ok.ends_with(']'), "no message part without a detail: {ok}");
        let failed = String::from_utf8(format_message(
            &header(),
            &record(Outcome::Failed, "a", "x"),
        ))
        .unwrap();
        assert!(failed.starts_with("<131>1 "), "{failed}");
    }

    #[test]
    fn params_are_escaped_and_long_details_cut() {
        assert_eq!(escape_param(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        let long = "é".repeat(MAX_MESSAGE);
        let message = format_message(&header(), &record(Outcome::Ok, "a", &long));
        assert!(message.len() <= MAX_MESSAGE);
        assert!(
            String::from_utf8(message).is_ok(),
            "cut on a character boundary"
        );
    }

    #[test]
    fn targets_parse() {
        let check = |text: &str| SyslogTarget::try_from(text.to_owned());
        assert_eq!(check("off").unwrap(), SyslogTarget::Off);
        assert_eq!(
            check("udp://127.0.0.1:514").unwrap(),
            SyslogTarget::Udp("127.0.0.1:514".parse().unwrap())
        );
        assert_eq!(
            check("udp://[::1]:514").unwrap(),
            SyslogTarget::Udp("[::1]:514".parse().unwrap())
        );
        assert_eq!(
            check("unix:///dev/log").unwrap(),
            SyslogTarget::Unix(PathBuf::from("/dev/log"))
        );
        for bad in [
            "",
            "udp://localhost",
            "tcp://1.2.3.4:514",
            "unix://dev/log",
            "/dev/log",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for target in [
            SyslogTarget::Off,
            check("udp://[::1]:514").unwrap(),
            check("unix:///dev/log").unwrap(),
        ] {
            assert_eq!(check(&target.to_setting()).unwrap(), target);
        }
        assert!(AppName::try_from("mail room".to_owned()).is_err());
        assert!(AppName::try_from(String::new()).is_err());
        assert!(AppName::try_from("x".repeat(49)).is_err());
    }
}
