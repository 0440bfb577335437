//! `with-proxy [--fixtures DIR] COMMAND [ARGS...]`: serves a ciba-proxy
//! for COMMAND (make test's schemathesis run, `tests/schemathesis/run.sh`),
//! then exits with COMMAND's status.
//!
//! The proxy is the real application in this process, on a free loopback
//! port, with the test IdP (oidc-provider), the store at
//! `CIBA_TEST_REDIS_URL` (`memory://` if unset) under a fresh key prefix,
//! one `client_secret_basic` client and a push gateway that accepts every
//! webhook and does nothing else. Its operator port (`[metrics] bind`) serves
//! `/metrics` and the admin API, with a random admin token. `{url}` and
//! `{operator_url}` in an argument are replaced by the two ports' URLs;
//! COMMAND also gets `CIBA_PROXY_URL`, `CIBA_PROXY_OPERATOR_URL`,
//! `CIBA_PROXY_CLIENT_ID`, `CIBA_PROXY_CLIENT_SECRET` and
//! `CIBA_PROXY_ADMIN_TOKEN`.
//!
//! With `--fixtures DIR`, two requests are opened first and DIR gets
//! libFuzzer-style dictionaries (one quoted value a line) of what only a
//! live request has, so the fuzzer reaches past "unknown": `handle.dict`
//! (an approval page), `auth_req_id.dict` (a pending request to poll) and
//! `state.dict` (another request's callback `state`).
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ciba_proxy::clock::SystemClock;
use ciba_proxy::configuration::Settings;
use ciba_proxy::startup::Application;
use ciba_proxy_e2e::idp::TestIdp;
use ciba_proxy_e2e::server::TestServer;
use serde_json::Value;
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "fuzz";
const CLIENT_SECRET: &str = "fuzz-secret";

/// The webhooks the push gateway received.
type Webhooks = Mutex<Vec<Value>>;

async fn receive(webhooks: web::Data<Webhooks>, body: web::Bytes) -> HttpResponse {
    if let Ok(webhook) = serde_json::from_slice(&body) {
        webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(webhook);
    }
    HttpResponse::NoContent().finish()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let fixtures = match args.first().map(String::as_str) {
        Some("--fixtures") if args.len() > 1 => {
            let dir = PathBuf::from(args.remove(1));
            args.remove(0);
            Some(dir)
        }
        _ => None,
    };
    let Some((program, args)) = args.split_first() else {
        bail!("usage: with-proxy [--fixtures DIR] COMMAND [ARGS...]  ({{url}} and {{operator_url}} in an argument are the proxy's URLs)");
    };

    let idp = TestIdp::start()?;
    let webhooks: Arc<Webhooks> = Arc::default();
    let gateway = TestServer::start(webhooks.clone(), |routes| {
        routes.route("/notify", web::post().to(receive));
    })?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    // The operator port is bound by the proxy itself: a free one, found now.
    let operator = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let operator_url = format!("http://{operator}");
    let admin_token = format!("schemathesis-{}", rand::random::<u64>());
    let upstream = idp
        .register_client(&format!("{url}/callback"))
        .await
        .context("register the proxy's client at the test IdP")?;
    let store = std::env::var("CIBA_TEST_REDIS_URL").unwrap_or_else(|_| "memory://".into());
    let toml = format!(
        r#"
        [server]
        bind = "{bind}"
        issuer = "{url}"
        [store]
        url = "{store}"
        key_prefix = "schemathesis-{prefix}"
        [ciba]
        token_encryption_key = "{key}"
        [limits]
        # Off: past 600 a minute every backchannel request would stop at
        # 429 before its parameters are read (the suite checks the 429).
        requests_per_client_per_minute = 0
        [upstream]
        issuer = "{issuer}"
        [metrics]
        bind = "{operator}"
        [admin]
        token_sha256 = "{admin_hash}"
        [notifier]
        kind = "webhook"
        url = "http://127.0.0.1:{gateway}/notify"
        secret = "schemathesis-webhook-secret"
        [[clients]]
        client_id = "{CLIENT_ID}"
        client_secret = "{CLIENT_SECRET}"
        token_endpoint_auth_method = "client_secret_basic"
        scope = "openid profile email"
        upstream_client_id = "{upstream_id}"
        upstream_client_secret = "{upstream_secret}"
        "#,
        bind = listener.local_addr()?,
        prefix = rand::random::<u64>(),
        key = STANDARD.encode(rand::random::<[u8; 32]>()),
        issuer = idp.issuer,
        gateway = gateway.port,
        upstream_id = upstream.client_id,
        upstream_secret = upstream.client_secret,
        admin_hash = hex::encode(Sha256::digest(admin_token.as_bytes())),
    );
    let settings = Settings::from_toml(&toml).context("the proxy's settings")?;
    let app = Application::build_with(settings, listener, Arc::new(SystemClock))
        .await
        .context("start the proxy")?;
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    wait_ready(&http, &url).await?;
    if let Some(dir) = &fixtures {
        write_fixtures(&http, &url, &webhooks, dir).await?;
    }
    eprintln!(
        "with-proxy: ciba-proxy at {url} (client {CLIENT_ID}), operator port at {operator_url}, IdP at {}",
        idp.issuer
    );

    let status = tokio::process::Command::new(program)
        .args(args.iter().map(|a| {
            a.replace("{url}", &url)
                .replace("{operator_url}", &operator_url)
        }))
        .env("CIBA_PROXY_URL", &url)
        .env("CIBA_PROXY_OPERATOR_URL", &operator_url)
        .env("CIBA_PROXY_ADMIN_TOKEN", &admin_token)
        .env("CIBA_PROXY_CLIENT_ID", CLIENT_ID)
        .env("CIBA_PROXY_CLIENT_SECRET", CLIENT_SECRET)
        .status()
        .await
        .with_context(|| format!("run {program}"))?;
    // The IdP (it exits when its stdin closes) and the proxy end with us.
    std::process::exit(status.code().unwrap_or(1));
}

/// Waits until `/readyz` answers 200: the store answers and the IdP's
/// metadata is loaded.
async fn wait_ready(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        let ready = http.get(format!("{url}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the proxy at {url} did not become ready")
}

/// Opens two requests and writes the dictionaries of their live values.
async fn write_fixtures(
    http: &reqwest::Client,
    url: &str,
    webhooks: &Webhooks,
    dir: &Path,
) -> anyhow::Result<()> {
    let (auth_req_id, page) = open_request(http, url, webhooks, "fixture-page").await?;
    let (_, callback) = open_request(http, url, webhooks, "fixture-callback").await?;
    let handle = page["approval_url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .context("the webhook's approval_url")?;
    let authorization = url::Url::parse(callback["authorization_url"].as_str().unwrap_or(""))
        .context("the webhook's authorization_url")?;
    let state = authorization
        .query_pairs()
        .find(|(k, _)| k == "state")
        .context("the state in the authorization_url")?
        .1;
    std::fs::create_dir_all(dir)?;
    for (name, value) in [
        ("handle", handle),
        ("auth_req_id", auth_req_id.as_str()),
        ("state", &state),
    ] {
        // All three are base64url: nothing to escape inside the quotes.
        std::fs::write(dir.join(format!("{name}.dict")), format!("\"{value}\"\n"))?;
    }
    Ok(())
}

/// A pending request for `login_hint`: its auth_req_id and its webhook.
async fn open_request(
    http: &reqwest::Client,
    url: &str,
    webhooks: &Webhooks,
    login_hint: &str,
) -> anyhow::Result<(String, Value)> {
    let ack: Value = http
        .post(format!("{url}/bc-authorize"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("scope", "openid"), ("login_hint", login_hint)])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let auth_req_id = ack["auth_req_id"]
        .as_str()
        .context("an auth_req_id")?
        .to_owned();
    for _ in 0..200 {
        let found = webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|w| w["login_hint"] == login_hint)
            .cloned();
        if let Some(webhook) = found {
            return Ok((auth_req_id, webhook));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no webhook for {login_hint}")
}
