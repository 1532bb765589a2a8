//! Errors as RFC 9457 problem documents (`application/problem+json`): one [`Problem`] type,
//! and the one function that maps a core error kind to an HTTP status ([`Problem::from_core`]).
//!
//! The `detail` is the core's sentence for the client (it never holds a secret or a host
//! path); internal errors say only that something failed, and are logged with their cause.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailroom_core::{CoreError, ErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, for the person reading it.
    pub detail: String,
    /// Seconds to wait before trying again, when the problem is a limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with `status` and `detail`; the title is the status's reason phrase.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://mailroom.invalid/problems/{}", status.as_u16()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 401: the one answer to every failed authentication, whatever the cause.
    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "authentication failed: log in at POST /api/v1/token and send the access token as \"Authorization: Bearer <token>\"",
        )
    }

    /// 400 with `detail`.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    /// The status this problem carries.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Maps a core error to its HTTP status: the one place where kinds become statuses.
    pub fn from_core(err: &CoreError) -> Problem {
        let status = match err.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PermissionDenied | ErrorKind::RouteDenied => StatusCode::FORBIDDEN,
            ErrorKind::InvalidName => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::QuotaExceeded => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Transient => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if err.kind() == ErrorKind::Internal {
            tracing::error!(error = %err, "internal error");
            return Problem::new(
                status,
                "the server failed to do this; the operator has the details",
            );
        }
        let mut problem = Problem::new(status, err.message());
        problem.kind = format!("https://mailroom.invalid/problems/{}", err.kind().as_str());
        if err.kind() == ErrorKind::Transient {
            problem.retry_after = Some(5);
        }
        problem
    }
}

impl From<CoreError> for Problem {
    fn from(err: CoreError) -> Problem {
        Problem::from_core(&err)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after;
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mailroom\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_statuses() {
        let cases = [
            (CoreError::not_found("x"), 404),
            (CoreError::denied("x"), 403),
            (CoreError::conflict("x"), 409),
            (CoreError::new(ErrorKind::QuotaExceeded, "x"), 413),
            (CoreError::internal("secret cause"), 500),
        ];
        for (err, status) in cases {
            let problem = Problem::from_core(&err);
            assert_eq!(problem.status, status);
            assert!(!problem.detail.contains("secret cause"));
        }
    }
}
