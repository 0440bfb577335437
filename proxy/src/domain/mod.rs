//! Protocol values that can only exist once validated.
mod acr_values;
mod auth_req_id;
mod binding_message;
mod login_hint;
mod requested_expiry;
mod scope;

pub use acr_values::AcrValues;
pub use auth_req_id::AuthReqId;
pub use binding_message::BindingMessage;
pub use login_hint::LoginHint;
pub use requested_expiry::RequestedExpiry;
pub use scope::{Scope, ScopeError};

/// The rules every short text parameter shares: present and free of
/// control characters. Each type checks its own length first, so this
/// never scans more than that.
fn check_text(name: &str, s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{name} must not contain control characters"));
    }
    Ok(())
}

/// Text from another party (an IdP's `error_description`) made safe to
/// relay: control characters dropped, at most 200 characters.
pub fn printable(s: &str) -> String {
    const MAX_CHARS: usize = 200;
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}
