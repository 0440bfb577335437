use unicode_properties::general_category::{GeneralCategory, UnicodeGeneralCategory};
use unicode_segmentation::UnicodeSegmentation;

/// CIBA Core §7.1 `binding_message`: a short plain-text code shown on both
/// devices, so the user can match them. Anything else is
/// `invalid_binding_message` (§13).
///
/// What the phone shows must be what the client sent, so nothing that can
/// make the text render differently from what it says is allowed: no
/// control, format (Cf: bidirectional controls, zero-width characters, the
/// BOM), line or paragraph separator, private-use or noncharacter code
/// points, and no stacks of combining marks. (Unpaired surrogates cannot
/// reach a Rust string: the form parser and JSON refuse them.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingMessage(String);

/// The length users read, in user-perceived characters (extended grapheme
/// clusters, UAX #29), not bytes: "Überweisung" is 11 whichever way the Ü
/// is encoded.
const MAX_CHARS: usize = 64;
/// A bound on the bytes looked at before counting characters; room for
/// [`MAX_CHARS`] characters of any script with their marks.
const MAX_BYTES: usize = MAX_CHARS * 32;
/// Combining marks one character may carry. Real text needs few (a Hindi
/// conjunct with a vowel sign has three); "Zalgo" text stacks dozens to
/// draw over neighbouring lines.
const MAX_MARKS_PER_CHAR: usize = 4;

impl BindingMessage {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() > MAX_BYTES {
            return Err(too_long());
        }
        super::check_text("binding_message", s)?;
        if let Some(c) = s.chars().find(|c| !displays_as_itself(*c)) {
            return Err(format!(
                "binding_message must not contain U+{:04X} ({})",
                u32::from(c),
                what(c)
            ));
        }
        // Plain text only: it is displayed on a phone, never interpreted.
        if let Some(c) = s
            .chars()
            .find(|c| matches!(c, '<' | '>' | '{' | '}' | '\\' | '`'))
        {
            return Err(format!(
                "binding_message must be plain text; {c:?} is not allowed"
            ));
        }
        let mut chars = 0;
        for grapheme in s.graphemes(true) {
            chars += 1;
            if chars > MAX_CHARS {
                return Err(too_long());
            }
            let marks = grapheme
                .chars()
                .filter(|c| {
                    matches!(
                        c.general_category(),
                        GeneralCategory::NonspacingMark
                            | GeneralCategory::SpacingMark
                            | GeneralCategory::EnclosingMark
                    )
                })
                .count();
            if marks > MAX_MARKS_PER_CHAR {
                return Err(format!(
                    "binding_message must not have more than {MAX_MARKS_PER_CHAR} combining marks on one character"
                ));
            }
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn too_long() -> String {
    format!("binding_message must be at most {MAX_CHARS} characters")
}

/// Whether `c` renders as a visible character of its own (or a plain space
/// or mark) rather than changing how the text around it is shown.
fn displays_as_itself(c: char) -> bool {
    !is_noncharacter(c)
        && !matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
                | GeneralCategory::PrivateUse
                | GeneralCategory::Surrogate
        )
}

/// Unicode §23.7: U+FDD0..U+FDEF and the last two code points of every plane.
fn is_noncharacter(c: char) -> bool {
    let c = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

/// The class of a refused character, for the error description.
fn what(c: char) -> &'static str {
    if is_noncharacter(c) {
        return "a noncharacter";
    }
    match c.general_category() {
        GeneralCategory::Format if c == '\u{FEFF}' => "a byte order mark",
        GeneralCategory::Format if is_bidi_control(c) => "a bidirectional control",
        GeneralCategory::Format => "an invisible format character",
        GeneralCategory::LineSeparator => "a line separator",
        GeneralCategory::ParagraphSeparator => "a paragraph separator",
        GeneralCategory::PrivateUse => "a private-use character",
        _ => "a surrogate",
    }
}

/// UAX #9 explicit directional formatting characters and marks.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_short_plain_text() {
        for ok in [
            "W4SCT",
            "Order #1234: 25.00 EUR",
            "Überweisung 42",
            // NFD: U + COMBINING DIAERESIS is one character.
            "U\u{308}berweisung 42",
            "支付 42 元",
            "Paiement : 42 €",
            "नमस्ते 42",
            "Vi\u{1EC7}t Nam",
            "pay 🇩🇪 42 👍🏽",
        ] {
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

    #[test]
    fn length_is_counted_in_characters_not_bytes() {
        // 64 three-byte characters (192 bytes) fit; 65 do not.
        assert!(BindingMessage::parse(&"€".repeat(64)).is_ok());
        assert!(BindingMessage::parse(&"€".repeat(65)).is_err());
        // 64 decomposed characters (a + combining ring: 3 bytes, 2 code points).
        assert!(BindingMessage::parse(&"a\u{30A}".repeat(64)).is_ok());
        let e = BindingMessage::parse(&"a\u{30A}".repeat(65)).unwrap_err();
        assert_eq!(e, "binding_message must be at most 64 characters");
    }

    #[test]
    fn rejects_characters_that_change_what_the_user_sees() {
        for (bad, class) in [
            ("pay 10\u{202E}001 EUR", "U+202E (a bidirectional control"),
            ("pay \u{2066}10\u{2069}", "U+2066 (a bidirectional control"),
            ("pay\u{200F}10", "U+200F (a bidirectional control"),
            ("pay 1\u{200B}0", "U+200B (an invisible format character"),
            ("pay 1\u{200D}0", "U+200D (an invisible format character"),
            ("pay 1\u{00AD}0", "U+00AD (an invisible format character"),
            ("pay 1\u{E0041}0", "U+E0041 (an invisible format character"),
            ("\u{FEFF}pay 10", "U+FEFF (a byte order mark"),
            ("pay\u{2028}10", "U+2028 (a line separator"),
            ("pay\u{2029}10", "U+2029 (a paragraph separator"),
            ("pay \u{E000}", "U+E000 (a private-use character"),
            ("pay \u{F0000}", "U+F0000 (a private-use character"),
            ("pay \u{FDD0}", "U+FDD0 (a noncharacter"),
            ("pay \u{FFFF}", "U+FFFF (a noncharacter"),
            ("pay \u{10FFFE}", "U+10FFFE (a noncharacter"),
        ] {
            let e = BindingMessage::parse(bad).unwrap_err();
            assert!(e.contains(class), "{bad:?}: {e}");
        }
    }

    #[test]
    fn rejects_stacks_of_combining_marks() {
        assert!(BindingMessage::parse("a\u{300}\u{301}\u{302}\u{303}").is_ok());
        let zalgo = "a\u{300}\u{301}\u{302}\u{303}\u{304}";
        let e = BindingMessage::parse(zalgo).unwrap_err();
        assert!(e.contains("combining marks"), "{e}");
        let zalgo = format!("pay{}", "\u{36F}".repeat(200));
        assert!(BindingMessage::parse(&zalgo).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,100}") {
            let _ = BindingMessage::parse(&s);
        }

        #[test]
        fn accepted_messages_are_short_and_free_of_hidden_characters(s in ".{0,80}") {
            if let Ok(m) = BindingMessage::parse(&s) {
                prop_assert!(m.as_str().graphemes(true).count() <= MAX_CHARS);
                prop_assert!(m.as_str().chars().all(displays_as_itself));
                prop_assert_eq!(m.as_str(), s.as_str());
            }
        }

    }

    #[test]
    fn every_hidden_code_point_is_refused() {
        let hidden = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| !displays_as_itself(*c));
        let mut n = 0;
        for c in hidden {
            n += 1;
            assert!(
                BindingMessage::parse(&format!("pay{c}10")).is_err(),
                "U+{:04X}",
                u32::from(c)
            );
        }
        // Cf, Zl, Zp, Co and the 66 noncharacters: well over 137,000.
        assert!(n > 137_000, "{n}");
    }
}
