//! UTC instants as microseconds since the Unix epoch.
//!
//! MySQL `DATETIME(6)` carries no zone; the service stores and reads UTC only. Conversions are
//! hand-written (Howard Hinnant's civil-date algorithms) because they sit on the serializer's
//! hot path and need no time-zone database.

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// A broken-down UTC date and time, as the MySQL binary protocol sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub micros: u32,
}

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

impl Timestamp {
    /// Builds an instant from a civil date; fields are trusted to be in range (they come from
    /// MySQL or from our own arithmetic).
    #[must_use]
    pub fn from_civil(civil: Civil) -> Self {
        let days = days_from_civil(civil.year, civil.month, civil.day);
        let seconds = days * SECONDS_PER_DAY
            + i64::from(civil.hour) * 3600
            + i64::from(civil.minute) * 60
            + i64::from(civil.second);
        Timestamp(seconds * MICROS_PER_SECOND + i64::from(civil.micros))
    }

    #[must_use]
    pub fn to_civil(self) -> Civil {
        let seconds = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND) as u32;
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: (second_of_day / 3600) as u8,
            minute: (second_of_day % 3600 / 60) as u8,
            second: (second_of_day % 60) as u8,
            micros,
        }
    }

    /// Appends RFC 3339 with microseconds, e.g. `2025-01-02T03:04:05.123456Z` (27 bytes).
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let c = self.to_civil();
        let mut buf = [0u8; 27];
        put_digits(&mut buf[0..4], c.year.unsigned_abs());
        buf[4] = b'-';
        put_digits(&mut buf[5..7], u32::from(c.month));
        buf[7] = b'-';
        put_digits(&mut buf[8..10], u32::from(c.day));
        buf[10] = b'T';
        put_digits(&mut buf[11..13], u32::from(c.hour));
        buf[13] = b':';
        put_digits(&mut buf[14..16], u32::from(c.minute));
        buf[16] = b':';
        put_digits(&mut buf[17..19], u32::from(c.second));
        buf[19] = b'.';
        put_digits(&mut buf[20..26], c.micros);
        buf[26] = b'Z';
        out.extend_from_slice(&buf);
    }
}

impl Timestamp {
    /// Parses RFC 3339 (`2025-01-02T03:04:05Z`, fractions up to nanoseconds truncated to
    /// microseconds, `Z` or a `±HH:MM` offset). `None` for anything else.
    #[must_use]
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let bytes = text.as_bytes();
        if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
            return None;
        }
        if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = bytes.get(range)?;
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| part.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut index = 19;
        let mut micros = 0u32;
        if bytes.get(index) == Some(&b'.') {
            index += 1;
            let start = index;
            while bytes.get(index).is_some_and(u8::is_ascii_digit) {
                if index - start < 6 {
                    micros = micros * 10 + u32::from(bytes[index] - b'0');
                }
                index += 1;
            }
            let digits = index - start;
            if digits == 0 {
                return None;
            }
            for _ in digits..6 {
                micros *= 10;
            }
        }
        let offset_seconds: i64 = match bytes.get(index..)? {
            b"Z" | b"z" => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let digits = [*h1, *h2, *m1, *m2];
                if !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
                let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
                if hours > 23 || minutes > 59 {
                    return None;
                }
                let magnitude = hours * 3600 + minutes * 60;
                if *sign == b'-' {
                    -magnitude
                } else {
                    magnitude
                }
            }
            _ => return None,
        };
        let local = Timestamp::from_civil(Civil {
            year: i32::try_from(year).ok()?,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second.min(59) as u8,
            micros,
        });
        Some(Timestamp(local.0 - offset_seconds * MICROS_PER_SECOND))
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Writes `value` as zero-padded decimal filling all of `slot`.
fn put_digits(slot: &mut [u8], mut value: u32) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rfc3339(ts: Timestamp) -> String {
        let mut out = Vec::new();
        ts.write_rfc3339(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn known_instants_format_as_rfc3339() {
        let cases = [
            (0, "1970-01-01T00:00:00.000000Z"),
            (1_735_787_045_123_456, "2025-01-02T03:04:05.123456Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
        ];
        for (micros, text) in cases {
            assert_eq!(rfc3339(Timestamp(micros)), text);
        }
    }

    #[test]
    fn parses_rfc3339_forms() {
        let cases = [
            ("2025-01-02T03:04:05Z", Some(1_735_787_045_000_000)),
            ("2025-01-02T03:04:05.123456Z", Some(1_735_787_045_123_456)),
            (
                "2025-01-02T03:04:05.1234567891Z",
                Some(1_735_787_045_123_456),
            ),
            ("2025-01-02T04:04:05.5+01:00", Some(1_735_787_045_500_000)),
            ("2025-01-02T03:04:05", None),
            ("2025-02-30T03:04:05Z", None),
            ("2025-01-02T24:04:05Z", None),
            ("2025-01-02T03:04:05.Z", None),
            ("2025-01-02T03:04:05+99:99", None),
            ("yesterday", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Timestamp::parse_rfc3339(text).map(|t| t.0),
                expected,
                "{text}"
            );
        }
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(micros in 0i64..253_402_300_799_999_999i64) {
            let text = rfc3339(Timestamp(micros));
            prop_assert_eq!(Timestamp::parse_rfc3339(&text), Some(Timestamp(micros)));
        }

        #[test]
        fn civil_round_trips(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999i64) {
            let ts = Timestamp(micros);
            prop_assert_eq!(Timestamp::from_civil(ts.to_civil()), ts);
        }
    }
}
