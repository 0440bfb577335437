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

#[tokio::test]
async fn polls_of_a_pending_request_are_not_logged_as_errors() {
    // At the shipped level, an expected protocol answer is no error line:
    // a busy proxy would log one per poll.
    let (app, proxy) = TestApp::builder()
        .store(StoreKind::Redis)
        .spawn_process(&[("RUST_LOG", "info")])
        .await;
    app.device
        .on("alice", ciba_proxy_e2e::device::Action::Ignore);
    let id = app.start("shop", "alice").await;
    let mut answers = std::collections::HashSet::new();
    for _ in 0..20 {
        let reply = app.poll("shop", &id).await;
        answers.insert(reply.error().to_owned());
    }
    assert!(answers.contains("slow_down"), "{answers:?}");
    let logs = proxy.logs();
    for noise in [
        "AuthorizationPending",
        "SlowDown",
        "Error encountered",
        "slow_down",
    ] {
        assert!(!logs.contains(noise), "{noise} logged: {logs}");
    }
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("WARN") || l.contains("ERROR")),
        "{logs}"
    );
}

/// The log of a login in which `signed_in` signs in for "alice", with
/// `subject_claim` as the claim to compare.
async fn log_of_a_mismatched_login(subject_claim: &str, signed_in: &str) -> String {
    let (app, proxy) = TestApp::builder()
        .upstream_toml(&format!("subject_claim = \"{subject_claim}\""))
        .spawn_process(&[])
        .await;
    app.device.on(
        "alice",
        ciba_proxy_e2e::device::Action::SignInAs(signed_in.into()),
    );
    let id = app.start("shop", "alice").await;
    app.device.wait_for_page("alice").await;
    app.poll("shop", &id)
        .await
        .assert_error(400, "access_denied");
    proxy.logs()
}

#[tokio::test]
async fn a_wrong_user_log_line_names_the_claim_and_hashes_both_values() {
    let logs = log_of_a_mismatched_login("preferred_username", "mallory").await;
    let line = logs
        .lines()
        .find(|l| l.contains("differs from the login hint"))
        .unwrap_or_else(|| panic!("no wrong-user line: {logs}"));
    assert!(line.contains("preferred_username"), "{line}");
    assert!(
        line.contains("id_token_value=") && line.contains("login_hint="),
        "{line}"
    );
    assert!(
        !line.contains("mallory") && !line.contains("alice"),
        "{line}"
    );
}

#[tokio::test]
async fn a_missing_subject_claim_is_logged_as_a_configuration_matter() {
    let logs = log_of_a_mismatched_login("employee_number", "alice").await;
    assert!(
        logs.lines()
            .any(|l| l.contains("has no \"employee_number\" claim")
                && l.contains("upstream.subject_claim")),
        "{logs}"
    );
    assert!(!logs.contains("differs from the login hint"), "{logs}");
}

#[tokio::test]
async fn the_approval_link_never_reaches_the_log() {
    let (app, proxy) = TestApp::builder()
        .spawn_process(&[("RUST_LOG", "trace")])
        .await;
    app.device
        .on("alice", ciba_proxy_e2e::device::Action::Ignore);
    let id = app.start("shop", "alice").await;
    let link = app
        .device
        .wait_for_notification("alice")
        .await
        .approval_url()
        .to_owned();
    let page = reqwest::get(&link).await.unwrap();
    assert_eq!(page.status(), 200);
    let handle = link.rsplit('/').next().unwrap();
    let logs = proxy.logs();
    assert!(
        logs.contains("/approve/{handle}"),
        "the route is logged: {logs}"
    );
    assert!(!logs.contains(handle), "the handle reached the log");
    assert!(!logs.contains(&id), "the auth_req_id reached the log");
}
