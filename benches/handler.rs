//! Criterion benchmark of the whole L1-hit path without the network: `App::handle` for a page
//! that is already in L1, with the rate limiter off and with the `standard` preset, so the
//! limiter's per-request cost is the difference.
//!
//! Needs the running MariaDB and Redis: `TEST_DATABASE_URL` (a server URL without a database,
//! as `scripts/test` exports it) and `TEST_REDIS_URL`. The bench creates a small database of its
//! own (`bench_*`, 100 seed rows) and drops it at the end.
//!
//! `cargo bench --bench handler`; figures go to `perf/RESULTS.md` with the command.
//!
//! Not an instruction-count gate: building the `App` opens MySQL and Redis connections, and
//! tokio's timers, the store's moka cache and the Redis connection tasks run on the measured thread at
//! moments callgrind cannot separate from the request, so the count would move between runs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, StatusCode};
use http_body_util::Empty;
use mysql_async::prelude::Queryable;
use product_api::app::App;
use product_api::config::Config;
use product_api::store::{migrate, Store, StoreSettings};

/// The page every iteration asks for: the first page of a category, as the `browse` load does.
const PAGE: &str = "/products/v1?category=tops&sort=-price&take=20";
const SEED_ROWS: u64 = 100;
/// Distinct peers the limited variant cycles through, each warmed by one request first. One
/// peer would be refused after its burst of 300 and measure the 429 path; a fresh peer per
/// request would measure a client's first request (a Redis round trip for its first lease).
/// 4,096 peers sharing a run of ~3M requests stay within 300 + 100/s each, and each takes a new
/// lease of at most 30 requests from Redis as a steady client does: the cost measured is the
/// limiter's real per-request cost, its Redis round trips amortized over the leases.
const PEERS: u32 = 1 << 12;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: export it as scripts/test does"))
}

fn store_settings() -> StoreSettings {
    StoreSettings {
        pool_min: 1,
        pool_max: 4,
        query_timeout: Duration::from_secs(5),
        pool_wait: Duration::from_secs(5),
        pool_max_waiting: usize::MAX,
        handler_reads: true,
    }
}

/// A fresh database with a few seed rows; returns its name and URL.
async fn create_database() -> (String, String) {
    let server = env("TEST_DATABASE_URL");
    let server = server.trim_end_matches('/').to_owned();
    let name = format!("bench_{:08x}", rand::random::<u32>());
    let admin = mysql_async::Pool::new(server.as_str());
    let mut conn = admin.get_conn().await.expect("MariaDB reachable");
    conn.query_drop(format!(
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .await
    .expect("CREATE DATABASE");
    drop(conn);
    admin.disconnect().await.expect("disconnect");
    let url = format!("{server}/{name}");
    let store = Arc::new(Store::new(&url, &store_settings()).expect("store"));
    migrate::run(&store).await.expect("migrations");
    product_api::seed::top_up(store.clone(), SEED_ROWS)
        .await
        .expect("seed");
    Arc::into_inner(store)
        .expect("the seed is done")
        .disconnect()
        .await;
    (name, url)
}

async fn drop_database(name: &str) {
    let server = env("TEST_DATABASE_URL");
    let admin = mysql_async::Pool::new(server.trim_end_matches('/'));
    let mut conn = admin.get_conn().await.expect("MariaDB reachable");
    conn.query_drop(format!("DROP DATABASE `{name}`"))
        .await
        .expect("DROP DATABASE");
    drop(conn);
    admin.disconnect().await.expect("disconnect");
}

fn config(database_url: &str, preset: &str) -> Config {
    let vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", database_url.to_owned()),
        ("REDIS_URL", env("TEST_REDIS_URL")),
        (
            "CURSOR_SECRET",
            "bench cursor secret, 32 bytes or more".into(),
        ),
        (
            "CACHE_NAMESPACE",
            format!("bench-{:08x}", rand::random::<u32>()),
        ),
        ("DB_POOL_MIN", "1".into()),
        ("RATE_LIMIT_PRESET", preset.into()),
    ]);
    Config::from_lookup(|name| vars.get(name).cloned()).expect("a valid bench config")
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .body(Empty::new())
        .expect("a valid request")
}

/// Builds the app and asks for the page until L1 answers it.
async fn warm_app(database_url: &str, preset: &str) -> App {
    let app = App::build(&config(database_url, preset))
        .await
        .expect("App::build");
    for index in 0..PEERS {
        let response = app.handle(peer(index), get(PAGE)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    for _ in 0..2 {
        let response = app.handle(IpAddr::V4(Ipv4Addr::LOCALHOST), get(PAGE)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = app.handle(IpAddr::V4(Ipv4Addr::LOCALHOST), get(PAGE)).await;
    assert_eq!(
        response
            .headers()
            .get("x-cache")
            .map(http::HeaderValue::as_bytes),
        Some(&b"HIT-L1"[..]),
        "the page is in L1 before the measurement"
    );
    app
}

fn peer(index: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (index % PEERS)))
}

fn bench_app(c: &mut Criterion, runtime: &tokio::runtime::Runtime, name: &str, app: &App) {
    let next_peer = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let refused_ref = &refused;
    c.bench_function(name, |b| {
        b.to_async(runtime).iter_batched(
            || {
                let index = next_peer.fetch_add(1, Ordering::Relaxed) as u32;
                (peer(index), get(PAGE))
            },
            |(peer, request)| async move {
                let response = app.handle(peer, request).await;
                if response.status() != StatusCode::OK {
                    refused_ref.fetch_add(1, Ordering::Relaxed);
                }
                response
            },
            BatchSize::SmallInput,
        );
    });
    let refused = refused.load(Ordering::Relaxed);
    assert_eq!(refused, 0, "{name}: {refused} answers were not 200");
}

fn l1_hit_handler(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (name, url) = runtime.block_on(create_database());
    for (bench, preset) in [
        ("handle_l1_hit_limiter_off", "off"),
        ("handle_l1_hit_limiter_standard", "standard"),
    ] {
        let app = runtime.block_on(warm_app(&url, preset));
        bench_app(c, &runtime, bench, &app);
        drop(app);
    }
    runtime.block_on(drop_database(&name));
}

criterion_group!(benches, l1_hit_handler);
criterion_main!(benches);
