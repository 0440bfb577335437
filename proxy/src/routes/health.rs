//! `GET /healthz` (the process answers) and `GET /readyz` (the store answers,
//! the IdP's metadata is loaded with what the upstream kind needs, and
//! recent calls found the IdP reachable, so a request could be served).
//! When the IdP is not ready, `upstream_error` says why; a configuration
//! mistake names the key to fix.
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.ping().await.is_ok();
    // Reachability is judged from recent calls (upstream/health.rs), never
    // a call per probe; then, if the metadata is not loaded yet, this tries
    // to load it, so readiness heals itself.
    let upstream_error = match state.upstream.reachable() {
        Err(e) => Some(e.to_string()),
        Ok(()) => state.upstream.ready().await.err().map(|e| e.to_string()),
    };
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
