//! Encryption at rest: the master key, the data keys it wraps, and the sealing blob store.
//!
//! The hierarchy, outermost first:
//! - the **master key** (32 random bytes) lives outside the data folder: a file, an
//!   environment variable or a systemd credential (the binary chooses). It never reaches the
//!   metadata store; only its fingerprint does ([`MasterKey::fingerprint`]).
//! - **data keys** (32 random bytes each): one per mailbox, made when the mailbox first
//!   uploads, and one of the hub ([`mailroom_core::HUB_KEY_OWNER`]). The metadata store keeps
//!   them wrapped under the master key (AES-256-GCM, bound to the key's id and owner), so a
//!   rotation of the master key rewraps a few hundred bytes per mailbox and re-encrypts no
//!   blob ([`rotate`]).
//! - **blobs** are sealed under the data key of the mailbox they were uploaded from
//!   ([`SealedBlobStore`]): a header naming the data key and a per-blob salt, then the
//!   content in 64 KiB chunks, each AES-256-GCM under a key derived from the data key and the
//!   salt, with the chunk's number and a last-chunk flag in its nonce. A reader opens only
//!   the chunks a range needs, so FTPS REST and HTTP Range stay cheap; a flipped byte, a
//!   swapped, dropped or cut-off chunk fails its tag.
//! - **small secrets**: the [`Keyring`] is the hub's [`mailroom_core::Vault`] (TOTP secrets,
//!   sealed under a key derived from the hub's data key) and derives the web UI's CSRF key
//!   from it, so that key is never stored in plain and survives restarts.
//!
//! Not here: where the master key comes from (the binary reads the file, variable or
//! credential), and deciding whether a hub encrypts (the binary: new data folders do).

mod keyring;
mod sealed;

pub use keyring::{Keyring, KeyringError, MasterKey, rotate};
pub use sealed::{SEAL_CHUNK, SEAL_MAGIC, SealedBlobStore, is_sealed};
