//! Decisions announced to long polls (CIBA Core §7.3 allows a token request
//! to be held until the outcome is known). When a request is decided, the
//! deciding instance announces it; every instance wakes its polls waiting
//! on that request. With Redis the announcement goes through pub/sub, so a
//! poll waiting on one instance wakes when another decided; in memory it is
//! a local wake-up. On a Redis Cluster a PUBLISH reaches the subscribers of
//! every node, so each instance listens on any one node (the next, if that
//! one goes away); with Sentinel it listens on the current primary. A
//! missed announcement (Redis briefly gone) costs only
//! time: the waiting poll looks again when its wait ends.
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::connection::{RedisConn, Subscriber};
use crate::domain::AuthReqId;

/// How long the subscriber waits before it connects again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Where this instance learns of decisions, and tells the others.
pub struct Decisions {
    waiting: Mutex<HashMap<String, Weak<Notify>>>,
    announce: Option<(RedisConn, String)>,
}

/// A poll's interest in one request; dropped, it stops listening.
pub struct Watch(Arc<Notify>);

impl Watch {
    pub fn notify(&self) -> &Notify {
        &self.0
    }
}

impl Decisions {
    /// One instance: decisions are announced in process.
    pub fn local() -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::default(),
            announce: None,
        })
    }

    /// Many instances on one Redis: announcements go through the channel
    /// `{prefix}:decided`, heard by a subscriber task of this instance.
    pub fn redis(subscriber: Subscriber, publisher: RedisConn, prefix: &str) -> Arc<Self> {
        let channel = format!("{prefix}:decided");
        let decisions = Arc::new(Self {
            waiting: Mutex::default(),
            announce: Some((publisher, channel.clone())),
        });
        tokio::spawn(listen(subscriber, channel, Arc::downgrade(&decisions)));
        decisions
    }

    /// Starts listening for request `id`'s decision. Create it before the
    /// last look at the store, so a decision in between is not missed.
    pub fn watch(&self, id: &AuthReqId) -> Watch {
        let mut waiting = self.waiting.lock();
        waiting.retain(|_, w| w.strong_count() > 0);
        // On the channel a request is named by its digest, never the id itself.
        let key = id.digest();
        if let Some(existing) = waiting.get(&key).and_then(Weak::upgrade) {
            return Watch(existing);
        }
        let notify = Arc::new(Notify::new());
        waiting.insert(key, Arc::downgrade(&notify));
        Watch(notify)
    }

    /// Request `id` was decided: wake its polls, here and on every instance.
    pub async fn announce(&self, id: &AuthReqId) {
        let key = id.digest();
        match &self.announce {
            Some((publisher, channel)) => {
                let mut conn = publisher.clone();
                let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(&key)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = published {
                    tracing::warn!(error = %e, "could not announce a decision; long polls see it when they look again");
                    self.wake(&key);
                }
            }
            None => self.wake(&key),
        }
    }

    fn wake(&self, key: &str) {
        let waiter = self.waiting.lock().get(key).and_then(Weak::upgrade);
        if let Some(notify) = waiter {
            notify.notify_waiters();
        }
    }
}

/// Hears every instance's announcements until the proxy stops.
async fn listen(subscriber: Subscriber, channel: String, decisions: Weak<Decisions>) {
    let mut attempt = 0;
    loop {
        match subscriber.pubsub(attempt).await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(decisions) = decisions.upgrade() else {
                            return;
                        };
                        if let Ok(key) = message.get_payload::<String>() {
                            decisions.wake(&key);
                        }
                    }
                    tracing::warn!("the decision channel closed; subscribing again");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to decisions; retrying"),
            },
            Err(e) => {
                tracing::debug!(error = %e, "cannot connect the decision subscriber; retrying")
            }
        }
        if decisions.strong_count() == 0 {
            return;
        }
        attempt += 1;
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}
