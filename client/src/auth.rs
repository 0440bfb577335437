//! How this client proves who it is at both endpoints: a client secret
//! (Basic or in the form), a private key that signs client assertions, or
//! a TLS client certificate.
use std::fmt;

use ciba_proto::{auth_method, claims, form, CLIENT_ASSERTION_TYPE};
use clap::ValueEnum;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::{codes, Failure};

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
    /// Its `token_endpoint_auth_method` name.
    pub fn method(&self) -> &'static str {
        match self {
            Self::SecretBasic(_) => auth_method::CLIENT_SECRET_BASIC,
            Self::SecretPost(_) => auth_method::CLIENT_SECRET_POST,
            Self::PrivateKeyJwt(_) => auth_method::PRIVATE_KEY_JWT,
            Self::TlsClientAuth => auth_method::TLS_CLIENT_AUTH,
        }
    }
}

/// What client authentication adds to one request.
pub(crate) struct Credentials {
    pub(crate) authorization: Option<HeaderValue>,
    pub(crate) form: Vec<(&'static str, String)>,
}

/// Client authentication for one request to `endpoint` at time `now`;
/// `jti` makes a client assertion unique.
pub(crate) fn credentials(
    client_id: &str,
    auth: &ClientAuth,
    endpoint: &str,
    now: u64,
    jti: &str,
) -> Result<Credentials, Failure> {
    let id = ("client_id", client_id.to_owned());
    Ok(match auth {
        ClientAuth::SecretBasic(secret) => {
            let mut value =
                HeaderValue::try_from(form::basic_authorization(client_id, secret.expose_secret()))
                    .map_err(|_| {
                        Failure::new(
                            ciba_proto::error::INVALID_CLIENT,
                            "the credentials cannot form a header",
                        )
                    })?;
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
            let claims = claims::client_assertion(client_id, endpoint, now, jti);
            let assertion = key.sign(&claims).map_err(|e| {
                Failure::new(codes::SIGNING_FAILED, format!("client assertion: {e}"))
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        field, jwt_auth, verify, ENDPOINT, ES256_JWK, ES256_PEM, NOW, PS256_JWK, PS256_PEM,
    };
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use jsonwebtoken::decode_header;

    #[test]
    fn private_key_jwt_sends_an_rfc7523_assertion_for_the_endpoint() {
        let auth = jwt_auth(PS256_PEM, Some("client-ps256"));
        let c = credentials("shop", &auth, ENDPOINT, NOW, "jti-1").unwrap();
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
        let c = credentials("shop", &auth, ENDPOINT, NOW, "j").unwrap();
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
        let c = credentials("a:b", &auth, ENDPOINT, NOW, "j").unwrap();
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
            "j",
        )
        .unwrap();
        assert_eq!(
            c.form,
            vec![("client_id", "shop".into()), ("client_secret", "s".into())]
        );
        let c = credentials("shop", &ClientAuth::TlsClientAuth, ENDPOINT, NOW, "j").unwrap();
        assert!(c.authorization.is_none());
        assert_eq!(c.form, vec![("client_id", "shop".into())]);
    }
}
