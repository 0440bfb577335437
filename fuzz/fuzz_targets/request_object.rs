//! Fuzzes request-object validation (CIBA Core §7.1.1):
//! `ciba_proxy::request_object::request_parameters`, mainly for a client
//! "bank" registered with `backchannel_authentication_request_signing_alg =
//! "PS256"`.
//!
//! The first input byte picks how the rest becomes a request; it is read as
//! `(byte - b'0') % 5`, so the seeds can use the ASCII digits `0`..`4` and
//! stay readable text:
//!
//! - `0`: the bytes (lossy UTF-8) are the `request` form value as sent.
//! - `1`: the bytes are the whole form body, parsed with `FormParams::parse`,
//!   then validated for "bank" and for "plain", a client without a signing
//!   algorithm (misplaced or missing `request`, parameters outside the
//!   request object, a `client_id` beside it).
//! - `2`: `header\npayload\nsignature`, each part base64url-encoded and
//!   joined with dots: always a well-formed JWS, so header parsing and
//!   algorithm and key selection are reached; the signature never verifies.
//! - `3`: `header\npayload`, signed here with "bank"'s PS256 test key
//!   (tests/support/keys/client-ps256.pem), so the signature verifies and
//!   the claims checks, the `jti` store and the claims-to-parameters
//!   conversion run on fuzzed JSON.
//! - `4`: the same, signed with the ES256 test key (client-es256.pem) and
//!   validated for "bank-es256" and for "fapi-bank", a FAPI-CIBA client
//!   (lifetime rules). ES256 signs about 13x faster than RSA-2048 here, so
//!   this mode explores the claims checks much faster than `3`.
//!
//! Property: `request_parameters` returns (Ok or Err) and never panics; in
//! modes 0, 3 and 4 a request object accepted once must be refused when
//! replayed (`jti`). `now` is the fixed [`NOW`] so that a crash reproduces on
//! any day, and each input gets a fresh `MemoryStore` so that the outcome
//! depends on the input alone (a shared store would remember the `jti`s of
//! earlier inputs).
#![no_main]

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ciba_proxy::clients::{Client, ClientRegistry};
use ciba_proxy::clock::SystemClock;
use ciba_proxy::configuration::ClientSettings;
use ciba_proxy::error::OAuthError;
use ciba_proxy::form::FormParams;
use ciba_proxy::request_object::request_parameters;
use ciba_proxy::store::MemoryStore;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

/// The proxy's issuer and backchannel endpoint: the accepted `aud` values.
const ISSUER: &str = "https://ciba.example";
const ENDPOINT: &str = "https://ciba.example/bc-authorize";
/// "Now" for every input (2025-06-15T15:06:40Z); the seeds' iat/nbf/exp are
/// relative to it.
const NOW: u64 = 1_750_000_000;

const PS256_JWK: &str = include_str!("../../tests/support/keys/client-ps256.jwk.json");
const PS256_PEM: &str = include_str!("../../tests/support/keys/client-ps256.pem");
const ES256_JWK: &str = include_str!("../../tests/support/keys/client-es256.jwk.json");
const ES256_PEM: &str = include_str!("../../tests/support/keys/client-es256.pem");

struct Fixture {
    runtime: tokio::runtime::Runtime,
    /// "bank": PS256 request objects, verified with the inline `jwks`.
    bank: Arc<Client>,
    /// "bank-es256": ES256 request objects.
    bank_es256: Arc<Client>,
    /// "fapi-bank": ES256, held to the FAPI-CIBA profile.
    fapi: Arc<Client>,
    /// "plain": no signing algorithm, so `request` is refused.
    plain: Arc<Client>,
    ps256: EncodingKey,
    es256: EncodingKey,
}

fn client_settings(toml: &str) -> ClientSettings {
    config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("client settings")
}

/// A client that signs its requests with `alg` and the key in `jwk`.
fn signing_client(id: &str, alg: &str, jwk: &str, extra: &str) -> ClientSettings {
    client_settings(&format!(
        r#"
        client_id = "{id}"
        scope = "openid"
        backchannel_authentication_request_signing_alg = "{alg}"
        jwks = '{{"keys":[{jwk}]}}'
        {extra}
        "#,
        jwk = jwk.trim()
    ))
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let basic = r#"
            client_secret = "s3cret"
            token_endpoint_auth_method = "client_secret_basic"
        "#;
        let clients = [
            signing_client("bank", "PS256", PS256_JWK, basic),
            signing_client("bank-es256", "ES256", ES256_JWK, basic),
            signing_client(
                "fapi-bank",
                "ES256",
                ES256_JWK,
                r#"
                token_endpoint_auth_method = "private_key_jwt"
                upstream_client_secret = "upstream-s3cret"
                profile = "fapi-ciba"
                "#,
            ),
            client_settings(&format!(
                "client_id = \"plain\"\nscope = \"openid\"\n{basic}"
            )),
        ];
        let registry = ClientRegistry::from_settings(&clients, false, &reqwest::Client::new())
            .expect("client registry");
        let client = |id: &str| registry.get(id).expect(id);
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("tokio runtime"),
            bank: client("bank"),
            bank_es256: client("bank-es256"),
            fapi: client("fapi-bank"),
            plain: client("plain"),
            ps256: EncodingKey::from_rsa_pem(PS256_PEM.as_bytes()).expect("client-ps256.pem"),
            es256: EncodingKey::from_ec_pem(ES256_PEM.as_bytes()).expect("client-es256.pem"),
        }
    })
}

/// With `CIBA_FUZZ_DEBUG` set, every outcome is printed: handy when
/// replaying one input (`cargo fuzz run request_object FILE`).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("CIBA_FUZZ_DEBUG").is_some())
}

fn validate(
    fx: &Fixture,
    client: &Client,
    form: &FormParams,
    store: &MemoryStore,
) -> Result<FormParams, OAuthError> {
    let result = fx.runtime.block_on(request_parameters(
        client,
        form,
        &[ISSUER, ENDPOINT],
        store,
        NOW,
    ));
    if debug() {
        match &result {
            Ok(params) => {
                let mut names: Vec<&str> = params.names().collect();
                names.sort_unstable();
                eprintln!("{}: accepted, parameters {names:?}", client.id);
            }
            Err(e) => eprintln!("{}: {} ({})", client.id, e.code(), e.description()),
        }
    }
    result
}

fn fresh_store() -> MemoryStore {
    MemoryStore::new(Arc::new(SystemClock))
}

fn request_form(jwt: String) -> FormParams {
    FormParams::from_map([("request".to_owned(), jwt)].into_iter().collect())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Validates `form` for `client`; when accepted, replaying it must fail.
fn validate_with_replay(fx: &Fixture, client: &Client, form: &FormParams) {
    let store = fresh_store();
    if validate(fx, client, form, &store).is_ok() {
        assert!(
            validate(fx, client, form, &store).is_err(),
            "{}: a request object was accepted twice (jti replay)",
            client.id
        );
    }
}

/// `header\npayload` (or just a payload, under a default header) signed
/// with `key`: a request object whose signature verifies.
fn signed_form(rest: &[u8], key: &EncodingKey, alg: Algorithm, kid: &str) -> FormParams {
    let default_header;
    let (header, payload) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => {
            default_header = format!(r#"{{"alg":"{alg:?}","kid":"{kid}"}}"#);
            (default_header.as_bytes(), rest)
        }
    };
    let message = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing");
    request_form(format!("{message}.{signature}"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    match mode.wrapping_sub(b'0') % 5 {
        0 => {
            let form = request_form(String::from_utf8_lossy(rest).into_owned());
            validate_with_replay(fx, &fx.bank, &form);
        }
        1 => {
            if let Ok(form) = FormParams::parse(rest) {
                let _ = validate(fx, &fx.bank, &form, &fresh_store());
                if let Ok(params) = validate(fx, &fx.plain, &form, &fresh_store()) {
                    // Without a signing algorithm the form is used as sent.
                    assert!(form.get("request").is_none());
                    assert_eq!(params.names().count(), form.names().count());
                }
            }
        }
        2 => {
            let mut parts = rest.splitn(3, |&b| b == b'\n');
            let header = parts.next().unwrap_or_default();
            let payload = parts.next().unwrap_or_default();
            let signature = parts.next().unwrap_or_default();
            let jwt = format!("{}.{}.{}", b64(header), b64(payload), b64(signature));
            let _ = validate(fx, &fx.bank, &request_form(jwt), &fresh_store());
        }
        3 => {
            let form = signed_form(rest, &fx.ps256, Algorithm::PS256, "client-ps256");
            validate_with_replay(fx, &fx.bank, &form);
        }
        _ => {
            let form = signed_form(rest, &fx.es256, Algorithm::ES256, "client-es256");
            validate_with_replay(fx, &fx.bank_es256, &form);
            validate_with_replay(fx, &fx.fapi, &form);
        }
    }
});
