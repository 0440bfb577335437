//! Long polling (`ciba.long_poll_secs`): a poll of a pending request is
//! held until the user decides, on whichever instance, and answers then.
use std::time::{Duration, Instant};

use ciba_proxy_e2e::app::{Reply, StoreKind, TestApp};
use ciba_proxy_e2e::device::{sign_in, sign_in_until, Action};

/// A poll by "shop" at `token_url`, left running (it may be held).
fn hold_poll(
    app: &TestApp,
    token_url: &str,
    id: &str,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let request = app
        .http
        .post(token_url)
        .basic_auth("shop", Some("shop-secret"))
        .form(&[
            ("grant_type", ciba_proxy_e2e::app::CIBA_GRANT),
            ("auth_req_id", id),
        ]);
    tokio::spawn(request.send())
}

#[tokio::test]
async fn a_long_poll_answers_with_the_tokens_the_moment_the_user_approves() {
    let app = TestApp::builder()
        .ciba_toml("long_poll_secs = 30")
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let discovery = app.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.body["backchannel_long_poll_secs"], 30);
    let notification = app.device.wait_for_notification("alice").await;

    // One poll, held while alice signs in.
    let poll = async {
        let reply = app.poll("shop", &id).await;
        (reply, Instant::now())
    };
    let approve = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let page = sign_in(
            notification.authorization_url(),
            &Action::SignInAs("alice".into()),
        )
        .await
        .unwrap();
        (page, Instant::now())
    };
    let ((tokens, answered), (page, decided)) = tokio::join!(poll, approve);
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(tokens.status, 200, "{tokens:?}");
    assert!(tokens.body["access_token"].is_string());
    assert_woken(decided, answered);
}

/// The held poll answered well before the 30 s wait would have ended it (a
/// missed wake-up still gets 200, from the second look at the end).
#[track_caller]
fn assert_woken(decided: Instant, answered: Instant) {
    let late = answered.saturating_duration_since(decided);
    assert!(
        late < Duration::from_secs(10),
        "answered {late:?} after the decision"
    );
}

#[tokio::test]
async fn a_long_poll_hears_a_decision_made_on_another_instance() {
    let cluster = TestApp::builder()
        .store(StoreKind::Redis)
        .ciba_toml("long_poll_secs = 30")
        .spawn_cluster(2)
        .await;
    let app = &cluster.app;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    let callback = sign_in_until(
        notification.authorization_url(),
        &Action::SignInAs("alice".into()),
        Some(&app.url("/callback")),
    )
    .await
    .unwrap()
    .url;
    let path = callback.strip_prefix(&app.issuer).unwrap().to_owned();

    // The client waits on instance 0; the browser lands on instance 1.
    let held = hold_poll(app, &format!("{}/token", cluster.processes[0].url), &id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let landed = reqwest::get(format!("{}{path}", cluster.processes[1].url))
        .await
        .unwrap();
    let decided = Instant::now();
    assert_eq!(landed.status(), 200);
    let reply = held.await.unwrap().unwrap();
    assert_woken(decided, Instant::now());
    assert_eq!(reply.status(), 200, "{:?}", reply.text().await);
}

#[tokio::test]
async fn a_long_poll_that_times_out_is_pending_and_the_next_poll_is_not_slow_down() {
    let app = TestApp::builder()
        .ciba(120, 600, 1)
        .ciba_toml("long_poll_secs = 1")
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    for _ in 0..3 {
        app.poll("shop", &id)
            .await
            .assert_error(400, "authorization_pending");
    }
}

#[tokio::test]
async fn after_a_slow_down_the_poll_that_follows_a_long_poll_is_not_slow_down() {
    for store in [StoreKind::Memory, StoreKind::Redis] {
        let app = TestApp::builder()
            .store(store)
            .ciba(120, 600, 1)
            .ciba_toml("long_poll_secs = 1")
            .spawn()
            .await;
        app.device.on("alice", Action::Ignore);
        let id = app.start("shop", "alice").await;
        // A second poll while the first is held: too fast, and the
        // request's interval grows past the long poll's wait.
        let held = hold_poll(&app, &format!("{}/token", app.issuer), &id);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fast = app.poll("shop", &id).await;
        fast.assert_error(400, "slow_down");
        let held = Reply::read(held.await.unwrap().unwrap()).await;
        held.assert_error(400, "authorization_pending");

        // The client waited the whole long poll: its next poll is on time.
        app.poll("shop", &id)
            .await
            .assert_error(400, "authorization_pending");
    }
}

#[tokio::test]
async fn past_the_cap_a_poll_answers_at_once() {
    let app = TestApp::builder()
        .ciba_toml("long_poll_secs = 30\nlong_poll_max_waiting = 1")
        .spawn()
        .await;
    for user in ["alice", "bob"] {
        app.device.on(user, Action::Ignore);
    }
    let first = app.start("shop", "alice").await;
    let second = app.start("shop", "bob").await;
    let held = hold_poll(&app, &format!("{}/token", app.issuer), &first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.poll("shop", &second)
        .await
        .assert_error(400, "authorization_pending");
    assert!(!held.is_finished(), "the first poll is still held");
    held.abort();
}

#[tokio::test]
async fn shutdown_answers_waiting_polls_at_once() {
    let (app, mut proxy) = TestApp::builder()
        .ciba_toml("long_poll_secs = 30")
        .spawn_process(&[])
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let held = hold_poll(&app, &format!("{}/token", app.issuer), &id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.terminate();
    // Well before the 30 s wait: the held poll is answered, and the process exits.
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)).await, Some(0));
    let reply = held.await.unwrap().unwrap();
    assert_eq!(reply.status(), 400);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "authorization_pending");
}
