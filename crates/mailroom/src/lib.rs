//! The binary's modules compiled as a library, for the fuzz targets in `fuzz/` and only with
//! the `fuzzing` feature; without it this library is empty, and `main.rs` never uses it.
//!
//! The config loader (`config.rs`) belongs to the binary (only the binary parses TOML), and
//! its section types reach into most of the binary's modules, so rather than move code out
//! of the binary for the sake of a fuzzer, the same module files are compiled a second time
//! here, behind the feature, and [`fuzzing`] is the one item they expose. Normal builds,
//! tests and the `mailroom` executable are unchanged.

// The binary's modules are written for `main.rs`: seen from this library most of them are
// unused.
#![cfg_attr(feature = "fuzzing", allow(dead_code, unused_imports))]

#[cfg(feature = "fuzzing")]
mod ace;
#[cfg(feature = "fuzzing")]
mod admin;
#[cfg(feature = "fuzzing")]
mod at_rest;
#[cfg(feature = "fuzzing")]
mod audit;
#[cfg(feature = "fuzzing")]
mod auth;
#[cfg(feature = "fuzzing")]
mod backup;
#[cfg(feature = "fuzzing")]
mod ca;
#[cfg(feature = "fuzzing")]
mod cli;
#[cfg(feature = "fuzzing")]
mod clock;
#[cfg(feature = "fuzzing")]
mod config;
#[cfg(feature = "fuzzing")]
mod data;
#[cfg(feature = "fuzzing")]
mod drop;
#[cfg(feature = "fuzzing")]
mod e2e;
#[cfg(feature = "fuzzing")]
mod engines;
#[cfg(feature = "fuzzing")]
mod fsck;
#[cfg(feature = "fuzzing")]
mod init;
#[cfg(feature = "fuzzing")]
mod install;
#[cfg(feature = "fuzzing")]
mod jobs;
#[cfg(feature = "fuzzing")]
mod logging;
#[cfg(feature = "fuzzing")]
mod migrate;
#[cfg(feature = "fuzzing")]
mod ops;
#[cfg(feature = "fuzzing")]
mod output;
#[cfg(feature = "fuzzing")]
mod quarantine;
#[cfg(feature = "fuzzing")]
mod rules;
#[cfg(feature = "fuzzing")]
mod security;
#[cfg(feature = "fuzzing")]
mod serve;
#[cfg(feature = "fuzzing")]
mod session;
#[cfg(feature = "fuzzing")]
mod strict;
#[cfg(feature = "fuzzing")]
mod syslog;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
