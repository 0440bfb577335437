//! `POST /token` with the CIBA grant (CIBA Core §10.1, §11). Every poll is
//! one store round trip; the IdP is never called from here.
use actix_web::http::header::{CacheControl, CacheDirective, PRAGMA};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{authenticated_form, CIBA_GRANT_TYPE};
use crate::domain::AuthReqId;
use crate::error::OAuthError;
use crate::flow::unknown_auth_req_id;
use crate::state::AppState;
use crate::telemetry::record_auth_req;
use crate::upstream::TokenSet;

/// CIBA Core §11 / RFC 6749 §5.1 successful token response.
#[derive(Debug, Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    id_token: String,
}

/// No span of its own: the client_id and auth_req go to the request span
/// (one span per poll, not two).
pub async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let (form, client) = authenticated_form(&req, payload, &state).await?;
    match form.get("grant_type") {
        None => return Err(OAuthError::InvalidRequest("grant_type is required".into())),
        Some(CIBA_GRANT_TYPE) => {}
        Some(other) => {
            return Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type {other} is not supported; use {CIBA_GRANT_TYPE}"
            )))
        }
    }
    let raw_id = form
        .get("auth_req_id")
        .ok_or_else(|| OAuthError::InvalidRequest("auth_req_id is required".into()))?;
    let id = AuthReqId::parse(raw_id).map_err(|_| unknown_auth_req_id())?;
    record_auth_req(&id);

    let tokens = state.flow.poll(&client, &id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .insert_header((PRAGMA, "no-cache"))
        .json(response(tokens, state.clock.now_secs())))
}

/// The token response, with `expires_in` counting the time the tokens
/// waited in the store since the IdP issued them.
fn response(tokens: TokenSet, now_secs: u64) -> TokenResponse {
    let waited = now_secs.saturating_sub(tokens.received_at);
    TokenResponse {
        access_token: tokens.access_token,
        token_type: tokens.token_type,
        expires_in: tokens.expires_in.map(|e| e.saturating_sub(waited)),
        refresh_token: tokens.refresh_token,
        scope: tokens.scope,
        id_token: tokens.id_token,
    }
}
