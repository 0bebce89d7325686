//! Many instances of one deployment, as a load balancer runs them: each a full `App` (its own
//! pool, L1, limiter and listeners) sharing only MySQL and Redis. Several share one port with
//! `REUSE_PORT=1`; three fetch one OAuth2 token, run one sync at a time, see one instance's
//! webhook at once, hold one rate-limit quota, and accept each other's cursors (the same
//! `CURSOR_SECRET`) while an instance with another secret refuses them.

use std::time::Duration;

use product_api::config::Config;
use product_api::sync::{run_once, SyncError, SyncReport};
use product_api::upstream::{CatalogueClient, TokenProvider};

use crate::helpers::{
    spawn_app, spawn_app_on, spawn_apps, stop_apps, Options, TestApp, TestDatabase,
};
use crate::rate_limit::{limited, Spread};
use crate::standin::{Catalogue, TokenEndpoint, CLIENT_ID, CLIENT_SECRET};
use crate::sync::{external_rows, settings};
use crate::webhooks::assert_a_change_reaches;

/// How many instances the fleet tests run.
const FLEET: usize = 3;

/// A client that opens a new connection for every request, so the kernel chooses a listener
/// (by the hash of the connection's addresses) for each one.
fn new_connection_per_request() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Listing queries each instance has run so far.
fn listing_queries(apps: &[TestApp]) -> Vec<u64> {
    apps.iter()
        .map(|app| app.app.store().listing_queries())
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn three_instances_with_reuse_port_share_one_port_and_each_serves() {
    let database = TestDatabase::seeded(100).await;
    let options = Options::new(&database).with("REUSE_PORT", "1");
    let first = spawn_app(&options).await;
    let port = first.address;
    let mut apps = vec![first];
    for _ in 1..FLEET {
        apps.push(spawn_app_on(&options, port).await);
    }
    assert!(apps.iter().all(|app| app.address == port));

    let client = new_connection_per_request();
    let before = listing_queries(&apps);
    // Each page is asked once: a miss in both caches, so exactly the instance that accepted the
    // connection queries MySQL.
    let requests = 60u64;
    for take in 1..=requests {
        let url = format!("http://{port}/products/v1?take={take}");
        let reply = client.get(&url).send().await.unwrap();
        assert_eq!(reply.status(), 200, "{url}");
        assert_eq!(reply.headers()["x-cache"], "MISS", "{url}");
    }
    let served: Vec<u64> = listing_queries(&apps)
        .iter()
        .zip(&before)
        .map(|(after, before)| after - before)
        .collect();
    assert_eq!(served.iter().sum::<u64>(), requests, "{served:?}");
    // With a uniform spread the chance that one of three gets none of 60 is 3 × (2/3)^60 < 1e-10.
    assert!(
        served.iter().all(|count| *count > 0),
        "every instance accepted connections: {served:?}"
    );

    // One instance stops (a rolling restart): the others take every new connection.
    let stopped = apps.remove(0);
    stopped.stop().await;
    for _ in 0..20 {
        let reply = client
            .get(format!("http://{port}/products/v1?take=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    stop_apps(apps).await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_second_serve_on_a_taken_port_without_reuse_port_stops_naming_port() {
    let database = TestDatabase::create().await;
    let options = Options::new(&database);
    let running = spawn_app(&options).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_product-api"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database.url)
        .env("REDIS_URL", &options.redis_url)
        .env("CURSOR_SECRET", crate::helpers::CURSOR_SECRET)
        .env("CACHE_NAMESPACE", &options.namespace)
        .env("HOST", running.address.ip().to_string())
        .env("PORT", running.address.port().to_string())
        .env("DB_POOL_MIN", "1")
        .env("LOG_FORMAT", "text")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the second instance exits instead of serving")
        .unwrap();
    assert!(!output.status.success(), "{:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("PORT: {} is already in use", running.address)),
        "{stderr}"
    );
    assert!(stderr.contains("REUSE_PORT=1"), "{stderr}");
    // The first instance is unaffected.
    assert_eq!(running.get("/ready").await.status, 200);
    running.stop().await;
    database.drop_database().await;
}

/// Options for instances that sync from `catalogue` with tokens from `tokens`.
fn syncing(database: &TestDatabase, tokens: &TokenEndpoint, catalogue: &Catalogue) -> Options {
    Options::new(database)
        .with("API_URL", catalogue.url().to_string())
        .with("OAUTH_TOKEN_URL", tokens.url().to_string())
        .with("OAUTH_CLIENT_ID", CLIENT_ID)
        .with("OAUTH_CLIENT_SECRET", CLIENT_SECRET)
}

/// The catalogue client of one instance, built from its configuration as `serve` builds it:
/// its own token provider, sharing the token through Redis under `CACHE_NAMESPACE`.
fn catalogue_client(config: &Config) -> CatalogueClient {
    let upstream = config.upstream.as_ref().expect("API_URL is set");
    let tokens = TokenProvider::new(upstream.token.clone(), &config.redis_target()).unwrap();
    CatalogueClient::new(upstream.catalogue.clone(), tokens).unwrap()
}

/// One sync run of instance `index`, as its background sync would run it.
async fn sync_on(
    app: &TestApp,
    client: &CatalogueClient,
    index: usize,
) -> Result<SyncReport, SyncError> {
    let settings = settings(&format!("instance-{index}"));
    run_once(app.app.store(), client, app.app.cache(), &settings).await
}

#[tokio::test]
async fn three_instances_run_one_sync_at_a_time_and_fetch_one_token() {
    let database = TestDatabase::create().await;
    let tokens = TokenEndpoint::start(Duration::from_secs(3600)).await;
    let catalogue = Catalogue::start(&tokens).await;
    let options = syncing(&database, &tokens, &catalogue);
    let apps = spawn_apps(&options, FLEET).await;
    let clients: Vec<CatalogueClient> = (0..FLEET)
        .map(|_| catalogue_client(&options.config()))
        .collect();
    let sync = |index: usize| sync_on(&apps[index], &clients[index], index);

    // (b) Three runs at once: slow pages keep the first going while the others start.
    catalogue.control().set_delay(Duration::from_millis(100));
    let (a, b, c) = tokio::join!(sync(0), sync(1), sync(2));
    let reports = [a.unwrap(), b.unwrap(), c.unwrap()];
    let completed: Vec<usize> = (0..FLEET)
        .filter(|index| reports[*index] != SyncReport::Skipped)
        .collect();
    assert_eq!(completed.len(), 1, "one run did the work: {reports:?}");
    assert_eq!(
        reports[completed[0]],
        SyncReport::Completed {
            resumed_from: 0,
            read: 194,
            changed: 194
        }
    );
    assert_eq!(
        catalogue.control().requests(),
        4,
        "one run's pages (194 in pages of 50), none from the skipped runs"
    );
    assert_eq!(external_rows(&database).await.len(), 194);

    // (a) The instances that skipped now sync in turn, each through its own token provider:
    // they find the token in Redis, so the token endpoint was asked once for all three.
    catalogue.control().heal();
    for index in (0..FLEET).filter(|index| *index != completed[0]) {
        let report = sync(index).await.unwrap();
        assert!(
            matches!(
                report,
                SyncReport::Completed {
                    resumed_from: 0,
                    read: 194,
                    ..
                }
            ),
            "instance {index}: {report:?}"
        );
    }
    assert_eq!(catalogue.control().requests(), 12, "three whole runs");
    assert_eq!(catalogue.unauthorized(), 0);
    assert_eq!(tokens.control().requests(), 1, "one token request in all");
    let first = clients[0].tokens().token().await.unwrap();
    for client in &clients[1..] {
        assert_eq!(client.tokens().token().await.unwrap(), first);
    }
    assert_eq!(tokens.control().requests(), 1);
    stop_apps(apps).await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_webhook_to_one_instance_is_fresh_on_the_other_two() {
    let database = TestDatabase::seeded(200).await;
    let apps = spawn_apps(&Options::new(&database), FLEET).await;
    assert_a_change_reaches(&apps[0], &[&apps[1], &apps[2]], "evt-fleet").await;
    stop_apps(apps).await;
    database.drop_database().await;
}

#[tokio::test]
async fn three_instances_hold_one_rate_limit_quota() {
    let database = TestDatabase::seeded(100).await;
    // 10 per second with a burst of 20, and the fallback divided by the real instance count.
    // A generous Redis deadline: on a busy test machine the shared quota, not the fallback,
    // should decide.
    let options = limited(&database, "600/min,burst=20")
        .with("RATE_LIMIT_INSTANCES", "3")
        .with("RATE_LIMIT_REDIS_TIMEOUT_MS", "500");
    let apps = spawn_apps(&options, FLEET).await;
    let fleet: Vec<&TestApp> = apps.iter().collect();
    let spread = Spread::measure(&fleet, Duration::from_millis(1500)).await;
    // Bound: 20 + 10 × t + 3 instances × lease_max 2 (≈ 41 in 1.5 s); three unshared limiters
    // would accept 3 × (20 + 10 × t) ≈ 105.
    spread.assert_one_quota(10.0, 20, 3);
    assert_eq!(
        apps.iter()
            .map(|app| app.app.limiter().fallback_decisions())
            .sum::<u64>(),
        0,
        "Redis decided, not the local fallback"
    );
    stop_apps(apps).await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_cursor_from_one_instance_works_on_the_others_and_not_under_another_secret() {
    let database = TestDatabase::seeded(100).await;
    let options = Options::new(&database);
    let apps = spawn_apps(&options, FLEET).await;
    let stranger = spawn_app(&options.clone().with(
        "CURSOR_SECRET",
        "another deployment's cursor secret, 32+ bytes",
    ))
    .await;
    let query = "take=5&sort=price";
    let first = apps[0].get(&format!("/products/v1?{query}")).await.json();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let expected = database
        .ids(
            "SELECT id FROM products ORDER BY price, id LIMIT 10",
            mysql_async::Params::Empty,
        )
        .await;
    let ids = |page: &serde_json::Value| -> Vec<u64> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|product| product["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&first), expected[..5]);

    let next = format!("/products/v1?{query}&cursor={cursor}");
    for (index, app) in apps.iter().enumerate().skip(1) {
        let reply = app.get(&next).await;
        assert_eq!(reply.status, 200, "instance {index}");
        assert_eq!(ids(&reply.json()), expected[5..], "instance {index}");
    }

    let refused = stranger.get(&next).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let problem = refused.json();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("invalid-cursor"),
        "{problem}"
    );
    assert_eq!(problem["parameter"], "cursor");
    stop_apps(apps).await;
    stranger.stop().await;
    database.drop_database().await;
}
