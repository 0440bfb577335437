//! Signing in to the account page: an authorization-code flow with PKCE
//! (S256), `state` and `nonce` for the `[account]` registration. The
//! request is the backchannel flow's own ([`AuthorizationCode::sign_in`]
//! and [`AuthorizationCode::finish`]: the same code exchange and ID-token
//! checks), with the redirect URI `{server.issuer}/account/callback`. What
//! must survive the trip to the IdP rides in a sealed cookie.
//!
//! [`AuthorizationCode::sign_in`]: crate::upstream::AuthorizationCode::sign_in
//! [`AuthorizationCode::finish`]: crate::upstream::AuthorizationCode::finish
use actix_web::cookie::Cookie;
use serde::Deserialize;
use url::Url;

use super::session::{InFlight, Session, SIGN_IN_TTL_MS};
use super::Account;
use crate::crypto::random_token;
use crate::upstream::UpstreamError;

/// The authorization response (RFC 6749 §4.1.2, §4.1.2.1; RFC 9207 `iss`).
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

/// Why a sign-in did not complete, in what the page tells the user.
#[derive(Debug, PartialEq, Eq)]
pub enum SignInRefused {
    /// No sign-in of this browser's matches the response: no cookie, an
    /// expired one, or another `state` (400).
    NotThisBrowsers,
    /// The IdP answered with an error (the user cancelled, ...) (400).
    AtTheIdp,
    /// The code exchange or the ID token failed, or the ID token names no
    /// user (502).
    Failed,
    /// The IdP or the store cannot be reached now (503).
    Unavailable,
}

impl Account {
    /// Starts a sign-in: the IdP URL to send the browser to, and the cookie
    /// that keeps what the callback needs.
    pub async fn start_sign_in(&self) -> Result<(Url, Cookie<'static>), SignInRefused> {
        let started = self
            .sign_in
            .sign_in(&self.registration, self.registration.scope.iter())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "account sign-in could not start");
                SignInRefused::Unavailable
            })?;
        let in_flight = InFlight::new(
            started.state,
            &started.context,
            self.clock.now_ms() + SIGN_IN_TTL_MS,
        );
        Ok((started.url, self.cookies.sign_in(&in_flight)))
    }

    /// The browser is back from the IdP: checks that the response belongs
    /// to this browser's sign-in, redeems the code, and answers the session
    /// cookie. The user is the ID token's subject claim (as login hints name
    /// users); its `email` claim is kept as the user's address.
    pub async fn finish_sign_in(
        &self,
        sign_in_cookie: Option<&str>,
        params: &CallbackParams,
    ) -> Result<Cookie<'static>, SignInRefused> {
        let now_ms = self.clock.now_ms();
        let in_flight = sign_in_cookie
            .and_then(|c| self.cookies.open_sign_in(c, now_ms))
            .ok_or(SignInRefused::NotThisBrowsers)?;
        let state_matches = params
            .state
            .as_deref()
            .is_some_and(|s| in_flight.state_matches(s));
        if !state_matches {
            tracing::warn!("account sign-in: the response's state is not this browser's");
            return Err(SignInRefused::NotThisBrowsers);
        }
        if let Some(error) = &params.error {
            // The IdP's own words stay out of the page; the code is logged.
            let error: String = crate::domain::printable(error).chars().take(64).collect();
            tracing::info!(%error, "account sign-in: the identity provider answered an error");
            return Err(SignInRefused::AtTheIdp);
        }
        let code = params.code.as_deref().ok_or(SignInRefused::AtTheIdp)?;
        let context = in_flight.context().ok_or(SignInRefused::NotThisBrowsers)?;
        let issued = self
            .sign_in
            .finish(
                &self.registration,
                &context,
                code,
                params.iss.as_deref(),
                self.clock.now_secs(),
            )
            .await
            .map_err(|e| match e {
                UpstreamError::Unavailable(_) => {
                    tracing::warn!(error = %e, "account sign-in: the identity provider is unreachable");
                    SignInRefused::Unavailable
                }
                other => {
                    tracing::warn!(error = %other, "account sign-in failed");
                    SignInRefused::Failed
                }
            })?;
        let Some(user) = self
            .provider
            .subject(&issued.claims)
            .map(|u| u.into_owned())
        else {
            tracing::error!(
                claim = %self.provider.subject_claim,
                "account sign-in: the ID token lacks the subject claim (upstream.subject_claim)"
            );
            return Err(SignInRefused::Failed);
        };
        if let Some(email) = issued.claims.get("email").and_then(|v| v.as_str()) {
            self.flow
                .accounts
                .set_email(&user, email)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "account sign-in: store unavailable");
                    SignInRefused::Unavailable
                })?;
        }
        tracing::info!(
            user = %crate::limits::user_hash(&user),
            "signed in to the account page"
        );
        let session = Session {
            user,
            expires_at_ms: now_ms + self.session_secs * 1000,
            csrf: random_token(32),
        };
        Ok(self.cookies.session(&session, self.session_secs))
    }

    /// The cookie that drops a finished sign-in.
    pub fn sign_in_done(&self) -> Cookie<'static> {
        self.cookies.cleared(super::SIGN_IN_COOKIE)
    }
}
