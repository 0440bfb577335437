//! Keys and helpers the unit tests share.
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::auth::{ClientAuth, SigningKey};
use crate::cli::{Args, Config};
use clap::Parser;

pub const PS256_PEM: &str = include_str!("../../tests/support/keys/client-ps256.pem");
pub const PS256_JWK: &str = include_str!("../../tests/support/keys/client-ps256.jwk.json");
pub const ES256_PEM: &str = include_str!("../../tests/support/keys/client-es256.pem");
pub const ES256_JWK: &str = include_str!("../../tests/support/keys/client-es256.jwk.json");
pub const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/keys");
pub const ENDPOINT: &str = "https://op.example/token";
pub const NOW: u64 = 1_700_000_000;

pub fn verify(jwt: &str, jwk: &str, alg: Algorithm, aud: &str) -> Map<String, Value> {
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

pub fn jwt_auth(pem: &str, kid: Option<&str>) -> ClientAuth {
    ClientAuth::PrivateKeyJwt(
        SigningKey::from_pem(pem.as_bytes(), None, kid.map(str::to_owned)).unwrap(),
    )
}

pub fn field<'a>(form: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

/// `client --issuer https://op.example/ --login-hint alice ARGS`, checked.
pub fn parse(args: &[&str]) -> Result<Config, clap::Error> {
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

pub fn key_path(name: &str) -> String {
    format!("{KEYS}/{name}")
}
