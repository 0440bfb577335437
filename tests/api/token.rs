use ciba_proxy_e2e::app::{TestApp, CIBA_GRANT};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::redis_server::RedisServer;

#[tokio::test]
async fn token_rejects_other_grant_types() {
    let app = TestApp::spawn().await;
    let reply = app
        .post_as(
            "shop",
            "/token",
            &[("grant_type", "authorization_code"), ("code", "x")],
        )
        .await;
    reply.assert_error(400, "unsupported_grant_type");
}

#[tokio::test]
async fn token_requires_grant_type_and_auth_req_id() {
    let app = TestApp::spawn().await;
    app.post_as("shop", "/token", &[("auth_req_id", "abc")])
        .await
        .assert_error(400, "invalid_request");
    app.post_as("shop", "/token", &[("grant_type", CIBA_GRANT)])
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn token_answers_invalid_grant_for_unknown_and_malformed_ids() {
    let app = TestApp::spawn().await;
    app.poll("shop", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await
        .assert_error(400, "invalid_grant");
    app.poll("shop", "not valid {id}")
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn token_rejects_bad_client_credentials_with_401() {
    let app = TestApp::spawn().await;
    let reply = app
        .http
        .post(app.url("/token"))
        .basic_auth("shop", Some("wrong"))
        .form(&[("grant_type", CIBA_GRANT), ("auth_req_id", "abc")])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    assert!(reply.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

/// Redis's per-command call counts (`INFO commandstats`), scripts' inner
/// calls included.
async fn command_calls(redis: &RedisServer) -> std::collections::HashMap<String, u64> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test]
async fn a_poll_of_a_pending_request_is_one_store_script_and_no_other_read() {
    let redis = RedisServer::start().await.expect("a private redis-server");
    let app = TestApp::builder().redis_at(&redis.url()).spawn().await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    app.device.wait_for_notification("alice").await;
    let before = command_calls(&redis).await;
    for _ in 0..10 {
        let reply = app.poll("shop", &id).await;
        assert!(
            matches!(reply.error(), "authorization_pending" | "slow_down"),
            "{reply:?}"
        );
    }
    let after = command_calls(&redis).await;
    let delta = |name: &str| after.get(name).unwrap_or(&0) - before.get(name).unwrap_or(&0);
    // The poll script reads the request once (HMGET); nothing else on the
    // poll path reads the store.
    assert_eq!(delta("hmget"), 10, "{after:?}");
    for read in ["hgetall", "hget", "get", "exists", "zrange", "zcard"] {
        assert_eq!(delta(read), 0, "{read} on the poll path");
    }
}
