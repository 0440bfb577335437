//! Scopes as sentences a person understands, with sensible defaults for the
//! OpenID Connect scopes and the operator's own in `[pages.scope_descriptions]`.
use std::collections::BTreeMap;

const DEFAULTS: [(&str, &str); 6] = [
    ("openid", "Confirm who you are"),
    ("profile", "Your name and basic profile"),
    ("email", "Your email address"),
    ("phone", "Your phone number"),
    ("address", "Your postal address"),
    ("offline_access", "Stay signed in when you are not using it"),
];

pub struct Descriptions(BTreeMap<String, String>);

impl Descriptions {
    /// The defaults, with the operator's descriptions over them.
    pub fn new(configured: &BTreeMap<String, String>) -> Self {
        let mut all: BTreeMap<String, String> = DEFAULTS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self(all)
    }

    /// One sentence per scope, `openid` first; a scope nobody described is
    /// shown by its name.
    pub fn describe(&self, scope: &str) -> Vec<String> {
        let mut scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
        scopes.sort_by_key(|s| *s != "openid");
        scopes
            .into_iter()
            .map(|s| {
                self.0
                    .get(s)
                    .cloned()
                    .unwrap_or_else(|| format!("Access to \u{201c}{s}\u{201d}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_scopes_read_as_sentences_and_operators_can_override() {
        let mut configured = BTreeMap::new();
        configured.insert("email".to_owned(), "Your work email".to_owned());
        configured.insert("payments".to_owned(), "Make a payment".to_owned());
        let d = Descriptions::new(&configured);
        assert_eq!(
            d.describe("email openid payments other"),
            vec![
                "Confirm who you are",
                "Your work email",
                "Make a payment",
                "Access to \u{201c}other\u{201d}"
            ]
        );
    }
}
