use std::collections::BTreeSet;

/// RFC 6749 §3.3 scope: a set of space-separated tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(BTreeSet<String>);

/// Why a client's `scope` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// More tokens than the configured cap: a bounded-input refusal
    /// (`invalid_request`), not a statement about the scopes themselves.
    #[error("scope must have at most {max} tokens")]
    TooManyTokens { max: usize },
    /// Empty or a token outside the RFC 6749 §3.3 grammar (`invalid_scope`).
    #[error("{0}")]
    Malformed(String),
}

impl Scope {
    /// A scope of any size (the operator's configured scopes).
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::parse_at_most(s, usize::MAX).map_err(|e| e.to_string())
    }

    /// A client's scope: at most `max_tokens` tokens, counted as sent
    /// (repeats included), so the work done on it stays bounded.
    pub fn parse_at_most(s: &str, max_tokens: usize) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for (n, token) in s.split(' ').filter(|t| !t.is_empty()).enumerate() {
            if n >= max_tokens {
                return Err(ScopeError::TooManyTokens { max: max_tokens });
            }
            // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            if !token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
            {
                return Err(ScopeError::Malformed(format!(
                    "scope contains an invalid token {token:?}"
                )));
            }
            set.insert(token.to_owned());
        }
        if set.is_empty() {
            return Err(ScopeError::Malformed("scope must not be empty".into()));
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

    #[test]
    fn token_cap_counts_tokens_as_sent() {
        assert!(Scope::parse_at_most("openid email", 2).is_ok());
        assert_eq!(
            Scope::parse_at_most("openid email profile", 2),
            Err(ScopeError::TooManyTokens { max: 2 })
        );
        // Repeats count: the cap bounds the work, not the set.
        assert!(Scope::parse_at_most("openid openid openid", 2).is_err());
        // Extra spaces are separators, not tokens.
        assert!(Scope::parse_at_most("  openid   email  ", 2).is_ok());
        let many = vec!["a"; 8000].join(" ");
        let e = Scope::parse_at_most(&many, 64).unwrap_err();
        assert_eq!(e.to_string(), "scope must have at most 64 tokens");
    }

    proptest! {
        #[test]
        fn accepted_scopes_fit_the_cap(s in "[a-z ]{0,60}", cap in 1usize..10) {
            if let Ok(scope) = Scope::parse_at_most(&s, cap) {
                prop_assert!(scope.iter().count() <= cap);
            }
        }

        #[test]
        fn display_round_trips(s in "[a-z:]{1,8}( [a-z:]{1,8}){0,5}") {
            let scope = Scope::parse(&s).unwrap();
            prop_assert_eq!(Scope::parse(&scope.to_string()).unwrap(), scope);
        }
    }
}
