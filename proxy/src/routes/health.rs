//! `GET /healthz` (the process answers) and `GET /readyz` (the store answers
//! and the IdP's metadata is loaded, so a request could be served).
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.ping().await.is_ok();
    // Tries to load the metadata if it is not yet, so readiness heals itself.
    let upstream = state.upstream.provider().metadata().await.is_ok();
    let body = json!({
        "status": if store && upstream { "ready" } else { "not_ready" },
        "store": store,
        "upstream": upstream,
    });
    if store && upstream {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
