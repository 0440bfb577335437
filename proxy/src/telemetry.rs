//! Logging: readable text in development, JSON in production. The request
//! span carries method, path (never the query string, which holds
//! authorization codes) and status; handler spans add the client_id and a
//! hash of the auth_req_id.
use std::io::IsTerminal;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::Error;
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;
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

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // The route's pattern, not the path: `/approve/{handle}` carries a
        // bearer secret in its path.
        let path = request
            .match_pattern()
            .unwrap_or_else(|| request.path().to_owned());
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %path,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        match outcome {
            Ok(response) => {
                span.record("status", response.status().as_u16());
            }
            Err(error) => {
                span.record("status", error.as_response_error().status_code().as_u16());
            }
        }
    }
}

/// Tags the current request span with the client.
pub fn record_client(client_id: &str) {
    Span::current().record("client_id", client_id);
}

/// Tags the current request span with a short hash of the auth_req_id.
pub fn record_auth_req(id: &crate::domain::AuthReqId) {
    Span::current().record("auth_req", crate::crypto::log_tag(id.as_str()));
}
