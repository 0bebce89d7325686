//! The query string, split and percent-decoded without allocating unless a value is encoded.

use std::borrow::Cow;

/// Iterates `name=value` pairs of a raw query string; empty segments (`a=1&&b=2`) are skipped.
pub fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| segment.split_once('=').unwrap_or((segment, "")))
}

/// Decodes `%XX` escapes and `+` (form encoding's space). Borrows when there is nothing to
/// decode; `None` when an escape is malformed or the result is not UTF-8.
#[must_use]
pub fn decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let high = hex_value(*bytes.get(index + 1)?)?;
                let low = hex_value(*bytes.get(index + 2)?)?;
                decoded.push(high << 4 | low);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

/// Appends `value` percent-encoded so that it is safe inside a query-string value and a
/// `Link` header (RFC 3986 unreserved characters stay as they are).
pub fn encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in value.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0x0f)] as char);
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_pairs_and_skips_empty_segments() {
        let got: Vec<_> = pairs("take=5&&sort=-price&flag").collect();
        assert_eq!(got, [("take", "5"), ("sort", "-price"), ("flag", "")]);
    }

    #[test]
    fn decodes_escapes_and_plus_and_borrows_plain_values() {
        assert!(matches!(decode("plain"), Some(Cow::Borrowed("plain"))));
        let cases = [
            ("a%20b", Some("a b")),
            ("a+b", Some("a b")),
            ("%C3%A9", Some("é")),
            ("%e9", None),
            ("%2", None),
            ("%zz", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(decode(raw).as_deref(), expected, "{raw}");
        }
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(value in "\\PC{0,40}") {
            let mut encoded = String::new();
            encode_into(&value, &mut encoded);
            let decoded = decode(&encoded).map(Cow::into_owned);
            prop_assert_eq!(decoded, Some(value));
        }
    }
}
