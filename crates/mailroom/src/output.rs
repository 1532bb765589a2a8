//! The one module that writes to standard output and standard error: command results as
//! aligned tables for people or JSON for scripts, the machine-readable lines of `serve`, and
//! the one-sentence error of a failed command.
//!
//! Domain types do not derive `Serialize`. The objects the HTTPS API also answers with
//! (accounts, groups, routes, bans, events, the audit chain's verdict and head) are written
//! with [`mailroom_api`]'s types, so `--json` prints exactly what the API returns for them; the
//! small structs here are the shapes only the CLI writes (status, init, audit abuse and
//! export lines, certificates). Nothing else in the binary prints, and the libraries never
//! do. Cells are cleaned of control characters, so a hostile name recorded in the audit trail
//! cannot drive the terminal.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use mailroom_api::E2eKeyView;
use mailroom_api::{
    AccountView, BanView, DeliveryView, EventView, GroupView, HeadView, JobDetailView, JobView,
    RouteView, SessionView, VerifyView, rfc3339,
};
use mailroom_api::{ApiKeyView, NewApiKeyView};
use mailroom_core::E2eKey;
use mailroom_core::{
    AccessPolicy, Account, AuditRecord, Ban, ChainHead, ChainReport, Checkpoint, CheckpointStatus,
    Delivery, Event, Group, Job, JobCounts, NodeRecord, Route, SessionInfo, TotpSetup, format_size,
};
use mailroom_core::{ApiKeyInfo, Secret};
use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::init::InitReport;
use mailroom_tls::{CertInfo, IssuedClient, Pki};

/// Where results go, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

/// Counts shown by `mailroom status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Client accounts.
    pub clients: usize,
    /// Admin accounts.
    pub admins: usize,
    /// Disabled accounts of either kind.
    pub disabled: usize,
    /// Groups.
    pub groups: usize,
    /// Route rules.
    pub routes: usize,
    /// Deliveries whose content is kept (stored, delivered, picked up).
    pub live_deliveries: usize,
    /// The nodes (`mailroom serve` processes) registered in the store, alive or dead.
    pub nodes: Vec<NodeStatus>,
    /// This host's clock, as the kernel reports it now.
    pub clock: ClockView,
    /// Encryption at rest: `on (master key FINGERPRINT, N data keys)` or `off`.
    pub at_rest: String,
}

/// The clock as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClockView {
    /// `synchronised`, `unsynchronised` or `unknown`.
    pub state: &'static str,
    /// The maximum error, the kernel's reason, or why it could not be read.
    pub detail: String,
}

impl ClockView {
    /// The view of `status`.
    pub fn new(status: &crate::clock::ClockStatus) -> ClockView {
        ClockView {
            state: status.label(),
            detail: status.detail(),
        }
    }
}

/// One node as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Its id (new at every start).
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// Its last heartbeat (RFC 3339, UTC).
    pub heartbeat: String,
    /// Whether it beat within the last 15 seconds; a dead node's sessions no longer count.
    pub alive: bool,
    /// The times themselves, for the table.
    #[serde(skip)]
    times: (OffsetDateTime, OffsetDateTime),
}

impl NodeStatus {
    /// `node` as seen at `now`.
    pub fn new(node: &NodeRecord, now: OffsetDateTime) -> NodeStatus {
        NodeStatus {
            id: node.node.id.to_string(),
            host: node.node.host.clone(),
            pid: node.node.pid,
            started: rfc3339(node.node.started),
            heartbeat: rfc3339(node.heartbeat),
            alive: node.alive(now),
            times: (node.node.started, node.heartbeat),
        }
    }
}

impl Output {
    /// Tables for people, or JSON for scripts.
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    /// Confirms a change: one sentence, or `{"ok": true, "message": …}`.
    pub fn done(&self, message: &str) -> Result<()> {
        if self.json {
            self.json_line(&Done { ok: true, message })
        } else {
            self.text(&format!("{message}\n"))
        }
    }

    /// What an init created, and the first admin's one-time password, shown this once.
    pub fn init(&self, report: &InitReport) -> Result<()> {
        let data = report.data.display().to_string();
        if self.json {
            return self.json_line(&InitOut {
                data: &data,
                already_initialised: report.created.is_empty(),
                created: &report.created,
                first_admin: report.first_admin.as_ref().map(|admin| FirstAdminOut {
                    name: admin.name.as_str(),
                    password: admin.password.expose(),
                    note: ONE_TIME_NOTE,
                }),
            });
        }
        if report.created.is_empty() {
            return self.text(&format!(
                "mailroom: {data} is already initialised; nothing changed.\n"
            ));
        }
        let mut text = format!(
            "mailroom: initialised {data}: created {}.\n",
            report.created.join(", ")
        );
        if let Some(admin) = &report.first_admin {
            text.push_str(&format!(
                "mailroom: first admin account: {}\nmailroom: one-time password: {}\nmailroom: {ONE_TIME_NOTE}\n",
                admin.name,
                admin.password.expose()
            ));
        }
        self.text(&text)
    }

    /// One blob of `migrate` copied: a progress line on standard error when it is a terminal
    /// (every blob) and nothing otherwise, so scripts and logs get only the report.
    pub fn migrate_progress(&self, done: usize, total: usize, bytes: u64) -> Result<()> {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            eprint!(
                "\rmailroom: copied {done}/{total} blobs ({} MiB)",
                bytes >> 20
            );
            if done == total {
                eprintln!();
            }
        }
        Ok(())
    }

    /// Progress of a long walk over blobs (`fsck`, `backup`, `restore`): a line on standard
    /// error rewritten in place when it is a terminal, nothing otherwise.
    pub fn progress(&self, verb: &str, bytes: u64, total: u64) -> Result<()> {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            let percent = (bytes.saturating_mul(100))
                .checked_div(total)
                .unwrap_or(100);
            eprint!(
                "\rmailroom: {verb} {} of {} MiB ({percent} %)",
                bytes >> 20,
                total >> 20
            );
            if bytes >= total {
                eprintln!();
            }
        }
        Ok(())
    }

    /// What `fsck` found (and repaired).
    pub fn fsck(&self, report: &crate::fsck::FsckReport) -> Result<()> {
        if self.json {
            return self.json_line(report);
        }
        let mut text = format!(
            "checked {} blobs ({} bytes) and {} inline blobs in {:.1} s\n",
            report.blobs_checked, report.bytes_checked, report.inline_checked, report.seconds
        );
        match &report.chain_broken {
            None => text.push_str(&format!(
                "audit chain intact: {} events, head {}\n",
                report.events_checked,
                if report.chain_head.is_empty() {
                    "(none)"
                } else {
                    &report.chain_head
                }
            )),
            Some(broken) => text.push_str(&format!(
                "AUDIT CHAIN BROKEN at {broken} ({} events intact before it)\n",
                report.events_checked
            )),
        }
        if report.recent_unreferenced > 0 {
            text.push_str(&format!(
                "{} unreferenced blobs written in the last {} minutes were not judged (an upload may be recording them)\n",
                report.recent_unreferenced,
                crate::fsck::ORPHAN_GRACE.as_secs() / 60
            ));
        }
        if report.unfinished_uploads > 0 {
            text.push_str(&format!(
                "{} unreferenced blobs belong to resumable uploads not finished yet (taken up by their next request)\n",
                report.unfinished_uploads
            ));
        }
        for problem in &report.problems {
            let kind = serde_json::to_value(problem.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            text.push_str(&format!(
                "{kind} blob {}: {}\n",
                problem.blob, problem.detail
            ));
            if !problem.deliveries.is_empty() {
                text.push_str(&format!(
                    "  deliveries: {}\n",
                    problem.deliveries.join(", ")
                ));
            }
            if let Some(repaired) = &problem.repaired {
                text.push_str(&format!("  repaired: {repaired}\n"));
            }
        }
        if report.problems.is_empty() && report.chain_broken.is_none() {
            text.push_str("no problems found\n");
        }
        self.text(&text)
    }

    /// What `backup` wrote or `restore` restored.
    pub fn backup(&self, report: &crate::backup::BackupReport, restored: bool) -> Result<()> {
        if self.json {
            return self.json_line(report);
        }
        let rate = (report.bytes as f64 / 1e6) / report.seconds.max(1e-3);
        let text = match restored {
            false => format!(
                "backed up into {}: {} blobs ({} bytes; {} linked, {} copied, {} from the base backup), {} other files, audit chain head {}, in {:.1} s ({rate:.0} MB/s)\n",
                report.dir,
                report.blobs,
                report.bytes,
                report.linked,
                report.copied,
                report.from_base,
                report.files,
                if report.chain_head.is_empty() {
                    "(none)"
                } else {
                    &report.chain_head
                },
                report.seconds
            ),
            true => format!(
                "restored into {}: {} blobs ({} bytes, each SHA-256 checked), {} other files, audit chain verified to {}, in {:.1} s ({rate:.0} MB/s)\n",
                report.dir,
                report.blobs,
                report.bytes,
                report.files,
                if report.chain_head.is_empty() {
                    "(none)"
                } else {
                    &report.chain_head
                },
                report.seconds
            ),
        };
        self.text(&text)
    }

    /// What `migrate` moved.
    pub fn migrated(&self, report: &crate::migrate::MigrateReport) -> Result<()> {
        if self.json {
            return self.json_line(&serde_json::json!({
                "blobs_copied": report.blobs_copied,
                "bytes_copied": report.bytes_copied,
                "blobs_resumed": report.blobs_resumed,
                "rows": report.rows.iter().map(|(table, rows)| serde_json::json!({"table": table, "rows": rows})).collect::<Vec<_>>(),
                "chain_head": report.chain_head,
            }));
        }
        let rows: u64 = report.rows.iter().map(|(_, rows)| rows).sum();
        let mut text = format!(
            "mailroom: moved {} blobs ({} bytes, SHA-256 checked){} and {rows} rows ({}).\n",
            report.blobs_copied,
            report.bytes_copied,
            if report.blobs_resumed > 0 {
                format!(", {} more copied by an earlier run", report.blobs_resumed)
            } else {
                String::new()
            },
            report
                .rows
                .iter()
                .map(|(table, rows)| format!("{table} {rows}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !report.chain_head.is_empty() {
            text.push_str(&format!(
                "mailroom: the audit trail ends at {} on both sides.\n",
                report.chain_head
            ));
        }
        text.push_str("mailroom: now set [meta] url and [blob] url in mailroom.toml (or MAILROOM_META_URL and MAILROOM_BLOB_URL) and start the nodes.\n");
        self.text(&text)
    }

    /// The line a test harness or supervisor reads to learn the bound address, flushed at once.
    pub fn listening(&self, protocol: &str, address: SocketAddr) -> Result<()> {
        if self.json {
            self.json_line(&Listening {
                listening: protocol,
                address: address.to_string(),
            })
        } else {
            self.text(&format!("mailroom: {protocol} listening on {address}\n"))
        }
    }

    /// `account list`.
    pub fn accounts(&self, accounts: &[Account]) -> Result<()> {
        if self.json {
            let out: Vec<AccountView> = accounts.iter().map(AccountView::from).collect();
            return self.json_line(&out);
        }
        let rows = accounts
            .iter()
            .map(|a| {
                vec![
                    a.name.to_string(),
                    a.kind.as_str().to_owned(),
                    enabled(a).to_owned(),
                    password_state(a).to_owned(),
                    a.keys.len().to_string(),
                    short_time(a.created),
                ]
            })
            .collect();
        self.text(&table(
            &["NAME", "KIND", "STATUS", "PASSWORD", "KEYS", "CREATED"],
            rows,
        ))
    }

    /// `account show` and `account set`: never the password hash or the TOTP secret, only
    /// whether there is one.
    pub fn account(&self, account: &Account) -> Result<()> {
        if self.json {
            return self.json_line(&AccountView::from(account));
        }
        let access = &account.access;
        let limits = &access.limits;
        let mut rows = vec![
            ("name", account.name.to_string()),
            ("kind", account.kind.as_str().to_owned()),
            ("status", enabled(account).to_owned()),
            ("password", password_state(account).to_owned()),
            ("totp", totp_state(account)),
            ("created", short_time(account.created)),
            ("require", access.factors.to_string()),
            ("networks", list_or(&networks(access), "any")),
            (
                "cert subject",
                access
                    .certificate_subject
                    .clone()
                    .unwrap_or_else(|| "(the account name)".to_owned()),
            ),
            ("rights", access.rights.to_string()),
            ("allow names", list_or(&limits.name_allow, "any")),
            ("deny names", list_or(&limits.name_deny, "none")),
            ("max file size", size_or_none(limits.max_file_size)),
            ("quota", size_or_none(limits.quota_bytes)),
            ("quota files", number_or_none(limits.quota_files)),
            (
                "retention",
                limits
                    .retention_days
                    .map_or_else(|| "none".to_owned(), |d| format!("{d} days")),
            ),
            ("max sessions", number_or_none(limits.max_sessions)),
            (
                "email",
                access
                    .notices
                    .email
                    .clone()
                    .unwrap_or_else(|| "none".to_owned()),
            ),
            ("notify", access.notices.mode.to_string()),
            (
                "receipts",
                if access.notices.receipts { "on" } else { "off" }.to_owned(),
            ),
            ("keys", account.keys.len().to_string()),
            ("e2e keys", account.e2e_keys.len().to_string()),
        ];
        let mut text = String::new();
        for (label, value) in rows.drain(..) {
            text.push_str(&format!("{:<15}{}\n", format!("{label}:"), clean(&value)));
        }
        for key in &account.keys {
            text.push_str(&format!(
                "  {} {} {}\n",
                key.algorithm,
                key.fingerprint(),
                clean(&key.comment)
            ));
        }
        for key in &account.e2e_keys {
            text.push_str(&format!(
                "  e2e {} {} {}\n",
                key.fingerprint(),
                key.recipient,
                clean(&key.comment)
            ));
        }
        self.text(&text)
    }

    /// `account e2e-key list`: an account's end-to-end keys, in the order added.
    pub fn e2e_keys(&self, keys: &[E2eKey]) -> Result<()> {
        if self.json {
            let out: Vec<E2eKeyView> = keys.iter().map(E2eKeyView::from).collect();
            return self.json_line(&out);
        }
        let rows = keys
            .iter()
            .map(|k| {
                vec![
                    k.fingerprint(),
                    k.recipient.clone(),
                    short_time(k.added),
                    k.comment.clone(),
                ]
            })
            .collect();
        self.text(&table(
            &["FINGERPRINT", "RECIPIENT", "ADDED", "COMMENT"],
            rows,
        ))
    }

    /// `retention run`: how many deliveries expired.
    pub fn expired(&self, count: u64) -> Result<()> {
        if self.json {
            self.json_line(&Expired { expired: count })
        } else {
            self.text(&format!("expired {count} deliveries\n"))
        }
    }

    /// `group list`.
    pub fn groups(&self, groups: &[Group]) -> Result<()> {
        if self.json {
            let out: Vec<GroupView> = groups.iter().map(GroupView::from).collect();
            return self.json_line(&out);
        }
        let rows = groups
            .iter()
            .map(|g| {
                let members: Vec<&str> = g.members.iter().map(|m| m.as_str()).collect();
                vec![g.name.to_string(), members.join(", ")]
            })
            .collect();
        self.text(&table(&["GROUP", "MEMBERS"], rows))
    }

    /// `route list`.
    pub fn routes(&self, routes: &[Route]) -> Result<()> {
        if self.json {
            let out: Vec<RouteView> = routes.iter().map(RouteView::from).collect();
            return self.json_line(&out);
        }
        let rows = routes
            .iter()
            .map(|r| {
                vec![
                    r.from.to_string(),
                    r.to.to_string(),
                    r.effect.as_str().to_owned(),
                    if r.require_e2e { "required" } else { "-" }.to_owned(),
                ]
            })
            .collect();
        self.text(&table(&["FROM", "TO", "EFFECT", "E2E"], rows))
    }

    /// `ban list`: each ban with whether it is in force at `now`.
    pub fn bans(&self, bans: &[Ban], now: OffsetDateTime) -> Result<()> {
        if self.json {
            let out: Vec<BanView> = bans.iter().map(|b| BanView::new(b, now)).collect();
            return self.json_line(&out);
        }
        if bans.is_empty() {
            return self.text("no bans\n");
        }
        let rows = bans
            .iter()
            .map(|b| {
                vec![
                    clean(&b.subject.key()),
                    if b.active(now) { "banned" } else { "ended" }.to_owned(),
                    short_time(b.until),
                    b.level.to_string(),
                    clean(&b.reason),
                ]
            })
            .collect();
        self.text(&table(
            &["SUBJECT", "STATE", "UNTIL", "BANS", "REASON"],
            rows,
        ))
    }

    /// `session list`: every live node's sessions.
    pub fn sessions(&self, sessions: &[SessionInfo]) -> Result<()> {
        if self.json {
            let out: Vec<SessionView> = sessions.iter().map(SessionView::from).collect();
            return self.json_line(&out);
        }
        if sessions.is_empty() {
            return self.text("no live sessions\n");
        }
        let rows = sessions
            .iter()
            .map(|s| {
                vec![
                    s.reference().to_string(),
                    s.account.to_string(),
                    s.protocol.as_str().to_owned(),
                    clean(s.source.as_deref().unwrap_or("-")),
                    short_time(s.started),
                ]
            })
            .collect();
        self.text(&table(
            &["ID", "ACCOUNT", "PROTOCOL", "FROM", "SINCE"],
            rows,
        ))
    }

    /// `account api-key add`: the key and its secret, shown this once.
    pub fn api_key_made(&self, key: &ApiKeyInfo, secret: &Secret<String>) -> Result<()> {
        if self.json {
            return self.json_line(&NewApiKeyView::new(key, secret));
        }
        let expires = key.expires.map_or_else(|| "never".to_owned(), short_time);
        self.text(&format!(
            "added API key {} ({}) to {}: scopes {}, expires {expires}\n\n{}\n\n\
             This secret will not be shown again: only its hash is stored. Hand it to the client \
             now; it sends it as \"Authorization: Bearer <secret>\".\n",
            key.id,
            clean(&key.label),
            key.account,
            key.scopes,
            secret.expose()
        ))
    }

    /// `account api-key list`: an account's API keys, oldest first, never a secret.
    pub fn api_keys(&self, keys: &[ApiKeyInfo]) -> Result<()> {
        if self.json {
            let out: Vec<ApiKeyView> = keys.iter().map(ApiKeyView::from).collect();
            return self.json_line(&out);
        }
        if keys.is_empty() {
            return self.text("no API keys\n");
        }
        let never =
            |time: Option<OffsetDateTime>| time.map_or_else(|| "never".to_owned(), short_time);
        let rows = keys
            .iter()
            .map(|k| {
                vec![
                    k.id.clone(),
                    clean(&k.label),
                    k.scopes.to_string(),
                    short_time(k.created),
                    never(k.expires),
                    never(k.last_used),
                ]
            })
            .collect();
        self.text(&table(
            &["ID", "LABEL", "SCOPES", "CREATED", "EXPIRES", "LAST USED"],
            rows,
        ))
    }

    /// `account totp enroll`: the URI, a QR code for the terminal, the secret and the
    /// recovery codes, shown this once.
    pub fn totp_setup(&self, account: &str, setup: &TotpSetup, qr: &str) -> Result<()> {
        let codes: Vec<&str> = setup
            .recovery_codes
            .iter()
            .map(|c| c.expose().as_str())
            .collect();
        if self.json {
            return self.json_line(&TotpSetupOut {
                account,
                uri: setup.uri.expose(),
                secret: setup.secret.expose(),
                recovery_codes: codes,
            });
        }
        let mut text = format!(
            "enrolled {account} in TOTP. Hand this to the user once; it is not shown again.\n\n{qr}\n{}\n\nsecret (manual entry): {}\n\nrecovery codes (each works once, instead of a code):\n",
            setup.uri.expose(),
            setup.secret.expose()
        );
        for code in codes {
            text.push_str("  ");
            text.push_str(code);
            text.push('\n');
        }
        text.push_str(&format!(
            "\nTo require it: mailroom account set {account} --require password,totp (or publickey,totp)\n"
        ));
        self.text(&text)
    }

    /// `jobs list`: the jobs, then the queue's counts (JSON: the jobs only, as the API lists
    /// them).
    /// `quarantine list`: the held deliveries and why.
    pub fn quarantine(&self, held: &[(Delivery, String)]) -> Result<()> {
        if self.json {
            let out: Vec<QuarantinedView> = held
                .iter()
                .map(|(delivery, reason)| QuarantinedView {
                    delivery: DeliveryView::from(delivery),
                    reason: reason.clone(),
                })
                .collect();
            return self.json_line(&out);
        }
        if held.is_empty() {
            return self.text("the quarantine is empty\n");
        }
        let rows = held
            .iter()
            .map(|(d, reason)| {
                vec![
                    d.id.to_string(),
                    d.sender.to_string(),
                    d.recipient.to_string(),
                    clean(d.name.as_str()),
                    format_size(d.size),
                    short_time(d.updated),
                    clean(reason),
                ]
            })
            .collect();
        self.text(&table(
            &["ID", "SENDER", "RECIPIENT", "NAME", "SIZE", "SINCE", "WHY"],
            rows,
        ))
    }

    pub fn jobs(&self, jobs: &[Job], counts: &JobCounts) -> Result<()> {
        if self.json {
            let out: Vec<JobView> = jobs.iter().map(JobView::from).collect();
            return self.json_line(&out);
        }
        let rows = jobs
            .iter()
            .map(|job| {
                let view = JobView::from(job);
                vec![
                    view.id,
                    clean(&view.rule),
                    view.state,
                    view.attempts.to_string(),
                    short_time(job.due),
                    format!("{} {}", view.handler, clean(&view.target)),
                    clean(view.last_error.as_deref().unwrap_or("-")),
                ]
            })
            .collect();
        let mut text = if jobs.is_empty() {
            "no jobs\n".to_owned()
        } else {
            table(
                &[
                    "ID",
                    "RULE",
                    "STATE",
                    "ATTEMPTS",
                    "DUE",
                    "HANDLER",
                    "LAST ERROR",
                ],
                rows,
            )
        };
        text.push_str(&format!(
            "queued {}, done {}, dead {}, dropped {}\n",
            counts.queued, counts.done, counts.dead, counts.dropped
        ));
        self.text(&text)
    }

    /// `jobs show`.
    pub fn job(&self, job: &Job, event: Option<&Event>) -> Result<()> {
        if self.json {
            return self.json_line(&JobDetailView::new(job, event));
        }
        let view = JobView::from(job);
        let mut text = format!(
            "job       {}\nrule      {}\nhandler   {} {}\nstate     {}\nattempts  {}\ndue       {}\ncreated   {}\nupdated   {}\nerror     {}\n",
            view.id,
            clean(&view.rule),
            view.handler,
            clean(&view.target),
            view.state,
            view.attempts,
            view.due,
            view.created,
            view.updated,
            clean(view.last_error.as_deref().unwrap_or("-")),
        );
        match event {
            Some(e) => text.push_str(&format!(
                "event     {} {} by {} on {}: {} ({})\n",
                e.id,
                e.kind.as_str(),
                clean(&e.actor),
                clean(&e.object),
                e.outcome.as_str(),
                clean(&e.detail)
            )),
            None => text.push_str(&format!(
                "event     {} (not in the audit trail)\n",
                job.event
            )),
        }
        self.text(&text)
    }

    /// `audit list`.
    pub fn events(&self, events: &[Event]) -> Result<()> {
        if self.json {
            let out: Vec<EventView> = events.iter().map(EventView::from).collect();
            return self.json_line(&out);
        }
        let rows = events
            .iter()
            .map(|e| {
                vec![
                    short_time(e.time),
                    e.kind.as_str().to_owned(),
                    e.actor.clone(),
                    e.protocol.as_str().to_owned(),
                    e.source.clone().unwrap_or_else(|| "-".to_owned()),
                    e.object.clone(),
                    e.outcome.as_str().to_owned(),
                    e.detail.clone(),
                ]
            })
            .collect();
        self.text(&table(
            &[
                "TIME", "KIND", "ACTOR", "PROTOCOL", "SOURCE", "OBJECT", "OUTCOME", "DETAIL",
            ],
            rows,
        ))
    }

    /// `verify-install` that found the binary as its manifest records it.
    pub fn install_verified(&self, check: &crate::install::InstallCheck) -> Result<()> {
        let binary = check.binary.display().to_string();
        let manifest = check.manifest.display().to_string();
        if self.json {
            return self.json_line(&InstallOut {
                ok: true,
                binary: &binary,
                manifest: &manifest,
                sha256: &check.sha256,
            });
        }
        self.text(&format!(
            "{}  {}\nmailroom: {} matches {}\n",
            check.sha256,
            clean(&binary),
            clean(&binary),
            clean(&manifest)
        ))
    }

    /// `keys status`.
    pub fn keys_status(&self, status: &crate::at_rest::KeysStatus) -> Result<()> {
        if self.json {
            return self.json_line(status);
        }
        let or_none = |value: &Option<String>| value.clone().unwrap_or_else(|| "none".to_owned());
        self.text(&format!(
            "at rest:          {}\ndata keys:        {}\nwrapped with:     {}\nkey found:        {}{}\nkey file:         {}\n",
            if status.encrypted { "on" } else { "off" },
            status.data_keys,
            or_none(&status.wrapped_with),
            match (&status.key_fingerprint, &status.key_source) {
                (Some(fingerprint), Some(source)) => format!("{fingerprint} in {}", clean(source)),
                _ => "none".to_owned(),
            },
            match status.key_matches {
                Some(true) => " (matches)",
                Some(false) => " (WRONG KEY: it does not open this hub)",
                None => "",
            },
            clean(&status.key_file)
        ))
    }

    /// `status`.
    pub fn status(&self, status: &Status) -> Result<()> {
        if self.json {
            return self.json_line(status);
        }
        self.text(&format!(
            "clients:          {}\nadmins:           {}\ndisabled:         {}\ngroups:           {}\nroutes:           {}\nlive deliveries:  {}\n",
            status.clients,
            status.admins,
            status.disabled,
            status.groups,
            status.routes,
            status.live_deliveries
        ))?;
        self.text(&format!(
            "clock:            {} ({})\n",
            status.clock.state,
            clean(&status.clock.detail)
        ))?;
        self.text(&format!("at rest:          {}\n", status.at_rest))?;
        if status.nodes.is_empty() {
            return self.text("nodes:            none running\n");
        }
        let rows = status
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.clone(),
                    clean(&n.host),
                    n.pid.to_string(),
                    short_time(n.times.0),
                    short_time(n.times.1),
                    if n.alive { "alive" } else { "dead" }.to_owned(),
                ]
            })
            .collect();
        self.text(&format!(
            "\n{}",
            table(
                &["NODE", "HOST", "PID", "STARTED", "HEARTBEAT", "STATE"],
                rows
            )
        ))
    }

    fn json_line<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut line = serde_json::to_string(value).context("encoding JSON output")?;
        line.push('\n');
        self.text(&line)
    }

    fn text(&self, text: &str) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to standard output")
    }
}

// ----- audit commands ----------------------------------------------------------------------

/// `audit abuse`: refused logins by source address and by account name.
#[derive(Debug, Clone)]
pub struct AbuseReport {
    /// One row per source address (the accounts it tried are `distinct`).
    pub by_source: Vec<AbuseRow>,
    /// One row per account name (the sources it was tried from are `distinct`).
    pub by_account: Vec<AbuseRow>,
}

/// One row of an [`AbuseReport`].
#[derive(Debug, Clone)]
pub struct AbuseRow {
    /// The source address or the account name.
    pub key: String,
    /// Refused logins.
    pub attempts: u64,
    /// Distinct accounts tried (by source) or distinct sources (by account).
    pub distinct: u64,
    /// The first refused login.
    pub first: OffsetDateTime,
    /// The last refused login.
    pub last: OffsetDateTime,
}

impl Output {
    /// `audit verify`: the verdict, the head to note down, and each checkpoint's status. When
    /// not `intact`, text mode prints nothing: the caller's error sentence says what is wrong,
    /// and it turns the failure into the exit code.
    pub fn audit_verify(
        &self,
        report: &ChainReport,
        checkpoints: &[(Checkpoint, CheckpointStatus)],
        intact: bool,
    ) -> Result<()> {
        if self.json {
            // The API's verdict object: from the same report and checkpoints, it agrees with
            // `intact`.
            return self.json_line(&VerifyView::new(report, checkpoints));
        }
        if !intact {
            return Ok(());
        }
        let mut text = match &report.head {
            Some(head) => format!(
                "audit trail intact: {} events, head {} {}\n",
                report.checked, head.seq, head.hash
            ),
            None => format!("audit trail intact: {} events\n", report.checked),
        };
        if report.legacy > 0 {
            text.push_str(&format!(
                "({} older events were recorded before the chain began and are not covered)\n",
                report.legacy
            ));
        }
        for (checkpoint, status) in checkpoints {
            if *status == CheckpointStatus::Found {
                text.push_str(&format!("checkpoint {checkpoint} is on the chain\n"));
            }
        }
        self.text(&text)
    }

    /// `audit head`: the checkpoint to keep elsewhere.
    pub fn audit_head(&self, head: &ChainHead) -> Result<()> {
        if self.json {
            return self.json_line(&HeadView::from(head));
        }
        self.text(&format!(
            "seq:        {}\nhash:       {}\nevents:     {}\ntime:       {}\ncheckpoint: {}:{}\n",
            head.seq,
            head.hash,
            head.events,
            rfc3339(head.time),
            head.seq,
            head.hash
        ))
    }

    /// `audit export --format jsonl`: one JSON object per record, one page at a time.
    pub fn audit_lines(&self, records: &[AuditRecord]) -> Result<()> {
        let mut text = String::new();
        for record in records {
            text.push_str(
                &serde_json::to_string(&RecordOut::from(record)).context("encoding JSON output")?,
            );
            text.push('\n');
        }
        self.text(&text)
    }

    /// `audit abuse`: two tables, or one JSON object.
    pub fn abuse(&self, report: &AbuseReport) -> Result<()> {
        if self.json {
            let rows = |rows: &[AbuseRow], by_source: bool| {
                rows.iter()
                    .map(|row| AbuseRowOut::new(row, by_source))
                    .collect::<Vec<_>>()
            };
            return self.json_line(&AbuseOut {
                by_source: rows(&report.by_source, true),
                by_account: rows(&report.by_account, false),
            });
        }
        let rows = |rows: &[AbuseRow]| {
            rows.iter()
                .map(|row| {
                    vec![
                        row.key.clone(),
                        row.attempts.to_string(),
                        row.distinct.to_string(),
                        short_time(row.first),
                        short_time(row.last),
                    ]
                })
                .collect()
        };
        let mut text = String::from("Refused logins by source address\n");
        text.push_str(&table(
            &["SOURCE", "ATTEMPTS", "ACCOUNTS", "FIRST", "LAST"],
            rows(&report.by_source),
        ));
        text.push_str("\nRefused logins by account name\n");
        text.push_str(&table(
            &["ACCOUNT", "ATTEMPTS", "SOURCES", "FIRST", "LAST"],
            rows(&report.by_account),
        ));
        self.text(&text)
    }
}

/// One line of `audit export`: the event with its place in the chain.
/// One held delivery in `quarantine list --json`: the delivery as the API shows it, and why.
#[derive(Serialize)]
struct QuarantinedView {
    #[serde(flatten)]
    delivery: DeliveryView,
    /// What the check found, or why it could not check.
    reason: String,
}

#[derive(Serialize)]
struct RecordOut {
    seq: u64,
    #[serde(flatten)]
    event: EventView,
    prev_hash: Option<String>,
    hash: Option<String>,
}

impl From<&AuditRecord> for RecordOut {
    fn from(record: &AuditRecord) -> Self {
        RecordOut {
            seq: record.seq,
            event: EventView::from(&record.event),
            prev_hash: record.prev_hash.clone(),
            hash: record.hash.clone(),
        }
    }
}

#[derive(Serialize)]
struct AbuseOut {
    by_source: Vec<AbuseRowOut>,
    by_account: Vec<AbuseRowOut>,
}

/// A row by source (`source`, `accounts`) or by account (`account`, `sources`).
#[derive(Serialize)]
struct AbuseRowOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    accounts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<u64>,
    first: String,
    last: String,
}

impl AbuseRowOut {
    fn new(row: &AbuseRow, by_source: bool) -> Self {
        let (key, distinct) = (Some(row.key.clone()), Some(row.distinct));
        let (source, account, accounts, sources) = if by_source {
            (key, None, distinct, None)
        } else {
            (None, key, None, distinct)
        };
        AbuseRowOut {
            source,
            account,
            attempts: row.attempts,
            accounts,
            sources,
            first: rfc3339(row.first),
            last: rfc3339(row.last),
        }
    }
}

// ----- ca commands -------------------------------------------------------------------------

impl Output {
    /// `ca issue-client`: where the files are, and the certificate's serial, fingerprint and
    /// expiry (never the key).
    pub fn client_issued(&self, issued: &IssuedClient) -> Result<()> {
        let cert = issued.cert_path.display().to_string();
        let key = issued.key_path.display().to_string();
        let out = CertOut::new("client", &issued.info, &cert);
        if self.json {
            return self.json_line(&IssuedOut {
                certificate: out,
                key: &key,
            });
        }
        self.text(&format!(
            "issued a client certificate for {}\ncertificate:  {cert} (with the client CA)\nkey:          {key} (keep it private)\nserial:       {}\nsha256:       {}\nvalid until:  {}\n",
            clean(out.common_name),
            out.serial,
            out.fingerprint_sha256,
            out.not_after,
        ))
    }

    /// `ca show`: the server CA, the server certificate, and the client CA (ours, or each
    /// certificate of the external bundle).
    pub fn ca_show(&self, pki: &Pki, external: Option<&(PathBuf, Vec<CertInfo>)>) -> Result<()> {
        let server_ca = pki.server_ca.cert_path.display().to_string();
        let server = pki.server_cert_path.display().to_string();
        let client_ca = pki.client_ca.cert_path.display().to_string();
        let bundle = external.map(|(path, _)| path.display().to_string());
        let mut rows = vec![
            CertOut::new("server CA", &pki.server_ca.info, &server_ca),
            CertOut::new("server certificate", &pki.server_cert, &server),
        ];
        match (external, &bundle) {
            (Some((_, certs)), Some(path)) => {
                rows.extend(
                    certs
                        .iter()
                        .map(|info| CertOut::new("client CA (external)", info, path)),
                );
            }
            _ => rows.push(CertOut::new("client CA", &pki.client_ca.info, &client_ca)),
        }
        if self.json {
            return self.json_line(&CaShowOut { certificates: rows });
        }
        let mut text = String::new();
        for row in &rows {
            text.push_str(&format!(
                "{}\n  subject:      {}\n  file:         {}\n  sha256:       {}\n  valid until:  {}\n",
                row.role,
                clean(&row.subject),
                clean(row.file),
                row.fingerprint_sha256,
                row.not_after,
            ));
            if !row.names.is_empty() {
                text.push_str(&format!(
                    "  names:        {}\n",
                    clean(&row.names.join(", "))
                ));
            }
        }
        self.text(&text)
    }
}

#[derive(Serialize)]
struct CertOut<'a> {
    role: &'static str,
    subject: String,
    common_name: &'a str,
    serial: &'a str,
    fingerprint_sha256: &'a str,
    not_before: String,
    not_after: String,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    names: &'a [String],
    file: &'a str,
}

impl<'a> CertOut<'a> {
    fn new(role: &'static str, info: &'a CertInfo, file: &'a str) -> CertOut<'a> {
        CertOut {
            role,
            subject: info.subject.clone(),
            common_name: info.common_name.as_deref().unwrap_or(""),
            serial: &info.serial_hex,
            fingerprint_sha256: &info.fingerprint_sha256,
            not_before: rfc3339(info.not_before),
            not_after: rfc3339(info.not_after),
            names: &info.names,
            file,
        }
    }
}

#[derive(Serialize)]
struct IssuedOut<'a> {
    certificate: CertOut<'a>,
    key: &'a str,
}

#[derive(Serialize)]
struct CaShowOut<'a> {
    certificates: Vec<CertOut<'a>>,
}

/// Reports a failed command on standard error as one line: `mailroom: error: <sentence>`.
pub fn error(err: &anyhow::Error) {
    let sentence = format!("{err:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut stderr = std::io::stderr().lock();
    // If standard error is gone there is nowhere left to report to; the exit code still says it.
    let _ = writeln!(stderr, "mailroom: error: {}", clean(&sentence));
}

const ONE_TIME_NOTE: &str = "this password is shown only this once and is stored only as a hash; keep it somewhere safe now";

#[derive(Serialize)]
struct TotpSetupOut<'a> {
    account: &'a str,
    uri: &'a str,
    secret: &'a str,
    recovery_codes: Vec<&'a str>,
}

#[derive(Serialize)]
struct Done<'a> {
    ok: bool,
    message: &'a str,
}

#[derive(Serialize)]
struct InstallOut<'a> {
    ok: bool,
    binary: &'a str,
    manifest: &'a str,
    sha256: &'a str,
}

#[derive(Serialize)]
struct Listening<'a> {
    listening: &'a str,
    address: String,
}

#[derive(Serialize)]
struct InitOut<'a> {
    data: &'a str,
    already_initialised: bool,
    created: &'a [String],
    first_admin: Option<FirstAdminOut<'a>>,
}

#[derive(Serialize)]
struct FirstAdminOut<'a> {
    name: &'a str,
    password: &'a str,
    note: &'a str,
}

#[derive(Serialize)]
struct Expired {
    expired: u64,
}

fn enabled(account: &Account) -> &'static str {
    if account.disabled {
        "disabled"
    } else {
        "enabled"
    }
}

fn password_state(account: &Account) -> &'static str {
    if account.password_hash.is_some() {
        "set"
    } else {
        "not set"
    }
}

fn totp_state(account: &Account) -> String {
    match &account.totp {
        Some(totp) => format!("enrolled, {} recovery codes left", totp.recovery.len()),
        None => "not enrolled".to_owned(),
    }
}

fn networks(access: &AccessPolicy) -> Vec<String> {
    access.networks.iter().map(|n| n.to_string()).collect()
}

fn list_or(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(", ")
    }
}

fn size_or_none(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "none".to_owned(),
        |b| format!("{} ({b} bytes)", format_size(b)),
    )
}

fn number_or_none<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

fn short_time(time: OffsetDateTime) -> String {
    time.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_else(|_| time.to_string())
}

/// Replaces control characters, which could move the cursor or recolour a terminal.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Aligned columns separated by two spaces, headers first; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|cell| clean(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["NAME", "KIND"],
            vec![
                vec!["alice".into(), "client".into()],
                vec!["b".into(), "admin".into()],
            ],
        );
        assert_eq!(text, "NAME   KIND\nalice  client\nb      admin\n");
    }

    #[test]
    fn cells_lose_control_characters() {
        let text = table(&["A"], vec![vec!["x\u{1b}[31my\n".into()]]);
        assert_eq!(text, "A\nx?[31my?\n");
    }
}
