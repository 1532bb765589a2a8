//! The SSH front end: SFTP (draft-ietf-secsh-filexfer-02, version 3) and legacy SCP over
//! SSH (RFC 4251-4254), as thin adapters onto the mailbox service.
//!
//! It authenticates through the [`mailroom_core::Hub`], maps every file operation onto the
//! virtual tree, and maps core error kinds to protocol statuses in one function per protocol.
//! It runs no shell, executes nothing, and forwards no ports, agents or X11.

pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod host_key;
mod preauth;
mod scp;
mod server;
mod sftp;

pub use config::Config;
pub use server::serve;
