//! How a request's end becomes a line of its user's history on the account
//! page: recorded by [`crate::flow::Flow`] where outcomes land (and where an
//! expiry is first seen), kept for `[account] history_days`.
use crate::clients::ClientRegistry;
use crate::store::accounts::{Accounts, HistoryEntry};
use crate::store::{Denial, Outcome, RequestRecord};

pub const APPROVED: &str = "approved";
pub const DENIED: &str = "denied";
pub const EXPIRED: &str = "expired";
pub const FAILED: &str = "failed";

/// The history's word for an outcome: the user said no (`denied`), or
/// anything else went wrong (`failed`: another user signed in, an IdP error,
/// the wrong code picked).
pub fn outcome(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Approved { .. } => APPROVED,
        Outcome::Denied {
            kind: Denial::Declined,
            ..
        } => DENIED,
        Outcome::Denied { .. } => FAILED,
    }
}

/// Adds the request's end to its user's history. Best effort: the outcome
/// has landed already, so a store failure is only logged.
pub async fn record(
    accounts: &dyn Accounts,
    clients: &ClientRegistry,
    record: &RequestRecord,
    outcome: &str,
    at_ms: u64,
    keep_ms: u64,
    now_ms: u64,
) {
    let entry = HistoryEntry {
        at_ms,
        client_id: record.client_id.clone(),
        client_name: clients
            .get(&record.client_id)
            .map_or_else(|| record.client_id.clone(), |c| c.name.clone()),
        binding_message: record.binding_message.clone(),
        scope: record.scope.clone(),
        outcome: outcome.to_owned(),
    };
    if let Err(e) = accounts
        .record_history(&record.login_hint, &entry, keep_ms, now_ms)
        .await
    {
        tracing::warn!(error = %e, outcome, "the user's history was not updated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declined_request_is_denied_and_any_other_refusal_failed() {
        let denied = |kind| Outcome::Denied {
            reason: "r".into(),
            kind,
        };
        assert_eq!(outcome(&denied(Denial::Declined)), DENIED);
        assert_eq!(outcome(&denied(Denial::WrongUser)), FAILED);
        assert_eq!(outcome(&denied(Denial::Failed)), FAILED);
        let approved = Outcome::Approved {
            sealed_tokens: "t".into(),
        };
        assert_eq!(outcome(&approved), APPROVED);
    }
}
