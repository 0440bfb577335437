//! The approval page in a real browser (headless Chromium over WebDriver):
//! what the person whose phone gets the link sees and does. Screenshots of
//! each page go to `target/browser-screenshots/approval/`.
use std::time::Duration;

use ciba_proxy_e2e::app::{ClientSpec, TestApp};
use ciba_proxy_e2e::browser::Browser;
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::ping_receiver::{PingReceiver, Reply};
use ciba_proxy_e2e::server::TestServer;

/// A proxy whose client "shop" is called "Acme Shop" on the page.
async fn app(client_toml: &str) -> TestApp {
    TestApp::builder()
        .client_toml(&format!("client_name = \"Acme Shop\"\n{client_toml}"))
        .spawn()
        .await
}

/// Starts a request for `user` (a user's first: the device keeps the
/// first notification per user) and returns (auth_req_id, approval link).
async fn request(app: &TestApp, user: &str, extra: &[(&str, &str)]) -> (String, String) {
    app.device.on(user, Action::Ignore);
    let mut params = vec![
        ("scope", "openid profile email"),
        ("login_hint", user),
        ("binding_message", "W4SCT"),
    ];
    params.extend_from_slice(extra);
    let reply = app.bc_authorize("shop", &params).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let id = reply.body["auth_req_id"].as_str().unwrap().to_owned();
    let notification = app.device.wait_for_notification(user).await;
    (id, notification.approval_url().to_owned())
}

#[tokio::test]
async fn the_user_sees_who_asks_and_approves_then_signs_in_at_the_idp() {
    let app = app("").await;
    let (id, link) = request(&app, "alice", &[]).await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&link).await.unwrap();
    let text = browser.wait_for_text("Acme Shop").await.unwrap();
    assert!(text.contains("W4SCT"), "{text}");
    assert!(text.contains("Your email address"), "{text}");
    assert!(text.contains("minute"), "the time left: {text}");
    assert!(!browser.html().await.unwrap().contains(&id));
    browser.screenshot("approval/page").await.unwrap();

    browser.click("#approve").await.unwrap();
    let landed = browser.sign_in_at_test_idp("alice").await.unwrap();
    assert!(
        landed.as_str().starts_with(&app.url("/callback")),
        "{landed}"
    );
    browser.wait_for_text("You are signed in").await.unwrap();
    browser.screenshot("approval/signed-in").await.unwrap();
    assert_eq!(app.poll("shop", &id).await.status, 200);
    browser.close().await.unwrap();
}

#[tokio::test]
async fn denying_ends_the_request_and_pings_the_client() {
    let receiver = PingReceiver::start(vec![Reply::Status(204)]).await.unwrap();
    let app = TestApp::builder()
        .clients(vec![ClientSpec::basic("shop").ping(&receiver.url())])
        .spawn()
        .await;
    let (id, link) = request(&app, "alice", &[("client_notification_token", "ping-1")]).await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&link).await.unwrap();
    browser.click("#deny").await.unwrap();
    browser
        .wait_for_text("You declined the request")
        .await
        .unwrap();
    browser.screenshot("approval/declined").await.unwrap();
    let pings = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(pings[0].body["auth_req_id"], id.as_str());
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert_eq!(reply.body["error_description"], "the user declined");
    // The used link now says so.
    browser.goto(&link).await.unwrap();
    browser
        .wait_for_text("This request has ended")
        .await
        .unwrap();
    browser.close().await.unwrap();
}

#[tokio::test]
async fn number_matching_approves_the_right_pick_and_denies_a_wrong_one() {
    let app = app("binding_message_check = \"match\"").await;
    let browser = Browser::start().await.unwrap();

    // The right code.
    let (id, link) = request(&app, "alice", &[]).await;
    browser.goto(&link).await.unwrap();
    let choices = browser.find_all("button.code-choice").await.unwrap();
    assert_eq!(choices.len(), 3);
    let mut codes = Vec::new();
    for choice in &choices {
        codes.push(choice.text().await.unwrap());
    }
    assert!(codes.iter().any(|c| c == "W4SCT"), "{codes:?}");
    assert!(
        !browser.exists("#binding-message").await.unwrap(),
        "the code is not given away"
    );
    browser
        .screenshot("approval/number-matching")
        .await
        .unwrap();
    browser
        .click("button.code-choice[value=W4SCT]")
        .await
        .unwrap();
    browser.sign_in_at_test_idp("alice").await.unwrap();
    browser.wait_for_text("You are signed in").await.unwrap();
    assert_eq!(app.poll("shop", &id).await.status, 200);

    // A wrong code.
    let (id, link) = request(&app, "bob", &[]).await;
    browser.goto(&link).await.unwrap();
    let wrong = codes_on_page(&browser)
        .await
        .into_iter()
        .find(|c| c != "W4SCT")
        .unwrap();
    browser
        .click(&format!("button.code-choice[value={wrong}]"))
        .await
        .unwrap();
    browser.wait_for_text("Request cancelled").await.unwrap();
    browser.screenshot("approval/cancelled").await.unwrap();
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert_eq!(reply.body["error_description"], "the code did not match");
    browser.close().await.unwrap();
}

async fn codes_on_page(browser: &Browser) -> Vec<String> {
    let mut codes = Vec::new();
    for choice in browser.find_all("button.code-choice").await.unwrap() {
        codes.push(choice.text().await.unwrap());
    }
    codes
}

/// Another site's page with a form that posts to the approval link.
fn forged_form(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::{web, HttpRequest, HttpResponse};
    cfg.route(
        "/forged",
        web::get().to(|req: HttpRequest| async move {
            let target = req.query_string().strip_prefix("to=").unwrap_or_default();
            let target = percent_encoding::percent_decode_str(target)
                .decode_utf8_lossy()
                .into_owned();
            HttpResponse::Ok().content_type("text/html").body(format!(
                "<!doctype html><form id=f method=post action=\"{target}/approve\">\
                 <button type=submit>Win a prize</button></form>"
            ))
        }),
    );
}

#[tokio::test]
async fn expired_used_and_forged_links_are_refused_in_words() {
    let app = app("").await;
    let browser = Browser::start().await.unwrap();

    // Expired.
    let (_, link) = request(&app, "alice", &[("requested_expiry", "1")]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    browser.goto(&link).await.unwrap();
    browser
        .wait_for_text("This request has ended")
        .await
        .unwrap();
    browser.screenshot("approval/expired").await.unwrap();

    // Unknown.
    browser.goto(&app.url("/approve/not-a-link")).await.unwrap();
    browser
        .wait_for_text("This link is not valid")
        .await
        .unwrap();
    browser.screenshot("approval/unknown-link").await.unwrap();

    // Forged: another site's form posts to a live link without the page's token.
    let (id, link) = request(&app, "carol", &[]).await;
    let site = TestServer::start(std::sync::Arc::new(()), forged_form).unwrap();
    let encoded: String = url::form_urlencoded::byte_serialize(link.as_bytes()).collect();
    browser
        .goto(&format!(
            "http://127.0.0.1:{}/forged?to={encoded}",
            site.port
        ))
        .await
        .unwrap();
    browser.submit("#f").await.unwrap();
    browser
        .wait_for_text("This form cannot be used")
        .await
        .unwrap();
    browser.screenshot("approval/forged-form").await.unwrap();
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");

    // Used: answered once, the link stops working.
    browser.goto(&link).await.unwrap();
    browser.click("#deny").await.unwrap();
    browser.wait_for_text("You declined").await.unwrap();
    browser.goto(&link).await.unwrap();
    browser
        .wait_for_text("This request has ended")
        .await
        .unwrap();
    browser.screenshot("approval/used-link").await.unwrap();
    browser.close().await.unwrap();
}

/// A page whose script, if it runs, changes what it says.
fn scripted_page(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::{web, HttpResponse};
    cfg.route(
        "/scripted",
        web::get().to(|| async {
            HttpResponse::Ok().content_type("text/html").body(
                "<!doctype html><p id=s>scripts are off</p>\
                 <script>document.getElementById('s').textContent = 'scripts ran';</script>",
            )
        }),
    );
}

/// Every button in the accessibility tree has a name a screen reader reads.
fn assert_buttons_are_named(nodes: &[(String, String)]) -> Vec<String> {
    let buttons: Vec<String> = nodes
        .iter()
        .filter(|(role, _)| role == "button")
        .map(|(_, name)| name.clone())
        .collect();
    assert!(!buttons.is_empty(), "{nodes:?}");
    assert!(
        buttons.iter().all(|name| !name.trim().is_empty()),
        "{nodes:?}"
    );
    buttons
}

#[tokio::test]
async fn without_javascript_a_screen_reader_user_approves_and_denies() {
    let app = app("").await;
    let browser = Browser::start().await.unwrap();
    browser.disable_scripts().await.unwrap();
    let site = TestServer::start(std::sync::Arc::new(()), scripted_page).unwrap();
    let scripted = format!("http://127.0.0.1:{}/scripted", site.port);
    browser.goto(&scripted).await.unwrap();
    browser.wait_for_text("scripts are off").await.unwrap();

    // Approve: the page's controls are named, then the real IdP sign-in.
    let (id, link) = request(&app, "alice", &[]).await;
    browser.goto(&link).await.unwrap();
    browser.wait_for_text("Acme Shop").await.unwrap();
    let nodes = browser.accessible_nodes().await.unwrap();
    assert_eq!(
        assert_buttons_are_named(&nodes),
        vec!["Approve and sign in", "Deny"],
        "{nodes:?}"
    );
    assert!(
        nodes
            .iter()
            .any(|(role, name)| role == "heading" && name == "Is this you?"),
        "{nodes:?}"
    );
    browser.screenshot("approval/no-javascript").await.unwrap();
    browser.click("#approve").await.unwrap();
    browser.sign_in_at_test_idp("alice").await.unwrap();
    browser.wait_for_text("You are signed in").await.unwrap();
    assert_eq!(app.poll("shop", &id).await.status, 200);

    // Deny.
    let (id, link) = request(&app, "bob", &[]).await;
    browser.goto(&link).await.unwrap();
    browser.click("#deny").await.unwrap();
    browser
        .wait_for_text("You declined the request")
        .await
        .unwrap();
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");

    // Scripts stayed off throughout.
    browser.goto(&scripted).await.unwrap();
    browser.wait_for_text("scripts are off").await.unwrap();
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_number_matching_choices_are_a_named_group_of_named_buttons() {
    let app = app("binding_message_check = \"match\"").await;
    let (_, link) = request(&app, "alice", &[]).await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&link).await.unwrap();
    browser.find("button.code-choice").await.unwrap();
    let nodes = browser.accessible_nodes().await.unwrap();
    assert!(
        nodes.iter().any(|(role, name)| role == "group"
            && name == "Which code is shown where you started?"),
        "the fieldset is named by its legend: {nodes:?}"
    );
    let buttons = assert_buttons_are_named(&nodes);
    assert_eq!(buttons.len(), 4, "three codes and Deny: {buttons:?}");
    assert!(buttons.contains(&"W4SCT".to_owned()), "{buttons:?}");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_page_fits_a_360_pixel_wide_phone() {
    let app = app("").await;
    let (_, link) = request(&app, "dave", &[]).await;
    let browser = Browser::start().await.unwrap();
    browser.set_viewport(360, 740).await.unwrap();
    assert_eq!(browser.viewport().await.unwrap().0, 360);
    browser.goto(&link).await.unwrap();
    browser.wait_for_text("Acme Shop").await.unwrap();
    assert!(!browser.has_horizontal_scroll().await.unwrap());
    browser.screenshot("approval/phone-360").await.unwrap();
    browser.close().await.unwrap();
}
