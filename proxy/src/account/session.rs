//! The account page's two cookies, both sealed with the token key (each
//! with its own associated data, so neither can stand in for the other or
//! for any other sealed value), HttpOnly, SameSite=Lax, Secure under https
//! and scoped to `/account`:
//!
//! - the sign-in in flight: `state`, the PKCE verifier and the nonce, for
//!   the few minutes the user takes at the IdP (no store write per visit);
//! - the session: who signed in, until when, and the token its forms carry
//!   (CSRF).
use actix_web::cookie::{time::Duration as CookieAge, Cookie, SameSite};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::crypto::TokenCipher;

pub const SESSION_COOKIE: &str = "ciba_account";
pub const SIGN_IN_COOKIE: &str = "ciba_account_sign_in";
/// Both cookies go only to the account page's paths.
pub const COOKIE_PATH: &str = "/account";
const SESSION_AAD: &str = "account-session";
const SIGN_IN_AAD: &str = "account-sign-in";
/// How long the user may take at the IdP's sign-in.
pub const SIGN_IN_TTL_MS: u64 = 600_000;

/// A signed-in user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The subject-claim value: the user as login hints name them.
    pub user: String,
    pub expires_at_ms: u64,
    /// Every form of the page carries it back.
    pub csrf: String,
}

impl Session {
    /// Whether a form's token is this session's (constant time).
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

/// A sign-in started at the IdP, until the browser comes back.
#[derive(Debug, Serialize, Deserialize)]
pub struct InFlight {
    pub state: String,
    /// The upstream's context (PKCE verifier and nonce), base64url.
    context: String,
    pub expires_at_ms: u64,
}

impl InFlight {
    pub fn new(state: String, context: &[u8], expires_at_ms: u64) -> Self {
        Self {
            state,
            context: URL_SAFE_NO_PAD.encode(context),
            expires_at_ms,
        }
    }

    pub fn context(&self) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(&self.context).ok()
    }

    /// Whether the browser brought back this sign-in's `state`.
    pub fn state_matches(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.state.as_bytes()))
    }
}

/// Seals and opens the cookies.
#[derive(Clone)]
pub struct Cookies {
    cipher: TokenCipher,
    /// `Secure` (the issuer is https).
    secure: bool,
}

impl Cookies {
    pub fn new(cipher: TokenCipher, secure: bool) -> Self {
        Self { cipher, secure }
    }

    pub fn session(&self, session: &Session, max_age_secs: u64) -> Cookie<'static> {
        self.cookie(
            SESSION_COOKIE,
            self.seal(session, SESSION_AAD),
            max_age_secs,
        )
    }

    pub fn sign_in(&self, in_flight: &InFlight) -> Cookie<'static> {
        self.cookie(
            SIGN_IN_COOKIE,
            self.seal(in_flight, SIGN_IN_AAD),
            SIGN_IN_TTL_MS / 1000,
        )
    }

    /// A cookie that removes `name`.
    pub fn cleared(&self, name: &'static str) -> Cookie<'static> {
        self.cookie(name, String::new(), 0)
    }

    /// The session in `value`, if it is one we sealed and it has not ended.
    pub fn open_session(&self, value: &str, now_ms: u64) -> Option<Session> {
        self.open::<Session>(value, SESSION_AAD)
            .filter(|s| now_ms < s.expires_at_ms)
    }

    /// The sign-in in `value`, if it is one we sealed and it has not ended.
    pub fn open_sign_in(&self, value: &str, now_ms: u64) -> Option<InFlight> {
        self.open::<InFlight>(value, SIGN_IN_AAD)
            .filter(|s| now_ms < s.expires_at_ms)
    }

    fn seal<T: Serialize>(&self, value: &T, aad: &str) -> String {
        // Serialising these plain structs cannot fail.
        let json = serde_json::to_vec(value).unwrap_or_default();
        self.cipher.seal(&json, aad)
    }

    fn open<T: for<'de> Deserialize<'de>>(&self, value: &str, aad: &str) -> Option<T> {
        let plain = self.cipher.open(value, aad).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    fn cookie(&self, name: &'static str, value: String, max_age_secs: u64) -> Cookie<'static> {
        Cookie::build(name, value)
            .path(COOKIE_PATH)
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .max_age(CookieAge::seconds(
                i64::try_from(max_age_secs).unwrap_or(i64::MAX),
            ))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use secrecy::SecretString;

    fn cookies() -> Cookies {
        let key = SecretString::from(STANDARD.encode([3u8; 32]));
        Cookies::new(TokenCipher::from_base64(&key).unwrap(), true)
    }

    fn session(expires_at_ms: u64) -> Session {
        Session {
            user: "alice".into(),
            expires_at_ms,
            csrf: "token".into(),
        }
    }

    #[test]
    fn a_session_opens_until_it_ends_and_never_as_a_sign_in() {
        let c = cookies();
        let cookie = c.session(&session(1000), 900);
        assert!(cookie.http_only().unwrap());
        assert!(cookie.secure().unwrap());
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(cookie.path(), Some("/account"));
        assert!(!cookie.value().contains("alice"));
        assert_eq!(c.open_session(cookie.value(), 999).unwrap().user, "alice");
        assert!(c.open_session(cookie.value(), 1000).is_none());
        assert!(c.open_sign_in(cookie.value(), 0).is_none());
        assert!(c.open_session("forged", 0).is_none());
    }

    #[test]
    fn the_form_token_must_be_the_sessions() {
        let s = session(1);
        assert!(s.csrf_matches(Some("token")));
        assert!(!s.csrf_matches(Some("other")));
        assert!(!s.csrf_matches(None));
    }

    #[test]
    fn a_sign_in_keeps_its_state_and_context() {
        let c = cookies();
        let cookie = c.sign_in(&InFlight::new("st".into(), b"ctx", 50));
        let opened = c.open_sign_in(cookie.value(), 10).unwrap();
        assert!(opened.state_matches("st"));
        assert!(!opened.state_matches("other"));
        assert_eq!(opened.context().unwrap(), b"ctx");
        assert!(c.open_sign_in(cookie.value(), 50).is_none());
    }
}
