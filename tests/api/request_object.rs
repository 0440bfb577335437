//! CIBA Core §7.1.1: each request-object rule, one test each way.
use ciba_proxy_e2e::app::{ClientSpec, Reply, TestApp};
use ciba_proxy_e2e::keys::{CLIENT_ES256, CLIENT_PS256, OTHER_PS256};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn signing_app() -> TestApp {
    TestApp::builder()
        .clients(vec![
            ClientSpec::basic("bank").signing("PS256", CLIENT_PS256.jwks()),
            ClientSpec::basic("plain"),
        ])
        .spawn()
        .await
}

fn claims(app: &TestApp) -> Value {
    let now = now();
    json!({
        "iss": "bank",
        "aud": app.issuer,
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": format!("jti-{}", rand::random::<u64>()),
        "scope": "openid profile",
        "login_hint": "alice",
        "binding_message": "W4SCT",
        "requested_expiry": 90,
    })
}

async fn send(app: &TestApp, jwt: &str) -> Reply {
    app.bc_authorize("bank", &[("request", jwt)]).await
}

/// Sends a request object with `edit` applied to valid claims; asserts rejection.
async fn rejected(
    app: &TestApp,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
    why: &str,
) {
    let mut c = claims(app);
    edit(c.as_object_mut().unwrap());
    let reply = send(app, &CLIENT_PS256.sign(&c)).await;
    reply.assert_error(400, "invalid_request");
    let description = reply.body["error_description"].as_str().unwrap();
    assert!(
        description.contains(why),
        "{description:?} should mention {why:?}"
    );
}

#[tokio::test]
async fn a_valid_signed_request_is_accepted_and_its_parameters_used() {
    let app = signing_app().await;
    let reply = send(&app, &CLIENT_PS256.sign(&claims(&app))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["expires_in"], 90);
}

#[tokio::test]
async fn aud_may_be_the_backchannel_endpoint_or_a_list() {
    let app = signing_app().await;
    let mut c = claims(&app);
    c["aud"] = json!(app.url("/bc-authorize"));
    assert_eq!(send(&app, &CLIENT_PS256.sign(&c)).await.status, 200);
    let mut c = claims(&app);
    c["aud"] = json!(["https://elsewhere.example", app.issuer]);
    assert_eq!(send(&app, &CLIENT_PS256.sign(&c)).await.status, 200);
}

#[tokio::test]
async fn signing_client_must_send_a_request_object() {
    let app = signing_app().await;
    let reply = app
        .bc_authorize("bank", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    reply.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn parameters_outside_the_request_object_are_rejected() {
    let app = signing_app().await;
    let jwt = CLIENT_PS256.sign(&claims(&app));
    let reply = app
        .bc_authorize("bank", &[("request", &jwt), ("login_hint", "mallory")])
        .await;
    reply.assert_error(400, "invalid_request");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("login_hint"));
}

#[tokio::test]
async fn each_required_claim_is_enforced() {
    let app = signing_app().await;
    for claim in ["iss", "aud", "exp", "iat", "nbf", "jti"] {
        rejected(
            &app,
            |c| {
                c.remove(claim);
            },
            claim,
        )
        .await;
    }
}

#[tokio::test]
async fn wrong_iss_and_aud_are_rejected() {
    let app = signing_app().await;
    rejected(
        &app,
        |c| {
            c.insert("iss".into(), json!("plain"));
        },
        "iss",
    )
    .await;
    rejected(
        &app,
        |c| {
            c.insert("aud".into(), json!("https://other.example"));
        },
        "aud",
    )
    .await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_objects_are_rejected() {
    let app = signing_app().await;
    rejected(
        &app,
        |c| {
            c.insert("exp".into(), json!(now() - 120));
        },
        "exp",
    )
    .await;
    rejected(
        &app,
        |c| {
            c.insert("nbf".into(), json!(now() + 600));
        },
        "nbf",
    )
    .await;
    rejected(
        &app,
        |c| {
            c.insert("iat".into(), json!(now() + 600));
        },
        "iat",
    )
    .await;
}

#[tokio::test]
async fn an_exp_too_far_away_is_rejected_rather_than_remembered_forever() {
    // Found by the request_object fuzz target: a far exp overflowed the
    // replay window; a jti must be remembered until its JWT expires.
    let app = signing_app().await;
    rejected(
        &app,
        |c| {
            c.insert("exp".into(), json!(now() + 10 * 86_400));
        },
        "exp",
    )
    .await;
    rejected(
        &app,
        |c| {
            c.insert("exp".into(), json!(u64::MAX));
        },
        "exp",
    )
    .await;
    rejected(
        &app,
        |c| {
            c.insert("exp".into(), json!(18_446_745_823_709_522u64));
        },
        "exp",
    )
    .await;
}

#[tokio::test]
async fn a_jti_cannot_be_replayed() {
    let app = signing_app().await;
    let jwt = CLIENT_PS256.sign(&claims(&app));
    assert_eq!(send(&app, &jwt).await.status, 200);
    let reply = send(&app, &jwt).await;
    reply.assert_error(400, "invalid_request");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("jti"));
}

#[tokio::test]
async fn another_algorithm_than_the_registered_one_is_rejected() {
    let app = signing_app().await;
    let jwt = CLIENT_PS256.sign_with(Algorithm::RS256, &claims(&app));
    send(&app, &jwt).await.assert_error(400, "invalid_request");
    // An ES256 key the client never registered.
    send(&app, &CLIENT_ES256.sign(&claims(&app)))
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn alg_none_and_symmetric_algorithms_are_rejected() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let app = signing_app().await;
    let body = URL_SAFE_NO_PAD.encode(claims(&app).to_string());
    let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    send(&app, &none).await.assert_error(400, "invalid_request");
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims(&app),
        &jsonwebtoken::EncodingKey::from_secret(b"bank-secret"),
    )
    .unwrap();
    send(&app, &hs).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_bad_signature_is_rejected() {
    let app = signing_app().await;
    let parts: Vec<String> = OTHER_PS256
        .sign(&claims(&app))
        .split('.')
        .map(str::to_owned)
        .collect();
    let genuine: Vec<String> = CLIENT_PS256
        .sign(&claims(&app))
        .split('.')
        .map(str::to_owned)
        .collect();
    // Valid client header and payload, another key's signature.
    let spliced = format!("{}.{}.{}", genuine[0], genuine[1], parts[2]);
    send(&app, &spliced)
        .await
        .assert_error(400, "invalid_request");
    // Tampered payload under the client's genuine signature.
    let mut c = claims(&app);
    c["login_hint"] = json!("mallory");
    let tampered_payload = CLIENT_PS256.sign(&c).split('.').nth(1).unwrap().to_owned();
    send(
        &app,
        &format!("{}.{}.{}", genuine[0], tampered_payload, genuine[2]),
    )
    .await
    .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_client_without_a_signing_alg_cannot_send_request_objects() {
    let app = signing_app().await;
    let mut c = claims(&app);
    c["iss"] = json!("plain");
    let reply = app
        .bc_authorize("plain", &[("request", &CLIENT_PS256.sign(&c))])
        .await;
    reply.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn es256_clients_are_supported() {
    let app = TestApp::builder()
        .clients(vec![
            ClientSpec::basic("bank").signing("ES256", CLIENT_ES256.jwks())
        ])
        .spawn()
        .await;
    let reply = send(&app, &CLIENT_ES256.sign(&claims(&app))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}
