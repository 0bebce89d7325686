//! Turns goose's end-of-run metrics into [`RequestStats`] rows and a short table.

use std::fmt::Write as _;

use goose::metrics::{GooseMetrics, GooseRequestMetricAggregate, GooseRequestMetricTimingData};

use crate::server_metrics::Buckets;
use crate::thresholds::{format_ms, RequestStats};

/// The name of the row that covers every request.
pub const TOTAL: &str = "all requests";

/// One row per request name, sorted by name, and the row for all requests together.
///
/// Percentiles come from the coordinated-omission data when goose back-filled any
/// (`--co-mitigation`), so a stalled server cannot hide behind users that stopped
/// sending; otherwise from the measured times.
pub fn summarize(metrics: &GooseMetrics) -> (Vec<RequestStats>, RequestStats) {
    let mut names: Vec<&String> = metrics.requests.keys().collect();
    names.sort();
    let mut all = Vec::new();
    let mut total = RequestStats {
        name: TOTAL.to_string(),
        requests: 0,
        errors: 0,
        p50_us: 0,
        p99_us: 0,
    };
    let rows = names
        .into_iter()
        .map(|name| {
            let aggregate = &metrics.requests[name];
            let times = timing(aggregate);
            all.push(times);
            let row = RequestStats {
                name: name.clone(),
                requests: aggregate.success_count + aggregate.fail_count,
                errors: aggregate.fail_count,
                p50_us: times.percentile_us(0.5),
                p99_us: times.percentile_us(0.99),
            };
            total.requests += row.requests;
            total.errors += row.errors;
            row
        })
        .collect();
    let all = combine(&all);
    total.p50_us = all.percentile_us(0.5);
    total.p99_us = all.percentile_us(0.99);
    (rows, total)
}

fn timing(aggregate: &GooseRequestMetricAggregate) -> &GooseRequestMetricTimingData {
    aggregate
        .coordinated_omission_data
        .as_ref()
        .unwrap_or(&aggregate.raw_data)
}

/// All of `times` as one set. goose's own merge is crate-private, but the buckets
/// and totals are public, and rebuilding them lets goose's `percentile_us` compute
/// the overall percentiles exactly as it does per request.
fn combine(times: &[&GooseRequestMetricTimingData]) -> GooseRequestMetricTimingData {
    let times: Vec<_> = times.iter().filter(|t| t.counter > 0).collect();
    GooseRequestMetricTimingData {
        times_us: times
            .iter()
            .flat_map(|t| t.times_us.iter().map(|(&bucket, &count)| (bucket, count)))
            .collect(),
        minimum_time_us: times.iter().map(|t| t.minimum_time_us).min().unwrap_or(0),
        maximum_time_us: times.iter().map(|t| t.maximum_time_us).max().unwrap_or(0),
        total_time_us: times.iter().map(|t| t.total_time_us).sum(),
        counter: times.iter().map(|t| t.counter).sum(),
    }
}

/// A fixed-width table: requests, errors, p50 and p99 (ms) per request name, then
/// the total row.
pub fn table(rows: &[RequestStats], total: &RequestStats) -> String {
    let width = rows
        .iter()
        .chain(std::iter::once(total))
        .map(|row| row.name.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "{:<width$}  {:>9}  {:>7}  {:>10}  {:>10}\n",
        "request", "requests", "errors", "p50 ms", "p99 ms"
    );
    for row in rows.iter().chain(std::iter::once(total)) {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:>7}  {:>10}  {:>10}",
            row.name,
            row.requests,
            row.errors,
            format_ms(row.p50_us),
            format_ms(row.p99_us)
        );
    }
    out
}

/// One line for scripts (`perf/load` builds its table from it): `summary` then
/// tab-separated `key=value` pairs. Times in ms; `-` where there is no figure.
pub fn machine_line(
    scenario: &str,
    total: &RequestStats,
    duration_seconds: usize,
    server: Option<&Buckets>,
) -> String {
    let server_ms = |q: f64| {
        server
            .and_then(|buckets| buckets.quantile(q))
            .map_or_else(|| "-".to_string(), |q| format!("{:.3}", q.seconds * 1000.0))
    };
    format!(
        "summary\tscenario={scenario}\trequests={}\trps={}\terrors={}\tp50_ms={}\tp99_ms={}\t\
         server_p50_ms={}\tserver_p99_ms={}",
        total.requests,
        per_second(total.requests, duration_seconds),
        total.errors,
        format_ms(total.p50_us),
        format_ms(total.p99_us),
        server_ms(0.5),
        server_ms(0.99),
    )
}

/// Requests per second with one decimal, `-` for a run of no measurable length.
#[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
fn per_second(requests: usize, seconds: usize) -> String {
    if seconds == 0 {
        "-".to_string()
    } else {
        format!("{:.1}", requests as f64 / seconds as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(values_us: &[u64]) -> GooseRequestMetricTimingData {
        GooseRequestMetricTimingData {
            // Every time under 128 µs has a bucket of its own, so a value is its bucket.
            times_us: values_us.iter().map(|&us| (us, 1)).collect(),
            minimum_time_us: values_us.iter().copied().min().unwrap_or(0),
            maximum_time_us: values_us.iter().copied().max().unwrap_or(0),
            total_time_us: values_us.iter().sum(),
            counter: values_us.len(),
        }
    }

    #[test]
    fn combined_percentiles_cover_every_request() {
        let fast = times(&[10; 98]);
        let slow = times(&[100, 120]);
        let empty = times(&[]);
        let all = combine(&[&fast, &empty, &slow]);
        assert_eq!(all.counter, 100);
        assert_eq!((all.minimum_time_us, all.maximum_time_us), (10, 120));
        assert_eq!(all.percentile_us(0.5), 10);
        assert_eq!(all.percentile_us(0.99), 100);
        assert_eq!(all.percentile_us(1.0), 120);
    }

    #[test]
    fn table_lines_up_and_ends_with_total() {
        let row = RequestStats {
            name: "GET /health".into(),
            requests: 12,
            errors: 1,
            p50_us: 412,
            p99_us: 1_500,
        };
        let total = RequestStats {
            name: TOTAL.into(),
            ..row.clone()
        };
        let table = table(&[row], &total);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|line| line.len() == lines[0].len()));
        assert!(lines[1].contains("0.412") && lines[1].contains("1.500"));
        assert!(lines[2].starts_with(TOTAL));
    }

    #[test]
    fn machine_line_has_every_field() {
        let total = RequestStats {
            name: TOTAL.into(),
            requests: 1_000,
            errors: 2,
            p50_us: 412,
            p99_us: 1_500,
        };
        let server = Buckets(vec![(0.005, 1_000), (f64::INFINITY, 1_000)]);
        assert_eq!(
            machine_line("browse", &total, 20, Some(&server)),
            "summary\tscenario=browse\trequests=1000\trps=50.0\terrors=2\tp50_ms=0.412\t\
             p99_ms=1.500\tserver_p50_ms=2.500\tserver_p99_ms=4.950"
        );
        assert!(machine_line("x", &total, 0, None).contains("rps=-\terrors=2"));
        assert!(machine_line("x", &total, 0, None).ends_with("server_p99_ms=-"));
    }
}
