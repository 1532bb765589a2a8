//! The hub's methods as configured and checked: [`Ace`] holds each category's lists once
//! every keyword is known, clears the floor and sits where it may, and answers what each
//! front end offers, what the hub publishes, and the negotiation of one method.

use serde::{Deserialize, Serialize};

use crate::method::{
    AuthMethod, BodyCoding, Category, Link, Method, Role, TlsVersion, Transport, Unusable, known,
    role,
};

/// The lists of one category, as written in `[ace.<category>]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MethodLists {
    /// Every method the hub accepts.
    pub supported: Vec<Method>,
    /// The methods a client gets when it names none, in the hub's order of preference.
    pub default: Vec<Method>,
    /// The methods of hub-to-hub (service) links when they name none.
    pub service_default: Vec<Method>,
    /// Methods the hub accepts only once the client has logged in.
    pub needs_authentication: Vec<Method>,
}

/// Why a configuration of methods is refused. Each names the setting and the method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AceError {
    /// A keyword the hub does not know for the category.
    #[error("[ace.{category}] {list}: {method} is not a known {category} method (known: {known})")]
    Unknown {
        /// The category.
        category: Category,
        /// The list that names it.
        list: &'static str,
        /// The method.
        method: Method,
        /// Every known method of the category, comma-separated.
        known: String,
    },
    /// A method the hub knows and will not use.
    #[error(
        "[ace.{category}] {list}: {method} is weaker than the hub's floor ({reason}); remove it"
    )]
    BelowFloor {
        /// The category.
        category: Category,
        /// The list that names it.
        list: &'static str,
        /// The method.
        method: Method,
        /// What makes it weak.
        reason: &'static str,
    },
    /// A default or restriction naming a method that is not supported.
    #[error("[ace.{category}] {list}: {method} is not in supported")]
    NotSupported {
        /// The category.
        category: Category,
        /// The list that names it.
        list: &'static str,
        /// The method.
        method: Method,
    },
    /// A list that does not belong to the category, or a method that may not be in it.
    #[error("[ace.{category}] {list}: {reason}")]
    Misplaced {
        /// The category.
        category: Category,
        /// The list.
        list: &'static str,
        /// Why.
        reason: String,
    },
    /// A link that is on but is left without a method it needs.
    #[error("{link}: {what}")]
    Incomplete {
        /// The link.
        link: Link,
        /// What is missing, and which setting to change.
        what: String,
    },
}

/// One method and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    method: Method,
    role: Role,
}

/// One category's checked lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Checked {
    supported: Vec<Entry>,
    default: Vec<Entry>,
    service_default: Vec<Entry>,
    needs_authentication: Vec<Entry>,
}

/// The hub's negotiated methods, checked: build it with [`Ace::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    authentication: Checked,
    compression: Checked,
    encryption: Checked,
}

/// The default lists, which keep every front end as it was before the lists were
/// configurable (SSH compression is now offered as `zlib@openssh.com`, after login, as
/// OpenSSH's server does; a client that does not ask for it gets none).
pub fn default_lists(category: Category) -> MethodLists {
    match category {
        Category::Authentication => MethodLists {
            supported: Method::all_known(&[
                "password",
                "publickey",
                "totp",
                "certificate",
                "token",
            ]),
            default: Method::all_known(&["password"]),
            service_default: Vec::new(),
            needs_authentication: Vec::new(),
        },
        Category::Compression => MethodLists {
            supported: Method::all_known(&["none", "ssh:zlib@openssh.com", "zstd", "gzip"]),
            default: Method::all_known(&["none"]),
            service_default: Method::all_known(&["zstd"]),
            needs_authentication: Method::all_known(&["ssh:zlib@openssh.com", "zstd", "gzip"]),
        },
        Category::Encryption => MethodLists {
            supported: Method::all_known(&[
                "tls",
                "tls+e2e",
                "tls:1.3",
                "tls:1.2",
                "tls-suite:TLS13_AES_256_GCM_SHA384",
                "tls-suite:TLS13_AES_128_GCM_SHA256",
                "tls-suite:TLS13_CHACHA20_POLY1305_SHA256",
                "tls-suite:TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "tls-suite:TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "tls-suite:TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "tls-suite:TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "tls-suite:TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "tls-suite:TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "ssh-kex:mlkem768x25519-sha256",
                "ssh-kex:curve25519-sha256",
                "ssh-kex:curve25519-sha256@libssh.org",
                "ssh-cipher:chacha20-poly1305@openssh.com",
                "ssh-cipher:aes256-gcm@openssh.com",
                "ssh-cipher:aes128-gcm@openssh.com",
                // CTR with encrypt-then-MAC for clients without AEAD ciphers (libssh2, as in
                // curl's sftp://, and older paramiko).
                "ssh-cipher:aes256-ctr",
                "ssh-cipher:aes128-ctr",
                "ssh-mac:hmac-sha2-512-etm@openssh.com",
                "ssh-mac:hmac-sha2-256-etm@openssh.com",
                // libssh2 before 1.11 (Debian 12's curl) knows no etm MACs.
                "ssh-mac:hmac-sha2-512",
                "ssh-mac:hmac-sha2-256",
            ]),
            default: Method::all_known(&["tls"]),
            service_default: Method::all_known(&["tls"]),
            needs_authentication: Method::all_known(&["tls+e2e"]),
        },
    }
}

impl Default for Ace {
    fn default() -> Self {
        // Invariant: the default lists pass their own checks (a unit test runs them).
        Ace::new(
            &default_lists(Category::Authentication),
            &default_lists(Category::Compression),
            &default_lists(Category::Encryption),
        )
        .unwrap_or_else(|err| unreachable!("default ACE lists refused: {err}"))
    }
}

impl Ace {
    /// Checks the three categories' lists: every method known in its category and above the
    /// floor, every default and restriction among the supported, and no list where its
    /// category has none (authentication has no service default or restriction).
    pub fn new(
        authentication: &MethodLists,
        compression: &MethodLists,
        encryption: &MethodLists,
    ) -> Result<Ace, AceError> {
        if !authentication.service_default.is_empty()
            || !authentication.needs_authentication.is_empty()
        {
            return Err(AceError::Misplaced {
                category: Category::Authentication,
                list: if authentication.service_default.is_empty() {
                    "needs_authentication"
                } else {
                    "service_default"
                },
                reason: "authentication has only supported and default".to_owned(),
            });
        }
        let ace = Ace {
            authentication: check(Category::Authentication, authentication)?,
            compression: check(Category::Compression, compression)?,
            encryption: check(Category::Encryption, encryption)?,
        };
        if let Some(entry) = ace
            .compression
            .needs_authentication
            .iter()
            .find(|entry| entry.role == Role::NoCompression)
        {
            return Err(AceError::Misplaced {
                category: Category::Compression,
                list: "needs_authentication",
                reason: format!("{} is always allowed", entry.method),
            });
        }
        Ok(ace)
    }

    fn category(&self, category: Category) -> &Checked {
        match category {
            Category::Authentication => &self.authentication,
            Category::Compression => &self.compression,
            Category::Encryption => &self.encryption,
        }
    }

    /// The supported methods of `category` on `link`, in the order the hub offers them:
    /// the defaults first, then the other supported methods in their configured order.
    fn offer(&self, link: Link, category: Category) -> Vec<&Entry> {
        let lists = self.category(category);
        let mut out: Vec<&Entry> = Vec::new();
        for entry in lists.default.iter().chain(&lists.supported) {
            if entry.role.applies_to(link) && !out.iter().any(|e| e.method == entry.method) {
                out.push(entry);
            }
        }
        out
    }

    fn needs_login(&self, category: Category, method: &Method) -> bool {
        self.category(category)
            .needs_authentication
            .iter()
            .any(|entry| &entry.method == method)
    }

    /// What the SSH front end offers, in order; refused when SSH would be left without a
    /// key exchange, cipher, MAC (when a non-AEAD cipher is offered), compression or login
    /// method.
    pub fn ssh(&self) -> Result<SshMethods, AceError> {
        let mut methods = SshMethods::default();
        for entry in self.offer(Link::Ssh, Category::Encryption) {
            match entry.role {
                Role::SshKex(name) => methods.kex.push(name),
                Role::SshCipher(name) => methods.ciphers.push(name),
                Role::SshMac(name) => methods.macs.push(name),
                _ => {}
            }
        }
        for entry in self.offer(Link::Ssh, Category::Compression) {
            match entry.role {
                Role::NoCompression => methods.compression.push("none"),
                // zlib (not @openssh.com) starts before the login: only when allowed then.
                Role::SshCompression(name)
                    if name != "zlib"
                        || !self.needs_login(Category::Compression, &entry.method) =>
                {
                    methods.compression.push(name)
                }
                _ => {}
            }
        }
        for entry in self.offer(Link::Ssh, Category::Authentication) {
            if let Role::Authentication(method) = entry.role {
                methods.authentication.push(method);
            }
        }
        let missing = |what: &str, setting: &str| AceError::Incomplete {
            link: Link::Ssh,
            what: format!("no {what} left: add one to [ace.{setting}] supported"),
        };
        if methods.kex.is_empty() {
            return Err(missing("key exchange (ssh-kex:…)", "encryption"));
        }
        if methods.ciphers.is_empty() {
            return Err(missing("cipher (ssh-cipher:…)", "encryption"));
        }
        let aead = |cipher: &&str| cipher.ends_with("@openssh.com");
        if methods.macs.is_empty() && !methods.ciphers.iter().all(aead) {
            return Err(missing(
                "MAC (ssh-mac:…) for the non-AEAD ciphers",
                "encryption",
            ));
        }
        if methods.compression.is_empty() {
            return Err(missing("compression (none or ssh:…)", "compression"));
        }
        if !methods.authentication.iter().any(|m| {
            matches!(
                m,
                AuthMethod::Password | AuthMethod::PublicKey | AuthMethod::Totp
            )
        }) {
            return Err(missing(
                "login method (password, publickey or totp)",
                "authentication",
            ));
        }
        Ok(methods)
    }

    /// What a TLS listener offers; refused when it would be left without a version, or
    /// without a suite for one of its versions.
    pub fn tls(&self, link: Link) -> Result<TlsMethods, AceError> {
        self.tls_for(link, &[])
    }

    /// [`Ace::tls`] narrowed to the listener's own list (its `encryption` setting): TLS
    /// versions and suites among the supported ones, in the hub's order. Empty: all of them.
    pub fn tls_for(&self, link: Link, narrowed: &[Method]) -> Result<TlsMethods, AceError> {
        let offer = self.offer(link, Category::Encryption);
        let setting = format!("[{link}] encryption");
        for method in narrowed {
            let refuse = |what: &str| AceError::Incomplete {
                link,
                what: format!("{setting}: {method} {what}"),
            };
            match role(Category::Encryption, method) {
                Ok(Role::TlsVersion(_) | Role::TlsSuite(_)) => {}
                Ok(_) => return Err(refuse("is not a TLS version or suite")),
                Err(Unusable::BelowFloor(reason)) => {
                    return Err(refuse(&format!(
                        "is weaker than the hub's floor ({reason})"
                    )));
                }
                Err(Unusable::Unknown) => return Err(refuse("is not a known TLS method")),
            }
            if !offer.iter().any(|entry| &entry.method == method) {
                return Err(refuse("is not in [ace.encryption] supported"));
            }
        }
        let mut methods = TlsMethods::default();
        let kept = offer
            .into_iter()
            .filter(|entry| narrowed.is_empty() || narrowed.contains(&entry.method));
        for entry in kept {
            match entry.role {
                Role::TlsVersion(version) => methods.versions.push(version),
                Role::TlsSuite(suite) => methods.suites.push(suite),
                _ => {}
            }
        }
        let missing = |what: String| AceError::Incomplete { link, what };
        if methods.versions.is_empty() {
            return Err(missing(
                "no TLS version left: add tls:1.3 or tls:1.2 to [ace.encryption] supported"
                    .to_owned(),
            ));
        }
        for version in &methods.versions {
            let is_13 = |suite: &&str| suite.starts_with("TLS13_");
            let has = match version {
                TlsVersion::V13 => methods.suites.iter().any(is_13),
                TlsVersion::V12 => methods.suites.iter().any(|s| !is_13(s)),
            };
            if !has {
                let name = match version {
                    TlsVersion::V13 => "1.3 (tls-suite:TLS13_…)",
                    TlsVersion::V12 => "1.2 (tls-suite:TLS_ECDHE_…)",
                };
                return Err(missing(format!(
                    "no cipher suite left for TLS {name}: add one to [ace.encryption] supported or remove the version"
                )));
            }
        }
        Ok(methods)
    }

    /// Whether `method` of `category` is usable on `link` before the client has logged in.
    pub fn allowed_before_login(&self, link: Link, category: Category, method: &Method) -> bool {
        self.offer(link, category)
            .iter()
            .any(|entry| &entry.method == method)
            && !self.needs_login(category, method)
    }

    /// Whether a body compression is supported on `link` (after login).
    pub fn body_coding_supported(&self, link: Link, coding: BodyCoding) -> bool {
        self.offer(link, Category::Compression)
            .iter()
            .any(|entry| entry.role == Role::BodyCompression(coding))
    }

    /// Agrees on one method of `category` for a session on `link` (logged in by then), from
    /// the methods the client `offered` in its order of preference: the hub's first default
    /// (the service default for a `service` link) when the client offers it, else the first
    /// offered method the hub supports. A client that offers nothing gets the default.
    pub fn negotiate(
        &self,
        link: Link,
        category: Category,
        offered: &[Method],
        service: bool,
    ) -> Result<Method, NoAgreement> {
        let supported = self.offer(link, category);
        let lists = self.category(category);
        let defaults: Vec<&Entry> = if service && !lists.service_default.is_empty() {
            lists.service_default.iter().collect()
        } else {
            lists.default.iter().collect()
        };
        let defaults: Vec<&Entry> = defaults
            .into_iter()
            .filter(|entry| entry.role.applies_to(link))
            .collect();
        let agreed = if offered.is_empty() {
            defaults.first().or(supported.first()).map(|e| &e.method)
        } else {
            defaults
                .iter()
                .map(|entry| &entry.method)
                .find(|method| offered.contains(method))
                .or_else(|| {
                    offered
                        .iter()
                        .find(|method| supported.iter().any(|entry| &entry.method == *method))
                })
        };
        agreed.cloned().ok_or_else(|| NoAgreement {
            link,
            category,
            offered: offered.to_vec(),
            supported: supported.iter().map(|entry| entry.method.clone()).collect(),
        })
    }

    /// Agrees on all three categories at once (see [`Ace::negotiate`]).
    pub fn agree(&self, link: Link, wanted: &Wanted, service: bool) -> Result<Agreed, NoAgreement> {
        Ok(Agreed {
            authentication: self.negotiate(
                link,
                Category::Authentication,
                &wanted.authentication,
                service,
            )?,
            compression: self.negotiate(
                link,
                Category::Compression,
                &wanted.compression,
                service,
            )?,
            encryption: self.negotiate(link, Category::Encryption, &wanted.encryption, service)?,
        })
    }

    /// The role of an agreed method (the hub agreed on it, so it is known).
    pub fn role_of(&self, category: Category, method: &Method) -> Option<Role> {
        role(category, method).ok()
    }

    /// What the hub publishes: per link, each category's supported and default methods
    /// (and the service defaults and methods that need a login).
    pub fn published(&self) -> crate::Published {
        let link = |link: Link| crate::LinkMethods {
            authentication: self.published_lists(link, Category::Authentication),
            compression: self.published_lists(link, Category::Compression),
            encryption: self.published_lists(link, Category::Encryption),
        };
        crate::Published {
            ssh: link(Link::Ssh),
            ftps: link(Link::Ftps),
            https: link(Link::Https),
            agent: link(Link::Agent),
        }
    }

    fn published_lists(&self, link: Link, category: Category) -> crate::PublishedLists {
        let lists = self.category(category);
        let names = |entries: &[Entry]| -> Vec<String> {
            entries
                .iter()
                .filter(|entry| entry.role.applies_to(link))
                .map(|entry| entry.method.to_string())
                .collect()
        };
        crate::PublishedLists {
            supported: self
                .offer(link, category)
                .iter()
                .map(|entry| entry.method.to_string())
                .collect(),
            default: names(&lists.default),
            service_default: names(&lists.service_default),
            needs_authentication: names(&lists.needs_authentication),
        }
    }
}

fn check(category: Category, lists: &MethodLists) -> Result<Checked, AceError> {
    let entries = |list: &'static str, methods: &[Method]| -> Result<Vec<Entry>, AceError> {
        methods
            .iter()
            .map(|method| match role(category, method) {
                Ok(role) => Ok(Entry {
                    method: method.clone(),
                    role,
                }),
                Err(Unusable::Unknown) => Err(AceError::Unknown {
                    category,
                    list,
                    method: method.clone(),
                    known: known(category).join(", "),
                }),
                Err(Unusable::BelowFloor(reason)) => Err(AceError::BelowFloor {
                    category,
                    list,
                    method: method.clone(),
                    reason,
                }),
            })
            .collect()
    };
    let checked = Checked {
        supported: entries("supported", &lists.supported)?,
        default: entries("default", &lists.default)?,
        service_default: entries("service_default", &lists.service_default)?,
        needs_authentication: entries("needs_authentication", &lists.needs_authentication)?,
    };
    for (list, entries) in [
        ("default", &checked.default),
        ("service_default", &checked.service_default),
        ("needs_authentication", &checked.needs_authentication),
    ] {
        if let Some(entry) = entries
            .iter()
            .find(|entry| !checked.supported.contains(entry))
        {
            return Err(AceError::NotSupported {
                category,
                list,
                method: entry.method.clone(),
            });
        }
    }
    Ok(checked)
}

/// What the SSH front end offers, each list in the hub's order, by SSH name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SshMethods {
    /// Key exchanges.
    pub kex: Vec<&'static str>,
    /// Ciphers.
    pub ciphers: Vec<&'static str>,
    /// MACs.
    pub macs: Vec<&'static str>,
    /// Compressions: `none`, `zlib@openssh.com`, `zlib`.
    pub compression: Vec<&'static str>,
    /// Login methods (password, publickey, totp as keyboard-interactive).
    pub authentication: Vec<AuthMethod>,
}

/// What a TLS listener offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsMethods {
    /// Protocol versions.
    pub versions: Vec<TlsVersion>,
    /// Cipher suites by IANA name, in the hub's order.
    pub suites: Vec<&'static str>,
}

/// The methods a client asks for, per category, in its order of preference; an empty list
/// takes the hub's default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Wanted {
    /// Authentication methods.
    #[schema(value_type = Vec<String>)]
    pub authentication: Vec<Method>,
    /// Compression methods.
    #[schema(value_type = Vec<String>)]
    pub compression: Vec<Method>,
    /// Encryption methods.
    #[schema(value_type = Vec<String>)]
    pub encryption: Vec<Method>,
}

/// The methods a session agreed on, one per category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agreed {
    /// The authentication method.
    #[schema(value_type = String)]
    pub authentication: Method,
    /// The compression method.
    #[schema(value_type = String)]
    pub compression: Method,
    /// The encryption method.
    #[schema(value_type = String)]
    pub encryption: Method,
}

impl Agreed {
    /// The agreed body compression, if any.
    pub fn body_coding(&self) -> Option<BodyCoding> {
        match role(Category::Compression, &self.compression) {
            Ok(Role::BodyCompression(coding)) => Some(coding),
            _ => None,
        }
    }

    /// Whether the session sends files encrypted end to end.
    pub fn end_to_end(&self) -> bool {
        role(Category::Encryption, &self.encryption) == Ok(Role::Transport(Transport::TlsE2e))
    }
}

impl std::fmt::Display for Agreed {
    /// `authentication=password compression=zstd encryption=tls`: how events and stored
    /// sessions write it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "authentication={} compression={} encryption={}",
            self.authentication, self.compression, self.encryption
        )
    }
}

impl std::str::FromStr for Agreed {
    type Err = String;

    /// Parses what [`Agreed`]'s `Display` writes.
    fn from_str(text: &str) -> Result<Agreed, String> {
        let mut parts = [None, None, None];
        for pair in text.split(' ') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=method"))?;
            let slot = match key {
                "authentication" => 0,
                "compression" => 1,
                "encryption" => 2,
                other => return Err(format!("unknown category {other:?}")),
            };
            parts[slot] = Some(value.parse::<Method>().map_err(|err| err.to_string())?);
        }
        match parts {
            [Some(authentication), Some(compression), Some(encryption)] => Ok(Agreed {
                authentication,
                compression,
                encryption,
            }),
            _ => Err("a category is missing".to_owned()),
        }
    }
}

/// No method both sides support: the refusal names both lists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no common {category} method on {link}: the client offered [{}], the hub supports [{}]",
    join(offered),
    join(supported)
)]
pub struct NoAgreement {
    /// The link.
    pub link: Link,
    /// The category.
    pub category: Category,
    /// What the client offered.
    pub offered: Vec<Method>,
    /// What the hub supports on this link.
    pub supported: Vec<Method>,
}

fn join(methods: &[Method]) -> String {
    methods
        .iter()
        .map(Method::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
