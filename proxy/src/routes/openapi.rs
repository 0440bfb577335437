//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint, on
//! each port its own. The documents are `proxy/openapi.json` (the public
//! port) and `proxy/openapi-operator.json` (the operator port, `[metrics]
//! bind`), written by hand and compiled in; the end-to-end suite
//! (`tests/api/openapi.rs`, `tests/api/openapi_operator.rs`) checks them
//! against the routes the application serves and the answers it gives, and
//! `make test` runs schemathesis against both.
use actix_web::http::header::ContentType;
use actix_web::HttpResponse;

/// The public port's document, as served.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// The operator port's document, as served.
pub const OPERATOR_DOCUMENT: &str = include_str!("../../openapi-operator.json");

fn serve(document: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(document)
}

pub async fn openapi() -> HttpResponse {
    serve(DOCUMENT)
}

pub async fn operator_openapi() -> HttpResponse {
    serve(OPERATOR_DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::{DOCUMENT, OPERATOR_DOCUMENT};

    #[test]
    fn the_documents_are_openapi_3_1_json() {
        for document in [DOCUMENT, OPERATOR_DOCUMENT] {
            let doc: serde_json::Value = serde_json::from_str(document).expect("valid JSON");
            let version = doc["openapi"].as_str().unwrap_or_default();
            assert!(version.starts_with("3.1."), "{version}");
            assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        }
    }
}
