//! CIBA Core §10.2 ping: telling a ping-mode client that the result of its
//! request is ready, so it can redeem it at the token endpoint.
use serde_json::json;
use url::Url;

use crate::notifier::{classify, NotifyError};

pub struct ClientPinger {
    /// Follows no redirect and times out (see `Upstream::http_client`).
    http: reqwest::Client,
}

impl ClientPinger {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// POSTs `{"auth_req_id": ...}` with the client's notification token.
    pub async fn ping(
        &self,
        endpoint: &Url,
        token: &str,
        auth_req_id: &str,
    ) -> Result<(), NotifyError> {
        let response = self
            .http
            .post(endpoint.clone())
            .bearer_auth(token)
            .json(&json!({ "auth_req_id": auth_req_id }))
            .send()
            .await
            .map_err(|e| NotifyError::Retryable(e.without_url().to_string()))?;
        classify(response.status())
    }
}
