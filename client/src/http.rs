//! One POST with this client's authentication, and the JSON reply.
use reqwest::header::AUTHORIZATION;
use serde_json::Value;

use crate::auth::credentials;
use crate::cli::Config;
use crate::{codes, random_token, Clock, Failure};

/// A JSON response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

/// POSTs `form` to `endpoint` with this client's authentication.
pub(crate) async fn post(
    config: &Config,
    endpoint: &str,
    mut form: Vec<(&'static str, String)>,
    clock: &dyn Clock,
) -> Result<Reply, Failure> {
    let credentials = credentials(
        &config.client_id,
        &config.auth,
        endpoint,
        clock.now_secs(),
        &random_token(16),
    )?;
    form.extend(credentials.form);
    let mut request = config
        .http
        .post(endpoint)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form);
    if let Some(value) = credentials.authorization {
        request = request.header(AUTHORIZATION, value);
    }
    reply(request.send().await.map_err(network)?).await
}

/// The error and its causes (TLS, DNS, connection), without the URL.
pub(crate) fn network(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let mut description = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        description.push_str(": ");
        description.push_str(&c.to_string());
        cause = c.source();
    }
    Failure::new(codes::NETWORK_ERROR, description)
}

/// The reply as JSON; a redirect or a body that is not JSON is a failure.
pub(crate) async fn reply(response: reqwest::Response) -> Result<Reply, Failure> {
    let status = response.status();
    if status.is_redirection() {
        return Err(Failure::new(
            codes::INVALID_RESPONSE,
            format!(
                "HTTP {status} redirect from {}; redirects are not followed",
                response.url()
            ),
        ));
    }
    let text = response.text().await.map_err(network)?;
    let body = serde_json::from_str(&text).map_err(|_| {
        Failure::new(
            codes::INVALID_RESPONSE,
            format!("HTTP {} with a body that is not JSON", status.as_u16()),
        )
    })?;
    Ok(Reply {
        status: status.as_u16(),
        body,
    })
}
