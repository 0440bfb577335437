/// CIBA Core §7.1 `requested_expiry`: a positive integer of seconds, sent as
/// a form string or, in a request object, as a JSON number or string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedExpiry(u64);

/// Ten digits are over 300 years: anything longer is padding or an attack
/// on the parser, never a lifetime.
const MAX_DIGITS: usize = 10;

impl RequestedExpiry {
    /// Plain ASCII digits only: no sign, no spaces, no more than
    /// [`MAX_DIGITS`] of them (Rust's `u64::from_str` would take `+5`, and
    /// trimming took ` 5 `).
    pub fn parse(s: &str) -> Result<Self, String> {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits || s.len() > MAX_DIGITS {
            return Err(format!(
                "requested_expiry must be a positive integer number of seconds: \
                 1 to {MAX_DIGITS} digits, with no sign or spaces"
            ));
        }
        match s.parse::<u64>() {
            Ok(0) => Err("requested_expiry must be a positive number of seconds".into()),
            Ok(n) => Ok(Self(n)),
            Err(_) => Err("requested_expiry must be a positive integer number of seconds".into()),
        }
    }

    /// The lifetime to grant: what was asked, but never more than `max`.
    pub fn capped(self, max: u64) -> u64 {
        self.0.min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_integers_and_caps_them() {
        assert_eq!(RequestedExpiry::parse("120").unwrap().capped(600), 120);
        assert_eq!(RequestedExpiry::parse("9999").unwrap().capped(600), 600);
        assert_eq!(
            RequestedExpiry::parse("9999999999").unwrap().capped(600),
            600
        );
    }

    #[test]
    fn rejects_zero_negative_fractional_and_text() {
        for bad in ["0", "-5", "1.5", "soon", "", "99999999999999999999999"] {
            assert!(RequestedExpiry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_signs_spaces_padding_and_other_digits() {
        let padded = format!("{}5", "0".repeat(49));
        for bad in [
            " 5",
            "5 ",
            "+5",
            "\t5",
            "5\n",
            "0x10",
            "1e3",
            "1_000",
            "٥",
            "５",
            padded.as_str(),
            "00000000000",
        ] {
            let e = RequestedExpiry::parse(bad).unwrap_err();
            assert!(e.starts_with("requested_expiry"), "{bad:?}: {e}");
        }
        assert!(RequestedExpiry::parse("0000000000").is_err());
    }

    proptest! {
        #[test]
        fn accepts_exactly_short_positive_digit_strings(s in "\\PC{0,12}") {
            let plain = !s.is_empty()
                && s.len() <= MAX_DIGITS
                && s.bytes().all(|b| b.is_ascii_digit())
                && s.bytes().any(|b| b != b'0');
            prop_assert_eq!(RequestedExpiry::parse(&s).is_ok(), plain);
        }

        #[test]
        fn every_positive_number_round_trips(n in 1u64..=9_999_999_999) {
            prop_assert_eq!(RequestedExpiry::parse(&n.to_string()).unwrap().capped(u64::MAX), n);
        }
    }
}
