//! Entity tags: a strong tag from a body's digest, and `If-None-Match` matching.
//!
//! Shared by every endpoint that answers `304` (the listing and the `OpenAPI` document), so both
//! compare tags the same way.

use http::HeaderValue;
use sha2::{Digest, Sha256};

/// A strong ETag from the body's SHA-256 (the first 16 bytes, in hex): computed once per body,
/// then kept with it.
#[must_use]
pub fn of(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let mut tag = Vec::with_capacity(34);
    tag.push(b'"');
    tag.extend_from_slice(hex::encode(&digest[..16]).as_bytes());
    tag.push(b'"');
    HeaderValue::from_bytes(&tag).expect("hex digits in quotes are a valid header value")
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored.
#[must_use]
pub fn matches(if_none_match: &[u8], etag: &[u8]) -> bool {
    if_none_match
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|candidate| {
            candidate == b"*" || candidate.strip_prefix(b"W/").unwrap_or(candidate) == etag
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison_over_lists() {
        let etag = b"\"abc\"";
        let cases: [(&[u8], bool); 6] = [
            (b"\"abc\"", true),
            (b"W/\"abc\"", true),
            (b"\"x\", \"abc\"", true),
            (b"*", true),
            (b"\"abd\"", false),
            (b"", false),
        ];
        for (header, expected) in cases {
            assert_eq!(matches(header, etag), expected);
        }
    }

    #[test]
    fn tag_is_quoted_hex_of_the_digest_prefix() {
        let tag = of(b"");
        assert_eq!(tag, "\"e3b0c44298fc1c149afbf4c8996fb924\"");
    }
}
