//! Each thread that runs a single-threaded runtime (an actix worker) has a
//! Redis connection of its own (proxy/src/store/per_thread.rs). What that
//! must not break: a store used again after the runtime that opened a
//! thread's connection stopped, and `WAIT`, which counts only the writes
//! of the connection it is sent on.
use std::time::{Duration, Instant};

use ciba_proxy::clock::{Clock, SystemClock};
use ciba_proxy::store::Status;
use ciba_proxy_e2e::app::redis_url;
use ciba_proxy_e2e::redis_cluster::RedisCluster;
use ciba_proxy_e2e::redis_deployments::{backends_for, pending_record as record, store_settings};
use ciba_proxy_e2e::redis_process::{free_port, node_config, temp_dir, Access, Process};
use ciba_proxy_e2e::redis_sentinel::RedisSentinel;
use ciba_proxy_e2e::redis_server::RedisServer;

/// Runs `work` on a thread of its own, in a single-threaded runtime that
/// stops when `work` is done.
fn on_a_worker_like_thread<T: Send + 'static>(
    work: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        work(&runtime)
    })
    .join()
    .expect("the thread finished")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_still_works_on_a_thread_whose_earlier_runtime_stopped() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    let group = tokio::task::spawn_blocking(RedisSentinel::shared)
        .await
        .unwrap();
    for url in [redis_url(), cluster.url(), group.url()] {
        let store = backends_for(&store_settings(&url))
            .await
            .expect("connect")
            .store;
        let r = record("c");
        let found = std::thread::spawn({
            let (store, r) = (store.clone(), r.clone());
            move || {
                // A runtime opens this thread's connection, then stops:
                // the connection's driver stops with it.
                let first = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                first
                    .block_on(store.create(&r, SystemClock.now_ms()))
                    .expect("create");
                drop(first);
                let next = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                next.block_on(store.get(&r.id))
            }
        })
        .join()
        .unwrap();
        assert_eq!(
            found.expect("the next runtime reaches Redis"),
            Some((r, Status::Pending)),
            "{url}"
        );
    }
}

/// A primary and its replica of our own: the test stops the replica.
struct Pair {
    primary: Process,
    replica: Process,
}

impl Pair {
    fn start() -> anyhow::Result<Pair> {
        let dir = temp_dir("pair");
        let node = |port: u16, primary: Option<u16>| -> anyhow::Result<Process> {
            let mut conf = node_config(port, false, false);
            if let Some(primary) = primary {
                conf.push_str(&format!("replicaof 127.0.0.1 {primary}\n"));
            }
            let path = dir.join(format!("node-{port}.conf"));
            std::fs::write(&path, conf)?;
            Process::spawn(&dir, port, &[path.display().to_string()])
        };
        let primary = node(free_port()?, None)?;
        let replica = node(free_port()?, Some(primary.port))?;
        Access::default().wait_in_sync(replica.port)?;
        Ok(Pair { primary, replica })
    }

    fn signal_replica(&self, signal: &str) {
        let pid = self.replica.pid().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_replicas_waits_for_the_writes_of_a_thread_s_own_connection() {
    let pair = tokio::task::spawn_blocking(Pair::start)
        .await
        .unwrap()
        .expect("start a primary and a replica");
    let mut settings = store_settings(&format!("redis://127.0.0.1:{}", pair.primary.port));
    settings.wait_replicas = 1;
    settings.wait_timeout_ms = 1500;
    let store = backends_for(&settings).await.expect("connect").store;
    // A replica that acknowledges nothing: a WAIT for it times out, unless
    // it was sent on a connection that wrote nothing (that WAIT answers at
    // once).
    pair.signal_replica("-STOP");
    let took = on_a_worker_like_thread(move |runtime| {
        let started = Instant::now();
        runtime
            .block_on(store.create(&record("c"), SystemClock.now_ms()))
            .expect("create");
        started.elapsed()
    });
    pair.signal_replica("-CONT");
    assert!(
        took >= Duration::from_millis(1500),
        "the request's writes waited {took:?} for a replica that acknowledged nothing"
    );
    drop(pair);
}

/// How many `PING`s the Redis on `url` has answered.
async fn pings(url: &str) -> u64 {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_thread_s_connection_is_pinged_while_its_store_lives_and_not_after() {
    let redis = RedisServer::start().await.expect("a private redis-server");
    let url = redis.url();
    let counted = {
        let url = url.clone();
        move || {
            let url = url.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(pings(&url))
            })
            .join()
            .unwrap()
        }
    };
    let store = backends_for(&store_settings(&url))
        .await
        .expect("connect")
        .store;
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            // This thread's connection opens, then sits idle.
            store.ping().await.expect("ping");
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(store);
            dropped_tx.send(()).unwrap();
            // The runtime runs on: only the store is gone.
            while done_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    let before = counted();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let while_alive = counted() - before;
    assert!(
        while_alive >= 2,
        "an idle connection got {while_alive} PINGs in 1.5 s"
    );
    tokio::task::spawn_blocking(move || dropped_rx.recv().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after_drop = counted();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        counted(),
        after_drop,
        "PINGs went on after the store was dropped"
    );
    done_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || worker.join().unwrap())
        .await
        .unwrap();
}
