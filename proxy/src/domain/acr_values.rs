/// CIBA Core §7.1 / OIDC Core §3.1.2.1 `acr_values`: space-separated
/// authentication context class references, in order of preference. The
/// proxy does not interpret them; it carries them to the IdP (into the
/// authorization URL, or the IdP's own backchannel request), so they are
/// bounded and free of control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcrValues(String);

impl AcrValues {
    /// At most `max_bytes` bytes (`input.max_acr_values_bytes`).
    pub fn parse_at_most(s: &str, max_bytes: usize) -> Result<Self, String> {
        if s.len() > max_bytes {
            return Err(format!("acr_values must be at most {max_bytes} bytes"));
        }
        super::check_text("acr_values", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_uris_and_short_names_verbatim() {
        for ok in ["urn:mace:incommon:iap:silver", "phr phrh", "1"] {
            assert_eq!(AcrValues::parse_at_most(ok, 512).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_oversize_blank_and_control_characters() {
        let e = AcrValues::parse_at_most(&"a".repeat(513), 512).unwrap_err();
        assert_eq!(e, "acr_values must be at most 512 bytes");
        assert!(AcrValues::parse_at_most(&"a".repeat(512), 512).is_ok());
        assert!(AcrValues::parse_at_most(" ", 512).is_err());
        assert!(AcrValues::parse_at_most("a\r\nb", 512).is_err());
    }

    proptest! {
        #[test]
        fn accepted_values_fit_the_cap(s in ".{0,40}", cap in 1usize..64) {
            if let Ok(acr) = AcrValues::parse_at_most(&s, cap) {
                prop_assert!(acr.as_str().len() <= cap);
            }
        }
    }
}
