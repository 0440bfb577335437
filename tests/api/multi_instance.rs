//! Three proxy processes on one Redis behind a round-robin balancer, one of
//! them killed with SIGKILL mid-flow: every login still completes, and its
//! tokens are handed out exactly once. The executable twin of
//! deploy/docker-compose.yml.
use std::time::Duration;

use ciba_proxy_e2e::app::{ClientSpec, Reply as Answer, StoreKind, TestApp, CIBA_GRANT};
use ciba_proxy_e2e::device::{form_field, Action};
use ciba_proxy_e2e::ping_receiver::{PingReceiver, Reply};

const TOKEN: &str = "ping-token-1";

#[tokio::test]
async fn any_instance_serves_any_step_and_a_killed_one_loses_nothing() {
    let receiver = PingReceiver::start(vec![Reply::Status(204)]).await.unwrap();
    let mut cluster = TestApp::builder()
        .store(StoreKind::Redis)
        .clients(vec![
            ClientSpec::basic("shop"),
            ClientSpec::basic("app").ping(&receiver.url()),
        ])
        .lease_ms(1500)
        .spawn_cluster(3)
        .await;
    let app = &cluster.app;

    // Six logins, accepted round-robin by the three instances. The phones'
    // push gateway is slow, so webhooks are in flight when an instance dies.
    let mut logins = Vec::new();
    for i in 0..6 {
        let hint = format!("user{i}");
        app.device
            .on(&hint, Action::SlowAck(Duration::from_millis(1200)));
        let (client, extra) = if i % 2 == 0 {
            ("shop", None)
        } else {
            ("app", Some(("client_notification_token", TOKEN)))
        };
        let mut params = vec![("scope", "openid"), ("login_hint", hint.as_str())];
        params.extend(extra);
        let reply = app.bc_authorize(client, &params).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        logins.push((
            client,
            hint.clone(),
            reply.body["auth_req_id"].as_str().unwrap().to_owned(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.processes[1].kill();

    for (_, hint, _) in &logins {
        let page = app.device.wait_for_page(hint).await;
        assert_eq!(page.status, 200, "{hint}: {page:?}");
    }
    // Every ping client heard of its result (at least once).
    let pings = receiver.wait_for(3, Duration::from_secs(20)).await;
    for (client, _, id) in &logins {
        if *client == "app" {
            assert!(
                pings.iter().any(|p| p.body["auth_req_id"] == id.as_str()),
                "no ping for {id}"
            );
        }
    }
    // Exactly one token response per login, whichever instance answers.
    for (client, hint, id) in &logins {
        let reply = app.poll(client, id).await;
        assert_eq!(reply.status, 200, "{hint}: {reply:?}");
        for _ in 0..3 {
            app.poll(client, id)
                .await
                .assert_error(400, "invalid_grant");
        }
    }
    let spread = cluster.balancer.connections_per_backend();
    assert!(
        spread.iter().all(|n| *n > 0),
        "every instance served requests: {spread:?}"
    );
}

#[tokio::test]
async fn sigterm_finishes_work_in_flight_and_exits_cleanly() {
    let mut cluster = TestApp::builder()
        .store(StoreKind::Redis)
        .lease_ms(1500)
        .spawn_cluster(2)
        .await;
    let app = &cluster.app;
    let mut ids = Vec::new();
    for i in 0..4 {
        let hint = format!("user{i}");
        app.device
            .on(&hint, Action::SlowAck(Duration::from_millis(800)));
        ids.push((hint.clone(), app.start("shop", &hint).await));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.processes[0].terminate();
    let code = cluster.processes[0]
        .wait_exit(Duration::from_secs(15))
        .await;
    assert_eq!(
        code,
        Some(0),
        "a graceful stop exits 0: {}",
        cluster.processes[0].logs()
    );
    assert!(cluster.processes[0].logs().contains("job worker stopped"));
    let app = &cluster.app;
    for (hint, id) in &ids {
        assert_eq!(app.device.wait_for_page(hint).await.status, 200, "{hint}");
        assert_eq!(app.poll("shop", id).await.status, 200, "{hint}");
    }
}

#[tokio::test]
async fn the_approval_link_works_on_an_instance_that_did_not_accept_the_request() {
    let cluster = TestApp::builder()
        .store(StoreKind::Redis)
        .spawn_cluster(2)
        .await;
    let app = &cluster.app;
    let (first, other) = (&cluster.processes[0].url, &cluster.processes[1].url);
    // "shop" is a client_secret_basic test client; each call names its instance.
    let as_shop = |instance: &str, path: &str, form: Vec<(&'static str, String)>| {
        let request = app
            .http
            .post(format!("{instance}{path}"))
            .basic_auth("shop", Some("shop-secret"))
            .form(&form);
        async move { Answer::read(request.send().await.unwrap()).await }
    };
    app.device.on("alice", Action::Ignore);
    let accepted = as_shop(
        first,
        "/bc-authorize",
        vec![
            ("scope", "openid".into()),
            ("login_hint", "alice".into()),
            ("binding_message", "W4SCT".into()),
        ],
    )
    .await;
    assert_eq!(accepted.status, 200, "{accepted:?}");
    let id = accepted.body["auth_req_id"].as_str().unwrap().to_owned();

    // The link names the public issuer; open its path on the other instance.
    let link = app
        .device
        .wait_for_notification("alice")
        .await
        .approval_url()
        .to_owned();
    let path = link.strip_prefix(&app.issuer).expect("under the issuer");
    let on_other = format!("{other}{path}");
    let shown = app.http.get(&on_other).send().await.unwrap();
    assert_eq!(shown.status(), 200);
    let html = shown.text().await.unwrap();
    assert!(html.contains("W4SCT"), "{html}");
    let csrf = form_field(&html, "csrf").expect("the page's token");
    let denied = app
        .http
        .post(format!("{on_other}/deny"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 200);

    // The instance that accepted it knows at once.
    let polled = as_shop(
        first,
        "/token",
        vec![("grant_type", CIBA_GRANT.into()), ("auth_req_id", id)],
    )
    .await;
    polled.assert_error(400, "access_denied");
    assert_eq!(polled.body["error_description"], "the user declined");
}
