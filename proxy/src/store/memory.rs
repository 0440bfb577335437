//! The single-instance store: a map under a mutex, swept as it is used.
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    Binding, Confirmation, Health, JobQueue, Outcome, PollOutcome, QueueStats, QueuedJob, Quotas,
    ReplayGuard, RequestRecord, Requests, Status, StoreError, CONFIRM_WINDOW_MS,
    EXPIRED_RETENTION_MS, NOTIFICATION_SENT, SLOW_DOWN_STEP_SECS,
};
use crate::clock::Clock;
use crate::domain::AuthReqId;

/// Sweep expired entries at most this often.
const SWEEP_EVERY_MS: u64 = 30_000;

#[derive(Debug)]
struct Entry {
    record: RequestRecord,
    status: Status,
    last_poll_ms: Option<u64>,
    sealed_tokens: Option<String>,
    /// The poll attempt the tokens are reserved for, and when it took them.
    taken_by: Option<(String, u64)>,
    /// The fingerprint of the callback response bound to the request.
    callback: Option<String>,
    /// The notification state ([`Requests::notification`]).
    notified: Option<String>,
    /// Handed out by [`Requests::take_expired`] already.
    expiry_taken: bool,
}

#[derive(Debug, Default)]
struct Inner {
    requests: HashMap<AuthReqId, Entry>,
    once: HashMap<String, u64>,
    /// id → (due at, payload, expires at)
    jobs: HashMap<String, (u64, String, u64)>,
    /// key → (count, window ends)
    counters: HashMap<String, (u64, u64)>,
    /// key → member → held until
    slots: HashMap<String, HashMap<String, u64>>,
    last_sweep_ms: u64,
}

impl Inner {
    fn sweep(&mut self, now: u64) {
        if now.saturating_sub(self.last_sweep_ms) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep_ms = now;
        self.requests
            .retain(|_, e| now < e.record.expires_at_ms + EXPIRED_RETENTION_MS);
        self.once.retain(|_, until| now < *until);
        self.jobs.retain(|_, (_, _, until)| now < *until);
        self.counters.retain(|_, (_, until)| now < *until);
        self.slots.retain(|_, held| {
            held.retain(|_, until| now < *until);
            !held.is_empty()
        });
    }
}

#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::default(),
            clock,
        }
    }
}

impl MemoryStore {
    /// One poll, atomically under the lock; `pace` records the poll and
    /// enforces the interval. A long poll's second look does neither and
    /// forgets the last poll: the client waited, its next poll is on time.
    fn run_poll(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
        pace: bool,
    ) -> PollOutcome {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.requests.get_mut(id) else {
            return PollOutcome::Unknown;
        };
        if entry.record.client_id != client_id
            || now_ms >= entry.record.expires_at_ms + EXPIRED_RETENTION_MS
        {
            return PollOutcome::Unknown;
        }
        if now_ms >= entry.record.expires_at_ms {
            entry.sealed_tokens = None;
            return PollOutcome::Expired;
        }
        match &entry.status {
            Status::Pending if !pace => {
                entry.last_poll_ms = None;
                PollOutcome::Pending
            }
            Status::Pending => {
                let last = entry.last_poll_ms.replace(now_ms);
                if last.is_some_and(|last| now_ms < last + entry.record.interval_secs * 1000) {
                    entry.record.interval_secs += SLOW_DOWN_STEP_SECS;
                    PollOutcome::SlowDown {
                        interval_secs: entry.record.interval_secs,
                    }
                } else {
                    PollOutcome::Pending
                }
            }
            // The tokens stay until this attempt confirms it answered with them.
            Status::Approved | Status::Issued => match entry.sealed_tokens.clone() {
                Some(tokens) => {
                    entry.status = Status::Issued;
                    entry.taken_by = Some((attempt.to_owned(), now_ms));
                    PollOutcome::Tokens(tokens)
                }
                None if entry.status == Status::Approved => PollOutcome::Expired,
                None => PollOutcome::Redeemed,
            },
            Status::Denied { reason, .. } => PollOutcome::Denied(reason.clone()),
        }
    }
}

#[async_trait]
impl Requests for MemoryStore {
    async fn create(&self, record: &RequestRecord, now_ms: u64) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner.sweep(now_ms);
        inner.requests.insert(
            record.id.clone(),
            Entry {
                record: record.clone(),
                status: Status::Pending,
                last_poll_ms: None,
                sealed_tokens: None,
                taken_by: None,
                callback: None,
                notified: None,
                expiry_taken: false,
            },
        );
        Ok(())
    }

    /// Memory outlives no upgrade.
    async fn legacy_state_owner(&self, _state: &str) -> Result<Option<AuthReqId>, StoreError> {
        Ok(None)
    }

    async fn bind_callback(
        &self,
        id: &AuthReqId,
        fingerprint: &str,
    ) -> Result<Binding, StoreError> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.requests.get_mut(id) else {
            return Ok(Binding::Gone);
        };
        let bound = entry.callback.get_or_insert_with(|| fingerprint.to_owned());
        Ok(if bound == fingerprint {
            Binding::Bound
        } else {
            Binding::Other
        })
    }

    async fn get(&self, id: &AuthReqId) -> Result<Option<(RequestRecord, Status)>, StoreError> {
        let now = self.clock.now_ms();
        let inner = self.inner.lock();
        Ok(inner
            .requests
            .get(id)
            .filter(|e| now < e.record.expires_at_ms + EXPIRED_RETENTION_MS)
            .map(|e| (e.record.clone(), e.status.clone())))
    }

    async fn finish(
        &self,
        id: &AuthReqId,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.requests.get_mut(id) else {
            return Ok(false);
        };
        if entry.status != Status::Pending || now_ms >= entry.record.expires_at_ms {
            return Ok(false);
        }
        match outcome {
            Outcome::Approved { sealed_tokens } => {
                entry.status = Status::Approved;
                entry.sealed_tokens = Some(sealed_tokens.clone());
            }
            Outcome::Denied { reason, kind } => {
                entry.status = Status::Denied {
                    reason: reason.clone(),
                    kind: *kind,
                }
            }
        }
        Ok(true)
    }

    async fn poll(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        Ok(self.run_poll(id, client_id, attempt, now_ms, true))
    }

    async fn recheck(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        Ok(self.run_poll(id, client_id, attempt, now_ms, false))
    }

    async fn confirm_tokens(
        &self,
        id: &AuthReqId,
        attempt: &str,
    ) -> Result<Confirmation, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let Some(entry) = inner.requests.get_mut(id) else {
            return Ok(Confirmation::Unconfirmed);
        };
        Ok(match &entry.taken_by {
            Some((by, at)) if by == attempt => {
                if now <= at + CONFIRM_WINDOW_MS {
                    entry.sealed_tokens = None;
                    Confirmation::Confirmed
                } else {
                    Confirmation::Unconfirmed
                }
            }
            _ if entry.sealed_tokens.is_none() => Confirmation::IssuedElsewhere,
            _ => Confirmation::Unconfirmed,
        })
    }

    async fn recent(&self, now_ms: u64, max: usize) -> Result<Vec<AuthReqId>, StoreError> {
        let inner = self.inner.lock();
        let mut kept: Vec<_> = inner
            .requests
            .values()
            .filter(|e| now_ms < e.record.expires_at_ms + EXPIRED_RETENTION_MS)
            .map(|e| (e.record.created_at_ms, e.record.id.clone()))
            .collect();
        kept.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
        Ok(kept.into_iter().take(max).map(|(_, id)| id).collect())
    }

    async fn pending(&self, now_ms: u64) -> Result<u64, StoreError> {
        let inner = self.inner.lock();
        Ok(inner
            .requests
            .values()
            .filter(|e| e.status == Status::Pending && now_ms < e.record.expires_at_ms)
            .count() as u64)
    }

    async fn take_expired(&self, now_ms: u64, max: usize) -> Result<Vec<AuthReqId>, StoreError> {
        let mut inner = self.inner.lock();
        Ok(inner
            .requests
            .values_mut()
            .filter(|e| {
                e.status == Status::Pending && e.record.expires_at_ms <= now_ms && !e.expiry_taken
            })
            .take(max)
            .map(|e| {
                e.expiry_taken = true;
                e.record.id.clone()
            })
            .collect())
    }

    async fn notification(
        &self,
        id: &AuthReqId,
        update: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let Some(entry) = inner
            .requests
            .get_mut(id)
            .filter(|e| now < e.record.expires_at_ms + EXPIRED_RETENTION_MS)
        else {
            return Ok(None);
        };
        if let Some(update) = update {
            if entry.notified.as_deref() != Some(NOTIFICATION_SENT) {
                entry.notified = Some(update.to_owned());
            }
        }
        Ok(entry.notified.clone())
    }
}

#[async_trait]
impl ReplayGuard for MemoryStore {
    async fn use_once(&self, key: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        inner.sweep(now);
        if inner.once.get(key).is_some_and(|until| now < *until) {
            return Ok(false);
        }
        inner.once.insert(
            key.to_owned(),
            now.saturating_add(ttl_secs.saturating_mul(1000)),
        );
        Ok(true)
    }

    async fn forget_once(&self, key: &str) -> Result<(), StoreError> {
        self.inner.lock().once.remove(key);
        Ok(())
    }
}

#[async_trait]
impl JobQueue for MemoryStore {
    async fn enqueue(
        &self,
        job: &QueuedJob,
        visible_at_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let until = self.clock.now_ms() + ttl_ms;
        self.inner
            .lock()
            .jobs
            .insert(job.id.clone(), (visible_at_ms, job.payload.clone(), until));
        Ok(())
    }

    async fn lease(
        &self,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<Vec<QueuedJob>, StoreError> {
        let mut inner = self.inner.lock();
        inner.sweep(now_ms);
        let mut due: Vec<_> = inner
            .jobs
            .iter()
            .filter(|(_, (at, _, until))| *at <= now_ms && now_ms < *until)
            .map(|(id, (at, _, _))| (*at, id.clone()))
            .collect();
        due.sort_unstable();
        due.truncate(max);
        let mut leased = Vec::with_capacity(due.len());
        for (_, id) in due {
            if let Some(job) = inner.jobs.get_mut(&id) {
                job.0 = now_ms + lease_ms;
                leased.push(QueuedJob {
                    id,
                    payload: job.1.clone(),
                });
            }
        }
        Ok(leased)
    }

    async fn reschedule(&self, job: &QueuedJob, visible_at_ms: u64) -> Result<(), StoreError> {
        if let Some(entry) = self.inner.lock().jobs.get_mut(&job.id) {
            entry.0 = visible_at_ms;
            entry.1 = job.payload.clone();
        }
        Ok(())
    }

    async fn expedite(&self, job_id: &str, now_ms: u64) -> Result<bool, StoreError> {
        match self.inner.lock().jobs.get_mut(job_id) {
            Some(entry) if now_ms < entry.2 => {
                entry.0 = now_ms;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn complete(&self, job_id: &str) -> Result<(), StoreError> {
        self.inner.lock().jobs.remove(job_id);
        Ok(())
    }

    async fn queue_stats(&self, now_ms: u64) -> Result<QueueStats, StoreError> {
        let mut inner = self.inner.lock();
        inner.sweep(now_ms);
        let live = inner.jobs.values().filter(|(_, _, until)| now_ms < *until);
        let (queued_jobs, oldest_due_ms) = live
            .fold((0, None::<u64>), |(n, oldest), (at, _, _)| {
                (n + 1, Some(oldest.map_or(*at, |o| o.min(*at))))
            });
        Ok(QueueStats {
            queued_jobs,
            oldest_due_ms,
        })
    }
}

#[async_trait]
impl Quotas for MemoryStore {
    async fn count(&self, key: &str, window_secs: u64) -> Result<u64, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        inner.sweep(now);
        let entry = inner
            .counters
            .entry(key.to_owned())
            .or_insert((0, now.saturating_add(window_secs.saturating_mul(1000))));
        entry.0 += 1;
        Ok(entry.0)
    }

    async fn uncount(&self, key: &str, _window_secs: u64) -> Result<(), StoreError> {
        if let Some(entry) = self.inner.lock().counters.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
        Ok(())
    }

    async fn take_slot(
        &self,
        key: &str,
        member: &str,
        until_ms: u64,
        now_ms: u64,
        max: u64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock();
        let held = inner.slots.entry(key.to_owned()).or_default();
        held.retain(|_, until| now_ms < *until);
        if held.len() as u64 >= max {
            return Ok(false);
        }
        held.insert(member.to_owned(), until_ms);
        Ok(true)
    }

    async fn free_slot(&self, key: &str, member: &str) -> Result<(), StoreError> {
        if let Some(held) = self.inner.lock().slots.get_mut(key) {
            held.remove(member);
        }
        Ok(())
    }
}

#[async_trait]
impl Health for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
