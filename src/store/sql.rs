//! The listing's SQL, one prepared statement per query shape, built once at start-up.
//!
//! A shape is which filters are present, whether a cursor is, and the sort: 128 shapes, each a
//! fixed text, so MySQL prepares each once per connection and the hot path never builds SQL.
//! Plain listings name their index (`FORCE INDEX`, valid on MySQL 8 and MariaDB) so the plan is
//! always a range scan in key order that stops after `take + 1` rows; the keyset condition is
//! written as `k < ? OR (k = ? AND id < ?)` because both optimizers turn that into index ranges,
//! while row-constructor comparisons are not reliably range-optimized.

use std::fmt::Write as _;

use mysql_async::Value;

use crate::domain::{ListingQuery, Sort, Timestamp};

const COLUMNS: &str = "id, name, description, price, category, created_at, updated_at";

/// Every shape's SQL, indexed by [`shape_index`].
pub struct Statements {
    texts: Vec<String>,
    /// For search shapes: the bounded walk of the sort index tried before FULLTEXT.
    windows: Vec<Option<String>>,
}

/// The statements that answer one listing, in the order they are tried.
pub struct Plan<'a> {
    /// Search only: the sort index walked over a bounded window, each row filtered by a regular
    /// expression. Conclusive when it returns `take + 1` rows: those are the first matches in
    /// the order served, as any match past the window comes later in that order.
    pub window: Option<(&'a str, Vec<Value>)>,
    /// The exact statement: an index range, or FULLTEXT gathering every match and sorting.
    pub exact: (&'a str, Vec<Value>),
}

/// How many index entries a search page walks before handing over to FULLTEXT: a hundred per
/// row wanted, so a word in 3 % of rows fills a page from the window with a wide margin, and at
/// most 5,000 so the window itself stays a few milliseconds.
#[must_use]
pub fn search_window(take: u8) -> u64 {
    (100 * (u64::from(take) + 1)).min(5_000)
}

impl Statements {
    #[must_use]
    pub fn build() -> Self {
        let texts = (0..SHAPES)
            .map(|index| build_sql(Shape::from_index(index)))
            .collect();
        let windows = (0..SHAPES)
            .map(|index| {
                let shape = Shape::from_index(index);
                shape.search.then(|| build_window_sql(shape))
            })
            .collect();
        Statements { texts, windows }
    }

    /// The statements for `query`: for a search, the bounded walk first, FULLTEXT after.
    #[must_use]
    pub fn plan(&self, query: &ListingQuery) -> Plan<'_> {
        let shape = Shape::of(query);
        let window = self.windows[shape.index()]
            .as_deref()
            .map(|sql| (sql, window_parameters(query)));
        Plan {
            window,
            exact: (&self.texts[shape.index()], parameters(query)),
        }
    }

    /// The statement text and its parameters for `query`, reading `take + 1` rows.
    #[must_use]
    pub fn for_query(&self, query: &ListingQuery) -> (&str, Vec<Value>) {
        let shape = Shape::of(query);
        (&self.texts[shape.index()], parameters(query))
    }
}

const SHAPES: usize = 128;

/// Which optional parts a statement has; the bools mirror the optional query fields.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    sort: Sort,
    category: bool,
    search: bool,
    min_price: bool,
    max_price: bool,
    after: bool,
}

impl Shape {
    fn of(query: &ListingQuery) -> Self {
        let filters = &query.filters;
        Shape {
            sort: query.sort,
            category: filters.category.is_some(),
            search: filters.search.is_some(),
            min_price: filters.min_price.is_some(),
            max_price: filters.max_price.is_some(),
            after: query.after.is_some(),
        }
    }

    fn index(self) -> usize {
        usize::from(self.sort.code())
            | usize::from(self.category) << 2
            | usize::from(self.search) << 3
            | usize::from(self.min_price) << 4
            | usize::from(self.max_price) << 5
            | usize::from(self.after) << 6
    }

    fn from_index(index: usize) -> Self {
        Shape {
            sort: Sort::from_code((index & 3) as u8).expect("two bits name a sort"),
            category: index & 4 != 0,
            search: index & 8 != 0,
            min_price: index & 16 != 0,
            max_price: index & 32 != 0,
            after: index & 64 != 0,
        }
    }
}

fn build_sql(shape: Shape) -> String {
    let key = if shape.sort.is_by_price() {
        "price"
    } else {
        "created_at"
    };
    let direction = if shape.sort.is_descending() {
        "DESC"
    } else {
        "ASC"
    };
    let mut sql = format!("SELECT {COLUMNS} FROM products");
    if !shape.search {
        sql.push_str(" FORCE INDEX (");
        sql.push_str(index_of(shape));
        sql.push(')');
    }
    sql.push_str(" WHERE 1 = 1");
    if shape.category {
        sql.push_str(" AND category = ?");
    }
    if shape.search {
        sql.push_str(" AND MATCH (name, description) AGAINST (? IN BOOLEAN MODE)");
    }
    if shape.min_price {
        sql.push_str(" AND price >= CAST(? AS DECIMAL(12,2))");
    }
    if shape.max_price {
        sql.push_str(" AND price <= CAST(? AS DECIMAL(12,2))");
    }
    push_keyset(&mut sql, shape);
    let _ = write!(sql, " ORDER BY {key} {direction}, id {direction} LIMIT ?");
    sql
}

/// "Strictly after the cursor" in the order served, as index ranges on both engines
/// (`k < ? OR (k = ? AND id < ?)`, not a row constructor).
fn push_keyset(sql: &mut String, shape: Shape) {
    if !shape.after {
        return;
    }
    let (key, bound) = if shape.sort.is_by_price() {
        ("price", "CAST(? AS DECIMAL(12,2))")
    } else {
        ("created_at", "?")
    };
    let before = if shape.sort.is_descending() { "<" } else { ">" };
    let _ = write!(
        sql,
        " AND ({key} {before} {bound} OR ({key} = {bound} AND id {before} ?))"
    );
}

/// The index that serves `shape`'s order (with its category, if any).
fn index_of(shape: Shape) -> &'static str {
    match (shape.category, shape.sort.is_by_price()) {
        (false, false) => "idx_products_created",
        (false, true) => "idx_products_price",
        (true, false) => "idx_products_category_created",
        (true, true) => "idx_products_category_price",
    }
}

/// A search page as a walk of the sort index: the derived table reads at most `window` entries
/// from the position (index only), the outer query keeps the rows whose name or description
/// has every search word at a word start, and sorts those few. A `LIKE` on the longest word
/// goes first: it is implied by the regular expression and rejects most rows at half the cost. Price bounds go inside when the
/// index is ordered by price (they bound its range), outside otherwise (so they cannot stretch
/// the walk past its window).
fn build_window_sql(shape: Shape) -> String {
    let by_price = shape.sort.is_by_price();
    let key = if by_price { "price" } else { "created_at" };
    let direction = if shape.sort.is_descending() {
        "DESC"
    } else {
        "ASC"
    };
    let price_bounds = |sql: &mut String, column: &str| {
        if shape.min_price {
            let _ = write!(sql, " AND {column} >= CAST(? AS DECIMAL(12,2))");
        }
        if shape.max_price {
            let _ = write!(sql, " AND {column} <= CAST(? AS DECIMAL(12,2))");
        }
    };
    let mut sql = format!(
        "SELECT p.id, p.name, p.description, p.price, p.category, p.created_at, p.updated_at \
         FROM (SELECT id FROM products FORCE INDEX ({}) WHERE 1 = 1",
        index_of(shape)
    );
    if shape.category {
        sql.push_str(" AND category = ?");
    }
    if by_price {
        price_bounds(&mut sql, "price");
    }
    push_keyset(&mut sql, shape);
    let _ = write!(
        sql,
        " ORDER BY {key} {direction}, id {direction} LIMIT ?) AS w \
         JOIN products p ON p.id = w.id \
         WHERE CONCAT_WS(' ', p.name, p.description) LIKE ? \
         AND CONCAT_WS(' ', p.name, p.description) REGEXP ?"
    );
    if !by_price {
        price_bounds(&mut sql, "p.price");
    }
    let _ = write!(
        sql,
        " ORDER BY p.{key} {direction}, p.id {direction} LIMIT ?"
    );
    sql
}

/// Parameters in the order [`build_window_sql`] places the placeholders.
fn window_parameters(query: &ListingQuery) -> Vec<Value> {
    let filters = &query.filters;
    let by_price = query.sort.is_by_price();
    let prices: Vec<Value> = [filters.min_price, filters.max_price]
        .into_iter()
        .flatten()
        .map(|price| Value::Bytes(price.to_decimal_string().into_bytes()))
        .collect();
    let mut params = Vec::with_capacity(10);
    if let Some(category) = &filters.category {
        params.push(Value::Bytes(category.as_bytes().to_vec()));
    }
    if by_price {
        params.extend(prices.iter().cloned());
    }
    push_position(&mut params, query);
    params.push(Value::UInt(search_window(query.take)));
    if let Some(search) = &filters.search {
        params.push(Value::Bytes(search.substring_pattern().into_bytes()));
        params.push(Value::Bytes(search.word_start_pattern().into_bytes()));
    }
    if !by_price {
        params.extend(prices);
    }
    params.push(Value::UInt(u64::from(query.take) + 1));
    params
}

/// The cursor's key twice and its id, for the keyset condition.
fn push_position(params: &mut Vec<Value>, query: &ListingQuery) {
    if let Some(after) = query.after {
        let key = if query.sort.is_by_price() {
            Value::Bytes(
                crate::domain::Price(after.key)
                    .to_decimal_string()
                    .into_bytes(),
            )
        } else {
            datetime_value(Timestamp(after.key))
        };
        params.push(key.clone());
        params.push(key);
        params.push(Value::UInt(after.id));
    }
}

/// Parameters in the order [`build_sql`] places the placeholders.
fn parameters(query: &ListingQuery) -> Vec<Value> {
    let filters = &query.filters;
    let mut params = Vec::with_capacity(8);
    if let Some(category) = &filters.category {
        params.push(Value::Bytes(category.as_bytes().to_vec()));
    }
    if let Some(search) = &filters.search {
        params.push(Value::Bytes(search.boolean_mode_expression().into_bytes()));
    }
    for price in [filters.min_price, filters.max_price].into_iter().flatten() {
        params.push(Value::Bytes(price.to_decimal_string().into_bytes()));
    }
    push_position(&mut params, query);
    params.push(Value::UInt(u64::from(query.take) + 1));
    params
}

/// A MySQL `DATETIME` value (binary protocol) as a timestamp; `None` for any other value.
#[must_use]
pub fn timestamp_of(value: &Value) -> Option<Timestamp> {
    match *value {
        Value::Date(year, month, day, hour, minute, second, micros) => {
            Some(Timestamp::from_civil(crate::domain::timestamp::Civil {
                year: i32::from(year),
                month,
                day,
                hour,
                minute,
                second,
                micros,
            }))
        }
        _ => None,
    }
}

/// A timestamp as a MySQL `DATETIME` parameter.
#[must_use]
pub fn datetime_value(timestamp: Timestamp) -> Value {
    let c = timestamp.to_civil();
    Value::Date(
        u16::try_from(c.year.clamp(0, 9999)).expect("clamped to 0..=9999"),
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.micros,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Filters, Position, Price, SearchTerms};

    #[test]
    fn shape_indexes_round_trip() {
        for index in 0..SHAPES {
            assert_eq!(Shape::from_index(index).index(), index);
        }
    }

    #[test]
    fn placeholders_match_parameters_for_every_shape() {
        let statements = Statements::build();
        for index in 0..SHAPES {
            let shape = Shape::from_index(index);
            let query = ListingQuery {
                take: 20,
                sort: shape.sort,
                filters: Filters {
                    category: shape.category.then(|| "tops".to_owned()),
                    search: shape
                        .search
                        .then(|| SearchTerms::parse("oak").unwrap().unwrap()),
                    min_price: shape.min_price.then_some(Price(100)),
                    max_price: shape.max_price.then_some(Price(200)),
                },
                after: shape.after.then_some(Position { key: 5, id: 6 }),
            };
            let plan = statements.plan(&query);
            let (sql, params) = &plan.exact;
            assert_eq!(sql.matches('?').count(), params.len(), "{sql}");
            assert_eq!(plan.window.is_some(), shape.search);
            if let Some((sql, params)) = &plan.window {
                assert_eq!(sql.matches('?').count(), params.len(), "{sql}");
            }
        }
    }

    #[test]
    fn descending_price_cursor_sql_reads_in_index_order() {
        let shape = Shape {
            sort: Sort::PriceDesc,
            category: true,
            search: false,
            min_price: false,
            max_price: false,
            after: true,
        };
        assert_eq!(
            build_sql(shape),
            "SELECT id, name, description, price, category, created_at, updated_at FROM products \
             FORCE INDEX (idx_products_category_price) WHERE 1 = 1 AND category = ? AND \
             (price < CAST(? AS DECIMAL(12,2)) OR (price = CAST(? AS DECIMAL(12,2)) AND id < ?)) \
             ORDER BY price DESC, id DESC LIMIT ?"
        );
    }
}
