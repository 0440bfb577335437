//! `[[notifier.channels]]`: several channels at once, a user no channel
//! reaches, and the configuration rules (exit 2 naming the key).
use ciba_proxy_e2e::app::TestApp;
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::smtp::SmtpServer;

use crate::configuration::{run, VALID};

fn email_channel(smtp: &SmtpServer) -> String {
    format!(
        "[[notifier.channels]]\nkind = \"email\"\nsmtp_url = \"{}\"\nfrom = \"Bank <no-reply@bank.example>\"\n",
        smtp.url()
    )
}

const WEBHOOK_CHANNEL: &str =
    "[[notifier.channels]]\nkind = \"webhook\"\nurl = \"DEVICE_URL\"\nsecret = \"DEVICE_SECRET\"\n";

#[tokio::test]
async fn a_webhook_channel_works_as_the_single_webhook_did() {
    let app = TestApp::builder().channels(WEBHOOK_CHANNEL).spawn().await;
    let id = app.start("shop", "alice").await;
    let notification = app.device.wait_for_notification("alice").await;
    assert!(notification.signature_valid);
    assert!(notification.approval_url().contains("/approve/"));
    app.device.wait_for_page("alice").await;
    assert_eq!(app.poll("shop", &id).await.status, 200);
}

#[tokio::test]
async fn every_channel_that_reaches_the_user_is_used() {
    let smtp = SmtpServer::start().await.unwrap();
    let app = TestApp::builder()
        .channels(&format!("{WEBHOOK_CHANNEL}{}", email_channel(&smtp)))
        .spawn()
        .await;
    let user = "carol@example.com";
    app.device.on(user, Action::Ignore);
    app.start("shop", user).await;
    let hook = app.device.wait_for_notification(user).await;
    let mail = smtp.wait_for_mail(user).await;
    assert!(mail.body.contains(hook.approval_url()), "{}", mail.body);
}

#[tokio::test]
async fn a_user_no_channel_reaches_is_unknown_and_nothing_is_left_taken() {
    let smtp = SmtpServer::start().await.unwrap();
    let app = TestApp::builder()
        .channels(&email_channel(&smtp))
        .sections("[limits]\npending_per_user = 1\n")
        .spawn()
        .await;
    let params = [("scope", "openid"), ("login_hint", "dave")];
    for _ in 0..2 {
        // A second refusal, not access_denied: the first left no pending slot.
        let reply = app.bc_authorize("shop", &params).await;
        reply.assert_error(400, "unknown_user_id");
        let description = reply.body["error_description"].as_str().unwrap();
        assert!(
            description.contains("no notification channel reaches the user"),
            "{description}"
        );
    }
    // An address hint is reachable by e-mail, and may have its one slot.
    let reply = app
        .bc_authorize(
            "shop",
            &[("scope", "openid"), ("login_hint", "dave@example.com")],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    smtp.wait_for_mail("dave@example.com").await;
}

fn with_channels(channels: &str) -> String {
    let single = "[notifier]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9000/notify\"\nsecret = \"webhook-secret\"\n";
    VALID.replace(single, &format!("[notifier]\n{channels}"))
}

#[track_caller]
fn assert_refused(toml: &str, key: &str) -> String {
    let (code, stderr) = run(toml, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(key), "{stderr:?} should name {key}");
    stderr
}

#[test]
fn mixing_the_single_webhook_and_channels_is_refused_naming_notifier() {
    let toml = VALID.replace(
        "secret = \"webhook-secret\"\n",
        "secret = \"webhook-secret\"\n[[notifier.channels]]\nkind = \"email\"\nsmtp_url = \"smtp://127.0.0.1:2525\"\nfrom = \"a@bank.example\"\n",
    );
    assert!(toml.contains("[[notifier.channels]]"));
    let stderr = assert_refused(&toml, "notifier");
    assert!(stderr.contains("not both"), "{stderr}");
}

#[test]
fn a_kind_twice_is_refused() {
    let email = "[[notifier.channels]]\nkind = \"email\"\nsmtp_url = \"smtp://127.0.0.1:2525\"\nfrom = \"a@bank.example\"\n";
    assert_refused(
        &with_channels(&format!("{email}{email}")),
        "notifier.channels[1].kind",
    );
}

#[test]
fn unreadable_and_invalid_key_files_are_refused_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("ciba-channels-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("not-a-key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("sa.json"), r#"{"project_id":"p"}"#).unwrap();
    let fcm = |file: &str| {
        with_channels(&format!(
            "[[notifier.channels]]\nkind = \"fcm\"\nservice_account_file = \"{}\"\n",
            dir.join(file).display()
        ))
    };
    let webpush = |file: &str| {
        with_channels(&format!(
            "[[notifier.channels]]\nkind = \"webpush\"\nvapid_private_key_file = \"{}\"\nsubject = \"mailto:ops@bank.example\"\n",
            dir.join(file).display()
        ))
    };
    let key = "notifier.channels[0].service_account_file";
    assert_refused(&fcm("missing.json"), key);
    assert_refused(&fcm("sa.json"), key);
    let key = "notifier.channels[0].vapid_private_key_file";
    assert_refused(&webpush("missing.pem"), key);
    assert_refused(&webpush("not-a-key.pem"), key);
}

#[test]
fn an_http_token_uri_is_refused_unless_http_is_allowed() {
    let fcm = ciba_proxy_e2e::fcm_fake::service_account_json("http://127.0.0.1:9/token");
    let path = std::env::temp_dir().join(format!("sa-{}.json", rand::random::<u64>()));
    std::fs::write(&path, fcm).unwrap();
    let toml = with_channels(&format!(
        "[[notifier.channels]]\nkind = \"fcm\"\nservice_account_file = \"{}\"\n",
        path.display()
    ));
    let stderr = assert_refused(&toml, "notifier.channels[0].service_account_file");
    assert!(stderr.contains("token_uri"), "{stderr}");
}

#[test]
fn relative_key_files_are_found_next_to_the_configuration_file() {
    // The file does not exist: the error shows where it was looked for.
    let toml = with_channels(
        "[[notifier.channels]]\nkind = \"webpush\"\nvapid_private_key_file = \"vapid-missing.pem\"\nsubject = \"mailto:ops@bank.example\"\n",
    );
    let stderr = assert_refused(&toml, "notifier.channels[0].vapid_private_key_file");
    let dir = std::env::temp_dir();
    let expected = dir.join("vapid-missing.pem");
    assert!(
        stderr.contains(&expected.display().to_string()),
        "{stderr} should name {}",
        expected.display()
    );
}
