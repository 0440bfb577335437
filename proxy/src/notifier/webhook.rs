//! The webhook channel: the operator's push gateway gets the notification
//! as JSON, signed with HMAC-SHA256 in `X-Ciba-Signature`, and finds the
//! user's device itself.
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{classify, wrong_recipient, Message, Notifier, NotifyError, Recipient};
use crate::crypto::hmac_sha256_hex;

pub const SIGNATURE_HEADER: &str = "X-Ciba-Signature";

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
    async fn notify(&self, message: &Message<'_>, to: Recipient<'_>) -> Result<(), NotifyError> {
        let Recipient::Gateway = to else {
            return Err(wrong_recipient(self.channel()));
        };
        // The body is today's wire format, unchanged: the notification itself.
        let body = serde_json::to_vec(message.notification)
            .map_err(|e| NotifyError::Permanent(e.to_string()))?;
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
