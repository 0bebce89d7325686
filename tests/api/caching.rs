//! Finished responses are cached in L1 and L2, keyed canonically, with coalesced misses.

use std::time::Duration;

use futures::future::join_all;

use crate::helpers::{
    eventually, sample, single_redis_keys, spawn_app, Options, TestApp, TestDatabase,
};

#[tokio::test]
async fn a_matching_if_none_match_gets_304_and_equivalent_requests_share_an_entry() {
    let database = TestDatabase::seeded(200).await;
    let app = spawn_app(&Options::new(&database)).await;
    let first = app
        .get("/products/v1?sort=-PRICE&take=5&category=tops")
        .await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.header("cache-control"), Some("public, max-age=60"));
    let etag = first.header("etag").unwrap().to_owned();
    let same = app
        .get("/products/v1?category=tops&take=05&sort=-price")
        .await;
    assert_eq!(same.header("x-cache"), Some("HIT-L1"));
    assert_eq!(same.body, first.body);
    let not_modified = app
        .get_with(
            "/products/v1?sort=-price&take=5&category=tops",
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    let other = app
        .get_with(
            "/products/v1?sort=-price&take=5&category=tops",
            &[("if-none-match", "\"nope\"")],
        )
        .await;
    assert_eq!(other.status, 200);
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_hundred_concurrent_identical_cold_requests_make_one_database_query() {
    let database = TestDatabase::seeded(2_000).await;
    let app = spawn_app(&Options::new(&database)).await;
    let before = app.app.store().listing_queries();
    let requests = (0..100).map(|_| app.get("/products/v1?category=laptops&sort=price&take=50"));
    let replies = join_all(requests).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(replies.windows(2).all(|pair| pair[0].body == pair[1].body));
    assert_eq!(app.app.store().listing_queries() - before, 1);
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn instances_share_l2_and_coalesce_misses_across_instances() {
    let database = TestDatabase::seeded(2_000).await;
    let (first, second) = two_instances_share_l2_and_one_fill(&Options::new(&database)).await;
    first.stop().await;
    second.stop().await;
    database.drop_database().await;
}

/// Two instances on `options` (over a database of 2000 seed rows) admitting every miss to L2: a
/// page one filled is a `HIT-L2` on the other, and 100 concurrent cold requests split over both
/// make one query. (With the default `L2_ADMISSION=second-miss` this holds from a page's second
/// miss on: `a_page_missed_again_after_a_change_is_filled_once_and_shared`.) Returns the
/// instances for more checks (also run on a Redis Cluster, `cluster.rs`).
pub async fn two_instances_share_l2_and_one_fill(options: &Options) -> (TestApp, TestApp) {
    let options = options
        .clone()
        .with("FILL_LOCK_WAIT_MS", "5000")
        .with("L2_ADMISSION", "every-miss");
    let first = spawn_app(&options).await;
    let second = spawn_app(&options).await;
    let a = first.get("/products/v1?take=3").await;
    assert_eq!(a.header("x-cache"), Some("MISS"));
    let b = second.get("/products/v1?take=3").await;
    assert_eq!(b.header("x-cache"), Some("HIT-L2"));
    assert_eq!(a.body, b.body);

    let before = first.app.store().listing_queries() + second.app.store().listing_queries();
    let url = "/products/v1?category=tablets&sort=-price&take=40";
    let from_first = (0..50).map(|_| first.get(url));
    let from_second = (0..50).map(|_| second.get(url));
    let replies = join_all(from_first.chain(from_second).collect::<Vec<_>>()).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(replies.windows(2).all(|pair| pair[0].body == pair[1].body));
    let after = first.app.store().listing_queries() + second.app.store().listing_queries();
    assert_eq!(
        after - before,
        1,
        "one query for 100 requests over two instances"
    );
    (first, second)
}

/// Cached pages carry cursors signed with the instance's `CURSOR_SECRET`. An instance with
/// another secret (a rotation under way, a stale perf run's pages still in Redis) must not serve
/// them from L2: each of its clients' next page would be refused as tampered with (400).
#[tokio::test]
async fn an_instance_with_another_cursor_secret_never_serves_the_others_pages() {
    let database = TestDatabase::seeded(200).await;
    // Every miss written to L2, so the first instance's page is there to be refused.
    let options = Options::new(&database).with("L2_ADMISSION", "every-miss");
    let first = spawn_app(&options).await;
    let rotated = spawn_app(&options.clone().with(
        "CURSOR_SECRET",
        "another cursor secret, also 32 bytes or more",
    ))
    .await;
    let url = "/products/v1?take=5&category=tops";
    assert_eq!(first.get(url).await.header("x-cache"), Some("MISS"));
    let page = rotated.get(url).await;
    assert_eq!(
        page.header("x-cache"),
        Some("MISS"),
        "not the other's L2 page"
    );
    let cursor = page.json()["next_cursor"].as_str().unwrap().to_owned();
    let next = rotated.get(&format!("{url}&cursor={cursor}")).await;
    assert_eq!(next.status, 200, "its own cursor works");
    first.stop().await;
    rotated.stop().await;
    database.drop_database().await;
}

/// The L2 pages of `options`' deployment in the test Redis.
async fn l2_pages(options: &Options) -> Vec<String> {
    let mut keys = single_redis_keys(&options.namespace).await;
    keys.retain(|key| key.contains(":page:"));
    keys
}

/// `L2_ADMISSION=second-miss` (the default): a page's first miss at an instance reads L2 but
/// writes nothing to Redis, neither the page nor a fill lock.
#[tokio::test]
async fn a_page_missed_once_is_read_from_l2_but_not_written_to_it() {
    let database = TestDatabase::seeded(200).await;
    let options = Options::new(&database);
    let (first, second) = (spawn_app(&options).await, spawn_app(&options).await);
    let url = "/products/v1?take=4&category=tops";
    assert_eq!(first.get(url).await.header("x-cache"), Some("MISS"));
    assert_eq!(
        single_redis_keys(&options.namespace)
            .await
            .iter()
            .filter(|key| key.contains(":page:") || key.contains(":lock:"))
            .count(),
        0,
        "no page and no lock in Redis"
    );
    assert_eq!(second.get(url).await.header("x-cache"), Some("MISS"));
    assert_eq!(first.get(url).await.header("x-cache"), Some("HIT-L1"));
    // Counted (process-wide, so at least these two).
    let skipped = sample(&first.metrics().await, "cache_l2_writes_skipped_total")
        .expect("cache_l2_writes_skipped_total is exposed");
    assert!(skipped >= 2.0, "{skipped}");

    // A page an instance admitting every miss wrote is read on another's first miss.
    let url = "/products/v1?take=6&category=tops";
    let writer = write_to_l2(&options, url).await;
    assert_eq!(second.get(url).await.header("x-cache"), Some("HIT-L2"));
    for app in [first, second, writer] {
        app.stop().await;
    }
    database.drop_database().await;
}

/// Puts `url`'s page in L2, the only page there, by a first miss at a new instance that
/// admits every miss; that instance, to be stopped by the caller.
async fn write_to_l2(options: &Options, url: &str) -> TestApp {
    let writer = spawn_app(&options.clone().with("L2_ADMISSION", "every-miss")).await;
    assert_eq!(writer.get(url).await.header("x-cache"), Some("MISS"));
    assert_eq!(l2_pages(options).await.len(), 1);
    writer
}

/// `L2_FIRST_MISS_READS=by-yield` (the default): after a window of first-miss reads that found
/// nothing in L2, first misses stop reading it, so even a page L2 holds is loaded; an instance
/// with `always` reads it.
#[tokio::test]
async fn first_misses_stop_reading_l2_after_a_window_of_reads_that_found_nothing() {
    let database = TestDatabase::seeded(200).await;
    let options = Options::new(&database);
    let app = spawn_app(&options).await;
    for band in 0..product_api::cache::probe::WINDOW {
        let url = format!("/products/v1?take=5&min_price={band}");
        assert_eq!(app.get(&url).await.header("x-cache"), Some("MISS"));
    }

    let url = "/products/v1?take=6&category=tops";
    let writer = write_to_l2(&options, url).await;
    assert_eq!(
        app.get(url).await.header("x-cache"),
        Some("MISS"),
        "the first miss after a barren window does not read L2"
    );
    let always = spawn_app(&options.clone().with("L2_FIRST_MISS_READS", "always")).await;
    assert_eq!(always.get(url).await.header("x-cache"), Some("HIT-L2"));
    let skipped = sample(&app.metrics().await, "cache_l2_reads_skipped_total")
        .expect("cache_l2_reads_skipped_total is exposed");
    assert!(skipped >= 1.0, "{skipped}");
    for app in [app, writer, always] {
        app.stop().await;
    }
    database.drop_database().await;
}

/// The refills after a change are second misses: their pages go to L2 under the fill lock, so
/// 100 concurrent requests over two instances still make one query, and the page is shared.
#[tokio::test]
async fn a_page_missed_again_after_a_change_is_filled_once_and_shared() {
    let database = TestDatabase::seeded(2_000).await;
    let options = Options::new(&database).with("FILL_LOCK_WAIT_MS", "5000");
    let (first, second) = (spawn_app(&options).await, spawn_app(&options).await);
    let url = "/products/v1?category=tablets&sort=-price&take=40";
    let queries = || first.app.store().listing_queries() + second.app.store().listing_queries();
    let before = queries();
    assert_eq!(first.get(url).await.header("x-cache"), Some("MISS"));
    assert_eq!(second.get(url).await.header("x-cache"), Some("MISS"));
    assert_eq!(queries() - before, 2, "a first miss loads on each instance");
    assert!(l2_pages(&options).await.is_empty());

    first.app.cache().invalidate_everywhere().await;
    let moved_to = first.app.cache().generation().shared;
    eventually(
        Duration::from_secs(10),
        "the second instance follows the change",
        || async { second.app.cache().generation().shared == moved_to },
    )
    .await;
    let before = queries();
    let from_first = (0..50).map(|_| first.get(url));
    let from_second = (0..50).map(|_| second.get(url));
    let replies = join_all(from_first.chain(from_second).collect::<Vec<_>>()).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(replies.windows(2).all(|pair| pair[0].body == pair[1].body));
    assert_eq!(
        queries() - before,
        1,
        "one query for 100 requests over two instances"
    );
    assert!(replies
        .iter()
        .any(|reply| reply.header("x-cache") == Some("HIT-L2")));
    assert_eq!(l2_pages(&options).await.len(), 1, "the page is in L2");
    first.stop().await;
    second.stop().await;
    database.drop_database().await;
}

/// hyper keeps each request's future in its connection's dispatcher and moves it, bytes and
/// all, a few times per request. Inline, the miss path, the webhook and the readiness check
/// made it 7 KiB (14 KiB behind the panic guard), and copying it was ~7 % of the service's
/// samples on an L1 hit (perf/RESULTS.md, sixth session); boxed, they no longer size it.
#[tokio::test]
async fn the_future_hyper_moves_per_request_stays_small() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let request = http::Request::get("/products/v1?take=20")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let handler = app
        .app
        .handle(std::net::IpAddr::from([127, 0, 0, 1]), request);
    let guarded = product_api::server::guard_panics(&app.app, handler);
    let size = std::mem::size_of_val(&guarded);
    drop(guarded);
    assert!(
        size <= 4 * 1024,
        "the guarded handler's future is {size} bytes"
    );
    app.stop().await;
    database.drop_database().await;
}
