//! The clerk of the mailroom: the one mailbox service every protocol goes through.
//!
//! It owns the domain (accounts, groups, route policy, deliveries and their lifecycle), the
//! virtual tree a client sees, the one path normaliser, password checks and the audit events
//! of every action. It does no I/O: storage and time come in through the ports of
//! [`ports`], and protocols live in the front-end crates, which talk only to [`Hub`].

pub mod access;
pub mod audit;
pub mod by_id;
pub mod defender;
pub mod error;
pub mod hub;
pub mod login;
pub mod model;
pub mod names;
pub mod password;
pub mod path;
pub mod policy;
pub mod ports;
pub mod refusals;
pub mod resumable;
pub mod secret;
pub mod sessions;
pub mod tokens;

pub use access::{
    AccessPolicy, Ban, BanSubject, ByteLimit, Factor, FactorSet, Limits, Mailbox, Rights,
    TotpEnrolment, format_size, parse_size,
};
pub use audit::{
    AuditRecord, ChainBreak, ChainHead, ChainProblem, ChainReport, ChainVerifier, Checkpoint,
    CheckpointStatus,
};
pub use defender::{DefenderConfig, Offence};
pub use error::{CoreError, ErrorKind, Result};
pub use hub::{Actor, ClientSession, Entry, Hub, ReadHandle, Upload};
pub use login::{AuthConfig, Credential, LoginProgress, LoginStep, Scope, TotpSetup};
pub use model::{
    Account, AccountKind, AuthorizedKey, BlobId, Delivery, DeliveryId, DeliveryState, Event,
    EventKind, Group, Outcome, Protocol, Route, RouteEffect,
};
pub use names::{AccountName, FileName};
pub use path::{Area, VirtualPath};
pub use ports::{
    BlobReader, BlobStore, BlobWriter, Clock, DeliveryQuery, Durability, EventQuery, InboxUsage,
    MetaStore, StoredBlob, SweepReport, SystemClock,
};
pub use refusals::RefusalRecorder;
pub use resumable::{ResumableInfo, ResumableLease};
pub use secret::Secret;
pub use sessions::{SessionGuard, SessionInfo};
pub use tokens::{
    IssuedTokens, TokenCheck, TokenIdentity, TokenKind, TokenLifetimes, TokenRecord, token_hash,
};
