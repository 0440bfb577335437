//! The e-mail channel, through a real SMTP server (Debian's aiosmtpd): the
//! mail reaches the user's address, and its link opens the approval page
//! in Chromium. It never carries a token or a code.
use std::time::Duration;

use ciba_proxy::store::{Accounts, RedisStore};
use ciba_proxy_e2e::app::{redis_url, StoreKind, TestApp};
use ciba_proxy_e2e::browser::Browser;
use ciba_proxy_e2e::smtp::SmtpServer;

async fn app(smtp: &SmtpServer) -> TestApp {
    TestApp::builder()
        .channels(&format!(
            "[[notifier.channels]]\nkind = \"email\"\nsmtp_url = \"{}\"\nfrom = \"Bank <no-reply@bank.example>\"\n",
            smtp.url()
        ))
        .client_toml("client_name = \"Acme Shop\"\n")
        .spawn()
        .await
}

#[tokio::test]
async fn the_mail_reaches_an_address_hint_and_its_link_opens_the_approval_page() {
    let smtp = SmtpServer::start().await.unwrap();
    let app = app(&smtp).await;
    let user = "erin@example.com";
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid email"),
                ("login_hint", user),
                ("binding_message", "W4SCT"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let id = reply.body["auth_req_id"].as_str().unwrap().to_owned();

    let mail = smtp.wait_for_mail(user).await;
    assert!(mail.subject.contains("Acme Shop"), "{}", mail.subject);
    assert!(
        mail.raw.contains("From: Bank <no-reply@bank.example>"),
        "{}",
        mail.raw
    );
    assert!(mail.body.contains("W4SCT"), "{}", mail.body);
    let link = mail
        .body
        .split_whitespace()
        .find(|w| w.starts_with(&app.url("/approve/")))
        .unwrap_or_else(|| panic!("no approval link in {}", mail.body))
        .to_owned();
    // Never a token, a code, or the IdP's link (it holds the state).
    assert!(!mail.raw.contains(&id), "{}", mail.raw);
    assert!(!mail.raw.contains("state="), "{}", mail.raw);
    assert!(!mail.raw.contains("code_challenge"), "{}", mail.raw);

    let browser = Browser::start().await.unwrap();
    browser.goto(&link).await.unwrap();
    let text = browser.wait_for_text("Acme Shop").await.unwrap();
    assert!(text.contains("W4SCT"), "{text}");
    browser.screenshot("channels/email-link").await.unwrap();
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_mail_goes_to_the_accounts_address_when_the_hint_is_not_one() {
    let smtp = SmtpServer::start().await.unwrap();
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .channels(&format!(
            "[[notifier.channels]]\nkind = \"email\"\nsmtp_url = \"{}\"\nfrom = \"no-reply@bank.example\"\n",
            smtp.url()
        ))
        .spawn()
        .await;
    // What the account page's sign-in keeps: the ID token's email claim.
    RedisStore::connect(&redis_url(), &app.prefix, Duration::from_secs(2))
        .await
        .unwrap()
        .accounts()
        .set_email("nora", "nora.smith@bank.example")
        .await
        .unwrap();
    let id = app.start("shop", "nora").await;
    let mail = smtp.wait_for_mail("nora.smith@bank.example").await;
    assert!(mail.body.contains(&app.url("/approve/")), "{}", mail.body);
    assert!(!mail.raw.contains(&id));
}
