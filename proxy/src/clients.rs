//! The registry of consumption-device clients and their authentication at
//! `/bc-authorize` and `/token` (RFC 6749 §2.3.1).
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use actix_web::http::header::AUTHORIZATION;
use actix_web::HttpRequest;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::configuration::{ClientSettings, ConfigError, DeliveryMode, TokenEndpointAuthMethod};
use crate::domain::Scope;
use crate::error::OAuthError;
use crate::form::FormParams;
use crate::jwks::KeySet;
use url::Url;

/// Request-object signing algorithms we accept: asymmetric only, since a
/// shared secret would let the proxy forge what the client signed.
pub const SIGNING_ALGS: [Algorithm; 9] = [
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::EdDSA,
];

#[derive(Debug)]
pub struct Client {
    pub id: String,
    secret: Option<SecretString>,
    pub auth_method: TokenEndpointAuthMethod,
    pub delivery_mode: DeliveryMode,
    /// Ping mode: where the client hears that a result is ready.
    pub notification_endpoint: Option<Url>,
    /// When set, every backchannel request must be a request object signed with it.
    pub signing_alg: Option<Algorithm>,
    pub keys: Option<KeySet>,
    pub scope: Scope,
    pub upstream_id: String,
    pub upstream_secret: Option<SecretString>,
}

impl Client {
    fn from_settings(
        i: usize,
        c: &ClientSettings,
        allow_http: bool,
        http: &reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let key = |field: &str| format!("clients[{i}].{field}");
        if c.client_id.is_empty() {
            return Err(ConfigError::new(key("client_id"), "must not be empty"));
        }
        let secret = c
            .client_secret
            .clone()
            .filter(|s| !s.expose_secret().is_empty());
        if secret.is_none() {
            return Err(ConfigError::new(
                key("client_secret"),
                format!(
                    "is required by token_endpoint_auth_method = \"{}\"",
                    c.token_endpoint_auth_method.as_str()
                ),
            ));
        }
        let signing_alg = match &c.backchannel_authentication_request_signing_alg {
            None => None,
            Some(name) => {
                let alg = Algorithm::from_str(name).ok().filter(|a| SIGNING_ALGS.contains(a)).ok_or_else(|| {
                    ConfigError::new(
                        key("backchannel_authentication_request_signing_alg"),
                        format!("{name} is not allowed; use an asymmetric algorithm such as PS256 or ES256"),
                    )
                })?;
                Some(alg)
            }
        };
        let keys = match (&c.jwks, &c.jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    key("jwks"),
                    "set either jwks or jwks_uri, not both",
                ));
            }
            (Some(json), None) => Some(KeySet::fixed(
                KeySet::parse(json).map_err(|e| ConfigError::new(key("jwks"), e))?,
            )),
            (None, Some(uri)) => Some(KeySet::remote(uri.clone(), http.clone())),
            (None, None) => None,
        };
        if signing_alg.is_some() && keys.is_none() {
            return Err(ConfigError::new(
                key("jwks"),
                "a client with backchannel_authentication_request_signing_alg needs jwks or jwks_uri",
            ));
        }
        let endpoint_key = key("backchannel_client_notification_endpoint");
        match (c.backchannel_token_delivery_mode, &c.backchannel_client_notification_endpoint) {
            (DeliveryMode::Ping, None) => {
                return Err(ConfigError::new(endpoint_key, "is required for ping mode"));
            }
            (DeliveryMode::Poll, Some(_)) => {
                return Err(ConfigError::new(endpoint_key, "is only used in ping mode"));
            }
            (DeliveryMode::Ping, Some(url)) => match url.scheme() {
                "https" => {}
                "http" if allow_http => {}
                "http" => {
                    return Err(ConfigError::new(
                        endpoint_key,
                        "must be https (set ciba.allow_http_notification_endpoints = true for development)",
                    ))
                }
                other => {
                    return Err(ConfigError::new(endpoint_key, format!("{other}: is not an http(s) URL")))
                }
            },
            (DeliveryMode::Poll, None) => {}
        }
        let scope = Scope::parse(&c.scope).map_err(|e| ConfigError::new(key("scope"), e))?;
        if !scope.contains("openid") {
            return Err(ConfigError::new(key("scope"), "must include openid"));
        }
        Ok(Self {
            id: c.client_id.clone(),
            upstream_id: c
                .upstream_client_id
                .clone()
                .unwrap_or_else(|| c.client_id.clone()),
            upstream_secret: c.upstream_client_secret.clone().or_else(|| secret.clone()),
            secret,
            auth_method: c.token_endpoint_auth_method,
            delivery_mode: c.backchannel_token_delivery_mode,
            notification_endpoint: c.backchannel_client_notification_endpoint.clone(),
            signing_alg,
            keys,
            scope,
        })
    }

    fn secret_matches(&self, presented: &str) -> bool {
        self.secret
            .as_ref()
            .is_some_and(|s| bool::from(s.expose_secret().as_bytes().ct_eq(presented.as_bytes())))
    }
}

#[derive(Debug, Clone)]
pub struct ClientRegistry(Arc<HashMap<String, Arc<Client>>>);

/// Form parameters that carry client authentication, not request content.
pub const AUTH_PARAMS: [&str; 2] = ["client_id", "client_secret"];

impl ClientRegistry {
    /// `allow_http`: accept `http://` notification endpoints (development).
    pub fn from_settings(
        clients: &[ClientSettings],
        allow_http: bool,
        http: &reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let mut map = HashMap::new();
        for (i, c) in clients.iter().enumerate() {
            let client = Client::from_settings(i, c, allow_http, http)?;
            if map.insert(client.id.clone(), Arc::new(client)).is_some() {
                return Err(ConfigError::new(
                    format!("clients[{i}].client_id"),
                    format!("{} is registered twice", c.client_id),
                ));
            }
        }
        Ok(Self(Arc::new(map)))
    }

    pub fn get(&self, client_id: &str) -> Option<Arc<Client>> {
        self.0.get(client_id).cloned()
    }

    /// Authenticates the caller by exactly one method, the one it registered.
    pub fn authenticate(
        &self,
        req: &HttpRequest,
        form: &FormParams,
    ) -> Result<Arc<Client>, OAuthError> {
        let basic = basic_credentials(req)?;
        let (id, secret, method) = match (basic, form.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::InvalidRequest(
                    "use exactly one client authentication method".into(),
                ))
            }
            (Some((id, secret)), None) => {
                if form.get("client_id").is_some_and(|f| f != id) {
                    return Err(OAuthError::InvalidClient(
                        "client_id in the form differs from the authenticated client".into(),
                    ));
                }
                (id, secret, TokenEndpointAuthMethod::ClientSecretBasic)
            }
            (None, Some(secret)) => {
                let id = form.get("client_id").ok_or_else(|| {
                    OAuthError::InvalidClient("client_secret sent without client_id".into())
                })?;
                (
                    id.to_owned(),
                    secret.to_owned(),
                    TokenEndpointAuthMethod::ClientSecretPost,
                )
            }
            (None, None) => {
                return Err(OAuthError::InvalidClient(
                    "client authentication is required".into(),
                ))
            }
        };
        let failed = || OAuthError::InvalidClient("client authentication failed".into());
        let client = self.0.get(&id).ok_or_else(failed)?;
        if !client.secret_matches(&secret) {
            return Err(failed());
        }
        if client.auth_method != method {
            return Err(OAuthError::InvalidClient(format!(
                "this client must authenticate with {}",
                client.auth_method.as_str()
            )));
        }
        Ok(client.clone())
    }
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || OAuthError::InvalidClient("malformed Basic authorization header".into());
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient(format!(
            "unsupported authorization scheme {scheme}; use Basic"
        )));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn settings(extra: &str) -> ClientSettings {
        let toml = format!(
            "client_id = \"shop\"\nclient_secret = \"s3cret\"\ntoken_endpoint_auth_method = \"client_secret_basic\"\nscope = \"openid profile\"\n{extra}"
        );
        let raw = config::Config::builder()
            .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
            .build()
            .unwrap();
        raw.try_deserialize().unwrap()
    }

    fn registry(extra: &str) -> Result<ClientRegistry, ConfigError> {
        ClientRegistry::from_settings(&[settings(extra)], false, &reqwest::Client::new())
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn symmetric_signing_alg_is_a_config_error() {
        let e = registry(
            "backchannel_authentication_request_signing_alg = \"HS256\"\njwks = '{\"keys\":[]}'",
        )
        .unwrap_err();
        assert_eq!(
            e.key,
            "clients[0].backchannel_authentication_request_signing_alg"
        );
    }

    #[test]
    fn ping_clients_need_an_https_endpoint_unless_http_is_allowed() {
        let e = registry("backchannel_token_delivery_mode = \"ping\"").unwrap_err();
        assert_eq!(e.key, "clients[0].backchannel_client_notification_endpoint");
        let http = "backchannel_token_delivery_mode = \"ping\"\nbackchannel_client_notification_endpoint = \"http://client.example/cb\"";
        let e = registry(http).unwrap_err();
        assert!(e.message.contains("https"), "{e}");
        assert!(
            ClientRegistry::from_settings(&[settings(http)], true, &reqwest::Client::new()).is_ok()
        );
        let https = "backchannel_token_delivery_mode = \"ping\"\nbackchannel_client_notification_endpoint = \"https://client.example/cb\"";
        assert!(registry(https).is_ok());
    }

    #[test]
    fn signing_alg_without_keys_is_a_config_error() {
        let e = registry("backchannel_authentication_request_signing_alg = \"PS256\"").unwrap_err();
        assert_eq!(e.key, "clients[0].jwks");
    }

    #[test]
    fn basic_credentials_authenticate() {
        let reg = registry("").unwrap();
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, basic("shop", "s3cret")))
            .to_http_request();
        assert_eq!(
            reg.authenticate(&req, &FormParams::default()).unwrap().id,
            "shop"
        );
    }

    #[test]
    fn wrong_secret_and_unknown_client_fail_alike() {
        let reg = registry("").unwrap();
        for (id, secret) in [("shop", "nope"), ("ghost", "s3cret")] {
            let req = TestRequest::default()
                .insert_header((AUTHORIZATION, basic(id, secret)))
                .to_http_request();
            let e = reg.authenticate(&req, &FormParams::default()).unwrap_err();
            assert_eq!(e.description(), "client authentication failed");
        }
    }

    #[test]
    fn post_credentials_are_refused_for_a_basic_client() {
        let reg = registry("").unwrap();
        let form = FormParams::parse(b"client_id=shop&client_secret=s3cret").unwrap();
        let e = reg
            .authenticate(&TestRequest::default().to_http_request(), &form)
            .unwrap_err();
        assert_eq!(e.code(), "invalid_client");
    }

    #[test]
    fn two_methods_at_once_are_invalid_request() {
        let reg = registry("").unwrap();
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, basic("shop", "s3cret")))
            .to_http_request();
        let form = FormParams::parse(b"client_id=shop&client_secret=s3cret").unwrap();
        assert_eq!(
            reg.authenticate(&req, &form).unwrap_err().code(),
            "invalid_request"
        );
    }

    #[test]
    fn urlencoded_basic_credentials_are_decoded() {
        let mut s = settings("");
        s.client_secret = Some(SecretString::from("a:b c"));
        let reg = ClientRegistry::from_settings(&[s], false, &reqwest::Client::new()).unwrap();
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, basic("shop", "a%3Ab+c")))
            .to_http_request();
        assert!(reg.authenticate(&req, &FormParams::default()).is_ok());
    }
}
