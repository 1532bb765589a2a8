//! Rebuilds the crate when a migration is added or changed.
//!
//! `sqlx::migrate!` embeds `migrations/sqlite` at compile time; without this, Cargo would not
//! notice a new migration file and the binary would ship the old schema.

#[allow(
    clippy::print_stdout,
    reason = "Cargo reads build script instructions from standard output"
)]
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
