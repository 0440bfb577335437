use std::collections::BTreeSet;

/// RFC 6749 §3.3 scope: a set of space-separated tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(BTreeSet<String>);

impl Scope {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            if !token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
            {
                return Err(format!("scope contains an invalid token {token:?}"));
            }
            set.insert(token.to_owned());
        }
        if set.is_empty() {
            return Err("scope must not be empty".into());
        }
        Ok(Self(set))
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    /// Tokens of `self` that `allowed` does not grant.
    pub fn not_in<'a>(&'a self, allowed: &'a Scope) -> impl Iterator<Item = &'a str> {
        self.0.difference(&allowed.0).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let joined: Vec<&str> = self.iter().collect();
        f.write_str(&joined.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_normalises_tokens() {
        let s = Scope::parse("openid  email openid").unwrap();
        assert!(s.contains("openid"));
        assert_eq!(s.to_string(), "email openid");
    }

    #[test]
    fn reports_tokens_outside_the_allowed_set() {
        let allowed = Scope::parse("openid profile").unwrap();
        let asked = Scope::parse("openid payments").unwrap();
        assert_eq!(asked.not_in(&allowed).collect::<Vec<_>>(), ["payments"]);
    }

    #[test]
    fn rejects_empty_and_invalid_characters() {
        assert!(Scope::parse("").is_err());
        assert!(Scope::parse("   ").is_err());
        assert!(Scope::parse("openid \"quoted\"").is_err());
        assert!(Scope::parse("openid\u{e9}").is_err());
    }

    proptest! {
        #[test]
        fn display_round_trips(s in "[a-z:]{1,8}( [a-z:]{1,8}){0,5}") {
            let scope = Scope::parse(&s).unwrap();
            prop_assert_eq!(Scope::parse(&scope.to_string()).unwrap(), scope);
        }
    }
}
