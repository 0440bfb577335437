//! Outages: Redis going away and coming back, the IdP dying mid-login.
use std::time::{Duration, Instant};

use ciba_proxy_e2e::app::{Reply, TestApp};
use ciba_proxy_e2e::device::{sign_in, sign_in_until, Action};
use ciba_proxy_e2e::idp::TestIdp;
use ciba_proxy_e2e::redis_server::RedisServer;

/// Polls (at the client interval) until the answer is not pending.
async fn poll_until_decided(app: &TestApp, id: &str) -> Reply {
    for _ in 0..30 {
        let reply = app.poll("shop", id).await;
        if !matches!(reply.error(), "authorization_pending" | "slow_down") {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    panic!("the login was never decided");
}

/// Polls until the answer is no longer a 503 (the proxy reconnected).
async fn poll_until_available(app: &TestApp, id: &str) -> Reply {
    for _ in 0..100 {
        let reply = app.poll("shop", id).await;
        if reply.status != 503 {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the proxy never recovered from the Redis restart");
}

/// A proxy on a Redis of the test's own, which it stops and restarts.
async fn app_on_a_private_redis() -> (RedisServer, TestApp) {
    let redis = RedisServer::start()
        .await
        .expect("start a private redis-server");
    let app = TestApp::builder()
        .redis_at(&redis.url())
        .ciba(120, 600, 1)
        .spawn()
        .await;
    (redis, app)
}

#[tokio::test]
async fn a_redis_restart_gives_503s_meanwhile_and_loses_nothing() {
    let (mut redis, app) = app_on_a_private_redis().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;

    redis.stop().await;
    let reply = app.poll("shop", &id).await;
    reply.assert_error(503, "temporarily_unavailable");
    assert!(reply.header("retry-after").is_some());
    app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", "bob")])
        .await
        .assert_error(503, "temporarily_unavailable");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["store"], false);

    redis.restart().await;
    poll_until_available(&app, &id)
        .await
        .assert_error(400, "authorization_pending");
    assert_eq!(app.get("/readyz").await.status, 200);

    // The login that started before the outage finishes after it.
    let page = sign_in(
        notification.authorization_url(),
        &Action::SignInAs("alice".into()),
    )
    .await
    .unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.poll("shop", &id).await.status, 200);

    // And new logins work again, webhook included.
    let again = app.start("shop", "carol").await;
    assert_eq!(app.device.wait_for_page("carol").await.status, 200);
    assert_eq!(app.poll("shop", &again).await.status, 200);
}

#[tokio::test]
async fn a_moment_after_redis_is_back_no_worker_s_next_request_fails() {
    let (mut redis, app) = app_on_a_private_redis().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    // Every worker thread has reached Redis over its own connection.
    for _ in 0..6 {
        let reply = app.poll_on_a_new_connection("shop", &id).await;
        assert_eq!(reply.status, 400, "{reply:?}");
    }

    // A restart breaks every connection; none was in use at the time.
    redis.stop().await;
    redis.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..6 {
        let reply = app.poll_on_a_new_connection("shop", &id).await;
        assert!(
            matches!(reply.error(), "authorization_pending" | "slow_down"),
            "{reply:?}"
        );
    }
}

#[tokio::test]
async fn an_idp_that_dies_during_a_login_ends_it_once_the_code_expires() {
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start().unwrap()));
    let app = TestApp::builder()
        .idp(idp)
        .upstream_toml("code_lifetime_secs = 3")
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    let url = notification.authorization_url();

    // The user signs in; the IdP dies before the proxy can exchange the code.
    let redirect = sign_in_until(
        url,
        &Action::SignInAs("alice".into()),
        Some(&app.url("/callback")),
    )
    .await
    .unwrap();
    assert!(
        redirect.url.starts_with(&app.url("/callback")),
        "{redirect:?}"
    );
    idp.stop();

    // The user is told the sign-in is being completed, and may check again.
    let page = reqwest::get(&redirect.url).await.unwrap();
    assert_eq!(page.status(), 202);
    let body = page.text().await.unwrap();
    assert!(body.contains("Completing your sign-in"), "{body}");
    assert!(body.contains("Check again"), "{body}");
    // The client learns the outcome once it is final: when the code expired.
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");
    let reply = poll_until_decided(&app, &id).await;
    reply.assert_error(400, "access_denied");
    assert!(
        reply.body["error_description"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_blackholed_idp_at_the_callback_keeps_the_user_waiting_seconds_not_half_a_minute() {
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start().unwrap()));
    let app = TestApp::builder().idp(idp).spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    let redirect = sign_in_until(
        notification.authorization_url(),
        &Action::SignInAs("alice".into()),
        Some(&app.url("/callback")),
    )
    .await
    .unwrap();

    // Connecting to the IdP times out now: with the full 10 s timeout per
    // try, the browser waited 31.5 s.
    let blackhole = idp.blackhole(Duration::from_secs(15)).await.unwrap();
    let started = Instant::now();
    let page = reqwest::get(&redirect.url).await.unwrap();
    let waited = started.elapsed();
    drop(blackhole);
    assert_eq!(page.status(), 202);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Completing your sign-in"),
        "the page says the sign-in goes on"
    );
    assert!(
        waited < Duration::from_secs(10),
        "the browser waited {waited:?}"
    );

    // The IdP comes back; the background exchange completes the login.
    let reply = poll_until_decided(&app, &id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}
