//! What the proxy keeps about users beyond one request: their registered
//! authentication devices, the enrolments (QR codes) that let a device
//! register, their e-mail address, the requests waiting for them and their
//! history. A narrow trait of its own, beside [`super::Store`], with the
//! same two backends (memory for one instance, Redis for many).
//!
//! Every per-user key is made from [`crate::limits::user_hash`] of the user
//! (the normalised login hint), never from the user's name itself; device
//! keys are made from the device id (`did`), which the proxy assigns.
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;
use crate::domain::AuthReqId;

/// A registered authentication device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub did: String,
    /// The subject-claim value it belongs to (== the login hint of that user).
    pub user: String,
    pub name: String,
    pub model: String,
    /// The device's public key, JWK JSON (ES256 P-256, or RS256 >= 2048 bits).
    pub jwk: String,
    pub push: Option<PushTarget>,
    pub registered_at_ms: u64,
    pub last_used_at_ms: u64,
}

/// Where a device is reached by push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PushTarget {
    Fcm { token: String },
    Webpush { subscription: WebPushSubscription },
}

/// A browser's Push API subscription (RFC 8030 endpoint, RFC 8291 keys).
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

/// A QR code's promise: device `did` may register for `user` with the
/// challenge whose SHA-256 (hex) is `challenge_digest`, until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    pub did: String,
    pub user: String,
    pub challenge_digest: String,
    pub expires_at_ms: u64,
}

/// One request's outcome, as the user's history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at_ms: u64,
    pub client_id: String,
    pub client_name: String,
    pub binding_message: Option<String>,
    pub scope: String,
    /// `approved`, `denied`, `expired` or `failed`.
    pub outcome: String,
}

/// The digest an enrolment keeps of its challenge: SHA-256, hex.
pub fn challenge_digest(challenge: &str) -> String {
    hex::encode(Sha256::digest(challenge.as_bytes()))
}

#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// Saves an enrolment until its `expires_at_ms` (replacing an earlier
    /// one for the same did).
    async fn offer_enrolment(&self, enrolment: &Enrolment) -> Result<(), StoreError>;

    /// The unused enrolment offered for `did`, if any (it may have expired:
    /// [`Accounts::enrol`] decides).
    async fn enrolment(&self, did: &str) -> Result<Option<Enrolment>, StoreError>;

    /// Registers `device` when its did has an unexpired enrolment with this
    /// digest (and for device.user); the enrolment is used up only then.
    /// Returns false, changing nothing, otherwise.
    async fn enrol(
        &self,
        device: &Device,
        challenge_digest: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    async fn device(&self, did: &str) -> Result<Option<Device>, StoreError>;

    /// The user's devices, oldest registration first.
    async fn devices(&self, user: &str) -> Result<Vec<Device>, StoreError>;

    /// Records a good call by the device (a removed device stays removed).
    async fn touch_device(&self, did: &str, now_ms: u64) -> Result<(), StoreError>;

    /// Unregisters the device. Returns false when it was not registered.
    async fn remove_device(&self, did: &str) -> Result<bool, StoreError>;

    /// The push service said the token/subscription is gone: keep the
    /// device, drop its push target.
    async fn drop_push(&self, did: &str) -> Result<(), StoreError>;

    async fn set_email(&self, user: &str, email: &str) -> Result<(), StoreError>;

    async fn email(&self, user: &str) -> Result<Option<String>, StoreError>;

    /// Request `id` is this user's until `expires_at_ms` (the account
    /// page's and devices' pending list).
    async fn note_request(
        &self,
        user: &str,
        id: &AuthReqId,
        expires_at_ms: u64,
    ) -> Result<(), StoreError>;

    /// The user's noted requests still unexpired at `now_ms`, newest first
    /// (latest expiry first). Fetch each with `Requests::get`: some may be
    /// decided or gone.
    async fn requests(&self, user: &str, now_ms: u64) -> Result<Vec<AuthReqId>, StoreError>;

    /// Adds an entry to the user's history and forgets entries older than
    /// `keep_ms` before `now_ms`.
    async fn record_history(
        &self,
        user: &str,
        entry: &HistoryEntry,
        keep_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// The user's history entries at or after `since_ms`, newest first.
    async fn history(&self, user: &str, since_ms: u64) -> Result<Vec<HistoryEntry>, StoreError>;
}
