//! The user's account page in a real browser (headless Chromium over
//! WebDriver): signing in through the test IdP, the requests waiting for the
//! user (approve and deny), the history, the QR code a device registers
//! with, and removing a device. Screenshots go to
//! `target/browser-screenshots/account/`.
use ciba_proto::device::JOSE_CONTENT_TYPE;
use ciba_proxy_e2e::account::{app_with_account, qr_on_page, sign_in};
use ciba_proxy_e2e::app::{StoreKind, TestApp};
use ciba_proxy_e2e::browser::Browser;
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::device_key::{post_registration, DeviceKey, Qr, TestDevice};
use url::Url;

/// Opens a request for `user` from "shop" (binding message W4SCT); returns
/// its auth_req_id.
async fn request(app: &TestApp, user: &str) -> String {
    app.device.on(user, Action::Ignore);
    app.start("shop", user).await
}

/// Gets through the test IdP after "Approve" when the browser already has
/// a session there (from the account sign-in): the login page if it asks
/// again, then the consent page; returns where the browser lands.
async fn finish_at_idp(browser: &Browser, user: &str, idp: &str) -> Url {
    const LOGIN_FORM: &str = "form:has(input[name=prompt][value=login])";
    const CONSENT_FORM: &str = "form:has(input[name=prompt][value=consent])";
    let at_idp = |url: &Url| url.as_str().starts_with(idp);
    for _ in 0..3 {
        let url = browser.wait_for_url(|_| true).await.unwrap();
        if !at_idp(&url) {
            return url;
        }
        if browser.exists(LOGIN_FORM).await.unwrap() {
            return browser.sign_in_at_test_idp(user).await.unwrap();
        }
        if browser.exists(CONSENT_FORM).await.unwrap() {
            browser.submit(CONSENT_FORM).await.unwrap();
        }
        browser
            .wait_for_url(|u| !at_idp(u) || !u.path().starts_with("/auth"))
            .await
            .unwrap();
    }
    browser.wait_for_url(|u| !at_idp(u)).await.unwrap()
}

#[tokio::test]
async fn the_user_signs_in_sees_a_pending_request_and_approving_leads_to_the_idp() {
    let app = app_with_account(StoreKind::Memory).await;
    let id = request(&app, "alice").await;
    let browser = Browser::start().await.unwrap();
    let text = sign_in(&app, &browser, "alice").await;
    assert!(text.contains("Signed in as alice"), "{text}");
    assert!(text.contains("Acme Shop"), "{text}");
    assert!(text.contains("W4SCT"), "{text}");
    assert!(text.contains("Your name and basic profile"), "{text}");
    assert!(!browser.html().await.unwrap().contains(&id));
    browser.screenshot("account/page").await.unwrap();

    browser.click("button.approve").await.unwrap();
    browser
        .wait_for_url(|u| u.path() != "/account")
        .await
        .unwrap();
    let landed = finish_at_idp(&browser, "alice", &app.idp.issuer).await;
    assert!(
        landed.as_str().starts_with(&app.url("/callback")),
        "{landed}"
    );
    browser.wait_for_text("You are signed in").await.unwrap();
    assert_eq!(app.poll("shop", &id).await.status, 200);

    // The completed login is in the history, and no longer waiting.
    browser.goto(&app.url("/account")).await.unwrap();
    let text = browser.wait_for_text("History").await.unwrap();
    assert!(text.contains("Nothing is waiting for you"), "{text}");
    let entries = browser.find_all("li.history-entry").await.unwrap();
    assert_eq!(entries.len(), 1, "{text}");
    let entry = entries[0].text().await.unwrap();
    assert!(entry.contains("Acme Shop"), "{entry}");
    assert!(entry.contains("approved"), "{entry}");
    assert!(entry.contains("W4SCT"), "{entry}");
    assert!(entry.contains("UTC"), "{entry}");
    browser.screenshot("account/history").await.unwrap();
    browser.close().await.unwrap();
}

#[tokio::test]
async fn denying_on_the_account_page_ends_the_request_and_shows_in_the_history() {
    let app = app_with_account(StoreKind::Memory).await;
    let id = request(&app, "carol").await;
    let browser = Browser::start().await.unwrap();
    sign_in(&app, &browser, "carol").await;
    browser.click("button.deny").await.unwrap();
    browser
        .wait_for_text("You declined the request")
        .await
        .unwrap();
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");

    browser.goto(&app.url("/account")).await.unwrap();
    let text = browser.wait_for_text("History").await.unwrap();
    assert!(text.contains("Nothing is waiting for you"), "{text}");
    let entry = browser.find("li.history-entry").await.unwrap();
    assert!(entry.text().await.unwrap().contains("denied"));
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_page_shows_only_the_signed_in_users_requests() {
    let app = app_with_account(StoreKind::Memory).await;
    request(&app, "dave").await;
    let browser = Browser::start().await.unwrap();
    let text = sign_in(&app, &browser, "erin").await;
    assert!(text.contains("Nothing is waiting for you"), "{text}");
    assert!(!text.contains("Acme Shop"), "{text}");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_register_section_shows_a_qr_code_and_its_json_fresh_on_each_render() {
    let app = app_with_account(StoreKind::Memory).await;
    let browser = Browser::start().await.unwrap();
    sign_in(&app, &browser, "frank").await;
    assert!(browser.exists(".qr svg").await.unwrap());
    let qr = qr_on_page(&browser).await;
    assert_eq!(qr["un"], "frank");
    assert_eq!(qr["hst"], app.issuer.as_str());
    assert_eq!(qr["re"], "/devices");
    assert_eq!(qr["ae"], "/devices/decision");
    assert_eq!(qr["rde"], "/devices/remove");
    assert!(qr["did"].as_str().is_some_and(|d| d.len() >= 16), "{qr}");
    assert!(qr["chg"].as_str().is_some_and(|c| c.len() >= 32), "{qr}");
    browser.screenshot("account/register").await.unwrap();

    browser.goto(&app.url("/account")).await.unwrap();
    browser.wait_for_text("Register a device").await.unwrap();
    let again = qr_on_page(&browser).await;
    assert_ne!(again["did"], qr["did"]);
    assert_ne!(again["chg"], qr["chg"]);
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_device_registered_from_the_qr_code_shows_and_the_user_removes_it() {
    let app = app_with_account(StoreKind::Memory).await;
    let browser = Browser::start().await.unwrap();
    sign_in(&app, &browser, "grace").await;
    // The phone scans the code and registers its new key with it.
    let qr: Qr = serde_json::from_value(qr_on_page(&browser).await).unwrap();
    let key = DeviceKey::generate();
    let registration = key.registration(&qr, "Grace's phone", "Pixel 9", None);
    let reply = post_registration(&app, &registration, JOSE_CONTENT_TYPE).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let device = TestDevice {
        key,
        did: qr.did.clone(),
        user: "grace".into(),
    };
    assert_eq!(device.requests(&app).await.status, 200);

    browser.goto(&app.url("/account")).await.unwrap();
    let text = browser.wait_for_text("Grace's phone").await.unwrap();
    assert!(text.contains("Pixel 9"), "{text}");
    assert!(text.contains("Registered"), "{text}");
    assert!(!text.contains("No device is registered"), "{text}");
    browser.screenshot("account/device").await.unwrap();

    browser.click("button.remove-device").await.unwrap();
    let text = browser
        .wait_for_text("No device is registered")
        .await
        .unwrap();
    assert!(!text.contains("Grace's phone"), "{text}");
    // The removed device's calls are refused.
    assert_eq!(device.requests(&app).await.status, 401);
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_session_cookie_is_sealed_http_only_and_lax_and_signing_out_removes_it() {
    let app = app_with_account(StoreKind::Memory).await;
    let browser = Browser::start().await.unwrap();
    sign_in(&app, &browser, "heidi").await;
    let cookie = browser
        .client()
        .get_named_cookie("ciba_account")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Lax")
    );
    assert_eq!(cookie.path(), Some("/account"));
    assert!(!cookie.value().contains("heidi"));

    browser.click("#sign-out").await.unwrap();
    browser.wait_for_text("You are signed out").await.unwrap();
    assert!(browser
        .client()
        .get_named_cookie("ciba_account")
        .await
        .is_err());
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_page_fits_a_phone_screen() {
    let app = app_with_account(StoreKind::Memory).await;
    let browser = Browser::start().await.unwrap();
    browser.set_viewport(360, 1900).await.unwrap();
    // A decided request, a device, and a request waiting.
    let declined = request(&app, "alice").await;
    sign_in(&app, &browser, "alice").await;
    browser.click("button.deny").await.unwrap();
    browser.wait_for_text("You declined").await.unwrap();
    app.poll("shop", &declined)
        .await
        .assert_error(400, "access_denied");
    browser.goto(&app.url("/account")).await.unwrap();
    browser.wait_for_text("Register a device").await.unwrap();
    let qr: Qr = serde_json::from_value(qr_on_page(&browser).await).unwrap();
    let registration = DeviceKey::generate().registration(&qr, "Alice's phone", "Pixel 9", None);
    let reply = post_registration(&app, &registration, JOSE_CONTENT_TYPE).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    app.device.on("alice", Action::Ignore);
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid profile email"),
                ("login_hint", "alice"),
                ("binding_message", "W4SCT"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    browser.goto(&app.url("/account")).await.unwrap();
    let text = browser.wait_for_text("Alice's phone").await.unwrap();
    assert!(text.contains("W4SCT") && text.contains("denied"), "{text}");
    assert!(!browser.has_horizontal_scroll().await.unwrap());
    browser.screenshot("account/phone").await.unwrap();
    browser.close().await.unwrap();
}

#[tokio::test]
async fn number_matching_applies_on_the_account_page_too() {
    let app = TestApp::builder()
        .client_toml("client_name = \"Acme Shop\"\nbinding_message_check = \"match\"\n")
        .account("")
        .spawn()
        .await;
    let id = request(&app, "olivia").await;
    let browser = Browser::start().await.unwrap();
    sign_in(&app, &browser, "olivia").await;
    let choices = browser.find_all("button.code-choice").await.unwrap();
    assert_eq!(choices.len(), 3);
    assert!(
        !browser.exists(".binding-message").await.unwrap(),
        "the code is not given away"
    );
    let mut wrong = None;
    for choice in &choices {
        let code = choice.text().await.unwrap();
        if code != "W4SCT" {
            wrong = Some(code);
        }
    }
    let wrong = wrong.unwrap();
    browser
        .click(&format!("button.code-choice[value={wrong}]"))
        .await
        .unwrap();
    browser.wait_for_text("Request cancelled").await.unwrap();
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert_eq!(reply.body["error_description"], "the code did not match");
    browser.close().await.unwrap();
}
