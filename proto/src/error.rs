//! The `error` codes of OAuth and CIBA error responses, and the response
//! body that carries one. The proxy renders these codes
//! (`OAuthError::code`); the console client and the tests read them.
use serde_json::Value;

// RFC 6749 §5.2: token endpoint errors (CIBA Core §13 uses the same codes
// at the backchannel authentication endpoint).

/// A parameter is missing, repeated, unsupported or malformed.
pub const INVALID_REQUEST: &str = "invalid_request";
/// Client authentication failed (401 with `WWW-Authenticate`).
pub const INVALID_CLIENT: &str = "invalid_client";
/// The grant (the auth_req_id) is invalid, expired, revoked or another client's.
pub const INVALID_GRANT: &str = "invalid_grant";
/// The client may not use this grant type or endpoint.
pub const UNAUTHORIZED_CLIENT: &str = "unauthorized_client";
/// The grant type is not supported.
pub const UNSUPPORTED_GRANT_TYPE: &str = "unsupported_grant_type";
/// The scope is invalid, unknown, or lacks `openid` (CIBA Core §13).
pub const INVALID_SCOPE: &str = "invalid_scope";

// RFC 6749 §4.1.2.1: errors the authorization server may answer with anywhere.

/// The user or the server refused (CIBA Core §11 at the token endpoint,
/// §13 at the backchannel endpoint).
pub const ACCESS_DENIED: &str = "access_denied";
/// An unexpected condition; nothing else is said.
pub const SERVER_ERROR: &str = "server_error";
/// Overloaded or a dependency is down; try again later.
pub const TEMPORARILY_UNAVAILABLE: &str = "temporarily_unavailable";

/// RFC 6750 §3.1: a bearer token that is missing, expired or not ours.
pub const INVALID_TOKEN: &str = "invalid_token";

// CIBA Core §11: token endpoint errors while the user decides.

/// The user has not answered yet; poll again after the interval.
pub const AUTHORIZATION_PENDING: &str = "authorization_pending";
/// Polled too fast: the interval grows by at least 5 s for every later poll.
pub const SLOW_DOWN: &str = "slow_down";
/// The auth_req_id has expired; start a new request.
pub const EXPIRED_TOKEN: &str = "expired_token";

// CIBA Core §13: backchannel authentication endpoint errors.

/// The login_hint_token has expired.
pub const EXPIRED_LOGIN_HINT_TOKEN: &str = "expired_login_hint_token";
/// The hint does not name a user the OP knows.
pub const UNKNOWN_USER_ID: &str = "unknown_user_id";
/// A user_code is required but was not given.
pub const MISSING_USER_CODE: &str = "missing_user_code";
/// The user_code is wrong.
pub const INVALID_USER_CODE: &str = "invalid_user_code";
/// The binding_message is invalid or unacceptable.
pub const INVALID_BINDING_MESSAGE: &str = "invalid_binding_message";

/// An error response body (RFC 6749 §5.2): `error`, an optional
/// `error_description`, and the `interval` the proxy adds to `slow_down`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub error: String,
    pub error_description: Option<String>,
    pub interval: Option<u64>,
}

impl ErrorResponse {
    /// Reads an error response from a JSON body. `None` unless `error` is a
    /// string; members of the wrong type are left out rather than failing
    /// the whole response.
    pub fn from_json(body: &Value) -> Option<Self> {
        let error = body.get("error")?.as_str()?.to_owned();
        Some(Self {
            error,
            error_description: body
                .get("error_description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            interval: body.get("interval").and_then(Value::as_u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_error_response_is_read_with_its_optional_members() {
        let e = ErrorResponse::from_json(&json!({
            "error": SLOW_DOWN,
            "error_description": "polling too fast",
            "interval": 10,
        }))
        .unwrap();
        assert_eq!(e.error, "slow_down");
        assert_eq!(e.error_description.as_deref(), Some("polling too fast"));
        assert_eq!(e.interval, Some(10));
    }

    #[test]
    fn members_of_the_wrong_type_are_left_out() {
        let e = ErrorResponse::from_json(&json!({
            "error": "access_denied",
            "error_description": 7,
            "interval": "soon",
        }))
        .unwrap();
        assert_eq!(e.error_description, None);
        assert_eq!(e.interval, None);
    }

    #[test]
    fn a_body_without_a_string_error_is_not_an_error_response() {
        for body in [json!({}), json!({"error": 1}), json!("x"), json!(null)] {
            assert_eq!(ErrorResponse::from_json(&body), None, "{body}");
        }
    }
}
