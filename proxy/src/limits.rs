//! Abuse resistance at `/bc-authorize`: an endpoint that can push a login
//! prompt to anyone's phone must not be usable to flood a client's quota or
//! a user's phone. Both limits are counted in the store, so they hold
//! across instances.
use sha2::{Digest, Sha256};

use crate::configuration::LimitSettings;
use crate::error::OAuthError;
use crate::store::Store;

const WINDOW_SECS: u64 = 60;

pub struct Limits {
    per_client_per_minute: u64,
    pending_per_user: u64,
}

/// The store key of a user's pending requests; the hint itself (personal
/// data) never becomes a key.
fn user_key(login_hint: &str) -> String {
    format!(
        "pending:{}",
        hex::encode(&Sha256::digest(login_hint.as_bytes())[..16])
    )
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            per_client_per_minute: settings.requests_per_client_per_minute,
            pending_per_user: settings.pending_per_user,
        }
    }

    /// Counts one backchannel request by `client_id` (429 past the limit).
    pub async fn admit_client(
        &self,
        store: &dyn Store,
        client_id: &str,
        now_ms: u64,
    ) -> Result<(), OAuthError> {
        if self.per_client_per_minute == 0 {
            return Ok(());
        }
        let window = now_ms / 1000 / WINDOW_SECS;
        let count = store
            .count(&format!("rate:{client_id}:{window}"), WINDOW_SECS)
            .await?;
        if count > self.per_client_per_minute {
            let retry_after = WINDOW_SECS - (now_ms / 1000) % WINDOW_SECS;
            tracing::warn!(client_id, "backchannel request rate limit reached");
            return Err(OAuthError::RateLimited {
                retry_after,
                description: format!(
                    "at most {} backchannel requests per minute for this client; retry in {retry_after} s",
                    self.per_client_per_minute
                ),
            });
        }
        Ok(())
    }

    /// Holds one of the user's pending slots for request `id` until it
    /// expires (403 `access_denied` when the user has too many).
    pub async fn reserve_user(
        &self,
        store: &dyn Store,
        login_hint: &str,
        id: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), OAuthError> {
        if self.pending_per_user == 0 {
            return Ok(());
        }
        let key = user_key(login_hint);
        if !store
            .take_slot(&key, id, expires_at_ms, now_ms, self.pending_per_user)
            .await?
        {
            tracing::warn!("pending requests per user limit reached");
            return Err(OAuthError::AccessDenied(format!(
                "this user already has {} pending requests; wait for one to finish",
                self.pending_per_user
            )));
        }
        Ok(())
    }

    /// Frees the user's slot once the request has an outcome.
    pub async fn release_user(&self, store: &dyn Store, login_hint: &str, id: &str) {
        if self.pending_per_user == 0 {
            return;
        }
        if let Err(e) = store.free_slot(&user_key(login_hint), id).await {
            tracing::warn!(error = %e, "could not free a pending slot; it frees itself at expiry");
        }
    }
}
