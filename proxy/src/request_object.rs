//! CIBA Core §7.1.1: the signed authentication request object. A client
//! that registered `backchannel_authentication_request_signing_alg` must put
//! every request parameter in a JWT signed with that algorithm and one of
//! its registered keys; nothing but client authentication may stand beside it.
use std::collections::HashMap;

use jsonwebtoken::decode_header;
use serde_json::{Map, Value};

use crate::client_auth::AUTH_PARAMS;
use crate::clients::{Client, FAPI_MAX_REQUEST_OBJECT_LIFETIME_SECS};
use crate::configuration::InputSettings;
use crate::error::OAuthError;
use crate::form::FormParams;
use crate::jwt;
use crate::store::ReplayGuard;

/// Claims that belong to the JWT itself rather than to the request.
const JWT_CLAIMS: [&str; 6] = ["iss", "aud", "exp", "iat", "nbf", "jti"];

fn invalid(m: &str) -> OAuthError {
    OAuthError::InvalidRequest(format!("request object: {m}"))
}

/// [`request_parameters_within`] the default `[input]` caps.
pub async fn request_parameters(
    client: &Client,
    form: &FormParams,
    audiences: &[&str],
    store: &dyn ReplayGuard,
    now_secs: u64,
) -> Result<FormParams, OAuthError> {
    let input = InputSettings::default();
    request_parameters_within(client, form, audiences, store, now_secs, &input).await
}

/// The request parameters: from the verified request object when the
/// client signs its requests, else from the form. `audiences` are the
/// accepted `aud` values: the issuer and the backchannel endpoint. The
/// object is at most `input.max_request_object_bytes` (checked before any
/// decoding) and carries at most `input.max_form_params` parameters.
pub async fn request_parameters_within(
    client: &Client,
    form: &FormParams,
    audiences: &[&str],
    store: &dyn ReplayGuard,
    now_secs: u64,
    input: &InputSettings,
) -> Result<FormParams, OAuthError> {
    if let Some(jwt) = form.get("request") {
        let max = input.max_request_object_bytes;
        if jwt.len() > max {
            return Err(OAuthError::InvalidRequest(format!(
                "request (the request object) must be at most {max} bytes"
            )));
        }
    }
    let Some(alg) = client.signing_alg else {
        if form.get("request").is_some() {
            return Err(OAuthError::InvalidRequest(
                "this client has no registered request-object signing algorithm; send plain parameters".into(),
            ));
        }
        return Ok(form.clone());
    };
    let jwt = form.get("request").ok_or_else(|| {
        OAuthError::InvalidRequest(
            "this client must send a signed request object in `request`".into(),
        )
    })?;
    if let Some(extra) = form
        .names()
        .find(|n| *n != "request" && !AUTH_PARAMS.contains(n))
    {
        return Err(OAuthError::InvalidRequest(format!(
            "parameter {extra} must be inside the signed request object"
        )));
    }
    let header = decode_header(jwt).map_err(|_| invalid("not a well-formed signed JWT"))?;
    if header.alg != alg {
        return Err(invalid(&format!(
            "signed with {:?}; this client must use {alg:?}",
            header.alg
        )));
    }
    let claims = client
        .verify_signed(jwt, &header)
        .await
        .map_err(|e| invalid(&e))?;
    let iss = jwt::string(&claims, "iss").map_err(|e| invalid(&e))?;
    // A form client_id that contradicts the signed iss is a client mix-up.
    if form.get("client_id").is_some_and(|id| id != iss) {
        return Err(OAuthError::InvalidClient(
            "client_id in the form differs from the request object's iss".into(),
        ));
    }
    if iss != client.id {
        return Err(invalid("iss must be the client_id"));
    }
    jwt::check_audience(&claims, audiences).map_err(|e| invalid(&e))?;
    jwt::check_times(&claims, now_secs, true).map_err(|e| invalid(&e))?;
    if client.is_fapi() {
        check_fapi_lifetime(&claims, now_secs)?;
    }
    let jti = jwt::string(&claims, "jti").map_err(|e| invalid(&e))?;
    let ttl = jwt::replay_window_secs(&claims, now_secs);
    if !store
        .use_once(&format!("jti:{}:{jti}", client.id), ttl)
        .await?
    {
        return Err(invalid("jti has been used before"));
    }
    parameters_from_claims(&claims, input.max_form_params)
}

/// FAPI-CIBA §5.2.2: `exp - nbf` at most 60 minutes, and `nbf` no more than
/// 60 minutes in the past.
fn check_fapi_lifetime(claims: &Map<String, Value>, now: u64) -> Result<(), OAuthError> {
    let exp = jwt::number(claims, "exp").map_err(|e| invalid(&e))?;
    let nbf = jwt::number(claims, "nbf").map_err(|e| invalid(&e))?;
    let max = FAPI_MAX_REQUEST_OBJECT_LIFETIME_SECS;
    if exp.saturating_sub(nbf) > max {
        return Err(invalid("exp - nbf must be at most 60 minutes (FAPI-CIBA)"));
    }
    if nbf.saturating_add(max) < now {
        return Err(invalid(
            "nbf must be at most 60 minutes in the past (FAPI-CIBA)",
        ));
    }
    Ok(())
}

/// Request parameters from the claims: strings as they are, numbers (e.g.
/// `requested_expiry`) as their decimal text; anything else is malformed.
fn parameters_from_claims(
    claims: &Map<String, Value>,
    max_params: usize,
) -> Result<FormParams, OAuthError> {
    let carried = claims
        .keys()
        .filter(|name| !JWT_CLAIMS.contains(&name.as_str()))
        .count();
    if carried > max_params {
        return Err(invalid(&format!(
            "it carries more than {max_params} parameters"
        )));
    }
    let mut params = HashMap::new();
    for (name, value) in claims {
        if JWT_CLAIMS.contains(&name.as_str()) {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(OAuthError::InvalidRequest(format!(
                    "request object: {name} must be a string"
                )))
            }
        };
        if !text.is_empty() {
            params.insert(name.clone(), text);
        }
    }
    Ok(FormParams::from_map(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_become_text_and_jwt_claims_are_dropped() {
        let claims = json!({"iss": "c", "requested_expiry": 120, "login_hint": "alice"});
        let params = parameters_from_claims(claims.as_object().unwrap(), 64).unwrap();
        assert_eq!(params.get("requested_expiry"), Some("120"));
        assert_eq!(params.get("login_hint"), Some("alice"));
        assert_eq!(params.get("iss"), None);
    }

    #[test]
    fn too_many_parameters_are_refused_but_jwt_claims_do_not_count() {
        let claims = json!({"iss": "c", "aud": "x", "exp": 1, "jti": "j", "a": "1", "b": "2"});
        assert!(parameters_from_claims(claims.as_object().unwrap(), 2).is_ok());
        let e = parameters_from_claims(claims.as_object().unwrap(), 1).unwrap_err();
        assert_eq!(e.code(), "invalid_request");
        assert!(
            e.description().contains("request object"),
            "{}",
            e.description()
        );
    }

    #[test]
    fn a_lone_surrogate_cannot_reach_a_parameter() {
        // JSON escapes can spell a surrogate; serde_json refuses an unpaired one.
        assert!(serde_json::from_str::<Value>(r#"{"binding_message":"a\ud800b"}"#).is_err());
        assert!(serde_json::from_str::<Value>(r#"{"binding_message":"a\udc00b"}"#).is_err());
    }

    #[test]
    fn structured_parameter_values_are_rejected() {
        let claims = json!({"login_hint": {"sub": "alice"}});
        assert_eq!(
            parameters_from_claims(claims.as_object().unwrap(), 64)
                .unwrap_err()
                .code(),
            "invalid_request"
        );
    }
}
