//! A consumption-device client's ping notification endpoint (CIBA Core
//! §10.2): it records every notification the proxy POSTs and answers as a
//! script says, so a test can check what was sent and how failures, slow
//! answers and redirects are handled.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::server::TestServer;

/// How the endpoint answers one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// This status, no body.
    Status(u16),
    /// This status and body (`application/json` if the body is JSON, `text/plain` otherwise).
    StatusWithBody(u16, String),
    /// A redirect (301, 302, 307, ...) to this `Location`; `"/redirect-target"`
    /// (relative, resolved against the ping URL) points at this receiver's
    /// [`PingReceiver::redirect_target`].
    Redirect(u16, String),
    /// Waits, then answers.
    Delay(Duration, Box<Reply>),
}

impl Reply {
    fn status(&self) -> u16 {
        match self {
            Reply::Status(s) | Reply::StatusWithBody(s, _) | Reply::Redirect(s, _) => *s,
            Reply::Delay(_, inner) => inner.status(),
        }
    }
}

/// A notification the endpoint received.
#[derive(Debug, Clone)]
pub struct Ping {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The parsed JSON body; a body that is not JSON is kept as a JSON string.
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    script: Vec<Reply>,
    pings: Mutex<Vec<Ping>>,
    redirect_hits: AtomicUsize,
}

/// The running endpoint; stopped when dropped.
pub struct PingReceiver {
    base: String,
    inner: Arc<Inner>,
    _server: TestServer,
}

impl PingReceiver {
    /// Serves `POST /ping` on a free port. The n-th notification gets
    /// `script[n]`; once the script is exhausted its last entry repeats, and
    /// an empty script answers 204 every time.
    pub async fn start(script: Vec<Reply>) -> anyhow::Result<PingReceiver> {
        for reply in &script {
            StatusCode::from_u16(reply.status())
                .map_err(|_| anyhow::anyhow!("{reply:?}: not an HTTP status"))?;
        }
        let inner = Arc::new(Inner {
            script,
            ..Inner::default()
        });
        let server = TestServer::start(inner.clone(), |routes| {
            routes.route("/ping", web::post().to(receive)).service(
                web::resource("/redirect-target")
                    .route(web::get().to(redirect_target))
                    .route(web::post().to(redirect_target)),
            );
        })?;
        Ok(PingReceiver {
            base: format!("http://127.0.0.1:{}", server.port),
            inner,
            _server: server,
        })
    }

    /// The notification endpoint to register: `http://127.0.0.1:PORT/ping`.
    pub fn url(&self) -> String {
        format!("{}/ping", self.base)
    }

    /// A URL to redirect to (`GET` or `POST`); it only counts its hits.
    pub fn redirect_target(&self) -> String {
        format!("{}/redirect-target", self.base)
    }

    /// Every notification so far, in arrival order.
    pub fn received(&self) -> Vec<Ping> {
        self.inner.pings.lock().unwrap().clone()
    }

    /// How many requests reached [`PingReceiver::redirect_target`].
    pub fn redirect_hits(&self) -> usize {
        self.inner.redirect_hits.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` notifications arrived or `timeout` passed;
    /// returns what arrived either way.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Ping> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pings = self.received();
            if pings.len() >= n || tokio::time::Instant::now() >= deadline {
                return pings;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, inner: web::Data<Inner>) -> HttpResponse {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let ping = Ping {
        authorization: header(actix_web::http::header::AUTHORIZATION),
        content_type: header(CONTENT_TYPE),
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
    };
    let n = {
        let mut pings = inner.pings.lock().unwrap();
        pings.push(ping);
        pings.len() - 1
    };
    let reply = inner
        .script
        .get(n)
        .or(inner.script.last())
        .cloned()
        .unwrap_or(Reply::Status(204));
    respond(reply).await
}

async fn respond(mut reply: Reply) -> HttpResponse {
    loop {
        match reply {
            Reply::Delay(delay, inner) => {
                tokio::time::sleep(delay).await;
                reply = *inner;
            }
            Reply::Status(status) => return HttpResponse::build(code(status)).finish(),
            Reply::StatusWithBody(status, body) => {
                let content_type = if serde_json::from_str::<Value>(&body).is_ok() {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                return HttpResponse::build(code(status))
                    .insert_header((CONTENT_TYPE, content_type))
                    .body(body);
            }
            Reply::Redirect(status, location) => {
                return HttpResponse::build(code(status))
                    .insert_header((LOCATION, location))
                    .finish()
            }
        }
    }
}

/// Statuses were checked in [`PingReceiver::start`].
fn code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn redirect_target(inner: web::Data<Inner>) -> HttpResponse {
    inner.redirect_hits.fetch_add(1, Ordering::SeqCst);
    HttpResponse::NoContent().finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    async fn notify(receiver: &PingReceiver, n: u32) -> reqwest::Response {
        client()
            .post(receiver.url())
            .bearer_auth(format!("token-{n}"))
            .json(&json!({ "auth_req_id": format!("req-{n}") }))
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn follows_its_script_and_records_every_ping() {
        let receiver = PingReceiver::start(vec![
            Reply::Status(503),
            Reply::StatusWithBody(400, r#"{"error":"nope"}"#.into()),
            Reply::Redirect(307, "/redirect-target".into()),
            Reply::Delay(Duration::from_millis(300), Box::new(Reply::Status(200))),
            Reply::Status(204),
        ])
        .await
        .unwrap();
        assert!(receiver.url().ends_with("/ping"));
        assert_eq!(
            receiver.redirect_target(),
            receiver.url().replace("/ping", "/redirect-target")
        );

        assert_eq!(notify(&receiver, 0).await.status(), 503);
        let bad = notify(&receiver, 1).await;
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.text().await.unwrap(), r#"{"error":"nope"}"#);
        let redirect = notify(&receiver, 2).await;
        assert_eq!(redirect.status(), 307);
        assert_eq!(redirect.headers()["location"], "/redirect-target");
        let started = std::time::Instant::now();
        assert_eq!(notify(&receiver, 3).await.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        // The last entry repeats.
        assert_eq!(notify(&receiver, 4).await.status(), 204);
        assert_eq!(notify(&receiver, 5).await.status(), 204);

        let pings = receiver.wait_for(6, Duration::from_secs(1)).await;
        assert_eq!(pings.len(), 6);
        for (n, ping) in pings.iter().enumerate() {
            assert_eq!(ping.authorization, Some(format!("Bearer token-{n}")));
            assert_eq!(ping.content_type.as_deref(), Some("application/json"));
            assert_eq!(ping.body, json!({ "auth_req_id": format!("req-{n}") }));
        }
        // The redirect was not followed (the client doesn't follow them)…
        assert_eq!(receiver.redirect_hits(), 0);
        // …and following it is what the target counts.
        let rt = receiver.redirect_target();
        assert_eq!(client().get(&rt).send().await.unwrap().status(), 204);
        assert_eq!(client().post(&rt).send().await.unwrap().status(), 204);
        assert_eq!(receiver.redirect_hits(), 2);

        // wait_for gives up after its timeout with what arrived.
        let started = std::time::Instant::now();
        assert_eq!(
            receiver.wait_for(7, Duration::from_millis(200)).await.len(),
            6
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn an_empty_script_answers_204() {
        let receiver = PingReceiver::start(vec![]).await.unwrap();
        let response = client()
            .post(receiver.url())
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let pings = receiver.received();
        assert_eq!(pings.len(), 1);
        assert_eq!(pings[0].authorization, None);
        assert_eq!(pings[0].body, json!("not json"));
    }

    #[tokio::test]
    async fn rejects_a_script_with_an_impossible_status() {
        assert!(PingReceiver::start(vec![Reply::Status(42)]).await.is_err());
    }
}
