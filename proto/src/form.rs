//! `application/x-www-form-urlencoded` helpers for a client of the token
//! and backchannel authentication endpoints. (The proxy's strict parser of
//! incoming forms stays in the service: it is bound to its error type and
//! its input limits.)
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::CIBA_GRANT_TYPE;

/// One value encoded as in a form body (RFC 6749 Appendix B: WHATWG
/// urlencoded, a space becomes `+`).
pub fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The `Authorization` header value for `client_secret_basic`.
/// RFC 6749 §2.3.1: the client_id and the secret are form-urlencoded
/// before they are joined with `:` and Base64-encoded.
pub fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    let credentials = format!("{}:{}", urlencode(client_id), urlencode(client_secret));
    format!("Basic {}", STANDARD.encode(credentials))
}

/// The parameters of a token request for `auth_req_id` (CIBA Core §10.1),
/// before client authentication.
pub fn token_request(auth_req_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", CIBA_GRANT_TYPE.to_owned()),
        ("auth_req_id", auth_req_id.to_owned()),
    ]
}

/// Appends the parameters that have a value, in order: an absent optional
/// parameter is left out, never sent empty (RFC 6749 §3.1 treats an empty
/// one as omitted anyway).
pub fn extend_present<I>(form: &mut Vec<(&'static str, String)>, optional: I)
where
    I: IntoIterator<Item = (&'static str, Option<String>)>,
{
    form.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_urlencoded_first() {
        let header = basic_authorization("a:b", "p w:%");
        let encoded = header.strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
        assert_eq!(decoded, "a%3Ab:p+w%3A%25");
    }

    #[test]
    fn the_token_request_names_the_ciba_grant() {
        assert_eq!(
            token_request("id-1"),
            vec![
                ("grant_type", "urn:openid:params:grant-type:ciba".into()),
                ("auth_req_id", "id-1".into()),
            ]
        );
    }

    #[test]
    fn only_present_parameters_are_appended_in_order() {
        let mut form = vec![("scope", "openid".to_owned())];
        extend_present(
            &mut form,
            [
                ("binding_message", Some("W4SCT".to_owned())),
                ("requested_expiry", None),
                ("acr_values", Some("mfa".to_owned())),
            ],
        );
        assert_eq!(
            form,
            vec![
                ("scope", "openid".into()),
                ("binding_message", "W4SCT".into()),
                ("acr_values", "mfa".into()),
            ]
        );
    }
}
