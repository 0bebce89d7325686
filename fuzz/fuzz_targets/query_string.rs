//! `GET /products/v1` query strings: `parse_listing` (parser + validator, cursor included),
//! `query_string::decode`/`encode_into`, and the value parsers `Price::parse` and
//! `Timestamp::parse_rfc3339`.
//!
//! Input: the raw query string (the part after `?`). Properties, beyond "never panics":
//! - decode(encode(decode(v))) == decode(v) for every value;
//! - a price or timestamp that parses prints back to text that parses to the same value;
//! - an accepted listing respects every rule (take 1–100, min ≤ max, category 1–64 characters
//!   without control characters, fingerprint = digest of the canonical form);
//! - the canonical form is a fixed point: `canonical_filters&take=N` parses to the same query
//!   (without cursor), the same canonical form and the same fingerprint;
//! - the `Link` of the next page works: `canonical_filters&take=N&cursor=C`, with C issued for
//!   this listing, parses to the same query with that cursor's position.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use product_api::domain::price::MAX_CENTS;
use product_api::domain::timestamp::Civil;
use product_api::domain::{Position, Price, Timestamp, MAX_TAKE};
use product_api::request::cursor::Fingerprint;
use product_api::request::{parse_listing, query_string, MAX_CATEGORY_CHARS};
use product_api_fuzz::cursor_key;

fuzz_target!(|data: &[u8]| {
    check_price(data);
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    check_decode(query);
    check_timestamp(query);
    for (name, value) in query_string::pairs(query) {
        check_decode(name);
        if let Some(decoded) = check_decode(value) {
            check_price(decoded.as_bytes());
            check_timestamp(&decoded);
        }
    }
    check_listing(query);
});

/// `decode` never panics, and encoding what it decoded decodes to the same text.
fn check_decode(raw: &str) -> Option<Cow<'_, str>> {
    let decoded = query_string::decode(raw)?;
    let mut encoded = String::new();
    query_string::encode_into(&decoded, &mut encoded);
    assert!(
        encoded.bytes().all(|b| b.is_ascii_graphic()),
        "encode_into left a byte unescaped: {encoded:?}"
    );
    assert_eq!(
        query_string::decode(&encoded).as_deref(),
        Some(&*decoded),
        "decode(encode(decode({raw:?}))) differs"
    );
    Some(decoded)
}

fn check_price(text: &[u8]) {
    let Ok(price) = Price::parse(text) else {
        return;
    };
    assert!(
        (0..=MAX_CENTS).contains(&price.0),
        "{:?} parsed to {price:?}",
        String::from_utf8_lossy(text)
    );
    let canonical = price.to_decimal_string();
    assert_eq!(Price::parse(canonical.as_bytes()), Ok(price), "{canonical}");
    let mut written = Vec::new();
    price.write_decimal(&mut written);
    assert_eq!(written, canonical.as_bytes());
}

fn check_timestamp(text: &str) {
    let Some(timestamp) = Timestamp::parse_rfc3339(text) else {
        return;
    };
    // `write_rfc3339` prints four-digit years; an offset can move a parsed instant just outside
    // 0000–9999, where printing is not expected to round-trip.
    let first = Timestamp::from_civil(civil(0, 1, 1, 0, 0, 0, 0));
    let last = Timestamp::from_civil(civil(9999, 12, 31, 23, 59, 59, 999_999));
    if timestamp < first || timestamp > last {
        return;
    }
    let mut written = Vec::new();
    timestamp.write_rfc3339(&mut written);
    let written = String::from_utf8(written).expect("RFC 3339 is ASCII");
    assert_eq!(
        Timestamp::parse_rfc3339(&written),
        Some(timestamp),
        "{text:?} parsed to {timestamp:?}, printed as {written}"
    );
}

fn civil(year: i32, month: u8, day: u8, hour: u8, minute: u8, second: u8, micros: u32) -> Civil {
    Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros,
    }
}

fn check_listing(query: &str) {
    let key = cursor_key();
    let Ok(listing) = parse_listing(Some(query), &key) else {
        return;
    };
    let q = &listing.query;
    assert!(
        (1..=MAX_TAKE).contains(&q.take),
        "{query:?}: take {}",
        q.take
    );
    if let (Some(min), Some(max)) = (q.filters.min_price, q.filters.max_price) {
        assert!(
            min <= max,
            "{query:?}: min_price {min:?} > max_price {max:?}"
        );
    }
    if let Some(category) = &q.filters.category {
        let chars = category.chars().count();
        assert!((1..=MAX_CATEGORY_CHARS).contains(&chars), "{query:?}");
        assert!(!category.chars().any(char::is_control), "{query:?}");
    }
    assert_eq!(
        listing.fingerprint,
        Fingerprint::of(&listing.canonical_filters),
        "{query:?}"
    );
    assert!(
        listing.canonical_filters.is_ascii(),
        "{query:?}: canonical form {:?} is not ASCII",
        listing.canonical_filters
    );

    // The canonical form is a fixed point (cache keys, fingerprints and Link URLs rely on it).
    let canonical = format!("{}&take={}", listing.canonical_filters, q.take);
    let again = parse_listing(Some(&canonical), &key).unwrap_or_else(|error| {
        panic!("{query:?} is accepted, its canonical form {canonical:?} is not: {error}")
    });
    let mut without_cursor = q.clone();
    without_cursor.after = None;
    assert_eq!(
        again.query, without_cursor,
        "{query:?} and its canonical form {canonical:?} parse to different queries"
    );
    assert_eq!(
        again.canonical_filters, listing.canonical_filters,
        "{query:?}: the canonical form of {canonical:?} differs from it"
    );
    assert_eq!(again.fingerprint, listing.fingerprint, "{query:?}");

    // The next page, as the `Link` header builds it.
    let position = q.after.unwrap_or(Position { key: -1, id: 1 });
    let cursor = key.encode(q.sort, listing.fingerprint, position);
    let mut next = canonical;
    next.push_str("&cursor=");
    query_string::encode_into(&cursor, &mut next);
    let next_page = parse_listing(Some(&next), &key).unwrap_or_else(|error| {
        panic!("{query:?}: the next page's link {next:?} is rejected: {error}")
    });
    let mut expected = q.clone();
    expected.after = Some(position);
    assert_eq!(next_page.query, expected, "{query:?}: next page {next:?}");
}
