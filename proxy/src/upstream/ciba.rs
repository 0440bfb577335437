//! The native-CIBA kind, for IdPs that speak CIBA themselves (WSO2 IS 7,
//! Keycloak, oidc-provider, ...). The client's checked request is forwarded
//! to the IdP's backchannel endpoint; from then on only the proxy talks to
//! the IdP about it: one token call per upstream interval in poll delivery
//! (the flow's `AskUpstream` task holds a lease in the store so instances do
//! not double up), or one token call per ping in ping delivery. Clients
//! poll the proxy, never the IdP, and never see the IdP's auth_req_id.
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use url::Url;

use super::provider::{ErrorResponse, TokenResponse, MAX_RESPONSE_BYTES};
use super::{
    Answer, BeginRequest, Begun, FollowUp, Grant, Issued, LinkFor, PingCheck, Provider, Upstream,
    UpstreamError,
};
use crate::clients::Client;
use crate::configuration::{UpstreamDelivery, UpstreamSettings, LOGIN_HINT_PLACEHOLDER};
use crate::crypto::TokenCipher;
use crate::domain::AuthReqId;
use crate::hints::Hint;
use crate::jwks::read_limited;

use ciba_proto::CIBA_GRANT_TYPE;
/// CIBA Core §10.1.1: the claim that ties an ID token to its request.
const AUTH_REQ_ID_CLAIM: &str = "urn:openid:params:jwt:claim:auth_req_id";
/// CIBA Core §7.3: the interval to use when the IdP sends none.
const DEFAULT_INTERVAL_SECS: u64 = 5;
/// The longest IdP auth_req_id the proxy keeps.
const MAX_UPSTREAM_ID_LEN: usize = 1024;
/// Associated data of the ping tokens the proxy hands the IdP.
const PING_TOKEN_AAD: &str = "upstream-ping";

/// What this kind remembers about one request.
#[derive(Serialize, Deserialize)]
struct Context {
    /// The IdP's own auth_req_id; it never leaves the proxy.
    upstream_id: String,
    /// Ping delivery: the bearer token the IdP pings with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ping_token: Option<String>,
    /// WSO2 IS's `auth_url`, for the user's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_url: Option<Url>,
}

impl Context {
    fn read(bytes: &[u8]) -> Result<Self, UpstreamError> {
        serde_json::from_slice(bytes)
            .map_err(|e| UpstreamError::Rejected(format!("unreadable request context: {e}")))
    }
}

/// CIBA Core §7.3, plus WSO2 IS's `auth_url` for its external channel.
#[derive(Deserialize)]
struct Acknowledgement {
    auth_req_id: String,
    expires_in: u64,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    auth_url: Option<Url>,
}

pub struct Ciba {
    provider: Arc<Provider>,
    /// Makes the ping tokens: each carries the proxy's auth_req_id, sealed.
    cipher: TokenCipher,
    delivery: UpstreamDelivery,
    ping_fallback_secs: u64,
    backchannel_params: Vec<(String, String)>,
    login_hint_template: Option<String>,
}

impl Ciba {
    pub fn new(provider: Arc<Provider>, cipher: TokenCipher, settings: &UpstreamSettings) -> Self {
        Self {
            provider,
            cipher,
            delivery: settings.delivery,
            ping_fallback_secs: settings.ping_fallback_secs,
            backchannel_params: settings
                .backchannel_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            login_hint_template: settings.login_hint_template.clone(),
        }
    }

    /// The login hint in the IdP's own shape (`upstream.login_hint_template`).
    fn shaped_hint(&self, hint: &str) -> String {
        match &self.login_hint_template {
            Some(template) => fill_template(template, hint),
            None => hint.to_owned(),
        }
    }

    async fn backchannel_endpoint(&self) -> Result<Url, UpstreamError> {
        let metadata = self.provider.metadata().await?;
        metadata.backchannel_authentication_endpoint.ok_or_else(|| {
            UpstreamError::Misconfigured {
                key: "upstream.kind",
                message: "is \"ciba\", but the identity provider's discovery document lists no backchannel_authentication_endpoint".into(),
            }
        })
    }

    /// A fresh bearer token for the IdP's ping about request `id`: the id
    /// and random bytes, sealed, so the ping finds its request without a
    /// lookup and nobody else can make one.
    fn ping_token(&self, id: &AuthReqId) -> String {
        id.seal_reference(&self.cipher, PING_TOKEN_AAD)
    }

    async fn token_call(
        &self,
        client: &Client,
        context: &Context,
        now_secs: u64,
    ) -> Result<Answer, UpstreamError> {
        let metadata = self.provider.metadata().await?;
        let form = vec![
            ("grant_type", CIBA_GRANT_TYPE.to_owned()),
            ("auth_req_id", context.upstream_id.clone()),
        ];
        let (status, body) = self
            .send(
                "token",
                self.provider
                    .post_form(metadata.token_endpoint, client, form),
            )
            .await?;
        if status.is_success() {
            let response: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                UpstreamError::Unavailable(format!("malformed token response: {e}"))
            })?;
            let tokens = response.into_token_set(now_secs)?;
            let claims = self
                .provider
                .validate_fresh_id_token(&tokens.id_token, client, now_secs)
                .await?;
            if let Some(claimed) = claims.get(AUTH_REQ_ID_CLAIM) {
                if claimed.as_str() != Some(context.upstream_id.as_str()) {
                    return Err(UpstreamError::InvalidIdToken(format!(
                        "{AUTH_REQ_ID_CLAIM} names another request"
                    )));
                }
            }
            return Ok(Answer::Issued(Issued { tokens, claims }));
        }
        let error = oauth_error(status, &body)?;
        Ok(match error.error.as_str() {
            "authorization_pending" => Answer::Pending,
            "slow_down" => Answer::SlowDown,
            "access_denied" => Answer::Ended("the user or the identity provider declined the request".into()),
            "expired_token" => Answer::Ended(
                "the request expired at the identity provider before the user answered".into(),
            ),
            // Some IdPs (Glewlwyd) keep one live request per client and
            // user: a newer one disables the older, whose id then fails.
            "invalid_grant" => Answer::Ended(
                "the identity provider no longer knows this request; it may allow one pending request per user, and a newer request for the same user replaced it".into(),
            ),
            "invalid_client" | "unauthorized_client" => {
                return Err(client_misconfigured(client, &error))
            }
            other => {
                return Err(UpstreamError::Rejected(format!(
                    "{other}{}",
                    error
                        .error_description
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )))
            }
        })
    }

    /// Sends a request; the status and the (capped) body. Network trouble
    /// and server errors are `Unavailable`.
    async fn send(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), UpstreamError> {
        let response = self
            .provider
            .send(endpoint, request)
            .await
            .map_err(|e| UpstreamError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::Unavailable(format!("status {status}")));
        }
        let body = read_limited(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(UpstreamError::Unavailable)?;
        Ok((status, body))
    }
}

/// `template` with the hint in place of `{login_hint}`, JSON-escaped: the
/// templates are JSON (Glewlwyd's `{"username":"{login_hint}"}`), and a hint
/// with a quote must not change their shape.
fn fill_template(template: &str, hint: &str) -> String {
    let quoted = serde_json::to_string(hint).unwrap_or_default();
    let escaped = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default();
    template.replace(LOGIN_HINT_PLACEHOLDER, escaped)
}

/// An error response, or `Unavailable` when the body is not one.
fn oauth_error(status: reqwest::StatusCode, body: &[u8]) -> Result<ErrorResponse, UpstreamError> {
    serde_json::from_slice(body).map_err(|_| {
        UpstreamError::Unavailable(format!("status {status} without an OAuth error body"))
    })
}

/// The IdP does not accept the client's upstream registration for CIBA.
fn client_misconfigured(client: &Client, error: &ErrorResponse) -> UpstreamError {
    UpstreamError::Misconfigured {
        key: "clients.upstream_client_id",
        message: format!(
            "the identity provider answered {} for client {}'s upstream registration; check upstream_client_id and upstream_client_secret, and that the registration allows the CIBA grant{}",
            error.error,
            client.id,
            error
                .error_description
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ),
    }
}

#[async_trait]
impl Upstream for Ciba {
    fn provider(&self) -> &Provider {
        &self.provider
    }

    async fn ready(&self) -> Result<(), UpstreamError> {
        self.backchannel_endpoint().await.map(|_| ())
    }

    async fn begin(&self, request: &BeginRequest<'_>) -> Result<Begun, UpstreamError> {
        let endpoint = self.backchannel_endpoint().await?;
        let mut form: Vec<(&str, String)> = vec![("scope", request.scope.to_string())];
        // The hint goes on exactly as the client sent it.
        form.push(match request.hint {
            Hint::LoginHint(hint) => ("login_hint", self.shaped_hint(hint.as_str())),
            Hint::IdTokenHint(token) => ("id_token_hint", token.clone()),
            Hint::LoginHintToken(token) => ("login_hint_token", token.clone()),
        });
        if let Some(message) = request.binding_message {
            form.push(("binding_message", message.as_str().to_owned()));
        }
        if let Some(acr) = request.acr_values {
            form.push(("acr_values", acr.to_owned()));
        }
        form.push(("requested_expiry", request.expires_in.to_string()));
        let ping_token =
            (self.delivery == UpstreamDelivery::Ping).then(|| self.ping_token(request.id));
        if let Some(token) = &ping_token {
            form.push(("client_notification_token", token.clone()));
        }
        for (name, value) in &self.backchannel_params {
            form.push((name.as_str(), value.clone()));
        }
        let (status, body) = self
            .send(
                "backchannel",
                self.provider.post_form(endpoint, request.client, form),
            )
            .await?;
        if !status.is_success() {
            let error = oauth_error(status, &body)?;
            return Err(match error.error.as_str() {
                "invalid_client" | "unauthorized_client" => {
                    client_misconfigured(request.client, &error)
                }
                _ => UpstreamError::Refused {
                    error: error.error,
                    description: error.error_description,
                },
            });
        }
        let ack: Acknowledgement = serde_json::from_slice(&body).map_err(|e| {
            UpstreamError::Unavailable(format!("malformed backchannel acknowledgement: {e}"))
        })?;
        if ack.auth_req_id.is_empty() || ack.auth_req_id.len() > MAX_UPSTREAM_ID_LEN {
            return Err(UpstreamError::Unavailable(
                "the backchannel acknowledgement has no usable auth_req_id".into(),
            ));
        }
        let interval_secs = ack.interval.unwrap_or(DEFAULT_INTERVAL_SECS).max(1);
        let every_secs = match self.delivery {
            UpstreamDelivery::Poll => interval_secs,
            UpstreamDelivery::Ping => self.ping_fallback_secs.max(interval_secs),
        };
        let context = Context {
            upstream_id: ack.auth_req_id,
            ping_token,
            auth_url: ack.auth_url.clone(),
        };
        Ok(Begun {
            context: serde_json::to_vec(&context)
                .map_err(|e| UpstreamError::Unavailable(e.to_string()))?,
            user_link: ack.auth_url,
            expires_in: Some(ack.expires_in),
            follow_up: Some(FollowUp {
                interval_secs,
                every_secs,
            }),
        })
    }

    async fn redeem(
        &self,
        client: &Client,
        _id: &AuthReqId,
        context: &[u8],
        grant: Grant<'_>,
        now_secs: u64,
    ) -> Result<Answer, UpstreamError> {
        if !matches!(grant, Grant::Poll) {
            return Err(UpstreamError::Rejected(
                "a native-CIBA upstream never sends the user's browser to /callback".into(),
            ));
        }
        self.token_call(client, &Context::read(context)?, now_secs)
            .await
    }

    async fn user_link(&self, link: &LinkFor<'_>) -> Result<Option<Url>, UpstreamError> {
        Ok(Context::read(link.context)?.auth_url)
    }

    fn ping_target(&self, bearer: &str) -> Option<AuthReqId> {
        AuthReqId::open_reference(&self.cipher, bearer, PING_TOKEN_AAD)
    }

    fn check_ping(&self, context: &[u8], bearer: &str, upstream_id: &str) -> PingCheck {
        let Ok(context) = serde_json::from_slice::<Context>(context) else {
            return PingCheck::WrongToken;
        };
        let expected = context.ping_token.unwrap_or_default();
        if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(bearer.as_bytes())) {
            return PingCheck::WrongToken;
        }
        if context.upstream_id != upstream_id {
            return PingCheck::WrongRequest;
        }
        PingCheck::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_hint_template_json_escapes_the_hint() {
        let template = r#"{"username":"{login_hint}"}"#;
        assert_eq!(fill_template(template, "alice"), r#"{"username":"alice"}"#);
        let shaped = fill_template(template, r#"a"b\c"#);
        assert_eq!(shaped, r#"{"username":"a\"b\\c"}"#);
        // Still one JSON object naming exactly that user.
        let parsed: serde_json::Value = serde_json::from_str(&shaped).unwrap();
        assert_eq!(parsed["username"], r#"a"b\c"#);
        assert_eq!(parsed.as_object().unwrap().len(), 1);
        let control = fill_template(template, "x\n\u{1}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&control).unwrap()["username"],
            "x\n\u{1}"
        );
    }
}
