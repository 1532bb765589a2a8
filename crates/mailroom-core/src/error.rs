//! The one error type of the mailbox service and its closed set of kinds.
//!
//! Front ends never match on variants: they map [`ErrorKind`] to their protocol's status in
//! exactly one function each (SFTP status, SCP reply, CLI exit). The message of a
//! [`CoreError`] is written for the person at the other end of the wire and never holds a
//! secret or a host path.

use std::fmt;

/// What went wrong, as a closed set that every protocol can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The named account, group, delivery or path does not exist (for this caller).
    NotFound,
    /// The caller may not do this (wrong area of the tree, read-only view, admin-only).
    PermissionDenied,
    /// Route policy forbids sending from this sender to this recipient.
    RouteDenied,
    /// A name or path from the outside was refused by the parser.
    InvalidName,
    /// A size, count or quota limit was hit.
    QuotaExceeded,
    /// The object exists already or changed under us (duplicate name, already picked up).
    Conflict,
    /// A temporary condition (database busy, disk full): trying again later may work.
    Transient,
    /// A bug or an unexpected storage failure; details are logged, not sent to clients.
    Internal,
}

impl ErrorKind {
    /// A stable lower-case label, used in events and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::RouteDenied => "route-denied",
            ErrorKind::InvalidName => "invalid-name",
            ErrorKind::QuotaExceeded => "quota-exceeded",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Transient => "transient",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the mailbox service: a kind plus one sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CoreError {
    kind: ErrorKind,
    message: String,
}

impl CoreError {
    /// Builds an error of `kind` with a client-facing `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CoreError {
            kind,
            message: message.into(),
        }
    }

    /// The kind, which front ends map to a protocol status.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The client-facing sentence.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::PermissionDenied`].
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }

    /// Shorthand for [`ErrorKind::InvalidName`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidName, message)
    }

    /// Shorthand for [`ErrorKind::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// Shorthand for [`ErrorKind::Internal`]; log the cause before building it.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Shorthand for [`ErrorKind::Transient`].
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
}

/// The result type of the mailbox service.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
