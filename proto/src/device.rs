//! The authentication-device API (`docs/devices.md`): its paths, the JWS
//! that a device signs, and the limits the proxy holds them to. The proxy
//! checks these, `ciba-proxy device` makes them and the tests use both.

/// `POST`: registration, the JWS itself as the body (`re` in the QR code).
pub const REGISTER_PATH: &str = "/devices";
/// `GET`: the user's pending requests.
pub const REQUESTS_PATH: &str = "/devices/requests";
/// `POST`: approve or deny one request (`ae` in the QR code).
pub const DECISION_PATH: &str = "/devices/decision";
/// `POST`: unregister the device (`rde` in the QR code).
pub const REMOVE_PATH: &str = "/devices/remove";

/// The media type of a registration body (RFC 7515 §9.2.1).
pub const JOSE_CONTENT_TYPE: &str = "application/jose";
/// `Authorization: Device <jws>` on every call but registration.
pub const AUTH_SCHEME: &str = "Device";

/// The algorithms a device key may use: ES256 (P-256) or RS256.
pub const ALGORITHMS: [&str; 2] = ["ES256", "RS256"];
/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// A call's `exp` is at most this far ahead of the proxy's clock.
pub const MAX_CALL_LIFETIME_SECS: u64 = 60;
/// Tolerated difference between the device's clock and the proxy's.
pub const CLOCK_SKEW_SECS: u64 = 5;
/// Longest `name` and `model`, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

/// The decision claim `res`.
pub const APPROVE: &str = "approve";
pub const DENY: &str = "deny";

/// `error` codes of the device API besides the OAuth ones
/// (`invalid_request` 400, `invalid_token` 401, `access_denied` 403).
pub mod error {
    /// 404: the handle is not one this proxy made.
    pub const UNKNOWN_REQUEST: &str = "unknown_request";
    /// 410: the request expired or was answered.
    pub const REQUEST_ENDED: &str = "request_ended";
}
