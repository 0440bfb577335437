//! Every store trait (see [`Store`]) around one backend: times each call
//! and counts its errors (`ciba_store_calls_total`,
//! `ciba_store_call_seconds`), whichever backend that is.
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    Binding, Confirmation, Health, JobQueue, Outcome, PollOutcome, QueueStats, QueuedJob, Quotas,
    ReplayGuard, RequestRecord, Requests, Status, Store, StoreError,
};
use crate::domain::AuthReqId;

pub struct Metered(pub Arc<dyn Store>);

async fn timed<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = call.await;
    crate::metrics::store_call(operation, result.is_ok(), started.elapsed());
    result
}

#[async_trait]
impl Requests for Metered {
    async fn create(&self, record: &RequestRecord, now_ms: u64) -> Result<(), StoreError> {
        timed("create", self.0.create(record, now_ms)).await
    }

    async fn legacy_state_owner(&self, state: &str) -> Result<Option<AuthReqId>, StoreError> {
        timed("legacy_state_owner", self.0.legacy_state_owner(state)).await
    }

    async fn bind_callback(
        &self,
        id: &AuthReqId,
        fingerprint: &str,
    ) -> Result<Binding, StoreError> {
        timed("bind_callback", self.0.bind_callback(id, fingerprint)).await
    }

    async fn get(&self, id: &AuthReqId) -> Result<Option<(RequestRecord, Status)>, StoreError> {
        timed("get", self.0.get(id)).await
    }

    async fn finish(
        &self,
        id: &AuthReqId,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        timed("finish", self.0.finish(id, outcome, now_ms)).await
    }

    async fn poll(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        timed("poll", self.0.poll(id, client_id, attempt, now_ms)).await
    }

    async fn recheck(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        timed("recheck", self.0.recheck(id, client_id, attempt, now_ms)).await
    }

    async fn confirm_tokens(
        &self,
        id: &AuthReqId,
        attempt: &str,
    ) -> Result<Confirmation, StoreError> {
        timed("confirm_tokens", self.0.confirm_tokens(id, attempt)).await
    }

    async fn recent(&self, now_ms: u64, max: usize) -> Result<Vec<AuthReqId>, StoreError> {
        timed("recent", self.0.recent(now_ms, max)).await
    }

    async fn pending(&self, now_ms: u64) -> Result<u64, StoreError> {
        timed("pending", self.0.pending(now_ms)).await
    }

    async fn take_expired(&self, now_ms: u64, max: usize) -> Result<Vec<AuthReqId>, StoreError> {
        timed("take_expired", self.0.take_expired(now_ms, max)).await
    }

    async fn notification(
        &self,
        id: &AuthReqId,
        update: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        timed("notification", self.0.notification(id, update)).await
    }
}

#[async_trait]
impl ReplayGuard for Metered {
    async fn use_once(&self, key: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        timed("use_once", self.0.use_once(key, ttl_secs)).await
    }

    async fn forget_once(&self, key: &str) -> Result<(), StoreError> {
        timed("forget_once", self.0.forget_once(key)).await
    }
}

#[async_trait]
impl JobQueue for Metered {
    async fn enqueue(
        &self,
        job: &QueuedJob,
        visible_at_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        timed("enqueue", self.0.enqueue(job, visible_at_ms, ttl_ms)).await
    }

    async fn lease(
        &self,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<Vec<QueuedJob>, StoreError> {
        timed("lease", self.0.lease(now_ms, lease_ms, max)).await
    }

    async fn reschedule(&self, job: &QueuedJob, visible_at_ms: u64) -> Result<(), StoreError> {
        timed("reschedule", self.0.reschedule(job, visible_at_ms)).await
    }

    async fn expedite(&self, job_id: &str, now_ms: u64) -> Result<bool, StoreError> {
        timed("expedite", self.0.expedite(job_id, now_ms)).await
    }

    async fn complete(&self, job_id: &str) -> Result<(), StoreError> {
        timed("complete", self.0.complete(job_id)).await
    }

    async fn queue_stats(&self, now_ms: u64) -> Result<QueueStats, StoreError> {
        timed("queue_stats", self.0.queue_stats(now_ms)).await
    }
}

#[async_trait]
impl Quotas for Metered {
    async fn count(&self, key: &str, window_secs: u64) -> Result<u64, StoreError> {
        timed("count", self.0.count(key, window_secs)).await
    }

    async fn uncount(&self, key: &str, window_secs: u64) -> Result<(), StoreError> {
        timed("uncount", self.0.uncount(key, window_secs)).await
    }

    async fn take_slot(
        &self,
        key: &str,
        member: &str,
        until_ms: u64,
        now_ms: u64,
        max: u64,
    ) -> Result<bool, StoreError> {
        timed(
            "take_slot",
            self.0.take_slot(key, member, until_ms, now_ms, max),
        )
        .await
    }

    async fn free_slot(&self, key: &str, member: &str) -> Result<(), StoreError> {
        timed("free_slot", self.0.free_slot(key, member)).await
    }
}

#[async_trait]
impl Health for Metered {
    async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", self.0.ping()).await
    }
}
