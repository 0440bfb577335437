//! FCM (against a fake of Google's token endpoint and FCM v1) and Web Push
//! (against a local RFC 8030 push service that checks VAPID and decrypts):
//! one message per registered device, gone targets dropped, throttling
//! retried; and every channel at once.
use ciba_proxy_e2e::app::{StoreKind, TestApp};
use ciba_proxy_e2e::device::Action;
use ciba_proxy_e2e::fcm_fake::{FcmAnswer, FcmFake};
use ciba_proxy_e2e::push_devices::{self, fcm, webpush};
use ciba_proxy_e2e::push_service::PushService;
use ciba_proxy_e2e::smtp::SmtpServer;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use p256::SecretKey;

async fn app(channels: &str) -> TestApp {
    TestApp::builder()
        .store(StoreKind::Redis)
        .channels(channels)
        .client_toml("client_name = \"Acme Shop\"\n")
        .spawn()
        .await
}

/// Starts a request for `user`; returns its auth_req_id.
async fn request(app: &TestApp, user: &str) -> String {
    let reply = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid email"),
                ("login_hint", user),
                ("binding_message", "W4SCT"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["auth_req_id"].as_str().unwrap().to_owned()
}

/// A VAPID key file: SEC1 or PKCS#8 PEM.
fn vapid_key_file(pkcs8: bool) -> std::path::PathBuf {
    let key = SecretKey::random(&mut rand::rngs::OsRng);
    let pem = match pkcs8 {
        true => key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        false => key.to_sec1_pem(LineEnding::LF).unwrap().to_string(),
    };
    let path = std::env::temp_dir().join(format!("vapid-{}.pem", rand::random::<u64>()));
    std::fs::write(&path, pem).unwrap();
    path
}

fn webpush_channel(pkcs8: bool) -> String {
    format!(
        "[[notifier.channels]]\nkind = \"webpush\"\nvapid_private_key_file = \"{}\"\nsubject = \"mailto:ops@bank.example\"\n",
        vapid_key_file(pkcs8).display()
    )
}

/// Waits until the device has no push target any more.
async fn wait_until_dropped(app: &TestApp, did: &str) {
    for _ in 0..300 {
        let device = push_devices::device(app, did)
            .await
            .expect("the device stays");
        if device.push.is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the push target was not dropped");
}

#[tokio::test]
async fn fcm_sends_a_high_priority_data_message_to_each_device_with_one_access_token() {
    let fake = FcmFake::start().await.unwrap();
    let app = app(&fake.channel_toml()).await;
    push_devices::register(&app, "alice", fcm("token-alice-1")).await;
    push_devices::register(&app, "alice", fcm("token-alice-2")).await;
    push_devices::register(&app, "bob", fcm("token-bob")).await;

    let id = request(&app, "alice").await;
    let messages = fake.wait_for_messages(2).await;
    request(&app, "bob").await;
    let messages_after = fake.wait_for_messages(3).await;

    let mut tokens: Vec<_> = messages.iter().map(|m| m.token.as_str()).collect();
    tokens.sort();
    assert_eq!(tokens, ["token-alice-1", "token-alice-2"]);
    let data = &messages[0].data;
    let approval_url = data["approval_url"].as_str().unwrap();
    assert!(approval_url.starts_with(&app.url("/approve/")), "{data:?}");
    assert_eq!(data["handle"], approval_url.rsplit('/').next().unwrap());
    assert_eq!(data["client_name"], "Acme Shop");
    assert_eq!(data["binding_message"], "W4SCT");
    assert!(data["expires_at"].as_str().unwrap().parse::<u64>().is_ok());
    for message in &messages_after {
        assert!(!message.raw.contains(&id), "{}", message.raw);
        assert!(!message.raw.contains("state="), "{}", message.raw);
    }
    // The access token is cached: one token call for three sends.
    assert_eq!(fake.token_calls(), 1);
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn fcm_unregistered_drops_the_token_and_the_next_request_does_not_push_it() {
    let fake = FcmFake::start().await.unwrap();
    let app = app(&fake.channel_toml()).await;
    let did = push_devices::register(&app, "gina", fcm("token-gone")).await;
    fake.script(&[FcmAnswer::Unregistered]);

    let id = request(&app, "gina").await;
    wait_until_dropped(&app, &did).await;
    // Its only delivery was refused: the request fails for the client.
    app.poll_until_decided("shop", &id)
        .await
        .assert_error(400, "access_denied");

    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "gina")])
        .await;
    reply.assert_error(400, "unknown_user_id");
    assert_eq!(fake.send_calls(), 1);
}

#[tokio::test]
async fn fcm_invalid_argument_about_the_token_drops_it() {
    let fake = FcmFake::start().await.unwrap();
    let app = app(&fake.channel_toml()).await;
    let did = push_devices::register(&app, "hank", fcm("token-invalid")).await;
    fake.script(&[FcmAnswer::InvalidToken]);
    request(&app, "hank").await;
    wait_until_dropped(&app, &did).await;
}

#[tokio::test]
async fn fcm_throttling_and_outages_are_retried_until_delivered() {
    let fake = FcmFake::start().await.unwrap();
    let app = app(&fake.channel_toml()).await;
    push_devices::register(&app, "ivy", fcm("token-ivy")).await;
    fake.script(&[
        FcmAnswer::TooMany {
            retry_after_secs: 1,
        },
        FcmAnswer::Unavailable,
    ]);
    let id = request(&app, "ivy").await;
    let messages = fake.wait_for_messages(1).await;
    assert_eq!(messages[0].token, "token-ivy");
    assert_eq!(fake.send_calls(), 3);
    assert_eq!(app.poll("shop", &id).await.error(), "authorization_pending");
}

#[tokio::test]
async fn fcm_gets_a_new_access_token_once_when_its_token_is_refused() {
    let fake = FcmFake::start().await.unwrap();
    let app = app(&fake.channel_toml()).await;
    push_devices::register(&app, "owen", fcm("token-owen")).await;
    fake.script(&[FcmAnswer::Unauthenticated]);
    request(&app, "owen").await;
    fake.wait_for_messages(1).await;
    assert_eq!(fake.token_calls(), 2);
    assert_eq!(fake.send_calls(), 2);
}

#[tokio::test]
async fn web_push_decrypts_to_the_notification_with_valid_vapid() {
    for pkcs8 in [false, true] {
        let service = PushService::start().await.unwrap();
        let app = app(&webpush_channel(pkcs8)).await;
        let subscription = service.subscribe();
        push_devices::register(&app, "jane", webpush(&subscription)).await;

        let id = request(&app, "jane").await;
        let push = service.wait_for_push(&subscription).await;
        assert!(service.problems().is_empty(), "{:?}", service.problems());
        let payload = &push.payload;
        assert!(
            payload["approval_url"]
                .as_str()
                .unwrap()
                .starts_with(&app.url("/approve/")),
            "{payload}"
        );
        assert_eq!(payload["client_name"], "Acme Shop");
        assert_eq!(payload["binding_message"], "W4SCT");
        assert!(!payload.to_string().contains(&id), "{payload}");
        assert_eq!(push.urgency.as_deref(), Some("high"));
        let ttl = push.ttl.unwrap();
        assert!(ttl > 0 && ttl <= 120, "TTL {ttl}");
        assert_eq!(push.vapid_subject, "mailto:ops@bank.example");
    }
}

#[tokio::test]
async fn web_push_410_drops_the_subscription() {
    let service = PushService::start().await.unwrap();
    let app = app(&webpush_channel(true)).await;
    let subscription = service.subscribe();
    let did = push_devices::register(&app, "kate", webpush(&subscription)).await;
    service.script(&subscription, &[410]);
    request(&app, "kate").await;
    wait_until_dropped(&app, &did).await;
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "kate")])
        .await;
    reply.assert_error(400, "unknown_user_id");
    assert_eq!(service.attempts(&subscription), 1);
}

#[tokio::test]
async fn web_push_429_is_retried_then_delivered() {
    let service = PushService::start().await.unwrap();
    let app = app(&webpush_channel(false)).await;
    let subscription = service.subscribe();
    push_devices::register(&app, "liam", webpush(&subscription)).await;
    service.script(&subscription, &[429]);
    request(&app, "liam").await;
    service.wait_for_push(&subscription).await;
    assert_eq!(service.attempts(&subscription), 2);
}

#[tokio::test]
async fn every_channel_reaches_the_user_at_once_and_one_refusal_does_not_end_the_request() {
    let fake = FcmFake::start().await.unwrap();
    let service = PushService::start().await.unwrap();
    let smtp = SmtpServer::start().await.unwrap();
    let channels = format!(
        "[[notifier.channels]]\nkind = \"webhook\"\nurl = \"DEVICE_URL\"\nsecret = \"DEVICE_SECRET\"\n\
         [[notifier.channels]]\nkind = \"email\"\nsmtp_url = \"{}\"\nfrom = \"no-reply@bank.example\"\n{}{}",
        smtp.url(),
        fake.channel_toml(),
        webpush_channel(true)
    );
    let app = app(&channels).await;
    let user = "mia@example.com";
    app.device.on(user, Action::Ignore);
    let subscription = service.subscribe();
    push_devices::register(&app, user, webpush(&subscription)).await;
    let fcm_did = push_devices::register(&app, user, fcm("token-mia")).await;
    fake.script(&[FcmAnswer::Unregistered]);

    let id = request(&app, user).await;
    let hook = app.device.wait_for_notification(user).await;
    let mail = smtp.wait_for_mail(user).await;
    let push = service.wait_for_push(&subscription).await;
    wait_until_dropped(&app, &fcm_did).await;

    let link = hook.approval_url();
    assert!(mail.body.contains(link), "{}", mail.body);
    assert_eq!(push.payload["approval_url"], link);
    // The FCM refusal was one of four deliveries: the request goes on.
    assert_eq!(app.poll("shop", &id).await.error(), "authorization_pending");
}
