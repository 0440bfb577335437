//! Telling the user's authentication device that a request waits for it,
//! one module per channel behind the [`Notifier`] trait:
//! - [`webhook`] POSTs a signed JSON body to the operator's push gateway;
//! - [`email`] sends a mail through an SMTP server;
//! - [`fcm`] sends a data message through Firebase Cloud Messaging (HTTP v1);
//! - [`webpush`] sends an encrypted RFC 8030 push message to a browser or app.
//!
//! Which channels a request uses, and retries, are the flow's and the job
//! queue's business ([`crate::flow`], [`crate::jobs`]). What every message
//! carries is in [`Message`]: never a token or an authorization code.
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod channels;
pub mod email;
pub mod fcm;
pub mod webhook;
pub mod webpush;

pub use channels::Channels;
pub use email::EmailNotifier;
pub use fcm::FcmNotifier;
pub use webhook::{WebhookNotifier, SIGNATURE_HEADER};
pub use webpush::WebPushNotifier;

/// What the device is told. The wire format is a contract with operators'
/// push gateways (the webhook's body): add fields, never rename them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserNotification {
    pub login_hint: String,
    /// Left out with number matching: the user must read it on the
    /// consumption device and pick it on the approval page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding_message: Option<String>,
    pub client_id: String,
    pub scope: String,
    /// The IdP's sign-in link; left out with `notifier.send_authorization_url = false`,
    /// and with number matching (it would skip the pick).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
    /// The proxy's approval page for this request: who asks, for what, the
    /// binding message, approve or deny.
    pub approval_url: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// One delivery's view of the notification: what the user-facing channels
/// (e-mail, push) show. They carry the approval link, never the IdP's
/// sign-in link: that one holds the request's `state`.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub notification: &'a UserNotification,
    /// The name the approval page shows for the client.
    pub client_name: &'a str,
    /// How long the request still lives, seconds (Web Push's `TTL`).
    pub ttl_secs: u64,
}

impl Message<'_> {
    /// The approval page's handle: the last segment of the approval link,
    /// which the device API takes (`POST /devices/decision`).
    pub fn handle(&self) -> &str {
        let url = self.notification.approval_url.as_str();
        url.rsplit('/').next().unwrap_or(url)
    }

    /// The push payload (FCM `data`, the Web Push body): string values only,
    /// as FCM requires. A contract with device apps (docs/devices.md): add
    /// fields, never rename them.
    pub fn push_data(&self) -> BTreeMap<&'static str, String> {
        let n = self.notification;
        let mut data = BTreeMap::from([
            ("type", "ciba_request".to_owned()),
            ("approval_url", n.approval_url.clone()),
            ("handle", self.handle().to_owned()),
            ("client_id", n.client_id.clone()),
            ("client_name", self.client_name.to_owned()),
            ("scope", n.scope.clone()),
            ("expires_at", n.expires_at.to_string()),
        ]);
        if let Some(binding_message) = &n.binding_message {
            data.insert("binding_message", binding_message.clone());
        }
        data
    }
}

/// Where, on its channel, one notification goes.
#[derive(Debug, Clone, Copy)]
pub enum Recipient<'a> {
    /// The webhook: the operator's gateway finds the user's device itself.
    Gateway,
    /// An e-mail address.
    Email(&'a str),
    /// An FCM registration token of a registered device.
    FcmToken(&'a str),
    /// A Web Push subscription of a registered device.
    Subscription {
        endpoint: &'a str,
        /// The user agent's P-256 public key, base64url (RFC 8291 `p256dh`).
        p256dh: &'a str,
        /// The authentication secret, base64url (RFC 8291 `auth`).
        auth: &'a str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth another try: network trouble, timeout, 5xx, 429.
    #[error("delivery failed, will retry: {0}")]
    Retryable(String),
    /// Worth another try, not before `after` (the answer's `Retry-After`).
    #[error("delivery failed, will retry after {after:?}: {reason}")]
    RetryAfter { reason: String, after: Duration },
    /// The receiver refused the notification; retrying cannot help.
    #[error("delivery refused: {0}")]
    Permanent(String),
    /// The push service says the token or subscription no longer exists:
    /// the device's push target is dropped.
    #[error("push target gone: {0}")]
    Gone(String),
}

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    async fn notify(&self, message: &Message<'_>, to: Recipient<'_>) -> Result<(), NotifyError>;
    /// The channel's kind: the audit trail's and the metrics' `channel`.
    fn channel(&self) -> &'static str;
}

/// A recipient a channel cannot use: a bug in the fan-out, never retried.
pub(crate) fn wrong_recipient(channel: &str) -> NotifyError {
    NotifyError::Permanent(format!("not a {channel} recipient"))
}

/// An answer's `Retry-After` (RFC 9110 §10.2.3: seconds or an HTTP date),
/// capped at an hour.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let value = value.trim();
    let after = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(after.min(Duration::from_secs(3600)))
}

/// [`classify`], with a 429's or 503's `Retry-After` honoured.
pub(crate) fn classify_response(response: &reqwest::Response) -> Result<(), NotifyError> {
    match classify(response.status()) {
        Err(NotifyError::Retryable(reason)) => Err(match retry_after(response.headers()) {
            Some(after) => NotifyError::RetryAfter { reason, after },
            None => NotifyError::Retryable(reason),
        }),
        other => other,
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
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
    use reqwest::StatusCode;

    fn retry_after_of(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        retry_after(&headers)
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date_and_capped() {
        assert_eq!(retry_after_of("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_of("999999"), Some(Duration::from_secs(3600)));
        // A date in the past: retry now.
        assert_eq!(
            retry_after_of("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_of("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn push_data_holds_strings_and_the_handle_of_the_approval_link() {
        let n = UserNotification {
            login_hint: "alice".into(),
            binding_message: None,
            client_id: "shop".into(),
            scope: "openid".into(),
            authorization_url: Some("https://idp.example/auth?state=S".into()),
            approval_url: "https://proxy.example/approve/H4ndle".into(),
            expires_at: 42,
        };
        let message = Message {
            notification: &n,
            client_name: "Acme",
            ttl_secs: 1,
        };
        let data = message.push_data();
        assert_eq!(data["handle"], "H4ndle");
        assert_eq!(data["expires_at"], "42");
        assert!(!data.contains_key("binding_message"));
        assert!(!data.values().any(|v| v.contains("state=")));
    }

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
