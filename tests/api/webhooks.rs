//! `POST /webhook`: signed, idempotent, and nothing lost.

use std::time::Duration;

use futures::future::join_all;
use mysql_async::prelude::Queryable;
use serde_json::json;

use crate::helpers::{
    eventually, now_seconds, random_suffix, socket_of, spawn_app, through, Options, TestApp,
    TestDatabase,
};
use crate::proxy::{Mode, Proxy};

pub fn event(kind: &str, at: &str, external_id: &str, name: &str, category: &str) -> Vec<u8> {
    let data = if kind == "product.deleted" {
        json!({"external_id": external_id})
    } else {
        json!({"external_id": external_id, "name": name, "description": "from the webhook test",
               "price": 12.5, "category": category})
    };
    serde_json::to_vec(&json!({"type": kind, "timestamp": at, "data": data})).unwrap()
}

async fn products_named(database: &TestDatabase, external_id: &str) -> Vec<String> {
    let mut conn = database.pool.get_conn().await.unwrap();
    conn.exec(
        "SELECT name FROM products WHERE external_id = ?",
        (external_id,),
    )
    .await
    .unwrap()
}

async fn count(database: &TestDatabase, sql: &str) -> u64 {
    let mut conn = database.pool.get_conn().await.unwrap();
    conn.query_first(sql).await.unwrap().unwrap_or(0)
}

#[tokio::test]
async fn fifty_concurrent_deliveries_of_one_event_apply_it_once() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let body = event(
        "product.created",
        "2026-01-01T00:00:00Z",
        "ext-1",
        "Fifty Lamp",
        "furniture",
    );
    let now = now_seconds();
    let replies = join_all((0..50).map(|_| app.deliver("evt-fifty", now, &body))).await;
    let statuses: Vec<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()["status"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "processed").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| *s == "duplicate").count(), 49);
    assert_eq!(products_named(&database, "ext-1").await, ["Fifty Lamp"]);
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn bad_deliveries_are_refused_with_the_right_status() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let body = event(
        "product.created",
        "2026-01-01T00:00:00Z",
        "ext-2",
        "Lamp",
        "furniture",
    );
    let now = now_seconds();
    // A replay with a timestamp older than 5 minutes, correctly signed for that timestamp.
    let stale = app.deliver("evt-stale", now - 301, &body).await;
    assert_eq!(stale.status, 400);
    assert_eq!(stale.json()["header"], "webhook-timestamp");
    // One flipped body byte.
    let secret =
        product_api::request::webhook::WebhookSecret::parse(crate::helpers::WEBHOOK_SECRET)
            .unwrap();
    let signature = secret.sign("evt-flip", now, &body);
    let mut flipped = body.clone();
    flipped[10] ^= 1;
    let tampered = app.post_webhook("evt-flip", now, &signature, flipped).await;
    assert_eq!(tampered.status, 401);
    assert_eq!(
        tampered.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        tampered.json()["detail"],
        "the request is not authenticated"
    );
    let unsigned = app
        .post_webhook("evt-unsigned", now, "", body.clone())
        .await;
    assert_eq!(unsigned.status, 401);
    // 1 MiB.
    let huge = app.deliver("evt-huge", now, &vec![b' '; 1024 * 1024]).await;
    assert_eq!(huge.status, 413);
    // Not JSON, then JSON breaking the listing's rules.
    assert_eq!(app.deliver("evt-json", now, b"{not json").await.status, 400);
    let negative = br#"{"type":"product.created","timestamp":"2026-01-01T00:00:00Z","data":{"external_id":"x","name":"n","price":-1,"category":"c"}}"#;
    let reply = app.deliver("evt-neg", now, negative).await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.json()["field"], "data.price");
    let unknown = event("product.moved", "2026-01-01T00:00:00Z", "x", "n", "c");
    let reply = app.deliver("evt-type", now, &unknown).await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.json()["field"], "type");
    let empty_name = event("product.updated", "2026-01-01T00:00:00Z", "x", "", "c");
    assert_eq!(
        app.deliver("evt-name", now, &empty_name).await.json()["field"],
        "data.name"
    );
    assert!(
        products_named(&database, "ext-2").await.is_empty(),
        "nothing applied"
    );
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn out_of_order_events_keep_the_newest_state() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let now = now_seconds();
    let updated = event(
        "product.updated",
        "2026-01-02T00:00:00Z",
        "ext-3",
        "New Name",
        "tops",
    );
    let created = event(
        "product.created",
        "2026-01-01T00:00:00Z",
        "ext-3",
        "Old Name",
        "tops",
    );
    assert_eq!(
        app.deliver("evt-u", now, &updated).await.json()["status"],
        "processed"
    );
    assert_eq!(
        app.deliver("evt-c", now, &created).await.json()["status"],
        "processed"
    );
    assert_eq!(products_named(&database, "ext-3").await, ["New Name"]);
    let deleted = event("product.deleted", "2026-01-03T00:00:00Z", "ext-3", "", "");
    let late_update = event(
        "product.updated",
        "2026-01-02T12:00:00Z",
        "ext-3",
        "Zombie",
        "tops",
    );
    assert_eq!(app.deliver("evt-d", now, &deleted).await.status, 200);
    assert_eq!(
        app.deliver("evt-late", now, &late_update).await.json()["status"],
        "processed"
    );
    assert!(
        products_named(&database, "ext-3").await.is_empty(),
        "a late update does not resurrect"
    );
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_change_shows_on_another_instance_within_a_second() {
    let database = TestDatabase::seeded(200).await;
    let (writer, reader) = a_change_reaches_another_instance(&Options::new(&database)).await;
    writer.stop().await;
    reader.stop().await;
    database.drop_database().await;
}

/// The id of the event [`a_change_reaches_another_instance`] delivers.
pub const SEEN_EVENT: &str = "evt-seen";

/// Two instances on `options`: a page cached in the reader's L1 shows a product delivered to the
/// writer (event [`SEEN_EVENT`]) within a second, while L1 entries live 5 s: only the published
/// invalidation can do that. Returns (writer, reader) for more checks (also run on a Redis
/// Cluster, `cluster.rs`).
pub async fn a_change_reaches_another_instance(options: &Options) -> (TestApp, TestApp) {
    let writer = spawn_app(options).await;
    let reader = spawn_app(options).await;
    assert_a_change_reaches(&writer, &[&reader], SEEN_EVENT).await;
    (writer, reader)
}

/// A product created through a signed delivery to `writer` (event `event_id`) shows within a
/// second on every reader, each of which had the empty listing cached in L1 before.
pub(crate) async fn assert_a_change_reaches(
    writer: &TestApp,
    readers: &[&TestApp],
    event_id: &str,
) {
    let category = format!("cat-{}", random_suffix());
    let url = format!("/products/v1?category={category}");
    for reader in readers {
        let before = reader.get(&url).await;
        assert_eq!(before.json()["data"].as_array().unwrap().len(), 0);
        assert_eq!(
            reader.get(&url).await.header("x-cache"),
            Some("HIT-L1"),
            "cached on the reader"
        );
    }
    let body = event(
        "product.created",
        "2026-01-01T00:00:00Z",
        &format!("ext-{event_id}"),
        "Seen Everywhere",
        &category,
    );
    assert_eq!(
        writer.deliver(event_id, now_seconds(), &body).await.status,
        200
    );
    eventually(
        Duration::from_secs(1),
        "every reader lists the new product",
        || async {
            for reader in readers {
                let page = reader.get(&url).await.json();
                if page["data"].as_array().unwrap().len() != 1 {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

#[tokio::test]
async fn the_durable_record_catches_duplicates_after_redis_forgets() {
    let database = TestDatabase::create().await;
    let options = Options::new(&database);
    let app = spawn_app(&options).await;
    let body = event(
        "product.created",
        "2026-01-01T00:00:00Z",
        "ext-5",
        "Once",
        "tops",
    );
    let now = now_seconds();
    assert_eq!(
        app.deliver("evt-once", now, &body).await.json()["status"],
        "processed"
    );
    let client = redis::Client::open(options.redis_url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let removed: u64 = redis::cmd("DEL")
        .arg(format!("{}:webhook:evt-once", options.namespace))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the fast-path entry existed and is gone");
    assert_eq!(
        app.deliver("evt-once", now, &body).await.json()["status"],
        "duplicate"
    );
    assert_eq!(products_named(&database, "ext-5").await, ["Once"]);
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_database_failure_mid_apply_records_nothing_and_the_retry_is_processed() {
    let database = TestDatabase::create().await;
    let mysql = Proxy::start(socket_of(&database.url)).await;
    let mut options = Options::new(&database);
    options.database_url = through(&database.url, mysql.address);
    let app = spawn_app(&options).await;
    // Hold the product's version row so the delivery stops inside its transaction.
    let mut holder = database.pool.get_conn().await.unwrap();
    holder
        .query_drop("INSERT INTO external_versions (external_id, last_change_at) VALUES ('ext-6', '2000-01-01')")
        .await
        .unwrap();
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("SELECT * FROM external_versions WHERE external_id = 'ext-6' FOR UPDATE")
        .await
        .unwrap();
    let body = event(
        "product.created",
        "2026-01-01T00:00:00Z",
        "ext-6",
        "Survivor",
        "tops",
    );
    let now = now_seconds();
    let waiting = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
        WHERE INFO LIKE 'INSERT IGNORE INTO external_versions%' OR INFO LIKE 'SELECT last_change_at%'";
    // Once the delivery waits inside its transaction, the database connection is cut.
    let cut_mid_apply = async {
        eventually(
            Duration::from_secs(5),
            "the delivery waits inside its transaction",
            || async { count(&database, waiting).await == 1 },
        )
        .await;
        mysql.set(Mode::Refuse);
    };
    let (reply, ()) = tokio::join!(app.deliver("evt-fail", now, &body), cut_mid_apply);
    let status = reply.status;
    assert_eq!(status, 503, "the database failed mid-apply");
    holder.query_drop("COMMIT").await.unwrap();
    mysql.set(Mode::Up);
    eventually(
        Duration::from_secs(10),
        "the failed transaction is rolled back",
        || async {
            let recorded = "SELECT COUNT(*) FROM webhook_events WHERE event_id = 'evt-fail'";
            count(&database, recorded).await == 0 && count(&database, waiting).await == 0
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the sender's retry is processed",
        || async {
            let reply = app.deliver("evt-fail", now, &body).await;
            reply.status == 200 && reply.json()["status"] == "processed"
        },
    )
    .await;
    assert_eq!(products_named(&database, "ext-6").await, ["Survivor"]);
    drop(holder);
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn without_a_secret_the_webhook_route_answers_503() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database).with("WEBHOOK_SECRET", "")).await;
    let reply = app.deliver("evt-x", now_seconds(), b"{}").await;
    assert_eq!(reply.status, 503);
    assert!(reply.json()["detail"]
        .as_str()
        .unwrap()
        .contains("WEBHOOK_SECRET"));
    app.stop().await;
    database.drop_database().await;
}

/// Every write of a product's text writes its search signature in the same statement: a search
/// walk tests the signature before reading the row, so a stale one would hide the row.
#[tokio::test]
async fn a_product_written_by_a_webhook_carries_its_texts_search_signature() {
    let database = TestDatabase::create().await;
    let app = spawn_app(&Options::new(&database)).await;
    let now = now_seconds();
    let stored = || async {
        let mut conn = database.pool.get_conn().await.unwrap();
        let row: Option<(String, String, u64)> = conn
            .query_first(
                "SELECT name, description, search_signature FROM products \
                 WHERE external_id = 'ext-sig'",
            )
            .await
            .unwrap();
        row.unwrap()
    };
    for (index, (kind, at, name)) in [
        ("product.created", "2026-01-01T00:00:00Z", "Walnut Lamp"),
        ("product.updated", "2026-01-02T00:00:00Z", "Copper Kettle"),
        ("product.updated", "2026-01-03T00:00:00Z", "Café Chair"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = event(kind, at, "ext-sig", name, "tops");
        let reply = app.deliver(&format!("evt-sig-{index}"), now, &body).await;
        assert_eq!(reply.json()["status"], "processed");
        let (stored_name, description, signature) = stored().await;
        assert_eq!(stored_name, name);
        assert_eq!(
            signature,
            product_api::domain::signature::of_product(&stored_name, &description),
            "{kind} {name}"
        );
    }
    app.stop().await;
    database.drop_database().await;
}
