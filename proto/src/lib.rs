//! ciba-proto: the protocol vocabulary that the proxy (`ciba-proxy`), its
//! console client (`ciba-proxy-client`) and the end-to-end suite share, so
//! that each name exists once.
//!
//! Layout:
//! - this file: the URNs and registered names: the CIBA grant type, the
//!   client-assertion type, the token delivery modes and the client
//!   authentication methods;
//! - [`error`]: the `error` codes of token and backchannel responses
//!   (RFC 6749 §5.2, RFC 6750 §3.1, CIBA Core §11 and §13) and
//!   [`error::ErrorResponse`], the body that carries them;
//! - [`form`]: the `application/x-www-form-urlencoded` helpers a client
//!   needs: HTTP Basic client credentials (RFC 6749 §2.3.1) and optional
//!   parameters;
//! - [`claims`]: the JWT claim sets a client signs: client assertions
//!   (RFC 7523 §3) and request objects (CIBA Core §7.1.1);
//! - [`device`]: the authentication-device API's paths, limits and codes.
//!
//! No I/O, no HTTP types, no signing: callers bring their own.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod claims;
pub mod device;
pub mod error;
pub mod form;

/// CIBA Core §10.1: the `grant_type` of a token request for an auth_req_id.
pub const CIBA_GRANT_TYPE: &str = "urn:openid:params:grant-type:ciba";

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// CIBA Core §5: how a client learns the result, the values of
/// `backchannel_token_delivery_mode`.
pub mod delivery_mode {
    /// §5 / §10.1: the client polls the token endpoint.
    pub const POLL: &str = "poll";
    /// §5 / §10.2: the OP pings the client's notification endpoint, then
    /// the client calls the token endpoint.
    pub const PING: &str = "ping";
    /// §5 / §10.3: the OP pushes the tokens to the client (not served by
    /// the proxy; named so it can be recognised and refused).
    pub const PUSH: &str = "push";
}

/// The values of `token_endpoint_auth_method` (OpenID Connect Core §9,
/// RFC 8705 §2).
pub mod auth_method {
    /// RFC 6749 §2.3.1: HTTP Basic.
    pub const CLIENT_SECRET_BASIC: &str = "client_secret_basic";
    /// RFC 6749 §2.3.1: `client_id` and `client_secret` in the form.
    pub const CLIENT_SECRET_POST: &str = "client_secret_post";
    /// RFC 7523 §2.2, OIDC Core §9: a JWT signed with the client's key.
    pub const PRIVATE_KEY_JWT: &str = "private_key_jwt";
    /// RFC 8705 §2.1: a certificate from a trusted CA.
    pub const TLS_CLIENT_AUTH: &str = "tls_client_auth";
    /// RFC 8705 §2.2: a self-signed certificate registered as a JWK.
    pub const SELF_SIGNED_TLS_CLIENT_AUTH: &str = "self_signed_tls_client_auth";
}
