//! Bounded input: every malformed or oversized request is refused with 400
//! and an `error_description` that names the parameter, before any of it is
//! stored or forwarded; a client that stops sending loses its connection;
//! wrong methods get 405 with `Allow`.
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ciba_proxy_e2e::app::{ClientSpec, Reply, TestApp, CIBA_GRANT};
use ciba_proxy_e2e::keys::CLIENT_PS256;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORM: &str = "application/x-www-form-urlencoded";

fn basic() -> String {
    format!("Basic {}", STANDARD.encode("shop:shop-secret"))
}

/// POSTs `body` as it is (bytes, not re-encoded) as client `shop`.
async fn post_raw(app: &TestApp, path: &str, body: impl Into<reqwest::Body>) -> Reply {
    let response = app
        .http
        .post(app.url(path))
        .header("authorization", basic())
        .header("content-type", FORM)
        .body(body)
        .send()
        .await
        .expect("request");
    reply(response).await
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    }
}

/// A backchannel request that is fine but for `name` = `value`.
async fn with(app: &TestApp, name: &str, value: &str) -> Reply {
    let mut params = vec![("scope", "openid"), ("login_hint", "alice")];
    params.retain(|(n, _)| *n != name);
    params.push((name, value));
    app.bc_authorize("shop", &params).await
}

/// Status, code, and a description that names `names`.
#[track_caller]
fn assert_refused(reply: &Reply, status: u16, error: &str, names: &str) {
    reply.assert_error(status, error);
    let description = reply.body["error_description"].as_str().unwrap_or("");
    assert!(
        description.contains(names),
        "{description:?} should name {names:?}"
    );
}

#[track_caller]
fn assert_invalid(reply: &Reply, names: &str) {
    assert_refused(reply, 400, "invalid_request", names);
}

#[track_caller]
fn assert_bad_binding_message(reply: &Reply) {
    assert_refused(reply, 400, "invalid_binding_message", "binding_message");
}

// ---- Encoding ---------------------------------------------------------

#[tokio::test]
async fn raw_invalid_utf8_in_a_value_is_refused() {
    let app = TestApp::spawn().await;
    let reply = post_raw(
        &app,
        "/bc-authorize",
        &b"scope=openid&login_hint=al\xffce"[..],
    )
    .await;
    assert_invalid(&reply, "login_hint");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("UTF-8"));
}

#[tokio::test]
async fn percent_encoded_invalid_utf8_is_refused() {
    let app = TestApp::spawn().await;
    let reply = post_raw(&app, "/bc-authorize", "scope=openid&login_hint=al%FFce").await;
    assert_invalid(&reply, "login_hint");
}

#[tokio::test]
async fn overlong_utf8_is_refused() {
    let app = TestApp::spawn().await;
    // %C0%AF is an overlong "/"; a lossy decoder turns it into U+FFFD twice.
    let reply = post_raw(&app, "/bc-authorize", "scope=openid&login_hint=a%C0%AFb").await;
    assert_invalid(&reply, "login_hint");
    let reply = post_raw(&app, "/bc-authorize", "scope=openid%C0%80&login_hint=a").await;
    assert_invalid(&reply, "scope");
}

#[tokio::test]
async fn invalid_utf8_in_a_parameter_name_is_refused() {
    let app = TestApp::spawn().await;
    let reply = post_raw(&app, "/bc-authorize", "scope=openid&login_hint=a&x%FF=1").await;
    assert_invalid(&reply, "parameter name");
}

#[tokio::test]
async fn invalid_utf8_at_the_token_endpoint_is_refused() {
    let app = TestApp::spawn().await;
    let body = format!("grant_type={CIBA_GRANT}&auth_req_id=abc%E2%82");
    let reply = post_raw(&app, "/token", body).await;
    assert_invalid(&reply, "auth_req_id");
}

#[tokio::test]
async fn invalid_utf8_in_the_callback_query_is_a_bad_link_page() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/callback?state=%FF%FE&code=%C0%AF"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(page.contains("This link is incomplete"), "{page}");
}

// ---- Length caps ------------------------------------------------------

#[tokio::test]
async fn login_hint_over_256_bytes_is_refused() {
    let app = TestApp::spawn().await;
    let reply = with(&app, "login_hint", &"a".repeat(257)).await;
    assert_invalid(&reply, "login_hint");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("256 bytes"));
    // 129 characters, 258 bytes: the cap counts bytes.
    let reply = with(&app, "login_hint", &"é".repeat(129)).await;
    assert_invalid(&reply, "login_hint");
}

#[tokio::test]
async fn login_hint_of_256_bytes_is_accepted() {
    let app = TestApp::spawn().await;
    let reply = with(&app, "login_hint", &"a".repeat(256)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test]
async fn login_hint_cap_is_configurable() {
    let app = TestApp::builder()
        .sections("[input]\nmax_login_hint_bytes = 8\n")
        .spawn()
        .await;
    assert_eq!(with(&app, "login_hint", "12345678").await.status, 200);
    let reply = with(&app, "login_hint", "123456789").await;
    assert_invalid(&reply, "login_hint");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("8 bytes"));
}

#[tokio::test]
async fn acr_values_over_the_cap_is_refused_before_reaching_the_idp() {
    let app = TestApp::spawn().await;
    // 60 KB, as a client once sent (and the proxy carried into the IdP's URL).
    let reply = with(&app, "acr_values", &"a".repeat(60_000)).await;
    assert_invalid(&reply, "acr_values");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("512 bytes"));
    let reply = with(&app, "acr_values", &"a".repeat(513)).await;
    assert_invalid(&reply, "acr_values");
}

#[tokio::test]
async fn scope_with_too_many_tokens_is_refused() {
    let app = TestApp::spawn().await;
    let many = format!("openid {}", vec!["profile"; 7999].join(" "));
    let reply = with(&app, "scope", &many).await;
    assert_invalid(&reply, "scope");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("64 tokens"));
}

#[tokio::test]
async fn scope_token_cap_is_configurable() {
    let app = TestApp::builder()
        .sections("[input]\nmax_scope_tokens = 2\n")
        .spawn()
        .await;
    assert_eq!(with(&app, "scope", "openid profile").await.status, 200);
    let reply = with(&app, "scope", "openid profile email").await;
    assert_invalid(&reply, "scope");
}

#[tokio::test]
async fn request_object_over_the_cap_is_refused() {
    let app = TestApp::builder()
        .clients(vec![
            ClientSpec::basic("shop").signing("PS256", CLIENT_PS256.jwks())
        ])
        .spawn()
        .await;
    let now = ciba_proxy_e2e::app::now_secs();
    let claims = json!({
        "iss": "shop", "aud": app.issuer, "exp": now + 300, "iat": now, "nbf": now,
        "jti": format!("jti-{}", rand::random::<u64>()),
        "scope": "openid", "login_hint": "alice",
        "padding": "x".repeat(44_000),
    });
    let jwt = CLIENT_PS256.sign(&claims);
    assert!(jwt.len() > 58_000, "{}", jwt.len());
    let reply = app.bc_authorize("shop", &[("request", jwt.as_str())]).await;
    assert_invalid(&reply, "request object");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("16384 bytes"));
}

#[tokio::test]
async fn too_many_form_parameters_are_refused() {
    let app = TestApp::spawn().await;
    let extra: Vec<String> = (0..7000).map(|i| format!("p{i}=1")).collect();
    let body = format!("scope=openid&login_hint=alice&{}", extra.join("&"));
    assert!(body.len() < 64 * 1024);
    let reply = post_raw(&app, "/bc-authorize", body).await;
    assert_invalid(&reply, "parameters");
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("64"));
}

#[tokio::test]
async fn too_many_form_parameters_at_the_token_endpoint_are_refused() {
    let app = TestApp::builder()
        .sections("[input]\nmax_form_params = 3\n")
        .spawn()
        .await;
    let body = format!("grant_type={CIBA_GRANT}&auth_req_id=abc&a=1&b=2");
    let reply = post_raw(&app, "/token", body).await;
    assert_invalid(&reply, "parameters");
}

// ---- requested_expiry -------------------------------------------------

#[tokio::test]
async fn requested_expiry_with_a_leading_space_is_refused() {
    let app = TestApp::spawn().await;
    assert_invalid(
        &with(&app, "requested_expiry", " 5").await,
        "requested_expiry",
    );
}

#[tokio::test]
async fn requested_expiry_with_a_plus_sign_is_refused() {
    let app = TestApp::spawn().await;
    assert_invalid(
        &with(&app, "requested_expiry", "+5").await,
        "requested_expiry",
    );
}

#[tokio::test]
async fn requested_expiry_with_a_trailing_space_is_refused() {
    let app = TestApp::spawn().await;
    assert_invalid(
        &with(&app, "requested_expiry", "5 ").await,
        "requested_expiry",
    );
}

#[tokio::test]
async fn requested_expiry_zero_padded_to_50_digits_is_refused() {
    let app = TestApp::spawn().await;
    let padded = format!("{}5", "0".repeat(49));
    assert_invalid(
        &with(&app, "requested_expiry", &padded).await,
        "requested_expiry",
    );
    // Plain digits are still fine.
    let reply = with(&app, "requested_expiry", "60").await;
    assert_eq!(reply.body["expires_in"], 60, "{reply:?}");
}

// ---- binding_message --------------------------------------------------

#[tokio::test]
async fn binding_message_with_a_bidi_override_is_refused() {
    let app = TestApp::spawn().await;
    let reply = with(&app, "binding_message", "pay 10\u{202E}00 EUR").await;
    assert_bad_binding_message(&reply);
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("U+202E"));
}

#[tokio::test]
async fn binding_message_with_a_zero_width_character_is_refused() {
    let app = TestApp::spawn().await;
    assert_bad_binding_message(&with(&app, "binding_message", "W4\u{200B}SCT").await);
}

#[tokio::test]
async fn binding_message_with_a_bom_is_refused() {
    let app = TestApp::spawn().await;
    assert_bad_binding_message(&with(&app, "binding_message", "\u{FEFF}W4SCT").await);
}

#[tokio::test]
async fn binding_message_with_a_line_separator_is_refused() {
    let app = TestApp::spawn().await;
    assert_bad_binding_message(&with(&app, "binding_message", "W4SCT\u{2028}pay 0").await);
}

#[tokio::test]
async fn binding_message_with_a_paragraph_separator_is_refused() {
    let app = TestApp::spawn().await;
    assert_bad_binding_message(&with(&app, "binding_message", "W4SCT\u{2029}pay 0").await);
}

#[tokio::test]
async fn binding_message_with_a_noncharacter_is_refused() {
    let app = TestApp::spawn().await;
    assert_bad_binding_message(&with(&app, "binding_message", "W4SCT\u{FDD0}").await);
}

#[tokio::test]
async fn binding_message_with_a_private_use_character_is_refused() {
    let app = TestApp::spawn().await;
    assert_bad_binding_message(&with(&app, "binding_message", "W4SCT\u{E000}").await);
}

#[tokio::test]
async fn binding_message_with_an_unpaired_surrogate_is_refused() {
    let app = TestApp::spawn().await;
    // A surrogate can only arrive encoded (CESU-8 style); it is not UTF-8.
    let body = "scope=openid&login_hint=alice&binding_message=W4%ED%A0%80SCT";
    assert_invalid(
        &post_raw(&app, "/bc-authorize", body).await,
        "binding_message",
    );
}

#[tokio::test]
async fn binding_message_with_a_stack_of_combining_marks_is_refused() {
    let app = TestApp::spawn().await;
    let zalgo = format!("W4SCT{}", "\u{0336}\u{0337}\u{0338}".repeat(10));
    let reply = with(&app, "binding_message", &zalgo).await;
    assert_bad_binding_message(&reply);
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("combining marks"));
}

#[tokio::test]
async fn binding_message_length_is_counted_in_characters() {
    let app = TestApp::spawn().await;
    // 64 characters of 3 bytes and 2 code points each (e + COMBINING ACUTE).
    let decomposed = "e\u{301}".repeat(64);
    let reply = with(&app, "binding_message", &decomposed).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = with(&app, "binding_message", &"€".repeat(64)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = with(&app, "binding_message", &"e\u{301}".repeat(65)).await;
    assert_bad_binding_message(&reply);
    assert!(reply.body["error_description"]
        .as_str()
        .unwrap()
        .contains("64 characters"));
}

// ---- Slow senders -----------------------------------------------------

/// What a stalled connection got: the answer, when its first byte came
/// (if any), and when the proxy closed the connection.
struct Stalled {
    answer: String,
    answered: Option<Duration>,
    closed: Duration,
}

/// Sends `head` (and whatever body bytes it holds), then nothing, and
/// reads until the proxy closes the connection (at most 10 s).
async fn stall(url: &str, head: &str) -> Stalled {
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut answered = None;
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
        let Ok(read) = read else {
            panic!(
                "the connection was still open after {:?}",
                started.elapsed()
            );
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answered.get_or_insert_with(|| started.elapsed());
                answer.extend_from_slice(&buffer[..n]);
            }
        }
    }
    Stalled {
        answer: String::from_utf8_lossy(&answer).into_owned(),
        answered,
        closed: started.elapsed(),
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_off_after_the_body_timeout() {
    let (app, _proxy) = TestApp::builder()
        .spawn_process(&[("CIBA_PROXY__SERVER__REQUEST_BODY_TIMEOUT_MS", "500")])
        .await;
    let head = format!(
        "POST /bc-authorize HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         Content-Type: {FORM}\r\nContent-Length: 50\r\n\r\nsco",
        basic()
    );
    let stalled = stall(&app.issuer, &head).await;
    let answered = stalled.answered.expect("an answer");
    eprintln!(
        "stalled body: answered after {answered:?}, closed after {:?}",
        stalled.closed
    );
    assert!(answered >= Duration::from_millis(400), "{answered:?}");
    assert!(answered < Duration::from_millis(1500), "{answered:?}");
    assert!(
        stalled.closed < Duration::from_secs(3),
        "{:?}",
        stalled.closed
    );
    let answer = stalled.answer;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid_request"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_at_the_token_endpoint_is_cut_off() {
    let (app, _proxy) = TestApp::builder()
        .spawn_process(&[("CIBA_PROXY__SERVER__REQUEST_BODY_TIMEOUT_MS", "500")])
        .await;
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM}\r\nContent-Length: 50\r\n\r\ngra"
    );
    let stalled = stall(&app.issuer, &head).await;
    assert!(
        stalled.closed < Duration::from_secs(3),
        "{:?}",
        stalled.closed
    );
    assert!(
        stalled.answer.starts_with("HTTP/1.1 400"),
        "{}",
        stalled.answer
    );
}

#[tokio::test]
async fn headers_that_stop_arriving_are_cut_off_after_the_header_timeout() {
    let (app, _proxy) = TestApp::builder()
        .spawn_process(&[("CIBA_PROXY__SERVER__REQUEST_HEADER_TIMEOUT_MS", "500")])
        .await;
    let stalled = stall(&app.issuer, "POST /bc-authorize HTTP/1.1\r\nHost: x\r\n").await;
    eprintln!(
        "stalled headers: answered after {:?}, closed after {:?}",
        stalled.answered, stalled.closed
    );
    assert!(
        stalled.closed < Duration::from_secs(3),
        "{:?}",
        stalled.closed
    );
    let answer = stalled.answer;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_connection_serves_one_request_by_default_so_no_next_head_can_stall() {
    // actix-web times only a connection's first request head: a kept-alive
    // connection could be held by trickling the next head. Off by default.
    let app = TestApp::spawn().await;
    let stalled = stall(
        &app.issuer,
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHo",
    )
    .await;
    assert!(
        stalled.closed < Duration::from_secs(2),
        "{:?}",
        stalled.closed
    );
    let answer = stalled.answer.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(answer.matches("http/1.1").count(), 1, "{answer}");
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    // One connection per worker: the proxy's workers are this machine's
    // available parallelism, and a cap below that is rounded up to it.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (app, _proxy) = TestApp::builder()
        .spawn_process(&[
            ("CIBA_PROXY__SERVER__MAX_CONNECTIONS", "1"),
            ("CIBA_PROXY__SERVER__REQUEST_HEADER_TIMEOUT_MS", "1500"),
        ])
        .await;
    let address = app.issuer.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..workers {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        idle.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let health = app.http.get(app.url("/healthz")).send();
    let answered = tokio::time::timeout(Duration::from_secs(10), health)
        .await
        .expect("answered once a slot frees")
        .unwrap();
    let waited = started.elapsed();
    eprintln!("with {workers} idle connections held, a new request waited {waited:?}");
    assert_eq!(answered.status(), 200);
    // It was served only when the idle connections timed out (1.5 s after they opened).
    assert!(waited >= Duration::from_millis(800), "{waited:?}");
    drop(idle);
}

// ---- Methods and headers ----------------------------------------------

#[tokio::test]
async fn wrong_methods_at_post_endpoints_get_405_with_allow_and_a_json_error() {
    let app = TestApp::spawn().await;
    for path in ["/bc-authorize", "/token", "/upstream/ping"] {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let response = app
                .http
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
            let reply = reply(response).await;
            assert_refused(&reply, 405, "invalid_request", "use POST");
            assert_eq!(reply.header("allow"), Some("POST"), "{method} {path}");
            assert!(reply.body["error_description"]
                .as_str()
                .unwrap()
                .contains(method.as_str()));
        }
    }
}

#[tokio::test]
async fn wrong_methods_at_get_endpoints_get_405_with_allow_get() {
    let app = TestApp::spawn().await;
    for path in [
        "/callback",
        "/.well-known/openid-configuration",
        "/healthz",
        "/readyz",
    ] {
        let response = app.http.post(app.url(path)).send().await.unwrap();
        let reply = reply(response).await;
        assert_refused(&reply, 405, "invalid_request", "use GET");
        assert_eq!(reply.header("allow"), Some("GET"), "{path}");
    }
    // Unknown paths stay 404.
    assert_eq!(app.get("/nowhere").await.status, 404);
}

#[tokio::test]
async fn a_second_authorization_header_at_bc_authorize_is_refused() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(app.url("/bc-authorize"))
        .header("authorization", basic())
        .header(
            "authorization",
            format!("Basic {}", STANDARD.encode("ghost:x")),
        )
        .form(&[("scope", "openid"), ("login_hint", "alice")])
        .send()
        .await
        .unwrap();
    assert_invalid(&reply(response).await, "Authorization");
}

#[tokio::test]
async fn a_second_authorization_header_at_token_is_refused() {
    let app = TestApp::spawn().await;
    let id = app.start("shop", "alice").await;
    let response = app
        .http
        .post(app.url("/token"))
        .header("authorization", basic())
        .header("authorization", basic())
        .form(&[("grant_type", CIBA_GRANT), ("auth_req_id", id.as_str())])
        .send()
        .await
        .unwrap();
    assert_invalid(&reply(response).await, "Authorization");
}
