//! What operators see and what protects the service: request ids in every log line of a request,
//! the pool / token / breaker / sync metrics, keep-alive and header timeouts, bounded pool waits
//! and load shedding. All against the real MariaDB and Redis.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use product_api::config::Secret;
use product_api::redis_connection::RedisTarget;
use product_api::sync::{run_once, SyncReport, SyncSettings};
use product_api::telemetry::{self, LogFormat};
use product_api::upstream::{CatalogueClient, CatalogueSettings, TokenProvider, TokenSettings};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing_subscriber::EnvFilter;

use crate::helpers::{
    self, eventually, socket_of, spawn_app, through, Options, TestApp, TestDatabase,
};
use crate::proxy::{Mode, Proxy};
use crate::standin::{Catalogue, TokenEndpoint, CLIENT_ID, CLIENT_SECRET};

/// Log output kept in memory, so a test can read what a request logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A second dispatcher, alive for the whole run. With a single registered dispatcher,
/// tracing-core computes a new callsite's interest from the default of the thread that hits it
/// first, so a callsite first hit by a parallel test (no subscriber on its thread) would be
/// cached as disabled for everyone; with two, it asks every registered dispatcher.
static SECOND_DISPATCHER: OnceLock<tracing::Dispatch> = OnceLock::new();

/// Installs the production subscriber, writing to memory, for this thread (the test runtime is
/// single-threaded, so the server's tasks run here too).
fn capture(format: LogFormat) -> (Captured, tracing::subscriber::DefaultGuard) {
    SECOND_DISPATCHER
        .get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let captured = Captured::default();
    let writer = captured.clone();
    let filter = EnvFilter::new("warn,access=debug");
    let subscriber = telemetry::subscriber(format, filter, false, move || writer.clone());
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_warning_logged_inside_a_request_carries_its_request_id_in_both_formats() {
    let database = TestDatabase::seeded(20).await;
    let mysql = Proxy::start(socket_of(&database.url)).await;
    let mut options = Options::new(&database).with("DB_QUERY_TIMEOUT_MS", "1000");
    options.database_url = through(&database.url, mysql.address);
    let app = spawn_app(&options).await;
    // The database refuses: the listing is answered 503 and the cause logged as a warning.
    mysql.set(Mode::Refuse);

    let (json, guard) = capture(LogFormat::Json);
    let reply = app
        .get_with("/products/v1?take=2", &[("x-request-id", "json-req-1")])
        .await;
    drop(guard);
    assert_eq!(reply.status, 503);
    let lines: Vec<Value> = json
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let warning = lines
        .iter()
        .find(|line| line["level"] == "WARN")
        .unwrap_or_else(|| panic!("no warning in {lines:?}"));
    assert_eq!(
        warning["fields"]["message"],
        "database unavailable, answering 503"
    );
    assert_eq!(warning["request_id"], "json-req-1", "{warning}");
    let access = lines
        .iter()
        .find(|line| line["target"] == "access")
        .unwrap_or_else(|| panic!("no access line in {lines:?}"));
    assert_eq!(access["request_id"], "json-req-1");
    assert_eq!(access["fields"]["route"], "/products/v1");
    assert_eq!(access["fields"]["status"], 503);
    assert_eq!(access["fields"]["method"], "GET");
    assert!(access["fields"]["duration_us"].as_u64().is_some());

    let (text, guard) = capture(LogFormat::Text);
    let reply = app
        .get_with("/products/v1?take=3", &[("x-request-id", "text-req-2")])
        .await;
    drop(guard);
    assert_eq!(reply.status, 503);
    let text = text.text();
    let warning = text
        .lines()
        .find(|line| line.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning in {text}"));
    assert!(warning.starts_with("request_id=text-req-2 "), "{warning}");
    assert!(
        !text.contains("json-req-1"),
        "ids do not leak across requests"
    );

    mysql.set(Mode::Up);
    app.stop().await;
    database.drop_database().await;
}

/// `name{labels} value` or `name value` from a Prometheus text exposition; 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    helpers::sample(metrics, series).unwrap_or(0.0)
}

async fn metrics(app: &TestApp) -> String {
    app.metrics().await
}

#[tokio::test]
async fn metrics_expose_the_pool_token_refreshes_breaker_state_and_sync_lag() {
    let database = TestDatabase::seeded(20).await;
    let options = Options::new(&database);
    let app = spawn_app(&options).await;
    assert_eq!(app.get("/products/v1?take=2").await.status, 200);

    let tokens = TokenEndpoint::start(Duration::from_secs(3600)).await;
    let catalogue = Catalogue::start(&tokens).await;
    let provider = TokenProvider::new(
        TokenSettings::new(
            tokens.url(),
            CLIENT_ID,
            Secret::new(CLIENT_SECRET),
            options.namespace.clone(),
        ),
        &RedisTarget::single(&options.redis_url),
    )
    .unwrap();
    let client = CatalogueClient::new(CatalogueSettings::new(catalogue.url()), provider).unwrap();
    let before_sync = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let settings = SyncSettings {
        holder: "metrics-test".into(),
        page_size: 100,
        lease_ttl: Duration::from_secs(30),
    };
    let report = run_once(app.app.store(), &client, app.app.cache(), &settings)
        .await
        .unwrap();
    assert!(matches!(report, SyncReport::Completed { .. }), "{report:?}");

    let text = metrics(&app).await;
    for series in [
        "db_pool_connections_in_use ",
        "db_pool_connections_max ",
        "db_pool_waiting ",
        "db_pool_wait_seconds_bucket{le=\"0.0001\"}",
        "db_pool_wait_seconds_count ",
        "oauth_token_refreshes_total{result=\"fetched\"}",
        "upstream_circuit_breaker_state{upstream=\"catalogue\"}",
        "sync_runs_total{result=\"completed\"}",
        "sync_products_synced ",
        "sync_last_success_timestamp_seconds ",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    assert!(sample(&text, "oauth_token_refreshes_total{result=\"fetched\"}") >= 1.0);
    assert!(
        sample(&text, "sync_last_success_timestamp_seconds") >= before_sync.floor(),
        "the last success is this run's"
    );
    assert!(sample(&text, "db_pool_wait_seconds_count") >= 1.0);
    app.stop().await;
    database.drop_database().await;
}

/// Sends one `GET /health` on `stream` and reads its whole answer.
async fn health_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.ends_with(b"{\"status\":\"ok\"}") {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "closed mid-answer: {answer:?}");
        answer.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8(answer).unwrap()
}

/// Waits for the server to close `stream`; returns how long that took.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(limit, stream.read(&mut buffer))
        .await
        .expect("the server closed the connection in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected a close, read {read:?}"
    );
    started.elapsed()
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_for_the_keep_alive_timeout_then_is_closed() {
    let database = TestDatabase::create().await;
    let options = Options::new(&database)
        .with("HEADER_READ_TIMEOUT_MS", "300")
        .with("KEEP_ALIVE_TIMEOUT_MS", "1200");
    let app = spawn_app(&options).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    assert!(health_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle longer than the header read timeout: the passing time is the subject here.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        health_on(&mut stream).await.starts_with("HTTP/1.1 200"),
        "still open after idling past the header read timeout"
    );
    let idle = closed_after(&mut stream, Duration::from_secs(5)).await;
    assert!(
        idle >= Duration::from_millis(1_100) && idle < Duration::from_millis(2_500),
        "closed after {idle:?} idle"
    );
    assert_eq!(app.get("/health").await.status, 200);
    app.stop().await;
    database.drop_database().await;
}

/// A slow client on a kept-alive connection: after one answer, part of the next head and then
/// nothing. It gets the keep-alive timeout from its last answer, as an idle one does.
#[tokio::test]
async fn a_kept_alive_connection_that_does_not_finish_its_next_head_is_closed() {
    let database = TestDatabase::create().await;
    let options = Options::new(&database)
        .with("HEADER_READ_TIMEOUT_MS", "300")
        .with("KEEP_ALIVE_TIMEOUT_MS", "1200");
    let app = spawn_app(&options).await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    assert!(health_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: te")
        .await
        .unwrap();
    let waited = closed_after(&mut stream, Duration::from_secs(5)).await;
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(2_500),
        "closed after {waited:?}"
    );
    app.stop().await;
    database.drop_database().await;
}

/// The idle limits bound the wait for a head, never the handling of a request: one that takes
/// longer than both (a slow database) is answered on its connection.
#[tokio::test]
async fn a_request_outlasting_the_idle_limits_is_answered() {
    let database = TestDatabase::seeded(5).await;
    let mysql = Proxy::start(socket_of(&database.url)).await;
    let mut options = Options::new(&database)
        .with("HEADER_READ_TIMEOUT_MS", "200")
        .with("KEEP_ALIVE_TIMEOUT_MS", "300")
        .with("DB_QUERY_TIMEOUT_MS", "5000");
    options.database_url = through(&database.url, mysql.address);
    let app = spawn_app(&options).await;
    mysql.set(Mode::Latency(Duration::from_millis(400)));
    let started = Instant::now();
    let answer = app.get("/products/v1?take=3").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        started.elapsed() > Duration::from_millis(300),
        "the query really outlasted the limits"
    );
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_connection_that_does_not_finish_its_first_head_is_closed_after_the_header_read_timeout()
{
    let database = TestDatabase::create().await;
    let options = Options::new(&database)
        .with("HEADER_READ_TIMEOUT_MS", "300")
        .with("KEEP_ALIVE_TIMEOUT_MS", "5000");
    let app = spawn_app(&options).await;
    let mut silent = TcpStream::connect(app.address).await.unwrap();
    let mut half_sent = TcpStream::connect(app.address).await.unwrap();
    half_sent
        .write_all(b"GET /health HTTP/1.1\r\nhost: te")
        .await
        .unwrap();
    for stream in [&mut silent, &mut half_sent] {
        let waited = closed_after(stream, Duration::from_secs(3)).await;
        assert!(waited < Duration::from_millis(1_500), "took {waited:?}");
    }
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_saturated_pool_sheds_at_once_bounds_the_wait_and_recovers() {
    let database = TestDatabase::seeded(50).await;
    let mysql = Proxy::start(socket_of(&database.url)).await;
    let mut options = Options::new(&database)
        .with("DB_POOL_MIN", "1")
        .with("DB_POOL_MAX", "1")
        .with("DB_POOL_WAIT_MS", "500")
        .with("DB_POOL_MAX_WAITING", "1")
        .with("DB_QUERY_TIMEOUT_MS", "3000");
    options.database_url = through(&database.url, mysql.address);
    let app = Arc::new(spawn_app(&options).await);
    assert_eq!(app.get("/products/v1?take=3").await.status, 200);
    let before = metrics(&app).await;

    // The only connection is held by a query the database never answers.
    mysql.set(Mode::Blackhole);
    let holder = tokio::spawn({
        let app = app.clone();
        async move { app.get("/products/v1?take=4").await.status }
    });
    eventually(
        Duration::from_secs(5),
        "the query reached MySQL",
        || async { mysql.swallowed_bytes() > 0 },
    )
    .await;
    // A second request waits for it, at most DB_POOL_WAIT_MS.
    let waiter = tokio::spawn({
        let app = app.clone();
        async move {
            let started = Instant::now();
            let reply = app.get("/products/v1?take=5").await;
            (reply, started.elapsed())
        }
    });
    eventually(
        Duration::from_secs(2),
        "a request waits for the pool",
        || async { app.app.store().pool_waiting() == 1 },
    )
    .await;
    // A third finds the pool out and one waiting already: refused at once.
    let started = Instant::now();
    let shed = app.get("/products/v1?take=6").await;
    let shed_in = started.elapsed();
    assert_eq!(shed.status, 503);
    assert!(shed.header("retry-after").is_some());
    assert_eq!(
        shed.header("content-type"),
        Some("application/problem+json")
    );
    assert!(shed_in < Duration::from_millis(250), "shed in {shed_in:?}");
    // Pages already cached are still served.
    let cached = app.get("/products/v1?take=3").await;
    assert_eq!(
        (cached.status, cached.header("x-cache")),
        (200, Some("HIT-L1"))
    );

    let (timed_out, waited_in) = waiter.await.unwrap();
    assert_eq!(timed_out.status, 503);
    assert!(timed_out.header("retry-after").is_some());
    assert!(
        waited_in >= Duration::from_millis(450) && waited_in < Duration::from_millis(1_500),
        "gave up after {waited_in:?}, not at the 3 s query deadline"
    );
    let after = metrics(&app).await;
    assert!(sample(&after, "db_pool_shed_total") > sample(&before, "db_pool_shed_total"));
    assert!(
        sample(&after, "db_pool_wait_timeouts_total")
            > sample(&before, "db_pool_wait_timeouts_total")
    );

    mysql.set(Mode::Up);
    let held = holder.await.unwrap();
    assert!(held == 200 || held == 503, "the held request ended: {held}");
    eventually(
        Duration::from_secs(5),
        "listings answer 200 again",
        || async { app.get("/products/v1?take=7").await.status == 200 },
    )
    .await;
    assert_eq!(app.app.store().pool_waiting(), 0);
    Arc::into_inner(app).unwrap().stop().await;
    database.drop_database().await;
}
