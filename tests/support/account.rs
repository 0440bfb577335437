//! The user's account page, as tests reach it: a proxy with `[account]`
//! on, a sign-in through the real test IdP in Chromium, and the QR code's
//! JSON a device registers with.
use serde_json::Value;

use crate::app::{StoreKind, TestApp};
use crate::browser::Browser;

/// A proxy with the account page on, whose client "shop" is "Acme Shop".
pub async fn app_with_account(store: StoreKind) -> TestApp {
    TestApp::builder()
        .store(store)
        .client_toml("client_name = \"Acme Shop\"\n")
        .account("")
        .spawn()
        .await
}

/// Opens `/account` and signs in at the test IdP as `user`; returns once
/// the account page shows.
pub async fn sign_in(app: &TestApp, browser: &Browser, user: &str) -> String {
    browser.goto(&app.url("/account")).await.unwrap();
    let landed = browser.sign_in_at_test_idp(user).await.unwrap();
    assert!(
        landed.as_str().starts_with(&app.url("/account")),
        "{landed}"
    );
    browser.wait_for_text("Your account").await.unwrap()
}

/// The registration QR code's JSON, as the page shows it in text.
pub async fn qr_on_page(browser: &Browser) -> Value {
    let text = browser
        .find("#qr-json")
        .await
        .unwrap()
        .html(true)
        .await
        .unwrap();
    let text = text
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}
