//! `/metrics` on the operator port (`[metrics] bind`): the series move
//! with a login, each outcome and poll answer is counted, and labels stay
//! bounded.
use std::time::Duration;

use ciba_proxy_e2e::app::{ClientSpec, ProxyProcess, StoreKind, TestApp};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::ping_receiver::PingReceiver;

/// A free loopback port for `[metrics] bind`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn scrape(port: u16) -> String {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the series `name{labels}` (labels as rendered, in order).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_and_move_with_a_login() {
    let port = free_port();
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .sections(&format!("[metrics]\nbind = \"127.0.0.1:{port}\"\n"))
        .spawn()
        .await;
    // Not on the public port.
    assert_eq!(app.get("/metrics").await.status, 404);

    // The recorder is one per process: other tests record too, so compare.
    let before = scrape(port).await;
    let id = app.start("shop", "alice").await;
    let page = app.device.wait_for_page("alice").await;
    assert_eq!(page.status, 200, "{page:?}");
    let reply = app.poll("shop", &id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let intruder = format!("intruder-{}", rand::random::<u32>());
    let refused = reqwest::Client::new()
        .post(app.url("/bc-authorize"))
        .form(&[
            ("client_id", intruder.as_str()),
            ("client_secret", "guess"),
            ("scope", "openid"),
            ("login_hint", "alice"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let after = scrape(port).await;

    for series in [
        r#"ciba_requests_opened_total{client_id="shop",delivery_mode="poll"}"#,
        r#"ciba_decisions_total{outcome="approved"}"#,
        "ciba_decision_seconds_count",
        r#"ciba_polls_total{answer="tokens"}"#,
        r#"ciba_deliveries_total{channel="webhook",result="ok"}"#,
        r#"ciba_upstream_calls_total{endpoint="token",result="2xx"}"#,
        r#"ciba_upstream_call_seconds_count{endpoint="token"}"#,
        r#"ciba_store_calls_total{operation="create",result="ok"}"#,
        r#"ciba_store_call_seconds_count{operation="poll"}"#,
        r#"ciba_client_auth_failures_total{client_id="unknown"}"#,
    ] {
        assert!(
            value(&after, series) > value(&before, series),
            "{series} did not move:\n{after}"
        );
    }
    for gauge in [
        "ciba_pending_requests",
        "ciba_job_queue_depth",
        "ciba_job_queue_oldest_due_seconds",
    ] {
        assert!(
            after.lines().any(|l| l.starts_with(&format!("{gauge} "))),
            "{gauge} missing:\n{after}"
        );
    }
    // Labels never carry what a caller made up, nor the user.
    assert!(!after.contains(&intruder), "{after}");
    assert!(!after.contains("alice"), "{after}");
    assert!(!after.contains(&id), "{after}");
}

#[tokio::test]
async fn a_limit_hit_is_counted() {
    let port = free_port();
    let app = TestApp::builder()
        .sections(&format!(
            "[metrics]\nbind = \"127.0.0.1:{port}\"\n[limits]\npending_per_user = 1\n"
        ))
        .spawn()
        .await;
    let series = r#"ciba_limits_hit_total{limit="pending_per_user"}"#;
    let before = value(&scrape(port).await, series);
    let user = format!("limited-{}", rand::random::<u32>());
    app.start("shop", &user).await;
    let second = app
        .bc_authorize(
            "shop",
            &[("scope", "openid"), ("login_hint", user.as_str())],
        )
        .await;
    assert_eq!(second.status, 403, "{second:?}");
    assert!(value(&scrape(port).await, series) > before);
}

/// A proxy process of its own (so its series count this test's calls
/// alone), serving `/metrics` on the returned port, logging JSON.
async fn isolated(
    builder: ciba_proxy_e2e::app::TestAppBuilder,
    sections: &str,
) -> (TestApp, ProxyProcess, u16) {
    let port = free_port();
    let (app, proxy) = builder
        .sections(&format!(
            "[metrics]\nbind = \"127.0.0.1:{port}\"\n{sections}"
        ))
        .spawn_process(&[("CIBA_PROXY__LOG__FORMAT", "json")])
        .await;
    (app, proxy, port)
}

/// Scrapes until `series` reaches `at_least` (background work records some
/// series a moment after the client's answer), for up to 10 s.
async fn value_reaching(port: u16, series: &str, at_least: f64) -> f64 {
    let mut seen = 0.0;
    for _ in 0..100 {
        seen = value(&scrape(port).await, series);
        if seen >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test]
async fn each_outcome_poll_answer_and_ping_is_counted() {
    let receiver = PingReceiver::start(vec![]).await.unwrap();
    let (app, _proxy, port) = isolated(
        TestApp::builder().clients(vec![
            ClientSpec::basic("shop"),
            ClientSpec::basic("app").ping(&receiver.url()),
        ]),
        "",
    )
    .await;

    // slow_down: polled again at once.
    app.device.on("alice", Action::Ignore);
    let pending = app.start("shop", "alice").await;
    app.poll("shop", &pending)
        .await
        .assert_error(400, "authorization_pending");
    app.poll("shop", &pending)
        .await
        .assert_error(400, "slow_down");
    // invalid: an id nobody issued.
    app.poll("shop", "no-such-request")
        .await
        .assert_error(400, "invalid_grant");
    // denied: the user cancels at the IdP.
    app.device.on("bob", Action::Cancel);
    let denied = app.start("shop", "bob").await;
    app.poll_until_decided("shop", &denied)
        .await
        .assert_error(400, "access_denied");
    // expired: nobody answers within the second it lives.
    app.device.on("carol", Action::Ignore);
    let expiring = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "carol"),
                ("requested_expiry", "1"),
            ],
        )
        .await;
    let expiring = expiring.body["auth_req_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.poll("shop", &expiring)
        .await
        .assert_error(400, "expired_token");
    // A ping client's user approves: the client is pinged, and the ID
    // token is checked against the IdP's key set.
    app.device.on("dave", Action::SignInAs("dave".into()));
    let ping = app
        .bc_authorize(
            "app",
            &[
                ("scope", "openid"),
                ("login_hint", "dave"),
                (
                    "client_notification_token",
                    "8d67dc78-7faa-4d41-aabd-67707b374255",
                ),
            ],
        )
        .await;
    assert_eq!(ping.status, 200, "{ping:?}");
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    for (series, expected) in [
        (r#"ciba_polls_total{answer="slow_down"}"#, 1.0),
        (r#"ciba_polls_total{answer="invalid"}"#, 1.0),
        (r#"ciba_polls_total{answer="denied"}"#, 1.0),
        (r#"ciba_polls_total{answer="expired"}"#, 1.0),
        (r#"ciba_decisions_total{outcome="denied"}"#, 1.0),
        (r#"ciba_decisions_total{outcome="expired"}"#, 1.0),
        (r#"ciba_decisions_total{outcome="approved"}"#, 1.0),
        (r#"ciba_deliveries_total{channel="ping",result="ok"}"#, 1.0),
        (
            r#"ciba_upstream_calls_total{endpoint="jwks",result="2xx"}"#,
            1.0,
        ),
        (r#"ciba_upstream_call_seconds_count{endpoint="jwks"}"#, 1.0),
    ] {
        assert_eq!(
            value_reaching(port, series, expected).await,
            expected,
            "{series}:\n{}",
            scrape(port).await
        );
    }
}

#[tokio::test]
async fn a_request_nobody_polls_is_counted_and_audited_when_it_expires() {
    let (app, proxy, port) = isolated(TestApp::builder(), "").await;
    app.device.on("erin", Action::Ignore);
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "erin"),
                ("requested_expiry", "1"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // Nobody polls, nobody opens a page.
    let series = r#"ciba_decisions_total{outcome="expired"}"#;
    assert_eq!(value_reaching(port, series, 1.0).await, 1.0);
    let log = proxy.logs();
    let expired = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["target"] == "audit" && e["event"] == "expired")
        .count();
    assert_eq!(expired, 1, "{log}");
}

#[tokio::test]
async fn a_long_poll_that_times_out_is_counted_pending() {
    let (app, _proxy, port) = isolated(
        TestApp::builder()
            .ciba(120, 600, 1)
            .ciba_toml("long_poll_secs = 1"),
        "",
    )
    .await;
    app.device.on("frank", Action::Ignore);
    let id = app.start("shop", "frank").await;
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");
    let text = scrape(port).await;
    assert_eq!(
        value(&text, r#"ciba_polls_total{answer="pending"}"#),
        1.0,
        "{text}"
    );
}
