//! The catalogue's vocabulary: products, listing queries and their invariants. No I/O here.

pub mod event;
pub mod price;
pub mod search;
pub mod signature;
pub mod timestamp;

pub use price::Price;
pub use search::SearchTerms;
pub use timestamp::Timestamp;

/// The largest page a client may ask for.
pub const MAX_TAKE: u8 = 100;
/// The page size when `take` is absent.
pub const DEFAULT_TAKE: u8 = 20;

/// One product as the listing serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub price: Price,
    pub category: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The listing orders; every one breaks ties by `id` in the same direction, so the order is total
/// and a keyset cursor never skips or repeats a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Sort {
    #[default]
    CreatedAtDesc,
    CreatedAtAsc,
    PriceAsc,
    PriceDesc,
}

impl Sort {
    pub const ALL: [Sort; 4] = [
        Sort::CreatedAtDesc,
        Sort::CreatedAtAsc,
        Sort::PriceAsc,
        Sort::PriceDesc,
    ];

    /// Parses the `sort` parameter; the column name is matched case-insensitively so that
    /// `-Price` and `-price` share a cache entry.
    #[must_use]
    pub fn parse(text: &str) -> Option<Sort> {
        let (descending, column) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        match (descending, column) {
            (true, c) if c.eq_ignore_ascii_case("created_at") => Some(Sort::CreatedAtDesc),
            (false, c) if c.eq_ignore_ascii_case("created_at") => Some(Sort::CreatedAtAsc),
            (false, c) if c.eq_ignore_ascii_case("price") => Some(Sort::PriceAsc),
            (true, c) if c.eq_ignore_ascii_case("price") => Some(Sort::PriceDesc),
            _ => None,
        }
    }

    /// The canonical parameter value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::CreatedAtDesc => "-created_at",
            Sort::CreatedAtAsc => "created_at",
            Sort::PriceAsc => "price",
            Sort::PriceDesc => "-price",
        }
    }

    #[must_use]
    pub fn is_descending(self) -> bool {
        matches!(self, Sort::CreatedAtDesc | Sort::PriceDesc)
    }

    #[must_use]
    pub fn is_by_price(self) -> bool {
        matches!(self, Sort::PriceAsc | Sort::PriceDesc)
    }

    /// A stable small number for cursors and statement tables.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Sort::CreatedAtDesc => 0,
            Sort::CreatedAtAsc => 1,
            Sort::PriceAsc => 2,
            Sort::PriceDesc => 3,
        }
    }

    #[must_use]
    pub fn from_code(code: u8) -> Option<Sort> {
        Sort::ALL.get(usize::from(code)).copied()
    }

    /// The sort key of `product` under this order (micros or cents).
    #[must_use]
    pub fn key_of(self, product: &Product) -> i64 {
        if self.is_by_price() {
            product.price.0
        } else {
            product.created_at.0
        }
    }
}

/// Where the next page starts: the last row served, by its sort key and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// `created_at` in microseconds or `price` in cents, as the sort says.
    pub key: i64,
    pub id: u64,
}

/// The filters of a listing, everything a cursor is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Filters {
    pub category: Option<String>,
    pub search: Option<SearchTerms>,
    pub min_price: Option<Price>,
    pub max_price: Option<Price>,
}

/// A validated listing request: parse, don't validate twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListingQuery {
    pub take: u8,
    pub sort: Sort,
    pub filters: Filters,
    pub after: Option<Position>,
}

/// One page as the store returns it: up to `take` rows and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub products: Vec<Product>,
    pub has_more: bool,
}

impl Page {
    /// The position after the last row, when there is a next page.
    #[must_use]
    pub fn next_position(&self, sort: Sort) -> Option<Position> {
        if !self.has_more {
            return None;
        }
        self.products.last().map(|last| Position {
            key: sort.key_of(last),
            id: last.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_parses_canonical_and_case_variants() {
        let cases = [
            ("-created_at", Some(Sort::CreatedAtDesc)),
            ("created_at", Some(Sort::CreatedAtAsc)),
            ("price", Some(Sort::PriceAsc)),
            ("-price", Some(Sort::PriceDesc)),
            ("-PRICE", Some(Sort::PriceDesc)),
            ("Created_At", Some(Sort::CreatedAtAsc)),
            ("+price", None),
            ("--price", None),
            ("name", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Sort::parse(text), expected, "{text}");
        }
    }

    #[test]
    fn sort_codes_round_trip() {
        for sort in Sort::ALL {
            assert_eq!(Sort::from_code(sort.code()), Some(sort));
            assert_eq!(Sort::parse(sort.as_str()), Some(sort));
        }
        assert_eq!(Sort::from_code(4), None);
    }
}
