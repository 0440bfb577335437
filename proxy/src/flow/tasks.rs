//! The background side of a request's life, run from the durable job
//! queue ([`crate::jobs`]) by whichever instance leases the job: telling the
//! user's device that a request waits, and pinging a ping-mode client once
//! the outcome is recorded.
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Flow;
use crate::crypto::log_tag;
use crate::domain::AuthReqId;
use crate::jobs::{Step, TaskHandler};
use crate::notifier::{NotifyError, UserNotification};
use crate::store::{Outcome, Status, StoreError};

/// What a job does. Stored sealed; the wire format only has to survive a
/// rolling upgrade, so add variants and fields, never rename them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Deliver the sign-in link to the user's device.
    NotifyUser {
        auth_req_id: AuthReqId,
        notification: UserNotification,
    },
    /// Tell a ping-mode client that its request has an outcome.
    PingClient { auth_req_id: AuthReqId },
}

#[async_trait]
impl TaskHandler<Task> for Flow {
    async fn run(&self, task: &Task) -> Result<Step, StoreError> {
        match task {
            Task::NotifyUser {
                auth_req_id,
                notification,
            } => self.notify_user(auth_req_id, notification).await,
            Task::PingClient { auth_req_id } => self.ping_client(auth_req_id).await,
        }
    }

    fn describe(&self, task: &Task) -> (&'static str, String) {
        match task {
            Task::NotifyUser { auth_req_id, .. } => {
                ("user notification", log_tag(auth_req_id.as_str()))
            }
            Task::PingClient { auth_req_id } => ("client ping", log_tag(auth_req_id.as_str())),
        }
    }
}

impl Flow {
    async fn notify_user(
        &self,
        id: &AuthReqId,
        notification: &UserNotification,
    ) -> Result<Step, StoreError> {
        let Some(record) = self.pending(id).await? else {
            // Already answered, expired or gone: nothing to tell the user.
            return Ok(Step::Done);
        };
        let tag = log_tag(id.as_str());
        match self.notifier.notify(notification).await {
            Ok(()) => {
                tracing::info!(auth_req = %tag, "user notified");
                Ok(Step::Done)
            }
            Err(NotifyError::Retryable(reason)) => Ok(Step::RetryLater(reason)),
            Err(NotifyError::Permanent(reason)) => {
                tracing::error!(auth_req = %tag, %reason, "user notification refused; ending the request");
                let outcome = Outcome::Denied {
                    reason: "the user's authentication device could not be notified".into(),
                };
                self.decide(&record, &outcome).await?;
                Ok(Step::Done)
            }
        }
    }

    async fn ping_client(&self, id: &AuthReqId) -> Result<Step, StoreError> {
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
                tracing::info!(auth_req = %tag, client_id = %record.client_id, "client pinged");
                Ok(Step::Done)
            }
            Err(NotifyError::Retryable(reason)) => Ok(Step::RetryLater(reason)),
            Err(NotifyError::Permanent(reason)) => {
                tracing::warn!(auth_req = %tag, client_id = %record.client_id, %reason,
                    "client refused the ping; it can still poll");
                Ok(Step::Done)
            }
        }
    }
}
