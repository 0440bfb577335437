use ciba_proxy_e2e::app::{TestApp, CIBA_GRANT};

#[tokio::test]
async fn token_rejects_other_grant_types() {
    let app = TestApp::spawn().await;
    let reply = app
        .post_as(
            "shop",
            "/token",
            &[("grant_type", "authorization_code"), ("code", "x")],
        )
        .await;
    reply.assert_error(400, "unsupported_grant_type");
}

#[tokio::test]
async fn token_requires_grant_type_and_auth_req_id() {
    let app = TestApp::spawn().await;
    app.post_as("shop", "/token", &[("auth_req_id", "abc")])
        .await
        .assert_error(400, "invalid_request");
    app.post_as("shop", "/token", &[("grant_type", CIBA_GRANT)])
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn token_answers_invalid_grant_for_unknown_and_malformed_ids() {
    let app = TestApp::spawn().await;
    app.poll("shop", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await
        .assert_error(400, "invalid_grant");
    app.poll("shop", "not valid {id}")
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn token_rejects_bad_client_credentials_with_401() {
    let app = TestApp::spawn().await;
    let reply = app
        .http
        .post(app.url("/token"))
        .basic_auth("shop", Some("wrong"))
        .form(&[("grant_type", CIBA_GRANT), ("auth_req_id", "abc")])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    assert!(reply.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}
