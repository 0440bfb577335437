//! `GET /.well-known/openid-configuration` (OpenID Connect Discovery, with
//! the CIBA Core §4 metadata). The ID tokens are the IdP's, so the upstream
//! issuer and its `jwks_uri` are published for clients that verify them.
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{BACKCHANNEL_PATH, CIBA_GRANT_TYPE, TOKEN_PATH};
use crate::clients::SIGNING_ALGS;
use crate::error::OAuthError;
use crate::state::AppState;

pub async fn openid_configuration(state: web::Data<AppState>) -> Result<HttpResponse, OAuthError> {
    let upstream = state.upstream.provider().metadata().await.map_err(|e| {
        tracing::warn!(error = %e, "upstream metadata unavailable");
        OAuthError::TemporarilyUnavailable(
            "the identity provider's metadata is not available yet".into(),
        )
    })?;
    let algs: Vec<String> = SIGNING_ALGS.iter().map(|a| format!("{a:?}")).collect();
    let mut document = json!({
        "issuer": state.issuer,
        "backchannel_authentication_endpoint": state.url(BACKCHANNEL_PATH),
        "token_endpoint": state.url(TOKEN_PATH),
        "grant_types_supported": [CIBA_GRANT_TYPE],
        "backchannel_token_delivery_modes_supported": ["poll", "ping"],
        "backchannel_authentication_request_signing_alg_values_supported": algs.clone(),
        "backchannel_user_code_parameter_supported": false,
        "token_endpoint_auth_methods_supported": auth_methods(&state),
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "upstream_issuer": upstream.issuer,
        "jwks_uri": upstream.jwks_uri,
    });
    // Not a standard field: tells clients that a poll may be held (CIBA
    // Core §7.3 allows it), so they need not poll faster than this.
    if let Some(long_poll) = &state.flow.long_poll {
        document["backchannel_long_poll_secs"] = long_poll.wait_secs().into();
    }
    Ok(HttpResponse::Ok().json(document))
}

/// The client authentication methods this deployment can check: the
/// certificate-based ones only when certificates can reach us.
fn auth_methods(state: &AppState) -> Vec<&'static str> {
    let mut methods = vec![
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    if state.mtls.sees_certificates() {
        if state.mtls.has_ca() {
            methods.push("tls_client_auth");
        }
        methods.push("self_signed_tls_client_auth");
    }
    methods
}
