//! A request that nobody decided expires: counted, audited and added to
//! the user's history once, when its time comes, whether or not anyone
//! looks at it again. Each instance sweeps the store's pending index
//! (which holds every open request already, so this costs nothing per
//! request); a poll or a page that sees the expiry first shares the
//! once-only marker.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Flow;
use crate::audit;
use crate::crypto::log_tag;
use crate::domain::AuthReqId;
use crate::store::{RequestRecord, Status};

/// How long the marker that a request's expiry was audited lives: past the
/// time an expired request is kept at all.
const EXPIRED_AUDIT_SECS: u64 = crate::store::EXPIRED_RETENTION_MS / 1000 + 60;

/// How often an instance sweeps: an expiry is observed at most this late.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Requests taken per store call; a backlog is worked off call by call.
const SWEEP_BATCH: usize = 100;

impl Flow {
    /// Sweeps for expired requests until `shutdown` says stop.
    pub async fn watch_expiries(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut store_down = false;
        while !*shutdown.borrow() {
            match self.sweep_expired().await {
                Ok(()) if store_down => {
                    tracing::info!("expiry sweep: store reachable again");
                    store_down = false;
                }
                Ok(()) => {}
                Err(e) if !store_down => {
                    tracing::warn!(error = %e, "expiry sweep: store unreachable; retrying");
                    store_down = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Observes every expiry the store hands this instance now.
    async fn sweep_expired(&self) -> Result<(), crate::store::StoreError> {
        loop {
            let ids = self
                .store
                .take_expired(self.clock.now_ms(), SWEEP_BATCH)
                .await?;
            for id in &ids {
                // Decided meanwhile, or already forgotten: nothing expired.
                if let Some((record, Status::Pending)) = self.store.get(id).await? {
                    self.expired(&record).await;
                }
            }
            if ids.len() < SWEEP_BATCH {
                return Ok(());
            }
        }
    }

    /// True the first time request `id` is found expired undecided (by the
    /// sweep, a poll or the account page), false ever after.
    pub(super) async fn first_sight_of_expiry(&self, id: &AuthReqId) -> bool {
        let first = format!("audit-expired:{}", log_tag(id.as_str()));
        matches!(
            self.store.use_once(&first, EXPIRED_AUDIT_SECS).await,
            Ok(true)
        )
    }

    /// A request found expired undecided: the metric, the audit event and
    /// the user's history, once.
    pub(crate) async fn expired(&self, record: &RequestRecord) {
        if self.first_sight_of_expiry(&record.id).await {
            self.expired_seen(record).await;
        }
    }

    /// What [`Flow::expired`] does, for a caller that holds the marker.
    pub(super) async fn expired_seen(&self, record: &RequestRecord) {
        crate::metrics::expired();
        audit::record(audit::Step::Expired, record, self.clock.now_ms());
        self.remember(
            record,
            crate::account::history::EXPIRED,
            record.expires_at_ms,
        )
        .await;
    }
}
