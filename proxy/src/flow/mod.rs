//! The life of one backchannel request, in one place. See
//! `docs/architecture.md` for the states and which store key holds each.
//!
//! - [`Flow::open`]: a checked request becomes pending. The user's pending
//!   slot is taken, the upstream starts the sign-in, the record is stored
//!   and the user's notification queued; if any step fails, the steps
//!   before it are undone.
//! - [`Flow::land`]: the user's browser comes back from the IdP with a code
//!   (authorization-code upstreams); the upstream redeems it and the
//!   outcome is decided.
//! - [`Flow::pinged`]: a native-CIBA IdP pings that it has an outcome; the
//!   request's `AskUpstream` task is made due now.
//! - [`Flow::decide`]: the one place an outcome lands. It records the
//!   outcome, frees the user's slot and queues the ping for ping clients.
//! - [`Flow::poll`]: a client's poll, answered from the store alone.
//!
//! Background work (notifying the user, pinging the client, asking a
//! native-CIBA IdP for the outcome) is in [`tasks`].
use std::sync::Arc;
use std::time::Duration;

use crate::audit;
use crate::clients::{Client, ClientRegistry};
use crate::clock::Clock;
use crate::crypto::{log_tag, TokenCipher};
use crate::domain::{AuthReqId, BindingMessage, LoginHint, Scope};
use crate::error::OAuthError;
use crate::hints::Hint;
use crate::jobs::Jobs;
use crate::limits::Limits;
use crate::notifier::{Channels, UserNotification};
use crate::ping::ClientPinger;
use crate::store::{
    Accounts, Confirmation, Decisions, Denial, Outcome, PollOutcome, RequestRecord, Status, Store,
    StoreError, UserLink,
};
use crate::telemetry::record_auth_req;
use crate::upstream::{
    Answer, BeginRequest, FollowUp, Grant, Issued, PingCheck, TokenSet, Upstream, UpstreamError,
};

mod approval;
mod expiry;
mod fan_out;
mod landing;
mod long_poll;
pub mod tasks;

pub use long_poll::LongPoll;

pub use approval::{Approval, ApprovalRefused, Approved, PendingApproval, UserAnswer};

pub use fan_out::Delivery;
pub use tasks::Task;

/// A backchannel request whose every parameter has been checked.
#[derive(Debug)]
pub struct NewRequest {
    pub client: Arc<Client>,
    pub scope: Scope,
    /// The hint exactly as the client sent it.
    pub hint: Hint,
    /// The user it names.
    pub login_hint: LoginHint,
    pub binding_message: Option<BindingMessage>,
    pub acr_values: Option<String>,
    pub expires_in: u64,
    /// Ping mode: the bearer token for the client's notification endpoint.
    pub client_notification_token: Option<String>,
}

/// CIBA Core §7.3: what the client is told.
#[derive(Debug)]
pub struct Acknowledgement {
    pub auth_req_id: AuthReqId,
    pub expires_in: u64,
    pub interval: u64,
}

/// Where the user's browser lands after the IdP, in words the page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    Approved,
    Declined,
    WrongUser,
    NoLongerValid,
    Failed,
    BadLink,
    /// The IdP could not be reached yet; the proxy keeps trying in the
    /// background while the code can live.
    InProgress,
}

impl Landing {
    /// The page a decided request shows again, for a retried callback.
    fn of(status: &Status) -> Option<Self> {
        match status {
            Status::Pending => None,
            Status::Approved | Status::Issued => Some(Self::Approved),
            Status::Denied { kind, .. } => Some(Self::denied(*kind)),
        }
    }

    fn denied(kind: Denial) -> Self {
        match kind {
            Denial::Declined => Self::Declined,
            Denial::WrongUser => Self::WrongUser,
            Denial::Failed => Self::Failed,
        }
    }
}

/// Everything a request's life touches.
pub struct Flow {
    pub(crate) store: Arc<dyn Store>,
    /// Users beyond one request: devices, enrolments, e-mail, history.
    pub(crate) accounts: Arc<dyn Accounts>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) jobs: Arc<Jobs<Task>>,
    pub(crate) upstream: Arc<dyn Upstream>,
    pub(crate) clients: ClientRegistry,
    pub(crate) cipher: TokenCipher,
    pub(crate) clock: Arc<dyn Clock>,
    /// The notification channels; none with a native-CIBA upstream, which
    /// reaches the user itself.
    pub(crate) channels: Channels,
    pub(crate) pinger: ClientPinger,
    /// The interval clients are told to poll at, seconds.
    pub(crate) interval: u64,
    /// How long a user's history is kept, with `[account]`; `None`: no
    /// history is recorded.
    pub(crate) history_keep_ms: Option<u64>,
    /// Whether the ID token's subject claim must equal the login hint.
    pub(crate) subject_check: bool,
    /// How long an authorization code can live at the IdP: how long an
    /// unreachable IdP is retried after the browser brought one back.
    pub(crate) code_lifetime_ms: u64,
    /// How long one code exchange may take, all tries included: the lease
    /// that keeps a second exchange of the same code from starting.
    pub(crate) exchange_lease_secs: u64,
    /// Long polling, when `ciba.long_poll_secs` is on.
    pub(crate) long_poll: Option<LongPoll>,
    /// Where decisions are announced to long polls, on every instance.
    pub(crate) decisions: Arc<Decisions>,
    /// `{server.issuer}/approve/`: where approval links point.
    pub(crate) approval_base: String,
    /// Whether the user's notification carries the IdP's link itself.
    pub(crate) send_authorization_url: bool,
    /// This flow, for work that outlives the request that started it (an
    /// exchanged code's outcome the store did not take yet).
    pub(crate) me: std::sync::Weak<Flow>,
}

/// What the IdP's answer means for the request.
enum Verdict {
    /// Accepted: the sealed tokens.
    Approved(String),
    /// The IdP ended the request; why, for the client.
    Ended(String),
    Pending,
    SlowDown,
}

/// Why a sign-in that came back from the IdP is not accepted.
enum Rejection {
    WrongUser,
    /// The ID token lacks the subject claim (a configuration matter).
    NoSubject,
    /// The IdP stayed unreachable through every retry.
    Unreachable(UpstreamError),
    /// The request may have reached the IdP, but no answer came back.
    NoAnswer(UpstreamError),
    Failed(anyhow::Error),
}

/// Why an IdP's ping is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PingRefused {
    /// RFC 6750 §3.1 `invalid_token` (401).
    Token,
    /// The body names another request (400).
    Request,
}

impl Flow {
    /// Makes a checked request pending and has the user notified.
    pub async fn open(&self, request: NewRequest) -> Result<Acknowledgement, OAuthError> {
        // No push the user cannot complete: while recent calls find the IdP
        // unreachable, refuse before anything is taken (upstream/health.rs).
        if self.upstream.reachable().is_err() {
            return Err(OAuthError::TemporarilyUnavailable(
                "the identity provider is not reachable; retry shortly".into(),
            ));
        }
        let id = AuthReqId::generate();
        record_auth_req(&id);
        let now_ms = self.clock.now_ms();
        let hint = request.login_hint.as_str();
        let opened = self.admit_and_start(&id, &request, now_ms).await;
        if opened.is_err() {
            // Not accepted after all: give back the user's pending slot and
            // push count, also when taking them failed (a stalled store may
            // run that late; these run after it).
            tokio::join!(
                self.limits
                    .release_user(self.store.as_ref(), hint, id.as_str()),
                self.limits
                    .give_back_notification(self.store.as_ref(), hint, now_ms),
            );
        }
        let expires_in = opened?;
        tracing::info!(expires_in, "backchannel request accepted");
        crate::metrics::request_opened(&request.client.id, request.client.delivery_mode);
        Ok(Acknowledgement {
            auth_req_id: id,
            expires_in,
            interval: self.interval,
        })
    }

    /// The steps of [`Self::open`] that it undoes if one fails; returns the
    /// request's lifetime in seconds.
    async fn admit_and_start(
        &self,
        id: &AuthReqId,
        request: &NewRequest,
        now_ms: u64,
    ) -> Result<u64, OAuthError> {
        let hint = request.login_hint.as_str();
        // The limits are taken before the IdP is asked: they must also hold
        // against the IdP's own pushes.
        self.limits
            .admit_notification(self.store.as_ref(), hint, now_ms)
            .await?;
        self.limits
            .reserve_user(
                self.store.as_ref(),
                hint,
                id.as_str(),
                now_ms + request.expires_in * 1000,
                now_ms,
            )
            .await?;
        self.start(id, request, now_ms).await
    }

    async fn start(
        &self,
        id: &AuthReqId,
        request: &NewRequest,
        now_ms: u64,
    ) -> Result<u64, OAuthError> {
        let begun = self
            .upstream
            .begin(&BeginRequest {
                id,
                client: &request.client,
                scope: &request.scope,
                hint: &request.hint,
                login_hint: &request.login_hint,
                binding_message: request.binding_message.as_ref(),
                acr_values: request.acr_values.as_deref(),
                expires_in: request.expires_in,
                callback_state: &self.callback_state(id),
            })
            .await
            .map_err(refused_at_begin)?;
        // Never promise the client longer than the IdP keeps the request.
        let expires_in = begun
            .expires_in
            .map_or(request.expires_in, |idp| idp.min(request.expires_in))
            .max(1);
        let expires_at_ms = now_ms + expires_in * 1000;
        // Who can be told, decided before anything is stored: a user no
        // channel reaches is refused with nothing left behind.
        let deliveries = match (&begun.user_link, self.channels.any()) {
            (Some(_), true) => {
                let deliveries = self.deliveries(request.login_hint.as_str()).await?;
                if deliveries.is_empty() {
                    return Err(OAuthError::UnknownUserId(
                        "no notification channel reaches the user: no registered device, no known e-mail address, and no webhook".into(),
                    ));
                }
                deliveries
            }
            _ => Vec::new(),
        };
        let record = RequestRecord {
            id: id.clone(),
            client_id: request.client.id.clone(),
            login_hint: request.login_hint.as_str().to_owned(),
            scope: request.scope.to_string(),
            created_at_ms: now_ms,
            sealed_upstream: self.cipher.seal(&begun.context, id.as_str()),
            expires_at_ms,
            interval_secs: self.interval,
            sealed_ping_token: request
                .client_notification_token
                .as_deref()
                .map(|token| self.cipher.seal(token.as_bytes(), id.as_str())),
            binding_message: request
                .binding_message
                .as_ref()
                .map(|b| b.as_str().to_owned()),
            user_link: match begun.user_link {
                Some(_) => UserLink::FromContext,
                None => UserLink::None,
            },
        };
        // The user's list of requests (the account page, the devices) keeps
        // it as long as the record lives, so an expiry can still be seen.
        self.accounts
            .note_request(
                &record.login_hint,
                id,
                expires_at_ms + crate::store::EXPIRED_RETENTION_MS,
            )
            .await?;
        self.store.create(&record, now_ms).await?;
        audit::record(audit::Step::Opened, &record, now_ms);
        if let Some(follow_up) = begun.follow_up {
            let task = Task::AskUpstream {
                auth_req_id: id.clone(),
                follow_up,
            };
            let due = now_ms + follow_up.every_secs * 1000;
            self.jobs
                .enqueue_as(&tasks::ask_upstream_job(id), task, due, expires_at_ms)
                .await?;
        }
        match begun.user_link {
            Some(link) if !deliveries.is_empty() => {
                // Number matching: the user proves they see the code on the
                // consumption device, so the notification must not carry it,
                // nor the sign-in link that skips the pick.
                let matching = approval::number_matching(
                    &request.client,
                    record.binding_message.as_deref(),
                );
                let notification = UserNotification {
                    login_hint: record.login_hint.clone(),
                    binding_message: record.binding_message.clone().filter(|_| !matching),
                    client_id: record.client_id.clone(),
                    scope: record.scope.clone(),
                    authorization_url: (self.send_authorization_url && !matching)
                        .then(|| link.to_string()),
                    approval_url: self.approval_url(id),
                    expires_at: expires_at_ms / 1000,
                };
                // One durable job per delivery: each is retried on its own.
                let count = deliveries.len() as u32;
                for delivery in deliveries {
                    let task = Task::NotifyUser {
                        auth_req_id: id.clone(),
                        notification: notification.clone(),
                        delivery,
                        deliveries: count,
                    };
                    self.jobs.enqueue(task, expires_at_ms).await?;
                }
            }
            Some(_) => tracing::warn!(
                "the identity provider returned a link for the user, but no [notifier] is configured to deliver it"
            ),
            None => {}
        }
        Ok(expires_in)
    }

    /// One poll by `client` (CIBA Core §10.1, §11): one store round trip,
    /// never a call to the IdP; a second one only when it gets the tokens.
    ///
    /// The tokens are handed out in at most one 200, and never lost to a
    /// store that answers late: the poll reserves them for this attempt,
    /// and they are deleted only when this attempt confirms, within
    /// [`crate::store::CONFIRM_WINDOW_MS`], that it is answering with them.
    /// An attempt that cannot confirm answers 503, and the client's retry
    /// takes the tokens over.
    ///
    /// With long polling on, a poll of a pending request waits for the
    /// decision first ([`long_poll`]).
    pub async fn poll(&self, client: &Client, id: &AuthReqId) -> Result<TokenSet, OAuthError> {
        let attempt = crate::crypto::random_token(16);
        let outcome = self
            .store
            .poll(id, &client.id, &attempt, self.clock.now_ms())
            .await?;
        match (outcome, &self.long_poll) {
            (PollOutcome::Pending, Some(long_poll)) => {
                self.wait_for_decision(long_poll, client, id).await
            }
            (outcome, _) => self.answer(id, &attempt, outcome).await,
        }
    }

    /// What a poll's outcome means for the client.
    async fn answer(
        &self,
        id: &AuthReqId,
        attempt: &str,
        outcome: PollOutcome,
    ) -> Result<TokenSet, OAuthError> {
        crate::metrics::polled(match &outcome {
            PollOutcome::Unknown | PollOutcome::Redeemed => "invalid",
            PollOutcome::Pending => "pending",
            PollOutcome::SlowDown { .. } => "slow_down",
            PollOutcome::Expired => "expired",
            PollOutcome::Denied(_) => "denied",
            PollOutcome::Tokens(_) => "tokens",
        });
        match outcome {
            PollOutcome::Unknown => Err(unknown_auth_req_id()),
            PollOutcome::Pending => Err(OAuthError::AuthorizationPending),
            PollOutcome::SlowDown { interval_secs } => Err(OAuthError::SlowDown {
                interval: interval_secs,
            }),
            PollOutcome::Expired => {
                // Once per request, however often it is polled afterwards.
                if self.first_sight_of_expiry(id).await {
                    if let Ok(Some((record, _))) = self.store.get(id).await {
                        self.expired_seen(&record).await;
                    }
                }
                Err(OAuthError::ExpiredToken)
            }
            PollOutcome::Denied(reason) => Err(OAuthError::Denied(reason)),
            PollOutcome::Redeemed => Err(already_issued()),
            PollOutcome::Tokens(sealed) => {
                let plain = self
                    .cipher
                    .open(&sealed, id.as_str())
                    .map_err(OAuthError::internal)?;
                let tokens = serde_json::from_slice(&plain).map_err(OAuthError::internal)?;
                match self.store.confirm_tokens(id, attempt).await? {
                    Confirmation::Confirmed => {
                        tracing::info!("tokens issued");
                        self.audit_by_id(audit::Step::TokensIssued, id).await;
                        Ok(tokens)
                    }
                    Confirmation::IssuedElsewhere => Err(already_issued()),
                    Confirmation::Unconfirmed => {
                        tracing::warn!("tokens not confirmed in time; kept for the client's retry");
                        Err(OAuthError::TemporarilyUnavailable(
                            "the service is temporarily unavailable; retry shortly".into(),
                        ))
                    }
                }
            }
        }
    }

    /// The request, if it still waits for the user.
    pub(crate) async fn pending(
        &self,
        id: &AuthReqId,
    ) -> Result<Option<RequestRecord>, StoreError> {
        Ok(match self.store.get(id).await? {
            Some((record, Status::Pending)) if self.clock.now_ms() < record.expires_at_ms => {
                Some(record)
            }
            _ => None,
        })
    }

    /// A native-CIBA IdP's ping (CIBA Core §10.2): its bearer token must be
    /// the one the proxy gave for that request, and its body must name the
    /// IdP's id for it. A valid ping makes the request's upstream check due
    /// now; anything else changes nothing.
    pub async fn pinged(&self, bearer: &str, upstream_id: &str) -> Result<(), PingRefused> {
        let id = self
            .upstream
            .ping_target(bearer)
            .ok_or(PingRefused::Token)?;
        record_auth_req(&id);
        let record = match self.store.get(&id).await {
            Ok(Some((record, status))) => (record, status),
            // Gone or unreadable: the fallback poll still settles it.
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "upstream ping not handled now; the fallback poll will ask");
                return Ok(());
            }
        };
        let (record, status) = record;
        let context = self
            .cipher
            .open(&record.sealed_upstream, id.as_str())
            .map_err(|_| PingRefused::Token)?;
        match self.upstream.check_ping(&context, bearer, upstream_id) {
            PingCheck::Valid => {}
            PingCheck::WrongToken => return Err(PingRefused::Token),
            PingCheck::WrongRequest => return Err(PingRefused::Request),
        }
        if status == Status::Pending {
            if let Err(e) = self.ask_now(&record).await {
                tracing::warn!(error = %e, "upstream ping not handled now; the fallback poll will ask");
            }
        }
        Ok(())
    }

    /// Makes a pinged request's upstream check due now. After the last
    /// check before expiry there is no check left to move: a ping then gets
    /// one call of its own, so an approval in the request's last seconds
    /// still reaches the client (at once, if it is a ping client).
    async fn ask_now(&self, record: &RequestRecord) -> Result<(), StoreError> {
        let id = &record.id;
        let job = tasks::ask_upstream_job(id);
        let now_ms = self.clock.now_ms();
        if self.jobs.expedite(&job).await?
            || now_ms < self.last_upstream_check_ms(record)
            || now_ms >= record.expires_at_ms
        {
            return Ok(());
        }
        // One such call per request, however often the IdP pings.
        let once = format!("upstream-late-ping:{}", log_tag(id.as_str()));
        let ttl_secs = record.expires_at_ms.saturating_sub(now_ms).div_ceil(1000);
        if !self.store.use_once(&once, ttl_secs).await? {
            return Ok(());
        }
        // The last check's lease would hold this call back until expiry.
        self.store
            .forget_once(&tasks::upstream_call_lease(id))
            .await?;
        // Past the last check, the job ends after this one call whatever
        // its schedule.
        let task = Task::AskUpstream {
            auth_req_id: id.clone(),
            follow_up: FollowUp {
                interval_secs: 1,
                every_secs: 1,
            },
        };
        self.jobs
            .enqueue_as(&job, task, now_ms, record.expires_at_ms)
            .await?;
        self.jobs.wake();
        Ok(())
    }

    /// Asks the IdP about the request (with the browser's code, or by
    /// polling) and checks who signed in.
    async fn redeem(&self, record: &RequestRecord, grant: Grant<'_>) -> Result<Verdict, Rejection> {
        let failed = |e: anyhow::Error| Rejection::Failed(e);
        let client = self.clients.get(&record.client_id).ok_or_else(|| {
            failed(anyhow::anyhow!(
                "client {} is no longer registered",
                record.client_id
            ))
        })?;
        let context = self
            .cipher
            .open(&record.sealed_upstream, record.id.as_str())
            .map_err(|e| failed(e.into()))?;
        let now = self.clock.now_secs();
        let answer = self
            .upstream
            .redeem(&client, &record.id, &context, grant, now)
            .await
            .map_err(|e| match e {
                UpstreamError::Unavailable(_) => Rejection::Unreachable(e),
                UpstreamError::NoAnswer(_) => Rejection::NoAnswer(e),
                other => failed(other.into()),
            })?;
        let Issued { tokens, claims } = match answer {
            Answer::Issued(issued) => issued,
            Answer::Pending => return Ok(Verdict::Pending),
            Answer::SlowDown => return Ok(Verdict::SlowDown),
            Answer::Ended(reason) => return Ok(Verdict::Ended(reason)),
        };
        if self.subject_check {
            if let Err(rejection) = self.check_subject(record, &claims) {
                self.upstream.discard(&client, &tokens).await;
                return Err(rejection);
            }
        }
        let json = serde_json::to_vec(&tokens).map_err(|e| failed(e.into()))?;
        Ok(Verdict::Approved(
            self.cipher.seal(&json, record.id.as_str()),
        ))
    }

    /// The ID token's subject claim must be the user the request named. The
    /// log tells a misconfigured claim (missing) from a different person
    /// (hashes of both values, never the values).
    fn check_subject(
        &self,
        record: &RequestRecord,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Rejection> {
        let provider = self.upstream.provider();
        let claim = provider.subject_claim.as_str();
        match provider.subject(claims) {
            None => {
                tracing::error!(
                    claim,
                    "the ID token has no {claim:?} claim to compare with the login hint; tokens discarded. Request a scope that carries it, or change upstream.subject_claim (or upstream.subject_check)"
                );
                Err(Rejection::NoSubject)
            }
            Some(subject) if subject != record.login_hint => {
                tracing::warn!(
                    claim,
                    id_token_value = %log_tag(&subject),
                    login_hint = %log_tag(&record.login_hint),
                    "the ID token's {claim:?} claim differs from the login hint: a different user signed in; tokens discarded"
                );
                Err(Rejection::WrongUser)
            }
            Some(_) => Ok(()),
        }
    }

    /// Why a sign-in that came back from the IdP is not accepted.
    fn rejected(&self, rejection: Rejection) -> Outcome {
        let (reason, kind) = match rejection {
            Rejection::WrongUser => (
                "a different user authenticated than the one in the login hint",
                Denial::WrongUser,
            ),
            Rejection::NoSubject => (
                "the identity provider's ID token does not name the user, so the sign-in cannot be matched to the login hint",
                Denial::Failed,
            ),
            Rejection::NoAnswer(e) => {
                tracing::error!(error = %e, "the identity provider did not answer the code exchange; the code may be spent, so it is not sent again");
                (
                    "the identity provider did not answer in time to complete the sign-in; start a new request",
                    Denial::Failed,
                )
            }
            Rejection::Failed(e) => {
                tracing::error!(error = %e, "the sign-in could not be completed");
                (
                    "the sign-in could not be completed at the identity provider",
                    Denial::Failed,
                )
            }
            Rejection::Unreachable(e) => {
                tracing::error!(error = %e, "the identity provider stayed unreachable");
                (
                    "the identity provider could not be reached to complete the sign-in; start a new request",
                    Denial::Failed,
                )
            }
        };
        Outcome::Denied {
            reason: reason.into(),
            kind,
        }
    }

    /// Records how a request ended, frees the user's pending slot and, for
    /// a ping-mode client, queues its ping in the same breath: the ping is
    /// queued first and only sent once the outcome is visible, so a crash
    /// in between loses nothing. False when the request had already ended.
    pub(crate) async fn decide(
        &self,
        record: &RequestRecord,
        outcome: &Outcome,
    ) -> Result<bool, StoreError> {
        let ping = match &record.sealed_ping_token {
            Some(_) => {
                let task = Task::PingClient {
                    auth_req_id: record.id.clone(),
                };
                Some(
                    self.jobs
                        .enqueue_quietly(task, record.expires_at_ms)
                        .await?,
                )
            }
            None => None,
        };
        let decided = self
            .store
            .finish(&record.id, outcome, self.clock.now_ms())
            .await?;
        if decided {
            let now_ms = self.clock.now_ms();
            crate::metrics::decided(
                crate::metrics::outcome_label(outcome),
                Duration::from_millis(now_ms.saturating_sub(record.created_at_ms)),
            );
            audit::record(audit::Step::Decided(outcome), record, now_ms);
            self.remember(record, crate::account::history::outcome(outcome), now_ms)
                .await;
            self.decisions.announce(&record.id).await;
            self.limits
                .release_user(self.store.as_ref(), &record.login_hint, record.id.as_str())
                .await;
        }
        match (&ping, decided) {
            (Some(_), true) => self.jobs.wake(),
            (Some(job), false) => self.jobs.cancel(job).await?,
            (None, _) => {}
        }
        Ok(decided)
    }
}

/// The client's view of an IdP that did not start the sign-in: CIBA Core
/// §13 errors are relayed with their code and status; an unreachable or
/// misconfigured IdP is 503 for the client (the log names the key to fix).
fn refused_at_begin(e: UpstreamError) -> OAuthError {
    let unavailable = || {
        OAuthError::TemporarilyUnavailable(
            "the identity provider is not reachable; retry shortly".into(),
        )
    };
    match e {
        UpstreamError::Refused { error, description } => {
            let said = description
                .as_deref()
                .map(crate::domain::printable)
                .filter(|d| !d.is_empty())
                .map(|d| format!("the identity provider says: {d}"));
            let text = |fallback: &str| said.clone().unwrap_or_else(|| fallback.to_owned());
            match error.as_str() {
                "unknown_user_id" => {
                    OAuthError::UnknownUserId(text("the identity provider does not know this user"))
                }
                "expired_login_hint_token" => OAuthError::ExpiredLoginHintToken,
                "invalid_binding_message" => OAuthError::InvalidBindingMessage(text(
                    "the identity provider does not accept this binding_message",
                )),
                "access_denied" => {
                    OAuthError::AccessDenied(text("the identity provider refused the request"))
                }
                "invalid_scope" => {
                    OAuthError::InvalidScope(text("the identity provider refused the scope"))
                }
                "server_error" | "temporarily_unavailable" => unavailable(),
                // invalid_request, missing_user_code, invalid_user_code, ...
                other => {
                    tracing::warn!(
                        error = other,
                        "the identity provider refused a forwarded request"
                    );
                    OAuthError::InvalidRequest(text(&format!(
                        "the identity provider refused the request with {other}"
                    )))
                }
            }
        }
        UpstreamError::Misconfigured { .. } => {
            tracing::error!(error = %e, "cannot start the sign-in at the identity provider");
            unavailable()
        }
        other => {
            tracing::warn!(error = %other, "cannot start the sign-in at the identity provider");
            unavailable()
        }
    }
}

impl Flow {
    /// Adds how the request ended to its user's history (with `[account]`).
    async fn remember(&self, record: &RequestRecord, outcome: &str, at_ms: u64) {
        if let Some(keep_ms) = self.history_keep_ms {
            crate::account::history::record(
                self.accounts.as_ref(),
                &self.clients,
                record,
                outcome,
                at_ms,
                keep_ms,
                self.clock.now_ms(),
            )
            .await;
        }
    }

    /// An audit event for a request known only by its id: one extra store
    /// read, on the rare steps that need it. Best effort.
    async fn audit_by_id(&self, step: audit::Step<'_>, id: &AuthReqId) {
        if let Ok(Some((record, _))) = self.store.get(id).await {
            audit::record(step, &record, self.clock.now_ms());
        }
    }
}

fn already_issued() -> OAuthError {
    OAuthError::InvalidGrant("the tokens for this auth_req_id were already issued".into())
}

/// Unknown, long gone, or another client's: indistinguishable on purpose.
pub fn unknown_auth_req_id() -> OAuthError {
    OAuthError::InvalidGrant("auth_req_id is unknown or was not issued to this client".into())
}
