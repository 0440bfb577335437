//! The user's browser back from the IdP at `/callback` (authorization-code
//! upstreams). Every step is safe to retry: the `state` is not consumed, the
//! first response (code or error) is bound to the request and only that one
//! is accepted again, one exchange at a time runs per request (a lease in
//! the store), and a decided request shows its page again. So a browser
//! that retries after a 503, or after the instance it reached died, lands
//! where it would have without the fault; a different or forged response
//! gets 410. An IdP that cannot be reached is retried in the background
//! for as long as the code can live.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tasks::{redeem_code_job, Task};
use super::{Flow, Landing, Rejection, Verdict};
use crate::crypto::log_tag;
use crate::domain::AuthReqId;
use crate::error::OAuthError;
use crate::form::FormParams;
use crate::store::{Binding, Denial, Outcome, RequestRecord, StoreError};
use crate::telemetry::{record_auth_req, record_client};
use crate::upstream::Grant;

/// The authorization response the browser brought, kept sealed while the
/// proxy retries an unreachable IdP.
#[derive(Serialize, Deserialize)]
pub(super) struct CodeResponse {
    pub code: String,
    /// RFC 9207 `iss`, when the IdP sent one.
    pub issuer: Option<String>,
}

/// What the IdP sent back, in one word each.
enum Response<'a> {
    Code(CodeResponse),
    Error(&'a str),
    Nothing,
}

impl Response<'_> {
    /// A digest that tells a retry of this response from any other one.
    fn fingerprint(&self) -> String {
        let text = match self {
            Response::Code(c) => format!("code:{}", c.code),
            Response::Error(e) => format!("error:{e}"),
            Response::Nothing => "nothing".into(),
        };
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

impl Flow {
    /// The user's browser is back from the IdP with `code` and `state` (or
    /// `error`): redeem the code and decide the request.
    pub async fn land(&self, query: &FormParams) -> Result<Landing, OAuthError> {
        let Some(upstream_state) = query.get("state") else {
            return Ok(Landing::BadLink);
        };
        let Some(id) = self.store.state_owner(upstream_state).await? else {
            return Ok(Landing::NoLongerValid);
        };
        record_auth_req(&id);
        let response = match (query.get("code"), query.get("error")) {
            (Some(code), _) => Response::Code(CodeResponse {
                code: code.to_owned(),
                issuer: query.get("iss").map(str::to_owned),
            }),
            (None, Some(error)) => Response::Error(error),
            (None, None) => Response::Nothing,
        };
        match self
            .store
            .bind_callback(&id, &response.fingerprint())
            .await?
        {
            Binding::Bound => {}
            Binding::Gone => return Ok(Landing::NoLongerValid),
            Binding::Other => {
                tracing::warn!(
                    "a second, different authorization response for one request; refused"
                );
                return Ok(Landing::NoLongerValid);
            }
        }
        let Some((record, status)) = self.store.get(&id).await? else {
            return Ok(Landing::NoLongerValid);
        };
        record_client(&record.client_id);
        if let Some(landing) = Landing::of(&status) {
            // Decided already: a retry sees what the first attempt saw.
            return Ok(landing);
        }
        if self.clock.now_ms() >= record.expires_at_ms {
            return Ok(Landing::NoLongerValid);
        }
        let (outcome, landing) = match response {
            Response::Code(code) => return self.redeem_code(&record, code).await,
            Response::Error("access_denied") => (
                deny("the user declined the request", Denial::Declined),
                Landing::Declined,
            ),
            Response::Error(error) => {
                tracing::warn!(%error, "the identity provider returned an error");
                let reason = format!("the identity provider ended the sign-in with {error}");
                (deny(&reason, Denial::Failed), Landing::Failed)
            }
            Response::Nothing => (
                deny(
                    "the identity provider returned neither a code nor an error",
                    Denial::Failed,
                ),
                Landing::Failed,
            ),
        };
        self.conclude(&record, outcome, landing).await
    }

    /// Exchanges the code, one exchange at a time per request. An IdP that
    /// cannot be reached leaves the request pending, with a background job
    /// trying again while the code can live.
    async fn redeem_code(
        &self,
        record: &RequestRecord,
        response: CodeResponse,
    ) -> Result<Landing, OAuthError> {
        let lease = exchange_lease(&record.id);
        if !self
            .store
            .use_once(&lease, self.exchange_lease_secs)
            .await?
        {
            return Ok(Landing::InProgress);
        }
        let grant = Grant::Code {
            code: &response.code,
            issuer: response.issuer.as_deref(),
        };
        let verdict = self.redeem(record, grant).await;
        if let Err(Rejection::Unreachable(e)) = &verdict {
            tracing::warn!(error = %e, "the identity provider is unreachable; the code exchange continues in the background");
            self.retry_code_later(record, &response).await?;
            self.store.forget_once(&lease).await?;
            return Ok(Landing::InProgress);
        }
        let (outcome, landing) = self.settle_code(verdict);
        self.conclude(record, outcome, landing).await
    }

    /// The background side of [`Self::redeem_code`]: one more try at the
    /// exchange. `Ok(None)` means try again later.
    pub(super) async fn redeem_code_again(
        &self,
        id: &AuthReqId,
        sealed: &str,
    ) -> Result<Option<()>, StoreError> {
        let Some(record) = self.pending(id).await? else {
            return Ok(Some(()));
        };
        let lease = exchange_lease(id);
        if !self
            .store
            .use_once(&lease, self.exchange_lease_secs)
            .await?
        {
            // The browser's retry is exchanging right now.
            return Ok(None);
        }
        let response: Option<CodeResponse> = self
            .cipher
            .open(sealed, id.as_str())
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok());
        let Some(response) = response else {
            tracing::error!(auth_req = %log_tag(id.as_str()), "a queued code cannot be read; dropped");
            return Ok(Some(()));
        };
        let grant = Grant::Code {
            code: &response.code,
            issuer: response.issuer.as_deref(),
        };
        let verdict = self.redeem(&record, grant).await;
        if matches!(verdict, Err(Rejection::Unreachable(_))) {
            self.store.forget_once(&lease).await?;
            return Ok(None);
        }
        let (outcome, _) = self.settle_code(verdict);
        self.decide(&record, &outcome).await?;
        Ok(Some(()))
    }

    /// The code could not be exchanged before it expired at the IdP.
    pub(super) async fn code_expired(&self, id: &AuthReqId) -> Result<(), StoreError> {
        if let Some(record) = self.pending(id).await? {
            let outcome = self.rejected(Rejection::Unreachable(
                crate::upstream::UpstreamError::Unavailable(
                    "still unreachable when the authorization code expired".into(),
                ),
            ));
            self.decide(&record, &outcome).await?;
        }
        Ok(())
    }

    async fn retry_code_later(
        &self,
        record: &RequestRecord,
        response: &CodeResponse,
    ) -> Result<(), StoreError> {
        let plain = serde_json::to_vec(response).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let task = Task::RedeemCode {
            auth_req_id: record.id.clone(),
            sealed_response: self.cipher.seal(&plain, record.id.as_str()),
        };
        let now = self.clock.now_ms();
        let deadline = record.expires_at_ms.min(now + self.code_lifetime_ms);
        self.jobs
            .enqueue_as(&redeem_code_job(&record.id), task, now, deadline)
            .await?;
        self.jobs.wake();
        Ok(())
    }

    /// The outcome of a code exchange that reached a verdict.
    fn settle_code(&self, verdict: Result<Verdict, Rejection>) -> (Outcome, Landing) {
        match verdict {
            Ok(Verdict::Approved(sealed_tokens)) => {
                tracing::info!("login completed");
                (Outcome::Approved { sealed_tokens }, Landing::Approved)
            }
            Ok(Verdict::Ended(reason)) => (deny(&reason, Denial::Failed), Landing::Failed),
            Ok(Verdict::Pending | Verdict::SlowDown) => {
                self.page_for(self.rejected(Rejection::Failed(anyhow::anyhow!(
                    "the identity provider answered a code exchange as pending"
                ))))
            }
            Err(rejection) => self.page_for(self.rejected(rejection)),
        }
    }

    fn page_for(&self, outcome: Outcome) -> (Outcome, Landing) {
        let landing = match &outcome {
            Outcome::Approved { .. } => Landing::Approved,
            Outcome::Denied { kind, .. } => Landing::denied(*kind),
        };
        (outcome, landing)
    }

    /// Decides the request; if it was decided meanwhile (by a retry or the
    /// background job), shows what that decided.
    async fn conclude(
        &self,
        record: &RequestRecord,
        outcome: Outcome,
        landing: Landing,
    ) -> Result<Landing, OAuthError> {
        if self.decide(record, &outcome).await? {
            return Ok(landing);
        }
        Ok(match self.store.get(&record.id).await? {
            Some((_, status)) => Landing::of(&status).unwrap_or(Landing::NoLongerValid),
            None => Landing::NoLongerValid,
        })
    }
}

fn deny(reason: &str, kind: Denial) -> Outcome {
    Outcome::Denied {
        reason: reason.to_owned(),
        kind,
    }
}

/// The lease that lets one code exchange run per request, across instances.
fn exchange_lease(id: &AuthReqId) -> String {
    format!("code-exchange:{}", log_tag(id.as_str()))
}
