//! `POST /bc-authorize`: CIBA Core §7. Authenticates the client, validates
//! the (signed) request, stores it as pending, has the user's device
//! notified and answers `auth_req_id`, `expires_in`, `interval` (§7.3).
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{authenticated_form, BACKCHANNEL_PATH};
use crate::clients::Client;
use crate::configuration::{DeliveryMode, InputSettings};
use crate::domain::{AcrValues, BindingMessage, LoginHint, RequestedExpiry, Scope, ScopeError};
use crate::error::OAuthError;
use crate::flow::NewRequest;
use crate::form::{input_settings, FormParams};
use crate::hints::Hint;
use crate::request_object::request_parameters_within;
use crate::state::{AppState, CibaPolicy};

#[derive(Debug, Serialize)]
struct Acknowledgement {
    auth_req_id: String,
    expires_in: u64,
    interval: u64,
}

/// A backchannel request whose every parameter has been checked; the hint
/// is not resolved to a user yet.
#[derive(Debug)]
struct ValidRequest {
    scope: Scope,
    hint: Hint,
    binding_message: Option<BindingMessage>,
    expires_in: u64,
    acr_values: Option<String>,
    client_notification_token: Option<String>,
}

#[tracing::instrument(skip_all, fields(client_id, auth_req))]
pub async fn backchannel_authentication(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let (form, client) = authenticated_form(&req, payload, &state).await?;
    let endpoint = state.url(BACKCHANNEL_PATH);
    let now_ms = state.clock.now_ms();
    state
        .limits
        .admit_client(state.store.as_ref(), &client.id, now_ms)
        .await?;
    let input = input_settings(&req);
    let params = request_parameters_within(
        &client,
        &form,
        &[&state.issuer, &endpoint],
        state.store.as_ref(),
        now_ms / 1000,
        &input,
    )
    .await?;
    let request = validate(&params, &client, &state.policy, &input)?;
    let hint = request.hint.clone();
    let login_hint = state
        .hints
        .subject(
            request.hint,
            &client,
            state.upstream.provider(),
            now_ms / 1000,
        )
        .await?;

    let ack = state
        .flow
        .open(NewRequest {
            client,
            scope: request.scope,
            hint,
            login_hint,
            binding_message: request.binding_message,
            acr_values: request.acr_values,
            expires_in: request.expires_in,
            client_notification_token: request.client_notification_token,
        })
        .await?;

    Ok(HttpResponse::Ok()
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .json(Acknowledgement {
            auth_req_id: ack.auth_req_id.to_string(),
            expires_in: ack.expires_in,
            interval: ack.interval,
        }))
}

/// CIBA Core §7.1: scope, exactly one hint, binding_message, requested_expiry,
/// each within its `[input]` cap.
fn validate(
    params: &FormParams,
    client: &Client,
    policy: &CibaPolicy,
    input: &InputSettings,
) -> Result<ValidRequest, OAuthError> {
    let scope = params
        .get("scope")
        .ok_or_else(|| OAuthError::InvalidRequest("scope is required".into()))?;
    let scope = Scope::parse_at_most(scope, input.max_scope_tokens).map_err(|e| match e {
        ScopeError::TooManyTokens { .. } => OAuthError::InvalidRequest(e.to_string()),
        ScopeError::Malformed(m) => OAuthError::InvalidScope(m),
    })?;
    if !scope.contains("openid") {
        return Err(OAuthError::InvalidScope("scope must include openid".into()));
    }
    let refused: Vec<&str> = scope.not_in(&client.scope).collect();
    if !refused.is_empty() {
        return Err(OAuthError::InvalidScope(format!(
            "this client may not request: {}",
            refused.join(" ")
        )));
    }

    // The configured cap; Hint::from_params holds the hint to the type's ceiling.
    if let Some(hint) = params.get("login_hint") {
        LoginHint::parse_at_most(hint, input.max_login_hint_bytes)
            .map_err(OAuthError::InvalidRequest)?;
    }
    let hint = Hint::from_params(|name| params.get(name).map(str::to_owned))?;

    let binding_message = params
        .get("binding_message")
        .map(BindingMessage::parse)
        .transpose()
        .map_err(OAuthError::InvalidBindingMessage)?;
    let expires_in = match params.get("requested_expiry") {
        Some(v) => RequestedExpiry::parse(v)
            .map_err(OAuthError::InvalidRequest)?
            .capped(policy.max_expires_in),
        None => policy.expires_in,
    };
    let acr_values = params
        .get("acr_values")
        .map(|v| AcrValues::parse_at_most(v, input.max_acr_values_bytes))
        .transpose()
        .map_err(OAuthError::InvalidRequest)?;
    let client_notification_token = match client.delivery_mode {
        DeliveryMode::Ping => Some(notification_token(params.get("client_notification_token"))?),
        DeliveryMode::Poll => None,
    };
    Ok(ValidRequest {
        client_notification_token,
        scope,
        hint,
        binding_message,
        expires_in,
        acr_values: acr_values.map(AcrValues::into_string),
    })
}

/// CIBA Core §7.1: required for ping clients, at most 1024 characters, with
/// the syntax of an RFC 6750 §2.1 bearer token (b64token).
fn notification_token(token: Option<&str>) -> Result<String, OAuthError> {
    const MAX_LEN: usize = 1024;
    let token = token.ok_or_else(|| {
        OAuthError::InvalidRequest("client_notification_token is required for ping mode".into())
    })?;
    let body = token.trim_end_matches('=');
    let b64token = !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if token.len() > MAX_LEN || !b64token {
        return Err(OAuthError::InvalidRequest(format!(
            "client_notification_token must be a bearer token of at most {MAX_LEN} characters"
        )));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_token_follows_bearer_syntax_and_length() {
        assert!(notification_token(Some("abc-._~+/xyz==")).is_ok());
        assert!(notification_token(Some(&"a".repeat(1024))).is_ok());
        for bad in ["", "has space", "quote\"", "==", &"a".repeat(1025)] {
            assert!(notification_token(Some(bad)).is_err(), "{bad}");
        }
        assert!(notification_token(None).is_err());
    }
}
