//! Who a request is: token logins and the bearer tokens of every later request.
//!
//! Nothing here decides: [`login`] runs the Hub's login steps (password, TOTP code, client
//! certificate) and asks the Hub for tokens; [`authenticate`] asks the Hub whether a bearer
//! token is good. Both are plain functions over a [`Hub`] so that other front ends on this
//! crate (the web pages, with a cookie carrying the same token) reuse them as they are. The
//! axum extractors [`ClientAuth`] and [`AdminAuth`] wrap [`authenticate`] for the API's
//! handlers and refuse the other scope with 403. An `Authorization: Bearer mrk_…` header is an
//! API key of a client account ([`authenticate_api_key`]): accepted wherever a client token
//! is, within its scopes ([`Receiving`], [`Sending`]), but never to manage keys
//! ([`LoginAuth`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use mailroom_core::{
    ClientSession, Credential, Factor, Hub, IssuedTokens, LoginProgress, LoginStep, Protocol,
    Scope, Secret, TokenCheck, TokenIdentity,
};
use mailroom_core::{KeyScope, is_api_key};

use crate::problem::Problem;
use crate::server::{AppState, ConnInfo};

/// What a client gives to log in (from the JSON body or a login form).
#[derive(Debug, Clone, Default)]
pub struct LoginForm {
    /// The account name.
    pub username: String,
    /// The password, if given.
    pub password: Option<Secret<String>>,
    /// A TOTP or recovery code, if given.
    pub code: Option<Secret<String>>,
    /// Client or admin.
    pub scope: Scope,
    /// The negotiated methods the login agreed on (an agent's), written into its event and
    /// bound to its tokens.
    pub methods: Option<String>,
}

/// Logs in through the Hub's login steps and issues a token pair. `certificate_cn` is the
/// common name of a client certificate rustls verified in this connection's handshake.
/// Every refusal is the same 401 (the reason is in the audit trail), except a right password
/// for an account that needs more factors than were given, which names them, as SSH's
/// partial success does.
pub async fn login(
    hub: &Hub,
    form: LoginForm,
    peer: SocketAddr,
    certificate_cn: Option<&str>,
    lifetimes: &mailroom_core::TokenLifetimes,
) -> Result<IssuedTokens, Problem> {
    let source = Some(peer.to_string());
    let mut progress = LoginProgress::for_scope(form.scope);
    if let Some(methods) = &form.methods {
        progress.set_methods(methods.clone());
    }
    let mut password = form.password;
    let mut code = form.code;
    let mut certificate = certificate_cn.map(str::to_owned);
    // The first factor: the password if given, else the certificate.
    let first = match (password.take(), certificate.take()) {
        (Some(p), cert) => {
            certificate = cert;
            Credential::Password(p)
        }
        (None, Some(cn)) => Credential::Certificate(cn),
        (None, None) => {
            // Nothing to check: recorded and scored like any refused login.
            hub.record_login_refusal(
                &form.username,
                "no password or client certificate given",
                source.clone(),
                Protocol::Https,
            )
            .await?;
            return Err(Problem::unauthorized());
        }
    };
    let mut step = hub
        .login(
            &mut progress,
            &form.username,
            first,
            source.clone(),
            Protocol::Https,
        )
        .await?;
    loop {
        match step {
            LoginStep::Accepted(session, guard) => {
                return Ok(hub
                    .issue_tokens(&session, guard, form.scope, lifetimes, form.methods)
                    .await?);
            }
            LoginStep::Refused => return Err(Problem::unauthorized()),
            LoginStep::Continue(remaining) => {
                let next = if remaining.contains(&Factor::Totp)
                    && let Some(c) = code.take()
                {
                    Credential::Code(c)
                } else if remaining.contains(&Factor::Certificate)
                    && let Some(cn) = certificate.take()
                {
                    Credential::Certificate(cn)
                } else if remaining.contains(&Factor::Password)
                    && let Some(p) = password.take()
                {
                    Credential::Password(p)
                } else {
                    let names: Vec<&str> = remaining.iter().map(|f| f.as_str()).collect();
                    let mut problem = Problem::unauthorized();
                    problem.detail = format!(
                        "this account also requires: {} (send them in the same request)",
                        names.join(", ")
                    );
                    return Err(problem);
                };
                step = hub
                    .login(
                        &mut progress,
                        &form.username,
                        next,
                        source.clone(),
                        Protocol::Https,
                    )
                    .await?;
            }
        }
    }
}

/// Checks a bearer token for a request from `peer`: the identity it acts for, or the one
/// opaque 401.
pub async fn authenticate(
    hub: &Hub,
    token: &str,
    peer: SocketAddr,
) -> Result<TokenIdentity, Problem> {
    match hub
        .check_token(token, Some(peer.to_string()), Protocol::Https)
        .await?
    {
        TokenCheck::Valid(identity) => Ok(identity),
        TokenCheck::Refused(reason) => {
            tracing::info!(peer = %peer, reason = %reason, "token refused");
            Err(Problem::unauthorized())
        }
    }
}

/// The bearer token of a request's `Authorization` header, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks an API key (`mrk_…`) for a request from `peer`: the identity it acts for, with the
/// key's scopes, or the same opaque 401 as for a token.
pub async fn authenticate_api_key(
    hub: &Hub,
    key: &str,
    peer: SocketAddr,
) -> Result<TokenIdentity, Problem> {
    match hub
        .check_api_key(key, Some(peer.to_string()), Protocol::Https)
        .await?
    {
        TokenCheck::Valid(identity) => Ok(identity),
        TokenCheck::Refused(reason) => {
            tracing::info!(peer = %peer, reason = %reason, "API key refused");
            Err(Problem::unauthorized())
        }
    }
}

/// The identity of a request's bearer secret: an API key when it has the key prefix, else an
/// access token. (Only the API's header takes keys; the web pages' cookie does not.)
async fn identity(parts: &Parts, state: &Arc<AppState>) -> Result<TokenIdentity, Problem> {
    let conn = parts
        .extensions
        .get::<ConnInfo>()
        .ok_or_else(|| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "no connection"))?;
    let token = bearer_token(parts).ok_or_else(Problem::unauthorized)?;
    if is_api_key(token) {
        return authenticate_api_key(&state.hub, token, conn.peer).await;
    }
    authenticate(&state.hub, token, conn.peer).await
}

/// A request made with a client-scope access token, or with an API key of a client account
/// whatever its scopes: mailbox handlers take [`Receiving`] or [`Sending`] instead, which
/// check the key's scope, and the handlers of the account's own keys [`LoginAuth`].
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// Who the token acts for.
    pub identity: TokenIdentity,
    /// The mailbox session every Hub call runs as.
    pub session: ClientSession,
}

impl FromRequestParts<Arc<AppState>> for ClientAuth {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let identity = identity(parts, state).await?;
        let Some(session) = identity.client_session() else {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "an admin token cannot reach mailbox endpoints: admin accounts own no mailbox",
            ));
        };
        Ok(ClientAuth { identity, session })
    }
}

/// A client request to the inbox (list, read, download, acknowledge): a client token, or an
/// API key with the `receive` scope (else 403 naming the scope).
#[derive(Debug, Clone)]
pub struct Receiving(pub ClientAuth);

impl FromRequestParts<Arc<AppState>> for Receiving {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let auth = ClientAuth::from_request_parts(parts, state).await?;
        auth.identity.require_key_scope(KeyScope::Receive)?;
        Ok(Receiving(auth))
    }
}

/// A client request that sends (uploads, the sent list, recalls): a client token, or an API
/// key with the `send` scope (else 403 naming the scope).
#[derive(Debug, Clone)]
pub struct Sending(pub ClientAuth);

impl FromRequestParts<Arc<AppState>> for Sending {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let auth = ClientAuth::from_request_parts(parts, state).await?;
        auth.identity.require_key_scope(KeyScope::Send)?;
        Ok(Sending(auth))
    }
}

/// A client request made with the tokens of a login, not an API key: what an account does to
/// its own API keys (a key cannot make or revoke keys).
#[derive(Debug, Clone)]
pub struct LoginAuth(pub ClientAuth);

impl FromRequestParts<Arc<AppState>> for LoginAuth {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let auth = ClientAuth::from_request_parts(parts, state).await?;
        if auth.identity.is_api_key() {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "an API key cannot manage API keys; log in with the account (POST /api/v1/token)",
            ));
        }
        Ok(LoginAuth(auth))
    }
}

/// A request made with an admin-scope access token.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    /// Who the token acts for.
    pub identity: TokenIdentity,
}

impl FromRequestParts<Arc<AppState>> for AdminAuth {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let identity = identity(parts, state).await?;
        if identity.scope != Scope::Admin {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "admin endpoints need an admin token (POST /api/v1/token with \"scope\": \"admin\")",
            ));
        }
        Ok(AdminAuth { identity })
    }
}

/// Any valid access token, client or admin (logout).
#[derive(Debug, Clone)]
pub struct AnyAuth {
    /// Who the token acts for.
    pub identity: TokenIdentity,
}

impl FromRequestParts<Arc<AppState>> for AnyAuth {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(AnyAuth {
            identity: identity(parts, state).await?,
        })
    }
}
