//! The operator port's OpenAPI document (`proxy/openapi-operator.json`,
//! served at `/openapi.json` on `[metrics] bind`) against the code, with
//! the checks of `openapi.rs`: the routes `operator.rs` registers and the
//! documented operations are the same set, every other method gets 405,
//! and the admin API's real answers (list, one, cancel, 404, 409, 401)
//! have the documented status, headers and body. schemathesis (`make
//! test`) fuzzes the same document with the admin token.
use ciba_proxy_e2e::device::Action;
use serde_json::{json, Value};

use crate::admin::Admin;
use crate::openapi::{assert_well_formed, probe_every_method, registered_routes, Answer, Spec};

#[tokio::test]
async fn the_operator_port_serves_its_openapi_3_1_document() {
    let admin = Admin::spawn(None, "").await;
    let spec = Spec::operator();
    let answer = Answer::of(
        admin
            .request("GET", "/openapi.json", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    spec.check("GET", "/openapi.json", &answer);
    let served: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(
        served, spec.doc,
        "the operator port serves proxy/openapi-operator.json"
    );
    let version = spec.doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi: {version}");
    assert_well_formed(&spec);
    // The public port keeps its own document.
    let public = admin.app.get("/openapi.json").await;
    assert_eq!(public.status, 200);
    assert_ne!(public.body, spec.doc);
}

#[test]
fn every_operator_route_is_documented_and_every_documented_one_registered() {
    let routes = registered_routes("operator.rs");
    let documented = Spec::operator().operations();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes in operator.rs missing from proxy/openapi-operator.json: {undocumented:?}; \
         operations in proxy/openapi-operator.json that operator.rs does not register: {unrouted:?}"
    );
}

#[tokio::test]
async fn operator_operations_are_served_and_other_methods_get_405_with_allow() {
    let admin = Admin::spawn(None, "").await;
    probe_every_method(&Spec::operator(), &admin.app.http, &admin.base).await;
}

#[tokio::test]
async fn admin_answers_match_the_document() {
    let admin = Admin::spawn(None, "").await;
    let spec = Spec::operator();
    let call = |method: &'static str, path: String, token: Option<String>| {
        let request = admin.request(method, &path, token.as_deref());
        async move { Answer::of(request.send().await.unwrap()).await }
    };
    let token = || Some(admin.token.clone());
    let hint = format!("documented-{}", rand::random::<u32>());
    admin.app.device.on(&hint, Action::Ignore);
    let id = admin.app.start("shop", &hint).await;
    let (one, cancel) = (
        "/admin/requests/{auth_req_id}",
        "/admin/requests/{auth_req_id}/cancel",
    );
    let (one_path, cancel_path) = (
        format!("/admin/requests/{id}"),
        format!("/admin/requests/{id}/cancel"),
    );

    let metrics = call("GET", "/metrics".into(), None).await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
    spec.check("GET", "/metrics", &metrics);

    // Without the token, or with another: 401 everywhere.
    for (method, template, path) in [
        ("GET", "/admin/requests", "/admin/requests".to_owned()),
        ("GET", one, one_path.clone()),
        ("POST", cancel, cancel_path.clone()),
        ("GET", "/admin/clients", "/admin/clients".to_owned()),
    ] {
        for wrong in [None, Some("wrong".to_owned())] {
            let refused = call(method, path.clone(), wrong).await;
            refused.assert_error(401, "unauthorized");
            spec.check(method, template, &refused);
        }
    }

    for query in ["", "?client_id=shop&state=pending", "?state=nothing"] {
        let listed = call("GET", format!("/admin/requests{query}"), token()).await;
        assert_eq!(listed.status, 200, "{listed:?}");
        spec.check("GET", "/admin/requests", &listed);
    }
    let unreadable = call("GET", "/admin/requests?state=a&state=b".into(), token()).await;
    assert_eq!(unreadable.status, 400, "{unreadable:?}");
    spec.check("GET", "/admin/requests", &unreadable);
    let shown = call("GET", one_path.clone(), token()).await;
    assert_eq!(shown.status, 200, "{shown:?}");
    spec.check("GET", one, &shown);
    let clients = call("GET", "/admin/clients".into(), token()).await;
    assert_eq!(clients.status, 200, "{clients:?}");
    spec.check("GET", "/admin/clients", &clients);

    for (method, template, path) in [
        ("GET", one, "/admin/requests/no-such-request"),
        ("POST", cancel, "/admin/requests/no-such-request/cancel"),
    ] {
        let unknown = call(method, path.into(), token()).await;
        unknown.assert_error(404, "no such request");
        spec.check(method, template, &unknown);
    }

    let cancelled = call("POST", cancel_path.clone(), token()).await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    spec.check("POST", cancel, &cancelled);
    let again = call("POST", cancel_path, token()).await;
    again.assert_error(409, "the request has already ended");
    spec.check("POST", cancel, &again);
    // A denied request carries its reason.
    let denied = call("GET", one_path, token()).await;
    spec.check("GET", one, &denied);
    let denied: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(
        (&denied["state"], &denied["denial"]),
        (&json!("denied"), &json!("failed")),
        "{denied}"
    );

    // The schema refuses what an answer must never carry.
    let request = json!({"$ref": "#/components/schemas/Request"});
    assert_eq!(spec.validate(&request, &denied), Ok(()));
    let mut leaky = denied.clone();
    leaky["login_hint"] = json!(hint);
    assert!(spec.validate(&request, &leaky).is_err(), "{leaky}");
}
