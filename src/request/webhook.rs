//! Webhook requests: Standard Webhooks v1 signatures and the event body.
//!
//! Verification happens before the body is parsed, and says nothing to the client about why a
//! signature failed. Every comparison of secret-derived bytes is constant-time (`hmac`'s
//! `verify_slice`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::Deserialize;
use sha2::Sha256;

use crate::domain::event::{
    price_from_float, validate_external_id, ExternalProduct, FieldError, ProductChange,
    ProductEvent,
};
use crate::domain::Timestamp;

/// How far a delivery's timestamp may be from now, either way (Standard Webhooks: 5 minutes).
pub const TIMESTAMP_TOLERANCE_SECONDS: i64 = 300;
/// The largest body accepted; larger ones get 413 before anything is read past it.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The longest event id accepted; the column is `VARCHAR(255)`.
pub const MAX_EVENT_ID_CHARS: usize = 255;

/// The signing key, from `WEBHOOK_SECRET` (`whsec_` + base64).
#[derive(Clone)]
pub struct WebhookSecret {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Why a delivery is not authentic or not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("header `webhook-id` (or `x-event-id`) is missing or invalid")]
    MissingId,
    #[error("header `webhook-timestamp` is missing or not a Unix time in seconds")]
    BadTimestamp,
    #[error("header `webhook-timestamp` is more than 5 minutes away from now")]
    StaleTimestamp,
    /// Missing or wrong: the client learns nothing more.
    #[error("the signature is missing or does not match")]
    BadSignature,
}

/// Why an authentic body is not an acceptable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not valid JSON of the event shape: {0}")]
    InvalidJson(String),
    #[error("field `type` must be product.created, product.updated or product.deleted")]
    UnknownType,
    #[error("field `timestamp` must be an RFC 3339 date-time")]
    BadTimestamp,
    #[error(transparent)]
    Field(#[from] FieldError),
}

impl EventError {
    /// The field at fault, for the problem body.
    #[must_use]
    pub fn field(&self) -> Option<&'static str> {
        match self {
            EventError::InvalidJson(_) => None,
            EventError::UnknownType => Some("type"),
            EventError::BadTimestamp => Some("timestamp"),
            EventError::Field(error) => Some(error.field),
        }
    }
}

impl WebhookSecret {
    /// Accepts `whsec_<base64>` (or bare base64); `None` when it does not decode or is empty.
    #[must_use]
    pub fn parse(text: &str) -> Option<WebhookSecret> {
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        let key = STANDARD
            .decode(encoded)
            .ok()
            .filter(|key| !key.is_empty())?;
        Some(WebhookSecret {
            mac: Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts keys of any length"),
        })
    }

    /// `v1,<base64>` for `id.timestamp.body`: what a sender puts in `webhook-signature`.
    #[must_use]
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(&signed_prefix(id, timestamp));
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Checks a delivery; returns its event id.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_seconds: i64,
    ) -> Result<String, SignatureError> {
        let id = header(headers, "webhook-id")
            .or_else(|| header(headers, "x-event-id"))
            .filter(|id| !id.is_empty() && id.chars().count() <= MAX_EVENT_ID_CHARS)
            .ok_or(SignatureError::MissingId)?;
        let timestamp: i64 = header(headers, "webhook-timestamp")
            .and_then(|text| text.parse().ok())
            .ok_or(SignatureError::BadTimestamp)?;
        // `abs_diff`: a subtraction could overflow on a hostile timestamp (found by fuzzing).
        if now_seconds.abs_diff(timestamp) > TIMESTAMP_TOLERANCE_SECONDS.unsigned_abs() {
            return Err(SignatureError::StaleTimestamp);
        }
        let signatures =
            header(headers, "webhook-signature").ok_or(SignatureError::BadSignature)?;
        let mut mac = self.mac.clone();
        mac.update(&signed_prefix(id, timestamp));
        mac.update(body);
        let authentic = signatures
            .split(' ')
            .filter_map(|candidate| candidate.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .any(|signature| mac.clone().verify_slice(&signature).is_ok());
        if authentic {
            Ok(id.to_owned())
        } else {
            Err(SignatureError::BadSignature)
        }
    }
}

fn signed_prefix(id: &str, timestamp: i64) -> Vec<u8> {
    format!("{id}.{timestamp}.").into_bytes()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    timestamp: String,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    external_id: String,
    name: Option<String>,
    description: Option<String>,
    price: Option<f64>,
    category: Option<String>,
}

/// Parses the event body (simd-json parses in place, hence `&mut`) and validates it.
pub fn parse_event(body: &mut [u8]) -> Result<ProductEvent, EventError> {
    let raw: RawEvent = simd_json::serde::from_slice(body)
        .map_err(|error| EventError::InvalidJson(error.to_string()))?;
    let happened_at = Timestamp::parse_rfc3339(&raw.timestamp).ok_or(EventError::BadTimestamp)?;
    let data = raw.data;
    let change = match raw.kind.as_str() {
        "product.created" | "product.updated" => {
            let missing = |field| FieldError {
                field,
                reason: "is required",
            };
            let product = ExternalProduct {
                external_id: data.external_id,
                name: data.name.ok_or(missing("data.name"))?,
                description: data.description.unwrap_or_default(),
                price: price_from_float(data.price.ok_or(missing("data.price"))?)?,
                category: data.category.ok_or(missing("data.category"))?,
            };
            product.validate()?;
            ProductChange::Upsert(product)
        }
        "product.deleted" => {
            validate_external_id(&data.external_id)?;
            ProductChange::Delete {
                external_id: data.external_id,
            }
        }
        _ => return Err(EventError::UnknownType),
    };
    Ok(ProductEvent {
        change,
        happened_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn secret() -> WebhookSecret {
        WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    fn headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(signature).unwrap(),
        );
        headers
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's example.
        let body = br#"{"test": 2432232314}"#;
        let signature = secret().sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verifies_rotated_signatures_and_rejects_the_rest() {
        let body = b"{}";
        let now = 1_700_000_000;
        let good = secret().sign("evt_1", now, body);
        let rotated = format!("v1,AAAA {good}");
        assert_eq!(
            secret().verify(&headers("evt_1", now, &rotated), body, now),
            Ok("evt_1".into())
        );
        let cases = [
            (
                headers("evt_1", now, &good),
                &b"{ }"[..],
                now,
                SignatureError::BadSignature,
            ),
            (
                headers("evt_2", now, &good),
                body,
                now,
                SignatureError::BadSignature,
            ),
            (
                headers("evt_1", now, "v1,"),
                body,
                now,
                SignatureError::BadSignature,
            ),
            (
                headers("evt_1", now, &good),
                body,
                now + 301,
                SignatureError::StaleTimestamp,
            ),
            (
                headers("evt_1", now, &good),
                body,
                now - 301,
                SignatureError::StaleTimestamp,
            ),
        ];
        for (headers, body, at, expected) in cases {
            assert_eq!(secret().verify(&headers, body, at), Err(expected));
        }
        let mut legacy = HeaderMap::new();
        legacy.insert("x-event-id", HeaderValue::from_static("evt_9"));
        legacy.insert("webhook-timestamp", HeaderValue::from(now));
        let signature = secret().sign("evt_9", now, body);
        legacy.insert(
            "webhook-signature",
            HeaderValue::from_str(&signature).unwrap(),
        );
        assert_eq!(secret().verify(&legacy, body, now), Ok("evt_9".into()));
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        // Regression: fuzz/artifacts/webhook_body/crash-3db08dfff4a8016cd7ed6478e189aeeea1ab1bfd.
        for timestamp in [i64::MIN, i64::MAX, 1_700_000_000 + i64::MIN] {
            let headers = headers("evt_1", timestamp, "v1,");
            assert_eq!(
                secret().verify(&headers, b"{}", 1_700_000_000),
                Err(SignatureError::StaleTimestamp)
            );
        }
    }

    #[test]
    fn parses_events_and_names_bad_fields() {
        let mut created = br#"{"type":"product.created","timestamp":"2026-01-01T00:00:00Z",
            "data":{"external_id":"7","name":"Lamp","description":"Oak","price":12.5,"category":"furniture"}}"#
            .to_vec();
        let event = parse_event(&mut created).unwrap();
        assert!(matches!(event.change, ProductChange::Upsert(ref p) if p.price.0 == 1250));
        let cases: [(&str, Option<&str>); 6] = [
            (r#"{"type":"product.created""#, None),
            (
                r#"{"type":"product.moved","timestamp":"2026-01-01T00:00:00Z","data":{"external_id":"7"}}"#,
                Some("type"),
            ),
            (
                r#"{"type":"product.deleted","timestamp":"soon","data":{"external_id":"7"}}"#,
                Some("timestamp"),
            ),
            (
                r#"{"type":"product.created","timestamp":"2026-01-01T00:00:00Z","data":{"external_id":"7","name":"","price":1,"category":"c"}}"#,
                Some("data.name"),
            ),
            (
                r#"{"type":"product.updated","timestamp":"2026-01-01T00:00:00Z","data":{"external_id":"7","name":"n","price":-1,"category":"c"}}"#,
                Some("data.price"),
            ),
            (
                r#"{"type":"product.deleted","timestamp":"2026-01-01T00:00:00Z","data":{"external_id":""}}"#,
                Some("data.external_id"),
            ),
        ];
        for (body, field) in cases {
            let error = parse_event(&mut body.as_bytes().to_vec()).unwrap_err();
            assert_eq!(error.field(), field, "{body}: {error}");
        }
    }
}
