//! `POST /webhook`: the event body parser (`parse_event`, simd-json in place) and the Standard
//! Webhooks signature check (`WebhookSecret::parse`, `sign`, `verify`).
//!
//! Input: the request body (seeds: valid event bodies); the same bytes also drive a structured
//! delivery case through `arbitrary`. Properties, beyond "never panics":
//! - an accepted event respects the listing's rules, prints back to a body that parses to the
//!   same event, and agrees with `serde_json` on every field whenever `serde_json` parses the body;
//! - `WebhookSecret::parse` accepts exactly non-empty base64 (after an optional `whsec_`), and
//!   `sign` is HMAC-SHA256 over `{id}.{timestamp}.{body}` with that key (reference below);
//! - `verify` with arbitrary headers returns `Ok(id)` only when some `v1,` signature in
//!   `webhook-signature` is the reference signature for that id, timestamp and body, and the
//!   timestamp is within 5 minutes of now;
//! - a delivery signed with `sign` verifies (rotation lists included); changing its body, id,
//!   timestamp, signature or secret, or moving `now` out of tolerance, makes it fail with the
//!   matching error.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use product_api::domain::event::{ProductChange, ProductEvent};
use product_api::domain::price::MAX_CENTS;
use product_api::domain::timestamp::Civil;
use product_api::domain::Timestamp;
use product_api::request::webhook::{
    parse_event, SignatureError, WebhookSecret, MAX_EVENT_ID_CHARS, TIMESTAMP_TOLERANCE_SECONDS,
};
use sha2::Sha256;

fuzz_target!(|data: &[u8]| {
    check_body(data);
    let mut u = Unstructured::new(data);
    if let Ok(text) = <&str>::arbitrary(&mut u) {
        check_secret_parse(text);
    }
    if let Ok(case) = Delivery::arbitrary(&mut u) {
        check_arbitrary_headers(&case, data);
        check_signed_delivery(&case, data);
    }
});

// ---------------------------------------------------------------------------------------------
// The body.

fn check_body(data: &[u8]) {
    let mut body = data.to_vec();
    let Ok(event) = parse_event(&mut body) else {
        return;
    };
    check_rules(&event);
    // Printed back (the timestamp as RFC 3339, the price as the float nearest to its cents),
    // the event parses to itself.
    if let Some(printed) = print(&event) {
        let again = parse_event(&mut printed.clone().into_bytes());
        assert_eq!(again.as_ref(), Ok(&event), "printed as {printed}");
    }
    // serde_json, where it parses the same bytes, reads the same fields.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let data = member(&value, "data", 2);
        let kind = text(member(&value, "type", 0)).expect("accepted without a string `type`");
        let timestamp =
            text(member(&value, "timestamp", 1)).expect("accepted without a string `timestamp`");
        let data_field = |name, index| data.and_then(|data| member(data, name, index));
        assert_eq!(Timestamp::parse_rfc3339(timestamp), Some(event.happened_at));
        assert_eq!(
            text(data_field("external_id", 0)),
            Some(event.change.external_id())
        );
        match &event.change {
            ProductChange::Upsert(product) => {
                assert!(
                    matches!(kind, "product.created" | "product.updated"),
                    "{kind}"
                );
                assert_eq!(text(data_field("name", 1)), Some(product.name.as_str()));
                assert_eq!(
                    text(data_field("description", 2)).unwrap_or_default(),
                    product.description
                );
                let price = data_field("price", 3).and_then(serde_json::Value::as_f64);
                let price = price.expect("accepted without a numeric price");
                assert_eq!(
                    product_api::domain::event::price_from_float(price),
                    Ok(product.price),
                    "simd-json and serde_json read the price differently"
                );
                assert_eq!(
                    text(data_field("category", 4)),
                    Some(product.category.as_str())
                );
            }
            ProductChange::Delete { .. } => assert_eq!(kind, "product.deleted"),
        }
    }
}

fn text(value: Option<&serde_json::Value>) -> Option<&str> {
    value.and_then(serde_json::Value::as_str)
}

/// A field of a derived `Deserialize` struct: by name in an object, or by declaration order in
/// an array (serde's derive accepts both forms).
fn member<'v>(
    value: &'v serde_json::Value,
    name: &str,
    index: usize,
) -> Option<&'v serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map.get(name),
        serde_json::Value::Array(items) => items.get(index),
        _ => None,
    }
}

fn check_rules(event: &ProductEvent) {
    let text_ok = |text: &str, max_chars: usize| {
        !text.trim().is_empty()
            && text.chars().count() <= max_chars
            && !text.chars().any(char::is_control)
    };
    assert!(text_ok(event.change.external_id(), 64), "{event:?}");
    if let ProductChange::Upsert(product) = &event.change {
        assert!(text_ok(&product.name, 255), "{event:?}");
        assert!(text_ok(&product.category, 64), "{event:?}");
        assert!(product.description.len() <= 65_535, "{event:?}");
        assert!((0..=MAX_CENTS).contains(&product.price.0), "{event:?}");
    }
}

/// The event as a body, or `None` when its instant has no four-digit-year RFC 3339 form.
fn print(event: &ProductEvent) -> Option<String> {
    let first = Timestamp::from_civil(civil(0, 1, 1));
    let last = Timestamp::from_civil(civil(10_000, 1, 1));
    if event.happened_at < first || event.happened_at >= last {
        return None;
    }
    let mut timestamp = Vec::new();
    event.happened_at.write_rfc3339(&mut timestamp);
    let timestamp = String::from_utf8(timestamp).expect("RFC 3339 is ASCII");
    let (kind, data) = match &event.change {
        ProductChange::Upsert(product) => {
            // Cents below 2^53 are exact, and the float nearest to cents/100 rounds back.
            #[allow(clippy::cast_precision_loss)]
            let price = product.price.0 as f64 / 100.0;
            (
                "product.updated",
                serde_json::json!({
                    "external_id": product.external_id,
                    "name": product.name,
                    "description": product.description,
                    "price": price,
                    "category": product.category,
                }),
            )
        }
        ProductChange::Delete { external_id } => (
            "product.deleted",
            serde_json::json!({ "external_id": external_id }),
        ),
    };
    let body = serde_json::json!({ "type": kind, "timestamp": timestamp, "data": data });
    Some(body.to_string())
}

fn civil(year: i32, month: u8, day: u8) -> Civil {
    Civil {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures.

/// The reference: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
fn reference_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn check_secret_parse(text: &str) {
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = STANDARD.decode(encoded).ok().filter(|key| !key.is_empty());
    let parsed = WebhookSecret::parse(text);
    assert_eq!(parsed.is_some(), key.is_some(), "{text:?}");
    if let (Some(secret), Some(key)) = (parsed, key) {
        let signature = secret.sign("msg_1", 1_614_265_330, text.as_bytes());
        let expected = reference_signature(&key, "msg_1", 1_614_265_330, text.as_bytes());
        assert_eq!(signature, format!("v1,{}", STANDARD.encode(expected)));
    }
}

#[derive(Debug, Arbitrary)]
struct Delivery {
    secret: Vec<u8>,
    whsec_prefix: bool,
    /// Unix seconds from 1970 to 2106: the server's clock, never attacker-controlled.
    now: u32,
    /// Raw header values (arbitrary-headers part).
    id_header: Option<Vec<u8>>,
    legacy_id_header: Option<Vec<u8>>,
    timestamp_header: Option<TimestampHeader>,
    signature_header: Option<Vec<u8>>,
    /// The signed delivery.
    id: String,
    skew: i16,
    other_signatures_before: Vec<String>,
    other_signatures_after: Vec<String>,
    edit_at: usize,
    edit_to: u8,
}

#[derive(Debug, Arbitrary)]
enum TimestampHeader {
    /// Seconds from `now`.
    Near(i16),
    Number(i64),
    Raw(Vec<u8>),
}

impl Delivery {
    fn key(&self) -> Vec<u8> {
        if self.secret.is_empty() {
            vec![0x5a]
        } else {
            self.secret.clone()
        }
    }

    fn secret(&self, key: &[u8]) -> WebhookSecret {
        let text = format!(
            "{}{}",
            if self.whsec_prefix { "whsec_" } else { "" },
            STANDARD.encode(key)
        );
        WebhookSecret::parse(&text).expect("non-empty base64 is a secret")
    }

    fn now(&self) -> i64 {
        i64::from(self.now)
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: Option<&[u8]>) {
    if let Some(value) = value.and_then(|value| HeaderValue::from_bytes(value).ok()) {
        headers.insert(name, value);
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn check_arbitrary_headers(case: &Delivery, body: &[u8]) {
    let key = case.key();
    let secret = case.secret(&key);
    let now = case.now();
    let timestamp_text = case.timestamp_header.as_ref().map(|header| match header {
        TimestampHeader::Near(skew) => (now + i64::from(*skew)).to_string().into_bytes(),
        TimestampHeader::Number(number) => number.to_string().into_bytes(),
        TimestampHeader::Raw(raw) => raw.clone(),
    });
    let mut headers = HeaderMap::new();
    insert(&mut headers, "webhook-id", case.id_header.as_deref());
    insert(&mut headers, "x-event-id", case.legacy_id_header.as_deref());
    insert(&mut headers, "webhook-timestamp", timestamp_text.as_deref());
    insert(
        &mut headers,
        "webhook-signature",
        case.signature_header.as_deref(),
    );

    let Ok(id) = secret.verify(&headers, body, now) else {
        return;
    };
    let expected_id = header(&headers, "webhook-id").or_else(|| header(&headers, "x-event-id"));
    assert_eq!(Some(id.as_str()), expected_id);
    assert!(!id.is_empty() && id.chars().count() <= MAX_EVENT_ID_CHARS);
    let timestamp: i64 = header(&headers, "webhook-timestamp")
        .and_then(|text| text.parse().ok())
        .expect("accepted without a timestamp");
    assert!(
        (i128::from(now) - i128::from(timestamp)).abs() <= i128::from(TIMESTAMP_TOLERANCE_SECONDS),
        "accepted timestamp {timestamp} at {now}"
    );
    let expected = reference_signature(&key, &id, timestamp, body);
    let signatures = header(&headers, "webhook-signature").expect("accepted without a signature");
    assert!(
        signatures
            .split(' ')
            .filter_map(|candidate| candidate.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .any(|signature| signature == expected),
        "accepted without a valid signature: {headers:?}"
    );
}

fn delivery_headers(id: &str, timestamp: i64, signatures: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "webhook-id",
        HeaderValue::from_str(id).expect("visible ASCII"),
    );
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(signatures).expect("visible ASCII"),
    );
    headers
}

/// Keeps the characters a sender may put in a header value; `None` when nothing is left.
fn visible(text: &str) -> Option<String> {
    let kept: String = text.chars().filter(char::is_ascii_graphic).collect();
    (!kept.is_empty()).then_some(kept)
}

fn check_signed_delivery(case: &Delivery, body: &[u8]) {
    let key = case.key();
    let secret = case.secret(&key);
    let now = case.now();
    let tolerance = TIMESTAMP_TOLERANCE_SECONDS;
    let timestamp = now + i64::from(case.skew).clamp(-tolerance, tolerance);
    let id: String = visible(&case.id)
        .unwrap_or_else(|| "evt_1".to_owned())
        .chars()
        .take(MAX_EVENT_ID_CHARS)
        .collect();

    let signature = secret.sign(&id, timestamp, body);
    assert_eq!(
        signature,
        format!(
            "v1,{}",
            STANDARD.encode(reference_signature(&key, &id, timestamp, body))
        )
    );
    let others =
        |list: &[String]| -> Vec<String> { list.iter().filter_map(|s| visible(s)).collect() };
    let mut list = others(&case.other_signatures_before);
    list.push(signature.clone());
    list.extend(others(&case.other_signatures_after));
    let signatures = list.join(" ");

    let verify = |headers: &HeaderMap, body: &[u8], now: i64| secret.verify(headers, body, now);
    let headers = delivery_headers(&id, timestamp, &signatures);
    assert_eq!(verify(&headers, body, now), Ok(id.clone()), "{headers:?}");

    let bad = Err(SignatureError::BadSignature);
    // Another body.
    let mut other_body = body.to_vec();
    if other_body.is_empty() {
        other_body.push(b'{');
    } else {
        let at = case.edit_at % other_body.len();
        other_body[at] ^= case.edit_to.max(1);
    }
    assert_eq!(verify(&headers, &other_body, now), bad);
    // Another id: one character more, or the last one changed at the length limit.
    let mut other_id = id.clone();
    if other_id.len() < MAX_EVENT_ID_CHARS {
        other_id.push('x');
    } else {
        let replaced = other_id.pop().expect("not empty");
        other_id.push(if replaced == 'x' { 'y' } else { 'x' });
    }
    let headers_other_id = delivery_headers(&other_id, timestamp, &signatures);
    assert_eq!(verify(&headers_other_id, body, now), bad);
    // Another timestamp, still within tolerance.
    let other_timestamp = if timestamp > now {
        timestamp - 1
    } else {
        timestamp + 1
    };
    let headers_other_ts = delivery_headers(&id, other_timestamp, &signatures);
    assert_eq!(verify(&headers_other_ts, body, now), bad);
    // Too far from now, either way.
    let stale = Err(SignatureError::StaleTimestamp);
    assert_eq!(verify(&headers, body, timestamp + tolerance + 1), stale);
    assert_eq!(verify(&headers, body, timestamp - tolerance - 1), stale);
    // Another secret of the same length (HMAC pads shorter keys with zero bytes).
    let mut other_key = key.clone();
    other_key[0] ^= 1;
    assert_eq!(case.secret(&other_key).verify(&headers, body, now), bad);
    // The signature alone, with one byte changed.
    let mut edited = signature.clone().into_bytes();
    let at = 3 + case.edit_at % (edited.len() - 3);
    if edited[at] != case.edit_to {
        edited[at] = case.edit_to;
        if let Ok(edited) = String::from_utf8(edited) {
            if edited.bytes().all(|b| b.is_ascii_graphic()) {
                let headers = delivery_headers(&id, timestamp, &edited);
                assert_eq!(verify(&headers, body, now), bad, "{edited:?}");
            }
        }
    }
    // Without a signature, or without an id.
    let mut unsigned = headers.clone();
    unsigned.remove("webhook-signature");
    assert_eq!(verify(&unsigned, body, now), bad);
    let mut anonymous = headers;
    anonymous.remove("webhook-id");
    assert_eq!(
        verify(&anonymous, body, now),
        Err(SignatureError::MissingId)
    );
}
