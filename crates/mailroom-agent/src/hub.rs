//! The hub's public HTTPS API as the agent uses it: one request at a time, retried with
//! backoff when the network or the hub fails for a while, the access token refreshed once
//! when it has expired (an API key is never refreshed: a 401 means it was refused), and every
//! refusal turned into a [`Failure`] with the hub's own words and the exit code a script can
//! rely on. A client certificate the hub refuses in the handshake is a refused login, not an
//! unreachable hub.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use crate::session::{Credentials, Session, api_key_id};
use crate::tls::{self, ClientCertificate, Trust};

/// Exit codes: what a script may rely on.
pub mod exit {
    /// Everything asked was done.
    pub const OK: i32 = 0;
    /// A local problem: bad arguments, files, the config folder.
    pub const LOCAL: i32 = 1;
    /// Not logged in, or the hub refused the login or the session.
    pub const AUTH: i32 = 2;
    /// The hub refused the request (not allowed, not found, too large, conflict).
    pub const REFUSED: i32 = 3;
    /// The hub could not be reached, or kept failing, after every retry.
    pub const UNREACHABLE: i32 = 4;
    /// A file did not match its SHA-256.
    pub const INTEGRITY: i32 = 5;
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: i32,
    /// What went wrong, for people.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// A failure with `code`.
pub fn fail(code: i32, message: impl Into<String>) -> anyhow::Error {
    Failure {
        code,
        message: message.into(),
    }
    .into()
}

/// An RFC 9457 problem document's detail.
#[derive(Deserialize)]
struct Problem {
    detail: Option<String>,
    title: Option<String>,
}

/// The detail of a refusal: the hub's problem document, else the status.
pub async fn refusal(response: Response) -> String {
    let status = response.status();
    match response.json::<Problem>().await {
        Ok(Problem {
            detail: Some(detail),
            ..
        }) => detail,
        Ok(Problem {
            title: Some(title), ..
        }) => title,
        _ => format!("the hub answered {status}"),
    }
}

/// A logged-in hub.
pub struct Hub {
    http: reqwest::Client,
    /// The saved login, updated when its tokens are refreshed.
    pub session: Session,
    retries: u32,
    /// The newest credentials and methods, shared with this Hub's forks ([`Hub::fork`]): a
    /// refresh made by one (a refresh token works once) is taken up by the others.
    latest: Arc<tokio::sync::Mutex<Session>>,
}

impl Hub {
    /// The hub of the saved session.
    pub fn open(retries: u32) -> Result<Hub> {
        let session = Session::load().map_err(|err| fail(exit::AUTH, err.to_string()))?;
        Hub::new(session, retries)
    }

    /// The hub of `session` (saved or not).
    pub fn new(session: Session, retries: u32) -> Result<Hub> {
        let http = tls::client(&session.trust, session.client_certificate.as_ref())?;
        Ok(Hub {
            http,
            latest: Arc::new(tokio::sync::Mutex::new(session.clone())),
            session,
            retries,
        })
    }

    /// Another handle on the same hub and connection pool, for requests made at the same time
    /// (HTTP/2 carries them on one connection); the handles share their token refreshes.
    pub fn fork(&self) -> Hub {
        Hub {
            http: self.http.clone(),
            session: self.session.clone(),
            retries: self.retries,
            latest: Arc::clone(&self.latest),
        }
    }

    /// The URL of `path` on the hub.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.session.url.trim_end_matches('/'))
    }

    /// Sends the request `build` makes (called again for each attempt), with the bearer
    /// token or API key: retried with backoff on network errors and 502/503/504, a token
    /// refreshed once on a 401 (a key's 401 is final). Answers any other status as it is.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        self.attempts(method, path, build, self.retries).await
    }

    /// [`Hub::request`] sent once: a network error or a 502/503/504 is not retried, for a
    /// request that may have taken effect without its answer arriving (a one-request send).
    /// A 401 still refreshes the token and sends again (the hub did nothing with it), and so
    /// does a connection that could not be made (nothing was sent).
    pub async fn request_once(
        &mut self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        self.attempts(method, path, build, 0).await
    }

    async fn attempts(
        &mut self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> Result<RequestBuilder>,
        retries: u32,
    ) -> Result<Response> {
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            let bearer = self.session.credentials.bearer().to_owned();
            let request = self
                .http
                .request(method.clone(), self.url(path))
                .bearer_auth(&bearer);
            match build(request)?.send().await {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    if let Credentials::ApiKey { api_key } = &self.session.credentials {
                        return Err(key_refused(api_key));
                    }
                    if refreshed {
                        let detail = refusal(response).await;
                        return Err(fail(
                            exit::AUTH,
                            format!("the hub refused the session ({detail}); log in again"),
                        ));
                    }
                    refreshed = true;
                    self.refresh(&bearer).await?;
                }
                Ok(response) if retryable(response.status()) && attempt < retries => {
                    attempt += 1;
                    backoff(attempt).await;
                }
                Ok(response) => return Ok(response),
                Err(err) => {
                    // A refused client certificate is final; so is a server certificate
                    // that is not the one trusted.
                    let failure = self.unreachable(&err).await;
                    let refused = failure
                        .downcast_ref::<Failure>()
                        .is_some_and(|failure| failure.code == exit::AUTH);
                    let unsent = err.is_connect() && attempt < self.retries;
                    if refused || (attempt >= retries && !unsent) || is_tls(&err) {
                        return Err(failure);
                    }
                    attempt += 1;
                    tracing_line(&format!("retrying after: {}", chain(&err)));
                    backoff(attempt).await;
                }
            }
        }
    }

    /// [`Hub::request`] that must succeed: any other status is a refusal.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let response = self.request(method, path, build).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            let status = response.status();
            let detail = refusal(response).await;
            Err(fail(exit::REFUSED, format!("{detail} ({status})")))
        }
    }

    /// [`unreachable`] for this session's hub.
    async fn unreachable(&self, err: &reqwest::Error) -> anyhow::Error {
        let session = &self.session;
        unreachable(
            err,
            &session.url,
            &session.trust,
            session.client_certificate.as_ref(),
        )
        .await
    }

    /// Trades the refresh token for new tokens, unless another handle already did since
    /// `used` (the access token refused) was sent: then its tokens are taken.
    async fn refresh(&mut self, used: &str) -> Result<()> {
        let mut latest = self.latest.lock().await;
        if latest.credentials.bearer() != used {
            self.session = latest.clone();
            return Ok(());
        }
        let Credentials::Tokens { refresh_token, .. } = &self.session.credentials else {
            return Err(fail(exit::AUTH, "an API key cannot be refreshed"));
        };
        let response = self
            .http
            .post(self.url("/api/v1/token/refresh"))
            .json(&serde_json::json!({"refresh_token": refresh_token}))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(err) => return Err(self.unreachable(&err).await),
        };
        if !response.status().is_success() {
            let detail = refusal(response).await;
            return Err(fail(
                exit::AUTH,
                format!("the session has ended ({detail}); log in again"),
            ));
        }
        let tokens: Tokens = response.json().await?;
        self.session.credentials = Credentials::Tokens {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        };
        self.session.ace = tokens.ace;
        *latest = self.session.clone();
        self.session.save()
    }
}

/// The answer of a token request.
#[derive(Debug, Deserialize)]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
    /// The account.
    pub account: String,
    /// The agreed methods.
    pub ace: Option<mailroom_ace::Agreed>,
}

fn retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// A certificate refusal is not transient: retrying would only repeat it.
fn is_tls(err: &reqwest::Error) -> bool {
    let text = chain(err);
    text.contains("certificate") || text.contains("fatal alert")
}

/// The refusal of API key `key` (a 401): final, exit code 2.
pub fn key_refused(key: &str) -> anyhow::Error {
    fail(
        exit::AUTH,
        format!(
            "the hub refused the API key {}: it was revoked, has expired or is not known to this hub, or its account may not connect now; log in again with a valid key",
            api_key_id(key)
        ),
    )
}

/// A request that failed before the hub answered, to the hub at `url` trusted by `trust`,
/// presenting `certificate`: a hub that refused the client certificate, or wants one, in the
/// handshake (its TLS alert, in the error or read by [`tls::certificate_refusal`]) is a
/// refused login, exit code 2; anything else an unreachable hub.
pub async fn unreachable(
    err: &reqwest::Error,
    url: &str,
    trust: &Trust,
    certificate: Option<&ClientCertificate>,
) -> anyhow::Error {
    let text = chain(err);
    let alert = match tls::certificate_alert(&text) {
        Some(alert) => Some(alert),
        None if !err.is_timeout() => tls::certificate_refusal(url, trust, certificate).await,
        None => None,
    };
    match (alert, certificate) {
        (Some(alert), Some(certificate)) => fail(
            exit::AUTH,
            format!(
                "the hub refused the client certificate {} in the TLS handshake (fatal alert {alert})",
                certificate.cert.display()
            ),
        ),
        (Some(alert), None) => fail(
            exit::AUTH,
            format!(
                "the hub requires a client certificate (fatal alert {alert}): log in with --cert FILE --key FILE"
            ),
        ),
        (None, _) => fail(exit::UNREACHABLE, format!("cannot reach the hub: {text}")),
    }
}

/// An error with its causes, one line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Waits before attempt `n` (1, 2, …): 0.5 s doubling up to 8 s.
pub async fn backoff(n: u32) {
    let millis = 500u64.saturating_mul(1 << n.saturating_sub(1).min(4));
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// A progress note on standard error (never standard output, which scripts read).
pub fn tracing_line(line: &str) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("mailroom-agent: {line}");
    }
}
