//! The real binary, run from a config file with environment overrides,
//! serves a whole login, and its logs hold no secret, token or code even at
//! trace level.
use ciba_proxy_e2e::app::{ClientSpec, StoreKind, TestApp, JWT_BEARER};
use ciba_proxy_e2e::keys::CLIENT_PS256;

#[tokio::test]
async fn the_binary_serves_a_login_and_logs_no_secret_at_any_level() {
    let (app, proxy) = TestApp::builder()
        .store(StoreKind::Redis)
        .clients(vec![
            ClientSpec::basic("shop"),
            ClientSpec::private_key_jwt("bank", &CLIENT_PS256),
        ])
        .spawn_process(&[("RUST_LOG", "trace"), ("CIBA_PROXY__CIBA__INTERVAL", "2")])
        .await;
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid profile"),
                ("login_hint", "alice"),
                ("binding_message", "W4SCT"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // The environment override took effect.
    assert_eq!(reply.body["interval"], 2);
    let id = reply.body["auth_req_id"].as_str().unwrap().to_owned();
    let page = app.device.wait_for_page("alice").await;
    let tokens = app.poll("shop", &id).await;
    assert_eq!(tokens.status, 200, "{tokens:?}");

    // A private_key_jwt client's assertion, accepted once and then replayed.
    let assertion = app.client_assertion("bank", &app.url("/bc-authorize"));
    for expected in [200, 401] {
        let form = [
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
            ("scope", "openid"),
            ("login_hint", "bob"),
        ];
        let status = app
            .http
            .post(app.url("/bc-authorize"))
            .form(&form)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, expected);
    }

    let logs = proxy.logs();
    assert!(
        logs.contains("login completed"),
        "the flow should be logged: {logs}"
    );
    let callback = url::Url::parse(&page.url).unwrap();
    let query: std::collections::HashMap<_, _> = callback.query_pairs().into_owned().collect();
    let mut secrets = app.secrets.clone();
    secrets.extend([
        assertion.clone(),
        id.clone(),
        query["code"].clone(),
        query["state"].clone(),
        tokens.body["access_token"].as_str().unwrap().to_owned(),
        tokens.body["id_token"].as_str().unwrap().to_owned(),
    ]);
    let nonce = app.device.notifications()[0]
        .authorization_param("nonce")
        .unwrap();
    secrets.push(nonce);
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "a secret reached the log: {}…",
            &secret[..8.min(secret.len())]
        );
    }
}
