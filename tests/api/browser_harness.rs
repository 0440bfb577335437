//! The browser harness itself (`support/browser.rs`): headless Chromium over
//! WebDriver fills and submits a form, measures a page at a phone's width,
//! takes a screenshot, trusts the test PKI's https, and signs in at the test
//! IdP's login and consent pages.
use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use base64::Engine;
use ciba_proxy_e2e::app::TestApp;
use ciba_proxy_e2e::browser::Browser;
use ciba_proxy_e2e::idp::TestIdp;
use ciba_proxy_e2e::server::TestServer;
use sha2::{Digest, Sha256};

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title></head><body>{body}</body></html>"
        ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The pages a test drives: a form that POSTs, a page wider than a phone, a
/// page that fits any width, and a landing page for redirects.
fn pages(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/form",
        web::get().to(|| async {
            page(
                "Greeting",
                "<form id=\"greet\" method=\"post\" action=\"/greeted\">\
                 <label>Name <input name=\"name\" required></label>\
                 <button type=\"submit\" name=\"choice\" value=\"hello\">Say hello</button>\
                 </form>",
            )
        }),
    )
    .route(
        "/greeted",
        web::post().to(|form: web::Form<HashMap<String, String>>| async move {
            let name = form.get("name").map(String::as_str).unwrap_or("");
            let choice = form.get("choice").map(String::as_str).unwrap_or("none");
            page(
                "Greeted",
                &format!(
                    "<p id=\"result\">Hello, {}! (button: {})</p>",
                    escape(name),
                    escape(choice)
                ),
            )
        }),
    )
    .route(
        "/wide",
        web::get().to(|| async {
            page(
                "Wide",
                "<div style=\"width:1000px;background:#fc9\">a table 1000 px wide</div>",
            )
        }),
    )
    .route(
        "/responsive",
        web::get().to(|| async {
            page(
                "Responsive",
                "<div style=\"max-width:1000px;background:#9cf\">\
                 <p>Text that wraps to fit the screen it is shown on, however narrow.</p>\
                 <img alt=\"\" style=\"max-width:100%;width:1000px;height:10px\" \
                 src=\"data:image/gif;base64,R0lGODlhAQABAAAAACw=\"></div>",
            )
        }),
    )
    .route(
        "/landed",
        web::get().to(|| async { page("Landed", "<p>landed</p>") }),
    );
}

fn serve_pages() -> TestServer {
    TestServer::start(Arc::new(()), pages).expect("serve the test pages")
}

/// The test pages over https, with a fresh self-signed certificate for
/// 127.0.0.1 that the test PKI did not issue. Returns the base URL.
fn serve_pages_with_a_stranger_certificate() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = actix_web::HttpServer::new(|| actix_web::App::new().configure(pages))
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, config)
        .unwrap()
        .run();
    // Stops with the test's runtime.
    tokio::spawn(server);
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_browser_fills_and_submits_a_form_and_reads_the_result() {
    let server = serve_pages();
    let browser = Browser::start().await.unwrap();

    browser
        .goto(&format!("http://127.0.0.1:{}/form", server.port))
        .await
        .unwrap();
    assert_eq!(browser.title().await.unwrap(), "Greeting");
    browser
        .fill("#greet input[name=name]", "Ada <3")
        .await
        .unwrap();
    browser.submit("#greet").await.unwrap();

    let text = browser.wait_for_text("Hello, ").await.unwrap();
    assert_eq!(text, "Hello, Ada <3! (button: hello)");
    assert_eq!(browser.title().await.unwrap(), "Greeted");
    assert_eq!(browser.current_url().await.unwrap().path(), "/greeted");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_browser_keeps_a_required_field_from_being_submitted_empty() {
    let server = serve_pages();
    let browser = Browser::start().await.unwrap();
    browser
        .goto(&format!("http://127.0.0.1:{}/form", server.port))
        .await
        .unwrap();

    browser.click("#greet button").await.unwrap();

    // The browser's own validation stops the POST: still on the form.
    assert_eq!(browser.current_url().await.unwrap().path(), "/form");
    assert!(browser.exists("#greet").await.unwrap());
}

#[tokio::test]
async fn a_browser_at_a_phones_width_sees_a_wide_page_scroll_sideways_and_a_responsive_one_fit() {
    let server = serve_pages();
    let browser = Browser::start().await.unwrap();
    browser.set_viewport(360, 740).await.unwrap();

    browser
        .goto(&format!("http://127.0.0.1:{}/wide", server.port))
        .await
        .unwrap();
    assert_eq!(browser.viewport().await.unwrap(), (360, 740));
    assert!(browser.scroll_width().await.unwrap() >= 1000);
    assert!(browser.has_horizontal_scroll().await.unwrap());
    let matches = browser
        .execute("return matchMedia('(max-width: 360px)').matches;")
        .await
        .unwrap();
    assert_eq!(matches, serde_json::json!(true), "media queries see 360 px");

    browser
        .goto(&format!("http://127.0.0.1:{}/responsive", server.port))
        .await
        .unwrap();
    assert_eq!(browser.viewport().await.unwrap(), (360, 740));
    assert_eq!(browser.scroll_width().await.unwrap(), 360);
    assert!(!browser.has_horizontal_scroll().await.unwrap());

    let path = browser
        .screenshot("browser_harness/responsive-360")
        .await
        .unwrap();
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        path.display()
    );
    assert!(png.len() > 100, "{} is not empty", path.display());
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_browser_trusts_the_proxys_https_with_the_test_pki_certificate() {
    let app = TestApp::builder().https().spawn().await;
    assert!(app.issuer.starts_with("https://"), "{}", app.issuer);
    let browser = Browser::start().await.unwrap();

    browser
        .goto(&format!("{}/.well-known/openid-configuration", app.issuer))
        .await
        .unwrap();

    let text = browser
        .wait_for_text("backchannel_authentication_endpoint")
        .await
        .unwrap();
    assert!(text.contains(&app.issuer), "{text}");
}

#[tokio::test]
async fn a_browser_refuses_https_with_a_certificate_the_test_pki_did_not_issue() {
    let base = serve_pages_with_a_stranger_certificate();
    let browser = Browser::start().await.unwrap();

    browser.goto(&format!("{base}/form")).await.unwrap();

    // Chromium's interstitial, not the page: only the test PKI's server
    // key is exempt from certificate checks.
    let text = browser
        .wait_for_text("ERR_CERT_AUTHORITY_INVALID")
        .await
        .unwrap();
    assert!(!text.contains("Say hello"), "{text}");
    assert_ne!(browser.title().await.unwrap(), "Greeting");
    assert!(!browser.exists("#greet").await.unwrap());
}

#[tokio::test]
async fn a_browser_signs_in_at_the_test_idp_and_lands_on_the_redirect_uri_with_a_code() {
    let server = serve_pages();
    let redirect_uri = format!("http://127.0.0.1:{}/landed", server.port);
    let idp = TestIdp::shared();
    let client = idp.register_client(&redirect_uri).await.unwrap();
    let verifier = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let mut auth = url::Url::parse(&format!("{}/auth", idp.issuer)).unwrap();
    auth.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid")
        .append_pair("state", "s")
        .append_pair("nonce", "n")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", "alice");
    let browser = Browser::start().await.unwrap();
    browser.goto(auth.as_str()).await.unwrap();

    let landed = browser.sign_in_at_test_idp("alice").await.unwrap();

    assert_eq!(
        format!("{}{}", landed.origin().ascii_serialization(), landed.path()),
        redirect_uri
    );
    let query: HashMap<String, String> = landed.query_pairs().into_owned().collect();
    assert!(
        !query.get("code").map(String::is_empty).unwrap_or(true),
        "{landed}"
    );
    assert_eq!(
        query.get("state").map(String::as_str),
        Some("s"),
        "{landed}"
    );
    assert_eq!(query.get("iss"), Some(&idp.issuer), "{landed}");
    assert_eq!(browser.text().await.unwrap(), "landed");
    browser.close().await.unwrap();
}
