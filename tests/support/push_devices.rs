//! Registered devices with push targets, for the FCM and Web Push channel
//! tests: registered as an app registers them, through `POST /devices`
//! with an enrolment the account page would offer
//! ([`crate::device_key`]). The one place the channel tests make devices.
use std::time::Duration;

use ciba_proto::device::JOSE_CONTENT_TYPE;
use ciba_proxy::store::{
    Accounts, Device, PushTarget, RedisStore, WebPushKeys, WebPushSubscription,
};

use crate::app::{redis_url, TestApp};
use crate::device_key::{offer_enrolment, post_registration, DeviceKey};
use crate::push_service::Subscription;

/// Registers a new device for `user` with `push` at `app` (a Redis app);
/// returns its `did`.
pub async fn register(app: &TestApp, user: &str, push: PushTarget) -> String {
    let qr = offer_enrolment(app, user).await;
    let push = serde_json::to_value(&push).expect("a push target");
    let jws = DeviceKey::generate().registration(&qr, "Test phone", "Pixel Test", Some(push));
    let reply = post_registration(app, &jws, JOSE_CONTENT_TYPE).await;
    assert_eq!(reply.status.as_u16(), 201, "{reply:?}");
    qr.did
}

/// An FCM registration token for a device.
pub fn fcm(token: &str) -> PushTarget {
    PushTarget::Fcm {
        token: token.to_owned(),
    }
}

/// A Web Push subscription for a device.
pub fn webpush(subscription: &Subscription) -> PushTarget {
    PushTarget::Webpush {
        subscription: WebPushSubscription {
            endpoint: subscription.endpoint.clone(),
            keys: WebPushKeys {
                p256dh: subscription.p256dh.clone(),
                auth: subscription.auth.clone(),
            },
        },
    }
}

/// The device `did` as the app's store has it now.
pub async fn device(app: &TestApp, did: &str) -> Option<Device> {
    accounts(app)
        .await
        .device(did)
        .await
        .expect("read the device")
}

async fn accounts(app: &TestApp) -> impl Accounts {
    RedisStore::connect(&redis_url(), &app.prefix, Duration::from_secs(2))
        .await
        .expect("connect to the test Redis")
        .accounts()
}
