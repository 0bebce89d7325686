//! `GET /openapi.json`: the `OpenAPI` 3.1 document of this API.
//!
//! The bytes are `docs/openapi.json`, embedded at build time, so the document served is always
//! the one of the binary's commit (the `openapi` integration test and `scripts/schemathesis` hold
//! it to the server's behaviour). Never built or changed at run time.

use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::response::{etag, HttpResponse, JSON};

/// The document, as committed.
pub const DOCUMENT: &[u8] = include_bytes!("../../docs/openapi.json");

/// The document changes only with a deploy: shared caches may keep it a few minutes, and the
/// `ETag` makes a later check a bodiless `304`.
const CACHE_CONTROL_VALUE: HeaderValue = HeaderValue::from_static("public, max-age=300");

/// The document, or `304` when the client already has it.
pub fn document(request_headers: &HeaderMap) -> HttpResponse {
    let tag = document_etag();
    let not_modified = request_headers
        .get(IF_NONE_MATCH)
        .is_some_and(|value| etag::matches(value.as_bytes(), tag.as_bytes()));
    let mut response = if not_modified {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Full::new(Bytes::from_static(DOCUMENT)));
        response.headers_mut().insert(CONTENT_TYPE, JSON);
        response
    };
    let headers = response.headers_mut();
    headers.insert(ETAG, tag.clone());
    headers.insert(CACHE_CONTROL, CACHE_CONTROL_VALUE);
    response
}

/// Hashed on first use, once per process: the bytes never change while it runs.
fn document_etag() -> &'static HeaderValue {
    static TAG: OnceLock<HeaderValue> = OnceLock::new();
    TAG.get_or_init(|| etag::of(DOCUMENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_document_then_304_for_its_etag() {
        let first = document(&HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[CONTENT_TYPE], "application/json");
        let tag = first.headers()[ETAG].clone();
        let mut conditional = HeaderMap::new();
        conditional.insert(IF_NONE_MATCH, tag.clone());
        let second = document(&conditional);
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(second.headers()[ETAG], tag);
        assert!(second.headers().get(CONTENT_TYPE).is_none());
    }
}
