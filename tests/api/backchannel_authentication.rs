use ciba_proxy_e2e::app::{ClientSpec, TestApp};

const OK: &[(&str, &str)] = &[("scope", "openid profile"), ("login_hint", "alice")];

#[tokio::test]
async fn accepted_request_returns_id_expiry_and_interval_without_caching() {
    let app = TestApp::spawn().await;
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("binding_message", "W4SCT"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let id = reply.body["auth_req_id"].as_str().unwrap();
    // CIBA Core §7.3: at least 160 bits of entropy; we promise only A-Za-z0-9._-
    assert!(id.len() * 6 >= 160, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "{id}"
    );
    assert_eq!(reply.body["expires_in"], 120);
    assert_eq!(reply.body["interval"], 1);
}

#[tokio::test]
async fn user_is_notified_with_a_signed_webhook() {
    let app = TestApp::spawn().await;
    app.device
        .on("alice", ciba_proxy_e2e::device::Action::Ignore);
    app.bc_authorize(
        "shop",
        &[
            ("scope", "openid profile"),
            ("login_hint", "alice"),
            ("binding_message", "Order 42"),
        ],
    )
    .await;
    let n = app.device.wait_for_notification("alice").await;
    assert!(
        n.signature_valid,
        "signature {:?} does not match",
        n.signature
    );
    assert_eq!(n.body["client_id"], "shop");
    assert_eq!(n.body["binding_message"], "Order 42");
    assert_eq!(n.body["scope"], "openid profile");
    assert!(n.body["expires_at"].as_u64().is_some());
    let url = url::Url::parse(n.authorization_url()).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["login_hint"], "alice");
    assert_eq!(q["redirect_uri"], app.url("/callback"));
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32);
    assert!(url.as_str().starts_with(&app.idp.issuer));
}

#[tokio::test]
async fn requested_expiry_is_honoured_and_capped() {
    let app = TestApp::spawn().await;
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "a"),
                ("requested_expiry", "30"),
            ],
        )
        .await;
    assert_eq!(reply.body["expires_in"], 30);
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "a"),
                ("requested_expiry", "99999"),
            ],
        )
        .await;
    assert_eq!(reply.body["expires_in"], 600);
    for bad in ["0", "-1", "soon", "1.5"] {
        app.bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "a"),
                ("requested_expiry", bad),
            ],
        )
        .await
        .assert_error(400, "invalid_request");
    }
}

#[tokio::test]
async fn scope_must_include_openid_and_stay_within_the_clients_scopes() {
    let app = TestApp::spawn().await;
    app.bc_authorize("shop", &[("login_hint", "alice")])
        .await
        .assert_error(400, "invalid_request");
    app.bc_authorize("shop", &[("scope", "profile"), ("login_hint", "alice")])
        .await
        .assert_error(400, "invalid_scope");
    let reply = app
        .bc_authorize(
            "shop",
            &[("scope", "openid payments"), ("login_hint", "alice")],
        )
        .await;
    reply.assert_error(400, "invalid_scope");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("payments"));
}

#[tokio::test]
async fn exactly_one_hint_is_required() {
    let app = TestApp::spawn().await;
    app.bc_authorize("shop", &[("scope", "openid")])
        .await
        .assert_error(400, "invalid_request");
    app.bc_authorize(
        "shop",
        &[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("id_token_hint", "x.y.z"),
        ],
    )
    .await
    .assert_error(400, "invalid_request");
    for hint in ["login_hint_token", "id_token_hint"] {
        let reply = app
            .bc_authorize("shop", &[("scope", "openid"), (hint, "x.y.z")])
            .await;
        reply.assert_error(400, "invalid_request");
        assert!(reply.body["error_description"]
            .as_str()
            .unwrap()
            .contains(hint));
    }
    app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", "bad\nhint")])
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn binding_message_must_be_short_plain_text() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(65);
    for bad in ["<b>hi</b>", long.as_str(), "two\nlines"] {
        app.bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("binding_message", bad),
            ],
        )
        .await
        .assert_error(400, "invalid_binding_message");
    }
}

#[tokio::test]
async fn bad_client_credentials_get_401_with_www_authenticate() {
    let app = TestApp::spawn().await;
    let wrong = app
        .http
        .post(app.url("/bc-authorize"))
        .basic_auth("shop", Some("nope"))
        .form(OK);
    let reply = wrong.send().await.unwrap();
    assert_eq!(reply.status(), 401);
    assert!(reply.headers().get("www-authenticate").is_some());
    assert_eq!(
        reply.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_client"
    );

    let unknown = app
        .http
        .post(app.url("/bc-authorize"))
        .basic_auth("ghost", Some("x"))
        .form(OK);
    assert_eq!(unknown.send().await.unwrap().status(), 401);
    let none = app.http.post(app.url("/bc-authorize")).form(OK);
    assert_eq!(none.send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn client_secret_post_clients_authenticate_in_the_body_only() {
    let app = TestApp::builder()
        .clients(vec![ClientSpec::post("kiosk")])
        .spawn()
        .await;
    let reply = app.bc_authorize("kiosk", OK).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // The same credentials via Basic are the wrong method for this client.
    let basic = app
        .http
        .post(app.url("/bc-authorize"))
        .basic_auth("kiosk", Some("kiosk-secret"))
        .form(OK);
    assert_eq!(basic.send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn malformed_bodies_are_invalid_request_not_crashes() {
    let app = TestApp::spawn().await;
    let auth = |r: reqwest::RequestBuilder| r.basic_auth("shop", Some("shop-secret"));
    let json =
        auth(app.http.post(app.url("/bc-authorize"))).json(&serde_json::json!({"scope": "openid"}));
    let reply = json.send().await.unwrap();
    assert_eq!(reply.status(), 400);
    assert_eq!(
        reply.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_request"
    );

    let repeated = auth(app.http.post(app.url("/bc-authorize")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("scope=openid&login_hint=a&login_hint=b");
    let reply = repeated.send().await.unwrap();
    assert_eq!(reply.status(), 400);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("login_hint"));

    let huge = auth(app.http.post(app.url("/bc-authorize")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("scope=openid&login_hint={}", "a".repeat(100_000)));
    assert_eq!(huge.send().await.unwrap().status(), 400);
}
