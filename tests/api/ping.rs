//! CIBA Core §10.2 ping mode: the client is told when the result is ready.
use std::time::Duration;

use ciba_proxy_e2e::app::{ClientSpec, TestApp};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::ping_receiver::{PingReceiver, Reply};

const TOKEN: &str = "8d67dc78-7faa-4d41-aabd-67707b374255";

async fn ping_app(receiver: &PingReceiver) -> TestApp {
    TestApp::builder()
        .clients(vec![ClientSpec::basic("app").ping(&receiver.url())])
        .spawn()
        .await
}

async fn start(app: &TestApp, hint: &str) -> String {
    let reply = app
        .bc_authorize(
            "app",
            &[
                ("scope", "openid"),
                ("login_hint", hint),
                ("client_notification_token", TOKEN),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // Ping clients may poll too, so they are told the interval.
    assert!(reply.body["interval"].as_u64().is_some());
    reply.body["auth_req_id"].as_str().unwrap().to_owned()
}

/// Waits long enough for any retry (the first comes after 0.5 s) to happen.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn ping_clients_must_send_a_valid_notification_token() {
    let receiver = PingReceiver::start(vec![]).await.unwrap();
    let app = ping_app(&receiver).await;
    let base = [("scope", "openid"), ("login_hint", "alice")];
    app.bc_authorize("app", &base)
        .await
        .assert_error(400, "invalid_request");
    let long = "a".repeat(1025);
    for bad in [long.as_str(), "not a token"] {
        let mut params = base.to_vec();
        params.push(("client_notification_token", bad));
        app.bc_authorize("app", &params)
            .await
            .assert_error(400, "invalid_request");
    }
}

#[tokio::test]
async fn approval_is_pinged_once_with_the_bearer_token_and_redeemable() {
    let receiver = PingReceiver::start(vec![Reply::StatusWithBody(200, "thanks".into())])
        .await
        .unwrap();
    let app = ping_app(&receiver).await;
    let id = start(&app, "alice").await;
    let pings = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(pings.len(), 1);
    assert_eq!(
        pings[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(pings[0]
        .content_type
        .as_deref()
        .unwrap_or_default()
        .starts_with("application/json"));
    assert_eq!(pings[0].body, serde_json::json!({ "auth_req_id": id }));
    settle().await;
    assert_eq!(
        receiver.received().len(),
        1,
        "a delivered ping is not repeated"
    );
    assert_eq!(app.poll("app", &id).await.status, 200);
}

#[tokio::test]
async fn a_204_counts_as_delivered() {
    let receiver = PingReceiver::start(vec![Reply::Status(204)]).await.unwrap();
    let app = ping_app(&receiver).await;
    let id = start(&app, "alice").await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    settle().await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(app.poll("app", &id).await.status, 200);
}

#[tokio::test]
async fn a_denial_is_pinged_too() {
    let receiver = PingReceiver::start(vec![Reply::Status(204)]).await.unwrap();
    let app = ping_app(&receiver).await;
    app.device.on("alice", Action::Cancel);
    let id = start(&app, "alice").await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    app.poll("app", &id)
        .await
        .assert_error(400, "access_denied");
}

#[tokio::test]
async fn client_errors_are_final_and_not_retried() {
    for status in [401, 403] {
        let receiver = PingReceiver::start(vec![Reply::Status(status)])
            .await
            .unwrap();
        let app = ping_app(&receiver).await;
        let id = start(&app, "alice").await;
        receiver.wait_for(1, Duration::from_secs(10)).await;
        settle().await;
        assert_eq!(receiver.received().len(), 1, "{status} must not be retried");
        // The client can still collect its tokens by polling.
        assert_eq!(app.poll("app", &id).await.status, 200);
    }
}

#[tokio::test]
async fn a_server_error_is_retried_until_delivered() {
    let receiver = PingReceiver::start(vec![
        Reply::Status(500),
        Reply::Status(503),
        Reply::Status(200),
    ])
    .await
    .unwrap();
    let app = ping_app(&receiver).await;
    let id = start(&app, "alice").await;
    let pings = receiver.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(pings.len(), 3, "{pings:?}");
    settle().await;
    assert_eq!(receiver.received().len(), 3, "delivered: no more pings");
    assert_eq!(app.poll("app", &id).await.status, 200);
}

#[tokio::test]
async fn a_redirect_is_never_followed() {
    let receiver = PingReceiver::start(vec![]).await.unwrap();
    let target = receiver.redirect_target();
    let redirecting = PingReceiver::start(vec![Reply::Redirect(301, target)])
        .await
        .unwrap();
    let app = ping_app(&redirecting).await;
    start(&app, "alice").await;
    redirecting.wait_for(1, Duration::from_secs(10)).await;
    settle().await;
    assert_eq!(receiver.redirect_hits(), 0, "the redirect was followed");
    assert_eq!(redirecting.received().len(), 1, "a redirect is final");
}
