//! The account page's rules a browser does not show: where the sign-in
//! goes, the cookies' flags, forged and expired sessions, the callback's
//! `state`, CSRF on every form, and that a user can only remove their own
//! device. (The pages themselves: `account_browser.rs`.)
use ciba_proxy_e2e::app::{StoreKind, TestApp};
use ciba_proxy_e2e::browser::Browser;
use ciba_proxy_e2e::device_key::TestDevice;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use url::Url;

use ciba_proxy_e2e::account::{app_with_account, sign_in};

/// Answers as the browser gets them, with `cookie` sent.
async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = app.http.get(app.url(path));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

async fn post(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app.http.post(app.url(path)).form(form);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

/// The `Set-Cookie` header for cookie `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie: {:?}", response.headers()))
        .to_owned()
}

/// `name=value` of a `Set-Cookie` header, to send back.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// Signs `user` in through the browser; returns the `Cookie` header of the
/// session.
async fn session_of(app: &TestApp, user: &str) -> String {
    let browser = Browser::start().await.unwrap();
    sign_in(app, &browser, user).await;
    let cookie = browser
        .client()
        .get_named_cookie("ciba_account")
        .await
        .unwrap();
    browser.close().await.unwrap();
    format!("ciba_account={}", cookie.value())
}

/// The session's form token, from the page.
async fn csrf_of(app: &TestApp, cookie: &str) -> String {
    let page = get(app, "/account", Some(cookie)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form") + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

#[tokio::test]
async fn without_an_account_section_there_is_no_account_page() {
    let app = TestApp::spawn().await;
    for path in ["/account", "/account/callback?state=x&code=y"] {
        let page = get(&app, path, None).await;
        assert_eq!(page.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(page.text().await.unwrap().contains("no account page"));
    }
    let removal = post(&app, "/account/devices/remove", None, &[("csrf", "x")]).await;
    assert_eq!(removal.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_sign_in_is_an_authorization_code_flow_with_pkce_state_and_nonce() {
    let app = app_with_account(StoreKind::Memory).await;
    let response = get(&app, "/account", None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(&app.idp.issuer), "{location}");
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["code_challenge_method"], "S256");
    let mut scope: Vec<&str> = query["scope"].split(' ').collect();
    scope.sort_unstable();
    assert_eq!(scope, ["email", "openid"]);
    assert_eq!(query["redirect_uri"], app.url("/account/callback"));
    assert!(query["state"].len() >= 32 && query["nonce"].len() >= 32);
    assert!(!query.contains_key("login_hint"));

    let cookie = set_cookie(&response, "ciba_account_sign_in");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/account", "Max-Age="] {
        assert!(cookie.contains(flag), "{flag}: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    // The verifier and state are sealed, not readable.
    assert!(!cookie.contains(&query["state"]), "{cookie}");
}

#[tokio::test]
async fn under_https_the_cookies_are_secure() {
    let app = TestApp::builder().https().account("").spawn().await;
    let response = get(&app, "/account", None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(&response, "ciba_account_sign_in");
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn a_callback_with_another_state_or_without_the_cookie_signs_no_one_in() {
    let app = app_with_account(StoreKind::Memory).await;
    let started = get(&app, "/account", None).await;
    let cookie = pair(&set_cookie(&started, "ciba_account_sign_in"));

    let wrong = get(&app, "/account/callback?state=wrong&code=x", Some(&cookie)).await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert!(wrong
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("ciba_account=")));

    let location = Url::parse(started.headers()[LOCATION].to_str().unwrap()).unwrap();
    let state = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let no_cookie = get(
        &app,
        &format!("/account/callback?state={state}&code=x"),
        None,
    )
    .await;
    assert_eq!(no_cookie.status(), StatusCode::BAD_REQUEST);

    // The IdP's error: a page in our words, nothing echoed.
    let refused = get(
        &app,
        &format!("/account/callback?state={state}&error=access_denied&error_description=%3Cb%3Esecret%3C%2Fb%3E"),
        Some(&cookie),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let text = refused.text().await.unwrap();
    assert!(text.contains("You are not signed in"), "{text}");
    assert!(
        !text.contains("secret") && !text.contains("access_denied"),
        "{text}"
    );
}

#[tokio::test]
async fn a_forged_or_expired_session_is_no_session() {
    let app = TestApp::builder()
        .manual_clock()
        .account("session_secs = 600")
        .spawn()
        .await;
    let forged = get(&app, "/account", Some("ciba_account=forged")).await;
    assert_eq!(forged.status(), StatusCode::SEE_OTHER, "on to the sign-in");

    let cookie = session_of(&app, "ivan").await;
    assert_eq!(
        get(&app, "/account", Some(&cookie)).await.status(),
        StatusCode::OK
    );
    // Another proxy's session (another key) is not this one's.
    let other = app_with_account(StoreKind::Memory).await;
    assert_eq!(
        get(&other, "/account", Some(&cookie)).await.status(),
        StatusCode::SEE_OTHER
    );
    app.advance(601);
    assert_eq!(
        get(&app, "/account", Some(&cookie)).await.status(),
        StatusCode::SEE_OTHER,
        "expired"
    );
}

#[tokio::test]
async fn sign_out_and_removal_need_the_sessions_form_token() {
    let app = app_with_account(StoreKind::Redis).await;
    let device = TestDevice::register(&app, "judy").await;
    let did = device.did.clone();
    let cookie = session_of(&app, "judy").await;
    let csrf = csrf_of(&app, &cookie).await;

    for form in [vec![], vec![("csrf", "forged")]] {
        let out = post(&app, "/account/signout", Some(&cookie), &form).await;
        assert_eq!(out.status(), StatusCode::FORBIDDEN);
        let mut removal = form.clone();
        removal.push(("did", &did));
        let removed = post(&app, "/account/devices/remove", Some(&cookie), &removal).await;
        assert_eq!(removed.status(), StatusCode::FORBIDDEN);
    }
    // The right token without the session cookie: a cross-site post.
    let removed = post(
        &app,
        "/account/devices/remove",
        None,
        &[("csrf", &csrf), ("did", &did)],
    )
    .await;
    assert_eq!(removed.status(), StatusCode::FORBIDDEN);
    assert_eq!(device.requests(&app).await.status, 200, "still registered");
    assert_eq!(
        get(&app, "/account", Some(&cookie)).await.status(),
        StatusCode::OK
    );

    let out = post(&app, "/account/signout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), StatusCode::OK);
    let cleared = set_cookie(&out, "ciba_account");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test]
async fn another_users_device_cannot_be_removed() {
    let app = app_with_account(StoreKind::Redis).await;
    let kim = TestDevice::register(&app, "kim").await;
    let kims = kim.did.clone();
    let cookie = session_of(&app, "leo").await;
    let csrf = csrf_of(&app, &cookie).await;
    let page = get(&app, "/account", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("Test phone") && !page.contains(&kims));

    for did in [kims.as_str(), "no-such-device"] {
        let removed = post(
            &app,
            "/account/devices/remove",
            Some(&cookie),
            &[("csrf", &csrf), ("did", did)],
        )
        .await;
        assert_eq!(removed.status(), StatusCode::NOT_FOUND, "{did}");
    }
    assert_eq!(kim.requests(&app).await.status, 200, "still registered");
}

#[tokio::test]
async fn a_request_that_expired_undecided_shows_as_expired_in_the_history() {
    let app = TestApp::builder()
        .manual_clock()
        .ciba(60, 600, 1)
        .client_toml("client_name = \"Acme Shop\"\n")
        .account("")
        .spawn()
        .await;
    let cookie = session_of(&app, "mallory").await;
    app.device
        .on("mallory", ciba_proxy_e2e::device::Action::Ignore);
    app.start("shop", "mallory").await;
    let page = get(&app, "/account", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Acme Shop") && !page.contains("outcome-expired"));

    app.advance(61);
    let page = get(&app, "/account", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Nothing is waiting for you"), "{page}");
    assert!(page.contains("history-entry outcome-expired"), "{page}");
    // Seen once: a second look does not add it again.
    let page = get(&app, "/account", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches("history-entry outcome-expired").count(), 1);
}

#[tokio::test]
async fn the_account_page_logs_no_user_address_cookie_or_challenge_even_at_trace() {
    let (app, proxy) = TestApp::builder()
        .account("")
        .spawn_process(&[("RUST_LOG", "trace")])
        .await;
    let browser = Browser::start().await.unwrap();
    sign_in(&app, &browser, "nadia").await;
    let qr = ciba_proxy_e2e::account::qr_on_page(&browser).await;
    let session = browser
        .client()
        .get_named_cookie("ciba_account")
        .await
        .unwrap();
    let cookie = format!("ciba_account={}", session.value());
    let csrf = csrf_of(&app, &cookie).await;
    browser.close().await.unwrap();

    let logs = proxy.logs();
    assert!(logs.contains("signed in to the account page"), "{logs}");
    let mut secrets = vec![
        "nadia@example.test".to_owned(),
        session.value().to_owned(),
        csrf,
        qr["chg"].as_str().unwrap().to_owned(),
    ];
    secrets.extend(app.secrets.iter().cloned());
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "{secret} is in the logs");
    }
}
