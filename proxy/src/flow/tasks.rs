//! The background side of a request's life, run from the durable job
//! queue ([`crate::jobs`]) by whichever instance leases the job: telling the
//! user's device that a request waits, asking a native-CIBA IdP for the
//! outcome, and pinging a ping-mode client once the outcome is recorded.
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::fan_out::Delivery;
use super::{Flow, Rejection, Verdict};
use crate::crypto::log_tag;
use crate::domain::AuthReqId;
use crate::jobs::{Step, TaskHandler};
use crate::notifier::{Message, NotifyError, UserNotification};
use crate::store::{Denial, Outcome, RequestRecord, Status, StoreError, SLOW_DOWN_STEP_SECS};
use crate::upstream::{FollowUp, Grant};

/// What a job does. Stored sealed; the wire format only has to survive a
/// rolling upgrade, so add variants and fields, never rename them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Deliver the sign-in link to the user's device, through one channel.
    NotifyUser {
        auth_req_id: AuthReqId,
        notification: UserNotification,
        /// Which channel and device; jobs queued before there were
        /// channels carry none and mean the webhook.
        #[serde(default)]
        delivery: Delivery,
        /// How many deliveries the request has (a refusal ends the request
        /// only once each was refused); older jobs had one.
        #[serde(default = "one")]
        deliveries: u32,
    },
    /// Tell a ping-mode client that its request has an outcome.
    PingClient { auth_req_id: AuthReqId },
    /// Ask a native-CIBA IdP whether the request has an outcome; repeats
    /// every `follow_up.every_secs` until it has one or expires.
    AskUpstream {
        auth_req_id: AuthReqId,
        follow_up: FollowUp,
    },
    /// Exchange the code the browser brought back, which an unreachable IdP
    /// could not take yet; retried with backoff while the code can live.
    RedeemCode {
        auth_req_id: AuthReqId,
        /// The code (and RFC 9207 `iss`), sealed.
        sealed_response: String,
    },
}

fn one() -> u32 {
    1
}

/// A request's notification state as the admin API shows it: queued until
/// a delivery has a result, then the latest result, and `sent` for good
/// once any delivery reached the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationState {
    Queued,
    Sent,
    Retrying,
    Refused,
}

impl NotificationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => crate::store::NOTIFICATION_SENT,
            Self::Retrying => "retrying",
            Self::Refused => "refused",
        }
    }
}

/// The job id of a request's `RedeemCode` task: fixed, so a browser retry
/// that fails too replaces the job instead of adding one.
pub fn redeem_code_job(id: &AuthReqId) -> String {
    format!("code-{}", id.digest())
}

/// The job id of a request's `AskUpstream` task: fixed, so an IdP's ping can
/// make that one job due now.
pub fn ask_upstream_job(id: &AuthReqId) -> String {
    format!("ask-{}", id.digest())
}

/// The store key that allows one token call per upstream interval for a
/// request, whichever instance and whatever triggered it.
pub fn upstream_call_lease(id: &AuthReqId) -> String {
    format!("upstream-call:{}", log_tag(id.as_str()))
}

#[async_trait]
impl TaskHandler<Task> for Flow {
    async fn run(&self, task: &Task) -> Result<Step<Task>, StoreError> {
        match task {
            Task::NotifyUser {
                auth_req_id,
                notification,
                delivery,
                deliveries,
            } => {
                self.notify_user(auth_req_id, notification, delivery, *deliveries)
                    .await
            }
            Task::PingClient { auth_req_id } => self.ping_client(auth_req_id).await,
            Task::AskUpstream {
                auth_req_id,
                follow_up,
            } => self.ask_upstream(auth_req_id, *follow_up).await,
            Task::RedeemCode {
                auth_req_id,
                sealed_response,
            } => Ok(
                match self.redeem_code_again(auth_req_id, sealed_response).await? {
                    Some(()) => Step::Done,
                    None => Step::RetryLater("the identity provider is still unreachable".into()),
                },
            ),
        }
    }

    async fn gave_up(&self, task: &Task) -> Result<(), StoreError> {
        match task {
            // The code has expired at the IdP: the login cannot complete.
            Task::RedeemCode { auth_req_id, .. } => self.code_expired(auth_req_id).await,
            _ => Ok(()),
        }
    }

    fn describe(&self, task: &Task) -> (&'static str, String) {
        match task {
            Task::NotifyUser {
                auth_req_id,
                delivery,
                ..
            } => (
                match delivery {
                    Delivery::Webhook => "user notification (webhook)",
                    Delivery::Email => "user notification (email)",
                    Delivery::Fcm { .. } => "user notification (fcm)",
                    Delivery::Webpush { .. } => "user notification (webpush)",
                },
                log_tag(auth_req_id.as_str()),
            ),
            Task::PingClient { auth_req_id } => ("client ping", log_tag(auth_req_id.as_str())),
            Task::AskUpstream { auth_req_id, .. } => {
                ("upstream check", log_tag(auth_req_id.as_str()))
            }
            Task::RedeemCode { auth_req_id, .. } => {
                ("code exchange", log_tag(auth_req_id.as_str()))
            }
        }
    }
}

impl Flow {
    /// One delivery of the user's notification, logged and counted per
    /// channel. A refusal ends the request only when every delivery of it
    /// was refused ([`Self::refused`]).
    async fn notify_user(
        &self,
        id: &AuthReqId,
        notification: &UserNotification,
        delivery: &Delivery,
        deliveries: u32,
    ) -> Result<Step<Task>, StoreError> {
        let Some(record) = self.pending(id).await? else {
            // Already answered, expired or gone: nothing to tell the user.
            return Ok(Step::Done);
        };
        let tag = log_tag(id.as_str());
        let channel = delivery.kind();
        let Some((notifier, target)) = self.target(delivery, &record.login_hint).await? else {
            tracing::info!(auth_req = %tag, channel, "the channel no longer reaches the user");
            crate::metrics::delivered(channel, "refused");
            self.note_notification(id, NotificationState::Refused).await;
            self.refused(&record, delivery, deliveries).await?;
            return Ok(Step::Done);
        };
        let client_name = self
            .clients
            .get(&record.client_id)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| record.client_id.clone());
        let message = Message {
            notification,
            client_name: &client_name,
            ttl_secs: record
                .expires_at_ms
                .saturating_sub(self.clock.now_ms())
                .div_ceil(1000)
                .max(1),
        };
        match notifier.notify(&message, target.recipient()).await {
            Ok(()) => {
                crate::metrics::delivered(channel, "ok");
                self.note_notification(id, NotificationState::Sent).await;
                tracing::info!(auth_req = %tag, channel, "user notified");
                crate::audit::record(
                    crate::audit::Step::Notified { channel },
                    &record,
                    self.clock.now_ms(),
                );
                Ok(Step::Done)
            }
            Err(NotifyError::Retryable(reason)) => {
                crate::metrics::delivered(channel, "retry");
                self.note_notification(id, NotificationState::Retrying)
                    .await;
                Ok(Step::RetryLater(reason))
            }
            Err(NotifyError::RetryAfter { reason, after }) => {
                crate::metrics::delivered(channel, "retry");
                self.note_notification(id, NotificationState::Retrying)
                    .await;
                Ok(Step::RetryAfter { reason, after })
            }
            Err(NotifyError::Gone(reason)) => {
                crate::metrics::delivered(channel, "gone");
                self.note_notification(id, NotificationState::Refused).await;
                if let Some(did) = delivery.did() {
                    tracing::warn!(auth_req = %tag, channel, device = %log_tag(did), %reason,
                        "the device's push target is gone; dropping it");
                    self.accounts.drop_push(did).await?;
                }
                self.refused(&record, delivery, deliveries).await?;
                Ok(Step::Done)
            }
            Err(NotifyError::Permanent(reason)) => {
                crate::metrics::delivered(channel, "refused");
                self.note_notification(id, NotificationState::Refused).await;
                tracing::error!(auth_req = %tag, channel, %reason, "user notification refused");
                self.refused(&record, delivery, deliveries).await?;
                Ok(Step::Done)
            }
        }
    }

    /// Records a delivery's result as the request's notification state.
    /// Best effort: a store hiccup here must not make a delivery that
    /// already happened run (and reach the user) again.
    async fn note_notification(&self, id: &AuthReqId, state: NotificationState) {
        if let Err(e) = self.store.notification(id, Some(state.as_str())).await {
            tracing::warn!(auth_req = %log_tag(id.as_str()), error = %e,
                "the notification state was not recorded");
        }
    }

    /// One delivery of the request can never succeed. The request fails
    /// once every one of its `deliveries` was refused: with a single one
    /// (the single-webhook form) at once, as before; with several, the
    /// others may still reach the user. Each delivery is counted once,
    /// however often its job runs.
    async fn refused(
        &self,
        record: &RequestRecord,
        delivery: &Delivery,
        deliveries: u32,
    ) -> Result<(), StoreError> {
        if deliveries > 1 {
            let digest = record.id.digest();
            let which = match delivery.did() {
                Some(did) => format!("{}:{}", delivery.kind(), log_tag(did)),
                None => delivery.kind().to_owned(),
            };
            let ttl = record
                .expires_at_ms
                .saturating_sub(self.clock.now_ms())
                .div_ceil(1000)
                + 60;
            let first = self
                .store
                .use_once(&format!("notify-refused:{digest}:{which}"), ttl)
                .await?;
            let refused = match first {
                true => {
                    self.store
                        .count(&format!("notify-refusals:{digest}"), ttl)
                        .await?
                }
                false => 0,
            };
            if refused < u64::from(deliveries) {
                return Ok(());
            }
        }
        tracing::error!(auth_req = %log_tag(record.id.as_str()), "no notification reached the user; ending the request");
        let outcome = Outcome::Denied {
            reason: "the user's authentication device could not be notified".into(),
            kind: Denial::Failed,
        };
        self.decide(record, &outcome).await?;
        Ok(())
    }

    /// When the proxy asks a native-CIBA IdP about `record` for the last
    /// time: a client interval (and a second) before expiry, so a client
    /// polling at its interval still collects what it finds, and an approval
    /// after the last regular check is not lost. The configured interval,
    /// not the record's: a client that polls too fast must not make the
    /// proxy stop asking.
    pub(super) fn last_upstream_check_ms(&self, record: &RequestRecord) -> u64 {
        record
            .expires_at_ms
            .saturating_sub((self.interval + 1) * 1000)
    }

    /// One token call to a native-CIBA IdP. A lease in the store makes it
    /// at most one per upstream interval per request, across instances and
    /// whatever triggered it (the schedule or the IdP's ping).
    async fn ask_upstream(
        &self,
        id: &AuthReqId,
        mut follow_up: FollowUp,
    ) -> Result<Step<Task>, StoreError> {
        let Some(record) = self.pending(id).await? else {
            // Decided, expired or gone: polling stops.
            return Ok(Step::Done);
        };
        let last_check_ms = self.last_upstream_check_ms(&record);
        let left_ms = || last_check_ms.saturating_sub(self.clock.now_ms());
        let again = |follow_up: FollowUp, after_secs: u64| Step::Again {
            // Zero after the last check: the job ends.
            after: Duration::from_millis((after_secs * 1000).min(left_ms())),
            task: Task::AskUpstream {
                auth_req_id: id.clone(),
                follow_up,
            },
        };
        // The lease ends by the last check, so a check made less than an
        // interval before it does not hold it back: at most one early call
        // per request.
        let lease_secs = follow_up.interval_secs.min(left_ms() / 1000).max(1);
        let tag = log_tag(id.as_str());
        if !self
            .store
            .use_once(&upstream_call_lease(id), lease_secs)
            .await?
        {
            return Ok(again(follow_up, follow_up.interval_secs));
        }
        tracing::debug!(auth_req = %tag, "asking the identity provider");
        let (outcome, _) = match self.redeem(&record, Grant::Poll).await {
            Ok(Verdict::Pending) => return Ok(again(follow_up, follow_up.every_secs)),
            Ok(Verdict::SlowDown) => {
                // CIBA Core §11: wait at least 5 s longer from now on.
                follow_up.interval_secs += SLOW_DOWN_STEP_SECS;
                follow_up.every_secs = follow_up.every_secs.max(follow_up.interval_secs);
                tracing::info!(auth_req = %tag, interval = follow_up.interval_secs, "the identity provider asked to slow down");
                return Ok(again(follow_up, follow_up.every_secs));
            }
            Err(Rejection::Unreachable(e)) => {
                // Keep asking until the request expires.
                tracing::warn!(auth_req = %tag, error = %e, "the identity provider is unreachable; asking again later");
                return Ok(again(follow_up, follow_up.interval_secs));
            }
            Ok(Verdict::Approved(sealed_tokens)) => {
                tracing::info!(auth_req = %tag, "login completed");
                (Outcome::Approved { sealed_tokens }, ())
            }
            Ok(Verdict::Ended(reason)) => {
                tracing::info!(auth_req = %tag, %reason, "the identity provider ended the request");
                (
                    Outcome::Denied {
                        reason,
                        kind: Denial::Failed,
                    },
                    (),
                )
            }
            Err(rejection) => (self.rejected(rejection), ()),
        };
        self.decide(&record, &outcome).await?;
        Ok(Step::Done)
    }

    async fn ping_client(&self, id: &AuthReqId) -> Result<Step<Task>, StoreError> {
        let tag = log_tag(id.as_str());
        let record = match self.store.get(id).await? {
            None => return Ok(Step::Done),
            // The outcome is not visible yet (its instance is recording it).
            Some((_, Status::Pending)) => {
                return Ok(Step::RetryLater("the outcome is not recorded yet".into()))
            }
            Some((record, _)) => record,
        };
        let client = self.clients.get(&record.client_id);
        let endpoint = client
            .as_ref()
            .and_then(|c| c.notification_endpoint.as_ref());
        let token = record
            .sealed_ping_token
            .as_ref()
            .and_then(|sealed| self.cipher.open(sealed, id.as_str()).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let (Some(endpoint), Some(token)) = (endpoint, token) else {
            tracing::warn!(auth_req = %tag, client_id = %record.client_id, "no ping endpoint or token; ping dropped");
            return Ok(Step::Done);
        };
        match self.pinger.ping(endpoint, &token, id.as_str()).await {
            Ok(()) => {
                crate::metrics::delivered("ping", "ok");
                tracing::info!(auth_req = %tag, client_id = %record.client_id, "client pinged");
                Ok(Step::Done)
            }
            Err(NotifyError::Retryable(reason) | NotifyError::RetryAfter { reason, .. }) => {
                crate::metrics::delivered("ping", "retry");
                Ok(Step::RetryLater(reason))
            }
            Err(NotifyError::Permanent(reason) | NotifyError::Gone(reason)) => {
                crate::metrics::delivered("ping", "refused");
                tracing::warn!(auth_req = %tag, client_id = %record.client_id, %reason,
                    "client refused the ping; it can still poll");
                Ok(Step::Done)
            }
        }
    }
}
