//! The secured Redis forms of `store.url`, on real servers
//! (tests/support/redis_{sentinel,cluster}.rs): a Sentinel group whose data
//! nodes and sentinels each require their own ACL user, the same group
//! speaking only TLS and requiring a client certificate from sentinels and
//! data nodes alike (`rediss+sentinel://`), and a TLS cluster with an ACL
//! user (`rediss+cluster://`). The store contract runs on all three (see
//! redis_deployments.rs); here: a wrong password or CA is refused and no
//! error or log line repeats a password.
use std::time::Duration;

use ciba_proxy::clock::{Clock, SystemClock};
use ciba_proxy::configuration::StoreSettings;
use ciba_proxy::store::{Backends, RequestRecord, Status};
use ciba_proxy_e2e::app::TestApp;
use ciba_proxy_e2e::pki::TestPki;
use ciba_proxy_e2e::redis_cluster::RedisCluster;
use ciba_proxy_e2e::redis_deployments::{
    backends_for, decision_heard, pending_record, secured_sentinel_settings, tls_cluster_settings,
};
use ciba_proxy_e2e::redis_process::ADMIN_PASSWORD;
use ciba_proxy_e2e::redis_sentinel::{
    RedisSentinel, Security, DATA_PASSWORD, DATA_USER, SENTINEL_PASSWORD, SENTINEL_USER,
};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use secrecy::SecretString;

const WRONG_PASSWORD: &str = "wrong-Pw-6b0d2c";

/// Every password of the fixtures, as given and as the URL encodes it.
fn passwords() -> Vec<String> {
    let mut all = Vec::new();
    for password in [
        WRONG_PASSWORD,
        DATA_PASSWORD,
        SENTINEL_PASSWORD,
        ADMIN_PASSWORD,
    ] {
        all.push(password.to_owned());
        all.push(utf8_percent_encode(password, NON_ALPHANUMERIC).to_string());
    }
    all
}

/// Both shared secured Sentinel groups: with ACL, and with ACL over TLS.
async fn secured_groups() -> [&'static RedisSentinel; 2] {
    let acl = tokio::task::spawn_blocking(RedisSentinel::shared_acl);
    let tls = tokio::task::spawn_blocking(RedisSentinel::shared_tls);
    [acl.await.unwrap(), tls.await.unwrap()]
}

/// Connects as the proxy does, within 20 s.
async fn connect(settings: &StoreSettings) -> anyhow::Result<Backends> {
    tokio::time::timeout(Duration::from_secs(20), backends_for(settings))
        .await
        .map_err(|_| anyhow::anyhow!("connecting took more than 20 s"))?
}

/// Connecting with `settings` is refused, and the error, in every form it
/// could be logged in, names none of the passwords.
/// The refusal's text, checked to repeat no password.
async fn assert_refused_without_repeating_a_password(
    what: &str,
    settings: &StoreSettings,
) -> String {
    let refusal = match connect(settings).await {
        Err(e) => e,
        Ok(backends) => match backends.store.ping().await {
            Err(e) => anyhow::anyhow!("{e:?}"),
            Ok(()) => panic!("{what}: connected"),
        },
    };
    let text = format!("{refusal} | {refusal:#} | {refusal:?}");
    for password in passwords() {
        assert!(!text.contains(&password), "{what}: {text}");
    }
    text
}

async fn assert_connects(what: &str, settings: &StoreSettings) {
    let backends = connect(settings)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    backends
        .store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
}

#[tokio::test]
async fn sentinels_with_acl_refuse_a_wrong_sentinel_password_and_it_is_never_repeated() {
    for group in secured_groups().await {
        let right = secured_sentinel_settings(group);
        let wrong = StoreSettings {
            sentinel_password: Some(SecretString::from(WRONG_PASSWORD)),
            ..right.clone()
        };
        // The error names the setting to fix.
        let sentinels_refused = "the sentinels refused store.sentinel_username";
        let text = assert_refused_without_repeating_a_password(&group.url_as(None), &wrong).await;
        assert!(text.contains(sentinels_refused), "{text}");
        let anonymous = StoreSettings {
            sentinel_username: None,
            sentinel_password: None,
            ..right.clone()
        };
        let text =
            assert_refused_without_repeating_a_password(&group.url_as(None), &anonymous).await;
        assert!(text.contains(sentinels_refused), "{text}");
        assert_connects(&group.url_as(None), &right).await;
    }
}

#[tokio::test]
async fn data_nodes_with_acl_refuse_a_wrong_password_in_the_url_and_it_is_never_repeated() {
    for group in secured_groups().await {
        let right = secured_sentinel_settings(group);
        let wrong = StoreSettings {
            url: SecretString::from(group.url_as(Some((DATA_USER, WRONG_PASSWORD)))),
            ..right.clone()
        };
        let text = assert_refused_without_repeating_a_password(&group.url_as(None), &wrong).await;
        assert!(
            text.contains("the data nodes refused the user and password in store.url"),
            "{text}"
        );
        // The sentinels' user is not the data nodes'.
        let swapped = StoreSettings {
            url: SecretString::from(group.url_as(Some((SENTINEL_USER, SENTINEL_PASSWORD)))),
            ..right.clone()
        };
        assert_refused_without_repeating_a_password(&group.url_as(None), &swapped).await;
    }
}

#[tokio::test]
async fn a_tls_cluster_with_acl_refuses_a_wrong_password_and_it_is_never_repeated() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared_tls)
        .await
        .unwrap();
    let wrong = StoreSettings {
        url: SecretString::from(cluster.url_as(Some((DATA_USER, WRONG_PASSWORD)))),
        ..tls_cluster_settings()
    };
    assert_refused_without_repeating_a_password("rediss+cluster", &wrong).await;
    assert_connects("rediss+cluster", &tls_cluster_settings()).await;
}

#[tokio::test]
async fn rediss_sentinel_and_cluster_refuse_a_certificate_from_another_ca_or_no_client_certificate()
{
    let pki = TestPki::shared();
    let [_, group] = secured_groups().await;
    tokio::task::spawn_blocking(RedisCluster::shared_tls)
        .await
        .unwrap();
    for (what, right) in [
        ("rediss+sentinel", secured_sentinel_settings(group)),
        ("rediss+cluster", tls_cluster_settings()),
    ] {
        // A CA that did not sign the servers' certificate.
        let wrong_ca = StoreSettings {
            ca_file: Some(pki.self_signed.cert_path.clone()),
            ..right.clone()
        };
        assert_refused_without_repeating_a_password(&format!("{what}, wrong CA"), &wrong_ca).await;
        // Sentinels and data nodes all require a client certificate.
        let anonymous = StoreSettings {
            client_cert_file: None,
            client_key_file: None,
            ..right.clone()
        };
        assert_refused_without_repeating_a_password(
            &format!("{what}, no client certificate"),
            &anonymous,
        )
        .await;
        assert_connects(what, &right).await;
    }
}

#[tokio::test]
async fn a_login_completes_on_a_tls_sentinel_group_with_acl_and_no_password_is_logged() {
    let pki = TestPki::shared();
    let [_, group] = secured_groups().await;
    let (app, proxy) = TestApp::builder()
        .redis_at(&group.url())
        .store_toml(&format!(
            "ca_file = {:?}\nclient_cert_file = {:?}\nclient_key_file = {:?}\n\
             sentinel_username = {SENTINEL_USER:?}\nsentinel_password = {SENTINEL_PASSWORD:?}",
            pki.ca_path, pki.client.cert_path, pki.client.key_path
        ))
        .spawn_process(&[("RUST_LOG", "debug")])
        .await;

    let id = app.start("shop", "alice").await;
    let page = app.device.wait_for_page("alice").await;
    assert_eq!(page.status, 200, "{page:?}");
    let reply = app.poll_until_decided("shop", &id).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    app.poll("shop", &id)
        .await
        .assert_error(400, "invalid_grant");

    let logs = proxy.logs();
    assert!(logs.contains("login completed"), "{logs}");
    for password in passwords() {
        assert!(
            !logs.contains(&password),
            "a store password reached the log"
        );
    }
}

#[tokio::test]
async fn a_decision_announced_over_tls_with_acl_reaches_another_instance_s_long_poll() {
    let [_, group] = secured_groups().await;
    tokio::task::spawn_blocking(RedisCluster::shared_tls)
        .await
        .unwrap();
    for (what, settings) in [
        ("rediss+sentinel", secured_sentinel_settings(group)),
        ("rediss+cluster", tls_cluster_settings()),
    ] {
        let announcer = connect(&settings).await.expect(what);
        let listener = connect(&settings).await.expect(what);
        assert!(
            decision_heard(&announcer, &listener, Duration::from_secs(20)).await,
            "{what}: the decision was not heard"
        );
    }
}

fn record() -> RequestRecord {
    pending_record("c")
}

#[tokio::test]
async fn the_store_follows_a_failover_of_a_tls_sentinel_group_with_acl() {
    let mut group = tokio::task::spawn_blocking(|| RedisSentinel::start_with(Security::TlsAcl))
        .await
        .unwrap()
        .expect("start a TLS Sentinel group with ACL");
    let settings = StoreSettings {
        // WAIT for the replica, so the request outlives its primary.
        wait_replicas: 1,
        wait_timeout_ms: 1000,
        ..secured_sentinel_settings(&group)
    };
    let store = connect(&settings).await.expect("connect").store;
    let before = record();
    store.create(&before, SystemClock.now_ms()).await.unwrap();

    group.kill_primary();
    // Kept until the end: dropping the group stops its sentinels.
    let _group = tokio::task::spawn_blocking(move || {
        group
            .wait_failover(Duration::from_secs(30))
            .expect("the sentinels promote the replica");
        group
    })
    .await
    .unwrap();

    // The sentinels (over TLS, as their user) name the new primary; the
    // store reaches it over TLS as the data nodes' user.
    let mut after = record();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Err(e) = store.create(&after, SystemClock.now_ms()).await {
        // A fresh request each time: a failed attempt may have written.
        after = record();
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write reached the new primary within 20 s: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for r in [before, after] {
        assert_eq!(
            store.get(&r.id).await.unwrap(),
            Some((r.clone(), Status::Pending))
        );
    }
}
