//! The Web Push channel: an RFC 8030 push message to one registered
//! device's subscription, its body encrypted for that device (RFC 8291,
//! `aes128gcm`), and the proxy identified to the push service by VAPID
//! (RFC 8292). Subscriptions come from devices, so their endpoints follow
//! the same address rules as ping endpoints ([`crate::net_policy`]).
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hkdf::Hkdf;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePrivateKey;
use p256::{PublicKey, SecretKey};
use rand::RngCore;
use serde_json::json;
use sha2::Sha256;
use url::Url;

use super::{classify_response, wrong_recipient, Message, Notifier, NotifyError, Recipient};
use crate::clock::Clock;
use crate::net_policy::{self, PublicOnly};
use crate::upstream::provider::http_client_builder;

/// RFC 8292 §2: a VAPID JWT lives at most 24 hours; 12 leaves room for skew.
const VAPID_LIFETIME_SECS: u64 = 12 * 3600;
/// RFC 8291 §4: one record of at most this size (the whole message).
const RECORD_SIZE: u32 = 4096;

/// Why the VAPID key cannot be used; the caller names the key.
#[derive(Debug, thiserror::Error)]
pub enum WebPushSetupError {
    #[error("cannot read {0}")]
    Unreadable(String),
    #[error("not an EC P-256 private key in PEM (PKCS#8 or SEC1)")]
    Key,
    #[error("must be a mailto: or https: URI (RFC 8292 §2.1)")]
    Subject,
}

/// Reads a P-256 private key, PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`).
pub fn load_vapid_key(path: &Path) -> Result<SecretKey, WebPushSetupError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|_| WebPushSetupError::Unreadable(path.display().to_string()))?;
    SecretKey::from_pkcs8_pem(&pem)
        .or_else(|_| SecretKey::from_sec1_pem(&pem))
        .map_err(|_| WebPushSetupError::Key)
}

pub struct WebPushNotifier {
    key: SigningKey,
    /// The public key, uncompressed, base64url: VAPID's `k`.
    public_key: String,
    subject: String,
    http: reqwest::Client,
    allow_http: bool,
    allow_private: bool,
    clock: Arc<dyn Clock>,
}

/// How the Web Push channel may reach push services.
pub struct Reach {
    pub timeout: std::time::Duration,
    /// `ciba.allow_http_notification_endpoints`.
    pub allow_http: bool,
    /// `ciba.allow_private_notification_endpoints` (or implied).
    pub allow_private: bool,
}

impl WebPushNotifier {
    pub fn new(
        key: SecretKey,
        subject: &str,
        reach: Reach,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WebPushSetupError> {
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err(WebPushSetupError::Subject);
        }
        let public_key = B64.encode(key.public_key().to_encoded_point(false).as_bytes());
        let mut builder = http_client_builder(reach.timeout);
        if !reach.allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self {
            key: SigningKey::from(key),
            public_key,
            subject: subject.to_owned(),
            http: builder.build().map_err(|_| WebPushSetupError::Key)?,
            allow_http: reach.allow_http,
            allow_private: reach.allow_private,
            clock,
        })
    }

    /// RFC 8292 §2: an ES256 JWT for the push service at `origin`.
    fn vapid_jwt(&self, origin: &str) -> String {
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = json!({
            "aud": origin,
            "exp": self.clock.now_secs() + VAPID_LIFETIME_SECS,
            "sub": self.subject,
        });
        let input = format!("{header}.{}", B64.encode(claims.to_string()));
        let signature: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(signature.to_bytes()))
    }

    /// The endpoint, if the proxy may POST to it.
    fn endpoint(&self, endpoint: &str) -> Result<Url, NotifyError> {
        let url = Url::parse(endpoint).map_err(|_| {
            NotifyError::Permanent("the subscription's endpoint is not a URL".into())
        })?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(NotifyError::Permanent(
                "the subscription's endpoint is not https (ciba.allow_http_notification_endpoints)"
                    .into(),
            )),
        }
        if !self.allow_private {
            net_policy::check_url(&url).map_err(|e| NotifyError::Permanent(e.to_string()))?;
        }
        Ok(url)
    }
}

/// RFC 8291 §3-4: `plaintext` encrypted for the user agent with public key
/// `p256dh` and authentication secret `auth` (both base64url), as one
/// `aes128gcm` record with its header (RFC 8188 §2.1).
pub fn encrypt(plaintext: &[u8], p256dh: &str, auth: &str) -> Result<Vec<u8>, NotifyError> {
    let bad = |what: &str| NotifyError::Permanent(format!("the subscription's {what} is invalid"));
    let ua_public_bytes = B64
        .decode(p256dh.trim_end_matches('='))
        .map_err(|_| bad("p256dh"))?;
    let ua_public = PublicKey::from_sec1_bytes(&ua_public_bytes).map_err(|_| bad("p256dh"))?;
    let ua_public_bytes = ua_public.to_encoded_point(false);
    let auth = B64
        .decode(auth.trim_end_matches('='))
        .map_err(|_| bad("auth"))?;
    if auth.len() != 16 {
        return Err(bad("auth"));
    }
    if plaintext.len() + 1 + 16 > RECORD_SIZE as usize - 86 {
        return Err(NotifyError::Permanent(
            "the push message is too large".into(),
        ));
    }
    let as_secret = p256::ecdh::EphemeralSecret::random(&mut rand::rngs::OsRng);
    let as_public = as_secret.public_key().to_encoded_point(false);
    let shared = as_secret.diffie_hellman(&ua_public);
    // §3.3: IKM = HKDF(auth, ecdh_secret, "WebPush: info" || 0 || ua_public || as_public, 32).
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public_bytes.as_bytes());
    key_info.extend_from_slice(as_public.as_bytes());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(|_| bad("keys"))?;
    // RFC 8188 §2.2-2.3: the content-encryption key and nonce from a random salt.
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .and_then(|()| prk.expand(b"Content-Encoding: nonce\0", &mut nonce))
        .map_err(|_| bad("keys"))?;
    // §4: one record, so it is the last: padding delimiter 2.
    let mut record = plaintext.to_vec();
    record.push(2);
    let ciphertext = Aes128Gcm::new_from_slice(&cek)
        .map_err(|_| bad("keys"))?
        .encrypt(Nonce::from_slice(&nonce), record.as_slice())
        .map_err(|_| bad("keys"))?;
    let mut body = Vec::with_capacity(86 + ciphertext.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.as_bytes().len() as u8);
    body.extend_from_slice(as_public.as_bytes());
    body.extend_from_slice(&ciphertext);
    Ok(body)
}

#[async_trait]
impl Notifier for WebPushNotifier {
    async fn notify(&self, message: &Message<'_>, to: Recipient<'_>) -> Result<(), NotifyError> {
        let Recipient::Subscription {
            endpoint,
            p256dh,
            auth,
        } = to
        else {
            return Err(wrong_recipient(self.channel()));
        };
        let endpoint = self.endpoint(endpoint)?;
        let payload = serde_json::to_vec(&message.push_data())
            .map_err(|e| NotifyError::Permanent(e.to_string()))?;
        let body = encrypt(&payload, p256dh, auth)?;
        let origin = endpoint.origin().ascii_serialization();
        let response = self
            .http
            .post(endpoint)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("vapid t={}, k={}", self.vapid_jwt(&origin), self.public_key),
            )
            // RFC 8030 §5.2: no use keeping it past the request's life.
            .header("TTL", message.ttl_secs.to_string())
            .header("Urgency", "high")
            .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| match net_policy::refusal_in(&e) {
                Some(refused) => NotifyError::Permanent(refused.to_string()),
                None => NotifyError::Retryable(e.without_url().to_string()),
            })?;
        let status = response.status().as_u16();
        match status {
            // RFC 8030 §7.3: the subscription expired or was removed.
            404 | 410 => Err(NotifyError::Gone(format!(
                "the push service answered {status}"
            ))),
            _ => classify_response(&response),
        }
    }

    fn channel(&self) -> &'static str {
        "webpush"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_has_the_rfc_8188_header() {
        let ua = SecretKey::random(&mut rand::rngs::OsRng);
        let p256dh = B64.encode(ua.public_key().to_encoded_point(false).as_bytes());
        let auth = B64.encode([7u8; 16]);
        let body = encrypt(b"hello", &p256dh, &auth).unwrap();
        assert_eq!(&body[16..20], &RECORD_SIZE.to_be_bytes());
        assert_eq!(body[20], 65);
        // salt, rs, idlen, keyid, then the plaintext, its delimiter and the tag.
        assert_eq!(body.len(), 16 + 4 + 1 + 65 + 5 + 1 + 16);
    }

    #[test]
    fn a_bad_subscription_is_refused_for_good() {
        let auth = B64.encode([7u8; 16]);
        assert!(matches!(
            encrypt(b"x", "AAAA", &auth),
            Err(NotifyError::Permanent(_))
        ));
    }
}
