//! The backchannel authentication request (CIBA Core §7.1, or §7.1.1 as a
//! signed request object) and its acknowledgement (§7.3).
use ciba_proto::{claims, form};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cli::Config;
use crate::discovery::Metadata;
use crate::http::post;
use crate::{codes, note, random_token, shortened, Clock, Failure};

/// CIBA Core §7.3: the polling interval when the acknowledgement has none.
pub(crate) const DEFAULT_INTERVAL_SECS: u64 = 5;

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
    /// The parameters as form fields; absent ones are left out.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("scope", self.scope.clone()),
            ("login_hint", self.login_hint.clone()),
        ];
        form::extend_present(
            &mut fields,
            [
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
            ],
        );
        fields
    }

    /// CIBA Core §7.1.1: the signed request object's claims, with
    /// requested_expiry as a JSON number.
    pub fn request_object_claims(
        &self,
        client_id: &str,
        issuer: &str,
        now: u64,
        jti: &str,
    ) -> Value {
        let mut parameters = Map::new();
        for (name, value) in self.form() {
            parameters.insert(name.to_owned(), Value::String(value));
        }
        if let Some(expiry) = self.requested_expiry {
            parameters.insert("requested_expiry".into(), expiry.into());
        }
        claims::request_object(client_id, issuer, now, jti, parameters)
    }
}

/// CIBA Core §7.3.
#[derive(Debug, Deserialize)]
pub(crate) struct Acknowledgement {
    pub(crate) auth_req_id: String,
    pub(crate) expires_in: u64,
    pub(crate) interval: Option<u64>,
}

/// The form for the backchannel authentication endpoint: the parameters,
/// or only `request` when they are signed (CIBA Core §7.1.1).
pub(crate) fn request_form(
    config: &Config,
    now: u64,
    jti: &str,
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
                .map_err(|e| Failure::new(codes::SIGNING_FAILED, format!("request object: {e}")))?;
            Ok(vec![("request", jwt)])
        }
    }
}

/// Sends the request; the acknowledgement, or the refusal as a [`Failure`].
pub(crate) async fn request(
    config: &Config,
    metadata: &Metadata,
    clock: &dyn Clock,
) -> Result<Acknowledgement, Failure> {
    let endpoint = &metadata.backchannel_authentication_endpoint;
    let form = request_form(config, clock.now_secs(), &random_token(16))?;
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
        return Err(Failure::from_reply(reply.status, &reply.body));
    }
    let ack: Acknowledgement = serde_json::from_value(reply.body).map_err(|e| {
        Failure::new(
            codes::INVALID_RESPONSE,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ClientAuth;
    use crate::test_support::{field, key_path, parse, verify, NOW, PS256_JWK};
    use jsonwebtoken::{decode_header, Algorithm};
    use serde_json::json;

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
        let claims = full_request().request_object_claims("bank", "https://op.example", NOW, "j");
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
        let claims = request.request_object_claims("bank", "https://op.example", NOW, "j");
        assert!(claims.get("requested_expiry").is_none());
        assert!(claims.get("binding_message").is_none());
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
        let form = request_form(&config, NOW, "j").unwrap();
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
        let form = request_form(&config, NOW, "j").unwrap();
        assert_eq!(field(&form, "login_hint"), Some("alice"));
        assert_eq!(field(&form, "request"), None);
    }
}
