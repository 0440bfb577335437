//! `ciba-proxy client`: a console consumption device. It reads a provider's
//! discovery document, sends one backchannel authentication request (CIBA
//! Core §7.1, or §7.1.1 as a signed request object), then polls the token
//! endpoint in poll mode (§10.1, §11) until it gets tokens or a final error.
//!
//! Each step is written to stderr; the token response goes to stdout and
//! nowhere else. Secrets, the private key and tokens are never printed, and
//! the auth_req_id only in part. Exit status: 0 tokens, 1 refused or failed,
//! 2 usage error.
//!
//! Client authentication is one of client_secret_basic / client_secret_post
//! (RFC 6749 §2.3.1), private_key_jwt (RFC 7523 §2.2, OIDC Core §9) or
//! tls_client_auth (RFC 8705 §2).
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::clock::{Clock, SystemClock};
use crate::crypto::random_token;
use crate::routes::CIBA_GRANT_TYPE;

/// `ciba-proxy client ...` selects this module instead of the server.
pub const SUBCOMMAND: &str = "client";

/// RFC 7523 §2.2.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// CIBA Core §7.3: the polling interval when the acknowledgement has none.
const DEFAULT_INTERVAL_SECS: u64 = 5;
/// CIBA Core §11 (RFC 8628 §3.5): every slow_down adds 5 s to the interval.
const SLOW_DOWN_SECS: u64 = 5;
/// A client assertion is used at once; a minute covers any clock skew.
const ASSERTION_LIFETIME_SECS: u64 = 60;
/// A request object is sent at once too; FAPI-CIBA clients may use at most 60 minutes.
const REQUEST_OBJECT_LIFETIME_SECS: u64 = 300;
/// Without --max-wait, polling stops this long after the request expired
/// even if the provider never said expired_token.
const EXPIRY_GRACE_SECS: u64 = 30;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the auth_req_id (a bearer credential) the progress shows.
const SHOWN_ID_CHARS: usize = 8;

const EXIT_FAILED: u8 = 1;

const AFTER_HELP: &str = "\
Client authentication, exactly one of:
  --client-secret S (or CIBA_CLIENT_SECRET=S)  client_secret_basic, or client_secret_post with --auth-method
  --private-key PEM_FILE                       private_key_jwt (RFC 7523)
  --cert PEM_FILE --cert-key PEM_FILE          tls_client_auth (RFC 8705)
--private-key also signs the request with --sign-request, whatever the authentication.

Progress goes to stderr; the token response JSON to stdout.
Exit status: 0 tokens issued, 1 refused or failed (`error: <code>: <description>`), 2 usage error.";

/// The command line of `ciba-proxy client`.
#[derive(Parser)]
#[command(
    name = "ciba-proxy client",
    bin_name = "ciba-proxy client",
    version,
    about = "A console CIBA consumption device: asks the user to authenticate on their own device, then prints the tokens.",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// The provider's issuer; its endpoints come from {issuer}/.well-known/openid-configuration
    #[arg(long, value_name = "URL", value_parser = parse_issuer)]
    issuer: String,

    /// This client's client_id
    #[arg(long, value_name = "ID", help_heading = "Client authentication")]
    client_id: String,

    /// The client secret; prefer CIBA_CLIENT_SECRET, which stays out of the process list
    #[arg(
        long,
        value_name = "SECRET",
        env = "CIBA_CLIENT_SECRET",
        hide_env_values = true,
        value_parser = parse_secret,
        help_heading = "Client authentication"
    )]
    client_secret: Option<SecretString>,

    /// How the client secret is sent [default: client_secret_basic]
    #[arg(
        long,
        value_enum,
        value_name = "METHOD",
        help_heading = "Client authentication"
    )]
    auth_method: Option<SecretMethod>,

    /// PEM private key: private_key_jwt authentication, and the --sign-request key
    #[arg(long, value_name = "PEM_FILE", help_heading = "Client authentication")]
    private_key: Option<std::path::PathBuf>,

    /// `kid` header of the JWTs signed with --private-key
    #[arg(
        long,
        value_name = "KID",
        requires = "private_key",
        help_heading = "Client authentication"
    )]
    key_id: Option<String>,

    /// Signing algorithm for --private-key [default: ES256 for an EC key, else PS256]
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        requires = "private_key",
        help_heading = "Client authentication"
    )]
    alg: Option<SigningAlg>,

    /// PEM client certificate (chain) for tls_client_auth
    #[arg(
        long,
        value_name = "PEM_FILE",
        requires = "cert_key",
        help_heading = "Client authentication"
    )]
    cert: Option<std::path::PathBuf>,

    /// PEM private key of --cert
    #[arg(
        long,
        value_name = "PEM_FILE",
        requires = "cert",
        help_heading = "Client authentication"
    )]
    cert_key: Option<std::path::PathBuf>,

    /// PEM CA certificate(s) to trust besides the built-in roots
    #[arg(long, value_name = "PEM_FILE")]
    ca: Option<std::path::PathBuf>,

    /// Who should authenticate (login_hint)
    #[arg(long, value_name = "HINT", help_heading = "Request")]
    login_hint: String,

    /// Short text shown on both devices so the user can match them
    #[arg(long, value_name = "TEXT", help_heading = "Request")]
    binding_message: Option<String>,

    /// Requested scope
    #[arg(
        long,
        value_name = "SCOPE",
        default_value = "openid",
        help_heading = "Request"
    )]
    scope: String,

    /// Requested lifetime of the request, in seconds
    #[arg(
        long,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Request"
    )]
    requested_expiry: Option<u64>,

    /// Requested authentication context class references
    #[arg(long, value_name = "ACR", help_heading = "Request")]
    acr_values: Option<String>,

    /// Ping mode: bearer token for the client notification
    #[arg(long, value_name = "TOKEN", value_parser = parse_secret, help_heading = "Request")]
    client_notification_token: Option<SecretString>,

    /// Send the parameters as a request object signed with --private-key
    #[arg(long, requires = "private_key", help_heading = "Request")]
    sign_request: bool,

    /// Give up after this many seconds in all [default: when the request expires]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    max_wait: Option<u64>,
}

/// How a client secret travels (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SecretMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

/// The JWS algorithms this client signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SigningAlg {
    #[value(name = "PS256")]
    Ps256,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "RS256")]
    Rs256,
}

impl SigningAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::Ps256 => Algorithm::PS256,
            Self::Es256 => Algorithm::ES256,
            Self::Rs256 => Algorithm::RS256,
        }
    }
}

fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// An http(s) URL without query or fragment, kept without a trailing `/`.
fn parse_issuer(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("the issuer must be an https (or http) URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the issuer must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the issuer has no query or fragment (OpenID Discovery §2)".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// A private key that signs JWTs with one algorithm and an optional `kid`.
#[derive(Clone)]
pub struct SigningKey {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PEM private key. Without `alg`, an EC key signs ES256 and an
    /// RSA key PS256. The key is tried once so a wrong one fails here.
    pub fn from_pem(
        pem: &[u8],
        alg: Option<SigningAlg>,
        kid: Option<String>,
    ) -> Result<Self, String> {
        let (key, alg) = match alg {
            Some(SigningAlg::Es256) => (
                EncodingKey::from_ec_pem(pem)
                    .map_err(|_| "ES256 needs an EC P-256 private key in PEM (PKCS#8)")?,
                Algorithm::ES256,
            ),
            Some(rsa) => (
                EncodingKey::from_rsa_pem(pem)
                    .map_err(|_| format!("{rsa:?} needs an RSA private key in PEM"))?,
                rsa.algorithm(),
            ),
            None => match EncodingKey::from_ec_pem(pem) {
                Ok(key) => (key, Algorithm::ES256),
                Err(_) => (
                    EncodingKey::from_rsa_pem(pem)
                        .map_err(|_| "not an EC or RSA private key in PEM")?,
                    Algorithm::PS256,
                ),
            },
        };
        let key = Self { key, alg, kid };
        key.sign(&json!({}))
            .map_err(|e| format!("the key cannot sign {alg:?}: {e}"))?;
        Ok(key)
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    pub fn sign(&self, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.alg);
        header.kid.clone_from(&self.kid);
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// How this client proves who it is at both endpoints.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded id and secret.
    SecretBasic(SecretString),
    /// RFC 6749 §2.3.1: `client_id` and `client_secret` in the form.
    SecretPost(SecretString),
    /// RFC 7523 §2.2: a fresh JWT signed with the client's key per request.
    PrivateKeyJwt(SigningKey),
    /// RFC 8705 §2: the TLS client certificate; only `client_id` in the form.
    TlsClientAuth,
}

impl ClientAuth {
    fn method(&self) -> &'static str {
        match self {
            Self::SecretBasic(_) => "client_secret_basic",
            Self::SecretPost(_) => "client_secret_post",
            Self::PrivateKeyJwt(_) => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
        }
    }
}

/// What client authentication adds to one request.
struct Credentials {
    authorization: Option<HeaderValue>,
    form: Vec<(&'static str, String)>,
}

/// Client authentication for one request to `endpoint` at time `now`;
/// `jti` makes a client assertion unique.
fn credentials(
    client_id: &str,
    auth: &ClientAuth,
    endpoint: &str,
    now: u64,
    jti: String,
) -> Result<Credentials, Failure> {
    let id = ("client_id", client_id.to_owned());
    Ok(match auth {
        ClientAuth::SecretBasic(secret) => {
            // RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            let user: String = encode(client_id);
            let pass: String = encode(secret.expose_secret());
            let mut value = HeaderValue::try_from(format!(
                "Basic {}",
                STANDARD.encode(format!("{user}:{pass}"))
            ))
            .map_err(|_| Failure::new("invalid_client", "the credentials cannot form a header"))?;
            value.set_sensitive(true);
            Credentials {
                authorization: Some(value),
                form: vec![],
            }
        }
        ClientAuth::SecretPost(secret) => Credentials {
            authorization: None,
            form: vec![id, ("client_secret", secret.expose_secret().to_owned())],
        },
        ClientAuth::PrivateKeyJwt(key) => {
            let claims = assertion_claims(client_id, endpoint, now, jti);
            let assertion = key
                .sign(&claims)
                .map_err(|e| Failure::new("signing_failed", format!("client assertion: {e}")))?;
            Credentials {
                authorization: None,
                form: vec![
                    id,
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()),
                    ("client_assertion", assertion),
                ],
            }
        }
        ClientAuth::TlsClientAuth => Credentials {
            authorization: None,
            form: vec![id],
        },
    })
}

/// RFC 7523 §3: the client assertion's claims; `aud` is the endpoint called.
pub fn assertion_claims(client_id: &str, endpoint: &str, now: u64, jti: String) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": endpoint,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
        "jti": jti,
    })
}

/// The authentication request parameters (CIBA Core §7.1).
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub scope: String,
    pub login_hint: String,
    pub binding_message: Option<String>,
    pub requested_expiry: Option<u64>,
    pub acr_values: Option<String>,
    pub client_notification_token: Option<SecretString>,
}

impl AuthRequest {
    /// The parameters as form fields.
    fn form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("scope", self.scope.clone()),
            ("login_hint", self.login_hint.clone()),
        ];
        let optional = [
            ("binding_message", self.binding_message.clone()),
            (
                "requested_expiry",
                self.requested_expiry.map(|e| e.to_string()),
            ),
            ("acr_values", self.acr_values.clone()),
            (
                "client_notification_token",
                self.client_notification_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
            ),
        ];
        form.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
        form
    }

    /// CIBA Core §7.1.1: the signed request object's claims, with
    /// requested_expiry as a JSON number.
    pub fn request_object_claims(
        &self,
        client_id: &str,
        issuer: &str,
        now: u64,
        jti: String,
    ) -> Value {
        let mut claims = Map::new();
        for (name, value) in self.form() {
            claims.insert(name.to_owned(), Value::String(value));
        }
        if let Some(expiry) = self.requested_expiry {
            claims.insert("requested_expiry".into(), expiry.into());
        }
        let jwt = json!({
            "iss": client_id,
            "aud": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + REQUEST_OBJECT_LIFETIME_SECS,
            "jti": jti,
        });
        if let Value::Object(jwt) = jwt {
            claims.extend(jwt);
        }
        Value::Object(claims)
    }
}

/// A validated command line.
pub struct Config {
    issuer: String,
    client_id: String,
    auth: ClientAuth,
    request: AuthRequest,
    /// `--sign-request`: the key that signs the request object.
    request_signer: Option<SigningKey>,
    max_wait: Option<Duration>,
    http: reqwest::Client,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("auth", &self.auth)
            .field("request", &self.request)
            .field("request_signer", &self.request_signer)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

fn usage(kind: ErrorKind, message: impl fmt::Display) -> clap::Error {
    Args::command().error(kind, message)
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, clap::Error> {
    std::fs::read(path).map_err(|e| {
        usage(
            ErrorKind::Io,
            format!("cannot read {flag} {}: {e}", path.display()),
        )
    })
}

impl Config {
    /// Checks the combination of options and loads every file they name.
    pub fn from_args(args: Args) -> Result<Self, clap::Error> {
        let key = match &args.private_key {
            Some(path) => Some(
                SigningKey::from_pem(
                    &read_file("--private-key", path)?,
                    args.alg,
                    args.key_id.clone(),
                )
                .map_err(|e| usage(ErrorKind::InvalidValue, format!("--private-key: {e}")))?,
            ),
            None => None,
        };
        let auth = match (args.client_secret, args.cert.is_some(), &key) {
            (Some(_), true, _) => {
                return Err(usage(
                    ErrorKind::ArgumentConflict,
                    "give a client secret (--client-secret or CIBA_CLIENT_SECRET) or --cert, not both",
                ))
            }
            (Some(secret), false, _) => match args.auth_method {
                Some(SecretMethod::ClientSecretPost) => ClientAuth::SecretPost(secret),
                _ => ClientAuth::SecretBasic(secret),
            },
            (None, true, _) => ClientAuth::TlsClientAuth,
            (None, false, Some(key)) => ClientAuth::PrivateKeyJwt(key.clone()),
            (None, false, None) => {
                return Err(usage(
                    ErrorKind::MissingRequiredArgument,
                    "no client authentication: give --client-secret (or CIBA_CLIENT_SECRET), --private-key, or --cert with --cert-key",
                ))
            }
        };
        if args.auth_method.is_some()
            && !matches!(auth, ClientAuth::SecretBasic(_) | ClientAuth::SecretPost(_))
        {
            return Err(usage(
                ErrorKind::ArgumentConflict,
                "--auth-method applies to a client secret only",
            ));
        }
        let request_signer = if args.sign_request { key } else { None };
        if args.private_key.is_some()
            && request_signer.is_none()
            && !matches!(auth, ClientAuth::PrivateKeyJwt(_))
        {
            return Err(usage(
                ErrorKind::ArgumentConflict,
                format!(
                    "--private-key would be unused: {} authenticates the client, so the key only signs requests with --sign-request",
                    auth.method()
                ),
            ));
        }
        let identity = match (&args.cert, &args.cert_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_file("--cert", cert)?;
                pem.push(b'\n');
                pem.extend(read_file("--cert-key", key)?);
                Some(pem)
            }
            _ => None,
        };
        let ca = match &args.ca {
            Some(path) => Some(read_file("--ca", path)?),
            None => None,
        };
        let http = http_client(ca.as_deref(), identity.as_deref())
            .map_err(|e| usage(ErrorKind::InvalidValue, e))?;
        Ok(Self {
            issuer: args.issuer,
            client_id: args.client_id,
            auth,
            request: AuthRequest {
                scope: args.scope,
                login_hint: args.login_hint,
                binding_message: args.binding_message,
                requested_expiry: args.requested_expiry,
                acr_values: args.acr_values,
                client_notification_token: args.client_notification_token,
            },
            request_signer,
            max_wait: args.max_wait.map(Duration::from_secs),
            http,
        })
    }
}

/// No redirects: a token endpoint that redirects is not one to follow with
/// credentials (RFC 6749 §3.2 has no redirects).
fn http_client(ca: Option<&[u8]>, identity: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("ciba-proxy-client/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("--ca: not a PEM certificate: {e}"))?;
        if roots.is_empty() {
            return Err("--ca: no certificate in the file".into());
        }
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    if let Some(pem) = identity {
        let identity = reqwest::Identity::from_pem(pem)
            .map_err(|_| "--cert/--cert-key: need a PEM certificate and its PEM private key")?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

/// An error the run ends with: `error: <code>: <description>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct Failure {
    pub code: String,
    pub description: String,
}

impl Failure {
    fn new(code: &str, description: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            description: description.into(),
        }
    }

    /// An OAuth error response (RFC 6749 §5.2) or whatever came instead.
    fn from_reply(reply: &Reply) -> Self {
        match reply.body.get("error").and_then(Value::as_str) {
            Some(code) => Self::new(
                code,
                reply
                    .body
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("(no description)"),
            ),
            None => Self::new(
                "invalid_response",
                format!("HTTP {} without an OAuth error code", reply.status),
            ),
        }
    }
}

/// A JSON response.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

/// Writes one progress line to stderr; a closed stderr is not an error.
fn note(line: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The first characters of a bearer identifier, enough to tell two apart.
pub fn shortened(id: &str) -> String {
    let shown: String = id.chars().take(SHOWN_ID_CHARS).collect();
    if shown.len() < id.len() {
        format!("{shown}…")
    } else {
        shown
    }
}

/// Runs `ciba-proxy client` with `args` (the first is the program name).
pub async fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let config = match Args::try_parse_from(args).and_then(Config::from_args) {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            // 2 for usage errors, 0 for --help and --version.
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let run = run(&config, &SystemClock);
    let outcome = match config.max_wait {
        Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
            Err(Failure::new(
                "timeout",
                format!("no tokens within --max-wait {} s", limit.as_secs()),
            ))
        }),
        None => run.await,
    };
    match outcome {
        Ok(tokens) => match writeln!(std::io::stdout(), "{tokens}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                note(format_args!(
                    "error: output_failed: cannot write the tokens: {e}"
                ));
                ExitCode::from(EXIT_FAILED)
            }
        },
        Err(failure) => {
            note(format_args!("error: {failure}"));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The provider's endpoints (OpenID Connect Discovery §3, CIBA Core §4).
#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: String,
    backchannel_authentication_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// CIBA Core §7.3.
#[derive(Debug, Deserialize)]
struct Acknowledgement {
    auth_req_id: String,
    expires_in: u64,
    interval: Option<u64>,
}

/// Discovery, the request, then polling: the token response on success.
pub async fn run(config: &Config, clock: &dyn Clock) -> Result<Value, Failure> {
    let metadata = discover(config).await?;
    let ack = request(config, &metadata, clock).await?;
    poll(config, &metadata, &ack, clock).await
}

async fn discover(config: &Config) -> Result<Metadata, Failure> {
    let url = format!("{}/.well-known/openid-configuration", config.issuer);
    note(format_args!("discovery: GET {url}"));
    if url.starts_with("http://") && !is_loopback(&config.issuer) {
        note(format_args!(
            "warning: plain http: credentials and tokens travel unencrypted"
        ));
    }
    let response = config
        .http
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(network)?;
    let reply = reply(response).await?;
    if reply.status != 200 {
        return Err(Failure::new(
            "discovery_failed",
            format!("HTTP {} from {url}", reply.status),
        ));
    }
    let metadata: Metadata = serde_json::from_value(reply.body).map_err(|e| {
        Failure::new(
            "discovery_failed",
            format!("no CIBA endpoints in the discovery document: {e}"),
        )
    })?;
    // OpenID Connect Discovery §4.3: the issuer must be the one asked for.
    if metadata.issuer.trim_end_matches('/') != config.issuer {
        return Err(Failure::new(
            "discovery_failed",
            format!(
                "the document names issuer {} instead of {}",
                metadata.issuer, config.issuer
            ),
        ));
    }
    note(format_args!(
        "discovery: backchannel_authentication_endpoint {}",
        metadata.backchannel_authentication_endpoint
    ));
    note(format_args!(
        "discovery: token_endpoint {}",
        metadata.token_endpoint
    ));
    let method = config.auth.method();
    if let Some(methods) = &metadata.token_endpoint_auth_methods_supported {
        if !methods.iter().any(|m| m == method) {
            note(format_args!(
                "warning: the provider does not list {method} among its client authentication methods"
            ));
        }
    }
    Ok(metadata)
}

fn is_loopback(issuer: &str) -> bool {
    url::Url::parse(issuer).is_ok_and(|u| match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    })
}

/// The form for the backchannel authentication endpoint: the parameters,
/// or only `request` when they are signed (CIBA Core §7.1.1).
fn request_form(
    config: &Config,
    now: u64,
    jti: String,
) -> Result<Vec<(&'static str, String)>, Failure> {
    match &config.request_signer {
        None => Ok(config.request.form()),
        Some(key) => {
            let claims =
                config
                    .request
                    .request_object_claims(&config.client_id, &config.issuer, now, jti);
            let jwt = key
                .sign(&claims)
                .map_err(|e| Failure::new("signing_failed", format!("request object: {e}")))?;
            Ok(vec![("request", jwt)])
        }
    }
}

async fn request(
    config: &Config,
    metadata: &Metadata,
    clock: &dyn Clock,
) -> Result<Acknowledgement, Failure> {
    let endpoint = &metadata.backchannel_authentication_endpoint;
    let form = request_form(config, clock.now_secs(), random_token(16))?;
    let r = &config.request;
    note(format_args!(
        "request: POST {endpoint} login_hint={:?} scope={:?}{}{} ({}{})",
        r.login_hint,
        r.scope,
        r.binding_message
            .as_deref()
            .map(|b| format!(" binding_message={b:?}"))
            .unwrap_or_default(),
        r.requested_expiry
            .map(|e| format!(" requested_expiry={e}"))
            .unwrap_or_default(),
        config.auth.method(),
        if config.request_signer.is_some() {
            ", signed request object"
        } else {
            ""
        },
    ));
    let reply = post(config, endpoint, form, clock).await?;
    if reply.status != 200 {
        return Err(Failure::from_reply(&reply));
    }
    let ack: Acknowledgement = serde_json::from_value(reply.body).map_err(|e| {
        Failure::new(
            "invalid_response",
            format!("the acknowledgement is not CIBA Core §7.3: {e}"),
        )
    })?;
    note(format_args!(
        "request: acknowledged, auth_req_id {} expires_in {} s interval {}",
        shortened(&ack.auth_req_id),
        ack.expires_in,
        ack.interval
            .map(|i| format!("{i} s"))
            .unwrap_or_else(|| format!("not given ({DEFAULT_INTERVAL_SECS} s)")),
    ));
    Ok(ack)
}

/// What one poll of the token endpoint says (CIBA Core §11).
#[derive(Debug, PartialEq)]
enum PollResult {
    Tokens(Value),
    /// authorization_pending: the user has not answered yet.
    Pending,
    /// slow_down, with the new interval when the provider gives it.
    SlowDown(Option<u64>),
    /// Worth another try at the next interval (temporarily_unavailable, network).
    Retry(Failure),
    /// access_denied, expired_token, invalid_grant, ...: the end.
    Final(Failure),
}

fn classify(reply: Reply) -> PollResult {
    if reply.status == 200 {
        return match reply.body.get("access_token") {
            Some(Value::String(_)) => PollResult::Tokens(reply.body),
            _ => PollResult::Final(Failure::new(
                "invalid_response",
                "the token response has no access_token",
            )),
        };
    }
    let failure = Failure::from_reply(&reply);
    match failure.code.as_str() {
        "authorization_pending" => PollResult::Pending,
        "slow_down" => PollResult::SlowDown(reply.body.get("interval").and_then(Value::as_u64)),
        "temporarily_unavailable" => PollResult::Retry(failure),
        _ => PollResult::Final(failure),
    }
}

/// The interval before the next poll.
fn next_interval(current: u64, result: &PollResult) -> u64 {
    match result {
        // CIBA Core §11: slow_down lasts for every later poll.
        PollResult::SlowDown(Some(given)) => (*given).max(1),
        PollResult::SlowDown(None) => current + SLOW_DOWN_SECS,
        _ => current,
    }
}

async fn poll(
    config: &Config,
    metadata: &Metadata,
    ack: &Acknowledgement,
    clock: &dyn Clock,
) -> Result<Value, Failure> {
    let endpoint = &metadata.token_endpoint;
    let mut interval = ack.interval.unwrap_or(DEFAULT_INTERVAL_SECS).max(1);
    let give_up = tokio::time::Instant::now()
        + Duration::from_secs(ack.expires_in.saturating_add(EXPIRY_GRACE_SECS));
    for attempt in 1u64.. {
        if tokio::time::Instant::now() + Duration::from_secs(interval) > give_up {
            return Err(Failure::new(
                "timeout",
                format!(
                    "the request expired ({} s) without a final answer from the provider",
                    ack.expires_in
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let form = vec![
            ("grant_type", CIBA_GRANT_TYPE.to_owned()),
            ("auth_req_id", ack.auth_req_id.clone()),
        ];
        let result = match post(config, endpoint, form, clock).await {
            Ok(reply) => classify(reply),
            Err(failure) if failure.code == "network_error" => PollResult::Retry(failure),
            Err(failure) => PollResult::Final(failure),
        };
        interval = next_interval(interval, &result);
        match result {
            PollResult::Tokens(tokens) => {
                note(format_args!(
                    "poll {attempt}: tokens issued (token_type {}, expires_in {})",
                    tokens
                        .get("token_type")
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    tokens
                        .get("expires_in")
                        .and_then(Value::as_u64)
                        .map(|e| format!("{e} s"))
                        .unwrap_or_else(|| "?".into()),
                ));
                return Ok(tokens);
            }
            PollResult::Pending => note(format_args!(
                "poll {attempt}: authorization_pending; next poll in {interval} s"
            )),
            PollResult::SlowDown(_) => note(format_args!(
                "poll {attempt}: slow_down; interval now {interval} s"
            )),
            PollResult::Retry(failure) => note(format_args!(
                "poll {attempt}: {failure}; retrying in {interval} s"
            )),
            PollResult::Final(failure) => {
                note(format_args!("poll {attempt}: {}", failure.code));
                return Err(failure);
            }
        }
    }
    Err(Failure::new("timeout", "gave up polling"))
}

/// POSTs `form` to `endpoint` with this client's authentication.
async fn post(
    config: &Config,
    endpoint: &str,
    mut form: Vec<(&'static str, String)>,
    clock: &dyn Clock,
) -> Result<Reply, Failure> {
    let credentials = credentials(
        &config.client_id,
        &config.auth,
        endpoint,
        clock.now_secs(),
        random_token(16),
    )?;
    form.extend(credentials.form);
    let mut request = config
        .http
        .post(endpoint)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form);
    if let Some(value) = credentials.authorization {
        request = request.header(AUTHORIZATION, value);
    }
    reply(request.send().await.map_err(network)?).await
}

/// The error and its causes (TLS, DNS, connection), without the URL.
fn network(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let mut description = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        description.push_str(": ");
        description.push_str(&c.to_string());
        cause = c.source();
    }
    Failure::new("network_error", description)
}

async fn reply(response: reqwest::Response) -> Result<Reply, Failure> {
    let status = response.status();
    if status.is_redirection() {
        return Err(Failure::new(
            "invalid_response",
            format!(
                "HTTP {status} redirect from {}; redirects are not followed",
                response.url()
            ),
        ));
    }
    let text = response.text().await.map_err(network)?;
    let body = serde_json::from_str(&text).map_err(|_| {
        Failure::new(
            "invalid_response",
            format!("HTTP {} with a body that is not JSON", status.as_u16()),
        )
    })?;
    Ok(Reply {
        status: status.as_u16(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    const PS256_PEM: &str = include_str!("../../tests/support/keys/client-ps256.pem");
    const PS256_JWK: &str = include_str!("../../tests/support/keys/client-ps256.jwk.json");
    const ES256_PEM: &str = include_str!("../../tests/support/keys/client-es256.pem");
    const ES256_JWK: &str = include_str!("../../tests/support/keys/client-es256.jwk.json");
    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/keys");
    const ENDPOINT: &str = "https://op.example/token";
    const NOW: u64 = 1_700_000_000;

    fn verify(jwt: &str, jwk: &str, alg: Algorithm, aud: &str) -> Map<String, Value> {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(jwk).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(alg);
        validation.set_audience(&[aud]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        decode::<Map<String, Value>>(jwt, &key, &validation)
            .unwrap()
            .claims
    }

    fn jwt_auth(pem: &str, kid: Option<&str>) -> ClientAuth {
        ClientAuth::PrivateKeyJwt(
            SigningKey::from_pem(pem.as_bytes(), None, kid.map(str::to_owned)).unwrap(),
        )
    }

    fn field<'a>(form: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        form.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn private_key_jwt_sends_an_rfc7523_assertion_for_the_endpoint() {
        let auth = jwt_auth(PS256_PEM, Some("client-ps256"));
        let c = credentials("shop", &auth, ENDPOINT, NOW, "jti-1".into()).unwrap();
        assert!(c.authorization.is_none());
        assert_eq!(field(&c.form, "client_id"), Some("shop"));
        assert_eq!(
            field(&c.form, "client_assertion_type"),
            Some(CLIENT_ASSERTION_TYPE)
        );
        assert_eq!(field(&c.form, "client_secret"), None);
        let assertion = field(&c.form, "client_assertion").unwrap();

        let header = decode_header(assertion).unwrap();
        assert_eq!(header.alg, Algorithm::PS256);
        assert_eq!(header.kid.as_deref(), Some("client-ps256"));
        let claims = verify(assertion, PS256_JWK, Algorithm::PS256, ENDPOINT);
        assert_eq!(claims["iss"], "shop");
        assert_eq!(claims["sub"], "shop");
        assert_eq!(claims["aud"], ENDPOINT);
        assert_eq!(claims["iat"], NOW);
        assert_eq!(claims["exp"], NOW + 60);
        assert_eq!(claims["jti"], "jti-1");
        assert_eq!(claims.len(), 6, "{claims:?}");
    }

    #[test]
    fn an_ec_key_signs_es256_and_no_kid_means_no_kid_header() {
        let auth = jwt_auth(ES256_PEM, None);
        let c = credentials("shop", &auth, ENDPOINT, NOW, "j".into()).unwrap();
        let assertion = field(&c.form, "client_assertion").unwrap();
        let header = decode_header(assertion).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid, None);
        verify(assertion, ES256_JWK, Algorithm::ES256, ENDPOINT);
    }

    #[test]
    fn rs256_can_be_chosen_for_an_rsa_key() {
        let key =
            SigningKey::from_pem(PS256_PEM.as_bytes(), Some(SigningAlg::Rs256), None).unwrap();
        assert_eq!(key.alg(), Algorithm::RS256);
    }

    #[test]
    fn an_algorithm_the_key_cannot_make_is_refused() {
        let err =
            SigningKey::from_pem(ES256_PEM.as_bytes(), Some(SigningAlg::Ps256), None).unwrap_err();
        assert!(err.contains("RSA"), "{err}");
        let err =
            SigningKey::from_pem(PS256_PEM.as_bytes(), Some(SigningAlg::Es256), None).unwrap_err();
        assert!(err.contains("EC"), "{err}");
        assert!(SigningKey::from_pem(b"not a key", None, None).is_err());
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let key = SigningKey::from_pem(PS256_PEM.as_bytes(), None, Some("k".into())).unwrap();
        let shown = format!("{key:?}");
        assert!(
            shown.contains("PS256") && !shown.contains("content"),
            "{shown}"
        );
    }

    #[test]
    fn basic_credentials_are_form_urlencoded_first() {
        let auth = ClientAuth::SecretBasic("p w:%".into());
        let c = credentials("a:b", &auth, ENDPOINT, NOW, "j".into()).unwrap();
        assert!(c.form.is_empty());
        let header = c.authorization.unwrap();
        assert!(header.is_sensitive());
        let encoded = header.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
        assert_eq!(decoded, "a%3Ab:p+w%3A%25");
    }

    #[test]
    fn post_and_tls_credentials_go_in_the_form() {
        let c = credentials(
            "shop",
            &ClientAuth::SecretPost("s".into()),
            ENDPOINT,
            NOW,
            "j".into(),
        )
        .unwrap();
        assert_eq!(
            c.form,
            vec![("client_id", "shop".into()), ("client_secret", "s".into())]
        );
        let c = credentials(
            "shop",
            &ClientAuth::TlsClientAuth,
            ENDPOINT,
            NOW,
            "j".into(),
        )
        .unwrap();
        assert!(c.authorization.is_none());
        assert_eq!(c.form, vec![("client_id", "shop".into())]);
    }

    fn full_request() -> AuthRequest {
        AuthRequest {
            scope: "openid profile".into(),
            login_hint: "alice".into(),
            binding_message: Some("W4SCT".into()),
            requested_expiry: Some(90),
            acr_values: Some("urn:acr:mfa".into()),
            client_notification_token: Some("ping-token".into()),
        }
    }

    #[test]
    fn the_request_object_carries_every_parameter_and_the_jwt_claims() {
        let claims =
            full_request().request_object_claims("bank", "https://op.example", NOW, "j".into());
        assert_eq!(
            claims,
            json!({
                "iss": "bank",
                "aud": "https://op.example",
                "iat": NOW,
                "nbf": NOW,
                "exp": NOW + 300,
                "jti": "j",
                "scope": "openid profile",
                "login_hint": "alice",
                "binding_message": "W4SCT",
                "requested_expiry": 90,
                "acr_values": "urn:acr:mfa",
                "client_notification_token": "ping-token",
            })
        );
    }

    #[test]
    fn absent_parameters_are_left_out() {
        let request = AuthRequest {
            binding_message: None,
            requested_expiry: None,
            acr_values: None,
            client_notification_token: None,
            ..full_request()
        };
        assert_eq!(
            request.form(),
            vec![
                ("scope", "openid profile".into()),
                ("login_hint", "alice".into())
            ]
        );
        let claims = request.request_object_claims("bank", "https://op.example", NOW, "j".into());
        assert!(claims.get("requested_expiry").is_none());
        assert!(claims.get("binding_message").is_none());
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut all = vec![
            "client",
            "--issuer",
            "https://op.example/",
            "--login-hint",
            "alice",
        ];
        all.extend_from_slice(args);
        Args::try_parse_from(all).and_then(Config::from_args)
    }

    fn key_path(name: &str) -> String {
        format!("{KEYS}/{name}")
    }

    #[test]
    fn a_signed_request_sends_only_the_request_object() {
        let ps256 = key_path("client-ps256.pem");
        let config = parse(&[
            "--client-id",
            "bank",
            "--client-secret",
            "s",
            "--sign-request",
            "--private-key",
            &ps256,
            "--key-id",
            "client-ps256",
            "--binding-message",
            "W4SCT",
            "--requested-expiry",
            "90",
        ])
        .unwrap();
        assert_eq!(config.issuer, "https://op.example");
        assert!(matches!(config.auth, ClientAuth::SecretBasic(_)));
        let form = request_form(&config, NOW, "j".into()).unwrap();
        assert_eq!(form.len(), 1, "{form:?}");
        let jwt = field(&form, "request").unwrap();
        assert_eq!(
            decode_header(jwt).unwrap().kid.as_deref(),
            Some("client-ps256")
        );
        let claims = verify(jwt, PS256_JWK, Algorithm::PS256, "https://op.example");
        assert_eq!(claims["requested_expiry"], 90);
        assert_eq!(claims["login_hint"], "alice");
        assert_eq!(claims["scope"], "openid");
    }

    #[test]
    fn an_unsigned_request_sends_plain_parameters() {
        let config = parse(&[
            "--client-id",
            "shop",
            "--client-secret",
            "s",
            "--auth-method",
            "client_secret_post",
        ])
        .unwrap();
        assert!(matches!(config.auth, ClientAuth::SecretPost(_)));
        let form = request_form(&config, NOW, "j".into()).unwrap();
        assert_eq!(field(&form, "login_hint"), Some("alice"));
        assert_eq!(field(&form, "request"), None);
    }

    #[test]
    fn the_authentication_follows_the_options_given() {
        let ps256 = key_path("client-ps256.pem");
        let config = parse(&[
            "--client-id",
            "shop",
            "--private-key",
            &ps256,
            "--alg",
            "ps256",
        ])
        .unwrap();
        assert!(matches!(config.auth, ClientAuth::PrivateKeyJwt(_)));
        assert!(config.request_signer.is_none());
        let config = parse(&[
            "--client-id",
            "shop",
            "--private-key",
            &ps256,
            "--sign-request",
        ])
        .unwrap();
        assert!(matches!(config.auth, ClientAuth::PrivateKeyJwt(_)));
        assert!(config.request_signer.is_some());
    }

    #[test]
    fn inconsistent_options_are_usage_errors() {
        let ps256 = key_path("client-ps256.pem");
        let es256 = key_path("client-es256.pem");
        let missing = key_path("missing.pem");
        let cases: Vec<Vec<&str>> = vec![
            vec!["--client-id", "shop"],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--cert",
                &ps256,
                "--cert-key",
                &ps256,
            ],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--sign-request",
            ],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--private-key",
                &ps256,
            ],
            vec![
                "--client-id",
                "shop",
                "--private-key",
                &ps256,
                "--auth-method",
                "client_secret_post",
            ],
            vec![
                "--client-id",
                "shop",
                "--private-key",
                &es256,
                "--alg",
                "PS256",
            ],
            vec!["--client-id", "shop", "--private-key", &missing],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--cert",
                &ps256,
            ],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--key-id",
                "k",
            ],
            vec![
                "--client-id",
                "shop",
                "--client-secret",
                "s",
                "--requested-expiry",
                "0",
            ],
        ];
        for args in cases {
            let err = parse(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        let err = Args::try_parse_from([
            "client",
            "--issuer",
            "ftp://x",
            "--client-id",
            "a",
            "--login-hint",
            "b",
        ]);
        assert!(err.is_err());
    }

    #[test]
    fn a_bad_client_certificate_is_a_usage_error() {
        // A private key is not a certificate.
        let ps256 = key_path("client-ps256.pem");
        let err = parse(&[
            "--client-id",
            "shop",
            "--cert",
            &ps256,
            "--cert-key",
            &ps256,
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--cert"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_output_or_usage_errors() {
        let config = parse(&[
            "--client-id",
            "shop",
            "--client-secret",
            "hunter2-secret",
            "--client-notification-token",
            "ping-bearer",
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("ping-bearer"),
            "{shown}"
        );
        let err = parse(&[
            "--client-id",
            "shop",
            "--client-secret",
            "hunter2-secret",
            "--cert",
            "x",
            "--cert-key",
            "y",
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    fn reply(status: u16, body: Value) -> Reply {
        Reply { status, body }
    }

    #[test]
    fn poll_results_follow_ciba_core_section_11() {
        let tokens = json!({"access_token": "a", "id_token": "i", "token_type": "Bearer"});
        assert_eq!(
            classify(reply(200, tokens.clone())),
            PollResult::Tokens(tokens)
        );
        assert_eq!(
            classify(reply(400, json!({"error": "authorization_pending"}))),
            PollResult::Pending
        );
        assert_eq!(
            classify(reply(400, json!({"error": "slow_down", "interval": 9}))),
            PollResult::SlowDown(Some(9))
        );
        assert_eq!(
            classify(reply(400, json!({"error": "slow_down"}))),
            PollResult::SlowDown(None)
        );
        assert!(matches!(
            classify(reply(503, json!({"error": "temporarily_unavailable"}))),
            PollResult::Retry(_)
        ));
        for code in [
            "access_denied",
            "expired_token",
            "invalid_grant",
            "invalid_client",
        ] {
            let result = classify(reply(
                400,
                json!({"error": code, "error_description": "why"}),
            ));
            assert_eq!(result, PollResult::Final(Failure::new(code, "why")));
        }
        assert!(matches!(
            classify(reply(200, json!({"token_type": "Bearer"}))),
            PollResult::Final(f) if f.code == "invalid_response"
        ));
        assert!(matches!(
            classify(reply(502, json!("gateway"))),
            PollResult::Final(f) if f.code == "invalid_response"
        ));
    }

    #[test]
    fn slow_down_adds_five_seconds_or_takes_the_given_interval() {
        assert_eq!(next_interval(5, &PollResult::SlowDown(None)), 10);
        assert_eq!(next_interval(10, &PollResult::SlowDown(None)), 15);
        assert_eq!(next_interval(5, &PollResult::SlowDown(Some(7))), 7);
        assert_eq!(next_interval(5, &PollResult::SlowDown(Some(0))), 1);
        assert_eq!(next_interval(5, &PollResult::Pending), 5);
    }

    #[test]
    fn the_auth_req_id_is_shown_only_in_part() {
        assert_eq!(shortened("abcdefghijklmnop"), "abcdefgh…");
        assert_eq!(shortened("abc"), "abc");
    }

    #[test]
    fn the_issuer_must_be_an_http_url() {
        assert_eq!(
            parse_issuer("https://op.example/").unwrap(),
            "https://op.example"
        );
        assert!(parse_issuer("op.example").is_err());
        assert!(parse_issuer("https://op.example/?x=1").is_err());
        assert!(parse_issuer("https://user:pw@op.example").is_err());
        assert!(is_loopback("http://127.0.0.1:8080"));
        assert!(!is_loopback("http://op.example"));
    }
}
