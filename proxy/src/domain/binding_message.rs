/// CIBA Core §7.1 `binding_message`: a short plain-text code shown on both
/// devices. Anything else is `invalid_binding_message` (§13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingMessage(String);

const MAX_CHARS: usize = 64;

impl BindingMessage {
    pub fn parse(s: &str) -> Result<Self, String> {
        super::check_short_text("binding_message", s, MAX_CHARS)?;
        // Plain text only: it is displayed on a phone, never interpreted.
        if let Some(c) = s
            .chars()
            .find(|c| matches!(c, '<' | '>' | '{' | '}' | '\\' | '`'))
        {
            return Err(format!(
                "binding_message must be plain text; {c:?} is not allowed"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_short_plain_text() {
        for ok in ["W4SCT", "Order #1234: 25.00 EUR", "Überweisung 42"] {
            assert!(BindingMessage::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_markup_control_characters_blank_and_long_text() {
        assert!(BindingMessage::parse("<script>").is_err());
        assert!(BindingMessage::parse("line\nbreak").is_err());
        assert!(BindingMessage::parse(" ").is_err());
        assert!(BindingMessage::parse(&"a".repeat(65)).is_err());
        assert!(BindingMessage::parse(&"a".repeat(64)).is_ok());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,100}") {
            let _ = BindingMessage::parse(&s);
        }
    }
}
