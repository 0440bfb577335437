//! Request and token state behind narrow traits, one per concern
//! ([`Requests`], [`ReplayGuard`], [`JobQueue`], [`Quotas`], [`Health`],
//! and [`Accounts`] for users), with two backends: in memory (one instance)
//! and Redis (many instances). Both keep the same contract, which the
//! end-to-end suite checks against each.
//!
//! A request moves `pending → approved → issued` or `pending → denied`; it
//! expires at `expires_at` whatever its state. A poll checks ownership and
//! expiry, enforces the interval and hands the sealed tokens out at most
//! once (that last part atomically).
use async_trait::async_trait;

use crate::domain::AuthReqId;

pub mod accounts;
mod accounts_memory;
mod accounts_redis;
pub mod connect;
mod connection;
pub mod decisions;
mod memory;
mod metered;
mod per_thread;
mod redis;

pub use self::accounts::{
    Accounts, Device, Enrolment, HistoryEntry, PushTarget, WebPushKeys, WebPushSubscription,
};
pub use self::accounts_memory::MemoryAccounts;
pub use self::accounts_redis::RedisAccounts;
pub use self::connect::{connect, Backends, StoreTarget};
pub use self::decisions::Decisions;
pub use self::memory::MemoryStore;
pub use self::metered::Metered;

pub use self::redis::RedisStore;

/// The auth_req_ids among ids Redis gave back; one that does not parse
/// (written by something else under the prefix) is skipped.
fn parse_ids(ids: &[String]) -> Vec<AuthReqId> {
    ids.iter()
        .filter_map(|id| AuthReqId::parse(id).ok())
        .collect()
}

/// How long an expired request is kept so a late poll still hears
/// `expired_token` rather than `invalid_grant`.
pub const EXPIRED_RETENTION_MS: u64 = 300_000;

/// CIBA Core §11: each `slow_down` raises the interval by 5 seconds.
pub const SLOW_DOWN_STEP_SECS: u64 = 5;

/// How long after a poll took the tokens its handler may still confirm that
/// it answered with them. A confirmation that arrives later (the store
/// stalled and ran it late, after the handler had answered 503) changes
/// nothing, so the client's retry still gets the tokens.
pub const CONFIRM_WINDOW_MS: u64 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store returned malformed data: {0}")]
    Corrupt(String),
}

impl From<StoreError> for crate::error::OAuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                Self::TemporarilyUnavailable(
                    "the service is temporarily unavailable; retry shortly".into(),
                )
            }
            StoreError::Corrupt(_) => Self::internal(e),
        }
    }
}

/// What the proxy keeps about one backchannel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub id: AuthReqId,
    pub client_id: String,
    pub login_hint: String,
    pub scope: String,
    /// When the request was opened, Unix milliseconds.
    pub created_at_ms: u64,
    /// What the upstream kind remembers about this request (the PKCE
    /// verifier and nonce, or the IdP's own auth_req_id), sealed; the store
    /// never reads it.
    pub sealed_upstream: String,
    pub expires_at_ms: u64,
    pub interval_secs: u64,
    /// Ping mode: the client's `client_notification_token`, sealed.
    pub sealed_ping_token: Option<String>,
    /// What the user is asked to compare with the consumption device.
    pub binding_message: Option<String>,
    /// Whether the user signs in through a link the proxy delivers (the
    /// authorization URL, or a native-CIBA IdP's own link), where the
    /// approval page's "Approve" leads.
    pub user_link: UserLink,
}

/// Where a request's sign-in link comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLink {
    /// None: the IdP reaches the user itself.
    None,
    /// Made again from the sealed upstream context when it is needed
    /// ([`crate::upstream::Upstream::user_link`]); not stored.
    FromContext,
    /// Stored sealed, by a version that kept links (read during an upgrade).
    Sealed(String),
}

/// What `/metrics` samples from the job queue on each scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs in the queue, due or not.
    pub queued_jobs: u64,
    /// When the earliest-due job became (or becomes) due, Unix ms.
    pub oldest_due_ms: Option<u64>,
}

/// A unit of background work (a notification to deliver), opaque to the
/// store: the payload is sealed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub id: String,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved,
    Denied { reason: String, kind: Denial },
    Issued,
}

impl Status {
    fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied { .. } => "denied",
            Self::Issued => "issued",
        }
    }
}

/// Why a request was denied, in a word: what the user's page said, so a
/// retried callback shows the same page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The user said no.
    Declined,
    /// Someone else signed in.
    WrongUser,
    /// Anything else: an IdP error, a failed exchange, an unreachable device.
    Failed,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Declined => "declined",
            Self::WrongUser => "wrong_user",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "declined" => Self::Declined,
            "wrong_user" => Self::WrongUser,
            _ => Self::Failed,
        }
    }
}

/// How a login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The tokens, sealed with the token cipher.
    Approved { sealed_tokens: String },
    /// Why the request was refused, in words for the client.
    Denied { reason: String, kind: Denial },
}

/// What became of a poll's claim on the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// This attempt answers with the tokens; nobody else ever will.
    Confirmed,
    /// Another attempt confirmed first: the tokens are issued.
    IssuedElsewhere,
    /// Not confirmed (another attempt holds the tokens now, or this came
    /// too late); the tokens stay for a retry.
    Unconfirmed,
}

/// Whether a callback's response (its code or error, fingerprinted) is the
/// one bound to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The first response for this request, or the same one again (a retry).
    Bound,
    /// A different response for a state already answered: forged or replayed.
    Other,
    /// The request is gone.
    Gone,
}

/// The answer to one poll at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// Unknown, long gone, or another client's: indistinguishable on purpose.
    Unknown,
    Pending,
    SlowDown {
        interval_secs: u64,
    },
    Expired,
    Denied(String),
    /// The tokens were handed out already.
    Redeemed,
    /// The sealed tokens, reserved for this poll's attempt. They are gone
    /// for good once [`Requests::confirm_tokens`] succeeds; until then a later
    /// poll (a retry) takes them over.
    Tokens(String),
}

/// Backchannel requests: opened, bound to their callback, decided, polled
/// and redeemed, and listed for the admin API.
#[async_trait]
pub trait Requests: Send + Sync + 'static {
    /// Saves a new pending request. Its callback `state` needs no key: it
    /// is the request's id, sealed.
    async fn create(&self, record: &RequestRecord, now_ms: u64) -> Result<(), StoreError>;

    /// The request a callback `state` stored by an older version (which
    /// kept a `state` key per request) belongs to: a sign-in that started
    /// before an upgrade still lands. The state is not consumed.
    async fn legacy_state_owner(&self, state: &str) -> Result<Option<AuthReqId>, StoreError>;

    /// Binds the callback response with this fingerprint to the request,
    /// unless another one is bound already.
    async fn bind_callback(&self, id: &AuthReqId, fingerprint: &str)
        -> Result<Binding, StoreError>;

    /// The request and its status, if it is still kept.
    async fn get(&self, id: &AuthReqId) -> Result<Option<(RequestRecord, Status)>, StoreError>;

    /// Records how a pending, unexpired request ended. Returns false (and
    /// changes nothing) when the request is gone, expired or already ended.
    async fn finish(
        &self,
        id: &AuthReqId,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// One poll by `client_id`, atomically. Tokens are reserved for
    /// `attempt` (and taken from any earlier attempt that never confirmed).
    async fn poll(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError>;

    /// A long poll's second look: [`Requests::poll`] without enforcing the
    /// interval, and forgetting the last poll of a pending request, so the
    /// client's next poll is never `slow_down` (it waited already).
    async fn recheck(
        &self,
        id: &AuthReqId,
        client_id: &str,
        attempt: &str,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError>;

    /// The poll `attempt` answers with the tokens: delete them for good.
    /// Not confirmed when another attempt took them over, or when this
    /// comes more than [`CONFIRM_WINDOW_MS`] after the poll (the store
    /// stalled): the tokens then stay for the client's retry.
    async fn confirm_tokens(
        &self,
        id: &AuthReqId,
        attempt: &str,
    ) -> Result<Confirmation, StoreError>;

    /// The ids of up to `max` requests still kept, newest first (the admin
    /// API's list). Fetch each with [`Requests::get`]: one may be gone by then.
    async fn recent(&self, now_ms: u64, max: usize) -> Result<Vec<AuthReqId>, StoreError>;

    /// How many requests are pending and unexpired at `now_ms`, across
    /// every instance (for `/metrics`).
    async fn pending(&self, now_ms: u64) -> Result<u64, StoreError>;

    /// Up to `max` requests whose expiry came while they were pending, each
    /// handed to exactly one caller across every instance, so the flow
    /// observes an expiry when it comes (not when someone next looks) at
    /// no cost per request: the pending index already holds them.
    async fn take_expired(&self, now_ms: u64, max: usize) -> Result<Vec<AuthReqId>, StoreError>;

    /// The request's notification state (a word the flow chooses, for the
    /// admin API), after setting it to `update` when given: one field on
    /// the request, kept as long as the request. `sent` is never replaced
    /// (once a delivery reached the user, another channel's failure does
    /// not undo that). `None` when the request is gone or has none.
    async fn notification(
        &self,
        id: &AuthReqId,
        update: Option<&str>,
    ) -> Result<Option<String>, StoreError>;
}

/// The notification state that [`Requests::notification`] never replaces.
pub const NOTIFICATION_SENT: &str = "sent";

/// One-time values (a request object's or client assertion's `jti`, a
/// lease on a follow-up), remembered for as long as they must not recur.
#[async_trait]
pub trait ReplayGuard: Send + Sync + 'static {
    /// Marks a one-time value (a request object's `jti`) as used for
    /// `ttl_secs`. Returns false when it was used before.
    async fn use_once(&self, key: &str, ttl_secs: u64) -> Result<bool, StoreError>;

    /// Forgets a one-time value (a lease given back early).
    async fn forget_once(&self, key: &str) -> Result<(), StoreError>;
}

/// Background work (notifications to deliver) that survives a worker's
/// death: leased, retried, completed.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Queues `job` to become due at `visible_at_ms`; it is dropped unless
    /// completed within `ttl_ms`.
    async fn enqueue(
        &self,
        job: &QueuedJob,
        visible_at_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError>;

    /// Takes up to `max` due jobs and hides each from every worker until
    /// `now_ms + lease_ms`; a job whose worker dies becomes due again then.
    async fn lease(
        &self,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<Vec<QueuedJob>, StoreError>;

    /// Replaces a queued job's payload and makes it due at `visible_at_ms`
    /// (a retry, or handing a lease back). A job that has expired stays gone.
    async fn reschedule(&self, job: &QueuedJob, visible_at_ms: u64) -> Result<(), StoreError>;

    /// Makes a queued job due at `now_ms`, keeping its payload; a job that
    /// is gone stays gone. Whether there was a job to move.
    async fn expedite(&self, job_id: &str, now_ms: u64) -> Result<bool, StoreError>;

    /// Removes a job for good.
    async fn complete(&self, job_id: &str) -> Result<(), StoreError>;

    /// The queue's length and earliest due time (for `/metrics`).
    async fn queue_stats(&self, now_ms: u64) -> Result<QueueStats, StoreError>;
}

/// Rate limits and concurrency caps shared by every instance.
#[async_trait]
pub trait Quotas: Send + Sync + 'static {
    /// Counts one event in the fixed window `key` (which names the window)
    /// lasting `window_secs`; returns the count so far, this one included.
    async fn count(&self, key: &str, window_secs: u64) -> Result<u64, StoreError>;

    /// Takes back one event counted in the window `key` (a request that was
    /// not accepted after all). Plain commands, no script: sent after a
    /// [`Quotas::count`] that timed out, it runs after it even when a
    /// stalled store runs both late.
    async fn uncount(&self, key: &str, window_secs: u64) -> Result<(), StoreError>;

    /// Takes one of at most `max` slots in `key` for `member` until
    /// `until_ms` (slots past their time are free again). Returns false,
    /// taking nothing, when all are held.
    async fn take_slot(
        &self,
        key: &str,
        member: &str,
        until_ms: u64,
        now_ms: u64,
        max: u64,
    ) -> Result<bool, StoreError>;

    /// Frees `member`'s slot in `key`.
    async fn free_slot(&self, key: &str, member: &str) -> Result<(), StoreError>;
}

/// The store's liveness, for `/health`.
#[async_trait]
pub trait Health: Send + Sync + 'static {
    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Every concern of the request store, as one backend implements them (the
/// memory and Redis structs, and [`Metered`] around either). Consumers take
/// the narrow trait they need.
pub trait Store: Requests + ReplayGuard + JobQueue + Quotas + Health {}

impl<T: Requests + ReplayGuard + JobQueue + Quotas + Health> Store for T {}
