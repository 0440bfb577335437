//! `GET /callback`: where the IdP sends the user's browser back with `code`
//! and `state` (or `error`). The proxy exchanges the code, checks the ID
//! token and that the person who signed in is the one hinted, and records
//! the outcome. The page tells the user in plain words what happened and
//! never shows a token.
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::record_auth_req;
use crate::error::OAuthError;
use crate::form::FormParams;
use crate::state::AppState;
use crate::store::{Outcome, RequestRecord, Status};
use crate::upstream::UpstreamError;

/// What the user's device is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Approved,
    Declined,
    WrongUser,
    NoLongerValid,
    Failed,
    BadLink,
    Unavailable,
}

impl Page {
    fn render(self) -> HttpResponse {
        let (status, title, text) = match self {
            Page::Approved => (StatusCode::OK, "You are signed in",
                "You approved the request. You can close this page and continue where you started."),
            Page::Declined => (StatusCode::OK, "Request declined",
                "You declined the request. Nothing was shared. You can close this page."),
            Page::WrongUser => (StatusCode::FORBIDDEN, "Signed in as someone else",
                "This request was meant for a different account, so it has been cancelled and nothing was shared."),
            Page::NoLongerValid => (StatusCode::GONE, "This link is no longer valid",
                "The sign-in request has expired or was already completed. Start again from where you began."),
            Page::Failed => (StatusCode::BAD_GATEWAY, "Something went wrong",
                "The sign-in could not be completed with your identity provider, so the request was cancelled. Please start again."),
            Page::BadLink => (StatusCode::BAD_REQUEST, "This link is incomplete",
                "The address is missing information. Open the link from your notification again."),
            Page::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Please try again",
                "The service is briefly unavailable. Please try again in a moment."),
        };
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title></head><body style=\"font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em\">\
             <h1>{title}</h1><p>{text}</p></body></html>"
        );
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(CacheControl(vec![CacheDirective::NoStore]))
            // The URL carries the authorization code: keep it out of Referer.
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .insert_header((
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ))
            .insert_header((header::X_FRAME_OPTIONS, "DENY"))
            .body(html)
    }
}

#[tracing::instrument(skip_all, fields(client_id, auth_req))]
pub async fn callback(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let page = match handle(&req, &state).await {
        Ok(page) => page,
        Err(OAuthError::TemporarilyUnavailable(_)) => Page::Unavailable,
        Err(e) => {
            tracing::error!(error = %e, "callback failed");
            Page::Failed
        }
    };
    page.render()
}

async fn handle(req: &HttpRequest, state: &AppState) -> Result<Page, OAuthError> {
    let Ok(query) = FormParams::parse(req.query_string().as_bytes()) else {
        return Ok(Page::BadLink);
    };
    let Some(upstream_state) = query.get("state") else {
        return Ok(Page::BadLink);
    };
    // The state is single-use: a replayed callback finds nothing.
    let Some(id) = state.store.take_state(upstream_state).await? else {
        return Ok(Page::NoLongerValid);
    };
    record_auth_req(&id);
    let now_ms = state.clock.now_ms();
    let Some((record, Status::Pending)) = state.store.get(&id).await? else {
        return Ok(Page::NoLongerValid);
    };
    if now_ms >= record.expires_at_ms {
        return Ok(Page::NoLongerValid);
    }
    super::record_client(&record.client_id);

    if let Some(error) = query.get("error") {
        let (page, reason) = if error == "access_denied" {
            (Page::Declined, "the user declined the request".to_owned())
        } else {
            tracing::warn!(%error, "the identity provider returned an error");
            (
                Page::Failed,
                format!("the identity provider ended the sign-in with {error}"),
            )
        };
        return finish(state, &record, Outcome::Denied { reason }, page).await;
    }
    let Some(code) = query.get("code") else {
        // The state is spent, so this request cannot be completed any more.
        let reason = "the identity provider returned neither a code nor an error".into();
        return finish(state, &record, Outcome::Denied { reason }, Page::Failed).await;
    };
    match complete(state, &record, code, query.get("iss")).await {
        Ok(sealed_tokens) => {
            let page = finish(
                state,
                &record,
                Outcome::Approved { sealed_tokens },
                Page::Approved,
            )
            .await?;
            if page == Page::Approved {
                tracing::info!("login completed");
            }
            Ok(page)
        }
        Err(Rejection::WrongUser) => {
            tracing::warn!("a different user signed in than the one hinted; tokens discarded");
            let reason = "a different user authenticated than the one in the login hint".into();
            finish(state, &record, Outcome::Denied { reason }, Page::WrongUser).await
        }
        Err(Rejection::Failed(e)) => {
            tracing::error!(error = %e, "the sign-in could not be completed");
            let reason = "the sign-in could not be completed at the identity provider".into();
            finish(state, &record, Outcome::Denied { reason }, Page::Failed).await
        }
        Err(Rejection::Unreachable(e)) => {
            tracing::error!(error = %e, "the identity provider was unreachable for the code exchange");
            let reason = "the identity provider could not be reached to complete the sign-in; start a new request".into();
            finish(state, &record, Outcome::Denied { reason }, Page::Failed).await
        }
    }
}

enum Rejection {
    WrongUser,
    /// The IdP stayed unreachable through every retry of the code exchange.
    Unreachable(UpstreamError),
    Failed(anyhow::Error),
}

/// Exchanges the code and checks who signed in; returns the sealed tokens.
async fn complete(
    state: &AppState,
    record: &RequestRecord,
    code: &str,
    response_issuer: Option<&str>,
) -> Result<String, Rejection> {
    let failed = |e: anyhow::Error| Rejection::Failed(e);
    // RFC 9207: a response naming another issuer is a mix-up; never redeem its code.
    if let Some(iss) = response_issuer {
        let expected = state
            .upstream
            .metadata()
            .await
            .map_err(|e| failed(e.into()))?
            .issuer;
        if iss != expected {
            return Err(failed(anyhow::anyhow!(
                "the authorization response came from issuer {iss:?}, not {expected:?}"
            )));
        }
    }
    let client = state.clients.get(&record.client_id).ok_or_else(|| {
        failed(anyhow::anyhow!(
            "client {} is no longer registered",
            record.client_id
        ))
    })?;
    let verifier = state
        .cipher
        .open(&record.sealed_verifier, record.id.as_str())
        .map_err(|e| failed(e.into()))?;
    let verifier = String::from_utf8(verifier).map_err(|e| failed(e.into()))?;
    let now = state.clock.now_secs();
    let tokens = state
        .upstream
        .exchange_code(&client, code, &verifier, now)
        .await
        .map_err(|e| match e {
            UpstreamError::Unavailable(_) => Rejection::Unreachable(e),
            other => failed(other.into()),
        })?;
    let claims = state
        .upstream
        .validate_id_token(&tokens.id_token, &client, &record.nonce, now)
        .await
        .map_err(|e| failed(e.into()))?;
    let subject = state.upstream.subject(&claims).ok_or_else(|| {
        failed(anyhow::anyhow!(
            "the ID token has no {:?} claim to compare with the login hint; request a scope that carries it or change upstream.subject_claim",
            state.upstream.subject_claim
        ))
    })?;
    if subject != record.login_hint {
        return Err(Rejection::WrongUser);
    }
    let json = serde_json::to_vec(&tokens).map_err(|e| failed(e.into()))?;
    Ok(state.cipher.seal(&json, record.id.as_str()))
}

/// Records the outcome (queuing a ping for ping clients); `page` is shown
/// unless the request had ended meanwhile.
async fn finish(
    state: &AppState,
    record: &RequestRecord,
    outcome: Outcome,
    page: Page,
) -> Result<Page, OAuthError> {
    let finished = state.jobs.finish_request(record, &outcome).await?;
    Ok(if finished { page } else { Page::NoLongerValid })
}
