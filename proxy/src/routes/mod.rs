//! One module per endpoint.
use std::sync::Arc;

use actix_web::{web, HttpRequest};

use crate::client_auth::{authenticate, AuthContext};
use crate::clients::Client;
use crate::error::OAuthError;
use crate::form::FormParams;
use crate::state::AppState;
use crate::telemetry::record_client;

pub mod account;
pub mod admin;
pub mod approve;
pub mod backchannel_authentication;
pub mod callback;
pub mod devices;
pub mod discovery;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod token;
pub mod upstream_ping;

pub const BACKCHANNEL_PATH: &str = "/bc-authorize";
pub const TOKEN_PATH: &str = "/token";
pub const CALLBACK_PATH: &str = "/callback";
/// The approval page, `/approve/{handle}`, and its two answers.
pub const APPROVE_PATH: &str = "/approve/{handle}";
pub const APPROVE_APPROVE_PATH: &str = "/approve/{handle}/approve";
pub const APPROVE_DENY_PATH: &str = "/approve/{handle}/deny";
/// The authentication-device API (`docs/devices.md`); the same paths as
/// `ciba_proto::device`, spelled out for tests/api/openapi.rs's route reader.
pub const DEVICE_REGISTER_PATH: &str = "/devices";
pub const DEVICE_REQUESTS_PATH: &str = "/devices/requests";
pub const DEVICE_DECISION_PATH: &str = "/devices/decision";
pub const DEVICE_REMOVE_PATH: &str = "/devices/remove";
/// The pages' stylesheet.
pub const STYLESHEET_PATH: &str = "/assets/ciba.css";
/// Where a native-CIBA IdP in ping delivery notifies the proxy.
pub const UPSTREAM_PING_PATH: &str = "/upstream/ping";
/// Where each port serves its OpenAPI document (`proxy/openapi.json`,
/// `proxy/openapi-operator.json` on the operator port).
pub const OPENAPI_PATH: &str = "/openapi.json";
pub use ciba_proto::CIBA_GRANT_TYPE;

/// Reads the form body and authenticates the client that sent it; tags the
/// current span with the client.
pub(crate) async fn authenticated_form(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(FormParams, Arc<Client>), OAuthError> {
    let form = FormParams::from_request(req, payload).await?;
    let (token, backchannel) = (state.url(TOKEN_PATH), state.url(BACKCHANNEL_PATH));
    let ctx = AuthContext {
        store: state.store.as_ref(),
        certificate: state.mtls.certificate(req),
        mtls: &state.mtls,
        now_secs: state.clock.now_secs(),
        // RFC 7523 §3: the issuer or the endpoint the assertion is sent to.
        audiences: &[&state.issuer, &token, &backchannel],
    };
    let client = authenticate(&state.clients, req, &form, &ctx)
        .await
        .inspect_err(|e| {
            if matches!(e, OAuthError::InvalidClient(_)) {
                // Only a configured id becomes a label; anything else is `unknown`.
                crate::metrics::client_auth_failed(crate::metrics::client_label(
                    &state.clients,
                    form.get("client_id"),
                ));
            }
        })?;
    record_client(&client.id);
    Ok((form, client))
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_paths_are_the_protocol_s() {
        use ciba_proto::device;
        assert_eq!(super::DEVICE_REGISTER_PATH, device::REGISTER_PATH);
        assert_eq!(super::DEVICE_REQUESTS_PATH, device::REQUESTS_PATH);
        assert_eq!(super::DEVICE_DECISION_PATH, device::DECISION_PATH);
        assert_eq!(super::DEVICE_REMOVE_PATH, device::REMOVE_PATH);
    }
}
