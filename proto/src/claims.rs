//! The JWT claim sets a client signs. Signing is the caller's: this crate
//! only says what goes in.
use serde_json::{json, Map, Value};

/// A client assertion is used at once; a minute covers any clock skew.
pub const CLIENT_ASSERTION_LIFETIME_SECS: u64 = 60;
/// A request object is sent at once too; FAPI-CIBA allows at most 60 minutes.
pub const REQUEST_OBJECT_LIFETIME_SECS: u64 = 300;
/// CIBA Core §7.1.1: the JWT claims of a request object; every other
/// member is an authentication request parameter.
pub const REQUEST_OBJECT_JWT_CLAIMS: [&str; 6] = ["iss", "aud", "exp", "iat", "nbf", "jti"];

/// RFC 7523 §3: a client assertion's claims. `audience` is the endpoint the
/// assertion is sent to (or the issuer); `jti` makes it single-use.
pub fn client_assertion(client_id: &str, audience: &str, now: u64, jti: &str) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + CLIENT_ASSERTION_LIFETIME_SECS,
        "jti": jti,
    })
}

/// CIBA Core §7.1.1: a signed authentication request's claims: the
/// request `parameters` and the JWT claims (`aud` is the OP's issuer).
/// A parameter cannot override a JWT claim.
pub fn request_object(
    client_id: &str,
    audience: &str,
    now: u64,
    jti: &str,
    parameters: Map<String, Value>,
) -> Value {
    let mut claims = parameters;
    for (name, value) in [
        ("iss", Value::from(client_id)),
        ("aud", Value::from(audience)),
        ("iat", Value::from(now)),
        ("nbf", Value::from(now)),
        ("exp", Value::from(now + REQUEST_OBJECT_LIFETIME_SECS)),
        ("jti", Value::from(jti)),
    ] {
        claims.insert(name.to_owned(), value);
    }
    Value::Object(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_client_assertion_has_the_rfc7523_claims() {
        assert_eq!(
            client_assertion("shop", "https://op.example/token", NOW, "j"),
            json!({
                "iss": "shop",
                "sub": "shop",
                "aud": "https://op.example/token",
                "iat": NOW,
                "exp": NOW + 60,
                "jti": "j",
            })
        );
    }

    #[test]
    fn a_request_object_carries_the_parameters_and_every_jwt_claim() {
        let mut parameters = Map::new();
        parameters.insert("login_hint".into(), "alice".into());
        parameters.insert("requested_expiry".into(), 90.into());
        // A parameter named like a JWT claim does not win.
        parameters.insert("iss".into(), "mallory".into());
        let claims = request_object("bank", "https://op.example", NOW, "j", parameters);
        assert_eq!(
            claims,
            json!({
                "iss": "bank",
                "aud": "https://op.example",
                "iat": NOW,
                "nbf": NOW,
                "exp": NOW + 300,
                "jti": "j",
                "login_hint": "alice",
                "requested_expiry": 90,
            })
        );
        for name in REQUEST_OBJECT_JWT_CLAIMS {
            assert!(claims.get(name).is_some(), "{name}");
        }
    }
}
