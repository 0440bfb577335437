//! `GET /callback`: where the IdP sends the user's browser back with `code`
//! and `state` (or `error`). [`Flow::land`](crate::flow::Flow::land)
//! redeems the code and decides the request; this page tells the user in
//! plain words what happened and never shows a token.
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::OAuthError;
use crate::flow::Landing;
use crate::form::FormParams;
use crate::state::AppState;

/// What the user's device is told: where the sign-in landed, or that the
/// service is briefly unavailable (the store or the IdP did not answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Landed(Landing),
    Unavailable,
}

impl Page {
    fn render(self) -> HttpResponse {
        let (status, title, text) = match self {
            Page::Landed(Landing::Approved) => (StatusCode::OK, "You are signed in",
                "You approved the request. You can close this page and continue where you started."),
            Page::Landed(Landing::Declined) => (StatusCode::OK, "Request declined",
                "You declined the request. Nothing was shared. You can close this page."),
            Page::Landed(Landing::WrongUser) => (StatusCode::FORBIDDEN, "Signed in as someone else",
                "This request was meant for a different account, so it has been cancelled and nothing was shared."),
            Page::Landed(Landing::NoLongerValid) => (StatusCode::GONE, "This link is no longer valid",
                "The sign-in request has expired or was already completed. Start again from where you began."),
            Page::Landed(Landing::Failed) => (StatusCode::BAD_GATEWAY, "Something went wrong",
                "The sign-in could not be completed with your identity provider, so the request was cancelled. Please start again."),
            Page::Landed(Landing::BadLink) => (StatusCode::BAD_REQUEST, "This link is incomplete",
                "The address is missing information. Open the link from your notification again."),
            Page::Landed(Landing::InProgress) => (StatusCode::ACCEPTED, "Completing your sign-in",
                "Your identity provider did not answer yet, so we keep trying for a minute. You can close this page: the service that asked will learn the result. Or check again in a moment."),
            Page::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Please try again",
                "The service is briefly unavailable. Please try again in a moment."),
        };
        // Both pages ask for another look: they offer it as a link (the same
        // address; a retry is safe) and reload themselves.
        let retry = matches!(self, Page::Unavailable | Page::Landed(Landing::InProgress));
        let (refresh, link) = if retry {
            (
                "<meta http-equiv=\"refresh\" content=\"5\">",
                "<p><a href=\"\">Check again</a></p>",
            )
        } else {
            ("", "")
        };
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
             <title>{title}</title></head><body style=\"font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em\">\
             <h1>{title}</h1><p>{text}</p>{link}</body></html>"
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
    let Ok(query) = FormParams::parse(req.query_string().as_bytes()) else {
        return Page::Landed(Landing::BadLink).render();
    };
    let page = match state.flow.land(&query).await {
        Ok(landing) => Page::Landed(landing),
        Err(OAuthError::TemporarilyUnavailable(_)) => Page::Unavailable,
        Err(e) => {
            tracing::error!(error = %e, "callback failed");
            Page::Landed(Landing::Failed)
        }
    };
    page.render()
}
