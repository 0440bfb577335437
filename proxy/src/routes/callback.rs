//! `GET /callback`: where the IdP sends the user's browser back with `code`
//! and `state` (or `error`). [`Flow::land`](crate::flow::Flow::land)
//! redeems the code and decides the request; this page tells the user in
//! plain words what happened and never shows a token.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::OAuthError;
use crate::flow::Landing;
use crate::form::FormParams;
use crate::pages::{Message, Tone};
use crate::state::AppState;

/// What the user's device is told: where the sign-in landed, in words.
fn message(landing: Landing) -> Message {
    let (status, tone, heading, text, retry) = match landing {
        Landing::Approved => (StatusCode::OK, Tone::Ok, "You are signed in",
            "You approved the request. You can close this page and continue where you started.", false),
        Landing::Declined => (StatusCode::OK, Tone::Ok, "Request declined",
            "You declined the request. Nothing was shared. You can close this page.", false),
        Landing::WrongUser => (StatusCode::FORBIDDEN, Tone::Warn, "Signed in as someone else",
            "This request was meant for a different account, so it has been cancelled and nothing was shared.", false),
        Landing::NoLongerValid => (StatusCode::GONE, Tone::Info, "This link is no longer valid",
            "The sign-in request has expired or was already completed. Start again from where you began.", false),
        Landing::Failed => (StatusCode::BAD_GATEWAY, Tone::Warn, "Something went wrong",
            "The sign-in could not be completed with your identity provider, so the request was cancelled. Please start again.", false),
        Landing::BadLink => (StatusCode::BAD_REQUEST, Tone::Warn, "This link is incomplete",
            "The address is missing information. Open the link from your notification again.", false),
        Landing::InProgress => (StatusCode::ACCEPTED, Tone::Info, "Completing your sign-in",
            "Your identity provider did not answer yet, so we keep trying for a minute. You can close this page: the service that asked will learn the result. Or check again in a moment.", true),
    };
    Message {
        status,
        tone,
        heading,
        text,
        retry,
    }
}

/// The store or the IdP did not answer: nothing was consumed, so the same
/// link works again.
const UNAVAILABLE: Message = Message {
    status: StatusCode::SERVICE_UNAVAILABLE,
    tone: Tone::Info,
    heading: "Please try again",
    text: "The service is briefly unavailable. Please try again in a moment.",
    retry: true,
};

#[tracing::instrument(skip_all, fields(client_id, auth_req))]
pub async fn callback(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Ok(query) = FormParams::parse(req.query_string().as_bytes()) else {
        return state.pages.message(message(Landing::BadLink));
    };
    match state.flow.land(&query).await {
        Ok(landing) => state.pages.message(message(landing)),
        Err(OAuthError::TemporarilyUnavailable(_)) => state.pages.message(UNAVAILABLE),
        Err(e) => {
            tracing::error!(error = %e, "callback failed");
            state.pages.message(message(Landing::Failed))
        }
    }
}
