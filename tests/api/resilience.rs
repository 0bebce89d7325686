//! Dependencies failing: Redis down means no error; the database down means a fast 503; both
//! recover without a restart. Shutdown finishes in-flight requests and exits 0.

use std::time::{Duration, Instant};

use crate::helpers::{eventually, socket_of, spawn_app, through, Options, TestDatabase};
use crate::proxy::{Mode, Proxy};

#[tokio::test]
async fn redis_down_still_serves_and_redis_back_is_used_again() {
    let database = TestDatabase::seeded(500).await;
    // Every miss written to L2, so one request shows whether L2 is in use.
    let plain = Options::new(&database).with("L2_ADMISSION", "every-miss");
    let redis = Proxy::start(socket_of(&plain.redis_url)).await;
    let mut via_proxy = plain.clone();
    via_proxy.redis_url = through(&plain.redis_url, redis.address);
    let app = spawn_app(&via_proxy).await;
    let witness = spawn_app(&plain).await;

    for mode in [Mode::Refuse, Mode::Blackhole] {
        redis.set(mode);
        for take in 1..=5 {
            let reply = app
                .get(&format!("/products/v1?take={take}&category={mode:?}"))
                .await;
            assert_eq!(reply.status, 200, "{mode:?}");
            assert_eq!(reply.header("x-cache"), Some("MISS"));
        }
        let ready = app.get("/ready").await;
        assert_eq!(ready.status, 200, "MySQL is up, so the service is ready");
        assert_eq!(ready.json()["redis"], "down");
        redis.set(Mode::Up);
        eventually(
            Duration::from_secs(10),
            "redis reported up again",
            || async { app.get("/ready").await.json()["redis"] == "up" },
        )
        .await;
    }
    // Written by the recovered instance, read by another: L2 is in use again.
    let url = "/products/v1?take=7&category=tops";
    assert_eq!(app.get(url).await.header("x-cache"), Some("MISS"));
    assert_eq!(witness.get(url).await.header("x-cache"), Some("HIT-L2"));
    // And the other way round.
    let url = "/products/v1?take=8&category=tops";
    assert_eq!(witness.get(url).await.header("x-cache"), Some("MISS"));
    assert_eq!(app.get(url).await.header("x-cache"), Some("HIT-L2"));
    app.stop().await;
    witness.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn database_down_answers_503_within_the_deadline_and_recovers_without_restart() {
    let database = TestDatabase::seeded(500).await;
    let mysql = Proxy::start(socket_of(&database.url)).await;
    let mut options = Options::new(&database).with("DB_QUERY_TIMEOUT_MS", "1000");
    options.database_url = through(&database.url, mysql.address);
    let app = spawn_app(&options).await;
    let cached = app.get("/products/v1?take=3").await;
    assert_eq!(cached.status, 200);

    for mode in [Mode::Blackhole, Mode::Refuse] {
        mysql.set(mode);
        let started = Instant::now();
        let reply = app
            .get(&format!("/products/v1?take=4&category={mode:?}"))
            .await;
        let elapsed = started.elapsed();
        assert_eq!(reply.status, 503, "{mode:?}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        assert!(reply.header("retry-after").is_some());
        assert!(
            elapsed < Duration::from_millis(1_900),
            "{mode:?}: took {elapsed:?}"
        );
        let ready = app.get("/ready").await;
        assert_eq!(ready.status, 503, "{mode:?}");
        // Pages already cached are still served.
        assert_eq!(app.get("/products/v1?take=3").await.status, 200);
        mysql.set(Mode::Up);
        eventually(
            Duration::from_secs(10),
            "listing answers 200 again",
            || async {
                app.get(&format!("/products/v1?take=4&category={mode:?}"))
                    .await
                    .status
                    == 200
            },
        )
        .await;
        assert_eq!(app.get("/ready").await.status, 200);
    }
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let database = TestDatabase::seeded(50).await;
    let mysql = Proxy::start(socket_of(&database.url)).await;
    let options = Options::new(&database);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_product-api"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", through(&database.url, mysql.address))
        .env("REDIS_URL", &options.redis_url)
        .env("CURSOR_SECRET", crate::helpers::CURSOR_SECRET)
        .env("CACHE_NAMESPACE", &options.namespace)
        .env("PORT", port.to_string())
        .env("DB_QUERY_TIMEOUT_MS", "1500")
        .env("DRAIN_DELAY_MS", "2000")
        .env("DB_POOL_MIN", "1")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(
        Duration::from_secs(30),
        "the binary serves /health",
        || async {
            client
                .get(format!("{base}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    // An in-flight request: the database hangs, so it lasts until the query deadline.
    mysql.set(Mode::Blackhole);
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/products/v1?take=9");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    eventually(
        Duration::from_secs(5),
        "the request reached the database",
        || async { mysql.swallowed_bytes() > 0 },
    )
    .await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = in_flight
        .await
        .unwrap()
        .expect("the in-flight request got its answer");
    assert_eq!(status, 503, "answered at the deadline, not cut off");
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        client.get(format!("{base}/health")).send().await.is_err(),
        "no longer accepting"
    );
    mysql.set(Mode::Up);
    database.drop_database().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_is_counted() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let handler = async { panic!("a bug in a handler") };
    let response = product_api::server::guard_panics(&app.app, handler).await;
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(app.app.panics(), 1);
    assert_eq!(
        app.get("/health").await.status,
        200,
        "the server is still up"
    );
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let response = app
        .client
        .get(app.url("/products/v1"))
        .header("x-padding", "x".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(app.get("/health").await.status, 200);
    app.stop().await;
    database.drop_database().await;
}
