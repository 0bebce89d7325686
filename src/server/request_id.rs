//! Request ids: taken from `X-Request-Id` or the W3C `traceparent` trace id, generated when
//! absent, echoed in the response, in problem bodies and (through a task-local the log formatter
//! reads) in every log line of the request.

use std::future::Future;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::task::futures::TaskLocalFuture;

use crate::response::HttpResponse;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The longest client-supplied id kept; longer ones are replaced by a generated id.
const MAX_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request being handled on this task.
    static CURRENT: RequestId;
}

/// The id of one request, as a header value (validated: visible ASCII of a safe set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's `X-Request-Id` when it is sane, else the `traceparent` trace id, else new.
    #[must_use]
    pub fn of(headers: &HeaderMap) -> RequestId {
        if let Some(id) = headers.get(X_REQUEST_ID).filter(|v| is_sane(v.as_bytes())) {
            return RequestId(id.clone());
        }
        if let Some(trace_id) = headers
            .get(TRACEPARENT)
            .and_then(|v| trace_id(v.as_bytes()))
        {
            return RequestId(trace_id);
        }
        RequestId::generate()
    }

    /// 128 random bits in hex, written into a stack buffer (`hex::encode` builds its `String`
    /// a char at a time, a third of this function's cost on a cache hit).
    fn generate() -> RequestId {
        let mut text = [0u8; 32];
        hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut text)
            .expect("32 hex digits fit 16 bytes");
        RequestId(HeaderValue::from_bytes(&text).expect("hex is a valid header value"))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("validated ASCII")
    }

    /// Runs `future` as this request's: every event it logs carries `request_id`
    /// (`telemetry`'s formatter) and every problem body it builds: both read it with
    /// [`with_current`].
    ///
    /// A task-local rather than a `tracing` span: a span costs a registry slot and the
    /// formatting of its fields on every request, logged or not (~390 ns with the JSON
    /// subscriber); setting a task-local costs a few ns per poll, and the id is only formatted
    /// when a line is written (`cargo bench --bench observability`, perf/RESULTS.md). The id
    /// moves in, and back out with [`TaskLocalFuture::take_value`] for [`RequestId::stamp`]:
    /// a clone of a generated id would allocate its shared buffer on every request.
    pub fn scope<F: Future>(self, future: F) -> TaskLocalFuture<RequestId, F> {
        CURRENT.scope(self, future)
    }

    /// [`RequestId::scope`] for synchronous code (the access log line).
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), f)
    }

    /// Echoes the id in the response header (problem bodies carry it from their building).
    pub fn stamp(self, response: &mut HttpResponse) {
        response.headers_mut().insert(X_REQUEST_ID, self.0);
    }
}

/// Calls `f` with the id of the request being handled here, without cloning it; `None`
/// outside a request's task.
pub fn with_current<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    CURRENT.try_with(|id| f(id.as_str())).ok()
}

fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The trace id of `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid (W3C Trace Context).
fn trace_id(traceparent: &[u8]) -> Option<HeaderValue> {
    let text = std::str::from_utf8(traceparent).ok()?;
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2);
    valid.then(|| HeaderValue::from_str(&trace.to_ascii_lowercase()).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(pairs: &[(&str, &str)]) -> String {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        RequestId::of(&headers).as_str().to_owned()
    }

    #[test]
    fn takes_the_client_id_then_the_trace_id_then_generates() {
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(id_of(&[("x-request-id", "abc-123")]), "abc-123");
        assert_eq!(
            id_of(&[("traceparent", trace)]),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            id_of(&[("x-request-id", "a b"), ("traceparent", trace)]),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        for generated in [
            id_of(&[]),
            id_of(&[("traceparent", zero)]),
            id_of(&[("x-request-id", &"x".repeat(129))]),
        ] {
            assert_eq!(generated.len(), 32);
            assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
