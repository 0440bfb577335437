//! CIBA Core §10.2 ping: telling a ping-mode client that the result of its
//! request is ready, so it can redeem it at the token endpoint. Unless
//! private endpoints are allowed, a ping goes only to public addresses,
//! checked when its host name is resolved ([`crate::net_policy`]).
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use url::Url;

use crate::net_policy::{self, PublicOnly};
use crate::notifier::{classify, NotifyError};
use crate::upstream::provider::http_client_builder;

pub struct ClientPinger {
    /// Follows no redirect and times out (see `upstream::http_client`);
    /// resolves names through [`PublicOnly`] unless private is allowed.
    http: reqwest::Client,
    /// `ciba.allow_private_notification_endpoints`, or implied.
    allow_private: bool,
}

impl ClientPinger {
    /// `allow_private`: pings may go to loopback, private and link-local
    /// addresses (see `CibaSettings::private_notification_endpoints_allowed`).
    pub fn new(timeout: Duration, allow_private: bool) -> reqwest::Result<Self> {
        let mut builder = http_client_builder(timeout);
        if !allow_private {
            // Through an HTTP(S)_PROXY from the environment the proxy, not
            // PublicOnly, would resolve the client's host: the check would
            // be bypassed.
            builder = builder.dns_resolver(Arc::new(PublicOnly)).no_proxy();
        }
        Ok(Self {
            http: builder.build()?,
            allow_private,
        })
    }

    /// POSTs `{"auth_req_id": ...}` with the client's notification token.
    /// An endpoint that leads to a non-public address is a permanent
    /// failure: retrying cannot make the address public.
    pub async fn ping(
        &self,
        endpoint: &Url,
        token: &str,
        auth_req_id: &str,
    ) -> Result<(), NotifyError> {
        if !self.allow_private {
            // IP literals never reach the resolver; names are checked there.
            net_policy::check_url(endpoint).map_err(|e| NotifyError::Permanent(e.to_string()))?;
        }
        let response = self
            .http
            .post(endpoint.clone())
            .bearer_auth(token)
            .json(&json!({ "auth_req_id": auth_req_id }))
            .send()
            .await
            .map_err(|e| match net_policy::refusal_in(&e) {
                Some(refused) => NotifyError::Permanent(refused.to_string()),
                None => NotifyError::Retryable(e.without_url().to_string()),
            })?;
        classify(response.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ping(allow_private: bool, endpoint: &str) -> Result<(), NotifyError> {
        ClientPinger::new(Duration::from_secs(2), allow_private)
            .unwrap()
            .ping(&Url::parse(endpoint).unwrap(), "token", "id")
            .await
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_for_good() {
        // `localhost` resolves from the hosts file, without DNS; it stands
        // for any name that resolves to a private address at ping time.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let result = ping(false, &format!("http://localhost:{port}/cb")).await;
        match result {
            Err(NotifyError::Permanent(reason)) => {
                assert!(reason.contains("loopback"), "{reason}")
            }
            other => panic!("expected a permanent refusal, got {other:?}"),
        }
        let literal = ping(false, &format!("http://127.0.0.1:{port}/cb")).await;
        assert!(
            matches!(&literal, Err(NotifyError::Permanent(r)) if r.contains("loopback")),
            "{literal:?}"
        );
    }

    /// Runs in its own process (see the test below), as it sets the
    /// environment every client in the process would read.
    #[tokio::test]
    #[ignore = "run by pings_never_go_through_a_proxy_from_the_environment"]
    async fn ping_with_a_proxy_in_the_environment() {
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        proxy.set_nonblocking(true).unwrap();
        let at = format!("http://{}", proxy.local_addr().unwrap());
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
        ] {
            std::env::set_var(var, &at);
        }
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
        // `.invalid` never resolves (RFC 6761): only a proxy could send it.
        let result = ping(false, "http://ping.invalid/cb").await;
        assert!(result.is_err(), "{result:?}");
        assert!(
            proxy.accept().is_err(),
            "the ping went to the proxy from the environment"
        );
    }

    #[test]
    fn pings_never_go_through_a_proxy_from_the_environment() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "ping::tests::ping_with_a_proxy_in_the_environment",
                "--exact",
                "--ignored",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("1 passed"), "{stdout}");
    }

    #[tokio::test]
    async fn with_private_endpoints_allowed_loopback_is_pinged() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        assert!(ping(true, &format!("http://localhost:{port}/cb"))
            .await
            .is_ok());
    }
}
