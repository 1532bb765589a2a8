//! `mailroom quarantine list|release|delete`: the operators' view of what the check before
//! delivery held back, one Hub call each. Release and delete are admin actions that state a
//! reason, kept in the audit trail.

use anyhow::{Context, Result, anyhow};
use mailroom_core::DeliveryId;

use crate::admin::{cli_actor, with_hub};
use crate::cli::QuarantineCommand;
use crate::data::DataDir;
use crate::output::Output;

/// Runs one `quarantine` command.
pub async fn run(data: &DataDir, out: &Output, command: QuarantineCommand) -> Result<()> {
    match command {
        QuarantineCommand::List => {
            let held = with_hub(data, async |hub| Ok(hub.quarantine().await?))
                .await
                .context("cannot list the quarantine")?;
            out.quarantine(&held)
        }
        QuarantineCommand::Release { id, reason } => {
            let id = parse_id(&id)?;
            let delivery = with_hub(data, async |hub| {
                hub.release_quarantined(&cli_actor(), &id, &reason)
                    .await
                    .with_context(|| format!("cannot release delivery {id}"))
            })
            .await?;
            out.done(&format!(
                "delivery {} ({} -> {} {}) released: delivered to {}",
                delivery.id, delivery.sender, delivery.recipient, delivery.name, delivery.recipient
            ))
        }
        QuarantineCommand::Delete { id, reason } => {
            let id = parse_id(&id)?;
            let delivery = with_hub(data, async |hub| {
                hub.delete_quarantined(&cli_actor(), &id, &reason)
                    .await
                    .with_context(|| format!("cannot delete delivery {id}"))
            })
            .await?;
            out.done(&format!(
                "delivery {} ({} -> {} {}) deleted from quarantine",
                delivery.id, delivery.sender, delivery.recipient, delivery.name
            ))
        }
    }
}

fn parse_id(input: &str) -> Result<DeliveryId> {
    DeliveryId::parse(input.trim()).map_err(|_| {
        anyhow!(
            "{:?} is not a delivery id (a UUID, as `mailroom quarantine list` shows)",
            input.chars().take(60).collect::<String>()
        )
    })
}
