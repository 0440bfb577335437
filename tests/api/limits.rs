//! Abuse resistance: per-client request rate and per-user pending requests.
use ciba_proxy_e2e::app::{clear_of_a_minute_boundary, ClientSpec, StoreKind, TestApp};
use ciba_proxy_e2e::device::{sign_in, Action};

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    clear_of_a_minute_boundary().await;
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .clients(vec![ClientSpec::basic("shop"), ClientSpec::basic("other")])
        .sections("[limits]\nrequests_per_client_per_minute = 3")
        .spawn()
        .await;
    for user in ["u1", "u2", "u3"] {
        app.device.on(user, Action::Ignore);
        assert_eq!(
            app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", user)])
                .await
                .status,
            200
        );
    }
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "u4")])
        .await;
    reply.assert_error(429, "temporarily_unavailable");
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another client has its own budget.
    app.device.on("u5", Action::Ignore);
    assert_eq!(
        app.bc_authorize("other", &[("scope", "openid"), ("login_hint", "u5")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_user_cannot_be_flooded_with_pending_requests() {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .sections("[limits]\npending_per_user = 2")
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    app.start("shop", "alice").await;
    app.start("shop", "alice").await;
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    reply.assert_error(403, "access_denied");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("pending"));
    // Someone else is not affected.
    app.device.on("bob", Action::Ignore);
    assert_eq!(
        app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", "bob")])
            .await
            .status,
        200
    );

    // Once alice answers one request, she can be asked again.
    let notification = app.device.wait_for_notification("alice").await;
    let page = sign_in(
        notification.authorization_url(),
        &Action::SignInAs("alice".into()),
    )
    .await
    .unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(
        app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_user_gets_at_most_the_configured_pushes_per_minute_even_as_requests_expire() {
    // Push bombing: short-lived requests free their pending slots at once,
    // so only a rate per user stops the flood.
    clear_of_a_minute_boundary().await;
    let app = TestApp::builder().store(StoreKind::Redis).spawn().await;
    app.device.on("alice", Action::Ignore);
    let ask = || {
        app.bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("requested_expiry", "1"),
            ],
        )
    };
    for _ in 0..5 {
        assert_eq!(ask().await.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reply = ask().await;
    reply.assert_error(429, "temporarily_unavailable");
    assert!(reply.header("retry-after").is_some());
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("this user"));
    // Someone else is not affected.
    app.device.on("bob", Action::Ignore);
    assert_eq!(
        app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", "bob")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn other_spellings_of_one_name_share_its_limits_but_the_hint_goes_on_as_sent() {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .sections("[limits]\npending_per_user = 2")
        .spawn()
        .await;
    for hint in ["alice", "ALICE", "\u{FF41}lice"] {
        app.device.on(hint, Action::Ignore);
    }
    app.start("shop", "alice").await;
    app.start("shop", "ALICE").await;
    let reply = app
        .bc_authorize(
            "shop",
            &[("scope", "openid"), ("login_hint", "\u{FF41}lice")],
        )
        .await;
    reply.assert_error(403, "access_denied");
    // The second request carried the hint exactly as the client sent it.
    let sent = app.device.wait_for_notification("ALICE").await;
    assert_eq!(sent.body["login_hint"], "ALICE");
}
