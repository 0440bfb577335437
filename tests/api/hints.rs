//! id_token_hint and login_hint_token (CIBA Core §7.1).
use ciba_proxy_e2e::app::{now_secs, ClientSpec, TestApp};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::keys::{CLIENT_ES256, OTHER_PS256};
use serde_json::json;

pub(crate) const HINT_ISSUER: &str = "https://hints.example";

/// An ID token the IdP issued to `client` for `user`.
async fn id_token_for(app: &TestApp, client: &str, user: &str) -> String {
    let id = app.start(client, user).await;
    assert_eq!(app.device.wait_for_page(user).await.status, 200);
    let reply = app.poll(client, &id).await;
    reply.body["id_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_id_token_hint_names_the_user_to_authenticate() {
    let app = TestApp::builder()
        .clients(vec![ClientSpec::basic("shop"), ClientSpec::basic("other")])
        .spawn()
        .await;
    let hint = id_token_for(&app, "shop", "alice").await;

    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("id_token_hint", &hint)])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // The webhook of this request (the first login sent one already).
    let mut notifications = app.device.notifications();
    for _ in 0..100 {
        if notifications.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        notifications = app.device.notifications();
    }
    assert_eq!(
        notifications.len(),
        2,
        "no webhook for the id_token_hint request"
    );
    let last = &notifications[1];
    assert_eq!(last.body["login_hint"], "alice");
    assert_eq!(
        last.authorization_param("login_hint").as_deref(),
        Some("alice")
    );

    // Issued to another client: not a hint this client may use.
    let theirs = app
        .bc_authorize("other", &[("scope", "openid"), ("id_token_hint", &hint)])
        .await;
    theirs.assert_error(400, "invalid_request");

    // Tampered: the signature no longer verifies.
    let mut parts: Vec<String> = hint.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    let forged = app
        .bc_authorize(
            "shop",
            &[("scope", "openid"), ("id_token_hint", &parts.join("."))],
        )
        .await;
    forged.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn an_expired_id_token_hint_is_accepted_only_within_the_grace_period() {
    let app = TestApp::builder()
        .manual_clock()
        .sections("[hints]\nid_token_hint_grace_secs = 600")
        .spawn()
        .await;
    let hint = id_token_for(&app, "shop", "alice").await;
    // The IdP's ID tokens live 300 s: 700 s later it is expired but in grace.
    app.advance(700);
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("id_token_hint", &hint)])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    app.advance(300);
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("id_token_hint", &hint)])
        .await;
    reply.assert_error(400, "invalid_request");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("grace"));
}

/// `[hints]` trusting login_hint_tokens from `HINT_ISSUER` signed with `CLIENT_ES256`.
pub(crate) fn trusted_issuer() -> String {
    format!(
        "[hints]\nlogin_hint_token_issuer = \"{HINT_ISSUER}\"\nlogin_hint_token_jwks = '{}'\n",
        CLIENT_ES256.jwks()
    )
}

#[tokio::test]
async fn a_login_hint_token_from_the_trusted_issuer_names_the_user() {
    let app = TestApp::builder().sections(&trusted_issuer()).spawn().await;
    app.device.on("bob", Action::Ignore);
    let token =
        CLIENT_ES256.sign(&json!({"iss": HINT_ISSUER, "sub": "bob", "exp": now_secs() + 300}));
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint_token", &token)])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        app.device.wait_for_notification("bob").await.body["login_hint"],
        "bob"
    );
}

#[tokio::test]
async fn login_hint_token_rules() {
    let app = TestApp::builder().sections(&trusted_issuer()).spawn().await;
    let send = |token: String| {
        let app = &app;
        async move {
            app.bc_authorize("shop", &[("scope", "openid"), ("login_hint_token", &token)])
                .await
        }
    };
    let expired =
        CLIENT_ES256.sign(&json!({"iss": HINT_ISSUER, "sub": "bob", "exp": now_secs() - 120}));
    send(expired)
        .await
        .assert_error(400, "expired_login_hint_token");
    let stranger = CLIENT_ES256
        .sign(&json!({"iss": "https://stranger.example", "sub": "bob", "exp": now_secs() + 300}));
    send(stranger).await.assert_error(400, "invalid_request");
    let untrusted_key =
        OTHER_PS256.sign(&json!({"iss": HINT_ISSUER, "sub": "bob", "exp": now_secs() + 300}));
    send(untrusted_key)
        .await
        .assert_error(400, "invalid_request");
    let no_subject = CLIENT_ES256.sign(&json!({"iss": HINT_ISSUER, "exp": now_secs() + 300}));
    send(no_subject).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn login_hint_tokens_are_refused_when_no_issuer_is_trusted() {
    let app = TestApp::spawn().await;
    let token =
        CLIENT_ES256.sign(&json!({"iss": HINT_ISSUER, "sub": "bob", "exp": now_secs() + 300}));
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint_token", &token)])
        .await;
    reply.assert_error(400, "invalid_request");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("no trusted issuer"));
}
