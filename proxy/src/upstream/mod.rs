//! The upstream IdP, behind one trait with one implementation per kind:
//! [`authorization_code`] drives an ordinary authorization-code flow (the
//! user's browser comes back to `/callback`); [`ciba`] forwards the request
//! to the IdP's own CIBA endpoint and is polled (or pinged) for the
//! outcome. What a kind must remember about one request is its own
//! serialized context, which the flow seals onto the record; the store
//! never reads it.
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::clients::Client;
use crate::domain::{AuthReqId, BindingMessage, LoginHint, Scope};
use crate::hints::Hint;

pub mod authorization_code;
pub mod ciba;
pub mod health;
pub mod provider;

pub use authorization_code::AuthorizationCode;
pub use ciba::Ciba;
pub use provider::{http_client, Provider, ProviderMetadata};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The request did not reach the IdP, or the IdP said to try later:
    /// sending it again is safe.
    #[error("the identity provider is unreachable or misbehaving: {0}")]
    Unavailable(String),
    /// The request may have reached the IdP, but no answer came back (a
    /// timeout): sending a single-use code again could fail where the first
    /// one succeeded.
    #[error("the identity provider did not answer: {0}")]
    NoAnswer(String),
    /// The operator must fix a setting; `key` names it.
    #[error("configuration: {key}: {message}")]
    Misconfigured { key: &'static str, message: String },
    /// The IdP answered a backchannel request with a CIBA Core §13 error.
    #[error("the identity provider refused the request: {error}")]
    Refused {
        error: String,
        description: Option<String>,
    },
    #[error("the identity provider refused to issue tokens: {0}")]
    Rejected(String),
    #[error("the ID token is invalid: {0}")]
    InvalidIdToken(String),
}

/// What the IdP issued, kept sealed until the client redeems it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    pub token_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub id_token: String,
    /// When the IdP issued them (Unix seconds), to age `expires_in`.
    pub received_at: u64,
}

/// One backchannel request, checked, as the upstream is asked to start it.
pub struct BeginRequest<'a> {
    pub id: &'a AuthReqId,
    pub client: &'a Client,
    pub scope: &'a Scope,
    /// The hint exactly as the client sent it.
    pub hint: &'a Hint,
    /// The user it names.
    pub login_hint: &'a LoginHint,
    pub binding_message: Option<&'a BindingMessage>,
    pub acr_values: Option<&'a str>,
    /// The lifetime the proxy gives the request, seconds.
    pub expires_in: u64,
    /// The `state` that brings the user's browser back to `/callback` (the
    /// request's id, sealed: it names the request without a lookup key).
    pub callback_state: &'a str,
}

/// What [`Upstream::user_link`] makes a request's sign-in link from.
pub struct LinkFor<'a> {
    pub client: &'a Client,
    pub login_hint: &'a str,
    pub scope: &'a str,
    /// What [`Upstream::begin`] returned as the context, opened.
    pub context: &'a [u8],
    pub callback_state: &'a str,
}

/// A sign-in started at the IdP.
pub struct Begun {
    /// What this kind must remember about the request (sealed by the flow).
    pub context: Vec<u8>,
    /// A link the user's device opens to sign in; [`Upstream::user_link`]
    /// makes it again from the context.
    pub user_link: Option<Url>,
    /// The IdP's own lifetime for the request, when shorter than asked.
    pub expires_in: Option<u64>,
    /// When the proxy must ask the IdP for the outcome itself; `None` when
    /// the user's browser brings it back.
    pub follow_up: Option<FollowUp>,
}

/// How often the proxy asks the IdP about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    /// The IdP's minimum interval between token calls, seconds.
    pub interval_secs: u64,
    /// How often the proxy asks, seconds: the interval when polling, the
    /// ping fallback when the IdP pings.
    pub every_secs: u64,
}

/// What the upstream is asked to redeem.
pub enum Grant<'a> {
    /// The authorization response the user's browser brought back.
    Code {
        code: &'a str,
        /// RFC 9207 `iss`, when the IdP sent one.
        issuer: Option<&'a str>,
    },
    /// Ask the IdP's token endpoint (native CIBA).
    Poll,
}

/// Tokens whose ID token has been verified for this request.
pub struct Issued {
    pub tokens: TokenSet,
    pub claims: Map<String, Value>,
}

/// What the IdP says about a request.
pub enum Answer {
    Issued(Issued),
    /// CIBA Core §11 `authorization_pending`.
    Pending,
    /// CIBA Core §11 `slow_down`: ask less often.
    SlowDown,
    /// The IdP ended the request; why, in words for the client.
    Ended(String),
}

/// Whether a ping from the IdP is for the request it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingCheck {
    Valid,
    /// The bearer token is not this request's.
    WrongToken,
    /// The body names another request.
    WrongRequest,
}
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// The IdP's metadata, keys and ID-token checks.
    fn provider(&self) -> &Provider;

    /// Whether the IdP can serve this kind now: its metadata is loaded and
    /// has what the kind needs.
    async fn ready(&self) -> Result<(), UpstreamError> {
        self.provider().metadata().await.map(|_| ())
    }

    /// `Err` while recent calls say the IdP cannot be reached (see
    /// [`health`]); answers at once, without asking the IdP.
    fn reachable(&self) -> Result<(), UpstreamError> {
        self.provider().reachable()
    }

    /// Starts the sign-in for one backchannel request.
    async fn begin(&self, request: &BeginRequest<'_>) -> Result<Begun, UpstreamError>;

    /// The sign-in link [`Self::begin`] gave, made again from the request's
    /// context: links are not stored, as they were most of a pending
    /// request's bytes. `None` when the IdP reaches the user itself.
    async fn user_link(&self, link: &LinkFor<'_>) -> Result<Option<Url>, UpstreamError>;

    /// Asks the IdP about the request whose context is `context`, with the
    /// code the browser brought back or by polling; tokens come back with
    /// their ID token verified.
    async fn redeem(
        &self,
        client: &Client,
        id: &AuthReqId,
        context: &[u8],
        grant: Grant<'_>,
        now_secs: u64,
    ) -> Result<Answer, UpstreamError>;

    /// The proxy's request an IdP ping's bearer token was made for.
    fn ping_target(&self, _bearer: &str) -> Option<AuthReqId> {
        None
    }

    /// Whether a ping (its bearer token and the IdP's auth_req_id in its
    /// body) belongs to the request whose context is `context`.
    fn check_ping(&self, _context: &[u8], _bearer: &str, _upstream_id: &str) -> PingCheck {
        PingCheck::WrongToken
    }

    /// Tokens the proxy will not hand out (a different user signed in):
    /// revoke them at the IdP when it can (RFC 7009).
    async fn discard(&self, client: &Client, tokens: &TokenSet) {
        self.provider().revoke(client, tokens).await;
    }
}

pub type SharedUpstream = Arc<dyn Upstream>;
