//! Fuzzes the strict form parser of `/bc-authorize` and `/token` and the
//! protocol-value parsers the handlers feed with its output.
//!
//! Property: nothing panics, for any body. A few cheap invariants of the
//! parsed values are checked along the way.
#![no_main]

use ciba_proxy::domain::{AuthReqId, BindingMessage, LoginHint, RequestedExpiry, Scope};
use ciba_proxy::form::FormParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(form) = FormParams::parse(data) {
        let names: Vec<&str> = form.names().collect();
        for name in names {
            let value = form.get(name).expect("a listed name has a value");
            // RFC 6749 §3.1: empty values are dropped as omitted.
            assert!(!value.is_empty(), "empty value kept for {name:?}");
            domain_values(value);
        }
        // The parameters the handlers actually read, by name.
        for name in [
            "scope",
            "login_hint",
            "binding_message",
            "requested_expiry",
            "auth_req_id",
        ] {
            if let Some(value) = form.get(name) {
                domain_values(value);
            }
        }
    }
    // The same parsers on the raw input, when it is text.
    if let Ok(text) = std::str::from_utf8(data) {
        domain_values(text);
    }
});

/// Runs every domain parser on `s`.
fn domain_values(s: &str) {
    if let Ok(scope) = Scope::parse(s) {
        // Display normalises (sorted, deduplicated) and parses back to itself.
        let shown = scope.to_string();
        assert_eq!(Scope::parse(&shown).ok(), Some(scope), "{s:?} -> {shown:?}");
    }
    if let Ok(hint) = LoginHint::parse(s) {
        // Kept verbatim: it is compared with the ID token's subject.
        assert_eq!(hint.as_str(), s);
    }
    if let Ok(message) = BindingMessage::parse(s) {
        assert_eq!(message.as_str(), s);
    }
    if let Ok(expiry) = RequestedExpiry::parse(s) {
        let capped = expiry.capped(600);
        assert!((1..=600).contains(&capped), "{s:?} capped to {capped}");
    }
    if let Ok(id) = AuthReqId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert!(id.to_string() == s);
    }
}
