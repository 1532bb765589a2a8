//! The Hub's rules, tested on the in-memory test bed (`MemoryMeta`, `MemoryBlobs`,
//! `ManualClock`; feature `testing`) with no socket, disk or database: route policy and
//! rights, sizes and quotas, file names, group fan-outs, retention, tokens and sessions (across
//! the nodes of a cluster too), atomic admin changes, one store hop per operation, a policy cache that is never stale, and
//! checking before delivery with its quarantine, accounts' notices, and logins with the
//! one-time code appended to the password (FTP's).
//!
//! Every refusal is checked for its error kind and for changing nothing (accounts, groups,
//! routes, deliveries, blobs and events, but for the one refusal event a client refusal
//! records): see [`bed::Bed::refused`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod api_keys;
mod bed;
mod cache;
mod check;
mod codes;
mod defence;
mod e2e;
mod fanout;
mod fsck;
mod hops;
mod jobs;
mod names;
mod notices;
mod own;
mod quotas;
mod resumable;
mod retention;
mod routes;
mod sessions;
mod tokens;
