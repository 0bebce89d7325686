//! One HTTP exchange of the outbound stage: send, read a bounded body, all under one timeout,
//! and sort the failures into the few kinds the retry policy tells apart.
//!
//! Never logs a URL (a query may one day carry something private) or a header.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};

/// A complete answer, whatever its status.
pub(crate) struct Reply {
    pub status: StatusCode,
    /// `Retry-After` in seconds; the HTTP-date form is ignored (the backoff applies instead).
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// Why there is no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The attempt timeout passed (connecting, waiting or reading).
    Timeout,
    /// No connection: refused, unreachable, DNS, TLS handshake.
    Connect,
    /// The body is larger than the caller accepts.
    TooLarge,
    /// Anything else after the request left (reset, truncated body, protocol error).
    Transport,
}

/// Sends `request` and reads the whole body, within `timeout` for the lot.
pub(crate) async fn exchange(
    request: RequestBuilder,
    timeout: Duration,
    max_body_bytes: usize,
) -> Result<Reply, Failure> {
    match tokio::time::timeout(timeout, send_and_read(request, max_body_bytes)).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => Err(Failure::Timeout),
    }
}

async fn send_and_read(request: RequestBuilder, max_body_bytes: usize) -> Result<Reply, Failure> {
    let mut response = request.send().await.map_err(classify)?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let mut body = Vec::with_capacity(
        response
            .content_length()
            .map_or(8 * 1024, |length| length as usize)
            .min(max_body_bytes),
    );
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > max_body_bytes {
            return Err(Failure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

fn classify(error: reqwest::Error) -> Failure {
    let kind = if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect
    } else {
        Failure::Transport
    };
    tracing::debug!(error = %error.without_url(), ?kind, "outbound exchange failed");
    kind
}

/// `Retry-After: <seconds>`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_only() {
        let cases = [
            ("1", Some(Duration::from_secs(1))),
            (" 120 ", Some(Duration::from_secs(120))),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
            ("-1", None),
            ("1.5", None),
        ];
        for (text, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_static(text));
            assert_eq!(retry_after(&headers), expected, "{text}");
        }
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
