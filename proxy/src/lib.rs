//! ciba-proxy: OpenID Connect CIBA in front of an OpenID provider, driven
//! with the authorization-code flow or with the IdP's own CIBA, with every
//! client poll answered from the store.
//!
//! Layout:
//! - [`configuration`] loads and validates the TOML settings (exit 2 on error).
//! - [`startup`] wires the pieces into an actix-web [`startup::Application`].
//! - [`routes`] has one module per endpoint: discovery, `/bc-authorize`,
//!   `/token`, `/callback`, `/approve/{handle}`, `/upstream/ping` and the
//!   health probes; [`pages`] renders what a person sees, from templates.
//! - [`domain`] holds the protocol types that can only be valid once parsed
//!   (`AuthReqId`, `LoginHint`, `BindingMessage`, `Scope`, ...).
//! - [`flow`] owns the life of a request: open, land (the browser's return),
//!   pinged (a native-CIBA IdP's ping), decide and poll, and the background
//!   tasks that notify the user, ask the IdP and ping the client.
//!   `docs/architecture.md` draws it: the states, who moves a request
//!   between them, and which store key holds it.
//! - [`clients`] is the registry of consumption-device clients,
//!   [`client_auth`] authenticates them, [`request_object`] validates signed
//!   request objects, and [`jwt`] holds the claim checks they share;
//!   [`hints`] resolves login_hint, id_token_hint and login_hint_token;
//!   [`limits`] caps requests per client and pending requests per user;
//!   [`tls`] terminates TLS and finds RFC 8705 client certificates.
//! - [`upstream`] is the IdP behind one trait, one file per kind
//!   (`upstream/authorization_code.rs`, `upstream/ciba.rs`);
//!   `upstream/provider.rs` holds what the kinds share: discovery, keys,
//!   ID-token checks, revocation; `upstream/health.rs` judges from recent
//!   calls whether the IdP can be reached. [`jwks`] caches key sets.
//! - [`store`] keeps request and token state (in memory or in Redis) behind
//!   narrow traits by concern (requests, replay guard, job queue, quotas,
//!   health, accounts); [`crypto`] seals tokens at rest and makes random identifiers.
//! - [`notifier`] tells the user's authentication device about a request,
//!   [`ping`] tells a ping-mode client its result is ready, and [`jobs`] is
//!   the durable queue and worker that runs such tasks, from any instance.
//!   [`net_policy`] keeps pings off loopback, private and link-local
//!   addresses, at startup and when a host name is resolved.
//! - [`metrics`] names every Prometheus series; `/metrics` is served only on
//!   `[metrics] bind` (the operator server in [`startup`]).
//! - [`account`] is the user's account page (`/account`, `[account]`): the
//!   sign-in at the IdP, the sealed session cookie, the user's pending
//!   requests, devices and history, and the QR code a device registers with.
//! - [`devices`] is the authentication devices' server: registration
//!   from a QR code's enrolment, and signed calls that list, approve or
//!   deny the user's requests (`docs/devices.md`).
//! - [`error`] is the single OAuth error type rendered at the HTTP edge;
//!   [`audit`] writes one event per step of a request's life.
//! - `ciba-proxy client`, the console CIBA client, is the `client/` crate
//!   (`ciba-proxy-client`); the protocol names it shares with this crate
//!   and the tests (grant and assertion types, error codes, claim sets)
//!   are in `proto/` (`ciba-proto`). `main.rs` only dispatches to it.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod account;
pub mod audit;
pub mod client_auth;
pub mod clients;
pub mod clock;
pub mod configuration;
pub mod crypto;
pub mod devices;
pub mod domain;
pub mod error;
pub mod flow;
pub mod form;
pub mod hints;
pub mod jobs;
pub mod jwks;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod net_policy;
pub mod notifier;
pub mod operator;
pub mod pages;
pub mod ping;
pub mod request_object;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;
