//! Negotiated methods: the authentication, compression and encryption (ACE) each kind of link
//! may use, as the operator lists them in `[ace.authentication]`, `[ace.compression]` and
//! `[ace.encryption]`.
//!
//! Each category has `supported` and `default` lists; compression and encryption also have
//! `service_default` (hub-to-hub links) and `needs_authentication` (methods allowed only
//! after login). A method is a keyword with an optional sub-mechanism, `name:sub`; the
//! [`method`] registry says which link each applies to (`ssh-cipher:…` to SSH, `tls:1.3` to
//! the TLS listeners, `zstd` to API bodies) and refuses, by name, what is below the floor
//! (CBC, SHA-1, RSA key exchange, TLS before 1.2).
//!
//! The same checked lists drive every front end: SSH's algorithm lists ([`Ace::ssh`]), each
//! TLS listener's versions and suites ([`Ace::tls`]), the API's body compression, and the
//! agent's sessions, which name the methods they want and get one per category or a refusal
//! naming both lists ([`Ace::negotiate`]). This crate is pure data: it depends on no other
//! crate of the workspace, so the agent can link it without the server.

mod ace;
pub mod method;

pub use ace::{
    Ace, AceError, Agreed, MethodLists, NoAgreement, SshMethods, TlsMethods, Wanted, default_lists,
};
pub use method::{
    AuthMethod, BodyCoding, Category, KeywordError, Link, Method, Role, TlsVersion, Transport,
};

use serde::Serialize;

/// What `GET /api/v1/ace` answers: per kind of link, each category's methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Published {
    /// SSH (SFTP and SCP).
    pub ssh: LinkMethods,
    /// FTPS.
    pub ftps: LinkMethods,
    /// The HTTPS API and web UI for clients that do not negotiate.
    pub https: LinkMethods,
    /// The agent's negotiated sessions.
    pub agent: LinkMethods,
}

/// One link's methods per category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LinkMethods {
    /// How a client proves who it is.
    pub authentication: PublishedLists,
    /// How bytes are compressed.
    pub compression: PublishedLists,
    /// How the link is encrypted.
    pub encryption: PublishedLists,
}

/// One category's lists on one link, as keywords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PublishedLists {
    /// Every method the hub accepts here, in its order of preference.
    pub supported: Vec<String>,
    /// What a client that names nothing gets.
    pub default: Vec<String>,
    /// What a hub-to-hub (service) link that names nothing gets.
    pub service_default: Vec<String>,
    /// Methods accepted only after login.
    pub needs_authentication: Vec<String>,
}

#[cfg(test)]
mod tests;
