//! Which channels reach a request's user, and where each delivery goes.
//! A request gets one delivery (one durable job) per channel that can reach
//! the hinted user: the webhook always; e-mail when an address is known;
//! FCM and Web Push once per registered device with that kind of push
//! target. The job names the channel and the device, never the address or
//! the token: those are looked up when it runs, so a push target dropped
//! meanwhile is not used again.
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::Flow;
use crate::limits::user_hash;
use crate::notifier::{email, Notifier, Recipient};
use crate::store::PushTarget;
use crate::store::StoreError;

/// One delivery of a request's notification. Stored in the job: add
/// variants, never rename them. Jobs queued before there were channels
/// carry none, and mean the webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    Webhook,
    Email,
    Fcm {
        did: String,
    },
    Webpush {
        did: String,
    },
}

impl Delivery {
    /// The channel's kind: the metrics' `channel` label and the audit's.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Email => "email",
            Self::Fcm { .. } => "fcm",
            Self::Webpush { .. } => "webpush",
        }
    }

    /// The device it goes to, if any.
    pub fn did(&self) -> Option<&str> {
        match self {
            Self::Fcm { did } | Self::Webpush { did } => Some(did),
            Self::Webhook | Self::Email => None,
        }
    }
}

/// Where a delivery goes now, looked up when its job runs.
pub(super) enum Target {
    Gateway,
    Email(String),
    Fcm(String),
    Webpush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
}

impl Target {
    pub(super) fn recipient(&self) -> Recipient<'_> {
        match self {
            Self::Gateway => Recipient::Gateway,
            Self::Email(address) => Recipient::Email(address),
            Self::Fcm(token) => Recipient::FcmToken(token),
            Self::Webpush {
                endpoint,
                p256dh,
                auth,
            } => Recipient::Subscription {
                endpoint,
                p256dh,
                auth,
            },
        }
    }
}

impl Flow {
    /// Every delivery that can reach `user` (the login hint) now.
    pub(super) async fn deliveries(&self, user: &str) -> Result<Vec<Delivery>, StoreError> {
        let channels = &self.channels;
        let mut deliveries = Vec::new();
        if channels.webhook.is_some() {
            deliveries.push(Delivery::Webhook);
        }
        if channels.email.is_some() && self.email_address(user).await?.is_some() {
            deliveries.push(Delivery::Email);
        }
        if channels.fcm.is_some() || channels.webpush.is_some() {
            for device in self.accounts.devices(user).await? {
                match device.push {
                    Some(PushTarget::Fcm { .. }) if channels.fcm.is_some() => {
                        deliveries.push(Delivery::Fcm { did: device.did })
                    }
                    Some(PushTarget::Webpush { .. }) if channels.webpush.is_some() => {
                        deliveries.push(Delivery::Webpush { did: device.did })
                    }
                    _ => {}
                }
            }
        }
        Ok(deliveries)
    }

    /// The user's e-mail address: the account's (its ID token's `email`
    /// claim), or the login hint itself when it is one.
    async fn email_address(&self, user: &str) -> Result<Option<String>, StoreError> {
        if let Some(address) = self.accounts.email(user).await? {
            return Ok(Some(address));
        }
        Ok(email::is_address(user).then(|| user.to_owned()))
    }

    /// The channel and the current target of `delivery` for `user`; `None`
    /// when it no longer reaches them (the channel was turned off, the
    /// device removed, its push target dropped, the address forgotten).
    pub(super) async fn target(
        &self,
        delivery: &Delivery,
        user: &str,
    ) -> Result<Option<(Arc<dyn Notifier>, Target)>, StoreError> {
        let channels = &self.channels;
        Ok(match delivery {
            Delivery::Webhook => channels.webhook.clone().map(|n| (n, Target::Gateway)),
            Delivery::Email => match (&channels.email, self.email_address(user).await?) {
                (Some(n), Some(address)) => Some((n.clone(), Target::Email(address))),
                _ => None,
            },
            Delivery::Fcm { did } | Delivery::Webpush { did } => {
                let device = self
                    .accounts
                    .device(did)
                    .await?
                    // Only ever the hinted user's own device.
                    .filter(|d| user_hash(&d.user) == user_hash(user));
                match (delivery, device.and_then(|d| d.push)) {
                    (Delivery::Fcm { .. }, Some(PushTarget::Fcm { token })) => {
                        channels.fcm.clone().map(|n| (n, Target::Fcm(token)))
                    }
                    (Delivery::Webpush { .. }, Some(PushTarget::Webpush { subscription })) => {
                        channels.webpush.clone().map(|n| {
                            (
                                n,
                                Target::Webpush {
                                    endpoint: subscription.endpoint,
                                    p256dh: subscription.keys.p256dh,
                                    auth: subscription.keys.auth,
                                },
                            )
                        })
                    }
                    _ => None,
                }
            }
        })
    }
}
