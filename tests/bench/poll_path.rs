//! The poll path at the floor: a `ciba-proxy` process at its shipped log
//! level (keep-alive on) against tests/bench_floor.rs, a bare actix-web
//! handler doing one Redis GET, under the same load in the same run: 32
//! keep-alive connections polling pending requests with Basic auth. The
//! two take turns, so a neighbour's burst of work hits both alike. Also
//! Redis bytes per pending request, and that no poll reaches the IdP.
//!
//! Two loads: polls on time (each of many stored requests polled less
//! often than its interval, so the answer is `authorization_pending`, as
//! the floor's), which the goal is about; and a client that polls too fast
//! (50 requests, each polled hundreds of times a second: `slow_down`).
//! Polls on time are also measured against a second floor with a Redis
//! connection per worker thread, as the proxy has: not the goal, but what
//! is left of the proxy's own overhead.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ciba_proxy::configuration::LogSettings;
use ciba_proxy_e2e::app::{redis_url, StoreKind, TestApp, CIBA_GRANT};
use ciba_proxy_e2e::device::Action;

use crate::load::{self, Sample};

const PENDING_REQUESTS: usize = 50;
/// Requests stored for the on-time load, each with a 1 s interval: at the
/// rates measured here each is polled every 1.3 s or more.
const STORED_REQUESTS: usize = 80_000;
const CONNECTIONS: usize = 32;
const WARM_UP: Duration = Duration::from_secs(1);
/// Each side runs ROUNDS turns of TURN, alternating.
const ROUNDS: usize = 3;
const TURN: Duration = Duration::from_secs(3);
const RATIO_GOAL: f64 = 0.8;
const BYTES_GOAL: u64 = 1024;

pub async fn against_the_floor() -> anyhow::Result<()> {
    // Shipped settings (log level, limits), but keep-alive on: the load
    // balancer in front of a real deployment keeps its connections.
    // `BENCH_RUST_LOG` measures another level; a `RUST_LOG` of the caller's
    // own is not passed on.
    let level = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| LogSettings::default().level);
    let (app, proxy) = TestApp::builder()
        .store(StoreKind::Redis)
        .ciba(600, 600, 1)
        .spawn_process(&[
            ("CIBA_PROXY__SERVER__KEEP_ALIVE_SECS", "30"),
            ("RUST_LOG", &level),
        ])
        .await;
    let mut ids = Vec::with_capacity(PENDING_REQUESTS);
    for i in 0..PENDING_REQUESTS {
        let user = format!("user{i}");
        app.device.on(&user, Action::Ignore);
        ids.push(app.start("shop", &user).await);
    }
    // Every notification delivered: what stays in Redis is what a pending
    // request costs while it waits.
    for i in 0..PENDING_REQUESTS {
        app.device.wait_for_notification(&format!("user{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    bytes_per_pending_request(&app.prefix, PENDING_REQUESTS).await?;

    let on_time_ids = store_pending_requests(
        &redis_url(),
        &app.prefix,
        &app.clients[0].client_id,
        STORED_REQUESTS,
    )
    .await?;
    // The floor reads each polled request's own data key.
    let floor_key = format!("{}:{{*}}:dat", app.prefix);
    let floor = Floor::start(&floor_key, false).await?;
    let floor_per_worker = Floor::start(&floor_key, true).await?;
    let proxy_addr: SocketAddr = proxy.url.trim_start_matches("http://").parse()?;
    let client = &app.clients[0];
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", client.client_id, client.client_secret))
    );
    let polls = |addr: SocketAddr, ids: &[String]| -> Vec<Vec<u8>> {
        ids.iter()
            .map(|id| {
                let grant = percent_encoding::utf8_percent_encode(
                    CIBA_GRANT,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                let form = format!("grant_type={grant}&auth_req_id={id}");
                load::form_post(addr, "/token", &basic, &form)
            })
            .collect()
    };

    let idp_before = app.idp.stats().await?.total;
    let log_lines_before = proxy.logs().lines().count();
    println!(
        "poll path at the floor: {CONNECTIONS} keep-alive connections, \
         {ROUNDS} turns of {}s each, alternating; proxy log level {level:?}",
        TURN.as_secs()
    );
    let redis_pid = redis_pid().await.unwrap_or(0);
    let pids = Pids {
        proxy: proxy.pid(),
        floor: floor.child.id(),
        redis: redis_pid,
    };
    let addrs = (proxy_addr, floor.addr);
    let per_worker_addrs = (proxy_addr, floor_per_worker.addr);
    let per_worker_pids = Pids {
        floor: floor_per_worker.child.id(),
        ..pids
    };
    let on_time = (
        polls(proxy_addr, &on_time_ids),
        polls(floor.addr, &on_time_ids),
    );
    let on_time_per_worker = (
        polls(proxy_addr, &on_time_ids),
        polls(floor_per_worker.addr, &on_time_ids),
    );
    let too_fast = (polls(proxy_addr, &ids), polls(floor.addr, &ids));
    let (on_time, on_time_per_worker, too_fast) = tokio::task::spawn_blocking(move || {
        let on_time = turns(addrs, &on_time, pids)?;
        let per_worker = turns(per_worker_addrs, &on_time_per_worker, per_worker_pids)?;
        let too_fast = turns(addrs, &too_fast, pids)?;
        anyhow::Ok((on_time, per_worker, too_fast))
    })
    .await??;
    drop((floor, floor_per_worker));
    let ratio = report(
        &format!("polls on time ({STORED_REQUESTS} requests, interval 1 s)"),
        on_time,
    );
    // Not the goal's floor: what is left of the proxy's overhead once the
    // floor, too, reaches Redis from each worker thread.
    report(
        "polls on time, against a floor with a Redis connection per worker",
        on_time_per_worker,
    );
    report(
        &format!("a client polling too fast ({PENDING_REQUESTS} requests)"),
        too_fast,
    );
    println!(
        "  ratio proxy/floor, polls on time: {ratio:.2} (goal >= {RATIO_GOAL}){}",
        if ratio >= RATIO_GOAL {
            ""
        } else {
            "  BELOW GOAL"
        }
    );
    delete_keys(&format!("{}:*", app.prefix)).await?;
    let idp_during = app.idp.stats().await?.total - idp_before;
    let log_lines = proxy.logs().lines().count() - log_lines_before;

    println!("  proxy log lines while polling: {log_lines}");
    println!("  requests that reached the IdP while polling: {idp_during}");
    anyhow::ensure!(idp_during == 0, "polls reached the IdP");
    drop(proxy);
    Ok(())
}

#[derive(Clone, Copy)]
struct Pids {
    proxy: u32,
    floor: u32,
    redis: u32,
}

/// What one load measured on each side, and the ratio of each round.
struct Turns {
    proxy: Sample,
    floor: Sample,
    ratios: Vec<f64>,
}

/// A warm-up each, then [`ROUNDS`] alternating turns of the same load
/// (`(to the proxy, to the floor)`).
fn turns(
    (proxy_addr, floor_addr): (SocketAddr, SocketAddr),
    (to_proxy, to_floor): &(Vec<Vec<u8>>, Vec<Vec<u8>>),
    pids: Pids,
) -> anyhow::Result<Turns> {
    load::run(floor_addr, to_floor, CONNECTIONS, WARM_UP, &[])?;
    load::run(proxy_addr, to_proxy, CONNECTIONS, WARM_UP, &[])?;
    let (mut proxy, mut floor) = (Sample::default(), Sample::default());
    let mut ratios = Vec::new();
    for _ in 0..ROUNDS {
        let floor_turn = load::run(
            floor_addr,
            to_floor,
            CONNECTIONS,
            TURN,
            &[pids.floor, pids.redis],
        )?;
        let proxy_turn = load::run(
            proxy_addr,
            to_proxy,
            CONNECTIONS,
            TURN,
            &[pids.proxy, pids.redis],
        )?;
        ratios.push(proxy_turn.per_sec() / floor_turn.per_sec());
        floor.add(floor_turn);
        proxy.add(proxy_turn);
    }
    Ok(Turns {
        proxy,
        floor,
        ratios,
    })
}

/// Prints one load's table; answers the overall ratio.
fn report(what: &str, mut turns: Turns) -> f64 {
    println!("  {what}:");
    println!(
        "  side  |  polls/s | p50 ms | p99 ms | CPU µs per poll: server, redis, load | answers"
    );
    for (name, sample) in [("floor", &mut turns.floor), ("proxy", &mut turns.proxy)] {
        let (p50, p99) = (sample.percentile(0.5), sample.percentile(0.99));
        let cpu: Vec<String> = sample
            .cpu_micros_per_poll()
            .iter()
            .map(|c| format!("{c:.0}"))
            .collect();
        println!(
            "  {name} | {:>8.0} | {:>6.2} | {:>6.2} | {:>36} | {:?}",
            sample.per_sec(),
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            cpu.join(", "),
            sample.answers.iter().collect::<BTreeMap<_, _>>()
        );
    }
    let ratio = turns.proxy.per_sec() / turns.floor.per_sec();
    let rounds: Vec<String> = turns.ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "  ratio proxy/floor: {ratio:.2} (per round {})",
        rounds.join(", ")
    );
    ratio
}

/// `count` pending requests of `client_id`, stored as `/bc-authorize`
/// stores them (through the proxy's own store at `url`, under the proxy's
/// prefix), each with a 1 s interval, for polls on time.
pub async fn store_pending_requests(
    url: &str,
    prefix: &str,
    client_id: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    use ciba_proxy::clock::{Clock, SystemClock};
    use ciba_proxy::domain::AuthReqId;
    use ciba_proxy::store::{RedisStore, RequestRecord, Requests, UserLink};
    use futures::StreamExt;

    let store = RedisStore::connect(url, prefix, Duration::from_secs(5)).await?;
    let now = SystemClock.now_ms();
    let records = (0..count).map(|i| RequestRecord {
        id: AuthReqId::generate(),
        client_id: client_id.to_owned(),
        login_hint: format!("stored{i}"),
        scope: "openid".into(),
        created_at_ms: now,
        sealed_upstream: "A".repeat(106),
        // Long enough for the whole run, short enough to go soon after.
        expires_at_ms: now + 120_000,
        interval_secs: 1,
        sealed_ping_token: None,
        binding_message: None,
        user_link: UserLink::FromContext,
    });
    let ids: Vec<anyhow::Result<String>> = futures::stream::iter(records)
        .map(|record| {
            let store = store.clone();
            async move {
                store.create(&record, now).await?;
                anyhow::Ok(record.id.as_str().to_owned())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    ids.into_iter().collect()
}

/// Removes the run's keys: the stored requests would hold Redis memory
/// until they expire.
async fn delete_keys(pattern: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}

/// The local Redis's process id (its CPU time is read from /proc), if
/// it says.
async fn redis_pid() -> anyhow::Result<u32> {
    let mut conn = redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no process_id in INFO"))
}

/// MEMORY USAGE of every key under `prefix`, per request and by kind
/// (the key with its ids and hashes as `*`).
async fn bytes_per_pending_request(prefix: &str, requests: usize) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut kinds: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut total = 0;
    for key in &keys {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        let bytes = bytes.unwrap_or(0);
        total += bytes;
        let kind = kinds.entry(kind_of(&key[prefix.len() + 1..])).or_default();
        kind.0 += 1;
        kind.1 += bytes;
    }
    let per_request = total / requests as u64;
    println!(
        "redis: {per_request} bytes per pending request (goal <= {BYTES_GOAL}{}), {} keys for {requests} requests:",
        if per_request <= BYTES_GOAL { "" } else { ", ABOVE GOAL" },
        keys.len()
    );
    for (kind, (count, bytes)) in kinds {
        println!(
            "  {kind:<32} {count:>4} keys, {:>5} bytes per request",
            bytes / requests as u64
        );
    }
    Ok(())
}

/// A key's shape: ids and hashes (runs of 16 or more id characters with a
/// digit or a capital in them, or of 6 or more digits) become `*`.
fn kind_of(key: &str) -> String {
    let is_id = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let looks_random = |run: &str| {
        let digits = run.chars().filter(char::is_ascii_digit).count();
        (run.len() >= 16 && (digits > 0 || run.chars().any(|c| c.is_ascii_uppercase())))
            || (run.len() >= 6 && digits == run.len())
    };
    let mut kind = String::new();
    let mut run = String::new();
    for c in key.chars().chain(std::iter::once('\0')) {
        if is_id(c) {
            run.push(c);
            continue;
        }
        kind.push_str(if looks_random(&run) { "*" } else { &run });
        run.clear();
        if c != '\0' {
            kind.push(c);
        }
    }
    kind
}

/// The `bench-floor` process (built next to this binary), killed on drop.
struct Floor {
    child: Child,
    addr: SocketAddr,
}

impl Floor {
    /// `per_worker`: a Redis connection per worker thread.
    async fn start(key: &str, per_worker: bool) -> anyhow::Result<Self> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let exe = std::env::current_exe()?.with_file_name("bench-floor");
        anyhow::ensure!(
            exe.exists(),
            "{} is missing: `make bench` builds it",
            exe.display()
        );
        let mut command = Command::new(exe);
        command.arg(addr.to_string()).arg(redis_url()).arg(key);
        if per_worker {
            command.arg("per-worker");
        }
        let child = command.stdout(Stdio::null()).spawn()?;
        let floor = Self { child, addr };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(floor);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("bench-floor did not start on {addr}")
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
