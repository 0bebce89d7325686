//! Pagination cursors: `CursorKey::decode` on arbitrary text, and encode/decode on structured
//! input.
//!
//! Input: the cursor text itself (seed: a cursor issued for `SEED_CURSOR_QUERY`); the same bytes
//! also drive a structured round-trip case through `arbitrary`. Properties:
//! - decode never panics; it accepts a text only if it is exactly what `encode` issues for the
//!   position it returns (no second spelling of a cursor is accepted);
//! - encode → decode returns the position, for any secret, sort, fingerprint and position;
//! - changing any one byte, cutting or extending the text is rejected as malformed or tampered
//!   (never accepted, never reported as a version or query problem);
//! - another sort or fingerprint is a query mismatch; another key is a bad signature.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use product_api::domain::{Position, Sort};
use product_api::request::cursor::{CursorError, CursorKey, Fingerprint};
use product_api_fuzz::{cursor_key, SEED_CURSOR_QUERY};

#[derive(Debug, Arbitrary)]
struct RoundTrip {
    secret: Vec<u8>,
    sort_code: u8,
    query: String,
    key: i64,
    id: u64,
    other_sort_code: u8,
    other_query: String,
    edit_at: usize,
    edit_to: u8,
    cut_at: usize,
    extension: String,
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_arbitrary_text(text);
    }
    if let Ok(case) = RoundTrip::arbitrary_take_rest(Unstructured::new(data)) {
        check_round_trip(&case);
    }
});

fn check_arbitrary_text(text: &str) {
    let key = cursor_key();
    for fingerprint in [Fingerprint::of(SEED_CURSOR_QUERY), Fingerprint::of(text)] {
        for sort in Sort::ALL {
            if let Ok(position) = key.decode(text, sort, fingerprint) {
                assert_eq!(
                    key.encode(sort, fingerprint, position),
                    text,
                    "{text:?} decodes to {position:?}, which is issued under another spelling"
                );
            }
        }
    }
}

fn sort_of(code: u8) -> Sort {
    if let Some(sort) = Sort::from_code(code) {
        assert_eq!(sort.code(), code);
        sort
    } else {
        assert!(
            usize::from(code) >= Sort::ALL.len(),
            "no sort for code {code}"
        );
        Sort::ALL[usize::from(code) % Sort::ALL.len()]
    }
}

fn check_round_trip(case: &RoundTrip) {
    let key = CursorKey::new(&case.secret);
    let sort = sort_of(case.sort_code);
    let fingerprint = Fingerprint::of(&case.query);
    let position = Position {
        key: case.key,
        id: case.id,
    };
    let text = key.encode(sort, fingerprint, position);
    assert_eq!(text.len(), 56, "{text:?}");
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{text:?} is not unpadded base64url"
    );
    assert_eq!(
        key.decode(&text, sort, fingerprint),
        Ok(position),
        "{case:?}"
    );

    // One byte changed.
    let mut edited = text.clone().into_bytes();
    let at = case.edit_at % edited.len();
    if edited[at] != case.edit_to {
        edited[at] = case.edit_to;
        let edited = String::from_utf8_lossy(&edited);
        assert_tampered(&key.decode(&edited, sort, fingerprint), &edited, case);
    }
    // Cut short, or extended.
    let cut = &text[..case.cut_at % text.len()];
    assert_eq!(
        key.decode(cut, sort, fingerprint),
        Err(CursorError::Malformed),
        "{cut:?}"
    );
    if !case.extension.is_empty() {
        let extended = format!("{text}{}", case.extension);
        assert_tampered(&key.decode(&extended, sort, fingerprint), &extended, case);
    }

    // Bound to its query.
    let other_sort = sort_of(case.other_sort_code);
    if other_sort != sort {
        assert_eq!(
            key.decode(&text, other_sort, fingerprint),
            Err(CursorError::QueryMismatch),
            "{case:?}"
        );
    }
    let other_fingerprint = Fingerprint::of(&case.other_query);
    if other_fingerprint != fingerprint {
        assert_eq!(
            key.decode(&text, sort, other_fingerprint),
            Err(CursorError::QueryMismatch),
            "{case:?}"
        );
    }

    // Bound to its key. Changing one bit of the first byte keeps the length: HMAC treats keys that
    // differ only by trailing zero bytes (or a long key and its SHA-256) as the same key.
    let mut other_secret = case.secret.clone();
    match other_secret.first_mut() {
        Some(byte) => *byte ^= 1,
        None => other_secret.push(1),
    }
    assert_eq!(
        CursorKey::new(&other_secret).decode(&text, sort, fingerprint),
        Err(CursorError::BadSignature),
        "{case:?}"
    );
}

fn assert_tampered(result: &Result<Position, CursorError>, text: &str, case: &RoundTrip) {
    assert!(
        matches!(
            result,
            Err(CursorError::Malformed | CursorError::BadSignature)
        ),
        "altered cursor {text:?} gave {result:?} ({case:?})"
    );
}
