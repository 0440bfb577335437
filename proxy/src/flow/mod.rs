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
//! - [`Flow::decide`]: the one place an outcome lands. It records the
//!   outcome, frees the user's slot and queues the ping for ping clients.
//! - [`Flow::poll`]: a client's poll, answered from the store alone.
//!
//! Background work (notifying the user, pinging the client) is in [`tasks`].
use std::sync::Arc;

use crate::clients::{Client, ClientRegistry};
use crate::clock::Clock;
use crate::crypto::TokenCipher;
use crate::domain::{AuthReqId, BindingMessage, LoginHint, Scope};
use crate::error::OAuthError;
use crate::form::FormParams;
use crate::jobs::Jobs;
use crate::limits::Limits;
use crate::notifier::{Notifier, UserNotification};
use crate::ping::ClientPinger;
use crate::store::{Outcome, PollOutcome, RequestRecord, Status, Store, StoreError};
use crate::telemetry::{record_auth_req, record_client};
use crate::upstream::{BeginRequest, Grant, Issued, TokenSet, Upstream, UpstreamError};

pub mod tasks;

pub use tasks::Task;

/// A backchannel request whose every parameter has been checked.
#[derive(Debug)]
pub struct NewRequest {
    pub client: Arc<Client>,
    pub scope: Scope,
    /// The user the request is for (resolved from whichever hint was sent).
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
}

/// Everything a request's life touches.
pub struct Flow {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) jobs: Arc<Jobs<Task>>,
    pub(crate) upstream: Arc<dyn Upstream>,
    pub(crate) clients: ClientRegistry,
    pub(crate) cipher: TokenCipher,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) notifier: Arc<dyn Notifier>,
    pub(crate) pinger: ClientPinger,
    /// The interval clients are told to poll at, seconds.
    pub(crate) interval: u64,
}

/// Why a sign-in that came back from the IdP is not accepted.
enum Rejection {
    WrongUser,
    /// The IdP stayed unreachable through every retry.
    Unreachable(UpstreamError),
    Failed(anyhow::Error),
}

impl Flow {
    /// Makes a checked request pending and has the user notified.
    pub async fn open(&self, request: NewRequest) -> Result<Acknowledgement, OAuthError> {
        let id = AuthReqId::generate();
        record_auth_req(&id);
        let now_ms = self.clock.now_ms();
        let expires_at_ms = now_ms + request.expires_in * 1000;
        let hint = request.login_hint.as_str();
        self.limits
            .reserve_user(
                self.store.as_ref(),
                hint,
                id.as_str(),
                expires_at_ms,
                now_ms,
            )
            .await?;
        let opened = self.start(&id, &request, expires_at_ms, now_ms).await;
        if opened.is_err() {
            // Not accepted after all: give the user's pending slot back.
            self.limits
                .release_user(self.store.as_ref(), hint, id.as_str())
                .await;
        }
        opened?;
        tracing::info!(
            expires_in = request.expires_in,
            "backchannel request accepted"
        );
        Ok(Acknowledgement {
            auth_req_id: id,
            expires_in: request.expires_in,
            interval: self.interval,
        })
    }

    /// The steps of [`Self::open`] that the caller undoes if one fails.
    async fn start(
        &self,
        id: &AuthReqId,
        request: &NewRequest,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), OAuthError> {
        let begun = self
            .upstream
            .begin(&BeginRequest {
                id,
                client: &request.client,
                scope: &request.scope,
                login_hint: &request.login_hint,
                acr_values: request.acr_values.as_deref(),
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot start the sign-in at the identity provider");
                OAuthError::TemporarilyUnavailable(
                    "the identity provider is not reachable; retry shortly".into(),
                )
            })?;
        let record = RequestRecord {
            id: id.clone(),
            client_id: request.client.id.clone(),
            login_hint: request.login_hint.as_str().to_owned(),
            scope: request.scope.to_string(),
            sealed_upstream: self.cipher.seal(&begun.context, id.as_str()),
            expires_at_ms,
            interval_secs: self.interval,
            sealed_ping_token: request
                .client_notification_token
                .as_deref()
                .map(|token| self.cipher.seal(token.as_bytes(), id.as_str())),
        };
        self.store
            .create(&record, begun.callback_state.as_deref(), now_ms)
            .await?;
        if let Some(link) = begun.user_link {
            let notification = UserNotification {
                login_hint: record.login_hint.clone(),
                binding_message: request
                    .binding_message
                    .as_ref()
                    .map(|b| b.as_str().to_owned()),
                client_id: record.client_id.clone(),
                scope: record.scope.clone(),
                authorization_url: link.to_string(),
                expires_at: expires_at_ms / 1000,
            };
            let task = Task::NotifyUser {
                auth_req_id: id.clone(),
                notification,
            };
            self.jobs.enqueue(task, expires_at_ms).await?;
        }
        Ok(())
    }

    /// One poll by `client` (CIBA Core §10.1, §11): one store round trip,
    /// never a call to the IdP.
    pub async fn poll(&self, client: &Client, id: &AuthReqId) -> Result<TokenSet, OAuthError> {
        match self.store.poll(id, &client.id, self.clock.now_ms()).await? {
            PollOutcome::Unknown => Err(unknown_auth_req_id()),
            PollOutcome::Pending => Err(OAuthError::AuthorizationPending),
            PollOutcome::SlowDown { interval_secs } => Err(OAuthError::SlowDown {
                interval: interval_secs,
            }),
            PollOutcome::Expired => Err(OAuthError::ExpiredToken),
            PollOutcome::Denied(reason) => Err(OAuthError::Denied(reason)),
            PollOutcome::Redeemed => Err(OAuthError::InvalidGrant(
                "the tokens for this auth_req_id were already issued".into(),
            )),
            PollOutcome::Tokens(sealed) => {
                let plain = self
                    .cipher
                    .open(&sealed, id.as_str())
                    .map_err(OAuthError::internal)?;
                let tokens = serde_json::from_slice(&plain).map_err(OAuthError::internal)?;
                tracing::info!("tokens issued");
                Ok(tokens)
            }
        }
    }

    /// The user's browser is back from the IdP with `code` and `state` (or
    /// `error`): redeem the code and decide the request.
    pub async fn land(&self, query: &FormParams) -> Result<Landing, OAuthError> {
        let Some(upstream_state) = query.get("state") else {
            return Ok(Landing::BadLink);
        };
        // The state is single-use: a replayed callback finds nothing.
        let Some(id) = self.store.take_state(upstream_state).await? else {
            return Ok(Landing::NoLongerValid);
        };
        record_auth_req(&id);
        let Some(record) = self.pending(&id).await? else {
            return Ok(Landing::NoLongerValid);
        };
        record_client(&record.client_id);

        if let Some(error) = query.get("error") {
            let (landing, reason) = if error == "access_denied" {
                (
                    Landing::Declined,
                    "the user declined the request".to_owned(),
                )
            } else {
                tracing::warn!(%error, "the identity provider returned an error");
                (
                    Landing::Failed,
                    format!("the identity provider ended the sign-in with {error}"),
                )
            };
            return self
                .conclude(&record, Outcome::Denied { reason }, landing)
                .await;
        }
        let Some(code) = query.get("code") else {
            // The state is spent, so this request cannot be completed any more.
            let reason = "the identity provider returned neither a code nor an error".into();
            return self
                .conclude(&record, Outcome::Denied { reason }, Landing::Failed)
                .await;
        };
        let grant = Grant::Code {
            code,
            issuer: query.get("iss"),
        };
        let (outcome, landing) = match self.redeem(&record, grant).await {
            Ok(sealed_tokens) => (Outcome::Approved { sealed_tokens }, Landing::Approved),
            Err(rejection) => self.rejected(rejection),
        };
        let landing = self.conclude(&record, outcome, landing).await?;
        if landing == Landing::Approved {
            tracing::info!("login completed");
        }
        Ok(landing)
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

    /// Redeems `grant` upstream and checks who signed in; returns the sealed tokens.
    async fn redeem(&self, record: &RequestRecord, grant: Grant<'_>) -> Result<String, Rejection> {
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
        let Issued { tokens, claims } = self
            .upstream
            .redeem(&client, &record.id, &context, grant, now)
            .await
            .map_err(|e| match e {
                UpstreamError::Unavailable(_) => Rejection::Unreachable(e),
                other => failed(other.into()),
            })?;
        let provider = self.upstream.provider();
        let subject = provider.subject(&claims).ok_or_else(|| {
            failed(anyhow::anyhow!(
                "the ID token has no {:?} claim to compare with the login hint; request a scope that carries it or change upstream.subject_claim",
                provider.subject_claim
            ))
        })?;
        if subject != record.login_hint {
            return Err(Rejection::WrongUser);
        }
        let json = serde_json::to_vec(&tokens).map_err(|e| failed(e.into()))?;
        Ok(self.cipher.seal(&json, record.id.as_str()))
    }

    /// The outcome and page for a sign-in that was not accepted.
    fn rejected(&self, rejection: Rejection) -> (Outcome, Landing) {
        let (reason, landing) = match rejection {
            Rejection::WrongUser => {
                tracing::warn!("a different user signed in than the one hinted; tokens discarded");
                (
                    "a different user authenticated than the one in the login hint",
                    Landing::WrongUser,
                )
            }
            Rejection::Failed(e) => {
                tracing::error!(error = %e, "the sign-in could not be completed");
                (
                    "the sign-in could not be completed at the identity provider",
                    Landing::Failed,
                )
            }
            Rejection::Unreachable(e) => {
                tracing::error!(error = %e, "the identity provider was unreachable for the code exchange");
                ("the identity provider could not be reached to complete the sign-in; start a new request", Landing::Failed)
            }
        };
        (
            Outcome::Denied {
                reason: reason.into(),
            },
            landing,
        )
    }

    /// Decides the request; `landing` is shown unless it had ended meanwhile.
    async fn conclude(
        &self,
        record: &RequestRecord,
        outcome: Outcome,
        landing: Landing,
    ) -> Result<Landing, OAuthError> {
        let decided = self.decide(record, &outcome).await?;
        Ok(if decided {
            landing
        } else {
            Landing::NoLongerValid
        })
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

/// Unknown, long gone, or another client's: indistinguishable on purpose.
pub fn unknown_auth_req_id() -> OAuthError {
    OAuthError::InvalidGrant("auth_req_id is unknown or was not issued to this client".into())
}
