//! The operator's server on `[metrics] bind`, never the public port:
//! `/metrics` for Prometheus, its own `/openapi.json` and, with `[admin]`,
//! the admin API (`routes/admin.rs`). Kept out of `startup.rs` on purpose:
//! every route there is public and described in `proxy/openapi.json`;
//! these are described in `proxy/openapi-operator.json`
//! (`tests/api/openapi_operator.rs` checks the routes here against it).
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::routes::{self, admin, admin::AdminToken};
use crate::startup::{method_not_allowed, StartupError};
use crate::state::AppState;

/// Serves the operator routes on `listener`. One worker is plenty for a scrape.
pub fn serve(
    state: AppState,
    admin: Option<AdminToken>,
    listener: TcpListener,
) -> Result<Server, StartupError> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        let app = App::new()
            .app_data(data.clone())
            .service(
                web::resource(routes::metrics::METRICS_PATH)
                    .route(web::get().to(routes::metrics::metrics))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource(routes::OPENAPI_PATH)
                    .route(web::get().to(routes::openapi::operator_openapi))
                    .default_service(method_not_allowed("GET")),
            );
        let Some(token) = admin.clone() else {
            return app;
        };
        app.app_data(web::Data::new(token))
            .service(
                web::resource(admin::ADMIN_REQUESTS_PATH)
                    .route(web::get().to(admin::list))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource(admin::ADMIN_CANCEL_PATH)
                    .route(web::post().to(admin::cancel))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource(admin::ADMIN_REQUEST_PATH)
                    .route(web::get().to(admin::one))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource(admin::ADMIN_CLIENTS_PATH)
                    .route(web::get().to(admin::clients))
                    .default_service(method_not_allowed("GET")),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}
