//! A simulated authentication device: it receives the proxy's webhook,
//! checks its signature, and acts like the user's phone browser: it opens
//! the authorization URL and signs in at the IdP's login page as someone,
//! or cancels, then follows the redirects back to the proxy's callback.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context;
use serde_json::Value;

use crate::server::TestServer;

/// What the user does when the notification arrives.
#[derive(Debug, Clone)]
pub enum Action {
    /// Signs in at the IdP as this user and consents.
    SignInAs(String),
    /// Opens the link and cancels at the login page.
    Cancel,
    /// Never reacts.
    Ignore,
    /// The push gateway answers the webhook with this status every time.
    RefuseWebhook(u16),
    /// The push gateway answers 503 this many times, then the user signs in as the hinted user.
    FailThenSignIn(u32),
    /// The push gateway takes this long to answer, then the user signs in as the hinted user.
    SlowAck(Duration),
}

/// A webhook the device received.
#[derive(Debug, Clone)]
pub struct Notification {
    pub body: Value,
    pub raw: Vec<u8>,
    pub signature: Option<String>,
    pub signature_valid: bool,
}

impl Notification {
    /// The authorization URL the proxy asked the device to open.
    pub fn authorization_url(&self) -> &str {
        self.body["authorization_url"].as_str().unwrap_or_default()
    }

    /// The proxy's approval page for the request.
    pub fn approval_url(&self) -> &str {
        self.body["approval_url"].as_str().unwrap_or_default()
    }

    /// One query parameter of the authorization URL (`state`, `nonce`, ...).
    pub fn authorization_param(&self, name: &str) -> Option<String> {
        let url = url::Url::parse(self.authorization_url()).ok()?;
        let value = url.query_pairs().find(|(k, _)| k == name)?.1.into_owned();
        Some(value)
    }
}

/// The page the proxy's callback showed on the device.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub body: String,
    pub url: String,
}

#[derive(Default)]
struct Inner {
    secret: String,
    actions: Mutex<HashMap<String, Action>>,
    attempts: Mutex<HashMap<String, u32>>,
    /// Hints whose user already acted: a repeated webhook (at-least-once
    /// delivery) is acknowledged and ignored, as a real phone would.
    acted: Mutex<std::collections::HashSet<String>>,
    notifications: Mutex<Vec<Notification>>,
    pages: Mutex<Vec<(String, anyhow::Result<Page>)>>,
}

pub struct Device {
    /// Where the proxy's notifier should POST.
    pub url: String,
    pub secret: String,
    inner: Arc<Inner>,
    _server: TestServer,
}

impl Device {
    pub async fn start() -> anyhow::Result<Self> {
        let secret = format!("device-secret-{}", rand::random::<u64>());
        let inner = Arc::new(Inner {
            secret: secret.clone(),
            ..Inner::default()
        });
        let server = TestServer::start(inner.clone(), |routes| {
            routes.route("/notify", web::post().to(receive));
        })?;
        Ok(Self {
            url: format!("http://127.0.0.1:{}/notify", server.port),
            secret,
            inner,
            _server: server,
        })
    }

    /// What the user with `login_hint` will do (default: sign in as themselves).
    pub fn on(&self, login_hint: &str, action: Action) {
        self.inner
            .actions
            .lock()
            .unwrap()
            .insert(login_hint.to_owned(), action);
    }

    pub fn notifications(&self) -> Vec<Notification> {
        self.inner.notifications.lock().unwrap().clone()
    }

    /// Waits for the first webhook for `login_hint`.
    pub async fn wait_for_notification(&self, login_hint: &str) -> Notification {
        wait_until(|| {
            self.notifications()
                .into_iter()
                .find(|n| n.body["login_hint"] == login_hint)
        })
        .await
        .unwrap_or_else(|| panic!("no notification for {login_hint}"))
    }

    /// Waits for the callback page the device ended on for `login_hint`.
    pub async fn wait_for_page(&self, login_hint: &str) -> Page {
        let found = wait_until(|| {
            let pages = self.inner.pages.lock().unwrap();
            pages
                .iter()
                .find(|(hint, _)| hint == login_hint)
                .map(|(_, page)| match page {
                    Ok(p) => Ok(p.clone()),
                    Err(e) => Err(format!("{e:#}")),
                })
        })
        .await;
        match found {
            Some(Ok(page)) => page,
            Some(Err(e)) => panic!("the device's sign-in for {login_hint} failed: {e}"),
            None => panic!("the device never finished a sign-in for {login_hint}"),
        }
    }
}

async fn wait_until<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..300 {
        if let Some(found) = probe() {
            return Some(found);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn receive(req: HttpRequest, body: web::Bytes, inner: web::Data<Inner>) -> HttpResponse {
    let signature = req
        .headers()
        .get("X-Ciba-Signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let expected = format!(
        "sha256={}",
        ciba_proxy::crypto::hmac_sha256_hex(inner.secret.as_bytes(), &body)
    );
    let notification = Notification {
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
        signature_valid: signature.as_deref() == Some(expected.as_str()),
        signature,
    };
    let hint = notification.body["login_hint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = notification.body["authorization_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let valid = notification.signature_valid;
    inner.notifications.lock().unwrap().push(notification);
    if !valid {
        return HttpResponse::Unauthorized().finish();
    }
    let action = inner
        .actions
        .lock()
        .unwrap()
        .get(&hint)
        .cloned()
        .unwrap_or_else(|| Action::SignInAs(hint.clone()));
    let action = match action {
        Action::Ignore => return HttpResponse::NoContent().finish(),
        Action::RefuseWebhook(status) => {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .finish()
        }
        Action::FailThenSignIn(failures) => {
            let mut attempts = inner.attempts.lock().unwrap();
            let seen = attempts.entry(hint.clone()).or_default();
            *seen += 1;
            if *seen <= failures {
                return HttpResponse::ServiceUnavailable().finish();
            }
            Action::SignInAs(hint.clone())
        }
        Action::SlowAck(delay) => {
            tokio::time::sleep(delay).await;
            Action::SignInAs(hint.clone())
        }
        other => other,
    };
    if !inner.acted.lock().unwrap().insert(hint.clone()) {
        return HttpResponse::NoContent().finish();
    }
    let inner = inner.into_inner();
    tokio::spawn(async move {
        let page = sign_in(&url, &action).await;
        inner.pages.lock().unwrap().push((hint, page));
    });
    HttpResponse::NoContent().finish()
}

/// Drives the IdP's login and consent pages like a browser would.
pub async fn sign_in(authorization_url: &str, action: &Action) -> anyhow::Result<Page> {
    sign_in_until(authorization_url, action, None).await
}

/// Like [`sign_in`], but stops before following a redirect to a URL that
/// starts with `stop_at` (the page then is that 303, its `url` the target).
pub async fn sign_in_until(
    authorization_url: &str,
    action: &Action,
    stop_at: Option<&str>,
) -> anyhow::Result<Page> {
    let http = phone(stop_at)?;
    let login = http.get(authorization_url).send().await?;
    at_the_idp(&http, login, action).await
}

/// What a phone does with the proxy's approval page: opens it, presses
/// "Approve and sign in" (a form POST that leads to the IdP), then signs in
/// like [`sign_in`]. No browser: the page's form is read from its HTML.
pub async fn approve_and_sign_in(approval_url: &str, action: &Action) -> anyhow::Result<Page> {
    let http = phone(None)?;
    let page = http.get(approval_url).send().await?;
    anyhow::ensure!(
        page.status() == 200,
        "the approval page answered {}",
        page.status()
    );
    let html = page.text().await?;
    let csrf = form_field(&html, "csrf").context("no csrf field on the approval page")?;
    let login = http
        .post(format!("{approval_url}/approve"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await?;
    at_the_idp(&http, login, action).await
}

/// The value of the first form field `name` in a page's HTML (the pages
/// write `name="..." value="..."`).
pub fn form_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

/// A phone nobody used before: a fresh cookie jar, redirects followed
/// (until `stop_at`).
fn phone(stop_at: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let stop_at = stop_at.map(str::to_owned);
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if stop_at
            .as_deref()
            .is_some_and(|p| attempt.url().as_str().starts_with(p))
        {
            attempt.stop()
        } else if attempt.previous().len() > 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    Ok(reqwest::Client::builder()
        .cookie_store(true)
        .redirect(policy)
        // The proxy's callback may be served over TLS with the test CA.
        .add_root_certificate(crate::pki::TestPki::shared().ca_certificate())
        .build()?)
}

/// Signs in on the IdP's login page `login` (and consents).
async fn at_the_idp(
    http: &reqwest::Client,
    login: reqwest::Response,
    action: &Action,
) -> anyhow::Result<Page> {
    let login_url = login.url().clone();
    anyhow::ensure!(
        login_url.path().starts_with("/interaction/"),
        "expected the IdP's login page, got {} {}",
        login.status(),
        login_url
    );
    let response = match action {
        Action::Cancel => http.get(format!("{login_url}/abort")).send().await?,
        Action::SignInAs(user) => {
            let consent = http
                .post(login_url)
                .form(&[("prompt", "login"), ("login", user.as_str())])
                .send()
                .await?;
            let consent_url = consent.url().clone();
            if consent_url.path().starts_with("/interaction/") {
                http.post(consent_url)
                    .form(&[("prompt", "consent")])
                    .send()
                    .await?
            } else {
                consent
            }
        }
        other => anyhow::bail!("{other:?} does not sign in"),
    };
    let url = match response.headers().get(reqwest::header::LOCATION) {
        Some(location) if response.status().is_redirection() => location.to_str()?.to_owned(),
        _ => response.url().to_string(),
    };
    Ok(Page {
        status: response.status().as_u16(),
        url,
        body: response.text().await.context("page body")?,
    })
}
