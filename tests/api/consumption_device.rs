//! `ciba-proxy client`, the console consumption device, run as the real
//! binary against an in-process proxy whose simulated device answers.
use std::process::Output;
use std::time::Duration;

use ciba_proxy_e2e::app::{binary_path, ClientSpec, TestApp};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::keys::CLIENT_PS256;
use serde_json::Value;

const PS256_PEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/support/keys/client-ps256.pem");

/// Runs `ciba-proxy client ARGS` with `env`; (exit code, stdout, stderr).
async fn client(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(binary_path());
    cmd.arg("client")
        .args(args)
        .env_remove("CIBA_CLIENT_SECRET")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the client finishes within a minute")
        .expect("run ciba-proxy client");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn shop_args(app: &TestApp) -> Vec<&str> {
    vec![
        "--issuer",
        &app.issuer,
        "--client-id",
        "shop",
        "--client-secret",
        "shop-secret",
        "--login-hint",
        "alice",
        "--binding-message",
        "W4SCT",
    ]
}

/// Asserts a successful run: tokens on stdout only, no secret on stderr.
#[track_caller]
fn assert_tokens(code: Option<i32>, stdout: &str, stderr: &str, secret: &str) -> Value {
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let tokens: Value = serde_json::from_str(stdout.trim()).expect("stdout is the token JSON");
    let access_token = tokens["access_token"].as_str().expect("access_token");
    let id_token = tokens["id_token"].as_str().expect("id_token");
    assert!(stderr.contains("tokens issued"), "{stderr}");
    for hidden in [secret, access_token, id_token] {
        assert!(!stderr.contains(hidden), "stderr shows a secret: {stderr}");
    }
    tokens
}

#[tokio::test]
async fn the_client_gets_tokens_once_the_user_signs_in() {
    let app = TestApp::spawn().await;

    let (code, stdout, stderr) = client(&shop_args(&app), &[]).await;

    assert_tokens(code, &stdout, &stderr, "shop-secret");
    assert!(
        stderr.contains("backchannel_authentication_endpoint"),
        "{stderr}"
    );
    assert!(stderr.contains("auth_req_id"), "{stderr}");
    let notification = app.device.wait_for_notification("alice").await;
    assert_eq!(notification.body["binding_message"], "W4SCT");
}

#[tokio::test]
async fn the_client_reports_access_denied_when_the_user_cancels() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::Cancel);

    let (code, stdout, stderr) = client(&shop_args(&app), &[]).await;

    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("error: access_denied: "), "{stderr}");
}

#[tokio::test]
async fn the_client_keeps_polling_while_the_user_has_not_answered() {
    let app = TestApp::spawn().await;
    // The push gateway is slow: the first poll (after 1 s) finds nothing yet.
    app.device
        .on("alice", Action::SlowAck(Duration::from_millis(1500)));

    let (code, stdout, stderr) = client(&shop_args(&app), &[]).await;

    assert_tokens(code, &stdout, &stderr, "shop-secret");
    assert!(stderr.contains("poll 1: authorization_pending"), "{stderr}");
}

#[tokio::test]
async fn max_wait_caps_the_time_spent_waiting_for_the_user() {
    let app = TestApp::spawn().await;
    app.device.on("alice", Action::Ignore);
    let mut args = shop_args(&app);
    args.extend(["--max-wait", "2"]);

    let started = std::time::Instant::now();
    let (code, stdout, stderr) = client(&args, &[]).await;

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("error: timeout: "), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn the_client_signs_its_request_for_a_signing_client() {
    let app = TestApp::builder()
        .clients(vec![
            ClientSpec::basic("bank").signing("PS256", CLIENT_PS256.jwks())
        ])
        .spawn()
        .await;

    // The secret comes from the environment, out of the process list.
    let (code, stdout, stderr) = client(
        &[
            "--issuer",
            &app.issuer,
            "--client-id",
            "bank",
            "--sign-request",
            "--private-key",
            PS256_PEM,
            "--key-id",
            CLIENT_PS256.kid,
            "--login-hint",
            "alice",
            "--binding-message",
            "W4SCT",
            "--requested-expiry",
            "90",
        ],
        &[("CIBA_CLIENT_SECRET", "bank-secret")],
    )
    .await;

    assert_tokens(code, &stdout, &stderr, "bank-secret");
    assert!(stderr.contains("signed request object"), "{stderr}");
    let notification = app.device.wait_for_notification("alice").await;
    assert_eq!(notification.body["binding_message"], "W4SCT");
}

#[tokio::test]
async fn a_wrong_secret_is_reported_as_invalid_client() {
    let app = TestApp::spawn().await;
    let mut args = shop_args(&app);
    args[5] = "not-the-secret";

    let (code, _, stderr) = client(&args, &[]).await;

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("error: invalid_client: "), "{stderr}");
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
}

#[tokio::test]
async fn usage_errors_exit_2_before_any_request() {
    // No client authentication at all.
    let (code, _, stderr) = client(
        &[
            "--issuer",
            "http://127.0.0.1:9",
            "--client-id",
            "shop",
            "--login-hint",
            "alice",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no client authentication"), "{stderr}");
    // --sign-request without a key.
    let (code, _, stderr) = client(
        &[
            "--issuer",
            "http://127.0.0.1:9",
            "--client-id",
            "shop",
            "--client-secret",
            "s",
            "--login-hint",
            "alice",
            "--sign-request",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--private-key"), "{stderr}");
}
