//! The catalogue sync against the stand-in catalogue (the 194 DummyJSON products), real MariaDB
//! and real Redis.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use product_api::config::Secret;
use product_api::domain::event::ExternalProduct;
use product_api::domain::Price;
use product_api::redis_connection::RedisTarget;
use product_api::store::sync::SyncWriteError;
use product_api::sync::{run_once, SyncError, SyncReport, SyncSettings};
use product_api::upstream::{CatalogueClient, CatalogueSettings, TokenProvider, TokenSettings};

use crate::helpers::{eventually, random_suffix, spawn_app, Options, TestApp, TestDatabase};
use crate::standin::{Catalogue, TokenEndpoint, CLIENT_ID, CLIENT_SECRET};

const PAGE_SIZE: u64 = 50;

struct World {
    _tokens: TokenEndpoint,
    catalogue: Catalogue,
    client: CatalogueClient,
}

impl World {
    async fn start(options: &Options) -> World {
        let tokens = TokenEndpoint::start(Duration::from_secs(3600)).await;
        let catalogue = Catalogue::start(&tokens).await;
        let settings = TokenSettings::new(
            tokens.url(),
            CLIENT_ID,
            Secret::new(CLIENT_SECRET),
            options.namespace.clone(),
        );
        let provider =
            TokenProvider::new(settings, &RedisTarget::single(&options.redis_url)).unwrap();
        let mut catalogue_settings = CatalogueSettings::new(catalogue.url());
        catalogue_settings.retry.deadline = Duration::from_secs(2);
        let client = CatalogueClient::new(catalogue_settings, provider).unwrap();
        World {
            _tokens: tokens,
            catalogue,
            client,
        }
    }
}

pub(crate) fn settings(holder: &str) -> SyncSettings {
    SyncSettings {
        holder: holder.to_owned(),
        page_size: PAGE_SIZE,
        lease_ttl: Duration::from_secs(30),
    }
}

async fn sync(app: &TestApp, world: &World, holder: &str) -> Result<SyncReport, SyncError> {
    run_once(
        app.app.store(),
        &world.client,
        app.app.cache(),
        &settings(holder),
    )
    .await
}

/// Every synced row, in a stable order, with every column the listing serves.
pub(crate) async fn external_rows(
    database: &TestDatabase,
) -> Vec<(String, String, String, String, String, String)> {
    let mut conn = database.pool.get_conn().await.unwrap();
    conn.query(
        "SELECT external_id, name, description, CAST(price AS CHAR), category, CAST(updated_at AS CHAR) \
         FROM products WHERE external_id IS NOT NULL ORDER BY CAST(external_id AS UNSIGNED)",
    )
    .await
    .unwrap()
}

async fn seed_rows(database: &TestDatabase) -> u64 {
    let mut conn = database.pool.get_conn().await.unwrap();
    conn.query_first("SELECT COUNT(*) FROM products WHERE external_id IS NULL")
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn the_whole_catalogue_lands_in_pages_and_a_second_run_leaves_the_same_rows() {
    let database = TestDatabase::seeded(100).await;
    let options = Options::new(&database);
    let app = spawn_app(&options).await;
    let world = World::start(&options).await;
    let search = "/products/v1?search=mascara";
    assert_eq!(
        app.get(search).await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let report = sync(&app, &world, "first").await.unwrap();
    assert_eq!(
        report,
        SyncReport::Completed {
            resumed_from: 0,
            read: 194,
            changed: 194
        }
    );
    assert_eq!(
        world.catalogue.control().requests(),
        4,
        "194 products in pages of 50"
    );
    let rows = external_rows(&database).await;
    assert_eq!(rows.len(), 194);
    let first = &rows[0];
    assert_eq!(
        (
            first.0.as_str(),
            first.1.as_str(),
            first.3.as_str(),
            first.4.as_str()
        ),
        ("1", "Essence Mascara Lash Princess", "9.99", "beauty")
    );
    // The caches were invalidated once, at the end: the listing shows the new products.
    let found = app.get(search).await.json()["data"]
        .as_array()
        .unwrap()
        .len();
    assert!(found >= 1, "the synced mascara is listed");

    let again = sync(&app, &world, "second").await.unwrap();
    assert!(matches!(
        again,
        SyncReport::Completed {
            resumed_from: 0,
            read: 194,
            ..
        }
    ));
    assert_eq!(
        external_rows(&database).await,
        rows,
        "a second run changes no row"
    );
    assert_eq!(
        seed_rows(&database).await,
        100 + 40,
        "the seed's rows are untouched"
    );
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_run_that_fails_midway_is_resumed_by_the_next_run() {
    let database = TestDatabase::create().await;
    let options = Options::new(&database);
    let app = spawn_app(&options).await;
    let world = World::start(&options).await;
    let control = world.catalogue.control();
    // The first page is answered slowly; once it has arrived, every later request fails.
    control.set_delay(Duration::from_millis(300));
    let run = sync(&app, &world, "failing");
    let break_after_first_page = async {
        eventually(
            Duration::from_secs(5),
            "the first page request arrived",
            || async { control.requests() >= 1 },
        )
        .await;
        control.fail_always(500, None);
    };
    let (outcome, ()) = tokio::join!(run, break_after_first_page);
    assert!(matches!(outcome, Err(SyncError::Source(_))), "{outcome:?}");
    assert_eq!(
        external_rows(&database).await.len(),
        50,
        "the first page was written"
    );

    control.heal();
    let resumed = sync(&app, &world, "resuming").await.unwrap();
    assert_eq!(
        resumed,
        SyncReport::Completed {
            resumed_from: 50,
            read: 144,
            changed: 144
        }
    );
    assert_eq!(external_rows(&database).await.len(), 194);
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn of_two_concurrent_syncs_one_does_the_work() {
    let database = TestDatabase::create().await;
    let options = Options::new(&database);
    let first = spawn_app(&options).await;
    let second = spawn_app(&options).await;
    let world = World::start(&options).await;
    // Slow pages keep the first run going while the second one starts.
    world
        .catalogue
        .control()
        .set_delay(Duration::from_millis(100));
    let (a, b) = tokio::join!(sync(&first, &world, "a"), sync(&second, &world, "b"));
    let reports = [a.unwrap(), b.unwrap()];
    assert_eq!(
        reports
            .iter()
            .filter(|r| **r == SyncReport::Skipped)
            .count(),
        1,
        "{reports:?}"
    );
    assert_eq!(
        world.catalogue.control().requests(),
        4,
        "one run's pages only"
    );
    assert_eq!(external_rows(&database).await.len(), 194);
    first.stop().await;
    second.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_holder_that_lost_its_lease_cannot_write() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let store = app.app.store();
    let ttl = Duration::from_secs(30);
    let paused = store
        .acquire_sync_lease("paused", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .acquire_sync_lease("other", ttl)
            .await
            .unwrap()
            .is_none(),
        "held"
    );
    // The paused holder's lease runs out (as if it slept past it) and another instance takes it.
    let mut conn = database.pool.get_conn().await.unwrap();
    conn.query_drop("UPDATE sync_lease SET expires_at = '2000-01-01 00:00:00'")
        .await
        .unwrap();
    drop(conn);
    let successor = store
        .acquire_sync_lease("successor", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(successor.generation > paused.generation);
    let product = ExternalProduct {
        external_id: format!("fenced-{}", random_suffix()),
        name: "Fenced".into(),
        description: String::new(),
        price: Price(100),
        category: "tops".into(),
    };
    let now = store.database_now().await.unwrap();
    let late = store
        .write_sync_batch(&paused, std::slice::from_ref(&product), now, 1, ttl)
        .await;
    assert!(matches!(late, Err(SyncWriteError::LeaseLost)), "{late:?}");
    assert_eq!(
        external_rows(&database).await.len(),
        0,
        "the paused holder wrote nothing"
    );
    store
        .write_sync_batch(&successor, &[product], now, 1, ttl)
        .await
        .unwrap();
    assert_eq!(external_rows(&database).await.len(), 1);
    app.stop().await;
    database.drop_database().await;
}
