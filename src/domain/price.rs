//! Money as integer cents: `DECIMAL(12,2)` in MySQL, never a float in between.

use std::fmt::Write as _;

/// A non-negative amount in cents, at most `DECIMAL(12,2)`'s 9,999,999,999.99.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub i64);

/// Why a decimal text is not a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("must be a decimal number such as 12 or 12.50")]
    NotDecimal,
    #[error("must have at most 2 decimal places")]
    TooPrecise,
    #[error("must be at most 9999999999.99")]
    TooLarge,
}

/// The largest value `DECIMAL(12,2)` can hold, in cents.
pub const MAX_CENTS: i64 = 999_999_999_999;

impl Price {
    /// Parses `12`, `12.5` or `12.50` (no sign, no exponent: a client's `-1` is a mistake to
    /// name, not a negative price to clamp). MySQL also sends DECIMAL in this form.
    pub fn parse(text: &[u8]) -> Result<Self, PriceError> {
        let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
            Some(dot) => (&text[..dot], &text[dot + 1..]),
            None => (text, &b""[..]),
        };
        let is_digits = |part: &[u8]| part.iter().all(u8::is_ascii_digit);
        if whole.is_empty() || !is_digits(whole) || !is_digits(fraction) {
            return Err(PriceError::NotDecimal);
        }
        if text.contains(&b'.') && fraction.is_empty() {
            return Err(PriceError::NotDecimal);
        }
        if fraction.len() > 2 {
            return Err(PriceError::TooPrecise);
        }
        let mut cents: i64 = 0;
        for &digit in whole {
            cents = cents
                .checked_mul(10)
                .and_then(|c| c.checked_add(i64::from(digit - b'0')))
                .filter(|&c| c <= MAX_CENTS / 100)
                .ok_or(PriceError::TooLarge)?;
        }
        cents *= 100;
        let mut scale = 10;
        for &digit in fraction {
            cents += i64::from(digit - b'0') * scale;
            scale /= 10;
        }
        Ok(Price(cents))
    }

    /// Appends the canonical decimal form with two places (`12.50`), valid as both a JSON
    /// number and a MySQL DECIMAL literal.
    pub fn write_decimal(self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(digits.format(self.0 / 100).as_bytes());
        let cents = (self.0 % 100) as u8;
        out.extend_from_slice(&[b'.', b'0' + cents / 10, b'0' + cents % 10]);
    }

    /// The canonical decimal form as a string, for SQL parameters and cache keys.
    #[must_use]
    pub fn to_decimal_string(self) -> String {
        let mut text = String::with_capacity(16);
        let _ = write!(text, "{}.{:02}", self.0 / 100, self.0 % 100);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_decimal_forms() {
        let cases: [(&str, Result<Price, PriceError>); 12] = [
            ("0", Ok(Price(0))),
            ("12", Ok(Price(1200))),
            ("12.5", Ok(Price(1250))),
            ("12.05", Ok(Price(1205))),
            ("0.50", Ok(Price(50))),
            ("9999999999.99", Ok(Price(MAX_CENTS))),
            ("10000000000", Err(PriceError::TooLarge)),
            ("1.234", Err(PriceError::TooPrecise)),
            ("-1", Err(PriceError::NotDecimal)),
            ("1e3", Err(PriceError::NotDecimal)),
            ("1.", Err(PriceError::NotDecimal)),
            (".5", Err(PriceError::NotDecimal)),
        ];
        for (text, expected) in cases {
            assert_eq!(Price::parse(text.as_bytes()), expected, "{text}");
        }
    }

    proptest! {
        #[test]
        fn decimal_text_round_trips(cents in 0..=MAX_CENTS) {
            let text = Price(cents).to_decimal_string();
            prop_assert_eq!(Price::parse(text.as_bytes()), Ok(Price(cents)));
            let mut written = Vec::new();
            Price(cents).write_decimal(&mut written);
            prop_assert_eq!(written, text.into_bytes());
        }
    }
}
