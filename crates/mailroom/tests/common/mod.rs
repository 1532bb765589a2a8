//! What the binary's integration tests share: how to run `mailroom` on a data folder with a
//! clean environment.

use std::path::Path;
use std::process::{Command, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mailroom");

/// `mailroom --data DATA ARGS…` with no stray `MAILROOM_*` variable from the caller, as OS
/// user `tester`, the HTTPS front end on a free port (tests run in parallel; each sets its
/// own SFTP port), and standard input closed (a test that feeds input sets its own).
pub fn mailroom(data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MAILROOM_") {
            command.env_remove(name);
        }
    }
    command
        .arg("--data")
        .arg(data)
        .args(args)
        .env("USER", "tester")
        .env("MAILROOM_HTTPS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null());
    command
}
