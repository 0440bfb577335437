//! The authentication-device side in tests: enrolment offers and the device
//! API's calls, signed with `ciba-proxy device`'s own library
//! ([`ciba_proxy_client::device`]), so the suite and the CLI share one
//! implementation of the device.
use std::time::Duration;

use ciba_proto::device::{DECISION_PATH, JOSE_CONTENT_TYPE, REGISTER_PATH, REMOVE_PATH};
use ciba_proxy::clock::{Clock, SystemClock};
use ciba_proxy::store::accounts::challenge_digest;
use ciba_proxy::store::{Accounts, Enrolment, RedisStore};
pub use ciba_proxy_client::device::{DeviceKey, Qr};
use serde_json::{Map, Value};

use crate::app::{redis_url, Reply, TestApp};

/// How long an offer lasts: `[account] challenge_ttl_secs`' default.
pub const CHALLENGE_TTL_SECS: u64 = 300;

/// What the account page's QR code would offer `user`: an enrolment for a
/// fresh did, saved in the app's Redis under its prefix (the app must use
/// Redis). The device API's rule tests start from it to skip a browser
/// sign-in each; the user's journey (`device_cli.rs`,
/// `account_browser.rs`) takes the QR code from the account page itself.
pub async fn offer_enrolment(app: &TestApp, user: &str) -> Qr {
    let store = RedisStore::connect(&redis_url(), &app.prefix, Duration::from_secs(2))
        .await
        .expect("the test Redis");
    let now_ms = match &app.clock {
        Some(clock) => clock.now_ms(),
        None => SystemClock.now_ms(),
    };
    let qr = Qr {
        did: format!("did-{}", rand::random::<u64>()),
        un: user.to_owned(),
        hst: app.issuer.clone(),
        re: REGISTER_PATH.to_owned(),
        ae: DECISION_PATH.to_owned(),
        rde: REMOVE_PATH.to_owned(),
        chg: format!("chg-{}", rand::random::<u128>()),
    };
    store
        .accounts()
        .offer_enrolment(&Enrolment {
            did: qr.did.clone(),
            user: user.to_owned(),
            challenge_digest: challenge_digest(&qr.chg),
            expires_at_ms: now_ms + CHALLENGE_TTL_SECS * 1000,
        })
        .await
        .expect("offer an enrolment");
    qr
}

/// Seconds now, on the app's clock.
pub fn now_secs(app: &TestApp) -> u64 {
    match &app.clock {
        Some(clock) => clock.now_secs(),
        None => SystemClock.now_secs(),
    }
}

/// `POST /devices` with `body` as `content_type`.
pub async fn post_registration(app: &TestApp, body: &str, content_type: &str) -> Reply {
    let response = app
        .http
        .post(app.url(REGISTER_PATH))
        .header("Content-Type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("reach the proxy");
    Reply::read(response).await
}

/// A test's registered device.
pub struct TestDevice {
    pub key: DeviceKey,
    pub did: String,
    pub user: String,
}

impl TestDevice {
    /// Offers an enrolment to `user` and registers a new key with it.
    pub async fn register(app: &TestApp, user: &str) -> Self {
        let qr = offer_enrolment(app, user).await;
        let key = DeviceKey::generate();
        let reply = post_registration(
            app,
            &key.registration(&qr, "Test phone", "Pixel 8", None),
            JOSE_CONTENT_TYPE,
        )
        .await;
        assert_eq!(reply.status.as_u16(), 201, "{reply:?}");
        assert_eq!(reply.body["did"], qr.did.as_str());
        Self {
            key,
            did: qr.did,
            user: user.to_owned(),
        }
    }

    /// A fresh call JWS with the decision's (or no) extra claims.
    pub fn jws(&self, app: &TestApp, extra: Map<String, Value>) -> String {
        self.key.call(&self.did, now_secs(app), extra)
    }

    /// A call to `path` (GET for the request list, else POST) with `jws`.
    pub async fn call_with(&self, app: &TestApp, path: &str, jws: &str) -> Reply {
        let request = if path == ciba_proto::device::REQUESTS_PATH {
            app.http.get(app.url(path))
        } else {
            app.http.post(app.url(path))
        };
        let response = request
            .header("Authorization", format!("Device {jws}"))
            .send()
            .await
            .expect("reach the proxy");
        Reply::read(response).await
    }

    /// `GET /devices/requests`.
    pub async fn requests(&self, app: &TestApp) -> Reply {
        let jws = self.jws(app, Map::new());
        self.call_with(app, ciba_proto::device::REQUESTS_PATH, &jws)
            .await
    }

    /// `POST /devices/decision` for `handle`.
    pub async fn decide(
        &self,
        app: &TestApp,
        handle: &str,
        res: &str,
        code: Option<&str>,
    ) -> Reply {
        let mut claims = Map::new();
        claims.insert("handle".into(), handle.into());
        claims.insert("res".into(), res.into());
        if let Some(code) = code {
            claims.insert("match".into(), code.into());
        }
        let jws = self.jws(app, claims);
        self.call_with(app, DECISION_PATH, &jws).await
    }

    /// `POST /devices/remove`.
    pub async fn remove(&self, app: &TestApp) -> Reply {
        let jws = self.jws(app, Map::new());
        self.call_with(app, REMOVE_PATH, &jws).await
    }
}
