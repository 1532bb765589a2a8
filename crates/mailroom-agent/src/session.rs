//! The saved login: the hub's URL, how it is trusted, the tokens and the agreed methods, in
//! `session.json` of the agent's config folder. The folder is made 0700 and the file written
//! 0600 through a temporary file and a rename, so a crash never leaves half a session and no
//! other user can read the tokens.
//!
//! The folder is `$MAILROOM_AGENT_CONFIG` when set, else `$XDG_CONFIG_HOME/mailroom-agent`,
//! else `~/.config/mailroom-agent`.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use mailroom_ace::Agreed;
use serde::{Deserialize, Serialize};

use crate::tls::Trust;

/// A login the agent keeps between runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The hub's base URL, `https://host:port`.
    pub url: String,
    /// The account logged in.
    pub account: String,
    /// How the hub's certificate is trusted.
    pub trust: Trust,
    /// The bearer token of requests.
    pub access_token: String,
    /// The token traded for a new pair when the access token expires.
    pub refresh_token: String,
    /// The methods the login agreed on.
    pub ace: Option<Agreed>,
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
                    "not logged in: run `mailroom-agent login URL --user NAME` first"
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
