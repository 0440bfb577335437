//! The form body of `/bc-authorize` and `/token`, parsed strictly:
//! RFC 6749 §3.1/§3.2 forbid repeated parameters, and the body must be
//! `application/x-www-form-urlencoded` (UTF-8, WHATWG URL §5.1), of bounded
//! size and with a bounded number of parameters. A body that stops
//! arriving is cut off: see [`with_deadline`].
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use percent_encoding::percent_decode;

use crate::configuration::InputSettings;
use crate::error::OAuthError;

#[derive(Debug, Default, Clone)]
pub struct FormParams(HashMap<String, String>);

impl FormParams {
    /// Parses `bytes` as a urlencoded form with the default caps.
    pub fn parse(bytes: &[u8]) -> Result<Self, OAuthError> {
        Self::parse_at_most(bytes, InputSettings::default().max_form_params)
    }

    /// Parses `bytes` as a urlencoded form of at most `max_params`
    /// parameters, rejecting repeated names and names or values that are
    /// not UTF-8 once percent-decoded (raw or encoded, overlong forms and
    /// encoded surrogates included: `str::from_utf8` is strict).
    pub fn parse_at_most(bytes: &[u8], max_params: usize) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        // WHATWG URL §5.1: sequences split on `&`, empty ones skipped; the
        // name is what comes before the first `=`.
        let pairs = bytes.split(|b| *b == b'&').filter(|p| !p.is_empty());
        for (n, pair) in pairs.enumerate() {
            if n >= max_params {
                return Err(OAuthError::InvalidRequest(format!(
                    "the form has more than {max_params} parameters"
                )));
            }
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            let name = decode(name).map_err(|raw| {
                OAuthError::InvalidRequest(format!(
                    "a parameter name is not valid UTF-8: {:?}",
                    shorten(&String::from_utf8_lossy(&raw))
                ))
            })?;
            let value = decode(value).map_err(|_| {
                OAuthError::InvalidRequest(format!(
                    "parameter {} is not valid UTF-8",
                    shorten(&name)
                ))
            })?;
            if map.contains_key(&name) {
                return Err(OAuthError::InvalidRequest(format!(
                    "parameter {} is repeated",
                    shorten(&name)
                )));
            }
            map.insert(name, value);
        }
        // RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
        map.retain(|_, v| !v.is_empty());
        Ok(Self(map))
    }

    /// Reads and parses the request body, within the `[input]` caps the
    /// application registered (the defaults if it registered none).
    pub async fn from_request(
        req: &HttpRequest,
        mut payload: web::Payload,
    ) -> Result<Self, OAuthError> {
        let input = input_settings(req);
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::InvalidRequest(
                "the body must be application/x-www-form-urlencoded".into(),
            ));
        }
        let max_bytes = input.max_form_bytes;
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                OAuthError::InvalidRequest(if is_deadline(&e) {
                    "the request body did not arrive in time".into()
                } else {
                    "the request body could not be read".into()
                })
            })?;
            if body.len() + chunk.len() > max_bytes {
                return Err(OAuthError::InvalidRequest(format!(
                    "the request body exceeds {max_bytes} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Self::parse_at_most(&body, input.max_form_params)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn from_map(map: HashMap<String, String>) -> Self {
        Self(map)
    }
}

/// The `[input]` caps the application registered with `app_data`, else
/// the defaults.
pub fn input_settings(req: &HttpRequest) -> InputSettings {
    req.app_data::<web::Data<InputSettings>>()
        .map(|input| *input.get_ref())
        .unwrap_or_default()
}

/// One urlencoded name or value: `+` is a space, `%XX` a byte, and the
/// bytes must be UTF-8. On failure, the decoded bytes.
pub(crate) fn decode(raw: &[u8]) -> Result<String, Vec<u8>> {
    let spaced: Cow<[u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let bytes: Vec<u8> = Cow::from(percent_decode(&spaced)).into_owned();
    String::from_utf8(bytes).map_err(|e| e.into_bytes())
}

/// A name as it may appear in an error description: at most 40 characters.
fn shorten(s: &str) -> Cow<'_, str> {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => Cow::Owned(format!("{}...", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// The request body must have arrived `timeout` after its headers did.
/// actix-web's `client_request_timeout` covers only the headers; without
/// this, a client that announces `Content-Length: 50`, sends 3 bytes and
/// goes silent holds its connection (and a worker's buffers) for good.
/// After the deadline the stream yields a `TimedOut` error, which the body
/// readers turn into 400; the unread rest makes actix close the connection.
pub fn with_deadline(payload: Payload, timeout: Duration) -> Payload {
    if matches!(payload, Payload::None) {
        return payload;
    }
    let timed = Deadline {
        payload,
        deadline: tokio::time::Instant::now() + timeout,
        timer: None,
        done: false,
    };
    let boxed: std::pin::Pin<Box<dyn futures::Stream<Item = Result<web::Bytes, PayloadError>>>> =
        Box::pin(timed);
    Payload::from(boxed)
}

/// [`with_deadline`]'s stream. The timer starts only when the body is not
/// all there yet: a small form that came with its headers (every poll)
/// costs no timer.
struct Deadline {
    payload: Payload,
    deadline: tokio::time::Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl futures::Stream for Deadline {
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // The body first: what has arrived is read even after the deadline.
        if let Poll::Ready(item) = std::pin::Pin::new(&mut this.payload).poll_next(cx) {
            this.done = item.is_none();
            return Poll::Ready(item);
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.done = true;
                Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    DEADLINE_MESSAGE,
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

const DEADLINE_MESSAGE: &str = "the request body did not arrive in time";

/// Whether a body read failed because [`with_deadline`] ran out.
pub fn is_deadline(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repeated_parameter_is_invalid_request() {
        let e = FormParams::parse(b"scope=openid&scope=email").unwrap_err();
        assert_eq!(e.code(), "invalid_request");
        assert!(e.description().contains("scope"));
    }

    #[test]
    fn empty_values_count_as_omitted() {
        let form = FormParams::parse(b"login_hint=&scope=openid").unwrap();
        assert_eq!(form.get("login_hint"), None);
        assert_eq!(form.get("scope"), Some("openid"));
    }

    #[test]
    fn percent_and_plus_decoding() {
        let form = FormParams::parse(b"binding_message=Order+%231&a%2Bb=%2B&bare&&x==y").unwrap();
        assert_eq!(form.get("binding_message"), Some("Order #1"));
        assert_eq!(form.get("a+b"), Some("+"));
        assert_eq!(form.get("bare"), None);
        assert_eq!(form.get("x"), Some("=y"));
        let form = FormParams::parse("login_hint=J%C3%BCrgen&x=%E2%82%AC€".as_bytes()).unwrap();
        assert_eq!(form.get("login_hint"), Some("Jürgen"));
        assert_eq!(form.get("x"), Some("€€"));
    }

    #[test]
    fn invalid_utf8_is_refused_naming_the_parameter() {
        for body in [
            &b"login_hint=%FF"[..],
            b"login_hint=\xff",
            // Overlong "/" and NUL, an encoded surrogate, a truncated sequence.
            b"login_hint=%C0%AF",
            b"login_hint=%C0%80",
            b"login_hint=%ED%A0%80",
            b"login_hint=%E2%82",
            b"login_hint=\xe2\x82",
        ] {
            let e = FormParams::parse(body).unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert_eq!(e.description(), "parameter login_hint is not valid UTF-8");
        }
        let e = FormParams::parse(b"scope=openid&na%FFme=x").unwrap_err();
        assert!(
            e.description().contains("parameter name"),
            "{}",
            e.description()
        );
    }

    #[test]
    fn too_many_parameters_are_refused() {
        let body: Vec<String> = (0..65).map(|i| format!("p{i}=x")).collect();
        let e = FormParams::parse(body.join("&").as_bytes()).unwrap_err();
        assert_eq!(e.description(), "the form has more than 64 parameters");
        assert_eq!(
            FormParams::parse(body[..64].join("&").as_bytes())
                .unwrap()
                .names()
                .count(),
            64
        );
        assert!(FormParams::parse_at_most(b"a=1&b=2", 1).is_err());
    }

    #[test]
    fn long_names_are_shortened_in_descriptions() {
        let name = "n".repeat(1000);
        let e = FormParams::parse(format!("{name}=1&{name}=2").as_bytes()).unwrap_err();
        assert!(e.description().len() < 100, "{}", e.description());
    }

    #[actix_web::test]
    async fn a_stalled_body_ends_in_a_timeout_error() {
        let stalled: std::pin::Pin<
            Box<dyn futures::Stream<Item = Result<web::Bytes, PayloadError>>>,
        > = Box::pin(futures::stream::pending());
        let mut timed = with_deadline(Payload::from(stalled), Duration::from_millis(20));
        let e = timed.next().await.unwrap().unwrap_err();
        assert!(is_deadline(&e));
        assert!(timed.next().await.is_none());
    }

    #[actix_web::test]
    async fn a_body_that_arrives_passes_through() {
        let mut timed = with_deadline(
            Payload::from(web::Bytes::from_static(b"a=1")),
            Duration::from_secs(5),
        );
        assert_eq!(timed.next().await.unwrap().unwrap(), "a=1");
        assert!(timed.next().await.is_none());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = FormParams::parse(&bytes);
        }

        #[test]
        fn text_round_trips_through_urlencoding(pairs in proptest::collection::hash_map("\\PC{1,8}", "\\PC{1,8}", 0..8)) {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs.iter())
                .finish();
            let form = FormParams::parse(body.as_bytes()).unwrap();
            for (name, value) in &pairs {
                prop_assert_eq!(form.get(name), Some(value.as_str()));
            }
        }

        #[test]
        fn accepts_exactly_what_decodes_to_utf8(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut body = b"v=".to_vec();
            body.extend(bytes.iter().filter(|b| !matches!(b, b'&' | b'=')));
            let strict = FormParams::parse(&body);
            let lossless = percent_decode(&body[2..].iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect::<Vec<_>>()).decode_utf8().is_ok();
            prop_assert_eq!(strict.is_ok(), lossless);
        }
    }
}
