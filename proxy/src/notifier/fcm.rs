//! The FCM channel: a data message through Firebase Cloud Messaging's HTTP
//! v1 API to one registered device's token. The OAuth access token comes
//! from the service-account key (RFC 7523 JWT-bearer grant, RS256) and is
//! shared by every delivery until shortly before it expires.
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;
use url::Url;

use super::{classify_response, wrong_recipient, Message, Notifier, NotifyError, Recipient};
use crate::clock::Clock;

/// FCM's API.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";
/// The scope FCM's send call needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// FCM refuses larger messages.
const MAX_MESSAGE_BYTES: usize = 4096;
/// A cached access token is renewed this long before it expires.
const RENEW_BEFORE_SECS: u64 = 60;
/// Google issues assertions' tokens for at most an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// The fields of a Google service-account key file this channel uses.
#[derive(Deserialize)]
struct ServiceAccountFile {
    project_id: String,
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: Url,
}

/// A service-account key, checked.
pub struct ServiceAccount {
    project_id: String,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    token_uri: Url,
}

/// Why a service-account key file cannot be used; the caller names the key.
#[derive(Debug, thiserror::Error)]
pub enum FcmSetupError {
    #[error("cannot read {0}")]
    Unreadable(String),
    #[error("not a Google service-account key (JSON with project_id, client_email, private_key, token_uri): {0}")]
    Invalid(String),
    #[error("private_key is not an RSA private key in PEM")]
    Key,
    #[error("token_uri must be https (set ciba.allow_http_notification_endpoints = true for development)")]
    HttpTokenUri,
}

impl ServiceAccount {
    pub fn load(path: &Path, allow_http: bool) -> Result<Self, FcmSetupError> {
        let text = std::fs::read_to_string(path)
            .map_err(|_| FcmSetupError::Unreadable(path.display().to_string()))?;
        let file: ServiceAccountFile =
            serde_json::from_str(&text).map_err(|e| FcmSetupError::Invalid(e.to_string()))?;
        let key = EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|_| FcmSetupError::Key)?;
        match file.token_uri.scheme() {
            "https" => {}
            "http" if allow_http => {}
            _ => return Err(FcmSetupError::HttpTokenUri),
        }
        if file.project_id.is_empty() || file.client_email.is_empty() {
            return Err(FcmSetupError::Invalid(
                "project_id and client_email must not be empty".into(),
            ));
        }
        Ok(Self {
            project_id: file.project_id,
            client_email: file.client_email,
            key_id: file.private_key_id,
            key,
            token_uri: file.token_uri,
        })
    }
}

struct AccessToken {
    value: String,
    expires_at_secs: u64,
}

pub struct FcmNotifier {
    account: ServiceAccount,
    send_url: Url,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// The access token every delivery shares; the lock also makes
    /// concurrent deliveries wait for one token call instead of each making one.
    token: Mutex<Option<AccessToken>>,
}

impl FcmNotifier {
    /// `endpoint`: the API's base URL, by default [`DEFAULT_ENDPOINT`].
    pub fn new(
        account: ServiceAccount,
        endpoint: Option<&Url>,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, url::ParseError> {
        let base = endpoint
            .map_or(DEFAULT_ENDPOINT, Url::as_str)
            .trim_end_matches('/');
        let send_url = Url::parse(&format!(
            "{base}/v1/projects/{}/messages:send",
            account.project_id
        ))?;
        Ok(Self {
            account,
            send_url,
            http,
            clock,
            token: Mutex::new(None),
        })
    }

    /// The cached access token, or a new one when none is fresh.
    async fn access_token(&self, renew: bool) -> Result<String, NotifyError> {
        let mut cached = self.token.lock().await;
        let now = self.clock.now_secs();
        if let Some(token) = cached.as_ref() {
            if !renew && now + RENEW_BEFORE_SECS < token.expires_at_secs {
                return Ok(token.value.clone());
            }
        }
        let token = self.fetch_token(now).await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// RFC 7523 §2.1: the service account's signed assertion for a token.
    async fn fetch_token(&self, now: u64) -> Result<AccessToken, NotifyError> {
        let account = &self.account;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = account.key_id.clone();
        let claims = json!({
            "iss": account.client_email,
            "scope": SCOPE,
            "aud": account.token_uri.as_str(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let assertion = jsonwebtoken::encode(&header, &claims, &account.key)
            .map_err(|e| NotifyError::Permanent(format!("cannot sign the assertion: {e}")))?;
        let response = self
            .http
            .post(account.token_uri.clone())
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| NotifyError::Retryable(format!("token call: {}", e.without_url())))?;
        if let Err(e) = classify_response(&response) {
            return Err(match e {
                // A refused assertion is the operator's key or clock: keep
                // trying (the request may outlive the fix), never drop a device.
                NotifyError::Permanent(reason) => {
                    tracing::error!(%reason, "Google refused the FCM service account's assertion; check notifier.channels service_account_file");
                    NotifyError::Retryable(format!("token call refused: {reason}"))
                }
                other => other,
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|e| NotifyError::Retryable(format!("token call: {}", e.without_url())))?;
        Ok(AccessToken {
            value: token.access_token,
            expires_at_secs: now + token.expires_in.unwrap_or(ASSERTION_LIFETIME_SECS),
        })
    }

    async fn send(&self, body: &[u8], token: &str) -> Result<reqwest::Response, NotifyError> {
        self.http
            .post(self.send_url.clone())
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| NotifyError::Retryable(e.without_url().to_string()))
    }
}

/// The send call's body: a data message, Android priority high.
pub fn message_body(message: &Message<'_>, token: &str) -> Result<Vec<u8>, NotifyError> {
    let body = json!({
        "message": {
            "token": token,
            "data": message.push_data(),
            "android": { "priority": "HIGH" },
        }
    });
    let bytes = serde_json::to_vec(&body).map_err(|e| NotifyError::Permanent(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(NotifyError::Permanent(format!(
            "the message is {} bytes; FCM takes at most {MAX_MESSAGE_BYTES}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// What an FCM error answer means. The token is gone on 404 `UNREGISTERED`,
/// or on 400 `INVALID_ARGUMENT` about the token (not about the message).
async fn refusal(response: reqwest::Response) -> NotifyError {
    let status = response.status();
    let classified = classify_response(&response);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let error = &body["error"];
    let codes: Vec<&str> = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["errorCode"].as_str())
        .chain(error["status"].as_str())
        .collect();
    let about_token = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["fieldViolations"].as_array().into_iter().flatten())
        .any(|v| v["field"].as_str() == Some("message.token"))
        || error["message"]
            .as_str()
            .is_some_and(|m| m.to_ascii_lowercase().contains("registration token"));
    let code = codes.first().copied().unwrap_or("none");
    if codes.contains(&"UNREGISTERED") || (codes.contains(&"INVALID_ARGUMENT") && about_token) {
        return NotifyError::Gone(format!("FCM answered {status} {code}"));
    }
    match classified {
        Err(NotifyError::Permanent(_)) => {
            NotifyError::Permanent(format!("FCM answered {status} {code}"))
        }
        Err(other) => other,
        Ok(()) => NotifyError::Permanent(format!("FCM answered {status}")),
    }
}

#[async_trait]
impl Notifier for FcmNotifier {
    async fn notify(&self, message: &Message<'_>, to: Recipient<'_>) -> Result<(), NotifyError> {
        let Recipient::FcmToken(device_token) = to else {
            return Err(wrong_recipient(self.channel()));
        };
        let body = message_body(message, device_token)?;
        let mut response = self.send(&body, &self.access_token(false).await?).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            // Revoked or expired early: one new token, one more try.
            response = self.send(&body, &self.access_token(true).await?).await?;
        }
        if response.status().is_success() {
            Ok(())
        } else {
            Err(refusal(response).await)
        }
    }

    fn channel(&self) -> &'static str {
        "fcm"
    }
}
