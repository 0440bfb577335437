//! The binary refuses a bad configuration with exit status 2 and one line
//! naming the key, before it binds a port.
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use ciba_proxy_e2e::app::binary_path;

const VALID: &str = r#"
[server]
bind = "127.0.0.1:0"
issuer = "http://127.0.0.1:8080"
[ciba]
token_encryption_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
[upstream]
issuer = "http://127.0.0.1:3000"
[notifier]
kind = "webhook"
url = "http://127.0.0.1:9000/notify"
secret = "webhook-secret"
[[clients]]
client_id = "shop"
client_secret = "shop-secret"
token_endpoint_auth_method = "client_secret_basic"
scope = "openid profile"
"#;

/// Runs the binary on `toml` (with `env`), returns (exit code, stderr).
fn run(toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut file = tempfile();
    file.1.write_all(toml.as_bytes()).unwrap();
    let mut cmd = Command::new(binary_path());
    cmd.arg("--config").arg(&file.0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Ports it would bind are never reached on bad configs; a good one would
    // serve forever, so only bad configs are run here.
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tempfile() -> (PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("ciba-proxy-test-{}.toml", rand::random::<u64>()));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

#[track_caller]
fn assert_rejected(toml: &str, env: &[(&str, &str)], key: &str) {
    let (code, stderr) = run(toml, env);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    assert!(stderr.contains(key), "{stderr:?} should name {key}");
}

#[test]
fn unknown_key_is_refused() {
    assert_rejected(
        &VALID.replace("[ciba]", "[ciba]\nintervall = 3"),
        &[],
        "intervall",
    );
}

#[test]
fn missing_key_is_refused() {
    assert_rejected(
        &VALID.replace("secret = \"webhook-secret\"", ""),
        &[],
        "secret",
    );
}

#[test]
fn malformed_url_is_refused() {
    assert_rejected(
        &VALID.replace("http://127.0.0.1:3000", "127.0.0.1:3000"),
        &[],
        "upstream.issuer",
    );
}

#[test]
fn wrong_key_length_is_refused() {
    assert_rejected(
        &VALID.replace("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "c2hvcnQ="),
        &[],
        "ciba.token_encryption_key",
    );
}

#[test]
fn client_without_its_secret_is_refused() {
    assert_rejected(
        &VALID.replace("client_secret = \"shop-secret\"", ""),
        &[],
        "clients[0].client_secret",
    );
}

#[test]
fn symmetric_signing_alg_is_refused() {
    let toml = VALID.replace(
        "scope = \"openid profile\"",
        "scope = \"openid profile\"\nbackchannel_authentication_request_signing_alg = \"HS256\"\njwks = '{\"keys\":[]}'",
    );
    assert_rejected(
        &toml,
        &[],
        "clients[0].backchannel_authentication_request_signing_alg",
    );
}

#[test]
fn environment_overrides_are_applied_and_checked() {
    assert_rejected(
        VALID,
        &[("CIBA_PROXY__STORE__URL", "postgres://db")],
        "store.url",
    );
}
