//! Durable background work: the user's webhook and the client's ping are
//! jobs in the store's queue, not tasks in one process's memory. Every
//! instance runs a worker that leases due jobs; a job whose instance dies is
//! leased again by another once its lease runs out (at-least-once delivery;
//! the request state changes they cause are idempotent). Payloads are sealed,
//! since they carry the authorization URL's state and the client's bearer
//! notification token.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::clients::ClientRegistry;
use crate::clock::Clock;
use crate::configuration::WorkerSettings;
use crate::crypto::{log_tag, random_token, TokenCipher};
use crate::domain::AuthReqId;
use crate::limits::Limits;
use crate::notifier::{Notifier, NotifyError, UserNotification};
use crate::ping::ClientPinger;
use crate::store::{Outcome, QueuedJob, RequestRecord, Status, Store, StoreError};

/// How long a stopping worker waits for jobs in flight before handing them back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a job does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Deliver the authorization URL to the user's device.
    NotifyUser {
        auth_req_id: String,
        notification: UserNotification,
    },
    /// Tell a ping-mode client that its request has an outcome.
    PingClient { auth_req_id: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    task: Task,
    attempt: u32,
    /// Give up after this (the request's expiry), Unix milliseconds.
    deadline_ms: u64,
}

/// What became of one attempt.
enum Step {
    Done,
    RetryLater(String),
}

/// Backoff between attempts: 0.5 s doubling up to 30 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6)).min(30_000))
}

pub struct Jobs {
    store: Arc<dyn Store>,
    limits: Arc<Limits>,
    cipher: TokenCipher,
    clock: Arc<dyn Clock>,
    clients: ClientRegistry,
    notifier: Arc<dyn Notifier>,
    pinger: ClientPinger,
    settings: WorkerSettings,
    wake: Notify,
}

impl Jobs {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        limits: Arc<Limits>,
        cipher: TokenCipher,
        clock: Arc<dyn Clock>,
        clients: ClientRegistry,
        notifier: Arc<dyn Notifier>,
        pinger: ClientPinger,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            store,
            limits,
            cipher,
            clock,
            clients,
            notifier,
            pinger,
            settings,
            wake: Notify::new(),
        }
    }

    /// Queues `task` until `deadline_ms` and wakes this instance's worker.
    pub async fn enqueue(&self, task: Task, deadline_ms: u64) -> Result<String, StoreError> {
        let id = self.enqueue_quietly(task, deadline_ms).await?;
        self.wake.notify_one();
        Ok(id)
    }

    async fn enqueue_quietly(&self, task: Task, deadline_ms: u64) -> Result<String, StoreError> {
        let id = random_token(16);
        let now = self.clock.now_ms();
        let envelope = Envelope {
            task,
            attempt: 0,
            deadline_ms,
        };
        let job = self.seal(&id, &envelope)?;
        let ttl = deadline_ms.saturating_sub(now).max(1000);
        self.store.enqueue(&job, now, ttl).await?;
        Ok(id)
    }

    /// Records how a request ended and, for a ping-mode client, queues its
    /// ping in the same breath: the ping is queued first and only sent once
    /// the outcome is visible, so a crash in between loses nothing.
    pub async fn finish_request(
        &self,
        record: &RequestRecord,
        outcome: &Outcome,
    ) -> Result<bool, StoreError> {
        let ping = match &record.sealed_ping_token {
            Some(_) => {
                let task = Task::PingClient {
                    auth_req_id: record.id.to_string(),
                };
                Some(self.enqueue_quietly(task, record.expires_at_ms).await?)
            }
            None => None,
        };
        let finished = self
            .store
            .finish(&record.id, outcome, self.clock.now_ms())
            .await?;
        if finished {
            self.limits
                .release_user(self.store.as_ref(), &record.login_hint, record.id.as_str())
                .await;
        }
        match (&ping, finished) {
            (Some(_), true) => self.wake.notify_one(),
            (Some(job), false) => self.store.complete(job).await?,
            (None, _) => {}
        }
        Ok(finished)
    }

    fn seal(&self, id: &str, envelope: &Envelope) -> Result<QueuedJob, StoreError> {
        let json = serde_json::to_vec(envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(QueuedJob {
            id: id.to_owned(),
            payload: self.cipher.seal(&json, id),
        })
    }

    fn open(&self, job: &QueuedJob) -> Result<Envelope, StoreError> {
        let json = self
            .cipher
            .open(&job.payload, &job.id)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Leases and runs due jobs until `shutdown` turns true, then hands the
    /// jobs still in flight back to the queue for another instance.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let in_flight: Arc<Mutex<HashMap<String, QueuedJob>>> = Arc::default();
        let mut store_down = false;
        while !*shutdown.borrow() {
            while tasks.try_join_next().is_some() {}
            let room = self.settings.concurrency.saturating_sub(tasks.len());
            let mut full = false;
            if room > 0 {
                match self
                    .store
                    .lease(self.clock.now_ms(), self.settings.lease_ms, room)
                    .await
                {
                    Ok(jobs) => {
                        if store_down {
                            tracing::info!("job queue reachable again");
                            store_down = false;
                        }
                        full = jobs.len() == room;
                        for job in jobs {
                            in_flight.lock().insert(job.id.clone(), job.clone());
                            let (this, in_flight) = (self.clone(), in_flight.clone());
                            tasks.spawn(async move {
                                this.handle(&job).await;
                                in_flight.lock().remove(&job.id);
                            });
                        }
                    }
                    Err(e) if !store_down => {
                        tracing::warn!(error = %e, "cannot lease jobs; retrying");
                        store_down = true;
                    }
                    Err(_) => {}
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(self.settings.poll_ms)) => {}
            }
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
        let unfinished: Vec<QueuedJob> = in_flight.lock().drain().map(|(_, job)| job).collect();
        let now = self.clock.now_ms();
        for job in &unfinished {
            if let Err(e) = self.store.reschedule(job, now).await {
                tracing::warn!(error = %e, "could not hand a job back; it returns when its lease ends");
            }
        }
        tracing::info!(handed_back = unfinished.len(), "job worker stopped");
    }

    async fn handle(&self, job: &QueuedJob) {
        let mut envelope = match self.open(job) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::error!(error = %e, "dropping a job that cannot be read");
                let _ = self.store.complete(&job.id).await;
                return;
            }
        };
        let (auth_req_id, what) = match &envelope.task {
            Task::NotifyUser { auth_req_id, .. } => (auth_req_id.clone(), "user notification"),
            Task::PingClient { auth_req_id } => (auth_req_id.clone(), "client ping"),
        };
        let tag = log_tag(&auth_req_id);
        let step = match &envelope.task {
            Task::NotifyUser { notification, .. } => {
                self.notify_user(&auth_req_id, notification).await
            }
            Task::PingClient { .. } => self.ping_client(&auth_req_id).await,
        };
        let result = match step {
            // The store is unreachable: the lease runs out and the job returns.
            Err(e) => {
                tracing::warn!(auth_req = %tag, error = %e, "{what} postponed");
                return;
            }
            Ok(Step::Done) => self.store.complete(&job.id).await,
            Ok(Step::RetryLater(reason)) => {
                let wait = backoff(envelope.attempt);
                let now = self.clock.now_ms();
                if now + wait.as_millis() as u64 >= envelope.deadline_ms {
                    tracing::error!(auth_req = %tag, %reason, attempts = envelope.attempt + 1,
                        "{what} never delivered before the request expired");
                    self.store.complete(&job.id).await
                } else {
                    tracing::warn!(auth_req = %tag, %reason, attempt = envelope.attempt, "{what} failed; retrying");
                    envelope.attempt += 1;
                    match self.seal(&job.id, &envelope) {
                        Ok(next) => {
                            self.store
                                .reschedule(&next, now + wait.as_millis() as u64)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(auth_req = %tag, error = %e, "could not update the job; it returns when its lease ends");
        }
    }

    /// The request, if it still waits for the user.
    async fn pending_request(
        &self,
        auth_req_id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let Ok(id) = AuthReqId::parse(auth_req_id) else {
            return Ok(None);
        };
        Ok(match self.store.get(&id).await? {
            Some((record, Status::Pending)) if self.clock.now_ms() < record.expires_at_ms => {
                Some(record)
            }
            _ => None,
        })
    }

    async fn notify_user(
        &self,
        auth_req_id: &str,
        notification: &UserNotification,
    ) -> Result<Step, StoreError> {
        let Some(record) = self.pending_request(auth_req_id).await? else {
            // Already answered, expired or gone: nothing to tell the user.
            return Ok(Step::Done);
        };
        let tag = log_tag(auth_req_id);
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
                self.finish_request(&record, &outcome).await?;
                Ok(Step::Done)
            }
        }
    }

    async fn ping_client(&self, auth_req_id: &str) -> Result<Step, StoreError> {
        let Ok(id) = AuthReqId::parse(auth_req_id) else {
            return Ok(Step::Done);
        };
        let tag = log_tag(auth_req_id);
        let record = match self.store.get(&id).await? {
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
            .and_then(|sealed| self.cipher.open(sealed, auth_req_id).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let (Some(endpoint), Some(token)) = (endpoint, token) else {
            tracing::warn!(auth_req = %tag, client_id = %record.client_id, "no ping endpoint or token; ping dropped");
            return Ok(Step::Done);
        };
        match self.pinger.ping(endpoint, &token, auth_req_id).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_millis(1000));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }
}
