//! `make bench`'s floor: the least an actix-web server can do for a CIBA
//! poll on Redis. One handler reads the form body, does one Redis GET
//! (over a `ConnectionManager`, as the proxy's store does) of the polled
//! request's own key, and answers `authorization_pending` as JSON. No
//! parsing beyond finding `auth_req_id=`, no client authentication, no
//! logging: the poll path's ratio to this is its overhead. Reading the
//! request's own key, not one hot key, gives both sides the same Redis
//! working set: with many requests in flight, most of a poll's Redis time
//! is fetching that request's memory.
//!
//! With `per-worker`, each worker thread opens a Redis connection of its
//! own, as the proxy does (proxy/src/store/per_thread.rs): that floor says
//! how much of the proxy's overhead is left once neither side hops threads
//! to reach Redis.
//!
//! Usage: `bench-floor <bind> <redis-url> <key> [per-worker]`: `*` in
//! `<key>` stands for the polled auth_req_id (the bench starts it).
use std::cell::RefCell;
use std::time::Duration;

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::http::KeepAlive;
use actix_web::{web, App, HttpResponse, HttpServer};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

struct Floor {
    conn: ConnectionManager,
    client: redis::Client,
    per_worker: bool,
    key: String,
}

thread_local! {
    static WORKER_CONN: RefCell<Option<ConnectionManager>> = const { RefCell::new(None) };
}

impl Floor {
    async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        if !self.per_worker {
            return Ok(self.conn.clone());
        }
        if let Some(conn) = WORKER_CONN.with(|c| c.borrow().clone()) {
            return Ok(conn);
        }
        let conn = ConnectionManager::new(self.client.clone()).await?;
        WORKER_CONN.with(|c| *c.borrow_mut() = Some(conn.clone()));
        Ok(conn)
    }
}

async fn poll(body: web::Bytes, floor: web::Data<Floor>) -> HttpResponse {
    let Ok(mut conn) = floor.conn().await else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    let key = match auth_req_id(&body) {
        Some(id) => floor.key.replace('*', id),
        None => floor.key.clone(),
    };
    match conn.get::<_, Option<Vec<u8>>>(&key).await {
        Ok(_) => HttpResponse::BadRequest()
            .insert_header(CacheControl(vec![CacheDirective::NoStore]))
            .json(serde_json::json!({
                "error": "authorization_pending",
                "error_description": "the user has not yet completed the authentication",
            })),
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

/// The `auth_req_id` form value (ids need no percent-decoding).
fn auth_req_id(body: &[u8]) -> Option<&str> {
    let body = std::str::from_utf8(body).ok()?;
    let start = body.find("auth_req_id=")? + "auth_req_id=".len();
    let rest = &body[start..];
    Some(&rest[..rest.find('&').unwrap_or(rest.len())])
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (bind, redis_url, key, per_worker) = match args.as_slice() {
        [_, bind, redis_url, key] => (bind, redis_url, key, false),
        [_, bind, redis_url, key, mode] if mode == "per-worker" => (bind, redis_url, key, true),
        _ => anyhow::bail!("usage: bench-floor <bind> <redis-url> <key> [per-worker]"),
    };
    let client = redis::Client::open(redis_url.as_str())?;
    let conn = ConnectionManager::new(client.clone()).await?;
    let floor = web::Data::new(Floor {
        conn,
        client,
        per_worker,
        key: key.clone(),
    });
    // The proxy's worker count (startup.rs), so both serve on the same threads.
    let workers = std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .clamp(1, 512);
    HttpServer::new(move || {
        App::new()
            .app_data(floor.clone())
            .route("/token", web::post().to(poll))
    })
    .workers(workers)
    .keep_alive(KeepAlive::Timeout(Duration::from_secs(30)))
    .bind(bind.as_str())?
    .run()
    .await?;
    Ok(())
}
