/// CIBA Core §7.1 `requested_expiry`: a positive integer of seconds, sent as
/// a form string or, in a request object, as a JSON number or string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedExpiry(u64);

impl RequestedExpiry {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().parse::<u64>() {
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

    #[test]
    fn parses_integers_and_caps_them() {
        assert_eq!(RequestedExpiry::parse("120").unwrap().capped(600), 120);
        assert_eq!(RequestedExpiry::parse("9999").unwrap().capped(600), 600);
    }

    #[test]
    fn rejects_zero_negative_fractional_and_text() {
        for bad in ["0", "-5", "1.5", "soon", "", "99999999999999999999999"] {
            assert!(RequestedExpiry::parse(bad).is_err(), "{bad}");
        }
    }
}
