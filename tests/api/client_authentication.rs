//! RFC 7523 private_key_jwt and the FAPI-CIBA profile.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ciba_proxy_e2e::app::{now_secs, ClientSpec, Reply, TestApp, CIBA_GRANT, JWT_BEARER};
use ciba_proxy_e2e::keys::{CLIENT_PS256, OTHER_PS256};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

async fn app() -> TestApp {
    TestApp::builder()
        .clients(vec![
            ClientSpec::private_key_jwt("bank", &CLIENT_PS256),
            ClientSpec::private_key_jwt("other", &OTHER_PS256),
            ClientSpec::basic("shop"),
        ])
        .spawn()
        .await
}

/// POSTs to /bc-authorize with `assertion` as the client assertion.
async fn with_assertion(app: &TestApp, assertion: &str, extra: &[(&str, &str)]) -> Reply {
    let mut form = vec![
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
        ("scope", "openid"),
        ("login_hint", "alice"),
    ];
    form.extend_from_slice(extra);
    let response = app
        .http
        .post(app.url("/bc-authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        headers: Default::default(),
        body,
    }
}

#[tokio::test]
async fn a_private_key_jwt_client_completes_a_login() {
    let app = app().await;
    let id = app.start("bank", "alice").await;
    assert_eq!(app.device.wait_for_page("alice").await.status, 200);
    let reply = app.poll("bank", &id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn each_client_assertion_rule_is_enforced() {
    let app = app().await;
    let aud = app.url("/bc-authorize");
    let good = app.assertion_claims("bank", &aud);
    let cases: Vec<(&str, Value)> = vec![
        ("exp missing", {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove("exp");
            c
        }),
        ("expired", {
            let mut c = good.clone();
            c["exp"] = json!(now_secs() - 120);
            c
        }),
        ("jti missing", {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove("jti");
            c
        }),
        ("aud elsewhere", {
            let mut c = good.clone();
            c["aud"] = json!("https://elsewhere.example/token");
            c
        }),
        ("iss differs from sub", {
            let mut c = good.clone();
            c["iss"] = json!("other");
            c
        }),
        ("not yet valid", {
            let mut c = good.clone();
            c["nbf"] = json!(now_secs() + 600);
            c
        }),
    ];
    for (why, claims) in cases {
        let reply = with_assertion(&app, &CLIENT_PS256.sign(&claims), &[]).await;
        assert_eq!(reply.status, 401, "{why}: {reply:?}");
        assert_eq!(reply.error(), "invalid_client", "{why}");
    }
    // Every accepted audience works: the issuer and both endpoints.
    for aud in [
        app.issuer.clone(),
        app.url("/token"),
        app.url("/bc-authorize"),
    ] {
        let reply = with_assertion(
            &app,
            &CLIENT_PS256.sign(&app.assertion_claims("bank", &aud)),
            &[],
        )
        .await;
        assert_eq!(reply.status, 200, "aud {aud}: {reply:?}");
    }
}

#[tokio::test]
async fn an_assertion_is_single_use() {
    let app = app().await;
    let assertion = app.client_assertion("bank", &app.url("/bc-authorize"));
    assert_eq!(with_assertion(&app, &assertion, &[]).await.status, 200);
    let replay = with_assertion(&app, &assertion, &[]).await;
    assert_eq!(replay.status, 401);
    assert!(replay.body["error_description"]
        .as_str()
        .unwrap()
        .contains("jti"));
}

#[tokio::test]
async fn only_the_clients_own_key_and_algorithm_are_accepted() {
    let app = app().await;
    let claims = app.assertion_claims("bank", &app.url("/bc-authorize"));
    // Signed by another client's key.
    let reply = with_assertion(&app, &OTHER_PS256.sign(&claims), &[]).await;
    reply.assert_error(401, "invalid_client");
    // The client's key, but RS256 where PS256 is registered in the key.
    let reply = with_assertion(
        &app,
        &CLIENT_PS256.sign_with(Algorithm::RS256, &claims),
        &[],
    )
    .await;
    reply.assert_error(401, "invalid_client");
    // alg none.
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    with_assertion(&app, &none, &[])
        .await
        .assert_error(401, "invalid_client");
    // A symmetric signature with a guessable secret.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"bank"),
    )
    .unwrap();
    with_assertion(&app, &hs, &[])
        .await
        .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn a_form_client_id_must_match_the_assertion() {
    let app = app().await;
    let assertion = app.client_assertion("bank", &app.url("/bc-authorize"));
    let reply = with_assertion(&app, &assertion, &[("client_id", "other")]).await;
    reply.assert_error(401, "invalid_client");
    let assertion = app.client_assertion("bank", &app.url("/bc-authorize"));
    assert_eq!(
        with_assertion(&app, &assertion, &[("client_id", "bank")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn clients_must_use_their_registered_method() {
    let app = app().await;
    // A secret client sending an assertion, and an assertion client using Basic.
    let for_shop = CLIENT_PS256.sign(&app.assertion_claims("shop", &app.url("/bc-authorize")));
    with_assertion(&app, &for_shop, &[])
        .await
        .assert_error(401, "invalid_client");
    let basic = app
        .http
        .post(app.url("/token"))
        .basic_auth("bank", Some("bank-secret"))
        .form(&[("grant_type", CIBA_GRANT), ("auth_req_id", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let wrong_type = app
        .http
        .post(app.url("/bc-authorize"))
        .form(&[
            ("client_assertion_type", "urn:example:saml"),
            (
                "client_assertion",
                &app.client_assertion("bank", &app.url("/bc-authorize")),
            ),
            ("scope", "openid"),
            ("login_hint", "alice"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 401);
}

// ---- FAPI-CIBA ----------------------------------------------------------------

async fn fapi_app() -> TestApp {
    TestApp::builder()
        .clients(vec![
            ClientSpec::private_key_jwt("bank", &CLIENT_PS256)
                .signing("PS256", CLIENT_PS256.jwks())
                .fapi(),
            ClientSpec::private_key_jwt("other", &OTHER_PS256)
                .signing("PS256", OTHER_PS256.jwks())
                .fapi(),
        ])
        .spawn()
        .await
}

fn request_claims(app: &TestApp) -> Value {
    let now = now_secs();
    json!({
        "iss": "bank", "aud": app.issuer, "exp": now + 300, "iat": now, "nbf": now,
        "jti": format!("jti-{}", rand::random::<u64>()),
        "scope": "openid", "login_hint": "alice", "binding_message": "W4SCT",
    })
}

#[tokio::test]
async fn fapi_ciba_accepts_a_conforming_request() {
    let app = fapi_app().await;
    let reply = app
        .bc_authorize(
            "bank",
            &[("request", &CLIENT_PS256.sign(&request_claims(&app)))],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn fapi_ciba_request_object_rules_each_hold() {
    let app = fapi_app().await;
    let now = now_secs();
    type Edit = Box<dyn Fn(&mut serde_json::Map<String, Value>)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "aud missing",
            Box::new(|c| {
                c.remove("aud");
            }),
        ),
        (
            "aud wrong",
            Box::new(|c| {
                c.insert("aud".into(), json!("https://other.example"));
            }),
        ),
        (
            "iss missing",
            Box::new(|c| {
                c.remove("iss");
            }),
        ),
        (
            "iss wrong",
            Box::new(|c| {
                c.insert("iss".into(), json!("someone"));
            }),
        ),
        (
            "exp missing",
            Box::new(|c| {
                c.remove("exp");
            }),
        ),
        (
            "exp past",
            Box::new(move |c| {
                c.insert("exp".into(), json!(now - 120));
            }),
        ),
        (
            "iat missing",
            Box::new(|c| {
                c.remove("iat");
            }),
        ),
        (
            "iat future",
            Box::new(move |c| {
                c.insert("iat".into(), json!(now + 600));
            }),
        ),
        (
            "nbf missing",
            Box::new(|c| {
                c.remove("nbf");
            }),
        ),
        (
            "nbf future",
            Box::new(move |c| {
                c.insert("nbf".into(), json!(now + 600));
            }),
        ),
        (
            "nbf over 60 minutes ago",
            Box::new(move |c| {
                c.insert("nbf".into(), json!(now - 3700));
            }),
        ),
        (
            "exp - nbf over 60 minutes",
            Box::new(move |c| {
                c.insert("exp".into(), json!(now + 3700));
            }),
        ),
        (
            "jti missing",
            Box::new(|c| {
                c.remove("jti");
            }),
        ),
    ];
    for (why, edit) in cases {
        let mut claims = request_claims(&app);
        edit(claims.as_object_mut().unwrap());
        let reply = app
            .bc_authorize("bank", &[("request", &CLIENT_PS256.sign(&claims))])
            .await;
        assert_eq!(reply.status, 400, "{why}: {reply:?}");
        assert_eq!(reply.error(), "invalid_request", "{why}");
    }
}

#[tokio::test]
async fn fapi_ciba_rejects_weak_or_foreign_signatures_and_unsigned_requests() {
    let app = fapi_app().await;
    let claims = request_claims(&app);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    let genuine = CLIENT_PS256.sign(&claims);
    let foreign = OTHER_PS256.sign(&claims);
    let spliced = {
        let g: Vec<&str> = genuine.split('.').collect();
        format!("{}.{}.{}", g[0], g[1], foreign.split('.').nth(2).unwrap())
    };
    let cases = [
        ("alg none", none),
        ("RS256", CLIENT_PS256.sign_with(Algorithm::RS256, &claims)),
        ("bad signature", spliced),
        ("signed by another client", foreign),
    ];
    for (why, jwt) in cases {
        let reply = app.bc_authorize("bank", &[("request", &jwt)]).await;
        assert_eq!(reply.status, 400, "{why}: {reply:?}");
        assert_eq!(reply.error(), "invalid_request", "{why}");
    }
    let unsigned = app
        .bc_authorize("bank", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    unsigned.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_form_client_id_contradicting_the_request_objects_iss_is_invalid_client() {
    let app = fapi_app().await;
    let mut claims = request_claims(&app);
    claims["iss"] = json!("other");
    let assertion = app.client_assertion("bank", &app.url("/bc-authorize"));
    let response = app
        .http
        .post(app.url("/bc-authorize"))
        .form(&[
            ("client_id", "bank"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
            ("request", &CLIENT_PS256.sign(&claims)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn discovery_lists_private_key_jwt() {
    let app = app().await;
    let doc = app.get("/.well-known/openid-configuration").await.body;
    assert!(doc["token_endpoint_auth_methods_supported"]
        .to_string()
        .contains("private_key_jwt"));
    assert!(doc["token_endpoint_auth_signing_alg_values_supported"]
        .to_string()
        .contains("PS256"));
}
