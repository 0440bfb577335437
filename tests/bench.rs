//! `make bench`: how many polls per second one proxy process answers from
//! Redis over keep-alive connections, against the floor (a bare actix-web
//! handler doing one Redis GET, tests/bench_floor.rs) in the same run, with
//! latencies, Redis bytes per pending request, and how many polls reach the
//! IdP (none should). Then, in front of an IdP with its own CIBA, how many requests
//! the IdP serves per completed login when the client polls 1, 10 or 100
//! times, against a client that polls the IdP directly (the baseline,
//! measured in the same run). Loopback only; bounded in requests and time.
use std::time::{Duration, Instant};

use ciba_proxy_e2e::app::{StoreKind, TestApp};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::idp::{TestIdp, CIBA_GRANT_TYPE};
use ciba_proxy_e2e::redis_cluster::RedisCluster;

#[path = "bench/load.rs"]
mod load;
#[path = "bench/poll_path.rs"]
mod poll_path;
#[path = "bench/store_costs.rs"]
mod store_costs;

/// How long the user takes to approve in the IdP-load runs.
const APPROVAL: Duration = Duration::from_secs(6);
const POLL_COUNTS: [usize; 3] = [1, 10, 100];

/// With no argument, every part; `bench poll`, `bench store` (per login,
/// WAIT, three instances on a cluster) or `bench idp` (the IdP's load and
/// long polling, counts that a debug build measures as well) runs one.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let part = std::env::args().nth(1);
    let runs = |name: &str| part.is_none() || part.as_deref() == Some(name);
    if runs("poll") {
        poll_path::against_the_floor().await?;
    }
    if runs("store") {
        store_costs::per_login_and_poll().await?;
        let cluster = tokio::task::spawn_blocking(RedisCluster::start).await??;
        store_costs::wait_cost(&cluster).await?;
        store_costs::three_instances_on_a_cluster(&cluster).await?;
    }
    if runs("idp") {
        idp_load().await?;
        long_polling().await?;
    }
    Ok(())
}

/// The IdP's POST /backchannel and POST /token, counted.
async fn idp_requests(idp: &TestIdp) -> anyhow::Result<u64> {
    let stats = idp.stats().await?;
    Ok(stats.count("POST /backchannel") + stats.count("POST /token"))
}

/// One login through the proxy (native CIBA in `delivery`); the client
/// polls `polls` times during the approval, then until it has the tokens.
async fn through_proxy(delivery: &'static str, polls: usize) -> anyhow::Result<u64> {
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start()?));
    let mut builder = TestApp::builder().idp(idp).ciba_upstream(delivery);
    if delivery == "ping" {
        builder = builder.https();
    }
    let app = builder.spawn().await;
    let id = app.start("shop", "alice").await;
    let request = idp
        .wait_ciba_request_of(&app.upstream_clients[0], Duration::from_secs(10))
        .await?;
    let gap = APPROVAL / polls as u32;
    for _ in 0..polls {
        app.poll("shop", &id).await;
        tokio::time::sleep(gap).await;
    }
    idp.approve(&request.id).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = app.poll("shop", &id).await;
        if reply.status == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no tokens: {reply:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    idp_requests(idp).await
}

/// The baseline: the same login with the client polling the IdP itself.
async fn direct(polls: usize) -> anyhow::Result<u64> {
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start()?));
    let client = idp.register_ciba_client("poll", None).await?;
    let http = reqwest::Client::new();
    let post = |path: &str, form: Vec<(&'static str, String)>| {
        http.post(format!("{}{path}", idp.issuer))
            .basic_auth(&client.client_id, Some(&client.client_secret))
            .form(&form)
            .send()
    };
    let ack: serde_json::Value = post(
        "/backchannel",
        vec![("scope", "openid".into()), ("login_hint", "alice".into())],
    )
    .await?
    .json()
    .await?;
    let id = ack["auth_req_id"].as_str().unwrap_or_default().to_owned();
    let token = || {
        post(
            "/token",
            vec![
                ("grant_type", CIBA_GRANT_TYPE.into()),
                ("auth_req_id", id.clone()),
            ],
        )
    };
    let gap = APPROVAL / polls as u32;
    for _ in 0..polls {
        token().await?;
        tokio::time::sleep(gap).await;
    }
    idp.approve(&id).await?;
    anyhow::ensure!(token().await?.status() == 200, "no tokens from the IdP");
    idp_requests(idp).await
}

async fn idp_load() -> anyhow::Result<()> {
    println!(
        "\nidp load: requests at the IdP (backchannel + token) per completed login, {}s approval",
        APPROVAL.as_secs()
    );
    println!("  client polls | direct to IdP | via proxy, poll | via proxy, ping | ratio poll | ratio ping");
    for polls in POLL_COUNTS {
        let (baseline, via_poll, via_ping) = tokio::try_join!(
            direct(polls),
            through_proxy("poll", polls),
            through_proxy("ping", polls)
        )?;
        println!(
            "  {polls:>12} | {baseline:>13} | {via_poll:>15} | {via_ping:>15} | {:>10.2} | {:>10.2}",
            via_poll as f64 / baseline as f64,
            via_ping as f64 / baseline as f64
        );
        anyhow::ensure!(
            via_ping == 2,
            "ping delivery: one backchannel and one token call"
        );
    }
    Ok(())
}

/// One login on a proxy with `long_poll_secs` (0: off): the client polls at
/// the interval (1 s) until it has the tokens; the user approves after
/// [`APPROVAL`]. Returns (polls, time from the decision to the tokens).
async fn one_login(long_poll_secs: u64) -> anyhow::Result<(u32, Duration)> {
    use ciba_proxy_e2e::device::sign_in;
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .ciba(120, 600, 1)
        .ciba_toml(&format!("long_poll_secs = {long_poll_secs}"))
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    let url = notification.authorization_url().to_owned();
    let decided = tokio::spawn(async move {
        tokio::time::sleep(APPROVAL).await;
        sign_in(&url, &Action::SignInAs("alice".into())).await?;
        anyhow::Ok(Instant::now())
    });
    let mut polls = 0;
    let got_tokens = loop {
        let reply = app.poll("shop", &id).await;
        polls += 1;
        if reply.status == 200 {
            break Instant::now();
        }
        anyhow::ensure!(polls < 200, "no tokens: {reply:?}");
        if reply.error() == "authorization_pending" && long_poll_secs == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let decided_at = decided.await??;
    Ok((polls, got_tokens.saturating_duration_since(decided_at)))
}

async fn long_polling() -> anyhow::Result<()> {
    println!(
        "\nlong polling: one login, the user approves after {}s, the client polls at the 1 s interval",
        APPROVAL.as_secs()
    );
    let ((polls_off, wait_off), (polls_on, wait_on)) =
        tokio::try_join!(one_login(0), one_login(20))?;
    println!("  long_poll_secs |  polls per login | decision to tokens");
    println!(
        "               0 | {polls_off:>16} | {:>15.0} ms",
        wait_off.as_secs_f64() * 1000.0
    );
    println!(
        "              20 | {polls_on:>16} | {:>15.0} ms",
        wait_on.as_secs_f64() * 1000.0
    );
    println!(
        "  ratio (on / off): polls {:.2}, decision to tokens {:.2}",
        f64::from(polls_on) / f64::from(polls_off),
        wait_on.as_secs_f64() / wait_off.as_secs_f64().max(0.001)
    );
    Ok(())
}
