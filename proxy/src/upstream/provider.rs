//! What every kind of upstream shares about the IdP: its discovery document
//! and keys, ID-token verification, the subject claim, and the capped,
//! redirect-free HTTP client every outbound call uses. Every call to the
//! IdP goes through [`Provider::send`] or [`Provider::execute`], which tell
//! [`super::health`] whether the IdP answered.
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{decode, decode_header, Validation};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::RwLock;
use url::Url;

use super::health::IdpHealth;
use super::{TokenSet, UpstreamError};
use crate::clients::{Client, SIGNING_ALGS};
use crate::configuration::UpstreamSettings;
use crate::jwks::{read_limited, KeySet};
use crate::jwt::CLOCK_SKEW_SECS;

const MAX_DISCOVERY_BYTES: usize = 256 * 1024;
/// Token and backchannel responses are small; a bigger body is refused.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// The part of the IdP's discovery document the proxy uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    /// CIBA Core §4; required by the `ciba` kind.
    pub backchannel_authentication_endpoint: Option<Url>,
    /// RFC 7009, used to revoke tokens the proxy discards.
    pub revocation_endpoint: Option<Url>,
}

/// RFC 6749 §5.1 as IdPs send it; `id_token` is required here, since the
/// proxy only ever asks for `openid`.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

impl TokenResponse {
    /// The tokens to keep, stamped with when they arrived.
    pub fn into_token_set(self, now_secs: u64) -> Result<TokenSet, UpstreamError> {
        let id_token = self.id_token.ok_or_else(|| {
            UpstreamError::InvalidIdToken("the token response has no id_token".into())
        })?;
        Ok(TokenSet {
            access_token: self.access_token,
            token_type: self.token_type.unwrap_or_else(|| "Bearer".into()),
            expires_in: self.expires_in,
            refresh_token: self.refresh_token,
            scope: self.scope,
            id_token,
            received_at: now_secs,
        })
    }
}

/// An OAuth error response (RFC 6749 §5.2, CIBA Core §13).
#[derive(Debug, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
}

#[derive(Debug)]
struct Loaded {
    metadata: ProviderMetadata,
    keys: Arc<KeySet>,
    fetched_at: Instant,
}

/// The IdP as every upstream kind sees it.
pub struct Provider {
    issuer: String,
    discovery_url: Url,
    /// Whether `upstream.discovery_url` was set (which key a 404 blames).
    explicit_discovery_url: bool,
    pub subject_claim: String,
    http: reqwest::Client,
    loaded: RwLock<Option<Arc<Loaded>>>,
    metadata_ttl: Duration,
    /// Whether the IdP answers, from the calls made through this provider.
    health: Arc<IdpHealth>,
}

/// A client for calls to the IdP (and the JWKS it and the clients
/// publish): no redirects (a redirect from an IdP endpoint is a
/// misconfiguration, not something to follow), a timeout, and a shorter
/// one to connect, so a host that drops packets costs `connect_timeout`
/// per try, not the whole timeout.
pub fn http_client(
    timeout: Duration,
    connect_timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    http_client_builder(timeout)
        .connect_timeout(connect_timeout.min(timeout))
        .build()
}

/// [`http_client`]'s settings, for a caller that adds its own (the ping
/// sender's address policy).
pub fn http_client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
}

impl Provider {
    pub fn new(settings: &UpstreamSettings, discovery_url: Url, http: reqwest::Client) -> Self {
        let health = IdpHealth::new(
            http.clone(),
            discovery_url.clone(),
            Duration::from_millis(settings.timeout_ms),
        );
        Self {
            issuer: settings.issuer.as_str().trim_end_matches('/').to_owned(),
            discovery_url,
            explicit_discovery_url: settings.discovery_url.is_some(),
            subject_claim: settings.subject_claim.clone(),
            http,
            loaded: RwLock::new(None),
            metadata_ttl: Duration::from_secs(settings.metadata_ttl_secs),
            health,
        }
    }

    /// The bare client. Calls made with it directly are not counted
    /// towards reachability: prefer [`Self::send`] and [`Self::execute`].
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request to the IdP's `endpoint` (a metrics label:
    /// `discovery`, `token`, `backchannel`, `revocation`; `jwks` is the
    /// key set's own, in jwks.rs) and records
    /// whether it answered, and how fast.
    pub async fn send(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let started = Instant::now();
        let result = request.send().await;
        observed(endpoint, &result, started);
        self.health.observe(&result);
        result
    }

    /// [`Self::send`] for a request built elsewhere (the oauth2 crate's).
    pub async fn execute(
        &self,
        endpoint: &'static str,
        request: reqwest::Request,
    ) -> reqwest::Result<reqwest::Response> {
        let started = Instant::now();
        let result = self.http.execute(request).await;
        observed(endpoint, &result, started);
        self.health.observe(&result);
        result
    }

    /// `Err` while recent calls say the IdP is unreachable (see
    /// [`super::health`]); never waits for the network.
    pub fn reachable(&self) -> Result<(), UpstreamError> {
        self.health
            .check()
            .map_err(|e| UpstreamError::Unavailable(format!("not reachable: {e}")))
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
            _ => Arc::new(
                KeySet::remote(metadata.jwks_uri.clone(), self.http.clone())
                    .observed_by(self.health.clone()),
            ),
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
        let discovered = self.fetch_discovery().await;
        // A configuration mistake is logged on every attempt, naming the key.
        if let Err(UpstreamError::Misconfigured { key, message }) = &discovered {
            tracing::error!(key, "upstream configuration error: {key}: {message}");
        }
        discovered
    }

    async fn fetch_discovery(&self) -> Result<ProviderMetadata, UpstreamError> {
        let fail = |e: String| {
            UpstreamError::Unavailable(format!("discovery at {}: {e}", self.discovery_url))
        };
        let response = self
            .send("discovery", self.http.get(self.discovery_url.clone()))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        if status.is_client_error() {
            // The IdP answers, but not with a discovery document here.
            return Err(UpstreamError::Misconfigured {
                key: if self.explicit_discovery_url {
                    "upstream.discovery_url"
                } else {
                    "upstream.issuer"
                },
                message: format!(
                    "no discovery document at {} (status {status}); set upstream.discovery_url when the IdP serves it elsewhere",
                    self.discovery_url
                ),
            });
        }
        if !status.is_success() {
            return Err(fail(format!("status {status}")));
        }
        let body = read_limited(response, MAX_DISCOVERY_BYTES)
            .await
            .map_err(fail)?;
        let metadata: ProviderMetadata =
            serde_json::from_slice(&body).map_err(|e| fail(format!("malformed document: {e}")))?;
        // OpenID Connect Discovery §4.3: the issuer must be the one we expect.
        if metadata.issuer.trim_end_matches('/') != self.issuer {
            return Err(UpstreamError::Misconfigured {
                key: "upstream.issuer",
                message: format!(
                    "the discovery document at {} names the issuer {:?}, not {:?}",
                    self.discovery_url, metadata.issuer, self.issuer
                ),
            });
        }
        Ok(metadata)
    }

    /// A form POST to the IdP, authenticated as the client's upstream
    /// registration: RFC 6749 §2.3.1 `client_secret_basic` (both parts
    /// form-urlencoded), or just `client_id` for a public client.
    pub fn post_form(
        &self,
        url: Url,
        client: &Client,
        mut form: Vec<(&str, String)>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.post(url);
        match &client.upstream_secret {
            Some(secret) => {
                let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
                request
                    .basic_auth(
                        encode(&client.upstream_id),
                        Some(encode(secret.expose_secret())),
                    )
                    .form(&form)
            }
            None => {
                form.push(("client_id", client.upstream_id.clone()));
                request.form(&form)
            }
        }
    }

    /// RFC 7009: revokes tokens the proxy will not hand out, when the IdP
    /// has a revocation endpoint. Best effort: a failure is logged.
    pub async fn revoke(&self, client: &Client, tokens: &TokenSet) {
        let Ok(metadata) = self.metadata().await else {
            return;
        };
        let Some(endpoint) = metadata.revocation_endpoint else {
            tracing::info!("the identity provider has no revocation endpoint; discarded tokens expire on their own");
            return;
        };
        // The refresh token first: revoking it usually ends its access tokens too.
        let tokens = [
            ("refresh_token", tokens.refresh_token.as_deref()),
            ("access_token", Some(tokens.access_token.as_str())),
        ];
        for (hint, token) in tokens {
            let Some(token) = token else { continue };
            let form = vec![
                ("token", token.to_owned()),
                ("token_type_hint", hint.to_owned()),
            ];
            match self
                .send("revocation", self.post_form(endpoint.clone(), client, form))
                .await
            {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(
                        token_type = hint,
                        "discarded token revoked at the identity provider"
                    )
                }
                Ok(r) => {
                    tracing::warn!(token_type = hint, status = %r.status(), "the identity provider refused to revoke a discarded token")
                }
                Err(e) => {
                    tracing::warn!(token_type = hint, error = %e.without_url(), "could not revoke a discarded token")
                }
            }
        }
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

    /// OpenID Connect Core §3.1.3.7 for a freshly issued ID token:
    /// signature, `iss`, `aud`, `azp` and `exp`. The caller checks what its
    /// kind of request adds (the nonce, or the IdP's auth_req_id).
    pub async fn validate_fresh_id_token(
        &self,
        id_token: &str,
        client: &Client,
        now_secs: u64,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let claims = self.verify_id_token(id_token, client).await?;
        if now_secs > expiry(&claims)?.saturating_add(CLOCK_SKEW_SECS) {
            return Err(UpstreamError::InvalidIdToken("expired".into()));
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
    pub fn subject<'a>(&self, claims: &'a Map<String, Value>) -> Option<Cow<'a, str>> {
        match claims.get(&self.subject_claim)? {
            Value::String(s) => Some(s.as_str().into()),
            Value::Number(n) => Some(n.to_string().into()),
            _ => None,
        }
    }
}

fn expiry(claims: &Map<String, Value>) -> Result<u64, UpstreamError> {
    claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| UpstreamError::InvalidIdToken("exp is not a number".into()))
}

fn observed(endpoint: &'static str, result: &reqwest::Result<reqwest::Response>, started: Instant) {
    crate::metrics::upstream_answered(endpoint, result, started.elapsed());
}
