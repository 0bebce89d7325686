//! Metrics: the Prometheus recorder, the metric names, and `/metrics` rendering.
//!
//! One process-wide recorder (`metrics` + `metrics-exporter-prometheus`); recording is a few
//! atomic operations on a handle the crate caches per label set, so the hot path pays no lock
//! and no I/O. Upkeep runs on a timer so histograms do not grow without a scrape.

use std::sync::OnceLock;
use std::time::Duration;

use http::{Method, StatusCode};
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::cache::CacheStatus;
use crate::route::Route;
use crate::upstream::BreakerState;

/// Request durations, in seconds. OpenTelemetry's advice starts at 5 ms, where a cached page
/// is answered in tens of µs; these start at 100 µs and have a bound at each of this service's
/// latency targets (2 ms p50, 10 ms and 20 ms p99: perf/RESULTS.md), so server-side percentiles
/// are read inside a narrow bucket. The exporter keeps raw samples and buckets them at scrape
/// time, so more buckets cost nothing per request.
const DURATION_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Waits for a pooled connection: from an instant hand-over (tens of µs) to `DB_POOL_WAIT_MS`.
const POOL_WAIT_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
];
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once per process (later calls, e.g. from tests, reuse it) and starts
/// its upkeep on the current runtime.
pub fn install() {
    let mut first = false;
    HANDLE.get_or_init(|| {
        first = true;
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_server_request_duration_seconds".into()),
                &DURATION_BUCKETS,
            )
            .expect("static, non-empty buckets")
            .set_buckets_for_metric(Matcher::Full(DB_POOL_WAIT.into()), &POOL_WAIT_BUCKETS)
            .expect("static, non-empty buckets")
            .install_recorder()
            .expect("the only recorder of this process")
    });
    if first {
        tokio::spawn(async {
            let mut ticks = tokio::time::interval(UPKEEP_EVERY);
            loop {
                ticks.tick().await;
                if let Some(handle) = HANDLE.get() {
                    handle.run_upkeep();
                }
            }
        });
    }
}

/// The Prometheus text exposition of every metric.
#[must_use]
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// One answered request: duration by method, route template and status.
///
/// The handle of each common (method, route, status) series is kept after its first use:
/// building the labelled key and finding it in the registry cost ~150 ns per request, a cached
/// handle is one atomic add.
pub fn request(method: &Method, route: Route, status: StatusCode, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    match series_slot(method, route, status) {
        Some(slot) if HANDLE.get().is_some() => slot
            .get_or_init(|| duration_histogram(method, route, status))
            .record(seconds),
        _ => duration_histogram(method, route, status).record(seconds),
    }
}

const METHODS: usize = 4;
const ROUTES: usize = 7;
const COMMON_STATUSES: [u16; 8] = [200, 304, 400, 404, 405, 429, 500, 503];
const SERIES: usize = METHODS * ROUTES * COMMON_STATUSES.len();
static SERIES_HANDLES: [OnceLock<Histogram>; SERIES] = [const { OnceLock::new() }; SERIES];

fn series_slot(
    method: &Method,
    route: Route,
    status: StatusCode,
) -> Option<&'static OnceLock<Histogram>> {
    let method = match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        _ => 3,
    };
    let route = match route {
        Route::ListProducts => 0,
        Route::Health => 1,
        Route::Ready => 2,
        Route::Webhook => 3,
        Route::Metrics => 4,
        Route::OpenApi => 5,
        Route::MethodNotAllowed(_) | Route::NotFound => 6,
    };
    let status = COMMON_STATUSES
        .iter()
        .position(|common| *common == status.as_u16())?;
    SERIES_HANDLES.get((method * ROUTES + route) * COMMON_STATUSES.len() + status)
}

fn duration_histogram(method: &Method, route: Route, status: StatusCode) -> Histogram {
    histogram!(
        "http_server_request_duration_seconds",
        "http_request_method" => method_label(method),
        "http_route" => route_label(route),
        "http_response_status_code" => status_label(status),
    )
}

/// Runs the recorder's upkeep now (drains histogram samples); for benchmarks that record
/// millions of samples between the timer's runs.
pub fn upkeep() {
    if let Some(handle) = HANDLE.get() {
        handle.run_upkeep();
    }
}

/// Which level answered a listing. On every listing, so its three series' handles are kept
/// like the request histogram's (a registry lookup per call showed as ~1 % of the L1-hit
/// path's samples in `flamegraphs/l1-hit.svg`).
pub fn cache_result(status: CacheStatus) {
    static HANDLES: [OnceLock<Counter>; 3] = [const { OnceLock::new() }; 3];
    let (slot, level) = match status {
        CacheStatus::HitL1 => (0, "l1"),
        CacheStatus::HitL2 => (1, "l2"),
        CacheStatus::Miss => (2, "miss"),
    };
    increment_kept(
        &HANDLES[slot],
        || counter!("cache_results_total", "level" => level),
    );
}

/// A miss whose page was not written to L2, being the first of its key at this instance
/// (`L2_ADMISSION=second-miss`). On the miss path, so its handle is kept.
pub fn l2_write_skipped() {
    static HANDLE_SLOT: OnceLock<Counter> = OnceLock::new();
    increment_kept(&HANDLE_SLOT, || counter!("cache_l2_writes_skipped_total"));
}

/// A first miss that did not read L2, first-miss reads having stopped paying
/// (`L2_FIRST_MISS_READS=by-yield`). On the miss path, so its handle is kept.
pub fn l2_read_skipped() {
    static HANDLE_SLOT: OnceLock<Counter> = OnceLock::new();
    increment_kept(&HANDLE_SLOT, || counter!("cache_l2_reads_skipped_total"));
}

/// Increments the counter `make` registers, keeping its handle in `slot` once the recorder is
/// installed (a handle taken before would belong to the no-op recorder for good).
fn increment_kept(slot: &OnceLock<Counter>, make: impl FnOnce() -> Counter) {
    with_kept(slot, make, |counter| counter.increment(1));
}

/// Runs `act` on the handle `make` registers, kept in `slot` as [`increment_kept`] keeps it.
fn with_kept<T>(slot: &OnceLock<T>, make: impl FnOnce() -> T, act: impl FnOnce(&T)) {
    if HANDLE.get().is_some() {
        act(slot.get_or_init(make));
    } else {
        act(&make());
    }
}

/// A Redis call failed or timed out (and was treated as a miss).
pub fn redis_error() {
    counter!("redis_errors_total").increment(1);
}

/// A Redis call was skipped because its breaker is open (the fallback was used at once).
pub fn redis_fallback() {
    counter!("redis_fallbacks_total").increment(1);
}

/// A rate-limit decision: which policy, which layer decided, and whether it let the request in.
///
/// On every limited request, so the handles of the usual series are kept (see
/// [`cache_result`]).
pub fn rate_limit_decision(policy: &'static str, layer: &'static str, allowed: bool) {
    const POLICIES: [&str; 2] = ["listing", "webhook"];
    const LAYERS: [&str; 4] = ["local", "lease", "shared", "fallback"];
    static HANDLES: [OnceLock<Counter>; 16] = [const { OnceLock::new() }; 16];
    let decision = if allowed { "allowed" } else { "limited" };
    let make = || counter!("rate_limit_decisions_total", "policy" => policy, "layer" => layer, "decision" => decision);
    let policy_index = POLICIES.iter().position(|known| *known == policy);
    let layer_index = LAYERS.iter().position(|known| *known == layer);
    match (policy_index, layer_index) {
        (Some(p), Some(l)) => {
            increment_kept(&HANDLES[(p * 4 + l) * 2 + usize::from(allowed)], make);
        }
        _ => make().increment(1),
    }
}

/// The shared quota in Redis did not answer: the local, divided limiter decided instead.
pub fn rate_limit_fallback(policy: &'static str) {
    counter!("rate_limit_fallbacks_total", "policy" => policy).increment(1);
}

/// Which plan answered a page that has two: a search's bounded index walk or FULLTEXT after
/// it; a price band in date order read whole from the price index or walked in date order.
pub fn listing_plan(plan: &'static str) {
    counter!("listing_plans_total", "plan" => plan).increment(1);
}

/// A webhook delivery's outcome (`processed`, `duplicate`, `rejected`, …).
pub fn webhook(outcome: &'static str) {
    counter!("webhook_events_total", "result" => outcome).increment(1);
}

/// A handler panicked (answered 500).
pub fn panic_caught() {
    counter!("http_server_panics_total").increment(1);
}

/// What the L1 holds after a sweep: entries and their weight (key and response bytes).
// Entry counts and byte weights stay far below 2^52, where f64 is exact.
#[allow(clippy::cast_precision_loss)]
pub fn l1_size(entries: usize, weight_bytes: u64) {
    gauge!("cache_l1_entries").set(entries as f64);
    gauge!("cache_l1_bytes").set(weight_bytes as f64);
}

/// How far the running catalogue sync is.
// Product counts stay far below 2^52, where f64 is exact.
#[allow(clippy::cast_precision_loss)]
pub fn sync_progress(synced: u64, total: u64) {
    gauge!("sync_products_synced").set(synced as f64);
    gauge!("sync_products_total").set(total as f64);
}

/// A sync run ended (`completed`, `skipped`, `failed`).
pub fn sync_run(outcome: &'static str) {
    counter!("sync_runs_total", "result" => outcome).increment(1);
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        _ => "_OTHER",
    }
}

/// Templates, never raw paths: unknown paths share one label so clients cannot grow the series.
pub(crate) fn route_label(route: Route) -> &'static str {
    match route {
        Route::ListProducts => "/products/v1",
        Route::Health => "/health",
        Route::Ready => "/ready",
        Route::Webhook => "/webhook",
        Route::Metrics => "/metrics",
        Route::OpenApi => "/openapi.json",
        Route::MethodNotAllowed(_) | Route::NotFound => "_other",
    }
}

fn status_label(status: StatusCode) -> SharedString {
    match status.as_u16() {
        200 => SharedString::const_str("200"),
        304 => SharedString::const_str("304"),
        400 => SharedString::const_str("400"),
        404 => SharedString::const_str("404"),
        405 => SharedString::const_str("405"),
        429 => SharedString::const_str("429"),
        500 => SharedString::const_str("500"),
        503 => SharedString::const_str("503"),
        other => SharedString::from(other.to_string()),
    }
}

const DB_POOL_WAIT: &str = "db_pool_wait_seconds";

/// The pool's size, so in-use can be read as a share of it.
// Pool sizes are tiny integers, exact in f64.
#[allow(clippy::cast_precision_loss)]
pub fn db_pool_max(connections: usize) {
    gauge!("db_pool_connections_max").set(connections as f64);
}

/// A connection was handed out (+1) or returned (-1). Twice per query, so its handle is kept.
pub fn db_pool_in_use(delta: f64) {
    static HANDLE_SLOT: OnceLock<Gauge> = OnceLock::new();
    with_kept(
        &HANDLE_SLOT,
        || gauge!("db_pool_connections_in_use"),
        |gauge| gauge.increment(delta),
    );
}

/// A caller started (+1) or stopped (-1) waiting for a connection. Twice per query, so its
/// handle is kept.
pub fn db_pool_waiting(delta: f64) {
    static HANDLE_SLOT: OnceLock<Gauge> = OnceLock::new();
    with_kept(
        &HANDLE_SLOT,
        || gauge!("db_pool_waiting"),
        |gauge| gauge.increment(delta),
    );
}

/// How long one caller waited for a connection (also when it gave up). Once per query, so its
/// handle is kept.
pub fn db_pool_wait(waited: Duration) {
    static HANDLE_SLOT: OnceLock<Histogram> = OnceLock::new();
    with_kept(
        &HANDLE_SLOT,
        || histogram!(DB_POOL_WAIT),
        |histogram| histogram.record(waited.as_secs_f64()),
    );
}

/// A request gave up waiting for a connection after `DB_POOL_WAIT_MS` (answered 503).
pub fn db_pool_wait_timeout() {
    counter!("db_pool_wait_timeouts_total").increment(1);
}

/// A request was refused at once because the pool was saturated (answered 503).
pub fn db_pool_shed() {
    counter!("db_pool_shed_total").increment(1);
}

/// An OAuth2 token refresh ended: `fetched` (from the endpoint), `adopted` (another instance's,
/// from Redis) or `failed`.
pub fn token_refresh(outcome: &'static str) {
    counter!("oauth_token_refreshes_total", "result" => outcome).increment(1);
}

/// The observed state of an upstream's circuit breaker: 0 closed, 1 open, 2 half-open.
pub fn breaker_state(upstream: &'static str, state: BreakerState) {
    let value = match state {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
    };
    gauge!("upstream_circuit_breaker_state", "upstream" => upstream).set(value);
}

/// A sync run completed now: lag is `time() - sync_last_success_timestamp_seconds`.
pub fn sync_succeeded() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    gauge!("sync_last_success_timestamp_seconds").set(now);
}

/// The counter of listing reads served by `target` (`primary`, `replica-0`, …): which database
/// the reads went to. Its handle is kept by the store, so a read costs one atomic add.
pub fn db_reads(target: String) -> metrics::Counter {
    counter!("db_reads_total", "target" => target)
}

/// Replica `index`'s gauges: whether it is in the rotation (1) or not (0), and its last
/// measured lag behind the primary's clock, in seconds.
pub fn db_replica_gauges(index: usize) -> (metrics::Gauge, metrics::Gauge) {
    let replica = index.to_string();
    (
        gauge!("db_replica_healthy", "replica" => replica.clone()),
        gauge!("db_replica_lag_seconds", "replica" => replica),
    )
}

/// The counter of listing reads that failed on replica `index` and were retried on the primary.
pub fn db_replica_fallbacks(index: usize) -> metrics::Counter {
    counter!("db_replica_fallbacks_total", "replica" => index.to_string())
}
