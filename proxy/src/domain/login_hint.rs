/// CIBA Core §7.1 `login_hint`: who should authenticate. Sent to the IdP and
/// compared with the ID token's subject claim, so it is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginHint(String);

const MAX_CHARS: usize = 256;

impl LoginHint {
    pub fn parse(s: &str) -> Result<Self, String> {
        super::check_short_text("login_hint", s, MAX_CHARS)?;
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
        assert!(LoginHint::parse(&"x".repeat(257)).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}|.{0,10}") {
            let _ = LoginHint::parse(&s);
        }
    }
}
