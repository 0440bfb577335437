//! The OpenAPI document (`proxy/openapi.json`, served at `/openapi.json`)
//! against the code. The routes `startup.rs` registers and the operations
//! the document lists are the same set; the running proxy serves every
//! documented operation and answers every other method with 405 and the
//! documented ones in `Allow`; and real answers, from discovery to the
//! tokens, have the documented status, headers, media type and body.
//! schemathesis (`make test`, `tests/schemathesis/`) then fuzzes every
//! operation against the same document. The checks here are shared with
//! the operator port's document (`openapi_operator.rs`).
use std::collections::{BTreeMap, BTreeSet};

use ciba_proxy_e2e::app::{ClientSpec, Reply, TestApp, CIBA_GRANT};
use ciba_proxy_e2e::device::{approve_and_sign_in, Action};
use reqwest::header::{HeaderMap, ALLOW, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

const DOCUMENT: &str = include_str!("../../proxy/openapi.json");
const OPERATOR_DOCUMENT: &str = include_str!("../../proxy/openapi-operator.json");

/// The methods an OpenAPI 3.1 path item can describe: probed at every path.
pub(crate) const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
];

/// An answer as the document describes it: status, headers, body text.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) async fn of(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        }
    }
}

impl From<&Reply> for Answer {
    fn from(reply: &Reply) -> Self {
        Self {
            status: reply.status.as_u16(),
            headers: reply.headers.clone(),
            body: match &reply.body {
                Value::String(text) => text.clone(),
                json => json.to_string(),
            },
        }
    }
}

/// A document, and checks of answers against it.
pub(crate) struct Spec {
    pub(crate) doc: Value,
    /// Its file, for messages.
    name: &'static str,
}

impl Spec {
    /// The public port's document.
    pub(crate) fn load() -> Self {
        Self::parse("proxy/openapi.json", DOCUMENT)
    }

    /// The operator port's document.
    pub(crate) fn operator() -> Self {
        Self::parse("proxy/openapi-operator.json", OPERATOR_DOCUMENT)
    }

    fn parse(name: &'static str, text: &str) -> Self {
        Self {
            doc: serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}")),
            name,
        }
    }

    /// `(METHOD, path template)` of every documented operation.
    pub(crate) fn operations(&self) -> BTreeSet<(String, String)> {
        let paths = self.doc["paths"].as_object().expect("paths");
        let mut operations = BTreeSet::new();
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method.to_lowercase()).is_some() {
                    operations.insert((method.to_owned(), path.clone()));
                }
            }
        }
        operations
    }

    /// Follows an OpenAPI `$ref` (to `#/components/...`) once.
    fn deref<'a>(&'a self, node: &'a Value) -> &'a Value {
        match node.get("$ref").and_then(Value::as_str) {
            Some(reference) => self
                .doc
                .pointer(reference.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("{reference} does not resolve")),
            None => node,
        }
    }

    /// Validates `instance` against `schema`, a schema of the document
    /// (JSON Schema 2020-12, formats asserted).
    pub(crate) fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        const LOCATION: &str = "urn:ciba-proxy:openapi-schema";
        // Every reference in the document is `#/components/...`: they
        // resolve against a root that carries the components.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        compiler.enable_format_assertions();
        let mut schemas = boon::Schemas::new();
        compiler
            .add_resource(LOCATION, root)
            .map_err(|e| format!("{e:#}"))?;
        let index = compiler
            .compile(LOCATION, &mut schemas)
            .map_err(|e| format!("the schema does not compile: {e:#}"))?;
        schemas
            .validate(instance, index)
            .map_err(|e| format!("{e:#}"))
    }

    /// Asserts that `answer`, to `method` at the path template `path`, is
    /// one the document describes: a listed status, every required header
    /// present and every documented header valid, a documented media type
    /// and a body that matches its schema.
    #[track_caller]
    pub(crate) fn check(&self, method: &str, path: &str, answer: &Answer) {
        let what = format!("{method} {path} → {}", answer.status);
        let operation = self.doc["paths"][path]
            .get(method.to_lowercase())
            .unwrap_or_else(|| panic!("{method} {path} is not in {}", self.name));
        let response = operation["responses"]
            .get(answer.status.to_string())
            .map(|r| self.deref(r))
            .unwrap_or_else(|| {
                panic!(
                    "{what}: the document does not list this status; body: {}",
                    excerpt(&answer.body)
                )
            });
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let header = self.deref(header);
                match answer.headers.get(name.as_str()) {
                    None => assert!(
                        header["required"] != true,
                        "{what}: the required header {name} is missing"
                    ),
                    Some(value) => {
                        let value = Value::String(value.to_str().unwrap_or("").to_owned());
                        self.validate(&header["schema"], &value)
                            .unwrap_or_else(|e| {
                                panic!("{what}: header {name}: {value} does not match: {e}")
                            });
                    }
                }
            }
        }
        let media_type = answer.headers.get(CONTENT_TYPE).map(|v| {
            let v = v.to_str().unwrap_or("");
            v.split(';').next().unwrap_or("").trim().to_lowercase()
        });
        match (response.get("content"), media_type) {
            (None, None) => {}
            (None, Some(media_type)) => assert!(
                answer.body.is_empty(),
                "{what}: a body ({media_type}) the document does not describe"
            ),
            (Some(_), None) => panic!("{what}: no Content-Type"),
            (Some(content), Some(media_type)) => {
                let schema = &content.get(&media_type).unwrap_or_else(|| {
                    panic!("{what}: {media_type} is not a documented media type")
                })["schema"];
                let instance = if media_type == "application/json" {
                    serde_json::from_str(&answer.body)
                        .unwrap_or_else(|e| panic!("{what}: the body is not JSON: {e}"))
                } else {
                    Value::String(answer.body.clone())
                };
                self.validate(schema, &instance).unwrap_or_else(|e| {
                    panic!(
                        "{what}: the body does not match the document: {e}\nbody: {}",
                        excerpt(&answer.body)
                    )
                });
            }
        }
    }

    #[track_caller]
    fn check_reply(&self, method: &str, path: &str, reply: &Reply) {
        self.check(method, path, &Answer::from(reply));
    }
}

impl Answer {
    /// Asserts a JSON error answer: status and code.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, error: &str) {
        let body: Value = serde_json::from_str(&self.body).unwrap_or_default();
        assert_eq!(
            (self.status, body["error"].as_str()),
            (status, Some(error)),
            "{self:?}"
        );
    }
}

fn excerpt(body: &str) -> String {
    body.chars().take(300).collect()
}

/// Every `"$ref"` in `node`, with where it is.
fn references(node: &Value, at: String, found: &mut Vec<(String, String)>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    found.push((at.clone(), value.as_str().unwrap_or("").to_owned()));
                } else {
                    references(value, format!("{at}/{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                references(item, format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// `const NAME: &str = "/...";` (a path) in a source file.
fn path_constants(source: &str) -> BTreeMap<String, String> {
    source
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let rest = line.strip_prefix("const ")?;
            let (name, value) = rest.split_once(": &str = ")?;
            let value = value.strip_suffix(';')?.trim_matches('"');
            value
                .starts_with('/')
                .then(|| (name.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

/// The path constants of every source file under `dir`; a name that
/// means two paths maps to "" (and is refused where it is used).
fn path_constants_under(dir: &std::path::Path, into: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("read proxy/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            path_constants_under(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).expect("read a source file");
            for (name, value) in path_constants(&source) {
                let known = into.entry(name).or_insert_with(|| value.clone());
                if *known != value {
                    known.clear();
                }
            }
        }
    }
}

/// `(METHOD, path)` of every route `proxy/src/<file>` (`startup.rs`, or
/// `operator.rs` for the operator port) registers, read from the source as
/// it is now. Registrations this reader does not understand fail the test
/// rather than go unseen: teach it the new form.
pub(crate) fn registered_routes(file: &str) -> BTreeSet<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/src");
    let startup = std::fs::read_to_string(src.join(file))
        .unwrap_or_else(|e| panic!("read proxy/src/{file}: {e}"));
    let mut constants = BTreeMap::new();
    path_constants_under(&src, &mut constants);
    routes_in(&startup, &constants)
}

/// [`registered_routes`] of a `startup.rs`, with the path constants of the
/// crate.
fn routes_in(startup: &str, constants: &BTreeMap<String, String>) -> BTreeSet<(String, String)> {
    let code: String = startup
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for unread in [
        "web::scope(",
        ".configure(",
        "web::service(",
        ".external_resource(",
        "Files::new(",
        "web::route()",
    ] {
        assert!(
            !code.contains(unread),
            "startup.rs registers routes with `{unread}`, which tests/api/openapi.rs cannot read yet"
        );
    }
    // Every `.service(` must be a `web::resource(`.
    for service in code.split(".service(").skip(1) {
        assert!(
            service.trim_start().starts_with("web::resource("),
            "startup.rs: a `.service(` that is not a `web::resource(`: {}",
            excerpt(service)
        );
    }
    let mut parts = code.split("web::resource(");
    let before = parts.next().unwrap_or("");
    assert!(
        !before.contains(".route("),
        "startup.rs: a `.route(` outside a `web::resource(`"
    );
    let mut routes = BTreeSet::new();
    for part in parts {
        let close = part.find(')').expect("web::resource(...)");
        let argument = part[..close].trim();
        let path = if argument.starts_with('"') {
            argument.trim_matches('"').to_owned()
        } else {
            let name = argument.rsplit("::").next().unwrap_or(argument);
            constants
                .get(name)
                .filter(|path| !path.is_empty())
                .cloned()
                .unwrap_or_else(|| {
                    panic!("startup.rs: web::resource({argument}): no one `const {name}: &str = \"/...\"` in proxy/src")
                })
        };
        let rest = &part[close + 1..];
        assert!(
            rest.trim_start().starts_with(".route("),
            "startup.rs: web::resource({argument}) without `.route(web::<method>()...)`"
        );
        for route in rest.split(".route(").skip(1) {
            let method = route
                .trim_start()
                .strip_prefix("web::")
                .and_then(|r| r.split_once("()"))
                .map(|(method, _)| method.to_uppercase())
                .filter(|method| METHODS.contains(&method.as_str()))
                .unwrap_or_else(|| {
                    panic!(
                        "startup.rs: a route of {path} that is not `web::<method>()`: {}",
                        excerpt(route)
                    )
                });
            routes.insert((method, path.clone()));
        }
    }
    routes
}

/// A concrete URL path for a path template.
fn concrete(path: &str) -> String {
    path.replace("{handle}", "not-a-handle")
        .replace("{auth_req_id}", "not-a-request")
}

/// Every path of `spec`, at `base`, with every method: the documented
/// ones are served and answer as documented (even to an empty request),
/// the others get 405 with the documented ones in `Allow` and the JSON
/// error body.
pub(crate) async fn probe_every_method(spec: &Spec, http: &reqwest::Client, base: &str) {
    let documented = spec.operations();
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let allowed: BTreeSet<&str> = documented
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.as_str())
            .collect();
        for method in METHODS {
            let response = http
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{base}{}", concrete(path)),
                )
                .send()
                .await
                .expect("reach the proxy");
            let answer = Answer::of(response).await;
            if allowed.contains(method) {
                // Served (not the router's bare 404), and as documented
                // even for an empty request.
                assert_ne!(answer.status, 405, "{method} {path}");
                spec.check(method, path, &answer);
                continue;
            }
            assert_eq!(answer.status, 405, "{method} {path}: {answer:?}");
            let allow: BTreeSet<&str> = answer
                .headers
                .get(ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"))
                .split(',')
                .map(str::trim)
                .collect();
            assert_eq!(allow, allowed, "{method} {path}: Allow");
            if method != "HEAD" {
                let body: Value = serde_json::from_str(&answer.body).expect("a JSON error");
                spec.validate(&json!({"$ref": "#/components/schemas/Error"}), &body)
                    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                assert_eq!(body["error"], "invalid_request", "{method} {path}");
            }
        }
    }
}

/// Every `$ref` of `spec` resolves and every operation has its own
/// operationId.
pub(crate) fn assert_well_formed(spec: &Spec) {
    let mut found = Vec::new();
    references(&spec.doc, String::new(), &mut found);
    for (at, reference) in found {
        let target = reference.strip_prefix('#').unwrap_or("not local");
        assert!(
            spec.doc.pointer(target).is_some(),
            "{}{at}: $ref {reference} does not resolve",
            spec.name
        );
    }
    let mut ids = BTreeSet::new();
    for (method, path) in spec.operations() {
        let id = spec.doc["paths"][&path][method.to_lowercase()]["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
    }
}

#[tokio::test]
async fn the_proxy_serves_this_openapi_3_1_document() {
    let app = TestApp::spawn().await;
    let spec = Spec::load();
    let response = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json");
    let answer = Answer::of(response).await;
    spec.check("GET", "/openapi.json", &answer);
    let served: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(served, spec.doc, "the proxy serves proxy/openapi.json");
    let version = spec.doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi: {version}");
    assert_well_formed(&spec);
}

#[test]
fn every_registered_route_is_documented_and_every_documented_one_registered() {
    let routes = registered_routes("startup.rs");
    let documented = Spec::load().operations();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes in startup.rs missing from proxy/openapi.json: {undocumented:?}; \
         operations in proxy/openapi.json that startup.rs does not register: {unrouted:?}"
    );
}

#[tokio::test]
async fn documented_operations_are_served_and_other_methods_get_405_with_allow() {
    let app = TestApp::spawn().await;
    probe_every_method(&Spec::load(), &app.http, &app.issuer).await;
}

#[tokio::test]
async fn client_answers_match_the_document() {
    let app = TestApp::builder().ciba(300, 600, 5).spawn().await;
    let spec = Spec::load();
    spec.check_reply(
        "GET",
        "/.well-known/openid-configuration",
        &app.get("/.well-known/openid-configuration").await,
    );
    spec.check_reply("GET", "/healthz", &app.get("/healthz").await);
    spec.check_reply("GET", "/readyz", &app.get("/readyz").await);

    // Refusals at /bc-authorize.
    let bc = "/bc-authorize";
    for (params, error) in [
        (vec![("login_hint", "alice")], "invalid_request"),
        (
            vec![("scope", "openid payments"), ("login_hint", "alice")],
            "invalid_scope",
        ),
        (
            vec![
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("binding_message", "a\u{202e}b"),
            ],
            "invalid_binding_message",
        ),
    ] {
        let reply = app.bc_authorize("shop", &params).await;
        reply.assert_error(400, error);
        spec.check_reply("POST", bc, &reply);
    }
    let wrong_secret = Answer::of(
        app.http
            .post(app.url(bc))
            .basic_auth("shop", Some("wrong"))
            .form(&[("scope", "openid"), ("login_hint", "alice")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    wrong_secret.assert_error(401, "invalid_client");
    spec.check("POST", bc, &wrong_secret);

    // A request, polled: pending, too fast, then the tokens.
    app.device.on("alice", Action::Ignore);
    let ack = app
        .bc_authorize(
            "shop",
            &[("scope", "openid profile"), ("login_hint", "alice")],
        )
        .await;
    spec.check_reply("POST", bc, &ack);
    let id = ack.body["auth_req_id"].as_str().expect("auth_req_id");
    let pending = app.poll("shop", id).await;
    pending.assert_error(400, "authorization_pending");
    spec.check_reply("POST", "/token", &pending);
    let too_fast = app.poll("shop", id).await;
    too_fast.assert_error(400, "slow_down");
    spec.check_reply("POST", "/token", &too_fast);

    let approval = app.device.wait_for_notification("alice").await;
    let landed = approve_and_sign_in(approval.approval_url(), &Action::SignInAs("alice".into()))
        .await
        .expect("sign in");
    assert_eq!(landed.status, 200, "{landed:?}");
    let tokens = app.poll("shop", id).await;
    assert_eq!(tokens.status, 200, "{tokens:?}");
    spec.check_reply("POST", "/token", &tokens);
    let again = app.poll("shop", id).await;
    again.assert_error(400, "invalid_grant");
    spec.check_reply("POST", "/token", &again);

    let unsupported = app
        .post_as(
            "shop",
            "/token",
            &[("grant_type", "password"), ("auth_req_id", id)],
        )
        .await;
    unsupported.assert_error(400, "unsupported_grant_type");
    spec.check_reply("POST", "/token", &unsupported);
    let anonymous = Answer::of(
        app.http
            .post(app.url("/token"))
            .form(&[("grant_type", CIBA_GRANT), ("auth_req_id", id)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    anonymous.assert_error(401, "invalid_client");
    spec.check("POST", "/token", &anonymous);
}

#[tokio::test]
async fn limits_and_outages_are_answered_as_documented() {
    ciba_proxy_e2e::app::clear_of_a_minute_boundary().await;
    let spec = Spec::load();
    let app = TestApp::builder()
        .sections("[limits]\nrequests_per_client_per_minute = 2\npending_per_user = 1\n")
        .spawn()
        .await;
    app.device.on("alice", Action::Ignore);
    app.start("shop", "alice").await;
    let busy = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    busy.assert_error(403, "access_denied");
    spec.check_reply("POST", "/bc-authorize", &busy);
    let limited = app
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "bob")])
        .await;
    limited.assert_error(429, "temporarily_unavailable");
    spec.check_reply("POST", "/bc-authorize", &limited);

    // Discovery with long polling on names its wait.
    let long_polling = TestApp::builder()
        .ciba_toml("long_poll_secs = 5")
        .spawn()
        .await;
    let discovery = long_polling.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.body["backchannel_long_poll_secs"], 5);
    spec.check_reply("GET", "/.well-known/openid-configuration", &discovery);

    // Nothing listens on port 9 of the loopback.
    let unreachable = TestApp::builder()
        .upstream_toml("discovery_url = \"http://127.0.0.1:9/.well-known/openid-configuration\"")
        .spawn()
        .await;
    for path in ["/readyz", "/.well-known/openid-configuration"] {
        let reply = unreachable.get(path).await;
        assert_eq!(reply.status, 503, "{path}: {reply:?}");
        spec.check_reply("GET", path, &reply);
    }
    let reply = unreachable
        .bc_authorize("shop", &[("scope", "openid"), ("login_hint", "alice")])
        .await;
    reply.assert_error(503, "temporarily_unavailable");
    spec.check_reply("POST", "/bc-authorize", &reply);
}

/// The value of the page's first form field `name`.
fn form_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("the field") + marker.len();
    let end = html[start..].find('"').expect("its end") + start;
    html[start..end].to_owned()
}

#[tokio::test]
async fn pages_and_the_upstream_ping_are_answered_as_documented() {
    let app = TestApp::builder()
        .clients(vec![ClientSpec::basic("shop")])
        .spawn()
        .await;
    let spec = Spec::load();
    let page = "/approve/{handle}";
    spec.check_reply(
        "GET",
        "/assets/ciba.css",
        &app.get("/assets/ciba.css").await,
    );
    spec.check_reply("GET", page, &app.get("/approve/not-a-handle").await);
    spec.check_reply("GET", "/callback", &app.get("/callback").await);
    spec.check_reply(
        "GET",
        "/callback",
        &app.get("/callback?state=unknown&code=x").await,
    );

    // Two live requests: one approved (303 to the IdP), one denied.
    for user in ["alice", "bob"] {
        app.device.on(user, Action::Ignore);
        app.start("shop", user).await;
    }
    let post = |url: String, form: Vec<(&'static str, String)>| {
        let http = app.http.clone();
        async move { Answer::of(http.post(url).form(&form).send().await.unwrap()).await }
    };
    for (user, answer) in [("alice", "approve"), ("bob", "deny")] {
        let url = app
            .device
            .wait_for_notification(user)
            .await
            .approval_url()
            .to_owned();
        let path = url.strip_prefix(&app.issuer).unwrap().to_owned();
        let shown = app.get(&path).await;
        assert_eq!(shown.status, 200, "{shown:?}");
        spec.check_reply("GET", page, &shown);
        let operation = format!("{page}/{answer}");
        let forged = post(format!("{url}/{answer}"), vec![("csrf", "forged".into())]).await;
        assert_eq!(forged.status, 403);
        spec.check("POST", &operation, &forged);
        let csrf = form_field(shown.body.as_str().unwrap_or(""), "csrf");
        let answered = post(format!("{url}/{answer}"), vec![("csrf", csrf.clone())]).await;
        assert_eq!(
            answered.status,
            if answer == "approve" { 303 } else { 200 },
            "{answered:?}"
        );
        spec.check("POST", &operation, &answered);
        // Approve leads to the sign-in again until it completes (the user
        // may have closed the IdP's page); a denied request has ended.
        let again = post(format!("{url}/{answer}"), vec![("csrf", csrf)]).await;
        assert_eq!(
            again.status,
            if answer == "approve" { 303 } else { 410 },
            "{again:?}"
        );
        spec.check("POST", &operation, &again);
    }

    // Not a native-CIBA deployment: no ping can be valid.
    let ping = "/upstream/ping";
    let unauthenticated = Answer::of(
        app.http
            .post(app.url(ping))
            .json(&json!({"auth_req_id": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    unauthenticated.assert_error(401, "invalid_token");
    spec.check("POST", ping, &unauthenticated);
    let two_headers = Answer::of(
        app.http
            .post(app.url(ping))
            .header("Authorization", "Bearer a")
            .header("Authorization", "Bearer b")
            .json(&json!({"auth_req_id": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    two_headers.assert_error(400, "invalid_request");
    spec.check("POST", ping, &two_headers);
}

#[tokio::test]
async fn device_answers_match_the_document() {
    use ciba_proxy_e2e::app::StoreKind;
    use ciba_proxy_e2e::device_key::{offer_enrolment, post_registration, DeviceKey, TestDevice};
    let spec = Spec::load();
    let app = TestApp::builder().store(StoreKind::Redis).spawn().await;
    let (register, requests, decision, remove) = (
        "/devices",
        "/devices/requests",
        "/devices/decision",
        "/devices/remove",
    );
    let qr = offer_enrolment(&app, "alice").await;
    let key = DeviceKey::generate();
    let jws = key.registration(&qr, "Phone", "Pixel 8", None);
    spec.check_reply(
        "POST",
        register,
        &post_registration(&app, &jws, "text/plain").await,
    );
    spec.check_reply(
        "POST",
        register,
        &post_registration(&app, "x.y.z", "application/jose").await,
    );
    let registered = post_registration(&app, &jws, "application/jose").await;
    assert_eq!(registered.status, 201, "{registered:?}");
    spec.check_reply("POST", register, &registered);
    spec.check_reply(
        "POST",
        register,
        &post_registration(&app, &jws, "application/jose").await,
    );

    let device = TestDevice::register(&app, "alice").await;
    let bob = TestDevice::register(&app, "bob").await;
    app.device.on("alice", Action::Ignore);
    app.start("shop", "alice").await;
    let listed = device.requests(&app).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    spec.check_reply("GET", requests, &listed);
    let handle = listed.body["requests"][0]["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let unauthenticated = Answer::of(app.http.get(app.url(requests)).send().await.unwrap()).await;
    unauthenticated.assert_error(401, "invalid_token");
    spec.check("GET", requests, &unauthenticated);
    for reply in [
        bob.decide(&app, &handle, "approve", None).await,
        device.decide(&app, "not-a-handle", "approve", None).await,
        device.decide(&app, &handle, "maybe", None).await,
        device.decide(&app, &handle, "approve", None).await,
        device.decide(&app, &handle, "deny", None).await,
        device.decide(&app, &handle, "deny", None).await,
    ] {
        spec.check_reply("POST", decision, &reply);
    }
    let removed = device.remove(&app).await;
    assert_eq!(removed.status, 204, "{removed:?}");
    spec.check_reply("POST", remove, &removed);
    spec.check_reply("POST", remove, &device.remove(&app).await);
}

#[test]
fn the_route_reader_sees_a_new_route_and_refuses_what_it_cannot_read() {
    let startup = |extra: &str| {
        format!(
            r#"App::new()
                .service(
                    web::resource(routes::TOKEN_PATH)
                        .route(web::post().to(routes::token::token))
                        .default_service(method_not_allowed("POST")),
                )
                // .service(web::resource("/commented-out").route(web::get().to(x)))
                {extra}"#
        )
    };
    let routes_mod = "pub const TOKEN_PATH: &str = \"/token\";\n";
    let pair = |m: &str, p: &str| (m.to_owned(), p.to_owned());
    assert_eq!(
        routes_in(&startup(""), &path_constants(routes_mod)),
        BTreeSet::from([pair("POST", "/token")])
    );
    let added = startup(
        r#".service(web::resource("/audit").route(web::get().to(a)).route(web::delete().to(b)))"#,
    );
    assert_eq!(
        routes_in(&added, &path_constants(routes_mod)),
        BTreeSet::from([
            pair("POST", "/token"),
            pair("GET", "/audit"),
            pair("DELETE", "/audit")
        ])
    );
    for unreadable in [
        ".service(web::scope(\"/admin\").route(\"/x\", web::get().to(x)))",
        ".service(routes::audit::list)",
        ".configure(routes::audit::configure)",
        ".service(web::resource(AUDIT_PATH).route(web::get().to(a)))",
        ".service(web::resource(\"/x\").to(handler))",
        ".route(\"/x\", web::get().to(x))",
    ] {
        let source = startup(unreadable);
        let read = std::panic::catch_unwind(|| routes_in(&source, &path_constants(routes_mod)));
        assert!(
            read.is_err(),
            "read {unreadable} without complaint: {read:?}"
        );
    }
}

#[test]
fn the_answer_checker_refuses_what_the_document_does_not_describe() {
    let spec = Spec::load();
    let error = json!({"$ref": "#/components/schemas/Error"});
    let valid = json!({"error": "slow_down", "error_description": "x", "interval": 10});
    assert_eq!(spec.validate(&error, &valid), Ok(()));
    for invalid in [
        json!({"error": "bogus", "error_description": "x"}),
        json!({"error": "slow_down", "error_description": "x"}),
        json!({"error": "invalid_grant", "error_description": "x", "interval": 5}),
        json!({"error": "invalid_grant"}),
        json!({"error": "invalid_grant", "error_description": "x", "detail": "y"}),
    ] {
        assert!(spec.validate(&error, &invalid).is_err(), "{invalid}");
    }
    let answer = |status: u16, headers: &[(&'static str, &'static str)], body: &str| Answer {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect(),
        body: body.to_owned(),
    };
    let json_type = ("content-type", "application/json");
    let no_store = ("cache-control", "no-store");
    let basic = ("www-authenticate", "Basic realm=\"ciba-proxy\"");
    let refused =
        r#"{"error":"invalid_client","error_description":"client authentication failed"}"#;
    spec.check(
        "POST",
        "/token",
        &answer(401, &[json_type, no_store, basic], refused),
    );
    for (what, wrong) in [
        (
            "an undocumented status",
            answer(418, &[json_type, no_store, basic], refused),
        ),
        (
            "a missing WWW-Authenticate",
            answer(401, &[json_type, no_store], refused),
        ),
        (
            "another code at 401",
            answer(
                401,
                &[json_type, no_store, basic],
                r#"{"error":"invalid_grant","error_description":"x"}"#,
            ),
        ),
        (
            "an undocumented media type",
            answer(
                401,
                &[("content-type", "text/html"), no_store, basic],
                refused,
            ),
        ),
        (
            "a wrong Cache-Control",
            answer(
                401,
                &[json_type, ("cache-control", "public"), basic],
                refused,
            ),
        ),
    ] {
        let checked = std::panic::catch_unwind(|| spec.check("POST", "/token", &wrong));
        assert!(checked.is_err(), "accepted {what}");
    }
}

#[tokio::test]
async fn the_account_pages_are_answered_as_documented() {
    let spec = Spec::load();
    let off = TestApp::spawn().await;
    let on = TestApp::builder().account("").spawn().await;
    let get = |app: &TestApp, path: &str, cookie: Option<&str>| {
        let mut request = app.http.get(app.url(path));
        if let Some(cookie) = cookie {
            request = request.header("Cookie", cookie);
        }
        async move { Answer::of(request.send().await.unwrap()).await }
    };
    let post = |app: &TestApp, path: &str, cookie: Option<&str>, form: Vec<(&str, String)>| {
        let mut request = app.http.post(app.url(path)).form(&form);
        if let Some(cookie) = cookie {
            request = request.header("Cookie", cookie);
        }
        async move { Answer::of(request.send().await.unwrap()).await }
    };
    let (page, callback, signout, remove) = (
        "/account",
        "/account/callback",
        "/account/signout",
        "/account/devices/remove",
    );
    for (app, status) in [(&off, 404), (&on, 303)] {
        let answer = get(app, page, None).await;
        assert_eq!(answer.status, status);
        spec.check("GET", page, &answer);
    }
    for app in [&off, &on] {
        let answer = get(app, "/account/callback?state=x&code=y", None).await;
        spec.check("GET", callback, &answer);
        for path in [signout, remove] {
            let answer = post(app, path, None, vec![("csrf", "x".into())]).await;
            spec.check("POST", path, &answer);
        }
    }

    // Signed in: the page, a removal of no device, the sign-out.
    let browser = ciba_proxy_e2e::browser::Browser::start().await.unwrap();
    browser.goto(&on.url(page)).await.unwrap();
    browser.sign_in_at_test_idp("quinn").await.unwrap();
    browser.wait_for_text("Your account").await.unwrap();
    let session = browser
        .client()
        .get_named_cookie("ciba_account")
        .await
        .unwrap();
    browser.close().await.unwrap();
    let cookie = format!("ciba_account={}", session.value());
    let shown = get(&on, page, Some(&cookie)).await;
    assert_eq!(shown.status, 200);
    spec.check("GET", page, &shown);
    let csrf = form_field(&shown.body, "csrf");
    let form = |did: &str| vec![("csrf", csrf.clone()), ("did", did.to_owned())];
    let answer = post(&on, remove, Some(&cookie), form("no-such-device")).await;
    assert_eq!(answer.status, 404);
    spec.check("POST", remove, &answer);
    let answer = post(&on, signout, Some(&cookie), form("")).await;
    assert_eq!(answer.status, 200);
    spec.check("POST", signout, &answer);
}
