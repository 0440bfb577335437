//! Client authentication at `/bc-authorize` and `/token`: exactly one
//! method, and the one the client registered. `client_secret_basic` and
//! `client_secret_post` (RFC 6749 §2.3.1) compare secrets in constant time;
//! `private_key_jwt` (RFC 7523) verifies a single-use signed assertion;
//! `tls_client_auth` and `self_signed_tls_client_auth` (RFC 8705) check the
//! TLS client certificate.
use std::sync::Arc;

use actix_web::http::header::AUTHORIZATION;
use actix_web::HttpRequest;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::decode_header;

use crate::clients::{Client, ClientRegistry};
use crate::configuration::TokenEndpointAuthMethod;
use crate::error::OAuthError;
use crate::form::{decode, FormParams};
use crate::jwt;
use crate::store::ReplayGuard;
use crate::tls::{subject_parts, Mtls};

/// Form parameters that carry client authentication, not request content.
pub const AUTH_PARAMS: [&str; 4] = [
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
];

/// RFC 7523 §2.2.
pub use ciba_proto::CLIENT_ASSERTION_TYPE as JWT_BEARER;

/// What authentication needs besides the request.
pub struct AuthContext<'a> {
    pub store: &'a dyn ReplayGuard,
    /// The client certificate of this request, if any (DER).
    pub certificate: Option<Vec<u8>>,
    pub mtls: &'a Mtls,
    pub now_secs: u64,
    /// Accepted `aud` values of a client assertion: the issuer and our endpoints.
    pub audiences: &'a [&'a str],
}

fn failed() -> OAuthError {
    OAuthError::InvalidClient("client authentication failed".into())
}

fn differs() -> OAuthError {
    OAuthError::InvalidClient("client_id in the form differs from the authenticated client".into())
}

/// Authenticates the caller by exactly one method, the one it registered.
pub async fn authenticate(
    clients: &ClientRegistry,
    req: &HttpRequest,
    form: &FormParams,
    ctx: &AuthContext<'_>,
) -> Result<Arc<Client>, OAuthError> {
    let basic = basic_credentials(req)?;
    let methods = [
        basic.is_some(),
        form.get("client_secret").is_some(),
        form.get("client_assertion").is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(OAuthError::InvalidRequest(
            "use exactly one client authentication method".into(),
        ));
    }
    let (client, method) = if let Some((id, secret)) = basic {
        if form.get("client_id").is_some_and(|f| f != id) {
            return Err(differs());
        }
        (
            by_secret(clients, &id, &secret)?,
            TokenEndpointAuthMethod::ClientSecretBasic,
        )
    } else if let Some(secret) = form.get("client_secret") {
        let id = form.get("client_id").ok_or_else(|| {
            OAuthError::InvalidClient("client_secret sent without client_id".into())
        })?;
        (
            by_secret(clients, id, secret)?,
            TokenEndpointAuthMethod::ClientSecretPost,
        )
    } else if let Some(assertion) = form.get("client_assertion") {
        (
            by_assertion(clients, form, assertion, ctx).await?,
            TokenEndpointAuthMethod::PrivateKeyJwt,
        )
    } else if let Some(id) = form.get("client_id") {
        let client = clients.get(id).ok_or_else(failed)?;
        by_certificate(&client, ctx).await?;
        let method = client.auth_method;
        (client, method)
    } else {
        return Err(OAuthError::InvalidClient(
            "client authentication is required".into(),
        ));
    };
    if client.auth_method != method {
        return Err(OAuthError::InvalidClient(format!(
            "this client must authenticate with {}",
            client.auth_method.as_str()
        )));
    }
    Ok(client)
}

fn by_secret(clients: &ClientRegistry, id: &str, secret: &str) -> Result<Arc<Client>, OAuthError> {
    let client = clients.get(id).ok_or_else(failed)?;
    if !client.secret_matches(secret) {
        return Err(failed());
    }
    Ok(client)
}

/// RFC 7523 §3: `iss` = `sub` = client_id, `aud` is us, `exp` required,
/// `jti` single-use, signed with one of the client's keys and algorithms.
async fn by_assertion(
    clients: &ClientRegistry,
    form: &FormParams,
    assertion: &str,
    ctx: &AuthContext<'_>,
) -> Result<Arc<Client>, OAuthError> {
    let invalid = |why: &str| OAuthError::InvalidClient(format!("client assertion: {why}"));
    if form.get("client_assertion_type") != Some(JWT_BEARER) {
        return Err(invalid(&format!(
            "client_assertion_type must be {JWT_BEARER}"
        )));
    }
    let header = decode_header(assertion).map_err(|_| invalid("not a well-formed signed JWT"))?;
    let claimed = jwt::unverified_claims(assertion).ok_or_else(|| invalid("malformed payload"))?;
    let id = jwt::string(&claimed, "sub").map_err(|e| invalid(&e))?;
    if form.get("client_id").is_some_and(|f| f != id) {
        return Err(differs());
    }
    let client = clients.get(id).ok_or_else(failed)?;
    if client.auth_method != TokenEndpointAuthMethod::PrivateKeyJwt {
        return Err(OAuthError::InvalidClient(format!(
            "this client must authenticate with {}",
            client.auth_method.as_str()
        )));
    }
    if !client.assertion_algs.contains(&header.alg) {
        return Err(invalid(&format!(
            "{:?} is not accepted for this client",
            header.alg
        )));
    }
    let claims = client
        .verify_signed(assertion, &header)
        .await
        .map_err(|e| invalid(&e))?;
    if jwt::string(&claims, "iss").map_err(|e| invalid(&e))? != client.id
        || jwt::string(&claims, "sub").map_err(|e| invalid(&e))? != client.id
    {
        return Err(invalid("iss and sub must both be the client_id"));
    }
    jwt::check_audience(&claims, ctx.audiences).map_err(|e| invalid(&e))?;
    jwt::check_times(&claims, ctx.now_secs, false).map_err(|e| invalid(&e))?;
    let jti = jwt::string(&claims, "jti").map_err(|e| invalid(&e))?;
    let ttl = jwt::replay_window_secs(&claims, ctx.now_secs);
    if !ctx
        .store
        .use_once(&format!("assertion:{}:{jti}", client.id), ttl)
        .await?
    {
        return Err(invalid("jti has been used before"));
    }
    Ok(client)
}

/// RFC 8705 §2: the client proves itself with its TLS client certificate.
async fn by_certificate(client: &Client, ctx: &AuthContext<'_>) -> Result<(), OAuthError> {
    let invalid = |why: &str| OAuthError::InvalidClient(format!("client certificate: {why}"));
    let uses_certificate = matches!(
        client.auth_method,
        TokenEndpointAuthMethod::TlsClientAuth | TokenEndpointAuthMethod::SelfSignedTlsClientAuth
    );
    if !uses_certificate {
        return Err(OAuthError::InvalidClient(format!(
            "this client must authenticate with {}",
            client.auth_method.as_str()
        )));
    }
    let der = ctx
        .certificate
        .as_deref()
        .ok_or_else(|| invalid("none was presented"))?;
    match client.auth_method {
        TokenEndpointAuthMethod::TlsClientAuth => {
            if !ctx.mtls.issued_by_ca(der) {
                return Err(invalid("not issued by a trusted CA"));
            }
            if subject_parts(der).as_ref() != client.subject_dn.as_ref() {
                return Err(invalid("the subject is not the registered one"));
            }
        }
        _ => {
            let keys = client
                .keys
                .as_ref()
                .ok_or_else(|| invalid("the client has no registered keys"))?;
            let registered = keys
                .has_certificate(der)
                .await
                .map_err(|e| invalid(&format!("the registered keys cannot be read ({e})")))?;
            if !registered {
                return Err(invalid(
                    "it is not one of the client's registered certificates",
                ));
            }
        }
    }
    Ok(())
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        // RFC 6749 §5.2: a request that "includes multiple credentials" is
        // invalid_request (400), not invalid_client: nothing was checked
        // yet, and which credential would a 401 challenge? Reading only
        // the first header would let a second one pass unseen (§2.3: one
        // method per request).
        return Err(OAuthError::InvalidRequest(
            "send one Authorization header, not several".into(),
        ));
    }
    let malformed = || OAuthError::InvalidClient("malformed Basic authorization header".into());
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient(format!(
            "unsupported authorization scheme {scheme}; use Basic"
        )));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    // Strict: an escape that is not UTF-8 is malformed, not a U+FFFD.
    let unescape = |s: &str| decode(s.as_bytes()).map_err(|_| malformed());
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::tests::registry;
    use crate::clock::SystemClock;
    use crate::store::MemoryStore;
    use actix_web::test::TestRequest;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    async fn auth(
        clients: &ClientRegistry,
        req: &HttpRequest,
        form: &FormParams,
    ) -> Result<Arc<Client>, OAuthError> {
        let store = MemoryStore::new(Arc::new(SystemClock));
        let mtls = Mtls::from_settings(&Default::default(), false).unwrap();
        let ctx = AuthContext {
            store: &store,
            certificate: None,
            mtls: &mtls,
            now_secs: 0,
            audiences: &["https://proxy.example"],
        };
        authenticate(clients, req, form, &ctx).await
    }

    #[actix_web::test]
    async fn basic_credentials_authenticate() {
        let reg = registry("").unwrap();
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, basic("shop", "s3cret")))
            .to_http_request();
        assert_eq!(
            auth(&reg, &req, &FormParams::default()).await.unwrap().id,
            "shop"
        );
    }

    #[actix_web::test]
    async fn wrong_secret_and_unknown_client_fail_alike() {
        let reg = registry("").unwrap();
        for (id, secret) in [("shop", "nope"), ("ghost", "s3cret")] {
            let req = TestRequest::default()
                .insert_header((AUTHORIZATION, basic(id, secret)))
                .to_http_request();
            let e = auth(&reg, &req, &FormParams::default()).await.unwrap_err();
            assert_eq!(e.description(), "client authentication failed");
        }
    }

    #[actix_web::test]
    async fn post_credentials_are_refused_for_a_basic_client() {
        let reg = registry("").unwrap();
        let form = FormParams::parse(b"client_id=shop&client_secret=s3cret").unwrap();
        let e = auth(&reg, &TestRequest::default().to_http_request(), &form)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_client");
    }

    #[actix_web::test]
    async fn two_methods_at_once_are_invalid_request() {
        let reg = registry("").unwrap();
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, basic("shop", "s3cret")))
            .to_http_request();
        let form = FormParams::parse(b"client_id=shop&client_secret=s3cret").unwrap();
        assert_eq!(
            auth(&reg, &req, &form).await.unwrap_err().code(),
            "invalid_request"
        );
    }

    #[actix_web::test]
    async fn urlencoded_basic_credentials_are_decoded() {
        let mut s = crate::clients::tests::settings("");
        s.client_secret = Some(secrecy::SecretString::from("a:b c"));
        let reg = ClientRegistry::from_settings(&[s], false, &reqwest::Client::new()).unwrap();
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, basic("shop", "a%3Ab+c")))
            .to_http_request();
        assert!(auth(&reg, &req, &FormParams::default()).await.is_ok());
    }

    #[actix_web::test]
    async fn a_second_authorization_header_is_invalid_request() {
        let reg = registry("").unwrap();
        for second in [
            basic("shop", "s3cret"),
            basic("ghost", "x"),
            "Bearer t".into(),
        ] {
            let req = TestRequest::default()
                .append_header((AUTHORIZATION, basic("shop", "s3cret")))
                .append_header((AUTHORIZATION, second))
                .to_http_request();
            let e = auth(&reg, &req, &FormParams::default()).await.unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert!(e.description().contains("Authorization"));
        }
    }

    #[actix_web::test]
    async fn basic_credentials_that_are_not_utf8_once_unescaped_are_malformed() {
        let reg = registry("").unwrap();
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, basic("shop", "s3cret%FF")))
            .to_http_request();
        let e = auth(&reg, &req, &FormParams::default()).await.unwrap_err();
        assert_eq!(e.description(), "malformed Basic authorization header");
    }

    #[actix_web::test]
    async fn a_garbage_assertion_is_invalid_client() {
        let reg = registry("").unwrap();
        let form = FormParams::parse(
            format!("client_assertion_type={JWT_BEARER}&client_assertion=a.b.c").as_bytes(),
        )
        .unwrap();
        let e = auth(&reg, &TestRequest::default().to_http_request(), &form)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_client");
    }
}
