//! The admin commands of authentication and defence: TOTP enrolment (`account totp …`) and
//! bans (`ban …`). Like the other admin commands, each makes one Hub call as
//! `cli:<os user>`; a running server picks the change up within seconds.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use mailroom_core::{Actor, BanSubject};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use time::OffsetDateTime;

use crate::admin::{cli_actor, parse_name, with_hub};
use crate::cli::{BanCommand, TotpCommand};
use crate::data::DataDir;
use crate::output::Output;

/// Longest ban an administrator may place by hand: a year.
const MAX_MANUAL_BAN_MINUTES: u64 = 366 * 24 * 60;

/// `mailroom account totp …`.
pub async fn totp(data: &DataDir, out: &Output, actor: &Actor, command: TotpCommand) -> Result<()> {
    match command {
        TotpCommand::Enroll(arg) => {
            let name = parse_name(&arg.name)?;
            let setup = with_hub(data, async |hub| {
                hub.enroll_totp(actor, &name)
                    .await
                    .with_context(|| format!("cannot enrol {name} in TOTP"))
            })
            .await?;
            let qr = terminal_qr(setup.uri.expose())?;
            out.totp_setup(name.as_str(), &setup, &qr)
        }
        TotpCommand::Remove(arg) => {
            let name = parse_name(&arg.name)?;
            with_hub(data, async |hub| {
                hub.remove_totp(actor, &name)
                    .await
                    .with_context(|| format!("cannot remove the TOTP enrolment of {name}"))
            })
            .await?;
            out.done(&format!("removed the TOTP enrolment of {name}"))
        }
    }
}

/// `mailroom ban …`.
pub async fn ban(data: &DataDir, out: &Output, command: BanCommand) -> Result<()> {
    let actor = cli_actor();
    match command {
        BanCommand::List { all } => {
            let now = OffsetDateTime::now_utc();
            let bans = with_hub(data, async |hub| {
                hub.bans().await.context("cannot list bans")
            })
            .await?;
            let shown: Vec<_> = bans.into_iter().filter(|b| all || b.active(now)).collect();
            out.bans(&shown, now)
        }
        BanCommand::Add {
            subject,
            minutes,
            reason,
        } => {
            let subject = BanSubject::parse(&subject)?;
            if minutes == 0 || minutes > MAX_MANUAL_BAN_MINUTES {
                bail!("--minutes must be between 1 and {MAX_MANUAL_BAN_MINUTES}");
            }
            let ban = with_hub(data, async |hub| {
                hub.ban(
                    &actor,
                    subject.clone(),
                    Duration::from_secs(minutes * 60),
                    &reason,
                )
                .await
                .with_context(|| format!("cannot ban {subject}"))
            })
            .await?;
            out.done(&format!(
                "banned {subject} for {minutes} min (ban #{}); a running server applies it within seconds",
                ban.level
            ))
        }
        BanCommand::Remove { subject } => {
            let subject = BanSubject::parse(&subject)?;
            with_hub(data, async |hub| {
                hub.unban(&actor, &subject)
                    .await
                    .with_context(|| format!("cannot lift the ban of {subject}"))
            })
            .await?;
            out.done(&format!("lifted the ban of {subject}"))
        }
    }
}

/// The URI as a QR code drawn with Unicode half blocks, for a terminal.
fn terminal_qr(uri: &str) -> Result<String> {
    let code = QrCode::new(uri.as_bytes()).context("cannot draw the QR code")?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}
