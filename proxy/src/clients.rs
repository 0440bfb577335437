//! The registry of consumption-device clients, built from `[[clients]]`.
//! Every rule a client's registration must satisfy is checked here, at
//! startup, and names the offending key. How a client proves who it is at
//! the endpoints is [`crate::client_auth`]'s job.
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::Algorithm;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use url::Url;

use crate::configuration::{
    BindingMessageCheck, CibaSettings, ClientSettings, ConfigError, DeliveryMode, Profile,
    TokenEndpointAuthMethod,
};
use crate::domain::Scope;
use crate::jwks::{check_key_strength, KeySet};
use crate::net_policy;
use crate::tls::normalize_dn;

/// Signing algorithms we accept on request objects, client assertions and ID
/// tokens: asymmetric only, since a shared secret would let the proxy forge
/// what the client signed.
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

/// FAPI-CIBA §5.2.2: only PS256 and ES256.
pub const FAPI_ALGS: [Algorithm; 2] = [Algorithm::PS256, Algorithm::ES256];

/// FAPI-CIBA: how long a request object may live, and how old its `nbf` may be.
pub const FAPI_MAX_REQUEST_OBJECT_LIFETIME_SECS: u64 = 3600;

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
    /// private_key_jwt: the algorithms accepted on client assertions.
    pub assertion_algs: Vec<Algorithm>,
    pub keys: Option<KeySet>,
    pub scope: Scope,
    pub profile: Option<Profile>,
    /// tls_client_auth: the registered subject DN, normalized.
    pub subject_dn: Option<Vec<String>>,
    pub upstream_id: String,
    pub upstream_secret: Option<SecretString>,
    /// What the user reads on the approval page.
    pub name: String,
    pub binding_message_check: BindingMessageCheck,
}

/// Which notification endpoints a ping client may register.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// `http://` endpoints (`ciba.allow_http_notification_endpoints`).
    pub allow_http: bool,
    /// Non-public addresses (`ciba.allow_private_notification_endpoints`).
    pub allow_private: bool,
}

impl EndpointPolicy {
    pub fn from_settings(ciba: &CibaSettings) -> Self {
        Self {
            allow_http: ciba.allow_http_notification_endpoints,
            allow_private: ciba.private_notification_endpoints_allowed(),
        }
    }
}

/// `true` is the development switch `allow_http_notification_endpoints`,
/// which implies private endpoints (loopback test setups).
impl From<bool> for EndpointPolicy {
    fn from(allow_http: bool) -> Self {
        Self {
            allow_http,
            allow_private: allow_http,
        }
    }
}

impl Client {
    fn from_settings(
        i: usize,
        c: &ClientSettings,
        endpoints: EndpointPolicy,
        http: &reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let key = |field: &str| format!("clients[{i}].{field}");
        let fapi = c.profile == Some(Profile::FapiCiba);
        if c.client_id.is_empty() {
            return Err(ConfigError::new(key("client_id"), "must not be empty"));
        }
        let method = c.token_endpoint_auth_method;
        if fapi && method.uses_secret() {
            return Err(ConfigError::new(
                key("token_endpoint_auth_method"),
                "profile \"fapi-ciba\" requires private_key_jwt, tls_client_auth or self_signed_tls_client_auth",
            ));
        }
        let subject_dn = c.tls_client_auth_subject_dn.as_deref().map(normalize_dn);
        match (method, &subject_dn) {
            (TokenEndpointAuthMethod::TlsClientAuth, None) => {
                return Err(ConfigError::new(
                    key("tls_client_auth_subject_dn"),
                    "is required by tls_client_auth",
                ))
            }
            (TokenEndpointAuthMethod::TlsClientAuth, Some(dn)) if dn.is_empty() => {
                return Err(ConfigError::new(
                    key("tls_client_auth_subject_dn"),
                    "is not a distinguished name",
                ))
            }
            (TokenEndpointAuthMethod::TlsClientAuth, _) | (_, None) => {}
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    key("tls_client_auth_subject_dn"),
                    "is only used with tls_client_auth",
                ))
            }
        }
        let secret = c
            .client_secret
            .clone()
            .filter(|s| !s.expose_secret().is_empty());
        if method.uses_secret() && secret.is_none() {
            return Err(ConfigError::new(
                key("client_secret"),
                format!(
                    "is required by token_endpoint_auth_method = \"{}\"",
                    method.as_str()
                ),
            ));
        }
        if c.upstream_client_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().is_empty())
        {
            return Err(ConfigError::new(
                key("upstream_client_secret"),
                "must not be empty",
            ));
        }
        let upstream_secret = c.upstream_client_secret.clone().or_else(|| secret.clone());
        if upstream_secret.is_none() {
            return Err(ConfigError::new(
                key("upstream_client_secret"),
                "is required when the client has no client_secret (the IdP registration needs one)",
            ));
        }
        let allowed: &[Algorithm] = if fapi { &FAPI_ALGS } else { &SIGNING_ALGS };
        let signing_alg = c
            .backchannel_authentication_request_signing_alg
            .as_deref()
            .map(|name| {
                parse_alg(
                    &key("backchannel_authentication_request_signing_alg"),
                    name,
                    allowed,
                )
            })
            .transpose()?;
        if fapi && signing_alg.is_none() {
            return Err(ConfigError::new(
                key("backchannel_authentication_request_signing_alg"),
                "profile \"fapi-ciba\" requires signed request objects (PS256 or ES256)",
            ));
        }
        let assertion_algs = match &c.token_endpoint_auth_signing_alg {
            Some(name) => vec![parse_alg(
                &key("token_endpoint_auth_signing_alg"),
                name,
                allowed,
            )?],
            None => allowed.to_vec(),
        };
        let keys = keys(c, &key("jwks"), http)?;
        if keys.is_none() {
            let needs = match (signing_alg, method) {
                (Some(_), _) => Some("backchannel_authentication_request_signing_alg"),
                (None, TokenEndpointAuthMethod::PrivateKeyJwt) => Some("private_key_jwt"),
                (None, TokenEndpointAuthMethod::SelfSignedTlsClientAuth) => {
                    Some("self_signed_tls_client_auth")
                }
                _ => None,
            };
            if let Some(what) = needs {
                return Err(ConfigError::new(
                    key("jwks"),
                    format!("a client with {what} needs jwks or jwks_uri"),
                ));
            }
        }
        check_notification_endpoint(
            c,
            &key("backchannel_client_notification_endpoint"),
            endpoints,
        )?;
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
            upstream_secret,
            name: c
                .client_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| c.client_id.clone()),
            binding_message_check: c.binding_message_check,
            secret,
            auth_method: method,
            delivery_mode: c.backchannel_token_delivery_mode,
            notification_endpoint: c.backchannel_client_notification_endpoint.clone(),
            signing_alg,
            assertion_algs,
            keys,
            scope,
            profile: c.profile,
            subject_dn,
        })
    }

    /// The proxy's own registration at the IdP for the account page's
    /// sign-in (`[account]`): only its upstream id and secret are used. It
    /// is in no registry, so no one can authenticate here as it. `scope`
    /// is what its sign-in asks for.
    pub fn upstream_registration(
        upstream_id: &str,
        upstream_secret: SecretString,
        scope: Scope,
    ) -> Self {
        Self {
            id: upstream_id.to_owned(),
            secret: None,
            auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
            delivery_mode: DeliveryMode::Poll,
            notification_endpoint: None,
            signing_alg: None,
            assertion_algs: Vec::new(),
            keys: None,
            scope,
            profile: None,
            subject_dn: None,
            upstream_id: upstream_id.to_owned(),
            upstream_secret: Some(upstream_secret),
            name: upstream_id.to_owned(),
            binding_message_check: BindingMessageCheck::Show,
        }
    }

    /// Compares in constant time, so timing does not reveal the secret.
    pub fn secret_matches(&self, presented: &str) -> bool {
        self.secret
            .as_ref()
            .is_some_and(|s| bool::from(s.expose_secret().as_bytes().ct_eq(presented.as_bytes())))
    }

    /// Verifies a JWT's signature with one of this client's registered keys;
    /// the caller has checked that `header.alg` is one the client may use.
    pub async fn verify_signed(
        &self,
        jwt: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<crate::jwt::Claims, String> {
        let keys = self
            .keys
            .as_ref()
            .ok_or("the client has no registered keys")?;
        let key = keys
            .decoding_key(header)
            .await
            .map_err(|e| format!("no registered key verifies it ({e})"))?;
        crate::jwt::verify(jwt, header.alg, &key)
    }

    pub fn is_fapi(&self) -> bool {
        self.profile == Some(Profile::FapiCiba)
    }
}

fn parse_alg(key: &str, name: &str, allowed: &[Algorithm]) -> Result<Algorithm, ConfigError> {
    Algorithm::from_str(name)
        .ok()
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| {
            let names: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            ConfigError::new(
                key,
                format!(
                    "{name} is not allowed here; use one of {}",
                    names.join(", ")
                ),
            )
        })
}

/// The client's registered keys; inline keys are checked for strength now.
fn keys(
    c: &ClientSettings,
    key: &str,
    http: &reqwest::Client,
) -> Result<Option<KeySet>, ConfigError> {
    Ok(match (&c.jwks, &c.jwks_uri) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key,
                "set either jwks or jwks_uri, not both",
            ))
        }
        (Some(json), None) => {
            let set: JwkSet = KeySet::parse(json).map_err(|e| ConfigError::new(key, e))?;
            for jwk in &set.keys {
                check_key_strength(jwk).map_err(|e| ConfigError::new(key, e.to_string()))?;
            }
            Some(KeySet::fixed(set))
        }
        (None, Some(uri)) => Some(KeySet::remote(uri.clone(), http.clone())),
        (None, None) => None,
    })
}

fn check_notification_endpoint(
    c: &ClientSettings,
    key: &str,
    endpoints: EndpointPolicy,
) -> Result<(), ConfigError> {
    match (
        c.backchannel_token_delivery_mode,
        &c.backchannel_client_notification_endpoint,
    ) {
        (DeliveryMode::Ping, None) => Err(ConfigError::new(key, "is required for ping mode")),
        (DeliveryMode::Poll, Some(_)) => Err(ConfigError::new(key, "is only used in ping mode")),
        (DeliveryMode::Poll, None) => Ok(()),
        (DeliveryMode::Ping, Some(url)) => {
            match url.scheme() {
                "https" => {}
                "http" if endpoints.allow_http => {}
                "http" => return Err(ConfigError::new(
                    key,
                    "must be https (set ciba.allow_http_notification_endpoints = true for development)",
                )),
                other => {
                    return Err(ConfigError::new(
                        key,
                        format!("{other}: is not an http(s) URL"),
                    ))
                }
            }
            // No POSTs to the proxy's own loopback, the cloud metadata
            // service or the private network; a host name is checked again
            // when the ping resolves it (net_policy.rs).
            if !endpoints.allow_private {
                net_policy::check_url(url).map_err(|e| ConfigError::new(key, e.to_string()))?;
            }
            Ok(())
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientRegistry(Arc<HashMap<String, Arc<Client>>>);

impl ClientRegistry {
    /// `endpoints`: which notification endpoints are accepted; a `bool` is
    /// the development switch `allow_http_notification_endpoints`.
    pub fn from_settings(
        clients: &[ClientSettings],
        endpoints: impl Into<EndpointPolicy>,
        http: &reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let endpoints = endpoints.into();
        let mut map = HashMap::new();
        for (i, c) in clients.iter().enumerate() {
            let client = Client::from_settings(i, c, endpoints, http)?;
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

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.0.values()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn settings(extra: &str) -> ClientSettings {
        let toml = format!(
            "client_id = \"shop\"\nclient_secret = \"s3cret\"\ntoken_endpoint_auth_method = \"client_secret_basic\"\nscope = \"openid profile\"\n{extra}"
        );
        let raw = config::Config::builder()
            .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
            .build()
            .unwrap();
        raw.try_deserialize().unwrap()
    }

    pub(crate) fn registry(extra: &str) -> Result<ClientRegistry, ConfigError> {
        ClientRegistry::from_settings(&[settings(extra)], false, &reqwest::Client::new())
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
    fn private_notification_endpoints_are_refused_unless_allowed() {
        let ping = |endpoint: &str| {
            settings(&format!("backchannel_token_delivery_mode = \"ping\"\nbackchannel_client_notification_endpoint = \"{endpoint}\""))
        };
        let strict = EndpointPolicy {
            allow_http: true,
            allow_private: false,
        };
        for endpoint in [
            "https://127.0.0.1/cb",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.7/cb",
            "https://[fd00::1]/cb",
            "https://[::ffff:192.168.0.1]/cb",
            "https://localhost:8443/cb",
            "http://2130706433/cb",
            "http://0x7f.0.0.1/cb",
            "http://0177.0.0.1/cb",
        ] {
            let e =
                ClientRegistry::from_settings(&[ping(endpoint)], strict, &reqwest::Client::new())
                    .unwrap_err();
            assert_eq!(e.key, "clients[0].backchannel_client_notification_endpoint");
            assert!(
                e.message.contains("allow_private_notification_endpoints"),
                "{endpoint}: {e}"
            );
        }
        let public = ping("https://client.example.com/cb");
        assert!(ClientRegistry::from_settings(&[public], strict, &reqwest::Client::new()).is_ok());
        let private = EndpointPolicy {
            allow_http: false,
            allow_private: true,
        };
        assert!(ClientRegistry::from_settings(
            &[ping("https://10.0.0.7/cb")],
            private,
            &reqwest::Client::new()
        )
        .is_ok());
        // The development switch implies private endpoints.
        assert!(ClientRegistry::from_settings(
            &[ping("http://127.0.0.1:9/cb")],
            true,
            &reqwest::Client::new()
        )
        .is_ok());
    }

    #[test]
    fn signing_alg_without_keys_is_a_config_error() {
        let e = registry("backchannel_authentication_request_signing_alg = \"PS256\"").unwrap_err();
        assert_eq!(e.key, "clients[0].jwks");
    }

    #[test]
    fn fapi_clients_need_strong_authentication_and_signed_requests() {
        let e = registry("profile = \"fapi-ciba\"").unwrap_err();
        assert_eq!(e.key, "clients[0].token_endpoint_auth_method");
        let jwks = include_str!("../../tests/support/keys/client-ps256.jwk.json").trim();
        let pkj = format!("token_endpoint_auth_method = \"private_key_jwt\"\nprofile = \"fapi-ciba\"\njwks = '{{\"keys\":[{jwks}]}}'");
        let e = ClientRegistry::from_settings(
            &[settings_without_method(&pkj)],
            false,
            &reqwest::Client::new(),
        )
        .unwrap_err();
        assert_eq!(
            e.key,
            "clients[0].backchannel_authentication_request_signing_alg"
        );
        let rs256 = format!("{pkj}\nbackchannel_authentication_request_signing_alg = \"RS256\"");
        let e = ClientRegistry::from_settings(
            &[settings_without_method(&rs256)],
            false,
            &reqwest::Client::new(),
        )
        .unwrap_err();
        assert!(e.message.contains("PS256"), "{e}");
        let ps256 = format!("{pkj}\nbackchannel_authentication_request_signing_alg = \"PS256\"");
        assert!(ClientRegistry::from_settings(
            &[settings_without_method(&ps256)],
            false,
            &reqwest::Client::new()
        )
        .is_ok());
    }

    fn settings_without_method(extra: &str) -> ClientSettings {
        let toml =
            format!("client_id = \"bank\"\nclient_secret = \"s\"\nscope = \"openid\"\n{extra}");
        let raw = config::Config::builder()
            .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
            .build()
            .unwrap();
        raw.try_deserialize().unwrap()
    }

    #[test]
    fn weak_rsa_keys_are_refused_at_startup() {
        use base64::Engine;
        // A 1024-bit modulus.
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xC1u8; 128]);
        let jwks = format!("{{\"keys\":[{{\"kty\":\"RSA\",\"n\":\"{n}\",\"e\":\"AQAB\"}}]}}");
        let e = registry(&format!(
            "backchannel_authentication_request_signing_alg = \"PS256\"\njwks = '{jwks}'"
        ))
        .unwrap_err();
        assert_eq!(e.key, "clients[0].jwks");
        assert!(e.message.contains("2048"), "{e}");
    }
}
