//! The proxy on every Redis deployment it speaks to, with real servers
//! started by the tests (tests/support/redis_{cluster,sentinel,tls}.rs):
//! the whole flow on a Redis Cluster behind three instances, a cluster
//! primary and a Sentinel primary killed mid-flow, scripts flushed under
//! the proxy, and TLS with the right CA, a wrong one and a client
//! certificate. The store contract itself runs per backend in
//! store_contract.rs.
use std::time::Duration;

use ciba_proxy::clock::{Clock, SystemClock};
use ciba_proxy::domain::AuthReqId;
use ciba_proxy::store::{Denial, Outcome, PollOutcome, RequestRecord, Status, UserLink};
use ciba_proxy_e2e::app::{redis_url, TestApp};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::pki::TestPki;
use ciba_proxy_e2e::redis_cluster::RedisCluster;
use ciba_proxy_e2e::redis_deployments::{
    backends_for, decision_heard, mtls_settings, store_settings,
};
use ciba_proxy_e2e::redis_sentinel::RedisSentinel;
use ciba_proxy_e2e::redis_tls::RedisTls;

/// Long enough that a device signs in after the failover it races with
/// (a browser that hit the failover would retry; the test device does
/// not); the webhook timeout and the job lease outlast it, so a webhook in
/// flight is not sent twice.
const ACK: Duration = Duration::from_secs(8);
const WEBHOOK_TIMEOUT: &str = "timeout_ms = 15000";
const LEASE_MS: u64 = 20_000;

use ciba_proxy_e2e::redis_deployments::pending_record as record;

/// Starts `n` logins for `<user>0..<user>{n-1}`, each device answering its
/// webhook slowly; returns (hint, auth_req_id).
async fn start_logins(app: &TestApp, user: &str, n: usize) -> Vec<(String, String)> {
    let mut logins = Vec::new();
    for i in 0..n {
        let hint = format!("{user}{i}");
        app.device.on(&hint, Action::SlowAck(ACK));
        logins.push((hint.clone(), app.start("shop", &hint).await));
    }
    logins
}

/// Every login reaches the device's page and its tokens leave exactly once.
async fn assert_every_login_completes_once(app: &TestApp, logins: &[(String, String)]) {
    for (hint, _) in logins {
        let page = app.device.wait_for_page(hint).await;
        assert_eq!(page.status, 200, "{hint}: {page:?}");
    }
    for (hint, id) in logins {
        // Until decided: an exchange that met the failover is retried in
        // the background (RedeemCode) and decides a little later.
        let reply = app.poll_until_decided("shop", id).await;
        assert_eq!(reply.status, 200, "{hint}: {reply:?}");
        for _ in 0..2 {
            app.poll("shop", id)
                .await
                .assert_error(400, "invalid_grant");
        }
    }
}

#[tokio::test]
async fn the_flow_runs_on_a_cluster_behind_three_instances_and_survives_a_primary_failure() {
    let mut redis = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap()
        .expect("start a Redis Cluster");
    // WAIT for one replica: a login the client was told of is on the
    // replica that takes over (without it, a replica starved of CPU can
    // lag past the kill, which is the window docs/scaling.md describes).
    let cluster = TestApp::builder()
        .redis_at(&redis.url())
        .lease_ms(LEASE_MS)
        .notifier_toml(WEBHOOK_TIMEOUT)
        .store_toml("wait_replicas = 1\nwait_timeout_ms = 1000")
        .spawn_cluster(3)
        .await;
    let app = &cluster.app;
    let logins = start_logins(app, "user", 6).await;
    // The primary holding the first login's keys dies while every login
    // is pending; its replica takes over.
    let victim = redis
        .primary_for(&format!("{{{}}}", logins[0].1))
        .expect("find the primary");
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill(victim);
    redis
        .wait_healthy(Duration::from_secs(30))
        .expect("the replica is promoted");
    assert_every_login_completes_once(app, &logins).await;
    // And new logins work on the promoted node.
    let more = start_logins(app, "later", 2).await;
    assert_every_login_completes_once(app, &more).await;
}

#[tokio::test]
async fn the_proxy_follows_a_new_sentinel_primary_without_a_restart() {
    let mut group = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap()
        .expect("start a Sentinel group");
    let app = TestApp::builder()
        .redis_at(&group.url())
        .lease_ms(LEASE_MS)
        .notifier_toml(WEBHOOK_TIMEOUT)
        .spawn()
        .await;
    let logins = start_logins(&app, "user", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    group.kill_primary();
    // Keep asking while the sentinels agree on the replica: count what a
    // client sees meanwhile.
    let mut unavailable = 0;
    let mut answered = 0;
    for probe in 0.. {
        let hint = format!("probe{probe}");
        app.device.on(&hint, Action::Ignore);
        let reply = app
            .bc_authorize("shop", &[("scope", "openid"), ("login_hint", &hint)])
            .await;
        match reply.status.as_u16() {
            503 => unavailable += 1,
            200 => answered += 1,
            other => panic!("unexpected {other}: {reply:?}"),
        }
        if answered >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    group
        .wait_failover(Duration::from_secs(30))
        .expect("the sentinels promoted the replica");
    println!("sentinel failover: {unavailable} requests got 503 before the proxy followed the new primary");
    assert_every_login_completes_once(&app, &logins).await;
}

/// A raw connection to the shared single Redis.
async fn raw_redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pending_request_s_hash_stays_a_listpack_however_long_its_sealed_values() {
    let settings = store_settings(&redis_url());
    let store = backends_for(&settings).await.expect("connect").store;
    // As long as the real ones: a sealed authorization URL is over 500
    // characters, the sealed upstream context about 200.
    let sealed = |n: usize| "A".repeat(n);
    let r = RequestRecord {
        login_hint: format!("{}@example.com", "a".repeat(80)),
        scope: format!("openid {}", "s".repeat(80)),
        sealed_upstream: sealed(196),
        sealed_ping_token: Some(sealed(88)),
        binding_message: Some("W4SCT".into()),
        user_link: UserLink::Sealed(sealed(544)),
        ..record("c")
    };
    store.create(&r, SystemClock.now_ms()).await.unwrap();
    store.bind_callback(&r.id, &"f".repeat(64)).await.unwrap();
    store.notification(&r.id, Some("sent")).await.unwrap();
    store
        .poll(&r.id, "c", "attempt-1", SystemClock.now_ms())
        .await
        .unwrap();

    let key = format!("{}:{{{}}}:req", settings.key_prefix, r.id);
    let mut conn = raw_redis().await;
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(encoding, "listpack");
    let mut bytes = 0;
    for key in [key, format!("{}:{{{}}}:dat", settings.key_prefix, r.id)] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 60_000, "{key} expires in {ttl} ms");
        let usage: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        bytes += usage;
    }
    // The same fields in one hash, a hashtable, took about 3,000 bytes;
    // apart, about 1,400.
    assert!(bytes < 1800, "{bytes} bytes");
    let (read, status) = store.get(&r.id).await.unwrap().unwrap();
    assert_eq!((read, status), (r, Status::Pending));
}

#[tokio::test]
async fn a_request_written_before_the_data_key_is_still_read_and_decided() {
    let settings = store_settings(&redis_url());
    let store = backends_for(&settings).await.expect("connect").store;
    let r = RequestRecord {
        binding_message: Some("W4SCT".into()),
        user_link: UserLink::Sealed("sealed-link".into()),
        ..record("c")
    };
    // The layout before `:dat` (a rolling upgrade): every field in the
    // hash, '' for what is absent.
    let key = format!("{}:{{{}}}:req", settings.key_prefix, r.id);
    let fields = [
        ("client_id", r.client_id.clone()),
        ("status", "pending".into()),
        ("login_hint", r.login_hint.clone()),
        ("scope", r.scope.clone()),
        ("upstream", r.sealed_upstream.clone()),
        ("created_at", r.created_at_ms.to_string()),
        ("expires_at", r.expires_at_ms.to_string()),
        ("interval", r.interval_secs.to_string()),
        ("ping_token", String::new()),
        ("binding_message", "W4SCT".into()),
        ("link", "sealed-link".into()),
    ];
    let mut conn = raw_redis().await;
    redis::pipe()
        .hset_multiple(&key, &fields)
        .pexpire(&key, 120_000)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    // And its callback `state`, then a key of its own.
    redis::cmd("SET")
        .arg(format!("{}:state:old-state", settings.key_prefix))
        .arg(r.id.as_str())
        .arg("PX")
        .arg(120_000)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    assert_eq!(
        store.get(&r.id).await.unwrap(),
        Some((r.clone(), Status::Pending))
    );
    assert_eq!(
        store.legacy_state_owner("old-state").await.unwrap(),
        Some(r.id.clone())
    );
    assert_eq!(
        store
            .poll(&r.id, "c", "a1", SystemClock.now_ms())
            .await
            .unwrap(),
        PollOutcome::Pending
    );
    let denied = Outcome::Denied {
        reason: "the user said no".into(),
        kind: Denial::Declined,
    };
    assert!(store
        .finish(&r.id, &denied, SystemClock.now_ms())
        .await
        .unwrap());
    assert_eq!(
        store.get(&r.id).await.unwrap(),
        Some((
            r,
            Status::Denied {
                reason: "the user said no".into(),
                kind: Denial::Declined
            }
        ))
    );
}

#[tokio::test]
async fn scripts_flushed_under_the_proxy_are_sent_again() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    let backends = backends_for(&store_settings(&cluster.url()))
        .await
        .expect("connect to the cluster");
    let store = backends.store;
    let r = record("c");
    store.create(&r, SystemClock.now_ms()).await.unwrap();
    let now = SystemClock.now_ms();
    assert_eq!(
        store.poll(&r.id, "c", "a1", now).await.unwrap(),
        PollOutcome::Pending
    );
    // As after a failover to a node that never saw the scripts.
    cluster
        .on_every_primary(&["SCRIPT", "FLUSH"])
        .expect("SCRIPT FLUSH");
    assert_eq!(
        store
            .poll(&r.id, "c", "a2", SystemClock.now_ms())
            .await
            .unwrap(),
        PollOutcome::Pending
    );
    cluster
        .on_every_primary(&["SCRIPT", "FLUSH"])
        .expect("SCRIPT FLUSH");
    assert!(store
        .finish(
            &r.id,
            &ciba_proxy::store::Outcome::Approved {
                sealed_tokens: "t".into()
            },
            SystemClock.now_ms()
        )
        .await
        .unwrap());
}

#[tokio::test]
async fn a_decision_on_one_cluster_node_wakes_long_polls_listening_on_another() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    let settings = store_settings(&cluster.url());
    let announcer = backends_for(&settings).await.expect("connect");
    // The listener's only seed is a node other than the announcer's first.
    let ports = cluster.ports();
    let mut listener_settings = settings.clone();
    listener_settings.url = secrecy::SecretString::from(format!(
        "redis+cluster://127.0.0.1:{}",
        ports[ports.len() - 1]
    ));
    let listener = backends_for(&listener_settings).await.expect("connect");
    assert!(
        decision_heard(&announcer, &listener, Duration::from_secs(20)).await,
        "the decision did not reach the other node's subscriber"
    );
}

#[tokio::test]
async fn rediss_needs_the_right_ca_and_a_client_certificate_where_required() {
    let pki = TestPki::shared();
    let tls = tokio::task::spawn_blocking(RedisTls::shared).await.unwrap();
    // A CA that did not sign the server's certificate.
    let mut wrong = store_settings(&tls.url());
    wrong.ca_file = Some(pki.self_signed.cert_path.clone());
    assert!(
        backends_for(&wrong).await.is_err(),
        "a server certificate from another CA is refused"
    );
    let mut right = store_settings(&tls.url());
    right.ca_file = Some(pki.ca_path.clone());
    let backends = backends_for(&right).await.expect("the right CA works");
    backends.store.ping().await.expect("ping over TLS");

    // The server that requires a client certificate.
    let mtls = tokio::task::spawn_blocking(RedisTls::shared_with_client_certs)
        .await
        .unwrap();
    let mut anonymous = store_settings(&mtls.url());
    anonymous.ca_file = Some(pki.ca_path.clone());
    let refused = match backends_for(&anonymous).await {
        Err(_) => true,
        Ok(b) => b.store.ping().await.is_err(),
    };
    assert!(refused, "no client certificate, no store");
    let backends = backends_for(&mtls_settings())
        .await
        .expect("with the client certificate");
    backends.store.ping().await.expect("ping over mutual TLS");
}

#[tokio::test]
async fn the_flow_runs_over_tls_with_a_client_certificate() {
    let pki = TestPki::shared();
    let mtls = tokio::task::spawn_blocking(RedisTls::shared_with_client_certs)
        .await
        .unwrap();
    let app = TestApp::builder()
        .redis_at(&mtls.url())
        .store_toml(&format!(
            "ca_file = {:?}\nclient_cert_file = {:?}\nclient_key_file = {:?}",
            pki.ca_path, pki.client.cert_path, pki.client.key_path
        ))
        .spawn()
        .await;
    let logins = start_logins(&app, "user", 1).await;
    assert_every_login_completes_once(&app, &logins).await;
}

#[tokio::test]
async fn a_cluster_is_reached_through_any_one_seed_that_answers() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    // Port 1 on loopback: nobody listens there.
    let url = format!(
        "redis+cluster://127.0.0.1:1,127.0.0.1:{}",
        cluster.ports()[2]
    );
    let backends = backends_for(&store_settings(&url))
        .await
        .expect("one live seed is enough");
    backends.store.ping().await.expect("ping");
    let r = record("c");
    backends
        .store
        .create(&r, SystemClock.now_ms())
        .await
        .expect("a write on whichever node holds the slot");
    assert!(backends.store.get(&r.id).await.unwrap().is_some());
}

/// How many times the node on `port` ran WAIT.
fn waits_on(port: u16) -> u64 {
    let mut c = ciba_proxy_e2e::redis_process::connection(port).expect("connect");
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .expect("INFO");
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn with_wait_replicas_a_login_s_writes_wait_for_a_replica_on_its_primary() {
    let group = tokio::task::spawn_blocking(RedisSentinel::shared)
        .await
        .unwrap();
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    for url in [group.url(), cluster.url()] {
        let mut settings = store_settings(&url);
        settings.wait_replicas = 1;
        settings.wait_timeout_ms = 2000;
        let backends = backends_for(&settings).await.expect("connect");
        let r = record("c");
        let primary = if url == group.url() {
            group.primary_port()
        } else {
            cluster
                .primary_for(&format!("{{{}}}", r.id))
                .expect("the primary")
        };
        let before = waits_on(primary);
        backends
            .store
            .create(&r, SystemClock.now_ms())
            .await
            .unwrap();
        assert!(backends
            .store
            .finish(
                &r.id,
                &ciba_proxy::store::Outcome::Denied {
                    reason: "no".into(),
                    kind: ciba_proxy::store::Denial::Declined
                },
                SystemClock.now_ms()
            )
            .await
            .unwrap());
        // Opening and finishing each waited on the request's own primary.
        assert!(waits_on(primary) >= before + 2, "{url}");
    }
}

#[tokio::test]
async fn a_poll_of_an_unknown_id_leaves_nothing_lasting_and_no_request() {
    let settings = store_settings(&redis_url());
    let store = backends_for(&settings).await.expect("connect").store;
    let id = AuthReqId::generate();
    // The pending path writes `last_poll` without a script: for an id that
    // was never stored, that write must expire on its own.
    assert_eq!(
        store
            .poll(&id, "c", "a1", SystemClock.now_ms())
            .await
            .unwrap(),
        PollOutcome::Unknown
    );
    let key = format!("{}:{{{}}}:req", settings.key_prefix, id);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw_redis().await)
        .await
        .unwrap();
    assert!((1..=60_000).contains(&ttl), "{key} expires in {ttl} ms");
    assert_eq!(store.get(&id).await.unwrap(), None);
    // Another client's request: unknown to this one, and unchanged.
    let r = record("owner");
    store.create(&r, SystemClock.now_ms()).await.unwrap();
    assert_eq!(
        store
            .poll(&r.id, "intruder", "a2", SystemClock.now_ms())
            .await
            .unwrap(),
        PollOutcome::Unknown
    );
    assert_eq!(store.get(&r.id).await.unwrap(), Some((r, Status::Pending)));
}
