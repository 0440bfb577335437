//! A proxy started in-process on a free port, with its own store prefix,
//! its own upstream client registrations and its own simulated device.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ciba_proxy::clock::{Clock, ManualClock, SystemClock};
use ciba_proxy::configuration::Settings;
use ciba_proxy::startup::Application;
use reqwest::StatusCode;
use serde_json::Value;

use crate::balancer::Balancer;
use crate::device::Device;
use crate::idp::{TestIdp, UpstreamClient};
use crate::keys::TestKey;
use crate::pki::TestPki;

pub use ciba_proto::{CIBA_GRANT_TYPE as CIBA_GRANT, CLIENT_ASSERTION_TYPE as JWT_BEARER};

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn redis_url() -> String {
    std::env::var("CIBA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A consumption-device client to register at the proxy.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: &'static str,
    pub scope: String,
    /// The client must sign its requests with this algorithm.
    pub signing_alg: Option<String>,
    /// The client's registered public keys (JSON).
    pub jwks: Option<String>,
    /// private_key_jwt: the key the test signs client assertions with.
    pub key: Option<&'static TestKey>,
    /// `Some("fapi-ciba")` holds the client to the FAPI-CIBA profile.
    pub profile: Option<&'static str>,
    /// tls_client_auth: the registered subject DN.
    pub subject_dn: Option<String>,
    /// Ping mode: the client's notification endpoint.
    pub ping_endpoint: Option<String>,
}

impl ClientSpec {
    pub fn basic(client_id: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: format!("{client_id}-secret"),
            auth_method: "client_secret_basic",
            scope: "openid profile email".into(),
            signing_alg: None,
            jwks: None,
            key: None,
            profile: None,
            subject_dn: None,
            ping_endpoint: None,
        }
    }

    pub fn post(client_id: &str) -> Self {
        Self {
            auth_method: "client_secret_post",
            ..Self::basic(client_id)
        }
    }

    /// Registers the client in ping mode with this notification endpoint.
    pub fn ping(mut self, endpoint: &str) -> Self {
        self.ping_endpoint = Some(endpoint.to_owned());
        self
    }

    pub fn signing(mut self, alg: &str, jwks: String) -> Self {
        self.signing_alg = Some(alg.to_owned());
        self.jwks = Some(jwks);
        self
    }

    /// A client that authenticates with assertions signed by `key` (RFC 7523).
    pub fn private_key_jwt(client_id: &str, key: &'static TestKey) -> Self {
        Self {
            auth_method: "private_key_jwt",
            jwks: Some(key.jwks()),
            key: Some(key),
            ..Self::basic(client_id)
        }
    }

    /// RFC 8705 §2.1: a certificate from the test CA with this subject.
    pub fn tls_client_auth(client_id: &str, subject_dn: &str) -> Self {
        Self {
            auth_method: "tls_client_auth",
            subject_dn: Some(subject_dn.to_owned()),
            ..Self::basic(client_id)
        }
    }

    /// RFC 8705 §2.2: the self-signed certificate registered in `jwks` (x5c).
    pub fn self_signed_tls_client_auth(client_id: &str, jwks: String) -> Self {
        Self {
            auth_method: "self_signed_tls_client_auth",
            jwks: Some(jwks),
            ..Self::basic(client_id)
        }
    }

    /// Holds the client to the FAPI-CIBA profile.
    pub fn fapi(mut self) -> Self {
        self.profile = Some("fapi-ciba");
        self
    }

    fn uses_secret(&self) -> bool {
        self.auth_method.starts_with("client_secret")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

pub struct TestAppBuilder {
    store: StoreKind,
    clients: Vec<ClientSpec>,
    manual_clock: bool,
    idp: Option<&'static TestIdp>,
    ciba: (u64, u64, u64),
    extra_toml: String,
    lease_ms: u64,
    redis_url: Option<String>,
    sections: String,
    https: bool,
    /// Native CIBA at the IdP: `Some("poll")` or `Some("ping")`.
    ciba_upstream: Option<&'static str>,
    notifier_toml: String,
    /// `[[notifier.channels]]` entries instead of the single webhook.
    channels_toml: Option<String>,
    client_toml: String,
    ciba_toml: String,
    /// `[account]`: extra keys, when the account page is on.
    account_toml: Option<String>,
    store_toml: String,
}

impl Default for TestAppBuilder {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            clients: vec![ClientSpec::basic("shop")],
            manual_clock: false,
            idp: None,
            ciba: (120, 600, 1),
            extra_toml: String::new(),
            lease_ms: 2000,
            redis_url: None,
            sections: String::new(),
            https: false,
            ciba_upstream: None,
            notifier_toml: String::new(),
            channels_toml: None,
            client_toml: String::new(),
            ciba_toml: String::new(),
            account_toml: None,
            store_toml: String::new(),
        }
    }
}

impl TestAppBuilder {
    pub fn store(mut self, store: StoreKind) -> Self {
        self.store = store;
        self
    }
    pub fn clients(mut self, clients: Vec<ClientSpec>) -> Self {
        self.clients = clients;
        self
    }
    pub fn manual_clock(mut self) -> Self {
        self.manual_clock = true;
        self
    }
    /// Use this IdP instead of the shared one (e.g. to count its requests).
    pub fn idp(mut self, idp: &'static TestIdp) -> Self {
        self.idp = Some(idp);
        self
    }
    /// `(expires_in, max_expires_in, interval)` in seconds.
    pub fn ciba(mut self, expires_in: u64, max_expires_in: u64, interval: u64) -> Self {
        self.ciba = (expires_in, max_expires_in, interval);
        self
    }
    /// Terminate TLS in the proxy with the test PKI's server certificate,
    /// trusting its CA for tls_client_auth.
    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }
    /// Extra TOML sections (e.g. `[hints]`), appended before the clients.
    pub fn sections(mut self, toml: &str) -> Self {
        self.sections = toml.to_owned();
        self
    }
    /// Use the Redis at `url` (e.g. one the test stops and restarts).
    pub fn redis_at(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }
    /// How long a job lease lasts (how soon a dead instance's work is retried).
    pub fn lease_ms(mut self, lease_ms: u64) -> Self {
        self.lease_ms = lease_ms;
        self
    }
    /// Drive the IdP through its own CIBA (`upstream.kind = "ciba"`) with
    /// this delivery, `"poll"` or `"ping"`. Ping needs [`Self::https`]: the
    /// IdP only pings https endpoints.
    pub fn ciba_upstream(mut self, delivery: &'static str) -> Self {
        self.ciba_upstream = Some(delivery);
        self
    }
    /// Appended to the generated upstream section (e.g. `subject_claim = "email"`).
    pub fn upstream_toml(mut self, toml: &str) -> Self {
        self.extra_toml = toml.to_owned();
        self
    }
    /// Appended to the generated notifier section.
    pub fn notifier_toml(mut self, toml: &str) -> Self {
        self.notifier_toml = toml.to_owned();
        self
    }
    /// `[[notifier.channels]]` entries instead of the single-webhook
    /// `[notifier]`; `DEVICE_URL` and `DEVICE_SECRET` in `toml` become the
    /// simulated device's webhook URL and secret.
    pub fn channels(mut self, toml: &str) -> Self {
        self.channels_toml = Some(toml.to_owned());
        self
    }

    /// Appended to the generated `[store]` section (e.g. `ca_file = "..."`).
    pub fn store_toml(mut self, toml: &str) -> Self {
        self.store_toml = toml.to_owned();
        self
    }

    /// Appended to the generated `[ciba]` section (e.g. `long_poll_secs = 5`).
    pub fn ciba_toml(mut self, toml: &str) -> Self {
        self.ciba_toml = toml.to_owned();
        self
    }
    /// Appended to the generated `[[clients]]` entry of each client.
    pub fn client_toml(mut self, toml: &str) -> Self {
        self.client_toml = toml.to_owned();
        self
    }

    /// Turns the account page on: registers its client at the IdP (redirect
    /// URI `{issuer}/account/callback`) and writes `[account]` with it and
    /// `toml` (e.g. `history_days = 1`).
    pub fn account(mut self, toml: &str) -> Self {
        self.account_toml = Some(toml.to_owned());
        self
    }

    /// Everything a proxy needs: device, upstream registrations, settings.
    /// `issuer`: the public URL when it is not this proxy's own port (a balancer).
    async fn prepare(&self, issuer: Option<String>) -> Prepared {
        let idp = self.idp.unwrap_or_else(TestIdp::shared);
        let device = Device::start().await.expect("start the device");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let scheme = if self.https { "https" } else { "http" };
        let issuer = issuer.unwrap_or_else(|| format!("{scheme}://127.0.0.1:{port}"));
        let prefix = format!("test-{}", rand::random::<u64>());
        let key = STANDARD.encode(rand::random::<[u8; 32]>());
        let store_url = match (&self.redis_url, self.store) {
            (Some(url), _) => url.clone(),
            (None, StoreKind::Memory) => "memory://".to_owned(),
            (None, StoreKind::Redis) => redis_url(),
        };
        let (expires_in, max_expires_in, interval) = self.ciba;
        let mut toml = format!(
            r#"
            [server]
            bind = "127.0.0.1:{port}"
            issuer = "{issuer}"
            [store]
            url = "{store_url}"
            key_prefix = "{prefix}"
            {store_extra}
            [ciba]
            expires_in = {expires_in}
            max_expires_in = {max_expires_in}
            interval = {interval}
            token_encryption_key = "{key}"
            allow_http_notification_endpoints = true
            {ciba_extra}
            [upstream]
            issuer = "{idp_issuer}"
            {kind}
            {extra}
            [notifier]
            {notifier_extra}
            {notifier_form}
            [worker]
            lease_ms = {lease_ms}
            poll_ms = 50
            "#,
            lease_ms = self.lease_ms,
            store_extra = self.store_toml,
            idp_issuer = idp.issuer,
            kind = match self.ciba_upstream {
                Some(delivery) => format!("kind = \"ciba\"\ndelivery = \"{delivery}\""),
                None => String::new(),
            },
            extra = self.extra_toml,
            notifier_form = match &self.channels_toml {
                Some(channels) => channels
                    .replace("DEVICE_URL", &device.url)
                    .replace("DEVICE_SECRET", &device.secret),
                None => format!(
                    "kind = \"webhook\"\nurl = \"{}\"\nsecret = \"{}\"",
                    device.url, device.secret
                ),
            },
            notifier_extra = self.notifier_toml,
            ciba_extra = self.ciba_toml,
        );
        if self.https {
            let pki = TestPki::shared();
            toml.push_str(&format!(
                "[server.tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n[mtls]\nca = \"{}\"\n",
                pki.server.cert_path.display(),
                pki.server.key_path.display(),
                pki.ca_path.display()
            ));
        }
        toml.push_str(&self.sections);
        toml.push('\n');
        let mut secrets = vec![key, device.secret.clone()];
        if let Some(extra) = &self.account_toml {
            let account = idp
                .register_client(&format!("{issuer}/account/callback"))
                .await
                .expect("register the account page's client");
            toml.push_str(&format!(
                "[account]\nupstream_client_id = \"{}\"\nupstream_client_secret = \"{}\"\n{extra}\n",
                account.client_id, account.client_secret
            ));
            secrets.push(account.client_secret);
        }
        let mut upstream_clients = Vec::new();
        for c in &self.clients {
            let upstream = match self.ciba_upstream {
                Some(delivery) => {
                    let ping = format!("{issuer}/upstream/ping");
                    idp.register_ciba_client(
                        delivery,
                        (delivery == "ping").then_some(ping.as_str()),
                    )
                    .await
                }
                None => idp.register_client(&format!("{issuer}/callback")).await,
            }
            .expect("register the upstream client");
            toml.push_str(&format!(
                "[[clients]]\nclient_id = \"{}\"\ntoken_endpoint_auth_method = \"{}\"\nscope = \"{}\"\nupstream_client_id = \"{}\"\nupstream_client_secret = \"{}\"\n",
                c.client_id, c.auth_method, c.scope, upstream.client_id, upstream.client_secret
            ));
            if c.uses_secret() {
                toml.push_str(&format!("client_secret = \"{}\"\n", c.client_secret));
            }
            toml.push_str(&self.client_toml);
            toml.push('\n');
            if let Some(dn) = &c.subject_dn {
                toml.push_str(&format!("tls_client_auth_subject_dn = \"{dn}\"\n"));
            }
            if let Some(profile) = c.profile {
                toml.push_str(&format!("profile = \"{profile}\"\n"));
            }
            if let Some(jwks) = &c.jwks {
                toml.push_str(&format!("jwks = '{jwks}'\n"));
            }
            if let Some(endpoint) = &c.ping_endpoint {
                toml.push_str(&format!(
                    "backchannel_token_delivery_mode = \"ping\"\nbackchannel_client_notification_endpoint = \"{endpoint}\"\n"
                ));
            }
            if let Some(alg) = &c.signing_alg {
                toml.push_str(&format!(
                    "backchannel_authentication_request_signing_alg = \"{alg}\"\n"
                ));
            }
            if c.uses_secret() {
                secrets.push(c.client_secret.clone());
            }
            secrets.push(upstream.client_secret.clone());
            upstream_clients.push(upstream);
        }
        Prepared {
            upstream_clients,
            toml,
            issuer,
            prefix,
            idp,
            device,
            listener: Some(listener),
            secrets,
        }
    }

    /// Starts the proxy inside this process (the common case).
    pub async fn spawn(self) -> TestApp {
        let mut prepared = self.prepare(None).await;
        let listener = prepared.listener.take().expect("a listener");
        let settings = Settings::from_toml(&prepared.toml).expect("test settings");
        let manual = self.manual_clock.then(ManualClock::default);
        let clock: Arc<dyn Clock> = match &manual {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let app = Application::build_with(settings, listener, clock)
            .await
            .expect("build the proxy");
        tokio::spawn(app.run_until_stopped());
        TestApp::new(prepared, manual, self.clients)
    }

    /// Starts the real `ciba-proxy` binary with a config file and `env`;
    /// its log lines go to a file the test can read.
    pub async fn spawn_process(self, env: &[(&str, &str)]) -> (TestApp, ProxyProcess) {
        self.spawn_process_until(env, "/readyz").await
    }

    /// [`Self::spawn_process`] for a proxy that is expected not to become
    /// ready (its IdP is misconfigured): waits only until it answers.
    pub async fn spawn_process_unready(self, env: &[(&str, &str)]) -> (TestApp, ProxyProcess) {
        self.spawn_process_until(env, "/healthz").await
    }

    async fn spawn_process_until(
        self,
        env: &[(&str, &str)],
        probe: &str,
    ) -> (TestApp, ProxyProcess) {
        let mut prepared = self.prepare(None).await;
        let config = write_config(&prepared.toml);
        // Free the port for the child; it binds it from the config.
        drop(prepared.listener.take());
        let process = ProxyProcess::start(&config, None, env);
        let app = TestApp::new(prepared, None, self.clients);
        process.wait_for(&app.http, probe).await;
        (app, process)
    }

    /// Starts `n` `ciba-proxy` processes sharing one configuration and one
    /// Redis behind a round-robin balancer whose URL is the public issuer:
    /// the executable twin of `deploy/docker-compose.yml`.
    pub async fn spawn_cluster(self, n: usize) -> Cluster {
        self.spawn_cluster_with_env(n, &[]).await
    }

    /// [`Self::spawn_cluster`] with extra environment for every process.
    pub async fn spawn_cluster_with_env(self, n: usize, env: &[(&str, &str)]) -> Cluster {
        let ports: Vec<u16> = (0..n)
            .map(|_| {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let backends = ports.iter().map(|p| ([127, 0, 0, 1], *p).into()).collect();
        let balancer = Balancer::start(backends).await.expect("start the balancer");
        let prepared = self.prepare(Some(balancer.url())).await;
        let config = write_config(&prepared.toml);
        let processes: Vec<ProxyProcess> = ports
            .iter()
            .map(|port| ProxyProcess::start(&config, Some(format!("127.0.0.1:{port}")), env))
            .collect();
        let app = TestApp::new(prepared, None, self.clients);
        for process in &processes {
            process.wait_ready(&app.http).await;
        }
        Cluster {
            app,
            processes,
            balancer,
        }
    }
}

/// Waits, when fewer than 12 s are left in this calendar minute, until the
/// next one starts: the proxy's per-minute limits count in calendar-minute
/// windows, so a test that expects a 429 must not straddle two of them.
pub async fn clear_of_a_minute_boundary() {
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis()
        % 60_000;
    let left = 60_000 - into_minute;
    if left < 12_000 {
        tokio::time::sleep(std::time::Duration::from_millis(left as u64 + 50)).await;
    }
}

/// Several proxy processes behind one balancer.
pub struct Cluster {
    /// Talks to the balancer.
    pub app: TestApp,
    pub processes: Vec<ProxyProcess>,
    pub balancer: Balancer,
}

fn write_config(toml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ciba-proxy-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).unwrap();
    config
}

struct Prepared {
    upstream_clients: Vec<UpstreamClient>,
    toml: String,
    issuer: String,
    prefix: String,
    idp: &'static TestIdp,
    device: Device,
    listener: Option<TcpListener>,
    secrets: Vec<String>,
}

/// The `ciba-proxy` binary next to this test executable (built by `make test`).
pub fn binary_path() -> PathBuf {
    // target/debug/deps/api-<hash> → target/debug/ciba-proxy
    let mut path = std::env::current_exe().expect("current exe");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.push("ciba-proxy");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p ciba-proxy` (make test does)",
        path.display()
    );
    path
}

/// A running `ciba-proxy` process; killed when dropped.
pub struct ProxyProcess {
    child: Child,
    log: PathBuf,
    /// Its own address (`server.bind`).
    pub url: String,
}

impl ProxyProcess {
    /// Runs the binary on `config`, optionally binding `bind` instead of
    /// the configured address.
    fn start(config: &std::path::Path, bind: Option<String>, env: &[(&str, &str)]) -> Self {
        let log = config.with_file_name(format!("proxy-{}.log", rand::random::<u32>()));
        let mut cmd = std::process::Command::new(binary_path());
        cmd.arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let url = match &bind {
            Some(addr) => {
                cmd.env("CIBA_PROXY__SERVER__BIND", addr);
                format!("http://{addr}")
            }
            None => {
                let toml = std::fs::read_to_string(config).unwrap();
                let settings = Settings::from_toml(&toml).unwrap();
                format!("http://{}", settings.server.bind)
            }
        };
        let child = cmd.spawn().expect("start ciba-proxy");
        Self { child, log, url }
    }

    async fn wait_ready(&self, http: &reqwest::Client) {
        self.wait_for(http, "/readyz").await
    }

    /// Waits until `probe` answers 200.
    async fn wait_for(&self, http: &reqwest::Client, probe: &str) {
        for _ in 0..200 {
            let ready = http.get(format!("{}{probe}", self.url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("ciba-proxy did not answer {probe}; log: {}", self.logs());
    }

    /// SIGTERM: the instance is asked to stop gracefully.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit; its exit code, if it did.
    pub async fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        None
    }

    /// SIGKILL: the instance dies without a chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its process id (the bench reads its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct TestApp {
    pub issuer: String,
    /// Every secret the test configured (keys, client secrets, webhook secret).
    pub secrets: Vec<String>,
    /// This proxy's Redis key prefix.
    pub prefix: String,
    pub idp: &'static TestIdp,
    pub device: Device,
    pub clock: Option<ManualClock>,
    pub clients: Vec<ClientSpec>,
    /// The registrations at the IdP, one per client, in the same order.
    pub upstream_clients: Vec<UpstreamClient>,
    pub http: reqwest::Client,
}

/// A response as the client sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The reply to a request the test sent itself.
    pub async fn read(response: reqwest::Response) -> Self {
        Self::from(response).await
    }

    async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Self {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("<none>")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a spec error response: status, code and a description.
    #[track_caller]
    pub fn assert_error(&self, status: u16, error: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.error(), error, "{self:?}");
        assert!(
            self.body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "error_description missing: {self:?}"
        );
    }
}

impl TestApp {
    fn new(prepared: Prepared, clock: Option<ManualClock>, clients: Vec<ClientSpec>) -> Self {
        Self {
            issuer: prepared.issuer,
            secrets: prepared.secrets,
            prefix: prepared.prefix,
            idp: prepared.idp,
            device: prepared.device,
            clock,
            clients,
            upstream_clients: prepared.upstream_clients,
            // No idle connections: behind a balancer every request may land
            // on another instance.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .add_root_certificate(TestPki::shared().ca_certificate())
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
        }
    }

    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    fn client(&self, client_id: &str) -> &ClientSpec {
        self.clients
            .iter()
            .find(|c| c.client_id == client_id)
            .expect("a registered test client")
    }

    /// POSTs a form to `path`, authenticating as `client_id` its registered way.
    pub async fn post_as(&self, client_id: &str, path: &str, params: &[(&str, &str)]) -> Reply {
        self.send_as(client_id, self.http.post(self.url(path)), path, params)
            .await
    }

    /// [`Self::poll`] on a connection of its own (closed after the answer):
    /// the server hands each new connection to its next worker thread.
    pub async fn poll_on_a_new_connection(&self, client_id: &str, auth_req_id: &str) -> Reply {
        let request = self
            .http
            .post(self.url("/token"))
            .header(reqwest::header::CONNECTION, "close");
        self.send_as(
            client_id,
            request,
            "/token",
            &[("grant_type", CIBA_GRANT), ("auth_req_id", auth_req_id)],
        )
        .await
    }

    /// `request` to `path`, authenticated as `client_id`, with `params`.
    async fn send_as(
        &self,
        client_id: &str,
        request: reqwest::RequestBuilder,
        path: &str,
        params: &[(&str, &str)],
    ) -> Reply {
        let c = self.client(client_id);
        let request = if c.auth_method == "client_secret_basic" {
            request
                .basic_auth(&c.client_id, Some(&c.client_secret))
                .form(params)
        } else if c.auth_method == "private_key_jwt" {
            let assertion = self.client_assertion(client_id, &self.url(path));
            let mut all = vec![
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion.as_str()),
            ];
            all.extend_from_slice(params);
            request.form(&all)
        } else {
            let mut all = vec![
                ("client_id", c.client_id.as_str()),
                ("client_secret", c.client_secret.as_str()),
            ];
            all.extend_from_slice(params);
            request.form(&all)
        };
        Reply::from(request.send().await.expect("request")).await
    }

    /// RFC 7523 claims for `client_id` with audience `aud`.
    pub fn assertion_claims(&self, client_id: &str, aud: &str) -> Value {
        let now = now_secs();
        serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "iat": now,
            "exp": now + 60,
            "jti": format!("jti-{}", rand::random::<u64>()),
        })
    }

    /// A fresh client assertion for `client_id`, signed with its test key.
    pub fn client_assertion(&self, client_id: &str, aud: &str) -> String {
        let key = self
            .client(client_id)
            .key
            .expect("a private_key_jwt test client");
        key.sign(&self.assertion_claims(client_id, aud))
    }

    pub async fn bc_authorize(&self, client_id: &str, params: &[(&str, &str)]) -> Reply {
        self.post_as(client_id, "/bc-authorize", params).await
    }

    /// Starts a request for `login_hint` and returns its auth_req_id.
    pub async fn start(&self, client_id: &str, login_hint: &str) -> String {
        let reply = self
            .bc_authorize(
                client_id,
                &[
                    ("scope", "openid profile"),
                    ("login_hint", login_hint),
                    ("binding_message", "W4SCT"),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.body["auth_req_id"]
            .as_str()
            .expect("auth_req_id")
            .to_owned()
    }

    pub async fn poll(&self, client_id: &str, auth_req_id: &str) -> Reply {
        self.post_as(
            client_id,
            "/token",
            &[("grant_type", CIBA_GRANT), ("auth_req_id", auth_req_id)],
        )
        .await
    }

    /// Polls as `client_id` (at a 1 s interval) until the answer is no
    /// longer pending, for up to about 40 s.
    pub async fn poll_until_decided(&self, client_id: &str, auth_req_id: &str) -> Reply {
        for _ in 0..36 {
            let reply = self.poll(client_id, auth_req_id).await;
            if !matches!(reply.error(), "authorization_pending" | "slow_down") {
                return reply;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        panic!("the login {auth_req_id} was never decided");
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(self.http.get(self.url(path)).send().await.expect("request")).await
    }

    /// Moves the manual clock (tests built with `manual_clock()`).
    pub fn advance(&self, secs: u64) {
        self.clock
            .as_ref()
            .expect("built with manual_clock()")
            .advance_secs(secs);
    }
}
