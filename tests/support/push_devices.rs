//! Registered devices with push targets, for the FCM and Web Push channel
//! tests: seeded in the app's own accounts store (its Redis, its prefix)
//! the way a registration leaves them, enrolment first. The one place the
//! channel tests make devices.
use std::time::Duration;

use ciba_proxy::store::accounts::challenge_digest;
use ciba_proxy::store::{
    Accounts, Device, Enrolment, PushTarget, RedisStore, WebPushKeys, WebPushSubscription,
};

use crate::app::{now_secs, redis_url, TestApp};
use crate::push_service::Subscription;

/// Registers a device for `user` with `push` in `app`'s store (a Redis
/// app); returns its `did`.
pub async fn register(app: &TestApp, user: &str, push: PushTarget) -> String {
    let accounts = accounts(app).await;
    let did = format!("dev-{:016x}", rand::random::<u64>());
    let challenge = format!("chg-{:016x}", rand::random::<u64>());
    let now_ms = now_secs() * 1000;
    accounts
        .offer_enrolment(&Enrolment {
            did: did.clone(),
            user: user.to_owned(),
            challenge_digest: challenge_digest(&challenge),
            expires_at_ms: now_ms + 300_000,
        })
        .await
        .expect("offer the enrolment");
    let device = Device {
        did: did.clone(),
        user: user.to_owned(),
        name: "Test phone".into(),
        model: "Pixel Test".into(),
        jwk: r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#.into(),
        push: Some(push),
        registered_at_ms: now_ms,
        last_used_at_ms: now_ms,
    };
    assert!(
        accounts
            .enrol(&device, &challenge_digest(&challenge), now_ms)
            .await
            .expect("enrol"),
        "the enrolment was not accepted"
    );
    did
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
