//! The authentication-device API (docs/devices.md): registration with a QR
//! code's challenge, and signed calls that list, approve and deny the
//! user's requests. Every JWS rule has its own test; each refusal is the
//! documented status and JSON error, and changes nothing.
use ciba_proto::device::{DECISION_PATH, JOSE_CONTENT_TYPE, REQUESTS_PATH};
use ciba_proxy_e2e::app::{Reply, StoreKind, TestApp, TestAppBuilder};
use ciba_proxy_e2e::device::{sign_in, Action};
use ciba_proxy_e2e::device_key::{
    now_secs, offer_enrolment, post_registration, DeviceKey, TestDevice, CHALLENGE_TTL_SECS,
};
use ciba_proxy_e2e::keys::{CLIENT_PS256, WEAK_RSA1024};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Map, Value};

fn builder() -> TestAppBuilder {
    TestApp::builder().store(StoreKind::Redis)
}

async fn app() -> TestApp {
    builder().spawn().await
}

/// A request for `user` whose webhook the test device ignores: only the
/// registered device answers it.
async fn pending_request(app: &TestApp, user: &str) -> String {
    app.device.on(user, Action::Ignore);
    app.start("shop", user).await
}

/// The handle of the device user's only pending request.
async fn only_handle(app: &TestApp, device: &TestDevice) -> String {
    let listed = device.requests(app).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let requests = listed.body["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 1, "{listed:?}");
    requests[0]["handle"].as_str().expect("handle").to_owned()
}

/// A 401 as documented: `invalid_token` and a `Device` challenge.
#[track_caller]
fn assert_unauthorized(reply: &Reply) {
    reply.assert_error(401, "invalid_token");
    let challenge = reply.header("WWW-Authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Device error=\"invalid_token\""),
        "{reply:?}"
    );
}

/// A 401 whose description says why (`fragment`).
fn assert_unauthorized_saying(reply: &Reply, fragment: &str) {
    assert_unauthorized(reply);
    let description = reply.body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(fragment), "{fragment:?}: {reply:?}");
}

/// `GET /devices/requests` with a JWS of `device`'s key, `kid` = its did,
/// and exactly these claims.
async fn requests_signed(app: &TestApp, device: &TestDevice, claims: &Value) -> Reply {
    let header = json!({"alg": "ES256", "kid": device.did});
    device
        .call_with(app, REQUESTS_PATH, &device.key.sign(&header, claims))
        .await
}

#[tokio::test]
async fn a_registered_device_lists_the_users_request_and_approving_leads_to_the_idp() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    let id = pending_request(&app, "alice").await;
    let notification = app.device.wait_for_notification("alice").await;

    let listed = device.requests(&app).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.header("Cache-Control"), Some("no-store"));
    let request = &listed.body["requests"][0];
    assert_eq!(request["client_name"], "shop", "{listed:?}");
    assert_eq!(request["binding_message"], "W4SCT");
    assert_eq!(request["scope"], "openid profile");
    let expires_at = request["expires_at"].as_u64().expect("expires_at");
    assert!(expires_at > now_secs(&app), "{listed:?}");
    // The handle is the approval link's: never the auth_req_id.
    let handle = request["handle"].as_str().unwrap();
    assert!(!handle.contains(&id));

    let approved = device.decide(&app, handle, "approve", None).await;
    assert_eq!(approved.status, 200, "{approved:?}");
    let url = approved.body["authorization_url"].as_str().expect("url");
    assert_eq!(url, notification.authorization_url());
    // The user signs in there; the client gets its tokens.
    let page = sign_in(url, &Action::SignInAs("alice".into()))
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(app.poll("shop", &id).await.status, 200);
    // Decided: no longer pending.
    let after = device.requests(&app).await;
    assert_eq!(after.body["requests"], json!([]), "{after:?}");
}

#[tokio::test]
async fn denying_ends_the_request_at_once() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    let id = pending_request(&app, "alice").await;
    let handle = only_handle(&app, &device).await;
    let denied = device.decide(&app, &handle, "deny", None).await;
    assert_eq!(denied.status, 200, "{denied:?}");
    assert_eq!(denied.body, json!({"status": "denied"}));
    app.poll("shop", &id)
        .await
        .assert_error(400, "access_denied");
    // Answered: the handle is refused as ended.
    device
        .decide(&app, &handle, "approve", None)
        .await
        .assert_error(410, "request_ended");
}

#[tokio::test]
async fn a_handle_the_proxy_never_made_is_404() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    device
        .decide(&app, "not-a-handle", "approve", None)
        .await
        .assert_error(404, "unknown_request");
}

#[tokio::test]
async fn another_users_request_is_403_and_nothing_changes() {
    let app = app().await;
    let alice = TestDevice::register(&app, "alice").await;
    let bob = TestDevice::register(&app, "bob").await;
    let id = pending_request(&app, "alice").await;
    let handle = only_handle(&app, &alice).await;
    // Bob does not see it, and cannot answer it either way.
    assert_eq!(bob.requests(&app).await.body["requests"], json!([]));
    for res in ["approve", "deny"] {
        bob.decide(&app, &handle, res, None)
            .await
            .assert_error(403, "access_denied");
    }
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");
    // Alice still has it to answer.
    only_handle(&app, &alice).await;
}

#[tokio::test]
async fn number_matching_cancels_on_a_wrong_code_and_approves_on_the_right_one() {
    let app = builder()
        .client_toml("binding_message_check = \"match\"")
        .spawn()
        .await;
    let device = TestDevice::register(&app, "alice").await;
    let wrong = pending_request(&app, "alice").await;
    let handle = only_handle(&app, &device).await;
    let cancelled = device.decide(&app, &handle, "approve", Some("XXXXX")).await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "cancelled");
    app.poll("shop", &wrong)
        .await
        .assert_error(400, "access_denied");

    app.start("shop", "alice").await;
    let handle = only_handle(&app, &device).await;
    let approved = device.decide(&app, &handle, "approve", Some("W4SCT")).await;
    assert!(
        approved.body["authorization_url"].is_string(),
        "{approved:?}"
    );
}

#[tokio::test]
async fn a_decision_needs_a_known_answer() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    pending_request(&app, "alice").await;
    let handle = only_handle(&app, &device).await;
    device
        .decide(&app, &handle, "maybe", None)
        .await
        .assert_error(400, "invalid_request");
    let jws = device.jws(&app, Map::new());
    device
        .call_with(&app, DECISION_PATH, &jws)
        .await
        .assert_error(400, "invalid_request");
    // Still pending, still listed.
    only_handle(&app, &device).await;
}

// ---- Device calls: every JWS rule ----

#[tokio::test]
async fn a_call_without_the_device_scheme_is_401() {
    let app = app().await;
    for value in [
        None,
        Some("Bearer abc"),
        Some("Device"),
        Some("Device not.a.jws"),
    ] {
        let mut request = app.http.get(app.url(REQUESTS_PATH));
        if let Some(value) = value {
            request = request.header("Authorization", value);
        }
        assert_unauthorized(&Reply::read(request.send().await.unwrap()).await);
    }
}

#[tokio::test]
async fn a_call_signed_by_another_key_is_401() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    let forged = DeviceKey::generate().call(&device.did, now_secs(&app), Map::new());
    assert_unauthorized(&device.call_with(&app, REQUESTS_PATH, &forged).await);
}

#[tokio::test]
async fn a_call_from_an_unknown_device_is_401() {
    let app = app().await;
    let stranger = DeviceKey::generate().call("did-never-registered", now_secs(&app), Map::new());
    let device = TestDevice::register(&app, "alice").await;
    let reply = device.call_with(&app, REQUESTS_PATH, &stranger).await;
    assert_unauthorized_saying(&reply, "unknown");
}

#[tokio::test]
async fn a_removed_device_is_401() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    let removed = device.remove(&app).await;
    assert_eq!(removed.status, 204, "{removed:?}");
    assert_unauthorized(&device.requests(&app).await);
    assert_unauthorized(&device.remove(&app).await);
}

#[tokio::test]
async fn an_expired_call_is_401() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    let now = now_secs(&app);
    let claims = json!({"did": device.did, "iat": now - 120, "exp": now - 60, "jti": "j-expired"});
    let reply = requests_signed(&app, &device, &claims).await;
    assert_unauthorized_saying(&reply, "expired");
}

#[tokio::test]
async fn a_call_that_lives_longer_than_a_minute_is_401() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    let now = now_secs(&app);
    let claims = json!({"did": device.did, "iat": now, "exp": now + 600, "jti": "j-long"});
    let reply = requests_signed(&app, &device, &claims).await;
    assert_unauthorized_saying(&reply, "60");
}

#[tokio::test]
async fn a_replayed_call_is_401() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    let jws = device.jws(&app, Map::new());
    assert_eq!(
        device.call_with(&app, REQUESTS_PATH, &jws).await.status,
        200
    );
    let replayed = device.call_with(&app, REQUESTS_PATH, &jws).await;
    assert_unauthorized_saying(&replayed, "jti");
}

#[tokio::test]
async fn a_call_naming_another_device_is_401() {
    let app = app().await;
    let alice = TestDevice::register(&app, "alice").await;
    let other = TestDevice::register(&app, "alice").await;
    // Signed by alice's key, but the kid names the other device.
    let as_other = alice.key.call(&other.did, now_secs(&app), Map::new());
    assert_unauthorized(&alice.call_with(&app, REQUESTS_PATH, &as_other).await);
    // The kid is alice's, but the did claim names the other device.
    let claims = DeviceKey::call_claims(&other.did, now_secs(&app), Map::new());
    assert_unauthorized(&requests_signed(&app, &alice, &claims).await);
}

#[tokio::test]
async fn a_call_with_another_algorithm_is_401() {
    let app = app().await;
    let device = TestDevice::register(&app, "alice").await;
    for alg in ["ES384", "HS256", "none"] {
        let header = json!({"alg": alg, "kid": device.did});
        let claims = DeviceKey::call_claims(&device.did, now_secs(&app), Map::new());
        let jws = device.key.sign(&header, &claims);
        assert_unauthorized(&device.call_with(&app, REQUESTS_PATH, &jws).await);
    }
}

// ---- Registration ----

#[tokio::test]
async fn registration_uses_up_its_challenge() {
    let app = app().await;
    let qr = offer_enrolment(&app, "alice").await;
    let key = DeviceKey::generate();
    let first = post_registration(
        &app,
        &key.registration(&qr, "Phone", "Pixel 8", None),
        JOSE_CONTENT_TYPE,
    )
    .await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body, json!({"did": qr.did}));
    // The same QR code again, even with another key: refused.
    let again = DeviceKey::generate().registration(&qr, "Phone", "Pixel 8", None);
    assert_unauthorized(&post_registration(&app, &again, JOSE_CONTENT_TYPE).await);
}

#[tokio::test]
async fn a_wrong_challenge_is_401_and_leaves_the_right_one_usable() {
    let app = app().await;
    let qr = offer_enrolment(&app, "alice").await;
    let key = DeviceKey::generate();
    let mut guessed = qr.clone();
    guessed.chg = "guessed".into();
    let reply = post_registration(
        &app,
        &key.registration(&guessed, "Phone", "Pixel", None),
        JOSE_CONTENT_TYPE,
    )
    .await;
    assert_unauthorized(&reply);
    let right = post_registration(
        &app,
        &key.registration(&qr, "Phone", "Pixel", None),
        JOSE_CONTENT_TYPE,
    )
    .await;
    assert_eq!(right.status, 201, "{right:?}");
}

#[tokio::test]
async fn an_expired_challenge_is_401() {
    let app = builder().manual_clock().spawn().await;
    let qr = offer_enrolment(&app, "alice").await;
    app.advance(CHALLENGE_TTL_SECS);
    let jws = DeviceKey::generate().registration(&qr, "Phone", "Pixel 8", None);
    assert_unauthorized(&post_registration(&app, &jws, JOSE_CONTENT_TYPE).await);
}

#[tokio::test]
async fn an_unknown_did_is_401() {
    let app = app().await;
    let mut qr = offer_enrolment(&app, "alice").await;
    qr.did = "did-nobody-offered".into();
    let jws = DeviceKey::generate().registration(&qr, "Phone", "Pixel 8", None);
    assert_unauthorized(&post_registration(&app, &jws, JOSE_CONTENT_TYPE).await);
}

#[tokio::test]
async fn a_registration_signed_by_another_key_than_its_jwk_is_401() {
    let app = app().await;
    let qr = offer_enrolment(&app, "alice").await;
    let (claimed, signer) = (DeviceKey::generate(), DeviceKey::generate());
    let header = json!({"alg": "ES256", "jwk": claimed.public_jwk()});
    let body = json!({"did": qr.did, "chg": qr.chg, "name": "Phone", "model": "Pixel 8"});
    let reply = post_registration(&app, &signer.sign(&header, &body), JOSE_CONTENT_TYPE).await;
    assert_unauthorized(&reply);
    // The challenge was not used up.
    let good = post_registration(
        &app,
        &claimed.registration(&qr, "Phone", "Pixel 8", None),
        JOSE_CONTENT_TYPE,
    )
    .await;
    assert_eq!(good.status, 201, "{good:?}");
}

/// A registration signed by a test RSA key, its public JWK in the header.
fn rsa_registration(
    key: &ciba_proxy_e2e::keys::TestKey,
    qr: &ciba_proxy_e2e::device_key::Qr,
) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.jwk = Some(serde_json::from_str(key.public_jwk).expect("a JWK"));
    let claims = json!({"did": qr.did, "chg": qr.chg, "name": "Laptop", "model": "RSA"});
    key.sign_header(&header, &claims)
}

#[tokio::test]
async fn an_rsa_key_of_2048_bits_registers_and_a_weaker_one_is_400() {
    let app = app().await;
    let qr = offer_enrolment(&app, "alice").await;
    let weak = post_registration(
        &app,
        &rsa_registration(&WEAK_RSA1024, &qr),
        JOSE_CONTENT_TYPE,
    )
    .await;
    weak.assert_error(400, "invalid_request");
    assert!(
        weak.body["error_description"]
            .as_str()
            .unwrap()
            .contains("2048"),
        "{weak:?}"
    );
    let strong = post_registration(
        &app,
        &rsa_registration(&CLIENT_PS256, &qr),
        JOSE_CONTENT_TYPE,
    )
    .await;
    assert_eq!(strong.status, 201, "{strong:?}");
}

#[tokio::test]
async fn a_registration_with_another_algorithm_or_curve_is_400() {
    let app = app().await;
    let qr = offer_enrolment(&app, "alice").await;
    let key = DeviceKey::generate();
    let body = json!({"did": qr.did, "chg": qr.chg, "name": "Phone", "model": "Pixel 8"});
    let mut p384 = key.public_jwk();
    p384["crv"] = "P-384".into();
    for header in [
        json!({"alg": "ES384", "jwk": key.public_jwk()}),
        json!({"alg": "HS256", "jwk": key.public_jwk()}),
        json!({"alg": "RS256", "jwk": key.public_jwk()}),
        json!({"alg": "ES256", "jwk": p384}),
        json!({"alg": "ES256"}),
    ] {
        post_registration(&app, &key.sign(&header, &body), JOSE_CONTENT_TYPE)
            .await
            .assert_error(400, "invalid_request");
    }
    // A private key in the header is refused too.
    let mut private = key.public_jwk();
    private["d"] = "c2VjcmV0".into();
    post_registration(
        &app,
        &key.sign(&json!({"alg": "ES256", "jwk": private}), &body),
        JOSE_CONTENT_TYPE,
    )
    .await
    .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_malformed_registration_is_400() {
    let app = app().await;
    let qr = offer_enrolment(&app, "alice").await;
    for body in ["", "garbage", "a.b.c", "e30.e30.e30", &"x".repeat(20_000)] {
        post_registration(&app, body, JOSE_CONTENT_TYPE)
            .await
            .assert_error(400, "invalid_request");
    }
    // Signed, but with missing or unreadable claims.
    let key = DeviceKey::generate();
    let header = json!({"alg": "ES256", "jwk": key.public_jwk()});
    for body in [
        json!({"did": qr.did, "chg": qr.chg, "name": "Phone"}),
        json!({"did": qr.did, "chg": qr.chg, "name": "Ph\u{7}one", "model": "m"}),
        json!({"did": qr.did, "chg": qr.chg, "name": "n".repeat(65), "model": "m"}),
        json!({"did": qr.did, "chg": qr.chg, "name": "Phone", "model": "m", "push": {"kind": "apns"}}),
        json!({"did": "a b", "chg": qr.chg, "name": "Phone", "model": "m"}),
    ] {
        post_registration(&app, &key.sign(&header, &body), JOSE_CONTENT_TYPE)
            .await
            .assert_error(400, "invalid_request");
    }
    // None of it used up the challenge.
    let good = post_registration(
        &app,
        &key.registration(&qr, "Phone", "Pixel 8", None),
        JOSE_CONTENT_TYPE,
    )
    .await;
    assert_eq!(good.status, 201, "{good:?}");
}

#[tokio::test]
async fn a_registration_that_is_not_application_jose_is_400() {
    let app = app().await;
    let qr = offer_enrolment(&app, "alice").await;
    let jws = DeviceKey::generate().registration(&qr, "Phone", "Pixel 8", None);
    for content_type in [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
    ] {
        post_registration(&app, &jws, content_type)
            .await
            .assert_error(400, "invalid_request");
    }
    let good = post_registration(&app, &jws, "application/jose; charset=utf-8").await;
    assert_eq!(good.status, 201, "{good:?}");
}

#[tokio::test]
async fn push_targets_are_accepted_as_documented() {
    let app = app().await;
    for push in [
        json!({"kind": "fcm", "token": "fcm-registration-token"}),
        json!({"kind": "webpush", "subscription": {"endpoint": "https://push.example/sub/1", "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM", "auth": "tBHItJI5svbpez7KI4CCXg"}}}),
    ] {
        let qr = offer_enrolment(&app, "alice").await;
        let jws = DeviceKey::generate().registration(&qr, "Phone", "Pixel 8", Some(push.clone()));
        let reply = post_registration(&app, &jws, JOSE_CONTENT_TYPE).await;
        assert_eq!(reply.status, 201, "{push}: {reply:?}");
    }
    let qr = offer_enrolment(&app, "alice").await;
    let ftp = json!({"kind": "webpush", "subscription": {"endpoint": "ftp://push.example/1", "keys": {"p256dh": "AA", "auth": "AA"}}});
    let jws = DeviceKey::generate().registration(&qr, "Phone", "Pixel 8", Some(ftp));
    post_registration(&app, &jws, JOSE_CONTENT_TYPE)
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_call_updates_the_devices_last_use() {
    let app = builder().manual_clock().spawn().await;
    let device = TestDevice::register(&app, "alice").await;
    app.advance(30);
    assert_eq!(device.requests(&app).await.status, 200);
    let store = ciba_proxy::store::RedisStore::connect(
        &ciba_proxy_e2e::app::redis_url(),
        &app.prefix,
        std::time::Duration::from_secs(2),
    )
    .await
    .unwrap();
    use ciba_proxy::store::Accounts;
    let kept = store.accounts().device(&device.did).await.unwrap().unwrap();
    assert_eq!(kept.last_used_at_ms, kept.registered_at_ms + 30_000);
    assert_eq!(
        (kept.name.as_str(), kept.model.as_str()),
        ("Test phone", "Pixel 8")
    );
}

#[tokio::test]
async fn device_answers_are_audited_without_the_device_id_or_the_handle() {
    let (app, proxy) = builder()
        .spawn_process(&[("CIBA_PROXY__LOG__FORMAT", "json")])
        .await;
    let device = TestDevice::register(&app, "alice").await;
    pending_request(&app, "alice").await;
    let handle = only_handle(&app, &device).await;
    assert_eq!(
        device.decide(&app, &handle, "approve", None).await.status,
        200
    );
    assert_eq!(device.decide(&app, &handle, "deny", None).await.status, 200);

    let log = proxy.logs();
    let answers: Vec<(String, String)> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["target"] == "audit" && e["event"] == "answered")
        .map(|e| {
            (
                e["outcome"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let device_answer = |answer: &str| (answer.to_owned(), "device".to_owned());
    assert_eq!(
        answers,
        vec![device_answer("approve"), device_answer("deny")],
        "{log}"
    );
    for secret in [&handle, &device.did, &device.user] {
        assert!(!log.contains(secret.as_str()), "{secret} is in the log");
    }
}
