//! The approval page over plain HTTP: what the webhook carries, the
//! headers every page sends, and the answers to links and forms that are
//! not right. The person's own path through it runs in a real browser
//! (`approval_browser.rs`).
use ciba_proxy_e2e::app::{ClientSpec, TestApp};
use ciba_proxy_e2e::device::{approve_and_sign_in, Action};
use ciba_proxy_e2e::ping_receiver::{PingReceiver, Reply};
use reqwest::StatusCode;

async fn page(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .send()
        .await
        .expect("reach the proxy")
}

/// The value of the page's first form field `name`.
fn form_field(html: &str, name: &str) -> String {
    ciba_proxy_e2e::device::form_field(html, name).expect("the field")
}

#[tokio::test]
async fn the_webhook_carries_the_approval_link_and_approving_through_it_completes_the_login() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    let approval = notification.approval_url().to_owned();
    assert!(approval.starts_with(&app.url("/approve/")), "{approval}");
    // The handle is unrelated to the auth_req_id and to the upstream state.
    let state = notification.authorization_param("state").unwrap();
    assert!(!approval.contains(&id) && !approval.contains(&state));
    let handle = approval.rsplit('/').next().unwrap();
    assert!(handle.len() >= 22, "{handle}");

    let landed = approve_and_sign_in(&approval, &Action::SignInAs("alice".into()))
        .await
        .unwrap();
    assert_eq!(landed.status, 200, "{landed:?}");
    assert!(landed.body.contains("You are signed in"));
    assert_eq!(app.poll("shop", &id).await.status, 200);
    // Decided: the link stops working.
    assert_eq!(page(&approval).await.status(), StatusCode::GONE);
}

#[tokio::test]
async fn without_the_authorization_url_the_phone_only_sees_the_approval_page() {
    let app = TestApp::builder()
        .notifier_toml("send_authorization_url = false")
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    assert!(
        notification.body.get("authorization_url").is_none(),
        "{}",
        notification.body
    );
    assert!(notification
        .approval_url()
        .starts_with(&app.url("/approve/")));
}

#[tokio::test]
async fn every_page_forbids_script_framing_referrers_and_caching() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    for url in [
        notification.approval_url().to_owned(),
        app.url("/approve/not-a-handle"),
        app.url("/callback?state=unknown&code=x"),
    ] {
        let response = page(&url).await;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{url}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{url}: {csp}");
        assert!(
            !csp.contains("script-src") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert_eq!(header("cache-control"), "no-store");
        assert_eq!(header("x-content-type-options"), "nosniff");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script"), "{url}");
        assert!(!html.contains(&id), "{url}: the auth_req_id is on the page");
    }
}

#[tokio::test]
async fn unknown_ended_and_forged_answers_are_refused_in_words() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let approval = app
        .device
        .wait_for_notification("alice")
        .await
        .approval_url()
        .to_owned();

    let unknown = page(&app.url("/approve/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("This link is not valid"));

    // A POST without the page's token (a cross-site form) changes nothing.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (answer, form) in [("approve", vec![]), ("deny", vec![("csrf", "forged")])] {
        let forged = http
            .post(format!("{approval}/{answer}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "{answer}");
    }
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");

    // The real token, but the request has ended: 410 in words.
    let html = page(&approval).await.text().await.unwrap();
    let csrf = form_field(&html, "csrf");
    let denied = http
        .post(format!("{approval}/deny"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::OK);
    let again = http
        .post(format!("{approval}/approve"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::GONE);
    assert!(again
        .text()
        .await
        .unwrap()
        .contains("This request has ended"));
}

#[tokio::test]
async fn denying_ends_the_request_at_once_and_pings_a_ping_client() {
    let receiver = PingReceiver::start(vec![Reply::Status(204)]).await.unwrap();
    let app = TestApp::builder()
        .clients(vec![ClientSpec::basic("shop").ping(&receiver.url())])
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("client_notification_token", "ping-1"),
            ],
        )
        .await;
    let id = reply.body["auth_req_id"].as_str().unwrap().to_owned();
    let approval = app
        .device
        .wait_for_notification("alice")
        .await
        .approval_url()
        .to_owned();
    let html = page(&approval).await.text().await.unwrap();
    let denied = reqwest::Client::new()
        .post(format!("{approval}/deny"))
        .form(&[("csrf", form_field(&html, "csrf").as_str())])
        .send()
        .await
        .unwrap();
    assert!(denied
        .text()
        .await
        .unwrap()
        .contains("You declined the request"));
    let pings = receiver
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(pings[0].body["auth_req_id"], id.as_str());
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert_eq!(reply.body["error_description"], "the user declined");
}

#[tokio::test]
async fn operators_replace_templates_and_the_stylesheet_without_a_rebuild() {
    let dir = std::env::temp_dir().join(format!("ciba-pages-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("message.html"),
        "{% extends \"base.html\" %}{% block content %}<h1>Acme: {{ heading }}</h1>{% endblock %}",
    )
    .unwrap();
    std::fs::write(dir.join("ciba.css"), "body { color: rebeccapurple; }").unwrap();
    let app = TestApp::builder()
        .sections(&format!(
            "[pages]\ntitle = \"Acme Bank\"\ntemplates_dir = \"{}\"\n",
            dir.display()
        ))
        .spawn()
        .await;
    let html = page(&app.url("/approve/unknown"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<h1>Acme: This link is not valid</h1>"),
        "{html}"
    );
    assert!(html.contains("Acme Bank"), "{html}");
    let css = page(&app.url("/assets/ciba.css"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(css, "body { color: rebeccapurple; }");
}
