//! `POST /upstream/ping`: a native-CIBA IdP in ping delivery tells the
//! proxy that a request has an outcome (CIBA Core §10.2). The bearer token
//! must be the one the proxy gave the IdP for that request, and the JSON
//! body must name the IdP's auth_req_id for it; anything else gets 401 or
//! 400 and changes nothing. A valid ping only makes the proxy's own token
//! call due now: the ping carries no result.
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;

use crate::error::OAuthError;
use crate::flow::PingRefused;
use crate::state::AppState;

/// A ping body is one short JSON object.
const MAX_PING_BYTES: usize = 4096;

#[derive(Deserialize)]
struct PingBody {
    auth_req_id: String,
}

#[tracing::instrument(skip_all, fields(client_id, auth_req))]
pub async fn upstream_ping(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let bearer = bearer_token(&req)?;
    let body = read_body(payload).await?;
    let ping: PingBody = serde_json::from_slice(&body).map_err(|_| {
        OAuthError::InvalidRequest("the body must be a JSON object with an auth_req_id".into())
    })?;
    match state.flow.pinged(bearer, &ping.auth_req_id).await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(PingRefused::Token) => {
            tracing::warn!("refused an upstream ping with a token that is not ours");
            Err(OAuthError::InvalidToken(
                "the bearer token is not valid for any pending request".into(),
            ))
        }
        Err(PingRefused::Request) => {
            tracing::warn!("refused an upstream ping naming another request");
            Err(OAuthError::InvalidRequest(
                "auth_req_id does not match the request this token was issued for".into(),
            ))
        }
    }
}

/// RFC 6750 §2.1: exactly one `Authorization: Bearer <token>` header.
fn bearer_token(req: &HttpRequest) -> Result<&str, OAuthError> {
    let missing = || OAuthError::InvalidToken("a Bearer token is required".into());
    let mut headers = req.headers().get_all(AUTHORIZATION);
    let header = headers.next().ok_or_else(missing)?;
    if headers.next().is_some() {
        return Err(OAuthError::InvalidRequest(
            "send one Authorization header".into(),
        ));
    }
    let value = header.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, OAuthError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|_| OAuthError::InvalidRequest("the request body could not be read".into()))?;
        if body.len() + chunk.len() > MAX_PING_BYTES {
            return Err(OAuthError::InvalidRequest(format!(
                "the body is larger than {MAX_PING_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
