//! The form body of `/bc-authorize` and `/token`, parsed strictly:
//! RFC 6749 §3.1/§3.2 forbid repeated parameters, and the body must be
//! `application/x-www-form-urlencoded` and of bounded size.
use std::collections::HashMap;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest};
use futures::StreamExt;

use crate::error::OAuthError;

/// Largest accepted form body. A signed request object with an x5c chain
/// fits comfortably.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Debug, Default, Clone)]
pub struct FormParams(HashMap<String, String>);

impl FormParams {
    /// Parses `bytes` as a urlencoded form, rejecting repeated names.
    pub fn parse(bytes: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).map_err(|_| {
            OAuthError::InvalidRequest(
                "the form body is not valid application/x-www-form-urlencoded".into(),
            )
        })?;
        let mut map = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if map.contains_key(&name) {
                return Err(OAuthError::InvalidRequest(format!(
                    "parameter {name} is repeated"
                )));
            }
            map.insert(name, value);
        }
        // RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
        map.retain(|_, v| !v.is_empty());
        Ok(Self(map))
    }

    /// Reads and parses the request body.
    pub async fn from_request(
        req: &HttpRequest,
        mut payload: web::Payload,
    ) -> Result<Self, OAuthError> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::InvalidRequest(
                "the body must be application/x-www-form-urlencoded".into(),
            ));
        }
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| {
                OAuthError::InvalidRequest("the request body could not be read".into())
            })?;
            if body.len() + chunk.len() > MAX_FORM_BYTES {
                return Err(OAuthError::InvalidRequest(format!(
                    "the request body exceeds {MAX_FORM_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Self::parse(&body)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn from_map(map: HashMap<String, String>) -> Self {
        Self(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repeated_parameter_is_invalid_request() {
        let e = FormParams::parse(b"scope=openid&scope=email").unwrap_err();
        assert_eq!(e.code(), "invalid_request");
        assert!(e.description().contains("scope"));
    }

    #[test]
    fn empty_values_count_as_omitted() {
        let form = FormParams::parse(b"login_hint=&scope=openid").unwrap();
        assert_eq!(form.get("login_hint"), None);
        assert_eq!(form.get("scope"), Some("openid"));
    }

    #[test]
    fn percent_and_plus_decoding() {
        let form = FormParams::parse(b"binding_message=Order+%231").unwrap();
        assert_eq!(form.get("binding_message"), Some("Order #1"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = FormParams::parse(&bytes);
        }
    }
}
