//! Rows MariaDB reads per listing page, from its handler counters, for each query shape at the
//! first page and at a cursor deep into the order (900,000 rows deep for unfiltered listings).
//!
//! Runs the service's own statements against `DATABASE_URL`, as `Store::list` does: the
//! `HANDLER` read (`store::handler_read`) where the shape has one, then `store::sql::Statements`
//! when that read cannot vouch for the page. Exits non-zero when an index-served shape reads
//! more than `take + 2` rows. Run by `perf/db`.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use product_api::domain::{Filters, ListingQuery, Position, Price, SearchTerms, Sort};
use product_api::seed::RARE_WORDS;
use product_api::store::handler_read::{self, HandlerStatements};
use product_api::store::sql::{band_range_max, continuation, position_of, Statements, Window};

const TAKE: u8 = 20;
const DEEP_ROWS: u64 = 900_000;
const RUNS: usize = 5;

struct Shape {
    name: String,
    sort: Sort,
    filters: Filters,
    /// SQL condition equal to the filters, to find the deep position.
    condition: String,
    /// Whether an index serves the order and filters, so rows read must stay near `take`.
    index_served: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
    let pool = mysql_async::Pool::new(url.as_str());
    let mut conn = pool.get_conn().await?;
    let total: u64 = conn
        .query_first("SELECT COUNT(*) FROM products")
        .await?
        .unwrap_or(0);
    println!("products: {total}; take = {TAKE}; median of {RUNS} runs per query\n");
    println!(
        "{:<44} {:>14} {:>10} {:>10} {:>9}",
        "shape", "page", "depth", "rows read", "ms"
    );
    let statements = Statements::build();
    let handlers = HandlerStatements::build();
    conn.query_drop(handler_read::OPEN).await?;
    let baseline = handler_reads_of_nothing(&mut conn).await?;
    let mut over_bound = Vec::new();
    for shape in shapes() {
        let matching: u64 = conn
            .query_first(format!(
                "SELECT COUNT(*) FROM products WHERE {}",
                shape.condition
            ))
            .await?
            .unwrap_or(0);
        let deep = DEEP_ROWS.min(matching * 9 / 10);
        for (page, depth) in [("first", 0), ("deep", deep)] {
            let after = if depth == 0 {
                None
            } else {
                Some(position_at(&mut conn, &shape, depth).await?)
            };
            let query = ListingQuery {
                take: TAKE,
                sort: shape.sort,
                filters: shape.filters.clone(),
                after,
            };
            let (rows_read, elapsed) =
                measure_plan(&mut conn, (&statements, &handlers), &query, baseline).await?;
            println!(
                "{:<44} {:>14} {:>10} {:>10} {:>9.3}",
                shape.name,
                page,
                depth,
                rows_read,
                elapsed.as_secs_f64() * 1000.0
            );
            if shape.index_served && rows_read > u64::from(TAKE) + 2 {
                over_bound.push(format!("{} ({page})", shape.name));
            }
        }
    }
    drop(conn);
    pool.disconnect().await?;
    if over_bound.is_empty() {
        println!(
            "\nevery index-served shape read at most take + 2 = {} rows per page",
            TAKE + 2
        );
        Ok(())
    } else {
        Err(format!("shapes over take + 2 rows: {}", over_bound.join(", ")).into())
    }
}

fn shapes() -> Vec<Shape> {
    let mut shapes = Vec::new();
    for sort in Sort::ALL {
        shapes.push(Shape {
            name: format!("all, sort={}", sort.as_str()),
            sort,
            filters: Filters::default(),
            condition: "1 = 1".into(),
            index_served: true,
        });
        shapes.push(Shape {
            name: format!("category, sort={}", sort.as_str()),
            sort,
            filters: Filters {
                category: Some("tops".into()),
                ..Filters::default()
            },
            condition: "category = 'tops'".into(),
            index_served: true,
        });
    }
    for sort in [Sort::PriceAsc, Sort::PriceDesc, Sort::CreatedAtDesc] {
        shapes.push(Shape {
            name: format!("price 100-200, sort={}", sort.as_str()),
            sort,
            filters: Filters {
                min_price: Some(Price(10_000)),
                max_price: Some(Price(20_000)),
                ..Filters::default()
            },
            condition: "price >= 100 AND price <= 200".into(),
            index_served: sort.is_by_price(),
        });
    }
    // Price bands in date order (issue 5's `filter` scenario): the plan depends on the band's
    // size, so a narrow one ($10 of $5,000), a middle one ($100: read whole in a category of
    // ~42k rows, walked in all 1M) and a wide one ($500), alone and with a category.
    for (low, high) in [(100, 110), (1_000, 1_100), (1_000, 1_500)] {
        for category in [None, Some("tops")] {
            let in_category = category.map_or(String::new(), |c| format!("category = '{c}' AND "));
            shapes.push(Shape {
                name: format!(
                    "{}price {low}-{high}, sort=-created_at",
                    category.map_or(String::new(), |c| format!("{c} + "))
                ),
                sort: Sort::CreatedAtDesc,
                filters: Filters {
                    category: category.map(str::to_owned),
                    min_price: Some(Price(low * 100)),
                    max_price: Some(Price(high * 100)),
                    ..Filters::default()
                },
                condition: format!("{in_category}price >= {low} AND price <= {high}"),
                index_served: false,
            });
        }
    }
    shapes.push(Shape {
        name: "category + price >= 1000, sort=price".into(),
        sort: Sort::PriceAsc,
        filters: Filters {
            category: Some("tops".into()),
            min_price: Some(Price(100_000)),
            ..Filters::default()
        },
        condition: "category = 'tops' AND price >= 1000".into(),
        index_served: true,
    });
    for (label, word) in [
        ("5 %", "oak"),
        ("2.5 %", "classic"),
        ("rare", RARE_WORDS[0]),
    ] {
        for category in [None, Some("tops")] {
            let in_category = category.map_or(String::new(), |c| format!(" AND category = '{c}'"));
            shapes.push(Shape {
                name: format!(
                    "search {label} \"{word}\"{}",
                    category.map_or(String::new(), |c| format!(" + {c}"))
                ),
                sort: Sort::CreatedAtDesc,
                filters: Filters {
                    search: SearchTerms::parse(word).expect("a searchable word"),
                    category: category.map(str::to_owned),
                    ..Filters::default()
                },
                condition: format!(
                    "MATCH (name, description) AGAINST ('+{word}*' IN BOOLEAN MODE){in_category}"
                ),
                index_served: false,
            });
        }
    }
    shapes
}

/// The sort key and id of the row `depth` rows into the shape's order (OFFSET is fine in a
/// measuring tool; the service never uses it).
async fn position_at(
    conn: &mut Conn,
    shape: &Shape,
    depth: u64,
) -> Result<Position, mysql_async::Error> {
    let key = if shape.sort.is_by_price() {
        "CAST(price * 100 AS SIGNED)"
    } else {
        "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', created_at)"
    };
    let column = if shape.sort.is_by_price() {
        "price"
    } else {
        "created_at"
    };
    let direction = if shape.sort.is_descending() {
        "DESC"
    } else {
        "ASC"
    };
    let sql = format!(
        "SELECT {key}, id FROM products WHERE {} ORDER BY {column} {direction}, id {direction} \
         LIMIT 1 OFFSET {}",
        shape.condition,
        depth - 1
    );
    let (key, id): (i64, u64) = conn.query_first(sql).await?.expect("a row at that depth");
    Ok(Position { key, id })
}

/// Rows read and time of the statements the service runs for `query`: for a search, the window's
/// bound and walk, its continuation's bound and walk when the window found some matches but
/// not a page and `continuation` says the rest is near, plus FULLTEXT when the walks fell short
/// of a page (the first time: the service then remembers the search as sparse and skips the
/// walk); for a price band in date order, the band's count, then the range or the walk (as
/// `Store::list` decides).
async fn measure_plan(
    conn: &mut Conn,
    (statements, handlers): (&Statements, &HandlerStatements),
    query: &ListingQuery,
    baseline: u64,
) -> Result<(u64, Duration), mysql_async::Error> {
    let plan = statements.plan(query);
    let mut total = (0, Duration::ZERO);
    if let Some(read) = handlers.read(query) {
        total = measure(conn, read.sql, &read.params, baseline).await?;
        let rows: Vec<Row> = conn.exec(read.sql, read.params.clone()).await?;
        if handler_read::judge(rows, &read).is_some() {
            return Ok(total);
        }
    }
    if let Some(window) = &plan.window {
        let (rows, from) = measure_walk(conn, window, query.sort, baseline, &mut total).await?;
        let Some(from) = from else {
            return Ok(total);
        };
        if rows > usize::from(query.take) {
            return Ok(total);
        }
        if let Some((rest, reach)) = continuation(query, rows, from) {
            let window = statements
                .window(&rest, reach)
                .expect("a search has a window");
            let (more, end) = measure_walk(conn, &window, query.sort, baseline, &mut total).await?;
            if more > usize::from(rest.take) || end.is_none() {
                return Ok(total);
            }
        }
    }
    let mut exact = &plan.exact;
    if let Some(band) = &plan.band {
        let (sql, params) = &band.probe;
        let (rows_read, elapsed) = measure(conn, sql, params, baseline).await?;
        total = (rows_read, elapsed);
        let band_rows: u64 = conn.exec_first(*sql, params.clone()).await?.unwrap_or(0);
        if band_rows <= band_range_max(query.take) {
            exact = &band.range;
        }
    }
    let (sql, params) = exact;
    let (rows_read, elapsed) = measure(conn, sql, params, baseline).await?;
    Ok((total.0 + rows_read, total.1 + elapsed))
}

/// Measures a window's bound and walk into `total`; the walk's matches and the bound's position
/// (`None`: the order ends inside the window).
async fn measure_walk(
    conn: &mut Conn,
    window: &Window<'_>,
    sort: Sort,
    baseline: u64,
    total: &mut (u64, Duration),
) -> Result<(usize, Option<Position>), mysql_async::Error> {
    let (sql, params) = &window.bound;
    let (rows_read, elapsed) = measure(conn, sql, params, baseline).await?;
    *total = (total.0 + rows_read, total.1 + elapsed);
    let bound: Option<(Value, Value)> = conn.exec_first(*sql, params.clone()).await?;
    let from = bound
        .as_ref()
        .map(|(key, id)| position_of(sort, key, id).expect("a bound decodes"));
    let (sql, params) = window.walk(bound);
    let (rows_read, elapsed) = measure(conn, sql, &params, baseline).await?;
    *total = (total.0 + rows_read, total.1 + elapsed);
    let rows: Vec<Row> = conn.exec(sql, params).await?;
    Ok((rows.len(), from))
}

/// Rows read (handler counters) and the median time of the statement.
async fn measure(
    conn: &mut Conn,
    sql: &str,
    params: &[Value],
    baseline: u64,
) -> Result<(u64, Duration), mysql_async::Error> {
    let mut times = Vec::with_capacity(RUNS);
    let mut rows_read = 0;
    for _ in 0..RUNS {
        conn.query_drop("FLUSH STATUS").await?;
        let before = handler_reads(conn).await?;
        let started = Instant::now();
        let _rows: Vec<Row> = conn.exec(sql, params.to_vec()).await?;
        times.push(started.elapsed());
        rows_read = handler_reads(conn).await? - before - baseline;
    }
    times.sort();
    Ok((rows_read, times[RUNS / 2]))
}

/// What two status reads in a row add to the counters by themselves.
async fn handler_reads_of_nothing(conn: &mut Conn) -> Result<u64, mysql_async::Error> {
    conn.query_drop("FLUSH STATUS").await?;
    let before = handler_reads(conn).await?;
    Ok(handler_reads(conn).await? - before)
}

async fn handler_reads(conn: &mut Conn) -> Result<u64, mysql_async::Error> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW SESSION STATUS WHERE Variable_name IN ('Handler_read_first', 'Handler_read_key', 'Handler_read_last', 'Handler_read_next', 'Handler_read_prev', 'Handler_read_rnd', 'Handler_read_rnd_next')")
        .await?;
    Ok(rows
        .iter()
        .map(|(_, value)| value.parse::<u64>().unwrap_or(0))
        .sum())
}
