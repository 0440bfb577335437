//! Builds the application from settings: every setting is parsed and checked
//! before a port is bound, so a bad configuration binds nothing.
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, Service as _};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{KeepAlive, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpMessage as _, HttpRequest, HttpServer, ResponseError as _};
use tokio::sync::watch;
use url::Url;

use crate::clients::ClientRegistry;
use crate::clock::{Clock, SystemClock};
use crate::configuration::{ConfigError, Settings, TokenEndpointAuthMethod, UpstreamKind};
use crate::crypto::TokenCipher;
use crate::devices::Devices;
use crate::error::OAuthError;
use crate::flow::{Flow, LongPoll};
use crate::form;
use crate::hints::Hints;
use crate::jobs::Jobs;
use crate::limits::Limits;
use crate::notifier::Channels;
use crate::pages::Pages;
use crate::ping::ClientPinger;
use crate::routes::account::{
    ACCOUNT_CALLBACK_PATH, ACCOUNT_PATH, ACCOUNT_REMOVE_DEVICE_PATH, ACCOUNT_SIGNOUT_PATH,
};
use crate::routes::{
    self, APPROVE_APPROVE_PATH, APPROVE_DENY_PATH, APPROVE_PATH, BACKCHANNEL_PATH, CALLBACK_PATH,
    DEVICE_DECISION_PATH, DEVICE_REGISTER_PATH, DEVICE_REMOVE_PATH, DEVICE_REQUESTS_PATH,
    STYLESHEET_PATH, TOKEN_PATH, UPSTREAM_PING_PATH,
};
use crate::state::{AppState, CibaPolicy};
use crate::store::{Backends, Store, StoreError, StoreTarget};
use crate::telemetry;
use crate::tls::{remember_peer_certificate, server_config, Mtls};
use crate::upstream::{http_client, AuthorizationCode, Ciba, Provider, Upstream, UpstreamError};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot reach the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    /// The operator server on `[metrics] bind`, and its port.
    operator: Option<(u16, actix_web::dev::ServerHandle)>,
    worker: tokio::task::JoinHandle<()>,
    /// The expiry sweep (`flow/expiry.rs`), stopped with the worker.
    expiries: tokio::task::JoinHandle<()>,
    stop_worker: watch::Sender<bool>,
}

impl Application {
    /// Builds from settings and binds `server.bind`.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let (state, tls) = build_state(&settings, Arc::new(SystemClock)).await?;
        let listener = TcpListener::bind(&settings.server.bind)?;
        Self::serve(state, tls, listener, &settings)
    }

    /// Builds on a listener the caller bound, with the caller's clock (tests).
    pub async fn build_with(
        settings: Settings,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let (state, tls) = build_state(&settings, clock).await?;
        Self::serve(state, tls, listener, &settings)
    }

    fn serve(
        state: AppState,
        tls: Option<ServerConfig>,
        listener: TcpListener,
        settings: &Settings,
    ) -> Result<Self, StartupError> {
        let port = listener.local_addr()?.port();
        let operator = match &settings.metrics.bind {
            Some(bind) => {
                // A configuration matter (exit 2 naming the key), like any
                // other bad setting: the port is taken or not this host's.
                let listener = TcpListener::bind(bind).map_err(|e| {
                    ConfigError::new("metrics.bind", format!("cannot listen there: {e}"))
                })?;
                let port = listener.local_addr()?.port();
                let admin = settings
                    .admin
                    .as_ref()
                    .map(|a| {
                        crate::routes::admin::AdminToken::from_hex(&a.token_sha256).ok_or_else(
                            || ConfigError::new("admin.token_sha256", "must be 64 hex digits"),
                        )
                    })
                    .transpose()?;
                let server = crate::operator::serve(state.clone(), admin, listener)?;
                let handle = server.handle();
                tokio::spawn(server);
                tracing::info!(port, "serving /metrics on the operator port");
                Some((port, handle))
            }
            None => None,
        };
        let upstream = state.upstream.clone();
        // Load the IdP's metadata now rather than on the first request.
        tokio::spawn(async move {
            if let Err(e) = upstream.ready().await {
                tracing::warn!(error = %e, "upstream metadata not loaded yet; will retry on demand");
            }
        });
        let (stop_worker, stopped) = watch::channel(false);
        let flow = state.flow.clone();
        let flow_for_signals = state.flow.clone();
        let expiries = tokio::spawn(flow.clone().watch_expiries(stopped.clone()));
        let worker = tokio::spawn(flow.jobs.clone().run(flow, stopped));
        let data = web::Data::new(state);
        let input = web::Data::new(settings.input);
        let server_settings = &settings.server;
        let body_timeout = Duration::from_millis(server_settings.request_body_timeout_ms);
        // Set explicitly (actix's own default) so the per-instance cap can be shared out.
        let workers = std::thread::available_parallelism()
            .map_or(2, std::num::NonZeroUsize::get)
            .clamp(1, 512);
        let server = HttpServer::new(move || {
            App::new()
                .wrap_fn(move |mut req, srv| {
                    let body = req.take_payload();
                    req.set_payload(form::with_deadline(body, body_timeout));
                    srv.call(req)
                })
                .wrap(from_fn(telemetry::in_request_span))
                .app_data(data.clone())
                .app_data(input.clone())
                .service(
                    web::resource("/.well-known/openid-configuration")
                        .route(web::get().to(routes::discovery::openid_configuration))
                        .default_service(method_not_allowed("GET")),
                )
                .service(
                    web::resource(BACKCHANNEL_PATH)
                        .route(
                            web::post()
                                .to(routes::backchannel_authentication::backchannel_authentication),
                        )
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource(TOKEN_PATH)
                        .route(web::post().to(routes::token::token))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource(CALLBACK_PATH)
                        .route(web::get().to(routes::callback::callback))
                        .default_service(method_not_allowed("GET")),
                )
                .service(
                    web::resource(APPROVE_PATH)
                        .route(web::get().to(routes::approve::page))
                        .default_service(method_not_allowed("GET")),
                )
                .service(
                    web::resource(APPROVE_APPROVE_PATH)
                        .route(web::post().to(routes::approve::approve))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource(APPROVE_DENY_PATH)
                        .route(web::post().to(routes::approve::deny))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource(DEVICE_REGISTER_PATH)
                        .route(web::post().to(routes::devices::register))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource(DEVICE_REQUESTS_PATH)
                        .route(web::get().to(routes::devices::requests))
                        .default_service(method_not_allowed("GET")),
                )
                .service(
                    web::resource(DEVICE_DECISION_PATH)
                        .route(web::post().to(routes::devices::decision))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource(DEVICE_REMOVE_PATH)
                        .route(web::post().to(routes::devices::remove))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource(STYLESHEET_PATH)
                        .route(web::get().to(routes::approve::stylesheet))
                        .default_service(method_not_allowed("GET")),
                )
                .service(
                    web::resource(ACCOUNT_PATH)
                        .route(web::get().to(routes::account::page))
                        .default_service(method_not_allowed("GET")),
                )
                .service(
                    web::resource(ACCOUNT_CALLBACK_PATH)
                        .route(web::get().to(routes::account::callback))
                        .default_service(method_not_allowed("GET")),
                )
                .service(
                    web::resource(ACCOUNT_SIGNOUT_PATH)
                        .route(web::post().to(routes::account::sign_out))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource(ACCOUNT_REMOVE_DEVICE_PATH)
                        .route(web::post().to(routes::account::remove_device))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource(UPSTREAM_PING_PATH)
                        .route(web::post().to(routes::upstream_ping::upstream_ping))
                        .default_service(method_not_allowed("POST")),
                )
                .service(
                    web::resource("/healthz")
                        .route(web::get().to(routes::health::healthz))
                        .default_service(method_not_allowed("GET")),
                )
                .service(
                    web::resource("/readyz")
                        .route(web::get().to(routes::health::readyz))
                        .default_service(method_not_allowed("GET")),
                )
                .service(
                    web::resource(routes::OPENAPI_PATH)
                        .route(web::get().to(routes::openapi::openapi))
                        .default_service(method_not_allowed("GET")),
                )
        })
        .workers(workers)
        .max_connections(server_settings.max_connections.div_ceil(workers))
        .client_request_timeout(Duration::from_millis(
            server_settings.request_header_timeout_ms,
        ))
        .keep_alive(match server_settings.keep_alive_secs {
            0 => KeepAlive::Disabled,
            secs => KeepAlive::Timeout(Duration::from_secs(secs)),
        })
        .on_connect(remember_peer_certificate);
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        // Our own signal handling: waiting long polls must answer before the
        // server waits for the requests in flight.
        .disable_signals()
        .run();
        tokio::spawn(stop_on_signal(server.handle(), flow_for_signals));
        Ok(Self {
            port,
            server,
            operator,
            worker,
            expiries,
            stop_worker,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `[metrics] bind`, when it is set.
    pub fn operator_port(&self) -> Option<u16> {
        self.operator.as_ref().map(|(port, _)| *port)
    }

    /// Serves until SIGINT/SIGTERM; then stops accepting, finishes the
    /// requests in flight and hands queued work back to the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some((_, operator)) = &self.operator {
            operator.stop(true).await;
        }
        let _ = self.stop_worker.send(true);
        let _ = self.worker.await;
        let _ = self.expiries.await;
        served
    }
}

/// On SIGINT or SIGTERM: answer waiting long polls, then stop accepting
/// and finish the requests in flight (the server's graceful stop).
async fn stop_on_signal(server: actix_web::dev::ServerHandle, flow: Arc<Flow>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("stopping: answering long polls, finishing requests in flight");
    if let Some(long_poll) = &flow.long_poll {
        long_poll.stop();
    }
    server.stop(true).await;
}

/// RFC 9110 §15.5.6: another method at a known path is 405 with `Allow`,
/// and the body is the usual OAuth error, as at every other refusal.
pub(crate) fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move {
        let refusal = OAuthError::InvalidRequest(format!(
            "{} is not allowed at {}; use {allow}",
            req.method(),
            req.path()
        ));
        let mut response = refusal.error_response();
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        response
    })
}

/// Long enough for one code exchange with all its tries: a timeout per
/// try, the waits between them (at most 4 s each), and a margin.
fn exchange_lease_secs(upstream: &crate::configuration::UpstreamSettings) -> u64 {
    let tries = u64::from(upstream.exchange_attempts);
    (upstream.timeout_ms * tries).div_ceil(1000) + 4 * tries + 2
}

/// An IdP that answers but cannot serve the configured kind (no CIBA
/// endpoint for `kind = "ciba"`) stops the proxy at startup. An IdP that
/// does not answer yet does not: readiness reports it until it does.
async fn check_upstream_kind(upstream: &dyn Upstream) -> Result<(), ConfigError> {
    match upstream.ready().await {
        Err(UpstreamError::Misconfigured {
            key: key @ "upstream.kind",
            message,
        }) => Err(ConfigError::new(key, message)),
        Err(e) => {
            tracing::warn!(error = %e, "the identity provider is not ready yet; will retry on demand");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// `ciba-proxy check`: builds, and drops, everything [`build_state`] makes
/// from the settings that needs neither the network, nor the store, nor a
/// port: the TLS files, the mTLS CA, the token key, the callback URL, the
/// HTTP clients, the client registry (keys, algorithms, endpoints), the
/// hints' keys, the IdP's discovery URL, the store URL (parsed, never
/// dialled) and the page templates. An error here is one `build_state`
/// would stop at, or (the store URL) one the store would fail on.
///
/// Not covered: whether the IdP answers (and, with `upstream.kind =
/// "ciba"`, has a CIBA endpoint), whether Redis answers, whether
/// `server.bind` is free, and what a `jwks_uri` serves (fetched on use).
pub fn check(settings: &Settings) -> Result<(), StartupError> {
    let tls = settings
        .server
        .tls
        .as_ref()
        .map(server_config)
        .transpose()?;
    let mtls = Mtls::from_settings(&settings.mtls, tls.is_some())?;
    TokenCipher::from_base64(&settings.ciba.token_encryption_key)?;
    let issuer = settings.server.issuer.as_str().trim_end_matches('/');
    Url::parse(&format!("{issuer}{CALLBACK_PATH}"))
        .map_err(|e| ConfigError::new("server.issuer", e.to_string()))?;
    let upstream_http = http_client(
        Duration::from_millis(settings.upstream.timeout_ms),
        Duration::from_millis(settings.upstream.connect_timeout_ms),
    )?;
    let clients = ClientRegistry::from_settings(
        &settings.clients,
        crate::clients::EndpointPolicy::from_settings(&settings.ciba),
        &upstream_http,
    )?;
    needs_ca_for_tls_client_auth(&mtls, &clients)?;
    Hints::from_settings(&settings.hints, &upstream_http)?;
    settings.upstream.discovery_url()?;
    // Reads and checks the channels' key files.
    Channels::from_settings(settings, Arc::new(crate::clock::SystemClock))?;
    // Parses only (and reads the TLS files); the message names no part of
    // the URL (it may hold a password).
    StoreTarget::from_settings(&settings.store)?;
    ClientPinger::new(
        Duration::from_millis(settings.ciba.ping_timeout_ms),
        settings.ciba.private_notification_endpoints_allowed(),
    )?;
    Pages::from_settings(&settings.pages)?;
    if let Some(account) = &settings.account {
        crate::account::check(account, issuer)?;
    }
    Ok(())
}

/// `tls_client_auth` checks certificates against `[mtls] ca`: a client
/// that uses it needs one configured.
fn needs_ca_for_tls_client_auth(mtls: &Mtls, clients: &ClientRegistry) -> Result<(), ConfigError> {
    match clients
        .iter()
        .find(|c| c.auth_method == TokenEndpointAuthMethod::TlsClientAuth)
    {
        Some(c) if !mtls.has_ca() => Err(ConfigError::new(
            "mtls.ca",
            format!("is required: client {} uses tls_client_auth", c.id),
        )),
        _ => Ok(()),
    }
}

/// Everything the handlers share, and the TLS configuration if we terminate TLS.
async fn build_state(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<(AppState, Option<ServerConfig>), StartupError> {
    let tls = settings
        .server
        .tls
        .as_ref()
        .map(server_config)
        .transpose()?;
    let mtls = Mtls::from_settings(&settings.mtls, tls.is_some())?;
    let cipher = TokenCipher::from_base64(&settings.ciba.token_encryption_key)?;
    let issuer = settings
        .server
        .issuer
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let callback = Url::parse(&format!("{issuer}{CALLBACK_PATH}"))
        .map_err(|e| ConfigError::new("server.issuer", e.to_string()))?;
    let upstream_http = http_client(
        Duration::from_millis(settings.upstream.timeout_ms),
        Duration::from_millis(settings.upstream.connect_timeout_ms),
    )?;
    let clients = ClientRegistry::from_settings(
        &settings.clients,
        crate::clients::EndpointPolicy::from_settings(&settings.ciba),
        &upstream_http,
    )?;
    needs_ca_for_tls_client_auth(&mtls, &clients)?;
    let hints = Hints::from_settings(&settings.hints, &upstream_http)?;
    let provider = Arc::new(Provider::new(
        &settings.upstream,
        settings.upstream.discovery_url()?,
        upstream_http,
    ));
    let upstream: Arc<dyn Upstream> = match settings.upstream.kind {
        UpstreamKind::AuthorizationCode => Arc::new(AuthorizationCode::new(
            provider.clone(),
            callback,
            settings.upstream.exchange_attempts,
        )),
        UpstreamKind::Ciba => Arc::new(Ciba::new(
            provider.clone(),
            cipher.clone(),
            &settings.upstream,
        )),
    };
    if settings.upstream.kind == UpstreamKind::Ciba {
        check_upstream_kind(upstream.as_ref()).await?;
    }
    let channels = Channels::from_settings(settings, clock.clone())?;
    let target = StoreTarget::from_settings(&settings.store)?;
    if settings.metrics.bind.is_some() {
        // Installs the process's recorder before anything records.
        crate::metrics::install();
    }
    let Backends {
        store,
        accounts,
        decisions,
    } = crate::store::connect(&target, clock.clone()).await?;
    let store: Arc<dyn Store> = Arc::new(crate::store::Metered(store));
    let pinger = ClientPinger::new(
        Duration::from_millis(settings.ciba.ping_timeout_ms),
        settings.ciba.private_notification_endpoints_allowed(),
    )?;
    let limits = Arc::new(Limits::new(&settings.limits));
    let jobs = Arc::new(Jobs::new(
        store.clone(),
        cipher.clone(),
        clock.clone(),
        settings.worker.clone(),
    ));
    let flow = Arc::new_cyclic(|me| Flow {
        me: me.clone(),
        store: store.clone(),
        accounts,
        limits: limits.clone(),
        jobs,
        upstream: upstream.clone(),
        clients: clients.clone(),
        cipher,
        clock: clock.clone(),
        channels,
        pinger,
        interval: settings.ciba.interval,
        approval_base: format!("{issuer}/approve/"),
        send_authorization_url: settings
            .notifier
            .as_ref()
            .is_none_or(|n| n.send_authorization_url),
        subject_check: settings.upstream.subject_check(),
        history_keep_ms: settings.account.as_ref().map(|a| a.history_ms()),
        code_lifetime_ms: settings.upstream.code_lifetime_secs * 1000,
        long_poll: LongPoll::new(
            Duration::from_secs(settings.ciba.long_poll_secs),
            settings.ciba.long_poll_max_waiting,
        ),
        decisions,
        exchange_lease_secs: exchange_lease_secs(&settings.upstream),
    });
    let account = settings
        .account
        .as_ref()
        .map(|a| {
            crate::account::Account::new(
                a,
                &issuer,
                provider.clone(),
                settings.upstream.exchange_attempts,
                flow.clone(),
                flow.cipher.clone(),
                clock.clone(),
            )
            .map(Arc::new)
        })
        .transpose()?;
    let state = AppState {
        account,
        issuer,
        policy: CibaPolicy {
            expires_in: settings.ciba.expires_in,
            max_expires_in: settings.ciba.max_expires_in,
            interval: settings.ciba.interval,
        },
        clients,
        hints: Arc::new(hints),
        limits,
        mtls: Arc::new(mtls),
        store,
        upstream,
        devices: Arc::new(Devices::new(
            flow.clone(),
            crate::clients::EndpointPolicy::from_settings(&settings.ciba),
        )),
        flow,
        pages: Arc::new(Pages::from_settings(&settings.pages)?),
        clock,
    };
    Ok((state, tls))
}
