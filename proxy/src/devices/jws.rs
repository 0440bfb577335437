//! The two JWS an authentication device sends (`docs/devices.md`): the
//! registration, signed by the new key it carries in its `jwk` header, and
//! every later call, signed by the registered key named by `kid`. This
//! module parses and verifies them; what they may do is the service's
//! (`devices/mod.rs`).
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ciba_proto::device::{CLOCK_SKEW_SECS, MAX_CALL_LIFETIME_SECS, MAX_LABEL_CHARS, MIN_RSA_BITS};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{decode_header, Algorithm, DecodingKey};
use serde_json::{json, Value};

use crate::jwt::{self, Claims};
use crate::store::PushTarget;

/// Longest device id, challenge and `jti`.
const MAX_ID_CHARS: usize = 128;
/// Longest FCM token or Web Push endpoint or key.
const MAX_PUSH_CHARS: usize = 4096;

/// Why a device's JWS is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not a compact JWS with a JSON header and claims (400 at registration).
    #[error("{0}")]
    Malformed(String),
    /// An algorithm or key that is not accepted: not ES256 on P-256, not
    /// RS256 of at least 2048 bits, or not a public key (400 at registration).
    #[error("{0}")]
    Key(String),
    /// The signature does not verify with the key (401).
    #[error("the signature does not verify")]
    BadSignature,
    /// Signed, but a claim is missing or wrong (400 at registration).
    #[error("{0}")]
    Claims(String),
    /// A call that is expired, too long-lived or from the future (401).
    #[error("{0}")]
    Time(String),
}

/// What a verified registration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The new public key, as the JWK JSON to keep.
    pub jwk: String,
    pub did: String,
    /// The QR code's challenge, in clear (only its digest is kept).
    pub challenge: String,
    pub name: String,
    pub model: String,
    pub push: Option<PushTarget>,
}

/// A verified call's claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub jti: String,
    pub exp: u64,
    pub claims: Claims,
}

fn malformed(m: &str) -> JwsError {
    JwsError::Malformed(m.to_owned())
}

fn claim_error(m: String) -> JwsError {
    JwsError::Claims(m)
}

/// The header, after checking the JWS has the compact form's three parts
/// and a JSON object for its claims (before any signature check).
fn header(jws: &str) -> Result<jsonwebtoken::Header, JwsError> {
    if jws.split('.').count() != 3 {
        return Err(malformed("not a compact JWS (header.payload.signature)"));
    }
    let header = decode_header(jws).map_err(|_| malformed("the JWS header is not readable"))?;
    if jwt::unverified_claims(jws).is_none() {
        return Err(malformed("the JWS payload is not a JSON object"));
    }
    Ok(header)
}

/// The raw header's `jwk` member, to see everything it carries.
fn raw_jwk(jws: &str) -> Option<Value> {
    let part = jws.split('.').next()?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()?;
    header.get("jwk").cloned()
}

/// The algorithm a key signs with, and the public JWK to keep: ES256 on
/// P-256 (a point on the curve), or RS256 with a modulus of at least
/// [`MIN_RSA_BITS`].
fn accepted_key(jwk: &Jwk) -> Result<(Algorithm, String), JwsError> {
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            let x = URL_SAFE_NO_PAD.decode(&ec.x).unwrap_or_default();
            let y = URL_SAFE_NO_PAD.decode(&ec.y).unwrap_or_default();
            if x.len() != 32 || y.len() != 32 {
                return Err(JwsError::Key("x and y must be 32-byte coordinates".into()));
            }
            let point = [&[0x04][..], &x, &y].concat();
            p256::PublicKey::from_sec1_bytes(&point)
                .map_err(|_| JwsError::Key("the key is not a point on P-256".into()))?;
            let public = json!({"kty": "EC", "crv": "P-256", "x": ec.x, "y": ec.y});
            Ok((Algorithm::ES256, public.to_string()))
        }
        AlgorithmParameters::EllipticCurve(_) => {
            Err(JwsError::Key("an EC key must be on P-256 (ES256)".into()))
        }
        AlgorithmParameters::RSA(rsa) => {
            let n = URL_SAFE_NO_PAD.decode(&rsa.n).unwrap_or_default();
            let e = URL_SAFE_NO_PAD.decode(&rsa.e).unwrap_or_default();
            let bits = modulus_bits(&n);
            if bits < MIN_RSA_BITS {
                return Err(JwsError::Key(format!(
                    "an RSA key must have at least {MIN_RSA_BITS} bits; this one has {bits}"
                )));
            }
            let exponent_ok = !e.is_empty()
                && e.len() <= 8
                && e.last().is_some_and(|b| b & 1 == 1)
                && e.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)) >= 3;
            if !exponent_ok {
                return Err(JwsError::Key("the RSA exponent is not usable".into()));
            }
            let public = json!({"kty": "RSA", "n": rsa.n, "e": rsa.e});
            Ok((Algorithm::RS256, public.to_string()))
        }
        _ => Err(JwsError::Key(
            "the key must be EC P-256 (ES256) or RSA (RS256)".into(),
        )),
    }
}

fn modulus_bits(n: &[u8]) -> usize {
    let n: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
    match n.first() {
        Some(first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// The public JWK a registration carries, with the algorithm it must sign with.
fn registration_key(
    jws: &str,
    header: &jsonwebtoken::Header,
) -> Result<(Algorithm, Jwk, String), JwsError> {
    let jwk = header
        .jwk
        .clone()
        .ok_or_else(|| malformed("the jwk header (the device's public key) is required"))?;
    let private = raw_jwk(jws).is_some_and(|raw| {
        ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|member| raw.get(member).is_some())
    });
    if private {
        return Err(JwsError::Key(
            "the jwk header must hold a public key only".into(),
        ));
    }
    let (alg, public) = accepted_key(&jwk)?;
    if header.alg != alg {
        return Err(JwsError::Key(format!(
            "alg must be {alg:?} for this key (ES256 for P-256, RS256 for RSA)"
        )));
    }
    Ok((alg, jwk, public))
}

/// Verifies a registration JWS with the key it carries and reads its claims.
pub fn registration(jws: &str) -> Result<Registration, JwsError> {
    let header = header(jws)?;
    if !matches!(header.alg, Algorithm::ES256 | Algorithm::RS256) {
        return Err(JwsError::Key("alg must be ES256 or RS256".into()));
    }
    let (alg, jwk, public) = registration_key(jws, &header)?;
    let key =
        DecodingKey::from_jwk(&jwk).map_err(|_| JwsError::Key("the jwk is not usable".into()))?;
    let claims = jwt::verify(jws, alg, &key).map_err(|_| JwsError::BadSignature)?;
    let push = match claims.get("push") {
        None | Some(Value::Null) => None,
        Some(push) => Some(push_target(push)?),
    };
    Ok(Registration {
        jwk: public,
        did: identifier(&claims, "did")?,
        challenge: identifier(&claims, "chg")?,
        name: label(&claims, "name")?,
        model: label(&claims, "model")?,
        push,
    })
}

/// An id-like claim: 1 to 128 characters of `A-Za-z0-9-_.~`.
fn identifier(claims: &Claims, name: &str) -> Result<String, JwsError> {
    let value = jwt::string(claims, name).map_err(claim_error)?;
    let ok = value.len() <= MAX_ID_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(JwsError::Claims(format!(
            "{name} must be 1 to {MAX_ID_CHARS} characters of A-Z a-z 0-9 - _ . ~"
        )))
    }
}

/// What the user reads on the account page: short text, no control characters.
fn label(claims: &Claims, name: &str) -> Result<String, JwsError> {
    let value = jwt::string(claims, name).map_err(claim_error)?.trim();
    if value.is_empty() || value.chars().count() > MAX_LABEL_CHARS {
        return Err(JwsError::Claims(format!(
            "{name} must be 1 to {MAX_LABEL_CHARS} characters"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() || is_format_character(c))
    {
        return Err(JwsError::Claims(format!(
            "{name} must not contain control characters"
        )));
    }
    Ok(value.to_owned())
}

/// Zero-width and bidi controls: invisible, and able to disguise a name.
fn is_format_character(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.general_category() == GeneralCategory::Format
}

/// The `push` claim: `{"kind":"fcm","token"}` or
/// `{"kind":"webpush","subscription":{endpoint, keys:{p256dh, auth}}}`.
/// Where the endpoint may lead is the service's check.
fn push_target(push: &Value) -> Result<PushTarget, JwsError> {
    let target: PushTarget = serde_json::from_value(push.clone()).map_err(|_| {
        JwsError::Claims(
            "push must be {\"kind\":\"fcm\",\"token\":...} or {\"kind\":\"webpush\",\"subscription\":{\"endpoint\",\"keys\":{\"p256dh\",\"auth\"}}}".into(),
        )
    })?;
    let parts: Vec<&str> = match &target {
        PushTarget::Fcm { token } => vec![token],
        PushTarget::Webpush { subscription } => vec![
            &subscription.endpoint,
            &subscription.keys.p256dh,
            &subscription.keys.auth,
        ],
    };
    for part in parts {
        if part.is_empty() || part.len() > MAX_PUSH_CHARS || part.chars().any(char::is_control) {
            return Err(JwsError::Claims(format!(
                "each push value must be 1 to {MAX_PUSH_CHARS} printable characters"
            )));
        }
    }
    if let PushTarget::Webpush { subscription } = &target {
        for key in [&subscription.keys.p256dh, &subscription.keys.auth] {
            if URL_SAFE_NO_PAD.decode(key.trim_end_matches('=')).is_err() {
                return Err(JwsError::Claims(
                    "push.subscription.keys must be base64url".into(),
                ));
            }
        }
    }
    Ok(target)
}

/// The device a call claims to come from (its `kid`), before any check.
pub fn caller(jws: &str) -> Result<String, JwsError> {
    let header = header(jws)?;
    header
        .kid
        .filter(|kid| !kid.is_empty() && kid.len() <= MAX_ID_CHARS)
        .ok_or_else(|| malformed("the kid header (the device id) is required"))
}

/// Verifies a call with the device's registered key (`device_jwk`, as kept
/// at registration) and checks its claims: `did` is the `kid`, `iat` is
/// not in the future, `exp` is not past and at most
/// [`MAX_CALL_LIFETIME_SECS`] ahead, and `jti` is present.
pub fn call(jws: &str, did: &str, device_jwk: &str, now: u64) -> Result<Call, JwsError> {
    let header = header(jws)?;
    let jwk: Jwk = serde_json::from_str(device_jwk)
        .map_err(|_| JwsError::Key("the registered key is not readable".into()))?;
    let (alg, _) = accepted_key(&jwk)?;
    if header.alg != alg || header.kid.as_deref() != Some(did) {
        return Err(JwsError::BadSignature);
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| JwsError::BadSignature)?;
    let claims = jwt::verify(jws, alg, &key).map_err(|_| JwsError::BadSignature)?;
    if jwt::string(&claims, "did").map_err(claim_error)? != did {
        return Err(JwsError::Claims("did must be the kid".into()));
    }
    let iat = jwt::number(&claims, "iat").map_err(claim_error)?;
    let exp = jwt::number(&claims, "exp").map_err(claim_error)?;
    if iat > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(JwsError::Time("iat is in the future".into()));
    }
    if exp.saturating_add(CLOCK_SKEW_SECS) <= now {
        return Err(JwsError::Time("the JWS has expired (exp)".into()));
    }
    if exp > now.saturating_add(MAX_CALL_LIFETIME_SECS + CLOCK_SKEW_SECS) {
        return Err(JwsError::Time(format!(
            "exp must be at most {MAX_CALL_LIFETIME_SECS} seconds ahead"
        )));
    }
    let jti = identifier(&claims, "jti")?;
    Ok(Call { jti, exp, claims })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_modulus_bits_ignore_leading_zeros() {
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x01, 0]), 9);
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0; 300]), 0);
        assert_eq!(modulus_bits(&[0xff; 256]), 2048);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for jws in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "....",
            "e30.e30.",
            "e30.bm90anNvbg.x",
        ] {
            assert!(
                matches!(registration(jws), Err(JwsError::Malformed(_))),
                "{jws}"
            );
            assert!(caller(jws).is_err(), "{jws}");
        }
    }

    #[test]
    fn labels_are_short_printable_text() {
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(
            label(&claims(json!({"name": " Pixel 8 "})), "name").unwrap(),
            "Pixel 8"
        );
        for bad in [
            json!("a\u{7}b"),
            json!("x\u{202E}y"),
            json!(""),
            json!("n".repeat(65)),
            json!(5),
        ] {
            assert!(label(&claims(json!({"name": bad})), "name").is_err());
        }
    }
}
