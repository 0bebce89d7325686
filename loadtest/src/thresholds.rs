//! Pass/fail rules for a finished run. Pure functions over [`RequestStats`], so the
//! rules are unit-tested without running goose.

/// What one request name (or the whole run) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestStats {
    pub name: String,
    /// Requests actually sent; coordinated-omission back-fill is not counted here.
    pub requests: usize,
    /// Requests that failed: a transport error, a non-2xx status, or a failed check.
    pub errors: usize,
    /// Median response time, in microseconds.
    pub p50_us: u64,
    /// 99th percentile response time, in microseconds.
    pub p99_us: u64,
}

impl RequestStats {
    /// Failed requests as a fraction of all, 0 when nothing was sent.
    #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// The limits a run must stay within.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Highest allowed p99, per request name and over all requests, in microseconds.
    pub max_p99_us: u64,
    /// Highest allowed error rate over all requests, as a fraction from 0 to 1.
    pub max_error_rate: f64,
}

/// Every limit the run broke, as messages for the console; empty when it passed.
/// A run that sent no request fails too: a gate that passes on no data hides a
/// broken setup.
pub fn evaluate(per_request: &[RequestStats], total: &RequestStats, limits: Limits) -> Vec<String> {
    let mut violations = Vec::new();
    if total.requests == 0 {
        violations
            .push("no request was recorded (is the service up? were metrics disabled?)".into());
        return violations;
    }
    if total.error_rate() > limits.max_error_rate {
        violations.push(format!(
            "error rate {:.4}% ({} of {}) exceeds --max-error-rate {:.4}%",
            total.error_rate() * 100.0,
            total.errors,
            total.requests,
            limits.max_error_rate * 100.0
        ));
    }
    for stats in per_request.iter().chain(std::iter::once(total)) {
        if stats.p99_us > limits.max_p99_us {
            violations.push(format!(
                "p99 of {} is {} ms, over --max-p99-ms {}",
                stats.name,
                format_ms(stats.p99_us),
                format_ms(limits.max_p99_us)
            ));
        }
    }
    violations
}

/// Microseconds as milliseconds with three decimals, without float rounding.
pub fn format_ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// Parses `--max-p99-ms`: a positive number of milliseconds, decimals allowed, to
/// whole microseconds (the resolution goose measures in).
pub fn parse_max_p99_ms(value: &str) -> Result<u64, String> {
    let ms: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if !(ms > 0.0 && ms <= 3_600_000.0) {
        return Err("must be above 0 and at most one hour".into());
    }
    // In range 0..=3.6e9 after the check above, so neither truncation nor sign loss.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((ms * 1000.0).round() as u64)
}

/// Parses `--max-error-rate`: a fraction from 0 to 1 (0.01 allows 1% failed requests).
pub fn parse_max_error_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be a fraction from 0 to 1, such as 0.01 for 1%".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(name: &str, requests: usize, errors: usize, p99_ms: u64) -> RequestStats {
        RequestStats {
            name: name.into(),
            requests,
            errors,
            p50_us: 0,
            p99_us: p99_ms * 1000,
        }
    }

    const LIMITS: Limits = Limits {
        max_p99_us: 200_000,
        max_error_rate: 0.0,
    };

    #[test]
    fn clean_fast_run_passes() {
        let rows = [stats("GET a", 10, 0, 5), stats("GET b", 10, 0, 200)];
        assert!(evaluate(&rows, &stats("all", 20, 0, 200), LIMITS).is_empty());
    }

    #[test]
    fn any_error_fails_with_zero_allowed() {
        let rows = [stats("GET a", 1000, 1, 5)];
        let violations = evaluate(&rows, &stats("all", 1000, 1, 5), LIMITS);
        assert_eq!(violations.len(), 1);
        assert!(violations[0].contains("error rate"), "{violations:?}");
    }

    #[test]
    fn error_rate_at_the_limit_passes_and_above_fails() {
        let limits = Limits {
            max_error_rate: 0.01,
            ..LIMITS
        };
        let total = stats("all", 100, 1, 5);
        assert!(evaluate(&[], &total, limits).is_empty());
        let total = stats("all", 100, 2, 5);
        assert_eq!(evaluate(&[], &total, limits).len(), 1);
    }

    #[test]
    fn one_slow_request_name_fails() {
        let rows = [stats("GET fast", 10, 0, 5), stats("GET slow", 10, 0, 201)];
        let violations = evaluate(&rows, &stats("all", 20, 0, 150), LIMITS);
        assert_eq!(violations.len(), 1);
        assert!(violations[0].contains("GET slow"), "{violations:?}");
    }

    #[test]
    fn slow_total_fails() {
        let violations = evaluate(&[], &stats("all", 20, 0, 250), LIMITS);
        assert_eq!(violations.len(), 1);
    }

    #[test]
    fn no_requests_fails() {
        assert_eq!(evaluate(&[], &stats("all", 0, 0, 0), LIMITS).len(), 1);
    }

    #[test]
    fn error_rate_of_nothing_is_zero() {
        assert!(stats("all", 0, 0, 0).error_rate().abs() < f64::EPSILON);
    }

    #[test]
    fn limits_parse() {
        assert_eq!(parse_max_p99_ms("200"), Ok(200_000));
        assert_eq!(parse_max_p99_ms("0.25"), Ok(250));
        assert!(parse_max_p99_ms("0").is_err());
        assert!(parse_max_p99_ms("-1").is_err());
        assert!(parse_max_p99_ms("NaN").is_err());
        assert!(parse_max_p99_ms("ms").is_err());
        assert_eq!(parse_max_error_rate("0.01"), Ok(0.01));
        assert!(parse_max_error_rate("1.5").is_err());
        assert!(parse_max_error_rate("-0.1").is_err());
    }

    #[test]
    fn ms_format_keeps_microseconds() {
        assert_eq!(format_ms(0), "0.000");
        assert_eq!(format_ms(412), "0.412");
        assert_eq!(format_ms(200_000), "200.000");
    }
}
