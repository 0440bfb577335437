/// CIBA Core §7.1 `login_hint`: who should authenticate. Sent to the IdP and
/// compared with the ID token's subject claim, so it is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginHint(String);

impl LoginHint {
    /// The longest hint any configuration may allow, bytes. What a client
    /// may send is `input.max_login_hint_bytes` (256 by default, enough for
    /// an OIDC `sub`, which is at most 255 ASCII characters: OIDC Core §2).
    pub const MAX_BYTES: usize = 1024;

    /// A hint of at most [`Self::MAX_BYTES`]: what the IdP hands back as a
    /// subject (from an `id_token_hint` or a `login_hint_token`).
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::parse_at_most(s, Self::MAX_BYTES)
    }

    /// A hint a client sent, of at most `max_bytes` (never more than
    /// [`Self::MAX_BYTES`]). Bytes, not characters: the cap bounds what is
    /// stored, forwarded and logged.
    pub fn parse_at_most(s: &str, max_bytes: usize) -> Result<Self, String> {
        let max_bytes = max_bytes.min(Self::MAX_BYTES);
        if s.len() > max_bytes {
            return Err(format!("login_hint must be at most {max_bytes} bytes"));
        }
        super::check_text("login_hint", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_usernames_emails_and_uuids() {
        for ok in [
            "alice",
            "alice@example.com",
            "6f1c1f2e-0a3b-4c1d-9d7e-123456789abc",
        ] {
            assert_eq!(LoginHint::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_blank_control_characters_and_oversize() {
        assert!(LoginHint::parse("").is_err());
        assert!(LoginHint::parse("   ").is_err());
        assert!(LoginHint::parse("alice\nbob").is_err());
        assert!(LoginHint::parse_at_most(&"x".repeat(257), 256).is_err());
        assert!(LoginHint::parse_at_most(&"x".repeat(256), 256).is_ok());
        assert!(LoginHint::parse(&"x".repeat(LoginHint::MAX_BYTES + 1)).is_err());
    }

    #[test]
    fn the_cap_counts_bytes_not_characters() {
        // 128 two-byte characters are 256 bytes; one more is over.
        assert!(LoginHint::parse_at_most(&"é".repeat(128), 256).is_ok());
        let e = LoginHint::parse_at_most(&"é".repeat(129), 256).unwrap_err();
        assert_eq!(e, "login_hint must be at most 256 bytes");
    }

    #[test]
    fn a_cap_above_the_ceiling_is_the_ceiling() {
        let s = "x".repeat(LoginHint::MAX_BYTES + 1);
        assert!(LoginHint::parse_at_most(&s, usize::MAX).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}|.{0,10}") {
            let _ = LoginHint::parse(&s);
        }

        #[test]
        fn accepted_hints_fit_the_cap_and_are_kept_verbatim(s in "\\PC{0,80}", cap in 1usize..200) {
            if let Ok(hint) = LoginHint::parse_at_most(&s, cap) {
                prop_assert!(hint.as_str().len() <= cap);
                prop_assert_eq!(hint.as_str(), s.as_str());
            }
        }
    }
}
