//! Logging: readable text in development, JSON in production. The request
//! span carries method, route pattern (never the query string, which holds
//! authorization codes); handlers add the client_id and a hash
//! of the auth_req_id, to it or to a span of their own.
use std::io::IsTerminal;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::Error;
use tracing::{Instrument, Span};
use tracing_subscriber::EnvFilter;

use crate::configuration::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The span around every request: method, the route's pattern (never the
/// path: `/approve/{handle}` carries a bearer secret in it, and never the
/// query string, which holds authorization codes), and the client and
/// auth_req a handler records. It runs on every poll, so it is one span
/// and nothing more: no request id (a `getrandom` call each), no wrapper
/// around the response body, and no status (no line is written after the
/// answer, so it would be formatted for nothing).
pub async fn in_request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let path = req.match_pattern().unwrap_or_else(|| req.path().to_owned());
    let span = tracing::info_span!(
        "request",
        method = req.method().as_str(),
        path = path.as_str(),
        client_id = tracing::field::Empty,
        auth_req = tracing::field::Empty,
    );
    let call = span.in_scope(|| next.call(req));
    call.instrument(span).await
}

/// Tags the current request span with the client.
pub fn record_client(client_id: &str) {
    Span::current().record("client_id", client_id);
}

/// Tags the current request span with a short hash of the auth_req_id.
pub fn record_auth_req(id: &crate::domain::AuthReqId) {
    Span::current().record("auth_req", crate::crypto::log_tag(id.as_str()));
}
