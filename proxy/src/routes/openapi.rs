//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint.
//! The document is `proxy/openapi.json`, written by hand and compiled in;
//! the end-to-end suite (`tests/api/openapi.rs`) checks it against the
//! routes this application serves and the answers it gives, and `make test`
//! runs schemathesis against it.
use actix_web::http::header::ContentType;
use actix_web::HttpResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    #[test]
    fn the_document_is_openapi_3_1_json() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1."), "{version}");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
