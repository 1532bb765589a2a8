//! Project chores. For now it only points at its tests: `cargo test -p xtask` runs the tidy
//! checks that keep the workspace's architecture rules true.

use std::io::Write;

fn main() {
    let _ = writeln!(
        std::io::stderr(),
        "xtask: the tidy checks run with `cargo test -p xtask` (and with scripts/test)"
    );
}
