//! Abuse resistance at `/bc-authorize`: an endpoint that can push a login
//! prompt to anyone's phone must not be usable to flood a client's quota or
//! a user's phone (push bombing, OWASP ASVS V2.7.8). The limits are counted
//! in the store, so they hold across instances, and a user's limits are
//! keyed by a normalised hint, so other spellings of one name share them.
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::configuration::LimitSettings;
use crate::error::OAuthError;
use crate::store::Quotas;

const WINDOW_SECS: u64 = 60;

pub struct Limits {
    per_client_per_minute: u64,
    pending_per_user: u64,
    notifications_per_user_per_minute: u64,
}

/// The user a hint names, for counting: NFKC, format characters (zero
/// width, bidi controls, BOM) removed, trimmed and case-folded, so
/// `Alice`, ` alice` and `alice\u{200B}` are one user. The hint itself is
/// sent on as it came.
fn normalised(login_hint: &str) -> String {
    login_hint
        .nfkc()
        .filter(|c| c.general_category() != GeneralCategory::Format)
        .collect::<String>()
        .trim()
        .to_lowercase()
}

/// The user a hint names, as a hash of the normalised hint: what store keys
/// and the audit trail carry instead of the hint (personal data).
pub fn user_hash(login_hint: &str) -> String {
    hex::encode(&Sha256::digest(normalised(login_hint).as_bytes())[..16])
}

/// A store key for one of the user's limits.
fn user_key(kind: &str, login_hint: &str) -> String {
    format!("{kind}:{}", user_hash(login_hint))
}

/// The key of `key`'s window for the calendar minute of `now_ms`.
fn window_key(key: &str, now_ms: u64) -> String {
    format!("{key}:{}", now_ms / 1000 / WINDOW_SECS)
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            per_client_per_minute: settings.requests_per_client_per_minute,
            pending_per_user: settings.pending_per_user,
            notifications_per_user_per_minute: settings.notifications_per_user_per_minute,
        }
    }

    /// Counts one backchannel request by `client_id` (429 past the limit).
    pub async fn admit_client(
        &self,
        store: &dyn Quotas,
        client_id: &str,
        now_ms: u64,
    ) -> Result<(), OAuthError> {
        let counted = self
            .count_per_minute(
                store,
                &format!("rate:{client_id}"),
                self.per_client_per_minute,
                now_ms,
            )
            .await?;
        counted.map_err(|retry_after| {
            tracing::warn!(client_id, "backchannel request rate limit reached");
            crate::metrics::limit_hit("requests_per_client");
            OAuthError::RateLimited {
                retry_after,
                description: format!(
                    "at most {} backchannel requests per minute for this client; retry in {retry_after} s",
                    self.per_client_per_minute
                ),
            }
        })
    }

    /// Counts one push to the user the hint names, whichever client asks
    /// (429 past the limit): freed pending slots must not let one client
    /// push a user again and again.
    pub async fn admit_notification(
        &self,
        store: &dyn Quotas,
        login_hint: &str,
        now_ms: u64,
    ) -> Result<(), OAuthError> {
        let key = user_key("pushes", login_hint);
        let counted = self
            .count_per_minute(store, &key, self.notifications_per_user_per_minute, now_ms)
            .await?;
        counted.map_err(|retry_after| {
            tracing::warn!("notifications per user limit reached");
            crate::metrics::limit_hit("notifications_per_user");
            OAuthError::RateLimited {
                retry_after,
                description: format!(
                    "this user has been sent {} requests in the last minute; retry in {retry_after} s",
                    self.notifications_per_user_per_minute
                ),
            }
        })
    }

    /// Takes back the push [`Self::admit_notification`] counted at `now_ms`
    /// for a request that was not accepted after all: no push went out.
    /// Also when that count failed: a stalled store may still run it, and
    /// this runs after it. Best effort.
    pub async fn give_back_notification(&self, store: &dyn Quotas, login_hint: &str, now_ms: u64) {
        if self.notifications_per_user_per_minute == 0 {
            return;
        }
        let window = window_key(&user_key("pushes", login_hint), now_ms);
        if let Err(e) = store.uncount(&window, WINDOW_SECS).await {
            tracing::warn!(error = %e, "could not give back a push count; it ends with its minute");
        }
    }

    /// One event in this calendar minute's window of `key`; past `limit`,
    /// the seconds until the window ends. A limit of 0 is off.
    async fn count_per_minute(
        &self,
        store: &dyn Quotas,
        key: &str,
        limit: u64,
        now_ms: u64,
    ) -> Result<Result<(), u64>, OAuthError> {
        if limit == 0 {
            return Ok(Ok(()));
        }
        let count = store.count(&window_key(key, now_ms), WINDOW_SECS).await?;
        if count > limit {
            return Ok(Err(WINDOW_SECS - (now_ms / 1000) % WINDOW_SECS));
        }
        Ok(Ok(()))
    }

    /// Holds one of the user's pending slots for request `id` until it
    /// expires (403 `access_denied` when the user has too many).
    pub async fn reserve_user(
        &self,
        store: &dyn Quotas,
        login_hint: &str,
        id: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), OAuthError> {
        if self.pending_per_user == 0 {
            return Ok(());
        }
        let key = user_key("pending", login_hint);
        if !store
            .take_slot(&key, id, expires_at_ms, now_ms, self.pending_per_user)
            .await?
        {
            tracing::warn!("pending requests per user limit reached");
            crate::metrics::limit_hit("pending_per_user");
            return Err(OAuthError::AccessDenied(format!(
                "this user already has {} pending requests; wait for one to finish",
                self.pending_per_user
            )));
        }
        Ok(())
    }

    /// Frees the user's slot once the request has an outcome, or when it
    /// was not accepted after all. Also when taking it failed: a stalled
    /// store may still run that, and this runs after it.
    pub async fn release_user(&self, store: &dyn Quotas, login_hint: &str, id: &str) {
        if self.pending_per_user == 0 {
            return;
        }
        if let Err(e) = store.free_slot(&user_key("pending", login_hint), id).await {
            tracing::warn!(error = %e, "could not free a pending slot; it frees itself at expiry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_name_share_a_key() {
        let key = user_key("pending", "alice");
        for spelling in [
            "Alice",
            " alice ",
            "ALICE",
            "alice\u{200B}",
            "\u{FEFF}alice",
            "al\u{202E}ice",
            "\u{FF41}lice", // fullwidth a
        ] {
            assert_eq!(user_key("pending", spelling), key, "{spelling:?}");
        }
        assert_ne!(user_key("pending", "bob"), key);
        assert_ne!(user_key("pushes", "alice"), key);
    }
}
