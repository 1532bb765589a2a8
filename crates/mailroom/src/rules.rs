//! The `[[rules]]` of `mailroom.toml`: which events make jobs, and which handlers run them.
//!
//! Each value is checked as the file is read (event types, account names, outcomes, e-mail
//! addresses, webhook URLs), so a bad one is refused with the file, line and key like any
//! other setting. What the file alone cannot tell (that a named account or group exists,
//! that a webhook's address may be reached, that e-mail has a server) is checked when
//! `serve` starts, and refused with the rule's line.

use std::path::Path;

use anyhow::{Result, bail};
use mailroom_core::{AccountName, EventKind, Handler, Hub, Outcome, Rule, Rules, parse_globs};
use serde::{Deserialize, Serialize};

/// One rule as written in `mailroom.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Its name, unique among the rules; jobs and logs carry it.
    pub name: String,
    /// Event types it selects, e.g. ["delivery.delivered"].
    pub on: Vec<EventKindSetting>,
    /// Only events of this account (its actor, or a party of its delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<NameSetting>,
    /// Only deliveries from this account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<NameSetting>,
    /// Only deliveries to this account, or fanned out from this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<NameSetting>,
    /// Only events with this outcome: ok, refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeSetting>,
    /// Only deliveries whose file name matches this glob (`*`, `?`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<GlobSetting>,
    /// Addresses to mail the event to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<EmailSetting>,
    /// `https://` URLs to POST the event to, signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<WebhookSetting>,
    /// Accounts or groups that get a copy of each selected delivery (dispatch; only with
    /// `on = ["delivery.delivered"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_to: Vec<NameSetting>,
    /// Local folders (absolute paths) each selected delivery is written into, under
    /// `<recipient>/<name>` (export; only with `on = ["delivery.delivered"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<ExportSetting>,
}

/// Declares a setting type that is a checked string: `TryFrom<String>` runs `$check`, whose
/// error becomes the configuration error of the value (with its line).
macro_rules! checked_setting {
    ($(#[$doc:meta])* $name:ident($inner:ty), $check:expr, $show:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub $inner);

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                let check: fn(&str) -> Result<$inner, String> = $check;
                check(&value).map($name)
            }
        }

        impl From<$name> for String {
            fn from(setting: $name) -> String {
                let show: fn(&$inner) -> String = $show;
                show(&setting.0)
            }
        }
    };
}

checked_setting!(
    /// An event type by its label.
    EventKindSetting(EventKind),
    |text| {
        EventKind::parse(text).map_err(|_| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown event type {text:?} (one of: {})", known.join(", "))
        })
    },
    |kind| kind.as_str().to_owned()
);

checked_setting!(
    /// An account or group name.
    NameSetting(AccountName),
    |text| AccountName::parse(text).map_err(|err| err.message().to_owned()),
    |name| name.to_string()
);

checked_setting!(
    /// An outcome label.
    OutcomeSetting(Outcome),
    |text| Outcome::parse(text).map_err(|_| format!("unknown outcome {text:?} (ok, refused or failed)")),
    |outcome| outcome.as_str().to_owned()
);

checked_setting!(
    /// One file-name glob.
    GlobSetting(String),
    |text| match parse_globs(text) {
        Ok(globs) if globs.len() == 1 => Ok(text.trim().to_owned()),
        Ok(_) => Err(format!("{text:?}: one glob, such as \"*.pdf\"")),
        Err(err) => Err(err.message().to_owned()),
    },
    Clone::clone
);

checked_setting!(
    /// An e-mail address (`local@domain`, no spaces, no display name).
    EmailSetting(String),
    |text| mailroom_core::parse_email(text).map_err(|err| err.message().to_owned()),
    Clone::clone
);

checked_setting!(
    /// An export folder: an absolute path, without `..`.
    ExportSetting(String),
    |text| {
        let path = Path::new(text);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            || text.chars().any(char::is_control)
        {
            Err(format!("{text:?}: an export folder is an absolute path without .."))
        } else {
            Ok(text.trim_end_matches('/').to_owned())
        }
    },
    Clone::clone
);

checked_setting!(
    /// A webhook URL: `https://` with a host and no credentials.
    WebhookSetting(String),
    |text| mailroom_events::Webhooks::check_url(text, None)
        .map(|_| text.to_owned())
        .map_err(|err| err.to_string()),
    Clone::clone
);

impl RuleConfig {
    /// The core's rule.
    fn to_rule(&self) -> Rule {
        let handlers = self
            .email
            .iter()
            .map(|e| Handler::Email(e.0.clone()))
            .chain(self.webhook.iter().map(|w| Handler::Webhook(w.0.clone())))
            .chain(self.export_to.iter().map(|f| Handler::Export(f.0.clone())))
            .collect();
        Rule {
            name: self.name.clone(),
            on: self.on.iter().map(|k| k.0).collect(),
            account: self.account.as_ref().map(|n| n.0.clone()),
            sender: self.sender.as_ref().map(|n| n.0.clone()),
            recipient: self.recipient.as_ref().map(|n| n.0.clone()),
            outcome: self.outcome.as_ref().map(|o| o.0),
            file: self.file.as_ref().map(|g| g.0.clone()),
            handlers,
            copy_to: self.copy_to.iter().map(|n| n.0.clone()).collect(),
        }
    }
}

/// The rules of the configuration as the core's [`Rules`], bounded by `max_queued`. A rule
/// without a name, event types or handlers, or a name used twice, is refused with its line
/// in `path`, the configuration file.
pub fn build(rules: &[RuleConfig], max_queued: u64, path: &Path) -> Result<Rules> {
    for (i, rule) in rules.iter().enumerate() {
        let problem = if rule.name.trim().is_empty() {
            Some("a rule needs a name".to_owned())
        } else if rules[..i].iter().any(|r| r.name == rule.name) {
            Some(format!(
                "the name {:?} is taken by an earlier rule",
                rule.name
            ))
        } else if rule.on.is_empty() {
            Some("it selects no event type (on = [\"delivery.delivered\"], for one)".to_owned())
        } else if rule.on.iter().any(|k| k.0 == EventKind::TransferStarted)
            && (rule.sender.is_some() || rule.recipient.is_some() || rule.file.is_some())
        {
            Some(
                "transfer.started comes before any delivery: select it by account or outcome, not by sender, recipient or file"
                    .to_owned(),
            )
        } else if rule.email.is_empty()
            && rule.webhook.is_empty()
            && rule.copy_to.is_empty()
            && rule.export_to.is_empty()
        {
            Some(
                "it names no handler (email = [...], webhook = [...], copy_to = [...] or export_to = [...])"
                    .to_owned(),
            )
        } else if (!rule.copy_to.is_empty() || !rule.export_to.is_empty()) && !only_deliveries(rule)
        {
            Some(
                "copy_to and export_to dispatch deliveries: they take on = [\"delivery.delivered\"] only"
                    .to_owned(),
            )
        } else {
            None
        };
        if let Some(problem) = problem {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            bail!("{}: {problem}", at(path, &text, i, &rule.name));
        }
    }
    Ok(Rules::new(
        rules.iter().map(RuleConfig::to_rule).collect(),
        max_queued,
    )?)
}

/// Whether the rule selects `delivery.delivered` and nothing else.
fn only_deliveries(rule: &RuleConfig) -> bool {
    matches!(rule.on.as_slice(), [kind] if kind.0 == EventKind::DeliveryDelivered)
}

/// What `serve` checks before it starts: every account or group a rule names exists, every
/// webhook's address literal may be reached (`allowed`), and e-mail rules have a server.
pub async fn check(
    rules: &[RuleConfig],
    hub: &Hub,
    allowed: &[mailroom_core::IpNet],
    has_email: bool,
    path: &Path,
) -> Result<()> {
    let text = &std::fs::read_to_string(path).unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        for name in [&rule.account, &rule.sender, &rule.recipient]
            .into_iter()
            .flatten()
            .chain(&rule.copy_to)
        {
            if !hub.principal_exists(&name.0).await? {
                bail!(
                    "{}: no account or group is named {:?}",
                    at(path, text, i, &rule.name),
                    name.0.as_str()
                );
            }
        }
        for url in &rule.webhook {
            if let Err(err) = mailroom_events::Webhooks::check_url(&url.0, Some(allowed)) {
                bail!("{}: webhook {err}", at(path, text, i, &rule.name));
            }
        }
        for folder in &rule.export_to {
            if let Err(err) = export_folder(Path::new(&folder.0)) {
                bail!(
                    "{}: export folder {}: {err}",
                    at(path, text, i, &rule.name),
                    folder.0
                );
            }
        }
        if !rule.email.is_empty() && !has_email {
            bail!(
                "{}: it sends e-mail, but [smtp] names no server",
                at(path, text, i, &rule.name)
            );
        }
    }
    Ok(())
}

/// Checks an export folder: a directory of the user the hub runs as, which others may not
/// write to (or they could plant files where a local system takes deliveries from).
fn export_folder(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let metadata = std::fs::metadata(path).map_err(|err| format!("cannot be read: {err}"))?;
    let user = rustix::process::geteuid().as_raw();
    if !metadata.is_dir() {
        Err("it is not a directory".to_owned())
    } else if metadata.uid() != user {
        Err(format!(
            "it is owned by user id {}, not by the user the hub runs as ({user})",
            metadata.uid()
        ))
    } else if metadata.permissions().mode() & 0o002 != 0 {
        Err("it is world-writable; remove the write permission of others (chmod o-w)".to_owned())
    } else {
        Ok(())
    }
}

/// `mailroom.toml, line N, rule "name"`: where the `i`-th `[[rules]]` table starts.
fn at(path: &Path, text: &str, i: usize, name: &str) -> String {
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with("[[rules]]"))
        .nth(i)
        .map_or(0, |(n, _)| n + 1);
    format!("{}, line {line}, rule {name:?}", path.display())
}
