//! `GET /healthz` (the process answers) and `GET /readyz` (the store answers
//! and the IdP's metadata is loaded with what the upstream kind needs, so a
//! request could be served). When the IdP is not ready, `upstream_error`
//! says why; a configuration mistake names the key to fix.
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.ping().await.is_ok();
    // Tries to load the metadata if it is not yet, so readiness heals itself.
    let upstream_error = state.upstream.ready().await.err().map(|e| e.to_string());
    let upstream = upstream_error.is_none();
    let mut body = json!({
        "status": if store && upstream { "ready" } else { "not_ready" },
        "store": store,
        "upstream": upstream,
    });
    if let Some(error) = upstream_error {
        body["upstream_error"] = error.into();
    }
    if store && upstream {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
