//! Method keywords and what each one is: the registry of every method the hub knows, which
//! kinds of link use it, and the methods it knows only to refuse (below the floor).
//!
//! A keyword is a name with an optional sub-mechanism, `name:sub` (`ssh-cipher:aes256-ctr`,
//! `tls:1.3`). Parsing only checks the shape; [`role`] says what a well-formed keyword means,
//! or why the hub will not use it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The three kinds of method a link negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// How a client proves who it is.
    Authentication,
    /// How the bytes of a link are compressed.
    Compression,
    /// How a link is encrypted.
    Encryption,
}

impl Category {
    /// Every category, in the order of the configuration.
    pub const ALL: [Category; 3] = [
        Category::Authentication,
        Category::Compression,
        Category::Encryption,
    ];

    /// The word of the configuration and the wire: `authentication`, `compression`,
    /// `encryption`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Authentication => "authentication",
            Category::Compression => "compression",
            Category::Encryption => "encryption",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind of link: each front end is one, and the agent's sessions over the API another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    /// SSH: SFTP and SCP.
    Ssh,
    /// Explicit and implicit FTP over TLS.
    Ftps,
    /// The HTTPS API and the web UI, for clients that do not negotiate (curl, the browser).
    Https,
    /// The client agent's sessions over the HTTPS API, which negotiate their methods.
    Agent,
}

impl Link {
    /// Every link, in the order the hub publishes them.
    pub const ALL: [Link; 4] = [Link::Ssh, Link::Ftps, Link::Https, Link::Agent];

    /// The word of the wire: `ssh`, `ftps`, `https`, `agent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Ssh => "ssh",
            Link::Ftps => "ftps",
            Link::Https => "https",
            Link::Agent => "agent",
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A method keyword: a name and an optional sub-mechanism, written `name` or `name:sub`.
/// Names are lower-case letters, digits and `-+.@_`; a sub-mechanism may hold any printable
/// ASCII but spaces and commas (`TLS13_AES_256_GCM_SHA384`, `zlib@openssh.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method {
    name: String,
    sub: Option<String>,
}

/// The longest keyword accepted, name and sub-mechanism together.
const MAX_KEYWORD: usize = 96;

impl Method {
    /// The method's name: `ssh-cipher` of `ssh-cipher:aes256-ctr`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sub-mechanism: `aes256-ctr` of `ssh-cipher:aes256-ctr`.
    pub fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    /// Parses `keyword`, which must be a literal known to be well formed (the defaults).
    /// Not for input: use [`str::parse`].
    fn known(keyword: &'static str) -> Method {
        match keyword.split_once(':') {
            Some((name, sub)) => Method {
                name: name.to_owned(),
                sub: Some(sub.to_owned()),
            },
            None => Method {
                name: keyword.to_owned(),
                sub: None,
            },
        }
    }

    /// The methods of `keywords`, literals known to be well formed.
    pub(crate) fn all_known(keywords: &[&'static str]) -> Vec<Method> {
        keywords.iter().map(|k| Method::known(k)).collect()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sub {
            Some(sub) => write!(f, "{}:{sub}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Why a keyword is not even well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{keyword:?} is not a method keyword: {reason}")]
pub struct KeywordError {
    /// The keyword as given, shortened and made printable.
    pub keyword: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Method {
    type Err = KeywordError;

    fn from_str(input: &str) -> Result<Method, KeywordError> {
        let refuse = |reason| KeywordError {
            keyword: input
                .chars()
                .take(MAX_KEYWORD)
                .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                .collect(),
            reason,
        };
        if input.is_empty() {
            return Err(refuse("it is empty"));
        }
        if input.len() > MAX_KEYWORD {
            return Err(refuse("it is too long"));
        }
        let (name, sub) = match input.split_once(':') {
            Some((name, sub)) => (name, Some(sub)),
            None => (input, None),
        };
        let name_ok = |c: char| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | '@' | '_')
        };
        if name.is_empty() || !name.chars().all(name_ok) {
            return Err(refuse("a name is lower-case letters, digits and - + . @ _"));
        }
        if let Some(sub) = sub
            && (sub.is_empty() || !sub.chars().all(|c| c.is_ascii_graphic() && c != ','))
        {
            return Err(refuse(
                "a sub-mechanism after ':' is printable ASCII without spaces or commas",
            ));
        }
        Ok(Method {
            name: name.to_owned(),
            sub: sub.map(str::to_owned),
        })
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Method, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a known method does, and so where it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A way to prove who one is.
    Authentication(AuthMethod),
    /// No compression: every link.
    NoCompression,
    /// SSH transport compression, by its SSH name (`zlib@openssh.com`, `zlib`).
    SshCompression(&'static str),
    /// Compression of API bodies (`Content-Encoding`).
    BodyCompression(BodyCoding),
    /// An SSH key exchange, by its SSH name.
    SshKex(&'static str),
    /// An SSH cipher, by its SSH name.
    SshCipher(&'static str),
    /// An SSH MAC, by its SSH name.
    SshMac(&'static str),
    /// A TLS protocol version (FTPS and HTTPS listeners).
    TlsVersion(TlsVersion),
    /// A TLS cipher suite by its IANA name (FTPS and HTTPS listeners).
    TlsSuite(&'static str),
    /// The agent's transport: TLS, with or without end-to-end encryption to the recipient.
    Transport(Transport),
}

/// A way to prove who one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A password.
    Password,
    /// An SSH public key.
    PublicKey,
    /// A one-time code (TOTP) or a recovery code.
    Totp,
    /// A client certificate from the TLS handshake.
    Certificate,
    /// A bearer token from an earlier login.
    Token,
}

/// A compression of API bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCoding {
    /// Zstandard (`Content-Encoding: zstd`).
    Zstd,
    /// gzip (`Content-Encoding: gzip`).
    Gzip,
}

impl BodyCoding {
    /// The `Content-Encoding` token, which is also the method's keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyCoding::Zstd => "zstd",
            BodyCoding::Gzip => "gzip",
        }
    }
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V12,
    /// TLS 1.3.
    V13,
}

/// The agent's transport encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS to the hub.
    Tls,
    /// TLS to the hub, and the file encrypted to the recipient's keys (age) by the sender.
    TlsE2e,
}

impl Role {
    /// Whether a method of this role applies to `link`.
    pub fn applies_to(self, link: Link) -> bool {
        use AuthMethod::*;
        match self {
            Role::Authentication(method) => match method {
                Password | Totp => true,
                PublicKey => link == Link::Ssh,
                Certificate => link != Link::Ssh,
                Token => matches!(link, Link::Https | Link::Agent),
            },
            Role::NoCompression => true,
            Role::SshCompression(_) | Role::SshKex(_) | Role::SshCipher(_) | Role::SshMac(_) => {
                link == Link::Ssh
            }
            Role::BodyCompression(_) => matches!(link, Link::Https | Link::Agent),
            Role::Transport(_) => link == Link::Agent,
            // The agent's sessions run over the HTTPS listener's TLS.
            Role::TlsVersion(_) | Role::TlsSuite(_) => matches!(link, Link::Ftps | Link::Https),
        }
    }
}

/// Why the hub will not use a well-formed method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Not a method of this category the hub knows.
    Unknown,
    /// A method the hub knows and refuses: below the floor, for this reason.
    BelowFloor(&'static str),
}

/// Authentication methods: keyword and method.
const AUTHENTICATION: &[(&str, AuthMethod)] = &[
    ("password", AuthMethod::Password),
    ("publickey", AuthMethod::PublicKey),
    ("totp", AuthMethod::Totp),
    ("certificate", AuthMethod::Certificate),
    ("token", AuthMethod::Token),
];

/// SSH key exchanges russh offers that clear the floor.
const SSH_KEX: &[&str] = &[
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
];

/// SSH ciphers russh offers that clear the floor.
const SSH_CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];

/// SSH MACs russh offers that clear the floor (AEAD ciphers need none).
const SSH_MACS: &[&str] = &[
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512",
    "hmac-sha2-256",
];

/// SSH compressions russh offers.
const SSH_COMPRESSIONS: &[&str] = &["zlib@openssh.com", "zlib"];

/// TLS cipher suites the hub's TLS (rustls on aws-lc-rs) offers, by IANA name: TLS 1.3's,
/// then TLS 1.2's with ECDHE and an AEAD.
pub const TLS_SUITES: &[&str] = &[
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// What `method` means in `category`, or why the hub will not use it.
pub fn role(category: Category, method: &Method) -> Result<Role, Unusable> {
    let name = method.name();
    let sub = method.sub();
    let find = |list: &'static [&'static str], sub: Option<&str>| {
        sub.and_then(|sub| list.iter().copied().find(|known| *known == sub))
    };
    match (category, name) {
        (Category::Authentication, _) if sub.is_none() => AUTHENTICATION
            .iter()
            .find(|(keyword, _)| *keyword == name)
            .map(|(_, method)| Role::Authentication(*method))
            .ok_or(Unusable::Unknown),
        (Category::Compression, "none") if sub.is_none() => Ok(Role::NoCompression),
        (Category::Compression, "zstd") if sub.is_none() => {
            Ok(Role::BodyCompression(BodyCoding::Zstd))
        }
        (Category::Compression, "gzip") if sub.is_none() => {
            Ok(Role::BodyCompression(BodyCoding::Gzip))
        }
        (Category::Compression, "ssh") => find(SSH_COMPRESSIONS, sub)
            .map(Role::SshCompression)
            .ok_or(Unusable::Unknown),
        (Category::Encryption, "tls") => match sub {
            None => Ok(Role::Transport(Transport::Tls)),
            Some("1.3") => Ok(Role::TlsVersion(TlsVersion::V13)),
            Some("1.2") => Ok(Role::TlsVersion(TlsVersion::V12)),
            Some("1.1" | "1.0" | "ssl3" | "ssl2") => Err(Unusable::BelowFloor("TLS before 1.2")),
            Some(_) => Err(Unusable::Unknown),
        },
        (Category::Encryption, "tls+e2e") if sub.is_none() => {
            Ok(Role::Transport(Transport::TlsE2e))
        }
        (Category::Encryption, "tls-suite") => match find(TLS_SUITES, sub) {
            Some(suite) => Ok(Role::TlsSuite(suite)),
            None => Err(weak_tls_suite(sub.unwrap_or_default())),
        },
        (Category::Encryption, "ssh-kex") => match find(SSH_KEX, sub) {
            Some(kex) => Ok(Role::SshKex(kex)),
            None => Err(weak_ssh_kex(sub.unwrap_or_default())),
        },
        (Category::Encryption, "ssh-cipher") => match find(SSH_CIPHERS, sub) {
            Some(cipher) => Ok(Role::SshCipher(cipher)),
            None => Err(weak_ssh_cipher(sub.unwrap_or_default())),
        },
        (Category::Encryption, "ssh-mac") => match find(SSH_MACS, sub) {
            Some(mac) => Ok(Role::SshMac(mac)),
            None => Err(weak_ssh_mac(sub.unwrap_or_default())),
        },
        _ => Err(Unusable::Unknown),
    }
}

fn weak_ssh_kex(name: &str) -> Unusable {
    if name.starts_with("rsa") {
        Unusable::BelowFloor("RSA key exchange")
    } else if name.ends_with("-sha1") {
        Unusable::BelowFloor("SHA-1 key exchange")
    } else if name == "none" {
        Unusable::BelowFloor("no key exchange")
    } else {
        Unusable::Unknown
    }
}

fn weak_ssh_cipher(name: &str) -> Unusable {
    if name.ends_with("-cbc") || name.ends_with("-cbc@lysator.liu.se") {
        Unusable::BelowFloor("CBC mode")
    } else if name.starts_with("arcfour") {
        Unusable::BelowFloor("RC4")
    } else if name == "none" {
        Unusable::BelowFloor("no encryption")
    } else {
        Unusable::Unknown
    }
}

fn weak_ssh_mac(name: &str) -> Unusable {
    if name.starts_with("hmac-sha1") {
        Unusable::BelowFloor("SHA-1 MAC")
    } else if name.starts_with("hmac-md5") || name.starts_with("hmac-ripemd") {
        Unusable::BelowFloor("MD5 or RIPEMD MAC")
    } else if name.starts_with("umac-64") {
        Unusable::BelowFloor("64-bit MAC tag")
    } else if name == "none" {
        Unusable::BelowFloor("no integrity")
    } else {
        Unusable::Unknown
    }
}

fn weak_tls_suite(name: &str) -> Unusable {
    let upper = name.to_ascii_uppercase();
    if upper.contains("_CBC_") {
        Unusable::BelowFloor("CBC mode")
    } else if upper.starts_with("TLS_RSA_") {
        Unusable::BelowFloor("RSA key exchange")
    } else if ["RC4", "3DES", "_DES_", "NULL", "EXPORT", "MD5"]
        .iter()
        .any(|weak| upper.contains(weak))
    {
        Unusable::BelowFloor("a broken cipher or hash")
    } else {
        Unusable::Unknown
    }
}

/// Every method of `category` the hub knows and would use, as keywords: what an "unknown
/// method" refusal lists.
pub fn known(category: Category) -> Vec<String> {
    let prefixed = |prefix: &str, list: &[&str]| {
        list.iter()
            .map(|name| format!("{prefix}:{name}"))
            .collect::<Vec<_>>()
    };
    match category {
        Category::Authentication => AUTHENTICATION.iter().map(|(k, _)| k.to_string()).collect(),
        Category::Compression => ["none", "zstd", "gzip"]
            .iter()
            .map(|k| k.to_string())
            .chain(prefixed("ssh", SSH_COMPRESSIONS))
            .collect(),
        Category::Encryption => ["tls", "tls+e2e", "tls:1.3", "tls:1.2"]
            .iter()
            .map(|k| k.to_string())
            .chain(prefixed("tls-suite", TLS_SUITES))
            .chain(prefixed("ssh-kex", SSH_KEX))
            .chain(prefixed("ssh-cipher", SSH_CIPHERS))
            .chain(prefixed("ssh-mac", SSH_MACS))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(text: &str) -> Method {
        text.parse().unwrap()
    }

    #[test]
    fn keywords_parse_and_print_back() {
        for text in [
            "zstd",
            "ssh:zlib@openssh.com",
            "tls:1.3",
            "tls-suite:TLS13_AES_256_GCM_SHA384",
        ] {
            assert_eq!(method(text).to_string(), text);
        }
        let with_sub = method("sasl:GSSAPI");
        assert_eq!((with_sub.name(), with_sub.sub()), ("sasl", Some("GSSAPI")));
    }

    #[test]
    fn malformed_keywords_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("Zstd", "lower-case"),
            ("zs td", "lower-case"),
            (":x", "lower-case"),
            ("ssh:", "sub-mechanism"),
            ("ssh:a,b", "sub-mechanism"),
            ("ssh:a b", "sub-mechanism"),
            ("ssh:\u{1b}[31m", "sub-mechanism"),
        ] {
            let err = text.parse::<Method>().unwrap_err();
            assert!(err.to_string().contains(reason), "{text:?}: {err}");
            assert!(!err.keyword.contains('\u{1b}'), "printable: {err:?}");
        }
        let long = "a".repeat(MAX_KEYWORD + 1);
        assert!(
            long.parse::<Method>()
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }

    #[test]
    fn every_known_method_has_a_role_that_applies_somewhere() {
        for category in Category::ALL {
            for keyword in known(category) {
                let role = role(category, &method(&keyword))
                    .unwrap_or_else(|err| panic!("{category} {keyword}: {err:?}"));
                assert!(
                    Link::ALL.iter().any(|link| role.applies_to(*link)),
                    "{keyword}"
                );
            }
        }
    }

    #[test]
    fn the_floor_names_its_reason() {
        for (category, keyword, reason) in [
            (Category::Encryption, "ssh-cipher:aes128-cbc", "CBC"),
            (Category::Encryption, "ssh-cipher:3des-cbc", "CBC"),
            (Category::Encryption, "ssh-cipher:arcfour256", "RC4"),
            (Category::Encryption, "ssh-mac:hmac-sha1", "SHA-1"),
            (
                Category::Encryption,
                "ssh-mac:hmac-sha1-etm@openssh.com",
                "SHA-1",
            ),
            (
                Category::Encryption,
                "ssh-kex:diffie-hellman-group14-sha1",
                "SHA-1",
            ),
            (Category::Encryption, "ssh-kex:rsa2048-sha256", "RSA"),
            (Category::Encryption, "tls:1.1", "TLS before 1.2"),
            (Category::Encryption, "tls:1.0", "TLS before 1.2"),
            (
                Category::Encryption,
                "tls-suite:TLS_RSA_WITH_AES_128_GCM_SHA256",
                "RSA",
            ),
            (
                Category::Encryption,
                "tls-suite:TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
                "CBC",
            ),
        ] {
            match role(category, &method(keyword)) {
                Err(Unusable::BelowFloor(why)) => assert!(why.contains(reason), "{keyword}: {why}"),
                other => panic!("{keyword}: {other:?}"),
            }
        }
        for (category, keyword) in [
            (Category::Encryption, "ssh-cipher:rot13"),
            (Category::Compression, "brotli"),
            (Category::Compression, "zstd:19"),
            (Category::Authentication, "kerberos"),
            (Category::Authentication, "password:x"),
            (Category::Compression, "tls"),
        ] {
            assert_eq!(
                role(category, &method(keyword)),
                Err(Unusable::Unknown),
                "{keyword}"
            );
        }
    }
}
