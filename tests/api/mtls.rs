//! RFC 8705 mutual TLS: the proxy terminating TLS itself, and behind a
//! TLS-terminating balancer that forwards the client certificate.
use std::process::Stdio;

use ciba_proxy_e2e::app::{binary_path, ClientSpec, Reply, TestApp, CIBA_GRANT};
use ciba_proxy_e2e::pki::{Issued, TestPki};
use serde_json::Value;

/// An HTTPS client presenting `certificate` (or none).
fn https_client(certificate: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(TestPki::shared().ca_certificate())
        .redirect(reqwest::redirect::Policy::none());
    if let Some(cert) = certificate {
        builder = builder.identity(cert.identity());
    }
    builder.build().unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

async fn tls_app() -> TestApp {
    let pki = TestPki::shared();
    TestApp::builder()
        .https()
        .clients(vec![
            ClientSpec::tls_client_auth("client", "CN=client"),
            ClientSpec::self_signed_tls_client_auth("kiosk", TestPki::x5c_jwks(&pki.self_signed)),
            ClientSpec::basic("shop"),
        ])
        .spawn()
        .await
}

fn bc_form(client_id: &str) -> Vec<(&str, &str)> {
    vec![
        ("client_id", client_id),
        ("scope", "openid"),
        ("login_hint", "alice"),
    ]
}

#[tokio::test]
async fn the_console_client_completes_an_mtls_login_with_a_cn_client_certificate() {
    let app = tls_app().await;
    let pki = TestPki::shared();
    let output = tokio::process::Command::new(binary_path())
        .args(["client", "--issuer", &app.issuer, "--client-id", "client"])
        .arg("--cert")
        .arg(&pki.client.cert_path)
        .arg("--cert-key")
        .arg(&pki.client.key_path)
        .arg("--ca")
        .arg(&pki.ca_path)
        .args(["--login-hint", "alice", "--binding-message", "W4SCT"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let tokens: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        tokens["access_token"].is_string() && tokens["id_token"].is_string(),
        "{tokens}"
    );
}

#[tokio::test]
async fn tls_client_auth_needs_the_cas_certificate_with_the_registered_subject() {
    let app = tls_app().await;
    let pki = TestPki::shared();
    let url = app.url("/bc-authorize");
    let ok = send(
        https_client(Some(&pki.client))
            .post(&url)
            .form(&bc_form("client")),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    for (why, cert) in [
        ("rogue CA", Some(&pki.rogue)),
        ("no certificate", None),
        ("self-signed", Some(&pki.self_signed)),
    ] {
        let reply = send(https_client(cert).post(&url).form(&bc_form("client"))).await;
        assert_eq!(reply.status, 401, "{why}: {reply:?}");
        assert_eq!(reply.error(), "invalid_client", "{why}");
    }
    // The CA's CN=client certificate does not make anyone else "client".
    let reply = send(
        https_client(Some(&pki.client))
            .post(&url)
            .form(&bc_form("kiosk")),
    )
    .await;
    reply.assert_error(401, "invalid_client");
}

#[tokio::test]
async fn self_signed_tls_client_auth_needs_the_registered_certificate() {
    let app = tls_app().await;
    let pki = TestPki::shared();
    let url = app.url("/bc-authorize");
    let ok = send(
        https_client(Some(&pki.self_signed))
            .post(&url)
            .form(&bc_form("kiosk")),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let other = send(
        https_client(Some(&pki.other_self_signed))
            .post(&url)
            .form(&bc_form("kiosk")),
    )
    .await;
    other.assert_error(401, "invalid_client");
}

#[tokio::test]
async fn secret_clients_still_connect_without_a_certificate() {
    let app = tls_app().await;
    let doc = send(https_client(None).get(app.url("/.well-known/openid-configuration"))).await;
    let methods = doc.body["token_endpoint_auth_methods_supported"].to_string();
    assert!(
        methods.contains("\"tls_client_auth\"") && methods.contains("self_signed_tls_client_auth"),
        "{methods}"
    );
    let reply = send(
        https_client(None)
            .post(app.url("/token"))
            .basic_auth("shop", Some("shop-secret"))
            .form(&[("grant_type", CIBA_GRANT), ("auth_req_id", "unknown")]),
    )
    .await;
    reply.assert_error(400, "invalid_grant");
}

/// As nginx's `$ssl_client_escaped_cert`: percent-encoded PEM.
fn escaped(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_certificate_header_authenticates() {
    let pki = TestPki::shared();
    let app = TestApp::builder()
        .clients(vec![ClientSpec::tls_client_auth("client", "CN=client")])
        .sections(&format!(
            "[mtls]\nca = \"{}\"\ntrusted_proxies = [\"127.0.0.1\"]",
            pki.ca_path.display()
        ))
        .spawn()
        .await;
    let url = app.url("/bc-authorize");
    let ok = send(
        app.http
            .post(&url)
            .header("X-Client-Cert", escaped(&pki.client.cert_pem))
            .form(&bc_form("client")),
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let rogue = send(
        app.http
            .post(&url)
            .header("X-Client-Cert", escaped(&pki.rogue.cert_pem))
            .form(&bc_form("client")),
    )
    .await;
    rogue.assert_error(401, "invalid_client");
}

#[tokio::test]
async fn the_certificate_header_is_ignored_from_untrusted_peers() {
    let pki = TestPki::shared();
    let app = TestApp::builder()
        .clients(vec![ClientSpec::tls_client_auth("client", "CN=client")])
        .sections(&format!(
            "[mtls]\nca = \"{}\"\ntrusted_proxies = [\"10.9.8.7\"]",
            pki.ca_path.display()
        ))
        .spawn()
        .await;
    let reply = send(
        app.http
            .post(app.url("/bc-authorize"))
            .header("X-Client-Cert", escaped(&pki.client.cert_pem))
            .form(&bc_form("client")),
    )
    .await;
    reply.assert_error(401, "invalid_client");
}
