//! What every kind of upstream shares about the IdP: its discovery document
//! and keys, ID-token verification, the subject claim, and the capped,
//! redirect-free HTTP client every outbound call uses.
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{decode, decode_header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::RwLock;
use url::Url;

use super::UpstreamError;
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
    pub subject_claim: String,
    http: reqwest::Client,
    loaded: RwLock<Option<Arc<Loaded>>>,
    metadata_ttl: Duration,
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

impl Provider {
    pub fn new(settings: &UpstreamSettings, discovery_url: Url, http: reqwest::Client) -> Self {
        Self {
            issuer: settings.issuer.as_str().trim_end_matches('/').to_owned(),
            discovery_url,
            subject_claim: settings.subject_claim.clone(),
            http,
            loaded: RwLock::new(None),
            metadata_ttl: Duration::from_secs(settings.metadata_ttl_secs),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
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
