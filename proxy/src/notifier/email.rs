//! The e-mail channel: a plain-text mail with the approval link, the
//! client's name and the binding message, sent through the operator's SMTP
//! server (lettre; `smtp://`, `smtps://`, credentials in the URL).
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{wrong_recipient, Message, Notifier, NotifyError, Recipient};

pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// Why the e-mail channel cannot start; the caller names the key.
#[derive(Debug, thiserror::Error)]
pub enum EmailSetupError {
    #[error("not an SMTP URL lettre can use (smtp://host:port, smtps://user:password@host)")]
    SmtpUrl,
    #[error("not a mailbox (\"Name <address>\" or an address): {0}")]
    From(String),
}

impl EmailNotifier {
    pub fn new(smtp_url: &str, from: &str, timeout: Duration) -> Result<Self, EmailSetupError> {
        // The URL may hold a password: lettre's error is not shown.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|_| EmailSetupError::SmtpUrl)?
            .timeout(Some(timeout))
            .build();
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| EmailSetupError::From(e.to_string()))?;
        Ok(Self { transport, from })
    }
}

/// Whether `value` (a login hint) is an e-mail address.
pub fn is_address(value: &str) -> bool {
    value.contains('@') && value.parse::<lettre::Address>().is_ok()
}

/// The mail's subject and text body.
fn compose(message: &Message<'_>) -> (String, String) {
    let n = message.notification;
    let subject = format!("Sign-in request from {}", message.client_name);
    let mut body = format!(
        "{} asks you to sign in (access requested: {}).\n\n",
        message.client_name, n.scope
    );
    // Without a binding message here (none sent, or number matching, where
    // the user must read the code on the other device), the page asks.
    if let Some(binding_message) = &n.binding_message {
        body.push_str(&format!(
            "Check that the other device shows this code: {binding_message}\n\n"
        ));
    }
    body.push_str(&format!(
        "To approve or deny, open:\n{}\n\nThe request expires in {} minutes. If you did not start it, deny it or ignore this mail.\n",
        n.approval_url,
        message.ttl_secs.div_ceil(60)
    ));
    (subject, body)
}

#[async_trait]
impl Notifier for EmailNotifier {
    async fn notify(&self, message: &Message<'_>, to: Recipient<'_>) -> Result<(), NotifyError> {
        let Recipient::Email(address) = to else {
            return Err(wrong_recipient(self.channel()));
        };
        let to = address
            .parse::<Mailbox>()
            .map_err(|e| NotifyError::Permanent(format!("not an e-mail address: {e}")))?;
        let (subject, body) = compose(message);
        let mail = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| NotifyError::Permanent(e.to_string()))?;
        match self.transport.send(mail).await {
            Ok(_) => Ok(()),
            // 5xx from the server: this address or mail will not be taken.
            Err(e) if e.is_permanent() => Err(NotifyError::Permanent(smtp_reason(&e))),
            Err(e) => Err(NotifyError::Retryable(smtp_reason(&e))),
        }
    }

    fn channel(&self) -> &'static str {
        "email"
    }
}

/// The SMTP error in words, without the addresses a server may echo.
fn smtp_reason(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("the SMTP server answered {code}"),
        None if e.is_timeout() => "the SMTP server did not answer in time".into(),
        None => "the SMTP server could not be reached".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::UserNotification;

    #[test]
    fn the_mail_carries_the_approval_link_client_and_binding_message_only() {
        let n = UserNotification {
            login_hint: "alice@example.com".into(),
            binding_message: Some("W4SCT".into()),
            client_id: "shop".into(),
            scope: "openid email".into(),
            authorization_url: Some("https://idp.example/auth?state=SECRET".into()),
            approval_url: "https://proxy.example/approve/HANDLE".into(),
            expires_at: 1,
        };
        let message = Message {
            notification: &n,
            client_name: "Acme Shop",
            ttl_secs: 120,
        };
        let (subject, body) = compose(&message);
        assert!(subject.contains("Acme Shop"));
        assert!(body.contains("https://proxy.example/approve/HANDLE"));
        assert!(body.contains("W4SCT"));
        assert!(!body.contains("SECRET"), "{body}");
    }

    #[test]
    fn without_the_binding_message_the_mail_shows_no_code() {
        // Number matching: the flow leaves the code out of the notification.
        let n = UserNotification {
            login_hint: "alice@example.com".into(),
            binding_message: None,
            client_id: "shop".into(),
            scope: "openid".into(),
            authorization_url: None,
            approval_url: "https://proxy.example/approve/HANDLE".into(),
            expires_at: 1,
        };
        let message = Message {
            notification: &n,
            client_name: "Acme Shop",
            ttl_secs: 120,
        };
        let (_, body) = compose(&message);
        assert!(!body.contains("code"), "{body}");
        assert!(body.contains("https://proxy.example/approve/HANDLE"));
    }

    #[test]
    fn only_addresses_are_addresses() {
        assert!(is_address("alice@example.com"));
        assert!(!is_address("alice"));
        assert!(!is_address("alice@"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let t = Duration::from_secs(1);
        assert!(matches!(
            EmailNotifier::new("nope://x", "a@b.example", t),
            Err(EmailSetupError::SmtpUrl)
        ));
        assert!(matches!(
            EmailNotifier::new("smtp://127.0.0.1:2525", "not a mailbox", t),
            Err(EmailSetupError::From(_))
        ));
    }
}
