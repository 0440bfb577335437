//! The audit trail: one structured event per step of a request's life
//! (opened, notified, answered by the user, decided, tokens issued, expired), on its own log
//! target `audit` so it can be shipped and kept apart from debug logs (in
//! JSON with `log.format = "json"`). An event names the request by a short
//! hash of its auth_req_id and the user by a hash of the normalised hint;
//! it never carries a hint, a token, a code or a secret.
use crate::crypto::log_tag;
use crate::domain::AuthReqId;
use crate::limits::user_hash;
use crate::store::{Denial, Outcome, RequestRecord};

/// The log target of every audit event.
pub const TARGET: &str = "audit";

/// A step in a request's life.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    Opened,
    /// The user's device was notified through `channel`.
    Notified {
        channel: &'a str,
    },
    Decided(&'a Outcome),
    TokensIssued,
    Expired,
    /// The operator cancelled the request (admin API); it is `denied`.
    Cancelled,
    /// The user answered `answer` (approve, deny, code_mismatch) through
    /// `via` (`page`: the approval link; `device`: a registered device;
    /// `account`: the account page).
    Answered {
        via: &'a str,
        answer: &'a str,
    },
}

impl Step<'_> {
    fn name(&self) -> &'static str {
        match self {
            Step::Opened => "opened",
            Step::Notified { .. } => "notified",
            Step::Decided(_) => "decided",
            Step::TokensIssued => "tokens_issued",
            Step::Expired => "expired",
            Step::Cancelled => "cancelled",
            Step::Answered { .. } => "answered",
        }
    }

    fn outcome(&self) -> &str {
        match self {
            Step::Opened => "pending",
            Step::Notified { channel } => channel,
            Step::Decided(Outcome::Approved { .. }) | Step::TokensIssued => "approved",
            Step::Decided(Outcome::Denied { kind, .. }) => match kind {
                Denial::Declined => "declined",
                Denial::WrongUser => "wrong_user",
                Denial::Failed => "failed",
            },
            Step::Expired => "expired",
            Step::Cancelled => "denied",
            Step::Answered { answer, .. } => answer,
        }
    }
}

/// Writes the event for `step` of request `record`, `now_ms` being now.
pub fn record(step: Step<'_>, record: &RequestRecord, now_ms: u64) {
    event(
        step,
        &record.id,
        &record.client_id,
        &record.login_hint,
        now_ms.saturating_sub(record.created_at_ms),
    );
}

/// Writes an event for a request known by its parts.
pub fn event(step: Step<'_>, id: &AuthReqId, client_id: &str, login_hint: &str, duration_ms: u64) {
    let reason = match step {
        Step::Decided(Outcome::Denied { reason, .. }) => reason.as_str(),
        Step::Cancelled => crate::routes::admin::CANCEL_REASON,
        Step::Answered { via, .. } => via,
        _ => "",
    };
    tracing::info!(
        target: TARGET,
        event = step.name(),
        auth_req = %log_tag(id.as_str()),
        client_id,
        user = %user_hash(login_hint),
        outcome = step.outcome(),
        reason,
        duration_ms,
        "audit"
    );
}

/// Writes the event for one admin API call: the route, the method, the
/// status answered and, for a call about one request, its short hash
/// (`auth_req`). A refused call (401) is written too.
pub fn admin_call(route: &str, method: &str, status: u16, auth_req: Option<&str>) {
    tracing::info!(
        target: TARGET,
        event = "admin_call",
        route,
        method,
        status,
        auth_req = auth_req.unwrap_or(""),
        "audit"
    );
}
