//! Settings: a TOML file, then `CIBA_PROXY__SECTION__KEY` environment
//! variables. Unknown keys are rejected so that a typo in a security setting
//! cannot pass unnoticed. Values that need parsing (keys, JWKS, algorithms)
//! are checked where they are turned into their runtime types; every such
//! failure is a [`ConfigError`] that names the key.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// A configuration problem, rendered as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    #[serde(default)]
    pub store: StoreSettings,
    pub ciba: CibaSettings,
    pub upstream: UpstreamSettings,
    /// Required with `upstream.kind = "authorization_code"`; with `"ciba"`
    /// the IdP reaches the user itself, and the notifier only delivers a
    /// link the IdP hands back (WSO2 IS's `auth_url`).
    pub notifier: Option<NotifierSettings>,
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub worker: WorkerSettings,
    #[serde(default)]
    pub hints: HintSettings,
    #[serde(default)]
    pub limits: LimitSettings,
    #[serde(default)]
    pub mtls: MtlsSettings,
    #[serde(default)]
    pub input: InputSettings,
    #[serde(default)]
    pub pages: PageSettings,
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// Off unless present; needs `[metrics] bind`.
    pub admin: Option<AdminSettings>,
    /// The user's account page at `/account`; off (404) unless present.
    pub account: Option<AccountSettings>,
}

/// `[account]`: the user's account page. The user signs in at the IdP with
/// this registration (authorization code, PKCE), whose redirect URI is
/// `{server.issuer}/account/callback`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    pub upstream_client_id: String,
    pub upstream_client_secret: SecretString,
    /// What the sign-in asks for; the ID token's `email` claim is the
    /// user's e-mail address.
    #[serde(default = "default_account_scope")]
    pub scope: String,
    /// How long the history of decided requests is kept, days.
    #[serde(default = "default_history_days")]
    pub history_days: u64,
    /// How long a device-registration QR code's challenge lives, seconds.
    #[serde(default = "default_challenge_ttl_secs")]
    pub challenge_ttl_secs: u64,
    /// How long a sign-in to the account page lasts, seconds.
    #[serde(default = "default_account_session_secs")]
    pub session_secs: u64,
}

fn default_account_scope() -> String {
    "openid email".into()
}

fn default_history_days() -> u64 {
    90
}

fn default_challenge_ttl_secs() -> u64 {
    300
}

fn default_account_session_secs() -> u64 {
    900
}

/// The longest account session: a day (`account.session_secs`).
const MAX_ACCOUNT_SESSION_SECS: u64 = 86_400;

impl AccountSettings {
    /// How long the history is kept, milliseconds.
    pub fn history_ms(&self) -> u64 {
        self.history_days * 86_400_000
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.upstream_client_id.trim().is_empty() {
            return Err(ConfigError::new(
                "account.upstream_client_id",
                "must not be empty",
            ));
        }
        if self.upstream_client_secret.expose_secret().is_empty() {
            return Err(ConfigError::new(
                "account.upstream_client_secret",
                "must not be empty",
            ));
        }
        if !self.scope.split_whitespace().any(|s| s == "openid") {
            return Err(ConfigError::new(
                "account.scope",
                "must contain openid (the sign-in needs an ID token)",
            ));
        }
        if self.history_days == 0 || self.history_days > 3660 {
            return Err(ConfigError::new(
                "account.history_days",
                "must be between 1 and 3660",
            ));
        }
        if self.challenge_ttl_secs == 0 || self.challenge_ttl_secs > 3600 {
            return Err(ConfigError::new(
                "account.challenge_ttl_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.session_secs < 60 || self.session_secs > MAX_ACCOUNT_SESSION_SECS {
            return Err(ConfigError::new(
                "account.session_secs",
                format!("must be between 60 and {MAX_ACCOUNT_SESSION_SECS}"),
            ));
        }
        Ok(())
    }
}

/// `[metrics]`: the operator server, for Prometheus (and the admin API).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where `/metrics` is served, apart from the public port (e.g.
    /// `127.0.0.1:9090`). Unset: no `/metrics` at all.
    pub bind: Option<String>,
}

/// `[admin]`: the operator's API, served only on `[metrics] bind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// SHA-256 of the bearer token, in hex (never the token itself).
    pub token_sha256: String,
}

/// `[pages]`: the pages a person sees (the approval page, the callback).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PageSettings {
    /// Shown at the top of every page.
    pub title: String,
    /// An optional logo beside it (https).
    pub logo_url: Option<Url>,
    /// A folder whose `base.html`, `approve.html`, `account.html`, `message.html` and
    /// `ciba.css` replace the built-in ones (each one that exists).
    pub templates_dir: Option<std::path::PathBuf>,
    /// A sentence per scope, over the built-in ones for the OpenID scopes.
    pub scope_descriptions: BTreeMap<String, String>,
}

impl Default for PageSettings {
    fn default() -> Self {
        Self {
            title: "Sign-in request".into(),
            logo_url: None,
            templates_dir: None,
            scope_descriptions: BTreeMap::new(),
        }
    }
}

/// `[input]`: how much a client may send. Every cap is checked before the
/// value is used; a request over one is refused with 400 `invalid_request`
/// naming the parameter and the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputSettings {
    /// Largest form body at `/bc-authorize` and `/token`, bytes.
    pub max_form_bytes: usize,
    /// Most parameters in one form (or claims in one request object).
    pub max_form_params: usize,
    /// Longest `login_hint`, bytes (OIDC Core §2: a `sub` is at most 255 ASCII characters).
    pub max_login_hint_bytes: usize,
    /// Longest `acr_values`, bytes; it is carried into the IdP's URL.
    pub max_acr_values_bytes: usize,
    /// Most space-separated tokens in `scope`.
    pub max_scope_tokens: usize,
    /// Longest signed request object (`request`), bytes.
    pub max_request_object_bytes: usize,
}

impl Default for InputSettings {
    fn default() -> Self {
        Self {
            max_form_bytes: 64 * 1024,
            max_form_params: 64,
            max_login_hint_bytes: 256,
            max_acr_values_bytes: 512,
            max_scope_tokens: 64,
            max_request_object_bytes: 16 * 1024,
        }
    }
}

impl InputSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let caps = [
            ("input.max_form_bytes", self.max_form_bytes),
            ("input.max_form_params", self.max_form_params),
            ("input.max_login_hint_bytes", self.max_login_hint_bytes),
            ("input.max_acr_values_bytes", self.max_acr_values_bytes),
            ("input.max_scope_tokens", self.max_scope_tokens),
            (
                "input.max_request_object_bytes",
                self.max_request_object_bytes,
            ),
        ];
        if let Some((key, _)) = caps.iter().find(|(_, cap)| *cap == 0) {
            return Err(ConfigError::new(*key, "must be at least 1"));
        }
        let ceiling = crate::domain::LoginHint::MAX_BYTES;
        if self.max_login_hint_bytes > ceiling {
            return Err(ConfigError::new(
                "input.max_login_hint_bytes",
                format!("must be at most {ceiling}"),
            ));
        }
        // The request object travels inside the form: a larger cap could never apply.
        if self.max_request_object_bytes > self.max_form_bytes {
            return Err(ConfigError::new(
                "input.max_request_object_bytes",
                "must not exceed input.max_form_bytes",
            ));
        }
        Ok(())
    }
}

/// Abuse resistance at `/bc-authorize`, counted in the store so the limits
/// hold across instances. 0 turns a limit off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Backchannel requests one client may make per minute.
    #[serde(default = "default_requests_per_client_per_minute")]
    pub requests_per_client_per_minute: u64,
    /// Requests one user (login hint) may have pending at once.
    #[serde(default = "default_pending_per_user")]
    pub pending_per_user: u64,
    /// Backchannel requests (each one a push to the user's device) one user
    /// may get per minute, whichever clients send them.
    #[serde(default = "default_notifications_per_user_per_minute")]
    pub notifications_per_user_per_minute: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_client_per_minute: default_requests_per_client_per_minute(),
            pending_per_user: default_pending_per_user(),
            notifications_per_user_per_minute: default_notifications_per_user_per_minute(),
        }
    }
}

fn default_requests_per_client_per_minute() -> u64 {
    600
}
fn default_pending_per_user() -> u64 {
    5
}
/// Auth0 allows at most 5 push notifications a minute per user too.
fn default_notifications_per_user_per_minute() -> u64 {
    5
}

/// How `id_token_hint` and `login_hint_token` are accepted (CIBA Core §7.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintSettings {
    /// An `id_token_hint` is accepted this many seconds past its `exp`.
    #[serde(default = "default_id_token_hint_grace_secs")]
    pub id_token_hint_grace_secs: u64,
    /// The issuer whose `login_hint_token`s are trusted; unset refuses them.
    pub login_hint_token_issuer: Option<String>,
    /// That issuer's public keys (JSON), or:
    pub login_hint_token_jwks: Option<String>,
    pub login_hint_token_jwks_uri: Option<Url>,
    /// The claim of a `login_hint_token` that names the user.
    #[serde(default = "default_subject_claim")]
    pub login_hint_token_subject_claim: String,
}

impl Default for HintSettings {
    fn default() -> Self {
        Self {
            id_token_hint_grace_secs: default_id_token_hint_grace_secs(),
            login_hint_token_issuer: None,
            login_hint_token_jwks: None,
            login_hint_token_jwks_uri: None,
            login_hint_token_subject_claim: default_subject_claim(),
        }
    }
}

fn default_id_token_hint_grace_secs() -> u64 {
    3600
}

/// The background worker that delivers user notifications and client pings
/// from the store's durable queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// How long a leased job stays invisible to other instances, milliseconds.
    /// A job whose instance died is retried after this.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How often an idle worker looks for due jobs, milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Jobs one instance works on at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            lease_ms: default_lease_ms(),
            poll_ms: default_poll_ms(),
            concurrency: default_concurrency(),
        }
    }
}

fn default_lease_ms() -> u64 {
    30_000
}
fn default_poll_ms() -> u64 {
    250
}
fn default_concurrency() -> usize {
    32
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Public base URL; endpoints and the callback hang off it.
    pub issuer: Url,
    /// Terminate TLS here (else plain HTTP, e.g. behind a TLS-terminating balancer).
    pub tls: Option<TlsSettings>,
    /// A client must send a request's headers within this long, milliseconds.
    #[serde(default = "default_request_header_timeout_ms")]
    pub request_header_timeout_ms: u64,
    /// ... and then its whole body within this long, milliseconds.
    #[serde(default = "default_request_body_timeout_ms")]
    pub request_body_timeout_ms: u64,
    /// An idle connection is closed after this long, seconds; 0 (the
    /// default) closes every connection after one request. actix-web times
    /// only a connection's first request head, so on a kept-alive connection
    /// a client could trickle the next head forever: keep-alive is for
    /// deployments behind a balancer that buffers requests.
    #[serde(default)]
    pub keep_alive_secs: u64,
    /// Connections one instance holds open at once; beyond it new ones wait
    /// in the listen backlog. Shared evenly by the worker threads (rounded up).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_request_header_timeout_ms() -> u64 {
    5000
}
fn default_request_body_timeout_ms() -> u64 {
    10_000
}
fn default_max_connections() -> usize {
    4096
}

/// `[server.tls]`: TLS 1.2/1.3 with rustls. Client certificates are
/// requested but not required, so secret-based clients still connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub certificate: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: std::path::PathBuf,
}

/// `[mtls]`: RFC 8705 client certificates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsSettings {
    /// PEM CA certificate(s) that issue `tls_client_auth` client certificates.
    pub ca: Option<std::path::PathBuf>,
    /// Peers (load balancers) whose certificate header is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The header a trusted proxy puts the client certificate in
    /// (URL-encoded PEM, as nginx's `$ssl_client_escaped_cert`).
    #[serde(default = "default_certificate_header")]
    pub certificate_header: String,
}

fn default_certificate_header() -> String {
    "X-Client-Cert".into()
}

fn default_bind() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `memory://`, `redis://host:port[/db]`, `redis+cluster://h:p,h:p`,
    /// `redis+sentinel://h:p,h:p/<master>[/db]`, or their `rediss` (TLS)
    /// forms; parsed by `store::StoreTarget`.
    #[serde(default = "default_store_url")]
    pub url: SecretString,
    /// Prefix of every Redis key, so several deployments can share a server.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Give up on one Redis command after this long, in milliseconds.
    #[serde(default = "default_store_timeout_ms")]
    pub timeout_ms: u64,
    /// `rediss` forms: the CA (PEM) that signed the servers' certificates;
    /// unset, the system's roots. Certificates are always verified.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `rediss` forms: a client certificate (PEM chain) and its key, for
    /// servers that require one.
    #[serde(default)]
    pub client_cert_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<std::path::PathBuf>,
    /// Sentinel forms: the sentinels' own ACL user and password (the URL's
    /// are the data nodes').
    #[serde(default)]
    pub sentinel_username: Option<String>,
    #[serde(default)]
    pub sentinel_password: Option<SecretString>,
    /// Replicas that must acknowledge the writes opening and finishing a
    /// login (WAIT); 0 = off.
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long such a WAIT may take, ms.
    #[serde(default = "default_wait_timeout_ms")]
    pub wait_timeout_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: default_store_url(),
            key_prefix: default_key_prefix(),
            timeout_ms: default_store_timeout_ms(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            sentinel_username: None,
            sentinel_password: None,
            wait_replicas: 0,
            wait_timeout_ms: default_wait_timeout_ms(),
        }
    }
}

fn default_wait_timeout_ms() -> u64 {
    100
}

fn default_store_url() -> SecretString {
    SecretString::from("memory://")
}
fn default_key_prefix() -> String {
    "ciba".into()
}
fn default_store_timeout_ms() -> u64 {
    2000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CibaSettings {
    /// Default lifetime of a request, seconds.
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
    /// Cap for `requested_expiry`, seconds.
    #[serde(default = "default_max_expires_in")]
    pub max_expires_in: u64,
    /// Minimum poll interval, seconds.
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Base64 of 32 random bytes: the AES-256-GCM key for tokens at rest.
    pub token_encryption_key: SecretString,
    /// Allow `http://` client notification endpoints (development only).
    /// Implies `allow_private_notification_endpoints`.
    #[serde(default)]
    pub allow_http_notification_endpoints: bool,
    /// Allow notification endpoints on loopback, private, link-local and
    /// other non-public addresses, by IP literal or by what their host name
    /// resolves to when the ping is sent (`net_policy.rs`).
    #[serde(default)]
    pub allow_private_notification_endpoints: bool,
    /// Timeout for one ping to a client's notification endpoint, milliseconds.
    #[serde(default = "default_ping_timeout_ms")]
    pub ping_timeout_ms: u64,
    /// Long polling (CIBA Core §7.3): a poll of a pending request waits up
    /// to this long for the decision, seconds. 0 (default) answers at once.
    #[serde(default)]
    pub long_poll_secs: u64,
    /// Long polls one instance holds at once; past it, polls answer at once.
    #[serde(default = "default_long_poll_max_waiting")]
    pub long_poll_max_waiting: usize,
}

/// The longest a long poll may wait: under common balancer idle timeouts.
pub const MAX_LONG_POLL_SECS: u64 = 30;

fn default_long_poll_max_waiting() -> usize {
    1000
}

fn default_ping_timeout_ms() -> u64 {
    5000
}

impl CibaSettings {
    /// Whether pings may go to non-public addresses: asked for, or implied
    /// by the development switch `allow_http_notification_endpoints`, so
    /// loopback test setups keep working.
    pub fn private_notification_endpoints_allowed(&self) -> bool {
        self.allow_private_notification_endpoints || self.allow_http_notification_endpoints
    }
}

/// The longest a backchannel request may live (a day): the user is being
/// asked to act now.
pub const MAX_REQUEST_LIFETIME_SECS: u64 = 86_400;

fn default_expires_in() -> u64 {
    300
}
fn default_max_expires_in() -> u64 {
    600
}
fn default_interval() -> u64 {
    5
}

/// How the proxy drives the IdP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    /// An ordinary authorization-code flow; the user's browser comes back
    /// to `/callback`.
    #[default]
    AuthorizationCode,
    /// The IdP's own CIBA: the proxy forwards the backchannel request and
    /// alone polls the IdP (or is pinged by it).
    Ciba,
}

impl UpstreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::Ciba => "ciba",
        }
    }
}

/// How a native-CIBA IdP tells the proxy that a request has an outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamDelivery {
    /// The proxy polls the IdP, once per upstream interval per request.
    #[default]
    Poll,
    /// The IdP pings `{server.issuer}/upstream/ping`; the proxy polls only as
    /// a fallback, every `upstream.ping_fallback_secs`.
    Ping,
}

impl UpstreamDelivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Ping => "ping",
        }
    }
}

/// Parameters the proxy sets itself on a forwarded backchannel request;
/// `upstream.backchannel_params` may not override them.
pub const FORWARDED_PARAMS: [&str; 11] = [
    "scope",
    "login_hint",
    "id_token_hint",
    "login_hint_token",
    "binding_message",
    "acr_values",
    "requested_expiry",
    "client_notification_token",
    "client_id",
    "client_secret",
    "request",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// `authorization_code` (default) or `ciba`.
    #[serde(default)]
    pub kind: UpstreamKind,
    /// The IdP's issuer; ID tokens must carry exactly this `iss`.
    pub issuer: Url,
    /// Where the discovery document is, when not at `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Option<Url>,
    /// ID-token claim that must equal the login_hint.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Timeout for every call to the IdP, milliseconds.
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
    /// How long connecting to the IdP may take, milliseconds (at most
    /// `timeout_ms`): an unreachable IdP must not cost the user the whole
    /// timeout per try.
    #[serde(default = "default_upstream_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How many times a code exchange is tried when the IdP is unreachable or failing.
    #[serde(default = "default_exchange_attempts")]
    pub exchange_attempts: u32,
    /// How long the IdP's discovery document is kept before it is fetched again, seconds.
    #[serde(default = "default_metadata_ttl_secs")]
    pub metadata_ttl_secs: u64,
    /// Whether the ID token's `subject_claim` must equal the login hint.
    /// Default: on for `authorization_code`, off for `ciba` (the IdP
    /// resolved the user from the hint itself).
    pub subject_check: Option<bool>,
    /// `ciba`: `poll` (default) or `ping`.
    #[serde(default)]
    pub delivery: UpstreamDelivery,
    /// `ciba` with `ping`: poll the IdP this often anyway, seconds, so a
    /// ping that never comes does not strand a login.
    #[serde(default = "default_ping_fallback_secs")]
    pub ping_fallback_secs: u64,
    /// `ciba`: fixed extra form parameters for every forwarded request.
    #[serde(default)]
    pub backchannel_params: BTreeMap<String, String>,
    /// `ciba`: rewrites a forwarded `login_hint` into the IdP's own shape,
    /// e.g. `{"username":"{login_hint}"}`; the value is JSON-escaped.
    pub login_hint_template: Option<String>,
    /// `authorization_code`: how long the IdP's authorization codes live,
    /// seconds: how long an unreachable IdP is retried in the background
    /// after the browser brought a code back.
    #[serde(default = "default_code_lifetime_secs")]
    pub code_lifetime_secs: u64,
}

fn default_code_lifetime_secs() -> u64 {
    60
}

/// The placeholder in `upstream.login_hint_template`.
pub const LOGIN_HINT_PLACEHOLDER: &str = "{login_hint}";

fn default_ping_fallback_secs() -> u64 {
    30
}

fn default_exchange_attempts() -> u32 {
    3
}
fn default_metadata_ttl_secs() -> u64 {
    3600
}

fn default_subject_claim() -> String {
    "sub".into()
}
fn default_upstream_timeout_ms() -> u64 {
    10_000
}
fn default_upstream_connect_timeout_ms() -> u64 {
    2000
}

impl UpstreamSettings {
    /// Whether the subject check is on, by default for the kind.
    pub fn subject_check(&self) -> bool {
        self.subject_check
            .unwrap_or(self.kind == UpstreamKind::AuthorizationCode)
    }

    pub fn discovery_url(&self) -> Result<Url, ConfigError> {
        match &self.discovery_url {
            Some(url) => Ok(url.clone()),
            None => {
                let base = self.issuer.as_str().trim_end_matches('/');
                Url::parse(&format!("{base}/.well-known/openid-configuration"))
                    .map_err(|e| ConfigError::new("upstream.issuer", e.to_string()))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    Webhook,
}

/// `[notifier]`: how the user's device hears of a request. Two forms, never
/// mixed: the single webhook (`kind`, `url`, `secret`), or a list of
/// `[[notifier.channels]]`, each used for every user it can reach.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierSettings {
    /// The single-webhook form.
    pub kind: Option<NotifierKind>,
    pub url: Option<Url>,
    /// HMAC-SHA256 key for the `X-Ciba-Signature` header.
    pub secret: Option<SecretString>,
    /// The channels form.
    #[serde(default)]
    pub channels: Vec<ChannelSettings>,
    /// Timeout for one delivery attempt, milliseconds (every channel).
    #[serde(default = "default_notifier_timeout_ms")]
    pub timeout_ms: u64,
    /// Whether the webhook's payload carries the IdP's `authorization_url`
    /// beside the `approval_url`; `false` makes the phone only ever see the
    /// approval page. Other channels only ever carry the approval link.
    #[serde(default = "default_true")]
    pub send_authorization_url: bool,
}

/// One `[[notifier.channels]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelSettings {
    Webhook(WebhookChannel),
    Email(EmailChannel),
    Fcm(FcmChannel),
    Webpush(WebPushChannel),
}

impl ChannelSettings {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Email(_) => "email",
            Self::Fcm(_) => "fcm",
            Self::Webpush(_) => "webpush",
        }
    }
}

/// The operator's push gateway, as in the single-webhook form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    pub url: Url,
    pub secret: SecretString,
}

/// Mail to the user's address (the account's `email` claim, or a login
/// hint that is an address).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    /// lettre's syntax: `smtp://host:port`, `smtps://user:password@host`,
    /// `smtp://host?tls=required` for STARTTLS.
    pub smtp_url: SecretString,
    /// `Name <address>` or an address.
    pub from: String,
}

/// Firebase Cloud Messaging (HTTP v1) to the user's registered devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmChannel {
    /// A Google service-account key (JSON: project_id, client_email,
    /// private_key, token_uri); relative to the configuration file.
    pub service_account_file: PathBuf,
    /// The API's base URL; unset: `https://fcm.googleapis.com`.
    pub endpoint: Option<Url>,
}

/// Web Push (RFC 8030, 8291, 8292) to the user's registered devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushChannel {
    /// The VAPID key: EC P-256, PKCS#8 or SEC1 PEM; relative to the
    /// configuration file.
    pub vapid_private_key_file: PathBuf,
    /// RFC 8292 §2.1 contact: `mailto:` or `https:`.
    pub subject: String,
}

impl NotifierSettings {
    /// The channels, whichever form the file uses: the single-webhook form
    /// is one webhook channel.
    pub fn channels(&self) -> Vec<ChannelSettings> {
        match (&self.url, &self.secret) {
            (Some(url), Some(secret)) if self.channels.is_empty() => {
                vec![ChannelSettings::Webhook(WebhookChannel {
                    url: url.clone(),
                    secret: secret.clone(),
                })]
            }
            _ => self.channels.clone(),
        }
    }

    /// The key of channel `index`'s `field`, for error messages.
    pub fn channel_key(index: usize, field: &str) -> String {
        format!("notifier.channels[{index}].{field}")
    }

    /// Relative key-file paths are relative to the configuration file.
    fn resolve_paths(&mut self, base: &Path) {
        for channel in &mut self.channels {
            let path = match channel {
                ChannelSettings::Fcm(fcm) => &mut fcm.service_account_file,
                ChannelSettings::Webpush(webpush) => &mut webpush.vapid_private_key_file,
                _ => continue,
            };
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    fn validate(&self, allow_http: bool) -> Result<(), ConfigError> {
        let single = self.kind.is_some() || self.url.is_some() || self.secret.is_some();
        if single && !self.channels.is_empty() {
            return Err(ConfigError::new(
                "notifier",
                "use either the single webhook (kind, url, secret) or [[notifier.channels]], not both",
            ));
        }
        if !single && self.channels.is_empty() {
            return Err(ConfigError::new(
                "notifier",
                "needs kind, url and secret, or at least one [[notifier.channels]]",
            ));
        }
        if single {
            let url = self
                .url
                .as_ref()
                .ok_or_else(|| ConfigError::new("notifier.url", "is required"))?;
            check_http_url("notifier.url", url)?;
            let secret = self
                .secret
                .as_ref()
                .ok_or_else(|| ConfigError::new("notifier.secret", "is required"))?;
            if secret.expose_secret().is_empty() {
                return Err(ConfigError::new("notifier.secret", "must not be empty"));
            }
            if self.kind.is_none() {
                return Err(ConfigError::new("notifier.kind", "is required"));
            }
            return Ok(());
        }
        let mut kinds = std::collections::BTreeSet::new();
        for (i, channel) in self.channels.iter().enumerate() {
            let key = |field: &str| Self::channel_key(i, field);
            // One channel per kind: every channel already reaches every
            // user it can, so a second one would only send twice.
            if !kinds.insert(channel.kind()) {
                return Err(ConfigError::new(
                    key("kind"),
                    format!("{} appears twice; each kind at most once", channel.kind()),
                ));
            }
            match channel {
                ChannelSettings::Webhook(hook) => {
                    check_http_url(&key("url"), &hook.url)?;
                    if hook.secret.expose_secret().is_empty() {
                        return Err(ConfigError::new(key("secret"), "must not be empty"));
                    }
                }
                ChannelSettings::Email(email) => {
                    if email.from.trim().is_empty() {
                        return Err(ConfigError::new(key("from"), "must not be empty"));
                    }
                }
                ChannelSettings::Fcm(fcm) => match fcm.endpoint.as_ref().map(|e| (e.scheme(), e.host().is_some())) {
                    None | Some(("https", true)) => {}
                    Some(("http", true)) if allow_http => {}
                    _ => {
                        return Err(ConfigError::new(
                            key("endpoint"),
                            "must be an https URL (set ciba.allow_http_notification_endpoints = true for development)",
                        ))
                    }
                },
                ChannelSettings::Webpush(webpush) => {
                    if !(webpush.subject.starts_with("mailto:")
                        || webpush.subject.starts_with("https://"))
                    {
                        return Err(ConfigError::new(
                            key("subject"),
                            "must be a mailto: or https: URI (RFC 8292 §2.1)",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn default_notifier_timeout_ms() -> u64 {
    5000
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523: a JWT signed with one of the client's registered keys.
    PrivateKeyJwt,
    /// RFC 8705 §2.1: a certificate from the configured CA with the registered subject.
    TlsClientAuth,
    /// RFC 8705 §2.2: a self-signed certificate registered in the client's JWKS (x5c).
    SelfSignedTlsClientAuth,
}

impl TokenEndpointAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    /// Whether the client authenticates with a shared secret.
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
}

/// A security profile a client can be held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The FAPI-CIBA profile: signed requests with PS256/ES256 only, strong
    /// client authentication, bounded request-object lifetimes.
    FapiCiba,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    Poll,
    /// CIBA Core §10.2: the client is pinged when the outcome is ready.
    Ping,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    #[serde(default = "default_delivery_mode")]
    pub backchannel_token_delivery_mode: DeliveryMode,
    /// Where ping-mode clients are notified (https unless
    /// `ciba.allow_http_notification_endpoints`).
    pub backchannel_client_notification_endpoint: Option<Url>,
    pub backchannel_authentication_request_signing_alg: Option<String>,
    /// The client's public keys as a JSON string.
    pub jwks: Option<String>,
    pub jwks_uri: Option<Url>,
    /// The scopes this client may ask for.
    pub scope: String,
    pub upstream_client_id: Option<String>,
    pub upstream_client_secret: Option<SecretString>,
    /// private_key_jwt: the only algorithm accepted on client assertions.
    pub token_endpoint_auth_signing_alg: Option<String>,
    /// `"fapi-ciba"` holds the client to the FAPI-CIBA profile.
    pub profile: Option<Profile>,
    /// tls_client_auth: the subject DN the client's certificate must carry.
    pub tls_client_auth_subject_dn: Option<String>,
    /// The name the user sees on the approval page; default the client_id.
    pub client_name: Option<String>,
    /// `"show"` (default): the approval page shows the binding message.
    /// `"match"`: the user must pick it among three codes.
    #[serde(default)]
    pub binding_message_check: BindingMessageCheck,
}

/// How the approval page uses the binding message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingMessageCheck {
    /// Shown large, for the user to compare.
    #[default]
    Show,
    /// Number matching: the user picks it among decoys of the same shape; a
    /// wrong pick denies the request.
    Match,
}

fn default_delivery_mode() -> DeliveryMode {
    DeliveryMode::Poll
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter; `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

impl Settings {
    /// Reads `path` (TOML), then applies `CIBA_PROXY__SECTION__KEY` overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("CIBA_PROXY")
                    .prefix_separator("__")
                    .separator("__"),
            )
            .build()
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        let mut settings = Self::from_config(raw)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(notifier) = &mut settings.notifier {
            notifier.resolve_paths(base);
        }
        Ok(settings)
    }

    /// Parses settings from a TOML string (no environment overrides).
    pub fn from_toml(toml: &str) -> Result<Self, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::new("<toml>", e.to_string()))?;
        Self::from_config(raw)
    }

    fn from_config(raw: config::Config) -> Result<Self, ConfigError> {
        let settings: Self = raw.try_deserialize().map_err(config_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Rules that need no parsing beyond serde's.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(admin) = &self.admin {
            if self.metrics.bind.is_none() {
                return Err(ConfigError::new(
                    "metrics.bind",
                    "is required with [admin]: the admin API is served only there, never on the public port",
                ));
            }
            if admin.token_sha256.len() != 64
                || !admin.token_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(ConfigError::new(
                    "admin.token_sha256",
                    "must be the SHA-256 of the token, as 64 hex digits",
                ));
            }
        }
        let ciba = &self.ciba;
        if ciba.expires_in == 0 {
            return Err(ConfigError::new(
                "ciba.expires_in",
                "must be at least 1 second",
            ));
        }
        if ciba.max_expires_in > MAX_REQUEST_LIFETIME_SECS {
            return Err(ConfigError::new(
                "ciba.max_expires_in",
                format!("must be at most {MAX_REQUEST_LIFETIME_SECS} seconds"),
            ));
        }
        if ciba.max_expires_in < ciba.expires_in {
            return Err(ConfigError::new(
                "ciba.max_expires_in",
                "must not be less than ciba.expires_in",
            ));
        }
        if ciba.interval == 0 {
            return Err(ConfigError::new(
                "ciba.interval",
                "must be at least 1 second",
            ));
        }
        if ciba.long_poll_secs > MAX_LONG_POLL_SECS {
            return Err(ConfigError::new(
                "ciba.long_poll_secs",
                format!("must be at most {MAX_LONG_POLL_SECS} seconds"),
            ));
        }
        // A client that polls again as soon as a long poll ends must not
        // hear slow_down: the wait covers the interval.
        if ciba.long_poll_secs != 0 && ciba.long_poll_secs < ciba.interval {
            return Err(ConfigError::new(
                "ciba.long_poll_secs",
                "must be 0 (off) or at least ciba.interval",
            ));
        }
        if ciba.long_poll_max_waiting == 0 {
            return Err(ConfigError::new(
                "ciba.long_poll_max_waiting",
                "must be at least 1",
            ));
        }
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "server.bind",
                "expected host:port, e.g. 127.0.0.1:8080",
            ));
        }
        if let Some(bind) = &self.metrics.bind {
            let Ok(addr) = bind.parse::<std::net::SocketAddr>() else {
                return Err(ConfigError::new(
                    "metrics.bind",
                    "expected host:port, e.g. 127.0.0.1:9090",
                ));
            };
            // The operator port must never be the public one: /metrics and
            // the admin API would be served to everyone (or not at all).
            if addr.port() != 0 && Some(addr) == self.server.bind.parse().ok() {
                return Err(ConfigError::new(
                    "metrics.bind",
                    "must differ from server.bind: the operator port is never the public one",
                ));
            }
        }
        check_http_url("server.issuer", &self.server.issuer)?;
        for (key, value) in [
            (
                "server.request_header_timeout_ms",
                self.server.request_header_timeout_ms,
            ),
            (
                "server.request_body_timeout_ms",
                self.server.request_body_timeout_ms,
            ),
            ("server.max_connections", self.server.max_connections as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        self.input.validate()?;
        // A poll's confirmation that lands after its handler gave up (and
        // answered 503) must fall outside the confirm window, or it deletes
        // the tokens the client was told to retry for.
        if self.store.timeout_ms < crate::store::CONFIRM_WINDOW_MS {
            return Err(ConfigError::new(
                "store.timeout_ms",
                format!(
                    "must be at least {} ms, the window in which a poll confirms it handed out the tokens",
                    crate::store::CONFIRM_WINDOW_MS
                ),
            ));
        }
        if let Some(account) = &self.account {
            account.validate()?;
        }
        check_http_url("upstream.issuer", &self.upstream.issuer)?;
        if let Some(url) = &self.upstream.discovery_url {
            check_http_url("upstream.discovery_url", url)?;
        }
        if let Some(logo) = &self.pages.logo_url {
            if logo.scheme() != "https" {
                return Err(ConfigError::new(
                    "pages.logo_url",
                    "must be an https URL (the pages allow images from https only)",
                ));
            }
        }
        match &self.notifier {
            Some(notifier) => notifier.validate(self.ciba.allow_http_notification_endpoints)?,
            None if self.upstream.kind == UpstreamKind::AuthorizationCode => {
                return Err(ConfigError::new(
                    "notifier",
                    "is required with upstream.kind = \"authorization_code\": the user's device must receive the sign-in link",
                ))
            }
            None => {}
        }
        self.upstream.validate()?;
        if self.upstream.connect_timeout_ms == 0 {
            return Err(ConfigError::new(
                "upstream.connect_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.upstream.exchange_attempts == 0 {
            return Err(ConfigError::new(
                "upstream.exchange_attempts",
                "must be at least 1",
            ));
        }
        if self.worker.lease_ms < 1000 {
            return Err(ConfigError::new("worker.lease_ms", "must be at least 1000"));
        }
        if self.worker.poll_ms == 0 {
            return Err(ConfigError::new("worker.poll_ms", "must be at least 1"));
        }
        if self.worker.concurrency == 0 {
            return Err(ConfigError::new("worker.concurrency", "must be at least 1"));
        }
        if self.upstream.subject_claim.is_empty() {
            return Err(ConfigError::new(
                "upstream.subject_claim",
                "must not be empty",
            ));
        }
        // The one parser of store.url; its messages never quote the URL.
        crate::store::connect::parse_url(self.store.url.expose_secret())
            .map_err(|message| ConfigError::new("store.url", message))?;
        Ok(())
    }
}

impl UpstreamSettings {
    /// The rules of the native-CIBA keys.
    fn validate(&self) -> Result<(), ConfigError> {
        let ciba_only = [
            ("upstream.delivery", self.delivery != UpstreamDelivery::Poll),
            (
                "upstream.backchannel_params",
                !self.backchannel_params.is_empty(),
            ),
            (
                "upstream.login_hint_template",
                self.login_hint_template.is_some(),
            ),
        ];
        if self.kind != UpstreamKind::Ciba {
            if let Some((key, _)) = ciba_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(
                    *key,
                    "applies only with upstream.kind = \"ciba\"",
                ));
            }
        }
        if self.code_lifetime_secs == 0 {
            return Err(ConfigError::new(
                "upstream.code_lifetime_secs",
                "must be at least 1",
            ));
        }
        if self.ping_fallback_secs == 0 {
            return Err(ConfigError::new(
                "upstream.ping_fallback_secs",
                "must be at least 1",
            ));
        }
        if let Some(name) = self
            .backchannel_params
            .keys()
            .find(|name| FORWARDED_PARAMS.contains(&name.as_str()))
        {
            return Err(ConfigError::new(
                "upstream.backchannel_params",
                format!(
                    "{name} is set by the proxy from the client's request and cannot be fixed here"
                ),
            ));
        }
        if let Some(template) = &self.login_hint_template {
            if !template.contains(LOGIN_HINT_PLACEHOLDER) {
                return Err(ConfigError::new(
                    "upstream.login_hint_template",
                    format!("must contain {LOGIN_HINT_PLACEHOLDER}"),
                ));
            }
        }
        Ok(())
    }
}

fn check_http_url(key: &str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::new(key, "expected an http(s) URL with a host"));
    }
    Ok(())
}

/// The config crate names the key in most messages; keep them on one line.
fn config_error(e: config::ConfigError) -> ConfigError {
    let message = e.to_string().replace('\n', " ");
    let key = match &e {
        config::ConfigError::Type { key: Some(k), .. } => k.clone(),
        config::ConfigError::At { key: Some(k), .. } => k.clone(),
        _ => "settings".into(),
    };
    ConfigError::new(key, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
        [server]
        issuer = "http://127.0.0.1:8080"
        [ciba]
        token_encryption_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        [upstream]
        issuer = "http://127.0.0.1:3000"
        [notifier]
        kind = "webhook"
        url = "http://127.0.0.1:9000/notify"
        secret = "s"
    "#;

    #[test]
    fn defaults_apply() {
        let s = Settings::from_toml(VALID).unwrap();
        assert_eq!(s.ciba.expires_in, 300);
        assert_eq!(s.ciba.max_expires_in, 600);
        assert_eq!(s.ciba.interval, 5);
        assert_eq!(s.store.url.expose_secret(), "memory://");
        assert_eq!(s.upstream.subject_claim, "sub");
        assert_eq!(s.upstream.connect_timeout_ms, 2000);
        assert_eq!(
            s.upstream.discovery_url().unwrap().as_str(),
            "http://127.0.0.1:3000/.well-known/openid-configuration"
        );
    }

    #[test]
    fn a_zero_connect_timeout_is_named() {
        let toml = VALID.replace("[upstream]", "[upstream]\nconnect_timeout_ms = 0");
        let e = Settings::from_toml(&toml).unwrap_err();
        assert!(e.to_string().contains("upstream.connect_timeout_ms"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let toml = VALID.replace("[ciba]", "[ciba]\nintervall = 3");
        let e = Settings::from_toml(&toml).unwrap_err();
        assert!(e.to_string().contains("intervall"), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let toml = VALID.replace("secret = \"s\"", "");
        let e = Settings::from_toml(&toml).unwrap_err();
        assert!(e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn malformed_url_is_named() {
        let toml = VALID.replace("http://127.0.0.1:3000", "not a url");
        let e = Settings::from_toml(&toml).unwrap_err();
        assert!(e.to_string().contains("upstream.issuer"), "{e}");
    }

    #[test]
    fn max_expiry_below_default_is_rejected() {
        let toml = VALID.replace("[ciba]", "[ciba]\nmax_expires_in = 10");
        let e = Settings::from_toml(&toml).unwrap_err();
        assert_eq!(e.key, "ciba.max_expires_in");
    }

    #[test]
    fn upstream_kind_defaults_to_authorization_code_with_the_subject_check() {
        let s = Settings::from_toml(VALID).unwrap();
        assert_eq!(s.upstream.kind, UpstreamKind::AuthorizationCode);
        assert!(s.upstream.subject_check());
        assert_eq!(s.upstream.ping_fallback_secs, 30);
    }

    #[test]
    fn ciba_kind_needs_no_notifier_and_skips_the_subject_check() {
        let toml = VALID
            .replace("[upstream]", "[upstream]\nkind = \"ciba\"\ndelivery = \"ping\"")
            .replace("[notifier]\n        kind = \"webhook\"\n        url = \"http://127.0.0.1:9000/notify\"\n        secret = \"s\"", "");
        let s = Settings::from_toml(&toml).unwrap();
        assert!(s.notifier.is_none());
        assert!(!s.upstream.subject_check());
        assert_eq!(s.upstream.delivery, UpstreamDelivery::Ping);
    }

    #[test]
    fn authorization_code_kind_needs_a_notifier() {
        let toml = VALID.replace("[notifier]\n        kind = \"webhook\"\n        url = \"http://127.0.0.1:9000/notify\"\n        secret = \"s\"", "");
        assert_eq!(Settings::from_toml(&toml).unwrap_err().key, "notifier");
    }

    #[test]
    fn ciba_keys_are_refused_with_the_other_kind() {
        let toml = VALID.replace("[upstream]", "[upstream]\ndelivery = \"ping\"");
        assert_eq!(
            Settings::from_toml(&toml).unwrap_err().key,
            "upstream.delivery"
        );
    }

    #[test]
    fn backchannel_params_cannot_override_forwarded_parameters() {
        let toml = VALID.replace(
            "[upstream]",
            "[upstream]\nkind = \"ciba\"\nbackchannel_params = { scope = \"x\" }",
        );
        assert_eq!(
            Settings::from_toml(&toml).unwrap_err().key,
            "upstream.backchannel_params"
        );
        let toml = VALID.replace(
            "[upstream]",
            "[upstream]\nkind = \"ciba\"\nbackchannel_params = { notification_channel = \"external\" }",
        );
        let s = Settings::from_toml(&toml).unwrap();
        assert_eq!(
            s.upstream.backchannel_params["notification_channel"],
            "external"
        );
    }

    #[test]
    fn login_hint_template_needs_its_placeholder() {
        let toml = VALID.replace(
            "[upstream]",
            "[upstream]\nkind = \"ciba\"\nlogin_hint_template = '{\"username\":\"x\"}'",
        );
        assert_eq!(
            Settings::from_toml(&toml).unwrap_err().key,
            "upstream.login_hint_template"
        );
    }

    #[test]
    fn input_and_server_caps_have_defaults() {
        let s = Settings::from_toml(VALID).unwrap();
        assert_eq!(s.input, InputSettings::default());
        assert_eq!(s.input.max_login_hint_bytes, 256);
        assert_eq!(s.server.request_header_timeout_ms, 5000);
        assert_eq!(s.server.request_body_timeout_ms, 10_000);
        assert_eq!(s.server.max_connections, 4096);
        assert_eq!(s.server.keep_alive_secs, 0);
        let s = Settings::from_toml(&format!("{VALID}\n[input]\nmax_scope_tokens = 8")).unwrap();
        assert_eq!(s.input.max_scope_tokens, 8);
        assert_eq!(s.input.max_form_params, 64);
    }

    #[test]
    fn a_zero_cap_is_named() {
        for key in [
            "max_form_bytes",
            "max_form_params",
            "max_login_hint_bytes",
            "max_acr_values_bytes",
            "max_scope_tokens",
            "max_request_object_bytes",
        ] {
            let toml = format!("{VALID}\n[input]\n{key} = 0");
            assert_eq!(
                Settings::from_toml(&toml).unwrap_err().key,
                format!("input.{key}")
            );
        }
        for key in [
            "request_header_timeout_ms",
            "request_body_timeout_ms",
            "max_connections",
        ] {
            let toml = VALID.replace("[server]", &format!("[server]\n{key} = 0"));
            assert_eq!(
                Settings::from_toml(&toml).unwrap_err().key,
                format!("server.{key}")
            );
        }
    }

    #[test]
    fn input_caps_must_fit_together() {
        let toml = format!("{VALID}\n[input]\nmax_login_hint_bytes = 100000");
        assert_eq!(
            Settings::from_toml(&toml).unwrap_err().key,
            "input.max_login_hint_bytes"
        );
        let toml =
            format!("{VALID}\n[input]\nmax_form_bytes = 1000\nmax_request_object_bytes = 2000");
        assert_eq!(
            Settings::from_toml(&toml).unwrap_err().key,
            "input.max_request_object_bytes"
        );
        let toml = format!("{VALID}\n[input]\nmax_scope_tokenz = 3");
        assert!(Settings::from_toml(&toml)
            .unwrap_err()
            .to_string()
            .contains("max_scope_tokenz"));
    }

    #[test]
    fn private_notification_endpoints_are_refused_unless_allowed_or_implied() {
        let s = Settings::from_toml(VALID).unwrap();
        assert!(!s.ciba.allow_private_notification_endpoints);
        assert!(!s.ciba.private_notification_endpoints_allowed());
        let allowed = VALID.replace(
            "[ciba]",
            "[ciba]\nallow_private_notification_endpoints = true",
        );
        assert!(Settings::from_toml(&allowed)
            .unwrap()
            .ciba
            .private_notification_endpoints_allowed());
        let http = VALID.replace("[ciba]", "[ciba]\nallow_http_notification_endpoints = true");
        let s = Settings::from_toml(&http).unwrap();
        assert!(!s.ciba.allow_private_notification_endpoints);
        assert!(s.ciba.private_notification_endpoints_allowed());
    }

    #[test]
    fn pages_default_and_refuse_a_plain_http_logo() {
        let s = Settings::from_toml(VALID).unwrap();
        assert_eq!(s.pages.title, "Sign-in request");
        assert!(s.notifier.unwrap().send_authorization_url);
        let toml = format!("{VALID}\n[pages]\nlogo_url = \"http://x.example/logo.png\"");
        assert_eq!(
            Settings::from_toml(&toml).unwrap_err().key,
            "pages.logo_url"
        );
    }

    #[test]
    fn long_polling_is_off_by_default_and_bounded() {
        let s = Settings::from_toml(VALID).unwrap();
        assert_eq!(s.ciba.long_poll_secs, 0);
        for (value, ok) in [("31", false), ("2", false), ("5", true), ("30", true)] {
            let toml = VALID.replace("[ciba]", &format!("[ciba]\nlong_poll_secs = {value}"));
            match Settings::from_toml(&toml) {
                Ok(_) => assert!(ok, "{value} accepted"),
                Err(e) => {
                    assert!(!ok, "{value}: {e}");
                    assert_eq!(e.key, "ciba.long_poll_secs");
                }
            }
        }
    }

    #[test]
    fn unknown_store_scheme_is_rejected() {
        let toml = format!("{VALID}\n[store]\nurl = \"postgres://x\"");
        assert_eq!(Settings::from_toml(&toml).unwrap_err().key, "store.url");
    }
}
