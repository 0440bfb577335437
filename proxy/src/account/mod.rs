//! The user's account page (`/account`, `[account]`): the user signs in at
//! the IdP with the proxy's own registration, then sees the requests
//! waiting for them, their registered devices and their history, and can
//! register a device (a QR code) or remove one. Only the signed-in user's
//! own data is ever shown or changed.
//!
//! - [`session`]: the sealed cookies (the sign-in in flight, the session).
//! - [`sign_in`]: the authorization-code sign-in at the IdP (the upstream's
//!   own [`AuthorizationCode`] with another redirect URI and registration).
//! - [`overview`]: what the page shows, and removing a device.
//! - [`enrolment`]: the QR code a device registers with.
//! - [`history`]: how outcomes become the user's history.
use std::sync::Arc;

use url::Url;

use crate::clients::Client;
use crate::clock::Clock;
use crate::configuration::{AccountSettings, ConfigError};
use crate::crypto::TokenCipher;
use crate::domain::Scope;
use crate::flow::Flow;
use crate::upstream::{AuthorizationCode, Provider};

pub mod enrolment;
pub mod history;
pub mod overview;
pub mod session;
pub mod sign_in;

pub use overview::{Overview, RemoveRefused};
pub use session::{Session, SESSION_COOKIE, SIGN_IN_COOKIE};
pub use sign_in::{CallbackParams, SignInRefused};

/// Where the IdP sends the browser back, under `server.issuer`.
pub const ACCOUNT_CALLBACK_PATH: &str = "/account/callback";

/// The account page's service: built from `[account]` at startup.
pub struct Account {
    /// The authorization-code sign-in, redirecting to `/account/callback`.
    sign_in: AuthorizationCode,
    /// The `[account]` registration at the IdP.
    registration: Client,
    provider: Arc<Provider>,
    cookies: session::Cookies,
    flow: Arc<Flow>,
    clock: Arc<dyn Clock>,
    /// The proxy's public base URL, without a trailing slash.
    issuer: String,
    session_secs: u64,
    history_ms: u64,
    challenge_ttl_ms: u64,
}

/// What `[account]` needs beyond its own keys, checked without the network
/// (`ciba-proxy check` too): the scope and the callback URL.
pub fn check(settings: &AccountSettings, issuer: &str) -> Result<(Scope, Url), ConfigError> {
    let scope = Scope::parse(&settings.scope).map_err(|e| ConfigError::new("account.scope", e))?;
    let callback = Url::parse(&format!("{issuer}{ACCOUNT_CALLBACK_PATH}"))
        .map_err(|e| ConfigError::new("server.issuer", e.to_string()))?;
    Ok((scope, callback))
}

impl Account {
    /// `issuer` without a trailing slash; `provider` is the upstream's, so
    /// the IdP's metadata and keys are fetched once for both.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &AccountSettings,
        issuer: &str,
        provider: Arc<Provider>,
        exchange_attempts: u32,
        flow: Arc<Flow>,
        cipher: TokenCipher,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let (scope, callback) = check(settings, issuer)?;
        Ok(Self {
            sign_in: AuthorizationCode::new(provider.clone(), callback.clone(), exchange_attempts),
            registration: Client::upstream_registration(
                &settings.upstream_client_id,
                settings.upstream_client_secret.clone(),
                scope,
            ),
            provider,
            cookies: session::Cookies::new(cipher, callback.scheme() == "https"),
            flow,
            clock,
            issuer: issuer.to_owned(),
            session_secs: settings.session_secs,
            history_ms: settings.history_ms(),
            challenge_ttl_ms: settings.challenge_ttl_secs * 1000,
        })
    }

    /// The session a request's cookie holds, if any (sealed by us, unexpired).
    pub fn session(&self, cookie: Option<&str>) -> Option<Session> {
        cookie.and_then(|c| self.cookies.open_session(c, self.clock.now_ms()))
    }

    /// The cookie that ends the session (sign-out).
    pub fn signed_out(&self) -> actix_web::cookie::Cookie<'static> {
        self.cookies.cleared(SESSION_COOKIE)
    }
}
