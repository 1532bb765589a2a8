//! The saved login: the hub's URL, how it is trusted, the credentials every request carries
//! (a login's tokens, or an API key) with the client certificate presented in each handshake,
//! and the agreed methods, in `session.json` of the agent's config folder. The folder is made
//! 0700 and the file written 0600 through a temporary file and a rename, so a crash never
//! leaves half a session and no other user can read the tokens or the key. A client
//! certificate is kept as the paths of its PEM files: its private key is never copied.
//!
//! The folder is `$MAILROOM_AGENT_CONFIG` when set, else `$XDG_CONFIG_HOME/mailroom-agent`,
//! else `~/.config/mailroom-agent`.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use mailroom_ace::Agreed;
use serde::{Deserialize, Serialize};

use crate::tls::{ClientCertificate, Trust};

/// A login the agent keeps between runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The hub's base URL, `https://host:port`.
    pub url: String,
    /// The account logged in; `None` for an API key, which does not name its account.
    #[serde(default)]
    pub account: Option<String>,
    /// How the hub's certificate is trusted.
    pub trust: Trust,
    /// What every request carries.
    #[serde(flatten)]
    pub credentials: Credentials,
    /// The client certificate presented in every TLS handshake, when the login used one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
    /// The methods the login agreed on (for an API key, which negotiates nothing: those of
    /// the hub's HTTPS link that the agent chose).
    pub ace: Option<Agreed>,
}

/// The bearer secret of requests (`Debug` shows which kind, never the secret).
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Credentials {
    /// An API key (`mrk_…`): never refreshed, refused once revoked or expired.
    ApiKey {
        /// The key's secret.
        api_key: String,
    },
    /// The tokens of a login.
    Tokens {
        /// The bearer token of requests.
        access_token: String,
        /// The token traded for a new pair when the access token expires.
        refresh_token: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::ApiKey { api_key } => write!(f, "ApiKey({} ***)", api_key_id(api_key)),
            Credentials::Tokens { .. } => f.write_str("Tokens(***)"),
        }
    }
}

impl Credentials {
    /// The secret sent as `Authorization: Bearer`.
    pub fn bearer(&self) -> &str {
        match self {
            Credentials::ApiKey { api_key } => api_key,
            Credentials::Tokens { access_token, .. } => access_token,
        }
    }
}

/// The id an API key's secret carries (`mrk_<id>_<random>`), safe to show.
pub fn api_key_id(key: &str) -> &str {
    key.strip_prefix("mrk_")
        .and_then(|rest| rest.split('_').next())
        .unwrap_or("")
}

/// The agent's config folder.
pub fn folder() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("MAILROOM_AGENT_CONFIG") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("mailroom-agent"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("no HOME: set MAILROOM_AGENT_CONFIG to a folder for the agent"))?;
    Ok(PathBuf::from(home).join(".config/mailroom-agent"))
}

fn file() -> Result<PathBuf> {
    Ok(folder()?.join("session.json"))
}

impl Session {
    /// The saved session; an error that says to log in when there is none.
    pub fn load() -> Result<Session> {
        let path = file()?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(anyhow!(
                    "not logged in: run `mailroom-agent login URL` first (with --user NAME --password-stdin, --api-key-stdin, or --cert FILE --key FILE)"
                ));
            }
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a saved session; log in again", path.display()))
    }

    /// Saves the session, 0600, atomically.
    pub fn save(&self) -> Result<()> {
        let dir = folder()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("session.json");
        let temporary = dir.join(".session.json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Forgets the session (logout).
    pub fn remove() -> Result<()> {
        match std::fs::remove_file(file()?) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_keep_tokens_or_a_key_and_read_what_older_agents_wrote() {
        // A session written before API keys and client certificates.
        let old = r#"{"url": "https://hub:8443", "account": "alice",
            "trust": {"pinned": "ab"}, "access_token": "a", "refresh_token": "r", "ace": null}"#;
        let session: Session = serde_json::from_str(old).unwrap();
        assert_eq!(session.account.as_deref(), Some("alice"));
        assert!(matches!(
            &session.credentials,
            Credentials::Tokens { access_token, refresh_token }
                if access_token == "a" && refresh_token == "r"
        ));
        assert_eq!(session.client_certificate, None);

        let key = format!("mrk_{}_{}", "0f".repeat(16), "e1".repeat(32));
        let keyed = Session {
            account: None,
            credentials: Credentials::ApiKey {
                api_key: key.clone(),
            },
            client_certificate: Some(ClientCertificate {
                cert: "/etc/agent/me.crt".into(),
                key: "/etc/agent/me.key".into(),
            }),
            ..session
        };
        let text = serde_json::to_string(&keyed).unwrap();
        assert!(!text.contains("access_token"), "{text}");
        let back: Session = serde_json::from_str(&text).unwrap();
        assert_eq!(back.credentials.bearer(), key);
        assert!(matches!(back.credentials, Credentials::ApiKey { .. }));
        assert_eq!(back.client_certificate, keyed.client_certificate);
        assert_eq!(api_key_id(&key), "0f".repeat(16));
        assert_eq!(api_key_id("not a key"), "");
        let shown = format!("{back:?}");
        assert!(
            !shown.contains(&key) && shown.contains(&"0f".repeat(16)),
            "{shown}"
        );
    }
}
