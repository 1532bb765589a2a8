//! The clerk of the mailroom: the one mailbox service every protocol goes through.
//!
//! It owns the domain (accounts, groups, route policy, deliveries and their lifecycle), the
//! virtual tree a client sees, the one path normaliser, password checks and the audit events
//! of every action. It does no I/O: storage and time come in through the ports of
//! [`MetaStore`], [`BlobStore`] and [`Clock`], and protocols live in the front-end crates,
//! which talk only to [`Hub`].
//!
//! The modules are private; what other crates may use is the list below, chosen on purpose.
#![warn(unreachable_pub)]

mod access;
mod audit;
mod defender;
mod error;
mod hub;
mod jobs;
mod model;
mod names;
mod password;
mod path;
mod policy;
mod ports;
mod refusals;
mod secret;
mod sessions;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use access::{
    AccessPolicy, Ban, BanSubject, ByteLimit, Factor, FactorSet, Limits, Mailbox, Notices,
    NotifyMode, Rights, TotpEnrolment, format_size, glob_matches, in_networks, parse_email,
    parse_globs, parse_network, parse_networks, parse_size, recovery_code_hash,
};
pub use audit::{
    AuditRecord, ChainBreak, ChainHead, ChainProblem, ChainReport, ChainVerifier, Checkpoint,
    CheckpointStatus, GENESIS_HASH, canonical_bytes, chain_hash,
};
pub use defender::{DefenderConfig, Offence};
pub use error::{CoreError, ErrorKind, Result};
pub use hub::{
    API_KEY_PREFIX, ApiKeyInfo, ApiKeyRecord, KeyScope, KeyScopes, MAX_API_KEY_LABEL,
    MAX_API_KEYS_PER_ACCOUNT, is_api_key,
};
pub use hub::{
    AccountChange, Actor, AuthConfig, CheckVerdict, ClientSession, Content, Credential,
    DIGEST_RULE, Entry, Hub, IssuedTokens, JobOutcome, ListedPage, Listing, LoginProgress,
    LoginStep, MAX_BATCH, MAX_NAME_FILTER, MAX_PAGE_SIZE, MAX_RESUMABLE_PER_ACCOUNT, MAX_TARGETS,
    NOTIFY_RULE, RECEIPT_RULE, ReadHandle, ResumableInfo, ResumableLease, ResumableRecord, Scope,
    TokenCheck, TokenIdentity, TokenKind, TokenLifetimes, TokenRecord, TotpSetup, Upload,
    source_ip, token_hash, totp_code,
};
pub use hub::{KeptBlob, OwnSession, OwnUsage, RecipientE2eKeys};
pub use ipnet::IpNet;
pub use jobs::{
    CHECK_RULE, DEFAULT_MAX_QUEUED, Handler, Job, JobCounts, JobQuery, JobState, RetryPolicy, Rule,
    Rules,
};
pub use model::{
    Account, AccountKind, AuthorizedKey, BlobId, Delivery, DeliveryId, DeliveryState, Event,
    EventKind, Group, Outcome, Protocol, Route, RouteEffect,
};
pub use model::{E2E_FINGERPRINT_LEN, E2eKey, MAX_E2E_COMMENT, MAX_E2E_KEYS};
pub use names::{AccountName, FileName, MAX_ACCOUNT_NAME, MAX_FILE_NAME};
pub use password::{
    MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, check_strength as check_password_strength,
};
pub use path::{Area, MAX_PATH, VirtualPath};
pub use ports::{
    AccountUpdate, BlobReader, BlobStore, BlobWriter, Clock, DataKeyRecord, DeliveryOrder,
    DeliveryQuery, DeliverySort, Durability, EventQuery, HUB_KEY_OWNER, InboxUsage, InlineReader,
    ListedBlob, MetaStore, MetaStoreExt, SortDirection, StoreStats, StoredBlob, SweepReport,
    SystemClock, Tx, Unit, UnitOutput, Vault,
};
pub use refusals::RefusalRecorder;
pub use secret::Secret;
pub use sessions::{
    LiveSession, LiveSessionRecord, NODE_FORGOTTEN_AFTER, NODE_TIMEOUT, NodeId, NodeInfo,
    NodeRecord, SessionInfo, SessionRef,
};
