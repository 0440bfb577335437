//! Every Redis deployment the proxy speaks to, connected the way the proxy
//! connects (`store::connect` from `[store]` settings): the shared single
//! Redis, the shared cluster, the shared Sentinel group and the shared TLS
//! Redis that requires a client certificate. Each gets a fresh key prefix.
use std::sync::Arc;
use std::time::Duration;

use ciba_proxy::clock::SystemClock;
use ciba_proxy::configuration::StoreSettings;
use ciba_proxy::store::{connect, Backends, StoreTarget};
use secrecy::SecretString;

use crate::app::redis_url;
use crate::pki::TestPki;
use crate::redis_cluster::RedisCluster;
use crate::redis_sentinel::RedisSentinel;
use crate::redis_tls::RedisTls;

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
    let pki = TestPki::shared();
    StoreSettings {
        ca_file: Some(pki.ca_path.clone()),
        client_cert_file: Some(pki.client.cert_path.clone()),
        client_key_file: Some(pki.client.key_path.clone()),
        ..store_settings(&RedisTls::shared_with_client_certs().url())
    }
}

/// Connects as the proxy does.
pub async fn backends_for(settings: &StoreSettings) -> anyhow::Result<Backends> {
    let target = StoreTarget::from_settings(settings).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(connect(&target, Arc::new(SystemClock)).await?)
}

/// (name, backends, key prefix) for the single Redis, the cluster,
/// Sentinel and TLS.
pub async fn shared_redis_backends() -> Vec<(&'static str, Backends, String)> {
    let settings = [
        ("redis", store_settings(&redis_url())),
        ("cluster", store_settings(&RedisCluster::shared().url())),
        ("sentinel", store_settings(&RedisSentinel::shared().url())),
        ("tls", mtls_settings()),
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
