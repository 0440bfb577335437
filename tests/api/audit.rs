//! The audit trail: one event per step of a request's life, on the log
//! target `audit`, in JSON with `log.format = "json"`, without a secret.
use ciba_proxy_e2e::app::{StoreKind, TestApp};
use ciba_proxy_e2e::device::Action;
use serde_json::Value;

/// The audit events in a JSON log, oldest first.
pub(crate) fn audit_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["target"] == "audit")
        .collect()
}

#[tokio::test]
async fn one_login_leaves_one_event_per_step_and_no_secret() {
    let (app, proxy) = TestApp::builder()
        .store(StoreKind::Redis)
        .spawn_process(&[("CIBA_PROXY__LOG__FORMAT", "json")])
        .await;
    app.device.on("alice", Action::SignInAs("alice".into()));
    let id = app.start("shop", "alice").await;
    app.device.wait_for_page("alice").await;
    let tokens = app.poll("shop", &id).await;
    assert_eq!(tokens.status, 200, "{tokens:?}");
    // An unanswered request that expires.
    app.device.on("bob", Action::Ignore);
    let expiring = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid"),
                ("login_hint", "bob"),
                ("requested_expiry", "1"),
            ],
        )
        .await;
    let expiring = expiring.body["auth_req_id"].as_str().unwrap().to_owned();
    app.device.wait_for_notification("bob").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..2 {
        app.poll("shop", &expiring)
            .await
            .assert_error(400, "expired_token");
    }

    let log = proxy.logs();
    let events = audit_events(&log);
    // Per request, in order (the webhook's answer and the sign-in race, so
    // "notified" and "decided" may swap).
    let steps_of = |tag: &Value| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| &e["auth_req"] == tag)
            .map(|e| {
                (
                    e["event"].as_str().unwrap().to_owned(),
                    e["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let mut login = steps_of(&events[0]["auth_req"]);
    assert_eq!(login.first(), Some(&pair("opened", "pending")), "{log}");
    assert_eq!(
        login.last(),
        Some(&pair("tokens_issued", "approved")),
        "{log}"
    );
    login.sort();
    assert_eq!(
        login,
        vec![
            pair("decided", "approved"),
            pair("notified", "webhook"),
            pair("opened", "pending"),
            pair("tokens_issued", "approved"),
        ],
        "{log}"
    );
    let expired = events
        .iter()
        .find(|e| e["event"] == "expired")
        .expect("an expired event");
    assert_eq!(
        steps_of(&expired["auth_req"]),
        vec![
            pair("opened", "pending"),
            pair("notified", "webhook"),
            pair("expired", "expired")
        ],
        "expired once, however often polled: {log}"
    );
    let alice = &events[0];
    assert_eq!(alice["client_id"], "shop");
    assert_eq!(alice["auth_req"].as_str().unwrap().len(), 12);
    assert_eq!(alice["user"].as_str().unwrap().len(), 32);
    assert!(events.iter().all(|e| e["duration_ms"].as_u64().is_some()));
    assert_ne!(
        events[0]["user"], events[4]["user"],
        "two users, two hashes"
    );
    let audit = serde_json::to_string(&events).unwrap();
    let mut secrets = app.secrets.clone();
    secrets.extend([
        id.clone(),
        expiring,
        "alice".to_owned(),
        tokens.body["access_token"].as_str().unwrap().to_owned(),
        tokens.body["id_token"].as_str().unwrap().to_owned(),
    ]);
    for secret in secrets {
        assert!(
            !audit.contains(&secret),
            "an audit event carries {}…",
            &secret[..4.min(secret.len())]
        );
    }
}

#[tokio::test]
async fn admin_calls_and_a_cancel_are_in_the_audit_trail() {
    use sha2::{Digest, Sha256};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let token = format!("operator-{}", rand::random::<u64>());
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let (app, proxy) = TestApp::builder()
        .store(StoreKind::Redis)
        .sections(&format!(
            "[metrics]\nbind = \"127.0.0.1:{port}\"\n[admin]\ntoken_sha256 = \"{hash}\"\n"
        ))
        .spawn_process(&[("CIBA_PROXY__LOG__FORMAT", "json")])
        .await;
    app.device.on("carol", Action::Ignore);
    let id = app.start("shop", "carol").await;
    let cancel = format!("http://127.0.0.1:{port}/admin/requests/{id}/cancel");
    let http = reqwest::Client::new();
    let refused = http
        .post(&cancel)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let done = http.post(&cancel).bearer_auth(&token).send().await.unwrap();
    assert_eq!(done.status(), 200);

    let log = proxy.logs();
    let events = audit_events(&log);
    let calls: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "admin_call")
        .map(|e| (e["route"].clone(), e["status"].clone()))
        .collect();
    assert_eq!(
        calls,
        vec![
            (Value::from("cancel_request"), Value::from(401)),
            (Value::from("cancel_request"), Value::from(200)),
        ],
        "{log}"
    );
    let cancelled = events
        .iter()
        .find(|e| e["event"] == "cancelled")
        .expect("a cancelled event");
    assert_eq!(cancelled["outcome"], "denied");
    assert_eq!(cancelled["reason"], "cancelled by the operator");
    assert!(!log.contains(&token), "the token is never logged");
}
