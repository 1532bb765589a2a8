//! `mailroom account e2e-key …`: an account's end-to-end encryption keys (age X25519
//! recipients) added, removed and listed. Like the other admin commands, each makes one Hub
//! call as `cli:<os user>`, which checks the recipient and records the change's event.

use anyhow::{Context, Result};
use mailroom_core::Actor;

use crate::admin::{parse_name, with_hub};
use crate::cli::E2eKeyCommand;
use crate::data::DataDir;
use crate::output::Output;

/// `mailroom account e2e-key …`.
pub async fn e2e_key(
    data: &DataDir,
    out: &Output,
    actor: &Actor,
    command: E2eKeyCommand,
) -> Result<()> {
    match command {
        E2eKeyCommand::Add {
            name,
            recipient,
            comment,
        } => {
            let name = parse_name(&name)?;
            let key = with_hub(data, async |hub| {
                hub.add_e2e_key(actor, &name, &recipient, &comment)
                    .await
                    .with_context(|| format!("cannot add an e2e key to {name}"))
            })
            .await?;
            out.done(&format!("added e2e key {} to {name}", key.fingerprint()))
        }
        E2eKeyCommand::Remove { name, key } => {
            let name = parse_name(&name)?;
            let removed = with_hub(data, async |hub| {
                hub.remove_e2e_key(actor, &name, &key)
                    .await
                    .with_context(|| format!("cannot remove an e2e key from {name}"))
            })
            .await?;
            out.done(&format!(
                "removed e2e key {} from {name}",
                removed.fingerprint()
            ))
        }
        E2eKeyCommand::List(arg) => {
            let name = parse_name(&arg.name)?;
            let keys = with_hub(data, async |hub| {
                hub.e2e_keys(&name)
                    .await
                    .with_context(|| format!("cannot list the e2e keys of {name}"))
            })
            .await?;
            out.e2e_keys(&keys)
        }
    }
}
