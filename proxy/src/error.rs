//! The one OAuth error type at the HTTP edge. Handlers return it; its
//! `ResponseError` impl renders `{"error","error_description"}` with the
//! status the specs give. Internal causes go to the log, never to the client.
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// How long a client should wait when the store or the IdP is unavailable.
const RETRY_AFTER_SECS: &str = "2";

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// RFC 6749 §5.2, CIBA Core §13: missing, repeated or malformed parameter.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// RFC 6749 §5.2: client authentication failed (401 + WWW-Authenticate).
    #[error("invalid_client: {0}")]
    InvalidClient(String),
    /// RFC 6750 §3.1: a bearer token (an IdP's ping) that is missing or not
    /// ours (401 + `WWW-Authenticate: Bearer`).
    #[error("invalid_token: {0}")]
    InvalidToken(String),
    /// RFC 6749 §5.2: the auth_req_id is unknown, another client's, or used.
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    /// RFC 6749 §5.2: only the CIBA grant is served here.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(String),
    /// RFC 6749 §5.2, CIBA Core §13: scope unknown, not allowed, or no `openid`.
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    /// CIBA Core §13: the backchannel request itself is refused (403).
    #[error("access_denied: {0}")]
    AccessDenied(String),
    /// CIBA Core §13: binding_message is not short plain text.
    #[error("invalid_binding_message: {0}")]
    InvalidBindingMessage(String),
    /// CIBA Core §13: the IdP does not know the user the hint names.
    #[error("unknown_user_id: {0}")]
    UnknownUserId(String),
    /// CIBA Core §13: the login_hint_token has expired.
    #[error("expired_login_hint_token")]
    ExpiredLoginHintToken,
    /// CIBA Core §11: the user has not finished yet.
    #[error("authorization_pending")]
    AuthorizationPending,
    /// CIBA Core §11: polled faster than the interval; the interval has grown.
    #[error("slow_down")]
    SlowDown { interval: u64 },
    /// CIBA Core §11: the auth_req_id has expired.
    #[error("expired_token")]
    ExpiredToken,
    /// CIBA Core §11: the user declined, or the sign-in did not match (400 at /token).
    #[error("access_denied: {0}")]
    Denied(String),
    /// RFC 6749 §4.1.2.1 `temporarily_unavailable` "due to a temporary
    /// overloading": a rate limit, 429 with Retry-After.
    #[error("temporarily_unavailable: {description}")]
    RateLimited {
        retry_after: u64,
        description: String,
    },
    /// RFC 6749 §4.1.2.1: the store or the IdP cannot be reached right now (503).
    #[error("temporarily_unavailable: {0}")]
    TemporarilyUnavailable(String),
    /// Anything else: an opaque `server_error`; the cause is logged.
    #[error("server_error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<u64>,
}

impl OAuthError {
    /// The `error` code; the names are `ciba_proto`'s, shared with the
    /// console client and the tests.
    pub fn code(&self) -> &'static str {
        use ciba_proto::error as code;
        match self {
            Self::InvalidRequest(_) => code::INVALID_REQUEST,
            Self::InvalidClient(_) => code::INVALID_CLIENT,
            Self::InvalidToken(_) => code::INVALID_TOKEN,
            Self::InvalidGrant(_) => code::INVALID_GRANT,
            Self::UnsupportedGrantType(_) => code::UNSUPPORTED_GRANT_TYPE,
            Self::InvalidScope(_) => code::INVALID_SCOPE,
            Self::AccessDenied(_) | Self::Denied(_) => code::ACCESS_DENIED,
            Self::InvalidBindingMessage(_) => code::INVALID_BINDING_MESSAGE,
            Self::UnknownUserId(_) => code::UNKNOWN_USER_ID,
            Self::ExpiredLoginHintToken => code::EXPIRED_LOGIN_HINT_TOKEN,
            Self::AuthorizationPending => code::AUTHORIZATION_PENDING,
            Self::SlowDown { .. } => code::SLOW_DOWN,
            Self::ExpiredToken => code::EXPIRED_TOKEN,
            Self::TemporarilyUnavailable(_) | Self::RateLimited { .. } => {
                code::TEMPORARILY_UNAVAILABLE
            }
            Self::Internal(_) => code::SERVER_ERROR,
        }
    }

    pub fn description(&self) -> String {
        match self {
            Self::InvalidRequest(d)
            | Self::InvalidClient(d)
            | Self::InvalidToken(d)
            | Self::InvalidGrant(d)
            | Self::UnsupportedGrantType(d)
            | Self::InvalidScope(d)
            | Self::AccessDenied(d)
            | Self::InvalidBindingMessage(d)
            | Self::UnknownUserId(d)
            | Self::Denied(d)
            | Self::TemporarilyUnavailable(d)
            | Self::RateLimited { description: d, .. } => d.clone(),
            Self::ExpiredLoginHintToken => "the login_hint_token has expired".into(),
            Self::AuthorizationPending => {
                "the user has not yet completed the authentication".into()
            }
            Self::SlowDown { interval } => {
                format!("polling too fast; wait at least {interval} seconds between requests")
            }
            Self::ExpiredToken => "the auth_req_id has expired; start a new request".into(),
            Self::Internal(_) => "internal error".into(),
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidClient(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::AccessDenied(_) => StatusCode::FORBIDDEN,
            Self::TemporarilyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            Self::TemporarilyUnavailable(d) => {
                tracing::warn!(reason = %d, "dependency unavailable")
            }
            _ => {}
        }
        let description = self.description();
        let interval = match self {
            Self::SlowDown { interval } => Some(*interval),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        match self {
            // RFC 6749 §5.2: 401 carries the scheme the client should use.
            Self::InvalidClient(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"ciba-proxy\""),
                ));
            }
            Self::InvalidToken(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                ));
            }
            Self::TemporarilyUnavailable(_) => {
                response.insert_header((
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                ));
            }
            Self::RateLimited { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.code(),
            error_description: &description,
            interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn render(e: OAuthError) -> (StatusCode, serde_json::Value) {
        let response = e.error_response();
        let status = response.status();
        let body = to_bytes(response.into_body()).await.unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[actix_web::test]
    async fn invalid_client_is_401_with_www_authenticate() {
        let response = OAuthError::InvalidClient("bad secret".into()).error_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[actix_web::test]
    async fn internal_error_does_not_leak_its_cause() {
        let (status, body) = render(OAuthError::internal(anyhow::anyhow!(
            "redis password=hunter2"
        )))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "server_error");
        assert!(!body.to_string().contains("hunter2"));
    }

    #[actix_web::test]
    async fn access_denied_is_403_at_bc_authorize_but_400_at_token() {
        assert_eq!(
            render(OAuthError::AccessDenied("x".into())).await.0,
            StatusCode::FORBIDDEN
        );
        let (status, body) = render(OAuthError::Denied("user declined".into())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "access_denied");
        assert_eq!(body["error_description"], "user declined");
    }

    #[actix_web::test]
    async fn unavailable_is_503_with_retry_after() {
        let response = OAuthError::TemporarilyUnavailable("store down".into()).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }
}
