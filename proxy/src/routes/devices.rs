//! The authentication-device API (`docs/devices.md`): `POST /devices`
//! (registration), `GET /devices/requests`, `POST /devices/decision` and
//! `POST /devices/remove`. [`crate::devices::Devices`] owns the rules; this
//! module reads requests and renders answers and errors as JSON
//! `{error, error_description}`.
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use ciba_proto::device::{error as device_error, AUTH_SCHEME, JOSE_CONTENT_TYPE};
use futures::StreamExt as _;
use serde_json::json;

use crate::devices::{Decision, DeviceError};
use crate::form::is_deadline;
use crate::state::AppState;

/// The largest registration body: an RSA-4096 key and a Web Push
/// subscription fit with room to spare.
const MAX_REGISTRATION_BYTES: usize = 16 * 1024;

impl ResponseError for DeviceError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnknownRequest => StatusCode::NOT_FOUND,
            Self::Ended => StatusCode::GONE,
            Self::Store(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        use ciba_proto::error as code;
        let error = match self {
            Self::BadRequest(_) => code::INVALID_REQUEST,
            Self::Unauthorized(_) => code::INVALID_TOKEN,
            Self::Forbidden(_) => code::ACCESS_DENIED,
            Self::UnknownRequest => device_error::UNKNOWN_REQUEST,
            Self::Ended => device_error::REQUEST_ENDED,
            // The store's own rendering: 503, Retry-After, a log line.
            Self::Store(e) => return e.error_response(),
        };
        let description = self.to_string();
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Self::Unauthorized(_) = self {
            // RFC 9110 §11.6.1: the scheme to use, and why this attempt failed.
            let challenge = format!(
                "{AUTH_SCHEME} error=\"{error}\", error_description=\"{}\"",
                description.replace(['"', '\\'], "'")
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
        }
        response.json(json!({"error": error, "error_description": description}))
    }
}

fn authorization(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// `POST /devices`: the compact JWS is the body (`application/jose`).
#[tracing::instrument(skip_all)]
pub async fn register(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DeviceError> {
    let body = read_jose(&req, payload).await?;
    let did = state.devices.register(&body).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "did": did })))
}

/// The body of a registration: `application/jose`, at most
/// [`MAX_REGISTRATION_BYTES`], UTF-8.
async fn read_jose(req: &HttpRequest, mut payload: web::Payload) -> Result<String, DeviceError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(JOSE_CONTENT_TYPE) {
        return Err(DeviceError::BadRequest(format!(
            "the body must be {JOSE_CONTENT_TYPE} (a compact JWS)"
        )));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            DeviceError::BadRequest(if is_deadline(&e) {
                "the request body did not arrive in time".into()
            } else {
                "the request body could not be read".into()
            })
        })?;
        if body.len() + chunk.len() > MAX_REGISTRATION_BYTES {
            return Err(DeviceError::BadRequest(format!(
                "the request body exceeds {MAX_REGISTRATION_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| DeviceError::BadRequest("the body is not a compact JWS".into()))?;
    Ok(text.trim().to_owned())
}

/// `GET /devices/requests`: the device user's pending requests.
#[tracing::instrument(skip_all)]
pub async fn requests(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DeviceError> {
    let (device, _) = state.devices.authenticate(authorization(&req)).await?;
    let pending = state.devices.pending(&device).await?;
    let requests: Vec<_> = pending
        .into_iter()
        .map(|p| {
            json!({
                "handle": p.handle,
                "client_name": p.client_name,
                // Null with number matching: the user picks among
                // `match_choices` what the other device shows.
                "binding_message": p.binding_message,
                "match_choices": p.match_choices,
                "scope": p.scope,
                "expires_at": p.expires_at_ms / 1000,
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "requests": requests })))
}

/// `POST /devices/decision`: the claims `handle`, `res` and `match` of the
/// call's JWS decide.
#[tracing::instrument(skip_all, fields(client_id, auth_req))]
pub async fn decision(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DeviceError> {
    let (device, call) = state.devices.authenticate(authorization(&req)).await?;
    let answer = match state.devices.decide(&device, &call).await? {
        Decision::SignIn(link) => json!({ "authorization_url": link.as_str() }),
        Decision::Denied => json!({ "status": "denied" }),
        Decision::CodeMismatch => json!({
            "status": "cancelled",
            "error_description": "the code is not the one shown where the request started; the request was cancelled",
        }),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .json(answer))
}

/// `POST /devices/remove`: the device unregisters itself.
#[tracing::instrument(skip_all)]
pub async fn remove(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DeviceError> {
    let (device, _) = state.devices.authenticate(authorization(&req)).await?;
    state.devices.remove(&device).await?;
    Ok(HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
