//! Read replicas, against a real MariaDB replication pair (`start_replication_pair` in
//! `scripts/lib/services.sh`; `TEST_REPL_PRIMARY_URL`, `TEST_REPLICA_URL`): listings are read
//! from the replica, writes are seen within the documented bound, and a replica that fails or
//! lags leaves the rotation without a single failed request, then comes back.
//!
//! The pair is shared by every test here, and some pause its replication, so they take
//! [`PAIR`] for their whole run; each works in a database of its own, created on the primary
//! (and so on the replica).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

use crate::helpers::{
    eventually, now_seconds, random_suffix, sample, socket_of, spawn_app, store_settings, through,
    Options, TestApp, TestDatabase,
};
use crate::proxy::{Mode, Proxy};

/// One test at a time on the pair: pausing replication must not surprise another test.
static PAIR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pair_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the read-replica tests need the MariaDB replication pair; run \
             them through scripts/test, or start it with `source scripts/lib/services.sh && \
             start_replication_pair` and export TEST_REPL_PRIMARY_URL and TEST_REPLICA_URL"
        )
    })
}

/// A database of its own on the pair: made and migrated on the primary, replicated.
struct PairDatabase {
    /// The primary side; `drop_database` drops it there, and the drop replicates.
    primary: TestDatabase,
    replica_url: String,
    replica: mysql_async::Pool,
    /// The replica server without a database, to pause and resume replication.
    replica_server: String,
}

impl PairDatabase {
    async fn seeded(rows: u64) -> PairDatabase {
        let primary_server = pair_env("TEST_REPL_PRIMARY_URL");
        let primary_server = primary_server.trim_end_matches('/');
        let replica_server = pair_env("TEST_REPLICA_URL");
        let replica_server = replica_server.trim_end_matches('/').to_owned();
        let name = format!("test_{}", random_suffix());
        let admin = mysql_async::Pool::new(primary_server);
        admin
            .get_conn()
            .await
            .unwrap()
            .query_drop(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            ))
            .await
            .unwrap();
        admin.disconnect().await.unwrap();
        let url = format!("{primary_server}/{name}");
        let store = Arc::new(product_api::store::Store::new(&url, &store_settings()).unwrap());
        product_api::store::migrate::run(&store).await.unwrap();
        product_api::seed::top_up(store.clone(), rows)
            .await
            .unwrap();
        let replica_url = format!("{replica_server}/{name}");
        let database = PairDatabase {
            primary: TestDatabase {
                name,
                pool: mysql_async::Pool::new(url.as_str()),
                url,
            },
            replica: mysql_async::Pool::new(replica_url.as_str()),
            replica_url,
            replica_server,
        };
        database.caught_up().await;
        database
    }

    /// Waits until the replica has applied everything the primary has logged so far (the
    /// replica's own GTID wait, not a sleep).
    async fn caught_up(&self) {
        let mut primary = self.primary.pool.get_conn().await.unwrap();
        let position: String = primary
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .unwrap()
            .unwrap();
        let mut replica = self.replica.get_conn().await.unwrap();
        let reached: Option<i64> = replica
            .exec_first("SELECT MASTER_GTID_WAIT(?, 30)", (position,))
            .await
            .unwrap();
        assert_eq!(reached, Some(0), "the replica did not catch up within 30 s");
    }

    /// Options for an instance reading from `replica_url` (the replica, or a proxy before it).
    fn options(&self, replica_url: &str) -> Options {
        Options::new(&self.primary).with("DATABASE_READ_URLS", replica_url)
    }

    /// A product written on the primary only (`sql_log_bin = 0`: never replicated), in
    /// `category`. A page that lists it was read from the primary; one that lacks it, from the
    /// replica. Never updated later: a replicated change to it would stop replication.
    async fn insert_on_primary_only(&self, category: &str) {
        let mut conn = self.primary.pool.get_conn().await.unwrap();
        conn.query_drop("SET SESSION sql_log_bin = 0")
            .await
            .unwrap();
        insert_product(&mut conn, "Primary Only Lamp", category).await;
        conn.query_drop("SET SESSION sql_log_bin = 1")
            .await
            .unwrap();
    }

    async fn replica_has(&self, category: &str) -> bool {
        let mut conn = self.replica.get_conn().await.unwrap();
        let count: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM products WHERE category = ?",
                (category,),
            )
            .await
            .unwrap();
        count.unwrap_or(0) > 0
    }

    /// Stops the replica's SQL thread: it keeps receiving the binlog but applies nothing.
    async fn pause_replication(&self) -> PausedReplication {
        let pool = mysql_async::Pool::new(self.replica_server.as_str());
        pool.get_conn()
            .await
            .unwrap()
            .query_drop("STOP SLAVE SQL_THREAD")
            .await
            .unwrap();
        pool.disconnect().await.unwrap();
        PausedReplication {
            replica_server: Some(self.replica_server.clone()),
        }
    }

    async fn drop_database(self) {
        self.replica.disconnect().await.unwrap();
        self.primary.drop_database().await;
    }
}

/// Replication paused by a test; resumed by [`PausedReplication::resume`], or on drop when the
/// test failed first, so that no later test finds the shared replica stopped.
struct PausedReplication {
    replica_server: Option<String>,
}

impl PausedReplication {
    async fn resume(mut self) {
        if let Some(server) = self.replica_server.take() {
            start_sql_thread(&server).await;
        }
    }
}

impl Drop for PausedReplication {
    fn drop(&mut self) {
        if let Some(server) = self.replica_server.take() {
            // Drop cannot await: resume from a runtime of its own, on a thread of its own.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(start_sql_thread(&server));
            })
            .join();
        }
    }
}

async fn start_sql_thread(server: &str) {
    let pool = mysql_async::Pool::new(server);
    pool.get_conn()
        .await
        .unwrap()
        .query_drop("START SLAVE SQL_THREAD")
        .await
        .unwrap();
    pool.disconnect().await.unwrap();
}

async fn insert_product(conn: &mut mysql_async::Conn, name: &str, category: &str) {
    conn.exec_drop(
        "INSERT INTO products (name, description, price, category, created_at, updated_at)
         VALUES (?, 'a replica test row', 19.99, ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
        (name, category),
    )
    .await
    .unwrap();
}

fn event(external_id: &str, name: &str, category: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "product.created",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"external_id": external_id, "name": name, "description": "from the replica test",
                 "price": 12.5, "category": category},
    }))
    .unwrap()
}

async fn ready(app: &TestApp) -> Value {
    let reply = app.get("/ready").await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

async fn replica_state(app: &TestApp) -> String {
    ready(app).await["replicas"][0]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn wait_for_state(app: &TestApp, state: &str, limit: Duration) {
    eventually(limit, &format!("the replica is {state}"), || async {
        replica_state(app).await == state
    })
    .await;
}

async fn listed(app: &TestApp, url: &str) -> usize {
    let reply = app.get(url).await;
    assert_eq!(reply.status, 200, "{url}");
    reply.json()["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn listing_reads_are_served_by_the_replica() {
    let _pair = PAIR.lock().await;
    let database = PairDatabase::seeded(60).await;
    let category = format!("only-{}", random_suffix());
    database.insert_on_primary_only(&category).await;
    let app = spawn_app(&database.options(&database.replica_url)).await;
    wait_for_state(&app, "healthy", Duration::from_secs(10)).await;

    let before = app.app.store().read_counts();
    assert_eq!(
        listed(&app, &format!("/products/v1?category={category}")).await,
        0,
        "the row that exists only on the primary is not listed: the replica answered"
    );
    for take in 1..=10 {
        assert_eq!(
            listed(&app, &format!("/products/v1?take={take}")).await,
            take
        );
    }
    let after = app.app.store().read_counts();
    assert_eq!(after.primary, before.primary, "no read went to the primary");
    assert_eq!(after.replicas[0], before.replicas[0] + 11);

    let metrics = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert!(sample(&metrics, "db_reads_total{target=\"replica-0\"}").unwrap() >= 11.0);
    assert_eq!(
        sample(&metrics, "db_replica_healthy{replica=\"0\"}"),
        Some(1.0)
    );
    let lag = sample(&metrics, "db_replica_lag_seconds{replica=\"0\"}").unwrap();
    assert!((0.0..1.0).contains(&lag), "lag {lag} s");

    let ready = ready(&app).await;
    let replica = &ready["replicas"][0];
    assert_eq!(ready["mysql"], "up");
    assert_eq!(replica["replica"], 0);
    assert_eq!(
        replica["address"],
        socket_of(&database.replica_url).to_string(),
        "host:port only"
    );
    assert!(replica["lag_ms"].as_f64().unwrap() < 1_000.0);
    assert!(
        !ready.to_string().contains("product_api:"),
        "no credentials in /ready: {ready}"
    );
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_webhook_change_is_listed_within_the_bound_on_every_instance() {
    let _pair = PAIR.lock().await;
    let database = PairDatabase::seeded(30).await;
    let options = database.options(&database.replica_url);
    let writer = spawn_app(&options).await;
    let reader = spawn_app(&options).await;
    wait_for_state(&writer, "healthy", Duration::from_secs(10)).await;
    wait_for_state(&reader, "healthy", Duration::from_secs(10)).await;
    let category = format!("lamps-{}", random_suffix());
    let url = format!("/products/v1?category={category}");
    for app in [&writer, &reader] {
        assert_eq!(listed(app, &url).await, 0);
        assert_eq!(app.get(&url).await.header("x-cache"), Some("HIT-L1"));
    }
    let delivered = Instant::now();
    let reply = writer
        .deliver(
            "evt-replica-1",
            now_seconds(),
            &event("r-1", "Bound Lamp", &category),
        )
        .await;
    assert_eq!(reply.status, 200);
    // The documented bound: REPLICA_MAX_LAG_MS (1 s) plus the invalidation's propagation.
    let bound = Duration::from_secs(1) + Duration::from_secs(1);
    for app in [&writer, &reader] {
        eventually(
            bound.saturating_sub(delivered.elapsed()),
            "the new product is listed",
            || async { listed(app, &url).await == 1 },
        )
        .await;
    }
    writer.stop().await;
    reader.stop().await;
    database.drop_database().await;
}

/// The cache interplay: right after an invalidation a replica may still be within its lag
/// bound but without the change. Listings then read from the primary, so the new generation is
/// never filled with the old rows.
#[tokio::test]
async fn after_an_invalidation_listings_read_the_primary_for_the_lag_bound() {
    let _pair = PAIR.lock().await;
    let database = PairDatabase::seeded(30).await;
    // A long bound: the paused replica stays in the rotation throughout the test.
    let options = database
        .options(&database.replica_url)
        .with("REPLICA_MAX_LAG_MS", "20000");
    let writer = spawn_app(&options).await;
    let reader = spawn_app(&options).await;
    wait_for_state(&writer, "healthy", Duration::from_secs(10)).await;
    wait_for_state(&reader, "healthy", Duration::from_secs(10)).await;
    let category = format!("desks-{}", random_suffix());
    let url = format!("/products/v1?category={category}");
    let replica_reads = reader.app.store().read_counts().replicas[0];
    assert_eq!(listed(&reader, &url).await, 0);
    assert_eq!(
        reader.app.store().read_counts().replicas[0],
        replica_reads + 1,
        "the first page came from the replica"
    );

    let paused = database.pause_replication().await;
    let reply = writer
        .deliver(
            "evt-window-1",
            now_seconds(),
            &event("w-1", "Window Desk", &category),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        !database.replica_has(&category).await,
        "the replica lacks the change (replication is paused)"
    );
    assert_eq!(
        replica_state(&writer).await,
        "healthy",
        "still in the rotation"
    );
    let primary_reads = writer.app.store().read_counts().primary;
    // Once the delivery's batched invalidation (INVALIDATION_BATCH_MS) has moved the generation.
    eventually(
        Duration::from_secs(1),
        "the writer lists the change (via the primary)",
        || async { listed(&writer, &url).await == 1 },
    )
    .await;
    assert!(writer.app.store().read_counts().primary > primary_reads);
    eventually(
        Duration::from_secs(1),
        "the other instance lists the change (via the primary)",
        || async { listed(&reader, &url).await == 1 },
    )
    .await;
    assert!(!database.replica_has(&category).await);
    assert_eq!(replica_state(&reader).await, "healthy");
    // Any uncached listing during the window goes to the primary too.
    let before = reader.app.store().read_counts();
    assert_eq!(listed(&reader, "/products/v1?take=7").await, 7);
    let after = reader.app.store().read_counts();
    assert_eq!(
        (after.primary, after.replicas[0]),
        (before.primary + 1, before.replicas[0])
    );

    paused.resume().await;
    writer.stop().await;
    reader.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_replica_that_stops_answering_moves_reads_to_the_primary_without_errors() {
    let _pair = PAIR.lock().await;
    let database = PairDatabase::seeded(40).await;
    let proxy = Proxy::start(socket_of(&database.replica_url)).await;
    let app = Arc::new(
        spawn_app(&database.options(&through(&database.replica_url, proxy.address))).await,
    );
    wait_for_state(&app, "healthy", Duration::from_secs(10)).await;

    // 16 clients, each listing pages no one asked for before (a fresh price floor per request),
    // so every request reads a database; every answer and its time are kept.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut request = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    request += 1;
                    let url = format!(
                        "/products/v1?take=5&min_price=0.{client:02}&max_price={request}.00"
                    );
                    let started = Instant::now();
                    let reply = app.get(&url).await;
                    answers.push((reply.status, started.elapsed(), url));
                }
                answers
            })
        })
        .collect();

    let replica_reads = |app: &TestApp| app.app.store().read_counts().replicas[0];
    let primary_reads = |app: &TestApp| app.app.store().read_counts().primary;
    for mode in [Mode::Blackhole, Mode::Refuse] {
        let start = replica_reads(&app);
        eventually(
            Duration::from_secs(10),
            "reads reach the replica",
            || async { replica_reads(&app) >= start + 20 },
        )
        .await;
        proxy.set(mode);
        wait_for_state(&app, "down", Duration::from_secs(5)).await;
        let start = primary_reads(&app);
        eventually(
            Duration::from_secs(5),
            "reads go to the primary",
            || async { primary_reads(&app) >= start + 20 },
        )
        .await;
        let metrics = String::from_utf8(app.get("/metrics").await.body).unwrap();
        assert_eq!(
            sample(&metrics, "db_replica_healthy{replica=\"0\"}"),
            Some(0.0)
        );
        proxy.set(Mode::Up);
        wait_for_state(&app, "healthy", Duration::from_secs(10)).await;
    }
    let start = replica_reads(&app);
    eventually(
        Duration::from_secs(10),
        "reads are back on the replica",
        || async { replica_reads(&app) >= start + 20 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);

    let mut answered = 0;
    for client in clients {
        for (status, took, url) in client.await.unwrap() {
            assert_eq!(status, 200, "{url}");
            // The replica's share of the deadline, then the primary's read: within the
            // query deadline (2 s) plus scheduling slack.
            assert!(took < Duration::from_secs(3), "{url} took {took:?}");
            answered += 1;
        }
    }
    assert!(answered > 100, "{answered} requests");
    let metrics = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert!(sample(&metrics, "db_replica_fallbacks_total{replica=\"0\"}").unwrap_or(0.0) >= 1.0);
    drop(proxy);
    Arc::try_unwrap(app).ok().unwrap().stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_lagging_replica_leaves_the_rotation_and_returns_when_caught_up() {
    let _pair = PAIR.lock().await;
    let database = PairDatabase::seeded(30).await;
    let app = spawn_app(&database.options(&database.replica_url)).await;
    wait_for_state(&app, "healthy", Duration::from_secs(10)).await;

    let paused = database.pause_replication().await;
    let category = format!("late-{}", random_suffix());
    {
        let mut conn = database.primary.pool.get_conn().await.unwrap();
        insert_product(&mut conn, "Late Lamp", &category).await;
    }
    // REPLICA_MAX_LAG_MS is 1 s: past it the heartbeat proves the replica too far behind.
    wait_for_state(&app, "lagging", Duration::from_secs(5)).await;
    let metrics = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert_eq!(
        sample(&metrics, "db_replica_healthy{replica=\"0\"}"),
        Some(0.0)
    );
    assert!(sample(&metrics, "db_replica_lag_seconds{replica=\"0\"}").unwrap() > 1.0);
    assert!(
        !database.replica_has(&category).await,
        "the replica lacks the row"
    );
    let before = app.app.store().read_counts();
    assert_eq!(
        listed(&app, &format!("/products/v1?category={category}")).await,
        1,
        "the new row is listed, from the primary"
    );
    let after = app.app.store().read_counts();
    assert_eq!(
        (after.primary, after.replicas[0]),
        (before.primary + 1, before.replicas[0])
    );

    paused.resume().await;
    wait_for_state(&app, "healthy", Duration::from_secs(10)).await;
    assert!(database.replica_has(&category).await);
    let before = app.app.store().read_counts();
    assert_eq!(
        listed(&app, &format!("/products/v1?category={category}&take=2")).await,
        1,
        "the caught-up replica lists the row"
    );
    assert_eq!(
        app.app.store().read_counts().replicas[0],
        before.replicas[0] + 1
    );
    app.stop().await;
    database.drop_database().await;
}
