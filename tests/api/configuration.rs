//! The binary refuses a bad configuration with exit status 2 and one line
//! naming the key, before it binds a port.
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use ciba_proxy_e2e::app::binary_path;

/// A valid configuration (also the base of tests/api/channels.rs).
pub(crate) const VALID: &str = r#"
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
pub(crate) fn run(toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
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

/// VALID with the client in ping mode, notified at `endpoint`.
fn ping_client_at(endpoint: &str) -> String {
    VALID.replace(
        "scope = \"openid profile\"",
        &format!("scope = \"openid profile\"\nbackchannel_token_delivery_mode = \"ping\"\nbackchannel_client_notification_endpoint = \"{endpoint}\""),
    )
}

#[test]
fn ping_endpoints_on_private_addresses_are_refused() {
    for endpoint in [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/cb",
        "https://[fd00::1]/cb",
        "https://[::ffff:127.0.0.1]/cb",
        "https://localhost:8443/cb",
        // Other spellings of 127.0.0.1.
        "https://2130706433/cb",
        "https://0x7f.0.0.1/cb",
        "https://0177.0.0.1/cb",
    ] {
        let (code, stderr) = run(&ping_client_at(endpoint), &[]);
        assert_eq!(code, Some(2), "{endpoint}: {stderr}");
        assert!(
            stderr.contains("clients[0].backchannel_client_notification_endpoint")
                && stderr.contains("allow_private_notification_endpoints"),
            "{endpoint}: {stderr:?}"
        );
    }
}

#[test]
fn allowing_private_ping_endpoints_lets_the_registration_through() {
    // A second client with an empty id fails instead, which shows the first
    // one's endpoint was accepted; a good configuration would start serving.
    let broken = "\n[[clients]]\nclient_id = \"\"\nclient_secret = \"s\"\ntoken_endpoint_auth_method = \"client_secret_basic\"\nscope = \"openid\"\n";
    let toml = format!("{}{broken}", ping_client_at("https://10.1.2.3/cb"));
    assert_rejected(
        &toml,
        &[],
        "clients[0].backchannel_client_notification_endpoint",
    );
    let allowed = toml.replace(
        "[ciba]",
        "[ciba]\nallow_private_notification_endpoints = true",
    );
    assert_rejected(&allowed, &[], "clients[1].client_id");
    // The development switch implies it (loopback test setups).
    let http = toml
        .replace("https://10.1.2.3/cb", "http://127.0.0.1:9000/cb")
        .replace("[ciba]", "[ciba]\nallow_http_notification_endpoints = true");
    assert_rejected(&http, &[], "clients[1].client_id");
}

/// Runs `ciba-proxy ARGS`; (exit code, stdout, stderr).
fn run_args(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(binary_path())
        .args(args)
        .env_remove("CIBA_PROXY_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `ciba-proxy check --config FILE` on `toml`; (exit code, stdout, stderr).
fn check(toml: &str) -> (Option<i32>, String, String) {
    let mut file = tempfile();
    file.1.write_all(toml.as_bytes()).unwrap();
    run_args(&["check".as_ref(), "--config".as_ref(), file.0.as_os_str()])
}

#[track_caller]
fn assert_check_refuses(toml: &str, key: &str) {
    let (code, stdout, stderr) = check(toml);
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    assert!(stderr.contains(key), "{stderr:?} should name {key}");
}

/// The `version` of proxy/Cargo.toml's `[package]`.
fn proxy_version() -> String {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../proxy/Cargo.toml"))
            .unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a version line")
        .to_owned()
}

#[test]
fn version_prints_the_crate_version() {
    let (code, stdout, stderr) = run_args(&["--version".as_ref()]);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), format!("ciba-proxy {}", proxy_version()));
}

#[test]
fn check_accepts_a_valid_configuration_without_calling_the_idp_or_the_store() {
    // An IdP and a Redis that would notice a connection, and the port the
    // proxy would serve on already taken: check must touch none of them.
    let idp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for listener in [&idp, &redis] {
        listener.set_nonblocking(true).unwrap();
    }
    // kind = "ciba" is the kind whose startup asks the IdP for its metadata.
    let toml = format!(
        "[store]\nurl = \"redis://{}\"\n{}",
        redis.local_addr().unwrap(),
        VALID
            .replace(
                "issuer = \"http://127.0.0.1:3000\"",
                &format!(
                    "issuer = \"http://{}\"\nkind = \"ciba\"",
                    idp.local_addr().unwrap()
                ),
            )
            .replace(
                "bind = \"127.0.0.1:0\"",
                &format!("bind = \"{}\"", taken.local_addr().unwrap()),
            )
    );

    let (code, stdout, stderr) = check(&toml);

    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.trim(), "configuration OK");
    assert!(stderr.is_empty(), "{stderr}");
    for (name, listener) in [("the IdP", &idp), ("Redis", &redis)] {
        let accepted = listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "check connected to {name}: {accepted:?}"
        );
    }
}

#[test]
fn check_refuses_what_only_startup_would_find_naming_the_key() {
    // Each of these passes the settings parser; only building the service
    // from them fails, which is what check does short of the network.
    let templates = std::env::temp_dir().join(format!("ciba-templates-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("base.html"), "{% if %}broken").unwrap();
    let cases = [
        (
            format!("{VALID}\n[pages]\ntemplates_dir = {:?}\n", templates),
            "pages.templates_dir",
        ),
        (
            VALID.replace(
                "issuer = \"http://127.0.0.1:8080\"",
                "issuer = \"http://127.0.0.1:8080\"\n[server.tls]\ncertificate = \"/nonexistent/cert.pem\"\nprivate_key = \"/nonexistent/key.pem\"",
            ),
            "server.tls.certificate",
        ),
        (
            VALID.replace(
                "scope = \"openid profile\"",
                "scope = \"openid profile\"\njwks = '{\"keys\": \"not a list\"}'",
            ),
            "clients[0].jwks",
        ),
        (
            format!("[store]\nurl = \"redis://127.0.0.1:6379/not-a-db\"\n{VALID}"),
            "store.url",
        ),
        (
            VALID.replace("token_endpoint_auth_method = \"client_secret_basic\"", "token_endpoint_auth_method = \"tls_client_auth\"\ntls_client_auth_subject_dn = \"CN=shop\""),
            "mtls.ca",
        ),
    ];
    for (toml, key) in cases {
        assert_check_refuses(&toml, key);
    }
}

#[test]
fn check_refuses_a_configuration_that_does_not_parse() {
    assert_check_refuses(
        &VALID.replace("[ciba]", "[ciba]\nintervall = 3"),
        "intervall",
    );
}

#[test]
fn check_without_a_configuration_file_is_a_usage_error() {
    let (code, stdout, stderr) = run_args(&["check".as_ref()]);

    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--config"), "{stderr}");
}

#[test]
fn a_store_timeout_shorter_than_the_confirm_window_is_refused() {
    // Shorter, a poll answered 503 could still delete its tokens late.
    let toml = format!("{VALID}\n[store]\ntimeout_ms = 500\n");
    assert_rejected(&toml, &[], "store.timeout_ms");
    let (_, stdout, stderr) = check(&format!("{VALID}\n[store]\ntimeout_ms = 2000\n"));
    assert!(!stderr.contains("store.timeout_ms"), "{stdout}{stderr}");
}

#[test]
fn admin_without_a_metrics_bind_is_refused() {
    let toml = format!("{VALID}\n[admin]\ntoken_sha256 = \"{}\"\n", "ab".repeat(32));
    assert_rejected(&toml, &[], "metrics.bind");
}

#[test]
fn an_admin_token_hash_that_is_not_64_hex_digits_is_refused() {
    let toml = format!(
        "{VALID}\n[metrics]\nbind = \"127.0.0.1:0\"\n[admin]\ntoken_sha256 = \"not-a-hash\"\n"
    );
    assert_rejected(&toml, &[], "admin.token_sha256");
}

#[test]
fn check_refuses_a_bad_account_section_naming_the_key() {
    let account = |keys: &str| {
        format!(
            "{VALID}\n[account]\nupstream_client_id = \"ciba-proxy-account\"\nupstream_client_secret = \"s\"\n{keys}\n"
        )
    };
    let (code, _, stderr) = check(&account(""));
    assert_eq!(code, Some(0), "{stderr}");
    for (keys, key) in [
        ("", "account.upstream_client_secret"),
        ("scope = \"email\"", "account.scope"),
        ("history_days = 0", "account.history_days"),
        ("challenge_ttl_secs = 0", "account.challenge_ttl_secs"),
        ("session_secs = 5", "account.session_secs"),
        ("sesion_secs = 600", "sesion_secs"),
    ] {
        let toml = if key == "account.upstream_client_secret" {
            account("").replace(
                "upstream_client_secret = \"s\"",
                "upstream_client_secret = \"\"",
            )
        } else {
            account(keys)
        };
        assert_check_refuses(&toml, key);
    }
    let no_id = account("").replace(
        "upstream_client_id = \"ciba-proxy-account\"",
        "upstream_client_id = \"\"",
    );
    assert_check_refuses(&no_id, "account.upstream_client_id");
}

#[test]
fn store_urls_that_cannot_work_are_refused_without_their_password() {
    for url in [
        // A cluster has only database 0.
        "redis+cluster://app:hunter2@127.0.0.1:7000,127.0.0.1:7001/0",
        "redis+sentinel://app:hunter2@127.0.0.1:26379",
        "redis://app:hunter2@127.0.0.1:6379,127.0.0.1:6380",
        "mysql://app:hunter2@127.0.0.1",
    ] {
        let toml = format!("[store]\nurl = \"{url}\"\n{VALID}");
        let (code, stderr) = run(&toml, &[]);
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert!(stderr.contains("store.url"), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{url}: {stderr}");
    }
    // TLS files only with a rediss URL.
    let toml =
        format!("[store]\nurl = \"redis://127.0.0.1:6379\"\nca_file = \"/nonexistent\"\n{VALID}");
    assert_rejected(&toml, &[], "store.ca_file");
}

#[test]
fn a_metrics_bind_that_is_not_host_port_is_refused() {
    for bind in ["localhost", "127.0.0.1", "127.0.0.1:port", ""] {
        let toml = format!("{VALID}\n[metrics]\nbind = \"{bind}\"\n");
        assert_rejected(&toml, &[], "metrics.bind");
        assert_check_refuses(&toml, "metrics.bind");
    }
}

#[test]
fn a_metrics_bind_equal_to_server_bind_is_refused() {
    let toml = format!("{VALID}\n[metrics]\nbind = \"127.0.0.1:8080\"\n")
        .replace("bind = \"127.0.0.1:0\"", "bind = \"127.0.0.1:8080\"");
    assert_rejected(&toml, &[], "metrics.bind");
    assert_check_refuses(&toml, "metrics.bind");
}

#[test]
fn a_metrics_bind_that_cannot_be_bound_exits_2_naming_the_key() {
    // The operator port is taken: a setting to fix, like any other.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let toml = format!(
        "{VALID}\n[metrics]\nbind = \"{}\"\n",
        taken.local_addr().unwrap()
    );
    let (code, stderr) = run(&toml, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("metrics.bind"), "{stderr}");
}
