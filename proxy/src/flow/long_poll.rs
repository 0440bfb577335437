//! Long polling (CIBA Core §7.3): a poll of a pending request is held until
//! the request is decided, on whichever instance, or `ciba.long_poll_secs`
//! pass. It answers the moment the user decides and spares the client most
//! of its polls. Each instance holds at most `ciba.long_poll_max_waiting`
//! polls; past that, polls answer at once as without long polling. On
//! shutdown every waiting poll answers at once.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use super::Flow;
use crate::clients::Client;
use crate::domain::AuthReqId;
use crate::error::OAuthError;
use crate::store::Status;
use crate::upstream::TokenSet;

pub struct LongPoll {
    wait: Duration,
    slots: Arc<Semaphore>,
    stopping: watch::Sender<bool>,
}

impl LongPoll {
    /// `None` when `wait` is zero: long polling is off.
    pub fn new(wait: Duration, max_waiting: usize) -> Option<Self> {
        (!wait.is_zero()).then(|| Self {
            wait,
            slots: Arc::new(Semaphore::new(max_waiting)),
            stopping: watch::channel(false).0,
        })
    }

    /// The longest a poll waits, seconds (for discovery).
    pub fn wait_secs(&self) -> u64 {
        self.wait.as_secs()
    }

    /// Answers every waiting poll now, and every later one at once.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

impl Flow {
    /// Holds a poll of a pending request until its decision is announced or
    /// the wait ends, then looks once more (without pacing: the client
    /// waited, so the poll it sends next is not judged too fast either).
    /// Still pending: `authorization_pending`, counted like any other.
    pub(super) async fn wait_for_decision(
        &self,
        long_poll: &LongPoll,
        client: &Client,
        id: &AuthReqId,
    ) -> Result<TokenSet, OAuthError> {
        let mut stopping = long_poll.stopping.subscribe();
        let Ok(_slot) = long_poll.slots.clone().try_acquire_owned() else {
            return still_pending();
        };
        if *stopping.borrow() {
            return still_pending();
        }
        let watch = self.decisions.watch(id);
        let decided = watch.notify().notified();
        tokio::pin!(decided);
        decided.as_mut().enable();
        // The decision may have landed between the poll and the watch.
        let still_pending = matches!(self.store.get(id).await?, Some((_, Status::Pending)));
        if still_pending {
            tokio::select! {
                _ = decided => {}
                _ = tokio::time::sleep(long_poll.wait) => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        }
        let attempt = crate::crypto::random_token(16);
        let outcome = self
            .store
            .recheck(id, &client.id, &attempt, self.clock.now_ms())
            .await?;
        self.answer(id, &attempt, outcome).await
    }
}

/// A poll answered pending without a second look (no slot free, or
/// shutting down): the same answer and count as [`Flow::answer`]'s.
fn still_pending() -> Result<TokenSet, OAuthError> {
    crate::metrics::polled("pending");
    Err(OAuthError::AuthorizationPending)
}
