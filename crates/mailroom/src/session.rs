//! `mailroom session list|kick`: the live sessions of every node of the hub, one Hub call each.
//! The CLI is no node itself: it reads the nodes' sessions from the metadata store, and a kick
//! asks the node that holds the session to close it (audited), which it does within two
//! seconds.

use anyhow::{Context, Result, anyhow};
use mailroom_core::SessionRef;

use crate::admin::{cli_actor, with_hub};
use crate::cli::SessionCommand;
use crate::data::DataDir;
use crate::output::Output;

/// Runs one `session` command.
pub async fn run(data: &DataDir, out: &Output, command: SessionCommand) -> Result<()> {
    match command {
        SessionCommand::List => {
            let sessions = with_hub(data, async |hub| Ok(hub.live_sessions().await?))
                .await
                .context("cannot list the live sessions")?;
            out.sessions(&sessions)
        }
        SessionCommand::Kick { id } => {
            let target = SessionRef::parse(id.trim()).map_err(|_| {
                anyhow!(
                    "{:?} is not a session id (NODE:NUMBER, as `mailroom session list` shows)",
                    id.chars().take(80).collect::<String>()
                )
            })?;
            with_hub(data, async |hub| {
                hub.kick_session(&cli_actor(), &target)
                    .await
                    .with_context(|| format!("cannot close session {target}"))
            })
            .await?;
            out.done(&format!(
                "session {target} closed (its node ends it within two seconds)"
            ))
        }
    }
}
