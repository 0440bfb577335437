//! The provider's endpoints, from its discovery document (OpenID Connect
//! Discovery §3, CIBA Core §4).
use serde::Deserialize;

use crate::cli::Config;
use crate::http::{network, reply};
use crate::{codes, note, Failure};

/// The provider's endpoints (OpenID Connect Discovery §3, CIBA Core §4).
#[derive(Debug, Deserialize)]
pub(crate) struct Metadata {
    issuer: String,
    pub(crate) backchannel_authentication_endpoint: String,
    pub(crate) token_endpoint: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

pub(crate) async fn discover(config: &Config) -> Result<Metadata, Failure> {
    let url = format!("{}/.well-known/openid-configuration", config.issuer);
    note(format_args!("discovery: GET {url}"));
    if url.starts_with("http://") && !is_loopback(&config.issuer) {
        note(format_args!(
            "warning: plain http: credentials and tokens travel unencrypted"
        ));
    }
    let response = config
        .http
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(network)?;
    let reply = reply(response).await?;
    if reply.status != 200 {
        return Err(Failure::new(
            codes::DISCOVERY_FAILED,
            format!("HTTP {} from {url}", reply.status),
        ));
    }
    let metadata: Metadata = serde_json::from_value(reply.body).map_err(|e| {
        Failure::new(
            codes::DISCOVERY_FAILED,
            format!("no CIBA endpoints in the discovery document: {e}"),
        )
    })?;
    // OpenID Connect Discovery §4.3: the issuer must be the one asked for.
    if metadata.issuer.trim_end_matches('/') != config.issuer {
        return Err(Failure::new(
            codes::DISCOVERY_FAILED,
            format!(
                "the document names issuer {} instead of {}",
                metadata.issuer, config.issuer
            ),
        ));
    }
    note(format_args!(
        "discovery: backchannel_authentication_endpoint {}",
        metadata.backchannel_authentication_endpoint
    ));
    note(format_args!(
        "discovery: token_endpoint {}",
        metadata.token_endpoint
    ));
    let method = config.auth.method();
    if let Some(methods) = &metadata.token_endpoint_auth_methods_supported {
        if !methods.iter().any(|m| m == method) {
            note(format_args!(
                "warning: the provider does not list {method} among its client authentication methods"
            ));
        }
    }
    Ok(metadata)
}

fn is_loopback(issuer: &str) -> bool {
    url::Url::parse(issuer).is_ok_and(|u| match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_issuers_escape_the_plain_http_warning() {
        assert!(is_loopback("http://127.0.0.1:8080"));
        assert!(is_loopback("http://localhost:8080"));
        assert!(is_loopback("http://[::1]:8080"));
        assert!(!is_loopback("http://op.example"));
    }
}
