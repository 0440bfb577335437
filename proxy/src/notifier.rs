//! Telling the user's authentication device that a request waits for it.
//! The webhook notifier POSTs a signed JSON body; delivery is retried with
//! backoff until the request expires, and a delivery that cannot succeed
//! ends the request so the client hears about it at its next poll.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use url::Url;

use crate::clock::Clock;
use crate::crypto::{hmac_sha256_hex, log_tag};
use crate::domain::AuthReqId;
use crate::store::{Outcome, Store};

pub const SIGNATURE_HEADER: &str = "X-Ciba-Signature";

/// What the device is told. The wire format is a contract with operators'
/// push gateways: add fields, never rename them.
#[derive(Debug, Clone, Serialize)]
pub struct UserNotification {
    pub login_hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding_message: Option<String>,
    pub client_id: String,
    pub scope: String,
    pub authorization_url: String,
    /// Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth another try: network trouble, timeout, 5xx, 429.
    #[error("delivery failed, will retry: {0}")]
    Retryable(String),
    /// The receiver refused the notification; retrying cannot help.
    #[error("delivery refused: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    async fn notify(&self, notification: &UserNotification) -> Result<(), NotifyError>;
}

pub struct WebhookNotifier {
    url: Url,
    secret: SecretString,
    http: reqwest::Client,
}

impl WebhookNotifier {
    pub fn new(url: Url, secret: SecretString, http: reqwest::Client) -> Self {
        Self { url, secret, http }
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, notification: &UserNotification) -> Result<(), NotifyError> {
        let body =
            serde_json::to_vec(notification).map_err(|e| NotifyError::Permanent(e.to_string()))?;
        let signature = hmac_sha256_hex(self.secret.expose_secret().as_bytes(), &body);
        let response = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, format!("sha256={signature}"))
            .body(body)
            .send()
            .await
            .map_err(|e| NotifyError::Retryable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(NotifyError::Retryable(format!("status {status}")))
        } else {
            Err(NotifyError::Permanent(format!("status {status}")))
        }
    }
}

/// Backoff between delivery attempts: 0.5 s doubling up to 30 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6)).min(30_000))
}

/// Delivers `notification` for request `id`, retrying until it expires.
/// A refused or never-delivered notification is logged; a refused one also
/// ends the request as denied so the client need not wait for expiry.
pub async fn deliver(
    notifier: Arc<dyn Notifier>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    id: AuthReqId,
    notification: UserNotification,
) {
    let tag = log_tag(id.as_str());
    let mut attempt = 0u32;
    loop {
        match notifier.notify(&notification).await {
            Ok(()) => {
                tracing::info!(auth_req = %tag, attempt, "user notified");
                return;
            }
            Err(NotifyError::Permanent(reason)) => {
                tracing::error!(auth_req = %tag, %reason, "user notification refused; ending the request");
                let outcome = Outcome::Denied {
                    reason: "the user's authentication device could not be notified".into(),
                };
                if let Err(e) = store.finish(&id, &outcome, clock.now_ms()).await {
                    tracing::error!(auth_req = %tag, error = %e, "could not record the failed notification");
                }
                return;
            }
            Err(NotifyError::Retryable(reason)) => {
                let wait = backoff(attempt);
                let deadline = notification.expires_at * 1000;
                if clock.now_ms() + wait.as_millis() as u64 >= deadline {
                    tracing::error!(auth_req = %tag, %reason, attempts = attempt + 1,
                        "user notification never delivered; the request will expire");
                    return;
                }
                tracing::warn!(auth_req = %tag, %reason, attempt, "user notification failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_millis(1000));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }
}
