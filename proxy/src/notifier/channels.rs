//! The configured channels, built once at startup from `[notifier]` (either
//! form). Key files are read and checked here, so a bad one stops the
//! proxy at startup (exit 2) with the key named, not at the first delivery.
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::fcm::{FcmNotifier, ServiceAccount};
use super::webpush::{load_vapid_key, Reach, WebPushNotifier};
use super::{EmailNotifier, Notifier, WebhookNotifier};
use crate::clock::Clock;
use crate::configuration::{ChannelSettings, ConfigError, NotifierSettings, Settings};
use crate::upstream::provider::http_client_builder;

/// The channels deliveries can use, at most one of each kind.
#[derive(Default, Clone)]
pub struct Channels {
    pub webhook: Option<Arc<dyn Notifier>>,
    pub email: Option<Arc<dyn Notifier>>,
    pub fcm: Option<Arc<dyn Notifier>>,
    pub webpush: Option<Arc<dyn Notifier>>,
}

impl Channels {
    pub fn from_settings(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        let mut channels = Self::default();
        let Some(notifier) = &settings.notifier else {
            return Ok(channels);
        };
        let timeout = Duration::from_millis(notifier.timeout_ms);
        let http = || {
            http_client_builder(timeout).build().map_err(|e| {
                ConfigError::new("notifier", format!("cannot build an HTTP client: {e}"))
            })
        };
        let allow_http = settings.ciba.allow_http_notification_endpoints;
        for (i, channel) in notifier.channels().iter().enumerate() {
            let key = |field: &str| match notifier.channels.is_empty() {
                // The single-webhook form names its own keys.
                true => format!("notifier.{field}"),
                false => NotifierSettings::channel_key(i, field),
            };
            match channel {
                ChannelSettings::Webhook(hook) => {
                    channels.webhook = Some(Arc::new(WebhookNotifier::new(
                        hook.url.clone(),
                        hook.secret.clone(),
                        http()?,
                    )));
                }
                ChannelSettings::Email(email) => {
                    let notifier =
                        EmailNotifier::new(email.smtp_url.expose_secret(), &email.from, timeout)
                            .map_err(|e| {
                                let field = match e {
                                    super::email::EmailSetupError::SmtpUrl => "smtp_url",
                                    super::email::EmailSetupError::From(_) => "from",
                                };
                                ConfigError::new(key(field), e.to_string())
                            })?;
                    channels.email = Some(Arc::new(notifier));
                }
                ChannelSettings::Fcm(fcm) => {
                    let account = ServiceAccount::load(&fcm.service_account_file, allow_http)
                        .map_err(|e| {
                            ConfigError::new(key("service_account_file"), e.to_string())
                        })?;
                    let notifier =
                        FcmNotifier::new(account, fcm.endpoint.as_ref(), http()?, clock.clone())
                            .map_err(|e| ConfigError::new(key("endpoint"), e.to_string()))?;
                    channels.fcm = Some(Arc::new(notifier));
                }
                ChannelSettings::Webpush(webpush) => {
                    let vapid = load_vapid_key(&webpush.vapid_private_key_file).map_err(|e| {
                        ConfigError::new(key("vapid_private_key_file"), e.to_string())
                    })?;
                    let reach = Reach {
                        timeout,
                        allow_http,
                        allow_private: settings.ciba.private_notification_endpoints_allowed(),
                    };
                    let notifier =
                        WebPushNotifier::new(vapid, &webpush.subject, reach, clock.clone())
                            .map_err(|e| ConfigError::new(key("subject"), e.to_string()))?;
                    channels.webpush = Some(Arc::new(notifier));
                }
            }
        }
        Ok(channels)
    }

    /// Whether any channel is configured.
    pub fn any(&self) -> bool {
        self.webhook.is_some()
            || self.email.is_some()
            || self.fcm.is_some()
            || self.webpush.is_some()
    }
}
