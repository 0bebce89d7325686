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

use crate::domain::{signature, ListingQuery, Position, Sort, Timestamp};

pub(super) const COLUMNS: &str = "id, name, description, price, category, created_at, updated_at";
/// [`COLUMNS`] of the table joined as `p` to a derived table of ids.
const JOINED_COLUMNS: &str =
    "p.id, p.name, p.description, p.price, p.category, p.created_at, p.updated_at";

/// Every shape's SQL, indexed by [`shape_index`].
pub struct Statements {
    texts: Vec<String>,
    /// For search shapes: the bounded walk of the sort index tried before FULLTEXT.
    windows: Vec<Option<WindowSql>>,
    /// For price bands sorted by date: the count of the band and its range read.
    bands: Vec<Option<(String, String)>>,
}

/// The statements that answer one listing, in the order they are tried.
pub struct Plan<'a> {
    /// Search only: the sort index walked over a bounded window, each row filtered by a regular
    /// expression (see [`Window`]).
    pub window: Option<Window<'a>>,
    /// Price band sorted by date only: read the band from the price index instead of walking
    /// the date index, when the band is small (see [`Band`]).
    pub band: Option<Band<'a>>,
    /// The exact statement: an index range, or FULLTEXT gathering every match and sorting.
    pub exact: (&'a str, Vec<Value>),
}

/// A search page as a walk of the sort index over at most [`search_window`] entries from the
/// position, each row tested against the words, stopping at the `take + 1`-th match. `bound`
/// finds the window's last entry (index only); the walk ([`Window::walk`]) then reads rows in
/// index order up to it and stops as soon as it has `take + 1` matches, so a common word costs
/// the few hundred rows that hold a page, not the whole window. Conclusive when it returns
/// `take + 1` rows (any match past the window comes later in the order), or when there was no
/// bound (the order ends inside the window); otherwise FULLTEXT answers.
pub struct Window<'a> {
    /// `SELECT key, id … LIMIT 1 OFFSET window - 1`: the window's last entry, if the order
    /// reaches that far.
    pub bound: (&'a str, Vec<Value>),
    bounded: &'a str,
    open: &'a str,
    /// Parameters before the bound's placeholders (index filters, keyset) and after them
    /// (the words, the price filter off the index, the limit).
    before: Vec<Value>,
    after: Vec<Value>,
}

impl Window<'_> {
    /// The walk up to and including the entry `bound` returned (its key and id), or to the
    /// end of the order when it returned none.
    #[must_use]
    pub fn walk(&self, bound: Option<(Value, Value)>) -> (&str, Vec<Value>) {
        let mut params = Vec::with_capacity(self.before.len() + 3 + self.after.len());
        params.extend(self.before.iter().cloned());
        let sql = match bound {
            Some((key, id)) => {
                params.push(key.clone());
                params.push(key);
                params.push(id);
                self.bounded
            }
            None => self.open,
        };
        params.extend(self.after.iter().cloned());
        (sql, params)
    }
}

/// The three statements of a search shape's window.
struct WindowSql {
    bound: String,
    bounded: String,
    open: String,
}

/// A price range served in date order has two indexed plans with opposite costs: walking the
/// date index and skipping rows outside the band reads about `(take + 1) × rows / band` entries
/// (cheap for a wide band, unbounded for a narrow one), while reading the band from the price
/// index and sorting it reads the whole band (cheap only when narrow). `probe` counts the band
/// on the price index, index only, stopping after [`band_range_max`] + 1 entries; a band no
/// larger than that is read whole (`range`), a larger one walked ([`Plan::exact`]).
pub struct Band<'a> {
    /// `SELECT COUNT(*)` of the band, capped at `band_range_max(take) + 1`.
    pub probe: (&'a str, Vec<Value>),
    /// The band's rows from the price index, sorted by date and cut to `take + 1`.
    pub range: (&'a str, Vec<Value>),
}

/// The largest price band read whole and sorted: 50 rows per row wanted (1,050 at take = 20).
///
/// Measured at 1M rows on MariaDB (`perf/db`): a band row read from the price index costs
/// ~1.5–3 µs (a random primary-key lookup, then the sort; the index carries the date since
/// migration 0005, so rows before the cursor are skipped on the index), a date-index entry
/// walked ~0.25 µs, a probed entry ~0.3 µs. At this bound a band read whole costs ≤ ~3 ms; a
/// larger band holds more than 1,050 of the rows, so the walk meets a match at least every
/// `rows / 1,050` entries: ≤ ~21,000 entries (~5 ms) in 1M rows, ≤ ~900 in a category of 42k.
#[must_use]
pub fn band_range_max(take: u8) -> u64 {
    50 * (u64::from(take) + 1)
}

/// How many index entries a search page walks before handing over to FULLTEXT: a hundred per
/// row wanted, so a word in 3 % of rows fills a page from the window with a wide margin, and at
/// most 5,000 so the window itself stays a few milliseconds.
#[must_use]
pub fn search_window(take: u8) -> u64 {
    (100 * (u64::from(take) + 1)).min(5_000)
}

/// The most index entries a continuation walks: four first windows, at most 20,000 (at ~2.5 µs
/// an entry, tens of milliseconds at worst, against FULLTEXT gathering every one of a common
/// word's tens of thousands of matches).
#[must_use]
pub fn continuation_max(take: u8) -> u64 {
    (4 * search_window(take)).min(20_000)
}

/// After a search's first window found `found` matches, fewer than a page, up to its last entry
/// `from`: the rest of the page to walk (the query for the missing rows, positioned after
/// `from`) and how many entries to walk for it, or `None` when the matches seen put it out of
/// reach (see [`continuation_max`]). Their density says how far the rest lies; the walk covers
/// twice that, since matches cluster. Exact: the window held every match up to `from`, and the
/// continuation finds the next ones in the same order.
#[must_use]
pub fn continuation(
    query: &ListingQuery,
    found: usize,
    from: Position,
) -> Option<(ListingQuery, u64)> {
    let found = u64::try_from(found).ok()?;
    let wanted = u64::from(query.take) + 1;
    if found == 0 || found >= wanted {
        return None;
    }
    let missing = wanted - found;
    let reach = missing * search_window(query.take) * 2 / found;
    if reach > continuation_max(query.take) {
        return None;
    }
    let rest = ListingQuery {
        take: u8::try_from(missing - 1).ok()?,
        after: Some(from),
        ..query.clone()
    };
    Some((rest, reach))
}

/// The listing position of an index entry read as (sort key, id), e.g. a window's bound.
#[must_use]
pub fn position_of(sort: Sort, key: &Value, id: &Value) -> Option<Position> {
    let key = if sort.is_by_price() {
        price_of(key)?.0
    } else {
        timestamp_of(key)?.0
    };
    Some(Position {
        key,
        id: id_of(id)?,
    })
}

/// A product id as MySQL returns it (unsigned, or signed and not negative).
#[must_use]
pub fn id_of(value: &Value) -> Option<u64> {
    match *value {
        Value::UInt(id) => Some(id),
        Value::Int(id) => u64::try_from(id).ok(),
        _ => None,
    }
}

/// A price as MySQL returns a `DECIMAL` (its text).
#[must_use]
pub fn price_of(value: &Value) -> Option<crate::domain::Price> {
    match value {
        Value::Bytes(text) => crate::domain::Price::parse(text).ok(),
        _ => None,
    }
}

impl Statements {
    #[must_use]
    pub fn build() -> Self {
        let texts = (0..SHAPES)
            .map(|index| build_exact_sql(Shape::from_index(index)))
            .collect();
        let windows = (0..SHAPES)
            .map(|index| {
                let shape = Shape::from_index(index);
                shape.search.then(|| WindowSql {
                    bound: build_window_bound_sql(shape),
                    bounded: build_window_sql(shape, true),
                    open: build_window_sql(shape, false),
                })
            })
            .collect();
        let bands = (0..SHAPES)
            .map(|index| {
                let shape = Shape::from_index(index);
                shape
                    .is_band_by_date()
                    .then(|| (build_band_probe_sql(shape), build_band_range_sql(shape)))
            })
            .collect();
        Statements {
            texts,
            windows,
            bands,
        }
    }

    /// The statements for `query`: for a search, the bounded walk first, FULLTEXT after.
    #[must_use]
    pub fn plan(&self, query: &ListingQuery) -> Plan<'_> {
        let shape = Shape::of(query);
        let window = self.window(query, search_window(query.take));
        let band = self.bands[shape.index()]
            .as_ref()
            .map(|(probe, range)| Band {
                probe: (probe, band_probe_parameters(query)),
                range: (range, parameters(query)),
            });
        Plan {
            window,
            band,
            exact: (&self.texts[shape.index()], parameters(query)),
        }
    }

    /// For a search: the walk of `entries` index entries from `query`'s position (its cursor)
    /// that stops at `take + 1` matches. A page's first window is [`search_window`] entries
    /// long; a continuation (see `Store::continue_walk`) is sized from the matches already seen.
    #[must_use]
    pub fn window(&self, query: &ListingQuery, entries: u64) -> Option<Window<'_>> {
        let sql = self.windows[Shape::of(query).index()].as_ref()?;
        let (before, after) = window_parameters(query);
        let mut bound_params = before.clone();
        bound_params.push(Value::UInt(entries.max(1) - 1));
        Some(Window {
            bound: (&sql.bound, bound_params),
            bounded: &sql.bounded,
            open: &sql.open,
            before,
            after,
        })
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

    /// A price bound without search, served in date order: the date index does not hold price.
    fn is_band_by_date(self) -> bool {
        (self.min_price || self.max_price) && !self.search && !self.sort.is_by_price()
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

/// The statement that answers `shape` when no cheaper plan does.
fn build_exact_sql(shape: Shape) -> String {
    if shape.is_band_by_date() {
        build_band_walk_sql(shape)
    } else {
        build_sql(shape)
    }
}

/// A price band walked in date order: the date index carries the price (migration 0003), so the
/// derived table filters on the index alone and only the page's `take + 1` rows are read from
/// the table. Written as a join because neither engine pushes the price condition into a
/// plain ordered index scan (measured: 10,500 entries walked cost 44 ms as one SELECT, 3.5 ms
/// as this join).
fn build_band_walk_sql(shape: Shape) -> String {
    let (_, _, direction) = order_of(shape);
    let mut sql = format!(
        "SELECT {JOINED_COLUMNS} FROM (SELECT id FROM products FORCE INDEX ({}) WHERE 1 = 1",
        index_of(shape)
    );
    push_filters(&mut sql, shape);
    push_keyset(&mut sql, shape);
    let _ = write!(
        sql,
        " ORDER BY created_at {direction}, id {direction} LIMIT ?) AS w \
         JOIN products p ON p.id = w.id ORDER BY p.created_at {direction}, p.id {direction}"
    );
    sql
}

/// A plain statement: one index (named) or FULLTEXT, the filters, the keyset, `take + 1` rows.
fn build_sql(shape: Shape) -> String {
    build_sql_on(shape, index_of(shape))
}

/// [`build_sql`] with `index` named in `FORCE INDEX` (none for a search: FULLTEXT chooses).
fn build_sql_on(shape: Shape, index: &str) -> String {
    let (key, _, direction) = order_of(shape);
    let mut sql = format!("SELECT {COLUMNS} FROM products");
    if !shape.search {
        sql.push_str(" FORCE INDEX (");
        sql.push_str(index);
        sql.push(')');
    }
    sql.push_str(" WHERE 1 = 1");
    push_filters(&mut sql, shape);
    push_keyset(&mut sql, shape);
    let _ = write!(sql, " ORDER BY {key} {direction}, id {direction} LIMIT ?");
    sql
}

/// The filters' conditions, in the order [`parameters`] binds them.
fn push_filters(sql: &mut String, shape: Shape) {
    if shape.category {
        sql.push_str(" AND category = ?");
    }
    if shape.search {
        sql.push_str(" AND MATCH (name, description) AGAINST (? IN BOOLEAN MODE)");
    }
    push_price_bounds(sql, shape);
}

/// "Strictly after the cursor" in the order served, as index ranges on both engines
/// (`k < ? OR (k = ? AND id < ?)`, not a row constructor).
fn push_keyset(sql: &mut String, shape: Shape) {
    if !shape.after {
        return;
    }
    let (key, bound, _) = order_of(shape);
    let before = if shape.sort.is_descending() { "<" } else { ">" };
    let _ = write!(
        sql,
        " AND ({key} {before} {bound} OR ({key} = {bound} AND id {before} ?))"
    );
}

/// The index that serves `shape`'s order (with its category, if any).
fn index_of(shape: Shape) -> &'static str {
    index_named(shape.category, shape.sort.is_by_price())
}

/// The index in the order of `by_price` (else the date), under a category or not.
pub(super) fn index_named(category: bool, by_price: bool) -> &'static str {
    match (category, by_price) {
        (false, false) => "idx_products_created",
        (false, true) => "idx_products_price",
        (true, false) => "idx_products_category_created",
        (true, true) => "idx_products_category_price",
    }
}

/// The band's size on the price index (with the category, if any), index only, counted up to
/// `band_range_max(take) + 1` entries.
fn build_band_probe_sql(shape: Shape) -> String {
    let mut sql = format!(
        "SELECT COUNT(*) FROM (SELECT id FROM products FORCE INDEX ({}) WHERE 1 = 1",
        index_of(Shape {
            sort: Sort::PriceAsc,
            ..shape
        })
    );
    push_filters(&mut sql, shape);
    sql.push_str(" LIMIT ?) AS band");
    sql
}

/// The band read from the price index, then sorted by date: the same conditions and order as
/// [`build_sql`], only the index differs.
fn build_band_range_sql(shape: Shape) -> String {
    let price_index = index_of(Shape {
        sort: Sort::PriceAsc,
        ..shape
    });
    build_sql_on(shape, price_index)
}

/// Parameters of [`build_band_probe_sql`]: the filters and the cap.
fn band_probe_parameters(query: &ListingQuery) -> Vec<Value> {
    let mut params = Vec::with_capacity(4);
    push_filter_values(&mut params, query);
    params.push(Value::UInt(band_range_max(query.take) + 1));
    params
}

/// The index conditions of a search window: the category, the price bounds when the index is
/// ordered by price (they bound its range), and the keyset.
fn push_window_index_conditions(sql: &mut String, shape: Shape) {
    if shape.category {
        sql.push_str(" AND category = ?");
    }
    if shape.sort.is_by_price() {
        push_price_bounds(sql, shape);
    }
    push_keyset(sql, shape);
}

fn push_price_bounds(sql: &mut String, shape: Shape) {
    if shape.min_price {
        sql.push_str(" AND price >= CAST(? AS DECIMAL(12,2))");
    }
    if shape.max_price {
        sql.push_str(" AND price <= CAST(? AS DECIMAL(12,2))");
    }
}

/// The sort key column, its placeholder and the SQL direction of `shape`'s order.
fn order_of(shape: Shape) -> (&'static str, &'static str, &'static str) {
    let (key, bound) = if shape.sort.is_by_price() {
        ("price", "CAST(? AS DECIMAL(12,2))")
    } else {
        ("created_at", "?")
    };
    let direction = if shape.sort.is_descending() {
        "DESC"
    } else {
        "ASC"
    };
    (key, bound, direction)
}

/// The window's last entry: `search_window(take)` entries from the position, index only.
fn build_window_bound_sql(shape: Shape) -> String {
    let (key, _, direction) = order_of(shape);
    let mut sql = format!(
        "SELECT {key}, id FROM products FORCE INDEX ({}) WHERE 1 = 1",
        index_of(shape)
    );
    push_window_index_conditions(&mut sql, shape);
    let _ = write!(
        sql,
        " ORDER BY {key} {direction}, id {direction} LIMIT 1 OFFSET ?"
    );
    sql
}

/// The window's walk: rows in index order from the position (up to and including the bound
/// entry when `bounded`), each kept when its name or description has every search word at a
/// word start, stopping at `take + 1` matches. The word-start signature goes first: it is on the
/// index entry, so the engine tests it before reading the row from the table (index condition
/// pushdown), and a row without the words' bits is never read (`domain::signature`; 1M seed
/// rows: a 5 % word's walk of 1M entries 3.22 s → 0.26 s). A `LIKE` on the longest word comes
/// next: it is implied by the regular expression and rejects most rows at half the cost. Price
/// bounds go
/// into the index range when it is ordered by price, and are tested per row otherwise.
///
/// One plain ordered scan, not a derived table of the window's ids joined back: the join reads
/// every row of the window before sorting, the scan stops at the page (measured at 1M rows: a
/// word in 5 % of rows, 404 rows read and ~2 ms instead of 2,100 rows and ~8 ms).
fn build_window_sql(shape: Shape, bounded: bool) -> String {
    let (key, bound, direction) = order_of(shape);
    let mut sql = format!(
        "SELECT {COLUMNS} FROM products FORCE INDEX ({}) WHERE 1 = 1",
        index_of(shape)
    );
    push_window_index_conditions(&mut sql, shape);
    if bounded {
        let within = if shape.sort.is_descending() { ">" } else { "<" };
        let _ = write!(
            sql,
            " AND ({key} {within} {bound} OR ({key} = {bound} AND id {within}= ?))"
        );
    }
    sql.push_str(
        " AND search_signature & ? = ? \
         AND CONCAT_WS(' ', name, description) LIKE ? \
         AND CONCAT_WS(' ', name, description) REGEXP ?",
    );
    if !shape.sort.is_by_price() {
        push_price_bounds(&mut sql, shape);
    }
    let _ = write!(sql, " ORDER BY {key} {direction}, id {direction} LIMIT ?");
    sql
}

/// Parameters of a window's statements around the bound's placeholders, in the order
/// [`build_window_sql`] places them: (index conditions, then words, off-index prices, limit).
fn window_parameters(query: &ListingQuery) -> (Vec<Value>, Vec<Value>) {
    let filters = &query.filters;
    let by_price = query.sort.is_by_price();
    let prices: Vec<Value> = [filters.min_price, filters.max_price]
        .into_iter()
        .flatten()
        .map(decimal_value)
        .collect();
    let mut before = Vec::with_capacity(6);
    if let Some(category) = &filters.category {
        before.push(Value::Bytes(category.as_bytes().to_vec()));
    }
    if by_price {
        before.extend(prices.iter().cloned());
    }
    push_position(&mut before, query);
    let mut after = Vec::with_capacity(7);
    if let Some(search) = &filters.search {
        let mask = signature::mask_of(search.words());
        after.extend([Value::UInt(mask), Value::UInt(mask)]);
        after.push(Value::Bytes(search.substring_pattern().into_bytes()));
        after.push(Value::Bytes(search.word_start_pattern().into_bytes()));
    }
    if !by_price {
        after.extend(prices);
    }
    after.push(Value::UInt(u64::from(query.take) + 1));
    (before, after)
}

/// The cursor's key twice and its id, for the keyset condition.
fn push_position(params: &mut Vec<Value>, query: &ListingQuery) {
    if let Some(after) = query.after {
        let key = key_value(query.sort, after.key);
        params.push(key.clone());
        params.push(key);
        params.push(Value::UInt(after.id));
    }
}

/// Parameters in the order [`build_sql`] places the placeholders.
fn parameters(query: &ListingQuery) -> Vec<Value> {
    let mut params = Vec::with_capacity(8);
    push_filter_values(&mut params, query);
    push_position(&mut params, query);
    params.push(Value::UInt(u64::from(query.take) + 1));
    params
}

/// The values of [`push_filters`]' conditions, in its order.
fn push_filter_values(params: &mut Vec<Value>, query: &ListingQuery) {
    let filters = &query.filters;
    if let Some(category) = &filters.category {
        params.push(Value::Bytes(category.as_bytes().to_vec()));
    }
    if let Some(search) = &filters.search {
        params.push(Value::Bytes(search.boolean_mode_expression().into_bytes()));
    }
    for price in [filters.min_price, filters.max_price].into_iter().flatten() {
        params.push(decimal_value(price));
    }
}

/// A cursor's sort key as the parameter its column compares with.
pub(super) fn key_value(sort: Sort, key: i64) -> Value {
    if sort.is_by_price() {
        decimal_value(crate::domain::Price(key))
    } else {
        datetime_value(Timestamp(key))
    }
}

/// A price as a `DECIMAL(12,2)` parameter (its text: exact, unlike a float).
pub(super) fn decimal_value(price: crate::domain::Price) -> Value {
    Value::Bytes(price.to_decimal_string().into_bytes())
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

    fn oak_search(take: u8) -> ListingQuery {
        ListingQuery {
            take,
            sort: Sort::CreatedAtDesc,
            filters: Filters {
                search: SearchTerms::parse("oak").unwrap(),
                ..Filters::default()
            },
            after: None,
        }
    }

    /// The rest of the page is walked from the window's end when the window's matches put it
    /// within four windows, with twice the entries they suggest; not otherwise.
    #[test]
    fn a_continuation_is_sized_by_the_matches_the_window_found() {
        let from = Position { key: 7, id: 9 };
        let query = oak_search(20);
        // 15 of 21 in 2,100 entries: the 6 missing lie ~840 further; walk 1,680.
        let (rest, reach) = continuation(&query, 15, from).unwrap();
        assert_eq!((rest.take, rest.after, reach), (5, Some(from), 1_680));
        assert_eq!(rest.filters, query.filters);
        // 7 found: 14 missing at 1 in 300 reach 8,400 = four windows, the most.
        assert_eq!(continuation(&query, 7, from).unwrap().1, 8_400);
        assert_eq!(continuation_max(20), 8_400);
        // 6 found, none found, or a page already: no continuation.
        for found in [6, 0, 21, 30] {
            assert!(continuation(&query, found, from).is_none(), "{found}");
        }
        // One short of a page: the rest is one row.
        assert_eq!(continuation(&oak_search(1), 1, from).unwrap().0.take, 0);
    }

    #[test]
    fn a_bound_entry_decodes_to_a_position_in_either_order() {
        let id = Value::UInt(42);
        assert_eq!(
            position_of(Sort::PriceAsc, &Value::Bytes(b"12.34".to_vec()), &id),
            Some(Position { key: 1_234, id: 42 })
        );
        let at = Timestamp(1_700_000_000_123_456);
        assert_eq!(
            position_of(Sort::CreatedAtDesc, &datetime_value(at), &id),
            Some(Position { key: at.0, id: 42 })
        );
        assert_eq!(position_of(Sort::PriceAsc, &datetime_value(at), &id), None);
    }

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
            assert_eq!(plan.band.is_some(), shape.is_band_by_date());
            if let Some(band) = &plan.band {
                for (sql, params) in [&band.probe, &band.range] {
                    assert_eq!(sql.matches('?').count(), params.len(), "{sql}");
                }
            }
            if let Some(window) = &plan.window {
                let (sql, params) = &window.bound;
                assert_eq!(sql.matches('?').count(), params.len(), "{sql}");
                let bound = Some((Value::Int(1), Value::UInt(2)));
                for (sql, params) in [window.walk(bound), window.walk(None)] {
                    assert_eq!(sql.matches('?').count(), params.len(), "{sql}");
                }
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

    #[test]
    fn a_price_band_in_date_order_walks_the_index_alone_or_reads_the_band() {
        let shape = Shape {
            sort: Sort::CreatedAtDesc,
            category: true,
            search: false,
            min_price: true,
            max_price: true,
            after: false,
        };
        assert_eq!(
            build_exact_sql(shape),
            "SELECT p.id, p.name, p.description, p.price, p.category, p.created_at, p.updated_at \
             FROM (SELECT id FROM products FORCE INDEX (idx_products_category_created) \
             WHERE 1 = 1 AND category = ? AND price >= CAST(? AS DECIMAL(12,2)) AND \
             price <= CAST(? AS DECIMAL(12,2)) ORDER BY created_at DESC, id DESC LIMIT ?) AS w \
             JOIN products p ON p.id = w.id ORDER BY p.created_at DESC, p.id DESC"
        );
        assert_eq!(
            build_band_range_sql(shape),
            "SELECT id, name, description, price, category, created_at, updated_at FROM products \
             FORCE INDEX (idx_products_category_price) WHERE 1 = 1 AND category = ? AND \
             price >= CAST(? AS DECIMAL(12,2)) AND price <= CAST(? AS DECIMAL(12,2)) \
             ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        assert_eq!(
            build_band_probe_sql(shape),
            "SELECT COUNT(*) FROM (SELECT id FROM products FORCE INDEX \
             (idx_products_category_price) WHERE 1 = 1 AND category = ? AND \
             price >= CAST(? AS DECIMAL(12,2)) AND price <= CAST(? AS DECIMAL(12,2)) LIMIT ?) \
             AS band"
        );
    }
}
