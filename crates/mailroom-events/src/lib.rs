//! Events that act: the worker that runs the job queue's jobs, and the handlers it runs.
//!
//! The Hub queues a job in the transaction of the event that causes it (rules select the
//! events; see `mailroom_core::Rules`), so no committed event loses its work to a crash. This
//! crate takes the jobs out again: [`worker::run`] claims due jobs under a lease and runs
//! each handler beside the transfers, [`webhook`] sends signed webhooks over verified TLS to
//! public addresses only, [`email`] sends mails over SMTP (and owns `[smtp]`), and
//! [`config`] owns the `[jobs]`, `[webhooks]` and `[notifications]` sections. The e-mails
//! include accounts' notices: "you have files" (one per file or a digest) and receipts.
//!
//! [`export`] writes delivered files into local folders (dispatch to a system on the host).
//!
//! [`scan`] checks a delivery's content before it is delivered: it asks clamd over INSTREAM,
//! or runs a scanner command, for a [`Verdict`], and owns `[check]`. An answer it cannot
//! trust is an error, never a clean verdict.
//!
//! It knows HTTP, SMTP, the scanners and timing; what a job is, when it is due and when it is
//! dead, and what a verdict does to a delivery, are the Hub's.

pub mod config;
pub mod email;
pub mod export;
pub mod scan;
pub mod webhook;
pub mod worker;

pub use config::{JobsConfig, NotificationsConfig, WebhooksConfig, webhook_may_reach};
pub use email::{Mailer, Notice, SmtpConfig, SmtpSecurity};
pub use scan::{CheckConfig, Content, Scanner, Verdict};
pub use webhook::{Payload, WebhookError, Webhooks, secret_key, sign};
pub use worker::{Handlers, run};
