//! `make demo-ciba`: one whole CIBA login through the IdP's own CIBA
//! (`upstream.kind = "ciba"`), narrated. It starts the test IdP
//! (oidc-provider with its CIBA feature), ciba-proxy with the in-memory
//! store, and plays the consumption device and the user's authentication
//! device at the IdP. The point: the client polls the proxy as often as it
//! likes; the IdP sees one backchannel request and a few token calls.
use std::time::Duration;

use ciba_proxy_e2e::app::TestApp;
use ciba_proxy_e2e::idp::TestIdp;

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("ciba-proxy demo (native CIBA upstream): a client asks for alice's consent;");
    println!("the IdP reaches alice itself; alice approves after about 8 seconds.");
    let idp: &'static TestIdp = Box::leak(Box::new(TestIdp::start()?));
    let app = TestApp::builder()
        .idp(idp)
        .ciba_upstream("poll")
        .spawn()
        .await;
    step(
        1,
        &format!(
            "Test IdP (oidc-provider, CIBA on) at {}; ciba-proxy at {} with upstream.kind = \"ciba\"",
            idp.issuer, app.issuer
        ),
    );

    step(
        2,
        "The client sends POST /bc-authorize  (login_hint=alice, binding_message=W4SCT)",
    );
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
    println!(
        "    ← the proxy's auth_req_id ({} chars), expires_in={}, interval={}",
        id.len(),
        ack.body["expires_in"],
        ack.body["interval"]
    );

    let forwarded = idp
        .wait_ciba_request_of(&app.upstream_clients[0], Duration::from_secs(10))
        .await?;
    step(
        3,
        "The proxy forwarded it to the IdP's /backchannel; the IdP's device hook got:",
    );
    println!(
        "    login_hint={:?}  binding_message={:?}  scope={:?}",
        forwarded.login_hint.as_deref().unwrap_or_default(),
        forwarded.binding_message.as_deref().unwrap_or_default(),
        forwarded.scope.as_deref().unwrap_or_default()
    );
    println!("    (the IdP's own auth_req_id never leaves the proxy)");

    step(
        4,
        "The client polls the proxy every second; every answer comes from the proxy's store:",
    );
    let approve_at = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut approved = false;
    let mut polls = 0;
    let tokens = loop {
        if !approved && tokio::time::Instant::now() >= approve_at {
            idp.approve(&forwarded.id).await?;
            approved = true;
            println!("    … alice approves on her device at the IdP");
        }
        let reply = app.poll("shop", &id).await;
        polls += 1;
        match reply.error() {
            "authorization_pending" | "slow_down" => println!("    ← {}", reply.error()),
            _ if reply.status == 200 => break reply.body,
            other => anyhow::bail!(
                "the login ended with {other}: {}",
                reply.body["error_description"]
            ),
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        anyhow::ensure!(polls < 100, "no tokens after {polls} polls");
    };
    step(
        5,
        &format!(
            "After {polls} polls the client holds the IdP's tokens: token_type={}, expires_in={}",
            tokens["token_type"], tokens["expires_in"]
        ),
    );
    let again = app.poll("shop", &id).await;
    step(
        6,
        &format!(
            "Polling again: {} — tokens are handed out exactly once.",
            again.error()
        ),
    );
    let stats = idp.stats().await?;
    step(
        7,
        &format!(
            "The IdP saw {} backchannel request and {} token call(s) for {} client polls.",
            stats.count("POST /backchannel"),
            stats.count("POST /token"),
            polls + 1
        ),
    );
    anyhow::ensure!(stats.count("POST /token") <= 3, "too many token calls");
    println!("\ndemo finished: OK");
    Ok(())
}
