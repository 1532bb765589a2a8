//! The admin commands: each parses its arguments with the core's parsers, opens the stores of
//! the data folder, makes one [`Hub`] call as `cli:<os user>`, and reports the result.
//!
//! They are safe while the server runs: SQLite in WAL mode serialises writers across
//! processes, and every change commits with its audit event in one transaction, so a refused
//! command changes nothing. This module never prints; results go through [`Output`].

use std::io::{BufRead, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use mailroom_core::{
    AccountChange, AccountKind, AccountName, Actor, AuthorizedKey, DeliveryQuery, DeliveryState,
    FactorSet, Hub, MetaStoreExt, NotifyMode, Rights, RouteEffect, Secret, parse_email, parse_size,
};
use mailroom_core::{KeyScope, KeyScopes, Route};
use mailroom_core::{parse_globs, parse_networks};

use crate::cli::ApiKeyCommand;
use crate::cli::{
    AccountCommand, GroupCommand, KeyCommand, MemberCommand, RetentionCommand, RouteCommand,
    SetArgs,
};
use crate::data::{DataDir, OpenHub};
use crate::output::{ClockView, NodeStatus, Output, Status};

/// Largest key file read; a public key line is a few hundred bytes (RSA 16384: about 3 KiB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Largest password line read; the core refuses anything over its own, smaller limit.
const MAX_PASSWORD_LINE: u64 = 4096;

/// The actor of CLI changes: the OS user running the command.
pub fn cli_actor() -> Actor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    Actor::cli(&user)
}

/// `mailroom account …`.
pub async fn account(data: &DataDir, out: &Output, command: AccountCommand) -> Result<()> {
    let actor = cli_actor();
    match command {
        AccountCommand::Add {
            name,
            password_stdin,
            authorized_key,
            admin,
        } => {
            let name = parse_name(&name)?;
            if password_stdin && authorized_key.as_deref() == Some(Path::new("-")) {
                bail!(
                    "--password-stdin and --authorized-key - both read standard input; give the key as a file"
                );
            }
            let keys = match &authorized_key {
                Some(file) => vec![read_key(file)?],
                None => Vec::new(),
            };
            let password = if password_stdin {
                Some(read_password()?)
            } else {
                None
            };
            let kind = if admin {
                AccountKind::Admin
            } else {
                AccountKind::Client
            };
            let has_credentials = password.is_some() || !keys.is_empty();
            with_hub(data, async |hub| {
                hub.add_account(&actor, name.clone(), kind, password, keys)
                    .await
                    .with_context(|| format!("cannot add account {name}"))
            })
            .await?;
            let mut message = format!("added {} account {name}", kind.as_str());
            if !has_credentials {
                message.push_str(
                    "; it has no password or key yet, so it cannot log in until you add one",
                );
            }
            out.done(&message)
        }
        AccountCommand::List => out.accounts(
            &with_hub(data, async |hub| {
                hub.accounts().await.context("cannot list accounts")
            })
            .await?,
        ),
        AccountCommand::Show(arg) => {
            let name = parse_name(&arg.name)?;
            out.account(
                &with_hub(data, async |hub| {
                    hub.account(&name).await.map_err(anyhow::Error::from)
                })
                .await?,
            )
        }
        AccountCommand::Set(args) => {
            let name = parse_name(&args.name)?;
            let change = access_change(&args)?;
            let account = with_hub(data, async |hub| {
                hub.change_account(&actor, &name, change)
                    .await
                    .with_context(|| format!("cannot change the access of {name}"))
            })
            .await?;
            out.account(&account)
        }
        AccountCommand::Disable(arg) => set_disabled(data, out, &actor, &arg.name, true).await,
        AccountCommand::Enable(arg) => set_disabled(data, out, &actor, &arg.name, false).await,
        AccountCommand::Delete(arg) => {
            let name = parse_name(&arg.name)?;
            with_hub(data, async |hub| {
                hub.delete_account(&actor, &name)
                    .await
                    .with_context(|| format!("cannot delete account {name}"))
            })
            .await?;
            out.done(&format!("deleted account {name}"))
        }
        AccountCommand::Passwd {
            name,
            password_stdin: _,
        } => {
            let name = parse_name(&name)?;
            let password = read_password()?;
            with_hub(data, async |hub| {
                hub.set_password(&actor, &name, password)
                    .await
                    .with_context(|| format!("cannot set the password of {name}"))
            })
            .await?;
            out.done(&format!("set a new password for {name}"))
        }
        AccountCommand::Totp(command) => crate::security::totp(data, out, &actor, command).await,
        AccountCommand::ApiKey(command) => api_key(data, out, &actor, command).await,
        AccountCommand::E2eKey(command) => crate::e2e::e2e_key(data, out, &actor, command).await,
        AccountCommand::Key(KeyCommand::Add(args)) => {
            let name = parse_name(&args.name)?;
            let key = read_key(&args.file)?;
            let fingerprint = key.fingerprint();
            with_hub(data, async |hub| {
                hub.add_key(&actor, &name, key)
                    .await
                    .with_context(|| format!("cannot add a key to {name}"))
            })
            .await?;
            out.done(&format!("added key {fingerprint} to {name}"))
        }
        AccountCommand::Key(KeyCommand::Remove(args)) => {
            let name = parse_name(&args.name)?;
            let key = read_key(&args.file)?;
            let fingerprint = key.fingerprint();
            with_hub(data, async |hub| {
                hub.remove_key(&actor, &name, &key)
                    .await
                    .with_context(|| format!("cannot remove a key from {name}"))
            })
            .await?;
            out.done(&format!("removed key {fingerprint} from {name}"))
        }
    }
}

/// The longest life `account api-key add --expires-days` may give a key: ten years.
const MAX_KEY_DAYS: u32 = 3650;

/// `mailroom account api-key …`: one Hub call each; a new key's secret is printed once.
async fn api_key(
    data: &DataDir,
    out: &Output,
    actor: &Actor,
    command: ApiKeyCommand,
) -> Result<()> {
    match command {
        ApiKeyCommand::Add(args) => {
            let name = parse_name(&args.name)?;
            let scopes = if args.scopes.is_empty() {
                KeyScopes::ALL
            } else {
                KeyScopes::of(
                    args.scopes
                        .iter()
                        .map(|scope| KeyScope::parse(scope))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            };
            let days = match args.expires_days {
                Some(days @ 1..=MAX_KEY_DAYS) => Some(days),
                Some(_) => bail!("--expires-days must be between 1 and {MAX_KEY_DAYS}"),
                None => None,
            };
            let (key, secret) = with_hub(data, async |hub| {
                let expires = days.map(|days| hub.now() + time::Duration::days(i64::from(days)));
                hub.create_api_key(actor, &name, &args.label, scopes, expires)
                    .await
                    .with_context(|| format!("cannot add an API key to {name}"))
            })
            .await?;
            out.api_key_made(&key, &secret)
        }
        ApiKeyCommand::List(arg) => {
            let name = parse_name(&arg.name)?;
            let keys = with_hub(data, async |hub| {
                hub.api_keys(&name)
                    .await
                    .with_context(|| format!("cannot list the API keys of {name}"))
            })
            .await?;
            out.api_keys(&keys)
        }
        ApiKeyCommand::Revoke { name, id } => {
            let name = parse_name(&name)?;
            with_hub(data, async |hub| {
                hub.revoke_api_key(actor, &name, &id)
                    .await
                    .with_context(|| format!("cannot revoke an API key of {name}"))
            })
            .await?;
            out.done(&format!("revoked API key {id} of {name}"))
        }
    }
}

/// The access change `account set` asks for: every option given, parsed before anything
/// changes; the Hub applies them in one commit.
fn access_change(args: &SetArgs) -> Result<AccountChange> {
    fn each<T>(
        value: &Option<String>,
        flag: &str,
        parse: impl FnOnce(&str) -> Result<T>,
    ) -> Result<Option<T>> {
        value
            .as_deref()
            .map(|v| parse(v.trim()).with_context(|| format!("--{flag}")))
            .transpose()
    }
    let change = AccountChange {
        factors: each(&args.require, "require", |v| Ok(FactorSet::parse(v)?))?,
        networks: each(&args.networks, "networks", |v| {
            Ok(if v == "any" {
                Vec::new()
            } else {
                parse_networks(v)?
            })
        })?,
        certificate_subject: each(&args.certificate_subject, "certificate-subject", |v| {
            if v == "none" {
                return Ok(None);
            }
            if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) {
                bail!("a certificate subject is 1 to 255 printable characters, or none");
            }
            Ok(Some(v.to_owned()))
        })?,
        rights: each(&args.rights, "rights", |v| Ok(Rights::parse(v)?))?,
        name_allow: each(&args.allow_names, "allow-names", |v| {
            Ok(if v == "any" {
                Vec::new()
            } else {
                parse_globs(v)?
            })
        })?,
        name_deny: each(&args.deny_names, "deny-names", |v| {
            Ok(if v == "none" {
                Vec::new()
            } else {
                parse_globs(v)?
            })
        })?,
        max_file_size: each(&args.max_file_size, "max-file-size", size_or_none)?,
        quota_bytes: each(&args.quota_bytes, "quota-bytes", size_or_none)?,
        quota_files: each(&args.quota_files, "quota-files", count_or_none::<u64>)?,
        retention_days: each(&args.retention_days, "retention-days", |v| {
            let days = count_or_none::<u32>(v)?;
            if days == Some(0) {
                bail!("0 days would expire every file at once: give at least 1, or none");
            }
            Ok(days)
        })?,
        max_sessions: each(&args.max_sessions, "max-sessions", count_or_none::<u32>)?,
        email: each(&args.email, "email", |v| {
            Ok(if v == "none" {
                None
            } else {
                Some(parse_email(v)?)
            })
        })?,
        notify: each(&args.notify, "notify", |v| Ok(NotifyMode::parse(v)?))?,
        receipts: each(&args.receipts, "receipts", |v| match v {
            "on" => Ok(true),
            "off" => Ok(false),
            other => bail!("{other:?}: on or off"),
        })?,
        ..AccountChange::default()
    };
    if change.is_empty() {
        bail!(
            "nothing to change: give at least one option, e.g. --rights send,receive (see mailroom account set --help)"
        );
    }
    Ok(change)
}

fn size_or_none(value: &str) -> Result<Option<u64>> {
    if value == "none" {
        return Ok(None);
    }
    Ok(Some(parse_size(value)?))
}

fn count_or_none<T: std::str::FromStr>(value: &str) -> Result<Option<T>> {
    if value == "none" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{value:?} is not a whole number (or none)"))
}

/// `mailroom retention run`.
pub async fn retention(data: &DataDir, out: &Output, command: RetentionCommand) -> Result<()> {
    let RetentionCommand::Run = command;
    let expired = with_hub(data, async |hub| {
        hub.expire_due()
            .await
            .context("cannot expire old deliveries")
    })
    .await?;
    out.expired(expired)
}

async fn set_disabled(
    data: &DataDir,
    out: &Output,
    actor: &Actor,
    name: &str,
    disabled: bool,
) -> Result<()> {
    let name = parse_name(name)?;
    let verb = if disabled { "disable" } else { "enable" };
    with_hub(data, async |hub| {
        hub.set_disabled(actor, &name, disabled)
            .await
            .with_context(|| format!("cannot {verb} account {name}"))
    })
    .await?;
    out.done(&format!("{verb}d account {name}"))
}

/// `mailroom group …`.
pub async fn group(data: &DataDir, out: &Output, command: GroupCommand) -> Result<()> {
    let actor = cli_actor();
    match command {
        GroupCommand::Add(args) => {
            let name = parse_name(&args.name)?;
            let members = args
                .members
                .iter()
                .map(|m| parse_name(m.trim()))
                .collect::<Result<Vec<_>>>()?;
            let count = members.len();
            // The group and its members in one commit: an unknown member creates nothing.
            with_hub(data, async |hub| {
                hub.add_group(&actor, name.clone(), members)
                    .await
                    .with_context(|| format!("cannot add group {name}"))
            })
            .await?;
            out.done(&match count {
                0 => format!("added group {name}"),
                n => format!("added group {name} with {n} member(s)"),
            })
        }
        GroupCommand::Delete(arg) => {
            let name = parse_name(&arg.name)?;
            with_hub(data, async |hub| {
                hub.delete_group(&actor, &name)
                    .await
                    .with_context(|| format!("cannot delete group {name}"))
            })
            .await?;
            out.done(&format!("deleted group {name}"))
        }
        GroupCommand::List => out.groups(
            &with_hub(data, async |hub| {
                hub.groups().await.context("cannot list groups")
            })
            .await?,
        ),
        GroupCommand::Member(MemberCommand::Add(args)) => {
            let group = parse_name(&args.group)?;
            let member = parse_name(&args.name)?;
            with_hub(data, async |hub| {
                hub.add_member(&actor, &group, &member)
                    .await
                    .with_context(|| format!("cannot add {member} to group {group}"))
            })
            .await?;
            out.done(&format!("added {member} to group {group}"))
        }
        GroupCommand::Member(MemberCommand::Remove(args)) => {
            let group = parse_name(&args.group)?;
            let member = parse_name(&args.name)?;
            with_hub(data, async |hub| {
                hub.remove_member(&actor, &group, &member)
                    .await
                    .with_context(|| format!("cannot remove {member} from group {group}"))
            })
            .await?;
            out.done(&format!("removed {member} from group {group}"))
        }
    }
}

/// `mailroom route …`.
pub async fn route(data: &DataDir, out: &Output, command: RouteCommand) -> Result<()> {
    let actor = cli_actor();
    let (args, effect, require_e2e) = match command {
        RouteCommand::List => {
            return out.routes(
                &with_hub(data, async |hub| {
                    hub.routes().await.context("cannot list routes")
                })
                .await?,
            );
        }
        RouteCommand::Remove(args) => {
            let from = parse_name(&args.from)?;
            let to = parse_name(&args.to)?;
            with_hub(data, async |hub| {
                hub.remove_route(&actor, &from, &to)
                    .await
                    .with_context(|| format!("cannot remove the route {from} -> {to}"))
            })
            .await?;
            return out.done(&format!("removed the route {from} -> {to}"));
        }
        RouteCommand::Allow(args) => (args.ends, RouteEffect::Allow, args.require_e2e),
        RouteCommand::Deny(args) => (args, RouteEffect::Deny, false),
    };
    let from = parse_name(&args.from)?;
    let to = parse_name(&args.to)?;
    let verb = effect.as_str();
    let rule = Route {
        from: from.clone(),
        to: to.clone(),
        effect,
        require_e2e,
    };
    with_hub(data, async |hub| {
        hub.set_route_rule(&actor, rule)
            .await
            .with_context(|| format!("cannot {verb} {from} -> {to}"))
    })
    .await?;
    let required = if require_e2e {
        " (end-to-end encryption required)"
    } else {
        ""
    };
    out.done(&format!("route {from} -> {to}: {verb}{required}"))
}

/// `mailroom status`.
pub async fn status(data: &DataDir, out: &Output) -> Result<()> {
    let open = open(data).await?;
    let result = async {
        let accounts = open.hub.accounts().await?;
        let groups = open.hub.groups().await?;
        let routes = open.hub.routes().await?;
        // A read-only count straight from the store: the Hub has no admin view of deliveries.
        let live = open
            .meta
            .port()
            .read_with(|tx| {
                tx.deliveries(&DeliveryQuery {
                    states: DeliveryState::LIVE.to_vec(),
                    ..DeliveryQuery::default()
                })
            })
            .await?;
        let nodes = open.hub.nodes().await?;
        let now = open.hub.now();
        let count = |kind| accounts.iter().filter(|a| a.kind == kind).count();
        Ok::<_, mailroom_core::CoreError>(Status {
            clients: count(AccountKind::Client),
            admins: count(AccountKind::Admin),
            disabled: accounts.iter().filter(|a| a.disabled).count(),
            groups: groups.len(),
            routes: routes.len(),
            live_deliveries: live.len(),
            nodes: nodes.iter().map(|n| NodeStatus::new(n, now)).collect(),
            clock: ClockView::new(&crate::clock::probe().status()),
            at_rest: match &open.keyring {
                Some(keyring) => format!(
                    "on (master key {}, {} data keys)",
                    keyring.fingerprint(),
                    keyring.len()
                ),
                None => "off".to_owned(),
            },
        })
    }
    .await
    .context("cannot read the status");
    out.status(&close(open, result).await?)
}

/// Opens the store, makes one Hub call, and closes the store (checkpointing what this process
/// wrote) whatever the call returned.
pub(crate) async fn with_hub<T>(
    data: &DataDir,
    call: impl AsyncFnOnce(&Hub) -> Result<T>,
) -> Result<T> {
    let open = data.open_hub().await?;
    let result = call(&open.hub).await;
    open.meta.close().await;
    result
}

async fn open(data: &DataDir) -> Result<OpenHub> {
    data.open_hub().await
}

/// Closes the store (checkpointing what this process wrote) and passes the result on.
async fn close<T>(open: OpenHub, result: Result<T>) -> Result<T> {
    open.meta.close().await;
    result
}

pub(crate) fn parse_name(input: &str) -> Result<AccountName> {
    Ok(AccountName::parse(input)?)
}

/// One line from standard input, without its line ending, as a secret.
fn read_password() -> Result<Secret<String>> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_PASSWORD_LINE)
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&line)
        .to_owned();
    Ok(Secret::new(password))
}

/// The one public key in `file` (`-` for standard input): blank lines and `#` comments are
/// skipped, and exactly one key line must remain.
fn read_key(file: &Path) -> Result<AuthorizedKey> {
    let shown = if file == Path::new("-") {
        "standard input".to_owned()
    } else {
        file.display().to_string()
    };
    let mut bytes = Vec::new();
    let read = if file == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes))
    };
    read.with_context(|| format!("cannot read the key file {shown}"))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        bail!("the key file {shown} is larger than 64 KiB; it should hold one public key line");
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the key file {shown} is not text; give the .pub file"))?;
    if text.contains("PRIVATE KEY") {
        bail!("the key file {shown} holds a private key; give the public key (the .pub file)");
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    match lines.as_slice() {
        [line] => AuthorizedKey::parse(line)
            .with_context(|| format!("the key file {shown} holds no valid public key")),
        [] => bail!("the key file {shown} holds no public key"),
        more => bail!(
            "the key file {shown} holds {} lines; give one public key per command",
            more.len()
        ),
    }
}
