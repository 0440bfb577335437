//! The user's browser back from the IdP at `/callback` (authorization-code
//! upstreams). Every step is safe to retry: the `state` is not consumed, the
//! first response (code or error) is bound to the request and only that one
//! is accepted again, one exchange at a time runs per request (a lease in
//! the store), and a decided request shows its page again. So a browser
//! that retries after a 503, or after the instance it reached died, lands
//! where it would have without the fault; a different or forged response
//! gets 410. An IdP that cannot be reached is retried in the background
//! for as long as the code can live. A code goes out to the IdP at most
//! once, and once it is exchanged its outcome is kept until the store
//! takes it: a store failure after the exchange must not lose the login.
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

/// What a callback `state` is sealed for, so no other sealed reference
/// (an approval link, a ping token) passes for one.
const STATE_AAD: &str = "callback-state";

impl Flow {
    /// The `state` that brings the user's browser back for request `id`:
    /// the id, sealed. It names the request without a key in the store,
    /// only this proxy can make one (a forged state finds nothing), and it
    /// is the same each time, so the sign-in link made again for the
    /// approval page is the very link the user was sent.
    pub(super) fn callback_state(&self, id: &AuthReqId) -> String {
        id.seal_stable_reference(&self.cipher, STATE_AAD)
    }

    /// The user's browser is back from the IdP with `code` and `state` (or
    /// `error`): redeem the code and decide the request.
    pub async fn land(&self, query: &FormParams) -> Result<Landing, OAuthError> {
        let Some(upstream_state) = query.get("state") else {
            return Ok(Landing::BadLink);
        };
        let id = match AuthReqId::open_reference(&self.cipher, upstream_state, STATE_AAD) {
            Some(id) => id,
            None => match self.store.legacy_state_owner(upstream_state).await? {
                Some(id) => id,
                None => return Ok(Landing::NoLongerValid),
            },
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
        let Some(verdict) = self.exchange_once(record, &response).await? else {
            return self.conclude(record, outcome_lost(), Landing::Failed).await;
        };
        if let Err(Rejection::Unreachable(e)) = &verdict {
            tracing::warn!(error = %e, "the identity provider is unreachable; the code exchange continues in the background");
            self.retry_code_later(record, &response).await?;
            self.store.forget_once(&lease).await?;
            return Ok(Landing::InProgress);
        }
        let (outcome, landing) = self.settle_code(verdict);
        Ok(match self.record_exchanged(record, outcome).await? {
            Some(decided) => self.shown(record, decided, landing).await?,
            None => Landing::InProgress,
        })
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
        let Some(verdict) = self.exchange_once(&record, &response).await? else {
            self.decide(&record, &outcome_lost()).await?;
            return Ok(Some(()));
        };
        if matches!(verdict, Err(Rejection::Unreachable(_))) {
            self.store.forget_once(&lease).await?;
            return Ok(None);
        }
        let (outcome, _) = self.settle_code(verdict);
        self.record_exchanged(&record, outcome).await?;
        Ok(Some(()))
    }

    /// Sends the code to the IdP, unless an earlier attempt did (`None`): a
    /// marker that outlives the exchange lease says it went out, so a retry
    /// after an attempt that died (its instance killed, its outcome never
    /// recorded) cannot spend the code twice. Only an IdP that could not be
    /// reached at all clears it: the code is unspent then.
    async fn exchange_once(
        &self,
        record: &RequestRecord,
        response: &CodeResponse,
    ) -> Result<Option<Result<Verdict, Rejection>>, StoreError> {
        let sent = code_sent(&record.id);
        let left_secs = record
            .expires_at_ms
            .saturating_sub(self.clock.now_ms())
            .div_ceil(1000);
        if !self.store.use_once(&sent, left_secs.max(1)).await? {
            tracing::error!("the code was sent to the identity provider by an earlier attempt whose outcome was never recorded; it is not sent again");
            return Ok(None);
        }
        let grant = Grant::Code {
            code: &response.code,
            issuer: response.issuer.as_deref(),
        };
        let verdict = self.redeem(record, grant).await;
        if matches!(verdict, Err(Rejection::Unreachable(_))) {
            self.store.forget_once(&sent).await?;
        }
        Ok(Some(verdict))
    }

    /// Decides the outcome of a code exchange; `Some(decided)` as
    /// [`Self::decide`]. The code is spent now, so a store that cannot take
    /// the outcome does not lose it: it is kept in this process and recorded
    /// as soon as the store answers (`None`).
    async fn record_exchanged(
        &self,
        record: &RequestRecord,
        outcome: Outcome,
    ) -> Result<Option<bool>, StoreError> {
        match self.decide(record, &outcome).await {
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "the code was exchanged, but the store did not take the outcome; recording it in the background");
                self.record_later(record.clone(), outcome);
                Ok(None)
            }
            decided => decided.map(Some),
        }
    }

    /// Keeps trying to record `outcome` until the store takes it or the
    /// request expires. In process: the store that failed is also where a
    /// durable job would go. If this process dies first, the marker of
    /// [`Self::exchange_once`] has the browser's retry end the request
    /// with a reason rather than send the code again.
    fn record_later(&self, record: RequestRecord, outcome: Outcome) {
        let Some(flow) = self.me.upgrade() else {
            return;
        };
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut wait = RECORD_RETRY_FIRST;
                while flow.clock.now_ms() < record.expires_at_ms {
                    tokio::time::sleep(wait).await;
                    match flow.decide(&record, &outcome).await {
                        Ok(_) => {
                            tracing::info!("the exchanged code's outcome is recorded");
                            return;
                        }
                        Err(e @ StoreError::Unavailable(_)) => {
                            tracing::warn!(error = %e, "the exchanged code's outcome is not recorded yet; trying again");
                            wait = (wait * 2).min(RECORD_RETRY_MAX);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the exchanged code's outcome cannot be recorded");
                            return;
                        }
                    }
                }
                tracing::error!(
                    "the request expired before the store took the exchanged code's outcome"
                );
            },
            span,
        ));
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
        let decided = self.decide(record, &outcome).await?;
        self.shown(record, decided, landing).await
    }

    /// `landing` if this attempt `decided` the request, else the page of
    /// whatever did.
    async fn shown(
        &self,
        record: &RequestRecord,
        decided: bool,
        landing: Landing,
    ) -> Result<Landing, OAuthError> {
        if decided {
            return Ok(landing);
        }
        Ok(match self.store.get(&record.id).await? {
            Some((_, status)) => Landing::of(&status).unwrap_or(Landing::NoLongerValid),
            None => Landing::NoLongerValid,
        })
    }
}

/// How an exchanged code's outcome that the store did not take is retried:
/// short waits, so it lands within a second of the store's return.
const RECORD_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const RECORD_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// The request whose code went out in an attempt that never recorded what
/// came back.
fn outcome_lost() -> Outcome {
    deny(
        "the sign-in reached the identity provider, but its outcome was lost before it could be recorded; start a new request",
        Denial::Failed,
    )
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

/// The marker that a request's code went out to the IdP, kept while the
/// request lives: a code is sent at most once.
fn code_sent(id: &AuthReqId) -> String {
    format!("code-sent:{}", log_tag(id.as_str()))
}
