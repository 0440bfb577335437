//! Protocol values that can only exist once validated.
mod auth_req_id;
mod binding_message;
mod login_hint;
mod requested_expiry;
mod scope;

pub use auth_req_id::AuthReqId;
pub use binding_message::BindingMessage;
pub use login_hint::LoginHint;
pub use requested_expiry::RequestedExpiry;
pub use scope::Scope;

/// The rules every short text parameter shares: present, not too long, and
/// free of control characters.
fn check_short_text(name: &str, s: &str, max_chars: usize) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if s.chars().count() > max_chars {
        return Err(format!("{name} must be at most {max_chars} characters"));
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
