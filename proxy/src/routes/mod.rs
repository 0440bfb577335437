//! One module per endpoint.
pub mod backchannel_authentication;
pub mod callback;
pub mod discovery;
pub mod health;
pub mod token;

pub const BACKCHANNEL_PATH: &str = "/bc-authorize";
pub const TOKEN_PATH: &str = "/token";
pub const CALLBACK_PATH: &str = "/callback";
pub const CIBA_GRANT_TYPE: &str = "urn:openid:params:grant-type:ciba";

/// Tags the current request span with the client, once authenticated.
pub(crate) fn record_client(client_id: &str) {
    tracing::Span::current().record("client_id", client_id);
}

/// Tags the current request span with a short hash of the auth_req_id.
pub(crate) fn record_auth_req(id: &crate::domain::AuthReqId) {
    tracing::Span::current().record("auth_req", crate::crypto::log_tag(id.as_str()));
}
