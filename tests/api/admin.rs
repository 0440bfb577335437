//! The admin API on the operator port (`[metrics] bind` with `[admin]`):
//! bearer token, list, one, cancel, clients.
use std::time::Duration;

use ciba_proxy_e2e::app::{ClientSpec, StoreKind, TestApp};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::ping_receiver::PingReceiver;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A proxy with the admin API on its operator port (also used by
/// `openapi_operator.rs`).
pub(crate) struct Admin {
    pub(crate) app: TestApp,
    /// The operator port's URL.
    pub(crate) base: String,
    pub(crate) token: String,
}

impl Admin {
    pub(crate) async fn spawn(clients: Option<Vec<ClientSpec>>, extra: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let token = format!("operator-{}", rand::random::<u64>());
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        let mut builder = TestApp::builder()
            .store(StoreKind::Redis)
            .sections(&format!(
            "[metrics]\nbind = \"127.0.0.1:{port}\"\n[admin]\ntoken_sha256 = \"{hash}\"\n{extra}"
        ));
        if let Some(clients) = clients {
            builder = builder.clients(clients);
        }
        Self {
            app: builder.spawn().await,
            base: format!("http://127.0.0.1:{port}"),
            token,
        }
    }

    /// A call to the operator port, with `token` as the bearer token.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "POST" => self.app.http.post(url),
            _ => self.app.http.get(url),
        };
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let response = self.request(method, path, token).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, Some(&self.token)).await
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        self.call("POST", path, Some(&self.token)).await
    }
}

#[tokio::test]
async fn admin_calls_without_the_right_token_get_401() {
    let admin = Admin::spawn(None, "").await;
    let id = admin.app.start("shop", "alice").await;
    for (method, path) in [
        ("GET", "/admin/requests".to_owned()),
        ("GET", format!("/admin/requests/{id}")),
        ("POST", format!("/admin/requests/{id}/cancel")),
        ("GET", "/admin/clients".to_owned()),
    ] {
        for token in [None, Some("wrong"), Some("")] {
            let (status, _) = admin.call(method, &path, token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}");
        }
    }
    // Nothing was cancelled by the refused calls.
    let (_, one) = admin.get(&format!("/admin/requests/{id}")).await;
    assert_eq!(one["state"], "pending");
}

#[tokio::test]
async fn the_admin_api_is_not_on_the_public_port() {
    let admin = Admin::spawn(None, "").await;
    for path in ["/admin/requests", "/admin/clients", "/metrics"] {
        assert_eq!(admin.app.get(path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn requests_are_listed_and_read_without_hints_or_tokens() {
    let admin = Admin::spawn(None, "").await;
    let hint = format!("lister-{}", rand::random::<u32>());
    admin.app.device.on(&hint, Action::Ignore);
    let id = admin.app.start("shop", &hint).await;
    // The device got the notification: the request says so once the
    // delivery's result is recorded.
    admin.app.device.wait_for_notification(&hint).await;
    let mut notification = Value::Null;
    for _ in 0..50 {
        notification = admin.get(&format!("/admin/requests/{id}")).await.1["notification"].clone();
        if notification == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(notification, "sent");

    let (status, list) = admin.get("/admin/requests").await;
    assert_eq!(status, 200, "{list}");
    let requests = list["requests"].as_array().unwrap();
    let listed = requests
        .iter()
        .find(|r| r["auth_req_id"] == id.as_str())
        .expect("the request is listed");
    for field in [
        "client_id",
        "state",
        "user_hash",
        "created_at",
        "expires_at",
        "delivery_mode",
        "notification",
    ] {
        assert!(!listed[field].is_null(), "{field} in {listed}");
    }
    assert_eq!(listed["client_id"], "shop");
    assert_eq!(listed["state"], "pending");
    assert_eq!(listed["delivery_mode"], "poll");
    assert_eq!(listed["notification"], "sent");
    let text = list.to_string();
    assert!(!text.contains(&hint), "no login hint: {text}");
    for secret in &admin.app.secrets {
        assert!(!text.contains(secret.as_str()), "no secret: {text}");
    }

    let (_, filtered) = admin.get("/admin/requests?client_id=nobody").await;
    assert_eq!(filtered["requests"], Value::Array(vec![]));
    let (_, filtered) = admin.get("/admin/requests?state=denied").await;
    assert!(!filtered.to_string().contains(&id));
    let (_, filtered) = admin
        .get("/admin/requests?client_id=shop&state=pending")
        .await;
    assert!(filtered.to_string().contains(&id));

    let (status, one) = admin.get(&format!("/admin/requests/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(&one, listed);
    let (status, _) = admin.get("/admin/requests/no-such-request").await;
    assert_eq!(status, 404);
    let (status, _) = admin.post("/admin/requests/no-such-request/cancel").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_notification_the_push_gateway_refuses_shows_as_refused() {
    let admin = Admin::spawn(None, "").await;
    let hint = format!("unreachable-{}", rand::random::<u32>());
    admin.app.device.on(&hint, Action::RefuseWebhook(400));
    let id = admin.app.start("shop", &hint).await;
    // The only delivery is refused for good: the request ends denied.
    admin
        .app
        .poll_until_decided("shop", &id)
        .await
        .assert_error(400, "access_denied");
    let (status, one) = admin.get(&format!("/admin/requests/{id}")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["state"], "denied", "{one}");
    assert_eq!(one["notification"], "refused", "{one}");
}

#[tokio::test]
async fn a_cancelled_request_is_denied_and_frees_the_users_slot() {
    let admin = Admin::spawn(None, "[limits]\npending_per_user = 1\n").await;
    let hint = format!("cancelled-{}", rand::random::<u32>());
    admin.app.device.on(&hint, Action::Ignore);
    let id = admin.app.start("shop", &hint).await;
    // The user's one slot is taken.
    let second = admin
        .app
        .bc_authorize(
            "shop",
            &[("scope", "openid"), ("login_hint", hint.as_str())],
        )
        .await;
    assert_eq!(second.status, 403, "{second:?}");

    let (status, cancelled) = admin.post(&format!("/admin/requests/{id}/cancel")).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["auth_req_id"], id.as_str());
    assert_eq!(cancelled["state"], "denied");

    let reply = admin.app.poll("shop", &id).await;
    reply.assert_error(400, "access_denied");
    assert!(
        reply.body["error_description"]
            .as_str()
            .unwrap()
            .contains("cancelled by the operator"),
        "{reply:?}"
    );
    // Counted as a cancellation, not as an IdP error.
    let metrics = reqwest::get(format!("{}/metrics", admin.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ciba_decisions_total{outcome="cancelled"}"#),
        "{metrics}"
    );
    // Already ended.
    let (status, _) = admin.post(&format!("/admin/requests/{id}/cancel")).await;
    assert_eq!(status, 409);
    // The slot is free again.
    admin.app.start("shop", &hint).await;
}

#[tokio::test]
async fn cancelling_a_ping_clients_request_pings_it() {
    let receiver = PingReceiver::start(vec![]).await.unwrap();
    let admin = Admin::spawn(
        Some(vec![ClientSpec::basic("app").ping(&receiver.url())]),
        "",
    )
    .await;
    let hint = format!("pinged-{}", rand::random::<u32>());
    admin.app.device.on(&hint, Action::Ignore);
    let reply = admin
        .app
        .bc_authorize(
            "app",
            &[
                ("scope", "openid"),
                ("login_hint", hint.as_str()),
                (
                    "client_notification_token",
                    "8d67dc78-7faa-4d41-aabd-67707b374255",
                ),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let id = reply.body["auth_req_id"].as_str().unwrap().to_owned();
    let (_, one) = admin.get(&format!("/admin/requests/{id}")).await;
    assert_eq!(one["delivery_mode"], "ping");

    let (status, _) = admin.post(&format!("/admin/requests/{id}/cancel")).await;
    assert_eq!(status, 200);
    let pings = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].body["auth_req_id"], id.as_str());
}

#[tokio::test]
async fn clients_are_listed_without_secrets() {
    let admin = Admin::spawn(None, "").await;
    let (status, body) = admin.get("/admin/clients").await;
    assert_eq!(status, 200, "{body}");
    let clients = body["clients"].as_array().unwrap();
    assert!(clients.iter().any(|c| c["client_id"] == "shop"), "{body}");
    let text = body.to_string();
    for secret in &admin.app.secrets {
        assert!(!text.contains(secret.as_str()), "no secret: {text}");
    }
}
