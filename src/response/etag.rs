//! Entity tags: a strong tag from a body's digest, and `If-None-Match` matching.
//!
//! Shared by every endpoint that answers `304` (the listing and the `OpenAPI` document), so both
//! compare tags the same way.

use http::HeaderValue;

/// A strong ETag from the body's 128-bit XXH3 digest, in hex: computed once per body, then kept
/// with it.
///
/// Not SHA-256: a tag only has to tell this service's own bodies apart, not resist forgery,
/// and on a 20-product page SHA-256 was ~3.5 % of the service's CPU on a cache miss
/// (`cargo bench --bench hot_path -- etag`, perf/RESULTS.md).
#[must_use]
pub fn of(body: &[u8]) -> HeaderValue {
    let digest = xxhash_rust::xxh3::xxh3_128(body).to_be_bytes();
    let mut tag = [b'"'; 34];
    hex::encode_to_slice(digest, &mut tag[1..33]).expect("32 hex digits fit 16 bytes");
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
    fn tag_is_the_quoted_hex_of_the_xxh3_128_digest() {
        // XXH3-128 of the empty input, from the xxHash reference implementation's test vectors.
        assert_eq!(of(b""), "\"99aa06d3014798d86001c324468d497f\"");
        assert_ne!(of(b"{\"data\":[]}"), of(b"{\"data\":[ ]}"));
    }
}
