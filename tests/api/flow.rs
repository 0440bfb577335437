//! Whole logins: client → proxy → webhook → device → IdP → callback → poll.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ciba_proxy_e2e::app::{redis_url, ClientSpec, StoreKind, TestApp};
use ciba_proxy_e2e::device::{sign_in, Action};
use ciba_proxy_e2e::idp::TestIdp;
use serde_json::Value;

fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn dedicated_idp() -> &'static TestIdp {
    Box::leak(Box::new(TestIdp::start().expect("start a dedicated IdP")))
}

async fn happy_path(store: StoreKind) {
    let app = TestApp::builder().store(store).spawn().await;
    let id = app.start("shop", "alice").await;

    let page = app.device.wait_for_page("alice").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("You are signed in"), "{}", page.body);

    let reply = app.poll("shop", &id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.body["token_type"], "Bearer");
    let access_token = reply.body["access_token"].as_str().unwrap();
    let expires_in = reply.body["expires_in"].as_u64().unwrap();
    assert!(expires_in > 0 && expires_in <= 300, "{expires_in}");
    let id_token = reply.body["id_token"].as_str().unwrap();
    let claims = jwt_claims(id_token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], app.idp.issuer);
    // The device's page never shows a token.
    assert!(!page.body.contains(access_token) && !page.body.contains(id_token));

    // The access token works at the IdP: it is the IdP's own.
    let me = reqwest::Client::new()
        .get(format!("{}/me", app.idp.issuer))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    // Handed out exactly once.
    app.poll("shop", &id)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn full_flow_delivers_tokens_once_with_the_memory_store() {
    happy_path(StoreKind::Memory).await;
}

#[tokio::test]
async fn full_flow_delivers_tokens_once_with_redis() {
    happy_path(StoreKind::Redis).await;
}

#[tokio::test]
async fn poll_is_pending_until_the_user_acts() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    app.device.wait_for_notification("alice").await;
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");
}

#[tokio::test]
async fn user_who_cancels_gets_access_denied_for_the_client() {
    let app = TestApp::builder().store(StoreKind::Redis).spawn().await;
    app.device.on("alice", Action::Cancel);
    let id = app.start("shop", "alice").await;
    let page = app.device.wait_for_page("alice").await;
    assert!(page.body.contains("declined"), "{}", page.body);
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("declined"));
}

#[tokio::test]
async fn signing_in_as_someone_else_denies_the_request_and_discards_tokens() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::SignInAs("mallory".into()));
    let id = app.start("shop", "alice").await;
    let page = app.device.wait_for_page("alice").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("different account"), "{}", page.body);
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("different user"));
    // The discarded access token was revoked at the IdP (RFC 7009).
    let ours = &app.upstream_clients[0].client_id;
    let revoked = app.idp.revocations().await.unwrap();
    let revoked: Vec<_> = revoked
        .iter()
        .filter(|r| r.client_id.as_deref() == Some(ours.as_str()))
        .collect();
    assert!(
        revoked
            .iter()
            .any(|r| r.token_type_hint.as_deref() == Some("access_token") && r.status == 200),
        "{revoked:?}"
    );
    for r in revoked {
        let status = app
            .idp
            .token_status(r.token.as_deref().unwrap())
            .await
            .unwrap();
        assert!(!status.active);
    }
}

#[tokio::test]
async fn subject_claim_can_name_another_id_token_claim() {
    let app = TestApp::builder()
        .upstream_toml("subject_claim = \"email\"")
        .spawn()
        .await;
    app.device
        .on("alice@example.test", Action::SignInAs("alice".into()));
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid email"),
                ("login_hint", "alice@example.test"),
            ],
        )
        .await;
    let id = reply.body["auth_req_id"].as_str().unwrap();
    assert_eq!(
        app.device.wait_for_page("alice@example.test").await.status,
        200
    );
    assert_eq!(app.poll("shop", id).await.status, 200);
}

#[tokio::test]
async fn a_subject_claim_missing_from_the_id_token_fails_the_login_clearly() {
    // Without the email scope the IdP leaves `email` out of the ID token.
    let app = TestApp::builder()
        .upstream_toml("subject_claim = \"email\"")
        .spawn()
        .await;
    app.device
        .on("alice@example.test", Action::SignInAs("alice".into()));
    let id = app.start("shop", "alice@example.test").await;
    let page = app.device.wait_for_page("alice@example.test").await;
    assert_eq!(page.status, 502, "{page:?}");
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("does not name the user"));
}

#[tokio::test]
async fn unanswered_request_expires() {
    let app = TestApp::builder().manual_clock().spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    app.advance(121);
    app.poll("shop", &id)
        .await
        .assert_error(400, "expired_token");
}

#[tokio::test]
async fn approved_tokens_expire_with_the_request() {
    let app = TestApp::builder()
        .manual_clock()
        .store(StoreKind::Redis)
        .spawn()
        .await;
    let id = app.start("shop", "alice").await;
    assert_eq!(app.device.wait_for_page("alice").await.status, 200);
    app.advance(121);
    app.poll("shop", &id)
        .await
        .assert_error(400, "expired_token");
}

async fn slow_down_grows_the_interval(store: StoreKind) {
    let app = TestApp::builder()
        .manual_clock()
        .store(store)
        .ciba(300, 600, 5)
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;

    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "slow_down");
    assert_eq!(reply.body["interval"], 10);
    // The old interval no longer suffices.
    app.advance(5);
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "slow_down");
    assert_eq!(reply.body["interval"], 15);
    app.advance(15);
    app.poll("shop", &id)
        .await
        .assert_error(400, "authorization_pending");
    app.advance(14);
    app.poll("shop", &id).await.assert_error(400, "slow_down");
}

#[tokio::test]
async fn polling_too_fast_gets_slow_down_and_a_growing_interval_in_memory() {
    slow_down_grows_the_interval(StoreKind::Memory).await;
}

#[tokio::test]
async fn polling_too_fast_gets_slow_down_and_a_growing_interval_in_redis() {
    slow_down_grows_the_interval(StoreKind::Redis).await;
}

#[tokio::test]
async fn another_clients_auth_req_id_is_indistinguishable_from_an_unknown_one() {
    let app = TestApp::builder()
        .clients(vec![ClientSpec::basic("shop"), ClientSpec::basic("other")])
        .spawn()
        .await;
    let id = app.start("shop", "alice").await;
    app.device.wait_for_page("alice").await;
    let theirs = app.poll("other", &id).await;
    theirs.assert_error(400, "invalid_grant");
    let unknown = app
        .poll("other", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(theirs.body, unknown.body);
    // The owner still gets the tokens: the other client's poll took nothing.
    assert_eq!(app.poll("shop", &id).await.status, 200);
}

async fn concurrent_polls_hand_out_tokens_once(store: StoreKind) {
    let app = TestApp::builder().store(store).spawn().await;
    let id = app.start("shop", "alice").await;
    app.device.wait_for_page("alice").await;
    let polls = (0..16).map(|_| app.poll("shop", &id));
    let replies = futures::future::join_all(polls).await;
    let winners = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(winners, 1, "{replies:?}");
    // A loser hears the tokens were issued, or (if it raced the winner's
    // confirmation) to retry, which then hears it.
    assert!(replies
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| matches!(r.error(), "invalid_grant" | "temporarily_unavailable")));
    app.poll("shop", &id)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn exactly_one_of_many_concurrent_polls_gets_the_tokens_in_memory() {
    concurrent_polls_hand_out_tokens_once(StoreKind::Memory).await;
}

#[tokio::test]
async fn exactly_one_of_many_concurrent_polls_gets_the_tokens_in_redis() {
    concurrent_polls_hand_out_tokens_once(StoreKind::Redis).await;
}

#[tokio::test]
async fn polling_never_reaches_the_idp() {
    let idp = dedicated_idp();
    let app = TestApp::builder()
        .idp(idp)
        .manual_clock()
        .store(StoreKind::Redis)
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;

    let before = idp.stats().await.unwrap();
    for _ in 0..20 {
        app.poll("shop", &id)
            .await
            .assert_error(400, "authorization_pending");
        app.advance(1);
    }
    assert_eq!(
        idp.stats().await.unwrap().total,
        before.total,
        "pending polls reached the IdP"
    );

    let page = sign_in(
        notification.authorization_url(),
        &Action::SignInAs("alice".into()),
    )
    .await
    .unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    let after_login = idp.stats().await.unwrap();
    assert_eq!(
        after_login.count("POST /token"),
        1,
        "one code exchange per login"
    );

    assert_eq!(app.poll("shop", &id).await.status, 200);
    for _ in 0..20 {
        app.poll("shop", &id)
            .await
            .assert_error(400, "invalid_grant");
    }
    assert_eq!(
        idp.stats().await.unwrap().total,
        after_login.total,
        "polls after the login reached the IdP"
    );
}

#[tokio::test]
async fn tokens_are_never_stored_in_plain_text_and_every_key_expires() {
    let app = TestApp::builder().store(StoreKind::Redis).spawn().await;
    let id = app.start("shop", "alice").await;
    app.device.wait_for_page("alice").await;

    // Everything the proxy keeps for this request, before the tokens are taken.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", app.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let mut dump = String::new();
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let value: Vec<String> = match kind.as_str() {
            "hash" => redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            // A request's `:dat` string is binary.
            _ => vec![String::from_utf8_lossy(
                &redis::cmd("GET")
                    .arg(key)
                    .query_async::<Vec<u8>>(&mut conn)
                    .await
                    .unwrap(),
            )
            .into_owned()],
        };
        dump.push_str(&value.join("\n"));
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} never expires");
    }

    let reply = app.poll("shop", &id).await;
    assert_eq!(reply.status, 200);
    for field in ["access_token", "id_token"] {
        let token = reply.body[field].as_str().unwrap();
        assert!(!dump.contains(token), "{field} was stored in plain text");
    }
    // And the ID token's payload was not stored either.
    let payload = reply.body["id_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    assert!(!dump.contains(payload));
}

#[tokio::test]
async fn a_replayed_callback_shows_the_same_page_and_exchanges_nothing() {
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start().unwrap()));
    let app = TestApp::builder().idp(idp).spawn().await;
    let id = app.start("shop", "alice").await;
    let page = app.device.wait_for_page("alice").await;
    assert!(page.url.starts_with(&app.url("/callback?")), "{}", page.url);
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
    // The same response again (a browser retry): the same page, no second exchange.
    let replay = reqwest::get(&page.url).await.unwrap();
    assert_eq!(replay.status(), 200);
    assert!(replay.text().await.unwrap().contains("You are signed in"));
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
    // Another code for the same state is forged or replayed: refused.
    let mut forged = url::Url::parse(&page.url).unwrap();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code" {
                "forged-code".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    assert_eq!(reqwest::get(forged.as_str()).await.unwrap().status(), 410);
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 1);
    assert_eq!(app.poll("shop", &id).await.status, 200);
    app.poll("shop", &id)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn callback_without_state_or_with_unknown_state_explains_itself() {
    let app = TestApp::spawn().await;
    let missing = reqwest::get(app.url("/callback?code=abc")).await.unwrap();
    assert_eq!(missing.status(), 400);
    assert!(missing.text().await.unwrap().contains("incomplete"));
    let unknown = reqwest::get(app.url("/callback?code=abc&state=forged"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 410);
}

#[tokio::test]
async fn a_failing_webhook_is_retried_until_delivered() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::FailThenSignIn(2));
    let id = app.start("shop", "alice").await;
    assert_eq!(app.device.wait_for_page("alice").await.status, 200);
    assert_eq!(app.device.notifications().len(), 3);
    assert_eq!(app.poll("shop", &id).await.status, 200);
}

#[tokio::test]
async fn a_refused_webhook_ends_the_request_for_the_client() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::RefuseWebhook(410));
    let id = app.start("shop", "alice").await;
    app.device.wait_for_notification("alice").await;
    let mut reply = app.poll("shop", &id).await;
    for _ in 0..50 {
        if reply.error() != "authorization_pending" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        reply = app.poll("shop", &id).await;
    }
    reply.assert_error(400, "access_denied");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("could not be notified"));
}

#[tokio::test]
async fn idp_key_rotation_needs_no_restart() {
    let idp = dedicated_idp();
    let app = TestApp::builder().idp(idp).spawn().await;
    let first = app.start("shop", "alice").await;
    app.device.wait_for_page("alice").await;
    assert_eq!(app.poll("shop", &first).await.status, 200);

    let kid = idp.rotate_keys().await.unwrap();
    let second = app.start("shop", "bob").await;
    assert_eq!(app.device.wait_for_page("bob").await.status, 200);
    let reply = app.poll("shop", &second).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let header = reply.body["id_token"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["kid"], kid);
}

#[tokio::test]
async fn a_callback_naming_another_issuer_is_refused() {
    let idp = dedicated_idp();
    let app = TestApp::builder().idp(idp).spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    let state = notification.authorization_param("state").unwrap();
    let forged = reqwest::Url::parse_with_params(
        &app.url("/callback"),
        &[
            ("code", "stolen"),
            ("state", state.as_str()),
            ("iss", "https://evil.example"),
        ],
    )
    .unwrap();
    assert_eq!(reqwest::get(forged).await.unwrap().status(), 502);
    // RFC 9207: the mixed-up code is never taken to our IdP.
    assert_eq!(idp.stats().await.unwrap().count("POST /token"), 0);
    app.poll("shop", &id)
        .await
        .assert_error(400, "access_denied");
}

#[tokio::test]
async fn a_callback_with_state_but_no_code_ends_the_request_at_once() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    let state = notification.authorization_param("state").unwrap();
    let bare = reqwest::Url::parse_with_params(&app.url("/callback"), &[("state", state.as_str())])
        .unwrap();
    assert_eq!(reqwest::get(bare).await.unwrap().status(), 502);
    let reply = app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("neither a code"));
}
