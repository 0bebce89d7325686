//! Response stage: pages and problems serialized into one buffer each, and the header set.
//!
//! Owns every byte a client reads; never decides status codes for errors (that is `error`).

pub mod etag;
pub mod json;
pub mod problem;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::domain::Page;

/// The response type of every route.
pub type HttpResponse = Response<Full<Bytes>>;

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// Bytes per product in the initial buffer: a typical row serializes to 250–400 bytes.
const BYTES_PER_PRODUCT_HINT: usize = 400;

/// Serializes a listing page: `{"data":[…],"next_cursor":…,"has_more":…}`.
#[must_use]
pub fn page_body(page: &Page, next_cursor: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + page.products.len() * BYTES_PER_PRODUCT_HINT);
    out.extend_from_slice(b"{\"data\":[");
    let mut digits = itoa::Buffer::new();
    for (index, product) in page.products.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(digits.format(product.id).as_bytes());
        out.extend_from_slice(b",\"name\":");
        json::write_string(&product.name, &mut out);
        out.extend_from_slice(b",\"description\":");
        json::write_string(&product.description, &mut out);
        out.extend_from_slice(b",\"price\":");
        product.price.write_decimal(&mut out);
        out.extend_from_slice(b",\"category\":");
        json::write_string(&product.category, &mut out);
        out.extend_from_slice(b",\"created_at\":\"");
        product.created_at.write_rfc3339(&mut out);
        out.extend_from_slice(b"\",\"updated_at\":\"");
        product.updated_at.write_rfc3339(&mut out);
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"],\"next_cursor\":");
    match next_cursor {
        Some(cursor) => json::write_string(cursor, &mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(if page.has_more {
        b",\"has_more\":true}"
    } else {
        b",\"has_more\":false}"
    });
    out
}

/// A small JSON response with a body the caller built.
#[must_use]
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Price, Product, Timestamp};

    fn product(id: u64, name: &str) -> Product {
        Product {
            id,
            name: name.to_owned(),
            description: "line\nbreak \"quoted\"".to_owned(),
            price: Price(1250),
            category: "tops".to_owned(),
            created_at: Timestamp(1_735_787_045_123_456),
            updated_at: Timestamp(1_735_787_045_123_456),
        }
    }

    #[test]
    fn page_body_is_the_documented_json() {
        let page = Page {
            products: vec![product(1, "Oak \u{1} lamp"), product(2, "Ünïcode")],
            has_more: true,
        };
        let body = page_body(&page, Some("abc"));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "data": [
                    {"id": 1, "name": "Oak \u{1} lamp", "description": "line\nbreak \"quoted\"",
                     "price": 12.5, "category": "tops",
                     "created_at": "2025-01-02T03:04:05.123456Z",
                     "updated_at": "2025-01-02T03:04:05.123456Z"},
                    {"id": 2, "name": "Ünïcode", "description": "line\nbreak \"quoted\"",
                     "price": 12.5, "category": "tops",
                     "created_at": "2025-01-02T03:04:05.123456Z",
                     "updated_at": "2025-01-02T03:04:05.123456Z"}
                ],
                "next_cursor": "abc",
                "has_more": true
            })
        );
    }

    #[test]
    fn last_page_has_null_cursor() {
        let page = Page {
            products: vec![],
            has_more: false,
        };
        assert_eq!(
            page_body(&page, None),
            b"{\"data\":[],\"next_cursor\":null,\"has_more\":false}"
        );
    }
}
