//! The `[ftps]` section of the configuration: where the FTPS front end listens (explicit and
//! implicit TLS), its data-connection rules and how it treats connections. Plain data with safe
//! defaults; the binary parses the file and resolves the paths against the data folder.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use mailroom_net::{MaxStartups, Networks};
use mailroom_tls::ClientAuth;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mailroom_net::config_section! {
    [ftps]
    /// The FTPS front end: FTP over TLS (RFC 4217), explicit (AUTH TLS) and implicit, TLS on
    /// both channels.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Config {
        /// Whether the FTPS front end runs at all (off by default). It serves the server
        /// certificate of `[tls]`, which `init` and `serve` create.
        pub enabled: bool,
        /// Address and port to listen on (explicit TLS: clients send AUTH TLS).
        pub listen: SocketAddr,
        /// Address and port for implicit FTPS (TLS from the first byte, `ftps://` URLs);
        /// empty: not offered.
        #[serde(with = "mailroom_net::serde_optional_address")]
        pub implicit_listen: Option<SocketAddr>,
        /// Ports offered for passive data connections, `"FIRST-LAST"`.
        #[serde(deserialize_with = "from_text", serialize_with = "as_text")]
        pub passive_ports: PassivePorts,
        /// The IPv4 address announced in PASV replies; empty: the address the client
        /// connected to.
        #[serde(deserialize_with = "passive_address", serialize_with = "empty_if_none")]
        pub passive_address: Option<Ipv4Addr>,
        /// Whether a TLS data connection must resume the TLS session of its control
        /// connection (as vsftpd's `require_ssl_reuse`): proof that the data connection comes
        /// from the client that logged in, not from someone who raced it to the passive port.
        pub require_tls_resumption: bool,
        /// Allows active mode (PORT, EPRT): the server connects to the client for each
        /// transfer, only ever to the address of the control connection and a port of 1024 or
        /// more (an FTP bounce is refused). Off: passive mode only.
        pub allow_active: bool,
        /// Seconds to wait for a data connection (and its TLS handshake) before a transfer
        /// fails with 425.
        pub data_timeout_seconds: u64,
        /// Seconds without a command (and no transfer running) before a session is closed.
        pub idle_timeout_seconds: u64,
        /// Seconds a connection may take from accept to a completed login before it is
        /// closed, whatever it sends meanwhile (the TLS handshake included).
        pub login_grace_seconds: u64,
        /// Connections open at once, all addresses together.
        pub max_connections: u32,
        /// Connections open at once from one source address.
        pub max_connections_per_address: u32,
        /// Connections not yet logged in, as OpenSSH's MaxStartups "start:rate:full" (see
        /// `[sftp] max_startups`); `[auth] safe_networks` are not counted.
        pub max_startups: MaxStartups,
        /// Connections not yet logged in from one source address (safe networks not counted).
        pub max_startups_per_address: u32,
        /// Allows plain FTP without TLS on the control and data channels. Passwords and files
        /// then cross the network in clear text; a warning is logged at every start.
        pub allow_plaintext: bool,
        /// Whether clients present an X.509 certificate, verified against the client CA of
        /// `[tls]`; it proves the `certificate` factor of accounts that require it. "off": none
        /// is asked for; "optional": asked for, a client without one logs in otherwise;
        /// "required": the TLS handshake fails without one.
        pub client_certificates: ClientAuth,
        /// This listener's TLS versions and cipher suites ("tls:1.3", "tls-suite:NAME"), a
        /// subset of [ace.encryption] supported, offered in that list's order. Empty: all of
        /// them.
        pub encryption: Vec<mailroom_ace::Method>,
        /// Load balancers that send the PROXY protocol (v1 or v2) on the control ports and
        /// the passive data ports (see `[sftp] proxy_protocol_from`). A data connection from
        /// one must name the control connection's client in its header. Empty: off.
        pub proxy_protocol_from: Networks,
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 2121)),
            implicit_listen: None,
            passive_ports: PassivePorts {
                first: 50000,
                last: 50100,
            },
            passive_address: None,
            require_tls_resumption: true,
            allow_active: false,
            data_timeout_seconds: 30,
            idle_timeout_seconds: 600,
            login_grace_seconds: 60,
            max_connections: 512,
            max_connections_per_address: 64,
            max_startups: MaxStartups::default(),
            max_startups_per_address: 10,
            allow_plaintext: false,
            client_certificates: ClientAuth::Off,
            encryption: Vec::new(),
            proxy_protocol_from: Networks::default(),
        }
    }
}

/// A range of TCP ports for passive data connections, first <= last, neither 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassivePorts {
    first: u16,
    last: u16,
}

impl PassivePorts {
    /// The range from `first` to `last`, both included.
    pub fn new(first: u16, last: u16) -> Result<PassivePorts, PassivePortsError> {
        if first == 0 || first > last {
            return Err(PassivePortsError(format!("{first}-{last}")));
        }
        Ok(PassivePorts { first, last })
    }

    /// The ports as an inclusive range.
    pub fn range(self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

/// A passive port range that is not `"FIRST-LAST"` with 1 <= FIRST <= LAST <= 65535.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("passive ports {0:?}: expected \"FIRST-LAST\" with 1 <= FIRST <= LAST <= 65535")]
pub struct PassivePortsError(String);

impl FromStr for PassivePorts {
    type Err = PassivePortsError;

    fn from_str(text: &str) -> Result<PassivePorts, PassivePortsError> {
        let bad = || PassivePortsError(text.chars().take(64).collect());
        let (first, last) = text.trim().split_once('-').ok_or_else(bad)?;
        let first = first.trim().parse().map_err(|_| bad())?;
        let last = last.trim().parse().map_err(|_| bad())?;
        PassivePorts::new(first, last).map_err(|_| bad())
    }
}

impl fmt::Display for PassivePorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Deserialises a value written as text (or, from an environment override, a number) through
/// its `FromStr`.
fn from_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    struct Text<T>(std::marker::PhantomData<T>);

    impl<T: FromStr> serde::de::Visitor<'_> for Text<T>
    where
        T::Err: fmt::Display,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
            text.parse().map_err(E::custom)
        }

        fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<T, E> {
            self.visit_str(&number.to_string())
        }

        fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<T, E> {
            self.visit_str(&number.to_string())
        }
    }

    deserializer.deserialize_any(Text(std::marker::PhantomData))
}

/// Serialises a value as its text (`Display`), the form [`from_text`] reads.
fn as_text<S: Serializer, T: fmt::Display>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Serialises an optional value as its text, or `""` for none (the file has no "unset").
fn empty_if_none<S: Serializer, T: fmt::Display>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_str(""),
    }
}

/// `passive_address`: empty for "the address the client connected to", else an IPv4 address
/// (PASV replies carry IPv4 only).
fn passive_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Ipv4Addr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "passive_address {:?}: expected an IPv4 address or \"\"",
            text.chars().take(64).collect::<String>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ports(text: &str, expect: Option<(u16, u16)>) {
        let got = text.parse::<PassivePorts>().ok().map(|p| (p.first, p.last));
        assert_eq!(got, expect, "{text:?}");
    }

    #[test]
    fn passive_ports_parse() {
        check_ports("50000-50100", Some((50000, 50100)));
        check_ports(" 2000 - 2000 ", Some((2000, 2000)));
        check_ports("1-65535", Some((1, 65535)));
        check_ports("0-10", None);
        check_ports("10-9", None);
        check_ports("10-65536", None);
        check_ports("10", None);
        check_ports("a-b", None);
        check_ports("", None);
        check_ports("-5", None);
        assert_eq!(
            "50000-50100".parse::<PassivePorts>().unwrap().to_string(),
            "50000-50100"
        );
    }

    #[test]
    fn sections_parse_with_defaults() {
        #[derive(Deserialize)]
        struct File {
            ftps: Config,
        }
        let file: File = toml::from_str(
            "[ftps]\npassive_ports = \"6000-6010\"\npassive_address = \"192.0.2.7\"\nclient_certificates = \"optional\"\nimplicit_listen = \"127.0.0.1:9990\"\n",
        )
        .unwrap();
        assert_eq!(
            file.ftps.implicit_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9990)))
        );
        assert_eq!(file.ftps.passive_ports.range(), 6000..=6010);
        assert_eq!(file.ftps.passive_address, Some(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(file.ftps.client_certificates, ClientAuth::Optional);
        assert!(!file.ftps.enabled);
        for bad in [
            "[ftps]\npassive_ports = \"6010-6000\"\n",
            "[ftps]\npassive_address = \"::1\"\n",
            "[ftps]\nclient_certificates = \"yes\"\n",
            "[ftps]\nimplicit_listen = \"9990\"\n",
        ] {
            assert!(toml::from_str::<File>(bad).is_err(), "{bad}");
        }
        let empty: File =
            toml::from_str("[ftps]\npassive_address = \"\"\nimplicit_listen = \"\"\n").unwrap();
        assert_eq!(empty.ftps, Config::default());
    }
}
