//! Plain listing pages read with `HANDLER … READ`, before the planned `SELECT`.
//!
//! A keyset page is a seek in one index and `take + 1` steps along it. As a `SELECT`, MySQL
//! optimizes it on every execution, prepared or not: the range analysis dives into the index
//! at both ends of each of the keyset's two ranges before reading a row. Measured on MariaDB at
//! 1M rows (perf/RESULTS.md, tenth session), that optimization was about half of the ~200 µs of
//! server CPU a page cost; `HANDLER` goes to the storage engine's index read directly, with
//! the same rows and the same consistent read (it sees committed rows only, and every commit).
//!
//! What it cannot do is stop where a filter ends: it reads `take + 1` entries from the seek,
//! whatever they hold. So the filters are checked on the rows ([`judge`]). The price bounds are
//! exact (the index is in price order, and the page ends at the first row past a bound). A
//! category is compared byte for byte, where MySQL compares by the column's collation: a row
//! whose category differs in bytes may still be in the category (`Beauty` for `beauty`), so any
//! such row makes the read inconclusive and the `SELECT` answers instead. That is also how the
//! last page of a category is answered, where the read runs into the next category.
//!
//! The handler is opened per connection when a read finds it missing (it lives as long as the
//! connection; DDL on the table closes and reopens it). A server that refuses to prepare the
//! statement (MySQL 8 does not prepare `HANDLER`; MariaDB does) turns these reads off for that
//! server, and every page is a `SELECT` as before.

use mysql_async::{Row, Value};

use super::sql::{self, decimal_value, index_named, key_value, price_of};
use crate::domain::{ListingQuery, Price, Sort};

/// Opens the handler every read uses, on the connection that runs it.
pub const OPEN: &str = "HANDLER products OPEN AS listing_rows";

/// `ER_UNKNOWN_TABLE`: this connection has not opened the handler (or it was closed).
pub const NOT_OPEN: u16 = 1109;

/// Server errors that say the server will not run these reads at all: `ER_UNSUPPORTED_PS`
/// (MySQL 8 does not prepare `HANDLER`) and `ER_PARSE_ERROR`.
pub const UNSUPPORTED: [u16; 2] = [1295, 1064];

/// Every statement text, built once: one per index, direction and seek.
pub struct HandlerStatements {
    texts: Vec<String>,
}

/// One page's read: its statement, its parameters and what the rows must satisfy.
pub struct HandlerRead<'a> {
    pub sql: &'a str,
    pub params: Vec<Value>,
    filter: RowFilter<'a>,
}

/// The filters the seek does not enforce.
struct RowFilter<'a> {
    category: Option<&'a [u8]>,
    min_price: Option<Price>,
    max_price: Option<Price>,
}

/// Where the read starts: the index's end, or a seek on a key prefix of `parts` values.
#[derive(Clone, Copy)]
struct Seek {
    parts: usize,
    /// `<` / `>` (after a cursor) rather than `<=` / `>=` (at a prefix or a bound).
    strict: bool,
}

impl HandlerStatements {
    #[must_use]
    pub fn build() -> Self {
        let mut texts = Vec::with_capacity(4 * 2 * 4 * 2);
        for (category, by_price) in [(false, false), (false, true), (true, false), (true, true)] {
            let index = index_named(category, by_price);
            for descending in [false, true] {
                for parts in 0..4 {
                    for strict in [false, true] {
                        texts.push(text(index, descending, Seek { parts, strict }));
                    }
                }
            }
        }
        HandlerStatements { texts }
    }

    /// The read for `query`, or `None` when its shape is not a plain index range: a search, or
    /// a price bound in date order (the date index does not stop at a price).
    #[must_use]
    pub fn read<'a>(&'a self, query: &'a ListingQuery) -> Option<HandlerRead<'a>> {
        let filters = &query.filters;
        let by_price = query.sort.is_by_price();
        let priced = filters.min_price.is_some() || filters.max_price.is_some();
        if filters.search.is_some() || (priced && !by_price) {
            return None;
        }
        let (mut params, seek) = seek_values(query);
        params.push(Value::UInt(u64::from(query.take) + 1));
        let index = usize::from(filters.category.is_some()) * 2 + usize::from(by_price);
        let slot = ((index * 2 + usize::from(query.sort.is_descending())) * 4 + seek.parts) * 2
            + usize::from(seek.strict);
        Some(HandlerRead {
            sql: &self.texts[slot],
            params,
            filter: RowFilter {
                category: filters.category.as_deref().map(str::as_bytes),
                min_price: filters.min_price,
                max_price: filters.max_price,
            },
        })
    }
}

fn text(index: &str, descending: bool, seek: Seek) -> String {
    if seek.parts == 0 {
        let end = if descending { "LAST" } else { "FIRST" };
        return format!("HANDLER listing_rows READ {index} {end} LIMIT ?");
    }
    let op = match (descending, seek.strict) {
        (true, true) => "<",
        (true, false) => "<=",
        (false, true) => ">",
        (false, false) => ">=",
    };
    let values = vec!["?"; seek.parts].join(", ");
    format!("HANDLER listing_rows READ {index} {op} ({values}) LIMIT ?")
}

/// The seek's key values: the category, then the cursor's (key, id) strictly, or the price
/// bound the order starts from inclusively when the cursor lies beyond it or there is none.
fn seek_values(query: &ListingQuery) -> (Vec<Value>, Seek) {
    let filters = &query.filters;
    let descending = query.sort.is_descending();
    let mut values = Vec::with_capacity(4);
    if let Some(category) = &filters.category {
        values.push(Value::Bytes(category.as_bytes().to_vec()));
    }
    let start_bound = match query.sort {
        Sort::PriceDesc => filters.max_price,
        Sort::PriceAsc => filters.min_price,
        Sort::CreatedAtDesc | Sort::CreatedAtAsc => None,
    };
    let cursor = query.after.filter(|after| {
        start_bound.is_none_or(|bound| {
            if descending {
                after.key <= bound.0
            } else {
                after.key >= bound.0
            }
        })
    });
    let strict = if let Some(after) = cursor {
        values.push(key_value(query.sort, after.key));
        values.push(Value::UInt(after.id));
        true
    } else {
        if let Some(bound) = start_bound {
            values.push(decimal_value(bound));
        }
        false
    };
    let parts = values.len();
    (values, Seek { parts, strict })
}

/// The page in `rows` when the read is conclusive: every row up to the first one past a price
/// bound is in the filters (the page ends there), by bytes. `None` when a row's category
/// differs from the filter's, or the rows' columns are not the listing's: the `SELECT` answers.
#[must_use]
pub fn judge(mut rows: Vec<Row>, read: &HandlerRead<'_>) -> Option<Vec<Row>> {
    // `HANDLER` returns the table's columns in table order; `decode_product` reads the
    // listing's columns by position, so a table whose order differs is left to the `SELECT`.
    if let Some(first) = rows.first() {
        let mut columns = first.columns_ref().iter();
        let named = sql::COLUMNS.split(", ").all(|name| {
            columns
                .next()
                .is_some_and(|c| c.name_ref() == name.as_bytes())
        });
        if !named {
            return None;
        }
    }
    let filter = &read.filter;
    let mut end = rows.len();
    for (at, row) in rows.iter().enumerate() {
        if let Some(category) = filter.category {
            match row.as_ref(4) {
                Some(Value::Bytes(bytes)) if bytes.as_slice() == category => {}
                _ => return None,
            }
        }
        if filter.min_price.is_some() || filter.max_price.is_some() {
            let price = row.as_ref(3).and_then(price_of)?;
            let below = filter.min_price.is_some_and(|min| price < min);
            let above = filter.max_price.is_some_and(|max| price > max);
            if below || above {
                end = at;
                break;
            }
        }
    }
    rows.truncate(end);
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Filters, Position};

    fn query(
        sort: Sort,
        category: Option<&str>,
        prices: (Option<i64>, Option<i64>),
    ) -> ListingQuery {
        ListingQuery {
            take: 20,
            sort,
            filters: Filters {
                category: category.map(str::to_owned),
                search: None,
                min_price: prices.0.map(Price),
                max_price: prices.1.map(Price),
            },
            after: None,
        }
    }

    #[test]
    fn searches_and_price_bands_in_date_order_are_not_read_by_handler() {
        let statements = HandlerStatements::build();
        let band = query(Sort::CreatedAtDesc, None, (Some(100), None));
        assert!(statements.read(&band).is_none());
        let mut search = query(Sort::PriceAsc, None, (None, None));
        search.filters.search = crate::domain::SearchTerms::parse("oak").unwrap();
        assert!(statements.read(&search).is_none());
        assert!(statements
            .read(&query(Sort::PriceAsc, Some("tops"), (Some(1), Some(2))))
            .is_some());
    }

    #[test]
    fn the_seek_follows_the_cursor_or_the_bound_the_order_starts_from() {
        let statements = HandlerStatements::build();
        let first = query(Sort::CreatedAtDesc, None, (None, None));
        let read = statements.read(&first).unwrap();
        assert_eq!(
            read.sql,
            "HANDLER listing_rows READ idx_products_created LAST LIMIT ?"
        );
        assert_eq!(read.params, vec![Value::UInt(21)]);

        let mut in_band = query(Sort::PriceDesc, Some("tops"), (Some(100), Some(5_000)));
        let read = statements.read(&in_band).unwrap();
        assert_eq!(
            read.sql,
            "HANDLER listing_rows READ idx_products_category_price <= (?, ?) LIMIT ?"
        );
        assert_eq!(read.params[1], Value::Bytes(b"50.00".to_vec()));

        in_band.after = Some(Position { key: 4_000, id: 7 });
        let read = statements.read(&in_band).unwrap();
        assert_eq!(
            read.sql,
            "HANDLER listing_rows READ idx_products_category_price < (?, ?, ?) LIMIT ?"
        );
        assert_eq!(read.params[1], Value::Bytes(b"40.00".to_vec()));
        assert_eq!(read.params[2], Value::UInt(7));

        // A cursor above the band's top starts at the top, inclusively.
        in_band.after = Some(Position { key: 9_000, id: 7 });
        let read = statements.read(&in_band).unwrap();
        assert!(read.sql.contains("<= (?, ?)"), "{}", read.sql);

        let ascending = ListingQuery {
            after: Some(Position { key: 50, id: 3 }),
            ..query(Sort::PriceAsc, None, (Some(100), None))
        };
        let read = statements.read(&ascending).unwrap();
        assert_eq!(
            read.sql,
            "HANDLER listing_rows READ idx_products_price >= (?) LIMIT ?"
        );
        assert_eq!(read.params[0], Value::Bytes(b"1.00".to_vec()));
    }

    #[test]
    fn every_statement_has_as_many_placeholders_as_its_parameters() {
        let statements = HandlerStatements::build();
        for sort in Sort::ALL {
            for category in [None, Some("tops")] {
                for prices in [(None, None), (Some(100), None), (None, Some(900))] {
                    for after in [None, Some(Position { key: 500, id: 9 })] {
                        let query = ListingQuery {
                            after,
                            ..query(sort, category, prices)
                        };
                        if let Some(read) = statements.read(&query) {
                            assert_eq!(read.sql.matches('?').count(), read.params.len());
                        }
                    }
                }
            }
        }
    }
}
