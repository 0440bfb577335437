//! `make bench`'s floor: the least an actix-web server can do for a CIBA
//! poll on Redis. One handler reads the form body, does one Redis GET
//! (over a `ConnectionManager`, as the proxy's store does) and answers
//! `authorization_pending` as JSON. No parsing, no client authentication,
//! no logging: the poll path's ratio to this is its overhead.
//!
//! Usage: `bench-floor <bind> <redis-url> <key>` (the bench starts it).
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

async fn poll(_body: web::Bytes, floor: web::Data<Floor>) -> HttpResponse {
    let mut conn = floor.conn.clone();
    match conn.get::<_, Option<String>>(&floor.key).await {
        Ok(_) => HttpResponse::BadRequest()
            .insert_header(CacheControl(vec![CacheDirective::NoStore]))
            .json(serde_json::json!({
                "error": "authorization_pending",
                "error_description": "the user has not yet completed the authentication",
            })),
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
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
