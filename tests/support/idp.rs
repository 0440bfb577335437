//! The test IdP: `tests/idp/server.mjs` (oidc-provider) in a child process.
//! It exits when our end of its stdin closes, so it dies with the tests.
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};

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
    /// Starts a fresh IdP on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        let dir = idp_dir();
        if !dir.join("node_modules/oidc-provider").exists() {
            bail!("the test IdP's packages are missing: run `make idp-deps` (npm ci in tests/idp)");
        }
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
}

impl Stats {
    pub fn count(&self, route: &str) -> u64 {
        self.requests.get(route).copied().unwrap_or(0)
    }
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
