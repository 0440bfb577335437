//! The user's account page: `GET /account` (the page, or the sign-in at
//! the IdP when there is no session), `GET /account/callback` (back from
//! the IdP), `POST /account/signout` and `POST /account/devices/remove`.
//! [`Account`](crate::account::Account) owns the rules; this module parses
//! and renders. Without `[account]` every path answers 404.
use actix_web::cookie::Cookie;
use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use serde::Serialize;

use crate::account::{
    Account, CallbackParams, RemoveRefused, Session, SignInRefused, SESSION_COOKIE, SIGN_IN_COOKIE,
};
use crate::form::FormParams;
use crate::pages::{time_left, Message, Tone};
use crate::state::AppState;

pub const ACCOUNT_PATH: &str = "/account";
pub use crate::account::ACCOUNT_CALLBACK_PATH;
pub const ACCOUNT_SIGNOUT_PATH: &str = "/account/signout";
pub const ACCOUNT_REMOVE_DEVICE_PATH: &str = "/account/devices/remove";

const NOT_ENABLED: Message = Message {
    status: StatusCode::NOT_FOUND,
    tone: Tone::Info,
    heading: "There is no account page here",
    text:
        "This service does not offer an account page. Manage your sign-ins where you started them.",
    retry: false,
};

const SIGNED_OUT: Message = Message {
    status: StatusCode::OK,
    tone: Tone::Ok,
    heading: "You are signed out",
    text: "You signed out of your account page. You can close this page.",
    retry: false,
};

const FORGED: Message = Message {
    status: StatusCode::FORBIDDEN,
    tone: Tone::Warn,
    heading: "This form cannot be used",
    text: "The answer did not come from your account page, or your session ended. Open your account page again.",
    retry: false,
};

const NOT_YOURS: Message = Message {
    status: StatusCode::NOT_FOUND,
    tone: Tone::Warn,
    heading: "No such device",
    text: "This device is not registered to your account. Open your account page again.",
    retry: false,
};

const UNAVAILABLE: Message = Message {
    status: StatusCode::SERVICE_UNAVAILABLE,
    tone: Tone::Info,
    heading: "Please try again",
    text: "The service is briefly unavailable. Please try again in a moment.",
    retry: true,
};

fn sign_in_refusal(refused: SignInRefused) -> Message {
    match refused {
        SignInRefused::NotThisBrowsers => Message {
            status: StatusCode::BAD_REQUEST,
            tone: Tone::Warn,
            heading: "This sign-in cannot be completed",
            text: "It was not started in this browser, or it took too long. Open your account page to sign in again.",
            retry: false,
        },
        SignInRefused::AtTheIdp => Message {
            status: StatusCode::BAD_REQUEST,
            tone: Tone::Info,
            heading: "You are not signed in",
            text: "The sign-in was not completed at your identity provider. Open your account page to try again.",
            retry: false,
        },
        SignInRefused::Failed => Message {
            status: StatusCode::BAD_GATEWAY,
            tone: Tone::Warn,
            heading: "Something went wrong",
            text: "The sign-in could not be completed with your identity provider. Please try again later.",
            retry: false,
        },
        SignInRefused::Unavailable => UNAVAILABLE,
    }
}

/// `GET /account`: the page for the signed-in user, else on to the IdP.
#[tracing::instrument(skip_all)]
pub async fn page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(account) = &state.account else {
        return state.pages.message(NOT_ENABLED);
    };
    match account.session(cookie(&req, SESSION_COOKIE).as_deref()) {
        Some(session) => render(&state, account, &session).await,
        None => match account.start_sign_in().await {
            // RFC 9110 §15.4.4: the browser follows with a GET.
            Ok((url, cookie)) => HttpResponse::SeeOther()
                .insert_header((LOCATION, url.as_str()))
                .insert_header(("Cache-Control", "no-store"))
                .insert_header(("Referrer-Policy", "no-referrer"))
                .cookie(cookie)
                .finish(),
            Err(refused) => state.pages.message(sign_in_refusal(refused)),
        },
    }
}

/// `GET /account/callback`: the IdP's answer to the sign-in.
#[tracing::instrument(skip_all)]
pub async fn callback(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(account) = &state.account else {
        return state.pages.message(NOT_ENABLED);
    };
    let params = match FormParams::parse(req.query_string().as_bytes()) {
        Ok(query) => CallbackParams {
            code: query.get("code").map(str::to_owned),
            state: query.get("state").map(str::to_owned),
            iss: query.get("iss").map(str::to_owned),
            error: query.get("error").map(str::to_owned),
        },
        Err(_) => CallbackParams::default(),
    };
    let finished = account
        .finish_sign_in(cookie(&req, SIGN_IN_COOKIE).as_deref(), &params)
        .await;
    match finished {
        Ok(session) => HttpResponse::SeeOther()
            .insert_header((LOCATION, state.url(ACCOUNT_PATH)))
            .insert_header(("Cache-Control", "no-store"))
            .insert_header(("Referrer-Policy", "no-referrer"))
            .cookie(session)
            .cookie(account.sign_in_done())
            .finish(),
        Err(SignInRefused::Unavailable) => state.pages.message(UNAVAILABLE),
        Err(refused) => {
            // A failed or foreign sign-in is over: drop its cookie.
            let mut response = state.pages.message(sign_in_refusal(refused));
            let _ = response.add_cookie(&account.sign_in_done());
            response
        }
    }
}

/// `POST /account/signout`: ends the session (the page's form only).
#[tracing::instrument(skip_all)]
pub async fn sign_out(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(account) = &state.account else {
        return state.pages.message(NOT_ENABLED);
    };
    let Some((_, _)) = session_form(&req, payload, account).await else {
        return state.pages.message(FORGED);
    };
    let mut response = state.pages.message(SIGNED_OUT);
    let _ = response.add_cookie(&account.signed_out());
    response
}

/// `POST /account/devices/remove`: removes one of the user's devices.
#[tracing::instrument(skip_all)]
pub async fn remove_device(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(account) = &state.account else {
        return state.pages.message(NOT_ENABLED);
    };
    let Some((session, form)) = session_form(&req, payload, account).await else {
        return state.pages.message(FORGED);
    };
    let Some(did) = form.get("did").filter(|d| !d.is_empty()) else {
        return state.pages.message(NOT_YOURS);
    };
    match account.remove_device(&session.user, did).await {
        Ok(()) => HttpResponse::SeeOther()
            .insert_header((LOCATION, state.url(ACCOUNT_PATH)))
            .insert_header(("Cache-Control", "no-store"))
            .finish(),
        Err(RemoveRefused::NotYours) => state.pages.message(NOT_YOURS),
        Err(RemoveRefused::Unavailable) => state.pages.message(UNAVAILABLE),
    }
}

/// The session and the form of a POST from the account page: `None` unless
/// the form carries the session's own token.
async fn session_form(
    req: &HttpRequest,
    payload: web::Payload,
    account: &Account,
) -> Option<(Session, FormParams)> {
    let session = account.session(cookie(req, SESSION_COOKIE).as_deref());
    let form = FormParams::from_request(req, payload).await.ok()?;
    let session = session?;
    if !session.csrf_matches(form.get("csrf")) {
        tracing::warn!("an account form without the session's token; refused");
        return None;
    }
    Some((session, form))
}

fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.cookie(name)
        .map(|c: Cookie<'static>| c.value().to_owned())
}

/// One pending request, as its approval page shows it.
#[derive(Serialize)]
struct PendingView {
    client_name: String,
    binding_message: Option<String>,
    scopes: Vec<String>,
    expires_in: String,
    choices: Option<Vec<String>>,
    csrf: String,
    approve_action: String,
    deny_action: String,
}

#[derive(Serialize)]
struct DeviceView {
    did: String,
    name: String,
    model: String,
    registered: String,
    last_used: String,
}

#[derive(Serialize)]
struct HistoryView {
    client_name: String,
    binding_message: Option<String>,
    scopes: Vec<String>,
    outcome: String,
    at: String,
}

async fn render(state: &AppState, account: &Account, session: &Session) -> HttpResponse {
    let overview = match account.overview(&session.user).await {
        Ok(overview) => overview,
        Err(e) => {
            tracing::warn!(error = %e, "account page: store unavailable");
            return state.pages.message(UNAVAILABLE);
        }
    };
    // "Approve" leads to the IdP: its origin joins the page's form-action.
    let mut form_targets: Vec<String> = Vec::new();
    let pending: Vec<PendingView> = overview
        .pending
        .into_iter()
        .map(|(handle, approval)| {
            if !form_targets.contains(&approval.link_origin) {
                form_targets.push(approval.link_origin.clone());
            }
            PendingView {
                client_name: approval.client_name,
                binding_message: approval.binding_message,
                scopes: state.pages.describe_scopes(&approval.scope),
                expires_in: time_left(approval.expires_in_secs),
                choices: approval.choices,
                csrf: approval.form_token,
                approve_action: format!("/approve/{handle}/approve"),
                deny_action: format!("/approve/{handle}/deny"),
            }
        })
        .collect();
    let devices: Vec<DeviceView> = overview
        .devices
        .into_iter()
        .map(|d| DeviceView {
            did: d.did,
            name: d.name,
            model: d.model,
            registered: utc_time(d.registered_at_ms),
            last_used: utc_time(d.last_used_at_ms),
        })
        .collect();
    let history: Vec<HistoryView> = overview
        .history
        .into_iter()
        .map(|h| HistoryView {
            client_name: h.client_name,
            binding_message: h.binding_message,
            scopes: state.pages.describe_scopes(&h.scope),
            outcome: h.outcome,
            at: utc_time(h.at_ms),
        })
        .collect();
    let page = context! {
        heading => "Your account",
        user => session.user,
        pending => pending,
        devices => devices,
        history => history,
        qr_svg => overview.offer.svg,
        qr_json => overview.offer.json,
        csrf => session.csrf,
        remove_action => ACCOUNT_REMOVE_DEVICE_PATH,
        signout_action => ACCOUNT_SIGNOUT_PATH,
    };
    state
        .pages
        .respond(StatusCode::OK, "account.html", page, &form_targets)
}

/// `2026-11-30 10:51 UTC`: a time the page shows.
fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // H. Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(utc_time(1_796_035_860_000), "2026-11-30 10:51 UTC");
    }
}
