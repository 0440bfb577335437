//! Polling the token endpoint in poll mode (CIBA Core §10.1, §11) until
//! tokens or a final error.
use std::time::Duration;

use ciba_proto::{error, form};
use serde_json::Value;

use crate::cli::Config;
use crate::discovery::Metadata;
use crate::http::{post, Reply};
use crate::request::{Acknowledgement, DEFAULT_INTERVAL_SECS};
use crate::{codes, note, Clock, Failure};

/// CIBA Core §11 (RFC 8628 §3.5): every slow_down adds 5 s to the interval.
const SLOW_DOWN_SECS: u64 = 5;
/// Without --max-wait, polling stops this long after the request expired
/// even if the provider never said expired_token.
const EXPIRY_GRACE_SECS: u64 = 30;

/// What one poll of the token endpoint says (CIBA Core §11).
#[derive(Debug, PartialEq)]
enum PollResult {
    Tokens(Value),
    /// authorization_pending: the user has not answered yet.
    Pending,
    /// slow_down, with the new interval when the provider gives it.
    SlowDown(Option<u64>),
    /// Worth another try at the next interval (temporarily_unavailable, network).
    Retry(Failure),
    /// access_denied, expired_token, invalid_grant, ...: the end.
    Final(Failure),
}

fn classify(reply: Reply) -> PollResult {
    if reply.status == 200 {
        return match reply.body.get("access_token") {
            Some(Value::String(_)) => PollResult::Tokens(reply.body),
            _ => PollResult::Final(Failure::new(
                codes::INVALID_RESPONSE,
                "the token response has no access_token",
            )),
        };
    }
    let failure = Failure::from_reply(reply.status, &reply.body);
    match failure.code.as_str() {
        error::AUTHORIZATION_PENDING => PollResult::Pending,
        error::SLOW_DOWN => {
            PollResult::SlowDown(reply.body.get("interval").and_then(Value::as_u64))
        }
        error::TEMPORARILY_UNAVAILABLE => PollResult::Retry(failure),
        _ => PollResult::Final(failure),
    }
}

/// The interval before the next poll.
fn next_interval(current: u64, result: &PollResult) -> u64 {
    match result {
        // CIBA Core §11: slow_down lasts for every later poll.
        PollResult::SlowDown(Some(given)) => (*given).max(1),
        PollResult::SlowDown(None) => current + SLOW_DOWN_SECS,
        _ => current,
    }
}

pub(crate) async fn poll(
    config: &Config,
    metadata: &Metadata,
    ack: &Acknowledgement,
    clock: &dyn Clock,
) -> Result<Value, Failure> {
    let endpoint = &metadata.token_endpoint;
    let mut interval = ack.interval.unwrap_or(DEFAULT_INTERVAL_SECS).max(1);
    let give_up = tokio::time::Instant::now()
        + Duration::from_secs(ack.expires_in.saturating_add(EXPIRY_GRACE_SECS));
    for attempt in 1u64.. {
        if tokio::time::Instant::now() + Duration::from_secs(interval) > give_up {
            return Err(Failure::new(
                codes::TIMEOUT,
                format!(
                    "the request expired ({} s) without a final answer from the provider",
                    ack.expires_in
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let form = form::token_request(&ack.auth_req_id);
        let result = match post(config, endpoint, form, clock).await {
            Ok(reply) => classify(reply),
            Err(failure) if failure.code == codes::NETWORK_ERROR => PollResult::Retry(failure),
            Err(failure) => PollResult::Final(failure),
        };
        interval = next_interval(interval, &result);
        match result {
            PollResult::Tokens(tokens) => {
                note(format_args!(
                    "poll {attempt}: tokens issued (token_type {}, expires_in {})",
                    tokens
                        .get("token_type")
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    tokens
                        .get("expires_in")
                        .and_then(Value::as_u64)
                        .map(|e| format!("{e} s"))
                        .unwrap_or_else(|| "?".into()),
                ));
                return Ok(tokens);
            }
            PollResult::Pending => note(format_args!(
                "poll {attempt}: authorization_pending; next poll in {interval} s"
            )),
            PollResult::SlowDown(_) => note(format_args!(
                "poll {attempt}: slow_down; interval now {interval} s"
            )),
            PollResult::Retry(failure) => note(format_args!(
                "poll {attempt}: {failure}; retrying in {interval} s"
            )),
            PollResult::Final(failure) => {
                note(format_args!("poll {attempt}: {}", failure.code));
                return Err(failure);
            }
        }
    }
    Err(Failure::new(codes::TIMEOUT, "gave up polling"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(status: u16, body: Value) -> Reply {
        Reply { status, body }
    }

    #[test]
    fn poll_results_follow_ciba_core_section_11() {
        let tokens = json!({"access_token": "a", "id_token": "i", "token_type": "Bearer"});
        assert_eq!(
            classify(reply(200, tokens.clone())),
            PollResult::Tokens(tokens)
        );
        assert_eq!(
            classify(reply(400, json!({"error": "authorization_pending"}))),
            PollResult::Pending
        );
        assert_eq!(
            classify(reply(400, json!({"error": "slow_down", "interval": 9}))),
            PollResult::SlowDown(Some(9))
        );
        assert_eq!(
            classify(reply(400, json!({"error": "slow_down"}))),
            PollResult::SlowDown(None)
        );
        assert!(matches!(
            classify(reply(503, json!({"error": "temporarily_unavailable"}))),
            PollResult::Retry(_)
        ));
        for code in [
            "access_denied",
            "expired_token",
            "invalid_grant",
            "invalid_client",
        ] {
            let result = classify(reply(
                400,
                json!({"error": code, "error_description": "why"}),
            ));
            assert_eq!(result, PollResult::Final(Failure::new(code, "why")));
        }
        assert!(matches!(
            classify(reply(200, json!({"token_type": "Bearer"}))),
            PollResult::Final(f) if f.code == "invalid_response"
        ));
        assert!(matches!(
            classify(reply(502, json!("gateway"))),
            PollResult::Final(f) if f.code == "invalid_response"
        ));
    }

    #[test]
    fn slow_down_adds_five_seconds_or_takes_the_given_interval() {
        assert_eq!(next_interval(5, &PollResult::SlowDown(None)), 10);
        assert_eq!(next_interval(10, &PollResult::SlowDown(None)), 15);
        assert_eq!(next_interval(5, &PollResult::SlowDown(Some(7))), 7);
        assert_eq!(next_interval(5, &PollResult::SlowDown(Some(0))), 1);
        assert_eq!(next_interval(5, &PollResult::Pending), 5);
    }
}
