//! The `[ace.authentication]`, `[ace.compression]` and `[ace.encryption]` sections: the
//! negotiated methods as the operator lists them, and their check at start, which refuses an
//! unknown method or one below the floor by name before anything listens.
//!
//! What each keyword means and the negotiation itself belong to `mailroom-ace`; this module
//! only gives the lists their place in `mailroom.toml`.

use mailroom_ace::{Ace, AceError, Category, Method, MethodLists, default_lists};
use serde::{Deserialize, Serialize};

/// The three sections of negotiated methods, `[ace.*]` in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AceConfig {
    /// How clients prove who they are.
    pub authentication: AuthenticationSection,
    /// How the bytes of a link are compressed.
    pub compression: CompressionSection,
    /// How links are encrypted.
    pub encryption: EncryptionSection,
}

mailroom_net::config_section! {
    [ace.authentication]
    /// Negotiated methods: how clients prove who they are. password, publickey (SSH), totp
    /// (a one-time code: SSH keyboard-interactive, FTPS "PASS password:123456", the API),
    /// certificate (a client certificate on FTPS and HTTPS) and token (the API's bearer
    /// tokens). An account's own required factors still apply on top.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct AuthenticationSection {
        /// Every method the hub accepts; a method left out is refused on every front end.
        pub supported: Vec<Method>,
        /// What an agent session that names no method gets, in order of preference.
        pub default: Vec<Method>,
    }
}

mailroom_net::config_section! {
    [ace.compression]
    /// Negotiated methods: compression. none; ssh:zlib@openssh.com (SSH, after login, as
    /// "sftp -C" asks) and ssh:zlib (SSH, from the key exchange on: only when not listed in
    /// needs_authentication); zstd and gzip (API request and response bodies).
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct CompressionSection {
        /// Every method the hub accepts.
        pub supported: Vec<Method>,
        /// What a client that names no method gets; for SSH, the order offered.
        pub default: Vec<Method>,
        /// What a hub-to-hub (service) link that names no method gets.
        pub service_default: Vec<Method>,
        /// Methods allowed only after login: the hub never decompresses what a stranger
        /// sends with them.
        pub needs_authentication: Vec<Method>,
    }
}

mailroom_net::config_section! {
    [ace.encryption]
    /// Negotiated methods: encryption. ssh-kex:NAME, ssh-cipher:NAME and ssh-mac:NAME (the
    /// SSH algorithms), tls:1.3 and tls:1.2 (TLS versions), tls-suite:IANA_NAME (TLS cipher
    /// suites), and the agent's transport: tls, or tls+e2e (files encrypted by the sender to
    /// the recipient's keys). Anything below the floor (CBC, SHA-1, RSA key exchange, TLS
    /// before 1.2) refuses the start. Each FTPS and HTTPS listener may narrow the TLS ones
    /// with its own "encryption" setting.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct EncryptionSection {
        /// Every method the hub accepts.
        pub supported: Vec<Method>,
        /// What a client that names no method gets; for SSH and TLS, these come first in
        /// the order offered.
        pub default: Vec<Method>,
        /// What a hub-to-hub (service) link that names no method gets.
        pub service_default: Vec<Method>,
        /// Methods allowed only after login.
        pub needs_authentication: Vec<Method>,
    }
}

impl Default for AuthenticationSection {
    fn default() -> Self {
        let lists = default_lists(Category::Authentication);
        AuthenticationSection {
            supported: lists.supported,
            default: lists.default,
        }
    }
}

impl Default for CompressionSection {
    fn default() -> Self {
        let lists = default_lists(Category::Compression);
        CompressionSection {
            supported: lists.supported,
            default: lists.default,
            service_default: lists.service_default,
            needs_authentication: lists.needs_authentication,
        }
    }
}

impl Default for EncryptionSection {
    fn default() -> Self {
        let lists = default_lists(Category::Encryption);
        EncryptionSection {
            supported: lists.supported,
            default: lists.default,
            service_default: lists.service_default,
            needs_authentication: lists.needs_authentication,
        }
    }
}

impl AceConfig {
    /// The checked methods: refused, naming the setting and the method, when a method is
    /// unknown, below the floor or misplaced.
    pub fn check(&self) -> Result<Ace, AceError> {
        let authentication = MethodLists {
            supported: self.authentication.supported.clone(),
            default: self.authentication.default.clone(),
            ..MethodLists::default()
        };
        let compression = MethodLists {
            supported: self.compression.supported.clone(),
            default: self.compression.default.clone(),
            service_default: self.compression.service_default.clone(),
            needs_authentication: self.compression.needs_authentication.clone(),
        };
        let encryption = MethodLists {
            supported: self.encryption.supported.clone(),
            default: self.encryption.default.clone(),
            service_default: self.encryption.service_default.clone(),
            needs_authentication: self.encryption.needs_authentication.clone(),
        };
        Ace::new(&authentication, &compression, &encryption)
    }
}
