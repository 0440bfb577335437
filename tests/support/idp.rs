//! The test IdP: `tests/idp/server.mjs` (oidc-provider) in a child process.
//! It exits when our end of its stdin closes, so it dies with the tests.
//!
//! Besides the authorization-code flow it speaks CIBA natively (poll and
//! ping); its simulated authentication device is driven through the
//! `/_test/ciba/...` hooks ([`TestIdp::ciba_requests`], [`TestIdp::approve`],
//! [`TestIdp::deny`], ...). See `tests/idp/README.md`.
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::pki::TestPki;

/// The CIBA grant type (CIBA Core §10.1).
pub use ciba_proto::CIBA_GRANT_TYPE;

pub struct TestIdp {
    pub issuer: String,
    child: Mutex<Child>,
    _stdin: ChildStdin,
}

#[derive(Deserialize)]
struct Ready {
    issuer: String,
}

/// An upstream client registered at the IdP (RFC 7591).
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    pub client_id: String,
    pub client_secret: String,
}

fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("idp")
}

impl TestIdp {
    /// Starts a fresh IdP on a free loopback port. It trusts the shared test
    /// CA ([`TestPki::shared`]) for its outgoing https calls (CIBA pings).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_env(&[])
    }

    /// Like [`TestIdp::start`], with extra environment for the node process.
    /// `NODE_EXTRA_CA_CERTS` is the test CA's file unless `env` sets it.
    /// With `CIBA_TEST_IDP_STDERR` set in the test's environment, the IdP's
    /// stderr (oidc-provider's logs) goes to the test's stderr.
    pub fn start_with_env(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = idp_dir();
        if !dir.join("node_modules/oidc-provider").exists() {
            bail!("the test IdP's packages are missing: run `make idp-deps` (npm ci in tests/idp)");
        }
        let stderr = if std::env::var_os("CIBA_TEST_IDP_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut command = Command::new("node");
        command
            .arg("server.mjs")
            .current_dir(&dir)
            .env("NODE_EXTRA_CA_CERTS", &TestPki::shared().ca_path);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("cannot start node; is Node.js installed?")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let ready: Ready = serde_json::from_str(&line)
            .with_context(|| format!("the test IdP did not start: {line:?}"))?;
        Ok(Self {
            issuer: ready.issuer,
            child: Mutex::new(child),
            _stdin: stdin,
        })
    }

    /// One IdP shared by every test in this process.
    pub fn shared() -> &'static TestIdp {
        static IDP: OnceLock<TestIdp> = OnceLock::new();
        IDP.get_or_init(|| TestIdp::start().expect("start the test IdP"))
    }

    /// Registers a confidential client whose redirect URI is `redirect_uri`.
    pub async fn register_client(&self, redirect_uri: &str) -> anyhow::Result<UpstreamClient> {
        let response: Value = reqwest::Client::new()
            .post(format!("{}/reg", self.issuer))
            .json(&json!({
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(UpstreamClient {
            client_id: response["client_id"]
                .as_str()
                .context("client_id")?
                .to_owned(),
            client_secret: response["client_secret"]
                .as_str()
                .context("client_secret")?
                .to_owned(),
        })
    }

    /// Registers a CIBA client (client_secret_basic; grant types CIBA and
    /// refresh_token, no redirect URIs). `delivery` is `"poll"` or `"ping"`;
    /// oidc-provider requires an https `notification_endpoint` for ping.
    pub async fn register_ciba_client(
        &self,
        delivery: &str,
        notification_endpoint: Option<&str>,
    ) -> anyhow::Result<UpstreamClient> {
        let mut metadata = json!({
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": [CIBA_GRANT_TYPE, "refresh_token"],
            "response_types": [],
            "redirect_uris": [],
            "backchannel_token_delivery_mode": delivery,
        });
        if let Some(endpoint) = notification_endpoint {
            metadata["backchannel_client_notification_endpoint"] = json!(endpoint);
        }
        let response = reqwest::Client::new()
            .post(format!("{}/reg", self.issuer))
            .json(&metadata)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("the IdP refused the CIBA client: {status} {body}");
        }
        Ok(UpstreamClient {
            client_id: body["client_id"].as_str().context("client_id")?.to_owned(),
            client_secret: body["client_secret"]
                .as_str()
                .context("client_secret")?
                .to_owned(),
        })
    }

    async fn get_hook<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = reqwest::get(format!("{}{path}", self.issuer)).await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("GET {path}: {status} {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GET {path}: {text}"))
    }

    async fn post_hook(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {path}: {text}"))
    }

    /// The CIBA requests waiting on the simulated authentication device.
    pub async fn ciba_requests(&self) -> anyhow::Result<Vec<CibaRequest>> {
        self.get_hook("/_test/ciba/requests").await
    }

    /// Every CIBA request the IdP accepted, approved and denied ones included.
    pub async fn all_ciba_requests(&self) -> anyhow::Result<Vec<CibaRequest>> {
        self.get_hook("/_test/ciba/requests?all").await
    }

    /// Waits for a pending CIBA request that `matches`.
    pub async fn wait_ciba_request(
        &self,
        matches: impl Fn(&CibaRequest) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<CibaRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let requests = self.ciba_requests().await?;
            if let Some(found) = requests.into_iter().find(|r| matches(r)) {
                return Ok(found);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no matching CIBA request reached the IdP within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a pending CIBA request from `client` (an upstream client).
    pub async fn wait_ciba_request_of(
        &self,
        client: &UpstreamClient,
        timeout: Duration,
    ) -> anyhow::Result<CibaRequest> {
        self.wait_ciba_request(|r| r.client_id == client.client_id, timeout)
            .await
    }

    /// Every POST /backchannel so far, whether the IdP accepted it or not.
    pub async fn ciba_attempts(&self) -> anyhow::Result<Vec<CibaAttempt>> {
        self.get_hook("/_test/ciba/attempts").await
    }

    /// The user approves: the grant covers every requested scope. With a
    /// ping client, the IdP pings before this returns.
    pub async fn approve(&self, id: &str) -> anyhow::Result<Approval> {
        self.approve_with(id, json!({})).await
    }

    /// Someone else (`account`) approves: the tokens and ID token are theirs.
    pub async fn approve_as(&self, id: &str, account: &str) -> anyhow::Result<Approval> {
        self.approve_with(id, json!({ "as": account })).await
    }

    /// Approves with the hook's options: `{"as": account, "scope": "granted
    /// subset", "id_token_claims": {name: value}}`; in `id_token_claims`, the
    /// value `"$auth_req_id"` is the request's own id.
    pub async fn approve_with(&self, id: &str, options: Value) -> anyhow::Result<Approval> {
        let reply = self
            .post_hook(&format!("/_test/ciba/{}/approve", encode(id)), options)
            .await?;
        Ok(serde_json::from_value(reply)?)
    }

    /// The next `times` token calls for request `id` answer `400 slow_down`
    /// (oidc-provider's own CIBA grant never does).
    pub async fn slow_down(&self, id: &str, times: u32) -> anyhow::Result<()> {
        self.post_hook(
            &format!("/_test/ciba/{}/slow_down", encode(id)),
            json!({ "times": times }),
        )
        .await?;
        Ok(())
    }

    /// The user denies: the token endpoint answers `access_denied`.
    pub async fn deny(&self, id: &str) -> anyhow::Result<Approval> {
        self.deny_with(
            id,
            "access_denied",
            "End-User denied the authorization request",
        )
        .await
    }

    /// Ends the request with this error (e.g. `transaction_failed`) instead.
    pub async fn deny_with(
        &self,
        id: &str,
        error: &str,
        description: &str,
    ) -> anyhow::Result<Approval> {
        let reply = self
            .post_hook(
                &format!("/_test/ciba/{}/deny", encode(id)),
                json!({ "error": error, "error_description": description }),
            )
            .await?;
        Ok(serde_json::from_value(reply)?)
    }

    /// For `duration`, every request except the `/_test/` hooks loses its
    /// connection without an answer (an unreachable IdP); then it serves again.
    pub async fn outage(&self, duration: Duration) -> anyhow::Result<()> {
        let ms = u64::try_from(duration.as_millis()).context("outage too long")?;
        self.post_hook("/_test/outage", json!({ "ms": ms })).await?;
        Ok(())
    }

    /// For `duration`, nothing listens on the IdP's port: connections are
    /// refused, as with a stopped IdP, and open ones are cut. Then it serves
    /// again with all its state. The hooks are unreachable meanwhile too.
    pub async fn refuse_connections(&self, duration: Duration) -> anyhow::Result<()> {
        let ms = u64::try_from(duration.as_millis()).context("outage too long")?;
        self.post_hook("/_test/outage", json!({ "ms": ms, "refuse": true }))
            .await?;
        Ok(())
    }

    /// For `duration`, every request except the hooks is read and counted
    /// but never answered (a hanging IdP); its connection is cut at the end.
    pub async fn hang(&self, duration: Duration) -> anyhow::Result<()> {
        let ms = u64::try_from(duration.as_millis()).context("outage too long")?;
        self.post_hook("/_test/outage", json!({ "ms": ms, "hang": true }))
            .await?;
        Ok(())
    }

    /// Every `POST /token` is counted on arrival and answered `delay` late
    /// (zero: at once again).
    pub async fn delay_token_answers(&self, delay: Duration) -> anyhow::Result<()> {
        let ms = u64::try_from(delay.as_millis()).context("delay too long")?;
        self.post_hook("/_test/token-delay", json!({ "ms": ms }))
            .await?;
        Ok(())
    }

    /// For `duration`, the IdP's address drops every new connection
    /// without an answer, as a firewall would (a blackholed IdP): connecting
    /// times out instead of being refused. Then the IdP serves again. Drop
    /// the returned guard before `duration` ends, so the IdP can listen.
    pub async fn blackhole(&self, duration: Duration) -> anyhow::Result<Blackhole> {
        let addr: std::net::SocketAddr = self
            .issuer
            .trim_start_matches("http://")
            .parse()
            .context("the issuer's host:port")?;
        self.refuse_connections(duration).await?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // A backlog of 0 holds one connection, never accepted; once it is
        // taken, the kernel drops every further SYN.
        let listener = socket.listen(0)?;
        let filler = std::net::TcpStream::connect(addr)?;
        Ok(Blackhole {
            _listener: listener,
            _filler: filler,
        })
    }

    /// Zeroes the request counters of [`TestIdp::stats`].
    pub async fn reset_stats(&self) -> anyhow::Result<()> {
        self.post_hook("/_test/reset", json!({})).await?;
        Ok(())
    }

    /// Ends an [`TestIdp::outage`] early.
    pub async fn end_outage(&self) -> anyhow::Result<()> {
        self.post_hook("/_test/outage", json!({ "ms": 0 })).await?;
        Ok(())
    }

    /// The ping notifications the IdP attempted, oldest first.
    pub async fn pings(&self) -> anyhow::Result<Vec<IdpPing>> {
        self.get_hook("/_test/pings").await
    }

    /// Every call to the revocation endpoint (RFC 7009), oldest first.
    pub async fn revocations(&self) -> anyhow::Result<Vec<Revocation>> {
        self.get_hook("/_test/revocations").await
    }

    /// Whether `token` (an access or refresh token) is still usable.
    pub async fn token_status(&self, token: &str) -> anyhow::Result<TokenStatus> {
        let reply = self
            .post_hook("/_test/token-status", json!({ "token": token }))
            .await?;
        Ok(serde_json::from_value(reply)?)
    }

    /// Requests the IdP has served, by "METHOD /path".
    pub async fn stats(&self) -> anyhow::Result<Stats> {
        Ok(reqwest::get(format!("{}/_test/stats", self.issuer))
            .await?
            .json()
            .await?)
    }

    /// Replaces the IdP's signing key; returns the new `kid`.
    pub async fn rotate_keys(&self) -> anyhow::Result<String> {
        let v: Value = reqwest::Client::new()
            .post(format!("{}/_test/rotate-keys", self.issuer))
            .send()
            .await?
            .json()
            .await?;
        Ok(v["kid"].as_str().context("kid")?.to_owned())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    pub total: u64,
    pub requests: std::collections::HashMap<String, u64>,
    /// Every `POST /token` since the last reset, oldest first.
    #[serde(default)]
    pub token_calls: Vec<TokenCall>,
}

impl Stats {
    pub fn count(&self, route: &str) -> u64 {
        self.requests.get(route).copied().unwrap_or(0)
    }

    /// When (ms since the epoch) the token calls for the IdP's request
    /// `auth_req_id` came, oldest first.
    pub fn token_calls_for(&self, auth_req_id: &str) -> Vec<u64> {
        self.token_calls
            .iter()
            .filter(|c| c.auth_req_id.as_deref() == Some(auth_req_id))
            .map(|c| c.at_ms)
            .collect()
    }
}

/// One `POST /token` the IdP got ([`Stats::token_calls`]).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenCall {
    pub at_ms: u64,
    pub grant_type: Option<String>,
    pub auth_req_id: Option<String>,
    pub status: Option<u16>,
    /// The error it answered, if any (`authorization_pending`, `slow_down`, ...).
    pub error: Option<String>,
}

fn encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A CIBA request waiting on the IdP's simulated authentication device
/// (`GET /_test/ciba/requests`). The hint fields are the values the IdP got.
#[derive(Debug, Clone, Deserialize)]
pub struct CibaRequest {
    /// The IdP's `auth_req_id`.
    pub id: String,
    /// `pending`, `approved`, `denied` or `expired` (never answered in time).
    pub status: String,
    /// The account the hint named.
    pub account: String,
    /// Who approved, when it was not `account` ([`TestIdp::approve_as`]).
    pub approved_as: Option<String>,
    pub client_id: String,
    pub login_hint: Option<String>,
    pub login_hint_token: Option<String>,
    pub id_token_hint: Option<String>,
    pub binding_message: Option<String>,
    pub user_code: Option<String>,
    pub request_context: Option<String>,
    pub client_notification_token: Option<String>,
    /// The scope the IdP kept (unknown scopes dropped).
    pub scope: Option<String>,
    pub acr_values: Option<String>,
    pub requested_expiry: Option<u64>,
    /// When the request expires (seconds since the epoch).
    pub expires_at: u64,
    /// The form body exactly as the client sent it, minus `client_secret`
    /// (a repeated parameter is a JSON array).
    pub form: serde_json::Map<String, Value>,
    /// oidc-provider's parameters after its checks (`client_id` added, unknown
    /// scopes dropped, ...).
    pub params: serde_json::Map<String, Value>,
}

/// One `POST /backchannel`, accepted or not (`GET /_test/ciba/attempts`).
#[derive(Debug, Clone, Deserialize)]
pub struct CibaAttempt {
    /// The form body exactly as the client sent it, minus `client_secret`.
    pub form: serde_json::Map<String, Value>,
    /// The authenticated client, if authentication got that far.
    pub client_id: Option<String>,
    pub status: u16,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub auth_req_id: Option<String>,
}

/// The approve/deny hooks' reply.
#[derive(Debug, Clone, Deserialize)]
pub struct Approval {
    /// Set when the outcome was saved but the ping to the client failed.
    pub ping_error: Option<String>,
}

/// A ping the IdP attempted (`GET /_test/pings`).
#[derive(Debug, Clone, Deserialize)]
pub struct IdpPing {
    pub url: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
    /// The notification endpoint's status, if it answered.
    pub status: Option<u16>,
    /// Why the ping failed, if it got no answer.
    pub error: Option<String>,
}

/// A call to the revocation endpoint (`GET /_test/revocations`).
#[derive(Debug, Clone, Deserialize)]
pub struct Revocation {
    pub client_id: Option<String>,
    pub token: Option<String>,
    pub token_type_hint: Option<String>,
    /// `AccessToken`, `RefreshToken`, or `None` for a token the IdP did not know.
    pub kind: Option<String>,
    pub status: u16,
}

/// `POST /_test/token-status`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenStatus {
    /// `AccessToken` or `RefreshToken`; `None` if unknown, expired or revoked.
    pub kind: Option<String>,
    pub active: bool,
}

impl TestIdp {
    /// Kills the IdP (an outage); it does not come back.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The IdP's address blackholed, until dropped ([`TestIdp::blackhole`]).
pub struct Blackhole {
    _listener: tokio::net::TcpListener,
    _filler: std::net::TcpStream,
}
