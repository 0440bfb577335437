//! An IdP that cannot be reached: `/readyz` says so and `/bc-authorize`
//! answers 503 `temporarily_unavailable` (no push the user cannot
//! complete), judged from recent calls and a background probe; both
//! recover once the IdP answers again.
use std::time::{Duration, Instant};

use ciba_proxy_e2e::app::{Reply, TestApp};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::idp::TestIdp;

/// Longest wait for the proxy to notice a change: the idle probe period
/// (5 s) plus the failures it takes, with room for a slow machine.
const NOTICE: Duration = Duration::from_secs(20);

/// An IdP of the test's own, so stopping it touches no other test.
fn own_idp() -> &'static TestIdp {
    Box::leak(Box::new(TestIdp::start().expect("start a test IdP")))
}

/// Asks `/readyz` until its status is `status`; the answer and how long
/// it took.
async fn readyz_until(app: &TestApp, status: u16) -> (Reply, Duration) {
    let started = Instant::now();
    loop {
        let reply = app.get("/readyz").await;
        if reply.status == status {
            return (reply, started.elapsed());
        }
        assert!(
            started.elapsed() < NOTICE,
            "/readyz did not turn {status} within {NOTICE:?}: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Backchannel requests the IdP dropped during its outage.
async fn dropped_backchannel_calls(idp: &TestIdp) -> u64 {
    let outage: serde_json::Value = reqwest::get(format!("{}/_test/outage", idp.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    outage["dropped"]["POST /backchannel"].as_u64().unwrap_or(0)
}

#[track_caller]
fn assert_unreachable(ready: &Reply) {
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.body["status"], "not_ready", "{ready:?}");
    assert_eq!(ready.body["store"], true, "{ready:?}");
    assert_eq!(ready.body["upstream"], false, "{ready:?}");
    let error = ready.body["upstream_error"].as_str().unwrap_or_default();
    assert!(error.contains("not reachable"), "{ready:?}");
}

#[track_caller]
fn assert_refused_for_now(reply: &Reply) {
    reply.assert_error(503, "temporarily_unavailable");
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    assert!(
        reply.body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("identity provider")),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_stopped_idp_makes_the_proxy_unready_and_new_requests_503_without_a_push() {
    let idp = own_idp();
    let app = TestApp::builder().idp(idp).spawn().await;
    assert_eq!(app.get("/readyz").await.status, 200);

    // The authorization-code kind makes no IdP call at /bc-authorize; an
    // idle probe finds the IdP gone.
    idp.stop();
    let (ready, took) = readyz_until(&app, 503).await;
    eprintln!(
        "authorization_code: /readyz turned 503 {took:?} after the IdP stopped: {}",
        ready.body
    );
    assert_unreachable(&ready);

    app.device.on("bob", Action::Ignore);
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "bob")])
        .await;
    assert_refused_for_now(&reply);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.device
            .notifications()
            .iter()
            .all(|n| n.body["login_hint"] != "bob"),
        "a push went out for a request the IdP cannot serve"
    );
}

#[tokio::test]
async fn an_idp_outage_turns_a_native_ciba_proxy_unready_and_it_recovers_without_traffic() {
    let idp = own_idp();
    let app = TestApp::builder()
        .idp(idp)
        .ciba_upstream("poll")
        .spawn()
        .await;
    assert_eq!(app.get("/readyz").await.status, 200);

    idp.outage(Duration::from_secs(60)).await.unwrap();
    // The backchannel call that fails is the first sign.
    app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await
        .assert_error(503, "temporarily_unavailable");
    let (ready, took) = readyz_until(&app, 503).await;
    eprintln!("ciba: /readyz turned 503 {took:?} after the first failed call");
    assert_unreachable(&ready);
    let tried = dropped_backchannel_calls(idp).await;
    assert_eq!(tried, 1);
    let refused = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    assert_refused_for_now(&refused);
    assert!(
        refused.body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("not reachable")),
        "{refused:?}"
    );
    assert_eq!(
        dropped_backchannel_calls(idp).await,
        tried,
        "refused without asking the IdP"
    );

    // Back: the background probe notices; no request has to fail first.
    idp.end_outage().await.unwrap();
    let (_, took) = readyz_until(&app, 200).await;
    eprintln!("ciba: /readyz turned 200 {took:?} after the IdP came back");
    let again = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    assert_eq!(again.status, 200, "{again:?}");
}

#[tokio::test]
async fn an_authorization_code_proxy_recovers_when_an_outage_ends() {
    let idp = own_idp();
    let app = TestApp::builder().idp(idp).spawn().await;
    assert_eq!(app.get("/readyz").await.status, 200);

    idp.outage(Duration::from_secs(60)).await.unwrap();
    let (ready, _) = readyz_until(&app, 503).await;
    assert_unreachable(&ready);
    assert_refused_for_now(
        &app.bc_authorize("shop", &[("scope", "openid"), ("login_hint", "carol")])
            .await,
    );

    idp.end_outage().await.unwrap();
    readyz_until(&app, 200).await;
    app.device.on("carol", Action::Ignore);
    let id = app.start("shop", "carol").await;
    assert!(!id.is_empty());
    let pushed = app.device.wait_for_notification("carol").await;
    assert_eq!(pushed.body["login_hint"], "carol");
}

#[tokio::test]
async fn a_reachable_idp_is_not_probed_per_request() {
    let idp = own_idp();
    let app = TestApp::builder().idp(idp).spawn().await;
    assert_eq!(app.get("/readyz").await.status, 200);
    let before = idp.stats().await.unwrap();
    for _ in 0..20 {
        assert_eq!(app.get("/readyz").await.status, 200);
    }
    for hint in ["dave", "erin", "frank"] {
        app.device.on(hint, Action::Ignore);
        app.start("shop", hint).await;
    }
    let after = idp.stats().await.unwrap();
    assert_eq!(
        after.total, before.total,
        "readiness and new requests reached the IdP: {after:?}"
    );
}
