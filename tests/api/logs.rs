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
    // Number matching, so a wrong pick can be logged too.
    let (app, proxy) = TestApp::builder()
        .client_toml("binding_message_check = \"match\"")
        .spawn_process(&[("RUST_LOG", "trace")])
        .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut secrets = Vec::new();
    // alice approves (a 303 whose Location holds the IdP's state), bob
    // picks a wrong code, carol denies.
    for (user, answer, code) in [
        ("alice", "approve", Some("W4SCT")),
        ("bob", "approve", Some("XXXXX")),
        ("carol", "deny", None),
    ] {
        app.device.on(user, ciba_proxy_e2e::device::Action::Ignore);
        let id = app.start("shop", user).await;
        let link = app
            .device
            .wait_for_notification(user)
            .await
            .approval_url()
            .to_owned();
        let page = reqwest::get(&link).await.unwrap();
        assert_eq!(page.status(), 200);
        let csrf = ciba_proxy_e2e::device::form_field(&page.text().await.unwrap(), "csrf")
            .expect("the page's token");
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(code.map(|code| ("code", code)));
        let answered = http
            .post(format!("{link}/{answer}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        if let Some(location) = answered.headers().get("location") {
            let location = url::Url::parse(location.to_str().unwrap()).unwrap();
            let state = location
                .query_pairs()
                .find(|(k, _)| k == "state")
                .expect("the IdP's state")
                .1
                .into_owned();
            secrets.extend([state, location.to_string()]);
        }
        assert!(
            answered.status().is_success() || answered.status().is_redirection(),
            "{user}: {}",
            answered.status()
        );
        let handle = link.rsplit('/').next().unwrap().to_owned();
        secrets.extend([handle, id, csrf]);
    }
    assert_eq!(secrets.len(), 11, "alice's approve answered a 303");
    let logs = proxy.logs();
    for route in [
        "/approve/{handle}",
        "/approve/{handle}/approve",
        "/approve/{handle}/deny",
    ] {
        assert!(logs.contains(route), "{route} is logged: {logs}");
    }
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "a secret reached the log: {}…",
            &secret[..8.min(secret.len())]
        );
    }
}
