//! `GET /metrics`: the Prometheus text format, on the operator port only
//! (`[metrics] bind`). The store's queue and pending count are sampled at
//! each scrape, so they are as fresh as the scrape and cluster-wide.
use actix_web::{web, HttpResponse};

use crate::state::AppState;

pub const METRICS_PATH: &str = "/metrics";

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let Some(handle) = crate::metrics::handle() else {
        return HttpResponse::NotFound().finish();
    };
    let now_ms = state.clock.now_ms();
    let sampled = async {
        let pending = state.store.pending(now_ms).await?;
        let queue = state.store.queue_stats(now_ms).await?;
        Ok::<_, crate::store::StoreError>((pending, queue))
    };
    match sampled.await {
        Ok((pending, queue)) => {
            crate::metrics::queue_sampled(queue.queued_jobs, queue.oldest_due_ms, now_ms);
            crate::metrics::pending_sampled(pending);
        }
        // The failure is counted in ciba_store_calls_total; the gauges keep
        // their last value.
        Err(e) => tracing::warn!(error = %e, "could not sample the store for /metrics"),
    }
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}
