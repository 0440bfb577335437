//! Durable background work: jobs live in the store's queue, not in one
//! process's memory. Every instance runs a worker that leases due jobs; a
//! job whose instance dies is leased again by another once its lease runs
//! out (at-least-once delivery, so what a job does must be idempotent).
//! Payloads are sealed: they can carry an authorization URL's state or a
//! client's bearer notification token. What a job *does* is the
//! [`TaskHandler`]'s business ([`crate::flow`]); this module only queues,
//! leases, retries with backoff and hands work back on shutdown.
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::configuration::WorkerSettings;
use crate::crypto::{random_token, TokenCipher};
use crate::store::{JobQueue, QueuedJob, StoreError};

/// How long a stopping worker waits for jobs in flight before handing them back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "T: Serialize + DeserializeOwned")]
struct Envelope<T> {
    task: T,
    attempt: u32,
    /// Give up after this (the request's expiry), Unix milliseconds.
    deadline_ms: u64,
}

/// What became of one attempt at a task.
pub enum Step<T> {
    Done,
    /// Failed for now: try again after a growing backoff, until the deadline.
    RetryLater(String),
    /// Failed for now, and the other side said when to come back (an
    /// HTTP `Retry-After`): as `RetryLater`, waiting at least `after`.
    RetryAfter {
        reason: String,
        after: Duration,
    },
    /// Not finished, as planned: run `task` again after `after`, until the
    /// deadline (a periodic check, not a failure).
    Again {
        after: Duration,
        task: T,
    },
}

/// Runs one task; errors from the store leave the job to return when its
/// lease runs out.
#[async_trait]
pub trait TaskHandler<T>: Send + Sync + 'static {
    async fn run(&self, task: &T) -> Result<Step<T>, StoreError>;
    /// What the task is, for log lines (never a secret).
    fn describe(&self, task: &T) -> (&'static str, String);

    /// The task failed until its deadline: whatever must follow, follows.
    async fn gave_up(&self, _task: &T) -> Result<(), StoreError> {
        Ok(())
    }
}

/// How close to its deadline a failing job is tried one last time, and a
/// periodic one runs one last time.
const LAST_TRY_MARGIN_MS: u64 = 500;

/// When a periodic job with this deadline runs for the last time.
fn last_run_ms(deadline_ms: u64) -> u64 {
    deadline_ms.saturating_sub(LAST_TRY_MARGIN_MS)
}

/// Backoff between attempts: 0.5 s doubling up to 30 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6)).min(30_000))
}

pub struct Jobs<T> {
    store: Arc<dyn JobQueue>,
    cipher: TokenCipher,
    clock: Arc<dyn Clock>,
    settings: WorkerSettings,
    wake: Notify,
    task: PhantomData<fn() -> T>,
}

impl<T> Jobs<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub fn new(
        store: Arc<dyn JobQueue>,
        cipher: TokenCipher,
        clock: Arc<dyn Clock>,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            store,
            cipher,
            clock,
            settings,
            wake: Notify::new(),
            task: PhantomData,
        }
    }

    /// Queues `task` until `deadline_ms` and wakes this instance's worker.
    pub async fn enqueue(&self, task: T, deadline_ms: u64) -> Result<String, StoreError> {
        let id = self.enqueue_quietly(task, deadline_ms).await?;
        self.wake();
        Ok(id)
    }

    /// Queues `task` without waking the worker: the caller wakes it once
    /// what the task depends on is visible.
    pub async fn enqueue_quietly(&self, task: T, deadline_ms: u64) -> Result<String, StoreError> {
        let id = random_token(16);
        let now = self.clock.now_ms();
        self.enqueue_as(&id, task, now, deadline_ms).await?;
        Ok(id)
    }

    /// Queues `task` under a job id the caller chose, due at `due_ms`
    /// (so the caller can [`Self::expedite`] it later).
    pub async fn enqueue_as(
        &self,
        id: &str,
        task: T,
        due_ms: u64,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        // A first run planned after the deadline comes just before it.
        let due_ms = due_ms.min(last_run_ms(deadline_ms).max(now));
        let envelope = Envelope {
            task,
            attempt: 0,
            deadline_ms,
        };
        let job = self.seal(id, &envelope)?;
        let ttl = deadline_ms.saturating_sub(now).max(1000);
        self.store.enqueue(&job, due_ms, ttl).await
    }

    /// Makes a queued job due now, if it is still queued, and wakes the
    /// worker; whether it was still queued.
    pub async fn expedite(&self, id: &str) -> Result<bool, StoreError> {
        let moved = self.store.expedite(id, self.clock.now_ms()).await?;
        self.wake();
        Ok(moved)
    }

    /// Drops a queued job for good.
    pub async fn cancel(&self, job_id: &str) -> Result<(), StoreError> {
        self.store.complete(job_id).await
    }

    /// Wakes this instance's worker.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn seal(&self, id: &str, envelope: &Envelope<T>) -> Result<QueuedJob, StoreError> {
        let json = serde_json::to_vec(envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(QueuedJob {
            id: id.to_owned(),
            payload: self.cipher.seal(&json, id),
        })
    }

    fn open(&self, job: &QueuedJob) -> Result<Envelope<T>, StoreError> {
        let json = self
            .cipher
            .open(&job.payload, &job.id)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Leases and runs due jobs with `handler` until `shutdown` turns true,
    /// then hands the jobs still in flight back to the queue for another
    /// instance.
    pub async fn run<H: TaskHandler<T>>(
        self: Arc<Self>,
        handler: Arc<H>,
        mut shutdown: watch::Receiver<bool>,
    ) {
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
                            let (this, handler, in_flight) =
                                (self.clone(), handler.clone(), in_flight.clone());
                            tasks.spawn(async move {
                                this.handle(handler.as_ref(), &job).await;
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

    async fn handle<H: TaskHandler<T>>(&self, handler: &H, job: &QueuedJob) {
        let envelope = match self.open(job) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::error!(error = %e, "dropping a job that cannot be read");
                let _ = self.store.complete(&job.id).await;
                return;
            }
        };
        let (what, tag) = handler.describe(&envelope.task);
        let result = match handler.run(&envelope.task).await {
            // The store is unreachable: the lease runs out and the job returns.
            Err(e) => {
                tracing::warn!(auth_req = %tag, error = %e, "{what} postponed");
                return;
            }
            Ok(Step::Done) => self.store.complete(&job.id).await,
            Ok(Step::Again { after, task }) => {
                let now = self.clock.now_ms();
                // A run that would fall after the deadline comes just before
                // it instead: an outcome reached in the last stretch (an
                // approval after the last regular check) is still seen.
                let last = last_run_ms(envelope.deadline_ms);
                let due = (now + after.as_millis() as u64).min(last);
                if due <= now {
                    // That was the last run: the request expires on its own.
                    self.store.complete(&job.id).await
                } else {
                    let next = Envelope {
                        task,
                        attempt: 0,
                        deadline_ms: envelope.deadline_ms,
                    };
                    match self.seal(&job.id, &next) {
                        Ok(next) => self.store.reschedule(&next, due).await,
                        Err(e) => Err(e),
                    }
                }
            }
            Ok(Step::RetryLater(reason)) => {
                self.retry(handler, job, envelope, &reason, Duration::ZERO)
                    .await
            }
            Ok(Step::RetryAfter { reason, after }) => {
                self.retry(handler, job, envelope, &reason, after).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(auth_req = %tag, error = %e, "could not update the job; it returns when its lease ends");
        }
    }

    /// A failed attempt: tried again after a backoff of at least
    /// `at_least`, or given up when the deadline has come.
    async fn retry<H: TaskHandler<T>>(
        &self,
        handler: &H,
        job: &QueuedJob,
        mut envelope: Envelope<T>,
        reason: &str,
        at_least: Duration,
    ) -> Result<(), StoreError> {
        let (what, tag) = handler.describe(&envelope.task);
        let now = self.clock.now_ms();
        let left = envelope.deadline_ms.saturating_sub(now);
        // The last try comes just before the deadline, not a whole
        // backoff step early.
        let wait = backoff(envelope.attempt)
            .max(at_least)
            .min(Duration::from_millis(
                left.saturating_sub(LAST_TRY_MARGIN_MS),
            ));
        if left <= LAST_TRY_MARGIN_MS {
            tracing::error!(auth_req = %tag, %reason, attempts = envelope.attempt + 1,
                        "{what} never succeeded before its deadline");
            match handler.gave_up(&envelope.task).await {
                // The job returns when its lease ends, to give up again.
                Err(e) => Err(e),
                Ok(()) => self.store.complete(&job.id).await,
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{JobQueue, MemoryStore};
    use base64::{engine::general_purpose::STANDARD, Engine};
    use secrecy::SecretString;

    /// A check that never finishes: again every 10 s.
    struct Periodic;

    #[async_trait]
    impl TaskHandler<u32> for Periodic {
        async fn run(&self, _: &u32) -> Result<Step<u32>, StoreError> {
            Ok(Step::Again {
                after: Duration::from_secs(10),
                task: 0,
            })
        }
        fn describe(&self, _: &u32) -> (&'static str, String) {
            ("periodic check", String::new())
        }
    }

    /// Leases and runs every due job once; when the next one is due.
    async fn run_due(jobs: &Jobs<u32>, store: &MemoryStore, now: u64) -> Option<u64> {
        for job in store.lease(now, 1000, 10).await.unwrap() {
            jobs.handle(&Periodic, &job).await;
        }
        store.queue_stats(now).await.unwrap().oldest_due_ms
    }

    /// A queue in memory on a clock the test moves.
    fn queue() -> (ManualClock, Arc<MemoryStore>, Jobs<u32>) {
        let clock = ManualClock::default();
        let store = Arc::new(MemoryStore::new(Arc::new(clock.clone())));
        let key = SecretString::from(STANDARD.encode([7u8; 32]));
        let jobs = Jobs::new(
            store.clone(),
            TokenCipher::from_base64(&key).unwrap(),
            Arc::new(clock.clone()),
            WorkerSettings::default(),
        );
        (clock, store, jobs)
    }

    #[tokio::test]
    async fn a_periodic_job_runs_once_more_just_before_its_deadline() {
        let (clock, store, jobs) = queue();
        let start = clock.now_ms();
        let deadline = start + 15_500;
        jobs.enqueue_as("check", 0, start, deadline).await.unwrap();
        // Runs at 0 s and 10 s; the next (20 s) would miss the deadline, so
        // the last run comes at 15 s, and then the job is done.
        assert_eq!(run_due(&jobs, &store, start).await, Some(start + 10_000));
        clock.advance_secs(10);
        assert_eq!(
            run_due(&jobs, &store, clock.now_ms()).await,
            Some(deadline - LAST_TRY_MARGIN_MS)
        );
        clock.advance_secs(5);
        assert_eq!(run_due(&jobs, &store, clock.now_ms()).await, None);
    }

    #[tokio::test]
    async fn a_first_run_planned_past_the_deadline_comes_just_before_it() {
        let (clock, store, jobs) = queue();
        let now = clock.now_ms();
        jobs.enqueue_as("check", 0, now + 30_000, now + 2_000)
            .await
            .unwrap();
        let due = store.queue_stats(now).await.unwrap().oldest_due_ms;
        assert_eq!(due, Some(now + 2_000 - LAST_TRY_MARGIN_MS));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_millis(1000));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }
}
