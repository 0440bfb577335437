//! `make demo`: one whole CIBA login on this machine, narrated. It starts the
//! test IdP (oidc-provider), ciba-proxy with the in-memory store, a simulated
//! phone that receives the proxy's webhook, and plays the consumption device.
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ciba_proxy_e2e::app::TestApp;
use ciba_proxy_e2e::device::{approve_and_sign_in, Action};
use serde_json::Value;

fn short(token: &str) -> String {
    let head: String = token.chars().take(16).collect();
    format!("{head}… ({} chars)", token.len())
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("ciba-proxy demo: a client asks for alice's consent; alice approves on her phone.");
    let app = TestApp::spawn().await;
    // alice's phone shows the approval page; she approves there (below).
    app.device.on("alice", Action::Ignore);
    step(
        1,
        &format!("Test IdP (oidc-provider) running at {}", app.idp.issuer),
    );
    step(
        2,
        &format!(
            "ciba-proxy running at {} with the in-memory store",
            app.issuer
        ),
    );

    let discovery = app.get("/.well-known/openid-configuration").await.body;
    step(3, "The client reads the proxy's discovery document:");
    for key in [
        "backchannel_authentication_endpoint",
        "token_endpoint",
        "backchannel_token_delivery_modes_supported",
    ] {
        println!("    {key}: {}", discovery[key]);
    }

    step(4, "The client sends POST /bc-authorize  (client_secret_basic, login_hint=alice, binding_message=W4SCT)");
    let ack = app
        .bc_authorize(
            "shop",
            &[
                ("scope", "openid profile"),
                ("login_hint", "alice"),
                ("binding_message", "W4SCT"),
            ],
        )
        .await;
    anyhow::ensure!(ack.status == 200, "bc-authorize failed: {ack:?}");
    let id = ack.body["auth_req_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut interval = ack.body["interval"].as_u64().unwrap_or(5);
    println!(
        "    ← auth_req_id={}  expires_in={}  interval={interval}",
        short(&id),
        ack.body["expires_in"]
    );

    let notification = app.device.wait_for_notification("alice").await;
    step(
        5,
        "alice's phone receives the proxy's webhook (HMAC-signed):",
    );
    println!("    signature valid: {}", notification.signature_valid);
    println!(
        "    binding_message: {}",
        notification.body["binding_message"]
    );
    println!("    approval_url: {}", notification.approval_url());
    step(
        6,
        "alice opens the approval page, checks the code W4SCT, presses \"Approve and sign in\",",
    );
    println!("    and signs in and consents at the IdP; meanwhile the client polls.");
    let approval = notification.approval_url().to_owned();
    let phone = tokio::spawn(async move {
        approve_and_sign_in(&approval, &Action::SignInAs("alice".into())).await
    });

    step(
        7,
        "The client polls POST /token every `interval` seconds; the proxy answers from its store:",
    );
    let mut polls = 0;
    let tokens = loop {
        let reply = app.poll("shop", &id).await;
        polls += 1;
        match reply.error() {
            "authorization_pending" => println!("    ← authorization_pending"),
            "slow_down" => {
                interval = reply.body["interval"].as_u64().unwrap_or(interval + 5);
                println!("    ← slow_down (interval now {interval}s)");
            }
            _ if reply.status == 200 => break reply.body,
            other => anyhow::bail!(
                "the login ended with {other}: {}",
                reply.body["error_description"]
            ),
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
    };
    let page = phone.await??;
    let title = page
        .body
        .split("<h1>")
        .nth(1)
        .and_then(|s| s.split("</h1>").next())
        .unwrap_or("?");
    println!(
        "    alice's phone, back from the IdP at the proxy's /callback, shows \"{title}\" (HTTP {})",
        page.status
    );

    step(
        8,
        &format!("After {polls} poll(s) the client holds the tokens (truncated):"),
    );
    for key in ["access_token", "id_token", "token_type", "expires_in"] {
        match &tokens[key] {
            Value::String(s) if key.ends_with("token") => println!("    {key}: {}", short(s)),
            v => println!("    {key}: {v}"),
        }
    }
    let payload = tokens["id_token"]
        .as_str()
        .unwrap_or_default()
        .split('.')
        .nth(1)
        .unwrap_or_default();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    println!(
        "    id_token sub: {}  iss: {}",
        claims["sub"], claims["iss"]
    );

    let again = app.poll("shop", &id).await;
    step(
        9,
        &format!(
            "Polling again: {} — tokens are handed out exactly once.",
            again.error()
        ),
    );

    let stats = app.idp.stats().await?;
    step(
        10,
        &format!(
            "The IdP served {} code exchange(s) at POST /token; none of the {} polls reached it.",
            stats.count("POST /token"),
            polls + 1
        ),
    );
    println!("\ndemo finished: OK");
    Ok(())
}
