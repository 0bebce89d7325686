//! Product change events, as webhooks and the catalogue sync deliver them, validated against the
//! listing's rules.

use super::{Price, Timestamp};

/// What happened to a product of the outside world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductChange {
    /// Created or updated: the product's full new state.
    Upsert(ExternalProduct),
    Delete {
        external_id: String,
    },
}

/// A product as the outside world describes it, keyed by its `external_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalProduct {
    pub external_id: String,
    pub name: String,
    pub description: String,
    pub price: Price,
    pub category: String,
}

/// One change and when it happened at the source (orders out-of-order deliveries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductEvent {
    pub change: ProductChange,
    pub happened_at: Timestamp,
}

impl ProductChange {
    #[must_use]
    pub fn external_id(&self) -> &str {
        match self {
            ProductChange::Upsert(product) => &product.external_id,
            ProductChange::Delete { external_id } => external_id,
        }
    }

    /// The event type name stored with the event id.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            ProductChange::Upsert(_) => "upsert",
            ProductChange::Delete { .. } => "delete",
        }
    }
}

/// A field that breaks the listing's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: &'static str,
}

/// The longest `external_id`; the column is `VARCHAR(64)`.
pub const MAX_EXTERNAL_ID_CHARS: usize = 64;
/// The longest name; the column is `VARCHAR(255)`.
pub const MAX_NAME_CHARS: usize = 255;
/// The longest description; the column is `TEXT` (65,535 bytes).
pub const MAX_DESCRIPTION_BYTES: usize = 65_535;

impl ExternalProduct {
    /// Checks every field against the listing's rules.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_text("data.external_id", &self.external_id, MAX_EXTERNAL_ID_CHARS)?;
        check_text("data.name", &self.name, MAX_NAME_CHARS)?;
        check_text("data.category", &self.category, 64)?;
        if self.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(FieldError {
                field: "data.description",
                reason: "must be at most 65535 bytes",
            });
        }
        Ok(())
    }
}

/// Checks an external id alone (deletes carry nothing else).
pub fn validate_external_id(external_id: &str) -> Result<(), FieldError> {
    check_text("data.external_id", external_id, MAX_EXTERNAL_ID_CHARS)
}

/// Converts a JSON price to cents: non-negative, finite, at most 2 decimal places.
pub fn price_from_float(value: f64) -> Result<Price, FieldError> {
    let error = |reason| FieldError {
        field: "data.price",
        reason,
    };
    if !value.is_finite() || value < 0.0 {
        return Err(error("must be a non-negative number"));
    }
    let cents = (value * 100.0).round();
    if (cents - value * 100.0).abs() > 1e-6 * cents.max(1.0) {
        return Err(error("must have at most 2 decimal places"));
    }
    // MAX_CENTS (< 2^40) is exact as a float.
    #[allow(clippy::cast_precision_loss)]
    let max_cents = super::price::MAX_CENTS as f64;
    if cents > max_cents {
        return Err(error("must be at most 9999999999.99"));
    }
    Ok(Price(cents as i64))
}

fn check_text(field: &'static str, value: &str, max_chars: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError {
            field,
            reason: "must not be empty",
        });
    }
    if value.chars().count() > max_chars {
        return Err(FieldError {
            field,
            reason: "is too long",
        });
    }
    if value.chars().any(char::is_control) && field != "data.description" {
        return Err(FieldError {
            field,
            reason: "must not contain control characters",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_convert_exactly_or_are_rejected() {
        let cases = [
            (12.5, Ok(Price(1250))),
            (0.1, Ok(Price(10))),
            (9.99, Ok(Price(999))),
            (1999.99, Ok(Price(199_999))),
            (0.0, Ok(Price(0))),
            (-1.0, Err("data.price")),
            (1.234, Err("data.price")),
            (f64::NAN, Err("data.price")),
            (1e13, Err("data.price")),
        ];
        for (value, expected) in cases {
            assert_eq!(
                price_from_float(value).map_err(|e| e.field),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn products_breaking_the_rules_name_the_field() {
        let good = ExternalProduct {
            external_id: "42".into(),
            name: "Lamp".into(),
            description: String::new(),
            price: Price(100),
            category: "furniture".into(),
        };
        assert_eq!(good.validate(), Ok(()));
        let cases = [
            (
                ExternalProduct {
                    name: " ".into(),
                    ..good.clone()
                },
                "data.name",
            ),
            (
                ExternalProduct {
                    external_id: String::new(),
                    ..good.clone()
                },
                "data.external_id",
            ),
            (
                ExternalProduct {
                    category: "x".repeat(65),
                    ..good.clone()
                },
                "data.category",
            ),
            (
                ExternalProduct {
                    name: "x".repeat(256),
                    ..good.clone()
                },
                "data.name",
            ),
        ];
        for (product, field) in cases {
            assert_eq!(product.validate().unwrap_err().field, field);
        }
    }
}
