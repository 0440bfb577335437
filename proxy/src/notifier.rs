//! Telling the user's authentication device that a request waits for it:
//! the webhook notifier POSTs a signed JSON body. Retries and what a final
//! failure does are the job queue's business ([`crate::jobs`]).
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::crypto::hmac_sha256_hex;

pub const SIGNATURE_HEADER: &str = "X-Ciba-Signature";

/// What the device is told. The wire format is a contract with operators'
/// push gateways: add fields, never rename them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserNotification {
    pub login_hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding_message: Option<String>,
    pub client_id: String,
    pub scope: String,
    /// The IdP's sign-in link; left out with `notifier.send_authorization_url = false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
    /// The proxy's approval page for this request: who asks, for what, the
    /// binding message, approve or deny.
    pub approval_url: String,
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
    /// The channel's name, for the audit trail.
    fn channel(&self) -> &'static str;
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
        classify(response.status())
    }

    fn channel(&self) -> &'static str {
        "webhook"
    }
}

/// What an HTTP status means for a notification: any 2xx is delivered; a
/// server error, 408 or 429 is worth retrying; anything else (a redirect,
/// which is never followed, or a 4xx) is final.
pub fn classify(status: reqwest::StatusCode) -> Result<(), NotifyError> {
    use reqwest::StatusCode;
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Err(NotifyError::Retryable(format!("status {status}")))
    } else {
        Err(NotifyError::Permanent(format!("status {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn statuses_are_classified() {
        assert!(classify(StatusCode::OK).is_ok());
        assert!(classify(StatusCode::NO_CONTENT).is_ok());
        for retry in [500, 502, 503, 429, 408] {
            let status = StatusCode::from_u16(retry).unwrap();
            assert!(
                matches!(classify(status), Err(NotifyError::Retryable(_))),
                "{retry}"
            );
        }
        for fin in [301, 302, 400, 401, 403, 404, 410] {
            let status = StatusCode::from_u16(fin).unwrap();
            assert!(
                matches!(classify(status), Err(NotifyError::Permanent(_))),
                "{fin}"
            );
        }
    }
}
