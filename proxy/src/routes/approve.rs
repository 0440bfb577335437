//! `GET /approve/{handle}`: the page the user's device opens. It shows who
//! asks, for what, the binding message and the time left, and offers
//! "Approve and sign in" (a POST that answers 303 to the IdP's sign-in) and
//! "Deny" (a POST that ends the request at once). [`Flow::approval`]
//! (crate::flow::Flow::approval) and its siblings own the rules; this
//! module parses and renders.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;

use crate::flow::{ApprovalRefused, Approved};
use crate::form::FormParams;
use crate::pages::{time_left, Message, Tone};
use crate::state::AppState;

const DECLINED: Message = Message {
    status: StatusCode::OK,
    tone: Tone::Ok,
    heading: "Request declined",
    text: "You declined the request. Nothing was shared. You can close this page.",
    retry: false,
};

const MISMATCH: Message = Message {
    status: StatusCode::OK,
    tone: Tone::Warn,
    heading: "Request cancelled",
    text: "The code you picked is not the one shown where the request started, so the request was cancelled and nothing was shared. If you did not start it, you need not do anything.",
    retry: false,
};

#[tracing::instrument(skip_all, fields(client_id, auth_req))]
pub async fn page(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let handle = path.into_inner();
    let approval = match state.flow.approval(&handle).await {
        Ok(approval) => approval,
        Err(refused) => return refusal(&state, refused),
    };
    let page = context! {
        heading => "Is this you?",
        client_name => approval.client_name,
        binding_message => approval.binding_message,
        scopes => state.pages.describe_scopes(&approval.scope),
        expires_in => time_left(approval.expires_in_secs),
        choices => approval.choices,
        csrf => approval.form_token,
        approve_action => format!("/approve/{handle}/approve"),
        deny_action => format!("/approve/{handle}/deny"),
    };
    state.pages.respond(
        StatusCode::OK,
        "approve.html",
        page,
        &[approval.link_origin],
    )
}

#[tracing::instrument(skip_all, fields(client_id, auth_req))]
pub async fn approve(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(form) = read_form(&req, payload).await else {
        return refusal(&state, ApprovalRefused::Forged);
    };
    match state
        .flow
        .approve(&path, form.get("csrf"), form.get("code"))
        .await
    {
        Ok(Approved::SignIn(link)) => state.pages.see_other(&link),
        Ok(Approved::CodeMismatch) => state.pages.message(MISMATCH),
        Err(refused) => refusal(&state, refused),
    }
}

#[tracing::instrument(skip_all, fields(client_id, auth_req))]
pub async fn deny(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(form) = read_form(&req, payload).await else {
        return refusal(&state, ApprovalRefused::Forged);
    };
    match state.flow.deny(&path, form.get("csrf")).await {
        Ok(()) => state.pages.message(DECLINED),
        Err(refused) => refusal(&state, refused),
    }
}

pub async fn stylesheet(state: web::Data<AppState>) -> HttpResponse {
    state.pages.stylesheet()
}

/// The form a page posted; `None` when it is not one.
async fn read_form(req: &HttpRequest, payload: web::Payload) -> Option<FormParams> {
    FormParams::from_request(req, payload).await.ok()
}

fn refusal(state: &AppState, refused: ApprovalRefused) -> HttpResponse {
    let message = match refused {
        ApprovalRefused::Unknown => Message {
            status: StatusCode::NOT_FOUND,
            tone: Tone::Warn,
            heading: "This link is not valid",
            text: "The address is not a sign-in request. Open the link from your notification again.",
            retry: false,
        },
        ApprovalRefused::Ended => Message {
            status: StatusCode::GONE,
            tone: Tone::Info,
            heading: "This request has ended",
            text: "It expired or was already answered. If you still need to sign in, start again from where you began.",
            retry: false,
        },
        // Only a signed-in user's own answers can name another user.
        ApprovalRefused::Forged | ApprovalRefused::OtherUser => Message {
            status: StatusCode::FORBIDDEN,
            tone: Tone::Warn,
            heading: "This form cannot be used",
            text: "The answer did not come from the page we showed you. Open the link from your notification again.",
            retry: false,
        },
        ApprovalRefused::Unavailable => Message {
            status: StatusCode::SERVICE_UNAVAILABLE,
            tone: Tone::Info,
            heading: "Please try again",
            text: "The service is briefly unavailable. Please try again in a moment.",
            retry: true,
        },
    };
    state.pages.message(message)
}
