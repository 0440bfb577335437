//! The admin API, on the operator port only (`[metrics] bind`, with
//! `[admin]`): list and read requests, cancel one, list the clients. Every
//! call needs `Authorization: Bearer <token>` whose SHA-256 is
//! `[admin] token_sha256`, and is written to the audit trail. No answer
//! carries a token, a secret, a login hint or a sealed value.
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit;
use crate::configuration::DeliveryMode;
use crate::domain::AuthReqId;
use crate::flow::tasks::NotificationState;
use crate::limits::user_hash;
use crate::state::AppState;
use crate::store::{Denial, Outcome, RequestRecord, Status, StoreError, UserLink};

pub const ADMIN_REQUESTS_PATH: &str = "/admin/requests";
pub const ADMIN_REQUEST_PATH: &str = "/admin/requests/{auth_req_id}";
pub const ADMIN_CANCEL_PATH: &str = "/admin/requests/{auth_req_id}/cancel";
pub const ADMIN_CLIENTS_PATH: &str = "/admin/clients";

/// The most requests one list answers with (newest first).
const LIST_MAX: usize = 1000;

/// What a cancelled request's client is told.
pub const CANCEL_REASON: &str = "cancelled by the operator";

/// The SHA-256 of the admin token, from `[admin] token_sha256`.
#[derive(Clone)]
pub struct AdminToken(pub [u8; 32]);

impl AdminToken {
    /// `None` unless `hex` is 64 hex digits (checked at load already).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes: [u8; 32] = hex::decode(hex).ok()?.try_into().ok()?;
        Some(Self(bytes))
    }

    /// Whether the request carries the token: its SHA-256 is compared in
    /// constant time, so the answer's timing says nothing about the hash.
    fn admits(&self, req: &HttpRequest) -> bool {
        let Some(token) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let digest = Sha256::digest(token.trim().as_bytes());
        bool::from(digest.as_slice().ct_eq(&self.0))
    }
}

/// Runs `answer` if the caller has the token (401 otherwise), and writes
/// the call to the audit trail and the metrics.
async fn guarded<F>(
    route: &'static str,
    req: &HttpRequest,
    token: &AdminToken,
    target: Option<&str>,
    answer: F,
) -> HttpResponse
where
    F: std::future::Future<Output = HttpResponse>,
{
    let response = if token.admits(req) {
        answer.await
    } else {
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .json(json!({"error": "unauthorized"}))
    };
    let status = response.status().as_u16();
    audit::admin_call(route, req.method().as_str(), status, target);
    crate::metrics::admin_call(route, status);
    response
}

fn error(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message}))
}

fn store_failed(e: StoreError) -> HttpResponse {
    tracing::warn!(error = %e, "admin API: store call failed");
    error(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "the store is unavailable",
    )
}

/// The state an operator sees: the store's, or `expired` once past expiry.
fn state_name(status: &Status, record: &RequestRecord, now_ms: u64) -> &'static str {
    match status {
        Status::Issued => "issued",
        _ if now_ms >= record.expires_at_ms => "expired",
        Status::Pending => "pending",
        Status::Approved => "approved",
        Status::Denied { .. } => "denied",
    }
}

/// The request and its notification state, read together.
/// A request as the store keeps it, with its notification state.
type Found = (RequestRecord, Status, Option<String>);

async fn read(state: &AppState, id: &AuthReqId) -> Result<Option<Found>, StoreError> {
    let (found, notified) = futures::join!(state.store.get(id), state.store.notification(id, None));
    Ok(found?.map(|(record, status)| (record, status, notified.ok().flatten())))
}

/// What the user was told, as `notification`: the recorded delivery state
/// (flow/tasks.rs), `queued` while the proxy's deliveries have no result
/// yet, and null when the proxy notifies nobody (the IdP reaches the user).
fn notification(state: &AppState, record: &RequestRecord, notified: Option<&str>) -> Value {
    match notified {
        Some(notified) => json!(notified),
        None if record.user_link != UserLink::None && state.flow.channels.any() => {
            json!(NotificationState::Queued.as_str())
        }
        None => Value::Null,
    }
}

/// 200 with one request, as `describe` shows it now.
fn one_request(state: &AppState, (record, status, notified): &Found) -> HttpResponse {
    HttpResponse::Ok().json(describe(
        state,
        record,
        status,
        notified.as_deref(),
        state.clock.now_ms(),
    ))
}

fn describe(
    state: &AppState,
    record: &RequestRecord,
    status: &Status,
    notified: Option<&str>,
    now_ms: u64,
) -> Value {
    let delivery_mode = match state
        .clients
        .get(&record.client_id)
        .map(|c| c.delivery_mode)
    {
        Some(DeliveryMode::Ping) => "ping",
        _ if record.sealed_ping_token.is_some() => "ping",
        _ => "poll",
    };
    let mut answer = json!({
        "auth_req_id": record.id.as_str(),
        "client_id": record.client_id,
        "state": state_name(status, record, now_ms),
        "user_hash": user_hash(&record.login_hint),
        "created_at": record.created_at_ms / 1000,
        "expires_at": record.expires_at_ms / 1000,
        "delivery_mode": delivery_mode,
        "scope": record.scope,
        "notification": notification(state, record, notified),
    });
    if let Status::Denied { reason, kind } = status {
        answer["reason"] = json!(reason);
        answer["denial"] = json!(kind.as_str());
    }
    answer
}

#[derive(Deserialize)]
pub struct ListQuery {
    client_id: Option<String>,
    state: Option<String>,
}

/// `GET /admin/requests?client_id=&state=`: pending and recent requests,
/// newest first.
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: web::Data<AdminToken>,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    guarded("list_requests", &req, &token, None, async {
        let now_ms = state.clock.now_ms();
        let ids = match state.store.recent(now_ms, LIST_MAX).await {
            Ok(ids) => ids,
            Err(e) => return store_failed(e),
        };
        let mut requests = Vec::new();
        for id in ids {
            let (record, status, notified) = match read(&state, &id).await {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(e) => return store_failed(e),
            };
            if query
                .client_id
                .as_deref()
                .is_some_and(|c| c != record.client_id)
            {
                continue;
            }
            let described = describe(&state, &record, &status, notified.as_deref(), now_ms);
            if query
                .state
                .as_deref()
                .is_some_and(|s| described["state"] != s)
            {
                continue;
            }
            requests.push(described);
        }
        HttpResponse::Ok().json(json!({ "requests": requests }))
    })
    .await
}

/// `GET /admin/requests/{auth_req_id}`: one request (404 when unknown).
pub async fn one(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: web::Data<AdminToken>,
    path: web::Path<String>,
) -> HttpResponse {
    let tag = crate::crypto::log_tag(&path);
    guarded("get_request", &req, &token, Some(&tag), async {
        match find(&state, &path).await {
            Ok(Some(found)) => one_request(&state, &found),
            Ok(None) => error(actix_web::http::StatusCode::NOT_FOUND, "no such request"),
            Err(e) => store_failed(e),
        }
    })
    .await
}

async fn find(state: &AppState, id: &str) -> Result<Option<Found>, StoreError> {
    match AuthReqId::parse(id) {
        Ok(id) => read(state, &id).await,
        Err(_) => Ok(None),
    }
}

/// `POST /admin/requests/{auth_req_id}/cancel`: a pending request ends
/// `access_denied` ("cancelled by the operator") through `Flow::decide`,
/// so a ping client is pinged and the user's slot is freed. 409 when the
/// request has already ended.
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: web::Data<AdminToken>,
    path: web::Path<String>,
) -> HttpResponse {
    let tag = crate::crypto::log_tag(&path);
    guarded("cancel_request", &req, &token, Some(&tag), async {
        let (record, status, _) = match find(&state, &path).await {
            Ok(Some(found)) => found,
            Ok(None) => return error(actix_web::http::StatusCode::NOT_FOUND, "no such request"),
            Err(e) => return store_failed(e),
        };
        let ended = || {
            error(
                actix_web::http::StatusCode::CONFLICT,
                "the request has already ended",
            )
        };
        if status != Status::Pending || state.clock.now_ms() >= record.expires_at_ms {
            return ended();
        }
        let outcome = Outcome::Denied {
            reason: CANCEL_REASON.into(),
            kind: Denial::Failed,
        };
        match state.flow.decide(&record, &outcome).await {
            Ok(true) => {}
            Ok(false) => return ended(),
            Err(e) => return store_failed(e),
        }
        audit::record(audit::Step::Cancelled, &record, state.clock.now_ms());
        match read(&state, &record.id).await {
            Ok(Some(found)) => one_request(&state, &found),
            Ok(None) => ended(),
            Err(e) => store_failed(e),
        }
    })
    .await
}

/// `GET /admin/clients`: the configured clients, without secrets or keys.
pub async fn clients(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: web::Data<AdminToken>,
) -> HttpResponse {
    guarded("list_clients", &req, &token, None, async {
        let clients: Vec<Value> = state
            .clients
            .iter()
            .map(|c| {
                json!({
                    "client_id": c.id,
                    "name": c.name,
                    "token_endpoint_auth_method": c.auth_method.as_str(),
                    "delivery_mode": match c.delivery_mode {
                        DeliveryMode::Poll => "poll",
                        DeliveryMode::Ping => "ping",
                    },
                    "notification_endpoint": c.notification_endpoint.as_ref().map(|u| u.as_str()),
                    "scope": c.scope.to_string(),
                })
            })
            .collect();
        HttpResponse::Ok().json(json!({ "clients": clients }))
    })
    .await
}
