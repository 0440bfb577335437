//! Test-only signing keys (see `keys/README.md`) and request-object signing.
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::Value;

#[derive(Debug)]
pub struct TestKey {
    pub kid: &'static str,
    pub alg: Algorithm,
    pem: &'static str,
    pub public_jwk: &'static str,
}

pub const CLIENT_PS256: TestKey = TestKey {
    kid: "client-ps256",
    alg: Algorithm::PS256,
    pem: include_str!("keys/client-ps256.pem"),
    public_jwk: include_str!("keys/client-ps256.jwk.json"),
};

pub const OTHER_PS256: TestKey = TestKey {
    kid: "other-ps256",
    alg: Algorithm::PS256,
    pem: include_str!("keys/other-ps256.pem"),
    public_jwk: include_str!("keys/other-ps256.jwk.json"),
};

pub const CLIENT_ES256: TestKey = TestKey {
    kid: "client-es256",
    alg: Algorithm::ES256,
    pem: include_str!("keys/client-es256.pem"),
    public_jwk: include_str!("keys/client-es256.jwk.json"),
};

/// Too weak for a device key (RSA under 2048 bits).
pub const WEAK_RSA1024: TestKey = TestKey {
    kid: "weak-rsa1024",
    alg: Algorithm::RS256,
    pem: include_str!("keys/weak-rsa1024.pem"),
    public_jwk: include_str!("keys/weak-rsa1024.jwk.json"),
};

impl TestKey {
    /// `{"keys":[<public jwk>]}`
    pub fn jwks(&self) -> String {
        format!("{{\"keys\":[{}]}}", self.public_jwk.trim())
    }

    /// Signs `claims` with this key, using `alg` and this key's `kid`.
    pub fn sign_with(&self, alg: Algorithm, claims: &Value) -> String {
        let key = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(self.pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(self.pem.as_bytes()),
        }
        .expect("test key");
        let mut header = Header::new(alg);
        header.kid = Some(self.kid.to_owned());
        encode(&header, claims, &key).expect("sign")
    }

    /// Signs `claims` under `header` as given (its `alg` must be this key's kind).
    pub fn sign_header(&self, header: &Header, claims: &Value) -> String {
        let key = match header.alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(self.pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(self.pem.as_bytes()),
        }
        .expect("test key");
        encode(header, claims, &key).expect("sign")
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(self.alg, claims)
    }
}
