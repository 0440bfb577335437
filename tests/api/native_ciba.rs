//! `upstream.kind = "ciba"`: the proxy forwards the client's checked
//! request to the IdP's own CIBA endpoint (oidc-provider's CIBA feature) and
//! alone talks to the IdP from then on. Clients poll the proxy; the IdP
//! sees one backchannel request and a bounded number of token calls.
use std::time::Duration;

use ciba_proxy_e2e::app::{ClientSpec, StoreKind, TestApp};
use ciba_proxy_e2e::device::{form_field, Action};
use ciba_proxy_e2e::idp::{CibaRequest, TestIdp};
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// A client that may ask for a refresh token.
fn offline_client() -> ClientSpec {
    ClientSpec {
        scope: "openid profile email offline_access".into(),
        ..ClientSpec::basic("shop")
    }
}

/// An IdP of the test's own, so its counters and outages are the test's.
fn own_idp() -> &'static TestIdp {
    Box::leak(Box::new(TestIdp::start().expect("start a test IdP")))
}

/// A proxy in front of an IdP of its own, with native CIBA in `delivery`
/// (ping runs the proxy on https: the IdP pings only https endpoints).
async fn app_with_own_idp(delivery: &'static str, store: StoreKind) -> TestApp {
    let mut builder = TestApp::builder()
        .idp(own_idp())
        .store(store)
        .ciba_upstream(delivery);
    if delivery == "ping" {
        builder = builder.https();
    }
    builder.spawn().await
}

async fn idp_request(app: &TestApp) -> CibaRequest {
    app.idp
        .wait_ciba_request_of(&app.upstream_clients[0], WAIT)
        .await
        .expect("the request reached the IdP")
}

/// Polls (at the client interval) until the answer is not pending.
async fn poll_until_decided(app: &TestApp, id: &str) -> ciba_proxy_e2e::app::Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = app.poll("shop", id).await;
        let waiting = matches!(reply.error(), "authorization_pending" | "slow_down");
        if !waiting || tokio::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

/// Waits (up to 30 s) until the IdP has answered `n` token calls in all;
/// the count.
async fn wait_for_token_calls(idp: &TestIdp, n: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let count = idp.stats().await.unwrap().count("POST /token");
        if count >= n {
            return count;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} token calls, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the proxy makes no more token calls: none in more than two
/// upstream intervals (oidc-provider sends none, so CIBA's 5 s).
async fn assert_polling_stopped(idp: &TestIdp) {
    let before = idp.stats().await.unwrap().count("POST /token");
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = idp.stats().await.unwrap().count("POST /token");
    assert_eq!(after, before, "the proxy kept asking the IdP");
}

/// Opens a request that lives `secs` at the proxy and at the IdP.
async fn start_expiring_in(app: &TestApp, secs: u64) -> String {
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("requested_expiry", &secs.to_string()),
            ],
        )
        .await;
    assert_eq!(reply.body["expires_in"], secs, "{reply:?}");
    reply.body["auth_req_id"].as_str().unwrap().to_owned()
}

fn id_token_claims(reply: &ciba_proxy_e2e::app::Reply) -> serde_json::Value {
    use base64::Engine;
    let token = reply.body["id_token"].as_str().expect("an id_token");
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn a_poll_upstream_login_completes_and_the_idp_never_sees_the_clients_id() {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .clients(vec![offline_client()])
        .ciba_upstream("poll")
        .spawn()
        .await;
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid profile offline_access"),
                ("login_hint", "alice"),
                ("binding_message", "W4SCT"),
                ("acr_values", "urn:test:loa:2"),
                ("requested_expiry", "100"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let id = reply.body["auth_req_id"].as_str().unwrap().to_owned();
    // The IdP grants 600 s at most; ours (100 s) is the shorter.
    assert_eq!(reply.body["expires_in"], 100);

    // What the IdP received: the client's parameters, forwarded as sent.
    let forwarded = idp_request(&app).await;
    assert_eq!(forwarded.login_hint.as_deref(), Some("alice"));
    assert_eq!(forwarded.binding_message.as_deref(), Some("W4SCT"));
    assert_eq!(forwarded.acr_values.as_deref(), Some("urn:test:loa:2"));
    assert_eq!(forwarded.requested_expiry, Some(100));
    let scope = forwarded.scope.clone().unwrap_or_default();
    for s in ["openid", "profile", "offline_access"] {
        assert!(scope.split(' ').any(|t| t == s), "{scope}");
    }
    assert_ne!(forwarded.id, id, "the IdP's id never leaves the proxy");

    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");
    app.idp.approve(&forwarded.id).await.unwrap();
    let tokens = poll_until_decided(&app, &id).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
    assert!(tokens.body["access_token"].as_str().is_some());
    assert!(tokens.body["refresh_token"].as_str().is_some());
    assert_eq!(id_token_claims(&tokens)["preferred_username"], "alice");
    assert!(!tokens.body.to_string().contains(&forwarded.id));
    // Handed out once.
    app.poll("shop", &id)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn our_expires_in_is_capped_at_the_idps() {
    // We would allow 900 s; oidc-provider keeps a request 600 s at most.
    let app = TestApp::builder()
        .ciba(300, 1000, 5)
        .ciba_upstream("poll")
        .spawn()
        .await;
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("requested_expiry", "900"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["expires_in"], 600);
    assert_eq!(idp_request(&app).await.requested_expiry, Some(900));
}

#[tokio::test]
async fn id_token_hint_and_login_hint_token_are_forwarded_as_sent() {
    use crate::hints::{trusted_issuer, HINT_ISSUER};
    use ciba_proxy_e2e::app::now_secs;
    use ciba_proxy_e2e::keys::CLIENT_ES256;
    let idp = own_idp();
    let app = TestApp::builder()
        .idp(idp)
        .ciba_upstream("poll")
        .sections(&trusted_issuer())
        .spawn()
        .await;
    // An ID token this IdP issued to the client's upstream registration.
    let id = app.start("shop", "alice").await;
    idp.approve(&idp_request(&app).await.id).await.unwrap();
    let tokens = poll_until_decided(&app, &id).await;
    let id_token = tokens.body["id_token"].as_str().expect("an id_token");

    let by_id_token = app
        .bc_authorize("shop", &[("scope", "openid"), ("id_token_hint", id_token)])
        .await;
    assert_eq!(by_id_token.status, 200, "{by_id_token:?}");
    let forwarded = idp_request(&app).await;
    assert_eq!(forwarded.id_token_hint.as_deref(), Some(id_token));
    assert_eq!(forwarded.login_hint, None);
    assert_eq!(forwarded.account, "alice");

    let token =
        CLIENT_ES256.sign(&json!({"iss": HINT_ISSUER, "sub": "bob", "exp": now_secs() + 300}));
    let by_token = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint_token", &token)])
        .await;
    assert_eq!(by_token.status, 200, "{by_token:?}");
    let forwarded = app
        .idp
        .wait_ciba_request(|r| r.account == "bob", WAIT)
        .await
        .unwrap();
    assert_eq!(forwarded.login_hint_token.as_deref(), Some(token.as_str()));
    assert_eq!(forwarded.login_hint, None);
}

#[tokio::test]
async fn with_an_external_channel_the_user_gets_the_approval_link_and_approve_leads_to_auth_url() {
    // WSO2 IS: notification_channel=external makes the IdP answer with an
    // auth_url the caller must bring to the user.
    let app = TestApp::builder()
        .ciba_upstream("poll")
        .upstream_toml("backchannel_params = { notification_channel = \"external\" }")
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    assert_eq!(forwarded.form["notification_channel"], "external");
    // oidc-provider's ids are URL-safe: the test IdP's auth_url shows them as they are.
    let auth_url = format!("{}/_test/ciba/auth/{}", app.idp.issuer, forwarded.id);

    let notification = app.device.wait_for_notification("alice").await;
    let approval = notification.approval_url().to_owned();
    assert!(approval.starts_with(&app.url("/approve/")), "{approval}");
    assert_eq!(notification.authorization_url(), auth_url);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let html = http
        .get(&approval)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = form_field(&html, "csrf").expect("the page's csrf field");
    let approved = http
        .post(format!("{approval}/approve"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        approved.headers()["location"].to_str().unwrap(),
        auth_url.as_str()
    );
}

#[tokio::test]
async fn without_an_auth_url_from_the_idp_the_user_is_not_notified() {
    let app = TestApp::builder().ciba_upstream("poll").spawn().await;
    app.device.on("alice", Action::Ignore);
    app.start("shop", "alice").await;
    assert!(!idp_request(&app)
        .await
        .form
        .contains_key("notification_channel"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(app.device.notifications().is_empty());
}

#[tokio::test]
async fn a_ping_upstream_login_completes_on_the_idps_ping_with_one_token_call() {
    let app = app_with_own_idp("ping", StoreKind::Memory).await;
    let idp = app.idp;
    let id = app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    let bearer = forwarded
        .client_notification_token
        .clone()
        .expect("a client_notification_token for ping delivery");
    assert!(bearer.len() >= 32, "{bearer}");

    let approval = idp.approve(&forwarded.id).await.unwrap();
    assert_eq!(approval.ping_error, None, "the IdP's ping was accepted");
    let tokens = poll_until_decided(&app, &id).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
    let stats = idp.stats().await.unwrap();
    assert_eq!(stats.count("POST /backchannel"), 1);
    assert_eq!(stats.count("POST /token"), 1, "{stats:?}");
    let pings = idp.pings().await.unwrap();
    assert_eq!(pings.len(), 1, "{pings:?}");
    assert_eq!(
        pings[0].authorization.as_deref(),
        Some(format!("Bearer {bearer}").as_str())
    );
}

#[tokio::test]
async fn a_denial_at_the_idp_reaches_the_client_as_access_denied() {
    let app = TestApp::builder().ciba_upstream("poll").spawn().await;
    let id = app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    app.idp.deny(&forwarded.id).await.unwrap();
    let reply = poll_until_decided(&app, &id).await;
    reply.assert_error(400, "access_denied");
    assert!(
        reply.body["error_description"]
            .as_str()
            .unwrap()
            .contains("declined"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn an_unanswered_request_expires_no_later_than_at_the_idp() {
    let idp = own_idp();
    let app = TestApp::builder()
        .idp(idp)
        .ciba_upstream("poll")
        .spawn()
        .await;
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("requested_expiry", "2"),
            ],
        )
        .await;
    assert_eq!(reply.body["expires_in"], 2, "{reply:?}");
    let id = reply.body["auth_req_id"].as_str().unwrap();
    let forwarded = idp_request(&app).await;
    assert_eq!(forwarded.requested_expiry, Some(2));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.poll("shop", id)
        .await
        .assert_error(400, "expired_token");
    assert_polling_stopped(idp).await;
}

#[tokio::test]
async fn a_ping_after_the_last_fallback_check_still_completes_the_login() {
    // The fallback check at 6 s is the last regular one of a 10 s request:
    // the next would come after expiry. The approval comes after it.
    let idp = own_idp();
    let app = TestApp::builder()
        .idp(idp)
        .ciba_upstream("ping")
        .https()
        .upstream_toml("ping_fallback_secs = 6")
        .spawn()
        .await;
    let id = start_expiring_in(&app, 10).await;
    let forwarded = idp_request(&app).await;
    wait_for_token_calls(idp, 1).await;
    let approval = idp.approve(&forwarded.id).await.unwrap();
    assert_eq!(approval.ping_error, None, "the IdP's ping was accepted");
    let tokens = poll_until_decided(&app, &id).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
}

/// Ping delivery, a 10 s request: fallback check at 6 s, the last check at
/// 8 s (a client interval and a second before expiry); the user approves
/// after that, and the IdP's ping alone can bring the outcome in.
async fn approve_after_the_last_check(store: StoreKind) -> ciba_proxy_e2e::app::Reply {
    let idp = own_idp();
    let app = TestApp::builder()
        .idp(idp)
        .store(store)
        .ciba_upstream("ping")
        .https()
        .upstream_toml("ping_fallback_secs = 6")
        .spawn()
        .await;
    let started = tokio::time::Instant::now();
    let id = start_expiring_in(&app, 10).await;
    let forwarded = idp_request(&app).await;
    // The fallback check at 6 s and the last one about 8 s in; on a loaded
    // machine the fallback can run so late that it is the last, so wait
    // for both, or at most until the last one is due.
    let last_check_due = started + Duration::from_millis(8_600);
    while idp.stats().await.unwrap().count("POST /token") < 2
        && tokio::time::Instant::now() < last_check_due
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let approval = idp.approve(&forwarded.id).await.unwrap();
    assert_eq!(approval.ping_error, None, "the IdP's ping was accepted");
    poll_until_decided(&app, &id).await
}

#[tokio::test]
async fn a_ping_after_the_last_check_before_expiry_still_completes_the_login() {
    let (memory, redis) = tokio::join!(
        approve_after_the_last_check(StoreKind::Memory),
        approve_after_the_last_check(StoreKind::Redis)
    );
    assert_eq!(memory.status, StatusCode::OK, "memory store: {memory:?}");
    assert_eq!(redis.status, StatusCode::OK, "redis store: {redis:?}");
}

#[tokio::test]
async fn an_approval_after_the_last_regular_poll_is_still_collected() {
    // Upstream checks every 5 s: the one at 5 s is the last regular one of
    // a 9 s request; one more comes a client interval (1 s here) and a
    // second before expiry.
    let idp = own_idp();
    let app = TestApp::builder()
        .idp(idp)
        .ciba_upstream("poll")
        .spawn()
        .await;
    let id = start_expiring_in(&app, 9).await;
    let forwarded = idp_request(&app).await;
    wait_for_token_calls(idp, 1).await;
    idp.approve(&forwarded.id).await.unwrap();
    let tokens = poll_until_decided(&app, &id).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 2);
}

#[tokio::test]
async fn the_idps_refusals_reach_the_client_with_their_ciba_codes() {
    let app = TestApp::builder().ciba_upstream("poll").spawn().await;
    let unknown = app
        .bc_authorize(
            "shop",
            &[("scope", "openid"), ("login_hint", "unknown-carol")],
        )
        .await;
    unknown.assert_error(400, "unknown_user_id");
    // Our rules allow spaces; this IdP's binding_message rule does not.
    let binding = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("binding_message", "pay 10 EUR"),
            ],
        )
        .await;
    binding.assert_error(400, "invalid_binding_message");
    // The test IdP refuses these accounts (CIBA Core §13).
    let denied = app
        .bc_authorize(
            "shop",
            &[("scope", "openid"), ("login_hint", "denied-dave")],
        )
        .await;
    denied.assert_error(403, "access_denied");
    assert!(
        denied.body["error_description"]
            .as_str()
            .unwrap()
            .contains("may not sign in here"),
        "{denied:?}"
    );
    let scope = app
        .bc_authorize(
            "shop",
            &[("scope", "openid"), ("login_hint", "badscope-erin")],
        )
        .await;
    scope.assert_error(400, "invalid_scope");
}

#[tokio::test]
async fn an_idp_that_refuses_our_client_is_503_and_the_log_names_the_key_to_fix() {
    let (app, proxy) = TestApp::builder()
        .ciba_upstream("poll")
        .spawn_process(&[])
        .await;
    let reply = app
        .bc_authorize(
            "shop",
            &[("scope", "openid"), ("login_hint", "unauthorized-frank")],
        )
        .await;
    reply.assert_error(503, "temporarily_unavailable");
    let logs = proxy.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("clients.upstream_client_id") && l.contains("unauthorized_client")),
        "{logs}"
    );
    assert!(
        !logs.contains("unauthorized-frank"),
        "the login hint is logged"
    );
}

#[tokio::test]
async fn an_unreachable_idp_at_bc_authorize_is_503_and_leaves_nothing_behind() {
    let idp = own_idp();
    let app = TestApp::builder()
        .idp(idp)
        .ciba_upstream("poll")
        .sections("[limits]\npending_per_user = 1\n")
        .spawn()
        .await;
    // Load the metadata first, so the outage hits the backchannel call.
    assert_eq!(app.get("/readyz").await.status, 200);
    idp.outage(Duration::from_secs(60)).await.unwrap();
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    reply.assert_error(503, "temporarily_unavailable");
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    idp.end_outage().await.unwrap();
    // The user's only pending slot was given back: a new request is accepted.
    let again = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    assert_eq!(again.status, 200, "{again:?}");
}

#[tokio::test]
async fn an_idp_outage_while_polling_delays_the_login_but_does_not_lose_it() {
    let app = app_with_own_idp("poll", StoreKind::Memory).await;
    let idp = app.idp;
    let id = app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    idp.outage(Duration::from_secs(7)).await.unwrap();
    // The user approves while the proxy cannot reach the IdP.
    idp.approve(&forwarded.id).await.unwrap();
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");
    let tokens = poll_until_decided(&app, &id).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
    assert_polling_stopped(idp).await;
}

#[tokio::test]
async fn a_different_person_approving_ends_the_request_and_their_tokens_are_revoked() {
    let idp = own_idp();
    let app = TestApp::builder()
        .idp(idp)
        .ciba_upstream("poll")
        .clients(vec![offline_client()])
        .upstream_toml("subject_check = true\nsubject_claim = \"preferred_username\"")
        .spawn()
        .await;
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid profile offline_access"),
                ("login_hint", "alice"),
            ],
        )
        .await;
    let id = reply.body["auth_req_id"].as_str().unwrap().to_owned();
    let forwarded = idp_request(&app).await;
    idp.approve_as(&forwarded.id, "mallory").await.unwrap();
    let reply = poll_until_decided(&app, &id).await;
    reply.assert_error(400, "access_denied");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("different user"));
    // The discarded tokens (a refresh token among them) were revoked.
    let revoked = idp.revocations().await.unwrap();
    assert!(
        revoked
            .iter()
            .any(|r| r.token_type_hint.as_deref() == Some("refresh_token") && r.status == 200),
        "{revoked:?}"
    );
    for r in &revoked {
        let token = r.token.as_deref().unwrap();
        assert!(!idp.token_status(token).await.unwrap().active);
    }
}

#[tokio::test]
async fn without_the_subject_check_the_idps_resolution_of_the_hint_is_trusted() {
    // The default for this kind: the IdP resolved the user from the hint.
    // The check would fail on a claim the ID token lacks, were it on.
    let app = TestApp::builder()
        .ciba_upstream("poll")
        .upstream_toml("subject_claim = \"employee_number\"")
        .spawn()
        .await;
    let id = app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    app.idp.approve(&forwarded.id).await.unwrap();
    assert_eq!(poll_until_decided(&app, &id).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_request_the_idp_no_longer_knows_ends_with_a_clear_description() {
    // Glewlwyd-style: a newer request for the same user disables this one,
    // whose id then answers invalid_grant.
    let app = TestApp::builder().ciba_upstream("poll").spawn().await;
    let id = app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    app.idp
        .deny_with(&forwarded.id, "invalid_grant", "request disabled")
        .await
        .unwrap();
    let reply = poll_until_decided(&app, &id).await;
    reply.assert_error(400, "access_denied");
    assert!(
        reply.body["error_description"]
            .as_str()
            .unwrap()
            .contains("newer request"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn an_id_token_naming_another_request_ends_the_request() {
    // CIBA Core §10.1.1: the auth_req_id claim, when present, must be ours.
    const CLAIM: &str = "urn:openid:params:jwt:claim:auth_req_id";
    let app = TestApp::builder().ciba_upstream("poll").spawn().await;
    let theirs = app.start("shop", "alice").await;
    let theirs_at_idp = idp_request(&app).await;
    let ours = app.start("shop", "bob").await;
    let ours_at_idp = app
        .idp
        .wait_ciba_request(|r| r.account == "bob", WAIT)
        .await
        .unwrap();
    app.idp
        .approve_with(
            &theirs_at_idp.id,
            json!({ "id_token_claims": { CLAIM: "another-request" } }),
        )
        .await
        .unwrap();
    app.idp
        .approve_with(
            &ours_at_idp.id,
            json!({ "id_token_claims": { CLAIM: "$auth_req_id" } }),
        )
        .await
        .unwrap();
    let mismatch = poll_until_decided(&app, &theirs).await;
    mismatch.assert_error(400, "access_denied");
    let matching = poll_until_decided(&app, &ours).await;
    assert_eq!(matching.status, StatusCode::OK, "{matching:?}");
    assert_eq!(id_token_claims(&matching)[CLAIM], ours_at_idp.id.as_str());
}

#[tokio::test]
async fn after_the_idps_slow_down_the_next_token_call_comes_five_seconds_later() {
    let idp = own_idp();
    let app = TestApp::builder()
        .idp(idp)
        .ciba_upstream("poll")
        .spawn()
        .await;
    let id = app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    idp.slow_down(&forwarded.id, 1).await.unwrap();
    wait_for_token_calls(idp, 2).await;
    let stats = idp.stats().await.unwrap();
    assert_eq!(stats.token_calls[0].error.as_deref(), Some("slow_down"));
    let calls = stats.token_calls_for(&forwarded.id);
    // CIBA Core §11: the interval (5 s here) grows by 5 s.
    assert!(calls[1] - calls[0] >= 10_000, "{calls:?}");
    // The client never sees the IdP's slow_down.
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");
}

#[tokio::test]
async fn the_login_hint_template_reshapes_the_forwarded_hint() {
    let app = TestApp::builder()
        .ciba_upstream("poll")
        .upstream_toml("login_hint_template = '{\"username\":\"{login_hint}\"}'")
        .spawn()
        .await;
    let id = app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    assert_eq!(
        forwarded.login_hint.as_deref(),
        Some(r#"{"username":"alice"}"#)
    );
    assert_eq!(forwarded.account, "alice");
    app.idp.approve(&forwarded.id).await.unwrap();
    assert_eq!(poll_until_decided(&app, &id).await.status, StatusCode::OK);
}

#[tokio::test]
async fn forged_or_replayed_upstream_pings_change_nothing() {
    let app = app_with_own_idp("ping", StoreKind::Memory).await;
    let idp = app.idp;
    let id = app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    let bearer = forwarded.client_notification_token.clone().unwrap();
    let ping = |token: Option<String>, body: serde_json::Value| {
        let mut request = app.http.post(app.url("/upstream/ping")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    };
    let body = serde_json::json!({ "auth_req_id": forwarded.id });

    let none = ping(None, body.clone()).await;
    assert_eq!(none.status(), 401);
    assert!(none.headers().get("www-authenticate").is_some());
    assert_eq!(
        ping(Some("forged".into()), body.clone()).await.status(),
        401
    );
    // A token of the right shape, made by someone without the proxy's key.
    let mut tampered = bearer.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(ping(Some(tampered), body.clone()).await.status(), 401);
    let wrong_id = serde_json::json!({ "auth_req_id": "another" });
    assert_eq!(ping(Some(bearer.clone()), wrong_id).await.status(), 400);
    assert_eq!(
        ping(Some(bearer.clone()), serde_json::json!({}))
            .await
            .status(),
        400
    );
    // None of them made the proxy ask the IdP.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 0);
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");

    idp.approve(&forwarded.id).await.unwrap();
    assert_eq!(poll_until_decided(&app, &id).await.status, StatusCode::OK);
    // Replaying the genuine ping after the outcome: accepted, and nothing more happens.
    assert_eq!(ping(Some(bearer), body).await.status(), 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
}

/// The IdP's load for one login: one backchannel request, and token calls
/// bounded by the upstream interval however often the client polls.
async fn idp_load_for_one_login(delivery: &'static str) -> (u64, u64) {
    let app = app_with_own_idp(delivery, StoreKind::Redis).await;
    let idp = app.idp;
    let id = app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    // The client polls 50 times during a 10 s approval.
    let approve_at = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut approved = false;
    let mut tokens = None;
    for _ in 0..50 {
        if !approved && tokio::time::Instant::now() >= approve_at {
            idp.approve(&forwarded.id).await.unwrap();
            approved = true;
        }
        let reply = app.poll("shop", &id).await;
        if reply.status == StatusCode::OK {
            tokens = Some(reply);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !approved {
        idp.approve(&forwarded.id).await.unwrap();
    }
    if tokens.is_none() {
        tokens = Some(poll_until_decided(&app, &id).await);
    }
    assert_eq!(tokens.unwrap().status, StatusCode::OK);
    let stats = idp.stats().await.unwrap();
    (stats.count("POST /backchannel"), stats.count("POST /token"))
}

#[tokio::test]
async fn fifty_client_polls_cost_the_idp_a_bounded_number_of_token_calls() {
    let (backchannel, token_calls) = idp_load_for_one_login("poll").await;
    assert_eq!(backchannel, 1);
    // oidc-provider sends no interval, so the proxy uses CIBA's 5 s:
    // at most ceil(10 / 5) + 1 token calls for a 10 s approval.
    assert!((1..=3).contains(&token_calls), "{token_calls} token calls");
}

#[tokio::test]
async fn in_ping_delivery_one_login_costs_the_idp_exactly_one_token_call() {
    let (backchannel, token_calls) = idp_load_for_one_login("ping").await;
    assert_eq!(backchannel, 1);
    assert_eq!(token_calls, 1);
}

#[tokio::test]
async fn a_killed_instance_holding_the_upstream_lease_does_not_strand_the_login() {
    let idp = own_idp();
    let mut cluster = TestApp::builder()
        .idp(idp)
        .store(StoreKind::Redis)
        .ciba_upstream("poll")
        .lease_ms(1500)
        .spawn_cluster_with_env(3, &[("RUST_LOG", "info,ciba_proxy::flow=debug")])
        .await;
    let id = cluster.app.start("shop", "alice").await;
    let forwarded = idp_request(&cluster.app).await;
    // Wait for the first upstream check, and kill the instance that made it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let asker = loop {
        let found = cluster
            .processes
            .iter()
            .position(|p| p.logs().contains("asking the identity provider"));
        if let Some(i) = found {
            break i;
        }
        assert!(tokio::time::Instant::now() < deadline, "no upstream check");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.processes[asker].kill();
    idp.approve(&forwarded.id).await.unwrap();
    // The balancer skips the dead instance; another one finishes the login.
    let tokens = poll_until_decided(&cluster.app, &id).await;
    assert_eq!(tokens.status, StatusCode::OK, "{tokens:?}");
    let others: Vec<_> = (0..3).filter(|i| *i != asker).collect();
    assert!(others.iter().any(|i| cluster.processes[*i]
        .logs()
        .contains("asking the identity provider")));
    // One call by the killed instance, one by the instance that took over.
    let token_calls = idp.stats().await.unwrap().count("POST /token");
    assert!((1..=2).contains(&token_calls), "{token_calls} token calls");
}

#[tokio::test]
async fn clients_of_a_ciba_upstream_may_be_ping_clients_too() {
    use ciba_proxy_e2e::ping_receiver::{PingReceiver, Reply};
    let receiver = PingReceiver::start(vec![Reply::Status(204)]).await.unwrap();
    let app = TestApp::builder()
        .ciba_upstream("poll")
        .clients(vec![ClientSpec::basic("shop").ping(&receiver.url())])
        .spawn()
        .await;
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("client_notification_token", "client-token-1"),
            ],
        )
        .await;
    let id = reply.body["auth_req_id"].as_str().unwrap().to_owned();
    let forwarded = idp_request(&app).await;
    app.idp.approve(&forwarded.id).await.unwrap();
    let pings = receiver.wait_for(1, WAIT).await;
    assert_eq!(pings[0].body["auth_req_id"], id.as_str());
    assert_eq!(
        pings[0].authorization.as_deref(),
        Some("Bearer client-token-1")
    );
    assert_eq!(app.poll("shop", &id).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_discovery_document_missing_at_the_configured_place_names_the_key_to_fix() {
    let idp = TestIdp::shared();
    let (app, proxy) = TestApp::builder()
        .ciba_upstream("poll")
        .upstream_toml(&format!(
            "discovery_url = \"{}/no-such-discovery\"",
            idp.issuer
        ))
        .spawn_process_unready(&[])
        .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    let why = ready.body["upstream_error"].as_str().unwrap_or_default();
    assert!(why.contains("upstream.discovery_url"), "{why}");
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    reply.assert_error(503, "temporarily_unavailable");
    // Every retry says so in the log, naming the key.
    app.get("/readyz").await;
    let logs = proxy.logs();
    let named = logs
        .lines()
        .filter(|l| l.contains("upstream configuration error: upstream.discovery_url"))
        .count();
    assert!(named >= 3, "{logs}");
}

#[tokio::test]
async fn an_issuer_that_differs_from_the_discovered_one_is_a_configuration_error() {
    let idp = TestIdp::shared();
    // The same IdP under another name: its document names 127.0.0.1.
    let localhost = idp.issuer.replace("127.0.0.1", "localhost");
    let (app, proxy) = TestApp::builder()
        .upstream_toml(&format!(
            "discovery_url = \"{}/.well-known/openid-configuration\"",
            idp.issuer
        ))
        .spawn_process_unready(&[("CIBA_PROXY__UPSTREAM__ISSUER", localhost.as_str())])
        .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    let why = ready.body["upstream_error"].as_str().unwrap_or_default();
    assert!(why.contains("upstream.issuer"), "{why}");
    assert!(proxy
        .logs()
        .contains("upstream configuration error: upstream.issuer"));
}

/// A discovery document without CIBA: a stand-in for an IdP whose CIBA is
/// switched off.
fn discovery_without_ciba(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::{web, HttpRequest, HttpResponse};
    cfg.route(
        "/.well-known/openid-configuration",
        web::get().to(|req: HttpRequest| async move {
            let issuer = format!("http://{}", req.connection_info().host());
            HttpResponse::Ok().json(serde_json::json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
            }))
        }),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ciba_kind_in_front_of_an_idp_without_ciba_stops_at_startup() {
    use ciba_proxy_e2e::server::TestServer;
    let idp = TestServer::start(std::sync::Arc::new(()), discovery_without_ciba).unwrap();
    let toml = format!(
        r#"
[server]
bind = "127.0.0.1:0"
issuer = "http://127.0.0.1:8080"
[ciba]
token_encryption_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
[upstream]
kind = "ciba"
issuer = "http://127.0.0.1:{port}"
[[clients]]
client_id = "shop"
client_secret = "shop-secret"
token_endpoint_auth_method = "client_secret_basic"
scope = "openid"
"#,
        port = idp.port
    );
    let path = std::env::temp_dir().join(format!("ciba-kind-{}.toml", rand::random::<u64>()));
    std::fs::write(&path, toml).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(ciba_proxy_e2e::app::binary_path())
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("upstream.kind") && last.contains("backchannel_authentication_endpoint"),
        "{stderr}"
    );
}

#[tokio::test]
async fn pings_in_a_burst_cost_the_idp_one_token_call_per_interval() {
    // The lease in the store, not the schedule, is what bounds token calls:
    // every valid ping makes the request's check due at once.
    let app = app_with_own_idp("ping", StoreKind::Redis).await;
    let idp = app.idp;
    app.start("shop", "alice").await;
    let forwarded = idp_request(&app).await;
    let bearer = forwarded.client_notification_token.clone().unwrap();
    for _ in 0..5 {
        let pinged = app
            .http
            .post(app.url("/upstream/ping"))
            .bearer_auth(&bearer)
            .json(&serde_json::json!({ "auth_req_id": forwarded.id }))
            .send()
            .await
            .unwrap();
        assert_eq!(pinged.status(), 204);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // oidc-provider sends no interval: 5 s, longer than the burst.
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
}
