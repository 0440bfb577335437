//! `ciba-proxy client`: a console consumption device. It reads a provider's
//! discovery document, sends one backchannel authentication request (CIBA
//! Core §7.1, or §7.1.1 as a signed request object), then polls the token
//! endpoint in poll mode (§10.1, §11) until it gets tokens or a final error.
//!
//! Each step is written to stderr; the token response goes to stdout and
//! nowhere else. Secrets, the private key and tokens are never printed, and
//! the auth_req_id only in part. Exit status: 0 tokens, 1 refused or failed,
//! 2 usage error.
//!
//! Client authentication is one of client_secret_basic / client_secret_post
//! (RFC 6749 §2.3.1), private_key_jwt (RFC 7523 §2.2, OIDC Core §9) or
//! tls_client_auth (RFC 8705 §2).
//!
//! [`device`] is `ciba-proxy device`, the console authentication device.
//!
//! Layout: [`cli`] is the command line and its checks, [`auth`] client
//! authentication (keys, assertions, Basic), [`request`] the backchannel
//! request and its acknowledgement, `poll.rs` the token endpoint loop;
//! `discovery.rs` and `http.rs` read the provider's metadata and its JSON
//! replies. This crate does not link the service: the protocol names both
//! use come from `ciba-proto`. The `ciba-proxy` binary parses [`Args`] as its
//! `client` subcommand and hands them to [`execute`].
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ciba_proto::error::ErrorResponse;
use rand::RngCore;
use serde_json::Value;

pub mod auth;
pub mod cli;
pub mod device;
mod discovery;
mod http;
mod poll;
pub mod request;
#[cfg(test)]
mod test_support;

pub use cli::{Args, Config};

/// The subcommand of `ciba-proxy` that runs this client.
pub const SUBCOMMAND: &str = "client";

/// How much of the auth_req_id (a bearer credential) the progress shows.
const SHOWN_ID_CHARS: usize = 8;

const EXIT_FAILED: u8 = 1;

/// Time as a parameter: the JWTs this client signs read it, so tests fix it.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now_secs(&self) -> u64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_secs(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// An error the run ends with: `error: <code>: <description>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct Failure {
    pub code: String,
    pub description: String,
}

/// The codes of failures this client finds itself (never sent by a server).
pub(crate) mod codes {
    /// The reply is not what the specs say it must be.
    pub const INVALID_RESPONSE: &str = "invalid_response";
    /// No HTTP exchange: DNS, connection, TLS or a timeout.
    pub const NETWORK_ERROR: &str = "network_error";
    /// The discovery document is missing or not the issuer's.
    pub const DISCOVERY_FAILED: &str = "discovery_failed";
    /// A JWT could not be signed.
    pub const SIGNING_FAILED: &str = "signing_failed";
    /// No final answer in time.
    pub const TIMEOUT: &str = "timeout";
    /// The tokens could not be written to stdout.
    pub const OUTPUT_FAILED: &str = "output_failed";
}

impl Failure {
    pub(crate) fn new(code: &str, description: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            description: description.into(),
        }
    }

    /// An OAuth error response (RFC 6749 §5.2) or whatever came instead.
    pub(crate) fn from_reply(status: u16, body: &Value) -> Self {
        match ErrorResponse::from_json(body) {
            Some(e) => Self::new(
                &e.error,
                e.error_description
                    .unwrap_or_else(|| "(no description)".into()),
            ),
            None => Self::new(
                codes::INVALID_RESPONSE,
                format!("HTTP {status} without an OAuth error code"),
            ),
        }
    }
}

/// Writes one progress line to stderr; a closed stderr is not an error.
pub(crate) fn note(line: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The first characters of a bearer identifier, enough to tell two apart.
pub fn shortened(id: &str) -> String {
    let shown: String = id.chars().take(SHOWN_ID_CHARS).collect();
    if shown.len() < id.len() {
        format!("{shown}…")
    } else {
        shown
    }
}

/// `bytes` random bytes as unpadded base64url: a fresh `jti`.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Runs `ciba-proxy client` on parsed `args`: checks them, then
/// [`run`]s; prints the tokens or the failure and says how to exit.
/// Must run inside a Tokio runtime with the time driver.
pub async fn execute(args: Args) -> ExitCode {
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            // 2 for usage errors.
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let run = run(&config, &SystemClock);
    let outcome = match config.max_wait {
        Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
            Err(Failure::new(
                codes::TIMEOUT,
                format!("no tokens within --max-wait {} s", limit.as_secs()),
            ))
        }),
        None => run.await,
    };
    match outcome {
        Ok(tokens) => match writeln!(std::io::stdout(), "{tokens}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                note(format_args!(
                    "error: {}: cannot write the tokens: {e}",
                    codes::OUTPUT_FAILED
                ));
                ExitCode::from(EXIT_FAILED)
            }
        },
        Err(failure) => {
            note(format_args!("error: {failure}"));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Discovery, the request, then polling: the token response on success.
pub async fn run(config: &Config, clock: &dyn Clock) -> Result<Value, Failure> {
    let metadata = discovery::discover(config).await?;
    let ack = request::request(config, &metadata, clock).await?;
    poll::poll(config, &metadata, &ack, clock).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_auth_req_id_is_shown_only_in_part() {
        assert_eq!(shortened("abcdefghijklmnop"), "abcdefgh…");
        assert_eq!(shortened("abc"), "abc");
    }

    #[test]
    fn a_reply_without_an_error_code_is_an_invalid_response() {
        let f = Failure::from_reply(502, &json!("gateway"));
        assert_eq!(f.code, "invalid_response");
        assert!(f.description.contains("502"), "{f}");
        let f = Failure::from_reply(400, &json!({"error": "invalid_grant"}));
        assert_eq!(f, Failure::new("invalid_grant", "(no description)"));
    }

    #[test]
    fn random_tokens_are_url_safe_and_differ() {
        let (a, b) = (random_token(16), random_token(16));
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
