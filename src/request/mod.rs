//! Request stage: turns the raw query string of a listing into a validated [`Listing`].
//!
//! Owns the rules of every parameter and the cursor format; never touches I/O.

pub mod cursor;
pub mod query_string;
pub mod webhook;

use std::borrow::Cow;

use crate::domain::{
    search::SearchError, Filters, ListingQuery, Price, SearchTerms, Sort, DEFAULT_TAKE, MAX_TAKE,
};
use cursor::{CursorError, CursorKey, Fingerprint};

/// The longest `category` value; the column is `VARCHAR(64)`.
pub const MAX_CATEGORY_CHARS: usize = 64;

/// A validated listing request with its canonical form, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub query: ListingQuery,
    /// Sort and filters in a canonical query-string form (`sort=-price&category=tops`): the basis
    /// of cache keys, cursor fingerprints and `Link` URLs, so equivalent requests agree.
    pub canonical_filters: String,
}

impl Listing {
    /// The digest cursors of this sort and these filters carry.
    ///
    /// Computed on demand, not at parse: a cached first page needs none, and the SHA-256 was
    /// the largest single cost of parsing one.
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.canonical_filters)
    }
}

/// A client mistake in the query string; each names the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),
    #[error("parameter `{0}` is given more than once")]
    RepeatedParameter(&'static str),
    #[error("parameter `{name}` {reason}")]
    InvalidParameter {
        name: &'static str,
        reason: Cow<'static, str>,
    },
    #[error("parameter `sort` must be one of -created_at, created_at, price, -price")]
    UnsupportedSort,
    #[error("parameter `take` must be at most {MAX_TAKE}")]
    PageTooLarge,
    #[error("parameter `cursor` {0}")]
    InvalidCursor(CursorError),
}

impl ClientError {
    /// The parameter the mistake is about, for the problem body.
    #[must_use]
    pub fn parameter(&self) -> Option<&str> {
        match self {
            ClientError::UnknownParameter(name) => Some(name),
            ClientError::RepeatedParameter(name) | ClientError::InvalidParameter { name, .. } => {
                Some(name)
            }
            ClientError::UnsupportedSort => Some("sort"),
            ClientError::PageTooLarge => Some("take"),
            ClientError::InvalidCursor(_) => Some("cursor"),
        }
    }
}

/// The raw (decoded) values of the known parameters.
#[derive(Default)]
struct RawParams<'q> {
    take: Option<Cow<'q, str>>,
    cursor: Option<Cow<'q, str>>,
    category: Option<Cow<'q, str>>,
    search: Option<Cow<'q, str>>,
    min_price: Option<Cow<'q, str>>,
    max_price: Option<Cow<'q, str>>,
    sort: Option<Cow<'q, str>>,
}

/// Parses and validates the query string of `GET /products/v1`.
pub fn parse_listing(query: Option<&str>, cursor_key: &CursorKey) -> Result<Listing, ClientError> {
    let raw = collect_params(query.unwrap_or(""))?;
    let take = parse_take(raw.take.as_deref())?;
    let sort = match raw.sort.as_deref() {
        None => Sort::default(),
        Some(text) => Sort::parse(text).ok_or(ClientError::UnsupportedSort)?,
    };
    let filters = Filters {
        category: parse_category(raw.category)?,
        search: parse_search(raw.search.as_deref())?,
        min_price: parse_price("min_price", raw.min_price.as_deref())?,
        max_price: parse_price("max_price", raw.max_price.as_deref())?,
    };
    if let (Some(min), Some(max)) = (filters.min_price, filters.max_price) {
        if min > max {
            return Err(invalid("min_price", "must not be greater than max_price"));
        }
    }
    let canonical_filters = canonical_filters(sort, &filters);
    let after = match raw.cursor.as_deref() {
        None => None,
        Some(text) => Some(
            cursor_key
                .decode(text, sort, Fingerprint::of(&canonical_filters))
                .map_err(ClientError::InvalidCursor)?,
        ),
    };
    Ok(Listing {
        query: ListingQuery {
            take,
            sort,
            filters,
            after,
        },
        canonical_filters,
    })
}

/// Writes sort and filters as a canonical, percent-encoded query string.
#[must_use]
pub fn canonical_filters(sort: Sort, filters: &Filters) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("sort=");
    out.push_str(sort.as_str());
    if let Some(category) = &filters.category {
        out.push_str("&category=");
        query_string::encode_into(category, &mut out);
    }
    if let Some(search) = &filters.search {
        out.push_str("&search=");
        query_string::encode_into(&search.canonical(), &mut out);
    }
    for (name, price) in [
        ("min_price", filters.min_price),
        ("max_price", filters.max_price),
    ] {
        if let Some(price) = price {
            out.push('&');
            out.push_str(name);
            out.push('=');
            out.push_str(&price.to_decimal_string());
        }
    }
    out
}

fn collect_params(query: &str) -> Result<RawParams<'_>, ClientError> {
    let mut raw = RawParams::default();
    for (name, value) in query_string::pairs(query) {
        let (slot, canonical_name) = match name {
            "take" => (&mut raw.take, "take"),
            "cursor" => (&mut raw.cursor, "cursor"),
            "category" => (&mut raw.category, "category"),
            "search" => (&mut raw.search, "search"),
            "min_price" => (&mut raw.min_price, "min_price"),
            "max_price" => (&mut raw.max_price, "max_price"),
            "sort" => (&mut raw.sort, "sort"),
            unknown => return Err(ClientError::UnknownParameter(printable_name(unknown))),
        };
        if slot.is_some() {
            return Err(ClientError::RepeatedParameter(canonical_name));
        }
        let decoded = query_string::decode(value)
            .ok_or_else(|| invalid(canonical_name, "is not valid percent-encoded UTF-8"))?;
        *slot = Some(decoded);
    }
    Ok(raw)
}

fn parse_take(text: Option<&str>) -> Result<u8, ClientError> {
    let Some(text) = text else {
        return Ok(DEFAULT_TAKE);
    };
    let all_digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !all_digits {
        return Err(invalid("take", "must be a whole number from 1 to 100"));
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 3 {
        return Err(ClientError::PageTooLarge);
    }
    match digits.parse::<u16>().unwrap_or(0) {
        0 => Err(invalid("take", "must be a whole number from 1 to 100")),
        n if n > u16::from(MAX_TAKE) => Err(ClientError::PageTooLarge),
        n => Ok(n as u8),
    }
}

fn parse_category(value: Option<Cow<'_, str>>) -> Result<Option<String>, ClientError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_CATEGORY_CHARS {
        return Err(invalid("category", "must be 1 to 64 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("category", "must not contain control characters"));
    }
    Ok(Some(value.into_owned()))
}

fn parse_search(value: Option<&str>) -> Result<Option<SearchTerms>, ClientError> {
    let Some(value) = value else {
        return Ok(None);
    };
    SearchTerms::parse(value).map_err(|error: SearchError| invalid("search", error.to_string()))
}

fn parse_price(name: &'static str, value: Option<&str>) -> Result<Option<Price>, ClientError> {
    let Some(value) = value else {
        return Ok(None);
    };
    Price::parse(value.as_bytes())
        .map(Some)
        .map_err(|error| invalid(name, error.to_string()))
}

fn invalid(name: &'static str, reason: impl Into<Cow<'static, str>>) -> ClientError {
    ClientError::InvalidParameter {
        name,
        reason: reason.into(),
    }
}

/// A client-supplied parameter name, shortened and stripped of control characters so the
/// problem body stays small and readable.
fn printable_name(name: &str) -> String {
    let decoded = query_string::decode(name).unwrap_or(Cow::Borrowed(name));
    decoded
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Position;

    fn key() -> CursorKey {
        CursorKey::new(b"unit-test cursor secret")
    }

    fn parse(query: &str) -> Result<Listing, ClientError> {
        parse_listing(Some(query), &key())
    }

    #[test]
    fn defaults_apply_when_parameters_are_absent() {
        let listing = parse("").unwrap();
        assert_eq!(listing.query.take, DEFAULT_TAKE);
        assert_eq!(listing.query.sort, Sort::CreatedAtDesc);
        assert_eq!(listing.query.filters, Filters::default());
        assert_eq!(listing.canonical_filters, "sort=-created_at");
    }

    #[test]
    fn each_mistake_names_its_parameter() {
        let cases: [(&str, &str); 22] = [
            ("take=0", "take"),
            ("take=abc", "take"),
            ("take=", "take"),
            ("take=-1", "take"),
            ("take=101", "take"),
            ("take=99999999999999999999", "take"),
            ("sort=name", "sort"),
            ("sort=", "sort"),
            ("category=", "category"),
            (&format!("category={}", "x".repeat(65)), "category"),
            ("search=%25%25", "search"),
            ("search=the", "search"),
            ("min_price=-1", "min_price"),
            ("max_price=1.234", "max_price"),
            ("min_price=abc", "min_price"),
            ("min_price=5&max_price=4", "min_price"),
            ("cursor=", "cursor"),
            ("cursor=abc", "cursor"),
            ("take=1&take=2", "take"),
            ("bogus=1", "bogus"),
            ("category=%ff", "category"),
            ("search=%zz", "search"),
        ];
        for (query, parameter) in cases {
            let error = parse(query).expect_err(query);
            assert_eq!(error.parameter(), Some(parameter), "{query}: {error}");
        }
    }

    #[test]
    fn page_too_large_and_unsupported_sort_have_their_own_kinds() {
        assert_eq!(parse("take=101"), Err(ClientError::PageTooLarge));
        assert_eq!(parse("take=0101"), Err(ClientError::PageTooLarge));
        assert_eq!(parse("sort=name"), Err(ClientError::UnsupportedSort));
        assert_eq!(parse("take=007").unwrap().query.take, 7);
    }

    #[test]
    fn equivalent_queries_share_a_canonical_form() {
        let a = parse("search=Oak+lamp&sort=-PRICE&min_price=1.5&category=home%20decor").unwrap();
        let b = parse("category=home+decor&min_price=1.50&sort=-price&search=oak%20LAMP").unwrap();
        assert_eq!(a.canonical_filters, b.canonical_filters);
        assert_eq!(
            a.canonical_filters,
            "sort=-price&category=home%20decor&search=oak%20lamp&min_price=1.50"
        );
    }

    #[test]
    fn empty_search_means_absent() {
        assert_eq!(parse("search=").unwrap().query.filters.search, None);
        assert_eq!(parse("search=+++").unwrap().query.filters.search, None);
    }

    #[test]
    fn cursor_is_bound_to_its_query() {
        let listing = parse("category=tops&sort=price").unwrap();
        let position = Position { key: 999, id: 42 };
        let cursor = key().encode(Sort::PriceAsc, listing.fingerprint(), position);
        let next = parse(&format!("sort=price&category=tops&cursor={cursor}&take=5")).unwrap();
        assert_eq!(next.query.after, Some(position));
        let other = parse(&format!("sort=price&category=tablets&cursor={cursor}"));
        assert_eq!(
            other,
            Err(ClientError::InvalidCursor(CursorError::QueryMismatch))
        );
    }
}
