//! Finished responses are cached in L1 and L2, keyed canonically, with coalesced misses.

use futures::future::join_all;

use crate::helpers::{spawn_app, Options, TestApp, TestDatabase};

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

/// Two instances on `options` (over a database of 2000 seed rows): a page one filled is a
/// `HIT-L2` on the other, and 100 concurrent cold requests split over both make one query.
/// Returns the instances for more checks (also run on a Redis Cluster, `cluster.rs`).
pub async fn two_instances_share_l2_and_one_fill(options: &Options) -> (TestApp, TestApp) {
    let options = options.clone().with("FILL_LOCK_WAIT_MS", "5000");
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
    let options = Options::new(&database);
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
