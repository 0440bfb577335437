//! `POST /token` with the CIBA grant (CIBA Core §10.1, §11). Every poll is
//! one store round trip; the IdP is never called from here.
use actix_web::http::header::{CacheControl, CacheDirective, PRAGMA};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{authenticated_form, record_auth_req, CIBA_GRANT_TYPE};
use crate::domain::AuthReqId;
use crate::error::OAuthError;
use crate::state::AppState;
use crate::store::PollOutcome;
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

#[tracing::instrument(skip_all, fields(client_id, auth_req))]
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
    let unknown = || {
        OAuthError::InvalidGrant("auth_req_id is unknown or was not issued to this client".into())
    };
    let id = AuthReqId::parse(raw_id).map_err(|_| unknown())?;
    record_auth_req(&id);

    let now_ms = state.clock.now_ms();
    match state.store.poll(&id, &client.id, now_ms).await? {
        PollOutcome::Unknown => Err(unknown()),
        PollOutcome::Pending => Err(OAuthError::AuthorizationPending),
        PollOutcome::SlowDown { interval_secs } => Err(OAuthError::SlowDown {
            interval: interval_secs,
        }),
        PollOutcome::Expired => Err(OAuthError::ExpiredToken),
        PollOutcome::Denied(reason) => Err(OAuthError::Denied(reason)),
        PollOutcome::Redeemed => Err(OAuthError::InvalidGrant(
            "the tokens for this auth_req_id were already issued".into(),
        )),
        PollOutcome::Tokens(sealed) => {
            let plain = state
                .cipher
                .open(&sealed, id.as_str())
                .map_err(OAuthError::internal)?;
            let tokens: TokenSet = serde_json::from_slice(&plain).map_err(OAuthError::internal)?;
            tracing::info!("tokens issued");
            Ok(HttpResponse::Ok()
                .insert_header(CacheControl(vec![CacheDirective::NoStore]))
                .insert_header((PRAGMA, "no-cache"))
                .json(response(tokens, now_ms / 1000)))
        }
    }
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
