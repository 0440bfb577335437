//! PLACEHOLDER on branch `channels` until the `devices` branch's accounts
//! store is merged (its `accounts store:` commit replaces this file): the
//! shared interface from the brief, and an `Accounts` that knows nobody.
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::AuthReqId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub did: String,
    pub user: String,
    pub name: String,
    pub model: String,
    pub jwk: String,
    pub push: Option<PushTarget>,
    pub registered_at_ms: u64,
    pub last_used_at_ms: u64,
}
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PushTarget {
    Fcm { token: String },
    Webpush { subscription: WebPushSubscription },
}
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushSubscription {
    pub endpoint: String,
    pub keys: WebPushKeys,
}
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushKeys {
    pub p256dh: String,
    pub auth: String,
}
pub struct Enrolment {
    pub did: String,
    pub user: String,
    pub challenge_digest: String,
    pub expires_at_ms: u64,
}
pub struct HistoryEntry {
    pub at_ms: u64,
    pub client_id: String,
    pub client_name: String,
    pub binding_message: Option<String>,
    pub scope: String,
    pub outcome: String,
}

#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    async fn offer_enrolment(&self, enrolment: &Enrolment) -> Result<(), StoreError>;
    async fn enrol(
        &self,
        device: &Device,
        challenge_digest: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError>;
    async fn device(&self, did: &str) -> Result<Option<Device>, StoreError>;
    async fn devices(&self, user: &str) -> Result<Vec<Device>, StoreError>;
    async fn touch_device(&self, did: &str, now_ms: u64) -> Result<(), StoreError>;
    async fn remove_device(&self, did: &str) -> Result<bool, StoreError>;
    async fn drop_push(&self, did: &str) -> Result<(), StoreError>;
    async fn set_email(&self, user: &str, email: &str) -> Result<(), StoreError>;
    async fn email(&self, user: &str) -> Result<Option<String>, StoreError>;
    async fn note_request(
        &self,
        user: &str,
        id: &AuthReqId,
        expires_at_ms: u64,
    ) -> Result<(), StoreError>;
    async fn requests(&self, user: &str, now_ms: u64) -> Result<Vec<AuthReqId>, StoreError>;
    async fn record_history(
        &self,
        user: &str,
        entry: &HistoryEntry,
        keep_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    async fn history(&self, user: &str, since_ms: u64) -> Result<Vec<HistoryEntry>, StoreError>;
}

/// Knows nobody (placeholder).
pub struct NoAccounts;

#[async_trait]
impl Accounts for NoAccounts {
    async fn offer_enrolment(&self, _: &Enrolment) -> Result<(), StoreError> {
        Ok(())
    }
    async fn enrol(&self, _: &Device, _: &str, _: u64) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn device(&self, _: &str) -> Result<Option<Device>, StoreError> {
        Ok(None)
    }
    async fn devices(&self, _: &str) -> Result<Vec<Device>, StoreError> {
        Ok(Vec::new())
    }
    async fn touch_device(&self, _: &str, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    async fn remove_device(&self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    async fn drop_push(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn set_email(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn email(&self, _: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    async fn note_request(&self, _: &str, _: &AuthReqId, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    async fn requests(&self, _: &str, _: u64) -> Result<Vec<AuthReqId>, StoreError> {
        Ok(Vec::new())
    }
    async fn record_history(
        &self,
        _: &str,
        _: &HistoryEntry,
        _: u64,
        _: u64,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn history(&self, _: &str, _: u64) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(Vec::new())
    }
}
