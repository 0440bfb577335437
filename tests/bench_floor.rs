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
//! Usage: `bench-floor <bind> <redis-url> <key>`: `*` in `<key>` stands
//! for the polled auth_req_id (the bench starts it).
use std::time::Duration;

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::http::KeepAlive;
use actix_web::{web, App, HttpResponse, HttpServer};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

struct Floor {
    conn: ConnectionManager,
    key: String,
}

async fn poll(body: web::Bytes, floor: web::Data<Floor>) -> HttpResponse {
    let mut conn = floor.conn.clone();
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
    let [_, bind, redis_url, key] = args.as_slice() else {
        anyhow::bail!("usage: bench-floor <bind> <redis-url> <key>");
    };
    let conn = ConnectionManager::new(redis::Client::open(redis_url.as_str())?).await?;
    let floor = web::Data::new(Floor {
        conn,
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
