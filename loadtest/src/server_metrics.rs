//! The service's own view of a run: `/metrics` is scraped before and after, and the
//! difference of `http_server_request_duration_seconds` (every route but `/metrics`
//! itself) gives the server-side latency percentiles, interpolated inside buckets
//! the way Prometheus' `histogram_quantile` does. They are only as fine as the
//! service's buckets, so each percentile is printed with the bucket it falls in.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The histogram the service records every answered request in.
const HISTOGRAM: &str = "http_server_request_duration_seconds_bucket";
/// Our own scrapes are not part of the load.
const SKIPPED_ROUTE: &str = "http_route=\"/metrics\"";
/// A scrape that takes longer than this is abandoned (and the run still judged).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Cumulative bucket counts summed over every label set: `(upper bound in seconds,
/// requests at or under it)`, ascending, the last bound `+Inf`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Buckets(pub Vec<(f64, u64)>);

/// A percentile read from the histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    /// Interpolated inside its bucket, in seconds.
    pub seconds: f64,
    /// The bucket it falls in, in seconds: `(lower, upper]`.
    pub bucket: (f64, f64),
}

/// Why `/metrics` could not be read.
#[derive(Debug)]
pub enum ScrapeError {
    Address(String),
    Io(std::io::Error),
    Timeout,
    Status(String),
}

impl std::fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrapeError::Address(reason) => write!(f, "no address to scrape: {reason}"),
            ScrapeError::Io(error) => write!(f, "reading /metrics: {error}"),
            ScrapeError::Timeout => write!(f, "/metrics did not answer within {SCRAPE_TIMEOUT:?}"),
            ScrapeError::Status(line) => write!(f, "/metrics answered {line:?}"),
        }
    }
}

/// Scrapes `<host>/metrics` (plain HTTP/1.0, so no client library is needed) and
/// returns the request-duration buckets.
pub async fn scrape(host: &str) -> Result<Buckets, ScrapeError> {
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch(host))
        .await
        .map_err(|_| ScrapeError::Timeout)?
        .map(|text| parse(&text))
}

async fn fetch(host: &str) -> Result<String, ScrapeError> {
    let url = url::Url::parse(host).map_err(|e| ScrapeError::Address(e.to_string()))?;
    let address = url
        .socket_addrs(|| None)
        .map_err(ScrapeError::Io)?
        .into_iter()
        .next()
        .ok_or_else(|| ScrapeError::Address(host.to_string()))?;
    let mut stream = TcpStream::connect(address).await.map_err(ScrapeError::Io)?;
    let request = format!(
        "GET /metrics HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.host_str().unwrap_or_default()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ScrapeError::Io)?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(ScrapeError::Io)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split(' ').nth(1) != Some("200") {
        return Err(ScrapeError::Status(status_line.to_string()));
    }
    Ok(body.to_string())
}

/// Sums the request-duration buckets of every label set but `/metrics`'s own.
pub fn parse(text: &str) -> Buckets {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(HISTOGRAM) else {
            continue;
        };
        if rest.contains(SKIPPED_ROUTE) {
            continue;
        }
        let Some((bound, count)) = bucket_of(rest) else {
            continue;
        };
        match buckets
            .iter_mut()
            .find(|(le, _)| le.to_bits() == bound.to_bits())
        {
            Some((_, total)) => *total += count,
            None => buckets.push((bound, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Buckets(buckets)
}

/// `{…,le="0.005"} 12` → `(0.005, 12)`.
fn bucket_of(labels_and_value: &str) -> Option<(f64, u64)> {
    let (labels, value) = labels_and_value.rsplit_once(' ')?;
    let le = labels.split("le=\"").nth(1)?.split('"').next()?;
    let bound = if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().ok()?
    };
    // Counts are integers, though the exposition format may write them as floats.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = value.trim().parse::<f64>().ok()?.max(0.0) as u64;
    Some((bound, count))
}

impl Buckets {
    /// The requests recorded after `before` was taken. Buckets missing from `before`
    /// (label sets first seen during the run) count from zero.
    pub fn since(&self, before: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|&(le, count)| {
                    let earlier = before
                        .0
                        .iter()
                        .find(|(b, _)| b.to_bits() == le.to_bits())
                        .map_or(0, |&(_, c)| c);
                    (le, count.saturating_sub(earlier))
                })
                .collect(),
        )
    }

    /// Requests counted (the `+Inf` bucket).
    pub fn total(&self) -> u64 {
        self.0.last().map_or(0, |&(_, count)| count)
    }

    /// The `q` quantile (0 to 1), `None` without requests. Like `histogram_quantile`:
    /// linear inside the bucket holding the rank, the first bucket starting at 0, and
    /// a rank in the `+Inf` bucket answered with the highest finite bound.
    #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let (mut lower, mut below) = (0.0, 0_u64);
        for &(upper, count) in &self.0 {
            if count as f64 >= rank && count > below {
                if upper.is_infinite() {
                    return Some(Quantile {
                        seconds: lower,
                        bucket: (lower, upper),
                    });
                }
                let share = (rank - below as f64) / (count - below) as f64;
                return Some(Quantile {
                    seconds: lower + (upper - lower) * share,
                    bucket: (lower, upper),
                });
            }
            (lower, below) = (upper, count);
        }
        None
    }
}

/// `"1.234 ms (bucket 0–5 ms)"`, or `"n/a"`.
pub fn describe(quantile: Option<Quantile>) -> String {
    quantile.map_or_else(
        || "n/a".to_string(),
        |q| {
            format!(
                "{:.3} ms (bucket {}–{} ms)",
                q.seconds * 1000.0,
                q.bucket.0 * 1000.0,
                q.bucket.1 * 1000.0
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_request_method="GET",http_route="/products/v1",http_response_status_code="200",le="0.005"} 90
http_server_request_duration_seconds_bucket{http_request_method="GET",http_route="/products/v1",http_response_status_code="200",le="0.01"} 98
http_server_request_duration_seconds_bucket{http_request_method="GET",http_route="/products/v1",http_response_status_code="200",le="+Inf"} 100
http_server_request_duration_seconds_bucket{http_request_method="POST",http_route="/webhook",http_response_status_code="200",le="0.005"} 10
http_server_request_duration_seconds_bucket{http_request_method="POST",http_route="/webhook",http_response_status_code="200",le="0.01"} 10
http_server_request_duration_seconds_bucket{http_request_method="POST",http_route="/webhook",http_response_status_code="200",le="+Inf"} 10
http_server_request_duration_seconds_bucket{http_request_method="GET",http_route="/metrics",http_response_status_code="200",le="0.005"} 7
http_server_request_duration_seconds_bucket{http_request_method="GET",http_route="/metrics",http_response_status_code="200",le="+Inf"} 7
http_server_request_duration_seconds_sum{http_request_method="GET",http_route="/products/v1",http_response_status_code="200"} 0.5
http_server_request_duration_seconds_count{http_request_method="GET",http_route="/products/v1",http_response_status_code="200"} 100
db_pool_wait_seconds_bucket{le="0.005"} 3
"#;

    #[test]
    fn buckets_sum_over_label_sets_without_metrics_scrapes() {
        let buckets = parse(EXPOSITION);
        assert_eq!(
            buckets.0,
            vec![(0.005, 100), (0.01, 108), (f64::INFINITY, 110)]
        );
        assert_eq!(buckets.total(), 110);
    }

    #[test]
    fn difference_counts_only_the_run() {
        let before = Buckets(vec![(0.005, 40), (f64::INFINITY, 50)]);
        let after = Buckets(vec![(0.005, 100), (0.01, 108), (f64::INFINITY, 110)]);
        assert_eq!(
            after.since(&before).0,
            vec![(0.005, 60), (0.01, 108), (f64::INFINITY, 60)]
        );
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let buckets = Buckets(vec![(0.005, 50), (0.01, 100), (f64::INFINITY, 100)]);
        let median = buckets.quantile(0.5).unwrap();
        assert!((median.seconds - 0.005).abs() < 1e-12);
        assert_eq!(median.bucket, (0.0, 0.005));
        let p75 = buckets.quantile(0.75).unwrap();
        assert!((p75.seconds - 0.0075).abs() < 1e-12);
        assert_eq!(p75.bucket, (0.005, 0.01));
    }

    #[test]
    fn rank_past_the_last_finite_bound_reads_that_bound() {
        let buckets = Buckets(vec![(0.005, 1), (f64::INFINITY, 100)]);
        let p99 = buckets.quantile(0.99).unwrap();
        assert!((p99.seconds - 0.005).abs() < 1e-12);
        assert!(p99.bucket.1.is_infinite());
    }

    #[test]
    fn empty_buckets_are_skipped_and_no_requests_is_none() {
        let buckets = Buckets(vec![
            (0.005, 0),
            (0.01, 0),
            (0.025, 10),
            (f64::INFINITY, 10),
        ]);
        assert_eq!(buckets.quantile(0.5).unwrap().bucket, (0.01, 0.025));
        assert_eq!(Buckets::default().quantile(0.5), None);
        assert_eq!(describe(None), "n/a");
    }

    #[test]
    fn odd_lines_are_ignored() {
        let text = "http_server_request_duration_seconds_bucket{le=\"x\"} 3\n\
                    http_server_request_duration_seconds_bucket{le=\"0.1\"} nope\n";
        assert_eq!(parse(text), Buckets::default());
    }
}
