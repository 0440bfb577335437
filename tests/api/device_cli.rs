//! `ciba-proxy device`, the console authentication device, run as the real
//! binary: it registers with a QR code's JSON, sees the user's request,
//! approves it, and the user's sign-in at the real test IdP completes the
//! client's login. The journey starts where a user's would: the QR code on
//! their account page.
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use ciba_proxy_e2e::account::{app_with_account, qr_on_page, sign_in as sign_in_to_account};
use ciba_proxy_e2e::app::{binary_path, StoreKind, TestApp};
use ciba_proxy_e2e::browser::Browser;
use ciba_proxy_e2e::device::{sign_in, Action};
use ciba_proxy_e2e::device_key::offer_enrolment;
use serde_json::Value;

/// Runs `ciba-proxy device ARGS`; (exit code, stdout, stderr).
async fn device(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(binary_path());
    cmd.arg("device").args(args).kill_on_drop(true);
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the device finishes within a minute")
        .expect("run ciba-proxy device");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A key file path in a fresh directory, removed with it.
struct KeyFile {
    dir: PathBuf,
    path: String,
}

impl KeyFile {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ciba-device-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join("device.json").to_string_lossy().into_owned();
        Self { dir, path }
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_user_signs_in_with_the_console_device() {
    let app = app_with_account(StoreKind::Redis).await;
    let key = KeyFile::new();
    // The user signs in to their account page and "scans" its QR code.
    let browser = Browser::start().await.unwrap();
    sign_in_to_account(&app, &browser, "alice").await;
    let qr = qr_on_page(&browser).await;
    browser.close().await.unwrap();
    let qr_json = qr.to_string();

    let (code, _, stderr) = device(&[
        "register",
        "--qr",
        &qr_json,
        "--key",
        &key.path,
        "--name",
        "CLI phone",
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(&key.path).unwrap()).expect("JSON");
    assert_eq!(file["did"], qr["did"]);
    assert_eq!(file["hst"], app.issuer.as_str());
    assert!(file["key"].as_str().unwrap().contains("BEGIN PRIVATE KEY"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The same QR code cannot register twice, nor overwrite the key file.
    let (code, _, stderr) = device(&["register", "--qr", &qr_json, "--key", &key.path]).await;
    assert_eq!(code, Some(1), "{stderr}");

    // A client asks; the webhook is ignored, the console device answers.
    app.device.on("alice", Action::Ignore);
    let id = app.start("shop", "alice").await;
    let (code, stdout, stderr) = device(&["pending", "--key", &key.path]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let pending: Value = serde_json::from_str(stdout.trim()).expect("a JSON list");
    assert_eq!(pending[0]["binding_message"], "W4SCT", "{stdout}");
    assert_eq!(pending[0]["client_name"], "Acme Shop");
    let handle = pending[0]["handle"].as_str().unwrap();

    let (code, stdout, stderr) = device(&["approve", handle, "--key", &key.path]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let url = stdout.trim();
    assert!(url.starts_with(&app.idp.issuer), "{url}");
    let page = sign_in(url, &Action::SignInAs("alice".into()))
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    let tokens = app.poll("shop", &id).await;
    assert_eq!(tokens.status, 200, "{tokens:?}");
    assert!(tokens.body["id_token"].is_string());

    // Removed, the key is refused.
    let (code, _, stderr) = device(&["remove", "--key", &key.path]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = device(&["pending", "--key", &key.path]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("invalid_token"), "{stderr}");
}

#[tokio::test]
async fn the_console_device_denies() {
    let app = TestApp::builder().store(StoreKind::Redis).spawn().await;
    let key = KeyFile::new();
    let qr = serde_json::to_string(&offer_enrolment(&app, "bob").await).unwrap();
    let (code, _, stderr) = device(&["register", "--qr", &qr, "--key", &key.path]).await;
    assert_eq!(code, Some(0), "{stderr}");
    app.device.on("bob", Action::Ignore);
    let id = app.start("shop", "bob").await;
    let (_, stdout, _) = device(&["pending", "--key", &key.path]).await;
    let pending: Value = serde_json::from_str(stdout.trim()).unwrap();
    let handle = pending[0]["handle"].as_str().unwrap();
    let (code, _, stderr) = device(&["deny", handle, "--key", &key.path]).await;
    assert_eq!(code, Some(0), "{stderr}");
    app.poll("shop", &id)
        .await
        .assert_error(400, "access_denied");
    // A key file that is not one is a clear failure, not a panic.
    std::fs::write(key.dir.join("junk.json"), "{}").unwrap();
    let junk = key.dir.join("junk.json").to_string_lossy().into_owned();
    let (code, _, stderr) = device(&["pending", "--key", &junk]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("key_file"), "{stderr}");
}

#[tokio::test]
async fn the_console_device_offers_the_codes_to_match_and_approves_with_one() {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .client_toml("binding_message_check = \"match\"")
        .spawn()
        .await;
    let key = KeyFile::new();
    let qr = serde_json::to_string(&offer_enrolment(&app, "carol").await).unwrap();
    let (code, _, stderr) = device(&["register", "--qr", &qr, "--key", &key.path]).await;
    assert_eq!(code, Some(0), "{stderr}");
    app.device.on("carol", Action::Ignore);
    let id = app.start("shop", "carol").await;
    let (code, stdout, stderr) = device(&["pending", "--key", &key.path]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let pending: Value = serde_json::from_str(stdout.trim()).unwrap();
    // The code itself is withheld: the user reads it where the request
    // started, and picks it among three.
    assert_eq!(pending[0]["binding_message"], Value::Null, "{stdout}");
    let choices: Vec<String> = serde_json::from_value(pending[0]["match_choices"].clone())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(choices.len(), 3, "{stdout}");
    assert!(choices.contains(&"W4SCT".to_owned()), "{stdout}");
    let handle = pending[0]["handle"].as_str().unwrap();
    let (code, stdout, stderr) =
        device(&["approve", handle, "--match", "W4SCT", "--key", &key.path]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let page = sign_in(stdout.trim(), &Action::SignInAs("carol".into()))
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(app.poll("shop", &id).await.status, 200);
}
