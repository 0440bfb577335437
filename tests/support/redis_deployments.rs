//! Every Redis deployment the proxy speaks to, connected the way the proxy
//! connects (`store::connect` from `[store]` settings): the shared single
//! Redis, the shared cluster, the shared Sentinel group, the shared TLS
//! Redis that requires a client certificate, and the secured forms: a
//! Sentinel group with ACL users, the same over TLS with client
//! certificates, and a TLS cluster with an ACL user. Each gets a fresh key
//! prefix.
use std::sync::Arc;
use std::time::Duration;

use ciba_proxy::clock::SystemClock;
use ciba_proxy::configuration::StoreSettings;
use ciba_proxy::store::{connect, Backends, StoreTarget};
use secrecy::SecretString;

use crate::app::redis_url;
use crate::pki::TestPki;
use crate::redis_cluster::RedisCluster;
use crate::redis_sentinel::{RedisSentinel, Security, SENTINEL_PASSWORD, SENTINEL_USER};
use crate::redis_tls::RedisTls;

/// A pending request of `client`, as the store tests write it.
pub fn pending_record(client: &str) -> ciba_proxy::store::RequestRecord {
    use ciba_proxy::clock::Clock;
    let now = SystemClock.now_ms();
    ciba_proxy::store::RequestRecord {
        id: ciba_proxy::domain::AuthReqId::generate(),
        client_id: client.into(),
        login_hint: "alice".into(),
        scope: "openid".into(),
        sealed_upstream: "sealed".into(),
        created_at_ms: now,
        expires_at_ms: now + 60_000,
        interval_secs: 0,
        sealed_ping_token: None,
        binding_message: None,
        user_link: ciba_proxy::store::UserLink::None,
    }
}

/// Whether a decision `announcer` announces reaches `listener`'s
/// subscriber within `within`. Until the subscriber is listening, an
/// announcement is lost: it announces until one is heard.
pub async fn decision_heard(announcer: &Backends, listener: &Backends, within: Duration) -> bool {
    let id = ciba_proxy::domain::AuthReqId::generate();
    let watch = listener.decisions.watch(&id);
    let heard = async {
        loop {
            announcer.decisions.announce(&id).await;
            if tokio::time::timeout(Duration::from_millis(200), watch.notify().notified())
                .await
                .is_ok()
            {
                return;
            }
        }
    };
    tokio::time::timeout(within, heard).await.is_ok()
}

/// `[store]` for `url` with a fresh key prefix.
pub fn store_settings(url: &str) -> StoreSettings {
    StoreSettings {
        url: SecretString::from(url.to_owned()),
        key_prefix: format!("contract-{}", rand::random::<u64>()),
        timeout_ms: 2000,
        ..StoreSettings::default()
    }
}

/// `[store]` for the shared TLS Redis that requires a client certificate.
pub fn mtls_settings() -> StoreSettings {
    with_client_certificate(store_settings(&RedisTls::shared_with_client_certs().url()))
}

/// The test PKI's CA and client certificate on `settings`.
fn with_client_certificate(settings: StoreSettings) -> StoreSettings {
    let pki = TestPki::shared();
    StoreSettings {
        ca_file: Some(pki.ca_path.clone()),
        client_cert_file: Some(pki.client.cert_path.clone()),
        client_key_file: Some(pki.client.key_path.clone()),
        ..settings
    }
}

/// `[store]` for a secured Sentinel group: the data nodes' user and
/// password in the URL, the sentinels' in `sentinel_username/_password`,
/// and for a TLS group the CA and the client certificate.
pub fn secured_sentinel_settings(group: &RedisSentinel) -> StoreSettings {
    let settings = StoreSettings {
        sentinel_username: Some(SENTINEL_USER.to_owned()),
        sentinel_password: Some(SecretString::from(SENTINEL_PASSWORD)),
        ..store_settings(&group.url())
    };
    match group.security() {
        Security::TlsAcl => with_client_certificate(settings),
        _ => settings,
    }
}

/// `[store]` for the shared TLS cluster with its ACL user.
pub fn tls_cluster_settings() -> StoreSettings {
    with_client_certificate(store_settings(&RedisCluster::shared_tls().url()))
}

/// Connects as the proxy does.
pub async fn backends_for(settings: &StoreSettings) -> anyhow::Result<Backends> {
    let target = StoreTarget::from_settings(settings).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(connect(&target, Arc::new(SystemClock)).await?)
}

/// Starts every shared deployment at once (each starts once per test
/// binary; together they take as long as the slowest).
async fn start_shared_deployments() {
    let starts: [fn(); 6] = [
        || {
            RedisCluster::shared();
        },
        || {
            RedisCluster::shared_tls();
        },
        || {
            RedisSentinel::shared();
        },
        || {
            RedisSentinel::shared_acl();
        },
        || {
            RedisSentinel::shared_tls();
        },
        || {
            RedisTls::shared_with_client_certs();
        },
    ];
    let started: Vec<_> = starts
        .into_iter()
        .map(tokio::task::spawn_blocking)
        .collect();
    for start in started {
        start.await.expect("start a shared Redis deployment");
    }
}

/// (name, backends, key prefix) for the single Redis, the cluster,
/// Sentinel, TLS, Sentinel with ACL, Sentinel with ACL over TLS and the
/// cluster with ACL over TLS.
pub async fn shared_redis_backends() -> Vec<(&'static str, Backends, String)> {
    start_shared_deployments().await;
    let settings = [
        ("redis", store_settings(&redis_url())),
        ("cluster", store_settings(&RedisCluster::shared().url())),
        ("sentinel", store_settings(&RedisSentinel::shared().url())),
        ("tls", mtls_settings()),
        (
            "sentinel-acl",
            secured_sentinel_settings(RedisSentinel::shared_acl()),
        ),
        (
            "sentinel-tls-acl",
            secured_sentinel_settings(RedisSentinel::shared_tls()),
        ),
        ("cluster-tls-acl", tls_cluster_settings()),
    ];
    let mut all = Vec::new();
    for (name, settings) in settings {
        let backends = tokio::time::timeout(Duration::from_secs(20), backends_for(&settings))
            .await
            .unwrap_or_else(|_| panic!("{name}: connecting took too long"))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        all.push((name, backends, settings.key_prefix));
    }
    all
}
