//! The upstream IdP, behind one trait with one implementation per kind:
//! [`authorization_code`] drives an ordinary authorization-code flow (the
//! user's browser comes back to `/callback`). What a kind must remember
//! about one request is its own serialized context, which the flow seals
//! onto the record; the store never reads it.
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::clients::Client;
use crate::domain::{AuthReqId, LoginHint, Scope};

pub mod authorization_code;
pub mod provider;

pub use authorization_code::AuthorizationCode;
pub use provider::{http_client, Provider, ProviderMetadata};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the identity provider is unreachable or misbehaving: {0}")]
    Unavailable(String),
    #[error("the identity provider refused the code exchange: {0}")]
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
    pub login_hint: &'a LoginHint,
    pub acr_values: Option<&'a str>,
}

/// A sign-in started at the IdP.
pub struct Begun {
    /// What this kind must remember about the request (sealed by the flow).
    pub context: Vec<u8>,
    /// A link the user's device opens to sign in.
    pub user_link: Option<Url>,
    /// The `state` that brings the user's browser back to `/callback`.
    pub callback_state: Option<String>,
}

/// What the upstream is asked to redeem.
pub enum Grant<'a> {
    /// The authorization response the user's browser brought back.
    Code {
        code: &'a str,
        /// RFC 9207 `iss`, when the IdP sent one.
        issuer: Option<&'a str>,
    },
}

/// Tokens whose ID token has been verified for this request.
pub struct Issued {
    pub tokens: TokenSet,
    pub claims: Map<String, Value>,
}

#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// The IdP's metadata, keys and ID-token checks.
    fn provider(&self) -> &Provider;

    /// Starts the sign-in for one backchannel request.
    async fn begin(&self, request: &BeginRequest<'_>) -> Result<Begun, UpstreamError>;

    /// Turns `grant` into verified tokens for the request whose context is
    /// `context`.
    async fn redeem(
        &self,
        client: &Client,
        id: &AuthReqId,
        context: &[u8],
        grant: Grant<'_>,
        now_secs: u64,
    ) -> Result<Issued, UpstreamError>;
}

pub type SharedUpstream = Arc<dyn Upstream>;
