//! [`mailroom_core::BlobStore`] on a local folder ([`LocalBlobStore`]) and on S3-compatible
//! object storage ([`S3BlobStore`]).
//!
//! The local folder: write-once blobs made durable with the classic temp file, `fsync`,
//! rename, `fsync` directory sequence. Layout under the root the operator chooses:
//!
//! ```text
//! root/                  0700
//!   staging/<id>.part    0600  uploads in progress; removed by abort or by the next sweep
//!   objects/<aa>/<id>    0600  committed blobs, <aa> = the first two hex digits of the id
//! ```
//!
//! S3 (`s3/`): `<prefix>/objects/<aa>/<id>` in a bucket several nodes may share; an upload
//! in progress is a multipart upload, invisible until its commit completes it.
//!
//! Ids are [`mailroom_core::BlobId`]s made by the server, never client names, so no name from
//! the wire ever reaches the file system or a key here. The SHA-256 of a blob is computed while
//! it streams in; on the local folder out-of-order writes are allowed and make the commit hash
//! the file once more, on S3 they are allowed within a window of unsent data. Nothing in the
//! blob folder is ever executed: files are created 0600 and never chmodded.
//!
//! Deliberately not here: deciding which blobs are live (the metadata store knows that and
//! passes the set to [`mailroom_core::BlobStore::sweep`]), choosing a backend (the binary
//! does). Encryption at rest ([`at_rest`]) is a store over either of them, behind the same
//! trait and checked by the same `tests/conformance.rs`.

pub mod at_rest;
mod fsio;
mod reader;
mod s3;
mod store;
mod sweep;
mod writer;

pub use s3::{
    DEFAULT_SWEEP_GRACE, MAX_BLOB_SIZE, MAX_PENDING, PART_SIZE, PARTS_IN_FLIGHT, READ_WINDOW,
    S3BlobStore, S3Options, S3Stats,
};
pub use store::{DEFAULT_INLINE_LIMIT, LocalBlobStore, SET_ASIDE};

/// The longest single [`mailroom_core::BlobWriter::write_at`] accepted; a longer one is
/// refused with [`mailroom_core::ErrorKind::QuotaExceeded`] before anything is written.
pub const MAX_WRITE_LEN: usize = 16 * 1024 * 1024;

/// The most bytes one [`mailroom_core::BlobReader::read_at`] returns, whatever was asked for.
pub const MAX_READ_LEN: usize = 4 * 1024 * 1024;
