//! A minimal JSON writer into a caller's buffer: strings escaped per RFC 8259, nothing else.
//!
//! Hand-written because page serialization is the hot path of every cache miss and the product
//! rows have a fixed shape; the criterion bench `serialize_page` compares it with serde_json.

/// Appends `value` as a JSON string literal, quotes included.
pub fn write_string(value: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_serde_json(value in "\\PC{0,40}|[\\x00-\\x1f\"\\\\]{0,10}") {
            let mut ours = Vec::new();
            write_string(&value, &mut ours);
            let parsed: String = serde_json::from_slice(&ours).unwrap();
            prop_assert_eq!(parsed, value);
        }
    }
}
