//! A minimal JSON writer into a caller's buffer: strings escaped per RFC 8259, nothing else.
//!
//! Hand-written because page serialization is the hot path of every cache miss and the product
//! rows have a fixed shape; the criterion bench `serialize_page` compares it with serde_json.

/// Appends `value` as a JSON string literal, quotes included.
///
/// Scans eight bytes at a time and copies runs that need no escape in one piece: product
/// names and descriptions are long runs of plain text, and a byte-at-a-time match was the
/// largest single symbol of the service on the cache-miss path (`perf/flamegraph`).
pub fn write_string(value: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(value.len() + 2);
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        if let Some(word) = bytes.get(index..index + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !may_need_escape(word) {
                index += 8;
                continue;
            }
        }
        let byte = bytes[index];
        index += 1;
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index - 1]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = index;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any of the eight bytes of `word` is a control character, `"` or `\\`: the
/// zero-byte test (`(x - 0x01…) & !x & 0x80…`) applied to the word itself against 0x20 and to
/// its XOR with each quoted byte. Never false when such a byte is present.
const fn may_need_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const fn has_zero_byte(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGHS
    }
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = has_zero_byte(word ^ (ONES * b'"' as u64));
    let backslash = has_zero_byte(word ^ (ONES * b'\\' as u64));
    control | quote | backslash != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_inside_and_across_eight_byte_words_are_written() {
        let mut out = Vec::new();
        write_string(
            "plain words\t\"quoted\"\u{1}\\ and a tail longer than a word",
            &mut out,
        );
        assert_eq!(
            out,
            br#""plain words\t\"quoted\"\u0001\\ and a tail longer than a word""#
        );
    }

    proptest! {
        #[test]
        fn matches_serde_json(value in "\\PC{0,40}|[\\x00-\\x1f\"\\\\]{0,10}|(\\PC{0,12}[\\x00-\\x1f\"\\\\]){0,6}\\PC{0,12}") {
            let mut ours = Vec::new();
            write_string(&value, &mut ours);
            let parsed: String = serde_json::from_slice(&ours).unwrap();
            prop_assert_eq!(parsed, value);
        }
    }
}
