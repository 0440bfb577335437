//! CIBA Core §7.1: who is to authenticate. A request names the user with
//! exactly one of `login_hint` (taken as it is), `id_token_hint` (an ID
//! token the IdP issued to this client; expired ones are accepted for a
//! grace period) or `login_hint_token` (a JWT from an issuer the operator
//! trusts). Whichever it is, the result is the subject sent to the IdP as
//! `login_hint` and compared with the ID token at the callback.
use jsonwebtoken::decode_header;

use crate::clients::{Client, SIGNING_ALGS};
use crate::configuration::{ConfigError, HintSettings};
use crate::domain::LoginHint;
use crate::error::OAuthError;
use crate::jwks::KeySet;
use crate::jwt;
use crate::upstream::{Provider, UpstreamError};

/// The hint a request carried, before it is resolved to a subject.
#[derive(Debug, Clone)]
pub enum Hint {
    LoginHint(LoginHint),
    IdTokenHint(String),
    LoginHintToken(String),
}

impl Hint {
    /// Exactly one of the three hint parameters.
    pub fn from_params(get: impl Fn(&str) -> Option<String>) -> Result<Self, OAuthError> {
        let present: Vec<(&str, String)> = ["login_hint", "login_hint_token", "id_token_hint"]
            .into_iter()
            .filter_map(|name| get(name).map(|v| (name, v)))
            .collect();
        match present.as_slice() {
            [] => Err(OAuthError::InvalidRequest(
                "one of login_hint, login_hint_token or id_token_hint is required".into(),
            )),
            [(name, value)] => Ok(match *name {
                "login_hint" => {
                    Hint::LoginHint(LoginHint::parse(value).map_err(OAuthError::InvalidRequest)?)
                }
                "id_token_hint" => Hint::IdTokenHint(value.clone()),
                _ => Hint::LoginHintToken(value.clone()),
            }),
            _ => {
                let names: Vec<&str> = present.iter().map(|(n, _)| *n).collect();
                Err(OAuthError::InvalidRequest(format!(
                    "send exactly one hint, not {}",
                    names.join(" and ")
                )))
            }
        }
    }
}

struct TrustedIssuer {
    issuer: String,
    keys: KeySet,
    subject_claim: String,
}

pub struct Hints {
    id_token_grace_secs: u64,
    login_hint_token: Option<TrustedIssuer>,
}

impl Hints {
    pub fn from_settings(
        settings: &HintSettings,
        http: &reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let keys = match (
            &settings.login_hint_token_jwks,
            &settings.login_hint_token_jwks_uri,
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "hints.login_hint_token_jwks",
                    "set either login_hint_token_jwks or login_hint_token_jwks_uri, not both",
                ))
            }
            (Some(json), None) => {
                Some(KeySet::fixed(KeySet::parse(json).map_err(|e| {
                    ConfigError::new("hints.login_hint_token_jwks", e)
                })?))
            }
            (None, Some(uri)) => Some(KeySet::remote(uri.clone(), http.clone())),
            (None, None) => None,
        };
        let login_hint_token = match (&settings.login_hint_token_issuer, keys) {
            (Some(issuer), Some(keys)) => Some(TrustedIssuer {
                issuer: issuer.clone(),
                keys,
                subject_claim: settings.login_hint_token_subject_claim.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "hints.login_hint_token_jwks",
                    "a trusted login_hint_token issuer needs login_hint_token_jwks or login_hint_token_jwks_uri",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "hints.login_hint_token_issuer",
                    "is required when login_hint_token keys are configured",
                ))
            }
        };
        Ok(Self {
            id_token_grace_secs: settings.id_token_hint_grace_secs,
            login_hint_token,
        })
    }

    /// The subject the hint names.
    pub async fn subject(
        &self,
        hint: Hint,
        client: &Client,
        upstream: &Provider,
        now_secs: u64,
    ) -> Result<LoginHint, OAuthError> {
        let subject = match hint {
            Hint::LoginHint(hint) => return Ok(hint),
            Hint::IdTokenHint(jwt) => {
                let claims = upstream
                    .validate_id_token_hint(&jwt, client, now_secs, self.id_token_grace_secs)
                    .await
                    .map_err(|e| match e {
                        UpstreamError::Unavailable(_) => OAuthError::TemporarilyUnavailable(
                            "the identity provider's keys cannot be fetched; retry shortly".into(),
                        ),
                        other => OAuthError::InvalidRequest(format!("id_token_hint: {other}")),
                    })?;
                upstream
                    .subject(&claims)
                    .map(|s| s.into_owned())
                    .ok_or_else(|| {
                        OAuthError::InvalidRequest(format!(
                            "id_token_hint has no {:?} claim",
                            upstream.subject_claim
                        ))
                    })?
            }
            Hint::LoginHintToken(jwt) => self.login_hint_token_subject(&jwt, now_secs).await?,
        };
        LoginHint::parse(&subject).map_err(OAuthError::InvalidRequest)
    }

    async fn login_hint_token_subject(&self, token: &str, now: u64) -> Result<String, OAuthError> {
        let invalid = |m: &str| OAuthError::InvalidRequest(format!("login_hint_token: {m}"));
        let trusted = self
            .login_hint_token
            .as_ref()
            .ok_or_else(|| invalid("not accepted here: no trusted issuer is configured"))?;
        let header = decode_header(token).map_err(|_| invalid("not a well-formed signed JWT"))?;
        if !SIGNING_ALGS.contains(&header.alg) {
            return Err(invalid(&format!(
                "{:?} is not an accepted algorithm",
                header.alg
            )));
        }
        let key = trusted
            .keys
            .decoding_key(&header)
            .await
            .map_err(|e| invalid(&format!("no trusted key verifies it ({e})")))?;
        let claims = jwt::verify(token, header.alg, &key).map_err(|e| invalid(&e))?;
        if jwt::string(&claims, "iss").map_err(|e| invalid(&e))? != trusted.issuer {
            return Err(invalid("iss is not the trusted issuer"));
        }
        let exp = jwt::number(&claims, "exp").map_err(|e| invalid(&e))?;
        if now >= exp.saturating_add(jwt::CLOCK_SKEW_SECS) {
            return Err(OAuthError::ExpiredLoginHintToken);
        }
        jwt::string(&claims, &trusted.subject_claim)
            .map(str::to_owned)
            .map_err(|e| invalid(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hint(params: &[(&str, &str)]) -> Result<Hint, OAuthError> {
        let map: HashMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Hint::from_params(|name| map.get(name).cloned())
    }

    #[test]
    fn exactly_one_hint_is_taken() {
        assert!(matches!(
            hint(&[("login_hint", "alice")]),
            Ok(Hint::LoginHint(_))
        ));
        assert!(matches!(
            hint(&[("id_token_hint", "x")]),
            Ok(Hint::IdTokenHint(_))
        ));
        assert!(matches!(
            hint(&[("login_hint_token", "x")]),
            Ok(Hint::LoginHintToken(_))
        ));
        assert!(hint(&[]).is_err());
        let two = hint(&[("login_hint", "alice"), ("id_token_hint", "x")]).unwrap_err();
        assert!(two.description().contains("exactly one"));
    }

    #[test]
    fn login_hint_token_settings_must_come_in_pairs() {
        let settings = HintSettings {
            login_hint_token_issuer: Some("https://hints.example".into()),
            ..HintSettings::default()
        };
        let e = Hints::from_settings(&settings, &reqwest::Client::new())
            .err()
            .unwrap();
        assert_eq!(e.key, "hints.login_hint_token_jwks");
        let settings = HintSettings {
            login_hint_token_jwks: Some("{\"keys\":[]}".into()),
            ..HintSettings::default()
        };
        let e = Hints::from_settings(&settings, &reqwest::Client::new())
            .err()
            .unwrap();
        assert_eq!(e.key, "hints.login_hint_token_issuer");
    }
}
