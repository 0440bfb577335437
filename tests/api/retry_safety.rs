//! A 503 consumes nothing: when Redis stalls, an instance dies or the IdP
//! is down in the middle of a step, the client's or the browser's retry
//! reaches the outcome it would have reached without the fault, and tokens
//! are handed out in at most one 200.
use std::time::Duration;

use ciba_proxy_e2e::app::{StoreKind, TestApp};
use ciba_proxy_e2e::device::{sign_in_until, Action};
use ciba_proxy_e2e::idp::TestIdp;
use ciba_proxy_e2e::redis_server::RedisServer;

/// The callback URL the IdP sent the user's browser to, not yet followed.
async fn callback_url(app: &TestApp, login_hint: &str) -> String {
    let notification = app.device.wait_for_notification(login_hint).await;
    let redirect = sign_in_until(
        notification.authorization_url(),
        &Action::SignInAs(login_hint.into()),
        Some(&app.url("/callback")),
    )
    .await
    .expect("sign in at the IdP");
    assert!(
        redirect.url.starts_with(&app.url("/callback")),
        "{redirect:?}"
    );
    redirect.url
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("reach the proxy");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn polls_answered_503_while_redis_stalls_lose_no_tokens() {
    let redis = RedisServer::start().await.expect("a private redis-server");
    let app = TestApp::builder().redis_at(&redis.url()).spawn().await;
    let id = app.start("shop", "alice").await;
    assert_eq!(app.device.wait_for_page("alice").await.status, 200);

    // The polls reach Redis, which runs them only once it resumes.
    redis.pause();
    for _ in 0..2 {
        app.poll("shop", &id)
            .await
            .assert_error(503, "temporarily_unavailable");
    }
    redis.resume();
    let tokens = app.poll("shop", &id).await;
    assert_eq!(tokens.status, 200, "{tokens:?}");
    assert!(tokens.body["access_token"].is_string());
    app.poll("shop", &id)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_callback_during_a_redis_stall_completes_on_retry() {
    let redis = RedisServer::start().await.expect("a private redis-server");
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start().unwrap()));
    let app = TestApp::builder()
        .idp(idp)
        .redis_at(&redis.url())
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let url = callback_url(&app, "alice").await;

    redis.pause();
    let (status, page) = get(&url).await;
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("Please try again"), "{page}");
    redis.resume();

    let (status, page) = get(&url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("You are signed in"), "{page}");
    assert_eq!(app.poll("shop", &id).await.status, 200);
    app.poll("shop", &id)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
}

/// Waits until the IdP has received the code exchange.
async fn wait_for_exchange(idp: &TestIdp) {
    for _ in 0..100 {
        if idp.stats().await.unwrap().count("POST /token") == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the proxy never sent the code to the IdP");
}

#[tokio::test]
async fn a_redis_stall_after_the_code_exchange_loses_no_login() {
    let redis = RedisServer::start().await.expect("a private redis-server");
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start().unwrap()));
    let app = TestApp::builder()
        .idp(idp)
        .redis_at(&redis.url())
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let url = callback_url(&app, "alice").await;

    // Redis stalls while the IdP is answering the exchange: the code is
    // spent, and the proxy cannot store the tokens yet.
    idp.reset_stats().await.unwrap();
    idp.delay_token_answers(Duration::from_millis(1500))
        .await
        .unwrap();
    let callback = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    wait_for_exchange(idp).await;
    redis.pause();
    let (status, page) = callback.await.unwrap();
    assert_eq!(status, 202, "{page}");
    assert!(page.contains("Completing your sign-in"), "{page}");
    redis.resume();

    // The proxy kept the tokens and records them once Redis is back.
    let mut reply = app.poll("shop", &id).await;
    for _ in 0..10 {
        if reply.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        reply = app.poll("shop", &id).await;
    }
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body["access_token"].is_string());
    app.poll("shop", &id)
        .await
        .assert_error(400, "invalid_grant");
    let (status, page) = get(&url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("You are signed in"), "{page}");
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
}

#[tokio::test]
async fn a_code_whose_outcome_died_with_its_instance_is_never_sent_again() {
    let mut redis = RedisServer::start().await.expect("a private redis-server");
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start().unwrap()));
    // A short exchange lease (3 s timeout, one try: 9 s), so the test can
    // outwait it.
    let mut cluster = TestApp::builder()
        .idp(idp)
        .store(StoreKind::Redis)
        .redis_at(&redis.url())
        .upstream_toml("timeout_ms = 3000\nexchange_attempts = 1")
        .spawn_cluster(2)
        .await;
    let app = &cluster.app;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let url = callback_url(app, "alice").await;
    let path = url.strip_prefix(&app.issuer).unwrap().to_owned();

    // Redis goes away while the IdP answers the exchange; the instance that
    // holds the tokens dies before Redis is back.
    idp.reset_stats().await.unwrap();
    idp.delay_token_answers(Duration::from_millis(1500))
        .await
        .unwrap();
    let first = format!("{}{path}", cluster.processes[0].url);
    let callback = tokio::spawn(async move { get(&first).await });
    wait_for_exchange(idp).await;
    redis.stop().await;
    let (status, page) = callback.await.unwrap();
    assert_eq!(status, 202, "{page}");
    cluster.processes[0].kill();
    redis.restart().await;

    // After the exchange lease, the browser's retry ends the request: the
    // code was spent, and is not sent a second time.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, page) = get(&format!("{}{path}", cluster.processes[1].url)).await;
    assert_eq!(status, 502, "{page}");
    let reply = cluster.app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert!(
        reply.body["error_description"]
            .as_str()
            .unwrap()
            .contains("outcome was lost"),
        "{reply:?}"
    );
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
}

#[tokio::test]
async fn a_backchannel_request_during_a_redis_stall_is_503_and_its_retry_completes() {
    let redis = RedisServer::start().await.expect("a private redis-server");
    let app = TestApp::builder()
        .redis_at(&redis.url())
        .sections("[limits]\npending_per_user = 1\n")
        .spawn()
        .await;
    redis.pause();
    app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await
        .assert_error(503, "temporarily_unavailable");
    redis.resume();
    // The stalled attempt holds no slot: the retry is accepted and completes.
    let id = app.start("shop", "alice").await;
    assert_eq!(app.device.wait_for_page("alice").await.status, 200);
    assert_eq!(app.poll("shop", &id).await.status, 200);
}

/// A backchannel request for alice whose first store command of the
/// user's limits (`limits` chooses which) meets a stalled Redis: 503, and
/// the retry is accepted, the stalled command (run on resume) having been
/// given back.
async fn stall_at_the_users_limits_then_retry(limits: &str) {
    let redis = RedisServer::start().await.expect("a private redis-server");
    let app = TestApp::builder()
        .redis_at(&redis.url())
        .sections(&format!(
            "[limits]\nrequests_per_client_per_minute = 0\n{limits}"
        ))
        .spawn()
        .await;
    // Another user's request first, so Redis knows the scripts: a stalled
    // EVALSHA then runs on resume instead of failing with NOSCRIPT.
    let other = app.start("shop", "bob").await;
    assert_eq!(app.device.wait_for_page("bob").await.status, 200);
    assert_eq!(app.poll("shop", &other).await.status, 200);

    redis.pause();
    app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await
        .assert_error(503, "temporarily_unavailable");
    redis.resume();

    let id = app.start("shop", "alice").await;
    assert_eq!(app.device.wait_for_page("alice").await.status, 200);
    assert_eq!(app.poll("shop", &id).await.status, 200);
}

#[tokio::test]
async fn a_stall_at_the_pending_slot_leaves_no_slot_behind() {
    stall_at_the_users_limits_then_retry(
        "notifications_per_user_per_minute = 0\npending_per_user = 1\n",
    )
    .await;
}

#[tokio::test]
async fn a_stall_at_the_push_count_leaves_no_push_counted() {
    stall_at_the_users_limits_then_retry(
        "notifications_per_user_per_minute = 1\npending_per_user = 1\n",
    )
    .await;
}

#[tokio::test]
async fn an_instance_killed_during_a_callback_leaves_the_login_to_another() {
    let redis = RedisServer::start().await.expect("a private redis-server");
    let mut cluster = TestApp::builder()
        .store(StoreKind::Redis)
        .redis_at(&redis.url())
        .spawn_cluster(3)
        .await;
    let app = &cluster.app;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let url = callback_url(app, "alice").await;
    let path = url.strip_prefix(&app.issuer).unwrap().to_owned();

    // The browser reaches instance 0, which stalls on Redis and is killed.
    redis.pause();
    let first = format!("{}{path}", cluster.processes[0].url);
    let stalled = tokio::spawn(async move { reqwest::get(first).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.processes[0].kill();
    assert!(
        stalled.await.unwrap().is_err(),
        "the connection died with it"
    );
    redis.resume();

    // Its retry lands on another instance and completes the login.
    let (status, page) = get(&format!("{}{path}", cluster.processes[1].url)).await;
    assert_eq!(status, 200, "{page}");
    let app = &cluster.app;
    let replies = futures::future::join_all((0..3).map(|_| app.poll("shop", &id))).await;
    assert_eq!(
        replies.iter().filter(|r| r.status == 200).count(),
        1,
        "{replies:?}"
    );
}

#[tokio::test]
async fn an_idp_stopped_around_the_callback_still_completes_the_login() {
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start().unwrap()));
    let app = TestApp::builder().idp(idp).spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let url = callback_url(&app, "alice").await;

    idp.refuse_connections(Duration::from_secs(3))
        .await
        .unwrap();
    let (status, page) = get(&url).await;
    assert_eq!(status, 202, "{page}");
    assert!(page.contains("Completing your sign-in"), "{page}");
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");

    // The proxy keeps trying in the background; the login completes.
    let mut reply = app.poll("shop", &id).await;
    for _ in 0..20 {
        if reply.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        reply = app.poll("shop", &id).await;
    }
    assert_eq!(reply.status, 200, "{reply:?}");
    // The browser's retry shows the outcome, without a second exchange.
    let (status, page) = get(&url).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
}

#[tokio::test]
async fn a_code_exchange_that_gets_no_answer_is_never_sent_again() {
    // The IdP may have redeemed the code: a second try could only fail,
    // and some IdPs revoke the first tokens when a code is used twice.
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start().unwrap()));
    let app = TestApp::builder()
        .idp(idp)
        .upstream_toml("timeout_ms = 1000")
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let url = callback_url(&app, "alice").await;
    idp.reset_stats().await.unwrap();
    idp.hang(Duration::from_secs(30)).await.unwrap();
    let (status, page) = get(&url).await;
    assert_eq!(status, 502, "{page}");
    idp.end_outage().await.unwrap();
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("did not answer in time"));
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
}
