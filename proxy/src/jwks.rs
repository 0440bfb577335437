//! Key sets used to verify JWS signatures: a client's registered keys (inline
//! or at its `jwks_uri`) and the IdP's signing keys. A remote set is fetched
//! lazily and refetched when a token names a `kid` it does not hold, so key
//! rotation at the IdP needs no restart. The IdP's set reports each fetch to
//! the IdP's reachability tracker and to `ciba_upstream_calls_total`
//! (`endpoint="jwks"`).
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Header};
use tokio::sync::RwLock;
use url::Url;

use crate::upstream::health::IdpHealth;

/// Unknown `kid`s trigger at most one refetch per this period, so a stream
/// of tokens naming unknown keys cannot make us hammer the key server. The
/// first load does not count, so a rotation right after it is still seen.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Largest key set we accept.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("the key set at {0} could not be fetched: {1}")]
    Fetch(String, String),
    #[error("no usable key matches the token's kid/alg")]
    NoMatchingKey,
    #[error("the matching key is unusable: {0}")]
    BadKey(String),
}

#[derive(Debug)]
enum Source {
    Fixed,
    Remote {
        uri: Url,
        http: reqwest::Client,
        /// Told whether each fetch got an answer (the IdP's own key set).
        health: Option<Arc<IdpHealth>>,
    },
}

#[derive(Debug, Default)]
struct Cached {
    set: Option<JwkSet>,
    /// When a `kid` miss last made us refetch.
    refetched_at: Option<Instant>,
}

#[derive(Debug)]
pub struct KeySet {
    source: Source,
    cache: RwLock<Cached>,
}

impl KeySet {
    pub fn fixed(set: JwkSet) -> Self {
        Self {
            source: Source::Fixed,
            cache: RwLock::new(Cached {
                set: Some(set),
                refetched_at: None,
            }),
        }
    }

    pub fn remote(uri: Url, http: reqwest::Client) -> Self {
        Self {
            source: Source::Remote {
                uri,
                http,
                health: None,
            },
            cache: RwLock::new(Cached::default()),
        }
    }

    /// A remote set whose fetches count towards the IdP's reachability.
    pub fn observed_by(mut self, tracker: Arc<IdpHealth>) -> Self {
        if let Source::Remote { health, .. } = &mut self.source {
            *health = Some(tracker);
        }
        self
    }

    /// Parses a JWKS JSON document.
    pub fn parse(json: &str) -> Result<JwkSet, String> {
        serde_json::from_str(json).map_err(|e| format!("is not a valid JWK set: {e}"))
    }

    /// The key that verifies a token with this header.
    pub async fn decoding_key(&self, header: &Header) -> Result<DecodingKey, JwksError> {
        let jwk = self.find(|set| select(set, header).cloned()).await?;
        jwk.as_ref()
            .map(to_decoding_key)
            .unwrap_or(Err(JwksError::NoMatchingKey))
    }

    /// RFC 8705 §2.2: whether `der` is the leaf certificate (`x5c[0]`) of one
    /// of the keys.
    pub async fn has_certificate(&self, der: &[u8]) -> Result<bool, JwksError> {
        let found = self
            .find(|set| {
                set.keys
                    .iter()
                    .any(|jwk| {
                        jwk.common
                            .x509_chain
                            .as_ref()
                            .and_then(|chain| chain.first())
                            .and_then(|leaf| STANDARD.decode(leaf).ok())
                            .is_some_and(|leaf| leaf == der)
                    })
                    .then_some(())
            })
            .await?;
        Ok(found.is_some())
    }

    /// `pick` applied to the cached set; on a miss, a remote set is fetched
    /// again (at most once per [`MIN_REFETCH_INTERVAL`] after the first load).
    async fn find<T>(&self, pick: impl Fn(&JwkSet) -> Option<T>) -> Result<Option<T>, JwksError> {
        if let Some(found) = self.cache.read().await.set.as_ref().and_then(&pick) {
            return Ok(Some(found));
        }
        let Source::Remote { uri, http, health } = &self.source else {
            return Ok(None);
        };
        let mut cache = self.cache.write().await;
        // Another task may have refreshed the set while we waited for the lock.
        if let Some(found) = cache.set.as_ref().and_then(&pick) {
            return Ok(Some(found));
        }
        let first_load = cache.set.is_none();
        let recently = cache
            .refetched_at
            .is_some_and(|at| at.elapsed() < MIN_REFETCH_INTERVAL);
        if first_load || !recently {
            cache.set = Some(fetch(uri, http, health.as_ref()).await?);
            if !first_load {
                cache.refetched_at = Some(Instant::now());
            }
        }
        Ok(cache.set.as_ref().and_then(&pick))
    }
}

/// The key named by `kid`, or the only signing key when the token names none.
fn select<'a>(set: &'a JwkSet, header: &Header) -> Option<&'a Jwk> {
    let usable = |jwk: &&Jwk| {
        let for_signing = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
        let alg_ok = jwk
            .common
            .key_algorithm
            .is_none_or(|a| format!("{a:?}") == format!("{:?}", header.alg)); // both enums spell JOSE names
        for_signing && alg_ok
    };
    match &header.kid {
        Some(kid) => set
            .keys
            .iter()
            .filter(usable)
            .find(|k| k.common.key_id.as_deref() == Some(kid)),
        None => {
            let mut candidates = set.keys.iter().filter(usable);
            let first = candidates.next();
            candidates.next().is_none().then_some(first).flatten()
        }
    }
}

fn to_decoding_key(jwk: &Jwk) -> Result<DecodingKey, JwksError> {
    check_key_strength(jwk)?;
    DecodingKey::from_jwk(jwk).map_err(|e| JwksError::BadKey(e.to_string()))
}

/// Smallest RSA modulus we accept (FAPI-CIBA; NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

/// Refuses RSA keys shorter than [`MIN_RSA_BITS`].
pub fn check_key_strength(jwk: &Jwk) -> Result<(), JwksError> {
    if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
        let bytes = URL_SAFE_NO_PAD
            .decode(rsa.n.trim_end_matches('='))
            .map_err(|_| JwksError::BadKey("the RSA modulus is not base64url".into()))?;
        let leading_zeros = bytes.iter().take_while(|b| **b == 0).count();
        let bits = (bytes.len() - leading_zeros) * 8;
        if bits < MIN_RSA_BITS {
            return Err(JwksError::BadKey(format!(
                "RSA keys must have at least {MIN_RSA_BITS} bits, this one has about {bits}"
            )));
        }
    }
    Ok(())
}

async fn fetch(
    uri: &Url,
    http: &reqwest::Client,
    health: Option<&Arc<IdpHealth>>,
) -> Result<JwkSet, JwksError> {
    let fail = |e: String| JwksError::Fetch(uri.to_string(), e);
    let started = Instant::now();
    let result = http.get(uri.clone()).send().await;
    // The IdP's own key set is an upstream call like any other; a client's
    // jwks_uri is not the IdP.
    if let Some(health) = health {
        crate::metrics::upstream_answered("jwks", &result, started.elapsed());
        health.observe(&result);
    }
    let response = result.map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("status {}", response.status())));
    }
    let body = read_limited(response, MAX_JWKS_BYTES).await.map_err(fail)?;
    serde_json::from_slice(&body).map_err(|e| fail(format!("not a JWK set: {e}")))
}

/// Reads a response body, refusing bodies larger than `limit`.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|n| n as usize > limit)
    {
        return Err(format!("response larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
