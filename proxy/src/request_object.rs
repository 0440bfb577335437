//! CIBA Core §7.1.1: the signed authentication request object. A client
//! that registered `backchannel_authentication_request_signing_alg` must put
//! every request parameter in a JWT signed with that algorithm and one of
//! its registered keys; nothing but client authentication may stand beside it.
use std::collections::HashMap;

use jsonwebtoken::{decode, decode_header, Validation};
use serde_json::{Map, Value};

use crate::clients::{Client, AUTH_PARAMS};
use crate::error::OAuthError;
use crate::form::FormParams;
use crate::store::Store;

/// Tolerated clock difference with the client for `exp`, `nbf` and `iat`.
pub const CLOCK_SKEW_SECS: u64 = 30;

/// Claims that belong to the JWT itself rather than to the request.
const JWT_CLAIMS: [&str; 6] = ["iss", "aud", "exp", "iat", "nbf", "jti"];

/// Where a request object's `aud` may point.
pub struct Audiences<'a> {
    pub issuer: &'a str,
    pub endpoint: &'a str,
}

/// The request parameters: from the verified request object when the
/// client signs its requests, else from the form.
pub async fn request_parameters(
    client: &Client,
    form: &FormParams,
    audiences: &Audiences<'_>,
    store: &dyn Store,
    now_secs: u64,
) -> Result<FormParams, OAuthError> {
    let Some(alg) = client.signing_alg else {
        if form.get("request").is_some() {
            return Err(OAuthError::InvalidRequest(
                "this client has no registered request-object signing algorithm; send plain parameters".into(),
            ));
        }
        return Ok(form.clone());
    };
    let invalid = |m: &str| OAuthError::InvalidRequest(format!("request object: {m}"));
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
    let keys = client
        .keys
        .as_ref()
        .ok_or_else(|| invalid("the client has no registered keys"))?;
    let key = keys
        .decoding_key(&header)
        .await
        .map_err(|e| invalid(&format!("no registered key verifies it ({e})")))?;
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = decode::<Map<String, Value>>(jwt, &key, &validation)
        .map_err(|_| invalid("the signature does not verify with the client's registered key"))?
        .claims;
    check_claims(&claims, client, audiences, now_secs)?;
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .unwrap_or(now_secs);
    let ttl = exp.saturating_sub(now_secs) + CLOCK_SKEW_SECS;
    if !store
        .use_once(&format!("jti:{}:{}", client.id, jti), ttl)
        .await?
    {
        return Err(invalid("jti has been used before"));
    }
    parameters_from_claims(&claims)
}

fn check_claims(
    claims: &Map<String, Value>,
    client: &Client,
    audiences: &Audiences<'_>,
    now: u64,
) -> Result<(), OAuthError> {
    let invalid = |m: &str| OAuthError::InvalidRequest(format!("request object: {m}"));
    let number = |name: &str| -> Result<u64, OAuthError> {
        match claims.get(name) {
            None => Err(invalid(&format!("{name} is required"))),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| invalid(&format!("{name} must be a NumericDate"))),
        }
    };
    match claims.get("iss").and_then(Value::as_str) {
        None => return Err(invalid("iss is required")),
        Some(iss) if iss != client.id => return Err(invalid("iss must be the client_id")),
        Some(_) => {}
    }
    let trimmed = |s: &str| s.trim_end_matches('/').to_owned();
    let accepted = [trimmed(audiences.issuer), trimmed(audiences.endpoint)];
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => accepted.contains(&trimmed(a)),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| accepted.contains(&trimmed(a))),
        _ => return Err(invalid("aud is required")),
    };
    if !aud_ok {
        return Err(invalid(
            "aud must contain the issuer or the backchannel authentication endpoint",
        ));
    }
    let exp = number("exp")?;
    let iat = number("iat")?;
    let nbf = number("nbf")?;
    if now >= exp + CLOCK_SKEW_SECS {
        return Err(invalid("it has expired (exp)"));
    }
    if nbf > now + CLOCK_SKEW_SECS {
        return Err(invalid("it is not valid yet (nbf)"));
    }
    if iat > now + CLOCK_SKEW_SECS {
        return Err(invalid("iat is in the future"));
    }
    match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() => Ok(()),
        _ => Err(invalid("jti is required")),
    }
}

/// Request parameters from the claims: strings as they are, numbers (e.g.
/// `requested_expiry`) as their decimal text; anything else is malformed.
fn parameters_from_claims(claims: &Map<String, Value>) -> Result<FormParams, OAuthError> {
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
        let params = parameters_from_claims(claims.as_object().unwrap()).unwrap();
        assert_eq!(params.get("requested_expiry"), Some("120"));
        assert_eq!(params.get("login_hint"), Some("alice"));
        assert_eq!(params.get("iss"), None);
    }

    #[test]
    fn structured_parameter_values_are_rejected() {
        let claims = json!({"login_hint": {"sub": "alice"}});
        assert_eq!(
            parameters_from_claims(claims.as_object().unwrap())
                .unwrap_err()
                .code(),
            "invalid_request"
        );
    }
}
