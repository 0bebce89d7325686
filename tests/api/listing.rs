//! Walking every page returns exactly the rows a direct SQL query returns, in the same order.

use std::collections::HashSet;

use mysql_async::prelude::Queryable;
use mysql_async::Params;

use product_api::store::PlanTaken;

use crate::helpers::{spawn_app, Options, TestDatabase};

/// About 20k rows, as the issue asks, plus 40 rows tied on both sort keys.
const ROWS: u64 = 20_000;

const SORTS: [(&str, &str); 4] = [
    ("-created_at", "created_at DESC, id DESC"),
    ("created_at", "created_at ASC, id ASC"),
    ("price", "price ASC, id ASC"),
    ("-price", "price DESC, id DESC"),
];

fn assert_same_walk(walked: &[u64], expected: &[u64], what: &str) {
    let unique: HashSet<_> = walked.iter().collect();
    assert_eq!(unique.len(), walked.len(), "{what}: a row came twice");
    assert_eq!(
        walked.len(),
        expected.len(),
        "{what}: a row is missing or extra"
    );
    assert_eq!(walked, expected, "{what}: order differs from SQL");
}

#[tokio::test]
async fn walking_all_products_in_each_sort_matches_sql() {
    let database = TestDatabase::seeded(ROWS).await;
    let app = spawn_app(&Options::new(&database)).await;
    for (sort, order_by) in SORTS {
        let expected = database
            .ids(
                &format!("SELECT id FROM products ORDER BY {order_by}"),
                Params::Empty,
            )
            .await;
        assert!(expected.len() as u64 > ROWS);
        let walked = app.walk(&format!("sort={sort}&take=100")).await;
        assert_same_walk(&walked, &expected, sort);
    }
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn walking_one_category_in_each_sort_matches_sql() {
    let database = TestDatabase::seeded(ROWS).await;
    let app = spawn_app(&Options::new(&database)).await;
    for (sort, order_by) in SORTS {
        let expected = database
            .ids(
                &format!("SELECT id FROM products WHERE category = ? ORDER BY {order_by}"),
                Params::from(("tops",)),
            )
            .await;
        assert!(expected.len() > 500, "the category holds many pages");
        let walked = app
            .walk(&format!("category=tops&sort={sort}&take=37"))
            .await;
        assert_same_walk(&walked, &expected, sort);
    }
    app.stop().await;
    database.drop_database().await;
}

/// Plain pages are read with `HANDLER` (`store/handler_read.rs`), which stops at no filter:
/// the walks must still be SQL's, across a category's end, a category MySQL's collation
/// equates with the filter but whose bytes differ (`Tops` for `tops`), and price bounds; and
/// with `DB_HANDLER_READS=false` no page is read that way.
#[tokio::test]
async fn handler_reads_walk_exactly_the_rows_sql_returns() {
    let database = TestDatabase::seeded(ROWS).await;
    let mut conn = database.pool.get_conn().await.unwrap();
    conn.query_drop(
        "INSERT INTO products (name, description, price, category, created_at, updated_at) \
         SELECT name, description, price, 'Tops', created_at, updated_at FROM products \
         WHERE category = 'groceries' LIMIT 30",
    )
    .await
    .unwrap();
    drop(conn);
    let filters = [
        ("1 = 1", "take=100"),
        ("category = 'tops'", "category=tops&take=37"),
        ("category = 'beauty'", "category=beauty&take=50"),
    ];
    let price_bands = [
        (
            "price >= 100.00 AND price <= 123.45",
            "min_price=100&max_price=123.45&take=25",
        ),
        (
            "category = 'tops' AND price >= 2500",
            "category=tops&min_price=2500&take=20",
        ),
    ];
    for handler_reads in ["true", "false"] {
        let app = spawn_app(&Options::new(&database).with("DB_HANDLER_READS", handler_reads)).await;
        for (sort, order_by) in SORTS {
            let price_sorted = sort.ends_with("price");
            let bands = price_bands.iter().filter(|_| price_sorted);
            for (condition, query) in filters.iter().chain(bands) {
                let expected = database
                    .ids(
                        &format!("SELECT id FROM products WHERE {condition} ORDER BY {order_by}"),
                        Params::Empty,
                    )
                    .await;
                assert!(!expected.is_empty(), "{condition}");
                let walked = app.walk(&format!("{query}&sort={sort}")).await;
                assert_same_walk(
                    &walked,
                    &expected,
                    &format!("{query} {sort} {handler_reads}"),
                );
            }
        }
        let store = app.app.store();
        let (read, unsure) = (
            store.pages_by_plan(PlanTaken::HandlerRead),
            store.pages_by_plan(PlanTaken::HandlerUnsure),
        );
        if handler_reads == "true" {
            assert!(read > 0, "pages read with HANDLER");
            assert!(
                unsure > 0,
                "`Tops` rows and categories' ends answered by SELECT"
            );
        } else {
            assert_eq!((read, unsure), (0, 0), "DB_HANDLER_READS=false");
        }
        app.stop().await;
    }
    database.drop_database().await;
}

#[tokio::test]
async fn walking_a_search_matches_words_as_prefixes_in_name_or_description() {
    let database = TestDatabase::seeded(ROWS).await;
    let app = spawn_app(&Options::new(&database)).await;
    // The oracle is independent of FULLTEXT: every word must start a word of name or description.
    let word = |w: &str| format!("(name REGEXP '\\\\b{w}' OR description REGEXP '\\\\b{w}')");
    let cases = [
        ("search=classic", vec!["classic"]),
        ("search=Classic%20OAK", vec!["classic", "oak"]),
        ("search=clas%25+oak_", vec!["clas", "oak"]),
        ("search=tied+lamp", vec!["tied", "lamp"]),
    ];
    for (query, words) in cases {
        let condition: Vec<String> = words.iter().map(|w| word(w)).collect();
        for (sort, order_by) in SORTS {
            let sql = format!(
                "SELECT id FROM products WHERE {} ORDER BY {order_by}",
                condition.join(" AND ")
            );
            let expected = database.ids(&sql, Params::Empty).await;
            assert!(!expected.is_empty(), "{query} matches rows");
            let walked = app.walk(&format!("{query}&sort={sort}&take=9")).await;
            assert_same_walk(&walked, &expected, &format!("{query} {sort}"));
        }
    }
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn walking_a_price_range_in_each_sort_matches_sql() {
    let database = TestDatabase::seeded(ROWS).await;
    let app = spawn_app(&Options::new(&database)).await;
    // Narrow bands (~90 and ~400 rows) are read whole in date order; the wide one (~80 % of
    // the rows, more than band_range_max(take)) is walked in date order on the index.
    let bands = [
        (
            "price >= 100.00 AND price <= 123.45",
            "min_price=100&max_price=123.45&take=25",
        ),
        (
            "category = 'tops' AND price >= 2500",
            "category=tops&min_price=2500&take=50",
        ),
        ("price <= 4000", "max_price=4000&take=100"),
    ];
    for (sort, order_by) in SORTS {
        for (condition, query) in bands {
            let expected = database
                .ids(
                    &format!("SELECT id FROM products WHERE {condition} ORDER BY {order_by}"),
                    Params::Empty,
                )
                .await;
            let walked = app.walk(&format!("{query}&sort={sort}")).await;
            assert_same_walk(&walked, &expected, &format!("{query} {sort}"));
        }
    }
    let store = app.app.store();
    assert!(
        store.pages_by_plan(PlanTaken::BandRange) > 0,
        "narrow bands read whole"
    );
    assert!(
        store.pages_by_plan(PlanTaken::BandWalk) > 0,
        "the wide band walked"
    );
    app.stop().await;
    database.drop_database().await;
}

/// Each listing index is in the order it serves and also carries the other sort key, so a price
/// band in date order is filtered on the date index alone (migration 0003) and a small band
/// read from the price index is filtered by the cursor and sorted on it alone (migration 0005).
/// Last, each carries the search signature a walk tests before reading a row (migration 0006).
#[tokio::test]
async fn each_listing_index_carries_the_other_sort_key() {
    let database = TestDatabase::create().await;
    let mut conn = database.pool.get_conn().await.unwrap();
    let columns: Vec<(String, String)> = conn
        .query(
            "SELECT INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) \
             FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'products' \
             AND INDEX_NAME LIKE 'idx_products_%' GROUP BY INDEX_NAME ORDER BY INDEX_NAME",
        )
        .await
        .unwrap();
    let expected = [
        (
            "idx_products_category_created",
            "category,created_at,id,price,search_signature",
        ),
        (
            "idx_products_category_price",
            "category,price,id,created_at,search_signature",
        ),
        (
            "idx_products_created",
            "created_at,id,price,search_signature",
        ),
        ("idx_products_price", "price,id,created_at,search_signature"),
    ];
    let columns: Vec<(&str, &str)> = columns
        .iter()
        .map(|(index, columns)| (index.as_str(), columns.as_str()))
        .collect();
    assert_eq!(columns, expected);
    drop(conn);
    database.drop_database().await;
}

#[tokio::test]
async fn rows_inserted_during_a_walk_cause_no_duplicate_or_skip() {
    let database = TestDatabase::seeded(5_000).await;
    let app = spawn_app(&Options::new(&database)).await;
    for (sort, order_by) in SORTS {
        let before = database
            .ids(
                &format!("SELECT id FROM products ORDER BY {order_by}"),
                Params::Empty,
            )
            .await;
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        let mut page_number = 0;
        loop {
            let url = match &cursor {
                None => format!("/products/v1?sort={sort}&take=50"),
                Some(c) => format!("/products/v1?sort={sort}&take=50&cursor={c}"),
            };
            let page = app.get(&url).await.json();
            walked.extend(
                page["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["id"].as_u64().unwrap()),
            );
            page_number += 1;
            if page_number % 10 == 0 {
                // New rows land everywhere in the order: ties, cheap, expensive, newest.
                database.insert_ties(3).await;
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<_> = walked.iter().collect();
        assert_eq!(unique.len(), walked.len(), "{sort}: a row came twice");
        let walked_set: HashSet<_> = walked.iter().collect();
        let skipped: Vec<_> = before
            .iter()
            .filter(|id| !walked_set.contains(id))
            .collect();
        assert!(
            skipped.is_empty(),
            "{sort}: rows present before the walk were skipped: {skipped:?}"
        );
        let after = database
            .ids(
                &format!("SELECT id FROM products ORDER BY {order_by}"),
                Params::Empty,
            )
            .await;
        let position: std::collections::HashMap<_, _> =
            after.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        assert!(
            walked
                .windows(2)
                .all(|pair| position[&pair[0]] < position[&pair[1]]),
            "{sort}: the walk is out of order"
        );
    }
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn pages_have_the_documented_shape_and_link() {
    let database = TestDatabase::seeded(100).await;
    let app = spawn_app(&Options::new(&database)).await;
    let reply = app.get("/products/v1?take=2&sort=price").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let page = reply.json();
    let product = &page["data"][0];
    for field in [
        "id",
        "name",
        "description",
        "price",
        "category",
        "created_at",
        "updated_at",
    ] {
        assert!(!product[field].is_null(), "{field} missing: {product}");
    }
    assert!(product["price"].is_number());
    assert!(product["created_at"].as_str().unwrap().ends_with('Z'));
    let cursor = page["next_cursor"].as_str().unwrap();
    let link = reply.header("link").unwrap();
    assert!(
        link.starts_with("</products/v1?sort=price&take=2&cursor="),
        "{link}"
    );
    assert!(link.ends_with(">; rel=\"next\""));
    let next_url = &link[1..link.find('>').unwrap()];
    let next = app.get(next_url).await;
    assert_eq!(next.status, 200);
    assert_ne!(next.json()["data"][0]["id"], page["data"][0]["id"]);
    assert!(link.contains(cursor));
    app.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_common_word_is_served_by_the_index_walk_and_a_rare_word_by_fulltext() {
    let database = TestDatabase::seeded(ROWS).await;
    let app = spawn_app(&Options::new(&database)).await;
    let fulltext_pages = || app.app.store().pages_by_plan(PlanTaken::SearchFulltext);

    // "classic" is in ~2.5 % of rows: a window of 2,100 index entries holds ~50 matches.
    for sort in ["-created_at", "created_at", "price", "-price"] {
        let url = format!("/products/v1?search=classic&sort={sort}");
        let reply = app.get(&url).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["data"].as_array().unwrap().len(), 20, "{url}");
    }
    assert_eq!(
        fulltext_pages(),
        0,
        "every common-word page came from the walk"
    );

    // A rare word is not in the window: FULLTEXT answers, with the same rows the walk would.
    let reply = app.get("/products/v1?search=zephyrine").await;
    assert_eq!(reply.status, 200);
    assert_eq!(fulltext_pages(), 1);
    // The same search again (another page size, so not from the cache): known to be sparse, it
    // goes to FULLTEXT without walking.
    let sparse_pages = || app.app.store().pages_by_plan(PlanTaken::SearchSparse);
    let again = app.get("/products/v1?search=zephyrine&take=5").await;
    assert_eq!(again.status, 200);
    assert_eq!((fulltext_pages(), sparse_pages()), (1, 1));
    // With a category, and with a price bound: the words alone came up short, so these go to
    // FULLTEXT without a walk of their own, and list exactly the matches the filters keep.
    let window_pages = || app.app.store().pages_by_plan(PlanTaken::SearchWindow);
    let walks_before = window_pages();
    let unfiltered = again.json()["data"].as_array().unwrap().clone();
    let category = unfiltered[0]["category"].as_str().unwrap().to_owned();
    let in_category = app
        .get(&format!(
            "/products/v1?search=zephyrine&category={category}"
        ))
        .await;
    assert_eq!(in_category.status, 200);
    let all = app.get("/products/v1?search=zephyrine&take=100").await;
    let expected: Vec<_> = all.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|product| product["category"] == category.as_str())
        .cloned()
        .collect();
    assert_eq!(in_category.json()["data"].as_array().unwrap(), &expected);
    let priced = app
        .get("/products/v1?search=zephyrine&min_price=0.01")
        .await;
    assert_eq!(priced.status, 200);
    assert_eq!(
        (window_pages(), fulltext_pages(), sparse_pages()),
        (walks_before, 1, 4),
        "filtered searches of sparse words skip the walk"
    );

    // A walk of every page of a common word (~5 %): at its end the window reaches the end of
    // the order, and that short last page is conclusive too (no FULLTEXT).
    let walked = app.walk("search=oak&sort=-created_at&take=100").await;
    assert!(walked.len() > 300, "{} rows", walked.len());
    assert_eq!(
        (fulltext_pages(), sparse_pages()),
        (1, 4),
        "every page of a common word, the last one included, came from the walk"
    );
    app.stop().await;
    database.drop_database().await;
}

/// A common word missing from the first rows of a listing: the first window finds some matches
/// but not a page, and one continuation from the window's end, sized by those matches, finishes
/// it (no FULLTEXT gather of every match), with exactly the rows FULLTEXT lists, on this page
/// and the next, in date and in price order.
#[tokio::test]
async fn a_window_short_of_a_page_is_continued_when_its_matches_say_the_page_is_near() {
    let database = TestDatabase::seeded(ROWS).await;
    // The newest and cheapest: 1,500 of the window's 2,100 entries hold no match, the other 600
    // ~15 ("classic" is in ~2.5 % of the seed's rows).
    database.insert_newest_without_words(1_500).await;
    let app = spawn_app(&Options::new(&database)).await;
    let plans = || {
        let store = app.app.store();
        [PlanTaken::SearchContinued, PlanTaken::SearchFulltext]
            .map(|plan| store.pages_by_plan(plan))
    };
    let ids = |reply: &crate::helpers::Reply| -> Vec<u64> {
        reply.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|product| product["id"].as_u64().unwrap())
            .collect()
    };
    for (round, (sort, order)) in [
        ("-created_at", "created_at DESC, id DESC"),
        ("price", "price ASC, id ASC"),
    ]
    .into_iter()
    .enumerate()
    {
        let oracle = |offset: u32| {
            format!(
                "SELECT id FROM products \
                 WHERE MATCH (name, description) AGAINST ('+classic' IN BOOLEAN MODE) \
                 ORDER BY {order} LIMIT 20 OFFSET {offset}"
            )
        };
        let url = format!("/products/v1?search=classic&sort={sort}");
        let first = app.get(&url).await;
        assert_eq!(first.status, 200);
        assert_eq!(
            ids(&first),
            database.ids(&oracle(0), Params::Empty).await,
            "{sort}"
        );
        assert_eq!(
            plans(),
            [round as u64 + 1, 0],
            "{sort}: continued, FULLTEXT"
        );
        let cursor = first.json()["next_cursor"].as_str().unwrap().to_owned();
        let next = app.get(&format!("{url}&cursor={cursor}")).await;
        assert_eq!(
            ids(&next),
            database.ids(&oracle(20), Params::Empty).await,
            "{sort}"
        );
        assert_eq!(plans()[1], 0, "{sort}: no FULLTEXT");
    }
    app.stop().await;
    database.drop_database().await;
}

/// The search walk tests each index entry's word-start signature before it reads the row: a row
/// whose signature does not hold its words is skipped (so the test below can see the filter at
/// work), and the start-up reconciliation re-signs exactly the rows whose signature is not their
/// text's, after which the walk lists every match again.
#[tokio::test]
async fn a_stale_search_signature_hides_a_row_from_the_walk_until_reconciled() {
    let database = TestDatabase::seeded(ROWS).await;
    let oracle = database
        .ids(
            "SELECT id FROM products \
             WHERE CONCAT_WS(' ', name, description) REGEXP '\\\\bclassic' \
             ORDER BY created_at DESC, id DESC",
            Params::Empty,
        )
        .await;
    let stale: Vec<u64> = oracle.iter().step_by(50).copied().collect();
    let mut conn = database.pool.get_conn().await.unwrap();
    for id in &stale {
        conn.exec_drop(
            "UPDATE products SET search_signature = 0 WHERE id = ?",
            (id,),
        )
        .await
        .unwrap();
    }
    drop(conn);
    let app = spawn_app(&Options::new(&database)).await;
    let walks = || {
        let store = app.app.store();
        [PlanTaken::SearchWindow, PlanTaken::SearchContinued]
            .map(|plan| store.pages_by_plan(plan))
            .iter()
            .sum::<u64>()
    };

    let walked = app.walk("search=classic&sort=-created_at&take=100").await;
    let expected: Vec<u64> = oracle
        .iter()
        .filter(|id| !stale.contains(id))
        .copied()
        .collect();
    assert_eq!(walked, expected, "a stale signature hides its row");
    assert!(walks() > 0);

    let reconciled = product_api::store::signatures::reconcile(app.app.store())
        .await
        .unwrap();
    // The seed's rows were signed as they were written; the 40 tied rows were inserted by
    // plain SQL (the column's default) and the stale ones were zeroed above.
    assert_eq!(reconciled.checked, ROWS + 40);
    assert_eq!(reconciled.signed, stale.len() as u64 + 40);
    let again = product_api::store::signatures::reconcile(app.app.store())
        .await
        .unwrap();
    assert_eq!(again.signed, 0, "a second run finds nothing to sign");

    // Another page size: not from the cache.
    let walked = app.walk("search=classic&sort=-created_at&take=99").await;
    assert_eq!(walked, oracle, "every match is listed again");
    app.stop().await;
    database.drop_database().await;
}
