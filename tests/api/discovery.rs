use ciba_proxy_e2e::app::TestApp;

#[tokio::test]
async fn discovery_document_describes_the_ciba_endpoints() {
    let app = TestApp::spawn().await;
    let doc = app.get("/.well-known/openid-configuration").await;
    assert_eq!(doc.status, 200);
    let body = &doc.body;
    assert_eq!(body["issuer"], app.issuer);
    assert_eq!(
        body["backchannel_authentication_endpoint"],
        app.url("/bc-authorize")
    );
    assert_eq!(body["token_endpoint"], app.url("/token"));
    assert_eq!(
        body["grant_types_supported"][0],
        "urn:openid:params:grant-type:ciba"
    );
    assert_eq!(
        body["backchannel_token_delivery_modes_supported"][0],
        "poll"
    );
    assert_eq!(body["backchannel_user_code_parameter_supported"], false);
    let algs = body["backchannel_authentication_request_signing_alg_values_supported"].to_string();
    assert!(
        algs.contains("PS256") && algs.contains("ES256") && !algs.contains("HS256"),
        "{algs}"
    );
    assert!(body["token_endpoint_auth_methods_supported"]
        .to_string()
        .contains("client_secret_basic"));
    assert_eq!(body["upstream_issuer"], app.idp.issuer);
    assert_eq!(body["jwks_uri"], format!("{}/jwks", app.idp.issuer));
}

#[tokio::test]
async fn health_and_readiness_report_ok_when_store_and_idp_are_up() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status, 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.body["store"], true);
    assert_eq!(ready.body["upstream"], true);
}

#[tokio::test]
async fn an_unreachable_idp_makes_the_proxy_not_ready_and_requests_retryable() {
    // Nothing listens on port 9 of the loopback.
    let app = TestApp::builder()
        .upstream_toml("discovery_url = \"http://127.0.0.1:9/.well-known/openid-configuration\"")
        .spawn()
        .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["upstream"], false);
    assert_eq!(ready.body["store"], true);
    let reply = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    reply.assert_error(503, "temporarily_unavailable");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(
        app.get("/.well-known/openid-configuration").await.status,
        503
    );
}
