//! The upstream IdP: discovery, the authorization URL (PKCE S256, state,
//! nonce, login hint), the code exchange and ID-token validation. The IdP
//! only ever sees one authorization request and one code exchange per login.
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{decode, decode_header, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, HttpClientError, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::RwLock;
use url::Url;

use crate::clients::{Client, SIGNING_ALGS};
use crate::configuration::UpstreamSettings;
use crate::jwks::{read_limited, KeySet};
use crate::jwt::CLOCK_SKEW_SECS;

const MAX_DISCOVERY_BYTES: usize = 256 * 1024;
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the identity provider is unreachable or misbehaving: {0}")]
    Unavailable(String),
    #[error("the identity provider refused the code exchange: {0}")]
    Rejected(String),
    #[error("the ID token is invalid: {0}")]
    InvalidIdToken(String),
}

/// The part of the IdP's discovery document the proxy uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
}

#[derive(Debug)]
struct Loaded {
    metadata: ProviderMetadata,
    keys: Arc<KeySet>,
    fetched_at: Instant,
}

/// What the IdP returned from the code exchange, kept sealed until redeemed.
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

/// An authorization request ready to be delivered to the user's device.
pub struct AuthorizationRequest {
    pub url: Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
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

pub struct Upstream {
    issuer: String,
    discovery_url: Url,
    pub subject_claim: String,
    redirect_uri: RedirectUrl,
    http: reqwest::Client,
    loaded: RwLock<Option<Arc<Loaded>>>,
    metadata_ttl: Duration,
    exchange_attempts: u32,
}

impl Upstream {
    pub fn new(
        settings: &UpstreamSettings,
        discovery_url: Url,
        redirect_uri: Url,
        http: reqwest::Client,
    ) -> Self {
        Self {
            issuer: settings.issuer.as_str().trim_end_matches('/').to_owned(),
            discovery_url,
            subject_claim: settings.subject_claim.clone(),
            redirect_uri: RedirectUrl::from_url(redirect_uri),
            http,
            loaded: RwLock::new(None),
            metadata_ttl: Duration::from_secs(settings.metadata_ttl_secs),
            exchange_attempts: settings.exchange_attempts,
        }
    }

    /// A client for outbound calls: no redirects (a redirect from an IdP
    /// endpoint is a misconfiguration, not something to follow) and a timeout.
    pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
    }

    /// The IdP's metadata, fetched on first use and kept.
    pub async fn metadata(&self) -> Result<ProviderMetadata, UpstreamError> {
        Ok(self.load().await?.metadata.clone())
    }

    /// The metadata and key set, fetched on first use and again once older
    /// than `metadata_ttl`; a failed refresh keeps what we had.
    async fn load(&self) -> Result<Arc<Loaded>, UpstreamError> {
        let fresh = |l: &Arc<Loaded>| l.fetched_at.elapsed() < self.metadata_ttl;
        if let Some(loaded) = self.loaded.read().await.as_ref().filter(|l| fresh(l)) {
            return Ok(loaded.clone());
        }
        let mut slot = self.loaded.write().await;
        if let Some(loaded) = slot.as_ref().filter(|l| fresh(l)) {
            return Ok(loaded.clone());
        }
        let metadata = match (self.discover().await, slot.as_ref()) {
            (Ok(metadata), _) => metadata,
            (Err(e), Some(stale)) => {
                tracing::warn!(error = %e, "could not refresh upstream metadata; keeping the old");
                return Ok(stale.clone());
            }
            (Err(e), None) => return Err(e),
        };
        // Keep the cached keys unless the key set moved.
        let keys = match slot.as_ref() {
            Some(old) if old.metadata.jwks_uri == metadata.jwks_uri => old.keys.clone(),
            _ => Arc::new(KeySet::remote(metadata.jwks_uri.clone(), self.http.clone())),
        };
        let loaded = Arc::new(Loaded {
            metadata,
            keys,
            fetched_at: Instant::now(),
        });
        *slot = Some(loaded.clone());
        tracing::info!(issuer = %loaded.metadata.issuer, "loaded upstream metadata");
        Ok(loaded)
    }

    async fn discover(&self) -> Result<ProviderMetadata, UpstreamError> {
        let fail = |e: String| {
            UpstreamError::Unavailable(format!("discovery at {}: {e}", self.discovery_url))
        };
        let response = self
            .http
            .get(self.discovery_url.clone())
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("status {}", response.status())));
        }
        let body = read_limited(response, MAX_DISCOVERY_BYTES)
            .await
            .map_err(fail)?;
        let metadata: ProviderMetadata =
            serde_json::from_slice(&body).map_err(|e| fail(format!("malformed document: {e}")))?;
        // OpenID Connect Discovery §4.3: the issuer must be the one we expect.
        if metadata.issuer.trim_end_matches('/') != self.issuer {
            return Err(fail(format!(
                "issuer is {:?}, configured upstream.issuer is {:?}",
                metadata.issuer, self.issuer
            )));
        }
        Ok(metadata)
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

    /// Builds the authorization request for one backchannel request.
    pub async fn authorization_request(
        &self,
        client: &Client,
        scope: &crate::domain::Scope,
        login_hint: &str,
        acr_values: Option<&str>,
    ) -> Result<AuthorizationRequest, UpstreamError> {
        let loaded = self.load().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = crate::crypto::random_token(32);
        let nonce = crate::crypto::random_token(32);
        let oauth = self.oauth_client(&loaded.metadata, client);
        let mut request = oauth
            .authorize_url(|| CsrfToken::new(state.clone()))
            .add_scopes(scope.iter().map(|s| oauth2::Scope::new(s.to_owned())))
            .set_pkce_challenge(challenge)
            .add_extra_param("nonce", nonce.clone())
            .add_extra_param("login_hint", login_hint.to_owned());
        if let Some(acr) = acr_values {
            request = request.add_extra_param("acr_values", acr.to_owned());
        }
        let (url, _) = request.url();
        Ok(AuthorizationRequest {
            url,
            state,
            nonce,
            pkce_verifier: verifier.secret().to_owned(),
        })
    }

    /// Exchanges an authorization code at the IdP's token endpoint.
    #[tracing::instrument(skip_all, fields(client_id = %client.id))]
    pub async fn exchange_code(
        &self,
        client: &Client,
        code: &str,
        verifier: &str,
        now_secs: u64,
    ) -> Result<TokenSet, UpstreamError> {
        let loaded = self.load().await?;
        let oauth = self.oauth_client(&loaded.metadata, client);
        let mut attempt = 1;
        let response = loop {
            let result = oauth
                .exchange_code(AuthorizationCode::new(code.to_owned()))
                .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
                .request_async(&|request| self.send_limited(request))
                .await
                .map_err(exchange_error);
            match result {
                Err(UpstreamError::Unavailable(reason)) if attempt < self.exchange_attempts => {
                    tracing::warn!(%reason, attempt, "code exchange failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250 << attempt.min(4))).await;
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

    /// The token request, with the response body capped like every other
    /// outbound call (the oauth2 crate's own client reads it whole).
    async fn send_limited(
        &self,
        request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, HttpClientError<reqwest::Error>> {
        let request = request
            .try_into()
            .map_err(|e| HttpClientError::Reqwest(Box::new(e)))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| HttpClientError::Reqwest(Box::new(e)))?;
        let mut builder = oauth2::http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let body = read_limited(response, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(HttpClientError::Other)?;
        builder.body(body).map_err(HttpClientError::Http)
    }

    /// OpenID Connect Core §3.1.3.7: signature from the IdP's keys, `iss`,
    /// `aud`, `exp` and the `nonce` we sent. Returns the claims.
    pub async fn validate_id_token(
        &self,
        id_token: &str,
        client: &Client,
        nonce: &str,
        now_secs: u64,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let claims = self.verify_id_token(id_token, client).await?;
        if now_secs > expiry(&claims)?.saturating_add(CLOCK_SKEW_SECS) {
            return Err(UpstreamError::InvalidIdToken("expired".into()));
        }
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(UpstreamError::InvalidIdToken(
                "nonce does not match the request".into(),
            ));
        }
        Ok(claims)
    }

    /// CIBA Core §7.1 `id_token_hint`: an ID token the IdP issued to this
    /// client, possibly expired up to `grace_secs` ago. Returns the claims.
    pub async fn validate_id_token_hint(
        &self,
        id_token: &str,
        client: &Client,
        now_secs: u64,
        grace_secs: u64,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let claims = self.verify_id_token(id_token, client).await?;
        if now_secs
            > expiry(&claims)?
                .saturating_add(CLOCK_SKEW_SECS)
                .saturating_add(grace_secs)
        {
            return Err(UpstreamError::InvalidIdToken(
                "expired beyond the accepted grace period".into(),
            ));
        }
        Ok(claims)
    }

    /// Signature from the IdP's keys, `iss` the IdP, `aud` (and `azp`) this
    /// client's registration; time is the caller's business.
    async fn verify_id_token(
        &self,
        id_token: &str,
        client: &Client,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let invalid = |m: String| UpstreamError::InvalidIdToken(m);
        let loaded = self.load().await?;
        let header = decode_header(id_token).map_err(|e| invalid(format!("malformed: {e}")))?;
        if !SIGNING_ALGS.contains(&header.alg) {
            return Err(invalid(format!(
                "{:?} is not an accepted signing algorithm",
                header.alg
            )));
        }
        let key = loaded
            .keys
            .decoding_key(&header)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&loaded.metadata.issuer]);
        validation.set_audience(&[&client.upstream_id]);
        validation.set_required_spec_claims(&["iss", "aud", "exp", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = decode::<Map<String, Value>>(id_token, &key, &validation)
            .map_err(|e| invalid(e.to_string()))?
            .claims;
        if let Some(azp) = claims.get("azp").and_then(Value::as_str) {
            if azp != client.upstream_id {
                return Err(invalid("azp names another client".into()));
            }
        }
        Ok(claims)
    }

    /// The value of the configured subject claim, as text.
    pub fn subject<'a>(&self, claims: &'a Map<String, Value>) -> Option<std::borrow::Cow<'a, str>> {
        match claims.get(&self.subject_claim)? {
            Value::String(s) => Some(s.as_str().into()),
            Value::Number(n) => Some(n.to_string().into()),
            _ => None,
        }
    }
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
        RequestTokenError::Request(e) => UpstreamError::Unavailable(e.to_string()),
        RequestTokenError::Parse(e, _) => {
            UpstreamError::Unavailable(format!("malformed token response: {e}"))
        }
        RequestTokenError::Other(e) => UpstreamError::Unavailable(e),
    }
}

fn expiry(claims: &Map<String, Value>) -> Result<u64, UpstreamError> {
    claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| UpstreamError::InvalidIdToken("exp is not a number".into()))
}
