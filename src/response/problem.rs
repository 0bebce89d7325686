//! RFC 9457 problem details, serialized by hand into one buffer.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::{json::write_string, HttpResponse, PROBLEM_JSON};

/// One problem response's fields; `type` is a stable relative URI per kind of mistake.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    pub kind: &'static str,
    pub title: &'static str,
    pub status: StatusCode,
    pub detail: &'a str,
    /// What was at fault, as a member name and value: `("parameter", "take")`,
    /// `("field", "data.price")`, `("header", "webhook-timestamp")`.
    pub at_fault: Option<(&'static str, &'a str)>,
}

impl Problem<'_> {
    #[must_use]
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.detail.len());
        out.extend_from_slice(b"{\"type\":\"/problems/");
        out.extend_from_slice(self.kind.as_bytes());
        out.extend_from_slice(b"\",\"title\":");
        write_string(self.title, &mut out);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status.as_u16()).as_bytes());
        out.extend_from_slice(b",\"detail\":");
        write_string(self.detail, &mut out);
        if let Some((member, value)) = self.at_fault {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(member.as_bytes());
            out.extend_from_slice(b"\":");
            write_string(value, &mut out);
        }
        crate::server::request_id::with_current(|id| {
            out.extend_from_slice(b",\"request_id\":");
            write_string(id, &mut out);
        });
        out.push(b'}');
        out
    }

    #[must_use]
    pub fn response(&self) -> HttpResponse {
        let mut response = Response::new(Full::new(self.body().into()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(CONTENT_TYPE, PROBLEM_JSON);
        response
    }
}

/// `Retry-After` for 503s: dependencies usually recover or fail over within a second.
pub const RETRY_AFTER_SECONDS: HeaderValue = HeaderValue::from_static("1");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_valid_problem_json() {
        let problem = Problem {
            kind: "invalid-parameter",
            title: "Invalid parameter",
            status: StatusCode::BAD_REQUEST,
            detail: "parameter `take` must be \"1\"",
            at_fault: Some(("parameter", "take")),
        };
        let value: serde_json::Value = serde_json::from_slice(&problem.body()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "/problems/invalid-parameter", "title": "Invalid parameter",
                "status": 400, "detail": "parameter `take` must be \"1\"", "parameter": "take"})
        );
    }

    #[tokio::test]
    async fn a_body_built_while_handling_a_request_names_its_id() {
        let problem = Problem {
            kind: "not-found",
            title: "Not found",
            status: StatusCode::NOT_FOUND,
            detail: "no such route",
            at_fault: None,
        };
        let mut headers = http::HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        let id = crate::server::request_id::RequestId::of(&headers);
        let body = id.scope(async { problem.body() }).await;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["request_id"], "req-1");
        let outside: serde_json::Value = serde_json::from_slice(&problem.body()).unwrap();
        assert!(outside.get("request_id").is_none(), "{outside}");
    }
}
