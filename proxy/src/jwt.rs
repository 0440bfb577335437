//! Checks shared by every JWT a client sends us (request objects, client
//! assertions, login hint tokens): signature verification with a key from a
//! key set, and the registered claims (RFC 7519 §4.1).
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Tolerated clock difference with the sender for `exp`, `nbf` and `iat`.
pub const CLOCK_SKEW_SECS: u64 = 30;

/// The furthest `exp` we accept on a client's JWT. Its `jti` must be
/// remembered until then, so the store's memory of it is bounded too.
pub const MAX_LIFETIME_SECS: u64 = 86_400;

pub type Claims = Map<String, Value>;

/// The payload, before any signature check: only to learn who claims to
/// have signed, so the right key can be found.
pub fn unverified_claims(jwt: &str) -> Option<Claims> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// Verifies the signature only; every claim is checked by the caller.
pub fn verify(jwt: &str, alg: Algorithm, key: &DecodingKey) -> Result<Claims, String> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    decode::<Claims>(jwt, key, &validation)
        .map(|data| data.claims)
        .map_err(|_| "the signature does not verify".to_owned())
}

/// How long a JWT's `jti` must be remembered to refuse every replay: until
/// it expires (plus skew). `check_times` has bounded `exp`.
pub fn replay_window_secs(claims: &Claims, now: u64) -> u64 {
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
    exp.saturating_sub(now).min(MAX_LIFETIME_SECS) + CLOCK_SKEW_SECS
}

/// A string claim.
pub fn string<'a>(claims: &'a Claims, name: &str) -> Result<&'a str, String> {
    match claims.get(name) {
        None => Err(format!("{name} is required")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(format!("{name} must be a non-empty string")),
    }
}

/// A NumericDate claim.
pub fn number(claims: &Claims, name: &str) -> Result<u64, String> {
    match claims.get(name) {
        None => Err(format!("{name} is required")),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("{name} must be a NumericDate")),
    }
}

/// `aud` (a string or a list) names one of `accepted` (trailing `/` ignored).
pub fn check_audience(claims: &Claims, accepted: &[&str]) -> Result<(), String> {
    let trimmed = |s: &str| s.trim_end_matches('/').to_owned();
    let accepted: Vec<String> = accepted.iter().map(|a| trimmed(a)).collect();
    let ok = match claims.get("aud") {
        Some(Value::String(a)) => accepted.contains(&trimmed(a)),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| accepted.contains(&trimmed(a))),
        _ => return Err("aud is required".into()),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("aud must contain one of {}", accepted.join(", ")))
    }
}

/// `exp` is required and not past; `nbf` and `iat`, when present (or when
/// `require_nbf_iat`), are not in the future.
pub fn check_times(claims: &Claims, now: u64, require_nbf_iat: bool) -> Result<(), String> {
    let exp = number(claims, "exp")?;
    if now >= exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err("it has expired (exp)".into());
    }
    if exp > now.saturating_add(MAX_LIFETIME_SECS) {
        return Err(format!("exp is more than {MAX_LIFETIME_SECS} seconds away"));
    }
    for name in ["nbf", "iat"] {
        if !require_nbf_iat && !claims.contains_key(name) {
            continue;
        }
        if number(claims, name)? > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(if name == "nbf" {
                "it is not valid yet (nbf)".into()
            } else {
                "iat is in the future".into()
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn audience_may_be_a_string_or_a_list() {
        let accepted = ["https://proxy.example", "https://proxy.example/token"];
        assert!(
            check_audience(&claims(json!({"aud": "https://proxy.example/"})), &accepted).is_ok()
        );
        assert!(check_audience(
            &claims(json!({"aud": ["x", "https://proxy.example/token"]})),
            &accepted
        )
        .is_ok());
        assert!(
            check_audience(&claims(json!({"aud": "https://evil.example"})), &accepted).is_err()
        );
        assert!(check_audience(&claims(json!({})), &accepted).is_err());
    }

    #[test]
    fn times_are_checked_with_skew() {
        let now = 1_000_000;
        assert!(check_times(&claims(json!({"exp": now + 10})), now, false).is_ok());
        assert!(check_times(&claims(json!({"exp": now - 31})), now, false).is_err());
        assert!(check_times(
            &claims(json!({"exp": now + 10, "nbf": now + 100})),
            now,
            false
        )
        .is_err());
        assert!(check_times(&claims(json!({"exp": now + 10})), now, true).is_err());
        assert!(check_times(&claims(json!({"exp": "soon"})), now, false).is_err());
        // Far-future and overflowing values are refused, not wrapped.
        assert!(check_times(
            &claims(json!({"exp": now + MAX_LIFETIME_SECS + 1})),
            now,
            false
        )
        .is_err());
        assert!(check_times(&claims(json!({"exp": u64::MAX})), now, false).is_err());
        assert!(check_times(
            &claims(json!({"exp": now + 10, "nbf": u64::MAX})),
            now,
            false
        )
        .is_err());
        assert_eq!(
            replay_window_secs(&claims(json!({"exp": u64::MAX})), now),
            MAX_LIFETIME_SECS + CLOCK_SKEW_SECS
        );
    }

    #[test]
    fn unverified_claims_tolerate_garbage() {
        assert!(unverified_claims("").is_none());
        assert!(unverified_claims("a.b.c").is_none());
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#);
        assert_eq!(
            unverified_claims(&format!("h.{payload}.s")).unwrap()["sub"],
            "x"
        );
    }
}
