//! The single-instance [`Accounts`]: maps under a mutex, keyed like the
//! Redis backend (per user hash, per did), swept as they are used.
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::accounts::{Accounts, Device, Enrolment, HistoryEntry};
use super::StoreError;
use crate::clock::Clock;
use crate::domain::AuthReqId;
use crate::limits::user_hash;

/// Sweep expired enrolments at most this often.
const SWEEP_EVERY_MS: u64 = 30_000;

#[derive(Debug, Default)]
struct Inner {
    /// did → enrolment
    enrolments: HashMap<String, Enrolment>,
    /// did → device
    devices: HashMap<String, Device>,
    /// user hash → e-mail address
    emails: HashMap<String, String>,
    /// user hash → (request, expires at)
    requests: HashMap<String, Vec<(AuthReqId, u64)>>,
    /// user hash → (how long entries are kept, entries oldest first)
    history: HashMap<String, (u64, Vec<HistoryEntry>)>,
    last_sweep_ms: u64,
}

impl Inner {
    fn sweep(&mut self, now: u64) {
        if now.saturating_sub(self.last_sweep_ms) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep_ms = now;
        self.enrolments.retain(|_, e| now < e.expires_at_ms);
        self.requests.retain(|_, ids| {
            ids.retain(|(_, until)| now < *until);
            !ids.is_empty()
        });
        self.history.retain(|_, (keep_ms, entries)| {
            let oldest = now.saturating_sub(*keep_ms);
            entries.retain(|e| e.at_ms >= oldest);
            !entries.is_empty()
        });
    }
}

#[derive(Clone)]
pub struct MemoryAccounts {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
}

impl MemoryAccounts {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::default(),
            clock,
        }
    }
}

#[async_trait]
impl Accounts for MemoryAccounts {
    async fn offer_enrolment(&self, enrolment: &Enrolment) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner.sweep(self.clock.now_ms());
        inner
            .enrolments
            .insert(enrolment.did.clone(), enrolment.clone());
        Ok(())
    }

    async fn enrolment(&self, did: &str) -> Result<Option<Enrolment>, StoreError> {
        Ok(self.inner.lock().enrolments.get(did).cloned())
    }

    async fn enrol(
        &self,
        device: &Device,
        challenge_digest: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock();
        let promised = inner.enrolments.get(&device.did).is_some_and(|e| {
            now_ms < e.expires_at_ms
                && e.challenge_digest == challenge_digest
                && user_hash(&e.user) == user_hash(&device.user)
        });
        if !promised || inner.devices.contains_key(&device.did) {
            return Ok(false);
        }
        inner.enrolments.remove(&device.did);
        inner.devices.insert(device.did.clone(), device.clone());
        Ok(true)
    }

    async fn device(&self, did: &str) -> Result<Option<Device>, StoreError> {
        Ok(self.inner.lock().devices.get(did).cloned())
    }

    async fn devices(&self, user: &str) -> Result<Vec<Device>, StoreError> {
        let user = user_hash(user);
        let mut devices: Vec<Device> = self
            .inner
            .lock()
            .devices
            .values()
            .filter(|d| user_hash(&d.user) == user)
            .cloned()
            .collect();
        devices.sort_by(|a, b| (a.registered_at_ms, &a.did).cmp(&(b.registered_at_ms, &b.did)));
        Ok(devices)
    }

    async fn touch_device(&self, did: &str, now_ms: u64) -> Result<(), StoreError> {
        if let Some(device) = self.inner.lock().devices.get_mut(did) {
            device.last_used_at_ms = now_ms;
        }
        Ok(())
    }

    async fn remove_device(&self, did: &str) -> Result<bool, StoreError> {
        Ok(self.inner.lock().devices.remove(did).is_some())
    }

    async fn drop_push(&self, did: &str) -> Result<(), StoreError> {
        if let Some(device) = self.inner.lock().devices.get_mut(did) {
            device.push = None;
        }
        Ok(())
    }

    async fn set_email(&self, user: &str, email: &str) -> Result<(), StoreError> {
        self.inner
            .lock()
            .emails
            .insert(user_hash(user), email.to_owned());
        Ok(())
    }

    async fn email(&self, user: &str) -> Result<Option<String>, StoreError> {
        Ok(self.inner.lock().emails.get(&user_hash(user)).cloned())
    }

    async fn note_request(
        &self,
        user: &str,
        id: &AuthReqId,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner.sweep(self.clock.now_ms());
        let ids = inner.requests.entry(user_hash(user)).or_default();
        ids.retain(|(other, _)| other != id);
        ids.push((id.clone(), expires_at_ms));
        Ok(())
    }

    async fn requests(&self, user: &str, now_ms: u64) -> Result<Vec<AuthReqId>, StoreError> {
        let mut inner = self.inner.lock();
        let Some(ids) = inner.requests.get_mut(&user_hash(user)) else {
            return Ok(Vec::new());
        };
        ids.retain(|(_, until)| now_ms < *until);
        let mut live = ids.clone();
        // Latest expiry first; ties by id, as Redis orders equal scores.
        live.sort_by(|(a, a_until), (b, b_until)| {
            (b_until, b.as_str()).cmp(&(a_until, a.as_str()))
        });
        Ok(live.into_iter().map(|(id, _)| id).collect())
    }

    async fn record_history(
        &self,
        user: &str,
        entry: &HistoryEntry,
        keep_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let oldest = now_ms.saturating_sub(keep_ms);
        let mut inner = self.inner.lock();
        inner.sweep(now_ms);
        let (kept_for, entries) = inner.history.entry(user_hash(user)).or_default();
        *kept_for = keep_ms;
        entries.push(entry.clone());
        entries.retain(|e| e.at_ms >= oldest);
        entries.sort_by_key(|e| e.at_ms);
        Ok(())
    }

    async fn history(&self, user: &str, since_ms: u64) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self
            .inner
            .lock()
            .history
            .get(&user_hash(user))
            .map(|(_, entries)| {
                entries
                    .iter()
                    .rev()
                    .filter(|e| e.at_ms >= since_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}
