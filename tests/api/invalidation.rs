//! Cache invalidation per category and search word: a product change moves the cached pages of
//! its old and new category, of the searches its old and new text can match, and of listings
//! without either filter, on every instance, and leaves the others cached; whenever what moved
//! is unknown, everything moves.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use product_api::cache::generation::{Bucket, Scope, WordBucket};
use product_api::domain::search::SearchTerms;

use crate::helpers::{
    eventually, now_seconds, random_suffix, spawn_app, Options, TestApp, TestDatabase,
};
use crate::webhooks::event;

/// L1 entries outlive every test here, so a page that is still `HIT-L1` was not moved.
fn options(database: &TestDatabase) -> Options {
    Options::new(database).with("L1_TTL_MS", "600000")
}

/// `count` fresh category names in distinct buckets.
fn categories_in_distinct_buckets(count: usize) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    while names.len() < count {
        let name = format!("cat-{}", random_suffix());
        let bucket = Bucket::of(&name).unwrap();
        if names.iter().all(|other| Bucket::of(other) != Some(bucket)) {
            names.push(name);
        }
    }
    names
}

fn word_bucket(word: &str) -> Option<WordBucket> {
    WordBucket::of_search(&SearchTerms::parse(word).unwrap().unwrap())
}

/// `count` fresh search words in distinct word buckets, none shared with the words of `avoid`.
fn words_in_distinct_buckets(count: usize, avoid: &str) -> Vec<String> {
    let taken: Vec<WordBucket> = Scope::of_change([], [avoid]).words().collect();
    let mut words: Vec<String> = Vec::new();
    while words.len() < count {
        let word = format!("w{}", random_suffix());
        let bucket = word_bucket(&word).unwrap();
        if !taken.contains(&bucket) && words.iter().all(|other| word_bucket(other) != Some(bucket))
        {
            words.push(word);
        }
    }
    words
}

fn category_url(category: &str) -> String {
    format!("/products/v1?category={category}")
}

/// The newest product of the whole catalogue: a listing without a category filter.
const NEWEST: &str = "/products/v1?take=1&sort=-created_at";

async fn names(app: &TestApp, url: &str) -> Vec<String> {
    let page = app.get(url).await.json();
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|product| product["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads `url` until it is cached in L1, and returns the page's names.
async fn cached(app: &TestApp, url: &str) -> Vec<String> {
    let names = names(app, url).await;
    let again = app.get(url).await;
    assert_eq!(again.header("x-cache"), Some("HIT-L1"), "{url} is cached");
    names
}

async fn deliver(app: &TestApp, id: &str, body: &[u8]) {
    let reply = app.deliver(id, now_seconds(), body).await;
    assert_eq!(
        (reply.status, reply.json()["status"].clone()),
        (200, "processed".into())
    );
}

#[tokio::test]
async fn a_change_moves_its_old_and_new_category_and_the_unfiltered_pages_on_every_instance() {
    let database = TestDatabase::seeded(100).await;
    // Each delivery's invalidation done before its reply: the creations' before the pages are
    // cached, the move's before the writer is read.
    let options = options(&database).with("INVALIDATION_BATCH_MS", "0");
    let (writer, reader) = (spawn_app(&options).await, spawn_app(&options).await);
    let [old, new, other] = <[String; 3]>::try_from(categories_in_distinct_buckets(3)).unwrap();
    deliver(
        &writer,
        "evt-move-1",
        &event(
            "product.created",
            "2026-01-01T00:00:00Z",
            "ext-mover",
            "Mover One",
            &old,
        ),
    )
    .await;
    deliver(
        &writer,
        "evt-move-2",
        &event(
            "product.created",
            "2026-01-01T00:00:00Z",
            "ext-stays",
            "Stays Put",
            &other,
        ),
    )
    .await;
    // Pages cached only once both instances have seen those changes' invalidations.
    let created = writer.app.cache().generation().shared;
    eventually(
        Duration::from_secs(2),
        "the reader saw the creations",
        || async { reader.app.cache().generation().shared >= created },
    )
    .await;
    for app in [&writer, &reader] {
        assert_eq!(cached(app, &category_url(&old)).await, ["Mover One"]);
        assert!(cached(app, &category_url(&new)).await.is_empty());
        assert_eq!(cached(app, &category_url(&other)).await, ["Stays Put"]);
        cached(app, NEWEST).await;
    }

    deliver(
        &writer,
        "evt-move-3",
        &event(
            "product.updated",
            "2026-01-02T00:00:00Z",
            "ext-mover",
            "Mover Two",
            &new,
        ),
    )
    .await;
    for app in [&writer, &reader] {
        eventually(
            Duration::from_secs(2),
            "the product left its old category and is listed in its new one",
            || async {
                names(app, &category_url(&old)).await.is_empty()
                    && names(app, &category_url(&new)).await == ["Mover Two"]
            },
        )
        .await;
        let newest = app.get(NEWEST).await;
        assert_ne!(
            newest.header("x-cache"),
            Some("HIT-L1"),
            "unfiltered pages moved"
        );
        let untouched = app.get(&category_url(&other)).await;
        assert_eq!(
            untouched.header("x-cache"),
            Some("HIT-L1"),
            "a category the change did not touch stays cached"
        );
        assert_eq!(untouched.json()["data"][0]["name"], "Stays Put");
    }
    writer.stop().await;
    reader.stop().await;
    database.drop_database().await;
}

/// `tóps` and `tops` are one category to MySQL (the column's collation ignores accents): a
/// change in a category outside printable ASCII has no bucket, so it moves every page.
#[tokio::test]
async fn a_change_in_a_category_the_collation_merges_with_others_moves_every_page() {
    let database = TestDatabase::seeded(50).await;
    let options = options(&database);
    let (writer, reader) = (spawn_app(&options).await, spawn_app(&options).await);
    let suffix = random_suffix();
    let plain = format!("tops-{suffix}");
    let accented = format!("tóps-{suffix}");
    for app in [&writer, &reader] {
        assert!(cached(app, &category_url(&plain)).await.is_empty());
    }
    deliver(
        &writer,
        "evt-accent-1",
        &event(
            "product.created",
            "2026-01-01T00:00:00Z",
            "ext-accent",
            "Accented",
            &accented,
        ),
    )
    .await;
    for app in [&writer, &reader] {
        eventually(
            Duration::from_secs(2),
            "the page of the equal plain category lists the product",
            || async { names(app, &category_url(&plain)).await == ["Accented"] },
        )
        .await;
    }
    writer.stop().await;
    reader.stop().await;
    database.drop_database().await;
}

/// Every pair of categories the column's collation holds equal gets one bucket; outside
/// printable ASCII (where the collation also merges accents, widths and letters like `ß`)
/// there is no bucket at all. Asked of MariaDB itself, over every printable ASCII character.
#[tokio::test]
async fn category_buckets_agree_with_the_collation() {
    let database = TestDatabase::create().await;
    let mut conn = database.pool.get_conn().await.unwrap();
    let collation: String = conn
        .query_first(
            "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'products' AND COLUMN_NAME = 'category'",
        )
        .await
        .unwrap()
        .unwrap();
    assert!(collation
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_'));
    conn.query_drop(format!(
        "CREATE TEMPORARY TABLE candidates (id INT PRIMARY KEY, value VARCHAR(64)) CHARACTER SET utf8mb4 COLLATE {collation}"
    ))
    .await
    .unwrap();
    let mut candidates: Vec<String> = (0x20u8..=0x7e)
        .map(|byte| format!("x{}y", char::from(byte)))
        .collect();
    candidates.extend(
        [
            "xy",
            "XY",
            "xy ",
            "xy  ",
            " xy",
            "x-y",
            "x_y",
            "tops",
            "tóps",
            "ＴＯＰＳ",
            "strasse",
            "straße",
        ]
        .map(String::from),
    );
    for (id, value) in candidates.iter().enumerate() {
        conn.exec_drop(
            "INSERT INTO candidates (id, value) VALUES (?, ?)",
            (id, value),
        )
        .await
        .unwrap();
    }
    let equal: Vec<(usize, usize)> = conn
        .query("SELECT a.id, b.id FROM candidates a JOIN candidates b ON a.value = b.value AND a.id < b.id")
        .await
        .unwrap();
    let (mut ascii_pairs, mut merged_outside_ascii) = (0, 0);
    for (a, b) in equal {
        let (a, b) = (&candidates[a], &candidates[b]);
        match (Bucket::of(a), Bucket::of(b)) {
            (Some(first), Some(second)) => {
                assert_eq!(
                    first, second,
                    "{a:?} = {b:?} in MySQL but not in the buckets"
                );
                ascii_pairs += 1;
            }
            _ => merged_outside_ascii += 1,
        }
    }
    // Case (26 letters and `XY`) and trailing spaces; `tóps`/`ＴＯＰＳ`/`tops` and
    // `straße`/`strasse` (or its `ß` = `s` form) are why non-ASCII has no bucket.
    assert!(ascii_pairs >= 29, "{ascii_pairs} equal ASCII pairs");
    assert!(
        merged_outside_ascii >= 2,
        "{merged_outside_ascii} non-ASCII pairs"
    );
    drop(conn);
    database.drop_database().await;
}

async fn redis(options: &Options) -> redis::aio::MultiplexedConnection {
    redis::Client::open(options.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Caches a page of a fresh category on `app` and returns its URL.
async fn a_cached_category_page(app: &TestApp) -> String {
    let url = category_url(&format!("cat-{}", random_suffix()));
    assert!(cached(app, &url).await.is_empty());
    url
}

/// An instance of a version without categories moves the generation with `INCR` and announces
/// it; the hash then does not describe that generation, so every page moves on every instance,
/// and the next change starts the categories over.
#[tokio::test]
async fn a_generation_moved_without_the_categories_moves_every_page() {
    let database = TestDatabase::seeded(30).await;
    let options = options(&database);
    let app = spawn_app(&options).await;
    let url = a_cached_category_page(&app).await;
    let mut redis = redis(&options).await;
    let generation: u64 = redis::cmd("INCR")
        .arg(format!("{}:generation", options.namespace))
        .query_async(&mut redis)
        .await
        .unwrap();
    let () = redis::cmd("PUBLISH")
        .arg(format!("{}:invalidate", options.namespace))
        .arg(generation)
        .query_async(&mut redis)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(2),
        "the category's page moved",
        || async { app.get(&url).await.header("x-cache") != Some("HIT-L1") },
    )
    .await;
    assert_eq!(app.app.cache().generation().shared, generation);
    app.stop().await;
    database.drop_database().await;
}

/// The scopes' hash lost (evicted, flushed) while the generation survived: the next change
/// cannot know what moved since, so it moves every page.
#[tokio::test]
async fn a_change_after_the_scopes_were_lost_moves_every_page() {
    let database = TestDatabase::seeded(30).await;
    let options = options(&database).with("INVALIDATION_BATCH_MS", "0");
    let app = spawn_app(&options).await;
    let [first, second] = <[String; 2]>::try_from(categories_in_distinct_buckets(2)).unwrap();
    deliver(
        &app,
        "evt-lost-1",
        &event(
            "product.created",
            "2026-01-01T00:00:00Z",
            "ext-lost-1",
            "First",
            &first,
        ),
    )
    .await;
    let url = category_url(&second);
    assert!(cached(&app, &url).await.is_empty());
    let mut redis = redis(&options).await;
    let () = redis::cmd("DEL")
        .arg(format!("{{{}:generation}}:scopes", options.namespace))
        .query_async(&mut redis)
        .await
        .unwrap();
    deliver(
        &app,
        "evt-lost-2",
        &event(
            "product.updated",
            "2026-01-02T00:00:00Z",
            "ext-lost-1",
            "First Again",
            &first,
        ),
    )
    .await;
    assert_eq!(
        app.get(&url).await.header("x-cache"),
        Some("MISS"),
        "another category's page moved too"
    );
    app.stop().await;
    database.drop_database().await;
}

/// A search page moves with the changes of products its word can find, before or after the
/// change, and stays cached through the others; the pages without a filter move every time.
#[tokio::test]
async fn a_change_moves_the_search_pages_its_old_and_new_text_can_match() {
    let database = TestDatabase::seeded(30).await;
    let options = options(&database).with("INVALIDATION_BATCH_MS", "0");
    let app = spawn_app(&options).await;
    // The event's other words (its description, the category) must not share the words' buckets.
    let [found, other] = <[String; 2]>::try_from(words_in_distinct_buckets(
        2,
        "from the webhook test tops renamed",
    ))
    .unwrap();
    let found_url = format!("/products/v1?search={found}");
    let other_url = format!("/products/v1?search={other}");
    let created = event(
        "product.created",
        "2026-01-01T00:00:00Z",
        "ext-word-1",
        &found,
        "tops",
    );
    deliver(&app, "evt-word-1", &created).await;
    assert_eq!(cached(&app, &found_url).await, [found.as_str()]);
    assert!(cached(&app, &other_url).await.is_empty());
    let newest = cached(&app, NEWEST).await;

    // A change `other` cannot find: its page stays, the unfiltered one moves.
    let renamed = format!("{found} renamed");
    let unrelated = event(
        "product.updated",
        "2026-01-02T00:00:00Z",
        "ext-word-1",
        &renamed,
        "tops",
    );
    deliver(&app, "evt-word-2", &unrelated).await;
    assert_eq!(app.get(&other_url).await.header("x-cache"), Some("HIT-L1"));
    assert_eq!(app.get(&found_url).await.header("x-cache"), Some("MISS"));
    assert_eq!(names(&app, &found_url).await, [renamed.as_str()]);
    assert_ne!(names(&app, NEWEST).await, newest);

    // The product's new text holds `other`: both words' pages move, by the old and the new text.
    assert_eq!(cached(&app, &found_url).await.len(), 1);
    let moved = event(
        "product.updated",
        "2026-01-03T00:00:00Z",
        "ext-word-1",
        &other,
        "tops",
    );
    deliver(&app, "evt-word-3", &moved).await;
    assert!(
        names(&app, &found_url).await.is_empty(),
        "the old text's word"
    );
    assert_eq!(
        names(&app, &other_url).await,
        [other.as_str()],
        "the new text's word"
    );
    app.stop().await;
    database.drop_database().await;
}

/// The word buckets cover every row MariaDB's search conditions find, through both plans (the
/// window walk's LIKE and REGEXP, the FULLTEXT index's boolean mode), for texts whose word
/// starts are tricky: punctuation, underscores, digits, case, a match inside a word, and letters
/// outside ASCII that the collation matches with ASCII ones (`ſ` is `s`, the Kelvin sign `k`).
#[tokio::test]
async fn word_buckets_cover_every_match_mariadb_finds() {
    let database = TestDatabase::create().await;
    let mut conn = database.pool.get_conn().await.unwrap();
    let texts = [
        "leather",
        "LEATHER bag",
        "x-leather",
        "x_leather",
        "x'leather",
        "x.leather",
        "(leather)",
        "9leather",
        "xleather",
        "le ather",
        "lea",
        "leath3r",
        "tab\tleather",
        "123 leather",
        "co-op cotton",
        "cottonwood",
        "walnut/leather",
        "WALNUT",
        "nut",
        "\u{17f}teel case",
        "\u{212a}elvin",
    ];
    for (id, text) in texts.iter().enumerate() {
        conn.exec_drop(
            "INSERT INTO products (name, description, price, category, created_at, updated_at) \
             VALUES (?, 'x', 1.00, 'tops', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
            (format!("{id} {text}"),),
        )
        .await
        .unwrap();
    }
    let (mut matches, mut outside_ascii, mut not_in_scope) = (0, 0, 0);
    for term in [
        "leather", "lea", "eat", "ath", "cotton", "coo", "walnut", "nut", "123", "steel", "kel",
    ] {
        let terms = SearchTerms::parse(term).unwrap().unwrap();
        let bucket = WordBucket::of_search(&terms).unwrap();
        let walked: Vec<(String, String)> = conn
            .exec(
                "SELECT name, description FROM products WHERE \
                 CONCAT_WS(' ', name, description) LIKE ? AND CONCAT_WS(' ', name, description) REGEXP ?",
                (terms.substring_pattern(), terms.word_start_pattern()),
            )
            .await
            .unwrap();
        let indexed: Vec<(String, String)> = conn
            .exec(
                "SELECT name, description FROM products \
                 WHERE MATCH (name, description) AGAINST (? IN BOOLEAN MODE)",
                (terms.boolean_mode_expression(),),
            )
            .await
            .unwrap();
        for (name, description) in walked.iter().chain(&indexed) {
            let scope = Scope::of_change([], [name.as_str(), description.as_str()]);
            assert!(
                scope.words().any(|moved| moved == bucket),
                "{term:?} finds {name:?}, whose change would not move its pages"
            );
            matches += 1;
            outside_ascii += usize::from(!name.is_ascii());
        }
        not_in_scope += texts
            .iter()
            .filter(|text| !Scope::of_change([], [**text]).words().any(|b| b == bucket))
            .count();
    }
    assert!(matches >= 20, "{matches} matches");
    assert!(outside_ascii >= 2, "{outside_ascii} matches outside ASCII");
    assert!(not_in_scope > 0, "every text moves every word");
    drop(conn);
    database.drop_database().await;
}
