//! What the signed-in user sees on the account page, read for that user
//! only: the requests waiting for them (as the approval page shows each,
//! with its handle), their devices, their history, and a fresh offer to
//! register a device. And the one change the page makes itself: removing
//! one of the user's own devices.
use super::enrolment::{self, Offer};
use super::Account;
use crate::flow::Approval;
use crate::store::accounts::{Device, HistoryEntry};
use crate::store::StoreError;

/// Everything the page shows.
#[derive(Debug)]
pub struct Overview {
    /// Pending, unexpired requests: each one's handle and approval page.
    pub pending: Vec<(String, Approval)>,
    pub devices: Vec<Device>,
    /// Newest first, for `[account] history_days`.
    pub history: Vec<HistoryEntry>,
    pub offer: Offer,
}

/// Why a device was not removed.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoveRefused {
    /// Not one of this user's devices (or none at all): 404, nothing changes.
    NotYours,
    Unavailable,
}

impl From<StoreError> for RemoveRefused {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "account page: store unavailable");
        Self::Unavailable
    }
}

impl Account {
    /// The page for `user`. Each render saves a new enrolment offer.
    pub async fn overview(&self, user: &str) -> Result<Overview, StoreError> {
        let now_ms = self.clock.now_ms();
        let accounts = self.flow.accounts.as_ref();
        let pending = self.flow.approval_pages(user).await?;
        let devices = accounts.devices(user).await?;
        let history = accounts
            .history(user, now_ms.saturating_sub(self.history_ms))
            .await?;
        let offer =
            enrolment::offer(accounts, user, &self.issuer, self.challenge_ttl_ms, now_ms).await?;
        Ok(Overview {
            pending,
            devices,
            history,
            offer,
        })
    }

    /// Removes device `did` if it is `user`'s.
    pub async fn remove_device(&self, user: &str, did: &str) -> Result<(), RemoveRefused> {
        let accounts = self.flow.accounts.as_ref();
        let yours = accounts
            .device(did)
            .await?
            .is_some_and(|d| crate::limits::user_hash(&d.user) == crate::limits::user_hash(user));
        if !yours {
            tracing::warn!("account page: removal of a device that is not the user's; refused");
            return Err(RemoveRefused::NotYours);
        }
        accounts.remove_device(did).await?;
        tracing::info!(
            did = %crate::crypto::log_tag(did),
            "device removed on the account page"
        );
        Ok(())
    }
}
