//! `ciba-proxy device`: a reference authentication device in the console,
//! as `ciba-proxy client` is the reference consumption device. It registers
//! with the JSON of an account page's QR code, lists the user's pending
//! requests, approves (printing where the user signs in at the IdP) or
//! denies one, and unregisters (`docs/devices.md`).
//!
//! The library part makes the JWS a device signs ([`DeviceKey`]): the
//! end-to-end suite signs with it too, so the device side exists once. The
//! key file (`--key`, mode 0600) keeps the ES256 private key (PKCS#8 PEM),
//! the `did` and the proxy's issuer (`hst`) in one JSON object.
//!
//! Progress and errors go to stderr, answers to stdout. Exit status: 0 done,
//! 1 refused or failed (`error: <code>: <description>`), 2 usage error.
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ciba_proto::device::{
    APPROVE, AUTH_SCHEME, DENY, JOSE_CONTENT_TYPE, MAX_CALL_LIFETIME_SECS, REQUESTS_PATH,
};
use clap::{Parser, Subcommand};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::http::{network, reply};
use crate::{codes, note, random_token, Clock, Failure, SystemClock};

/// The subcommand of `ciba-proxy` that runs this device.
pub const SUBCOMMAND: &str = "device";

const EXIT_FAILED: u8 = 1;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The codes of failures this device finds itself.
mod device_codes {
    /// The key file is missing, unreadable or not one this device wrote.
    pub const KEY_FILE: &str = "key_file";
    /// The QR code's JSON is not a registration offer.
    pub const INVALID_QR: &str = "invalid_qr";
}

/// What an account page's QR code holds (and shows as text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qr {
    /// The device id the proxy assigned.
    pub did: String,
    /// The user.
    pub un: String,
    /// The proxy's issuer; the paths below are relative to it.
    pub hst: String,
    /// Registration, decision (authentication) and removal paths.
    pub re: String,
    pub ae: String,
    pub rde: String,
    /// The single-use challenge.
    pub chg: String,
}

impl Qr {
    pub fn parse(json: &str) -> Result<Self, Failure> {
        serde_json::from_str(json).map_err(|e| {
            Failure::new(
                device_codes::INVALID_QR,
                format!("not the JSON of a registration QR code: {e}"),
            )
        })
    }
}

/// A device's ES256 key: it signs the registration and every call.
pub struct DeviceKey {
    signing: SigningKey,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("jwk", &self.public_jwk())
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl DeviceKey {
    /// A new P-256 key.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::random(&mut rand::rngs::OsRng),
        }
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, Failure> {
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|_| {
            Failure::new(device_codes::KEY_FILE, "the key is not a PKCS#8 P-256 key")
        })?;
        Ok(Self { signing })
    }

    pub fn to_pkcs8_pem(&self) -> Result<String, Failure> {
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|_| Failure::new(codes::SIGNING_FAILED, "the key cannot be encoded"))
    }

    /// The public key as a JWK (RFC 7518 §6.2.1).
    pub fn public_jwk(&self) -> Value {
        let point = self.signing.verifying_key().to_encoded_point(false);
        let coordinate = |c: Option<&p256::FieldBytes>| c.map(|c| b64(c)).unwrap_or_default();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": coordinate(point.x()),
            "y": coordinate(point.y()),
        })
    }

    /// A compact JWS of `claims` under `header`, signed ES256 whatever
    /// `header` says (tests send odd headers on purpose).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    /// The registration JWS: this key in the `jwk` header; the claims
    /// `did` and `chg` from the QR code, `name`, `model` and, when the
    /// device can be reached by push, `push`.
    pub fn registration(&self, qr: &Qr, name: &str, model: &str, push: Option<Value>) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "jwk": self.public_jwk()});
        let mut claims = json!({"did": qr.did, "chg": qr.chg, "name": name, "model": model});
        if let Some(push) = push {
            claims["push"] = push;
        }
        self.sign(&header, &claims)
    }

    /// The claims of a call by device `did` at `now`: `did`, `iat`, `exp`
    /// (a minute ahead), a fresh `jti`, and `extra` (the decision's).
    pub fn call_claims(did: &str, now: u64, extra: Map<String, Value>) -> Value {
        let mut claims = extra;
        for (name, value) in [
            ("did", Value::from(did)),
            ("iat", Value::from(now)),
            ("exp", Value::from(now + MAX_CALL_LIFETIME_SECS)),
            ("jti", Value::from(random_token(16))),
        ] {
            claims.insert(name.to_owned(), value);
        }
        Value::Object(claims)
    }

    /// A call's JWS: `kid` = `did`, claims from [`Self::call_claims`].
    pub fn call(&self, did: &str, now: u64, extra: Map<String, Value>) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": did});
        self.sign(&header, &Self::call_claims(did, now, extra))
    }
}

/// What the key file keeps: the key and, once registered, where and as what.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    /// PKCS#8 PEM.
    key: String,
    did: String,
    hst: String,
}

/// A registered device: its key, its id and the proxy it registered at.
#[derive(Debug)]
pub struct Registered {
    pub key: DeviceKey,
    pub did: String,
    pub hst: String,
}

impl Registered {
    pub fn load(path: &Path) -> Result<Self, Failure> {
        let unreadable = |m: String| Failure::new(device_codes::KEY_FILE, m);
        let text = std::fs::read_to_string(path)
            .map_err(|e| unreadable(format!("cannot read {}: {e}", path.display())))?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|_| {
            unreadable(format!(
                "{} is not a key file of `ciba-proxy device register`",
                path.display()
            ))
        })?;
        Ok(Self {
            key: DeviceKey::from_pkcs8_pem(&file.key)?,
            did: file.did,
            hst: file.hst,
        })
    }

    /// Writes the key file, readable by its owner only, never over another.
    pub fn save(&self, path: &Path) -> Result<(), Failure> {
        let failed = |e: std::io::Error| {
            Failure::new(
                device_codes::KEY_FILE,
                format!("cannot write {}: {e}", path.display()),
            )
        };
        let file = KeyFile {
            key: self.key.to_pkcs8_pem()?,
            did: self.did.clone(),
            hst: self.hst.clone(),
        };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|_| Failure::new(device_codes::KEY_FILE, "cannot encode the key file"))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(path).map_err(failed)?;
        out.write_all(text.as_bytes()).map_err(failed)?;
        out.write_all(b"\n").map_err(failed)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.hst.trim_end_matches('/'))
    }

    fn authorization(&self, now: u64, extra: Map<String, Value>) -> String {
        format!("{AUTH_SCHEME} {}", self.key.call(&self.did, now, extra))
    }
}

/// The device's HTTP client: no redirects, bounded time.
pub fn http_client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(network)
}

/// The JSON reply of a call, or its error.
async fn expect(response: reqwest::Response, status: u16) -> Result<Value, Failure> {
    let got = response.status().as_u16();
    if got == status && status == 204 {
        return Ok(Value::Null);
    }
    let reply = reply(response).await?;
    if reply.status == status {
        Ok(reply.body)
    } else {
        Err(Failure::from_reply(reply.status, &reply.body))
    }
}

/// `POST {hst}{re}`: registers `key` with the QR code's offer.
pub async fn register(
    http: &reqwest::Client,
    qr: &Qr,
    key: &DeviceKey,
    name: &str,
    model: &str,
    push: Option<Value>,
) -> Result<String, Failure> {
    let url = format!("{}{}", qr.hst.trim_end_matches('/'), qr.re);
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, JOSE_CONTENT_TYPE)
        .header(reqwest::header::ACCEPT, "application/json")
        .body(key.registration(qr, name, model, push))
        .send()
        .await
        .map_err(network)?;
    let body = expect(response, 201).await?;
    body["did"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::new(codes::INVALID_RESPONSE, "201 without a did"))
}

/// One of the user's pending requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pending {
    pub handle: String,
    pub client_name: String,
    pub binding_message: Option<String>,
    /// Number matching: the codes to pick from (the binding message is then
    /// withheld: the user must read it on the consumption device).
    #[serde(default)]
    pub match_choices: Option<Vec<String>>,
    pub scope: String,
    pub expires_at: u64,
}

/// `GET {hst}/devices/requests`.
pub async fn pending(
    http: &reqwest::Client,
    device: &Registered,
    clock: &dyn Clock,
) -> Result<Vec<Pending>, Failure> {
    let response = http
        .get(device.url(REQUESTS_PATH))
        .header(
            reqwest::header::AUTHORIZATION,
            device.authorization(clock.now_secs(), Map::new()),
        )
        .send()
        .await
        .map_err(network)?;
    let body = expect(response, 200).await?;
    serde_json::from_value(body["requests"].clone())
        .map_err(|_| Failure::new(codes::INVALID_RESPONSE, "not a list of requests"))
}

/// `POST {hst}/devices/decision`: `res` is `approve` or `deny`; `code`
/// the binding message, with number matching. The JSON answer.
pub async fn decide(
    http: &reqwest::Client,
    device: &Registered,
    handle: &str,
    res: &str,
    code: Option<&str>,
    clock: &dyn Clock,
) -> Result<Value, Failure> {
    let mut claims = Map::new();
    claims.insert("handle".into(), handle.into());
    claims.insert("res".into(), res.into());
    if let Some(code) = code {
        claims.insert("match".into(), code.into());
    }
    let response = http
        .post(device.url(ciba_proto::device::DECISION_PATH))
        .header(
            reqwest::header::AUTHORIZATION,
            device.authorization(clock.now_secs(), claims),
        )
        .send()
        .await
        .map_err(network)?;
    expect(response, 200).await
}

/// `POST {hst}/devices/remove`.
pub async fn remove(
    http: &reqwest::Client,
    device: &Registered,
    clock: &dyn Clock,
) -> Result<(), Failure> {
    let response = http
        .post(device.url(ciba_proto::device::REMOVE_PATH))
        .header(
            reqwest::header::AUTHORIZATION,
            device.authorization(clock.now_secs(), Map::new()),
        )
        .send()
        .await
        .map_err(network)?;
    expect(response, 204).await.map(|_| ())
}

/// The command line of `ciba-proxy device`.
#[derive(Parser)]
#[command(
    name = "ciba-proxy device",
    bin_name = "ciba-proxy device",
    version,
    about = "A console authentication device: registers with an account page's QR code, then lists, approves and denies the user's sign-in requests.",
    after_help = "Progress goes to stderr, answers to stdout.\nExit status: 0 done, 1 refused or failed (`error: <code>: <description>`), 2 usage error."
)]
pub struct DeviceArgs {
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Register a new key with the JSON of an account page's QR code; writes the key file
    Register {
        /// The QR code's JSON ({"did","un","hst","re","ae","rde","chg"})
        #[arg(long, value_name = "JSON")]
        qr: String,
        /// The key file to create (mode 0600; never overwritten)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The name the account page shows
        #[arg(long, value_name = "NAME", default_value = "Console device")]
        name: String,
        /// The model the account page shows
        #[arg(long, value_name = "MODEL", default_value = "ciba-proxy device")]
        model: String,
        /// An FCM registration token the proxy may push to
        #[arg(long, value_name = "TOKEN")]
        push_fcm: Option<String>,
    },
    /// List the user's pending requests (JSON on stdout)
    Pending {
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Approve a request; prints the URL where the user signs in at the IdP
    Approve {
        /// The request's handle (from `pending`); it may start with `-`
        /// (base64url), so it is never read as an option
        #[arg(allow_hyphen_values = true)]
        handle: String,
        /// The code shown where the request started (number matching)
        #[arg(long = "match", value_name = "CODE")]
        code: Option<String>,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Deny a request: it ends at once
    Deny {
        /// The request's handle (from `pending`)
        #[arg(allow_hyphen_values = true)]
        handle: String,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Unregister this device at the proxy
    Remove {
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

/// Runs `ciba-proxy device` on parsed `args`. Must run inside a Tokio runtime.
pub async fn execute(args: DeviceArgs) -> ExitCode {
    match run(args.command, &SystemClock).await {
        Ok(out) => {
            if !out.is_empty() && writeln!(std::io::stdout(), "{out}").is_err() {
                return ExitCode::from(EXIT_FAILED);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            note(format_args!("error: {failure}"));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// One command; what it prints on stdout.
async fn run(command: DeviceCommand, clock: &dyn Clock) -> Result<String, Failure> {
    let http = http_client()?;
    match command {
        DeviceCommand::Register {
            qr,
            key,
            name,
            model,
            push_fcm,
        } => {
            let qr = Qr::parse(&qr)?;
            if key.exists() {
                return Err(Failure::new(
                    device_codes::KEY_FILE,
                    format!("{} exists already; choose a new file", key.display()),
                ));
            }
            let device_key = DeviceKey::generate();
            let push = push_fcm.map(|token| json!({"kind": "fcm", "token": token}));
            let did = register(&http, &qr, &device_key, &name, &model, push).await?;
            let registered = Registered {
                key: device_key,
                did,
                hst: qr.hst,
            };
            registered.save(&key)?;
            note(format_args!(
                "registered at {} as device {}",
                registered.hst, registered.did
            ));
            Ok(String::new())
        }
        DeviceCommand::Pending { key } => {
            let device = Registered::load(&key)?;
            let requests = pending(&http, &device, clock).await?;
            note(format_args!("{} pending request(s)", requests.len()));
            let list: Vec<Value> = requests
                .iter()
                .map(|p| {
                    let mut listed = json!({
                        "handle": p.handle,
                        "client_name": p.client_name,
                        "binding_message": p.binding_message,
                        "scope": p.scope,
                        "expires_at": p.expires_at,
                    });
                    // Pick the one the consumption device shows, then
                    // `approve --match CODE`.
                    if let Some(choices) = &p.match_choices {
                        listed["match_choices"] = json!(choices);
                    }
                    listed
                })
                .collect();
            Ok(Value::Array(list).to_string())
        }
        DeviceCommand::Approve { handle, code, key } => {
            let device = Registered::load(&key)?;
            let answer = decide(&http, &device, &handle, APPROVE, code.as_deref(), clock).await?;
            match answer["authorization_url"].as_str() {
                Some(url) => {
                    note(format_args!("approved; sign in at the identity provider:"));
                    Ok(url.to_owned())
                }
                None => Err(Failure::new(
                    ciba_proto::error::ACCESS_DENIED,
                    answer["error_description"]
                        .as_str()
                        .unwrap_or("the request was not approved")
                        .to_owned(),
                )),
            }
        }
        DeviceCommand::Deny { handle, key } => {
            let device = Registered::load(&key)?;
            decide(&http, &device, &handle, DENY, None, clock).await?;
            note(format_args!("denied"));
            Ok(String::new())
        }
        DeviceCommand::Remove { key } => {
            let device = Registered::load(&key)?;
            remove(&http, &device, clock).await?;
            note(format_args!("removed; {} can be deleted", key.display()));
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_that_starts_with_a_hyphen_is_a_handle() {
        for verb in ["approve", "deny"] {
            let args = DeviceArgs::try_parse_from([
                "ciba-proxy device",
                verb,
                "-rHandle_x",
                "--key",
                "k.pem",
            ])
            .unwrap_or_else(|e| panic!("{verb}: {e}"));
            match args.command {
                DeviceCommand::Approve { handle, .. } | DeviceCommand::Deny { handle, .. } => {
                    assert_eq!(handle, "-rHandle_x")
                }
                _ => panic!("{verb} parsed as another command"),
            }
        }
    }

    #[test]
    fn a_key_survives_its_pem_and_signs_verifiable_jws() {
        let key = DeviceKey::generate();
        let again = DeviceKey::from_pkcs8_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(key.public_jwk(), again.public_jwk());
        let jwk = key.public_jwk();
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap(),
        )
        .unwrap();
        let jws = again.call("did-1", 1_700_000_000, Map::new());
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Value>(&jws, &decoding, &validation).unwrap();
        assert_eq!(data.header.kid.as_deref(), Some("did-1"));
        assert_eq!(data.claims["exp"], 1_700_000_060);
        assert_eq!(data.claims["did"], "did-1");
    }

    #[test]
    fn a_qr_code_must_carry_every_field() {
        let qr = r#"{"did":"d","un":"alice","hst":"https://p.example","re":"/devices","ae":"/devices/decision","rde":"/devices/remove","chg":"c"}"#;
        assert_eq!(Qr::parse(qr).unwrap().did, "d");
        assert_eq!(
            Qr::parse(r#"{"did":"d"}"#).unwrap_err().code,
            device_codes::INVALID_QR
        );
    }
}
