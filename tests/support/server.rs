//! The small HTTP servers the test doubles (device, ping receiver) run: one
//! worker on a free loopback port, no signal handling, stopped when dropped.
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

pub struct TestServer {
    pub port: u16,
    handle: ServerHandle,
}

impl TestServer {
    /// Serves `routes` with `data` as shared state.
    pub fn start<T: Send + Sync + 'static>(
        data: Arc<T>,
        routes: fn(&mut web::ServiceConfig),
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let data = web::Data::from(data);
        let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
            .workers(1)
            .disable_signals()
            .listen(listener)?
            .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self { port, handle })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // Best effort: the runtime may already be shutting down.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}
