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

    proptest! {
        #[test]
        fn civil_round_trips(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999i64) {
            let ts = Timestamp(micros);
            prop_assert_eq!(Timestamp::from_civil(ts.to_civil()), ts);
        }
    }
}
