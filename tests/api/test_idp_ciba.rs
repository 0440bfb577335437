//! Self-tests of the test IdP's native CIBA and its hooks, with no proxy in
//! between: what the proxy's native CIBA upstream is tested against.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use ciba_proxy::configuration::TlsSettings;
use ciba_proxy_e2e::idp::{TestIdp, UpstreamClient, CIBA_GRANT_TYPE};
use ciba_proxy_e2e::pki::TestPki;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

struct Reply {
    status: u16,
    body: Value,
}

async fn post_form(
    idp: &TestIdp,
    path: &str,
    client: &UpstreamClient,
    form: &[(&str, &str)],
) -> Reply {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", idp.issuer))
        .basic_auth(&client.client_id, Some(&client.client_secret))
        .form(form)
        .send()
        .await
        .expect("reach the IdP");
    let status = response.status().as_u16();
    let text = response.text().await.expect("read the IdP's reply");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply { status, body }
}

async fn backchannel(idp: &TestIdp, client: &UpstreamClient, form: &[(&str, &str)]) -> Reply {
    post_form(idp, "/backchannel", client, form).await
}

async fn start(idp: &TestIdp, client: &UpstreamClient, form: &[(&str, &str)]) -> String {
    let reply = backchannel(idp, client, form).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["auth_req_id"]
        .as_str()
        .expect("an auth_req_id")
        .to_owned()
}

async fn token(idp: &TestIdp, client: &UpstreamClient, auth_req_id: &str) -> Reply {
    post_form(
        idp,
        "/token",
        client,
        &[
            ("grant_type", CIBA_GRANT_TYPE),
            ("auth_req_id", auth_req_id),
        ],
    )
    .await
}

fn claims(id_token: &str) -> Value {
    let payload = id_token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

async fn poll_client() -> (&'static TestIdp, UpstreamClient) {
    let idp = TestIdp::shared();
    let client = idp
        .register_ciba_client("poll", None)
        .await
        .expect("register a poll client");
    (idp, client)
}

#[tokio::test]
async fn discovery_lists_ciba_and_revocation() {
    let idp = TestIdp::shared();
    let meta: Value = reqwest::get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery JSON");
    assert_eq!(
        meta["backchannel_authentication_endpoint"],
        json!(format!("{}/backchannel", idp.issuer))
    );
    assert_eq!(
        meta["backchannel_token_delivery_modes_supported"],
        json!(["poll", "ping"])
    );
    assert_eq!(
        meta["revocation_endpoint"],
        json!(format!("{}/token/revocation", idp.issuer))
    );
    assert!(meta["grant_types_supported"]
        .as_array()
        .expect("grant types")
        .contains(&json!(CIBA_GRANT_TYPE)));
}

#[tokio::test]
async fn a_poll_request_is_pending_until_approved_then_yields_tokens() {
    let (idp, client) = poll_client().await;
    let ack = backchannel(
        idp,
        &client,
        &[
            ("login_hint", "alice"),
            ("scope", "openid profile"),
            ("binding_message", "W4SCT"),
            ("requested_expiry", "120"),
        ],
    )
    .await;
    assert_eq!(ack.status, 200, "{:?}", ack.body);
    // oidc-provider's acknowledgement has no `interval`.
    let mut keys: Vec<_> = ack.body.as_object().expect("an object").keys().collect();
    keys.sort();
    assert_eq!(keys, ["auth_req_id", "expires_in"]);
    assert_eq!(ack.body["expires_in"], json!(120));
    let id = ack.body["auth_req_id"].as_str().expect("auth_req_id");

    let request = idp
        .wait_ciba_request_of(&client, WAIT)
        .await
        .expect("the device sees the request");
    assert_eq!(request.id, id);
    assert_eq!(request.status, "pending");
    assert_eq!(request.account, "alice");
    assert_eq!(request.login_hint.as_deref(), Some("alice"));
    assert_eq!(request.binding_message.as_deref(), Some("W4SCT"));
    assert_eq!(request.scope.as_deref(), Some("openid profile"));
    assert_eq!(request.requested_expiry, Some(120));
    assert_eq!(request.form["requested_expiry"], json!("120"));
    // `form` is the body as sent (Basic auth: no client_id in it).
    assert!(!request.form.contains_key("client_id"));
    assert_eq!(request.params["client_id"], json!(client.client_id));

    let pending = token(idp, &client, id).await;
    assert_eq!(pending.status, 400);
    assert_eq!(pending.body["error"], json!("authorization_pending"));

    let approval = idp.approve(id).await.expect("approve");
    assert_eq!(approval.ping_error, None);
    assert!(idp
        .ciba_requests()
        .await
        .expect("requests")
        .iter()
        .all(|r| r.id != id));
    let done = idp
        .all_ciba_requests()
        .await
        .expect("all requests")
        .into_iter()
        .find(|r| r.id == id)
        .expect("the approved request is still listed with ?all");
    assert_eq!(done.status, "approved");

    let tokens = token(idp, &client, id).await;
    assert_eq!(tokens.status, 200, "{:?}", tokens.body);
    assert!(tokens.body["access_token"].is_string());
    assert_eq!(tokens.body["token_type"], json!("Bearer"));
    assert_eq!(tokens.body["scope"], json!("openid profile"));
    assert!(
        tokens.body.get("refresh_token").is_none(),
        "no offline_access asked"
    );
    let id_token = claims(tokens.body["id_token"].as_str().expect("an id_token"));
    assert_eq!(id_token["sub"], json!("alice"));
    assert_eq!(id_token["preferred_username"], json!("alice"));
    assert_eq!(id_token["aud"], json!(client.client_id));
    assert_eq!(id_token["iss"], json!(idp.issuer));
    assert!(id_token
        .get("urn:openid:params:jwt:claim:auth_req_id")
        .is_none());

    // The auth_req_id is spent; using it again is invalid_grant.
    let again = token(idp, &client, id).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.body["error"], json!("invalid_grant"));
}

#[tokio::test]
async fn a_denied_request_gives_access_denied() {
    let (idp, client) = poll_client().await;
    let id = start(idp, &client, &[("login_hint", "bob"), ("scope", "openid")]).await;
    idp.wait_ciba_request(|r| r.id == id, WAIT)
        .await
        .expect("the device sees the request");
    idp.deny(&id).await.expect("deny");
    let reply = token(idp, &client, &id).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["error"], json!("access_denied"));
    assert_eq!(
        reply.body["error_description"],
        json!("End-User denied the authorization request")
    );

    let other = start(idp, &client, &[("login_hint", "bob"), ("scope", "openid")]).await;
    idp.deny_with(&other, "transaction_failed", "the device broke")
        .await
        .expect("deny with another error");
    let reply = token(idp, &client, &other).await;
    assert_eq!(reply.body["error"], json!("transaction_failed"));
    assert_eq!(reply.body["error_description"], json!("the device broke"));
}

#[tokio::test]
async fn an_unanswered_request_expires() {
    let (idp, client) = poll_client().await;
    let ack = backchannel(
        idp,
        &client,
        &[
            ("login_hint", "alice"),
            ("scope", "openid"),
            ("requested_expiry", "1"),
        ],
    )
    .await;
    assert_eq!(ack.body["expires_in"], json!(1), "{:?}", ack.body);
    let id = ack.body["auth_req_id"].as_str().expect("auth_req_id");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(idp
        .ciba_requests()
        .await
        .expect("requests")
        .iter()
        .all(|r| r.id != id));
    let listed = idp
        .all_ciba_requests()
        .await
        .expect("all requests")
        .into_iter()
        .find(|r| r.id == id)
        .expect("listed with ?all");
    assert_eq!(listed.status, "expired");
    assert!(idp.approve(id).await.is_err(), "too late to approve");
    let reply = token(idp, &client, id).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["error"], json!("expired_token"));
}

#[tokio::test]
async fn hints_errors_and_the_json_login_hint() {
    let (idp, client) = poll_client().await;
    for hint in [
        "unknown",
        "unknown-carol",
        r#"{"username":"unknown-x"}"#,
        "{not json",
    ] {
        let reply = backchannel(idp, &client, &[("login_hint", hint), ("scope", "openid")]).await;
        assert_eq!(reply.status, 400, "{hint}: {:?}", reply.body);
        assert_eq!(reply.body["error"], json!("unknown_user_id"), "{hint}");
    }
    let reply = backchannel(
        idp,
        &client,
        &[
            ("login_hint", "alice"),
            ("scope", "openid"),
            ("binding_message", "not allowed: spaces"),
        ],
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["error"], json!("invalid_binding_message"));

    let json_hint = r#"{"username":"carol"}"#;
    let id = start(
        idp,
        &client,
        &[("login_hint", json_hint), ("scope", "openid")],
    )
    .await;
    let request = idp
        .wait_ciba_request(|r| r.id == id, WAIT)
        .await
        .expect("the device sees the request");
    assert_eq!(request.account, "carol");
    assert_eq!(request.login_hint.as_deref(), Some(json_hint));

    // Every attempt is logged, refused ones included.
    let attempts = idp.ciba_attempts().await.expect("attempts");
    let mine: Vec<_> = attempts
        .iter()
        .filter(|a| a.client_id.as_deref() == Some(client.client_id.as_str()))
        .collect();
    assert_eq!(mine.len(), 6);
    assert_eq!(mine[0].error.as_deref(), Some("unknown_user_id"));
    assert_eq!(
        mine[4].form["binding_message"],
        json!("not allowed: spaces")
    );
    assert_eq!(mine[5].auth_req_id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn magic_hints_give_the_idps_other_refusals() {
    let (idp, client) = poll_client().await;
    for (hint, error) in [
        ("denied-dave", "access_denied"),
        ("badscope-erin", "invalid_scope"),
        ("unauthorized-frank", "unauthorized_client"),
    ] {
        let reply = backchannel(idp, &client, &[("login_hint", hint), ("scope", "openid")]).await;
        assert_eq!(reply.status, 400, "{hint}: {:?}", reply.body);
        assert_eq!(reply.body["error"], json!(error), "{hint}");
    }
}

#[tokio::test]
async fn hooks_for_slow_down_auth_url_and_extra_id_token_claims() {
    let (idp, client) = poll_client().await;
    // notification_channel=external: the acknowledgement carries an auth_url.
    let ack = backchannel(
        idp,
        &client,
        &[
            ("login_hint", "alice"),
            ("scope", "openid"),
            ("notification_channel", "external"),
        ],
    )
    .await;
    let id = ack.body["auth_req_id"].as_str().expect("auth_req_id");
    let auth_url = ack.body["auth_url"].as_str().expect("an auth_url");
    assert!(auth_url.starts_with(&idp.issuer), "{auth_url}");
    let plain = start(
        idp,
        &client,
        &[("login_hint", "alice"), ("scope", "openid")],
    )
    .await;
    assert_ne!(plain, id);

    idp.slow_down(id, 1).await.expect("slow_down hook");
    let slow = token(idp, &client, id).await;
    assert_eq!(slow.status, 400);
    assert_eq!(slow.body["error"], json!("slow_down"));
    let pending = token(idp, &client, id).await;
    assert_eq!(pending.body["error"], json!("authorization_pending"));
    let calls = idp.stats().await.expect("stats").token_calls_for(id);
    assert_eq!(calls.len(), 2);
    assert!(calls[0] <= calls[1]);

    idp.approve_with(
        id,
        json!({ "id_token_claims": { "urn:openid:params:jwt:claim:auth_req_id": "$auth_req_id" } }),
    )
    .await
    .expect("approve");
    let tokens = token(idp, &client, id).await;
    assert_eq!(tokens.status, 200, "{:?}", tokens.body);
    let id_token = claims(tokens.body["id_token"].as_str().expect("an id_token"));
    assert_eq!(
        id_token["urn:openid:params:jwt:claim:auth_req_id"],
        json!(id)
    );
}

#[tokio::test]
async fn approval_by_someone_else_gives_their_tokens_and_offline_access_a_refresh_token() {
    let (idp, client) = poll_client().await;
    let id = start(
        idp,
        &client,
        &[
            ("login_hint", "alice"),
            ("scope", "openid profile email offline_access"),
        ],
    )
    .await;
    idp.approve_as(&id, "mallory")
        .await
        .expect("approve as mallory");
    let request = idp
        .all_ciba_requests()
        .await
        .expect("all requests")
        .into_iter()
        .find(|r| r.id == id)
        .expect("listed");
    assert_eq!(request.account, "alice");
    assert_eq!(request.approved_as.as_deref(), Some("mallory"));

    let tokens = token(idp, &client, &id).await;
    assert_eq!(tokens.status, 200, "{:?}", tokens.body);
    let id_token = claims(tokens.body["id_token"].as_str().expect("an id_token"));
    assert_eq!(id_token["sub"], json!("mallory"));
    assert_eq!(id_token["preferred_username"], json!("mallory"));
    assert_eq!(id_token["email"], json!("mallory@example.test"));

    // offline_access: a refresh token, which RFC 7009 revocation kills.
    let refresh = tokens.body["refresh_token"]
        .as_str()
        .expect("a refresh_token for offline_access")
        .to_owned();
    let access = tokens.body["access_token"].as_str().expect("access_token");
    let status = idp.token_status(&refresh).await.expect("status");
    assert_eq!(status.kind.as_deref(), Some("RefreshToken"));
    assert!(status.active);
    let revoked = post_form(
        idp,
        "/token/revocation",
        &client,
        &[("token", &refresh), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert!(!idp.token_status(&refresh).await.expect("status").active);
    // Revoking the refresh token revokes its grant's access tokens too.
    assert!(!idp.token_status(access).await.expect("status").active);
    let log = idp.revocations().await.expect("revocations");
    let entry = log
        .iter()
        .find(|r| r.token.as_deref() == Some(refresh.as_str()))
        .expect("the revocation is logged");
    assert_eq!(entry.client_id.as_deref(), Some(client.client_id.as_str()));
    assert_eq!(entry.kind.as_deref(), Some("RefreshToken"));
    assert_eq!(entry.status, 200);
}

#[tokio::test]
async fn an_outage_drops_connections_then_service_resumes() {
    let idp = TestIdp::start().expect("a dedicated IdP");
    let discovery = format!("{}/.well-known/openid-configuration", idp.issuer);
    idp.outage(Duration::from_secs(30)).await.expect("outage");
    let failed = reqwest::Client::new().get(&discovery).send().await;
    let error = failed.expect_err("no answer during the outage");
    assert!(error.status().is_none(), "{error:?}");
    // The hooks still answer, and the outage can end early.
    idp.end_outage().await.expect("end the outage");
    let ok = reqwest::Client::new()
        .get(&discovery)
        .send()
        .await
        .expect("served again");
    assert_eq!(ok.status(), 200);

    idp.outage(Duration::from_millis(300))
        .await
        .expect("outage");
    assert!(reqwest::Client::new().get(&discovery).send().await.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ok = reqwest::Client::new()
        .get(&discovery)
        .send()
        .await
        .expect("served again once the outage is over");
    assert_eq!(ok.status(), 200);
    // Dropped requests are not counted in the stats.
    assert_eq!(
        idp.stats()
            .await
            .expect("stats")
            .count("GET /.well-known/openid-configuration"),
        2
    );
}

/// A notification as the https receiver got it.
#[derive(Debug, Clone)]
struct Received {
    authorization: Option<String>,
    body: Value,
}

type Inbox = Mutex<Vec<Received>>;

/// An https notification endpoint with the test PKI's server certificate.
struct HttpsReceiver {
    url: String,
    received: Arc<Inbox>,
    handle: actix_web::dev::ServerHandle,
}

impl HttpsReceiver {
    fn start() -> anyhow::Result<Self> {
        let pki = TestPki::shared();
        let tls = ciba_proxy::tls::server_config(&TlsSettings {
            certificate: pki.server.cert_path.clone(),
            private_key: pki.server.key_path.clone(),
        })?;
        let received: Arc<Inbox> = Arc::default();
        let data = web::Data::from(received.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/ping", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, tls)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            url: format!("https://127.0.0.1:{port}/ping"),
            received,
            handle,
        })
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.received.lock().expect("lock").clone();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, received: web::Data<Inbox>) -> HttpResponse {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    received.lock().expect("lock").push(Received {
        authorization,
        body,
    });
    HttpResponse::NoContent().finish()
}

#[tokio::test]
async fn a_ping_client_is_pinged_over_https_when_approved() {
    let receiver = HttpsReceiver::start().expect("an https receiver");
    let idp = TestIdp::shared();
    let client = idp
        .register_ciba_client("ping", Some(&receiver.url))
        .await
        .expect("register a ping client");
    let notification_token = "b1d2c3-notify";

    // A ping client must send a client_notification_token.
    let missing = backchannel(
        idp,
        &client,
        &[("login_hint", "alice"), ("scope", "openid")],
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"], json!("invalid_request"));

    let id = start(
        idp,
        &client,
        &[
            ("login_hint", "alice"),
            ("scope", "openid"),
            ("client_notification_token", notification_token),
        ],
    )
    .await;
    let request = idp
        .wait_ciba_request(|r| r.id == id, WAIT)
        .await
        .expect("the device sees the request");
    assert_eq!(
        request.client_notification_token.as_deref(),
        Some(notification_token)
    );
    assert!(
        receiver.received.lock().expect("lock").is_empty(),
        "no ping before the user acts"
    );

    let approval = idp.approve(&id).await.expect("approve");
    assert_eq!(approval.ping_error, None);
    let pings = receiver.wait_for(1).await;
    assert_eq!(pings.len(), 1);
    assert_eq!(
        pings[0].authorization.as_deref(),
        Some(format!("Bearer {notification_token}").as_str())
    );
    assert_eq!(pings[0].body, json!({ "auth_req_id": id }));

    let attempted = idp.pings().await.expect("pings");
    let ping = attempted
        .iter()
        .find(|p| p.body["auth_req_id"] == json!(id))
        .expect("the IdP logged its ping");
    assert_eq!(ping.url, receiver.url);
    assert_eq!(ping.status, Some(204));
    assert_eq!(ping.error, None);

    let tokens = token(idp, &client, &id).await;
    assert_eq!(tokens.status, 200, "{:?}", tokens.body);
    assert_eq!(
        claims(tokens.body["id_token"].as_str().expect("id_token"))["sub"],
        json!("alice")
    );
}

#[tokio::test]
async fn a_failed_ping_is_reported_by_the_approve_hook() {
    // Nothing listens there: the approval sticks, the ping fails.
    let idp = TestIdp::shared();
    let client = idp
        .register_ciba_client("ping", Some("https://127.0.0.1:9/ping"))
        .await
        .expect("register a ping client");
    let id = start(
        idp,
        &client,
        &[
            ("login_hint", "alice"),
            ("scope", "openid"),
            ("client_notification_token", "tok"),
        ],
    )
    .await;
    let approval = idp.approve(&id).await.expect("approve");
    assert!(approval.ping_error.is_some(), "{approval:?}");
    let ping = idp
        .pings()
        .await
        .expect("pings")
        .into_iter()
        .find(|p| p.body["auth_req_id"] == json!(id))
        .expect("the IdP logged its ping");
    assert_eq!(ping.status, None);
    assert!(ping.error.is_some());
    assert_eq!(token(idp, &client, &id).await.status, 200);
}
