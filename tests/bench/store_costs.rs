//! What the store costs beyond one poll, for docs/scaling.md's capacity
//! model: Redis commands and bytes per whole login and per pending poll
//! (on a Redis of the bench's own, so nothing else is counted), what
//! `[store] wait_replicas` adds to a login's writes, and three instances
//! polling one Redis Cluster side by side with one instance on one Redis.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ciba_proxy_e2e::app::{TestApp, CIBA_GRANT};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::redis_cluster::RedisCluster;
use ciba_proxy_e2e::redis_server::RedisServer;

use crate::load::{self, Sample};

/// Redis's own counters: calls per command, and bytes in and out.
#[derive(Default, Clone)]
struct Counters {
    calls: BTreeMap<String, u64>,
    bytes_in: u64,
    bytes_out: u64,
}

impl Counters {
    async fn read(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Self> {
        let mut counters = Counters::default();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(conn)
            .await?;
        for line in stats.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            // The bench's own INFO calls are not the proxy's.
            if name == "info" {
                continue;
            }
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            counters.calls.insert(name.to_owned(), calls);
        }
        let info: String = redis::cmd("INFO").arg("stats").query_async(conn).await?;
        let stat = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        counters.bytes_in = stat("total_net_input_bytes:");
        counters.bytes_out = stat("total_net_output_bytes:");
        Ok(counters)
    }

    /// `self - before`, per `per` units. The `PING`s that keep an idle
    /// worker thread's connection checked are counted apart: they come
    /// with time, not with logins or polls.
    fn since(&self, before: &Counters, per: f64) -> Cost {
        let mut by_command: BTreeMap<String, u64> = BTreeMap::new();
        for (name, n) in &self.calls {
            let delta = n - before.calls.get(name).copied().unwrap_or(0);
            if delta > 0 {
                by_command.insert(name.clone(), delta);
            }
        }
        let pings = by_command.remove("ping").unwrap_or(0);
        let calls: u64 = by_command.values().sum();
        Cost {
            commands: calls as f64 / per,
            bytes_in: (self.bytes_in - before.bytes_in - pings * PING_BYTES.0) as f64 / per,
            bytes_out: (self.bytes_out - before.bytes_out - pings * PING_BYTES.1) as f64 / per,
            pings: pings as f64 / per,
            by_command,
        }
    }
}

/// A `PING` on the wire (`*1\r\n$4\r\nPING\r\n`) and its answer (`+PONG\r\n`).
const PING_BYTES: (u64, u64) = (14, 7);

struct Cost {
    commands: f64,
    bytes_in: f64,
    bytes_out: f64,
    /// Keep-alive `PING`s, not in the figures above.
    pings: f64,
    by_command: BTreeMap<String, u64>,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} commands, {:.0} bytes to Redis, {:.0} bytes back \
             (and {:.1} keep-alive PINGs of idle worker connections)",
            self.commands, self.bytes_in, self.bytes_out, self.pings
        )
    }
}

/// Commands and bytes per login and per pending poll, one instance on a
/// Redis of its own; the idle worker's scans are measured first and taken
/// out.
pub async fn per_login_and_poll() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    // An idle instance at the shipped worker pace (the tests' own is
    // faster): what it costs before any login.
    let idle_for = Duration::from_secs(4);
    let idle = {
        let (_app, _proxy) = TestApp::builder()
            .redis_at(&redis.url())
            .spawn_process(&[("CIBA_PROXY__WORKER__POLL_MS", "250")])
            .await;
        let before = Counters::read(&mut conn).await?;
        tokio::time::sleep(idle_for).await;
        Counters::read(&mut conn)
            .await?
            .since(&before, idle_for.as_secs_f64())
    };
    // Then one whose worker looks for jobs only when its own instance
    // queues one, so what follows counts the logins and polls alone.
    let (app, _proxy) = TestApp::builder()
        .redis_at(&redis.url())
        .ciba(60, 600, 1)
        .spawn_process(&[("CIBA_PROXY__WORKER__POLL_MS", "600000")])
        .await;

    // A whole login: request, notification, sign-in and callback, and the
    // client's polls at the interval until it has the tokens.
    const LOGINS: usize = 5;
    // The simulated device signs in as any user it hears of for the
    // first time.
    let before = Counters::read(&mut conn).await?;
    let mut polls = 0;
    for i in 0..LOGINS {
        let id = app.start("shop", &format!("login{i}")).await;
        loop {
            let reply = app.poll("shop", &id).await;
            polls += 1;
            if reply.status == 200 {
                break;
            }
            anyhow::ensure!(polls < 40 * LOGINS, "no tokens: {reply:?}");
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }
    let login = Counters::read(&mut conn)
        .await?
        .since(&before, LOGINS as f64);

    // Polls of a pending request at the interval (the ordinary case: one
    // round trip reads the request and records the poll), then back to
    // back (`slow_down`: a second round trip raises the interval).
    app.device.on("bob", Action::Ignore);
    let id = app.start("shop", "bob").await;
    app.device.wait_for_notification("bob").await;
    let mut per_poll = Vec::new();
    for (polls, gap) in [(10, Duration::from_millis(1050)), (200, Duration::ZERO)] {
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let before = Counters::read(&mut conn).await?;
        for _ in 0..polls {
            app.poll("shop", &id).await;
            tokio::time::sleep(gap).await;
        }
        per_poll.push(
            Counters::read(&mut conn)
                .await?
                .since(&before, polls as f64),
        );
    }

    println!(
        "\nstore costs (one instance, a Redis of its own; Redis's INFO counters, \
         which count the commands a script runs as well as the script):"
    );
    println!("  idle instance, per second (its worker looking for due jobs): {idle}");
    println!(
        "  per login ({:.1} polls each): {login}",
        polls as f64 / LOGINS as f64
    );
    println!(
        "    commands: {}",
        per_item(&login.by_command, LOGINS as f64)
    );
    for ((name, polls), cost) in [("at the interval", 10.0), ("too fast (slow_down)", 200.0)]
        .into_iter()
        .zip(&per_poll)
    {
        println!("  per pending poll, {name}: {cost}");
        println!("    commands: {}", per_item(&cost.by_command, polls));
    }
    Ok(())
}

fn per_item(calls: &BTreeMap<String, u64>, per: f64) -> String {
    calls
        .iter()
        .map(|(name, n)| format!("{name} {:.1}", *n as f64 / per))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `/bc-authorize` latency on the cluster with `wait_replicas` 0 and 1:
/// WAIT holds the answer until a replica has the request.
pub async fn wait_cost(cluster: &RedisCluster) -> anyhow::Result<()> {
    const REQUESTS: usize = 60;
    println!("\nWAIT on the cluster: /bc-authorize latency, {REQUESTS} requests in a row");
    println!("  wait_replicas |  p50 ms |  p90 ms |  p99 ms");
    for replicas in [0, 1] {
        let app = TestApp::builder()
            .redis_at(&cluster.url())
            .store_toml(&format!(
                "wait_replicas = {replicas}\nwait_timeout_ms = 100"
            ))
            .spawn()
            .await;
        let mut latencies = Vec::with_capacity(REQUESTS);
        // The first WARM_UP are not counted: a replica that has just
        // joined may still be taking its first copy of the data.
        const WARM_UP: usize = 20;
        for i in 0..WARM_UP + REQUESTS {
            let user = format!("wait{replicas}-{i}");
            app.device.on(&user, Action::Ignore);
            let started = Instant::now();
            app.start("shop", &user).await;
            if i >= WARM_UP {
                latencies.push(started.elapsed());
            }
        }
        latencies.sort_unstable();
        let at = |p: f64| {
            latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
        };
        println!(
            "  {replicas:>13} | {:>7.2} | {:>7.2} | {:>7.2}",
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
    Ok(())
}

/// Three `ciba-proxy` processes on the cluster, each polled by its own
/// share of the connections at once; the aggregate and each one's figure.
pub async fn three_instances_on_a_cluster(cluster: &RedisCluster) -> anyhow::Result<()> {
    const INSTANCES: usize = 3;
    const CONNECTIONS_EACH: usize = 12;
    /// Polled on time: each of them less often than its 1 s interval.
    const PENDING: usize = 45_000;
    let turn = Duration::from_secs(4);
    let level = ciba_proxy::configuration::LogSettings::default().level;
    let group = TestApp::builder()
        .redis_at(&cluster.url())
        .ciba(600, 600, 1)
        .spawn_cluster_with_env(
            INSTANCES,
            &[
                ("CIBA_PROXY__SERVER__KEEP_ALIVE_SECS", "30"),
                ("RUST_LOG", &level),
            ],
        )
        .await;
    let app = &group.app;
    let client = &app.clients[0];
    let ids = crate::poll_path::store_pending_requests(
        &cluster.url(),
        &app.prefix,
        &client.client_id,
        PENDING,
    )
    .await?;
    // Each instance polls its own third, as a balancer with sticky
    // connections would send them.
    let thirds: Vec<&[String]> = ids.chunks(PENDING.div_ceil(INSTANCES)).collect();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", client.client_id, client.client_secret)
        )
    );
    let grant =
        percent_encoding::utf8_percent_encode(CIBA_GRANT, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let targets: Vec<(SocketAddr, Vec<Vec<u8>>)> = group
        .processes
        .iter()
        .zip(thirds)
        .map(|(p, ids)| {
            let addr: SocketAddr = p.url.trim_start_matches("http://").parse()?;
            let polls = ids
                .iter()
                .map(|id| {
                    load::form_post(
                        addr,
                        "/token",
                        &basic,
                        &format!("grant_type={grant}&auth_req_id={id}"),
                    )
                })
                .collect();
            anyhow::Ok((addr, polls))
        })
        .collect::<anyhow::Result<_>>()?;
    let samples: Vec<Sample> = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let runs: Vec<_> = targets
                .iter()
                .map(|(addr, polls)| {
                    scope.spawn(move || {
                        load::run(*addr, polls, CONNECTIONS_EACH, Duration::from_secs(1), &[])?;
                        load::run(*addr, polls, CONNECTIONS_EACH, turn, &[])
                    })
                })
                .collect();
            runs.into_iter()
                .map(|run| run.join().expect("a load thread panicked"))
                .collect::<anyhow::Result<Vec<_>>>()
        })
    })
    .await??;
    let total: f64 = samples.iter().map(Sample::per_sec).sum();
    let each: Vec<String> = samples
        .iter()
        .map(|s| format!("{:.0}", s.per_sec()))
        .collect();
    println!(
        "\n{INSTANCES} instances on a Redis Cluster (3 primaries, 3 replicas, all on this machine's cores), \
         {CONNECTIONS_EACH} keep-alive connections each, {PENDING} pending requests polled on time, {}s:",
        turn.as_secs()
    );
    println!(
        "  aggregate {total:.0} polls/s; per instance {} (mean {:.0})",
        each.join(", "),
        total / INSTANCES as f64
    );
    let answers: BTreeMap<String, u64> =
        samples
            .iter()
            .flat_map(|s| s.answers.iter())
            .fold(BTreeMap::new(), |mut all, (k, v)| {
                *all.entry(k.clone()).or_default() += v;
                all
            });
    println!("  answers: {answers:?}");
    Ok(())
}
