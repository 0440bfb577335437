//! The authorization-code kind, for IdPs without CIBA: the user's device
//! opens an authorization URL (PKCE S256, state, nonce, login hint), and the
//! browser brings a code back to `/callback`. The IdP sees one
//! authorization request and one code exchange per login.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode as Code, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, HttpClientError, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::provider::MAX_RESPONSE_BYTES;
use super::{
    Answer, BeginRequest, Begun, Grant, Issued, LinkFor, Provider, ProviderMetadata, TokenSet,
    Upstream, UpstreamError,
};
use crate::clients::Client;
use crate::domain::AuthReqId;
use crate::jwks::read_limited;

/// What this kind remembers about one request: a random PKCE verifier
/// (RFC 7636 §4.1, 256 bits) from which the nonce is derived, and the
/// `acr_values` asked for. Short on purpose: the sign-in link is made again
/// from it ([`Upstream::user_link`]) instead of being stored, since the link
/// was most of a pending request's bytes. A context written before kept
/// its nonce and the link apart (the long names, read as aliases).
#[derive(Serialize, Deserialize)]
struct Context {
    #[serde(rename = "v", alias = "pkce_verifier")]
    pkce_verifier: String,
    #[serde(
        rename = "n",
        alias = "nonce",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    nonce: Option<String>,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    acr_values: Option<String>,
}

impl Context {
    fn new(acr_values: Option<&str>) -> Self {
        Self {
            pkce_verifier: crate::crypto::random_token(32),
            nonce: None,
            acr_values: acr_values.map(str::to_owned),
        }
    }

    fn read(bytes: &[u8]) -> Result<Self, UpstreamError> {
        serde_json::from_slice(bytes)
            .map_err(|e| UpstreamError::Rejected(format!("unreadable request context: {e}")))
    }

    fn bytes(&self) -> Result<Vec<u8>, UpstreamError> {
        serde_json::to_vec(self).map_err(|e| UpstreamError::Unavailable(e.to_string()))
    }

    /// The ID token's `nonce`: a digest of the verifier, so it is not kept
    /// and reveals nothing of the verifier (which differs from the PKCE
    /// challenge by its label).
    fn nonce(&self) -> String {
        match &self.nonce {
            Some(nonce) => nonce.clone(),
            None => {
                let mut digest = Sha256::new();
                digest.update(b"ciba-proxy nonce\0");
                digest.update(self.pkce_verifier.as_bytes());
                URL_SAFE_NO_PAD.encode(digest.finalize())
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdTokenField {
    #[serde(default)]
    id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

type UpstreamTokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;
type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    UpstreamTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A sign-in started at the IdP.
pub struct SignIn {
    /// Where the user's browser goes to sign in.
    pub url: Url,
    /// The `state` the browser brings back.
    pub state: String,
    /// What [`AuthorizationCode::finish`] needs (the PKCE verifier and
    /// nonce): the caller keeps it sealed.
    pub context: Vec<u8>,
}

pub struct AuthorizationCode {
    provider: Arc<Provider>,
    redirect_uri: RedirectUrl,
    exchange_attempts: u32,
}

impl AuthorizationCode {
    pub fn new(provider: Arc<Provider>, redirect_uri: Url, exchange_attempts: u32) -> Self {
        Self {
            provider,
            redirect_uri: RedirectUrl::from_url(redirect_uri),
            exchange_attempts,
        }
    }

    fn oauth_client(&self, metadata: &ProviderMetadata, client: &Client) -> OAuthClient {
        let mut oauth = oauth2::Client::new(ClientId::new(client.upstream_id.clone()))
            .set_auth_uri(AuthUrl::from_url(metadata.authorization_endpoint.clone()))
            .set_token_uri(TokenUrl::from_url(metadata.token_endpoint.clone()))
            .set_redirect_uri(self.redirect_uri.clone());
        if let Some(secret) = &client.upstream_secret {
            oauth = oauth.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
        }
        oauth
    }

    /// Starts a sign-in at the IdP for `client`'s registration (the account
    /// page's): a fresh context, `state` and the authorization URL.
    pub async fn sign_in<'s>(
        &self,
        client: &Client,
        scopes: impl Iterator<Item = &'s str>,
    ) -> Result<SignIn, UpstreamError> {
        let context = Context::new(None);
        let state = crate::crypto::random_token(32);
        let url = self
            .authorization_url(client, &context, scopes, None, &state)
            .await?;
        Ok(SignIn {
            url,
            state,
            context: context.bytes()?,
        })
    }

    /// The authorization URL for the sign-in `context` describes: PKCE S256
    /// from its verifier, its nonce and acr_values, `state`, `scopes`, and
    /// the login hint when there is one. The same context always gives the
    /// same URL but for the state, so the link need not be stored.
    async fn authorization_url<'s>(
        &self,
        client: &Client,
        context: &Context,
        scopes: impl Iterator<Item = &'s str>,
        login_hint: Option<&str>,
        state: &str,
    ) -> Result<Url, UpstreamError> {
        let metadata = self.provider.metadata().await?;
        let verifier = PkceCodeVerifier::new(context.pkce_verifier.clone());
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        let oauth = self.oauth_client(&metadata, client);
        let state = state.to_owned();
        let mut authorize = oauth
            .authorize_url(|| CsrfToken::new(state))
            .add_scopes(scopes.map(|s| oauth2::Scope::new(s.to_owned())))
            .set_pkce_challenge(challenge)
            .add_extra_param("nonce", context.nonce());
        if let Some(hint) = login_hint {
            authorize = authorize.add_extra_param("login_hint", hint.to_owned());
        }
        if let Some(acr) = &context.acr_values {
            authorize = authorize.add_extra_param("acr_values", acr.clone());
        }
        Ok(authorize.url().0)
    }

    /// Finishes a sign-in [`Self::sign_in`] started, with the code (and RFC
    /// 9207 `iss`) the browser brought back: exchanges the code once and
    /// checks the ID token (OIDC Core §3.1.3.7) and its nonce.
    pub async fn finish(
        &self,
        client: &Client,
        context: &[u8],
        code: &str,
        issuer: Option<&str>,
        now_secs: u64,
    ) -> Result<Issued, UpstreamError> {
        // RFC 9207: a response naming another issuer is a mix-up; never redeem its code.
        if let Some(iss) = issuer {
            let expected = self.provider.metadata().await?.issuer;
            if iss != expected {
                return Err(UpstreamError::Rejected(format!(
                    "the authorization response came from issuer {iss:?}, not {expected:?}"
                )));
            }
        }
        let context = Context::read(context)?;
        let tokens = self
            .exchange_code(client, code, &context.pkce_verifier, now_secs)
            .await?;
        let claims = self
            .provider
            .validate_fresh_id_token(&tokens.id_token, client, now_secs)
            .await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(context.nonce().as_str()) {
            return Err(UpstreamError::InvalidIdToken(
                "nonce does not match the request".into(),
            ));
        }
        Ok(Issued { tokens, claims })
    }

    /// Exchanges an authorization code at the IdP's token endpoint.
    #[tracing::instrument(skip_all, fields(client_id = %client.id))]
    async fn exchange_code(
        &self,
        client: &Client,
        code: &str,
        verifier: &str,
        now_secs: u64,
    ) -> Result<TokenSet, UpstreamError> {
        let metadata = self.provider.metadata().await?;
        let oauth = self.oauth_client(&metadata, client);
        let started = Instant::now();
        let mut attempt = 1;
        let response = loop {
            let result = oauth
                .exchange_code(Code::new(code.to_owned()))
                .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
                .request_async(&LimitedHttp(&self.provider))
                .await
                .map_err(exchange_error);
            match result {
                Err(UpstreamError::Unavailable(reason)) => {
                    let Some(wait) = next_try(attempt, self.exchange_attempts, started.elapsed())
                    else {
                        return Err(UpstreamError::Unavailable(reason));
                    };
                    tracing::warn!(%reason, attempt, "code exchange failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => break other?,
            }
        };
        let id_token = response.extra_fields().id_token.clone().ok_or_else(|| {
            UpstreamError::InvalidIdToken("the token response has no id_token".into())
        })?;
        Ok(TokenSet {
            access_token: response.access_token().secret().to_owned(),
            token_type: "Bearer".into(),
            expires_in: response.expires_in().map(|d| d.as_secs()),
            refresh_token: response.refresh_token().map(|t| t.secret().to_owned()),
            scope: response
                .scopes()
                .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
            id_token,
            received_at: now_secs,
        })
    }
}

/// The oauth2 crate's HTTP client, with the response body capped like
/// every other outbound call (the crate's own reqwest client reads it whole),
/// sent through the provider so the IdP's reachability is tracked.
struct LimitedHttp<'a>(&'a Provider);

impl<'c> oauth2::AsyncHttpClient<'c> for LimitedHttp<'_> {
    type Error = HttpClientError<reqwest::Error>;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = request
                .try_into()
                .map_err(|e| HttpClientError::Reqwest(Box::new(e)))?;
            let response = self
                .0
                .execute("token", request)
                .await
                .map_err(|e| HttpClientError::Reqwest(Box::new(e)))?;
            let mut builder = oauth2::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = read_limited(response, MAX_RESPONSE_BYTES)
                .await
                .map_err(HttpClientError::Other)?;
            builder.body(body).map_err(HttpClientError::Http)
        })
    }
}

#[async_trait]
impl Upstream for AuthorizationCode {
    fn provider(&self) -> &Provider {
        &self.provider
    }

    async fn begin(&self, request: &BeginRequest<'_>) -> Result<Begun, UpstreamError> {
        let context = Context::new(request.acr_values);
        let url = self
            .authorization_url(
                request.client,
                &context,
                request.scope.iter(),
                Some(request.login_hint.as_str()),
                request.callback_state,
            )
            .await?;
        Ok(Begun {
            context: context.bytes()?,
            user_link: Some(url),
            expires_in: None,
            follow_up: None,
        })
    }

    async fn user_link(&self, link: &LinkFor<'_>) -> Result<Option<Url>, UpstreamError> {
        let context = Context::read(link.context)?;
        self.authorization_url(
            link.client,
            &context,
            link.scope.split_ascii_whitespace(),
            Some(link.login_hint),
            link.callback_state,
        )
        .await
        .map(Some)
    }

    async fn redeem(
        &self,
        client: &Client,
        _id: &AuthReqId,
        context: &[u8],
        grant: Grant<'_>,
        now_secs: u64,
    ) -> Result<Answer, UpstreamError> {
        let Grant::Code { code, issuer } = grant else {
            return Err(UpstreamError::Rejected(
                "an authorization-code upstream is never polled".into(),
            ));
        };
        self.finish(client, context, code, issuer, now_secs)
            .await
            .map(Answer::Issued)
    }
}

/// How long after the first try of an exchange a further one may start
/// while the user's browser waits: past it, the `RedeemCode` job takes over
/// and the page says the sign-in is being completed. With the default
/// 2 s connect timeout, a blackholed IdP answers the browser in about 4.5 s
/// (two tries) rather than three full timeouts.
pub const EXCHANGE_TRY_BUDGET: Duration = Duration::from_secs(5);

/// The wait before try `attempt + 1` of at most `attempts`, if it still
/// starts within [`EXCHANGE_TRY_BUDGET`] of the first (`elapsed` since).
fn next_try(attempt: u32, attempts: u32, elapsed: Duration) -> Option<Duration> {
    let wait = Duration::from_millis(250 << attempt.min(4));
    (attempt < attempts && elapsed + wait < EXCHANGE_TRY_BUDGET).then_some(wait)
}

/// RFC 6749 §5.2 errors the IdP may recover from are worth another try;
/// any other error response is final (the code is single-use).
fn exchange_error(
    e: RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>,
) -> UpstreamError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let message = format!(
                "{}{}",
                r.error().as_ref(),
                r.error_description()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
            match r.error().as_ref() {
                "server_error" | "temporarily_unavailable" => UpstreamError::Unavailable(message),
                _ => UpstreamError::Rejected(message),
            }
        }
        // Only a request that surely never reached the IdP is safe to resend.
        RequestTokenError::Request(HttpClientError::Reqwest(e)) if !e.is_connect() => {
            UpstreamError::NoAnswer(e.without_url().to_string())
        }
        RequestTokenError::Request(e) => UpstreamError::Unavailable(e.to_string()),
        RequestTokenError::Parse(e, _) => {
            UpstreamError::Unavailable(format!("malformed token response: {e}"))
        }
        RequestTokenError::Other(e) => UpstreamError::Unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_back_off_within_the_attempts() {
        let now = Duration::ZERO;
        assert_eq!(next_try(1, 3, now), Some(Duration::from_millis(500)));
        assert_eq!(next_try(2, 3, now), Some(Duration::from_millis(1000)));
        assert_eq!(next_try(3, 3, now), None);
        assert_eq!(next_try(1, 1, now), None);
    }

    #[test]
    fn no_try_starts_past_the_budget() {
        // Two connect timeouts of 2 s: the third try would start at 5.5 s.
        assert_eq!(
            next_try(1, 3, Duration::from_secs(2)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(next_try(2, 3, Duration::from_millis(4500)), None);
        // Refused connections fail fast: every attempt is made.
        assert!(next_try(2, 3, Duration::from_millis(600)).is_some());
        // Full 10 s timeouts: no second try.
        assert_eq!(next_try(1, 3, Duration::from_secs(10)), None);
    }
}
