//! The approval page over plain HTTP: what the webhook carries, the
//! headers every page sends, and the answers to links and forms that are
//! not right. The person's own path through it runs in a real browser
//! (`approval_browser.rs`).
use ciba_proxy_e2e::app::{ClientSpec, StoreKind, TestApp};
use ciba_proxy_e2e::device::{approve_and_sign_in, Action};
use ciba_proxy_e2e::device_key::TestDevice;
use ciba_proxy_e2e::ping_receiver::{PingReceiver, Reply};
use reqwest::StatusCode;
use serde_json::Value;

use crate::audit::audit_events;

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

/// A client that does not follow redirects: the tests read the 303 itself.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// POSTs the answer `answer` (`approve`, `deny`) to the approval link `link`
/// with the form `form`.
async fn answer(link: &str, answer: &str, form: &[(&str, &str)]) -> reqwest::Response {
    no_redirects()
        .post(format!("{link}/{answer}"))
        .form(form)
        .send()
        .await
        .expect("reach the proxy")
}

/// The form token of the approval page at `link`.
async fn csrf_of(link: &str) -> String {
    form_field(&page(link).await.text().await.unwrap(), "csrf")
}

/// Number matching: the codes a page offers, in order.
fn codes_on(html: &str) -> Vec<String> {
    let marker = "name=\"code\" value=\"";
    html.match_indices(marker)
        .map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// Asserts the headers every page (and the approve 303) carries.
#[track_caller]
fn assert_page_headers(what: &str, response: &reqwest::Response) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(
        !csp.contains("script-src") && !csp.contains("unsafe-inline"),
        "{what}: {csp}"
    );
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header("cache-control"), "no-store", "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
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
async fn with_number_matching_nothing_sent_to_the_phone_gives_the_code_away() {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .client_toml("binding_message_check = \"match\"")
        .spawn()
        .await;
    let device = TestDevice::register(&app, "alice").await;
    app.device.on("alice", Action::Ignore);
    app.start("shop", "alice").await;

    // The webhook: the approval link only, no code, no IdP sign-in link
    // that would skip the pick.
    let notification = app.device.wait_for_notification("alice").await;
    let raw = String::from_utf8_lossy(&notification.raw).into_owned();
    assert!(!raw.contains("W4SCT"), "{raw}");
    assert!(
        notification.body.get("authorization_url").is_none(),
        "{raw}"
    );
    assert!(notification.body.get("binding_message").is_none(), "{raw}");
    let link = notification.approval_url().to_owned();
    assert!(link.starts_with(&app.url("/approve/")), "{raw}");

    // The device's listing: the choices, not the code.
    let listed = device.requests(&app).await;
    let request = &listed.body["requests"][0];
    assert_eq!(request["binding_message"], Value::Null, "{listed:?}");
    let choices: Vec<String> = serde_json::from_value(request["match_choices"].clone()).unwrap();
    assert_eq!(choices.len(), 3, "{listed:?}");
    assert!(choices.contains(&"W4SCT".to_owned()), "{listed:?}");

    // Every page of the request offers the same three codes: comparing the
    // webhook's link with the device's does not single out the real one.
    let handle = request["handle"].as_str().unwrap();
    assert!(!link.ends_with(handle), "two different links");
    let by_webhook = codes_on(&page(&link).await.text().await.unwrap());
    let by_device = codes_on(
        &page(&app.url(&format!("/approve/{handle}")))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(by_webhook, choices);
    assert_eq!(by_device, choices);
}

#[tokio::test]
async fn with_number_matching_the_mail_shows_no_code() {
    let smtp = ciba_proxy_e2e::smtp::SmtpServer::start().await.unwrap();
    let app = TestApp::builder()
        .channels(&format!(
            "[[notifier.channels]]\nkind = \"email\"\nsmtp_url = \"{}\"\nfrom = \"no-reply@bank.example\"\n",
            smtp.url()
        ))
        .client_toml("binding_message_check = \"match\"")
        .spawn()
        .await;
    let user = "erin@example.com";
    app.device.on(user, Action::Ignore);
    app.start("shop", user).await;
    let mail = smtp.wait_for_mail(user).await;
    assert!(!mail.raw.contains("W4SCT"), "{}", mail.raw);
    assert!(mail.body.contains(&app.url("/approve/")), "{}", mail.body);
}

#[tokio::test]
async fn approve_leads_to_the_sign_in_again_until_the_sign_in_completes() {
    // The user may have closed the IdP's page: the link stays usable until
    // the callback lands (docs/protocol.md).
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let link = app
        .device
        .wait_for_notification("alice")
        .await
        .approval_url()
        .to_owned();
    let csrf = csrf_of(&link).await;
    let mut locations = Vec::new();
    for _ in 0..2 {
        let approved = answer(&link, "approve", &[("csrf", &csrf)]).await;
        assert_eq!(approved.status(), StatusCode::SEE_OTHER);
        locations.push(approved.headers()["location"].to_str().unwrap().to_owned());
    }
    assert_eq!(locations[0], locations[1]);
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");

    let landed = approve_and_sign_in(&link, &Action::SignInAs("alice".into()))
        .await
        .unwrap();
    assert!(landed.body.contains("You are signed in"), "{landed:?}");
    assert_eq!(app.poll("shop", &id).await.status, 200);
    // Signed in: now the link has ended, for either answer.
    for answered in ["approve", "deny"] {
        let late = answer(&link, answered, &[("csrf", &csrf)]).await;
        assert_eq!(late.status(), StatusCode::GONE, "{answered}");
    }
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
    let link = notification.approval_url().to_owned();
    for url in [
        link.clone(),
        app.url("/approve/not-a-handle"),
        app.url("/callback?state=unknown&code=x"),
    ] {
        let response = page(&url).await;
        assert_page_headers(&url, &response);
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script"), "{url}");
        assert!(!html.contains(&id), "{url}: the auth_req_id is on the page");
    }
    // The 303 of "Approve and sign in": its Location holds the IdP's state.
    let approved = answer(&link, "approve", &[("csrf", &csrf_of(&link).await)]).await;
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);
    assert_page_headers("the approve 303", &approved);
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

    // The token of another request's page is not this page's: 403, and
    // neither request changes.
    app.device.on("bob", Action::Ignore);
    app.start("shop", "bob").await;
    let other_link = app
        .device
        .wait_for_notification("bob")
        .await
        .approval_url()
        .to_owned();
    let other_csrf = csrf_of(&other_link).await;
    for answered in ["approve", "deny"] {
        let crossed = answer(&approval, answered, &[("csrf", &other_csrf)]).await;
        assert_eq!(crossed.status(), StatusCode::FORBIDDEN, "{answered}");
        assert!(crossed
            .text()
            .await
            .unwrap()
            .contains("This form cannot be used"));
    }
    for pending in [&approval, &other_link] {
        assert_eq!(
            page(pending).await.status(),
            StatusCode::OK,
            "still pending"
        );
    }

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
    deny_and_ping(StoreKind::Memory).await;
}

#[tokio::test]
async fn denying_with_the_redis_store_ends_the_request_and_pings() {
    deny_and_ping(StoreKind::Redis).await;
}

async fn deny_and_ping(store: StoreKind) {
    let receiver = PingReceiver::start(vec![Reply::Status(204)]).await.unwrap();
    let app = TestApp::builder()
        .store(store)
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
    std::fs::write(
        dir.join("approve.html"),
        "{% extends \"base.html\" %}{% block content %}<h1>Acme asks: {{ client_name }}</h1>\
         <ul>{% for line in scopes %}<li>{{ line }}</li>{% endfor %}</ul>{% endblock %}",
    )
    .unwrap();
    std::fs::write(dir.join("ciba.css"), "body { color: rebeccapurple; }").unwrap();
    let app = TestApp::builder()
        .sections(&format!(
            "[pages]\ntitle = \"Acme Bank\"\ntemplates_dir = \"{}\"\n\
             logo_url = \"https://static.acme.example/logo.svg\"\n\
             scope_descriptions = {{ profile = \"Your Acme customer profile\" }}\n",
            dir.display()
        ))
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    app.start("shop", "alice").await;
    let link = app
        .device
        .wait_for_notification("alice")
        .await
        .approval_url()
        .to_owned();
    let approval = page(&link).await.text().await.unwrap();
    assert!(approval.contains("<h1>Acme asks: shop</h1>"), "{approval}");
    assert!(
        approval.contains("<li>Your Acme customer profile</li>"),
        "{approval}"
    );
    // minijinja escapes `/` as `&#x2f;` in attributes: the browser reads a `/`.
    assert!(
        approval
            .replace("&#x2f;", "/")
            .contains("<img class=\"logo\" src=\"https://static.acme.example/logo.svg\""),
        "{approval}"
    );
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

#[tokio::test]
async fn answers_on_the_page_are_audited_like_answers_on_devices() {
    let (app, proxy) = TestApp::builder()
        .client_toml("binding_message_check = \"match\"")
        .spawn_process(&[("CIBA_PROXY__LOG__FORMAT", "json")])
        .await;
    let mut links = Vec::new();
    for user in ["alice", "bob", "carol"] {
        app.device.on(user, Action::Ignore);
        app.start("shop", user).await;
        let notification = app.device.wait_for_notification(user).await;
        links.push(notification.approval_url().to_owned());
    }
    let (right, wrong, denied) = (&links[0], &links[1], &links[2]);
    let approved = answer(
        right,
        "approve",
        &[("csrf", &csrf_of(right).await), ("code", "W4SCT")],
    )
    .await;
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);
    let mismatch = answer(
        wrong,
        "approve",
        &[("csrf", &csrf_of(wrong).await), ("code", "XXXXX")],
    )
    .await;
    assert!(mismatch.text().await.unwrap().contains("Request cancelled"));
    let declined = answer(denied, "deny", &[("csrf", &csrf_of(denied).await)]).await;
    assert_eq!(declined.status(), StatusCode::OK);

    let log = proxy.logs();
    let answers: Vec<(String, String)> = audit_events(&log)
        .into_iter()
        .filter(|e| e["event"] == "answered")
        .map(|e| {
            (
                e["outcome"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let on_page = |answer: &str| (answer.to_owned(), "page".to_owned());
    assert_eq!(
        answers,
        vec![
            on_page("approve"),
            on_page("code_mismatch"),
            on_page("deny")
        ],
        "{log}"
    );
}

#[tokio::test]
async fn a_callback_state_is_only_one_the_proxy_made_for_a_sign_in() {
    let app = TestApp::builder().store(StoreKind::Redis).spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    // The approval link's handle is the id sealed too, but for another
    // purpose: as a callback state it names nothing.
    let handle = notification.approval_url().rsplit('/').next().unwrap();
    let landed = page(&app.url(&format!("/callback?state={handle}&error=access_denied"))).await;
    assert_eq!(landed.status(), StatusCode::GONE);
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");

    // A state an older version made has a key of its own: a sign-in it
    // started still lands after the upgrade.
    let mut redis = redis::Client::open(ciba_proxy_e2e::app::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{}:state:older-state", app.prefix))
        .arg(&id)
        .arg("PX")
        .arg(60_000)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let landed = page(&app.url("/callback?state=older-state&error=access_denied")).await;
    assert_eq!(landed.status(), StatusCode::OK);
    assert!(landed.text().await.unwrap().contains("Request declined"));
    app.poll("shop", &id)
        .await
        .assert_error(400, "access_denied");
}
