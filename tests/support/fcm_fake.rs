//! A fake of Google's OAuth token endpoint and of FCM's HTTP v1 send call:
//! FCM cannot run here, so this stands in for it (the one fake the e-mail
//! and Web Push tests do without). It checks what Google would: the
//! service-account assertion (RS256 signature against the test account's
//! public key, `iss`, `scope`, `aud`, `exp` at most an hour after `iat`),
//! the Bearer token on each send, and the message's shape and size. Its
//! answers to sends can be scripted.
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};

use crate::server::TestServer;

pub const PROJECT_ID: &str = "ciba-test-project";
pub const CLIENT_EMAIL: &str = "ciba-proxy@ciba-test-project.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The test service account's key (a test-only key, see keys/README.md).
const PRIVATE_KEY: &str = include_str!("keys/other-ps256.pem");
const PUBLIC_JWK: &str = include_str!("keys/other-ps256.jwk.json");

/// How the fake answers the next send.
#[derive(Debug, Clone)]
pub enum FcmAnswer {
    /// 404 `UNREGISTERED`: the token is gone.
    Unregistered,
    /// 400 `INVALID_ARGUMENT` about `message.token`.
    InvalidToken,
    /// 429 with `Retry-After: secs`.
    TooMany { retry_after_secs: u64 },
    /// 503.
    Unavailable,
    /// 401: the access token was revoked (it stops working).
    Unauthenticated,
}

/// A message FCM accepted.
#[derive(Debug, Clone)]
pub struct FcmMessage {
    pub token: String,
    pub data: Map<String, Value>,
    /// The whole body as sent.
    pub raw: String,
}

#[derive(Default)]
struct Inner {
    issued: Mutex<HashSet<String>>,
    token_calls: Mutex<u32>,
    send_calls: Mutex<u32>,
    script: Mutex<VecDeque<FcmAnswer>>,
    accepted: Mutex<Vec<FcmMessage>>,
    /// What the fake found wrong, in words: a test asserts it stays empty.
    problems: Mutex<Vec<String>>,
}

pub struct FcmFake {
    /// The API base URL (the channel's `endpoint`).
    pub endpoint: String,
    inner: Arc<Inner>,
    _server: TestServer,
}

impl FcmFake {
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        let server = TestServer::start(inner.clone(), |routes| {
            routes
                .route("/token", web::post().to(token))
                .route("/v1/projects/{project}/messages:send", web::post().to(send));
        })?;
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{}", server.port),
            inner,
            _server: server,
        })
    }

    /// Writes a Google service-account key file for this fake (its
    /// `token_uri` is the fake's) and returns its path.
    pub fn service_account_file(&self) -> PathBuf {
        let path = std::env::temp_dir().join(format!("fcm-sa-{}.json", rand::random::<u64>()));
        let json = service_account_json(&format!("{}/token", self.endpoint));
        std::fs::write(&path, json).expect("write the service account");
        path
    }

    /// The TOML of a `[[notifier.channels]]` entry for this fake.
    pub fn channel_toml(&self) -> String {
        format!(
            "[[notifier.channels]]\nkind = \"fcm\"\nservice_account_file = \"{}\"\nendpoint = \"{}\"\n",
            self.service_account_file().display(),
            self.endpoint
        )
    }

    /// Answers the next sends this way, in order; then accepts again.
    pub fn script(&self, answers: &[FcmAnswer]) {
        self.inner
            .script
            .lock()
            .unwrap()
            .extend(answers.iter().cloned());
    }

    pub fn token_calls(&self) -> u32 {
        *self.inner.token_calls.lock().unwrap()
    }

    pub fn send_calls(&self) -> u32 {
        *self.inner.send_calls.lock().unwrap()
    }

    pub fn accepted(&self) -> Vec<FcmMessage> {
        self.inner.accepted.lock().unwrap().clone()
    }

    pub fn problems(&self) -> Vec<String> {
        self.inner.problems.lock().unwrap().clone()
    }

    /// Waits until `n` messages were accepted in all.
    pub async fn wait_for_messages(&self, n: usize) -> Vec<FcmMessage> {
        for _ in 0..600 {
            let accepted = self.accepted();
            if accepted.len() >= n {
                return accepted;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "FCM accepted {} messages, not {n}; problems: {:?}",
            self.accepted().len(),
            self.problems()
        );
    }

    /// Waits until `n` sends were made in all (accepted or not).
    pub async fn wait_for_sends(&self, n: u32) {
        for _ in 0..600 {
            if self.send_calls() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("FCM got {} sends, not {n}", self.send_calls());
    }
}

/// A Google service-account key file's JSON for the test account.
pub fn service_account_json(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": "test-key-1",
        "private_key": PRIVATE_KEY,
        "client_email": CLIENT_EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    })
    .to_string()
}

fn problem(inner: &Inner, what: String) -> HttpResponse {
    inner.problems.lock().unwrap().push(what.clone());
    HttpResponse::BadRequest().json(json!({"error": "invalid_grant", "error_description": what}))
}

/// Google's token endpoint, RFC 7523 JWT-bearer grant.
async fn token(
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
    inner: web::Data<Inner>,
) -> HttpResponse {
    *inner.token_calls.lock().unwrap() += 1;
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if field("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return problem(&inner, format!("grant_type {:?}", field("grant_type")));
    }
    let Some(assertion) = field("assertion") else {
        return problem(&inner, "no assertion".into());
    };
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(PUBLIC_JWK).expect("the test jwk");
    let key = DecodingKey::from_jwk(&jwk).expect("the test key");
    let aud = format!("http://{}/token", req.connection_info().host());
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[aud.as_str()]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = match decode::<Value>(&assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return problem(&inner, format!("assertion: {e}")),
    };
    if claims["scope"] != SCOPE {
        return problem(&inner, format!("scope {}", claims["scope"]));
    }
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    if exp <= iat || exp - iat > 3600 {
        return problem(
            &inner,
            format!("exp {exp} is not within an hour of iat {iat}"),
        );
    }
    let access_token = format!("ya29.test-{}", rand::random::<u64>());
    inner.issued.lock().unwrap().insert(access_token.clone());
    HttpResponse::Ok().json(json!({
        "access_token": access_token,
        "expires_in": 3599,
        "token_type": "Bearer",
    }))
}

fn fcm_error(status: u16, code: &str, message: &str, details: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(json!({
        "error": { "code": status, "message": message, "status": code, "details": details }
    }))
}

/// FCM HTTP v1 `messages:send`.
async fn send(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    inner: web::Data<Inner>,
) -> HttpResponse {
    *inner.send_calls.lock().unwrap() += 1;
    let bearer = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if !inner.issued.lock().unwrap().contains(&bearer) {
        inner
            .problems
            .lock()
            .unwrap()
            .push("a send without a valid access token".into());
        return fcm_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        );
    }
    if path.as_str() != PROJECT_ID {
        inner
            .problems
            .lock()
            .unwrap()
            .push(format!("project {path}"));
        return fcm_error(404, "NOT_FOUND", "project not found", json!([]));
    }
    let invalid = |what: String| {
        inner.problems.lock().unwrap().push(what.clone());
        fcm_error(400, "INVALID_ARGUMENT", &what, json!([]))
    };
    if body.len() > 4096 {
        return invalid(format!("the message is {} bytes", body.len()));
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return invalid("not JSON".into());
    };
    let message = &message["message"];
    let Some(token) = message["token"].as_str() else {
        return invalid("no message.token".into());
    };
    let Some(data) = message["data"].as_object() else {
        return invalid("no message.data".into());
    };
    if let Some((key, _)) = data.iter().find(|(_, v)| !v.is_string()) {
        return invalid(format!("data.{key} is not a string"));
    }
    if message["android"]["priority"] != "HIGH" {
        return invalid(format!(
            "android.priority {}",
            message["android"]["priority"]
        ));
    }
    let scripted = inner.script.lock().unwrap().pop_front();
    if let Some(answer) = scripted {
        return match answer {
            FcmAnswer::Unregistered => fcm_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]),
            ),
            FcmAnswer::InvalidToken => fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                json!([
                    {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
                    {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}
                ]),
            ),
            FcmAnswer::TooMany { retry_after_secs } => HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", retry_after_secs.to_string()))
                .json(json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}})),
            FcmAnswer::Unavailable => fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", json!([])),
            FcmAnswer::Unauthenticated => {
                inner.issued.lock().unwrap().remove(&bearer);
                fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", json!([]))
            }
        };
    }
    inner.accepted.lock().unwrap().push(FcmMessage {
        token: token.to_owned(),
        data: data.clone(),
        raw: String::from_utf8_lossy(&body).into_owned(),
    });
    HttpResponse::Ok()
        .json(json!({"name": format!("projects/{PROJECT_ID}/messages/{}", rand::random::<u32>())}))
}
