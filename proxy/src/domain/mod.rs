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
