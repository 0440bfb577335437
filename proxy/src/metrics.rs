//! Prometheus metrics: every series the proxy records, in one place, so
//! `docs/operations.md` can list them from this file alone.
//!
//! Recording goes through the `metrics` facade; the recorder is
//! `metrics-exporter-prometheus`'s, installed once per process (the facade
//! has one global recorder, so instances in one process, as in the test
//! suite, share it). It has no listener of its own: `/metrics` is served by
//! the operator server on `[metrics] bind` only (`startup.rs`).
//!
//! Labels stay bounded: `client_id` only ever takes a configured client's
//! id (or `unknown`), never a value a caller made up; nothing is labelled
//! by user, auth_req_id or hint.
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::clients::ClientRegistry;
use crate::configuration::DeliveryMode;
use crate::store::{Denial, Outcome};

pub const REQUESTS_OPENED: &str = "ciba_requests_opened_total";
pub const DECISIONS: &str = "ciba_decisions_total";
pub const DECISION_SECONDS: &str = "ciba_decision_seconds";
pub const POLLS: &str = "ciba_polls_total";
pub const PENDING_REQUESTS: &str = "ciba_pending_requests";
pub const DELIVERIES: &str = "ciba_deliveries_total";
pub const JOB_QUEUE_DEPTH: &str = "ciba_job_queue_depth";
pub const JOB_QUEUE_OLDEST_SECONDS: &str = "ciba_job_queue_oldest_due_seconds";
pub const UPSTREAM_CALLS: &str = "ciba_upstream_calls_total";
pub const UPSTREAM_SECONDS: &str = "ciba_upstream_call_seconds";
pub const STORE_CALLS: &str = "ciba_store_calls_total";
pub const STORE_SECONDS: &str = "ciba_store_call_seconds";
pub const LIMITS_HIT: &str = "ciba_limits_hit_total";
pub const CLIENT_AUTH_FAILURES: &str = "ciba_client_auth_failures_total";
pub const ADMIN_CALLS: &str = "ciba_admin_calls_total";

/// The label for a client that is not configured (a failed authentication).
pub const UNKNOWN_CLIENT: &str = "unknown";

/// How often histograms are drained between scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the recorder and keeps it drained: the Prometheus recorder
/// keeps every histogram sample until upkeep runs, which only a scrape
/// does, so with no scrapes memory would grow with every call. Once per
/// process; needs a Tokio runtime.
pub fn install() {
    static UPKEEP: OnceLock<()> = OnceLock::new();
    let Some(handle) = handle() else { return };
    UPKEEP.get_or_init(|| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    });
}

/// The process's recorder, installed on first use. `None` when another
/// recorder was installed first (an embedding program's): then the proxy
/// records into that one and serves no `/metrics` of its own.
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let decision = [
                1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DECISION_SECONDS.into()), &decision)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("call_seconds".into()), &latency)
                })
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed; /metrics is not served");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS_OPENED,
        "Backchannel requests accepted, by client and delivery mode"
    );
    describe_counter!(DECISIONS, "Requests that got their outcome, by outcome");
    describe_histogram!(
        DECISION_SECONDS,
        Unit::Seconds,
        "Time from opening a request to its outcome"
    );
    describe_counter!(POLLS, "Token endpoint polls for a CIBA grant, by answer");
    describe_gauge!(
        PENDING_REQUESTS,
        "Requests waiting for the user, in the whole store"
    );
    describe_counter!(
        DELIVERIES,
        "User notifications and client pings, by channel and result"
    );
    describe_gauge!(JOB_QUEUE_DEPTH, "Jobs in the store's queue (due or not)");
    describe_gauge!(
        JOB_QUEUE_OLDEST_SECONDS,
        Unit::Seconds,
        "How long the most overdue job has been due (0 when none is)"
    );
    describe_counter!(
        UPSTREAM_CALLS,
        "HTTP calls to the identity provider, by endpoint and result"
    );
    describe_histogram!(
        UPSTREAM_SECONDS,
        Unit::Seconds,
        "Latency of calls to the identity provider, by endpoint"
    );
    describe_counter!(STORE_CALLS, "Store calls, by operation and result");
    describe_histogram!(
        STORE_SECONDS,
        Unit::Seconds,
        "Latency of store calls, by operation"
    );
    describe_counter!(LIMITS_HIT, "Requests refused by a limit, by limit");
    describe_counter!(
        CLIENT_AUTH_FAILURES,
        "Failed client authentications, by claimed client (configured ones only)"
    );
    describe_counter!(ADMIN_CALLS, "Admin API calls, by route and status");
}

/// A client's id as a label: the id when it is configured, else `unknown`.
pub fn client_label(clients: &ClientRegistry, claimed: Option<&str>) -> String {
    claimed
        .filter(|id| clients.get(id).is_some())
        .map_or_else(|| UNKNOWN_CLIENT.to_owned(), str::to_owned)
}

pub fn request_opened(client_id: &str, mode: DeliveryMode) {
    let mode = match mode {
        DeliveryMode::Poll => "poll",
        DeliveryMode::Ping => "ping",
    };
    counter!(REQUESTS_OPENED, "client_id" => client_id.to_owned(), "delivery_mode" => mode)
        .increment(1);
}

/// The outcome label of a decision.
pub fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Approved { .. } => "approved",
        Outcome::Denied {
            kind: Denial::Declined,
            ..
        } => "denied",
        Outcome::Denied {
            kind: Denial::WrongUser,
            ..
        } => "wrong_user",
        // The admin API's cancel (routes/admin.rs) ends a request this way.
        Outcome::Denied { reason, .. } if reason == crate::routes::admin::CANCEL_REASON => {
            "cancelled"
        }
        // Anything else that failed: the IdP's refusal or error, a failed
        // exchange, a refused notification.
        Outcome::Denied {
            kind: Denial::Failed,
            ..
        } => "upstream_error",
    }
}

pub fn decided(outcome: &'static str, after: Duration) {
    counter!(DECISIONS, "outcome" => outcome).increment(1);
    histogram!(DECISION_SECONDS).record(after.as_secs_f64());
}

/// A request that ran out of time undecided (counted once, when its expiry
/// job runs or something sees it expired first).
pub fn expired() {
    counter!(DECISIONS, "outcome" => "expired").increment(1);
}

pub fn polled(answer: &'static str) {
    counter!(POLLS, "answer" => answer).increment(1);
}

pub fn delivered(channel: &'static str, result: &'static str) {
    counter!(DELIVERIES, "channel" => channel, "result" => result).increment(1);
}

pub fn upstream_call(endpoint: &'static str, result: &'static str, took: Duration) {
    counter!(UPSTREAM_CALLS, "endpoint" => endpoint, "result" => result).increment(1);
    histogram!(UPSTREAM_SECONDS, "endpoint" => endpoint).record(took.as_secs_f64());
}

/// One HTTP call to the IdP's `endpoint`, by status class (`2xx`, `4xx`,
/// `5xx`; a CIBA `authorization_pending` is a `4xx`) or `error` (no answer).
pub fn upstream_answered(
    endpoint: &'static str,
    result: &reqwest::Result<reqwest::Response>,
    took: Duration,
) {
    let outcome = match result {
        Ok(r) if r.status().is_success() => "2xx",
        Ok(r) if r.status().is_client_error() => "4xx",
        Ok(r) if r.status().is_server_error() => "5xx",
        Ok(_) => "other",
        Err(_) => "error",
    };
    upstream_call(endpoint, outcome, took);
}

pub fn store_call(operation: &'static str, ok: bool, took: Duration) {
    let result = if ok { "ok" } else { "error" };
    counter!(STORE_CALLS, "operation" => operation, "result" => result).increment(1);
    histogram!(STORE_SECONDS, "operation" => operation).record(took.as_secs_f64());
}

pub fn limit_hit(limit: &'static str) {
    counter!(LIMITS_HIT, "limit" => limit).increment(1);
}

pub fn client_auth_failed(client_label: String) {
    counter!(CLIENT_AUTH_FAILURES, "client_id" => client_label).increment(1);
}

pub fn admin_call(route: &'static str, status: u16) {
    counter!(ADMIN_CALLS, "route" => route, "status" => status.to_string()).increment(1);
}

/// The store's view, sampled when `/metrics` is scraped.
pub fn queue_sampled(depth: u64, oldest_due_ms: Option<u64>, now_ms: u64) {
    gauge!(JOB_QUEUE_DEPTH).set(depth as f64);
    let overdue = oldest_due_ms.map_or(0, |due| now_ms.saturating_sub(due));
    gauge!(JOB_QUEUE_OLDEST_SECONDS).set(overdue as f64 / 1000.0);
}

pub fn pending_sampled(pending: u64) {
    gauge!(PENDING_REQUESTS).set(pending as f64);
}
