//! `make bench`: how many polls per second one proxy instance answers from
//! Redis, with what latency, and how many of them reach the IdP (none
//! should). Loopback only; bounded in requests and time.
use std::time::{Duration, Instant};

use ciba_proxy_e2e::app::{StoreKind, TestApp};
use ciba_proxy_e2e::device::Action;

const PENDING_REQUESTS: usize = 50;
const CONCURRENCY: usize = 32;
const DURATION: Duration = Duration::from_secs(10);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .manual_clock()
        .ciba(600, 600, 1)
        .sections("[limits]\nrequests_per_client_per_minute = 0\npending_per_user = 0")
        .spawn()
        .await;
    let mut ids = Vec::with_capacity(PENDING_REQUESTS);
    for i in 0..PENDING_REQUESTS {
        let user = format!("user{i}");
        app.device.on(&user, Action::Ignore);
        ids.push(app.start("shop", &user).await);
    }
    let idp_before = app.idp.stats().await?.total;
    println!(
        "bench: {PENDING_REQUESTS} pending requests, {CONCURRENCY} concurrent pollers, {}s",
        DURATION.as_secs()
    );

    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let app = &app;
        let ids = &ids;
        workers.push(async move {
            let mut latencies = Vec::new();
            let mut answers = std::collections::HashMap::<String, u64>::new();
            let mut i = w;
            while started.elapsed() < DURATION {
                let id = &ids[i % ids.len()];
                let t = Instant::now();
                let reply = app.poll("shop", id).await;
                latencies.push(t.elapsed());
                *answers.entry(reply.error().to_owned()).or_default() += 1;
                i += CONCURRENCY;
            }
            (latencies, answers)
        });
    }
    let results = futures::future::join_all(workers).await;
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    latencies.sort_unstable();
    let mut answers = std::collections::HashMap::<String, u64>::new();
    for (_, a) in &results {
        for (k, v) in a {
            *answers.entry(k.clone()).or_default() += v;
        }
    }
    let polls = latencies.len();
    let idp_during = app.idp.stats().await?.total - idp_before;
    println!(
        "polls: {polls} in {:.1}s = {:.0} polls/s",
        elapsed.as_secs_f64(),
        polls as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    println!("answers: {answers:?}");
    println!("requests that reached the IdP while polling: {idp_during}");
    anyhow::ensure!(idp_during == 0, "polls reached the IdP");
    Ok(())
}
