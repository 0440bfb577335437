//! A local RFC 8030 push service, as a browser vendor runs one, for the Web
//! Push channel's tests. It hands out subscriptions (an endpoint, and the
//! user agent's P-256 key and auth secret), checks each push's VAPID
//! authorization (RFC 8292: the ES256 JWT verified against `k`, `aud` = its
//! origin, `exp` within 24 hours) and decrypts the body as the user agent
//! would (RFC 8291 / RFC 8188 `aes128gcm`). The decryption is written here
//! from the RFCs, independently of the proxy's encryption. Answers can be
//! scripted per subscription.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hkdf::Hkdf;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::server::TestServer;

/// A subscription as a device registers it (`{endpoint, keys: {p256dh, auth}}`).
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

impl Subscription {
    /// The JSON a browser's `PushSubscription.toJSON()` gives.
    pub fn json(&self) -> Value {
        json!({"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}})
    }
}

/// One push the service took and decrypted.
#[derive(Debug, Clone)]
pub struct Push {
    pub subscription: String,
    /// The decrypted body, as JSON.
    pub payload: Value,
    pub ttl: Option<u64>,
    pub urgency: Option<String>,
    /// The VAPID JWT's `sub`.
    pub vapid_subject: String,
}

struct UserAgent {
    secret: SecretKey,
    auth: [u8; 16],
}

#[derive(Default)]
struct Inner {
    origin: Mutex<String>,
    agents: Mutex<HashMap<String, UserAgent>>,
    script: Mutex<HashMap<String, VecDeque<u16>>>,
    pushes: Mutex<Vec<Push>>,
    attempts: Mutex<HashMap<String, u32>>,
    problems: Mutex<Vec<String>>,
}

pub struct PushService {
    pub origin: String,
    inner: Arc<Inner>,
    _server: TestServer,
}

impl PushService {
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        let server = TestServer::start(inner.clone(), |routes| {
            routes.route("/push/{id}", web::post().to(push));
        })?;
        let origin = format!("http://127.0.0.1:{}", server.port);
        *inner.origin.lock().unwrap() = origin.clone();
        Ok(Self {
            origin,
            inner,
            _server: server,
        })
    }

    /// A new subscription, as a user agent makes one.
    pub fn subscribe(&self) -> Subscription {
        let id = format!("{:016x}", rand::random::<u64>());
        let secret = SecretKey::random(&mut rand::rngs::OsRng);
        let auth: [u8; 16] = rand::random();
        let subscription = Subscription {
            endpoint: format!("{}/push/{id}", self.origin),
            p256dh: B64.encode(secret.public_key().to_encoded_point(false).as_bytes()),
            auth: B64.encode(auth),
            id: id.clone(),
        };
        self.inner
            .agents
            .lock()
            .unwrap()
            .insert(id, UserAgent { secret, auth });
        subscription
    }

    /// Answers the next pushes to `subscription` with these statuses, in order.
    pub fn script(&self, subscription: &Subscription, statuses: &[u16]) {
        self.inner
            .script
            .lock()
            .unwrap()
            .entry(subscription.id.clone())
            .or_default()
            .extend(statuses);
    }

    pub fn pushes(&self, subscription: &Subscription) -> Vec<Push> {
        let pushes = self.inner.pushes.lock().unwrap();
        pushes
            .iter()
            .filter(|p| p.subscription == subscription.id)
            .cloned()
            .collect()
    }

    /// How many pushes to `subscription` arrived, whatever the answer.
    pub fn attempts(&self, subscription: &Subscription) -> u32 {
        *self
            .inner
            .attempts
            .lock()
            .unwrap()
            .get(&subscription.id)
            .unwrap_or(&0)
    }

    pub fn problems(&self) -> Vec<String> {
        self.inner.problems.lock().unwrap().clone()
    }

    pub async fn wait_for_push(&self, subscription: &Subscription) -> Push {
        for _ in 0..600 {
            if let Some(push) = self.pushes(subscription).into_iter().next() {
                return push;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no push arrived; problems: {:?}", self.problems());
    }

    pub async fn wait_for_attempts(&self, subscription: &Subscription, n: u32) {
        for _ in 0..600 {
            if self.attempts(subscription) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} pushes arrived");
    }
}

/// RFC 8292 §3: `vapid t=<jwt>, k=<key>`; returns the JWT's `sub`.
fn check_vapid(header: &str, origin: &str) -> Result<String, String> {
    let rest = header
        .strip_prefix("vapid ")
        .ok_or("not the vapid scheme")?;
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=').ok_or("a bad parameter")?;
        match name {
            "t" => t = Some(value),
            "k" => k = Some(value),
            _ => {}
        }
    }
    let (t, k) = (t.ok_or("no t")?, k.ok_or("no k")?);
    let key = B64.decode(k).map_err(|_| "k is not base64url")?;
    let key = VerifyingKey::from_sec1_bytes(&key).map_err(|_| "k is not a P-256 key")?;
    let mut parts = t.split('.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s)) => (h, p, s),
        _ => return Err("t is not a JWS".into()),
    };
    let header: Value =
        serde_json::from_slice(&B64.decode(h).map_err(|_| "header")?).map_err(|_| "header JSON")?;
    if header["alg"] != "ES256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let signature = Signature::from_slice(&B64.decode(s).map_err(|_| "signature")?)
        .map_err(|_| "signature length")?;
    key.verify(format!("{h}.{p}").as_bytes(), &signature)
        .map_err(|_| "the signature does not verify against k")?;
    let claims: Value =
        serde_json::from_slice(&B64.decode(p).map_err(|_| "claims")?).map_err(|_| "claims JSON")?;
    if claims["aud"] != origin {
        return Err(format!("aud {} is not {origin}", claims["aud"]));
    }
    let now = crate::app::now_secs();
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!("exp {exp} is not within 24 hours of now {now}"));
    }
    let sub = claims["sub"].as_str().ok_or("no sub")?;
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err(format!("sub {sub}"));
    }
    Ok(sub.to_owned())
}

/// RFC 8291 §3.4 and RFC 8188 §2: the user agent's side.
fn decrypt(body: &[u8], agent: &UserAgent) -> Result<Vec<u8>, String> {
    if body.len() < 21 {
        return Err("shorter than the header".into());
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
    let idlen = body[20] as usize;
    let keyid = body.get(21..21 + idlen).ok_or("no keyid")?;
    let ciphertext = &body[21 + idlen..];
    if ciphertext.len() > rs {
        return Err("more than one record".into());
    }
    let as_public = PublicKey::from_sec1_bytes(keyid).map_err(|_| "keyid is not a P-256 key")?;
    let ua_public = agent.secret.public_key().to_encoded_point(false);
    let shared =
        p256::ecdh::diffie_hellman(agent.secret.to_nonzero_scalar(), as_public.as_affine());
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(ua_public.as_bytes());
    info.extend_from_slice(keyid);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&agent.auth), shared.raw_secret_bytes())
        .expand(&info, &mut ikm)
        .map_err(|_| "hkdf")?;
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|_| "hkdf")?;
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|_| "hkdf")?;
    let mut plain = Aes128Gcm::new_from_slice(&cek)
        .map_err(|_| "key")?
        .decrypt(Nonce::from_slice(&nonce), ciphertext)
        .map_err(|_| "the body does not decrypt")?;
    // Padding: zeros after the delimiter, 2 for the last record.
    while plain.last() == Some(&0) {
        plain.pop();
    }
    match plain.pop() {
        Some(2) => Ok(plain),
        other => Err(format!("delimiter {other:?}")),
    }
}

async fn push(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    inner: web::Data<Inner>,
) -> HttpResponse {
    let id = path.into_inner();
    *inner
        .attempts
        .lock()
        .unwrap()
        .entry(id.clone())
        .or_default() += 1;
    let problem = |what: String| {
        inner.problems.lock().unwrap().push(what.clone());
        HttpResponse::BadRequest().body(what)
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let origin = inner.origin.lock().unwrap().clone();
    let subject = match check_vapid(&header("Authorization").unwrap_or_default(), &origin) {
        Ok(sub) => sub,
        Err(e) => {
            inner.problems.lock().unwrap().push(format!("VAPID: {e}"));
            return HttpResponse::Unauthorized().finish();
        }
    };
    if header("Content-Encoding").as_deref() != Some("aes128gcm") {
        return problem(format!("Content-Encoding {:?}", header("Content-Encoding")));
    }
    let Some(ttl) = header("TTL").and_then(|t| t.parse::<u64>().ok()) else {
        return problem("no TTL".into());
    };
    if let Some(status) = inner
        .script
        .lock()
        .unwrap()
        .get_mut(&id)
        .and_then(|s| s.pop_front())
    {
        let mut answer =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
        if status == 429 {
            answer.insert_header(("Retry-After", "1"));
        }
        return answer.finish();
    }
    let decrypted = {
        let agents = inner.agents.lock().unwrap();
        let Some(agent) = agents.get(&id) else {
            return HttpResponse::NotFound().finish();
        };
        decrypt(&body, agent)
    };
    let plain = match decrypted {
        Ok(plain) => plain,
        Err(e) => return problem(format!("decrypt: {e}")),
    };
    let payload = match serde_json::from_slice(&plain) {
        Ok(payload) => payload,
        Err(_) => return problem("the payload is not JSON".into()),
    };
    inner.pushes.lock().unwrap().push(Push {
        subscription: id,
        payload,
        ttl: Some(ttl),
        urgency: header("Urgency"),
        vapid_subject: subject,
    });
    HttpResponse::Created().finish()
}
